"""newsletter worker and scheduled sends: each issue at its time, each reader once, with
several workers on PostgreSQL and one on SQLite, and a worker stopped mid-send."""

import asyncio
import signal
import subprocess
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from tests.helpers import (
    NEWSLETTER_BIN,
    SmtpServer,
    app_with_issue,
    command_env,
    readers,
    start_worker,
    stop,
    until_one_gives_way,
    wait_for_deliveries,
)
from webapp.db import session_factory
from webapp.issues.schedule import parse_time
from webapp.models import Issue

NEWSLETTER = "explaining-ukraine"
KYIV = ZoneInfo("Europe/Kyiv")


def cli(app, *args):
    return app.test_cli_runner().invoke(args=list(args))


def soon(seconds: float) -> str:
    """A time this many seconds from now, as staff type it, in Kyiv."""
    return (datetime.now(KYIV) + timedelta(seconds=seconds)).strftime("%Y-%m-%d %H:%M:%S")


def scheduled_at(app):
    with session_factory(app)() as session:
        return session.scalars(select(Issue)).one().scheduled_at


def schedule_due(app, when: datetime | None = None) -> datetime:
    """Schedule issue 1 as staff do (an hour ahead), then move its time to ``when``
    (now by default), so a worker finds it due: a time typed "a second from now" is
    in the past on a slow machine by the time the command reads it."""
    result = cli(app, "digest", "send", NEWSLETTER, "1", "--at", soon(3600), "--yes")
    assert result.exit_code == 0, result.output
    with session_factory(app)() as session:
        issue = session.scalars(select(Issue)).one()
        issue.scheduled_at = when or datetime.now(UTC)
        session.commit()
        return issue.scheduled_at


def until_sent(app, timeout: float = 60) -> None:
    """Wait (bounded) for issue 1's send to be marked finished: every reader's delivery
    recorded, none left to send."""
    deadline = time.monotonic() + timeout
    while True:
        with session_factory(app)() as session:
            if session.scalars(select(Issue)).one().finished_at is not None:
                return
        assert time.monotonic() < deadline, "the issue's send never finished"
        time.sleep(0.05)


def test_a_time_is_read_in_the_newsletters_zone_across_daylight_saving():
    assert parse_time("2026-11-27 07:00", "Europe/Kyiv") == datetime(2026, 11, 27, 5, tzinfo=UTC)
    assert parse_time("2026-07-01 07:00", "Europe/Kyiv") == datetime(2026, 7, 1, 4, tzinfo=UTC)
    assert parse_time("2026-11-27T07:00:30", "UTC") == datetime(2026, 11, 27, 7, 0, 30, tzinfo=UTC)


def test_schedule_list_and_unschedule(tmp_path, smtp_server):
    app = app_with_issue(tmp_path, smtp_server, 2)
    at = (datetime.now(KYIV) + timedelta(days=2)).replace(hour=7, minute=0, second=0, microsecond=0)
    result = cli(app, "digest", "send", NEWSLETTER, "1", "--at", f"{at:%Y-%m-%d %H:%M}", "--yes")
    assert result.exit_code == 0, result.output
    assert f"Scheduled {NEWSLETTER} issue 1 for {at:%Y-%m-%d} 07:00 Europe/Kyiv" in result.output
    assert scheduled_at(app) == at.astimezone(UTC)
    listed = cli(app, "digest", "list", NEWSLETTER).output
    assert f"scheduled {at:%Y-%m-%d} 07:00 Europe/Kyiv" in listed
    again = cli(app, "digest", "send", NEWSLETTER, "1", "--at", f"{at:%Y-%m-%d %H:%M}", "--yes")
    assert again.exit_code == 2 and "already scheduled" in again.output
    assert cli(app, "digest", "unschedule", NEWSLETTER, "1").exit_code == 0
    assert scheduled_at(app) is None
    assert cli(app, "digest", "unschedule", NEWSLETTER, "1").exit_code == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["--at", "2020-01-01 07:00"], "is in the past"),
        (["--at", "2099-01-01 07:00", "--tz", "Mars/Olympus"], "unknown time zone"),
        (["--at", "tomorrow at seven"], "is not a time like"),
        (["--tz", "Europe/Kyiv"], "--tz goes with --at"),
    ],
)
def test_a_bad_schedule_is_one_line_and_exit_2(tmp_path, smtp_server, args, message):
    app = app_with_issue(tmp_path, smtp_server, 1)
    result = cli(app, "digest", "send", NEWSLETTER, "1", *args, "--yes")
    assert result.exit_code == 2 and message in result.output, result.output
    assert "Traceback" not in result.output and scheduled_at(app) is None


