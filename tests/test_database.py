"""What the database guarantees, on SQLite and on a real PostgreSQL: schema, races, claims."""

import threading

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, select

from tests.conftest import SmtpServer, csrf_token, subscribe
from webapp.db import Model, session_factory
from webapp.messages import MESSAGES
from webapp.models import OutboxMessage, OutboxStatus, Subscriber, Subscription
from webapp.outbox import deliver_queued, transport_from_config


def count(app, model) -> int:
    with session_factory(app)() as session:
        return session.scalar(select(func.count()).select_from(model))


def test_migrated_database_matches_the_models(any_db_app):
    engine = session_factory(any_db_app).kw["bind"]
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Model.metadata) == []


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(app):
    engine = session_factory(app).kw["bind"]
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 15000
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_concurrent_posts_of_one_address_make_one_subscription_and_one_email(any_db_app):
    app = any_db_app
    clients = [app.test_client() for _ in range(12)]
    tokens = [csrf_token(c) for c in clients]
    start = threading.Barrier(len(clients))
    answers = []

    def post(client, token):
        start.wait()
        response = client.post(
            "/subscribe",
            data={
                "email": "Same@Newsroom.org",
                "newsletter": "explaining-ukraine",
                "csrf_token": token,
            },
            headers={"Accept": "application/json"},
        )
        answers.append((response.status_code, response.json))

    threads = [
        threading.Thread(target=post, args=pair) for pair in zip(clients, tokens, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    expected = (200, {"ok": True, "title": MESSAGES.success_title, "text": MESSAGES.success_text})
    assert answers == [expected] * len(clients)
    assert count(app, Subscriber) == 1
    assert count(app, Subscription) == 1
    assert count(app, OutboxMessage) == 1


def test_two_senders_draining_one_outbox_send_each_message_once(any_db_app, tmp_path):
    relay = SmtpServer().start()
    try:
        app = any_db_app
        app.config.update(relay.config())
        client = app.test_client()
        for number in range(30):
            subscribe(client, email=f"reader{number}@newsroom.org")
        assert count(app, OutboxMessage) == 30

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
            states = set(session.scalars(select(OutboxMessage.status)))
        assert states == {OutboxStatus.SENT}
    finally:
        relay.stop()
