"""Who gets no more mail, and why: the one place that suppresses an address, counts its
bounce score and lifts a suppression. Every way a bounce is heard (a report by mail, a
relay's webhook, a refusal at send time, a confirmation the relay refused) comes here
with "hard" or "soft" and a reason, and every change is an event in the history.

A hard bounce (the address is gone) suppresses at once; soft bounces add to the bounce
score (0.5, a hard one 1, at most once a day, as Mailman scores) until
BOUNCE_SCORE_LIMIT suppresses the address; the score is forgotten after
BOUNCE_SCORE_RESET_DAYS without a bounce. What the receiving system refused for our
sake (a block, a spam filter, a policy) never comes here: it is not the reader's doing.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from emails.reasons import Fault, fault, reason_of
from emails.transport import DeliveryError

from ..db import utcnow
from ..mailout.models import OutboxMail
from ..models import EventKind, Subscriber, Subscription, SubscriptionStatus
from .history import record_event

SCORES = {"hard": 1.0, "soft": 0.5}


@dataclass(frozen=True)
class Rules:
    """How soft bounces add up: the score that suppresses, and the days that forget it."""

    limit: float = 3.0
    reset_days: int = 21

    @classmethod
    def from_config(cls, config: Mapping) -> "Rules":
        """The app's rules (BOUNCE_SCORE_LIMIT, BOUNCE_SCORE_RESET_DAYS)."""
        return cls(float(config["BOUNCE_SCORE_LIMIT"]), int(config["BOUNCE_SCORE_RESET_DAYS"]))


def bounced(
    session: Session,
    subscriber: Subscriber,
    how: str,
    reason: str,
    rules: Rules,
    *,
    code: str | None = None,
    inbound_id: int | None = None,
    issue_id: int | None = None,
    now: datetime | None = None,
) -> str:
    """Count one bounce of ``subscriber``'s address, ``how`` "hard" or "soft", for
    ``reason`` (sisimai's: userunknown, mailboxfull…), in the caller's transaction;
    what was done, in words for staff."""
    if how not in SCORES:
        raise ValueError(f"a bounce is hard or soft, not {how!r}")
    now = now or utcnow()
    last = subscriber.last_bounce_at
    if last is not None and now - last > timedelta(days=rules.reset_days):
        subscriber.bounce_score = 0.0  # long enough without a bounce: forgotten
    counted = last is None or now - last >= timedelta(days=1) or not subscriber.bounce_score
    if counted:
        subscriber.bounce_score = (subscriber.bounce_score or 0.0) + SCORES[how]
        subscriber.last_bounce_at = now
    _events(session, subscriber, EventKind.BOUNCED, how, now, inbound_id, issue_id)
    said = f"{how} bounce ({reason})"
    score = f"score {subscriber.bounce_score:g}"
    if subscriber.suppressed_at is not None:
        return f"{said}; {score}; already suppressed"
    if how == "hard":
        why = " ".join(x for x in ("hard bounce:", reason, code) if x)
        suppress(session, subscriber, why, "hard-bounce", now=now, inbound_id=inbound_id)
        return f"{said}: suppressed; {score}"
    if subscriber.bounce_score >= rules.limit:
        why = f"bounce score {subscriber.bounce_score:g} (last: {reason})"
        suppress(session, subscriber, why, "bounce-score", now=now, inbound_id=inbound_id)
        return f"{said}: {score}, at the limit: suppressed"
    return f"{said}: {score}" + ("" if counted else " (not counted: one a day)")


def suppress(
    session: Session,
    subscriber: Subscriber,
    reason: str,
    how: str,
    *,
    now: datetime | None = None,
    inbound_id: int | None = None,
) -> bool:
    """Send ``subscriber`` no more mail, saying why (``how``: hard-bounce, bounce-score,
    complaint); False when already suppressed."""
    if subscriber.suppressed_at is not None:
        return False
    now = now or utcnow()
    subscriber.suppressed_at, subscriber.suppressed_reason = now, reason[:500]
    _events(session, subscriber, EventKind.SUPPRESSED, how, now, inbound_id)
    return True


def lift(
    session: Session,
    subscriber: Subscriber,
    why: str,
    *,
    now: datetime | None = None,
    inbound_id: int | None = None,
) -> bool:
    """End ``subscriber``'s suppression and forget its bounce score, with an event
    saying ``why`` (reclassified, confirmed again…); False when it was not suppressed."""
    if subscriber.suppressed_at is None:
        return False
    now = now or utcnow()
    subscriber.suppressed_at = subscriber.suppressed_reason = None
    subscriber.bounce_score, subscriber.last_bounce_at = 0.0, None
    _events(session, subscriber, EventKind.UNSUPPRESSED, why[:120], now, inbound_id)
    return True


def _events(session, subscriber, kind, how, now, inbound_id=None, issue_id=None) -> None:
    for subscription in active_subscriptions(session, subscriber):
        record_event(
            session, subscription, kind, how, at=now, inbound_id=inbound_id, issue_id=issue_id
        )


def active_subscriptions(session: Session, subscriber: Subscriber) -> list[Subscription]:
    """The subscriber's subscriptions that have not ended."""
    return list(
        session.scalars(
            select(Subscription).where(
                Subscription.subscriber_id == subscriber.id,
                Subscription.status != SubscriptionStatus.UNSUBSCRIBED,
            )
        )
    )


def refused_by_relay(session: Session, message: OutboxMail, exc: DeliveryError) -> None:
    """A relay's refusal of one of our messages for its recipient: a dead address is
    suppressed (a probe refused at once is the probe bouncing); the rest (a full
    mailbox, a block of us) changes no reader: a confirmation is simply not sent."""
    if message.subscriber_id is None:
        return
    reply = str(exc.code) if exc.code else None
    reason = reason_of(None, reply, str(exc), "failed", "rcpt")
    if fault(reason) is not Fault.ADDRESS:
        return
    subscriber = session.get(Subscriber, message.subscriber_id)
    if subscriber is not None:
        bounced(session, subscriber, "hard", reason, Rules(), code=reply)
