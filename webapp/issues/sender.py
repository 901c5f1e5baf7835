"""Sending an issue to its readers: fast, resumable, and each reader's copy once.

A send starts by taking the list: one ``deliveries`` row per confirmed subscriber, in
one statement, together with the issue's ``sent_at``. Sender processes, one per SMTP
connection, then claim batches of rows, send, and record each result. The records
are what make a send resumable: a run of the same command sends only what is not
recorded as sent. A sender commits its results at least every ``RECORD_EVERY``
messages, so a ``kill -9`` can leave at most that many (plus the one in flight) per
connection sent but not recorded; those few are sent again on resume.
"""

import os
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import Flask
from sqlalchemy import and_, bindparam, func, insert, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from emails.addresses import envelope_address
from emails.transport import DeliveryError, Transport

from .db import session_factory, utcnow
from .digests import IssueMail
from .models import Delivery, DeliveryStatus, Issue, Status, Subscriber, Subscription

RECORD_EVERY = 10  # messages between two commits of results: the kill -9 bound
RECORD_SECONDS = 0.5  # and at least this often, when sending is slow
RECONNECT_WAIT = (0.5, 5.0)  # first and longest wait before trying a lost relay again


@dataclass(frozen=True)
class SendSettings:
    """How one sender works; from the configuration and the command's options."""

    connections: int = 4
    rate: float = 0  # messages per second, all connections together; 0: no limit
    retry_delay: float = 60
    max_attempts: int = 5
    pause_after: int = 10
    lease: int = 300
    batch: int = 100

    @classmethod
    def from_config(cls, config, **overrides) -> "SendSettings":
        """Settings from ``SEND_*``; options given on the command line win."""
        values = {
            "connections": config["SEND_CONNECTIONS"],
            "rate": config["SEND_RATE"],
            "retry_delay": config["SEND_RETRY_DELAY"],
            "max_attempts": config["SEND_MAX_ATTEMPTS"],
            "pause_after": config["SEND_PAUSE_AFTER"],
            "lease": config["SEND_LEASE"],
        }
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**values)


def eligible_readers(issue: Issue):
    """Select the confirmed, not suppressed subscriptions of the issue's newsletter."""
    return (
        select(Subscription.subscriber_id, Subscription.id)
        .join(Subscription.subscriber)
        .where(
            Subscription.newsletter_id == issue.newsletter_id,
            Subscription.status == Status.CONFIRMED,
            Subscriber.suppressed_at.is_(None),
        )
    )


def take_list(session: Session, issue: Issue) -> int:
    """Make the issue's deliveries, once: the readers confirmed at this moment.

    Marks the issue sent (its web version becomes public) in the same transaction.
    Returns how many deliveries were made; 0 when the list was taken before.
    """
    won = session.execute(
        update(Issue)
        .where(Issue.id == issue.id, Issue.sent_at.is_(None))
        .values(sent_at=utcnow())
        .execution_options(synchronize_session=False)
    ).rowcount
    if not won:
        session.rollback()
        return 0
    readers = eligible_readers(issue).subquery()
    session.execute(
        insert(Delivery).from_select(
            ["issue_id", "subscriber_id", "subscription_id", "status", "attempts"],
            select(
                bindparam("issue", issue.id),
                readers.c.subscriber_id,
                readers.c.id,
                bindparam("queued", DeliveryStatus.QUEUED.value),
                bindparam("zero", 0),
            ),
        )
    )
    # Counted, not taken from rowcount: drivers differ on INSERT … SELECT.
    made = session.scalar(
        select(func.count()).select_from(Delivery).where(Delivery.issue_id == issue.id)
    )
    session.commit()
    session.refresh(issue)
    return made


def release_claims(session: Session, issue_id: int, *, expired_only: bool) -> int:
    """Put claimed deliveries back in the queue: those of a sender that died.

    With ``expired_only`` only claims whose lease has ended (other senders may be alive).
    """
    conditions = [Delivery.issue_id == issue_id, Delivery.status == DeliveryStatus.SENDING]
    if expired_only:
        conditions.append(Delivery.claimed_until < utcnow())
    released = session.execute(
        update(Delivery)
        .where(*conditions)
        .values(status=DeliveryStatus.QUEUED, claimed_by=None, claimed_until=None)
        .execution_options(synchronize_session=False)
    ).rowcount
    session.commit()
    return released


