"""Acting on what was heard back, inside the caller's transaction.

A hard bounce suppresses the address at once; soft bounces add to its bounce score
(0.5, a hard one 1, at most once a day, as Mailman scores) until BOUNCE_SCORE_LIMIT
suppresses it; a complaint unsubscribes the address from every newsletter and
suppresses it; a mailto unsubscribe ends the one subscription its token names.
Auto-replies, replies and the unknown change nothing. Each action is an event in the
history of the subscriptions it touches, naming the message that caused it.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from emails.addresses import InvalidAddress, normalize_address

from ..db import utcnow
from ..links import LinkGone, TokenExpired, TokenInvalid, issue_of_unsubscribe, row_for_link
from ..models import (
    Delivery,
    EventKind,
    InboundMessage,
    Issue,
    OutboxMail,
    Subscriber,
    Subscription,
    SubscriptionStatus,
)
from ..subscribers.history import record_event
from ..subscribers.service import unsubscribe
from ..webhooks.events import announce
from .report import Report, ReportKind
from .verp import Verp

SCORES = {ReportKind.HARD_BOUNCE: 1.0, ReportKind.SOFT_BOUNCE: 0.5}


@dataclass
class Target:
    """Whom a report is about: the reader, and the delivery it concerns if known."""

    subscriber: Subscriber | None = None
    delivery: Delivery | None = None


def act(
    session: Session, inbound: InboundMessage, report: Report, config: Mapping, verp: Verp
) -> str:
    """Do what ``report`` calls for; record it on ``inbound``; return what was done."""
    inbound.kind, inbound.code = report.kind.value, (report.code or None)
    inbound.detail = (report.detail or "")[:500] or None
    if report.kind == ReportKind.UNSUBSCRIBE:
        action = _unsubscribe_by_mail(session, inbound, report)
    else:
        target = find_target(session, report, verp)
        if target.subscriber is not None:
            inbound.subscriber_id = target.subscriber.id
        if target.delivery is not None:
            inbound.delivery_id = target.delivery.id
        if report.kind in SCORES and target.subscriber is not None:
            action = _bounce(session, inbound, report, target, config)
        elif report.kind == ReportKind.COMPLAINT and target.subscriber is not None:
            action = _complaint(session, inbound, target)
        elif report.kind in SCORES or report.kind == ReportKind.COMPLAINT:
            action = "nothing: it names none of our readers"
        else:
            action = "nothing"
    inbound.action = action[:500]
    return action


def act_for_relay(
    session: Session,
    inbound: InboundMessage,
    report: Report,
    config: Mapping,
    verp: Verp,
    relay: str,
) -> str:
    """As :func:`act`, for an event of a relay whose signature was checked: its
    unsubscribe (the relay's own link or list) names the reader by address, and ends
    every subscription of that reader, with ``relay`` as the history's how."""
    if report.kind != ReportKind.UNSUBSCRIBE:
        return act(session, inbound, report, config, verp)
    inbound.kind, inbound.code = report.kind.value, (report.code or None)
    inbound.detail = (report.detail or "")[:500] or None
    subscriber = find_target(session, report, verp).subscriber
    if subscriber is None:
        action = "nothing: it names none of our readers"
    else:
        inbound.subscriber_id = subscriber.id
        ended = sum(
            unsubscribe(session, subscription, relay, inbound_id=inbound.id)
            for subscription in _subscriptions(session, subscriber)
        )
        action = f"unsubscribed from {ended} newsletter(s) ({relay})"
    inbound.action = action
    return action


def find_target(session: Session, report: Report, verp: Verp) -> Target:
    """The reader a report is about: by our VERP token (the delivery or outbox message it
    names), else by the address it gives."""
    named = verp.read(report.token)
    if named is not None:
        kind, row_id = named
        if kind == "d":
            delivery = session.get(Delivery, row_id)
            if delivery is not None:
                return Target(session.get(Subscriber, delivery.subscriber_id), delivery)
        else:
            mail = session.get(OutboxMail, row_id)
            if mail is not None and mail.subscriber_id is not None:
                return Target(session.get(Subscriber, mail.subscriber_id))
    if report.address:
        try:
            key = normalize_address(report.address).key
        except InvalidAddress:
            return Target()
        return Target(session.scalar(select(Subscriber).where(Subscriber.email_key == key)))
    return Target()


def _bounce(
    session: Session, inbound: InboundMessage, report: Report, target: Target, config: Mapping
) -> str:
    subscriber, now = target.subscriber, utcnow()
    hard = report.kind == ReportKind.HARD_BOUNCE
    if target.delivery is not None:
        _feedback(session, target.delivery, "bounced", report.code)
    last = subscriber.last_bounce_at
    if last is not None and now - last > timedelta(days=config["BOUNCE_SCORE_RESET_DAYS"]):
        subscriber.bounce_score = 0.0  # long enough without a bounce: forgotten
    counted = last is None or now - last >= timedelta(days=1) or subscriber.bounce_score == 0
    if counted:
        subscriber.bounce_score = (subscriber.bounce_score or 0.0) + SCORES[report.kind]
        subscriber.last_bounce_at = now
    how = "hard" if hard else "soft"
    _announce(session, "delivery.bounced", target, now, {"kind": how, "code": report.code})
    _events(session, subscriber, EventKind.BOUNCED, how, inbound.id, now)
    score = f"score {subscriber.bounce_score:g}"
    if subscriber.suppressed_at is not None:
        return f"{how} bounce; {score}; already suppressed"
    if hard:
        reason = f"hard bounce {report.code or ''}".strip()
        _suppress(session, subscriber, reason, "hard-bounce", inbound.id, now)
        return f"hard bounce: suppressed; {score}"
    if subscriber.bounce_score >= config["BOUNCE_SCORE_LIMIT"]:
        reason = f"bounce score {subscriber.bounce_score:g}"
        _suppress(session, subscriber, reason, "bounce-score", inbound.id, now)
        return f"soft bounce: {score}, at the limit: suppressed"
    counted_text = "" if counted else " (not counted: one a day)"
    return f"soft bounce: {score}{counted_text}"


def _complaint(session: Session, inbound: InboundMessage, target: Target) -> str:
    subscriber, now = target.subscriber, utcnow()
    if target.delivery is not None:
        _feedback(session, target.delivery, "complained", None)
    _announce(session, "delivery.complained", target, now)
    ended = 0
    for subscription in _subscriptions(session, subscriber):
        ended += unsubscribe(session, subscription, "complaint", inbound_id=inbound.id)
    if subscriber.suppressed_at is None:
        _suppress(session, subscriber, "complaint", "complaint", inbound.id, now)
    return f"complaint: unsubscribed from {ended} newsletter(s), suppressed"


def _unsubscribe_by_mail(session: Session, inbound: InboundMessage, report: Report) -> str:
    try:
        subscription = row_for_link(session, "unsubscribe", report.token or "")
    except (TokenInvalid, TokenExpired, LinkGone):
        return "nothing: the unsubscribe token is not ours"
    inbound.subscriber_id = subscription.subscriber_id
    issue_id = issue_of_unsubscribe(report.token or "")
    if unsubscribe(session, subscription, "mailto", inbound_id=inbound.id, issue_id=issue_id):
        return f"unsubscribed from {subscription.newsletter.slug} (mailto)"
    return "nothing: already unsubscribed"


def _announce(
    session: Session, event_type: str, target: Target, now: datetime, details: dict | None = None
) -> None:
    """The webhook event of a bounce or complaint: the newsletter and issue number when
    the report names the delivery."""
    newsletter, details = None, dict(details or {})
    if target.delivery is not None:
        issue = session.get(Issue, target.delivery.issue_id)
        newsletter, details["issue"] = issue.newsletter.slug, issue.number
    announce(
        session,
        event_type,
        subscriber=target.subscriber,
        newsletter=newsletter,
        details=details,
        at=now,
    )


def _suppress(
    session: Session,
    subscriber: Subscriber,
    reason: str,
    how: str,
    inbound_id: int,
    now: datetime,
) -> None:
    subscriber.suppressed_at, subscriber.suppressed_reason = now, reason[:500]
    _events(session, subscriber, EventKind.SUPPRESSED, how, inbound_id, now)


def _events(session, subscriber, kind, how, inbound_id, now) -> None:
    for subscription in _subscriptions(session, subscriber):
        record_event(session, subscription, kind, how, at=now, inbound_id=inbound_id)


def _subscriptions(session: Session, subscriber: Subscriber) -> list[Subscription]:
    """The subscriber's subscriptions that have not ended."""
    return list(
        session.scalars(
            select(Subscription).where(
                Subscription.subscriber_id == subscriber.id,
                Subscription.status != SubscriptionStatus.UNSUBSCRIBED,
            )
        )
    )


def _feedback(session: Session, delivery: Delivery, what: str, code: str | None) -> None:
    session.execute(
        update(Delivery)
        .where(Delivery.id == delivery.id)
        .values(feedback=what, feedback_code=(code or None))
        .execution_options(synchronize_session=False)
    )
