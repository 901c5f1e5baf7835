"""Confirmation mail through a real SMTP server on loopback: every path, relay down then up."""

import asyncio
import os
import random
import re
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from emails.addresses import normalize_address
from tests.helpers import (
    NEWSLETTER_BIN,
    SmtpServer,
    command_env,
    csrf_token,
    free_port,
    make_app,
    readers,
    subscribe,
)
from webapp import worker as worker_module
from webapp.db import session_factory, utcnow
from webapp.mailout import outbox
from webapp.mailout.journal import Journal, journal_folder
from webapp.mailout.models import OutboxMail, OutboxStatus
from webapp.mailout.outbox import deliver_queued
from webapp.mailout.relay import outbox_transport
from webapp.mailout.senders import host_name
from webapp.mailout.verp import Verp
from webapp.models import Subscription, SubscriptionStatus
from webapp.subscribers import service, signups
from webapp.texts import TEXTS


@pytest.fixture
def smtp_app(tmp_path, smtp_server):
    return make_app(tmp_path, **smtp_server.config())


def send_outbox(app):
    return app.test_cli_runner().invoke(args=["outbox", "send"])


def confirm_link(received) -> str:
    text = received.message.get_body(("plain",)).get_content()
    return re.search(r"http://127\.0\.0\.1:5000(/confirm/\S+)", text).group(1)


def outbox_states(app) -> list[OutboxStatus]:
    with session_factory(app)() as session:
        return list(session.scalars(select(OutboxMail.status).order_by(OutboxMail.id)))


def test_confirmation_email_reaches_the_relay_once_with_both_parts(smtp_app, smtp_server):
    client = smtp_app.test_client()
    assert subscribe(client, email="Reader@Newsroom.org", json=True).json["ok"]
    result = send_outbox(smtp_app)
    assert result.exit_code == 0, result.output
    assert "1 sent, 0 to retry, 0 failed" in result.output
    assert send_outbox(smtp_app).output.startswith("Outbox: 0 sent")

    [received] = smtp_server.messages
    assert received.recipients == ["Reader@newsroom.org"]
    # The envelope sender names the message (VERP): a bounce to it says which one.
    with session_factory(smtp_app)() as session:
        message_id = session.scalar(select(OutboxMail.id))
    assert received.sender.startswith("bounces+") and received.sender.endswith("@localhost")
    assert Verp.from_config(smtp_app.config).read(received.sender) == ("o", message_id)
    msg = received.message
    assert msg["From"].addresses[0].addr_spec == "newsletter@localhost"  # From stays
    assert msg["Subject"] == "Confirm your subscription to Explaining Ukraine with Kate Tsurkan"
    assert msg["To"] == "Reader@newsroom.org"
    for header in ("Date", "Message-ID", "MIME-Version", "From"):
        assert msg[header]
    assert msg.get_content_type() == "multipart/alternative"
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    for part in (text, html):
        assert "Explaining Ukraine with Kate Tsurkan" in part
        assert "Did not ask for this?" in part
    links = re.findall(r'href="([^"]+)"', html)
    assert len(links) == 1 and links[0].startswith("http://127.0.0.1:5000/confirm/")
    assert re.findall(r"https?://\S+", text) == links
    assert outbox_states(smtp_app) == [OutboxStatus.SENT]


