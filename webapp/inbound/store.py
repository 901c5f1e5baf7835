"""Taking in a message heard back: stored first (committed), then classified and acted
on. Whatever the way it came (SMTP, LMTP, a pipe, a file, IMAP), it goes through here.
"""

import contextlib
import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import cast

from sqlalchemy import Engine, insert, update
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from ..db import rowcount, utcnow
from ..mailout.verp import Verp
from .acting import act, act_for_relay
from .classify import classify
from .models import HookToken, InboundMessage
from .report import Report

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
        engine = cast(Engine, session.get_bind())  # sessions are bound to an engine
    with engine.connect() as connection:
        # The app's SQLite runs synchronous=NORMAL: a commit survives the process, not a
        # power cut. The MTA forgets a message once we answer 250, so this commit waits
        # for the disk, as the MTA's own queue file did. On this one connection, set
        # back before it returns to the pool.
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            connection.exec_driver_sql("PRAGMA synchronous=FULL")
        try:
            message_id = connection.execute(
                _NEW_MESSAGE,
                {
                    "received_at": utcnow(),
                    "source": source,
                    "envelope_from": (envelope_from or "")[:320] or None,
                    "recipient": (recipient or "")[:320] or None,
                    "size": len(raw),
                    "raw": raw,
                },
            ).scalar_one()
            connection.commit()
        finally:
            if sqlite:
                with contextlib.suppress(SQLAlchemyError):  # a failed commit says why
                    connection.rollback()
                    connection.exec_driver_sql("PRAGMA synchronous=NORMAL")
        return message_id


_NEW_MESSAGE = insert(InboundMessage).returning(InboundMessage.id)


def handle(sessions: sessionmaker[Session], config: Mapping, message_id: int) -> InboundMessage:
    """Classify a stored message and act on it, in one transaction; what it was and what
    was done are recorded on it. Never raises for the message's sake: a failure is
    recorded as the action, the message stays for staff to see. A message handled
    before is left as it is."""
    verp = Verp.from_config(config)
    with sessions() as session:
        # Locked (on PostgreSQL): two servers starting at once both find a message left
        # unhandled; the second waits, then finds it handled.
        message = session.get_one(InboundMessage, message_id, with_for_update=True)
        if message.kind is not None:  # handled already
            session.expunge(message)
            return message
        report = classify(message.raw or b"", message.recipient, verp, config["MAIL_FROM"])
        try:
            act(session, message, report, config, verp)
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


class UsedBefore(Exception):
    """A relay's one-time token came a second time with another event: a replay."""


def take_in_event(
    sessions: sessionmaker[Session],
    config: Mapping,
    relay: str,
    event_id: str | None,
    report: Report,
    raw: bytes,
    once: str | None = None,
) -> InboundMessage | None:
    """A relay's verified webhook event: stored under its event id and acted on in one
    transaction, so a process killed in between leaves nothing and the relay's retry
    acts. None when that event was taken in before (relays retry what they think
    failed). ``once``: the request's one-time token, recorded in the same transaction
    (UsedBefore if it was, for another event)."""
    fields = {
        "source": f"hook:{relay}"[:32],
        "external_id": clean(event_id or "")[:200] or None,
        "recipient": clean(report.address or "")[:320] or None,
        "size": len(raw),
        "raw": raw,
    }
    with sessions() as session:
        message = InboundMessage(**fields)
        session.add(message)
        try:
            session.flush()  # the unique event id decides between a retry and a first
        except IntegrityError:
            session.rollback()
            return None
        _record_once(session, relay, once)
        try:
            act_for_relay(session, message, report, config, Verp.from_config(config), relay)
            session.commit()
        except Exception as exc:  # noqa: BLE001  recorded, and logged with its traceback
            session.rollback()
            if isinstance(exc, OperationalError | InterfaceError):
                raise  # the database is away: nothing was kept, the relay tries again
            log.exception("webhook event %s of %s: acting on it failed", event_id, relay)
            message = InboundMessage(
                **fields,
                kind=report.kind.value,
                action=f"failed: {type(exc).__name__}: {exc}"[:500],
            )
            session.add(message)
            try:
                session.flush()
            except IntegrityError:  # a retry took it in meanwhile
                session.rollback()
                return None
            _record_once(session, relay, once)
            session.commit()
        session.refresh(message)
        session.expunge(message)
        return message


def record_once(sessions: sessionmaker[Session], relay: str, once: str) -> None:
    """Record a request's one-time token when it carried no event to store with it."""
    with sessions() as session:
        _record_once(session, relay, once)
        session.commit()


def _record_once(session: Session, relay: str, once: str | None) -> None:
    if once is None:
        return
    session.add(HookToken(relay=relay, token=once))
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise UsedBefore from None


def clean(value: str) -> str:
    """``value`` without what JSON allows and the database refuses: NUL characters
    (PostgreSQL) and lone surrogates (not UTF-8). Each is replaced, not dropped, so that
    an address with one stays invalid instead of becoming some reader's."""
    return value.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


def drop_old_raw(sessions: sessionmaker[Session], keep_days: int) -> int:
    """Drop the raw bytes of messages older than ``keep_days``; what they were stays."""
    cutoff = utcnow() - timedelta(days=keep_days)
    with sessions() as session:
        dropped = rowcount(
            session.execute(
                update(InboundMessage)
                .where(InboundMessage.received_at < cutoff, InboundMessage.raw.is_not(None))
                .values(raw=None)
            )
        )
        session.commit()
        return dropped