def release_dead_local_claims(session: Session, issue_id: int) -> int:
    """Put back the claims of senders on this host whose process is gone (kill -9).

    Claims of other hosts wait for their lease: from here nobody can tell whether
    those senders are alive.
    """
    prefix = f"{_host()}:"
    names = session.scalars(
        select(Delivery.claimed_by)
        .where(
            Delivery.issue_id == issue_id,
            Delivery.status == DeliveryStatus.SENDING,
            Delivery.claimed_by.startswith(prefix),
        )
        .distinct()
    ).all()
    dead = [name for name in names if not _alive(int(name.split(":")[1]))]
    if not dead:
        session.rollback()
        return 0
    released = session.execute(
        update(Delivery)
        .where(Delivery.status == DeliveryStatus.SENDING, Delivery.claimed_by.in_(dead))
        .values(status=DeliveryStatus.QUEUED, claimed_by=None, claimed_until=None)
        .execution_options(synchronize_session=False)
    ).rowcount
    session.commit()
    return released


def _host() -> str:
    return socket.gethostname()[:40].replace(":", "-")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            # A killed sender whose parent died too may linger unreaped: a zombie is dead.
            return stat.read().rpartition(b")")[2].split()[0] != b"Z"
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # someone else's process
        return True


def counts(session: Session, issue_id: int) -> dict[DeliveryStatus, int]:
    """How many deliveries of the issue are in each state."""
    rows = session.execute(
        select(Delivery.status, func.count())
        .where(Delivery.issue_id == issue_id)
        .group_by(Delivery.status)
    )
    found = {status: 0 for status in DeliveryStatus}
    found.update({DeliveryStatus(status): number for status, number in rows})
    return found


def failures(session: Session, issue_id: int, limit: int = 10) -> list[tuple[str, str]]:
    """The first failed deliveries: address and the relay's reason."""
    rows = session.execute(
        select(Subscriber.email, Delivery.last_error)
        .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        .where(Delivery.issue_id == issue_id, Delivery.status == DeliveryStatus.FAILED)
        .order_by(Delivery.id)
        .limit(limit)
    )
    return [(email, error or "") for email, error in rows]


@dataclass
class Claimed:
    """One claimed delivery with what its message needs."""

    id: int
    attempts: int
    subscriber_id: int
    subscription_id: int
    email: str
    secret: str
    sendable: bool  # still confirmed and not suppressed


def claim(session: Session, issue_id: int, sender: str, settings: SendSettings) -> list[Claimed]:
    """Claim up to ``settings.batch`` deliveries that are due, for ``sender``.

    One UPDATE over a ``FOR UPDATE SKIP LOCKED`` selection: senders on PostgreSQL
    take disjoint batches without waiting for each other (SQLite has one writer).
    """
    now = utcnow()
    # Only queued rows, so the (issue, status, id) index finds them at once however
    # many are already sent; claims of dead senders are put back by release_claims.
    due = (
        select(Delivery.id)
        .where(
            Delivery.issue_id == issue_id,
            Delivery.status == DeliveryStatus.QUEUED,
            or_(Delivery.next_attempt_at.is_(None), Delivery.next_attempt_at <= now),
        )
        .order_by(Delivery.id)
        .limit(settings.batch)
        .with_for_update(skip_locked=True)
    )
    ids = session.scalars(
        update(Delivery)
        .where(Delivery.id.in_(due.scalar_subquery()))
        .values(
            status=DeliveryStatus.SENDING,
            claimed_by=sender,
            claimed_until=now + timedelta(seconds=settings.lease),
        )
        .returning(Delivery.id)
        .execution_options(synchronize_session=False)
    ).all()
    session.commit()
    if not ids:
        return []
    rows = session.execute(
        select(
            Delivery.id,
            Delivery.attempts,
            Subscriber.id,
            Subscription.id,
            Subscriber.email,
            Subscriber.secret,
            and_(Subscription.status == Status.CONFIRMED, Subscriber.suppressed_at.is_(None)),
        )
        .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
        .join(Subscription, Subscription.id == Delivery.subscription_id)
        .where(Delivery.id.in_(ids))
        .order_by(Delivery.id)
    )
    claimed = [Claimed(*row) for row in rows]
    session.rollback()  # a read; end it so no snapshot is held while sending
    return claimed


