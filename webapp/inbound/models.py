"""What came back: the inbound messages, the IMAP messages already seen, and the
tokens a hosted mailbox's webhook has used."""

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from ..db import Model, UTCDateTime, utcnow


class InboundMessage(Model):
    """A message heard back (a bounce, a complaint, a mailto unsubscribe, a reply) or a
    relay's webhook event: stored before it is answered for, then classified and acted on.

    The raw message is dropped after INBOUND_KEEP_DAYS; what it was and what was done stay.
    """

    __tablename__ = "inbound_messages"
    # A relay retries a webhook it thinks failed: its event id is taken in once.
    __table_args__ = (UniqueConstraint("source", "external_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    source: Mapped[str] = mapped_column(String(32))  # smtp, lmtp, file, imap, hook:<relay>
    envelope_from: Mapped[str | None] = mapped_column(String(320))
    recipient: Mapped[str | None] = mapped_column(String(320))
    size: Mapped[int] = mapped_column(Integer, default=0)
    raw: Mapped[bytes | None] = mapped_column(LargeBinary)
    kind: Mapped[str | None] = mapped_column(String(16), index=True)  # ReportKind; None: not yet
    action: Mapped[str | None] = mapped_column(String(500))
    code: Mapped[str | None] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(String(32))  # sisimai's: userunknown, blocked…
    detail: Mapped[str | None] = mapped_column(String(500))
    subscriber_id: Mapped[int | None] = mapped_column(
        ForeignKey("subscribers.id", ondelete="SET NULL"), index=True
    )
    delivery_id: Mapped[int | None] = mapped_column(
        ForeignKey("deliveries.id", ondelete="SET NULL")
    )
    external_id: Mapped[str | None] = mapped_column(String(200))  # a relay's event id

    def __repr__(self) -> str:
        return f"<InboundMessage {self.id} {self.kind}>"


class ImapSeen(Model):
    """How far ``inbound fetch`` has looked in one mailbox: UIDs up to ``last_uid`` were
    read once and need no second download, while the mailbox keeps its UIDVALIDITY
    (a new one means the UIDs were renumbered: everything is looked at again)."""

    __tablename__ = "imap_seen"

    mailbox: Mapped[str] = mapped_column(String(500), primary_key=True)  # user@host:port/name
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    last_uid: Mapped[int] = mapped_column(BigInteger)


class HookToken(Model):
    """A signature token a relay's webhook used, kept while its timestamp is fresh.

    Mailgun signs a timestamp and a token but not the body, so a captured request's
    signature could carry another body: each token is taken once.
    """

    __tablename__ = "hook_tokens"

    relay: Mapped[str] = mapped_column(String(16), primary_key=True)
    token: Mapped[str] = mapped_column(String(128), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
