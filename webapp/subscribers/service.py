"""The list's rules: subscribe, confirm, unsubscribe, erase, each inside the caller's
transaction.

Functions here take a session and never commit; the view or command that calls
them commits once, so a subscription and its confirmation email land together.
"""

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import case, delete, or_, select, update
from sqlalchemy.orm import Session

from emails.addresses import Address

from ..db import utcnow
from ..models import (
    Delivery,
    ErasedAddress,
    Newsletter,
    OutboxMail,
    Subscriber,
    Subscription,
    SubscriptionStatus,
)


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
) -> Subscription | None:
    """Record a sign-up; return the subscription if a confirmation email is due.

    New and unsubscribed addresses become pending with a fresh confirmation nonce.
    A pending one is due again only once the cooldown has passed since its last
    email, and only while the address has had fewer than ``daily_cap`` confirmation
    emails in 24 hours; a confirmed one gets nothing. The caller answers the same in
    every case. Concurrent sign-ups of one address may raise IntegrityError: retry.
    """
    now = utcnow()
    subscriber = session.scalar(select(Subscriber).where(Subscriber.email_key == address.key))
    subscription = None
    if subscriber is None:
        subscriber = Subscriber(email=address.email, email_key=address.key, created_at=now)
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
        subscription = Subscription(subscriber=subscriber, newsletter=newsletter)
        _start_pending(subscription, consent, now)
        session.add(subscription)
        session.flush()
    elif subscription.status == SubscriptionStatus.CONFIRMED:
        return None
    elif subscription.status == SubscriptionStatus.UNSUBSCRIBED:
        _start_pending(subscription, consent, now)
        session.flush()
    if claim_confirmation(session, subscription.id, now - timedelta(seconds=cooldown), daily_cap):
        return subscription
    return None


def claim_confirmation(
    session: Session, subscription_id: int, cutoff: datetime, daily_cap: int
) -> bool:
    """Decide that a pending subscription gets a confirmation email now; True if so.

    Due when none was sent since ``cutoff`` and the address has had fewer than
    ``daily_cap`` in 24 hours. Each is one conditional UPDATE, so concurrent posts (or
    a sign-up beside a staff resend) of one address send one email.
    """
    claimed = session.execute(
        update(Subscription)
        .where(
            Subscription.id == subscription_id,
            Subscription.status == SubscriptionStatus.PENDING,
            confirmation_due(cutoff),
        )
        .values(confirmation_sent_at=utcnow())
        .returning(Subscription.subscriber_id)
        .execution_options(synchronize_session=False)
    ).scalar()
    return claimed is not None and _claim_daily_slot(session, claimed, daily_cap)


def confirmation_due(cutoff: datetime):
    """SQL condition: no confirmation email was sent to this subscription since ``cutoff``."""
    return or_(
        Subscription.confirmation_sent_at.is_(None), Subscription.confirmation_sent_at <= cutoff
    )