def test_every_subscribe_and_confirm_path_mails_as_promised(smtp_app, smtp_server):
    client = smtp_app.test_client()
    answers = []
    # new address: one email
    answers.append(subscribe(client, json=True).json)
    send_outbox(smtp_app)
    assert len(smtp_server.messages) == 1
    # pending, within the cooldown: no new email
    answers.append(subscribe(client, json=True).json)
    send_outbox(smtp_app)
    assert len(smtp_server.messages) == 1
    # confirm with the link from the email that arrived
    path = confirm_link(smtp_server.messages[0])
    token = csrf_token(client, path)
    assert client.post(path, data={"csrf_token": token}).status_code == 302
    # confirmed: the newsletter's welcome email (switched on in the catalog), once
    send_outbox(smtp_app)
    assert len(smtp_server.messages) == 2
    welcome = smtp_server.messages[1].message
    assert welcome["Subject"] == "Welcome to Explaining Ukraine with Kate Tsurkan"
    assert "Weekly, on Fridays".lower() in welcome.get_body(("plain",)).get_content().lower()
    assert "/manage/" in welcome.get_body(("plain",)).get_content()
    assert welcome["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    press = client.post(path, data={"csrf_token": token})  # a second press sends nothing
    assert press.status_code == 302
    # confirmed: subscribing again sends nothing new
    answers.append(subscribe(client, json=True).json)
    send_outbox(smtp_app)
    assert len(smtp_server.messages) == 2
    # unsubscribed, then subscribing again: a new confirmation with a new link
    with session_factory(smtp_app)() as session:
        session.scalars(select(Subscription)).one().status = SubscriptionStatus.UNSUBSCRIBED
        session.commit()
    answers.append(subscribe(client, json=True).json)
    send_outbox(smtp_app)
    assert len(smtp_server.messages) == 3
    assert confirm_link(smtp_server.messages[2]) != path
    # the same answer every time, whatever the state
    assert all(answer == answers[0] for answer in answers)


def test_internationalized_domain_is_sent_in_ascii(smtp_app, smtp_server):
    subscribe(smtp_app.test_client(), email="leser@bücher.de")
    send_outbox(smtp_app)
    [received] = smtp_server.messages
    assert received.recipients == ["leser@xn--bcher-kva.de"]
    assert "leser@bücher.de" in received.message.get_body(("plain",)).get_content()


def test_relay_down_keeps_the_mail_queued_until_it_is_back(tmp_path):
    relay = SmtpServer(port=free_port())  # nothing listens there yet
    app = make_app(tmp_path, **relay.config())
    client = app.test_client()
    response = subscribe(client, json=True)
    assert response.status_code == 200 and response.json["ok"]  # the reader sees success

    result = send_outbox(app)
    assert result.exit_code == 1
    assert "0 sent, 1 to retry" in result.output
    assert "mail stays queued" in result.output and "Traceback" not in result.output
    assert outbox_states(app) == [OutboxStatus.QUEUED]

    relay.start()
    try:
        result = send_outbox(app)
        assert result.exit_code == 0 and "1 sent" in result.output
        assert send_outbox(app).output.startswith("Outbox: 0 sent")
        assert len(relay.messages) == 1
        assert outbox_states(app) == [OutboxStatus.SENT]
    finally:
        relay.stop()


def test_running_server_retries_by_itself_when_the_relay_comes_back(tmp_path):
    relay = SmtpServer(port=free_port())
    app = make_app(tmp_path, **relay.config(), OUTBOX_WORKER=True, OUTBOX_RETRY_INTERVAL=1)
    worker = app.extensions["outbox_worker"]
    try:
        assert subscribe(app.test_client(), json=True).json["ok"]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the worker tried and failed at least once
            with session_factory(app)() as session:
                if session.scalar(select(OutboxMail.attempts)):
                    break
            time.sleep(0.05)
        assert outbox_states(app) == [OutboxStatus.QUEUED]
        relay.start()
        assert len(relay.handler.wait_for(1, timeout=15)) == 1
        deadline = time.monotonic() + 15
        while outbox_states(app) != [OutboxStatus.SENT]:  # recorded at the pass's end
            assert time.monotonic() < deadline, "the mail was never recorded sent"
            time.sleep(0.05)
        # The pass under way now may have begun before that record; the one after it
        # began after, and once it has ended, what it would send has arrived.
        assert worker.wait_for_passes(worker.passes + 2, timeout=30)
        assert len(relay.messages) == 1
    finally:
        worker.stop()
        relay.stop()


def test_server_delivers_right_after_the_response(tmp_path, smtp_server):
    app = make_app(tmp_path, **smtp_server.config(), OUTBOX_WORKER=True)
    try:
        subscribe(app.test_client())
        assert len(smtp_server.handler.wait_for(1, timeout=10)) == 1
    finally:
        app.extensions["outbox_worker"].stop()


class WakeAfterTimeout(threading.Event):
    """A wake that arrives just after the worker's wait timed out: the first timed
    wait returns False with the event set, as when wake() comes in between."""

    def __init__(self, when_waiting):
        super().__init__()
        self.when_waiting = when_waiting
        self.entered = threading.Event()  # the worker waits: its first pass is over
        self.calls = 0
        self.done = False

    def wait(self, timeout=None):
        self.calls += 1
        # Not the worker's first wait: that one comes before its first pass.
        if timeout is not None and self.calls >= 2 and not self.is_set() and not self.done:
            self.done = True
            self.entered.set()
            self.when_waiting.wait(10)  # the sign-up is queued meanwhile
            super().wait(0.01)
            self.set()  # its wake() comes now, after the wait has given up
            return False
        return super().wait(timeout)


def test_a_wake_just_after_a_wait_timed_out_is_not_lost(tmp_path, smtp_server):
    # Found while chasing a late confirmation: the worker cleared the event after every
    # wait, so a wake() landing between the timeout and the clear was lost and its
    # mail waited a whole OUTBOX_RETRY_INTERVAL (60 s).
    app = make_app(tmp_path, **smtp_server.config(), OUTBOX_WORKER=True)
    worker = app.extensions["outbox_worker"]
    queued = threading.Event()
    worker._wake = wake = WakeAfterTimeout(queued)
    client = app.test_client()
    try:
        client.get("/")  # starts the worker; its first pass finds nothing
        assert wake.entered.wait(10)
        subscribe(client, email="late@newsroom.org")  # queued, and wake() while it waits
        queued.set()
        assert len(smtp_server.handler.wait_for(1, timeout=20)) == 1  # lost: 60 s
    finally:
        worker.stop()


def test_the_server_keeps_its_relay_connection_while_mail_comes_and_closes_it_idle(
    tmp_path, smtp_server, monkeypatch
):
    monkeypatch.setattr(worker_module, "IDLE_CLOSE", 0.5)
    app = make_app(tmp_path, **smtp_server.config(), OUTBOX_WORKER=True)
    client = app.test_client()
    try:
        for n in range(3):  # one at a time: each its own pass of the worker
            subscribe(client, email=f"reader{n}@newsroom.org")
            assert len(smtp_server.handler.wait_for(n + 1, timeout=10)) == n + 1
        assert smtp_server.handler.greetings == 1  # one connection for the three
        deadline = time.monotonic() + 10
        while smtp_server.handler.quits == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert smtp_server.handler.quits == 1  # closed once idle
    finally:
        app.extensions["outbox_worker"].stop()


def test_permanent_refusal_marks_the_mail_failed_and_does_not_retry(smtp_app, smtp_server):
    smtp_server.handler.refuse["gone@newsroom.org"] = "550 5.1.1 No such user"
    subscribe(smtp_app.test_client(), email="gone@newsroom.org")
    subscribe(smtp_app.test_client(), email="here@newsroom.org")
    result = send_outbox(smtp_app)
    assert "1 sent, 0 to retry, 1 failed" in result.output
    assert outbox_states(smtp_app) == [OutboxStatus.FAILED, OutboxStatus.SENT]
    send_outbox(smtp_app)
    assert [m.recipients for m in smtp_server.messages] == [["here@newsroom.org"]]


def test_temporary_refusal_is_retried(smtp_app, smtp_server):
    smtp_server.handler.refuse["busy@newsroom.org"] = "451 4.7.1 Try again later"
    subscribe(smtp_app.test_client(), email="busy@newsroom.org")
    assert send_outbox(smtp_app).exit_code == 1
    assert outbox_states(smtp_app) == [OutboxStatus.QUEUED]
    del smtp_server.handler.refuse["busy@newsroom.org"]
    assert send_outbox(smtp_app).exit_code == 0
    assert [m.recipients for m in smtp_server.messages] == [["busy@newsroom.org"]]


@pytest.mark.parametrize(
    ("client_ip", "public", "status"),
    [
        ("127.0.0.1", False, 200),
        ("127.3.4.5", False, 200),
        ("::1", False, 200),
        ("::ffff:127.0.0.1", False, 200),
        ("192.0.2.7", False, 404),  # a documentation address: someone on the network
        ("2001:db8::7", False, 404),
        ("192.0.2.7", True, 200),  # NEWSLETTER_CAPTURED_MAIL_PUBLIC=true
    ],
)
def test_captured_mail_is_shown_to_this_machine_only(tmp_path, client_ip, public, status):
    app = make_app(tmp_path, CAPTURED_MAIL_PUBLIC=public)
    client = app.test_client()
    subscribe(client)
    assert app.test_cli_runner().invoke(args=["outbox", "send"]).exit_code == 0
    [name] = [p.name for p in (tmp_path / "instance" / "outbox").glob("*.eml")]
    for path in ("/outbox/", f"/outbox/{name}", f"/outbox/{name}/html", f"/outbox/{name}/raw"):
        response = client.get(path, environ_base={"REMOTE_ADDR": client_ip})
        assert response.status_code == status, path
        if status == 404:
            assert TEXTS.not_found_title in response.get_data(as_text=True)


def test_a_forwarded_client_behind_a_trusted_proxy_is_not_loopback(tmp_path):
    app = make_app(tmp_path, TRUSTED_PROXIES=1)
    proxied = app.test_client().get(
        "/outbox/",
        headers={"X-Forwarded-For": "192.0.2.7"},
        environ_base={"REMOTE_ADDR": "127.0.0.1"},
    )
    assert proxied.status_code == 404


@pytest.mark.parametrize(
    "header",
    [
        ("X-Forwarded-For", "192.0.2.7"),
        ("X-Real-IP", "192.0.2.7"),
        ("Forwarded", "for=192.0.2.7;proto=https"),
    ],
)
def test_a_proxy_on_this_machine_the_app_was_not_told_of_does_not_make_clients_local(
    tmp_path, header
):
    # The production layout puts the app on 127.0.0.1 behind a proxy: with
    # NEWSLETTER_TRUSTED_PROXIES left at 0, every reader arrived from 127.0.0.1.
    app = make_app(tmp_path)
    client = app.test_client()
    local = {"REMOTE_ADDR": "127.0.0.1"}
    assert client.get("/outbox/", environ_base=local).status_code == 200
    relayed = client.get("/outbox/", headers=[header], environ_base=local)
    assert relayed.status_code == 404
    assert TEXTS.not_found_title in relayed.get_data(as_text=True)


def test_outsiders_cannot_tell_that_there_is_a_viewer(tmp_path):
    # Every answer the viewer's paths give someone on the network is the answer of a
    # site without the viewer (the smtp backend): no redirect from /outbox to /outbox/.
    viewer = make_app(tmp_path / "file")
    client = viewer.test_client()
    subscribe(client)
    assert viewer.test_cli_runner().invoke(args=["outbox", "send"]).exit_code == 0
    [name] = [p.name for p in (tmp_path / "file" / "instance" / "outbox").glob("*.eml")]
    without = make_app(tmp_path / "smtp", MAIL_BACKEND="smtp").test_client()
    outsider = {"REMOTE_ADDR": "192.0.2.7"}
    for path in ("/outbox", "/outbox/", f"/outbox/{name}", f"/outbox/{name}/raw"):
        seen = client.get(path, environ_base=outsider)
        expected = without.get(path, environ_base=outsider)
        assert (seen.status_code, seen.location) == (expected.status_code, None), path
        assert seen.get_data() == expected.get_data(), path
    assert client.get("/outbox", environ_base={"REMOTE_ADDR": "::1"}).status_code == 200


@pytest.mark.parametrize("args", [["db", "upgrade"], ["serve", "--port", "{port}"]])
def test_an_https_site_that_captures_its_mail_is_warned(tmp_path, args):
    app = make_app(tmp_path, PUBLIC_URL="https://news.newsroom.org")
    with socket.socket() as taken:  # serve cannot listen: it warns, then says why it stops
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        taken.listen()
        result = app.test_cli_runner().invoke(args=[a.format(port=port) for a in args])
    warnings = [line for line in result.stderr.splitlines() if line.startswith("Warning:")]
    assert warnings == [
        f"Warning: https://news.newsroom.org is served over https but mail is captured in "
        f"{app.config['OUTBOX_PATH']}, not sent; set NEWSLETTER_MAIL_BACKEND=smtp"
    ]


def two_workers(app, seconds: float, until, **options) -> None:
    """Two threads delivering the outbox pass after pass, as two workers would, until
    ``until()`` (``seconds`` at most: only a hang takes that long). When this returns
    both passes have ended: each message they sent was answered, and the relay records
    a message before it answers, so no copy is still on its way."""
    started = time.monotonic()

    def worker() -> None:
        while time.monotonic() - started < seconds and not until():
            deliver_queued(session_factory(app), outbox_transport(app.config), **options)
            time.sleep(0.05)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 15)
    assert not any(thread.is_alive() for thread in threads), "a worker hung"


