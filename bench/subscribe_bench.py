"""Benchmark: POST /subscribe under gunicorn (2 workers) on loopback, driven by wrk.

Every request carries a new, valid address and a real CSRF token (one session made
beforehand), so each one creates a subscriber, a subscription and a queued email. The
same server answers a bare Flask endpoint in the same run: that is the ceiling, and
the figures read as the ratio of the two. Bounded: each wrk run lasts DURATION seconds.
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DURATION = 10
CONNECTIONS = 16

LUA = """
-- Each wrk thread has its own Lua state: number them so addresses never repeat.
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end
counter = 0
request = function()
  counter = counter + 1
  local body = "email=bench" .. id .. "-" .. counter ..
    "%40newsroom.org&newsletter=ukraine-daily&source=%2F&csrf_token=" .. TOKEN
  return wrk.format("POST", "/subscribe", HEADERS, body)
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"server did not answer at {url}")


def session_token(base: str) -> tuple[str, str]:
    """A session cookie and its CSRF token, as a browser gets them from the front page."""
    jar = CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    html = opener.open(base + "/").read().decode()
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html).group(1)
    cookie = "; ".join(f"{c.name}={c.value}" for c in jar)
    return cookie, token


def wrk(url: str, script: Path) -> dict:
    out = subprocess.run(
        [
            "wrk",
            "-t",
            "2",
            "-c",
            str(CONNECTIONS),
            "-d",
            f"{DURATION}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        timeout=DURATION + 30,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)

    def pct(p):
        value, unit = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out).groups()
        return float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]

    return {
        "rps": rps,
        "total": total,
        "p50": pct(50),
        "p99": pct(99),
        "errors": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(1) if socket_errors else "none",
    }


def main() -> None:
    if not shutil.which("wrk"):
        sys.exit("wrk not found: apt-get install wrk")
    with tempfile.TemporaryDirectory(prefix="newsletter-load-") as tmp:
        tmp = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
        env.update(
            {
                "NEWSLETTER_INSTANCE_PATH": str(tmp / "instance"),
                "NEWSLETTER_SUBSCRIBE_LIMITS": "",  # the limits would stop a load test at once
                "NEWSLETTER_SUBSCRIBE_ADDRESS_LIMITS": "",
                "NEWSLETTER_OUTBOX_WORKER": "false",  # measure the request path itself
            }
        )
        for command in (["db", "upgrade"], ["seed"]):
            subprocess.run(
                [str(BIN / "newsletter"), *command],
                env=env,
                cwd=ROOT,
                check=True,
                capture_output=True,
            )
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [
                str(BIN / "gunicorn"),
                "-w",
                "2",
                "-b",
                f"127.0.0.1:{port}",
                "--log-level",
                "warning",
                "--pythonpath",
                str(ROOT / "bench"),
                "bench_app:app",
            ],
            env=env,
            cwd=ROOT,
        )
        try:
            wait_for(base + "/")
            cookie, token = session_token(base)
            headers = (
                '{["Content-Type"] = "application/x-www-form-urlencoded", '
                '["Accept"] = "application/json", ["Cookie"] = "' + cookie + '"}'
            )
            subscribe_lua = tmp / "subscribe.lua"
            subscribe_lua.write_text(f'TOKEN = "{token}"\nHEADERS = {headers}\n' + LUA)
            bare_lua = tmp / "bare.lua"
            bare_lua.write_text(
                'wrk.method = "POST"\nwrk.body = "x=1"\n'
                'wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"\n'
            )
            bare = wrk(base + "/bench/bare", bare_lua)
            subscribe = wrk(base + "/subscribe", subscribe_lua)
        finally:
            server.terminate()
            server.wait(20)
        subscribers = subprocess.run(
            [str(BIN / "newsletter"), "subscribers", "stats"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    print(
        f"Subscribe load benchmark: gunicorn -w 2 on 127.0.0.1, wrk -t2 -c{CONNECTIONS} "
        f"-d{DURATION}s, SQLite, limits off"
    )
    print(
        f"{'endpoint':<18} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'requests':>9} "
        f"{'non-2xx':>8}  socket errors"
    )
    for name, r in (("bare Flask POST", bare), ("POST /subscribe", subscribe)):
        print(
            f"{name:<18} {r['rps']:>9.0f} {r['p50']:>8.2f} {r['p99']:>8.2f} {r['total']:>9} "
            f"{r['errors']:>8}  {r['socket_errors']}"
        )
    print(f"subscribe / bare throughput ratio: {subscribe['rps'] / bare['rps']:.2f}")
    print("pending subscriptions created:", subscribers.splitlines()[2].split()[1])


if __name__ == "__main__":
    main()
