"""Hearing back under attack: ``inbound serve`` stores a message once and only for our
own tokens, reads any message in bounded time while it answers others, and keeps
answering real deliveries through a flood of idle connections."""

import resource
import smtplib
import socket
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from emails.feeds import FeedError, fetch_feed
from tests import inbound_samples as samples
from tests.helpers import (
    NEWSLETTER_BIN,
    DripServer,
    SmtpServer,
    app_with_issue,
    command_env,
    free_port,
    readers,
    sent_to_readers,
    start_worker,
    stop,
    until_handled,
    wait_for_deliveries,
)
from tests.mailservers import wait_for_port
from webapp.catalog import read_catalog, seed_catalog
from webapp.config import signer
from webapp.db import session_factory
from webapp.inbound.classify import classify
from webapp.inbound.models import InboundMessage
from webapp.inbound.server import MAX_RECIPIENTS, InboundController, InboundHandler
from webapp.inbound.store import store, take_in
from webapp.mailout.verp import Verp
from webapp.models import Issue, Newsletter, Subscriber
from webapp.webhooks.delivery import post
from webapp.webhooks.events import announce
from webapp.worker import deliver_outbox

MAIL_FROM = "news@newsroom.org"
NEWSLETTER = "explaining-ukraine"
MB = 1024 * 1024


@pytest.fixture
def served(tmp_path, smtp_server):
    """An app whose issue went to five readers, and its inbound server (SMTP) started:
    (app, {reader: their VERP sender}, port)."""
    app = app_with_issue(tmp_path, smtp_server, 5, MAIL_FROM=MAIL_FROM)
    port = free_port()
    controller = InboundController(InboundHandler(app, False), "127.0.0.1", port, 11 * MB)
    controller.start()
    yield app, sent_to_readers(app), port
    controller.stop()


def stored(app) -> list[InboundMessage]:
    with session_factory(app)() as session:
        return session.scalars(select(InboundMessage)).all()


def test_a_message_to_a_hundred_recipients_is_stored_once(served):
    app, senders, port = served
    verp = Verp.from_config(app.config)
    gone = readers(5)[2]
    ours = [senders[gone]] + [verp.sender("d", 1000 + n) for n in range(MAX_RECIPIENTS - 1)]
    raw = samples.postfix_dsn(senders[gone], gone) + (b"x" * 76 + b"\r\n") * (MB // 78)
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        assert smtp.sendmail("", ours, raw) == {}
    until_handled(app, 1)
    (message,) = stored(app)
    assert message.size == len(raw) and message.recipient == senders[gone]
    assert message.kind == "hard-bounce"
    with session_factory(app)() as session:
        size = session.scalar(select(func.sum(func.length(InboundMessage.raw))))
    assert size == len(raw)  # one copy, not a hundred


def test_junk_and_forged_tokens_are_refused_at_rcpt_and_recipients_are_capped(served):
    app, senders, port = served
    verp = Verp.from_config(app.config)
    real = senders[readers(5)[0]]
    forged = real[:-15] + ("a" if real[-15] != "a" else "b") + real[-14:]  # its hash altered
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.ehlo()
        assert smtp.mail("")[0] == 250
        for junk in ("bounces+junk1@newsroom.org", forged, "bounces+d1@newsroom.org"):
            assert smtp.rcpt(junk)[0] == 550, junk
        assert smtp.rcpt("bounces@newsroom.org")[0] == 250  # the bare bounce address
        assert smtp.rcpt(MAIL_FROM)[0] == 250  # replies
        for n in range(MAX_RECIPIENTS - 2):
            assert smtp.rcpt(verp.sender("d", 5000 + n))[0] == 250
        code, text = smtp.rcpt(real)
        assert code == 452 and b"Too many recipients" in text  # as MTAs say it
        smtp.rset()
    assert stored(app) == []


def test_a_message_left_stored_but_not_handled_is_handled_when_the_server_starts(
    tmp_path, smtp_server
):
    app = app_with_issue(tmp_path, smtp_server, 5, MAIL_FROM=MAIL_FROM)
    senders = sent_to_readers(app)
    gone = readers(5)[1]
    with app.app_context():  # stored, then the server was killed before it read it
        store(
            session_factory(app),
            samples.postfix_dsn(senders[gone], gone),
            source="lmtp",
            recipient=senders[gone],
        )
    controller = InboundController(InboundHandler(app, True), "127.0.0.1", free_port(), MB)
    controller.start()
    try:
        until_handled(app, 1)
    finally:
        controller.stop()
    with session_factory(app)() as session:
        query = select(Subscriber.email).where(Subscriber.suppressed_at.is_not(None))
        assert set(session.scalars(query)) == {gone}


def crafted(size: int) -> bytes:
    """The worst message we know for a MIME parser: parts nested as deep as the
    classifier reads them, then blank lines to the size limit."""
    head = (
        b"From: MAILER-DAEMON@example.org\r\nTo: bounces@newsroom.org\r\n"
        b"Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=b0\r\n\r\n"
    )
    nested = b"".join(
        b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (n, n + 1)
        for n in range(900)
    )
    return head + nested + b"\r\n" * ((size - len(head) - len(nested)) // 2)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(crafted(10 * MB), id="nested parts and blank lines"),
        pytest.param(b"From: " + b"a" * (10 * MB) + b"\r\n\r\nx", id="a 10 MB From"),
        pytest.param(
            b"From: MAILER-DAEMON@x\r\nSubject: failure notice\r\n\r\n" + b"a@" * (5 * MB),
            id="a 10 MB line of at signs",
        ),
        pytest.param(
            b"From: x\r\n" + b" " + b"a" * 988 + b"\r\n " * 9000 + b"\r\n\r\nx",
            id="a From folded into legal lines",
        ),
    ],
)
def test_any_message_is_read_in_bounded_work(raw):
    # Found reading crafted messages: a 10 MB message of nested parts and blank lines
    # took 19 s, and flufl.bounce a minute on blank lines. What is read is bounded now,
    # so the same classification holds a second copy of the message twice over.
    verp = Verp("k", "bounces@newsroom.org")
    before = classify(raw, "bounces@newsroom.org", verp, MAIL_FROM)
    doubled = classify(raw + raw, "bounces@newsroom.org", verp, MAIL_FROM)
    assert before == doubled
    assert len(before.detail) <= 500


