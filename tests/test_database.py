"""What the database guarantees, on SQLite and on a real PostgreSQL: schema, races, claims."""

import os
import stat
import threading

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import select

from tests.helpers import SmtpServer, count, make_app, sqlite_only, subscribe
from webapp.db import engine, session_factory
from webapp.issues.running import single_sender
from webapp.mailout.models import OutboxMail, OutboxStatus
from webapp.mailout.outbox import deliver_queued
from webapp.mailout.relay import transport_from_config
from webapp.models import Issue
from webapp.tables import METADATA


def test_migrated_database_matches_the_models(any_db_app):
    with engine(any_db_app).connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, METADATA) == []


@sqlite_only
def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(app):
    with engine(app).connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 15000
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_two_senders_draining_one_outbox_send_each_message_once(any_db_app, tmp_path):
    relay = SmtpServer().start()
    try:
        app = any_db_app
        app.config.update(relay.config())
        client = app.test_client()
        for number in range(30):
            subscribe(client, email=f"reader{number}@newsroom.org")
        assert count(app, OutboxMail) == 30

        def drain():
            deliver_queued(session_factory(app), transport_from_config(app.config), lease=300)

        senders = [threading.Thread(target=drain) for _ in range(2)]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join(60)
        recipients = sorted(r for m in relay.messages for r in m.recipients)
        assert recipients == sorted(f"reader{n}@newsroom.org" for n in range(30))
        with session_factory(app)() as session:
            states = set(session.scalars(select(OutboxMail.status)))
        assert states == {OutboxStatus.SENT}
    finally:
        relay.stop()


def modes(*folders):
    """Each folder's permission bits and those of what it holds, by name."""
    paths = [*folders, *(path for folder in folders for path in folder.iterdir())]
    return {path.name: oct(stat.S_IMODE(path.stat().st_mode)) for path in paths}


@sqlite_only
@pytest.mark.parametrize("umask", [0o022, 0o000], ids=["umask022", "umask000"])
def test_files_are_private_whatever_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        instance = tmp_path / "instance"
        app = make_app(tmp_path, DATABASE_URL=f"sqlite:///{instance / 'newsletter.db'}")
        subscribe(app.test_client())
        runner = app.test_cli_runner()
        for args in (["outbox", "send"], ["digest", "build", "explaining-ukraine"]):
            result = runner.invoke(args=args)
            assert result.exit_code == 0, result.output
        with session_factory(app)() as session, single_sender(app, session.scalar(select(Issue))):
            pass
    finally:
        os.umask(old)
    found = modes(instance, instance / "outbox")
    files = {"newsletter.db", "newsletter.db-wal", "newsletter.db-shm", "secret_key"}
    assert files <= set(found)
    assert any(name.endswith(".eml") for name in found)
    assert any(name.endswith(".lock") for name in found)  # the send lock, beside the database
    assert {name: mode for name, mode in found.items() if mode != "0o600"} == {
        "instance": "0o700",
        "outbox": "0o700",
        "send-journals": "0o700",  # the senders' journals: which readers were sent what
    }


@sqlite_only
@pytest.mark.parametrize("umask", [0o022, 0o000], ids=["umask022", "umask000"])
def test_folders_made_on_the_way_are_private_too(tmp_path, umask):
    # With the key configured and the database elsewhere, the first captured mail makes
    # the instance folder (and the one above it) on its way to instance/outbox.
    old = os.umask(umask)
    try:
        instance = tmp_path / "srv" / "instance"
        data = tmp_path / "var" / "data"
        app = make_app(
            tmp_path,
            INSTANCE_PATH=instance,
            SECRET_KEY="configured, not generated",
            DATABASE_URL=f"sqlite:///{data / 'newsletter.db'}",
        )
        assert not instance.exists()
        subscribe(app.test_client())
        result = app.test_cli_runner().invoke(args=["outbox", "send"])
        assert result.exit_code == 0, result.output
    finally:
        os.umask(old)
    found = modes(tmp_path / "srv", instance, tmp_path / "var", data)
    assert {name: found[name] for name in ("srv", "instance", "outbox", "var", "data")} == {
        name: "0o700" for name in ("srv", "instance", "outbox", "var", "data")
    }
