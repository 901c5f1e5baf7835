"""How one issue did, counted from what is kept: deliveries, what was heard back,
unsubscribes that name the issue, and clicks without scanners."""

from collections import Counter
from typing import Any

from sqlalchemy import distinct, func, select
from sqlalchemy.orm import Session

from emails.slots import Slotted

from ..mailout.models import Delivery, DeliveryStatus
from ..models import EventKind, Issue, SubscriptionEvent
from .models import Click, IssueLink
from .refusals import refusals_by_domain

# Which unsubscribes count against an issue: the reader used its link or header.
ISSUE_UNSUBSCRIBES = ("link", "one-click", "mailto")
OPENS_CAVEAT = (
    "Opens overstate: Apple Mail Privacy Protection loads every image of every message, "
    "read or not, and other clients block images, so an open is neither a read nor its absence."
)


def issue_numbers(session: Session, issue: Issue) -> dict:
    """The issue's results: counts, per-link clicks and the rates they make."""
    by_status = dict(
        session.execute(
            select(Delivery.status, func.count())
            .where(Delivery.issue_id == issue.id)
            .group_by(Delivery.status)
        ).all()
    )
    by_feedback = dict(
        session.execute(
            select(Delivery.feedback, func.count())
            .where(Delivery.issue_id == issue.id, Delivery.feedback.is_not(None))
            .group_by(Delivery.feedback)
        ).all()
    )
    bounced, complained = by_feedback.get("bounced", 0), by_feedback.get("complained", 0)
    bounces_by_reason: Counter[str] = Counter()
    for reason, count in session.execute(
        select(Delivery.feedback_reason, func.count())
        .where(Delivery.issue_id == issue.id, Delivery.feedback == "bounced")
        .group_by(Delivery.feedback_reason)
    ):
        bounces_by_reason[reason or "undefined"] += count
    sent = by_status.get(DeliveryStatus.SENT, 0)
    bounced_after_sending = session.execute(
        select(func.count()).where(
            Delivery.issue_id == issue.id,
            Delivery.status == DeliveryStatus.SENT,
            Delivery.feedback == "bounced",
        )
    ).scalar_one()
    unsubscribed = session.execute(
        select(func.count()).where(
            SubscriptionEvent.issue_id == issue.id,
            SubscriptionEvent.kind == EventKind.UNSUBSCRIBED,
            SubscriptionEvent.how.in_(ISSUE_UNSUBSCRIBES),
        )
    ).scalar_one()
    counted = (Click.issue_id == issue.id, Click.scanner.is_(False))
    per_link = {
        position: (clicks, clickers)
        for position, clicks, clickers in session.execute(
            select(Click.position, func.count(), func.count(distinct(Click.subscriber_id)))
            .where(*counted, Click.position.is_not(None))
            .group_by(Click.position)
        )
    }
    links: list[dict[str, Any]] = [
        {
            "position": link.position,
            "url": link.url,
            "clicks": per_link.get(link.position, (0, 0))[0] + link.folded_clicks,
            "unique_clickers": per_link.get(link.position, (0, 0))[1] + link.folded_clickers,
        }
        for link in session.scalars(
            select(IssueLink).where(IssueLink.issue_id == issue.id).order_by(IssueLink.position)
        )
    ]
    clickers = session.execute(
        select(func.count(distinct(Click.subscriber_id))).where(
            *counted, Click.position.is_not(None)
        )
    ).scalar_one()
    opens = None
    if "open_url" in Slotted.from_json(issue.html).parts[1::2]:
        opens = (
            issue.folded_openers
            + session.execute(
                select(func.count(distinct(Click.subscriber_id))).where(
                    *counted, Click.position.is_(None)
                )
            ).scalar_one()
        )
    numbers: dict[str, Any] = {
        "newsletter": issue.newsletter.slug,
        "number": issue.number,
        "subject": issue.subject,
        "sent_at": issue.sent_at.isoformat() if issue.sent_at else None,
        # The readers it went out to: not those who left before their turn (skipped).
        "recipients": sum(by_status.values()) - by_status.get(DeliveryStatus.SKIPPED, 0),
        "delivered": sent - bounced_after_sending,
        "failed": by_status.get(DeliveryStatus.FAILED, 0),
        "skipped": by_status.get(DeliveryStatus.SKIPPED, 0),
        "bounced": bounced,
        "bounces_by_reason": dict(bounces_by_reason.most_common()),
        # Refused for our sake (a block, a filter): counted against the send, not readers.
        "refused": by_feedback.get("refused", 0),
        "refusals_by_domain": [
            {
                "domain": found.domain,
                "refused": found.refused,
                "readers": found.readers,
                "share": round(found.share, 4),
                "reasons": found.reasons,
            }
            for found in refusals_by_domain(session, issue.id)
        ],
        "complained": complained,
        "unsubscribed": unsubscribed,
        "clicks": sum(link["clicks"] for link in links),
        "unique_clickers": clickers + issue.folded_clickers,
        "opens": opens,
        "links": links,
    }
    numbers["rates"] = rates(numbers)
    numbers.update({f"{name}_rate": value for name, value in numbers["rates"].items()})
    if opens is not None:
        numbers["opens_note"] = OPENS_CAVEAT
    return numbers


def rates(n: dict) -> dict:
    """Shares of the counts: delivered and bounced of the recipients, the rest of the
    delivered (None where the base is 0)."""

    def share(part, whole):
        return None if not whole or part is None else round(part / whole, 4)

    return {
        "delivery": share(n["delivered"], n["recipients"]),
        "bounce": share(n["bounced"], n["recipients"]),
        "refusal": share(n["refused"], n["recipients"]),
        "complaint": share(n["complained"], n["delivered"]),
        "unsubscribe": share(n["unsubscribed"], n["delivered"]),
        "click": share(n["unique_clickers"], n["delivered"]),
        "open": share(n["opens"], n["delivered"]),
    }
