"""The peer's sign-up benchmark: django-newsletter 1.2.1 on Django 5.2, under gunicorn.

The same load as the peers' reference (shared/peers/django_newsletter): wrk, 1 thread,
4 connections, 10 s after a 2 s warm-up, POSTs django-newsletter's anonymous subscribe
form with a new address per request to gunicorn (2 sync workers) on 127.0.0.1. CSRF is
on: one GET gets the cookie and a form token, every POST sends both. Each accepted
request (302) adds a subscription row and sends the double opt-in mail through Django's
SMTP backend to Postfix's smtp-sink; rows and mails are counted around the timed window.
SQLite runs in WAL mode with synchronous=NORMAL.

The peer installs into `.bench/dn-venv` (pinned, from PyPI); its project is
`bench/peer_project`, copied into a temporary folder for each benchmark. Every server
runs under `timeout` and is stopped by its own PID.

    python bench/peer_signup.py        # the peer alone, with its own smtp-sink
"""

import http.client
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from send_bench import free_port, postfix_tools

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".bench" / "dn-venv"
PROJECT = ROOT / "bench" / "peer_project"
LUA = ROOT / "bench" / "peer_subscribe.lua"
PINS = ("Django==5.2.19", "django-newsletter==1.2.1", "sorl-thumbnail==13.4.0", "gunicorn==27.0.1")
SLUG = "bench-subscribe"
FORM = f"/newsletter/{SLUG}/subscribe/"
WORKERS = 2
WARMUP = 2
SERVER_MAX_S = 1800  # a server outlives no benchmark by more, even if this process is killed


def ensure_peer() -> Path:
    """Install the pinned peer into .bench/dn-venv unless it is there; its Python."""
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, timeout=120)
    if _installed(python) != set(PINS):
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", *PINS],
            check=True,
            timeout=900,
        )
        if _installed(python) != set(PINS):
            sys.exit(f"the peer's venv {VENV} does not hold {' '.join(PINS)}")
    return python


def _installed(python: Path) -> set[str]:
    """The pinned distributions as installed in the venv of ``python``, as name==version."""
    names = [pin.split("==")[0] for pin in PINS]
    code = (
        "import importlib.metadata as m, sys\n"
        "for n in sys.argv[1:]:\n"
        "    try: print(f'{n}=={m.version(n)}')\n"
        "    except m.PackageNotFoundError: pass\n"
    )
    out = subprocess.run(
        [str(python), "-c", code, *names], capture_output=True, text=True, timeout=60
    ).stdout
    return set(out.split())


def start_counting_sink(tmp: Path) -> tuple[subprocess.Popen, int, Callable[[], int]]:
    """smtp-sink on a free loopback port, started with -c: the process, its port, and a
    function returning how many messages it has received so far.

    With -c smtp-sink writes its counters to stdout after every message and session,
    each update ending in a carriage return ("sess=3 quit=3 mesg=3\\r"); stdout goes to a
    file in ``tmp`` and the count is the last complete ``mesg=`` there. Stop the process
    with stop_server().
    """
    _, sink, env = postfix_tools()
    port = free_port()
    out = tmp / "smtp-sink.out"
    user = ["-u", "nobody"] if os.geteuid() == 0 else []  # it refuses to run as root
    command = [str(sink), *user, "-c", f"127.0.0.1:{port}", "256"]
    process = _start(command, port, out, tmp / "smtp-sink.err", env)

    def count() -> int:
        with out.open("rb") as f:
            f.seek(max(0, out.stat().st_size - 4096))
            found = re.findall(rb"mesg=(\d+)\r", f.read())
        return int(found[-1]) if found else 0

    return process, port, count


def _start(command: list[str], port: int, out: Path, err: Path, env: dict) -> subprocess.Popen:
    """Run ``command`` under timeout (its own process group), wait until it listens."""
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(
            ["timeout", "-k", "10", "-s", "TERM", str(SERVER_MAX_S), *command],
            stdout=stdout,
            stderr=stderr,
            env=env,
        )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and process.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process
        except OSError:
            time.sleep(0.05)
    stop_server(process)
    sys.exit(f"{Path(command[0]).name} did not listen on 127.0.0.1:{port}:\n{err.read_text()}")


