"""The tables: the newsletter catalog, subscribers, subscriptions and the mail outbox."""

import enum
import secrets
from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .db import Model, UTCDateTime, utcnow


def _states(states: type[enum.StrEnum]) -> Enum:
    """A column type for a state enum: its values as short strings (no native enum type,
    so adding a state is a plain migration on every database)."""
    return Enum(
        states, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e]
    )


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
    status: Mapped[SubscriptionStatus] = mapped_column(_states(SubscriptionStatus))
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
    kind: Mapped[EventKind] = mapped_column(_states(EventKind))
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
        _states(OutboxStatus), default=OutboxStatus.QUEUED, index=True
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
        _states(DeliveryStatus), default=DeliveryStatus.QUEUED
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


class IssueLink(Model):
    """A tracked link of an issue, by its position, as the issue was built: ``/r/TOKEN``
    redirects to ``url`` looked up here, never to anything read from the request."""

    __tablename__ = "issue_links"

    issue_id: Mapped[int] = mapped_column(
        ForeignKey("issues.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    # Totals of the click rows folded away after CLICK_KEEP_DAYS.
    folded_clicks: Mapped[int] = mapped_column(Integer, default=0)
    folded_clickers: Mapped[int] = mapped_column(Integer, default=0)


class Click(Model):
    """One reader following one tracked link of an issue (``position``), or loading its
    open pixel (``position`` None). Kept CLICK_KEEP_DAYS for unique counts, then folded
    into the link's and the issue's totals; erased with the reader.

    ``scanner`` marks a hit that was a link scanner's, not the reader's (every link of
    one message within seconds): kept for the burst's sake, never counted.
    """

    __tablename__ = "clicks"
    __table_args__ = (Index("ix_clicks_issue_subscriber", "issue_id", "subscriber_id", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    issue_id: Mapped[int] = mapped_column(ForeignKey("issues.id", ondelete="CASCADE"))
    subscriber_id: Mapped[int] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int | None] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    scanner: Mapped[bool] = mapped_column(Boolean, default=False)


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
        _states(WebhookStatus), default=WebhookStatus.PENDING
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    retry_from: Mapped[datetime] = mapped_column(UTCDateTime)  # the retry window's start
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(String(300))
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AutomaticRun(Model):
    """One slot of a newsletter's schedule, taken by one worker: the row is the claim.

    ``slot`` is the slot's time in the newsletter's zone with its UTC offset: slots come
    from cron as Debian's cron runs it (a daily slot in the hour a daylight-saving change
    repeats runs once, one in the hour it skips runs at its end).
    """

    __tablename__ = "automatic_runs"
    __table_args__ = (UniqueConstraint("newsletter_id", "slot"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    newsletter_id: Mapped[int] = mapped_column(ForeignKey("newsletters.id", ondelete="CASCADE"))
    slot: Mapped[str] = mapped_column(String(32))  # 2026-11-27T07:00:00+02:00 (local)
    slot_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ran_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    issue_id: Mapped[int | None] = mapped_column(ForeignKey("issues.id", ondelete="SET NULL"))
    outcome: Mapped[str] = mapped_column(String(300))


class IssueArticle(Model):
    """An article an issue carried, by its source's key (a feed item's id, a page's file
    name): an automatic issue takes only articles no earlier issue carried."""

    __tablename__ = "issue_articles"
    __table_args__ = (Index("ix_issue_articles_newsletter_key", "newsletter_id", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    newsletter_id: Mapped[int] = mapped_column(ForeignKey("newsletters.id", ondelete="CASCADE"))
    issue_id: Mapped[int] = mapped_column(ForeignKey("issues.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(512))  # feeds.MAX_KEY
