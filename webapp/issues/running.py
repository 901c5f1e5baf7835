"""``newsletter digest send``: test copies, dry runs, and the real send with progress.

A real send runs one sender process per SMTP connection (Python's work per message
is too much for one core to keep a fast relay busy) and watches their progress in
the database. Ctrl-C stops them after the messages in flight; running the same
command again resumes.
"""

import fcntl
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from flask import Flask, current_app
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from emails.addresses import InvalidAddress, envelope_address, normalize_address
from emails.dkim import DkimError
from emails.transport import DeliveryError

from .catalog import issue_or_fail
from .db import session_factory
from .digests import IssueMail
from .links import preview_links
from .models import Delivery, DeliveryStatus, Issue, Subscriber
from .outbox import transport_from_config
from .sending import (
    RECORD_EVERY,
    Sender,
    SenderReport,
    SendSettings,
    counts,
    eligible_readers,
    failures,
    release_claims,
    release_dead_local_claims,
    take_list,
)

EXIT_PAUSED = 75  # EX_TEMPFAIL: try again later
EXIT_INTERRUPTED = 130


@click.command("send")
@click.argument("newsletter")
@click.argument("number", type=int)
@click.option("--to", "test_to", multiple=True, help="Send a test copy here; records nothing.")
@click.option("--dry-run", is_flag=True, help="Render every message and count; send nothing.")
@click.option(
    "--rate", type=click.FloatRange(min=0, min_open=True), help="At most this many messages/s."
)
@click.option(
    "--connections",
    type=click.IntRange(1, 64),
    help="SMTP connections in parallel (default: NEWSLETTER_SEND_CONNECTIONS, 4).",
)
@click.option("--yes", is_flag=True, help="Do not ask before sending.")
def send_command(newsletter, number, test_to, dry_run, rate, connections, yes) -> None:
    """Send issue NUMBER of NEWSLETTER to every confirmed subscriber.

    The readers confirmed when the send starts are its list. Run the same command
    again after an interruption (Ctrl-C, relay down, a crash) to resume: only readers
    not yet delivered get the issue. Exits 1 when deliveries failed, 75 when errors
    in a row paused the send.

    Example: newsletter digest send explaining-ukraine 3 --rate 50 --yes
    """
    app = current_app._get_current_object()
    with session_factory()() as session:
        issue = issue_or_fail(session, newsletter, number)
        try:
            IssueMail(issue)  # a DKIM key that cannot sign stops here, before anything
        except (DkimError, OSError) as exc:
            raise click.ClickException(f"cannot sign with the DKIM key: {exc}") from None
        if test_to:
            _send_tests(issue, test_to)
            return
        if dry_run:
            _dry_run(session, issue)
            return
        with single_sender(app, issue):
            _send(
                app,
                session,
                issue,
                SendSettings.from_config(app.config, rate=rate, connections=connections),
                yes,
            )


def _send_tests(issue: Issue, addresses: tuple[str, ...]) -> None:
    recipients = []
    for address in addresses:
        try:
            recipients.append(normalize_address(address).ascii)
        except InvalidAddress as exc:
            raise click.BadParameter(f"{address}: {exc}", param_hint="--to") from None
    mail = IssueMail(issue)
    links = preview_links()
    with transport_from_config(current_app.config) as transport:
        for recipient in recipients:
            try:
                transport.send(mail.message(recipient, links), mail.sender, [recipient])
            except DeliveryError as exc:
                raise click.ClickException(f"test copy to {recipient} not sent: {exc}") from None
            click.echo(
                f"Test copy of {issue.newsletter.slug} issue {issue.number} sent to {recipient}."
            )


def _dry_run(session, issue: Issue) -> None:
    mail = IssueMail(issue)
    if issue.sent_at is None:
        query = eligible_readers(issue).add_columns(Subscriber.email, Subscriber.secret)
    else:
        query = (
            select(
                Delivery.subscriber_id,
                Delivery.subscription_id,
                Subscriber.email,
                Subscriber.secret,
            )
            .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
            .where(
                Delivery.issue_id == issue.id,
                Delivery.status.in_([DeliveryStatus.QUEUED, DeliveryStatus.SENDING]),
            )
        )
    messages = size = 0
    for subscriber_id, subscription_id, email, secret in session.execute(
        query.execution_options(yield_per=1000)
    ):
        try:
            recipient = envelope_address(email)
            size += len(mail.for_reader(recipient, subscription_id, subscriber_id, secret))
        except ValueError as exc:
            click.echo(f"{email}: {exc}", err=True)
            continue
        messages += 1
    average = size / messages / 1024 if messages else 0
    click.echo(
        f"Dry run of {issue.newsletter.slug} issue {issue.number}: {messages:,} message(s) "
        f"rendered, {average:.1f} KB each, {size / 1024 / 1024:.1f} MB in all; "
        "nothing sent or recorded."
    )


