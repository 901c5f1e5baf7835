"""Acting on what was heard back, inside the caller's transaction.

Who a report is about is decided by a token of ours only: the VERP token of the
message it returns (a delivery of an issue, or an outbox message), or for a complaint
a signed link of ours in the returned original. An address written in a message
proves nothing (anyone can write one), so:

- a report whose token fails its check names nobody;
- a bounce with no token at all names its reader only through a probe (as Mailman
  does): the address gets a probe with a fresh token, and only the probe's own bounce,
  for an address reason, suppresses it;
- a complaint with no token of ours is kept for staff and changes no one.

Then by whose fault the failure is (:func:`emails.reasons.fault`): an address that is
gone is suppressed, a mailbox that cannot take mail now adds to the soft score (both in
:mod:`..subscribers.suppression`), a refusal of us is counted against the send and the
receiving domain, a delay is news. A complaint unsubscribes the address from every
newsletter and suppresses it; a mailto unsubscribe ends the one subscription its token
names. Each action is an event in the history of the subscriptions it touches, naming
the message that caused it.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from emails.addresses import InvalidAddress, normalize_address

from ..db import utcnow
from ..links import LinkGone, TokenExpired, TokenInvalid, issue_of_unsubscribe, row_for_link
from ..mailout.models import Delivery, OutboxMail
from ..mailout.verp import Verp
from ..models import Issue, Subscriber
from ..subscribers.mail import queue_probe
from ..subscribers.service import unsubscribe
from ..subscribers.suppression import Rules, active_subscriptions, bounced, suppress
from ..webhooks.events import announce
from .models import InboundMessage
from .report import Report, ReportKind, Verdict

PROBE_EVERY = timedelta(days=7)  # at most one probe an address in this long


@dataclass
class Target:
    """Whom a report is about: the reader, and the delivery it concerns if known."""

    subscriber: Subscriber | None = None
    delivery: Delivery | None = None


def act(
    session: Session, inbound: InboundMessage, report: Report, config: Mapping, verp: Verp
) -> str:
    """Do what ``report`` calls for; record it on ``inbound``; return what was done."""
    _note(inbound, report)
    if report.kind == ReportKind.UNSUBSCRIBE:
        action = _unsubscribe_by_mail(session, inbound, report)
    elif report.forged:
        action = "nothing: a token of ours in it does not verify (forged or altered)"
    else:
        target = find_target(session, report, verp)
        if target.subscriber is None:
            action = _nobody(session, inbound, report)
        else:
            action = _on_reader(session, inbound, report, target.subscriber, target, config)
    inbound.action = action[:500]
    return action


def _on_reader(
    session: Session,
    inbound: InboundMessage,
    report: Report,
    subscriber: Subscriber,
    target: Target,
    config: Mapping,
) -> str:
    """A bounce or complaint about a reader we know (``subscriber``, the target's):
    recorded on ``inbound``, acted on."""
    inbound.subscriber_id = subscriber.id
    if target.delivery is not None:
        inbound.delivery_id = target.delivery.id
    if report.kind == ReportKind.COMPLAINT:
        return _complaint(session, inbound, subscriber, target)
    return _bounce(session, inbound, report, subscriber, target, Rules.from_config(config))


def act_for_relay(
    session: Session,
    inbound: InboundMessage,
    report: Report,
    config: Mapping,
    verp: Verp,
    relay: str,
) -> str:
    """As :func:`act`, for an event of a relay whose signature was checked: the relay
    vouches for the address it names (it sent that message), so the address stands in
    for a token; its unsubscribe (the relay's own link or list) ends every
    subscription of that reader, with ``relay`` as the history's how."""
    if report.kind != ReportKind.UNSUBSCRIBE:
        if verp.read(report.token) or not report.address:  # our token names the delivery
            return act(session, inbound, report, config, verp)
        _note(inbound, report)
        target = Target(by_address(session, report.address))
        if target.subscriber is None:
            action = "nothing: it names none of our readers"
        else:
            action = _on_reader(session, inbound, report, target.subscriber, target, config)
        inbound.action = action[:500]
        return action
    _note(inbound, report)
    subscriber = by_address(session, report.address) if report.address else None
    if subscriber is None:
        action = "nothing: it names none of our readers"
    else:
        inbound.subscriber_id = subscriber.id
        ended = sum(
            unsubscribe(session, subscription, relay, inbound_id=inbound.id)
            for subscription in active_subscriptions(session, subscriber)
        )
        action = f"unsubscribed from {ended} newsletter(s) ({relay})"
    inbound.action = action
    return action


def _note(inbound: InboundMessage, report: Report) -> None:
    inbound.kind, inbound.code = report.kind.value, (report.code or None)
    inbound.reason = report.reason or None
    inbound.detail = (report.detail or "")[:500] or None


def find_target(session: Session, report: Report, verp: Verp) -> Target:
    """The reader a report is about, by our token only: the delivery or outbox message
    its VERP token names, or for a complaint the reader of a signed link of ours."""
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
    if report.kind == ReportKind.COMPLAINT and report.link:
        return Target(_by_link(session, report.link))
    return Target()


def _by_link(session: Session, link: tuple[str, str]) -> Subscriber | None:
    purpose, token = link
    try:
        row = row_for_link(session, purpose, token)
    except (TokenInvalid, TokenExpired, LinkGone):
        return None
    return row if isinstance(row, Subscriber) else row.subscriber


def by_address(session: Session, address: str) -> Subscriber | None:
    """The subscriber of ``address`` (any spelling of the inbox), if there is one."""
    try:
        key = normalize_address(address).key
    except InvalidAddress:
        return None
    return session.scalar(select(Subscriber).where(Subscriber.email_key == key))


def _nobody(session: Session, inbound: InboundMessage, report: Report) -> str:
    """A report with no token of ours: a complaint is kept for staff; a bounce saying an
    address of ours is gone gets that address a probe."""
    if report.kind == ReportKind.COMPLAINT:
        return "nothing: a complaint with no token of ours (kept for staff)"
    if report.kind not in (ReportKind.HARD_BOUNCE, ReportKind.SOFT_BOUNCE, ReportKind.REFUSED):
        return "nothing"
    gone = [v for v in report.verdicts if v.kind == ReportKind.HARD_BOUNCE and v.address]
    for verdict in gone:
        subscriber = by_address(session, verdict.address or "")
        if subscriber is None or subscriber.suppressed_at is not None:
            continue
        inbound.subscriber_id = subscriber.id
        if _probed_lately(session, subscriber):
            return f"no token of ours: a probe to {subscriber.email} is already out"
        queue_probe(session, subscriber)
        return (
            f"no token of ours: probe sent to {subscriber.email}; nothing changed until it bounces"
        )
    return "nothing: it names none of our readers by a token of ours"


def _probed_lately(session: Session, subscriber: Subscriber) -> bool:
    since = utcnow() - PROBE_EVERY
    return bool(
        session.scalar(
            select(func.count())
            .select_from(OutboxMail)
            .where(
                OutboxMail.subscriber_id == subscriber.id,
                OutboxMail.kind == "probe",
                OutboxMail.created_at >= since,
            )
        )
    )


def _bounce(
    session: Session,
    inbound: InboundMessage,
    report: Report,
    subscriber: Subscriber,
    target: Target,
    rules: Rules,
) -> str:
    """A bounce of our own message: acted on by the verdict about that reader."""
    now = utcnow()
    verdict = report.verdict_for(subscriber.email) or Verdict(
        report.address, report.reason or "undefined", report.code, action="failed"
    )
    kind = verdict.kind if report.verdicts else report.kind
    inbound.kind, inbound.reason = kind.value, verdict.reason
    inbound.code = verdict.code or inbound.code
    if kind == ReportKind.DELAYED:
        return f"nothing: delayed ({verdict.reason}), not a bounce"
    if kind == ReportKind.REFUSED:
        if target.delivery is not None:
            _feedback(session, target.delivery, "refused", verdict)
        domain = subscriber.email.rpartition("@")[2]
        return f"refused by {domain} ({verdict.reason}): about us, not the reader; nobody changed"
    if kind not in (ReportKind.HARD_BOUNCE, ReportKind.SOFT_BOUNCE):
        return "nothing"
    how = "hard" if kind == ReportKind.HARD_BOUNCE else "soft"
    if target.delivery is not None:
        _feedback(session, target.delivery, "bounced", verdict)
    _announce(
        session,
        "delivery.bounced",
        target,
        now,
        {"kind": how, "code": verdict.code, "reason": verdict.reason},
    )
    issue_id = target.delivery.issue_id if target.delivery is not None else None
    return bounced(
        session,
        subscriber,
        how,
        verdict.reason,
        rules,
        code=verdict.code,
        inbound_id=inbound.id,
        issue_id=issue_id,
        now=now,
    )


def _complaint(
    session: Session, inbound: InboundMessage, subscriber: Subscriber, target: Target
) -> str:
    now = utcnow()
    if target.delivery is not None:
        _feedback(session, target.delivery, "complained", None)
    _announce(session, "delivery.complained", target, now)
    ended = 0
    for subscription in active_subscriptions(session, subscriber):
        ended += unsubscribe(session, subscription, "complaint", inbound_id=inbound.id)
    suppress(session, subscriber, "complaint", "complaint", now=now, inbound_id=inbound.id)
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
        issue = session.get_one(Issue, target.delivery.issue_id)  # the delivery's own
        newsletter, details["issue"] = issue.newsletter.slug, issue.number
    announce(
        session,
        event_type,
        subscriber=target.subscriber,
        newsletter=newsletter,
        details=details,
        at=now,
    )


def _feedback(session: Session, delivery: Delivery, what: str, verdict: Verdict | None) -> None:
    session.execute(
        update(Delivery)
        .where(Delivery.id == delivery.id)
        .values(
            feedback=what,
            feedback_code=(verdict.code if verdict else None),
            feedback_reason=(verdict.reason if verdict else None),
        )
        .execution_options(synchronize_session=False)
    )
