"""Automatic issues: at each slot of a newsletter's ``schedule`` the worker builds an
issue of the articles no earlier issue carried, and sends it.

Slots come from the cron expression in the newsletter's zone, read as Debian's cron
reads it (cronsim): a daily slot in the hour a daylight-saving change repeats runs once,
and one in the hour it skips runs when the hour ends. A slot is taken by inserting its
row (unique per newsletter and slot) in the transaction that builds its issue, so of
several workers one builds it. When no worker ran at a slot, the latest missed one runs
once when a worker comes, and says it was late. A source that cannot be read is logged
and skipped; when none can be read the slot is tried again on a later pass.
"""

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from cronsim import CronSim
from flask import current_app
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from emails.articles import Article, ArticleError, read_article
from emails.feeds import FeedError, read_feed

from ..db import utcnow
from ..models import Issue, Newsletter
from .building import build_issue, page_furniture, seed_article_paths
from .models import AutomaticRun, IssueArticle

MAX_ARTICLES = (
    20  # the first new articles (a feed lists its newest first) in one issue; the rest wait
)
LATE_AFTER = 60  # seconds after its slot that a run counts as late
MAX_STEPS = 100_000  # slots looked through after the last run (a minutely schedule: 69 days)


@dataclass
class Slot:
    """One time of a newsletter's schedule: its local time (the key) and its instant."""

    local: datetime

    @property
    def key(self) -> str:
        return self.local.isoformat()

    @property
    def at(self) -> datetime:
        return self.local.astimezone(ZoneInfo("UTC"))


def due_slot(
    newsletter: Newsletter, last: datetime | None, now: datetime
) -> tuple[Slot | None, int]:
    """The latest slot of ``newsletter``'s schedule after ``last`` (its last run, or the
    time the schedule was set) and at or before ``now``, and how many slots that skips;
    (None, 0) if none is due."""
    schedule = newsletter.schedule
    if schedule is None:  # not an automatic newsletter (any more)
        return None, 0
    zone = ZoneInfo(newsletter.timezone)
    start = max((t for t in (last, newsletter.schedule_since) if t is not None), default=now)
    slots = CronSim(schedule, start.astimezone(zone))
    due, missed = None, 0
    for _ in range(MAX_STEPS):
        try:
            local = next(slots)
        except StopIteration:  # no match within 50 years (31 February)
            return due, missed
        if local > now:  # aware datetimes compare as instants
            return due, missed
        missed += due is not None
        due = Slot(local)
    # Down for longer than MAX_STEPS slots: the latest one, counted back from now.
    return Slot(next(CronSim(schedule, now.astimezone(zone), reverse=True))), missed


@dataclass
class Collected:
    """What the sources of an automatic issue gave: (key, article) pairs in source order,
    and one line for each source or item skipped."""

    articles: list[tuple[str, Article]]
    problems: list[str]
    read_any: bool


def collect(session: Session, newsletter: Newsletter) -> Collected:
    """Read every source of ``newsletter``: feeds (http or https URLs) and folders of
    pages (relative to the seeds folder); by default the seeds in its language."""
    found: list[tuple[str, Article]] = []
    problems: list[str] = []
    read_any = False
    furniture = page_furniture(session)
    for source in newsletter.sources or [None]:
        if source is not None and source.startswith(("http://", "https://")):
            try:
                feed = read_feed(source)
            except FeedError as exc:
                problems.append(f"feed skipped: {exc}")
                continue
            read_any = True
            found += [(item.key, item.article) for item in feed.items]
            problems += [f"{source}: {line}" for line in feed.skipped]
            continue
        if source is None:
            paths = seed_article_paths(newsletter.language)
        else:
            folder = Path(current_app.config["SEEDS_PATH"]) / source
            if not folder.is_dir():
                problems.append(f"folder skipped: {folder}: no such folder")
                continue
            paths = sorted(folder.glob("*.txt"))
        read_any = True
        for path in paths:
            try:
                found.append((page_key(path), read_article(path, furniture)))
            except ArticleError as exc:
                problems.append(f"page skipped: {exc}")
    return Collected(found, problems, read_any)


def new_articles(session: Session, newsletter: Newsletter, found) -> list[tuple[str, Article]]:
    """The articles of ``found`` no issue of ``newsletter`` carried, once each, at most
    MAX_ARTICLES, with unique anchors."""
    keys = list(dict.fromkeys(key for key, _ in found))
    carried: set[str] = set()
    for start in range(0, len(keys), 500):  # bounded IN lists
        carried.update(
            session.scalars(
                select(IssueArticle.key).where(
                    IssueArticle.newsletter_id == newsletter.id,
                    IssueArticle.key.in_(keys[start : start + 500]),
                )
            )
        )
    fresh, seen, slugs = [], set(), set()
    for key, article in found:
        if key in carried or key in seen:
            continue
        seen.add(key)
        slug, n = article.slug, 1
        while slug in slugs:
            n += 1
            slug = f"{article.slug}-{n}"
        slugs.add(slug)
        fresh.append((key, replace(article, slug=slug)))
    return fresh[:MAX_ARTICLES]


