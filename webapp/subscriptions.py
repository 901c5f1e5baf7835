"""Subscribing and confirming: the state changes, each inside the caller's transaction.

Functions here take a session and never commit; the view or command that calls
them commits once, so a subscription and its confirmation email land together.
"""

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from emails.addresses import Address

from .db import utcnow
from .models import Newsletter, Status, Subscriber, Subscription


@dataclass(frozen=True)
class Consent:
    """Where a reader's consent came from: recorded at subscribe and at confirm."""

    ip: str | None
    user_agent: str | None
    source: str | None = None


def subscribe(
    session: Session,
    newsletter: Newsletter,
    address: Address,
    consent: Consent,
    cooldown: int,
) -> Subscription | None:
    """Record a sign-up; return the subscription if a confirmation email is due.

    New and unsubscribed addresses become pending with a fresh confirmation nonce.
    A pending one is due again only once the cooldown has passed since its last
    email; a confirmed one gets nothing. The caller answers the same in every case.
    Concurrent sign-ups of one address may raise IntegrityError: retry the whole call.
    """
    now = utcnow()
    subscriber = session.scalar(select(Subscriber).where(Subscriber.email_key == address.key))
    if subscriber is None:
        subscriber = Subscriber(email=address.email, email_key=address.key, created_at=now)
        session.add(subscriber)
        session.flush()
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
    elif subscription.status == Status.CONFIRMED:
        return None
    elif subscription.status == Status.UNSUBSCRIBED:
        _start_pending(subscription, consent, now)
        session.flush()
    # One conditional UPDATE decides, so concurrent posts of one address send one email.
    claimed = session.execute(
        update(Subscription)
        .where(
            Subscription.id == subscription.id,
            Subscription.status == Status.PENDING,
            or_(
                Subscription.confirmation_sent_at.is_(None),
                Subscription.confirmation_sent_at <= now - timedelta(seconds=cooldown),
            ),
        )
        .values(confirmation_sent_at=now)
        .execution_options(synchronize_session=False)
    )
    return subscription if claimed.rowcount == 1 else None


def _start_pending(subscription: Subscription, consent: Consent, now: datetime) -> None:
    subscription.status = Status.PENDING
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
            Subscription.status == Status.PENDING,
            Subscription.confirm_nonce == nonce,
        )
        .values(
            status=Status.CONFIRMED,
            confirmed_at=utcnow(),
            confirm_ip=consent.ip,
            confirm_user_agent=consent.user_agent,
        )
        .execution_options(synchronize_session=False)
    )
    session.refresh(subscription)
    return result.rowcount == 1
