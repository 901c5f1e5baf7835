"""Benchmark: `newsletter subscribers import` of 10,000 and 100,000 rows.

Reports rows per second and peak RSS, and the same for a reference run on this machine
in this run: a bare csv + sqlite3 executemany insert of the same rows into the same kind
of tables (the ceiling for CSV into SQLite), so the figures read as ratios.

Run with `make bench`. Loopback only, no network; every loop is bounded by the row count.
"""

import csv
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NEWSLETTER = str(Path(sys.executable).parent / "newsletter")
SIZES = (10_000, 100_000)


def write_csv(path: Path, rows: int) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["Email Address", "First Name", "Last Name"])
        for n in range(rows):
            writer.writerow([f"reader{n}@newsroom{n % 97}.org", "Reader", str(n)])


def run(args: list[str], env: dict) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one child process."""
    start = time.perf_counter()
    process = subprocess.Popen(
        args, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"benchmark step failed: {' '.join(args)}\n{process.stderr.read().decode()}")
    return elapsed, usage.ru_maxrss / 1024


def reference(csv_path: str, db_path: str) -> None:
    """The ceiling: the same rows from CSV into two SQLite tables, no checks at all."""
    db = sqlite3.connect(db_path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE s (id INTEGER PRIMARY KEY, email TEXT, email_key TEXT UNIQUE)")
    db.execute(
        "CREATE TABLE sub (id INTEGER PRIMARY KEY, s INTEGER, n INTEGER, status TEXT, "
        "UNIQUE (s, n))"
    )

    def flush(batch: list[str]) -> None:
        db.executemany(
            "INSERT INTO s (email, email_key) VALUES (?, ?)", [(e, e.lower()) for e in batch]
        )
        db.executemany(
            "INSERT INTO sub (s, n, status) SELECT id, 1, 'confirmed' FROM s WHERE email_key = ?",
            [(e.lower(),) for e in batch],
        )
        db.commit()

    with open(csv_path, newline="") as f:
        reader = csv.reader(f)
        next(reader)
        batch: list[str] = []
        for row in reader:
            batch.append(row[0])
            if len(batch) == 1000:
                flush(batch)
                batch = []
        if batch:
            flush(batch)


def main() -> None:
    print("Import benchmark (newsletter subscribers import --confirmed, SQLite, this machine)")
    rows_out = []
    with tempfile.TemporaryDirectory(prefix="newsletter-bench-") as tmp:
        tmp = Path(tmp)
        for size in SIZES:
            path = tmp / f"members-{size}.csv"
            write_csv(path, size)
            env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
            env["NEWSLETTER_INSTANCE_PATH"] = str(tmp / f"instance-{size}")
            env["NEWSLETTER_OUTBOX_WORKER"] = "false"
            run([NEWSLETTER, "db", "upgrade"], env)
            run([NEWSLETTER, "seed"], env)
            command = [
                NEWSLETTER,
                "subscribers",
                "import",
                str(path),
                "--newsletter",
                "ukraine-daily",
                "--confirmed",
                "--consent-note",
                "bench",
            ]
            ours, our_rss = run(command, env)
            again, _ = run(command, env)  # everything is there already: the idempotent pass
            ref, ref_rss = run(
                [sys.executable, __file__, "--reference", str(path), str(tmp / f"ref{size}.db")],
                env,
            )
            rows_out.append((size, size / ours, our_rss, size / again, size / ref, ref_rss))
    print(
        f"{'rows':>8} {'import rows/s':>14} {'peak RSS MB':>12} {'re-import rows/s':>17} "
        f"{'reference rows/s':>17} {'ref RSS MB':>11} {'speed ratio':>12}"
    )
    for size, rate, rss, rerate, ref_rate, ref_rss in rows_out:
        print(
            f"{size:>8,} {rate:>14,.0f} {rss:>12.1f} {rerate:>17,.0f} {ref_rate:>17,.0f} "
            f"{ref_rss:>11.1f} {rate / ref_rate:>12.2f}"
        )
    small, large = rows_out
    print(
        f"peak RSS 100,000 rows / 10,000 rows: {large[2] / small[2]:.2f} "
        f"(flat memory means about 1.0)"
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--reference"]:
        reference(sys.argv[2], sys.argv[3])
    else:
        main()
