"""Benchmark: `newsletter digest send` to 20,000 and 200,000 readers, against a ceiling.

For each list size: a fresh instance, the seed issue built, the readers imported as
confirmed, then the send to Postfix's `smtp-sink` on loopback, with 4 connections;
at 20,000 readers three sends (three issues), for medians. In the same run two
references: Postfix's `smtp-source -d` sending as many messages of the same size to
the same sink over the same number of connections, many messages per connection as
the senders do (C, no Python, no database; median of three); and for the DKIM-signed
send, the RSA-2048 signatures per second OpenSSL makes on all cores (`openssl speed
-multi`), the physical limit of signing. Figures are messages per second, ratios of
medians, and the peak RSS of the largest process of a send.

`smtp-source` and `smtp-sink` come out of Debian's `postfix` package without
installing it (`apt-get download postfix`, `dpkg -x`), into `.bench/postfix/`.
Run with `make bench`. Loopback only; every loop is bounded by the list size.
"""

import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.helpers import dkim_key  # noqa: E402  (the tests' key maker)
from tests.postgres import PostgresCluster, server_binaries  # noqa: E402

NEWSLETTER = str(Path(sys.executable).parent / "newsletter")
POSTFIX = ROOT / ".bench" / "postfix"
SIZES = (20_000, 200_000)
CONNECTIONS = 4
RUNS = 3  # of each measurement at 20,000 readers, for medians: the machine is noisy
SLUG = "explaining-ukraine"


def postfix_tools() -> tuple[Path, Path, dict]:
    """smtp-source and smtp-sink from Debian's postfix package, and their library path."""
    tools = POSTFIX / "usr" / "sbin"
    if not (tools / "smtp-sink").exists():
        POSTFIX.mkdir(parents=True, exist_ok=True)
        download = POSTFIX.parent / "download"
        download.mkdir(exist_ok=True)
        try:
            subprocess.run(
                ["apt-get", "download", "postfix"],
                cwd=download,
                check=True,
                capture_output=True,
            )
        except (OSError, subprocess.CalledProcessError) as exc:
            sys.exit(f"cannot get smtp-source/smtp-sink (apt-get download postfix): {exc}")
        package = next(download.glob("postfix_*.deb"))
        subprocess.run(["dpkg", "-x", str(package), str(POSTFIX)], check=True)
    env = {**os.environ, "LD_LIBRARY_PATH": str(POSTFIX / "usr" / "lib" / "postfix")}
    return tools / "smtp-source", tools / "smtp-sink", env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_sink(sink: Path, env: dict) -> tuple[subprocess.Popen, int]:
    port = free_port()
    user = ["-u", "nobody"] if os.geteuid() == 0 else []  # it refuses to run as root
    process = subprocess.Popen([str(sink), *user, f"127.0.0.1:{port}", "256"], env=env)
    for _ in range(100):  # bounded: up to 5 s for it to listen
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return process, port
        except OSError:
            time.sleep(0.05)
    sys.exit("smtp-sink did not start")


def step(args: list[str], env: dict) -> str:
    """Run one command to its end; its output, or exit with its error."""
    done = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"benchmark step failed: {' '.join(args)}\n{done.stderr}")
    return done.stdout


def send_run(port: int, env: dict, number: int = 1) -> tuple[float, float, int]:
    """Messages per second (the command's own, start of the senders to their end),
    peak RSS and messages delivered of one send."""
    env = {
        **env,
        "NEWSLETTER_MAIL_BACKEND": "smtp",
        "NEWSLETTER_SMTP_HOST": "127.0.0.1",
        "NEWSLETTER_SMTP_PORT": str(port),
    }
    args = [NEWSLETTER, "digest", "send", SLUG, str(number), "--yes"]
    args += ["--connections", str(CONNECTIONS)]
    # Measured through a small wrapper so the peak RSS covers the send's processes only.
    wrapper = (
        "import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
        "print('PEAK_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
        "sys.exit(code)"
    )
    out = step([sys.executable, "-c", wrapper, *args], env)
    # The rate, not the seconds: those are rounded to a tenth, 3 % of a 3 s send.
    summary = re.search(r"([\d,]+) delivered, ([\d,]+) failed.*?, ([\d,]+)/s\.", out)
    if summary is None or summary.group(2) != "0":
        sys.exit(f"unexpected send summary:\n{out}")
    delivered = int(summary.group(1).replace(",", ""))
    rate = float(summary.group(3).replace(",", ""))
    peak = int(re.search(r"PEAK_KB (\d+)", out).group(1)) / 1024
    return rate, peak, delivered


