"""The delivery queue of an issue, in SQL: taking the list, claiming batches, putting
back what dead senders held, and recording results.

A send starts by taking the list: one ``deliveries`` row per confirmed subscriber, in
one statement, together with the issue's ``sent_at``. Senders then claim batches of
rows, each claim one conditional UPDATE, and record each result on the row; the rows
are what make a send resumable and each reader's copy go out once. Part of the
sending core: nothing here needs Flask.
"""

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Connection, and_, bindparam, exists, func, insert, or_, select, update
from sqlalchemy.orm import Session

from ..db import rowcount, utcnow
from ..mailout.models import Delivery, DeliveryStatus
from ..mailout.senders import alive, host_name
from ..models import Issue, Subscriber, Subscription, SubscriptionStatus
from ..webhooks.events import announce


def eligible_readers(issue: Issue):
    """Select the confirmed, not suppressed subscriptions of the issue's newsletter."""
    return (
        select(Subscription.subscriber_id, Subscription.id)
        .join(Subscription.subscriber)
        .where(
            Subscription.newsletter_id == issue.newsletter_id,
            Subscription.status == SubscriptionStatus.CONFIRMED,
            Subscriber.suppressed_at.is_(None),
        )
    )


def finish(session: Session, issue: Issue, found: dict[DeliveryStatus, int]) -> bool:
    """Mark the issue's send finished, once, and announce ``issue.sent``; ``found``: its
    deliveries by state, none left to send. Commits the session (the mark and its event
    together). False if another sender had done it."""
    won = rowcount(
        session.execute(
            update(Issue)
            .where(Issue.id == issue.id, Issue.finished_at.is_(None))
            .values(finished_at=utcnow())
            .execution_options(synchronize_session=False)
        )
    )
    if won:
        details = {
            "number": issue.number,
            "subject": issue.subject,
            "delivered": found[DeliveryStatus.SENT],
            "failed": found[DeliveryStatus.FAILED],
        }
        announce(session, "issue.sent", newsletter=issue.newsletter.slug, details=details)
    session.commit()
    return bool(won)


def readers_left():
    """For a query of issues: the issue has readers still to send to (queued, or held by
    a sender)."""
    return exists().where(
        Delivery.issue_id == Issue.id,
        Delivery.status.in_([DeliveryStatus.QUEUED, DeliveryStatus.SENDING]),
    )


def finish_done(session: Session) -> int:
    """:func:`finish` every sent issue with no reader left to send that is not marked
    finished; how many there were. Commits."""
    done = session.scalars(
        select(Issue).where(
            Issue.sent_at.is_not(None), Issue.finished_at.is_(None), ~readers_left()
        )
    ).all()
    for issue in done:
        finish(session, issue, counts(session, issue.id))
    return len(done)


def take_list(session: Session, issue: Issue) -> int:
    """Make the issue's deliveries, once: the readers confirmed at this moment.

    Marks the issue sent (its web version becomes public) in the same transaction.
    Returns how many deliveries were made; 0 when the list was taken before.
    """
    won = rowcount(
        session.execute(
            update(Issue)
            .where(Issue.id == issue.id, Issue.sent_at.is_(None))
            .values(sent_at=utcnow())
            .execution_options(synchronize_session=False)
        )
    )
    if not won:
        session.rollback()
        return 0
    readers = eligible_readers(issue).subquery()
    session.execute(
        insert(Delivery).from_select(
            ["issue_id", "subscriber_id", "subscription_id", "status", "attempts"],
            select(
                bindparam("issue", issue.id),
                readers.c.subscriber_id,
                readers.c.id,
                bindparam("queued", DeliveryStatus.QUEUED.value),
                bindparam("zero", 0),
            ),
        )
    )
    # Counted, not taken from rowcount: drivers differ on INSERT … SELECT.
    made = session.scalar(
        select(func.count()).select_from(Delivery).where(Delivery.issue_id == issue.id)
    )
    session.commit()
    session.refresh(issue)
    return made or 0


def release_claims(session: Session, issue_id: int, *, expired_only: bool) -> int:
    """Put claimed deliveries back in the queue: those of a sender that died.

    With ``expired_only`` only claims whose lease has ended (other senders may be alive).
    """
    conditions = [Delivery.issue_id == issue_id, Delivery.status == DeliveryStatus.SENDING]
    if expired_only:
        conditions.append(Delivery.claimed_until < utcnow())
    released = rowcount(
        session.execute(
            update(Delivery)
            .where(*conditions)
            .values(status=DeliveryStatus.QUEUED, claimed_by=None, claimed_until=None)
            .execution_options(synchronize_session=False)
        )
    )
    session.commit()
    return released


def release_dead_local_claims(session: Session, issue_id: int) -> int:
    """Put back the claims of senders on this host whose process is gone (kill -9).

    Claims of other hosts wait for their lease: from here nobody can tell whether
    those senders are alive.
    """
    prefix = f"{host_name()}:"
    names = session.scalars(
        select(Delivery.claimed_by)
        .where(
            Delivery.issue_id == issue_id,
            Delivery.status == DeliveryStatus.SENDING,
            # Compared exactly: as a LIKE pattern the name's "_" would match any
            # character, and SQLite's LIKE ignores case (worker_1 took worker-1's claims).
            func.substr(Delivery.claimed_by, 1, len(prefix)) == prefix,
        )
        .distinct()
    ).all()
    dead = [name for name in names if name and not alive(int(name.split(":")[1]))]
    if not dead:
        session.rollback()
        return 0
    released = rowcount(
        session.execute(
            update(Delivery)
            .where(Delivery.status == DeliveryStatus.SENDING, Delivery.claimed_by.in_(dead))
            .values(status=DeliveryStatus.QUEUED, claimed_by=None, claimed_until=None)
            .execution_options(synchronize_session=False)
        )
    )
    session.commit()
    return released


