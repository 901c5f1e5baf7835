"""Mending what older rules did: the messages still kept are classified again with
today's rules, and every suppression today's rules would not have made is lifted, each
with a history event saying why (``newsletter inbound reclassify``).

Two kinds of suppression are looked at: those a message heard back caused (its raw
bytes are still kept), and those a relay's refusal at send time caused, whose reply
text the suppression kept. Nothing else is touched: a suppression staff or a later
message made stays.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from emails.reasons import Fault, fault, reason_of

from ..mailout.verp import Verp
from ..models import EventKind, Subscriber, Subscription, SubscriptionEvent
from ..subscribers.suppression import lift
from .acting import find_target
from .classify import classify
from .models import InboundMessage
from .report import BOUNCES, Report, ReportKind

BATCH = 200  # messages classified and committed together


@dataclass(frozen=True)
class Mend:
    """A suppression today's rules would not have made."""

    email: str
    was: str  # the suppression's reason as recorded
    now: str  # what today's rules make of its cause
    message_id: int | None  # the message heard back that caused it, if one did


def reclassify(
    sessions: sessionmaker[Session], config: Mapping, since: datetime | None, dry_run: bool
) -> tuple[int, list[Mend]]:
    """Classify again the kept messages received since ``since`` and lift the
    suppressions today's rules would not have made; (messages classified, mends).
    With ``dry_run`` nothing is written."""
    verp = Verp.from_config(config)
    mends: list[Mend] = []
    classified, last_id = 0, 0
    while True:
        with sessions() as session:
            query = (
                select(InboundMessage)
                .where(InboundMessage.id > last_id, InboundMessage.raw.is_not(None))
                .order_by(InboundMessage.id)
                .limit(BATCH)
            )
            if since is not None:
                query = query.where(InboundMessage.received_at >= since)
            messages = session.scalars(query).all()
            if not messages:
                break
            for message in messages:
                report = classify(message.raw or b"", message.recipient, verp, config["MAIL_FROM"])
                mends += _mend_message(session, message, report, verp, dry_run)
                if not dry_run and not message.source.startswith("hook:"):
                    message.kind, message.reason = report.kind.value, report.reason
                    message.code = report.code or message.code
                classified += 1
            last_id = messages[-1].id
            if dry_run:
                session.rollback()
            else:
                session.commit()
    with sessions() as session:
        mends += _mend_refusals(session, since, dry_run)
        if dry_run:
            session.rollback()
        else:
            session.commit()
    return classified, mends


def _mend_message(
    session: Session, message: InboundMessage, report: Report, verp: Verp, dry_run: bool
) -> list[Mend]:
    """Lift the suppression ``message`` caused, if today's ``report`` of it would not
    have caused it."""
    if message.source.startswith("hook:"):
        return []  # a relay's event is its own verdict, signed: not ours to redo
    subscriber = _suppressed_by(session, message.id)
    if subscriber is None:
        return []
    why = _would_suppress(session, report, subscriber, verp)
    if why is None:
        return []
    mend = Mend(subscriber.email, subscriber.suppressed_reason or "", why, message.id)
    if not dry_run:
        lift(session, subscriber, f"reclassified: {why}"[:32], inbound_id=message.id)
    return [mend]


def _would_suppress(
    session: Session, report: Report, subscriber: Subscriber, verp: Verp
) -> str | None:
    """None when today's rules suppress ``subscriber`` for ``report`` too; else what
    they make of it, in a few words."""
    if report.forged:
        return "forged token"
    target = find_target(session, report, verp).subscriber
    if target is None or target.id != subscriber.id:
        return f"{report.kind.value}, no token of ours"
    if report.kind == ReportKind.COMPLAINT:
        return None
    verdict = report.verdict_for(subscriber.email)
    kind = verdict.kind if verdict is not None else report.kind
    reason = (verdict.reason if verdict is not None else report.reason) or "undefined"
    if kind == ReportKind.HARD_BOUNCE:
        return None
    if kind == ReportKind.SOFT_BOUNCE and (subscriber.suppressed_reason or "").startswith(
        "bounce score"
    ):
        return None  # the last of many soft bounces: still a soft bounce today
    if kind in BOUNCES or kind == ReportKind.DELAYED:
        return f"{kind.value} ({reason})"
    return kind.value


def _suppressed_by(session: Session, message_id: int) -> Subscriber | None:
    """The subscriber whose suppression in force ``message_id`` caused, if any."""
    event = session.execute(
        select(SubscriptionEvent.at, Subscription.subscriber_id)
        .join(Subscription, Subscription.id == SubscriptionEvent.subscription_id)
        .where(
            SubscriptionEvent.inbound_id == message_id,
            SubscriptionEvent.kind == EventKind.SUPPRESSED,
        )
        .limit(1)
    ).first()
    if event is None:
        return None
    subscriber = session.get(Subscriber, event.subscriber_id)
    if subscriber is None or subscriber.suppressed_at is None:
        return None
    # Only the suppression still in force: a later one had a cause of its own.
    latest = session.scalar(
        select(SubscriptionEvent.inbound_id)
        .join(Subscription, Subscription.id == SubscriptionEvent.subscription_id)
        .where(
            Subscription.subscriber_id == subscriber.id,
            SubscriptionEvent.kind == EventKind.SUPPRESSED,
        )
        .order_by(SubscriptionEvent.at.desc(), SubscriptionEvent.id.desc())
        .limit(1)
    )
    return subscriber if latest == message_id else None


def _mend_refusals(session: Session, since: datetime | None, dry_run: bool) -> list[Mend]:
    """Lift the suppressions older sends made for a relay's 5xx that is not about the
    address (they kept the reply: "relay answered 550 5.7.1 …")."""
    query = select(Subscriber).where(
        Subscriber.suppressed_at.is_not(None),
        Subscriber.suppressed_reason.like("relay answered %"),
    )
    if since is not None:
        query = query.where(Subscriber.suppressed_at >= since)
    mends = []
    for subscriber in session.scalars(query):
        said = subscriber.suppressed_reason or ""
        code = said.removeprefix("relay answered ")[:3]
        reason = reason_of(None, code if code.isdigit() else None, said, "failed", "rcpt")
        if fault(reason) is Fault.ADDRESS:
            continue
        mends.append(Mend(subscriber.email, said, f"refused at send ({reason})", None))
        if not dry_run:
            lift(session, subscriber, f"reclassified: {reason}"[:32])
    return mends