@pytest.mark.parametrize("security", ["none", "ssl", "starttls"])
def test_a_slow_relay_never_gets_one_confirmation_twice(tmp_path, monkeypatch, security):
    # The relay stalls on the first RCPT longer than the lease. Before, the lease ran
    # out mid-attempt and a second worker sent the message too; now each attempt ends
    # within half the lease, and the message goes out once. Over TLS the attempt ran on
    # as well: the deadline cut a socket that TLS had already taken over.
    relay = SmtpServer(security=security, folder=tmp_path / "tls").start()
    if relay.certificate:
        monkeypatch.setenv("SSL_CERT_FILE", str(relay.certificate))
    stalled = []

    async def slow_rcpt(server, session, envelope, address, rcpt_options):
        if not stalled:
            stalled.append(address)
            await asyncio.sleep(3)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    relay.handler.handle_RCPT = slow_rcpt
    try:
        app = make_app(tmp_path, **(relay.config() | {"SMTP_TIMEOUT": 30, "OUTBOX_LEASE": 2}))
        subscribe(app.test_client())
        sent = lambda: outbox_states(app) == [OutboxStatus.SENT]  # noqa: E731
        two_workers(app, 60, until=sent, lease=2, backoff=0.2)
        assert stalled and len(relay.messages) == 1
        with session_factory(app)() as session:
            [mail] = session.scalars(select(OutboxMail)).all()
            assert mail.status == OutboxStatus.SENT and mail.attempts == 2
            assert "longer than 1 s" in mail.last_error
    finally:
        relay.stop()