def page_key(path: Path) -> str:
    """The key of a page file: its path under the seeds folder (``uk/01.txt``), else its
    whole path, so that pages of one name in two folders are two articles."""
    path = path.resolve()
    try:
        return path.relative_to(Path(current_app.config["SEEDS_PATH"]).resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def remember_articles(session: Session, issue, keys: list[str]) -> None:
    """Record which articles ``issue`` carries, so no automatic issue takes them again."""
    session.add_all(
        IssueArticle(newsletter_id=issue.newsletter_id, issue_id=issue.id, key=key)
        for key in dict.fromkeys(keys)
    )


def run_automatic(session: Session, now: datetime | None = None, resting=frozenset()) -> list:
    """Take every automatic newsletter's due slot: build and schedule its issue, or
    record that there was nothing new. Returns (newsletter id, log line, done) for each
    newsletter looked at; ``done`` False when it should be tried again later (no source
    could be read). Newsletters in ``resting`` are left for now."""
    now = now or utcnow()
    results = []
    query = select(Newsletter).where(Newsletter.schedule.is_not(None)).order_by(Newsletter.id)
    for newsletter in session.scalars(query).all():
        newsletter_id, slug = newsletter.id, newsletter.slug  # kept through a rollback
        if newsletter_id in resting:
            continue
        last = session.scalar(
            select(func.max(AutomaticRun.slot_at)).where(
                AutomaticRun.newsletter_id == newsletter.id
            )
        )
        try:
            slot, missed = due_slot(newsletter, last, now)
            if slot is not None:
                results.append((newsletter_id, *_take(session, newsletter, slot, missed, now)))
        except Exception as exc:  # one newsletter's trouble must not stop the worker
            session.rollback()
            line = f"Automatic {slug}: failed, trying again later: {exc!r}"
            results.append((newsletter_id, line, False))
    return results


def _take(session: Session, newsletter, slot: Slot, missed: int, now) -> tuple[str, bool]:
    name = f"{newsletter.slug} at {slot.local:%Y-%m-%d %H:%M %Z}"
    late = (now - slot.at).total_seconds()
    when = ""
    if late > LATE_AFTER:
        when = f", {_duration(late)} late (no worker ran at its time)"
        if missed:
            when += f"; {missed} earlier slot(s) missed too, run once"
    session.commit()  # nothing to write yet: no transaction held while feeds are read
    collected = collect(session, newsletter)
    notes = "".join(f"\n  {line}" for line in collected.problems)
    if not collected.read_any:
        session.rollback()
        return f"{name}: no source could be read; trying again later{notes}", False
    fresh = new_articles(session, newsletter, collected.articles)
    run = AutomaticRun(
        newsletter_id=newsletter.id, slot=slot.key, slot_at=slot.at, ran_at=now, outcome=""
    )
    try:
        session.add(run)
        session.flush()  # the claim: another worker's row for this slot fails it here
        if fresh:
            issue = build_issue(session, newsletter, [article for _, article in fresh])
            remember_articles(session, issue, [key for key, _ in fresh])
            issue.scheduled_at = slot.at  # the worker sends it as a scheduled send
            run.issue_id = issue.id
            run.outcome = f"built issue {issue.number} of {len(fresh)} new article(s)"
        else:
            last = _last_issue_number(session, newsletter)
            since = f"since issue {last}" if last else "in its sources"
            run.outcome = f"nothing new {since}: no issue"
        session.commit()
    except IntegrityError:
        session.rollback()
        # Another worker's row for the slot, or a build of the newsletter at the same
        # moment (the issue number): the slot is looked at again on the next pass.
        return f"{name}: another worker or build came first", True
    return f"Automatic {name}{when}: {run.outcome}.{notes}", True


def _last_issue_number(session: Session, newsletter: Newsletter) -> int | None:
    return session.scalar(
        select(func.max(Issue.number)).where(Issue.newsletter_id == newsletter.id)
    )


def _duration(seconds: float) -> str:
    delta = timedelta(seconds=round(seconds))
    if delta >= timedelta(hours=1):
        return f"{delta.total_seconds() / 3600:.1f} h"
    return f"{delta.total_seconds():.0f} s"
