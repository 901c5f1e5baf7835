"""``newsletter worker``: the one long-running background process.

It delivers the outbox (what ``outbox send --watch`` did: that command is now this
one), does the sign-ups' work as they come when the web servers leave it to it
(``SIGNUP_WORK=worker``), delivers webhooks, builds automatic issues at their slots
and starts scheduled sends (and those issues) at their time. On PostgreSQL any
number of workers, on any hosts, share the work: each outbox message is claimed by
one, and a send is shared by claims as several ``digest send`` processes share one.
On SQLite one worker is enough, and a second says so and exits. SIGTERM (or Ctrl-C)
stops it cleanly: a send in progress stops after the messages in flight, which are
recorded, and the next worker resumes it.
"""

import logging
import signal
import threading
import time
from collections.abc import Callable

import click
from flask import Flask
from sqlalchemy.exc import SQLAlchemyError

from emails.transport import Transport

from .db import session_factory
from .inbound.store import drop_old_raw
from .issues.automatic import run_automatic
from .issues.queue import finish_done
from .issues.running import SendInterrupted, run_scheduled, sqlite_only_one
from .issues.schedule import due
from .issues.sender import SendSettings
from .mailout.journal import journal_folder
from .mailout.outbox import deliver_queued
from .mailout.relay import outbox_transport
from .mailout.verp import Verp
from .reports.clicks import fold_clicks
from .subscribers.signups import LEFT_AFTER, act_on_left_requests, in_worker, requests_waiting
from .subscribers.suppression import refused_by_relay
from .webhooks.delivery import deliver_webhooks

log = logging.getLogger(__name__)

IDLE_CLOSE = 10  # seconds the web server's outbox thread keeps an idle relay connection open
RETRY_AFTER = 60  # seconds before a send that did not finish is tried again
# Seconds between two looks at the sign-ups in a wave (after a look that found some).
# Much of a pass's cost is the same whatever it finds (new addresses are acted on a
# batch to a statement, confirmations claimed 20 to one), so a pass that looked again at
# once spent most of its time on itself: at about 900 posts a second, the worker spent
# 0.83 to 1.10 ms of CPU per sign-up looking again at once, 0.46 waiting this long. A
# confirmation waits 20 ms more at most.
WAVE_WAIT = 0.02


def run_worker(app: Flask, interval: float) -> None:
    """Until stopped, every ``interval`` seconds: deliver the outbox (and between passes,
    with SIGNUP_WORK=worker, take new sign-ups as they come), deliver the webhooks, build
    automatic issues, announce finished sends and start the sends that are due.

    Each job runs in a thread of its own (the sends in the main one, where SIGTERM
    stops them cleanly), so a feed or a webhook receiver that hangs never holds up the
    confirmations or a send at its time; a job's failure is logged and it goes on.
    SIGTERM ends the worker within WORKER_STOP_WAIT seconds of the send's own clean stop:
    a job still in a request then is given up (its lease lets the next worker retry)."""
    config = app.config
    stopping = threading.Event()  # SIGTERM or Ctrl-C came
    sending: list[bool] = []
    resting: dict[int, float] = {}  # issue id: not tried again before this (monotonic)
    waiting: dict[int, float] = {}  # automatic newsletter id whose sources could not be read
    said: set[str] = set()  # warnings already logged once
    budget = max(interval, 5.0)  # seconds of webhooks a pass

    def stop(*_):
        stopping.set()
        if sending:  # the send's own clean stop: after the messages in flight
            raise KeyboardInterrupt

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop)
    busy = "another worker is running on this database; on SQLite one is enough"
    with sqlite_only_one(app, "worker", busy):
        click.echo(
            f"Worker: outbox, scheduled and automatic issues, webhooks every {interval:g} s.",
            err=True,
        )
        webhooks = lambda: _deliver_webhooks(app, stopping, budget, said)  # noqa: E731
        automatic = lambda: _automatic_issues(app, waiting)  # noqa: E731
        jobs = {
            "outbox": lambda: _outbox_job(app, stopping, interval),
            "webhooks": lambda: _every(interval, stopping, "webhooks", webhooks),
            "automatic": lambda: _every(interval, stopping, "automatic issues", automatic),
        }
        threads = [
            threading.Thread(
                target=_in_context, args=(app, job), name=f"worker-{name}", daemon=True
            )
            for name, job in jobs.items()
        ]
        for thread in threads:
            thread.start()
        while not stopping.is_set():
            _guarded("finished sends", lambda: _finish_sends(app))
            try:
                for issue_id in [issue.id for issue in _due(app)]:
                    if stopping.is_set() or resting.get(issue_id, 0) > time.monotonic():
                        continue
                    sending.append(True)
                    try:
                        if not run_scheduled(app, issue_id, SendSettings.from_config(config)):
                            # Paused by the relay, or another process sends it: not again
                            # every pass.
                            resting[issue_id] = time.monotonic() + RETRY_AFTER
                    except (SendInterrupted, KeyboardInterrupt):  # the next worker resumes
                        break
                    finally:
                        sending.clear()
            except SQLAlchemyError as exc:  # the database restarting: look again later
                cause = getattr(exc, "orig", None) or exc
                click.echo(f"Database error, trying again: {cause}", err=True)
            stopping.wait(interval)
        wait = config["WORKER_STOP_WAIT"]
        ends = time.monotonic() + wait
        for thread in threads:
            thread.join(max(0.0, ends - time.monotonic()))
        if any(thread.is_alive() for thread in threads):  # left to the next worker
            click.echo(f"Jobs still running after {wait:g} s: stopping anyway.", err=True)
    click.echo("Stopped.", err=True)


