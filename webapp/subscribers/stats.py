"""How each list grows: subscriptions by state, and joins and departures from the history."""

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import and_, case, func, select
from sqlalchemy.orm import Session

from ..models import EventKind, Newsletter, Subscription, SubscriptionEvent, SubscriptionStatus

WINDOWS = (7, 30)  # days
JOINED = (EventKind.CONFIRMED,)
LEFT = (EventKind.UNSUBSCRIBED, EventKind.ERASED)


@dataclass
class ListStats:
    """One newsletter's counts; ``joined`` and ``left`` by window (days)."""

    slug: str
    pending: int = 0
    confirmed: int = 0
    unsubscribed: int = 0
    joined: dict[int, int] = field(default_factory=dict)
    left: dict[int, int] = field(default_factory=dict)

    def growth(self, days: int) -> str:
        """Net growth over ``days`` as ``+3 (+5/-2)``: confirmations less departures."""
        came, gone = self.joined.get(days, 0), self.left.get(days, 0)
        return f"{came - gone:+d} (+{came}/-{gone})"


def list_stats(session: Session, now: datetime) -> list[ListStats]:
    """Every newsletter's counts, in catalog order."""

    def counted(kinds, days: int):
        recent = and_(
            SubscriptionEvent.kind.in_(kinds), SubscriptionEvent.at >= now - timedelta(days=days)
        )
        return func.sum(case((recent, 1), else_=0))

    states = [
        func.sum(case((Subscription.status == state, 1), else_=0)) for state in SubscriptionStatus
    ]
    by_state = (
        select(Newsletter.id, Newsletter.slug, *states)
        .outerjoin(Subscription, Subscription.newsletter_id == Newsletter.id)
        .group_by(Newsletter.id, Newsletter.slug, Newsletter.position)
        .order_by(Newsletter.position, Newsletter.id)
    )
    windows = [counted(kinds, days) for days in WINDOWS for kinds in (JOINED, LEFT)]
    by_event = (
        select(SubscriptionEvent.newsletter_id, *windows)
        .where(SubscriptionEvent.at >= now - timedelta(days=max(WINDOWS)))
        .group_by(SubscriptionEvent.newsletter_id)
    )
    moves = {newsletter_id: counts for newsletter_id, *counts in session.execute(by_event)}
    found = []
    for newsletter_id, slug, pending, confirmed, unsubscribed in session.execute(by_state):
        row = ListStats(slug, pending or 0, confirmed or 0, unsubscribed or 0)
        counts = iter(moves.get(newsletter_id, [0] * len(windows)))
        for days in WINDOWS:
            row.joined[days], row.left[days] = next(counts) or 0, next(counts) or 0
        found.append(row)
    return found
