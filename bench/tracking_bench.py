"""Benchmark: what click tracking costs.

1. A send of 20,000 readers with NEWSLETTER_TRACK_CLICKS off and on (every link of the
   digest a signed token per reader), to Postfix's smtp-sink, runs interleaved, medians.
2. A tracked click, ``GET /r/TOKEN`` (token checked, target looked up, the click stored
   with the scanner check, 302), under gunicorn with 2 workers on SQLite, wrk with 16
   connections for 10 s over 20,000 readers' tokens; beside a bare Flask 302 on the
   same server. Every click answered 302 must be a row in the database (and at most
   one more per connection: the requests wrk left in flight at its end).

    python bench/tracking_bench.py        (or: make bench)
"""

import os
import sqlite3
import statistics
import sys
import tempfile
from pathlib import Path

from peer_signup import _start, stop_server, wrk_run
from send_bench import (
    NEWSLETTER,
    SLUG,
    free_port,
    postfix_tools,
    prepare,
    send_run,
    start_sink,
    step,
)

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
READERS, RUNS, CONNECTIONS, SECONDS = 20_000, 3, 16, 10


def click_paths(env: dict, out: Path) -> None:
    """Write every reader's tracked path of issue 1's first link, one per line."""
    os.environ.update({k: v for k, v in env.items() if k.startswith("NEWSLETTER_")})
    sys.path.insert(0, str(ROOT))
    from sqlalchemy import select

    from webapp import create_app
    from webapp.db import session_factory
    from webapp.links import tracked_links
    from webapp.models import Subscriber

    app = create_app()
    with app.app_context(), session_factory(app)() as session:
        tracked = tracked_links()
        with out.open("w") as f:
            for reader in session.scalars(select(Subscriber.id)):
                f.write(f"/r/{tracked.token(1, 0, reader)}\n")


def sends(sink: Path, tools_env: dict, tmp: Path) -> dict[str, list[float]]:
    """Interleaved sends of issues 1..RUNS with tracking off and on."""
    envs = {}
    for name, track in (("off", "false"), ("on", "true")):
        folder = tmp / name
        folder.mkdir()
        envs[name], _ = prepare(folder, READERS, {"NEWSLETTER_TRACK_CLICKS": track})
        for _ in range(RUNS - 1):
            step([NEWSLETTER, "digest", "build", SLUG], envs[name])
    rates = {"off": [], "on": []}
    process, port = start_sink(sink, tools_env)
    try:
        for number in range(1, RUNS + 1):
            for name in ("off", "on"):
                rate, _, delivered = send_run(port, envs[name], number)
                if delivered != READERS:
                    sys.exit(f"delivered {delivered} of {READERS}")
                rates[name].append(rate)
    finally:
        process.terminate()
        process.wait()
    return rates, envs["on"]


def clicks(env: dict, tmp: Path) -> dict[str, list[dict]]:
    """Tracked clicks and bare redirects under wrk, interleaved runs."""
    paths = tmp / "paths.txt"
    click_paths(env, paths)
    bare = tmp / "bare.txt"
    bare.write_text("/bench/bare-redirect\n")
    port = free_port()
    server = _start(
        [str(BIN / "gunicorn"), "-w", "2", "-b", f"127.0.0.1:{port}", "--log-level", "warning"]
        + ["--pythonpath", str(ROOT / "bench"), "bench_app:app"],
        port,
        tmp / "server.out",
        tmp / "server.err",
        {**env, "NEWSLETTER_OUTBOX_WORKER": "false"},
    )
    results = {"tracked": [], "bare": []}
    try:
        for _ in range(RUNS):
            for name, file in (("tracked", paths), ("bare", bare)):
                url = f"http://127.0.0.1:{port}"
                result = wrk_run(
                    ROOT / "bench" / "click.lua", url, CONNECTIONS, SECONDS, [str(file)]
                )
                if result["bad"]:
                    sys.exit(f"{result['bad']} answers were not 302 ({name})")
                results[name].append(result)
    finally:
        stop_server(server)
    database = Path(env["NEWSLETTER_INSTANCE_PATH"]) / "newsletter.db"
    with sqlite3.connect(database) as db:
        stored = db.execute("SELECT count(*) FROM clicks").fetchone()[0]
    answered = sum(r["ok"] for r in results["tracked"])
    # wrk stops counting at the end of its time; up to one request per connection was
    # still on its way then, and the server stored it.
    if not answered <= stored <= answered + CONNECTIONS * RUNS:
        sys.exit(f"{answered:,} clicks answered but {stored:,} stored")
    results["stored"] = stored
    return results


def main() -> None:
    _, sink, tools_env = postfix_tools()
    print(f"Tracking benchmark (SQLite, this machine; medians of {RUNS} interleaved runs)")
    with tempfile.TemporaryDirectory(prefix="tracking-bench-") as tmp:
        rates, env = sends(sink, tools_env, Path(tmp))
        off, on = statistics.median(rates["off"]), statistics.median(rates["on"])
        print(
            f"digest send, {READERS:,} readers, 4 connections: tracking off {off:,.0f} msg/s, "
            f"on {on:,.0f} msg/s: {on / off:.2f} of untracked",
            flush=True,
        )
        click_results = clicks(env, Path(tmp))

    def rate(r):
        return r["requests"] / (r["duration_us"] / 1e6)

    tracked = statistics.median(rate(r) for r in click_results["tracked"])
    bare = statistics.median(rate(r) for r in click_results["bare"])
    p99 = statistics.median(r["p99_ms"] for r in click_results["tracked"])
    print(
        f"GET /r/TOKEN, gunicorn -w 2, {CONNECTIONS} connections: {tracked:,.0f} clicks/s "
        f"(p99 {p99:.1f} ms), {click_results['stored']:,} stored of as many answered; "
        f"bare Flask 302 {bare:,.0f} req/s: {tracked / bare:.2f} of bare"
    )


if __name__ == "__main__":
    main()