def _in_context(app: Flask, job) -> None:
    with app.app_context():  # a thread of its own: the app's context is not inherited
        job()


def _every(interval: float, stopping: threading.Event, job: str, run) -> None:
    """Run one job every ``interval`` seconds until stopped."""
    while not stopping.is_set():
        _guarded(job, run)
        stopping.wait(interval)


def _outbox_job(app: Flask, stopping: threading.Event, interval: float) -> None:
    """The outbox every ``interval`` seconds; between passes, with SIGNUP_WORK=worker,
    new sign-ups acted on as they come."""
    config = app.config
    signups_here = in_worker(config)  # SIGNUP_WORK=worker: the web servers only record
    while not stopping.is_set():
        _guarded("the outbox", lambda: _deliver_outbox(app, stopping))
        deadline = time.monotonic() + interval
        relay = None  # one relay connection for the sign-ups of this interval
        try:
            found = False
            while not stopping.is_set() and time.monotonic() < deadline:
                stopping.wait(WAVE_WAIT if found else 0.05)
                if signups_here and not stopping.is_set():  # a wave: acted on as it comes
                    relay = relay or outbox_transport(config)
                    found = _guarded("sign-ups", lambda relay=relay: _signups(app, relay, stopping))
        finally:
            if relay is not None:
                relay.close()


def deliver_outbox(
    app: Flask,
    due_only: bool = True,
    relay: Transport | None = None,
    housekeeping: bool = True,
    stopping: Callable[[], bool] | None = None,
    new_signups: bool = True,
):
    """One delivery pass of the outbox (and its housekeeping: sign-ups left to it,
    clicks and raw messages heard back past their keep days); the report.
    ``due_only``: messages waiting out a retry delay wait on. Over ``relay`` when
    given, left open for the caller. Without ``housekeeping`` only new sign-ups are
    acted on (unless not ``new_signups``: a web server that does its own) and the
    clicks wait. ``stopping``: asked before each message, ends the pass early."""
    config = app.config
    sessions = session_factory(app)
    if housekeeping or new_signups:
        act_on_left_requests(sessions, config, new_only=not housekeeping)
    if housekeeping:
        fold_clicks(sessions, config["CLICK_KEEP_DAYS"])
        # Raw messages heard back are kept INBOUND_KEEP_DAYS, however they came (a
        # relay's webhook, inbound process): not only where inbound serve runs.
        drop_old_raw(sessions, config["INBOUND_KEEP_DAYS"])
    return deliver_queued(
        sessions,
        relay or outbox_transport(config),
        lease=config["OUTBOX_LEASE"],
        backoff=config["OUTBOX_RETRY_INTERVAL"],
        due_only=due_only,
        keep_open=relay is not None,
        verp=Verp.from_config(config),
        stopping=stopping,
        journal=journal_folder(app.instance_path),
        on_refused=refused_by_relay,
    )


def _signups(app: Flask, relay: Transport, stopping: threading.Event) -> bool:
    # Between passes: one look at the requests, and when some wait, act on them and
    # deliver their confirmations at once. True when that sent mail: a wave is on.
    # (Requests that fail stay waiting: looked at again only after the usual wait.)
    if not requests_waiting(session_factory(app)):
        return False
    return _deliver_outbox(app, stopping, relay).sent > 0


def _deliver_outbox(app: Flask, stopping: threading.Event, relay: Transport | None = None):
    # One delivery pass; its report. Over the interval's relay it is a quick pass for
    # new sign-ups: no housekeeping, and a line only if some mail did not go (a wave
    # would log every few milliseconds).
    quick = relay is not None
    report = deliver_outbox(app, relay=relay, housekeeping=not quick, stopping=stopping.is_set)
    if report.retry or report.failed or (report.sent and not quick):
        click.echo(
            f"Outbox: {report.sent} sent, {report.retry} to retry, {report.failed} failed"
            + (f" ({report.last_error})" if report.last_error else "")
            + "."
        )
    return report


def _guarded(job: str, run):
    """Run one job of a pass and return what it returns; what goes wrong is one line in
    the log (and None), not the end of the worker (it is tried again on the next pass)."""
    try:
        return run()
    except SQLAlchemyError as exc:  # the database restarting: look again later
        cause = getattr(exc, "orig", None) or exc
        click.echo(f"Database error in {job}, trying again: {cause}", err=True)
    except Exception as exc:  # a long-running process logs it and goes on
        click.echo(f"Error in {job}, trying again next pass: {exc!r}", err=True)
    return None


