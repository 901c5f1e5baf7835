"""The list's rules: subscribe, confirm, unsubscribe, erase, each inside the caller's
transaction.

Functions here take a session and never commit; the view or command that calls
them commits once, so a subscription and its confirmation email land together.
"""

import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import case, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from emails.addresses import Address, mailbox

from ..db import utcnow
from ..models import (
    EventKind,
    Mailbox,
    Newsletter,
    Subscriber,
    Subscription,
    SubscriptionStatus,
)
from .history import record_event


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


def subscribe(
    session: Session,
    newsletter: Newsletter,
    address: Address,
    consent: Consent,
    cooldown: int,
    daily_cap: int,
    at: datetime | None = None,
) -> Subscription | None:
    """Record a sign-up made ``at`` (now if None); return the subscription if a
    confirmation email is due.

    New and unsubscribed addresses become pending with a fresh confirmation nonce.
    A pending one is due again only once the cooldown has passed since its last
    email, and only while the address has had fewer than ``daily_cap`` confirmation
    emails in 24 hours; a confirmed one gets nothing. The caller answers the same in
    every case. Concurrent sign-ups of one address may raise IntegrityError: retry.
    """
    now = utcnow()
    at = at or now  # when the reader asked: their consent's time
    subscriber = session.scalar(select(Subscriber).where(Subscriber.email_key == address.key))
    subscription = None
    if subscriber is None:
        subscriber = Subscriber(email=address.email, email_key=address.key, created_at=at)
        session.add(subscriber)
        session.flush()
    else:  # a new subscriber has no subscription yet: no need to ask
        subscription = session.scalar(
            select(Subscription).where(
                Subscription.subscriber_id == subscriber.id,
                Subscription.newsletter_id == newsletter.id,
            )
        )
    if subscription is None:
        # New: its confirmation is due now (the unique key decides between concurrent
        # posts, and the loser finds this row within its cooldown), within the daily cap.
        subscription = Subscription(subscriber=subscriber, newsletter=newsletter)
        _start_pending(subscription, at)
        subscription.confirmation_sent_at = now
        session.add(subscription)
        session.flush()
        record_event(session, subscription, EventKind.SUBSCRIBED, "form", consent, at)
        return subscription if claim_daily_slot(session, address.key, daily_cap) else None
    elif subscription.status == SubscriptionStatus.CONFIRMED:
        return None
    elif subscription.status == SubscriptionStatus.UNSUBSCRIBED:
        # One conditional UPDATE decides which of concurrent posts starts the new cycle
        # (one nonce, one "resubscribed" in the history).
        restarted = session.execute(
            update(Subscription)
            .where(
                Subscription.id == subscription.id,
                Subscription.status == SubscriptionStatus.UNSUBSCRIBED,
            )
            .values(
                status=SubscriptionStatus.PENDING,
                confirm_nonce=secrets.token_urlsafe(12),
                confirmation_sent_at=None,
                status_since=at,
            )
            .execution_options(synchronize_session=False)
        ).rowcount
        if restarted:
            record_event(session, subscription, EventKind.RESUBSCRIBED, "form", consent, at)
        session.refresh(subscription)
    cutoff = now - timedelta(seconds=cooldown)
    if claim_confirmation(session, subscription.id, address.key, cutoff, daily_cap):
        return subscription
    return None


def claim_confirmation(
    session: Session, subscription_id: int, address_key: str, cutoff: datetime, daily_cap: int
) -> bool:
    """Decide that a pending subscription gets a confirmation email now; True if so.

    Due when none was sent since ``cutoff`` and the inbox ``address_key`` reaches has
    had fewer than ``daily_cap`` in 24 hours. Each is one conditional UPDATE, so
    concurrent posts (or a sign-up beside a staff resend) of one address send one email.
    """
    claimed = session.execute(
        update(Subscription)
        .where(
            Subscription.id == subscription_id,
            Subscription.status == SubscriptionStatus.PENDING,
            confirmation_due(cutoff),
        )
        .values(confirmation_sent_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return claimed.rowcount == 1 and claim_daily_slot(session, address_key, daily_cap)


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
    insert = sqlite_insert if session.get_bind().dialect.name == "sqlite" else pg_insert
    session.execute(insert(Mailbox).values(key=key, window_count=0).on_conflict_do_nothing())
    now = utcnow()
    window_over = or_(
        Mailbox.window_start.is_(None), Mailbox.window_start <= now - timedelta(days=1)
    )
    result = session.execute(
        update(Mailbox)
        .where(Mailbox.key == key, or_(window_over, Mailbox.window_count < cap))
        .values(
            window_count=case((window_over, 1), else_=Mailbox.window_count + 1),
            window_start=case((window_over, now), else_=Mailbox.window_start),
        )
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def _start_pending(subscription: Subscription, now: datetime) -> None:
    subscription.status = SubscriptionStatus.PENDING
    subscription.confirm_nonce = secrets.token_urlsafe(12)
    subscription.confirmation_sent_at = None
    subscription.status_since = now


def confirm(session: Session, subscription: Subscription, nonce: str, consent: Consent) -> bool:
    """Confirm a pending subscription whose nonce matches; True if this call confirmed it."""
    now = utcnow()
    result = session.execute(
        update(Subscription)
        .where(
            Subscription.id == subscription.id,
            Subscription.status == SubscriptionStatus.PENDING,
            Subscription.confirm_nonce == nonce,
        )
        .values(status=SubscriptionStatus.CONFIRMED, status_since=now)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount == 1:
        record_event(session, subscription, EventKind.CONFIRMED, "link", consent, now)
        # Confirming from the email proves the address takes mail again.
        session.execute(
            update(Subscriber)
            .where(Subscriber.id == subscription.subscriber_id)
            .values(suppressed_at=None, suppressed_reason=None)
            .execution_options(synchronize_session=False)
        )
    session.refresh(subscription)
    return result.rowcount == 1


def unsubscribe(
    session: Session, subscription: Subscription, how: str, consent: Consent | None = None
) -> bool:
    """End a subscription at once; True if it was not already ended (idempotent).

    ``how`` says which way the reader (or staff) asked: link, one-click, manage, …
    """
    now = utcnow()
    result = session.execute(
        update(Subscription)
        .where(
            Subscription.id == subscription.id,
            Subscription.status != SubscriptionStatus.UNSUBSCRIBED,
        )
        .values(status=SubscriptionStatus.UNSUBSCRIBED, status_since=now)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount == 1:
        record_event(session, subscription, EventKind.UNSUBSCRIBED, how, consent, now)
    session.refresh(subscription)
    return result.rowcount == 1


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
        started = EventKind.SUBSCRIBED
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
