"""Moving to PostgreSQL and running several workers: ``db copy`` and ``outbox send --watch``."""

import http.cookiejar
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.helpers import (
    NEWSLETTER_BIN,
    ROOT,
    SmtpServer,
    command_env,
    csrf_from,
    free_port,
    make_app,
    stop,
    subscribe,
    until_one_gives_way,
)
from webapp.db import make_engine, session_factory
from webapp.issues.queue import take_list
from webapp.mailout.models import OutboxMail, OutboxStatus
from webapp.models import Issue
from webapp.tables import METADATA


def fill(app, tmp_path) -> None:
    """Some of everything: confirmed readers, a pending sign-up with its mail, an issue
    with its deliveries, an erased address."""
    runner = app.test_cli_runner()
    csv = tmp_path / "readers.csv"
    csv.write_text("email\n" + "\n".join(f"reader{n}@newsroom.org" for n in range(40)) + "\n")
    args = ["subscribers", "import", str(csv), "--newsletter", "explaining-ukraine"]
    assert runner.invoke(args=args + ["--confirmed", "--consent-note", "test"]).exit_code == 0
    subscribe(app.test_client(), email="pending@newsroom.org")
    assert runner.invoke(args=["digest", "build", "explaining-ukraine"]).exit_code == 0
    assert runner.invoke(args=["subscribers", "delete", "reader39@newsroom.org"]).exit_code == 0
    with app.app_context(), session_factory(app)() as session:
        assert take_list(session, session.scalar(select(Issue))) == 39


def until_all_mailed(app, count: int, timeout: float = 60) -> None:
    """Wait (bounded) until at least ``count`` confirmations are queued and every one
    is recorded sent."""
    deadline = time.monotonic() + timeout
    while True:
        with session_factory(app)() as session:
            states = list(session.scalars(select(OutboxMail.status)))
        if len(states) >= count and set(states) == {OutboxStatus.SENT}:
            return
        assert time.monotonic() < deadline, f"the outbox after {timeout:g} s: {states}"
        time.sleep(0.05)


