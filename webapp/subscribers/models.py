"""The list's own tables: sign-up posts waiting to be acted on, the mailboxes
they may write to, and the erased addresses imports must not bring back."""

from datetime import datetime

from sqlalchemy import (
    ForeignKey,
    Integer,
    String,
)
from sqlalchemy.orm import Mapped, mapped_column

from ..db import Model, UTCDateTime, utcnow


class Mailbox(Model):
    """One inbox, whatever the spellings of its address (``+tags``, Gmail's dots).

    Counts the emails sent to it on request (confirmations, data links) in the current
    24-hour window, all newsletters and spellings together: a victim of subscription
    bombing gets a few at most, whatever the posts.
    """

    __tablename__ = "mailboxes"

    key: Mapped[str] = mapped_column(String(320), primary_key=True)
    window_start: Mapped[datetime | None] = mapped_column(UTCDateTime)
    window_count: Mapped[int] = mapped_column(Integer, default=0)

    def __repr__(self) -> str:
        return f"<Mailbox {self.key.partition('@')[2]}>"


class SignupRequest(Model):
    """A sign-up form's post, recorded as it came and not yet acted on.

    The post does nothing but add this row, so its answer takes the same time whoever
    the address belongs to; what the address's state calls for (a new subscription, a
    confirmation email, nothing) is done right after the answer, by the same process,
    or by the outbox worker if that process died first. The row goes in the transaction
    that acts on it.
    """

    __tablename__ = "signup_requests"

    id: Mapped[int] = mapped_column(primary_key=True)
    newsletter_id: Mapped[int] = mapped_column(ForeignKey("newsletters.id", ondelete="CASCADE"))
    email: Mapped[str] = mapped_column(String(320))
    email_key: Mapped[str] = mapped_column(String(320), index=True)
    ip: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    source: Mapped[str | None] = mapped_column(String(200))
    language: Mapped[str] = mapped_column(String(8), default="en", server_default="en")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Times acting on it failed; a request that keeps failing is left alone and logged.
    attempts: Mapped[int] = mapped_column(Integer, default=0)

    def __repr__(self) -> str:
        return f"<SignupRequest {self.id}>"


class ErasedAddress(Model):
    """A keyed hash of an erased address: imports must never add it again.

    Only the hash is kept (HMAC with the installation's secret key), not the address.
    """

    __tablename__ = "erased_addresses"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    erased_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def __repr__(self) -> str:
        return f"<ErasedAddress {self.digest[:8]}>"
