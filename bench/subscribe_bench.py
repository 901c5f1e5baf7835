"""Benchmark: sign-ups per second, ours beside django-newsletter's, in one run.

Both under gunicorn with 2 sync workers on 127.0.0.1, SQLite in WAL mode, both sending
their confirmations to the same Postfix `smtp-sink`, both driven by wrk (1 thread,
4 connections, 10 s after a 2 s warm-up; 3 runs each, medians) posting the sign-up form
with a new address per request and a valid CSRF token. The peer (bench/peer_signup.py)
sends each confirmation inside its request. Ours runs as the README's Production
section runs it: the web server records each post and answers, and `newsletter
worker` (NEWSLETTER_SIGNUP_WORK=worker; a third process, on the same two cores) makes
the subscriptions and delivers their confirmations; then again as the web server alone
(each web process acting after its answer, delivering from its own thread). Our figure
counts a sign-up when its confirmation reached the sink: the confirmations delivered,
over the time from the first request to the last of them delivered. Then the p99 of
ours at 16 connections, and a bare Flask POST on the same server: the ceiling of
gunicorn and Flask themselves.

    python bench/subscribe_bench.py        (or: make bench)
"""

import os
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path

from peer_signup import (
    SERVER_MAX_S,
    WARMUP,
    _start,
    run_peer,
    start_counting_sink,
    stop_server,
    wrk_run,
)
from send_bench import free_port

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
LUA = ROOT / "bench" / "our_subscribe.lua"
BARE_LUA = 'wrk.method = "POST"\nwrk.body = "x=1"\n' + (
    'wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"\n'
    "function done(summary, latency, requests)\n"
    '  io.write(string.format("RESULT ok=%d bad=0 requests=%d duration_us=%d p50_ms=%.2f '
    'p99_ms=%.2f\\n", summary.requests, summary.requests, summary.duration,\n'
    "    latency:percentile(50) / 1000, latency:percentile(99) / 1000))\nend\n"
)
SLUG = "ukraine-daily"
CONNECTIONS, DURATION, RUNS = 4, 10, 3
LOADED_CONNECTIONS = 16
DRAIN_MAX = 120  # seconds to wait for the last confirmations to reach the sink


def session_token(port: int) -> tuple[str, str]:
    """A session cookie and its CSRF token, as a browser gets them from the front page."""
    jar = CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    html = opener.open(f"http://127.0.0.1:{port}/", timeout=10).read().decode()
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html).group(1)
    return next(c.value for c in jar if c.name == "session"), token


def subscriptions(database: Path) -> int:
    with sqlite3.connect(database, timeout=30) as connection:
        return connection.execute("SELECT count(*) FROM subscriptions").fetchone()[0]


