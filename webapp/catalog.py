"""The newsletter catalog: ``seeds/newsletters.toml`` loaded into the database."""

import re
import tomllib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TypeGuard, cast
from weakref import WeakKeyDictionary
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from sqlalchemy import Engine, bindparam, select
from sqlalchemy.orm import Session

from .db import utcnow
from .models import Issue, Newsletter
from .texts import LANGUAGES

SLUG = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
FIELDS = ("title", "description", "cadence", "from_name")


class CatalogError(ValueError):
    """The catalog file cannot be loaded; ``str()`` names the file and the reason."""


class NotInCatalog(LookupError):
    """No newsletter (or issue) by that name; ``str()`` says what is known instead."""


@dataclass
class SeedReport:
    """What :func:`seed_catalog` changed."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0


def read_catalog(path: Path) -> list[dict]:
    """Read and check the ``[[newsletter]]`` entries of a catalog file."""
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise CatalogError(f"{path}: no such file") from None
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CatalogError(f"{path}: not valid TOML: {exc}") from None
    entries = data.get("newsletter")
    if not isinstance(entries, list) or not entries:
        raise CatalogError(f"{path}: no [[newsletter]] entries")
    seen = set()
    for number, entry in enumerate(entries, 1):
        if not isinstance(entry, dict):
            raise CatalogError(f"{path}: newsletter {number} must be a [[newsletter]] table")
        slug = entry.get("slug")
        if not isinstance(slug, str) or not is_slug(slug):
            raise CatalogError(f"{path}: newsletter {number} needs a slug like 'daily-news'")
        if slug in seen:
            raise CatalogError(f"{path}: slug {slug!r} is used twice")
        seen.add(slug)
        if not isinstance(entry.get("title"), str) or not entry["title"].strip():
            raise CatalogError(f"{path}: newsletter {slug!r} needs a title")
        for field in FIELDS:
            value = entry.get(field, "")
            if not isinstance(value, str):
                raise CatalogError(f"{path}: {slug}.{field} must be text")
            if field != "description" and len(value) > 200:
                raise CatalogError(f"{path}: {slug}.{field} is longer than 200 characters")
            if CONTROL.search(value.replace("\n", "") if field == "description" else value):
                raise CatalogError(f"{path}: {slug}.{field} holds a control character")
        if not isinstance(entry.get("welcome", False), bool):
            raise CatalogError(f"{path}: {slug}.welcome must be true or false")
        zone = entry.get("timezone", "Europe/Kyiv")
        if not isinstance(zone, str) or not known_zone(zone):
            raise CatalogError(f"{path}: {slug}.timezone {zone!r} is not a time zone")
        schedule = entry.get("schedule")
        if schedule is not None and (not isinstance(schedule, str) or not valid_cron(schedule)):
            raise CatalogError(
                f"{path}: {slug}.schedule {schedule!r} is not a cron expression like '0 7 * * *'"
            )
        sources = entry.get("source")
        if sources is not None:
            if isinstance(sources, str):
                sources = entry["source"] = [sources]
            if not isinstance(sources, list) or not sources:
                raise CatalogError(f"{path}: {slug}.source must be a feed URL or folder, or a list")
            for source in sources:
                if not isinstance(source, str) or not source.strip() or CONTROL.search(source):
                    raise CatalogError(f"{path}: {slug}.source {source!r} is not a URL or folder")
                if "://" in source and not source.startswith(("http://", "https://")):
                    raise CatalogError(f"{path}: {slug}.source {source!r}: feeds are http(s)")
        if entry.get("language", "en") not in LANGUAGES:
            known = ", ".join(LANGUAGES)
            raise CatalogError(f"{path}: {slug}.language must be one of {known}")
    return entries


def seed_catalog(session: Session, entries: list[dict]) -> SeedReport:
    """Create or update newsletters by slug. Newsletters missing from the file are kept."""
    report = SeedReport()
    existing = {n.slug: n for n in session.scalars(select(Newsletter))}
    for position, entry in enumerate(entries):
        values: dict = {field: entry.get(field, "").strip() for field in FIELDS}
        values["welcome"] = entry.get("welcome", False)
        values["language"] = entry.get("language", "en")
        values["timezone"] = entry.get("timezone", "Europe/Kyiv")
        values["schedule"] = " ".join(entry["schedule"].split()) if entry.get("schedule") else None
        values["sources"] = entry.get("source")
        values["position"] = position
        newsletter = existing.get(entry["slug"])
        now = utcnow()
        if newsletter is None:
            session.add(Newsletter(slug=entry["slug"], schedule_since=now, **values))
            report.created += 1
        elif any(getattr(newsletter, k) != v for k, v in values.items()):
            if (newsletter.schedule, newsletter.timezone) != (
                values["schedule"],
                values["timezone"],
            ):
                newsletter.schedule_since = now  # a new schedule runs from now on
            for key, value in values.items():
                setattr(newsletter, key, value)
            report.updated += 1
        else:
            report.unchanged += 1
    return report


def known_zone(name: str) -> bool:
    """Whether ``name`` is an IANA time zone (Europe/Kyiv), as zoneinfo knows them."""
    try:
        ZoneInfo(name)
    except (ValueError, ZoneInfoNotFoundError):  # ValueError: a path or an empty name
        return False
    return True


def valid_cron(expression: str) -> bool:
    """Whether ``expression`` is a cron expression of five fields, as Debian's cron reads
    them (cronsim would take a sixth, of seconds: "0 7 * * * *" is not daily at 07:00)."""
    if len(expression.split()) != 5:
        return False
    try:
        CronSim(expression, datetime(2026, 1, 1))
    except CronSimError:
        return False
    return True


def is_slug(text: object) -> TypeGuard[str]:
    """True for text shaped like a newsletter's slug (``daily-news``, at most 64 characters)."""
    return isinstance(text, str) and len(text) <= 64 and SLUG.fullmatch(text) is not None


