"""SQLAlchemy 2.0: the declarative base, the engine, and one session per app context.

Flask is imported only by the three functions that bind the database to an app, so
the parts that run without one (the forked senders of a digest) load without it.

Why these 40 lines and not Flask-SQLAlchemy-Lite (0.2.1, read 2026-12-08): its
engines and session factory are reached through ``current_app`` only, while 14 call
sites hold an app and no context (the worker's jobs and threads, the web server's
outbox thread, the sends) and would each push one; it builds the engine from the
configuration, so the SQLite engine's own parts (writers taking turns on a lock file,
the file created private before SQLite does, the pragmas) would be patched onto its
engine after the fact; and importing it imports Flask, which the sending core never
loads (``tests/test_sender.py``). What it would replace is ``init_app``,
``session_factory``, ``engine`` and ``get_session`` below.
"""

import enum
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, cast

from sqlalchemy import CursorResult, DateTime, Engine, Enum, MetaData, Result, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from emails.transport import private_folder

from .sqlite_writers import TurnTakingConnection

if TYPE_CHECKING:
    from flask import Flask

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Model(DeclarativeBase):
    """Base of every table; the naming convention keeps migrations stable across databases."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator):
    """A timestamp stored in UTC and always read back timezone-aware.

    SQLite keeps no zone, PostgreSQL does; this makes both return the same values.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is not None:
            if value.tzinfo is None:
                raise ValueError("naive datetime given for a UTC column")
            value = value.astimezone(UTC)
            if dialect.name == "sqlite":
                value = value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


def state_enum(states: type[enum.StrEnum]) -> Enum:
    """A column type for a state enum: its values as short strings (no native enum type,
    so adding a state is a plain migration on every database)."""
    return Enum(
        states, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e]
    )


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


def rowcount(result: Result) -> int:
    """The rows an UPDATE or DELETE matched. ``Session.execute`` is typed to return a
    plain Result, but for such a statement it is a CursorResult, which counts them."""
    return cast(CursorResult, result).rowcount


def make_engine(url: str) -> Engine:
    """Create the engine for ``url``; SQLite gets WAL mode and a busy timeout.

    WAL lets readers go on while one writer commits, and the busy timeout makes a
    second writer (another worker process or thread) wait instead of failing; the
    writers of this code wait on a lock file instead (``sqlite_writers``).
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    database = parsed.database or ""
    on_disk = database not in ("", ":memory:")
    connect_args: dict = {"timeout": 15}
    if on_disk:  # writers take turns on a lock file beside it, not by polling
        connect_args["factory"] = TurnTakingConnection
    created = create_engine(url, connect_args=connect_args)

    if on_disk:

        @event.listens_for(created, "do_connect")
        def _private_file(_dialect, _record, _args, _kwargs) -> None:
            _create_private(Path(database))

    @event.listens_for(created, "connect")
    def _sqlite_pragmas(dbapi_connection, _record) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=15000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return created


def _create_private(path: Path) -> None:
    """Create the SQLite file (and its folder) readable by this user only, whatever the
    umask, before SQLite does; SQLite gives its -wal and -shm files the same mode."""
    private_folder(path.parent)
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))


def init_app(app: "Flask") -> None:
    """Create the app's engine and session factory and close sessions at teardown."""
    app.extensions["db"] = sessionmaker(
        make_engine(app.config["DATABASE_URL"]),
        expire_on_commit=False,
        # Each session knows where its changes' webhook events go (webapp.webhooks).
        info={"webhook_urls": app.config["WEBHOOK_URLS"]},
    )
    app.teardown_appcontext(_close_session)


def session_factory(app: "Flask | None" = None) -> sessionmaker[Session]:
    """The app's session factory, for work outside a request (CLI, worker thread)."""
    from flask import current_app

    return (app or current_app).extensions["db"]


def engine(app: "Flask | None" = None) -> Engine:
    """The app's engine: the one accessor for code that works with connections or forks."""
    return session_factory(app).kw["bind"]


def get_session() -> Session:
    """The session of the current app context, created on first use."""
    from flask import g

    if "db_session" not in g:
        g.db_session = session_factory()()
    return g.db_session


def _close_session(_exc: BaseException | None) -> None:
    from flask import g

    session = g.pop("db_session", None)
    if session is not None:
        session.close()