def dump(url: str) -> dict[str, list[tuple]]:
    """Every row of every table, in key order."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return {
                table.name: [
                    tuple(row)
                    for row in connection.execute(
                        select(table).order_by(*table.primary_key.columns)
                    )
                ]
                for table in METADATA.sorted_tables
            }
    finally:
        engine.dispose()


def test_db_copy_to_postgresql_and_back_loses_nothing(tmp_path, postgres):
    sqlite_url = f"sqlite:///{tmp_path / 'instance' / 'newsletter.db'}"
    app = make_app(tmp_path, DATABASE_URL=sqlite_url)
    fill(app, tmp_path)
    original = dump(sqlite_url)
    assert len(original["deliveries"]) == 39 and len(original["erased_addresses"]) == 1

    pg_url = postgres.create_database()
    result = app.test_cli_runner().invoke(args=["db", "copy", "--to", pg_url])
    assert result.exit_code == 0, result.output
    assert "row counts verified" in result.output
    assert dump(pg_url) == original

    # The moved installation works: new rows get ids after the copied ones.
    moved = make_app(tmp_path / "moved", DATABASE_URL=pg_url)
    assert subscribe(moved.test_client(), email="new@newsroom.org").status_code == 302
    with session_factory(moved)() as session:
        newest = session.scalar(select(OutboxMail).order_by(OutboxMail.id.desc()))
        assert newest.recipient == "new@newsroom.org"
        assert newest.id > max(row[0] for row in original["outbox"])

    back_url = f"sqlite:///{tmp_path / 'back.db'}"
    result = moved.test_cli_runner().invoke(args=["db", "copy", "--to", back_url])
    assert result.exit_code == 0, result.output
    assert dump(back_url) == dump(pg_url)


def test_db_copy_refuses_a_target_with_rows_and_a_bad_url(tmp_path, postgres):
    app = make_app(tmp_path, DATABASE_URL=f"sqlite:///{tmp_path / 'instance' / 'newsletter.db'}")
    fill(app, tmp_path)
    pg_url = postgres.create_database(migrated=True)  # has the seed catalog already
    before = dump(pg_url)
    result = app.test_cli_runner().invoke(args=["db", "copy", "--to", pg_url])
    assert result.exit_code == 1
    assert "the target database is not empty: newsletters has rows" in result.output
    assert dump(pg_url) == before

    result = app.test_cli_runner().invoke(args=["db", "copy", "--to", "no-such-thing"])
    assert result.exit_code == 2 and "not a database URL" in result.output


def test_outbox_watch_workers_on_several_hosts_send_each_message_once(any_db_app, tmp_path):
    relay = SmtpServer().start()
    app = any_db_app
    sqlite = app.config["DATABASE_URL"].startswith("sqlite")
    env = command_env(app, relay)
    workers = [
        subprocess.Popen(
            [NEWSLETTER_BIN, "outbox", "send", "--watch", "--interval", "0.2"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        client = app.test_client()  # the web tier: queues, sends nothing itself
        for number in range(20):
            subscribe(client, email=f"reader{number}@newsroom.org")
        until_all_mailed(app, 20)
        if sqlite:
            until_one_gives_way(workers)
    finally:
        outputs = [stop(worker) for worker in workers]
        relay.stop()
    # Stopped by SIGTERM, a worker ends after the messages in flight (no job was left
    # running): a second copy claimed or under way has arrived by the time it exited.
    assert not any("Jobs still running" in err for _, err in outputs), outputs
    counts = Counter(to for message in relay.messages for to in message.recipients)
    assert counts == Counter(f"reader{n}@newsroom.org" for n in range(20))
    codes = sorted(worker.returncode for worker in workers)
    if sqlite:  # one worker is enough there: the second says so and exits
        assert codes == [0, 1]
        assert any("another worker is running" in err for _, err in outputs)
    else:
        assert codes == [0, 0]
    assert any("Stopped." in err for _, err in outputs)


@pytest.mark.parametrize("signup_work", ["server", "worker"])
def test_gunicorn_workers_on_postgresql_with_two_workers_mail_each_sign_up_once(
    tmp_path, postgres, signup_work
):
    """The production layout: several web workers record (and, with SIGNUP_WORK=server,
    act on) the sign-ups; two separate workers act and send."""
    relay = SmtpServer().start()
    app = make_app(tmp_path, DATABASE_URL=postgres.create_database(migrated=True))
    env = command_env(
        app, relay, OUTBOX_WORKER="false", SUBSCRIBE_LIMITS="", SIGNUP_WORK=signup_work
    )
    port = free_port()
    web = subprocess.Popen(
        [str(Path(NEWSLETTER_BIN).parent / "gunicorn"), "-w", "2", "-b", f"127.0.0.1:{port}"]
        + ["--log-level", "warning", "webapp:create_app()"],
        env=env,
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    mailers = [
        subprocess.Popen(
            [NEWSLETTER_BIN, *command, "--interval", "0.2"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for command in (["outbox", "send", "--watch"], ["worker"])
    ]
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for_http(base)
        for number in range(12):  # each post may land on either worker
            session = Browser(base)
            status = session.post(
                "/subscribe",
                email=f"reader{number}@newsroom.org",
                newsletter="explaining-ukraine",
                csrf_token=session.csrf_token("/"),
            )
            assert status == 200
        until_all_mailed(app, 12)
    finally:
        outputs = [stop(mailer) for mailer in mailers]
        web.send_signal(signal.SIGTERM)
        web.communicate(timeout=30)
        relay.stop()
    # Both stopped cleanly after their messages in flight: a second copy claimed or
    # under way has arrived by the time they exited.
    assert [mailer.returncode for mailer in mailers] == [0, 0], outputs
    assert not any("Jobs still running" in err for _, err in outputs), outputs
    counts = Counter(to for message in relay.messages for to in message.recipients)
    assert counts == Counter(f"reader{n}@newsroom.org" for n in range(12))


def wait_for_http(base: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(base + "/", timeout=2).close()
            return
        except OSError:
            assert time.monotonic() < deadline, "the web server did not start"
            time.sleep(0.1)


class Browser:
    """A cookie-keeping HTTP client, following redirects like a browser without JS."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )

    def csrf_token(self, path: str) -> str:
        with self.opener.open(self.base + path, timeout=10) as response:
            return csrf_from(response.read().decode())

    def post(self, path: str, **fields: str) -> int:
        data = urllib.parse.urlencode(fields).encode()
        with self.opener.open(self.base + path, data=data, timeout=10) as response:
            return response.status