def _deliver_webhooks(app: Flask, stopping: threading.Event, budget: float, said: set[str]) -> None:
    report = deliver_webhooks(
        session_factory(app), app.config, should_stop=stopping.is_set, budget=budget
    )
    if report.delivered or report.retry or report.failed:
        click.echo(
            f"Webhooks: {report.delivered} delivered, {report.retry} to retry, "
            f"{report.failed} failed"
            + (f" (last error: {report.last_error})" if report.last_error else "")
            + "."
        )
    elif report.last_error and report.last_error not in said:
        said.add(report.last_error)  # the same warning every pass would drown the log
        click.echo(f"Webhooks: {report.last_error}.", err=True)


def _finish_sends(app: Flask) -> None:
    """Announce sends whose last reader is done but that nobody marked finished (their
    sender stopped between its last record and its finish)."""
    with session_factory(app)() as session:
        finish_done(session)


def _automatic_issues(app: Flask, waiting: dict[int, float]) -> None:
    """Build the issues of automatic newsletters whose slot came; they are then sent as
    scheduled sends are. One whose sources could not be read waits RETRY_AFTER."""
    now = time.monotonic()
    resting = {newsletter for newsletter, until in waiting.items() if until > now}
    with session_factory(app)() as session:
        for newsletter_id, line, done in run_automatic(session, resting=resting):
            click.echo(line, err=not done)
            if not done:
                waiting[newsletter_id] = now + RETRY_AFTER


def _due(app: Flask):
    with session_factory(app)() as session:
        return due(session)


class OutboxWorker:
    """The web server's thread that delivers the outbox: the worker's outbox pass
    (:func:`deliver_outbox`), in each web server process.

    Started by the web server's first request (never by a staff command) and woken
    right after a request queues mail, and every ``OUTBOX_RETRY_INTERVAL`` seconds
    otherwise, so mail queued while the relay was down goes out when it is back.
    Every LEFT_AFTER / 2 a pass also acts on sign-up requests a stopped process left
    behind and does the worker's housekeeping. Each server process (e.g. gunicorn
    worker) runs its own.
    """

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.config = app.config
        self._wake = threading.Event()
        self._stopping = False
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._passes = 0  # delivery passes ended, whatever they met
        self._passed = threading.Condition()

    @property
    def passes(self) -> int:
        """How many delivery passes this thread has ended so far."""
        with self._passed:
            return self._passes

    def wait_for_passes(self, count: int, timeout: float) -> bool:
        """Wait until ``count`` delivery passes have ended; False if not within
        ``timeout`` seconds. A test waits for a pass that began after something it saw:
        what that pass would send has been sent when this returns."""
        with self._passed:
            return self._passed.wait_for(lambda: self._passes >= count, timeout)

    def start(self) -> None:
        """Start the thread once per process (called on every request: no lock once running)."""
        if self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="outbox-worker", daemon=True)
                self._thread.start()
                self._wake.set()  # a first pass at once: mail may be left from before a restart

    def wake(self) -> None:
        """Ask for a delivery pass now, if the thread runs."""
        if self._thread is not None and self._thread.is_alive():
            self._wake.set()

    def stop(self, timeout: float = 10) -> None:
        """End the thread after its current pass (for tests and orderly shutdown)."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        # The relay connection stays open while mail keeps coming (a sign-up wave
        # would otherwise open one per message) and is closed after IDLE_CLOSE
        # seconds without any; the transport reopens one it finds closed.
        retry = self.config["OUTBOX_RETRY_INTERVAL"]
        transport, last_pass, last_sweep, last_used = None, 0.0, 0.0, 0.0
        while True:
            woken = self._wake.wait(min(retry, IDLE_CLOSE) if transport else retry)
            if woken:
                # Cleared only when it woke us: a wake that came just after a wait timed
                # out must not be lost (its mail would wait a whole retry interval).
                self._wake.clear()
            now = time.monotonic()
            idle = not woken and now - last_used > IDLE_CLOSE
            if transport is not None and (self._stopping or idle):
                transport.close()
                transport = None
            if self._stopping:
                return
            if not woken and now - last_pass < retry:
                continue
            last_pass = now
            sweep = now - last_sweep >= LEFT_AFTER / 2  # requests a stopped server left
            # The app's context: acting on a sign-up renders its confirmation's links.
            with self.app.app_context():
                try:
                    transport = transport or outbox_transport(self.config)
                    report = deliver_outbox(
                        self.app,
                        relay=transport,
                        housekeeping=sweep,
                        new_signups=in_worker(self.config),
                    )
                    if sweep:
                        last_sweep = now
                    if report.sent or report.retry or report.failed:
                        last_used = time.monotonic()
                except Exception:  # keep the thread alive whatever one pass meets
                    log.exception("outbox delivery pass failed")
                    if transport is not None:
                        transport.close()
                        transport = None
            with self._passed:
                self._passes += 1
                self._passed.notify_all()
