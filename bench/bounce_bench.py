"""Benchmark: the bounce classifier over sisimai's whole corpus of real bounces, beside
flufl.bounce (Mailman's bounce library) scanning the same messages.

Every .eml of ``tests/corpus/sisimai/maildir-bsd``, labelled or not, read into memory
once before any timing. Ours is ``webapp.inbound.classify.classify`` as the inbound
handling calls it (no envelope recipient, a VERP of its own); the reference is what
Mailman does with a message, ``flufl.bounce.all_failures(email.message_from_bytes(raw))``.
Both parse the bytes inside the timing, since classify parses too. The two run RUNS
times each, alternating, so that the machine's drift affects both alike; figures are
messages per second, median [min-max] of the runs, and the slowest single message of
each (the best of SLOWEST_TRIES timings of every message, so one hiccup does not make a
message slow). No database, no network; every loop is bounded by the message count.

    python bench/bounce_bench.py        (or: make bench)
"""

import contextlib
import email
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

from flufl.bounce import all_failures

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.bounce_corpus import MESSAGES  # noqa: E402  (the corpus the test scores)
from webapp.inbound.classify import classify  # noqa: E402
from webapp.mailout.verp import Verp  # noqa: E402

RUNS = 5  # of each, alternating, for medians: the machine is noisy
SLOWEST_TRIES = 3  # timings of each single message; the best counts
MAIL_FROM = "letters@newsroom.org"
VERP = Verp("bench-secret", "bounces@newsroom.org")


def ours(raw: bytes) -> None:
    classify(raw, None, VERP, MAIL_FROM)


def flufl(raw: bytes) -> None:
    all_failures(email.message_from_bytes(raw))


def scan(check: Callable[[bytes], None], raws: list[bytes]) -> tuple[float, int]:
    """Seconds to run ``check`` over every message, and how many raised (counted, not
    stopped at: a library that gives up on a message has still spent its time)."""
    raised = 0
    started = time.perf_counter()
    for raw in raws:
        try:
            check(raw)
        except Exception:  # noqa: BLE001  counted and reported
            raised += 1
    return time.perf_counter() - started, raised


def slowest(check: Callable[[bytes], None], raws: list[bytes]) -> tuple[int, float]:
    """The index of the slowest message for ``check`` and its seconds (best of tries)."""
    times = []
    for raw in raws:
        best = float("inf")
        for _ in range(SLOWEST_TRIES):
            started = time.perf_counter()
            with contextlib.suppress(Exception):  # timed all the same; counted in scan
                check(raw)
            best = min(best, time.perf_counter() - started)
        times.append(best)
    worst = max(range(len(times)), key=times.__getitem__)
    return worst, times[worst]


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):,.0f} [{min(values):,.0f}-{max(values):,.0f}]"


def main() -> None:
    paths = sorted(MESSAGES.glob("*.eml"))
    raws = [path.read_bytes() for path in paths]
    size = sum(map(len, raws))
    rates: dict[str, list[float]] = {"ours": [], "flufl": []}
    raised: dict[str, int] = {"ours": 0, "flufl": 0}
    # flufl.bounce's detectors warn on some malformed messages; the figures are the point.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(RUNS):
            for name, check in (("ours", ours), ("flufl", flufl)):
                seconds, failed = scan(check, raws)
                rates[name].append(len(raws) / seconds)
                raised[name] = max(raised[name], failed)
        worst = {name: slowest(check, raws) for name, check in (("ours", ours), ("flufl", flufl))}
    print(
        f"Bounce classifier benchmark: {len(raws):,} messages of sisimai maildir/bsd "
        f"({size / 1e6:.1f} MB), in memory, one process, this machine "
        f"(Python {platform.python_version()}, flufl.bounce {version('flufl.bounce')})"
    )
    python = Path(sys.executable)
    if python.is_relative_to(ROOT):
        python = python.relative_to(ROOT)
    print(f"Command: {python} bench/bounce_bench.py (from {ROOT}); median [min-max] of runs")
    print(f"{'':<58} {'runs':>4} {'msg/s':>20} {'raised':>7}")
    rows = [
        ("ours: classify(raw, None, verp, mail_from)", "ours"),
        ("flufl.bounce: all_failures(email.message_from_bytes(raw))", "flufl"),
    ]
    for label, name in rows:
        print(f"{label:<58} {RUNS:>4} {spread(rates[name]):>20} {raised[name]:>7}")
    ratio = statistics.median(rates["ours"]) / statistics.median(rates["flufl"])
    print(f"Ratio ours / flufl.bounce (medians, msg/s): {ratio:.2f}")
    for label, name in rows:
        index, seconds = worst[name]
        print(
            f"Slowest message, {label.split(':')[0]}: {paths[index].name} "
            f"({len(raws[index]):,} B) {seconds * 1000:.1f} ms"
        )


if __name__ == "__main__":
    main()