def next_due(session: Session, issue_id: int) -> float | None:
    """Seconds until a queued delivery is due; None when nothing is left to send.

    Deliveries claimed by another sender count as left: they come back if it dies.
    """
    now = utcnow()
    queued, waiting, first_retry = session.execute(
        select(
            func.count(), func.count(Delivery.next_attempt_at), func.min(Delivery.next_attempt_at)
        ).where(Delivery.issue_id == issue_id, Delivery.status == DeliveryStatus.QUEUED)
    ).one()
    lease_end = session.scalar(
        select(func.min(Delivery.claimed_until)).where(
            Delivery.issue_id == issue_id, Delivery.status == DeliveryStatus.SENDING
        )
    )
    session.rollback()
    if queued > waiting:
        return 0.0
    moments = [moment for moment in (first_retry, lease_end) if moment is not None]
    if not moments:
        return None
    return max(0.0, (min(moments) - now).total_seconds())


@dataclass
class Result:
    """What became of one claimed delivery, to be recorded."""

    id: int
    status: DeliveryStatus
    attempts: int
    error: str | None = None
    next_attempt_at: datetime | None = None
    suppress: int | None = None  # subscriber id to suppress (a 5xx for the recipient)


@dataclass
class SenderReport:
    """What one sender recorded, and why it stopped early if it did.

    The other counts are the database's (they include other senders' work).
    """

    sent: int = 0
    paused: str | None = None  # the last error, when errors in a row paused the send


