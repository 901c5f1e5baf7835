"""The tables every feature reads: the newsletter catalog, its subscribers and their
subscriptions, each subscription's history, and the issues.

A feature's own tables are beside it (``mailout/models.py``, ``inbound/models.py``…);
``tables.py`` gathers them all for the migrations and ``db copy``.
"""

import enum
import secrets
from datetime import datetime

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .db import Model, UTCDateTime, state_enum, utcnow


class SubscriptionStatus(enum.StrEnum):
    """The states of a subscription."""

    PENDING = "pending"
    CONFIRMED = "confirmed"
    UNSUBSCRIBED = "unsubscribed"


class Newsletter(Model):
    """One list readers can subscribe to, loaded from ``seeds/newsletters.toml``."""

    __tablename__ = "newsletters"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    cadence: Mapped[str] = mapped_column(String(200), default="")
    from_name: Mapped[str] = mapped_column(String(200), default="")
    welcome: Mapped[bool] = mapped_column(Boolean, default=False)  # mail a welcome on confirm
    # Its issues are built in this language (an i18n.LANGUAGES code).
    language: Mapped[str] = mapped_column(String(8), default="en", server_default="en")
    # Scheduled sends without a zone of their own are in this one (an IANA name).
    timezone: Mapped[str] = mapped_column(
        String(64), default="Europe/Kyiv", server_default="Europe/Kyiv"
    )
    # Automatic issues: a cron expression in ``timezone``, and where articles come from
    # (feed URLs and folders of *.txt pages; None: the seeds in its language).
    schedule: Mapped[str | None] = mapped_column(String(100))
    sources: Mapped[list | None] = mapped_column(JSON)
    # When the schedule was last set: slots before it are not the worker's to run.
    schedule_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    position: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def __repr__(self) -> str:
        return f"<Newsletter {self.slug}>"


class Subscriber(Model):
    """One person, known by one normalized address."""

    __tablename__ = "subscribers"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    # The address case-folded: duplicates are found case-insensitively, on every database.
    email_key: Mapped[str] = mapped_column(String(320), unique=True)
    # Part of every link token: a token outlives an erased subscriber, and SQLite may hand
    # the erased row's id to someone new; the secret makes the old token fail for them.
    secret: Mapped[str] = mapped_column(String(32), default=lambda: secrets.token_hex(8))
    # Set when the relay refused the address for good (5xx): later sends skip it.
    suppressed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    suppressed_reason: Mapped[str | None] = mapped_column(String(500))
    # The reader's language: the page they signed up on, or what they chose since.
    language: Mapped[str] = mapped_column(String(8), default="en", server_default="en")
    # Bounces counted as Mailman does: 1 a hard one, 0.5 a soft one, at most one a day;
    # suppressed at BOUNCE_SCORE_LIMIT, forgotten BOUNCE_SCORE_RESET_DAYS after the last.
    bounce_score: Mapped[float] = mapped_column(Float, default=0.0)
    last_bounce_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    subscriptions: Mapped[list["Subscription"]] = relationship(
        back_populates="subscriber", cascade="all, delete-orphan", passive_deletes=True
    )

    def __repr__(self) -> str:
        return f"<Subscriber {self.id}>"


