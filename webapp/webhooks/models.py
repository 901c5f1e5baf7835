"""The events waiting for, or delivered to, the staff's webhook URLs."""

import enum
from datetime import datetime

from sqlalchemy import (
    JSON,
    Index,
    Integer,
    String,
)
from sqlalchemy.orm import Mapped, mapped_column

from ..db import Model, UTCDateTime, state_enum


class WebhookStatus(enum.StrEnum):
    """The states of a webhook message."""

    PENDING = "pending"  # waiting for its first attempt or its next one
    DELIVERED = "delivered"  # the receiver answered 2xx
    FAILED = "failed"  # still refused when its retry window closed; `webhooks retry` it


class WebhookMessage(Model):
    """One event for one receiver URL, written in the transaction of the change that
    caused it and delivered by the worker.

    The payload is built from these columns when it is sent, so a retry sends the same
    body under the same ``msg_id``. Messages about one subscriber reach each URL in the
    order of their ids: a message waits while an earlier one to its URL is pending.
    """

    __tablename__ = "webhook_messages"
    __table_args__ = (
        Index("ix_webhook_messages_due", "status", "next_attempt_at"),
        Index("ix_webhook_messages_order", "url", "subscriber_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    msg_id: Mapped[str] = mapped_column(String(40), index=True)  # webhook-id; one per event
    type: Mapped[str] = mapped_column(String(40))
    url: Mapped[str] = mapped_column(String(2000))
    # Whom it is about, for the order per subscriber; no foreign key: erasure keeps it.
    subscriber_id: Mapped[int | None] = mapped_column(Integer)
    email: Mapped[str | None] = mapped_column(String(320))
    newsletter: Mapped[str | None] = mapped_column(String(64))
    how: Mapped[str | None] = mapped_column(String(40))
    details: Mapped[dict | None] = mapped_column(JSON)  # what else the event type carries
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[WebhookStatus] = mapped_column(
        state_enum(WebhookStatus), default=WebhookStatus.PENDING
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    retry_from: Mapped[datetime] = mapped_column(UTCDateTime)  # the retry window's start
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(String(300))
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