def run_ours(sink_port: int, count_mails, tmp: Path, signup_work: str = "worker") -> dict:
    """Our sign-up, the same load as the peer's: medians over RUNS, plus one run at
    LOADED_CONNECTIONS and the bare POST.

    ``signup_work`` "worker": as the README's Production section runs it, the web
    server records each post and `newsletter worker` (a third process on the same
    cores) does the sign-ups' work and delivers; "server": the web server alone, each
    worker acting after its answer and delivering from its own thread.
    """
    instance = tmp / f"ours-{signup_work}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env.update(
        NEWSLETTER_SIGNUP_WORK=signup_work,
        NEWSLETTER_OUTBOX_WORKER="true" if signup_work == "server" else "false",
        NEWSLETTER_INSTANCE_PATH=str(instance),
        NEWSLETTER_SUBSCRIBE_LIMITS="",  # a load test from one address: limits off
        NEWSLETTER_SUBSCRIBE_ADDRESS_LIMITS="",
        NEWSLETTER_MAIL_BACKEND="smtp",
        NEWSLETTER_SMTP_HOST="127.0.0.1",
        NEWSLETTER_SMTP_PORT=str(sink_port),
        NEWSLETTER_SEEDS_PATH=str(ROOT / "seeds"),
    )
    for command in (["db", "upgrade"], ["seed"]):
        subprocess.run(
            [str(BIN / "newsletter"), *command], env=env, cwd=ROOT, check=True, timeout=120
        )
    database = instance / "newsletter.db"
    port = free_port()
    server = _start(
        [
            str(BIN / "gunicorn"),
            "-w",
            os.environ.get("BENCH_WORKERS", "2"),
            "-b",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
        ]
        + ["--pythonpath", str(ROOT / "bench"), "bench_app:app"],
        port,
        tmp / f"ours-{signup_work}.out",
        tmp / f"ours-{signup_work}.err",
        env,
    )
    worker = None
    if signup_work == "worker":
        with (tmp / "worker.log").open("wb") as log:
            worker = subprocess.Popen(
                ["timeout", "-k", "10", "-s", "TERM", str(SERVER_MAX_S)]
                + [str(BIN / "newsletter"), "worker"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=ROOT,
            )
    url = f"http://127.0.0.1:{port}/subscribe"
    try:
        cookie, token = session_token(port)
        runs = []
        for run in range(1, RUNS + 2):
            connections = CONNECTIONS if run <= RUNS else LOADED_CONNECTIONS
            args = [f"{run}-{os.getpid()}", cookie, token, SLUG]
            wrk_run(LUA, url, connections, WARMUP, ["w" + args[0], *args[1:]])
            _drain(database, count_mails)
            rows_before, mails_before = subscriptions(database), count_mails()
            started = time.monotonic()
            wrk = wrk_run(LUA, url, connections, DURATION, ["r" + args[0], *args[1:]])
            rows, mails, drained_at = _drain(database, count_mails, rows_before, mails_before)
            runs.append(
                {
                    "connections": connections,
                    "accepted": wrk["ok"],
                    "answered_per_s": wrk["ok"] / (wrk["duration_us"] / 1e6),
                    "signups_per_s": mails / (drained_at - started),
                    "p50_ms": wrk["p50_ms"],
                    "p99_ms": wrk["p99_ms"],
                    "non_302": wrk["bad"],
                    "rows_added": rows,
                    "mails_received": mails,
                    "drain_s": drained_at - started - wrk["duration_us"] / 1e6,
                }
            )
        bare_lua = tmp / "bare.lua"
        bare_lua.write_text(BARE_LUA)
        bare = wrk_run(
            bare_lua, f"http://127.0.0.1:{port}/bench/bare", LOADED_CONNECTIONS, DURATION, []
        )
    finally:
        stop_server(server)
        if worker is not None:
            stop_server(worker)
    at_4 = runs[:RUNS]
    medians = {key: statistics.median(r[key] for r in at_4) for key in at_4[0]}
    return {**medians, "runs": runs, "bare": bare}


def _drain(database: Path, count_mails, rows_before: int = 0, mails_before: int = 0):
    """Wait until every subscription made has its confirmation at the sink (bounded);
    the subscriptions and mails added, and when the last mail came."""
    deadline = time.monotonic() + DRAIN_MAX
    last, last_at = -1, time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)  # requests in flight when wrk stopped land meanwhile
        rows, mails = subscriptions(database) - rows_before, count_mails() - mails_before
        if mails != last:
            last, last_at = mails, time.monotonic()
        if mails >= rows and time.monotonic() - last_at > 0.5:
            return rows, mails, last_at
    sys.exit(f"confirmations not delivered within {DRAIN_MAX} s: {mails} of {rows}")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="newsletter-signup-") as tmp:
        tmp = Path(tmp)
        sink, sink_port, count_mails = start_counting_sink(tmp)
        try:
            ours = run_ours(sink_port, count_mails, tmp)
            alone = run_ours(sink_port, count_mails, tmp, "server")
            peer = run_peer(sink_port, tmp, CONNECTIONS, DURATION, RUNS, count_mails=count_mails)
        finally:
            stop_server(sink)
    print(
        f"Sign-up benchmark: gunicorn -w 2 (sync) on 127.0.0.1, SQLite WAL, wrk -t1 "
        f"-c{CONNECTIONS} -d{DURATION}s after {WARMUP} s, {RUNS} runs each, medians; "
        "confirmations to one smtp-sink"
    )
    print(
        f"{'':<30} {'sign-ups/s':>10} {'answered/s':>10} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'non-302':>7} {'rows':>6} {'mails':>6}"
    )
    rows = [
        ("django-newsletter 1.2.1", {**peer, "answered_per_s": peer["signups_per_s"]}),
        ("ours (web + worker)", ours),
    ]
    rows += [(f"ours, run {n}", r) for n, r in enumerate(ours["runs"][:RUNS], 1)]
    rows += [("ours, web server alone", alone)]
    for name, r in rows:
        print(
            f"{name:<30} {r['signups_per_s']:>10.0f} {r['answered_per_s']:>10.0f} "
            f"{r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} {r['non_302']:>7.0f} "
            f"{r['rows_added']:>6.0f} {r['mails_received']:>6.0f}"
        )
    loaded, bare = ours["runs"][RUNS], ours["bare"]
    print(
        f"ours at {LOADED_CONNECTIONS} connections: {loaded['signups_per_s']:.0f} sign-ups/s, "
        f"p50 {loaded['p50_ms']:.2f} ms, p99 {loaded['p99_ms']:.2f} ms, "
        f"{loaded['non_302']} non-302, {loaded['mails_received']} of {loaded['rows_added']} "
        f"confirmations delivered"
    )
    print(
        f"bare Flask POST on the same server, {LOADED_CONNECTIONS} connections: "
        f"{bare['ok'] / (bare['duration_us'] / 1e6):.0f} req/s, p99 {bare['p99_ms']:.2f} ms"
    )
    print(
        "ours / django-newsletter (sign-ups with their confirmation delivered, per second): "
        f"{ours['signups_per_s'] / peer['signups_per_s']:.2f}; the web server alone: "
        f"{alone['signups_per_s'] / peer['signups_per_s']:.2f}"
    )


if __name__ == "__main__":
    main()