def test_an_issue_already_sent_cannot_be_scheduled(tmp_path, smtp_server):
    app = app_with_issue(tmp_path, smtp_server, 1)
    sent = subprocess.run(
        [NEWSLETTER_BIN, "digest", "send", NEWSLETTER, "1", "--yes"],
        env=command_env(app, smtp_server),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert sent.returncode == 0, sent.stderr
    result = cli(app, "digest", "send", NEWSLETTER, "1", "--at", "2099-01-01 07:00", "--yes")
    assert result.exit_code == 2 and "already sent" in result.output


def test_a_scheduled_issue_goes_out_at_its_time_once_with_two_workers(any_db_app, tmp_path):
    relay = SmtpServer().start()
    app = app_with_issue(tmp_path, relay, 12, DATABASE_URL=any_db_app.config["DATABASE_URL"])
    sqlite = app.config["DATABASE_URL"].startswith("sqlite")
    start = schedule_due(app)
    workers = [start_worker(app, relay) for _ in range(2)]
    try:
        until_sent(app)
        if sqlite:
            until_one_gives_way(workers)
    finally:
        outputs = [stop(worker) for worker in workers]
        relay.stop()
    # Stopped by SIGTERM, a worker ends after the messages in flight (no job was left
    # running): a second copy claimed or under way has arrived by the time it exited.
    assert not any("Jobs still running" in err for _, err in outputs), outputs
    counts = Counter(to for message in relay.messages for to in message.recipients)
    assert counts == Counter(readers(12))
    assert all(m.received_at >= start for m in relay.messages)  # not before its time
    codes = sorted(worker.returncode for worker in workers)
    if sqlite:
        assert codes == [0, 1]  # the second said so and exited
        assert any("another worker is running" in err for _, err in outputs)
    else:
        assert codes == [0, 0]
    assert any("Starting the scheduled send" in out for out, _ in outputs)


def test_a_worker_stopped_mid_send_leaves_the_rest_to_the_next_once(any_db_app, tmp_path):
    relay = SmtpServer().start()
    # Past the 10th message the relay holds each one until the worker has said it stops
    # after the messages in flight: stopped in the middle, however fast the machine.
    stopping = threading.Event()
    take = relay.handler.handle_DATA

    async def held(server, session, envelope):
        if len(relay.messages) >= 10:
            await asyncio.get_running_loop().run_in_executor(None, stopping.wait, 60)
        return await take(server, session, envelope)

    relay.handler.handle_DATA = held
    app = app_with_issue(tmp_path, relay, 60, DATABASE_URL=any_db_app.config["DATABASE_URL"])
    schedule_due(app)
    log = tmp_path / "first-worker.err"  # read while it runs
    with log.open("w") as stderr:
        first = subprocess.Popen(
            [NEWSLETTER_BIN, "worker", "--interval", "0.2"],
            env=command_env(app, relay, SEND_CONNECTIONS=2, SMTP_TIMEOUT=60),  # held: wait
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    try:
        wait_for_deliveries(relay, 10)
        first.send_signal(signal.SIGTERM)  # its handler is set: it has been sending
        deadline = time.monotonic() + 60
        while "Stopping after the messages in flight" not in log.read_text():
            assert first.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the worker never said it was stopping"
            time.sleep(0.05)
    finally:
        stopping.set()  # the held messages go; the worker ends after them
        first.communicate(timeout=60)
    err = log.read_text()
    assert first.returncode == 0, err
    assert 10 <= len(relay.messages) < 60, "the worker did not stop in the middle"
    second = start_worker(app, relay, SEND_CONNECTIONS=2)
    try:
        wait_for_deliveries(relay, 60)
        until_sent(app)
    finally:
        out, err = stop(second)
        relay.stop()
    assert "Resuming the scheduled send" in out, out + err
    counts = Counter(to for message in relay.messages for to in message.recipients)
    assert counts == Counter(readers(60))  # everybody, nobody twice


def test_a_send_no_worker_started_at_its_time_starts_once_and_says_it_was_late(
    tmp_path, smtp_server
):
    app = app_with_issue(tmp_path, smtp_server, 3)
    schedule_due(app, datetime.now(UTC) - timedelta(hours=2))  # every worker was down then
    worker = start_worker(app, smtp_server)
    try:
        wait_for_deliveries(smtp_server, 3)
        until_sent(app)
    finally:
        out, err = stop(worker)
    assert len(smtp_server.messages) == 3
    assert out.count("Starting the scheduled send") == 1
    assert "late (no worker ran at its time)" in out
