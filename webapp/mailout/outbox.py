"""Delivering the transactional outbox: claim, send, record.

Messages are claimed in groups with a lease by one conditional UPDATE, so any number
of threads, processes or hosts may drain the same outbox and each message is claimed
by one pass at a time; what the relay accepted is noted in the pass's journal before
its group is recorded (see :func:`deliver_queued` for what a killed pass may repeat).
"""

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy import BindParameter, bindparam, insert, literal, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from emails.transport import DeliveryError, Transport

from ..db import UTCDateTime, utcnow
from ..models import EventKind, Subscription, SubscriptionEvent
from .journal import Journal, dead_journals
from .models import OutboxMail, OutboxStatus
from .senders import sender_name
from .verp import Verp

log = logging.getLogger(__name__)
# Told of a message the relay refused for its recipient (see deliver_queued).
Refused = Callable[[Session, OutboxMail, DeliveryError], None]

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
    journal: Path | None = None,
    on_refused: Refused | None = None,
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

    Messages are claimed CLAIM_AT_ONCE to a statement. Without a ``journal`` folder
    each one sent is recorded by its own commit, and only the message in flight when
    the process is killed can go out twice. With one, each is noted in this pass's
    journal as the relay accepts it and recorded with up to RECORD_EVERY others; the
    passes of this host fold a killed pass's journal (before each look at the queue)
    and take its other claims back at once, so again only the message in flight can
    go out twice. Passes on other hosts cannot read it: if none on its host runs
    within the lease, they may send again what it had sent and not recorded.

    ``on_refused`` hears of each message the relay refused for its recipient, in the
    transaction that records it: what a refusal means for the reader is the list's
    business (``subscribers.suppression.refused_by_relay``), not the mail's.
    """
    report = DeliveryReport()
    run = _Pass(sessions, transport, lease, backoff, due_only, verp, journal, report, on_refused)
    with contextlib.nullcontext() if keep_open else transport:
        try:
            while True:
                if journal is not None:  # before each look: a pass may last a wave
                    with sessions() as session:
                        fold_outbox_journals(session, journal)
                with sessions() as session:
                    ids = session.scalars(_pending(due_only).limit(batch)).all()
                if not ids:
                    return report
                for start in range(0, len(ids), CLAIM_AT_ONCE):
                    if stopping is not None and stopping():
                        return report
                    if not run.send(ids[start : start + CLAIM_AT_ONCE], stopping):
                        return report
        finally:
            run.close()


# Messages claimed by one statement: claiming each alone cost a commit a message.
# A send starts only in the first quarter of the lease and its deadline is half of it,
# so a group is sent and recorded with a quarter of the lease to spare; a slow relay
# makes a pass claim again, never outlive its claims.
CLAIM_AT_ONCE = 20
# Messages sent between two commits of their results, with a journal (a commit each
# was a fifth of the worker's time in a wave of sign-ups).
RECORD_EVERY = 20
JOB = "outbox"  # the outbox senders' journals: outbox.HOST.PID.RANDOM.journal
# The names of this process's passes that have a journal open (several threads of one
# process may each run a pass): another pass of the process folds only the others'.
_OPEN: set[str] = set()
_SAID: set[str] = set()  # journal folders that could not be used, said once


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
        OutboxMail.id.in_(bindparam("ids", expanding=True)),
        OutboxMail.status == OutboxStatus.QUEUED,
        or_(OutboxMail.claimed_until.is_(None), OutboxMail.claimed_until < NOW),
    ]
    if due_only:
        conditions.append(OutboxMail.next_attempt_at <= NOW)
    return (
        update(OutboxMail)
        .where(*conditions)
        .values(claimed_until=UNTIL, claimed_by=NAME, attempts=OutboxMail.attempts + 1)
        .returning(
            OutboxMail.id,
            OutboxMail.kind,
            OutboxMail.subscription_id,
            OutboxMail.subscriber_id,
            OutboxMail.sender,
            OutboxMail.recipient,
            OutboxMail.message,
            OutboxMail.attempts,
        )
    )


# Built once: each group of messages runs a claim and a record.
NOW = bindparam("now", type_=UTCDateTime)
UNTIL = bindparam("until", type_=UTCDateTime)
NAME: BindParameter[str] = bindparam("name")
IDS = OutboxMail.id.in_(bindparam("ids", expanding=True))
_CLAIMS = {due_only: _claim(due_only) for due_only in (True, False)}
_SENT = (
    update(OutboxMail)
    .where(IDS, OutboxMail.status == OutboxStatus.QUEUED)
    .values(status=OutboxStatus.SENT, sent_at=NOW, claimed_until=None, claimed_by=None, message=b"")
    .returning(OutboxMail.kind, OutboxMail.subscription_id)
)
_NOT_SENT = (
    update(OutboxMail)
    .where(
        OutboxMail.id == bindparam("message_id"),
        OutboxMail.status == OutboxStatus.QUEUED,
        OutboxMail.claimed_by == NAME,  # not one a fold or another pass recorded meanwhile
    )
    .values(
        status=bindparam("new_status"),
        last_error=bindparam("error"),
        next_attempt_at=bindparam("next_attempt", type_=UTCDateTime),
        claimed_until=None,
        claimed_by=None,
    )
)
# Claimed but not tried: free at once, the attempt not counted. Only under the
# pass's own claim.
_RELEASE = (
    update(OutboxMail)
    .where(IDS, OutboxMail.status == OutboxStatus.QUEUED, OutboxMail.claimed_by == NAME)
    .values(claimed_until=None, claimed_by=None, attempts=OutboxMail.attempts - 1)
)


class _Pass:
    """One pass's sending: claims in groups, results recorded in groups (see
    :func:`deliver_queued`)."""

    def __init__(
        self, sessions, transport, lease, backoff, due_only, verp, journal, report, on_refused
    ) -> None:
        self.sessions, self.transport, self.verp = sessions, transport, verp
        self.lease, self.backoff, self.due_only = lease, backoff, due_only
        self.folder, self.report = journal, report
        self.journal: Journal | None = None  # opened before the first claim
        # On its claims and its journal: a pass of this host whose process died is
        # known by it (see fold_outbox_journals).
        self.name = sender_name()
        self.sent: list[int] = []  # ids sent, not yet recorded
        self.on_refused: Refused | None = on_refused

    def send(self, ids: Sequence[int], stopping: Callable[[], bool] | None) -> bool:
        """Claim ``ids`` (those still claimable) and send them; False when the pass
        must end (told to stop, or the relay failed temporarily)."""
        if self.folder is not None and self.journal is None:
            self._open_journal()
        now = utcnow()
        until = now + timedelta(seconds=self.lease)
        started = time.monotonic()
        with self.sessions() as session:
            claimed = session.connection().execute(
                _CLAIMS[self.due_only], {"ids": ids, "now": now, "until": until, "name": self.name}
            )
            claimed = sorted(claimed.all())  # in the queue's order
            session.commit()  # no transaction stays open while the relay is talked to
        tried = 0  # claimed[:tried] were sent, refused, or are in flight
        try:
            for message in claimed:
                stop = stopping is not None and stopping()
                if stop or time.monotonic() - started > self.lease / 4:
                    self._release([m.id for m in claimed[tried:]])
                    return not stop
                tried += 1
                if not self._deliver(message):
                    self._release([m.id for m in claimed[tried:]])
                    return False
        except BaseException:
            # Whatever else ends the pass (Ctrl-C, a full disk, the database): the
            # messages not tried go back at once; one in flight waits out its lease.
            with contextlib.suppress(Exception):
                self._release([m.id for m in claimed[tried:]])
            raise
        self.record()
        return True

    def _open_journal(self) -> None:
        _OPEN.add(self.name)  # before the file is there: not another pass's to fold
        try:
            self.journal = Journal(self.folder, JOB, self.name)
        except OSError as exc:  # mail still goes, a commit a message
            _OPEN.discard(self.name)
            if str(self.folder) not in _SAID:
                _SAID.add(str(self.folder))
                log.warning("outbox: no journal (%s); each message is recorded alone", exc)
            self.folder = None

    def _deliver(self, message) -> bool:
        """Send one claimed message; False if the relay failed temporarily."""
        try:
            sender = self.verp.sender("o", message.id) if self.verp else message.sender
            self.transport.send(message.message, sender, [message.recipient])
        except DeliveryError as exc:
            self._not_sent(message, exc)
            return exc.permanent
        if self.journal is not None:
            self.journal.accepted(message.id)
        self.sent.append(message.id)
        self.report.sent += 1
        if self.journal is None or len(self.sent) >= RECORD_EVERY:
            self.record()
        return True

    def _not_sent(self, message, exc: DeliveryError) -> None:
        error = str(exc)[:500]
        self.report.last_error = error
        if exc.permanent:
            status, next_attempt = OutboxStatus.FAILED, utcnow()
            self.report.failed += 1
        else:
            delay = min(self.backoff * 2 ** (message.attempts - 1), MAX_BACKOFF)
            status, next_attempt = OutboxStatus.QUEUED, utcnow() + timedelta(seconds=delay)
            self.report.retry += 1
        log.warning("outbox message %s not delivered: %s", message.id, exc)
        with self.sessions() as session:
            self._record_sent(session)
            session.connection().execute(
                _NOT_SENT,
                {
                    "message_id": message.id,
                    "name": self.name,
                    "new_status": status,
                    "error": error,
                    "next_attempt": next_attempt,
                },
            )
            if exc.permanent and exc.recipient and self.on_refused is not None:
                self.on_refused(session, message, exc)
            session.commit()
        self._recorded()

    def record(self) -> None:
        """Commit the results of the messages sent since the last time."""
        if self.sent:
            with self.sessions() as session:
                self._record_sent(session)
                session.commit()
            self._recorded()

    def _record_sent(self, session: Session) -> None:
        if self.sent:
            record_sent(session, self.sent, utcnow())

    def _recorded(self) -> None:
        self.sent = []
        if self.journal is not None:
            self.journal.recorded()

    def _release(self, ids: list[int]) -> None:
        self.record()
        if ids:
            with self.sessions() as session:
                session.connection().execute(_RELEASE, {"ids": ids, "name": self.name})
                session.commit()

    def close(self) -> None:
        """Record what was sent; remove the journal once nothing in it is unrecorded."""
        try:
            self.record()
        finally:
            if self.journal is not None:
                self.journal.close(recorded=not self.sent)
                _OPEN.discard(self.name)  # if left (not recorded), the next pass folds it


def record_sent(session: Session, ids: list[int], at) -> int:
    """Record the messages ``ids`` as sent ``at`` in ``session``'s transaction: their
    bytes are not needed again, and a welcome is in its reader's history from then.
    Those already recorded are left as they are; returns how many were not."""
    recorded = session.connection().execute(_SENT, {"ids": ids, "now": at}).all()
    for kind, subscription_id in recorded:
        if kind == "welcome" and subscription_id is not None:
            _welcome_sent(session, subscription_id, at)
    return len(recorded)


def fold_outbox_journals(session: Session, folder: Path) -> int:
    """Record as sent what the journals of this host's dead delivery passes hold, put
    their other claims back in the queue at once, and remove the journals. Returns how
    many messages were recorded.

    Dead: the process is gone (kill -9), or it is this one and the pass ended without
    recording (the database went away)."""
    folded = 0
    for sender, ids in dead_journals(folder, JOB, all_dead=False, open_here=_OPEN):
        for start in range(0, len(ids), 500):  # bounded parameter lists
            folded += record_sent(session, ids[start : start + 500], utcnow())
        session.execute(
            update(OutboxMail)
            .where(OutboxMail.status == OutboxStatus.QUEUED, OutboxMail.claimed_by == sender)
            .values(claimed_until=None, claimed_by=None)
        )
        session.commit()
    if folded:
        log.warning("outbox: %s message(s) a stopped sender had sent, recorded now", folded)
    return folded


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
