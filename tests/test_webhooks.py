"""Webhooks: every change's event written with it, signed as Standard Webhooks says,
delivered by the worker once and in order per subscriber, retried while the receiver is
down, and none for a change that rolled back."""

import base64
import subprocess
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import select, update
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from emails.addresses import normalize_address
from tests import inbound_samples as samples
from tests.helpers import (
    NEWSLETTER_BIN,
    SmtpServer,
    app_with_issue,
    command_env,
    confirm_path,
    free_port,
    make_app,
    press_confirm,
    start_worker,
    stop,
    subscribe,
)
from webapp.catalog import newsletter_id_by_slug
from webapp.config import ConfigError
from webapp.db import session_factory, utcnow
from webapp.inbound.store import take_in
from webapp.issues.queue import finish_done, take_list
from webapp.mailout.models import Delivery, DeliveryStatus
from webapp.mailout.verp import Verp
from webapp.models import Issue, Subscriber
from webapp.subscribers.service import Consent
from webapp.subscribers.service import subscribe as service_subscribe
from webapp.webhooks.delivery import deliver_webhooks
from webapp.webhooks.models import WebhookMessage, WebhookStatus

NEWSLETTER = "explaining-ukraine"
SECRET = "whsec_" + base64.b64encode(b"a receiver's shared secret, 32b!").decode()


class Receiver:
    """A webhook receiver on loopback that checks each signature with the
    ``standardwebhooks`` package and keeps what it took, in arrival order."""

    def __init__(self, port: int | None = None, secret: str = SECRET):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/hooks/newsletter"
        self.verifier = Webhook(secret)
        self.received: list[tuple[str, dict]] = []  # (webhook-id, payload)
        self.refused: list[str] = []  # signatures that did not verify
        self.answer = 204
        self.delay = 0.0  # seconds before each answer
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> "Receiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                time.sleep(receiver.delay)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                try:
                    data = receiver.verifier.verify(body, dict(self.headers))
                except WebhookVerificationError as exc:
                    receiver.refused.append(str(exc))
                    self.send_response(400)
                else:
                    if receiver.answer < 300:
                        receiver.received.append((self.headers["webhook-id"], data))
                    self.send_response(receiver.answer)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def wait_for(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.received) < count:
            time.sleep(0.05)


@pytest.fixture
def receiver():
    server = Receiver().start()
    yield server
    server.stop()


def hooked_app(tmp_path, url: str, **config):
    return make_app(tmp_path, WEBHOOK_URLS=url, WEBHOOK_SECRET=SECRET, **config)


def messages(app) -> list[WebhookMessage]:
    with session_factory(app)() as session:
        return session.scalars(select(WebhookMessage).order_by(WebhookMessage.id)).all()


def deliver_all(app, rounds: int = 50):
    """Worker passes until nothing is pending (bounded)."""
    for _ in range(rounds):
        deliver_webhooks(session_factory(app), app.config)
        if all(m.status != WebhookStatus.PENDING for m in messages(app)):
            return
        time.sleep(0.05)


def sign_up_and_confirm(app, client, email):
    subscribe(client, email)
    press_confirm(client, confirm_path(app))


