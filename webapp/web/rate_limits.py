"""Rate limits of the sign-up post: per client network, and per inbox from any client.

Counted in fixed windows by the ``limits`` package, in the storage
``RATELIMIT_STORAGE_URI`` names: this process's memory, or Redis, shared by every
worker and host. While that storage cannot be reached, each process counts in its own
memory (the limits still hold, per process), says so once in the log, and lets one
request look at the storage again every RETRY_STORAGE seconds.

Flask-Limiter did this before. It resolved its limits through several layers on every
request, and that cost 0.17 to 0.19 ms of CPU per sign-up post, limits on or off: a
sixth of the post. The post needs two lists of limits, known when the app is made.
"""

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from flask import Flask, current_app
from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import FixedWindowRateLimiter, RateLimiter

from ..config import ConfigError

RETRY_STORAGE = 10  # seconds between two looks at a storage that could not be reached
REDIS_TIMEOUTS = {"socket_connect_timeout": 0.5, "socket_timeout": 0.5}  # seconds

log = logging.getLogger(__name__)
T = TypeVar("T")


def parsed(setting: str, config) -> list[RateLimitItem]:
    """The limits of the setting ``setting`` (e.g. ``20/minute;200/hour``), shortest
    window first; none when it is empty. ConfigError if it is not limits."""
    value = config[setting]
    if not value:
        return []
    try:
        return sorted(parse_many(value))
    except ValueError:
        raise ConfigError(
            f"NEWSLETTER_{setting}: {value!r} is not a list of rate limits such as "
            "20/minute;200/hour"
        ) from None


class RateLimits:
    """An app's rate-limit counters: in its storage, or in memory while that is down."""

    def __init__(self, app: Flask) -> None:
        config = app.config
        self.per_client = parsed("SUBSCRIBE_LIMITS", config)
        self.per_address = parsed("SUBSCRIBE_ADDRESS_LIMITS", config)
        uri = config["RATELIMIT_STORAGE_URI"]
        # A Redis that does not answer must not hold a post for long: it is then
        # counted in memory (redis-py waits without end by default).
        options = REDIS_TIMEOUTS if uri.startswith(("redis://", "rediss://")) else {}
        try:
            self._shared = FixedWindowRateLimiter(storage_from_string(uri, **options))
        except Exception as exc:  # an unknown scheme, a bad address: the library says which
            raise ConfigError(f"NEWSLETTER_RATELIMIT_STORAGE_URI: {exc}") from None
        self._memory = FixedWindowRateLimiter(MemoryStorage())
        self._lock = threading.Lock()  # for a threaded server: one request looks at a time
        self._down = False  # the storage could not be reached: counting in memory
        self._look_again = 0.0  # while down: when one request may try it (monotonic)

    def hit(self, limits: Sequence[RateLimitItem], *identifiers: str) -> bool:
        """Count one hit against each of ``limits`` for ``identifiers``; False when one
        is over (the longer ones after it are then not counted)."""
        return self._counting(
            lambda limiter: all(limiter.hit(limit, *identifiers) for limit in limits)
        )

    def increment(self, key: str, expiry: int) -> int:
        """Add one to the counter ``key`` (kept ``expiry`` seconds); how many it has."""
        return self._counting(lambda limiter: limiter.storage.incr(key, expiry))

    def _counting(self, count: Callable[[RateLimiter], T]) -> T:
        if self._down and not self._may_look():
            return count(self._memory)
        try:
            counted = count(self._shared)
        except Exception as exc:  # the storage's own errors: redis.ConnectionError…
            self._went_down(exc)
            return count(self._memory)
        if self._down:
            self._came_back()
        return counted

    def _may_look(self) -> bool:
        # True for one request once RETRY_STORAGE seconds have passed; the others go on
        # counting in memory meanwhile.
        with self._lock:
            now = time.monotonic()
            if now < self._look_again:
                return False
            self._look_again = now + RETRY_STORAGE
            return True

    def _went_down(self, exc: Exception) -> None:
        with self._lock:
            self._look_again = time.monotonic() + RETRY_STORAGE
            said, self._down = self._down, True
        if not said:
            log.warning("rate-limit storage unreachable, counting in this process: %s", exc)

    def _came_back(self) -> None:
        with self._lock:
            said, self._down = not self._down, False
        if not said:
            log.warning("rate-limit storage reachable again")


def rate_limits() -> RateLimits:
    """The current app's :class:`RateLimits`."""
    return current_app.extensions["rate_limits"]