def counts(session: Session, issue_id: int) -> dict[DeliveryStatus, int]:
    """How many deliveries of the issue are in each state."""
    rows = session.execute(
        select(Delivery.status, func.count())
        .where(Delivery.issue_id == issue_id)
        .group_by(Delivery.status)
    )
    found = {status: 0 for status in DeliveryStatus}
    found.update({DeliveryStatus(status): number for status, number in rows})
    return found


def failures(session: Session, issue_id: int, limit: int = 10) -> list[tuple[str, str]]:
    """The first failed deliveries: address and the relay's reason."""
    rows = session.execute(
        select(Subscriber.email, Delivery.last_error)
        .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        .where(Delivery.issue_id == issue_id, Delivery.status == DeliveryStatus.FAILED)
        .order_by(Delivery.id)
        .limit(limit)
    )
    return [(email, error or "") for email, error in rows]


@dataclass
class Claimed:
    """One claimed delivery with what its message needs."""

    id: int
    attempts: int
    subscriber_id: int
    subscription_id: int
    email: str
    secret: str
    sendable: bool  # still confirmed and not suppressed


def claim(
    session: Session, issue_id: int, sender: str, batch: int, lease: float, spread: int = 1
) -> list[Claimed]:
    """Claim up to ``batch`` deliveries that are due, for ``sender``, for ``lease`` seconds.

    With ``spread`` connections sending, a claim takes no more than its share of what
    is due: the last batches of a send (and all of a short one) are spread over the
    connections, not held by one while the others wait, at a rate per connection.
    One UPDATE over a ``FOR UPDATE SKIP LOCKED`` selection: senders on PostgreSQL
    take disjoint batches without waiting for each other (SQLite has one writer).
    """
    now = utcnow()
    # Only queued rows, so the (issue, status, id) index finds them at once however
    # many are already sent; claims of dead senders are put back by release_claims.
    due = (
        select(Delivery.id)
        .where(
            Delivery.issue_id == issue_id,
            Delivery.status == DeliveryStatus.QUEUED,
            or_(Delivery.next_attempt_at.is_(None), Delivery.next_attempt_at <= now),
        )
        .order_by(Delivery.id)
    )
    if spread > 1:  # counts no further than a batch for each: cheap on any list
        found = session.scalar(
            select(func.count()).select_from(due.limit(batch * spread).subquery())
        )
        batch = max(1, min(batch, -(-(found or 0) // spread)))
    due = due.limit(batch).with_for_update(skip_locked=True)
    ids = session.scalars(
        update(Delivery)
        .where(Delivery.id.in_(due.scalar_subquery()))
        .values(
            status=DeliveryStatus.SENDING,
            claimed_by=sender,
            claimed_until=now + timedelta(seconds=lease),
        )
        .returning(Delivery.id)
        .execution_options(synchronize_session=False)
    ).all()
    session.commit()
    if not ids:
        return []
    rows = session.execute(
        select(
            Delivery.id,
            Delivery.attempts,
            Subscriber.id,
            Subscription.id,
            Subscriber.email,
            Subscriber.secret,
            and_(
                Subscription.status == SubscriptionStatus.CONFIRMED,
                Subscriber.suppressed_at.is_(None),
            ),
        )
        .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        .join(Subscription, Subscription.id == Delivery.subscription_id)
        .where(Delivery.id.in_(ids))
        .order_by(Delivery.id)
    )
    claimed = [Claimed(*row) for row in rows]
    session.rollback()  # a read; end it so no snapshot is held while sending
    return claimed


def renew(connection: Connection, issue_id: int, owner: str, lease: float) -> set[int]:
    """Extend ``owner``'s claims on the issue by ``lease`` seconds from now.

    Returns the ids it still holds: a claim that ran out and was taken back by
    another sender is no longer this one's to send.
    """
    return set(
        connection.scalars(
            update(Delivery)
            .where(
                Delivery.issue_id == issue_id,
                Delivery.status == DeliveryStatus.SENDING,
                Delivery.claimed_by == owner,
            )
            .values(claimed_until=utcnow() + timedelta(seconds=lease))
            .returning(Delivery.id)
        )
    )


def next_due(session: Session, issue_id: int) -> float | None:
    """Seconds until a queued delivery is due; None when nothing is left to send.

    Deliveries claimed by another sender count as left: they come back if it dies.
    """
    now = utcnow()
    queued, waiting, first_retry = session.execute(
        select(
            func.count(), func.count(Delivery.next_attempt_at), func.min(Delivery.next_attempt_at)
        ).where(Delivery.issue_id == issue_id, Delivery.status == DeliveryStatus.QUEUED)
    ).one()
    lease_end = session.scalar(
        select(func.min(Delivery.claimed_until)).where(
            Delivery.issue_id == issue_id, Delivery.status == DeliveryStatus.SENDING
        )
    )
    session.rollback()
    if queued > waiting:
        return 0.0
    moments = [moment for moment in (first_retry, lease_end) if moment is not None]
    if not moments:
        return None
    return max(0.0, (min(moments) - now).total_seconds())