def test_every_event_reaches_a_receiver_that_was_down_once_and_in_order(any_db_app, tmp_path):
    port = free_port()  # nothing listens there yet: the receiver is down
    url = f"http://127.0.0.1:{port}/hooks/newsletter"
    relay = SmtpServer().start()
    db_url = any_db_app.config["DATABASE_URL"]
    app = hooked_app(tmp_path, url, DATABASE_URL=db_url, MAIL_FROM="letters@newsroom.org")
    app.config.update(relay.config())
    client = app.test_client()
    people = ["olena@newsroom.org", "taras@newsroom.org", "iryna@newsroom.org"]
    for email in people:
        sign_up_and_confirm(app, client, email)
    runner = app.test_cli_runner()
    assert runner.invoke(args=["digest", "build", NEWSLETTER]).exit_code == 0
    hooks = {"WEBHOOK_URLS": url, "WEBHOOK_SECRET": SECRET}
    env = command_env(app, relay, MAIL_FROM="letters@newsroom.org", **hooks)
    send = [NEWSLETTER_BIN, "digest", "send", NEWSLETTER, "1", "--yes"]
    sent = subprocess.run(send, env=env, capture_output=True, text=True, timeout=120)
    assert sent.returncode == 0, sent.stderr
    verp = Verp.from_config(app.config)
    with session_factory(app)() as session:
        rows = session.execute(select(Subscriber.email, Delivery.id).join(Delivery)).all()
    senders = {email: verp.sender("d", delivery_id) for email, delivery_id in rows}
    with app.app_context():
        bounce = samples.postfix_dsn(senders[people[1]], people[1])
        take_in(session_factory(app), app.config, bounce, source="file")
        complaint = samples.arf_complaint(people[0], senders[people[0]])
        take_in(session_factory(app), app.config, complaint, source="file")
    assert runner.invoke(args=["subscribers", "delete", people[1]]).exit_code == 0
    written = messages(app)
    expected_types = {
        "subscription.created",
        "subscription.confirmed",
        "subscription.unsubscribed",
        "subscriber.erased",
        "issue.sent",
        "delivery.bounced",
        "delivery.complained",
    }
    assert {m.type for m in written} == expected_types

    workers = [start_worker(app, relay, WEBHOOK_RETRY_DELAY=0.1, **hooks)]
    if not db_url.startswith("sqlite"):
        workers.append(start_worker(app, relay, WEBHOOK_RETRY_DELAY=0.1, **hooks))
    receiver = Receiver(port)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(m.attempts >= 2 for m in messages(app)[:1]):
            time.sleep(0.1)
        failing = runner.invoke(args=["webhooks", "list", "--failed"]).output
        assert "Connection refused" in failing and "subscription.created" in failing
        receiver.start()  # back up: everything waiting arrives
        deadline = time.monotonic() + 60
        while not all(m.status == WebhookStatus.DELIVERED for m in messages(app)):
            assert time.monotonic() < deadline, "not every event was recorded delivered"
            time.sleep(0.05)
    finally:
        outputs = [stop(worker) for worker in workers]
        receiver.stop()
        relay.stop()
    # Stopped by SIGTERM, a worker ends after the requests in flight (no job was left
    # running): a duplicate claimed or under way has arrived by the time it exited.
    assert all(worker.returncode == 0 for worker in workers), outputs
    assert not any("Jobs still running" in err for _, err in outputs), outputs
    assert receiver.refused == []
    ids = Counter(msg_id for msg_id, _ in receiver.received)
    assert set(ids) == {m.msg_id for m in written} and max(ids.values()) == 1  # each once
    assert all(m.status == WebhookStatus.DELIVERED for m in messages(app))

    def story(email):  # what the receiver heard about one reader, in arrival order
        return [
            (data["type"], data["data"].get("how"))
            for _, data in receiver.received
            if data["data"].get("email") == email
        ]

    assert story(people[0]) == [
        ("subscription.created", "form"),
        ("subscription.confirmed", "link"),
        ("delivery.complained", None),
        ("subscription.unsubscribed", "complaint"),
    ]
    assert story(people[1]) == [
        ("subscription.created", "form"),
        ("subscription.confirmed", "link"),
        ("delivery.bounced", None),
        ("subscriber.erased", "staff"),
    ]
    sent_event = next(data for _, data in receiver.received if data["type"] == "issue.sent")
    assert sent_event["data"]["newsletter"] == NEWSLETTER
    assert sent_event["data"]["number"] == 1 and sent_event["data"]["delivered"] == 3
    bounced = next(data for _, data in receiver.received if data["type"] == "delivery.bounced")
    assert bounced["data"]["kind"] == "hard" and bounced["data"]["issue"] == 1


def test_a_sign_up_that_rolls_back_sends_no_event(tmp_path, receiver):
    app = hooked_app(tmp_path, receiver.url)
    consent = Consent(ip="127.0.0.1", user_agent="test", source="/")
    with app.app_context(), session_factory(app)() as session:
        newsletter_id = newsletter_id_by_slug(session, NEWSLETTER)
        address = normalize_address("rolled.back@newsroom.org")
        service_subscribe(session, newsletter_id, address, consent, 600, 5)
        assert session.scalar(select(WebhookMessage.type)) == "subscription.created"
        session.rollback()  # the change failed after its event was written
    subscribe(app.test_client(), "kept@newsroom.org")
    deliver_all(app)
    assert [data["data"]["email"] for _, data in receiver.received] == ["kept@newsroom.org"]
    assert [m.email for m in messages(app)] == ["kept@newsroom.org"]


def test_the_payload_is_type_timestamp_and_data_signed_with_the_secret(tmp_path, receiver):
    app = hooked_app(tmp_path, receiver.url)
    subscribe(app.test_client(), "reader@newsroom.org", newsletter="ukraina-shchodnia")
    deliver_all(app)
    ((msg_id, body),) = receiver.received
    assert set(body) == {"type", "timestamp", "data"}
    assert body["type"] == "subscription.created"
    assert body["timestamp"].endswith("Z") and body["timestamp"] == body["data"]["time"]
    assert body["data"] == {
        "event_id": msg_id,
        "time": body["timestamp"],
        "email": "reader@newsroom.org",
        "newsletter": "ukraina-shchodnia",
        "how": "form",
    }
    assert msg_id.startswith("msg_")


