"""What the database guarantees, on SQLite and on a real PostgreSQL: schema, races, claims."""

import os
import stat
import threading

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import select

from tests.helpers import SmtpServer, count, make_app, sqlite_only, subscribe
from webapp.db import Model, engine, session_factory
from webapp.delivery import transport_from_config
from webapp.models import OutboxMail, OutboxStatus
from webapp.subscribers.outbox import deliver_queued


def test_migrated_database_matches_the_models(any_db_app):
    with engine(any_db_app).connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Model.metadata) == []


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


@sqlite_only
def test_files_are_private_whatever_the_umask(tmp_path):
    old = os.umask(0)  # the most permissive: every file would be world-writable
    try:
        instance = tmp_path / "instance"
        app = make_app(tmp_path, DATABASE_URL=f"sqlite:///{instance / 'newsletter.db'}")
        subscribe(app.test_client())
        result = app.test_cli_runner().invoke(args=["outbox", "send"])
        assert result.exit_code == 0, result.output
    finally:
        os.umask(old)
    outbox = instance / "outbox"
    modes = {
        path.name: stat.S_IMODE(path.stat().st_mode)
        for path in [instance, outbox, *instance.iterdir(), *outbox.iterdir()]
    }
    assert modes["instance"] == modes["outbox"] == 0o700
    assert {"newsletter.db", "newsletter.db-wal", "newsletter.db-shm", "secret_key"} <= set(modes)
    assert any(name.endswith(".eml") for name in modes)
    assert all(mode == 0o600 for name, mode in modes.items() if name not in ("instance", "outbox"))