@contextmanager
def single_sender(app: Flask, issue: Issue) -> Iterator[None]:
    """On SQLite, one send of an issue at a time: a second is told so and exits.

    The lock is an flock on a file beside the database: the system releases it when
    the holder dies, so a killed send never blocks the next. Other databases allow
    several senders (see ``claim``).
    """
    url = make_url(app.config["DATABASE_URL"])
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        yield
        return
    with open(Path(f"{url.database}.send-{issue.id}.lock"), "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise click.ClickException(
                f"a send of {issue.newsletter.slug} issue {issue.number} is already running; "
                "wait for it, or stop it and run this again"
            ) from None
        yield


def _send(app: Flask, session, issue: Issue, settings: SendSettings, yes: bool) -> None:
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
    # Claims of a send that died: on SQLite the lock says no sender is alive; elsewhere,
    # this host's dead senders, and others' once their lease ran out.
    if make_url(app.config["DATABASE_URL"]).get_backend_name() == "sqlite":
        stale = release_claims(session, issue.id, expired_only=False)
    else:
        stale = release_dead_local_claims(session, issue.id)
        stale += release_claims(session, issue.id, expired_only=True)
    if stale:
        click.echo(
            f"{stale:,} reader(s) claimed by a send that stopped go back in the queue; "
            f"the few it had sent but not yet recorded (at most {RECORD_EVERY + 1} per "
            "connection) get the issue twice.",
            err=True,
        )
    before = counts(session, issue.id)
    session.rollback()
    started = time.monotonic()
    reports, interrupted, error = _run_senders(app, issue.id, settings, session, before)
    after = counts(session, issue.id)
    session.rollback()
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


def _left(found: dict[DeliveryStatus, int]) -> int:
    return found[DeliveryStatus.QUEUED] + found[DeliveryStatus.SENDING]


def _sender_process(app, issue_id, settings, stop, parent, outcomes) -> None:
    # Ctrl-C reaches the whole process group: the parent decides, via ``stop``.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The parent's pooled connections are the parent's: open our own.
    session_factory(app).kw["bind"].dispose(close=False)
    try:
        with app.app_context():
            sender = Sender(
                app,
                issue_id,
                transport_from_config(app.config),
                settings,
                should_stop=lambda: stop.is_set() or os.getppid() != parent,
            )
            outcomes.put(sender.run())
    except Exception as exc:  # one line for the parent to show; the rows stay claimed
        outcomes.put(f"{type(exc).__name__}: {exc}"[:300])
        os._exit(1)


def _run_senders(app, issue_id, settings, session, before):
    context = multiprocessing.get_context("fork")
    stop, outcomes = context.Event(), context.SimpleQueue()
    processes = [
        context.Process(
            target=_sender_process,
            args=(app, issue_id, settings, stop, os.getpid(), outcomes),
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
            time.sleep(0.5)
            while not outcomes.empty():
                outcome = outcomes.get()
                if isinstance(outcome, SenderReport):
                    reports.append(outcome)
                    if outcome.paused:
                        stop.set()  # the relay is the problem: all senders stop
                else:
                    error = outcome
                    stop.set()
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

    def __init__(self, total: int, done: int) -> None:
        self.total, self.start_done = total, done
        self.started = time.monotonic()
        self.tty = sys.stderr.isatty()
        self.last_line = 0.0

    def show(self, found: dict[DeliveryStatus, int]) -> None:
        """Draw the line for these counts."""
        done = sum(
            found[s] for s in (DeliveryStatus.SENT, DeliveryStatus.FAILED, DeliveryStatus.SKIPPED)
        )
        elapsed = time.monotonic() - self.started
        rate = (found[DeliveryStatus.SENT] - self.start_done) / elapsed if elapsed else 0
        left = self.total - done
        eta = f"{int(left / rate) // 60}:{int(left / rate) % 60:02d}" if rate > 0 else "--:--"
        share = done / self.total * 100 if self.total else 100
        line = f"  {done:,}/{self.total:,}  {share:5.1f}%  {rate:,.0f}/s  ETA {eta}"
        if self.tty:
            click.echo(f"\r{line}   ", nl=False, err=True)
        elif time.monotonic() - self.last_line >= 10:
            click.echo(line, err=True)
            self.last_line = time.monotonic()

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
