"""Delivering the transactional outbox: claim, send, record; and the server's worker thread.

Each message is claimed with a lease by one conditional UPDATE, so any number of
threads, processes or hosts may drain the same outbox without sending a message twice.
"""

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from flask import Flask, current_app
from sqlalchemy import bindparam, insert, literal, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from emails.transport import DeliveryError, Transport

from ..db import UTCDateTime, session_factory, utcnow
from ..delivery import outbox_transport
from ..inbound.verp import Verp
from ..models import EventKind, OutboxMail, OutboxStatus, Subscription, SubscriptionEvent
from ..reports.clicks import fold_clicks
from .signups import LEFT_AFTER, act_on_left_requests, in_worker

log = logging.getLogger(__name__)

IDLE_CLOSE = 10  # seconds the worker keeps an idle relay connection open
MAX_BACKOFF = 3600  # seconds; a message is retried at least hourly while the relay is down


@dataclass
class DeliveryReport:
    """What one pass over the outbox did."""

    sent: int = 0
    retry: int = 0
    failed: int = 0
    last_error: str | None = None


def deliver_queued(
    sessions: sessionmaker[Session],
    transport: Transport,
    *,
    lease: int,
    backoff: int = 60,
    due_only: bool = True,
    batch: int = 100,
    keep_open: bool = False,
    verp: Verp | None = None,
    stopping: Callable[[], bool] | None = None,
) -> DeliveryReport:
    """Send queued messages until none is left or the relay fails temporarily.

    After a temporary failure a message waits ``backoff`` seconds, doubling with each
    attempt up to an hour; ``due_only=False`` (the operator's ``newsletter outbox send``)
    tries those too. Stops at the first temporary failure, so a relay that is down is not
    hammered once per message. ``keep_open`` leaves the relay connection open for the
    caller's next pass (the caller closes the transport). With ``verp`` each message
    goes out from its own bounces+TOKEN@ envelope sender, else from the stored one.
    ``stopping`` is asked before each message: once it says so, the pass ends (the
    message in flight has been recorded; the rest stays queued for the next worker).
    """
    report = DeliveryReport()
    with contextlib.nullcontext() if keep_open else transport:
        while True:
            with sessions() as session:
                ids = session.scalars(_pending(due_only).limit(batch)).all()
            if not ids:
                return report
            for message_id in ids:
                if stopping is not None and stopping():
                    return report
                outcome = _deliver_one(
                    sessions, transport, message_id, lease, backoff, due_only, report, verp
                )
                if outcome == "retry":
                    return report


def _pending(due_only: bool):
    return select(OutboxMail.id).where(*_claimable(due_only)).order_by(OutboxMail.id)


def _claimable(due_only: bool) -> list:
    now = utcnow()
    conditions = [
        OutboxMail.status == OutboxStatus.QUEUED,
        or_(OutboxMail.claimed_until.is_(None), OutboxMail.claimed_until < now),
    ]
    if due_only:
        conditions.append(OutboxMail.next_attempt_at <= now)
    return conditions


def _claim(due_only: bool):
    conditions = [
        OutboxMail.id == bindparam("message_id"),
        OutboxMail.status == OutboxStatus.QUEUED,
        or_(OutboxMail.claimed_until.is_(None), OutboxMail.claimed_until < NOW),
    ]
    if due_only:
        conditions.append(OutboxMail.next_attempt_at <= NOW)
    return (
        update(OutboxMail)
        .where(*conditions)
        .values(
            claimed_until=bindparam("until", type_=UTCDateTime),
            attempts=OutboxMail.attempts + 1,
        )
        .returning(
            OutboxMail.kind,
            OutboxMail.subscription_id,
            OutboxMail.sender,
            OutboxMail.recipient,
            OutboxMail.message,
            OutboxMail.attempts,
        )
    )


# Built once: each message runs one claim and one record.
NOW = bindparam("now", type_=UTCDateTime)
_CLAIMS = {due_only: _claim(due_only) for due_only in (True, False)}
_SENT = (
    update(OutboxMail)
    .where(OutboxMail.id == bindparam("message_id"))
    .values(status=OutboxStatus.SENT, sent_at=NOW, claimed_until=None, message=b"")
)
_NOT_SENT = (
    update(OutboxMail)
    .where(OutboxMail.id == bindparam("message_id"))
    .values(
        status=bindparam("new_status"),
        last_error=bindparam("error"),
        next_attempt_at=bindparam("next_attempt", type_=UTCDateTime),
        claimed_until=None,
    )
)


