"""The mail on its way out: the transactional outbox and a digest's deliveries."""

import enum
from datetime import datetime

from sqlalchemy import (
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..db import Model, UTCDateTime, state_enum, utcnow
from ..models import Issue


class OutboxStatus(enum.StrEnum):
    """The states of a queued transactional email."""

    QUEUED = "queued"
    SENT = "sent"
    FAILED = "failed"


class OutboxMail(Model):
    """A transactional email, committed with the change that caused it and sent later.

    The message is stored fully rendered, so a retry sends the very same bytes
    (same Message-ID) and delivery needs nothing but this row.
    """

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    subscription_id: Mapped[int | None] = mapped_column(
        ForeignKey("subscriptions.id", ondelete="SET NULL"), index=True
    )
    subscriber_id: Mapped[int | None] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), index=True
    )
    sender: Mapped[str] = mapped_column(String(320))
    recipient: Mapped[str] = mapped_column(String(320))
    message: Mapped[bytes] = mapped_column(LargeBinary)
    status: Mapped[OutboxStatus] = mapped_column(
        state_enum(OutboxStatus), default=OutboxStatus.QUEUED, index=True
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Backoff after a failed attempt: the worker leaves the message alone until then.
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # A sender claims a message by setting this lease; nobody else takes it until it ends.
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # host:pid:random of the delivery pass holding the claim: one on this host whose
    # process died has its claims taken back at once, not at the lease's end.
    claimed_by: Mapped[str | None] = mapped_column(String(300))
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(String(500))

    def __repr__(self) -> str:
        return f"<OutboxMail {self.id} {self.kind} {self.status.value}>"


class DeliveryStatus(enum.StrEnum):
    """The states of one issue's delivery to one reader."""

    QUEUED = "queued"  # to be sent, or sent again after a temporary failure
    SENDING = "sending"  # claimed by a sender, which records the result
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"  # no longer subscribed when its turn came


class Delivery(Model):
    """One issue to one reader: made for every confirmed subscriber when a send starts.

    Unique per issue and subscriber, so a reader is on an issue's list once; its status
    is what makes a send resumable and each reader's copy go out once.
    """

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("issue_id", "subscriber_id"),
        Index("ix_deliveries_issue_status", "issue_id", "status", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    issue_id: Mapped[int] = mapped_column(ForeignKey("issues.id", ondelete="CASCADE"))
    # An erased reader's deliveries go with them.
    subscriber_id: Mapped[int] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), index=True
    )
    subscription_id: Mapped[int] = mapped_column(
        ForeignKey("subscriptions.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[DeliveryStatus] = mapped_column(
        state_enum(DeliveryStatus), default=DeliveryStatus.QUEUED
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # After a temporary refusal (4xx) the delivery waits until then.
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Which sender holds it, until when: another may take it over once the lease ends.
    claimed_by: Mapped[str | None] = mapped_column(String(300))
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(String(500))
    # What was heard back about it: "bounced" or "complained", with the status code.
    feedback: Mapped[str | None] = mapped_column(String(16))
    feedback_code: Mapped[str | None] = mapped_column(String(32))
    # Sisimai's reason of a bounce or refusal (userunknown, blocked…), at send or heard back.
    feedback_reason: Mapped[str | None] = mapped_column(String(32))

    issue: Mapped[Issue] = relationship()

    def __repr__(self) -> str:
        return f"<Delivery {self.id} {self.status.value}>"
