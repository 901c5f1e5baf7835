"""Sign-ups acted on together: a batch of requests written as :func:`service.subscribe`
would write them one after the other, in a few statements.

A wave of sign-ups is mostly new addresses, and for those the work is the same rows
each: they are written by one statement per table for the whole batch, not by one per
sign-up (each statement costs far more in Python than in the database).
"""

import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, insert, select
from sqlalchemy.orm import Session

from emails.addresses import Address, mailbox

from ..db import utcnow
from ..models import EventKind, Subscriber, Subscription, SubscriptionStatus
from .history import record_events_of
from .service import Consent, Due, claim_daily_slots, subscribe


@dataclass(frozen=True)
class SignUp:
    """One sign-up to record with :func:`subscribe_many`: what :func:`subscribe` takes."""

    newsletter_id: int
    address: Address
    consent: Consent
    at: datetime
    language: str = "en"


# The statements of subscribe_many: each runs once for a whole batch.
_SUBSCRIBERS = select(Subscriber.email_key).where(
    Subscriber.email_key.in_(bindparam("keys", expanding=True))
)
_NEW_SUBSCRIBERS = insert(Subscriber).returning(Subscriber.id, Subscriber.email_key)
_NEW_SUBSCRIPTIONS = insert(Subscription).returning(Subscription.id, Subscription.subscriber_id)


def subscribe_many(
    session: Session, signups: list[SignUp], cooldown: int, daily_cap: int
) -> list[Due | None]:
    """:func:`service.subscribe` for each of ``signups``, as if one after the other;
    the confirmation email each calls for, if any, in their order.

    New addresses are written together, a statement per table. The others (an address
    already known, or one whose inbox an earlier sign-up of the batch reaches) go
    through :func:`subscribe` after them, one by one, and find what those wrote.
    Concurrent sign-ups of one address may raise IntegrityError: retry.
    """
    db = session.connection()
    keys = list({signup.address.key for signup in signups})
    known = set(db.execute(_SUBSCRIBERS, {"keys": keys}).scalars()) if keys else set()
    # Written together: a new address whose inbox no earlier sign-up of the batch
    # reaches (each inbox's daily cap is then met in the batch's order).
    together: dict[str, int] = {}  # address key: the index of its sign-up
    inboxes: set[str] = set()
    for index, signup in enumerate(signups):
        key, inbox = signup.address.key, mailbox(signup.address.key)
        if key not in known and inbox not in inboxes:
            together[key] = index
        inboxes.add(inbox)
    dues: list[Due | None] = [None] * len(signups)
    if together:
        # In the order of their keys: two passes writing the same addresses at once
        # (PostgreSQL) wait for each other in one order, never each for the other.
        places = sorted(together.values(), key=lambda index: signups[index].address.key)
        written = _subscribe_new(session, [signups[i] for i in places], daily_cap)
        for place, due in zip(places, written, strict=True):
            dues[place] = due
    for index, signup in enumerate(signups):
        if together.get(signup.address.key) != index:
            dues[index] = subscribe(
                session,
                signup.newsletter_id,
                signup.address,
                signup.consent,
                cooldown,
                daily_cap,
                signup.at,
                signup.language,
            )
    return dues


def _subscribe_new(session: Session, signups: list[SignUp], daily_cap: int) -> list[Due | None]:
    # New addresses, each of another inbox: their subscribers, pending subscriptions,
    # "subscribed" events and inbox counts, a statement each; the confirmations due, in
    # their order (each is, unless its inbox is over the day's cap).
    db = session.connection()
    now = utcnow()
    subscriber_ids = {
        key: subscriber_id
        for subscriber_id, key in db.execute(
            _NEW_SUBSCRIBERS,
            [
                {
                    "email": signup.address.email,
                    "email_key": signup.address.key,
                    "secret": secrets.token_hex(8),
                    "created_at": signup.at,
                    "language": signup.language,
                }
                for signup in signups
            ],
        )
    }
    # RETURNING rows need not come in the order of the rows written: matched by key.
    subscribers = [subscriber_ids[signup.address.key] for signup in signups]
    nonces = [secrets.token_urlsafe(12) for _ in signups]
    subscription_ids = {
        subscriber_id: subscription_id
        for subscription_id, subscriber_id in db.execute(
            _NEW_SUBSCRIPTIONS,
            [
                {
                    "subscriber_id": subscriber_id,
                    "newsletter_id": signup.newsletter_id,
                    "status": SubscriptionStatus.PENDING,
                    "confirm_nonce": nonce,
                    "confirmation_sent_at": now,
                    "status_since": signup.at,
                }
                for signup, subscriber_id, nonce in zip(signups, subscribers, nonces, strict=True)
            ],
        )
    }
    subscriptions = [subscription_ids[subscriber_id] for subscriber_id in subscribers]
    record_events_of(
        session,
        [
            (subscription_id, signup.newsletter_id, signup.consent, signup.at)
            for subscription_id, signup in zip(subscriptions, signups, strict=True)
        ],
        EventKind.SUBSCRIBED,
        "form",
    )
    inboxes = [mailbox(signup.address.key) for signup in signups]
    counted = claim_daily_slots(session, inboxes, daily_cap)
    return [
        Due(subscription_id, nonce, subscriber_id, signup.address.email, signup.language)
        if inbox in counted
        else None
        for signup, subscriber_id, subscription_id, nonce, inbox in zip(
            signups, subscribers, subscriptions, nonces, inboxes, strict=True
        )
    ]
