"""Scheduled sends: ``digest send --at`` records when; a worker starts the send then.

A time is read as ISO 8601 (seconds optional) in the newsletter's zone unless another
is given, and kept in UTC. A send that is due is run as ``digest send`` runs it:
resumable, each reader once; several workers on PostgreSQL share it as several
``digest send`` processes do.
"""

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ..catalog import known_zone
from ..db import rowcount, utcnow
from ..models import Issue
from .queue import readers_left


class ScheduleError(ValueError):
    """A time, zone or issue a send cannot be scheduled with: one line for staff."""


def parse_time(text: str, zone: str) -> datetime:
    """``text`` (``2026-11-27 07:00``, seconds optional) in ``zone``, as UTC."""
    if not known_zone(zone):
        raise ScheduleError(f"unknown time zone {zone!r} (a name like Europe/Kyiv)")
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ScheduleError(f"{text!r} is not a time like 2026-11-27 07:00") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(zone))
    return moment.astimezone(UTC)


def schedule(session: Session, issue: Issue, at: datetime) -> None:
    """Schedule ``issue``'s send at ``at`` (UTC); the caller commits."""
    name = f"{issue.newsletter.slug} issue {issue.number}"
    if issue.sent_at is not None:
        raise ScheduleError(f"{name} was already sent")
    if issue.scheduled_at is not None:
        raise ScheduleError(f"{name} is already scheduled for {local(issue)}; unschedule it first")
    if at <= utcnow():
        raise ScheduleError(f"{at:%Y-%m-%d %H:%M} UTC is in the past")
    issue.scheduled_at = at


def unschedule(session: Session, issue: Issue) -> None:
    """Cancel ``issue``'s scheduled send, before it started; the caller commits."""
    name = f"{issue.newsletter.slug} issue {issue.number}"
    if issue.scheduled_at is None:
        raise ScheduleError(f"{name} is not scheduled")
    done = rowcount(
        session.execute(
            update(Issue)
            .where(Issue.id == issue.id, Issue.sent_at.is_(None))
            .values(scheduled_at=None)
            .execution_options(synchronize_session=False)
        )
    )
    if not done:
        raise ScheduleError(f"the send of {name} has started; stop its worker to pause it")


def local(issue: Issue) -> str:
    """The scheduled time in the newsletter's zone, for people."""
    zone, at = issue.newsletter.timezone, issue.scheduled_at
    if at is None:
        raise ScheduleError(f"{issue.newsletter.slug} issue {issue.number} is not scheduled")
    return f"{at.astimezone(ZoneInfo(zone)):%Y-%m-%d %H:%M} {zone}"


def due(session: Session, now: datetime | None = None) -> list[Issue]:
    """Scheduled issues whose time has come and whose send is not done: not started,
    or started with readers still queued (a worker stopped in the middle)."""
    now = now or utcnow()
    query = (
        select(Issue)
        .where(Issue.scheduled_at.is_not(None), Issue.scheduled_at <= now)
        .where(Issue.sent_at.is_(None) | readers_left())
        .order_by(Issue.scheduled_at)
    )
    return list(session.scalars(query))