def ceiling(source: Path, port: int, env: dict, count: int, size: int) -> float:
    """smtp-source: ``count`` messages of ``size`` bytes over the same connections.

    With ``-d``, many messages per connection, as the senders do; without it
    smtp-source would open a connection for every message, a handicapped reference.
    """
    start = time.perf_counter()
    subprocess.run(
        [str(source), "-d", "-s", str(CONNECTIONS), "-m", str(count), "-l", str(size)]
        + ["-f", "letters@newsroom.org", "-t", "reader@newsroom.org", f"127.0.0.1:{port}"],
        env=env,
        check=True,
    )
    return count / (time.perf_counter() - start)


def prepare(folder: Path, readers: int, extra_env: dict) -> tuple[dict, int]:
    """A fresh instance with the seed issue built and ``readers`` confirmed readers."""
    instance = folder / "instance"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env.update(NEWSLETTER_INSTANCE_PATH=str(instance), **extra_env)
    csv = folder / "readers.csv"
    with csv.open("w") as f:
        f.write("email\n")
        for n in range(readers):
            f.write(f"reader{n}@newsroom{n % 97}.org\n")
    step([NEWSLETTER, "db", "upgrade"], env)
    step([NEWSLETTER, "seed"], env)
    step([NEWSLETTER, "digest", "build", SLUG], env)
    step(
        [NEWSLETTER, "subscribers", "import", str(csv), "--newsletter", SLUG]
        + ["--confirmed", "--consent-note", "benchmark"],
        env,
    )
    step([NEWSLETTER, "digest", "preview", SLUG, "1", "--eml", str(folder / "one.eml")], env)
    return env, (folder / "one.eml").stat().st_size


def dkim_env(folder: Path) -> dict:
    path, _ = dkim_key(folder)
    return {
        "NEWSLETTER_DKIM_DOMAIN": "newsroom.org",
        "NEWSLETTER_DKIM_SELECTOR": "bench",
        "NEWSLETTER_DKIM_KEY_FILE": str(path),
    }


def postgres_row(sink: Path, tools_env: dict, readers: int = 40_000) -> None:
    """One sender against two at once on PostgreSQL, two connections each."""
    bindir = server_binaries()
    if bindir is None:
        print("PostgreSQL row skipped: server binaries not found (apt-get install postgresql)")
        return
    cluster = PostgresCluster(bindir, free_port()).start()
    try:
        with tempfile.TemporaryDirectory(prefix="send-bench-pg-") as tmp:
            url = cluster.create_database()
            env, _ = prepare(Path(tmp), readers, {"NEWSLETTER_DATABASE_URL": url})
            step([NEWSLETTER, "digest", "build", SLUG], env)  # issue 2, for the second run
            process, port = start_sink(sink, tools_env)
            env.update(
                NEWSLETTER_MAIL_BACKEND="smtp",
                NEWSLETTER_SMTP_HOST="127.0.0.1",
                NEWSLETTER_SMTP_PORT=str(port),
            )
            try:
                rates = []
                for number, senders in (("1", 1), ("2", 2)):
                    args = [NEWSLETTER, "digest", "send", SLUG, number, "--yes"]
                    start = time.perf_counter()
                    running = [
                        subprocess.Popen(
                            args + ["--connections", "2"],
                            env=env,
                            stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL,
                            text=True,
                        )
                        for _ in range(senders)
                    ]
                    outs = [p.communicate()[0] for p in running]
                    elapsed = time.perf_counter() - start
                    if any(p.returncode for p in running):
                        sys.exit(f"a PostgreSQL send failed:\n{outs}")
                    rates.append(readers / elapsed)
            finally:
                process.terminate()
                process.wait()
    finally:
        cluster.stop()
    print(
        f"PostgreSQL, {readers:,} readers, 2 connections per sender (wall time, start to end): "
        f"one sender {rates[0]:,.0f} msg/s, two senders at once {rates[1]:,.0f} msg/s, "
        f"ratio {rates[1] / rates[0]:.2f}"
    )


