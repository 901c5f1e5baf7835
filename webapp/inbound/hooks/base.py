"""What every relay's webhook module gives the view: its checks' outcomes and events."""

import json
from dataclasses import dataclass
from datetime import UTC, datetime

from ..report import Report
from ..store import clean


class Refused(Exception):
    """The request is not the relay's: its signature or credentials do not check (401)."""


class Malformed(Exception):
    """A request that passed the check but cannot be read (400)."""


@dataclass(frozen=True)
class Event:
    """One thing a relay reports about one address, with the relay's id for it."""

    event_id: str | None
    report: Report
    raw: bytes


def json_body(body: bytes) -> object:
    """The body as JSON, or Malformed."""
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise Malformed("the body is not JSON") from None


def fresh(moment: datetime, max_age: int) -> bool:
    """Whether ``moment`` is within ``max_age`` seconds of now, either way: an old
    signed request replayed is refused, and so is one from the future."""
    return abs((datetime.now(UTC) - moment).total_seconds()) <= max_age


def text(value: object, limit: int = 320) -> str | None:
    """A field of a relay's JSON as text that any database takes (None when absent, empty
    or not text)."""
    if not isinstance(value, str):
        return None
    return clean(value)[:limit] or None