def test_a_pass_told_to_stop_ends_after_the_message_in_flight(tmp_path, smtp_server):
    # The worker's SIGTERM: what was sent is recorded, the rest stays queued.
    app = make_app(tmp_path, **smtp_server.config())
    for n in range(5):
        subscribe(app.test_client(), f"reader{n}@newsroom.org")
    report = deliver_queued(
        session_factory(app),
        outbox_transport(app.config),
        lease=60,
        stopping=lambda: len(smtp_server.messages) >= 2,
    )
    assert report.sent == 2 and len(smtp_server.messages) == 2
    assert outbox_states(app) == [OutboxStatus.SENT] * 2 + [OutboxStatus.QUEUED] * 3


def queue_confirmations(app, count: int) -> None:
    """``count`` sign-ups recorded and acted on: a confirmation each in the outbox."""
    sessions = session_factory(app)
    consent = service.Consent("127.0.0.1", "test", "/")
    with app.app_context(), sessions() as session:
        for email in readers(count):
            signups.record_request(session, 1, normalize_address(email), consent)
        signups.act_on_left_requests(sessions, app.config | {"SIGNUP_WORK": "worker"})


def recipients(relay) -> Counter:
    return Counter(to for received in relay.messages for to in received.recipients)


def test_kill_9_mid_delivery_sends_again_only_the_message_in_flight(tmp_path, smtp_server):
    # Results are committed 20 at a time; the journal keeps what the relay took
    # meanwhile, so a killed process's next run sends none of them again.
    total, kills = 300, 3
    app = make_app(tmp_path, **smtp_server.config())
    queue_confirmations(app, total)
    env = command_env(app, smtp_server)
    chosen = random.Random(seed := random.randrange(2**32))
    for _ in range(kills):
        process = subprocess.Popen(
            [NEWSLETTER_BIN, "outbox", "send"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        target = len(smtp_server.messages) + chosen.randint(1, 60)
        deadline = time.monotonic() + 60
        while len(smtp_server.messages) < target and time.monotonic() < deadline:
            time.sleep(0.005)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    assert len(smtp_server.messages) < total, f"seed {seed}"
    assert list(journal_folder(app.instance_path).glob("outbox.*")), "a killed run's journal"

    done = app.test_cli_runner().invoke(args=["outbox", "send"])
    assert done.exit_code == 0, done.output
    counts = recipients(smtp_server)
    assert set(counts) == set(readers(total)), f"seed {seed}"  # nobody missed
    twice = sum(counts.values()) - total
    assert twice <= kills, f"{twice} second copies; seed {seed}"  # one in flight per kill
    assert outbox_states(app) == [OutboxStatus.SENT] * total
    assert not list(journal_folder(app.instance_path).iterdir())  # folded, then removed


def test_journals_of_dead_or_failed_passes_are_recorded_not_sent_again(tmp_path, smtp_server):
    app = make_app(tmp_path, **smtp_server.config())
    queue_confirmations(app, 5)
    sessions = session_factory(app)
    with sessions() as session:
        ids = list(session.scalars(select(OutboxMail.id).order_by(OutboxMail.id)))
    folder = journal_folder(app.instance_path)
    gone = subprocess.Popen(["true"])
    gone.wait()  # reaped: its pid is dead now
    dead = f"{host_name()}:{gone.pid}:aaaaaa"  # a pass killed mid-send
    left = {
        dead: ids[0],
        f"{host_name()}:{os.getpid()}:bbbbbb": ids[1],  # a pass here that could not record
        f"elsewhere:{os.getpid()}:cccccc": ids[2],  # another host's: its lease tells
    }
    for sender, message_id in left.items():
        journal = Journal(folder, "outbox", sender)
        journal.accepted(message_id)
        journal.close(recorded=False)
    with sessions() as session:  # the dead pass held two claims for five minutes more
        session.execute(
            update(OutboxMail)
            .where(OutboxMail.id.in_([ids[0], ids[3]]))
            .values(claimed_by=dead, claimed_until=utcnow() + timedelta(minutes=5))
        )
        session.commit()

    report = deliver_queued(sessions, outbox_transport(app.config), lease=60, journal=folder)
    # Recorded from the journals, not sent; the dead pass's other claim goes at once.
    assert report.sent == 3
    assert sorted(recipients(smtp_server)) == sorted(readers(5)[2:])
    assert outbox_states(app) == [OutboxStatus.SENT] * 5
    kept = [path.name for path in folder.iterdir()]
    assert kept == [f"outbox.elsewhere.{os.getpid()}.cccccc.journal"]


def test_a_relay_slower_than_the_lease_per_claim_gets_each_confirmation_once(tmp_path, smtp_server):
    # 12 messages claimed at once take 2.4 s at this relay's pace, against a 2 s lease:
    # a pass starts sending only in the first quarter of its lease and then claims
    # again, so the other pass never takes back a claim still being sent.
    smtp_server.handler.delay = 0.2
    app = make_app(tmp_path, **smtp_server.config(), OUTBOX_LEASE=2)  # attempts cut at 1 s
    queue_confirmations(app, 12)
    two_workers(
        app,
        60,
        until=lambda: outbox_states(app) == [OutboxStatus.SENT] * 12,
        lease=2,
        journal=journal_folder(app.instance_path),
    )
    assert recipients(smtp_server) == Counter(readers(12))
    assert outbox_states(app) == [OutboxStatus.SENT] * 12


def test_a_pass_ended_by_an_error_puts_the_messages_it_did_not_try_back_at_once(
    tmp_path, smtp_server
):
    # Ctrl-C (or a full disk, or the database going away) between two messages: those
    # not tried are free for the next pass now, not in five minutes, their attempt
    # not counted.
    app = make_app(tmp_path, **smtp_server.config())
    queue_confirmations(app, 5)

    def interrupted() -> bool:
        if len(smtp_server.messages) == 2:
            raise KeyboardInterrupt
        return False

    with pytest.raises(KeyboardInterrupt):
        deliver_queued(
            session_factory(app), outbox_transport(app.config), lease=300, stopping=interrupted
        )
    assert len(smtp_server.messages) == 2
    with session_factory(app)() as session:
        rows = session.execute(
            select(OutboxMail.status, OutboxMail.claimed_by, OutboxMail.attempts).order_by(
                OutboxMail.id
            )
        ).all()
    assert [row.status for row in rows] == [OutboxStatus.SENT] * 2 + [OutboxStatus.QUEUED] * 3
    assert [(row.claimed_by, row.attempts) for row in rows[2:]] == [(None, 0)] * 3

    report = deliver_queued(session_factory(app), outbox_transport(app.config), lease=300)
    assert report.sent == 3 and recipients(smtp_server) == Counter(readers(5))


def test_a_journal_folder_that_cannot_be_made_does_not_stop_the_mail(tmp_path, smtp_server, caplog):
    # The instance folder read-only, or a file where the folder should be: each
    # message is then recorded by its own commit, and the operator is told.
    app = make_app(tmp_path, **smtp_server.config())
    queue_confirmations(app, 3)
    blocked = tmp_path / "send-journals"
    blocked.write_text("a file, not a folder")
    report = deliver_queued(
        session_factory(app), outbox_transport(app.config), lease=60, journal=blocked
    )
    assert report.sent == 3 and recipients(smtp_server) == Counter(readers(3))
    assert outbox_states(app) == [OutboxStatus.SENT] * 3
    assert "no journal" in caplog.text
    assert not outbox._OPEN  # no name left behind to shield a journal that is not there


def test_a_staff_command_never_starts_the_web_servers_outbox_thread(tmp_path, smtp_server):
    # With the default settings (the thread on), an import queues confirmations and
    # wakes the outbox: only a web server's thread may take them, never the command's.
    app = make_app(tmp_path, **smtp_server.config(), OUTBOX_WORKER=True)
    csv = tmp_path / "readers.csv"
    csv.write_text("email\nreader@newsroom.org\n")
    result = app.test_cli_runner().invoke(
        args=["subscribers", "import", str(csv), "--newsletter", "explaining-ukraine"]
    )
    assert result.exit_code == 0, result.output
    assert app.extensions["outbox_worker"]._thread is None  # never started
    assert outbox_states(app) == [OutboxStatus.QUEUED]  # left to the worker