def test_a_receiver_that_keeps_failing_is_retried_then_failed_and_retried_by_hand(
    tmp_path, receiver
):
    app = hooked_app(tmp_path, receiver.url, WEBHOOK_RETRY_DELAY=0.05, WEBHOOK_RETRY_FOR=1)
    receiver.answer = 503
    subscribe(app.test_client(), "reader@newsroom.org")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and messages(app)[0].status == WebhookStatus.PENDING:
        deliver_webhooks(session_factory(app), app.config)
        time.sleep(0.05)
    (message,) = messages(app)
    assert message.status == WebhookStatus.FAILED
    assert message.attempts >= 3  # 0.05 s doubling: several tries within the second
    assert message.last_error.startswith("HTTP 503")
    runner = app.test_cli_runner()
    listed = runner.invoke(args=["webhooks", "list", "--failed"]).output
    assert f"{message.id:>7}" in listed and "failed" in listed and "HTTP 503" in listed
    receiver.answer = 200
    deliver_webhooks(session_factory(app), app.config)
    assert receiver.received == []  # failed stays failed
    result = runner.invoke(args=["webhooks", "retry", str(message.id)])
    assert result.exit_code == 0, result.output
    deliver_webhooks(session_factory(app), app.config)
    assert [(m.status, m.attempts) for m in messages(app)] == [(WebhookStatus.DELIVERED, 1)]
    assert [msg_id for msg_id, _ in receiver.received] == [message.msg_id]  # the same id
    assert "0 message(s)" in runner.invoke(args=["webhooks", "list", "--failed"]).output
    missing = runner.invoke(args=["webhooks", "retry", "999"])
    assert missing.exit_code == 1 and "no webhook message 999" in missing.output


def test_a_later_event_waits_for_an_earlier_one_about_the_same_reader(tmp_path, receiver):
    app = hooked_app(tmp_path, receiver.url, WEBHOOK_RETRY_DELAY=60)
    client = app.test_client()
    receiver.answer = 500
    subscribe(client, "first@newsroom.org")
    deliver_webhooks(session_factory(app), app.config)  # fails: retried in a minute
    receiver.answer = 200
    press_confirm(client, confirm_path(app))  # its confirmation may not overtake it
    subscribe(client, "second@newsroom.org")  # someone else's event need not wait
    deliver_webhooks(session_factory(app), app.config)
    assert [(d["type"], d["data"]["email"]) for _, d in receiver.received] == [
        ("subscription.created", "second@newsroom.org")
    ]


def test_a_redirect_is_not_followed(tmp_path, receiver):
    class Redirect(BaseHTTPRequestHandler):
        def do_POST(self):
            self.send_response(307)
            self.send_header("Location", receiver.url)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        app = hooked_app(tmp_path, f"http://127.0.0.1:{server.server_port}/old")
        subscribe(app.test_client(), "reader@newsroom.org")
        report = deliver_webhooks(session_factory(app), app.config)
    finally:
        server.shutdown()
        server.server_close()
    assert report.retry == 1 and "HTTP 307" in report.last_error
    assert receiver.received == []


def test_erasure_forgets_what_was_delivered_about_the_address(tmp_path, receiver):
    app = hooked_app(tmp_path, receiver.url)
    subscribe(app.test_client(), "leaving@newsroom.org")
    deliver_all(app)
    runner = app.test_cli_runner()
    receiver.answer = 500
    subscribe(app.test_client(), "leaving@newsroom.org", newsletter="ukraine-daily")
    deliver_webhooks(session_factory(app), app.config)  # refused: pending, retried later
    receiver.answer = 204
    result = runner.invoke(args=["subscribers", "delete", "leaving@newsroom.org"])
    assert result.exit_code == 0, result.output
    assert [(m.type, m.status) for m in messages(app)] == [
        ("subscription.created", WebhookStatus.PENDING),  # not delivered yet: kept
        ("subscriber.erased", WebhookStatus.PENDING),
    ]
    with session_factory(app)() as session:  # its retry is due now
        session.execute(update(WebhookMessage).values(next_attempt_at=utcnow()))
        session.commit()
    deliver_all(app)
    assert [d["type"] for _, d in receiver.received] == [
        "subscription.created",
        "subscription.created",
        "subscriber.erased",
    ]
    # Once the receiver heard of the erasure, no message here names the address.
    assert [(m.type, m.email) for m in messages(app)] == [
        ("subscription.created", None),
        ("subscriber.erased", None),
    ]


