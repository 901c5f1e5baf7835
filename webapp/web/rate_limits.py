"""Rate limits of the sign-up post: per client network, and per inbox from any client.

Counted in fixed windows by the ``limits`` package, in the storage
``RATELIMIT_STORAGE_URI`` names: this process's memory, or Redis, shared by every
worker and host. While that storage cannot be reached, each process counts in its own
memory (the limits still hold, per process), says so once in the log, and looks at the
storage again every RETRY_STORAGE seconds.

Flask-Limiter did this before. It resolved its limits through several layers on every
request, and that cost about 0.2 ms of CPU per sign-up post, limits on or off: a sixth
of the post. The post needs two lists of limits, known when the app is made.
"""

import logging
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from flask import Flask, current_app
from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import FixedWindowRateLimiter, RateLimiter

from ..config import ConfigError

RETRY_STORAGE = 10  # seconds between two looks at a storage that could not be reached

log = logging.getLogger(__name__)
T = TypeVar("T")


def parsed(setting: str, config) -> list[RateLimitItem]:
    """The limits of the setting ``setting`` (e.g. ``20/minute;200/hour``), fewest hits
    first; none when it is empty. ConfigError if it is not limits."""
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
        try:
            self._shared = FixedWindowRateLimiter(
                storage_from_string(config["RATELIMIT_STORAGE_URI"])
            )
        except Exception as exc:  # an unknown scheme, a bad address: the library says which
            raise ConfigError(f"NEWSLETTER_RATELIMIT_STORAGE_URI: {exc}") from None
        self._memory = FixedWindowRateLimiter(MemoryStorage())
        self._down = False  # the storage could not be reached: counting in memory
        self._look_again = 0.0  # while down: when to try the storage again (monotonic)

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
        if not self._down or time.monotonic() >= self._look_again:
            try:
                counted = count(self._shared)
            except Exception as exc:  # the storage's own errors: redis.ConnectionError…
                if not self._down:
                    log.warning("rate-limit storage unreachable, counting in this process: %s", exc)
                    self._down = True
                self._look_again = time.monotonic() + RETRY_STORAGE
            else:
                if self._down:
                    log.warning("rate-limit storage reachable again")
                    self._down = False
                return counted
        return count(self._memory)


def rate_limits() -> RateLimits:
    """The current app's :class:`RateLimits`."""
    return current_app.extensions["rate_limits"]