class Sender:
    """One SMTP connection's worth of sending: claim, send, record, until none is left.

    Results are committed in small groups (``RECORD_EVERY``). Errors in a row are held
    back: a success after them shows the relay works, and they are recorded; if they
    reach ``pause_after`` the relay is the problem, the send pauses, and their readers
    go back to the queue untouched (no address is suppressed for a relay's fault).
    """

    def __init__(
        self,
        app: Flask,
        issue_id: int,
        transport: Transport,
        settings: SendSettings,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        self.sessions: sessionmaker[Session] = session_factory(app)
        self.issue_id = issue_id
        self.transport = transport
        self.settings = settings
        self.should_stop = should_stop
        # host:pid:random: a sender on the same host can tell when this one died.
        self.name = f"{_host()}:{os.getpid()}:{random.getrandbits(24):06x}"
        self.report = SenderReport()
        self._results: list[Result] = []
        self._held: list[tuple[Claimed, Result]] = []
        self._errors_in_row = 0
        self._recorded_at = time.monotonic()
        self._next_slot = 0.0
        with self.sessions() as session:
            self.mail = IssueMail(session.get_one(Issue, issue_id))

    def run(self) -> SenderReport:
        """Send until nothing is due, the send is paused, or ``should_stop()`` says so."""
        with self.transport:
            while not self.should_stop() and self.report.paused is None:
                with self.sessions() as session:
                    batch = claim(session, self.issue_id, self.name, self.settings)
                    if not batch and release_claims(session, self.issue_id, expired_only=True):
                        continue  # a sender died holding these: they are due now
                    wait = None if batch else next_due(session, self.issue_id)
                if not batch:
                    if wait is None:
                        break
                    self._sleep(min(wait, 1.0))
                    continue
                for index, delivery in enumerate(batch):
                    if self.should_stop() or self.report.paused is not None:
                        self._results += [_back(claimed) for claimed in batch[index:]]
                        break
                    self._deliver(delivery)
                    if (
                        len(self._results) >= RECORD_EVERY
                        or time.monotonic() - self._recorded_at > RECORD_SECONDS
                    ):
                        self._record()
                # A batch's errors are recorded before claiming again: their readers
                # may be due for a retry, and nobody else may claim them meanwhile.
                self._results += [result for _, result in self._held]
                self._held = []
                self._record()
        return self.report

    def _deliver(self, delivery: Claimed) -> None:
        if not delivery.sendable:
            self._results.append(Result(delivery.id, DeliveryStatus.SKIPPED, delivery.attempts))
            return
        try:
            recipient = envelope_address(delivery.email)
            message = self.mail.for_reader(
                recipient, delivery.subscription_id, delivery.subscriber_id, delivery.secret
            )
        except ValueError as exc:  # an address stored before today's rules, say
            error = f"cannot make the message: {exc}"[:500]
            self._results.append(
                Result(delivery.id, DeliveryStatus.FAILED, delivery.attempts, error)
            )
            return
        wait = RECONNECT_WAIT[0]
        while True:
            self._pace()
            if self.should_stop():  # asked to stop while waiting for its turn
                self._results.append(_back(delivery))
                return
            try:
                self.transport.send(message, self.mail.sender, [recipient])
            except DeliveryError as exc:
                if self._error(delivery, exc):
                    return
                # The relay cannot be reached: wait, then try this reader again.
                self._sleep(wait)
                wait = min(wait * 2, RECONNECT_WAIT[1])
                if self.should_stop():
                    self._results.append(_back(delivery))
                    return
                continue
            self._errors_in_row = 0
            self._results += [result for _, result in self._held]
            self._held = []
            self._results.append(Result(delivery.id, DeliveryStatus.SENT, delivery.attempts + 1))
            return

    def _error(self, delivery: Claimed, exc: DeliveryError) -> bool:
        """Note a failed attempt; True when done with this reader, False to try again."""
        self._errors_in_row += 1
        unreachable = exc.code is None
        if not unreachable:
            self._held.append((delivery, self._outcome(delivery, exc)))
        if self._errors_in_row >= self.settings.pause_after:
            self.report.paused = str(exc)
            back = {claimed.id: claimed for claimed, _ in self._held}
            back[delivery.id] = delivery
            self._results += [_back(claimed) for claimed in back.values()]
            self._held = []
            return True
        return not unreachable

    def _outcome(self, delivery: Claimed, exc: DeliveryError) -> Result:
        attempts = delivery.attempts + 1
        error = str(exc)[:500]
        if exc.permanent:
            suppress = delivery.subscriber_id if exc.recipient else None
            return Result(delivery.id, DeliveryStatus.FAILED, attempts, error, suppress=suppress)
        if attempts >= self.settings.max_attempts:
            error = f"gave up after {attempts} attempts: {error}"[:500]
            return Result(delivery.id, DeliveryStatus.FAILED, attempts, error)
        delay = self.settings.retry_delay * 2 ** (attempts - 1)
        retry_at = utcnow() + timedelta(seconds=delay)
        return Result(delivery.id, DeliveryStatus.QUEUED, attempts, error, retry_at)

    def _pace(self) -> None:
        # Each connection takes its share of the rate.
        if not self.settings.rate:
            return
        now = time.monotonic()
        self._next_slot = max(self._next_slot + self.settings.connections / self.settings.rate, now)
        if self._next_slot > now:
            self._sleep(self._next_slot - now)

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self.should_stop() and (left := end - time.monotonic()) > 0:
            time.sleep(min(left, 0.2))

    def _record(self) -> None:
        self._recorded_at = time.monotonic()
        if not self._results:
            return
        results, self._results = self._results, []
        now = utcnow()
        rows = [
            {
                "b_id": result.id,
                "b_owner": self.name,
                "b_status": result.status.value,
                "b_attempts": result.attempts,
                "b_error": result.error,
                "b_next": result.next_attempt_at,
                "b_sent": now if result.status is DeliveryStatus.SENT else None,
            }
            for result in results
        ]
        suppressed = [
            {"b_id": result.suppress, "b_at": now, "b_reason": result.error}
            for result in results
            if result.suppress is not None
        ]
        with self.sessions.kw["bind"].begin() as connection:
            connection.execute(_RECORD, rows)
            if suppressed:
                connection.execute(_SUPPRESS, suppressed)
        self.report.sent += sum(result.status is DeliveryStatus.SENT for result in results)


_deliveries, _subscribers = Delivery.__table__, Subscriber.__table__
# Built once: a send records a few thousand times a second.
_RECORD = (
    _deliveries.update()
    # Only rows this sender still holds: after a lease ran out, another owns them.
    .where(_deliveries.c.id == bindparam("b_id"), _deliveries.c.claimed_by == bindparam("b_owner"))
    .values(
        status=bindparam("b_status"),
        attempts=bindparam("b_attempts"),
        last_error=func.coalesce(bindparam("b_error"), _deliveries.c.last_error),
        next_attempt_at=bindparam("b_next"),
        sent_at=bindparam("b_sent"),
        claimed_by=None,
        claimed_until=None,
    )
)
_SUPPRESS = (
    _subscribers.update()
    .where(_subscribers.c.id == bindparam("b_id"))
    .values(suppressed_at=bindparam("b_at"), suppressed_reason=bindparam("b_reason"))
)


def _back(delivery: Claimed) -> Result:
    """A claimed delivery returned to the queue as it was."""
    return Result(delivery.id, DeliveryStatus.QUEUED, delivery.attempts)