class Subscription(Model):
    """One subscriber on one newsletter, in its current state; how it got there is its
    history of events (:class:`SubscriptionEvent`)."""

    __tablename__ = "subscriptions"
    __table_args__ = (UniqueConstraint("subscriber_id", "newsletter_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    newsletter_id: Mapped[int] = mapped_column(ForeignKey("newsletters.id", ondelete="CASCADE"))
    status: Mapped[SubscriptionStatus] = mapped_column(state_enum(SubscriptionStatus))
    # Changes each time the subscription becomes pending, so older confirmation links stop working.
    confirm_nonce: Mapped[str] = mapped_column(String(32))
    confirmation_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    # When the current status began (its event is the subscription's latest).
    status_since: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    subscriber: Mapped[Subscriber] = relationship(back_populates="subscriptions")
    newsletter: Mapped[Newsletter] = relationship()
    events: Mapped[list["SubscriptionEvent"]] = relationship(
        order_by="SubscriptionEvent.id", viewonly=True
    )

    def __repr__(self) -> str:
        return f"<Subscription {self.id} {self.status.value}>"


class EventKind(enum.StrEnum):
    """What happened to a subscription."""

    SUBSCRIBED = "subscribed"  # a first sign-up (how: form, import, manage)
    RESUBSCRIBED = "resubscribed"  # signed up again after leaving
    CONFIRMED = "confirmed"
    WELCOME_SENT = "welcome_sent"
    UNSUBSCRIBED = "unsubscribed"  # how: link, one-click, manage, staff, import, mailto, complaint
    ERASED = "erased"  # the address was erased; kept without anything personal
    BOUNCED = "bounced"  # how: hard or soft; the address's bounce score grew
    SUPPRESSED = "suppressed"  # how: hard-bounce, bounce-score, complaint: no more mail
    UNSUPPRESSED = "unsuppressed"  # how: why a suppression was lifted (reclassified)


class SubscriptionEvent(Model):
    """One event in a subscription's history: appended, never changed.

    Consent is history: when, how, and from which IP, user agent and source. Erasing
    an address deletes its events with it; only an ``erased`` event per newsletter
    stays, naming nobody (no subscription, no address).
    """

    __tablename__ = "subscription_events"
    __table_args__ = (
        Index("ix_subscription_events_subscription", "subscription_id", "id"),
        Index("ix_subscription_events_newsletter", "newsletter_id", "at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    subscription_id: Mapped[int | None] = mapped_column(
        ForeignKey("subscriptions.id", ondelete="CASCADE")
    )
    newsletter_id: Mapped[int] = mapped_column(ForeignKey("newsletters.id", ondelete="CASCADE"))
    kind: Mapped[EventKind] = mapped_column(state_enum(EventKind))
    how: Mapped[str | None] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ip: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    source: Mapped[str | None] = mapped_column(String(200))
    # The message that caused it (a bounce, a complaint, a mailto unsubscribe).
    inbound_id: Mapped[int | None] = mapped_column(
        ForeignKey("inbound_messages.id", ondelete="SET NULL")
    )
    # The issue whose link or List-Unsubscribe header it came from (an unsubscribe).
    issue_id: Mapped[int | None] = mapped_column(ForeignKey("issues.id", ondelete="SET NULL"))

    def __repr__(self) -> str:
        return f"<SubscriptionEvent {self.id} {self.kind.value}>"


class Issue(Model):
    """One numbered issue of a newsletter, rendered once when it is built.

    ``content`` keeps the articles as they were read (for the web version); ``html`` and
    ``text`` keep the rendered parts with slots for each reader's own links.
    """

    __tablename__ = "issues"
    __table_args__ = (UniqueConstraint("newsletter_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    newsletter_id: Mapped[int] = mapped_column(ForeignKey("newsletters.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    subject: Mapped[str] = mapped_column(String(300))
    preheader: Mapped[str] = mapped_column(String(300))
    content: Mapped[dict] = mapped_column(JSON)
    html: Mapped[dict] = mapped_column(JSON)
    text: Mapped[dict] = mapped_column(JSON)
    size: Mapped[int] = mapped_column(Integer)  # bytes of one reader's message
    notes: Mapped[list] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Set when the issue is first sent; only sent issues are public on the web.
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When a worker is to start its send (``digest send --at``); None: sent by hand.
    scheduled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    # When its last reader was done; set once, by whichever sender finished (issue.sent).
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Clicks and opens of readers whose rows were folded away after CLICK_KEEP_DAYS.
    folded_clicks: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    folded_clickers: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    folded_openers: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    newsletter: Mapped[Newsletter] = relationship()

    @property
    def state(self) -> str:
        """``draft`` until sent, then ``sent``."""
        return "sent" if self.sent_at else "draft"

    def __repr__(self) -> str:
        return f"<Issue {self.newsletter_id}#{self.number}>"
