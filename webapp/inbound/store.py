"""Taking in a message heard back: stored first (committed), then classified and acted
on. Whatever the way it came (SMTP, LMTP, a pipe, a file, IMAP), it goes through here.
"""

import logging
from collections.abc import Mapping
from datetime import timedelta

from sqlalchemy import text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ..db import utcnow
from ..models import InboundMessage
from .acting import act, act_for_relay
from .classify import classify
from .report import Report
from .verp import Verp

log = logging.getLogger(__name__)


def store(
    sessions: sessionmaker[Session],
    raw: bytes,
    *,
    source: str,
    envelope_from: str | None = None,
    recipient: str | None = None,
) -> int:
    """Keep ``raw`` durably (committed, and on SQLite synced to disk) before anything
    else; its id."""
    with sessions() as session:
        # The app's SQLite runs synchronous=NORMAL: a commit survives the process, not a
        # power cut. The MTA forgets a message once we answer 250, so this commit waits
        # for the disk, as the MTA's own queue file did.
        sqlite = session.get_bind().dialect.name == "sqlite"
        if sqlite:
            session.execute(text("PRAGMA synchronous=FULL"))
        message = InboundMessage(
            source=source,
            envelope_from=(envelope_from or "")[:320] or None,
            recipient=(recipient or "")[:320] or None,
            size=len(raw),
            raw=raw,
        )
        session.add(message)
        try:
            session.commit()
        finally:
            if sqlite:
                session.execute(text("PRAGMA synchronous=NORMAL"))  # the pooled default
        return message.id


def handle(sessions: sessionmaker[Session], config: Mapping, message_id: int) -> InboundMessage:
    """Classify a stored message and act on it, in one transaction; what it was and what
    was done are recorded on it. Never raises for the message's sake: a failure is
    recorded as the action, the message stays for staff to see."""
    verp = Verp.from_config(config)
    with sessions() as session:
        message = session.get_one(InboundMessage, message_id)
        report = classify(message.raw or b"", message.recipient, verp, config["MAIL_FROM"])
        return _acted(session, message, report, lambda: act(session, message, report, config, verp))


def take_in(
    sessions: sessionmaker[Session],
    config: Mapping,
    raw: bytes,
    *,
    source: str,
    envelope_from: str | None = None,
    recipient: str | None = None,
) -> InboundMessage:
    """Store, then handle: the whole way of one message."""
    message_id = store(
        sessions, raw, source=source, envelope_from=envelope_from, recipient=recipient
    )
    return handle(sessions, config, message_id)


def take_in_event(
    sessions: sessionmaker[Session],
    config: Mapping,
    relay: str,
    event_id: str | None,
    report: Report,
    raw: bytes,
) -> InboundMessage | None:
    """A relay's verified webhook event: stored (committed) under its event id, then
    acted on, as a message is. None when that event was taken in before (relays retry
    what they think failed)."""
    with sessions() as session:
        message = InboundMessage(
            source=f"hook:{relay}"[:32],
            external_id=(event_id or None) and event_id[:200],
            recipient=(report.address or "")[:320] or None,
            size=len(raw),
            raw=raw,
        )
        session.add(message)
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            return None
        verp = Verp.from_config(config)
        return _acted(
            session,
            message,
            report,
            lambda: act_for_relay(session, message, report, config, verp, relay),
        )


def _acted(session: Session, message: InboundMessage, report: Report, acting) -> InboundMessage:
    """Run ``acting`` and commit; a failure is rolled back and recorded as the action
    (and logged with its traceback), the message kept for staff. Never raises for the
    message's sake."""
    message_id = message.id
    try:
        acting()
        session.commit()
    except Exception as exc:  # noqa: BLE001  recorded, and logged with its traceback
        session.rollback()
        log.exception("inbound message %s: acting on it failed", message_id)
        message = session.get_one(InboundMessage, message_id)
        message.kind = report.kind.value
        message.action = f"failed: {type(exc).__name__}: {exc}"[:500]
        session.commit()
    session.refresh(message)
    session.expunge(message)
    return message


def drop_old_raw(sessions: sessionmaker[Session], keep_days: int) -> int:
    """Drop the raw bytes of messages older than ``keep_days``; what they were stays."""
    cutoff = utcnow() - timedelta(days=keep_days)
    with sessions() as session:
        dropped = session.execute(
            update(InboundMessage)
            .where(InboundMessage.received_at < cutoff, InboundMessage.raw.is_not(None))
            .values(raw=None)
        ).rowcount
        session.commit()
        return dropped