def test_a_new_connection_gets_its_banner_while_the_worst_message_is_handled(served):
    app, senders, port = served
    raw = crafted(10 * MB)
    done = threading.Event()

    def deliver():
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
            smtp.sendmail("", ["bounces@newsroom.org"], raw)
        done.set()

    sender = threading.Thread(target=deliver)
    sender.start()
    banners = []
    try:
        while not done.is_set() or len(banners) < 3:
            started = time.monotonic()
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                assert sock.recv(100).startswith(b"220 ")
            banners.append(time.monotonic() - started)
    finally:
        sender.join(60)
    until_handled(app, 1)
    assert max(banners) < 1.0, banners
    (message,) = stored(app)
    assert message.size == len(raw) and message.kind == "unknown"


def test_a_thousand_idle_connections_leave_room_for_a_real_delivery(tmp_path, smtp_server):
    app = app_with_issue(tmp_path, smtp_server, 5, MAIL_FROM=MAIL_FROM)
    senders = sent_to_readers(app)
    gone = readers(5)[3]
    port = free_port()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2048 <= hard or hard == resource.RLIM_INFINITY:
        resource.setrlimit(resource.RLIMIT_NOFILE, (2048, hard))
    # The server with the default 1,024 open files, as a service runs it.
    server = subprocess.Popen(
        [NEWSLETTER_BIN, "inbound", "serve", "--port", str(port)],
        env=command_env(app, smtp_server, MAIL_FROM=MAIL_FROM),
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024)),
    )
    idle = []
    try:
        wait_for_port(port)
        for _ in range(1100):  # past what the 1,024 open files would hold
            try:
                idle.append(socket.create_connection(("127.0.0.1", port), timeout=10))
            except OSError:  # refused outright: the point is that they get nowhere
                break
        bounce = samples.postfix_dsn(senders[gone], gone)
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
            assert smtp.sendmail("", [senders[gone]], bounce) == {}
        until_handled(app, 1)
    finally:
        for sock in idle:
            sock.close()
        server.terminate()
        _, err = server.communicate(timeout=60)
    assert server.returncode == 0, err
    assert len(idle) == 1100
    lines = [line for line in err.splitlines() if "sessions" in line]
    assert 1 <= len(lines) <= 4, err  # once a burst, not once a connection
    assert len(err) < 4000, err


def test_a_status_with_a_comment_is_read_to_its_code_on_any_database(any_db_app, tmp_path):
    # Found trying it: "Status: 5.1.1 (bad destination mailbox address)" was stored
    # whole, too long for PostgreSQL's column, and the hard bounce was lost.
    relay = SmtpServer().start()
    try:
        app = app_with_issue(
            tmp_path, relay, 5, MAIL_FROM=MAIL_FROM, DATABASE_URL=any_db_app.config["DATABASE_URL"]
        )
    finally:
        relay.stop()
    senders = sent_to_readers(app)
    gone = readers(5)[4]
    raw = samples.postfix_dsn(
        senders[gone], gone, status="5.1.1 (bad destination mailbox address: " + "x" * 80 + ")"
    )
    with app.app_context():
        message = take_in(session_factory(app), app.config, raw, source="file")
    assert (message.kind, message.code) == ("hard-bounce", "5.1.1")
    with session_factory(app)() as session:
        query = select(Subscriber.email).where(Subscriber.suppressed_at.is_not(None))
        assert set(session.scalars(query)) == {gone}


