"""One SMTP connection's worth of sending an issue: claim, send, record; and the policy
for what the relay answers (4xx deferral, 5xx suppression, lost connections, errors in
a row that pause the send).

Part of the sending core: a Sender takes an engine, a transport, the issue's merge
template and plain settings, never the app, so each forked sender process runs it
without Flask and its rules are tested without processes.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from emails.addresses import envelope_address
from emails.reasons import Fault, fault, reason_of
from emails.transport import DeliveryError, Transport

from ..db import utcnow
from ..mailout.journal import Journal, fold_journals
from ..mailout.models import DeliveryStatus
from ..mailout.senders import sender_name
from ..subscribers.suppression import Rules
from .mail import IssueMail
from .queue import Claimed, claim, counts, next_due, release_claims, renew
from .results import Bounce, Result, record

# Messages between two commits of results: a batch's worth. With the journal a
# kill -9 loses none of them; without one (or when the machine goes down) they are
# sent again. Every 10, four senders on SQLite waited on each other's commits: the
# send was 20 % slower (4,343 against 5,605 msg/s, bench/send_bench.py's setup).
RECORD_EVERY = 100
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
    lease: int = 300  # seconds a claim holds unless renewed; renewed every third of it
    batch: int = 100
    journal: Path | None = None  # folder of the senders' journals; None: no journal
    bounces: Rules = Rules()  # how a refused address's bounces add up

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
            "bounces": Rules.from_config(config),
        }
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**values)


@dataclass
class SenderReport:
    """What one sender recorded, and why it stopped early if it did.

    The other counts are the database's (they include other senders' work).
    """

    sent: int = 0
    paused: str | None = None  # the last error, when errors in a row paused the send


class Sender:
    """One SMTP connection's worth of sending: claim, send, record, until none is left.

    Results are committed in groups (``RECORD_EVERY``), each accepted message
    noted in the sender's journal first (see ``journal``). The claims it holds are
    renewed every third of the lease while it works, so no other sender takes back
    a batch that takes longer than the lease. Errors in a row are held
    back: a success after them shows the relay works, and they are recorded; if they
    reach ``pause_after`` the relay is the problem, the send pauses, and their readers
    go back to the queue untouched (no address is suppressed for a relay's fault).
    """

    def __init__(
        self,
        engine: Engine,
        issue_id: int,
        transport: Transport,
        mail: IssueMail,
        settings: SendSettings,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        self.engine = engine
        self.sessions: sessionmaker[Session] = sessionmaker(engine, expire_on_commit=False)
        self.issue_id = issue_id
        self.mail = mail
        self.transport = transport
        self.settings = settings
        self.should_stop = should_stop
        self.name = sender_name()
        self.report = SenderReport()
        self._results: list[Result] = []
        self._held: list[tuple[Claimed, Result]] = []
        self._errors_in_row = 0
        self._delivered = False  # a message accepted in this run: the relay works
        self._recorded_at = time.monotonic()
        self._renewed_at = time.monotonic()
        self._next_slot = 0.0
        self._journal: Journal | None = None

    def run(self) -> SenderReport:
        """Send until nothing is due, the send is paused, or ``should_stop()`` says so."""
        if self.settings.journal is not None:
            self._journal = Journal(self.settings.journal, f"issue-{self.issue_id}", self.name)
        recorded = False
        try:
            with self.transport:
                self._run()
            recorded = True
        finally:
            if self._journal is not None:
                self._journal.close(recorded)
        return self.report

    def _run(self) -> None:
        while not self.should_stop() and self.report.paused is None:
            with self.sessions() as session:
                batch = claim(
                    session,
                    self.issue_id,
                    self.name,
                    self.settings.batch,
                    self.settings.lease,
                    spread=self.settings.connections,
                )
                if not batch and self._take_back(session):
                    continue  # a sender died holding these: they are due now
                wait = None if batch else next_due(session, self.issue_id)
            if not batch:
                if wait is None or self._held:  # nothing left to try the relay with
                    break
                # Others hold the last claims: look again soon, so that the send
                # ends when they do (a second's wait here was a quarter of a
                # 20,000-reader send).
                self._sleep(min(wait, 0.1))
                continue
            for index, delivery in enumerate(batch):
                if self.should_stop() or self.report.paused is not None:
                    self._results += [_back(claimed) for claimed in batch[index:]]
                    break
                held = self._renew()
                if held is not None and delivery.id not in held:
                    # The lease ran out (a stopped process, one attempt longer than
                    # two thirds of the lease): this reader is another sender's now.
                    continue
                self._deliver(delivery)
                if (
                    len(self._results) >= RECORD_EVERY
                    or time.monotonic() - self._recorded_at > RECORD_SECONDS
                ):
                    self._record()
            self._settle_held(final=False)
            self._record()
        self._settle_held(final=True)
        self._record()

    def _take_back(self, session: Session) -> bool:
        """Put back the claims of senders whose lease ran out, after recording what
        this host's dead senders' journals say they sent."""
        if self.settings.journal is not None:
            fold_journals(session, self.settings.journal, self.issue_id, all_dead=False)
        return bool(release_claims(session, self.issue_id, expired_only=True))

    def _renew(self) -> set[int] | None:
        """Renew this sender's claims when a third of the lease has passed since the
        last time; the ids it still holds then, else None."""
        if time.monotonic() - self._renewed_at < self.settings.lease / 3:
            return None
        self._renewed_at = time.monotonic()
        with self.engine.begin() as connection:
            return renew(connection, self.issue_id, self.name, self.settings.lease)

    def _settle_held(self, final: bool) -> None:
        """Decide the errors held back since the last success, at the end of a batch.

        Once this sender has delivered anything, the relay works: the errors are the
        addresses', and they are recorded before claiming again (their readers may be
        due for a retry, and nobody else may claim them meanwhile). Before any success
        nothing says whose fault they are: they stay held into the next batch, where
        errors in a row go on counting, and if the send ends there (``final``), their
        readers go back untouched and the send pauses on the last error, unless other
        connections delivered some of this issue. Stopped early
        (Ctrl-C, or another sender paused the send), they go back untouched too. No
        address is ever suppressed for what may be the relay's fault.
        """
        if not self._held:
            return
        if self.should_stop() or self.report.paused is not None:
            held, self._held = self._held, []
            self._results += [_back(claimed) for claimed, _ in held]
        elif self._delivered or (final and self._others_delivered()):
            held, self._held = self._held, []
            self._results += [result for _, result in held]
        elif final:
            held, self._held = self._held, []
            self._results += [_back(claimed) for claimed, _ in held]
            self.report.paused = held[-1][1].error

    def _others_delivered(self) -> bool:
        # The other connections' successes show the relay works just as well.
        with self.sessions() as session:
            return counts(session, self.issue_id)[DeliveryStatus.SENT] > 0

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
                self.transport.send(message, self.mail.envelope_sender(delivery.id), [recipient])
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
            if self._journal is not None:
                self._journal.accepted(delivery.id)
            self._errors_in_row = 0
            self._delivered = True
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
            # Whose fault: the address (gone), the mailbox, or us (a block, a filter).
            # A refusal of the message itself (after DATA) is never the address's.
            command = "rcpt" if exc.recipient else "data"
            reply = str(exc.code) if exc.code else None
            reason = reason_of(None, reply, str(exc), "failed", command)
            how = {Fault.ADDRESS: "hard", Fault.MAILBOX: "soft"}.get(fault(reason), "refused")
            bounce = Bounce(delivery.subscriber_id, how, reason, reply)
            return Result(delivery.id, DeliveryStatus.FAILED, attempts, error, bounce=bounce)
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
            self._renew()  # a long wait (a slow pace, a relay away) keeps the claims

    def _record(self) -> None:
        self._recorded_at = time.monotonic()
        if not self._results:
            return
        results, self._results = self._results, []
        with self.engine.begin() as connection:
            record(connection, self.name, results, self.issue_id, self.settings.bounces)
        if self._journal is not None:
            self._journal.recorded()
        self.report.sent += sum(result.status is DeliveryStatus.SENT for result in results)


def _back(delivery: Claimed) -> Result:
    """A claimed delivery returned to the queue as it was."""
    return Result(delivery.id, DeliveryStatus.QUEUED, delivery.attempts)
