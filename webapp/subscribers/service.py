"""The list's rules: subscribe, confirm, unsubscribe, erase, each inside the caller's
transaction.

Functions here take a session and never commit; the view or command that calls
them commits once, so a subscription and its confirmation email land together.
"""

import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Row, bindparam, case, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from emails.addresses import Address, mailbox

from ..db import UTCDateTime, rowcount, utcnow
from ..models import EventKind, Newsletter, Subscriber, Subscription, SubscriptionStatus
from .history import record_event, record_event_of
from .models import Mailbox


@dataclass(frozen=True)
class Consent:
    """Where a reader's consent came from: recorded at subscribe and at confirm."""

    ip: str | None
    user_agent: str | None
    source: str | None = None

    @classmethod
    def from_request(cls, request, source: str | None = None) -> "Consent":
        """The consent of a web request (a werkzeug ``Request``): its IP and user agent.

        Both texts come from the client as sent: control characters are dropped (a NUL
        cannot even be stored in PostgreSQL) and their length is bounded.
        """
        return cls(
            ip=request.remote_addr,
            user_agent=printable(request.user_agent.string)[:512] or None,
            source=printable(source or "")[:200] or None,
        )


CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` without control characters (C0, DEL and C1)."""
    return CONTROL.sub("", text)


# A sign-up runs these once each: built once, run on the session's connection with
# their parameters. A statement built per call, through the ORM's execute, cost several
# times the database's own work.
NOW = bindparam("now", type_=UTCDateTime)
_SUBSCRIBER = select(Subscriber.id, Subscriber.email, Subscriber.language).where(
    Subscriber.email_key == bindparam("key")
)
_LANGUAGE = (
    update(Subscriber)
    .where(Subscriber.id == bindparam("subscriber_id"))
    .values(language=bindparam("language"))
)
_NEW_SUBSCRIBER = insert(Subscriber).returning(Subscriber.id, Subscriber.email)
_SUBSCRIPTION = select(Subscription.id, Subscription.status).where(
    Subscription.subscriber_id == bindparam("subscriber_id"),
    Subscription.newsletter_id == bindparam("newsletter_id"),
)
_NEW_SUBSCRIPTION = insert(Subscription).returning(Subscription.id)
_RESTART = (
    update(Subscription)
    .where(
        Subscription.id == bindparam("subscription_id"),
        Subscription.status == SubscriptionStatus.UNSUBSCRIBED,
    )
    .values(
        status=SubscriptionStatus.PENDING,
        confirm_nonce=bindparam("nonce"),
        confirmation_sent_at=None,
        status_since=bindparam("at", type_=UTCDateTime),
    )
)
_CLAIM = (
    update(Subscription)
    .where(
        Subscription.id == bindparam("subscription_id"),
        Subscription.status == SubscriptionStatus.PENDING,
        or_(
            Subscription.confirmation_sent_at.is_(None),
            Subscription.confirmation_sent_at <= bindparam("cutoff", type_=UTCDateTime),
        ),
    )
    .values(confirmation_sent_at=NOW)
    .returning(Subscription.confirm_nonce)
)
_MAILBOX = {
    name: insert(Mailbox).values(window_count=0).on_conflict_do_nothing()
    for name, insert in (("sqlite", sqlite_insert), ("postgresql", pg_insert))
}
_WINDOW_OVER = or_(
    Mailbox.window_start.is_(None),
    Mailbox.window_start <= bindparam("day_ago", type_=UTCDateTime),
)
_COUNT_IN_WINDOW = (
    update(Mailbox)
    .where(
        Mailbox.key.in_(bindparam("mailboxes", expanding=True)),
        or_(_WINDOW_OVER, Mailbox.window_count < bindparam("cap")),
    )
    .values(
        window_count=case((_WINDOW_OVER, 1), else_=Mailbox.window_count + 1),
        window_start=case((_WINDOW_OVER, NOW), else_=Mailbox.window_start),
    )
    .returning(Mailbox.key)
)


@dataclass(frozen=True)
class Due:
    """A confirmation email a sign-up calls for: the subscription, its nonce and its reader."""

    subscription_id: int
    nonce: str
    subscriber_id: int
    email: str
    language: str = "en"  # the reader's: their confirmation comes in it


def subscribe(
    session: Session,
    newsletter_id: int,
    address: Address,
    consent: Consent,
    cooldown: int,
    daily_cap: int,
    at: datetime | None = None,
    language: str = "en",
) -> Due | None:
    """Record a sign-up made ``at`` (now if None) on a page in ``language`` (the reader's
    language from then on); what confirmation email is due, if any.

    New and unsubscribed addresses become pending with a fresh confirmation nonce.
    A pending one is due again only once the cooldown has passed since its last
    email, and only while the address has had fewer than ``daily_cap`` confirmation
    emails in 24 hours; a confirmed one gets nothing. Plain statements, no objects
    loaded: this runs once per sign-up. Concurrent sign-ups of one address may raise
    IntegrityError: retry.
    """
    db = session.connection()
    now = utcnow()
    at = at or now  # when the reader asked: their consent's time
    # Its id and email are read below; its language only when it was found.
    subscriber: Row[int, str, str] | Row[int, str] | None = db.execute(
        _SUBSCRIBER, {"key": address.key}
    ).first()
    found = None
    if subscriber is None:
        subscriber = db.execute(
            _NEW_SUBSCRIBER,
            {
                "email": address.email,
                "email_key": address.key,
                "secret": secrets.token_hex(8),
                "created_at": at,
                "language": language,
            },
        ).one()
    else:  # a new subscriber has no subscription yet: no need to ask
        if subscriber.language != language:
            db.execute(_LANGUAGE, {"subscriber_id": subscriber.id, "language": language})
        found = db.execute(
            _SUBSCRIPTION, {"subscriber_id": subscriber.id, "newsletter_id": newsletter_id}
        ).first()
    if found is None:
        # New: its confirmation is due now (the unique key decides between concurrent
        # posts, and the loser finds this row within its cooldown), within the daily cap.
        nonce = secrets.token_urlsafe(12)
        subscription_id = db.execute(
            _NEW_SUBSCRIPTION,
            {
                "subscriber_id": subscriber.id,
                "newsletter_id": newsletter_id,
                "status": SubscriptionStatus.PENDING,
                "confirm_nonce": nonce,
                "confirmation_sent_at": now,
                "status_since": at,
            },
        ).scalar_one()
        record_event_of(
            session, subscription_id, newsletter_id, EventKind.SUBSCRIBED, "form", consent, at
        )
        if not claim_daily_slot(session, address.key, daily_cap):
            return None
        return Due(subscription_id, nonce, subscriber.id, subscriber.email, language)
    subscription_id, status = found
    if status == SubscriptionStatus.CONFIRMED:
        return None
    if status == SubscriptionStatus.UNSUBSCRIBED:
        # One conditional UPDATE decides which of concurrent posts starts the new cycle
        # (one nonce, one "resubscribed" in the history).
        restarted = db.execute(
            _RESTART,
            {"subscription_id": subscription_id, "nonce": secrets.token_urlsafe(12), "at": at},
        ).rowcount
        if restarted:
            record_event_of(
                session, subscription_id, newsletter_id, EventKind.RESUBSCRIBED, "form", consent, at
            )
    cutoff = now - timedelta(seconds=cooldown)
    claimed = claim_confirmation(session, subscription_id, address.key, cutoff, daily_cap)
    if not claimed:
        return None
    return Due(subscription_id, claimed, subscriber.id, subscriber.email, language)


def claim_daily_slots(session: Session, keys: list[str], cap: int) -> set[str]:
    """:func:`claim_daily_slot` for several inboxes (``keys``: each a :func:`mailbox`,
    none twice); those under the cap, each counted once."""
    db = session.connection()
    # In order, as batches.subscribe_many writes its rows (see there).
    db.execute(_MAILBOX[db.dialect.name], [{"key": key} for key in sorted(keys)])
    now = utcnow()
    counted = db.execute(
        _COUNT_IN_WINDOW,
        {"mailboxes": keys, "cap": cap, "now": now, "day_ago": now - timedelta(days=1)},
    )
    return set(counted.scalars())


def claim_confirmation(
    session: Session, subscription_id: int, address_key: str, cutoff: datetime, daily_cap: int
) -> str | None:
    """Decide that a pending subscription gets a confirmation email now: its nonce if
    so (the link's, as it is when claimed), else None.

    Due when none was sent since ``cutoff`` and the inbox ``address_key`` reaches has
    had fewer than ``daily_cap`` in 24 hours. Each is one conditional UPDATE, so
    concurrent posts (or a sign-up beside a staff resend) of one address send one email.
    """
    claimed = (
        session.connection()
        .execute(_CLAIM, {"subscription_id": subscription_id, "cutoff": cutoff, "now": utcnow()})
        .first()
    )
    if claimed is None or not claim_daily_slot(session, address_key, daily_cap):
        return None
    return claimed.confirm_nonce


def confirmation_due(cutoff: datetime):
    """SQL condition: no confirmation email was sent to this subscription since ``cutoff``."""
    return or_(
        Subscription.confirmation_sent_at.is_(None), Subscription.confirmation_sent_at <= cutoff
    )


def claim_daily_slot(session: Session, address_key: str, cap: int) -> bool:
    """Count one email someone asked for (a confirmation, a link to one's data) in the
    24-hour window of the inbox the address reaches, if under the cap.

    Every spelling of one inbox (``+tags``, Gmail's dots) counts together. One
    conditional UPDATE decides: concurrent posts cannot together pass the cap.
    """
    key = mailbox(address_key)
    return key in claim_daily_slots(session, [key], cap)


def _start_pending(subscription: Subscription, now: datetime) -> None:
    subscription.status = SubscriptionStatus.PENDING
    subscription.confirm_nonce = secrets.token_urlsafe(12)
    subscription.confirmation_sent_at = None
    subscription.status_since = now


def confirm(session: Session, subscription: Subscription, nonce: str, consent: Consent) -> bool:
    """Confirm a pending subscription whose nonce matches; True if this call confirmed it."""
    now = utcnow()
    changed = rowcount(
        session.execute(
            update(Subscription)
            .where(
                Subscription.id == subscription.id,
                Subscription.status == SubscriptionStatus.PENDING,
                Subscription.confirm_nonce == nonce,
            )
            .values(status=SubscriptionStatus.CONFIRMED, status_since=now)
            .execution_options(synchronize_session=False)
        )
    )
    if changed == 1:
        record_event(session, subscription, EventKind.CONFIRMED, "link", consent, now)
        # Confirming from the email proves the address takes mail again.
        session.execute(
            update(Subscriber)
            .where(Subscriber.id == subscription.subscriber_id)
            .values(suppressed_at=None, suppressed_reason=None)
            .execution_options(synchronize_session=False)
        )
    session.refresh(subscription)
    return changed == 1


def unsubscribe(
    session: Session,
    subscription: Subscription,
    how: str,
    consent: Consent | None = None,
    inbound_id: int | None = None,
    issue_id: int | None = None,
) -> bool:
    """End a subscription at once; True if it was not already ended (idempotent).

    ``how`` says which way the reader (or staff) asked: link, one-click, manage, mailto,
    complaint; ``inbound_id`` names the message that asked, if one did; ``issue_id``
    the issue whose unsubscribe link or header was used, counted against it.
    """
    now = utcnow()
    changed = rowcount(
        session.execute(
            update(Subscription)
            .where(
                Subscription.id == subscription.id,
                Subscription.status != SubscriptionStatus.UNSUBSCRIBED,
            )
            .values(status=SubscriptionStatus.UNSUBSCRIBED, status_since=now)
            .execution_options(synchronize_session=False)
        )
    )
    if changed == 1:
        record_event(
            session, subscription, EventKind.UNSUBSCRIBED, how, consent, now, inbound_id, issue_id
        )
    session.refresh(subscription)
    return changed == 1


def subscribe_confirmed(
    session: Session,
    subscriber: Subscriber,
    newsletter: Newsletter,
    consent: Consent,
    how: str = "manage",
) -> Subscription | None:
    """Subscribe a reader whose address is already proven (manage page, trusted import).

    Returns the subscription if it became confirmed now, None if it already was.
    """
    subscription = session.scalar(
        select(Subscription).where(
            Subscription.subscriber_id == subscriber.id,
            Subscription.newsletter_id == newsletter.id,
        )
    )
    if subscription is not None and subscription.status == SubscriptionStatus.CONFIRMED:
        return None
    now = utcnow()
    if subscription is None:
        subscription = Subscription(subscriber=subscriber, newsletter=newsletter)
        session.add(subscription)
        started: EventKind | None = EventKind.SUBSCRIBED
    else:
        started = (
            EventKind.RESUBSCRIBED
            if subscription.status == SubscriptionStatus.UNSUBSCRIBED
            else None  # pending: its sign-up is in the history already
        )
    _start_pending(subscription, now)
    subscription.status = SubscriptionStatus.CONFIRMED
    session.flush()
    if started is not None:
        record_event(session, subscription, started, how, consent, now)
    record_event(session, subscription, EventKind.CONFIRMED, how, consent, now)
    return subscription


def sign_out_links(subscriber: Subscriber) -> None:
    """A new secret for the reader: every unsubscribe, manage and data link sent before
    stops working (they carry the old one)."""
    subscriber.secret = secrets.token_hex(8)