def test_a_feed_that_drips_is_cut_off_at_the_whole_fetchs_deadline():
    # Found trying it: a byte a second meets every socket timeout; the fetch ran on.
    drip = DripServer(pace=0.2, limit=2000)
    try:
        with pytest.raises(FeedError, match="timed out"):
            fetch_feed(drip.url("/feed.xml"), timeout=1)
    finally:
        drip.stop()
    assert drip.requests == ["/feed.xml"]


def test_a_webhook_receiver_that_drips_is_cut_off_at_the_attempts_deadline():
    drip = DripServer(pace=0.2, limit=2000)
    try:
        error = post(drip.url("/hook"), "msg_1", "{}", signer("whsec_" + "A" * 32), timeout=1)
    finally:
        drip.stop()
    assert error is not None and "within 1 s" in error


def test_a_worker_behind_dripping_servers_sends_on_time_and_stops_on_sigterm(tmp_path, smtp_server):
    drip = DripServer(pace=0.5, limit=2000)
    hook = drip.url("/hook")
    secret = "whsec_" + "A" * 32
    app = app_with_issue(tmp_path, smtp_server, 3, WEBHOOK_URLS=hook, WEBHOOK_SECRET=secret)
    runner = app.test_cli_runner()
    at = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%d %H:%M")
    command = ["digest", "send", NEWSLETTER, "1", "--at", at, "--tz", "UTC", "--yes"]
    scheduled = runner.invoke(args=command)
    assert scheduled.exit_code == 0, scheduled.output
    entries = read_catalog(Path(app.config["SEEDS_PATH"]) / "newsletters.toml")
    for entry in entries:  # an automatic newsletter whose feed drips
        if entry["slug"] == NEWSLETTER:
            entry.update(schedule="0 0 1 1 *", source=[drip.url("/feed.xml")])
    with session_factory(app)() as session:
        seed_catalog(session, entries)
        session.execute(update(Newsletter).values(schedule_since=datetime(2025, 12, 1, tzinfo=UTC)))
        session.info["webhook_urls"] = (hook,)
        announce(session, "subscription.created", email="someone@newsroom.org")
        session.commit()
    settings = {"WEBHOOK_URLS": hook, "WEBHOOK_SECRET": secret, "WEBHOOK_TIMEOUT": 600}
    worker = start_worker(app, smtp_server, WORKER_STOP_WAIT=1, **settings)
    try:
        deadline = time.monotonic() + 60
        while {"/hook", "/feed.xml"} - set(drip.requests):  # both jobs are in a drip
            assert time.monotonic() < deadline and worker.poll() is None, drip.requests
            time.sleep(0.05)
        with session_factory(app)() as session:  # now the send is due
            session.execute(update(Issue).values(scheduled_at=datetime.now(UTC)))
            session.commit()
        wait_for_deliveries(smtp_server, 3)
        assert drip.requests.count("/hook") == 1  # still in its first, 600 s attempt
    finally:
        out, err = stop(worker)
        drip.stop()
    assert worker.returncode == 0, err
    assert "Starting the scheduled send" in out and "on time" in out
    assert "stopping anyway" in err


def test_the_worker_drops_old_raw_messages_however_they_came(tmp_path, smtp_server):
    app = app_with_issue(tmp_path, smtp_server, 1)
    with app.app_context():
        for source in ("hook:mailgun", "file", "smtp"):
            store(session_factory(app), b"Subject: old\r\n\r\nx" * 100, source=source)
        store(session_factory(app), b"Subject: new\r\n\r\nx", source="file")
    with session_factory(app)() as session:
        old = datetime.now(UTC) - timedelta(days=app.config["INBOUND_KEEP_DAYS"] + 1)
        session.execute(
            update(InboundMessage).where(InboundMessage.id <= 3).values(received_at=old)
        )
        session.commit()
    with app.app_context():
        deliver_outbox(app)  # the worker's pass and its housekeeping
    with session_factory(app)() as session:
        kept = session.execute(select(InboundMessage.id, InboundMessage.raw.is_not(None))).all()
    assert sorted(kept) == [(1, False), (2, False), (3, False), (4, True)]


def test_data_read_in_chunks_keeps_the_message_as_sent(served):
    # DATA is read in chunks, not lines: a line's doubled leading dot is undone, and a
    # message split anywhere across chunks arrives whole.
    app, senders, port = served
    body = b"".join(b".line %d\r\n..two dots\r\n" % n for n in range(40_000))
    raw = b"From: someone@elsewhere.org\r\nSubject: dots\r\n\r\n" + body
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        assert smtp.sendmail("", [MAIL_FROM], raw) == {}  # smtplib doubles the dots
        assert smtp.sendmail("", [MAIL_FROM], b"Subject: second\r\n\r\n.\r\n") == {}
    until_handled(app, 2)
    first, second = sorted(stored(app), key=lambda m: m.id)
    assert first.raw == raw
    assert second.raw == b"Subject: second\r\n\r\n.\r\n"