def median(values: list[float]) -> float:
    return statistics.median(values)


def signing_rate() -> float:
    """RSA-2048 signatures per second OpenSSL makes on all cores: the limit of DKIM."""
    done = subprocess.run(
        ["openssl", "speed", "-multi", str(os.cpu_count() or 1), "-seconds", "5", "rsa2048"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    row = re.search(r"^rsa\s+2048 bits\s+\S+\s+\S+\s+([\d.]+)", done.stdout, re.MULTILINE)
    if row is None:
        sys.exit(f"cannot read openssl speed's output:\n{done.stdout}")
    return float(row.group(1))


def sends(readers: int, signed: bool, runs: int, sink: Path, tools_env: dict, reference=None):
    """``runs`` sends of as many issues to ``readers`` readers: rates, peak RSS, size,
    and after each send ``reference(port, size)``'s figure (interleaved, so that the
    machine's drift affects both alike)."""
    rates, peaks, figures = [], [], []
    with tempfile.TemporaryDirectory(prefix="send-bench-") as tmp:
        folder = Path(tmp)
        env, size = prepare(folder, readers, dkim_env(folder) if signed else {})
        for _ in range(runs - 1):
            step([NEWSLETTER, "digest", "build", SLUG], env)  # issues 2, 3, …
        process, port = start_sink(sink, tools_env)
        try:
            for number in range(1, runs + 1):
                rate, peak, delivered = send_run(port, env, number)
                if delivered != readers:
                    sys.exit(f"delivered {delivered} of {readers}")
                rates.append(rate)
                peaks.append(peak)
                if reference is not None:
                    figures.append(reference(port, size))
        finally:
            process.terminate()
            process.wait()
    return rates, max(peaks), size, figures


def spread(values: list[float]) -> str:
    return f"{median(values):,.0f} [{min(values):,.0f}-{max(values):,.0f}]"


def main() -> None:
    source, sink, tools_env = postfix_tools()
    print(
        f"Send benchmark (newsletter digest send, SQLite, {CONNECTIONS} connections, "
        "smtp-sink on loopback, this machine); median [min-max] of the runs"
    )
    plain, plain_peak, size, reference = sends(
        SIZES[0],
        False,
        RUNS,
        sink,
        tools_env,
        lambda port, size: ceiling(source, port, tools_env, SIZES[0], size),
    )
    signed, _, signed_size, rsa = sends(
        SIZES[0], True, RUNS, sink, tools_env, lambda port, size: signing_rate()
    )
    large, large_peak, _, _ = sends(SIZES[1], False, 1, sink, tools_env)
    rows = [
        (f"smtp-source -d, {SIZES[0]:,} x {size:,} B", RUNS, spread(reference), ""),
        (f"digest send, {SIZES[0]:,} readers", RUNS, spread(plain), f"{plain_peak:.1f}"),
        (f"digest send, {SIZES[1]:,} readers", 1, spread(large), f"{large_peak:.1f}"),
        (f"OpenSSL RSA-2048 signatures/s, {os.cpu_count()} cores", RUNS, spread(rsa), ""),
        (f"digest send DKIM, {SIZES[0]:,} ({signed_size:,} B)", RUNS, spread(signed), ""),
    ]
    print(f"{'':<44} {'runs':>4} {'per second':>22} {'peak RSS MB':>12}")
    for name, runs, rate, peak in rows:
        print(f"{name:<44} {runs:>4} {rate:>22} {peak:>12}")
    print(
        f"Ratio digest send / smtp-source -d (medians): {median(plain) / median(reference):.2f}"
        " (goal >= 0.5)"
    )
    print(
        f"Ratio DKIM-signed send / RSA-2048 signing rate (medians): "
        f"{median(signed) / median(rsa):.2f} (goal >= 0.5)"
    )
    print(
        f"Peak RSS {SIZES[1]:,} readers / {SIZES[0]:,} readers: {large_peak / plain_peak:.2f} "
        "(flat means memory does not grow with the list)."
    )
    postgres_row(sink, tools_env)
    shutil.rmtree(ROOT / ".bench" / "download", ignore_errors=True)


if __name__ == "__main__":
    main()