def _deliver_one(
    sessions, transport, message_id, lease, backoff, due_only, report, verp=None
) -> str | None:
    with sessions() as session:
        db = session.connection()
        now = utcnow()
        message = db.execute(
            _CLAIMS[due_only],
            {"message_id": message_id, "now": now, "until": now + timedelta(seconds=lease)},
        ).first()
        if message is None:
            session.rollback()
            return None  # another sender took it
        session.commit()  # no transaction stays open while the relay is talked to
        try:
            sender = verp.sender("o", message_id) if verp else message.sender
            transport.send(message.message, sender, [message.recipient])
        except DeliveryError as exc:
            error = str(exc)[:500]
            report.last_error = error
            if exc.permanent:
                status, next_attempt, outcome = OutboxStatus.FAILED, utcnow(), "failed"
                report.failed += 1
            else:
                delay = min(backoff * 2 ** (message.attempts - 1), MAX_BACKOFF)
                next_attempt = utcnow() + timedelta(seconds=delay)
                status, outcome = OutboxStatus.QUEUED, "retry"
                report.retry += 1
            session.connection().execute(
                _NOT_SENT,
                {
                    "message_id": message_id,
                    "new_status": status,
                    "error": error,
                    "next_attempt": next_attempt,
                },
            )
            log.warning("outbox message %s not delivered: %s", message_id, exc)
        else:
            # Delivered: the bytes are not needed again.
            sent_at = utcnow()
            session.connection().execute(_SENT, {"message_id": message_id, "now": sent_at})
            if message.kind == "welcome" and message.subscription_id is not None:
                _welcome_sent(session, message.subscription_id, sent_at)
            report.sent += 1
            outcome = "sent"
        session.commit()
        return outcome


def _welcome_sent(session: Session, subscription_id: int, at) -> None:
    # The history records the welcome when it went out, in the transaction that says so.
    session.execute(
        insert(SubscriptionEvent).from_select(
            ["subscription_id", "newsletter_id", "kind", "at"],
            select(
                Subscription.id,
                Subscription.newsletter_id,
                literal(EventKind.WELCOME_SENT.value),
                literal(at, UTCDateTime),
            ).where(Subscription.id == subscription_id),
        )
    )


def wake_worker() -> None:
    """Ask this process's outbox worker, if it runs, to deliver what was just queued."""
    worker = current_app.extensions["outbox_worker"]
    if worker is not None:
        worker.wake()


class OutboxWorker:
    """A daemon thread of the web server that delivers the outbox.

    Woken right after a request queues mail, and every ``OUTBOX_RETRY_INTERVAL``
    seconds otherwise, so mail queued while the relay was down goes out when it is back.
    Each pass first acts on sign-up requests a stopped process left behind.
    Started lazily, so each server process (e.g. gunicorn worker) runs its own.
    """

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.config = app.config
        self.sessions = session_factory(app)
        self._wake = threading.Event()
        self._stopping = False
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

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
        """Ask for a delivery pass now."""
        self.start()
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
            # The app's context: acting on a sign-up renders its confirmation's links.
            with self.app.app_context():
                try:
                    if now - last_sweep >= LEFT_AFTER / 2:  # requests a stopped server left
                        act_on_left_requests(self.sessions, self.config)
                        fold_clicks(self.sessions, self.config["CLICK_KEEP_DAYS"])
                        last_sweep = now
                    elif in_worker(self.config):  # each new one, when left to a worker
                        act_on_left_requests(self.sessions, self.config, new_only=True)
                    transport = transport or outbox_transport(self.config)
                    report = deliver_queued(
                        self.sessions,
                        transport,
                        lease=self.config["OUTBOX_LEASE"],
                        backoff=retry,
                        keep_open=True,
                        verp=Verp.from_config(self.config),
                    )
                    if report.sent or report.retry or report.failed:
                        last_used = time.monotonic()
                except Exception:  # keep the thread alive whatever one pass meets
                    log.exception("outbox delivery pass failed")
                    if transport is not None:
                        transport.close()
                        transport = None