def _claim_daily_slot(session: Session, subscriber_id: int, cap: int) -> bool:
    """Count one confirmation email in the address's 24-hour window, if under the cap.

    One conditional UPDATE: concurrent posts cannot together pass the cap.
    """
    now = utcnow()
    window_over = or_(
        Subscriber.confirm_window_start.is_(None),
        Subscriber.confirm_window_start <= now - timedelta(days=1),
    )
    result = session.execute(
        update(Subscriber)
        .where(
            Subscriber.id == subscriber_id, or_(window_over, Subscriber.confirm_window_count < cap)
        )
        .values(
            confirm_window_count=case((window_over, 1), else_=Subscriber.confirm_window_count + 1),
            confirm_window_start=case((window_over, now), else_=Subscriber.confirm_window_start),
        )
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def _start_pending(subscription: Subscription, consent: Consent, now: datetime) -> None:
    subscription.status = SubscriptionStatus.PENDING
    subscription.confirm_nonce = secrets.token_urlsafe(12)
    subscription.confirmation_sent_at = None
    subscription.subscribed_at = now
    subscription.subscribe_ip = consent.ip
    subscription.subscribe_user_agent = consent.user_agent
    subscription.subscribe_source = consent.source
    subscription.confirmed_at = subscription.confirm_ip = subscription.confirm_user_agent = None
    subscription.unsubscribed_at = None


def confirm(session: Session, subscription: Subscription, nonce: str, consent: Consent) -> bool:
    """Confirm a pending subscription whose nonce matches; True if this call confirmed it."""
    result = session.execute(
        update(Subscription)
        .where(
            Subscription.id == subscription.id,
            Subscription.status == SubscriptionStatus.PENDING,
            Subscription.confirm_nonce == nonce,
        )
        .values(
            status=SubscriptionStatus.CONFIRMED,
            confirmed_at=utcnow(),
            confirm_ip=consent.ip,
            confirm_user_agent=consent.user_agent,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount == 1:
        # Confirming from the email proves the address takes mail again.
        session.execute(
            update(Subscriber)
            .where(Subscriber.id == subscription.subscriber_id)
            .values(suppressed_at=None, suppressed_reason=None)
            .execution_options(synchronize_session=False)
        )
    session.refresh(subscription)
    return result.rowcount == 1


def unsubscribe(session: Session, subscription: Subscription) -> bool:
    """End a subscription at once; True if it was not already ended (idempotent)."""
    result = session.execute(
        update(Subscription)
        .where(
            Subscription.id == subscription.id,
            Subscription.status != SubscriptionStatus.UNSUBSCRIBED,
        )
        .values(status=SubscriptionStatus.UNSUBSCRIBED, unsubscribed_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    session.refresh(subscription)
    return result.rowcount == 1


def subscribe_confirmed(
    session: Session, subscriber: Subscriber, newsletter: Newsletter, consent: Consent
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
    _start_pending(subscription, consent, now)
    subscription.status = SubscriptionStatus.CONFIRMED
    subscription.confirmed_at = now
    subscription.confirm_ip = consent.ip
    subscription.confirm_user_agent = consent.user_agent
    session.flush()
    return subscription


def erased_digest(address_key: str, secret_key: str) -> str:
    """The keyed hash kept of an erased address (HMAC-SHA256 of its case-folded form)."""
    key = hmac.new(secret_key.encode(), b"newsletter.erased", hashlib.sha256).digest()
    return hmac.new(key, address_key.encode(), hashlib.sha256).hexdigest()


def erase(session: Session, address_key: str, secret_key: str) -> int:
    """Delete everything personal of an address; keep only its keyed hash.

    Returns how many subscriptions were deleted. Queued mail to the address goes too.
    Recording the hash again for an address erased before is harmless.
    """
    digest = erased_digest(address_key, secret_key)
    if session.get(ErasedAddress, digest) is None:
        session.add(ErasedAddress(digest=digest))
    subscriber = session.scalar(select(Subscriber).where(Subscriber.email_key == address_key))
    if subscriber is None:
        return 0
    count = len(subscriber.subscriptions)
    session.execute(delete(OutboxMail).where(OutboxMail.subscriber_id == subscriber.id))
    session.delete(subscriber)  # subscriptions go with it (cascade)
    session.flush()
    return count


def is_erased(session: Session, address_key: str, secret_key: str) -> bool:
    """True if this address was erased (imports must skip it)."""
    return session.get(ErasedAddress, erased_digest(address_key, secret_key)) is not None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def consent_record(s: Subscription) -> dict:
    """A subscription's state and consent, JSON-ready: for exports and data downloads."""
    return {
        "status": s.status.value,
        "subscribed_at": _iso(s.subscribed_at),
        "subscribe_ip": s.subscribe_ip,
        "subscribe_user_agent": s.subscribe_user_agent,
        "subscribe_source": s.subscribe_source,
        "confirmed_at": _iso(s.confirmed_at),
        "confirm_ip": s.confirm_ip,
        "confirm_user_agent": s.confirm_user_agent,
        "unsubscribed_at": _iso(s.unsubscribed_at),
    }


def personal_data(session: Session, subscriber: Subscriber) -> dict:
    """Everything stored about a subscriber, for "download my data"."""
    mail = session.scalars(
        select(OutboxMail).where(OutboxMail.subscriber_id == subscriber.id).order_by(OutboxMail.id)
    )
    deliveries = session.scalars(
        select(Delivery).where(Delivery.subscriber_id == subscriber.id).order_by(Delivery.id)
    )
    return {
        "email": subscriber.email,
        "created_at": _iso(subscriber.created_at),
        "subscriptions": [
            {"newsletter": s.newsletter.slug, "newsletter_title": s.newsletter.title}
            | consent_record(s)
            for s in subscriber.subscriptions
        ],
        "mail_sent": [
            {
                "kind": m.kind,
                "queued_at": _iso(m.created_at),
                "sent_at": _iso(m.sent_at),
                "status": m.status.value,
            }
            for m in mail
        ],
        "issues_sent": [
            {
                "newsletter": d.issue.newsletter.slug,
                "issue": d.issue.number,
                "subject": d.issue.subject,
                "status": d.status.value,
                "sent_at": _iso(d.sent_at),
            }
            for d in deliveries
        ],
        "suppressed": {
            "at": _iso(subscriber.suppressed_at),
            "reason": subscriber.suppressed_reason,
        }
        if subscriber.suppressed_at
        else None,
    }