def newsletter_by_slug(session: Session, slug: object) -> Newsletter | None:
    """The newsletter with this slug, or None.

    Text that cannot be a slug is answered without asking the database: what readers
    post or put in a URL may hold characters (NUL) that PostgreSQL refuses in a query.
    """
    if not is_slug(slug):
        return None
    return session.scalar(select(Newsletter).where(Newsletter.slug == slug))


_ID_BY_SLUG = select(Newsletter.id).where(Newsletter.slug == bindparam("slug"))
# The ids found, by database. A newsletter is never deleted and its slug never goes to
# another, so an id found (committed: callers only read it) stays right. Misses are
# asked again each time: a newsletter seeded later is found, and made-up slugs (bots)
# take no memory.
_IDS: WeakKeyDictionary[Engine, dict[str, int]] = WeakKeyDictionary()


def newsletter_id_by_slug(session: Session, slug: object) -> int | None:
    """The id of the newsletter with this slug, or None: :func:`newsletter_by_slug` for
    the sign-up post, which needs no more and runs with every sign-up (a query only the
    first time a process meets the slug)."""
    if not is_slug(slug):
        return None
    known = _IDS.setdefault(cast(Engine, session.get_bind()), {})  # bound to an engine
    if slug not in known:
        found = session.connection().execute(_ID_BY_SLUG, {"slug": slug}).scalar()
        if found is None:
            return None
        known[slug] = found
    return known[slug]


def find_newsletter(session: Session, slug: str) -> Newsletter:
    """The newsletter with this slug, or NotInCatalog naming the known slugs."""
    newsletter = newsletter_by_slug(session, slug)
    if newsletter is None:
        known = ", ".join(session.scalars(select(Newsletter.slug))) or "none; run newsletter seed"
        raise NotInCatalog(f"no newsletter {slug!r} (known: {known})")
    return newsletter


def find_issue(session: Session, slug: str, number: int) -> Issue:
    """Issue NUMBER of newsletter SLUG, or NotInCatalog naming what is missing."""
    newsletter = find_newsletter(session, slug)
    issue = session.scalar(
        select(Issue).where(Issue.newsletter_id == newsletter.id, Issue.number == number)
    )
    if issue is None:
        raise NotInCatalog(f"{slug} has no issue {number}")
    return issue
