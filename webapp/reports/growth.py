"""How a list grew, day by day, from its history: joined (confirmed), left and why, and
the readers mail can reach (confirmed, not suppressed), worked back from today's count.
"""

from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..db import utcnow
from ..models import (
    EventKind,
    Newsletter,
    Subscriber,
    Subscription,
    SubscriptionEvent,
    SubscriptionStatus,
)

REASONS = ("link", "one-click", "mailto", "complaint", "bounce", "other")
BOUNCE_SUPPRESSIONS = ("hard-bounce", "bounce-score")


@dataclass
class Growth:
    """One newsletter's days, oldest first, and each day's figures."""

    newsletter: Newsletter
    days: list[date] = field(default_factory=list)
    confirmed: list[int] = field(default_factory=list)  # at the end of the day
    joined: list[int] = field(default_factory=list)
    left: dict[str, list[int]] = field(default_factory=dict)

    @property
    def total_joined(self) -> int:
        return sum(self.joined)

    @property
    def total_left(self) -> dict[str, int]:
        return {reason: sum(counts) for reason, counts in self.left.items()}


def reason_left(kind: EventKind, how: str | None) -> str | None:
    """Why an event took a reader off the list, or None if it did not."""
    if kind == EventKind.UNSUBSCRIBED:
        return how if how in ("link", "one-click", "mailto", "complaint") else "other"
    if kind == EventKind.SUPPRESSED and how in BOUNCE_SUPPRESSIONS:
        return "bounce"
    return None  # a complaint's suppression is counted by its unsubscribe


def growth(session: Session, newsletter: Newsletter, since: datetime | None) -> Growth:
    """The newsletter's growth from ``since`` (default: its first event) to today."""
    today = utcnow().date()
    query = select(SubscriptionEvent.kind, SubscriptionEvent.how, SubscriptionEvent.at).where(
        SubscriptionEvent.newsletter_id == newsletter.id,
        SubscriptionEvent.kind.in_(
            [
                EventKind.CONFIRMED,
                EventKind.UNSUBSCRIBED,
                EventKind.SUPPRESSED,
                EventKind.UNSUPPRESSED,
            ]
        ),
    )
    if since is not None:
        query = query.where(SubscriptionEvent.at >= since)
    joined: Counter[date] = Counter()
    left: dict[str, Counter[date]] = {reason: Counter() for reason in REASONS}
    back: Counter[date] = Counter()  # suppressions lifted (reclassified): reachable again, not new
    first = since.date() if since is not None else today
    for kind, how, at in session.execute(query.execution_options(yield_per=5000)):
        day = at.date()
        first = min(first, day)
        if kind == EventKind.CONFIRMED:
            joined[day] += 1
        elif kind == EventKind.UNSUPPRESSED:
            back[day] += 1
        elif (reason := reason_left(kind, how)) is not None:
            left[reason][day] += 1
    reachable = session.execute(
        select(func.count())
        .select_from(Subscription)
        .join(Subscriber)
        .where(
            Subscription.newsletter_id == newsletter.id,
            Subscription.status == SubscriptionStatus.CONFIRMED,
            Subscriber.suppressed_at.is_(None),
        )
    ).scalar_one()
    result = Growth(newsletter)
    days = [first + timedelta(days=n) for n in range((today - first).days + 1)]
    # Worked back from today: the day before had this day's leavers, not its joiners.
    count, confirmed = reachable, []
    for day in reversed(days):
        confirmed.append(max(count, 0))
        count += sum(left[reason][day] for reason in REASONS) - joined[day] - back[day]
    result.days, result.confirmed = days, confirmed[::-1]
    result.joined = [joined[day] for day in days]
    result.left = {reason: [left[reason][day] for day in days] for reason in REASONS}
    return result
