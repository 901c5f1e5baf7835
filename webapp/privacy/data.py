"""A reader's own data, across every feature's tables: everything stored about them,
to download, and erasure.

Erasure keeps only a keyed hash of the address (``subscribers/erased.py``), so that an
import never adds it back.
"""

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from emails.addresses import mailbox

from ..db import utcnow
from ..inbound.models import InboundMessage
from ..mailout.models import Delivery, OutboxMail
from ..models import EventKind, Issue, Subscriber, SubscriptionEvent
from ..reports.models import Click, IssueLink
from ..subscribers.erased import erased_digest
from ..subscribers.history import event_record, iso
from ..subscribers.models import ErasedAddress, Mailbox, SignupRequest
from ..webhooks.events import announce
from ..webhooks.models import WebhookMessage, WebhookStatus


def erase(session: Session, address_key: str, secret_key: str, how: str = "reader") -> int:
    """Delete everything personal of an address; keep only its keyed hash.

    Returns how many subscriptions were deleted. Queued mail to the address, the
    history of its subscriptions and its inbox's count of emails on request go too;
    each newsletter keeps an ``erased`` event that names nobody. Recording the hash
    again for an address erased before is harmless.
    """
    digest = erased_digest(address_key, secret_key)
    if session.get(ErasedAddress, digest) is None:
        session.add(ErasedAddress(digest=digest))
    # The inbox's count of emails on request names the address too (another spelling
    # of the inbox starts a new count: a day's cap at most, for a reader who left).
    session.execute(delete(Mailbox).where(Mailbox.key == mailbox(address_key)))
    # So do sign-ups of it not yet acted on: none may bring the address back.
    session.execute(delete(SignupRequest).where(SignupRequest.email_key == address_key))
    subscriber = session.scalar(select(Subscriber).where(Subscriber.email_key == address_key))
    if subscriber is None:
        return 0
    newsletters = [s.newsletter_id for s in subscriber.subscriptions]
    # The newsroom's other systems hear of it, in order after what they heard before;
    # what was sent to them (or given up on) about the address is not kept any longer,
    # and what is still pending loses the address once they heard of the erasure.
    session.execute(
        delete(WebhookMessage).where(
            WebhookMessage.subscriber_id == subscriber.id,
            WebhookMessage.status != WebhookStatus.PENDING,
        )
    )
    announce(session, "subscriber.erased", subscriber=subscriber, how=how)
    session.execute(delete(OutboxMail).where(OutboxMail.subscriber_id == subscriber.id))
    # Bounces and replies about the address hold it too (raw and all).
    session.execute(delete(InboundMessage).where(InboundMessage.subscriber_id == subscriber.id))
    session.delete(subscriber)  # subscriptions and their events go with it (cascade)
    session.flush()
    if newsletters:
        now = utcnow()
        session.execute(
            insert(SubscriptionEvent),
            [
                {"newsletter_id": n, "kind": EventKind.ERASED, "how": how, "at": now}
                for n in newsletters
            ],
        )
    return len(newsletters)


def personal_data(session: Session, subscriber: Subscriber) -> dict:
    """Everything stored about a subscriber, for "download my data"."""
    mail = session.scalars(
        select(OutboxMail).where(OutboxMail.subscriber_id == subscriber.id).order_by(OutboxMail.id)
    )
    deliveries = session.scalars(
        select(Delivery).where(Delivery.subscriber_id == subscriber.id).order_by(Delivery.id)
    )
    heard = session.scalars(
        select(InboundMessage)
        .where(InboundMessage.subscriber_id == subscriber.id)
        .order_by(InboundMessage.id)
    )
    return {
        "email": subscriber.email,
        "created_at": iso(subscriber.created_at),
        "subscriptions": [
            {
                "newsletter": s.newsletter.slug,
                "newsletter_title": s.newsletter.title,
                "status": s.status.value,
                "since": iso(s.status_since),
                "history": [event_record(e) for e in s.events],
            }
            for s in subscriber.subscriptions
        ],
        "mail_sent": [
            {
                "kind": m.kind,
                "queued_at": iso(m.created_at),
                "sent_at": iso(m.sent_at),
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
                "sent_at": iso(d.sent_at),
                "feedback": d.feedback,  # bounced or complained, as heard back
                "feedback_code": d.feedback_code,
            }
            for d in deliveries
        ],
        # Bounces, complaints and mail from the address: what they were, what was done.
        "heard_back": [
            {
                "received_at": iso(m.received_at),
                "kind": m.kind,
                "code": m.code,
                "action": m.action,
            }
            for m in heard
        ],
        # Tracked clicks and opens, kept CLICK_KEEP_DAYS; after that only totals remain.
        "clicks": [
            {
                "newsletter": issue.newsletter.slug,
                "issue": issue.number,
                "link": url if click.position is not None else "(open pixel)",
                "at": iso(click.at),
                "counted": not click.scanner,
            }
            for click, issue, url in session.execute(
                select(Click, Issue, IssueLink.url)
                .join(Issue, Issue.id == Click.issue_id)
                .outerjoin(
                    IssueLink,
                    (IssueLink.issue_id == Click.issue_id) & (IssueLink.position == Click.position),
                )
                .where(Click.subscriber_id == subscriber.id)
                .order_by(Click.id)
            )
        ],
        "bounce_score": subscriber.bounce_score,
        "suppressed": {
            "at": iso(subscriber.suppressed_at),
            "reason": subscriber.suppressed_reason,
        }
        if subscriber.suppressed_at
        else None,
    }
