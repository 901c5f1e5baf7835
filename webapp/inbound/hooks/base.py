"""What every relay's webhook module gives the view: its checks' outcomes and events."""

import json
import re
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


MAX_DEPTH = 32  # relays' events nest five or six levels deep
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*+"')  # possessive: linear on any input
_NOT_BRACKETS = bytes(set(range(256)) - set(b"[]{}"))


def json_body(body: bytes | str) -> object:
    """The body as JSON, or Malformed. Nesting past MAX_DEPTH is refused before it is
    parsed: Python's parser recurses, and a few thousand brackets ended a request in a
    RecursionError (a 500 and a traceback) before any signature was checked."""
    data = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    if _too_deep(data):
        raise Malformed(f"the body nests deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise Malformed("the body is not JSON") from None


def _too_deep(data: bytes) -> bool:
    # The brackets outside strings, innermost pairs removed a level at a time: what is
    # left after MAX_DEPTH rounds nests deeper (or does not pair up: not JSON anyway).
    brackets = _STRINGS.sub(b"", data).translate(None, _NOT_BRACKETS)
    for _ in range(MAX_DEPTH):
        if not brackets:
            return False
        brackets = brackets.replace(b"[]", b"").replace(b"{}", b"")
    return bool(brackets)


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