def test_without_urls_nothing_is_written(tmp_path):
    app = make_app(tmp_path)
    subscribe(app.test_client(), "reader@newsroom.org")
    assert messages(app) == []


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"WEBHOOK_URLS": "http://127.0.0.1:9/h"}, "needs NEWSLETTER_WEBHOOK_SECRET"),
        ({"WEBHOOK_URLS": "ftp://127.0.0.1/h", "WEBHOOK_SECRET": SECRET}, "not an http(s) URL"),
        ({"WEBHOOK_SECRET": "whsec_c2hvcnQ="}, "base64 of 16 bytes"),
        ({"WEBHOOK_SECRET": "not base64 at all!"}, "base64 of 16 bytes"),
        (
            {"WEBHOOK_URLS": "https://crm:pw@127.0.0.1/h", "WEBHOOK_SECRET": SECRET},
            "no user:password@ in the URL",
        ),
        (
            {"WEBHOOK_URLS": "http://127.0.0.1/h", "WEBHOOK_SECRET": SECRET, "WEBHOOK_TIMEOUT": 0},
            "must be more than 0 seconds",
        ),
    ],
)
def test_webhook_settings_that_cannot_work_are_refused_in_one_line(tmp_path, settings, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make_app(tmp_path, **settings)


def test_several_urls_each_get_every_event(tmp_path, receiver):
    other = Receiver().start()
    try:
        app = make_app(
            tmp_path,
            WEBHOOK_URLS=f"{receiver.url}, {other.url}",
            WEBHOOK_SECRET=SECRET,
        )
        subscribe(app.test_client(), "reader@newsroom.org")
        deliver_all(app)
    finally:
        other.stop()
    assert len(receiver.received) == len(other.received) == 1
    assert receiver.received[0][0] == other.received[0][0]  # one event, one id


def test_a_new_secret_is_one_the_settings_take(tmp_path):
    app = make_app(tmp_path)
    result = app.test_cli_runner().invoke(args=["webhooks", "secret"])
    secret = result.output.strip()
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    other = make_app(tmp_path / "other", WEBHOOK_URLS="http://127.0.0.1:9/h", WEBHOOK_SECRET=secret)
    assert other.config["WEBHOOK_SECRET"] == secret


def test_a_receiver_that_is_down_does_not_hold_up_the_others(tmp_path, receiver):
    down = f"http://127.0.0.1:{free_port()}/hooks"
    first = hooked_app(tmp_path, down)
    client = first.test_client()
    for n in range(8):  # queued for the dead receiver alone
        subscribe(client, f"early{n}@newsroom.org")
    both = hooked_app(
        tmp_path / "both",
        f"{down} {receiver.url}",
        DATABASE_URL=first.config["DATABASE_URL"],
    )
    for n in range(3):
        subscribe(both.test_client(), f"later{n}@newsroom.org")
    report = deliver_webhooks(session_factory(both), both.config, batch=4)
    assert report.delivered == 3 and len(receiver.received) == 3
    assert "127.0.0.1" in report.last_error and "/hooks" not in report.last_error


def test_a_slow_receiver_gets_the_pass_budget_not_the_whole_pass(tmp_path, receiver):
    app = hooked_app(tmp_path, receiver.url)
    for n in range(4):
        subscribe(app.test_client(), f"reader{n}@newsroom.org")
    receiver.delay = 0.4
    started = time.monotonic()
    report = deliver_webhooks(session_factory(app), app.config, budget=0.5)
    assert report.delivered in (1, 2) and time.monotonic() - started < 1.5
    receiver.delay = 0
    deliver_all(app)
    assert len(receiver.received) == 4


def test_a_finished_send_nobody_marked_is_announced_once(tmp_path, receiver, smtp_server):
    app = app_with_issue(tmp_path, smtp_server, 3, WEBHOOK_URLS=receiver.url, WEBHOOK_SECRET=SECRET)
    with session_factory(app)() as session:
        # A sender recorded its last reader and stopped before it marked the send finished.
        take_list(session, session.scalars(select(Issue)).one())
        session.execute(update(Delivery).values(status=DeliveryStatus.SENT))
        session.commit()
        assert finish_done(session) == 1
        assert finish_done(session) == 0
    deliver_all(app)
    sent = [d for _, d in receiver.received if d["type"] == "issue.sent"]
    assert len(sent) == 1 and sent[0]["data"]["delivered"] == 3