def stop_server(process: subprocess.Popen) -> None:
    """Stop a server started here: TERM to its PID (timeout passes it on to the server's
    processes), then KILL to the process group of that PID if it is still there after 15 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # timeout made its PID the group's id
            process.wait(5)


def run_peer(
    sink_port: int,
    tmp: Path,
    connections: int = 4,
    duration: int = 10,
    runs: int = 3,
    *,
    count_mails: Callable[[], int] | None = None,
) -> dict:
    """Benchmark the peer's sign-up ``runs`` times against smtp-sink on ``sink_port``.

    ``tmp`` is a scratch folder for the project copy, its database and the server logs.
    ``count_mails`` is the counter of start_counting_sink(); without it mails are not
    counted (None). Returns the medians over the runs: ``signups_per_s`` (302s per
    second), ``accepted`` (302s), ``p50_ms``, ``p99_ms``, ``non_302``, ``socket_errors``
    (wrk's connect, read and timeout errors), ``rows_added``, ``mails_received``, and
    ``runs``, the list of the per-run dicts of the same keys.
    """
    if not shutil.which("wrk"):
        sys.exit("wrk not found: apt-get install wrk")
    python = ensure_peer()
    project = tmp / "peer_project"
    shutil.rmtree(project, ignore_errors=True)
    shutil.copytree(PROJECT, project, ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DN_")}
    env.update(DN_SMTP_PORT=str(sink_port), DN_SQLITE_MODE="wal")

    def manage(*args: str) -> str:
        done = subprocess.run(
            [str(python), "-W", "ignore", "manage.py", *args],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            sys.exit(f"manage.py {' '.join(args)} failed:\n{done.stderr}")
        return done.stdout.strip()

    def mail_count() -> int | None:
        return count_mails() if count_mails else None

    port = free_port()
    manage("migrate", "--noinput", "-v", "0")
    if manage("bench", "dbmode", "wal") != "journal_mode=wal":
        sys.exit("the peer's SQLite database did not switch to WAL")
    manage("bench", "init", "--site-domain", f"127.0.0.1:{port}")
    results = []
    for run in range(1, runs + 1):
        manage("bench", "reset-subs", SLUG)
        server = _start(
            [str(VENV / "bin" / "gunicorn"), "--chdir", str(project), "-w", str(WORKERS)]
            + ["-b", f"127.0.0.1:{port}", "--log-level", "warning", "--no-control-socket"]
            + ["dnbench.wsgi:application"],
            port,
            tmp / "gunicorn.out",
            tmp / "gunicorn.err",
            env,
        )
        try:
            cookie, token = csrf_pair(port)
            url = f"http://127.0.0.1:{port}{FORM}"
            wrk_run(LUA, url, connections, WARMUP, [f"w{run}-{os.getpid()}", cookie, token])
            time.sleep(0.5)
            rows_before, mails_before = int(manage("bench", "count", SLUG)), mail_count()
            wrk = wrk_run(LUA, url, connections, duration, [f"r{run}-{os.getpid()}", cookie, token])
            time.sleep(0.5)  # the requests still in flight when wrk stopped
            rows = int(manage("bench", "count", SLUG)) - rows_before
            mails = None if mails_before is None else mail_count() - mails_before
        finally:
            stop_server(server)
        results.append(
            {
                "signups_per_s": wrk["ok"] / (wrk["duration_us"] / 1e6),
                "accepted": wrk["ok"],
                "p50_ms": wrk["p50_ms"],
                "p99_ms": wrk["p99_ms"],
                "non_302": wrk["bad"],
                "socket_errors": wrk["errors_connect"] + wrk["errors_read"] + wrk["errors_timeout"],
                "rows_added": rows,
                "mails_received": mails,
            }
        )
    medians = {
        key: None if results[0][key] is None else statistics.median(r[key] for r in results)
        for key in results[0]
    }
    return {**medians, "runs": results}


def csrf_pair(port: int) -> tuple[str, str]:
    """GET the subscribe form: the csrftoken cookie and the form's masked token."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", FORM)
        response = connection.getresponse()
        body = response.read().decode()
    finally:
        connection.close()
    cookie = re.search(r"csrftoken=([^;]+)", response.getheader("Set-Cookie") or "")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', body)
    if response.status != 200 or not cookie or not token:
        sys.exit(f"no CSRF token from the peer's form: HTTP {response.status}")
    return cookie.group(1), token.group(1)


def wrk_run(script: Path, url: str, connections: int, seconds: int, args: list[str]) -> dict:
    """One wrk run (1 thread) with a sign-up ``script``: the numbers of its RESULT line."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s"]
    done = subprocess.run(
        [*command, "-s", str(script), url, "--", *args],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    )
    line = re.search(r"^RESULT (.*)$", done.stdout, re.MULTILINE)
    if done.returncode != 0 or line is None:
        sys.exit(f"wrk failed:\n{done.stdout}{done.stderr}")
    numbers = re.findall(r"(\w+)=([\d.]+)", line.group(1))
    return {k: float(v) if "." in v else int(v) for k, v in numbers}


def main() -> None:
    """Run the peer alone against its own smtp-sink and print the runs and their medians."""
    with tempfile.TemporaryDirectory(prefix="peer-signup-") as tmp:
        sink, sink_port, count = start_counting_sink(Path(tmp))
        try:
            result = run_peer(sink_port, Path(tmp), count_mails=count)
        finally:
            stop_server(sink)
    print(
        "django-newsletter 1.2.1 sign-up (Django 5.2.19, gunicorn -w 2 sync, SQLite WAL, "
        "wrk -t1 -c4 -d10s, smtp-sink on 127.0.0.1)"
    )
    print(
        f"{'run':>6} {'sign-ups/s':>10} {'p50 ms':>7} {'p99 ms':>7} {'302s':>6} {'non-302':>7} "
        f"{'sock err':>8} {'rows':>6} {'mails':>6}"
    )
    for name, r in [*enumerate(result["runs"], 1), ("median", result)]:
        print(
            f"{name:>6} {r['signups_per_s']:>10.0f} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} "
            f"{r['accepted']:>6.0f} {r['non_302']:>7.0f} {r['socket_errors']:>8.0f} "
            f"{r['rows_added']:>6.0f} {r['mails_received']:>6.0f}"
        )


if __name__ == "__main__":
    main()
