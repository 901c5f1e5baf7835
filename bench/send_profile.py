"""Where a send's time goes: the per-message cost of each step of one sender.

One sender (one SMTP connection) of the sending core runs in this process over a
fresh instance with 20,000 readers, sending to Postfix's ``smtp-sink`` on loopback.
Each step is timed around its call (wall time and this process's CPU time): claiming
batches, the merge (the reader's links, then the message's bytes), the DKIM signature
(and the RSA signature within it), the SMTP transaction, recording results; the sink's
CPU time is read from /proc. With ``--cprofile`` the 25 costliest functions are printed
as well (cProfile slows the many small calls, so its figures are shares, not costs).

Run: ``python bench/send_profile.py [--readers N] [--dkim] [--cprofile]``.
"""

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from send_bench import SLUG, dkim_env, postfix_tools, prepare, start_sink  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


class Timed:
    """Wall and CPU seconds spent in the calls of wrapped functions, by step."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)

    def wrap(self, step: str, function):
        def timed(*args, **kwargs):
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return function(*args, **kwargs)
            finally:
                self.wall[step] += time.perf_counter() - wall
                self.cpu[step] += time.process_time() - cpu

        return timed


class _TimedKey:
    """The signer's RSA key, its ``sign`` timed (the key itself cannot be patched)."""

    def __init__(self, key, sign) -> None:
        self._key, self.sign = key, sign


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readers", type=int, default=20_000)
    parser.add_argument("--dkim", action="store_true", help="sign every message")
    parser.add_argument("--cprofile", action="store_true", help="print cProfile's top functions")
    options = parser.parse_args()

    _, sink, tools_env = postfix_tools()
    with tempfile.TemporaryDirectory(prefix="send-profile-") as tmp:
        folder = Path(tmp)
        env, size = prepare(folder, options.readers, dkim_env(folder) if options.dkim else {})
        process, port = start_sink(sink, tools_env)
        try:
            os.environ.update({k: v for k, v in env.items() if k.startswith("NEWSLETTER_")})
            os.environ.update(
                NEWSLETTER_MAIL_BACKEND="smtp",
                NEWSLETTER_SMTP_HOST="127.0.0.1",
                NEWSLETTER_SMTP_PORT=str(port),
            )
            profile(options, size, process.pid)
        finally:
            process.terminate()
            process.wait()


def profile(options, size: int, sink_pid: int) -> None:
    from sqlalchemy import select

    from webapp import create_app
    from webapp.db import engine, session_factory
    from webapp.issues import sender as sender_module
    from webapp.issues.mail import IssueMail
    from webapp.issues.queue import take_list
    from webapp.issues.sender import Sender, SendSettings
    from webapp.links import reader_links, tracked_links
    from webapp.mailout.relay import transport_from_config
    from webapp.models import Issue, Newsletter

    app = create_app()
    timed = Timed()
    with app.app_context(), session_factory(app)() as session:
        issue = session.scalar(
            select(Issue).join(Newsletter).where(Newsletter.slug == SLUG, Issue.number == 1)
        )
        take_list(session, issue)
        # As the send command makes it: the reader's language, tracked links.
        language = issue.newsletter.language
        mail = IssueMail(issue, app.config, reader_links(language), tracked_links())
        mail.links.for_reader = timed.wrap("merge: links", mail.links.for_reader)
        mail.tracked.for_reader = timed.wrap("merge: links", mail.tracked.for_reader)
        mail.template.merge = timed.wrap("merge: bytes", mail.template.merge)
        if mail.signer is not None:
            mail.signer.sign = timed.wrap("DKIM", mail.signer.sign)
            # The RSA signature inside it, on its own row: the part no code of ours
            # can make cheaper.
            mail.signer._key = _TimedKey(
                mail.signer._key, timed.wrap("  of it RSA", mail.signer._key.sign)
            )
        settings = SendSettings.from_config(app.config, connections=1)
        transport = transport_from_config(app.config)
        transport.send = timed.wrap("SMTP", transport.send)
        sender = Sender(engine(app), issue.id, transport, mail, settings)
        for step, name in (("claim", "claim"), ("record", "record")):
            setattr(sender_module, name, timed.wrap(step, getattr(sender_module, name)))
        sink_before = cpu_seconds(sink_pid)
        wall, cpu = time.perf_counter(), time.process_time()
        profiler = cProfile.Profile() if options.cprofile else None
        if profiler:
            profiler.enable()
        report = sender.run()
        if profiler:
            profiler.disable()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        sink_cpu = cpu_seconds(sink_pid) - sink_before
    sent = report.sent
    print(
        f"One sender, {sent:,} messages of {size:,} bytes{' DKIM-signed' if options.dkim else ''} "
        f"to smtp-sink: {wall:.2f} s, {sent / wall:,.0f} msg/s on one connection"
    )
    print(f"{'step':<14} {'wall µs/msg':>12} {'CPU µs/msg':>11}")
    for step in ("claim", "merge: links", "merge: bytes", "DKIM", "  of it RSA", "SMTP", "record"):
        if step in timed.wall:
            wall_us, cpu_us = timed.wall[step] / sent * 1e6, timed.cpu[step] / sent * 1e6
            print(f"{step:<14} {wall_us:>12.1f} {cpu_us:>11.1f}")
    outer = [step for step in timed.wall if not step.startswith(" ")]
    rest_wall = wall - sum(timed.wall[step] for step in outer)
    rest_cpu = cpu - sum(timed.cpu[step] for step in outer)
    print(f"{'the rest':<14} {rest_wall / sent * 1e6:>12.1f} {rest_cpu / sent * 1e6:>11.1f}")
    print(f"{'total':<14} {wall / sent * 1e6:>12.1f} {cpu / sent * 1e6:>11.1f}")
    print(f"{'sink (CPU)':<14} {'':>12} {sink_cpu / sent * 1e6:>11.1f}")
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
