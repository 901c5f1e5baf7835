"""Running a send of an issue: one at a time on SQLite, the list taken, dead senders'
claims put back, one sender process per SMTP connection, progress, and the summary.

A real send runs one sender process per SMTP connection (Python's work per message
is too much for one core to keep a fast relay busy) and watches their progress in
the database. Ctrl-C stops them after the messages in flight; running the same
command again resumes.
"""

import fcntl
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import click
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from ..db import engine, session_factory, utcnow
from ..links import reader_links, tracked_links
from ..mailout.journal import fold_journals, journal_folder
from ..mailout.models import DeliveryStatus
from ..mailout.relay import transport_from_config
from ..models import Issue
from ..reports.refusals import blocking
from .mail import IssueMail
from .queue import (
    counts,
    eligible_readers,
    failures,
    finish,
    release_claims,
    release_dead_local_claims,
    take_list,
)
from .sender import Sender, SenderReport, SendSettings

EXIT_PAUSED = 75  # EX_TEMPFAIL: try again later
EXIT_INTERRUPTED = 130


@contextmanager
def sqlite_only_one(app: Flask, name: str, busy: str) -> Iterator[None]:
    """On SQLite, one holder of ``name`` at a time; a second gets ``busy`` as its error.

    The lock is an flock on a file beside the database: the system releases it when
    the holder dies, so a killed holder never blocks the next. Other databases allow
    several (their claims share the work).
    """
    url = make_url(app.config["DATABASE_URL"])
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        yield
        return
    lock = os.open(f"{url.database}.{name}.lock", os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(lock, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise click.ClickException(busy) from None
        yield


def single_sender(app: Flask, issue: Issue):
    """On SQLite, one send of an issue at a time: a second is told so and exits."""
    return sqlite_only_one(
        app,
        f"send-{issue.id}",
        f"a send of {issue.newsletter.slug} issue {issue.number} is already running; "
        "wait for it, or stop it and run this again",
    )


def run_send(app: Flask, session, issue: Issue, settings: SendSettings, yes: bool) -> None:
    """Send ``issue`` to its list, asking first unless ``yes``; exits with the send's status."""
    slug, number = issue.newsletter.slug, issue.number
    first = issue.sent_at is None
    if first:
        readers = session.scalar(
            select(func.count()).select_from(eligible_readers(issue).subquery())
        )
        question = f"Send {slug} issue {number} ({issue.subject!r}) to {readers:,} reader(s)?"
    else:
        left = _left(counts(session, issue.id))
        question = f"Resume sending {slug} issue {number}: {left:,} reader(s) left?"
    session.rollback()
    if not yes:
        click.confirm(question, abort=True)
    if first:
        take_list(session, issue)
    settings = replace(settings, journal=journal_folder(app.instance_path))
    # Claims of a send that died: what its journals say it sent is recorded first; on
    # SQLite the lock says no sender is alive; elsewhere, this host's dead senders,
    # and others' once their lease ran out.
    sqlite = make_url(app.config["DATABASE_URL"]).get_backend_name() == "sqlite"
    journaled = (
        fold_journals(session, settings.journal, issue.id, all_dead=sqlite)
        if settings.journal is not None
        else 0
    )
    if sqlite:
        stale = release_claims(session, issue.id, expired_only=False)
    else:
        stale = release_dead_local_claims(session, issue.id)
        stale += release_claims(session, issue.id, expired_only=True)
    if journaled or stale:
        click.echo(
            f"A send that stopped had sent {journaled:,} message(s) it had not recorded "
            f"yet: recorded now. {stale:,} reader(s) it held go back in the queue; the "
            "message each of its connections had in flight may go out twice.",
            err=True,
        )
    before = counts(session, issue.id)
    session.rollback()
    started = time.monotonic()
    reports, interrupted, error = _run_senders(app, issue, settings, session, before)
    after = counts(session, issue.id)
    session.rollback()
    if not _left(after):
        finish(session, issue, after)
    sent_here = sum(report.sent for report in reports)  # other hosts' senders not counted
    _summary(session, issue, after, sent_here, time.monotonic() - started)
    paused = next((report.paused for report in reports if report.paused), None)
    if error:
        click.echo(f"Error: a sender stopped: {error}", err=True)
    if interrupted:
        click.echo("Interrupted: run the same command to resume.", err=True)
        sys.exit(EXIT_INTERRUPTED)
    if paused:
        click.echo(
            f"Paused after {settings.pause_after} delivery errors in a row; the last: {paused}. "
            "Nothing is lost: run the same command to resume.",
            err=True,
        )
        sys.exit(EXIT_PAUSED)
    if error or _left(after):
        sys.exit(1)
    if after[DeliveryStatus.FAILED]:
        raise click.ClickException(f"{after[DeliveryStatus.FAILED]:,} delivery(ies) failed")


class SendInterrupted(Exception):
    """A scheduled send was stopped by SIGTERM or Ctrl-C (its messages in flight were
    recorded; the next worker resumes it)."""


def run_scheduled(app: Flask, issue_id: int, settings: SendSettings) -> bool:
    """Run one scheduled send as ``digest send --yes`` runs it; its outcome is logged.
    False when it did not finish (paused, another send of it running, failures)."""
    with session_factory(app)() as session:
        issue = session.get(Issue, issue_id)
        if issue is None:  # deleted since it was found due
            return True
        name = f"{issue.newsletter.slug} issue {issue.number}"
        if issue.sent_at is None:
            late = (utcnow() - (issue.scheduled_at or utcnow())).total_seconds()
            when = f"{late:.0f} s late (no worker ran at its time)" if late > 60 else "on time"
            click.echo(f"Starting the scheduled send of {name}, {when}.")
        else:
            click.echo(f"Resuming the scheduled send of {name}.")
        try:
            with single_sender(app, issue):
                run_send(app, session, issue, settings, yes=True)
        except click.ClickException as exc:  # another send of it runs; failures: logged
            click.echo(f"{name}: {exc.format_message()}", err=True)
            return False
        except SystemExit as exc:  # the send's own exit: paused, interrupted, failures
            if exc.code == EXIT_INTERRUPTED:
                raise SendInterrupted(name) from None
            click.echo(f"{name}: the send ended with status {exc.code}.", err=True)
            return exc.code in (0, None)
        return True


def _left(found: dict[DeliveryStatus, int]) -> int:
    return found[DeliveryStatus.QUEUED] + found[DeliveryStatus.SENDING]


def _sender_process(db, config, issue_id, mail, settings, stop, parent, outcomes) -> None:
    # A forked child: no app, no app context; the sending core takes plain things.
    # Ctrl-C reaches the whole process group: the parent decides, via ``stop``.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The parent's pooled connections are the parent's: open our own.
    db.dispose(close=False)
    try:
        sender = Sender(
            db,
            issue_id,
            # No deadline per attempt: its timer thread would cost 0.1 ms a message.
            # The claims are renewed between messages instead (see Sender).
            transport_from_config(config),
            mail,
            settings,
            should_stop=lambda: stop.is_set() or os.getppid() != parent,
        )
        outcomes.put(sender.run())
    except Exception as exc:  # one line for the parent to show; the rows stay claimed
        outcomes.put(f"{type(exc).__name__}: {exc}"[:300])
        os._exit(1)


def _run_senders(
    app: Flask,
    issue: Issue,
    settings: SendSettings,
    session: Session,
    before: dict[DeliveryStatus, int],
) -> tuple[list[SenderReport], bool, str | None]:
    """Run ``settings.connections`` forked senders of ``issue`` to their end: their
    reports, whether Ctrl-C stopped them, and a sender's error if one failed."""
    issue_id = issue.id
    # Made here, once: the forked senders inherit it and need no app to use it.
    mail = IssueMail(issue, app.config, reader_links(issue.newsletter.language), tracked_links())
    config = dict(app.config)
    context = multiprocessing.get_context("fork")
    stop, outcomes = context.Event(), context.SimpleQueue()
    processes = [
        context.Process(
            target=_sender_process,
            args=(engine(app), config, issue_id, mail, settings, stop, os.getpid(), outcomes),
            name=f"sender-{n}",
        )
        for n in range(settings.connections)
    ]
    progress = Progress(total=sum(before.values()), done=before[DeliveryStatus.SENT])
    reports: list[SenderReport] = []
    interrupted, error = False, None
    for process in processes:
        process.start()
    try:
        while any(process.is_alive() for process in processes):
            # Woken at once when a sender ends: a send is not half a second longer.
            multiprocessing.connection.wait([p.sentinel for p in processes], timeout=0.5)
            while not outcomes.empty():
                outcome = outcomes.get()
                if isinstance(outcome, SenderReport):
                    reports.append(outcome)
                    if outcome.paused:
                        stop.set()  # the relay is the problem: all senders stop
                else:
                    error = outcome
                    stop.set()
            if progress.due():  # counting 200,000 rows takes 13 ms: only for a line
                found = counts(session, issue_id)
                session.rollback()
                progress.show(found)
    except KeyboardInterrupt:
        interrupted = True
        stop.set()
        click.echo("\nStopping after the messages in flight (Ctrl-C again: at once)…", err=True)
        try:
            for process in processes:
                process.join()
        except KeyboardInterrupt:  # at once: what was in flight is in doubt, as after kill -9
            for process in processes:
                process.kill()
                process.join()
    progress.close()
    while not outcomes.empty():
        outcome = outcomes.get()
        if isinstance(outcome, SenderReport):
            reports.append(outcome)
        else:
            error = outcome
    return reports, interrupted, error


class Progress:
    """A progress line on stderr: count, rate, ETA; redrawn on a terminal, else every 10 s."""

    def __init__(self, total: int, done: int, clock=time.monotonic) -> None:
        self.total, self.start_done = total, done
        self.clock = clock
        self.started = clock()
        self.tty = sys.stderr.isatty()
        self.last_line = 0.0

    def due(self) -> bool:
        """Whether a line would be drawn now (on a terminal, always)."""
        return self.tty or self.clock() - self.last_line >= 10

    def show(self, found: dict[DeliveryStatus, int]) -> None:
        """Draw the line for these counts."""
        done = sum(
            found[s] for s in (DeliveryStatus.SENT, DeliveryStatus.FAILED, DeliveryStatus.SKIPPED)
        )
        elapsed = self.clock() - self.started
        rate = (found[DeliveryStatus.SENT] - self.start_done) / elapsed if elapsed else 0
        left = self.total - done
        eta = f"{int(left / rate) // 60}:{int(left / rate) % 60:02d}" if rate > 0 else "--:--"
        share = done / self.total * 100 if self.total else 100
        line = f"  {done:,}/{self.total:,}  {share:5.1f}%  {rate:,.0f}/s  ETA {eta}"
        if self.tty:
            click.echo(f"\r{line}   ", nl=False, err=True)
        elif self.due():
            click.echo(line, err=True)
            self.last_line = self.clock()

    def close(self) -> None:
        """End the line."""
        if self.tty:
            click.echo(err=True)


def _summary(session, issue, after, sent_now: int, seconds: float) -> None:
    rate = sent_now / seconds if seconds else 0
    for email, error in failures(session, issue.id):
        click.echo(f"Failed: {email}: {error}", err=True)
    session.rollback()
    click.echo(
        f"{issue.newsletter.slug} issue {issue.number}: "
        f"{after[DeliveryStatus.SENT]:,} delivered, {after[DeliveryStatus.FAILED]:,} failed, "
        f"{after[DeliveryStatus.SKIPPED]:,} skipped, {_left(after):,} left "
        f"of {sum(after.values()):,}; {sent_now:,} sent in this run, {seconds:.1f} s, "
        f"{rate:,.0f}/s."
    )
    for found in blocking(session, issue.id):
        click.echo(
            f"Warning: {found.line()}. This looks like {found.domain} blocking our mail, "
            "not its readers: see the relay's reputation, SPF, DKIM and DMARC "
            "(`newsletter digest report` lists the refusals); no reader was dropped.",
            err=True,
        )
    session.rollback()
