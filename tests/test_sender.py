"""The sending core without processes or Flask: one Sender, in this process, against a
real SMTP server on loopback. The relay's answers decide: errors in a row pause, a 4xx
defers, a 5xx at RCPT suppresses, a relay that cannot be reached is tried again."""

import socket
import subprocess
import sys

import dkim
import pytest
from sqlalchemy import select

from emails.dkim import Signer
from emails.transport import SmtpSettings, SmtpTransport
from tests.helpers import ROOT, SmtpServer, app_with_issue, dkim_key, free_port, readers
from webapp.db import engine, session_factory
from webapp.issues.mail import IssueMail
from webapp.issues.queue import (
    claim,
    counts,
    host_name,
    release_dead_local_claims,
    take_list,
)
from webapp.issues.sender import Sender, SendSettings
from webapp.links import reader_links
from webapp.mailout.models import Delivery, DeliveryStatus
from webapp.models import Issue, Subscriber


@pytest.fixture
def relay():
    server = SmtpServer().start()
    yield server
    server.stop()


def sender_for(app, port: int, **settings) -> Sender:
    """A Sender of issue 1 as a forked sender gets it: an engine and plain things."""
    with app.app_context(), session_factory(app)() as session:
        issue = session.scalars(select(Issue)).one()
        take_list(session, issue)
        mail = IssueMail(issue, app.config, reader_links())
    transport = SmtpTransport(SmtpSettings(host="127.0.0.1", port=port, timeout=5))
    defaults = {"connections": 1, "retry_delay": 60, "pause_after": 10}
    return Sender(engine(app), issue.id, transport, mail, SendSettings(**defaults | settings))


def deliveries(app) -> dict[str, Delivery]:
    with session_factory(app)() as session:
        rows = session.execute(
            select(Subscriber.email, Delivery).join(
                Subscriber, Subscriber.id == Delivery.subscriber_id
            )
        )
        return {email: delivery for email, delivery in rows}


def suppressed(app) -> set[str]:
    with session_factory(app)() as session:
        return set(
            session.scalars(select(Subscriber.email).where(Subscriber.suppressed_at.isnot(None)))
        )


def test_the_sending_core_loads_without_flask():
    code = (
        "import sys, webapp.issues.sender, webapp.issues.queue, webapp.issues.mail, "
        "webapp.mailout.relay, webapp.mailout.journal, webapp.mailout.senders, "
        "webapp.mailout.verp; sys.exit('flask' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_every_reader_once(tmp_path, relay):
    app = app_with_issue(tmp_path, relay, 25)
    report = sender_for(app, relay.port).run()
    assert report.sent == 25 and report.paused is None
    assert sorted(r for m in relay.messages for r in m.recipients) == sorted(readers(25))
    assert {d.status for d in deliveries(app).values()} == {DeliveryStatus.SENT}


def test_a_4xx_defers_that_reader_and_the_send_goes_on(tmp_path, relay):
    app = app_with_issue(tmp_path, relay, 5)
    relay.handler.defer["reader2@newsroom.org"] = 1
    report = sender_for(app, relay.port, retry_delay=0.3).run()  # waits for the deferred
    assert report.sent == 5 and report.paused is None
    order = [m.recipients[0] for m in relay.messages]
    assert order[-1] == "reader2@newsroom.org" and len(order) == 5  # the others went first
    deferred = deliveries(app)["reader2@newsroom.org"]
    assert deferred.status == DeliveryStatus.SENT and deferred.attempts == 2
    assert "451" in deferred.last_error  # the first answer is kept
    assert suppressed(app) == set()


def test_a_5xx_for_the_recipient_fails_and_suppresses_only_that_address(tmp_path, relay):
    app = app_with_issue(tmp_path, relay, 5)
    relay.handler.refuse["reader3@newsroom.org"] = "550 5.1.1 No such user"
    report = sender_for(app, relay.port).run()
    assert report.sent == 4
    refused = deliveries(app)["reader3@newsroom.org"]
    assert refused.status == DeliveryStatus.FAILED and "550" in refused.last_error
    assert suppressed(app) == {"reader3@newsroom.org"}


def test_errors_in_a_row_pause_and_leave_their_readers_untouched(tmp_path, relay):
    app = app_with_issue(tmp_path, relay, 8)
    relay.handler.refuse_all = "554 5.7.1 Relay access denied"
    report = sender_for(app, relay.port, pause_after=3).run()
    assert report.paused and "554" in report.paused and report.sent == 0
    with session_factory(app)() as session:
        issue_id = session.scalars(select(Issue.id)).one()
        found = counts(session, issue_id)
    assert found[DeliveryStatus.QUEUED] == 8  # back in the queue, not failed
    assert suppressed(app) == set()  # the relay's fault: nobody suppressed
    assert {d.attempts for d in deliveries(app).values()} == {0}


def test_a_relay_that_cannot_be_reached_is_tried_again_then_pauses(tmp_path, relay):
    app = app_with_issue(tmp_path, relay, 3)
    report = sender_for(app, free_port(), pause_after=3).run()  # nothing listens there
    assert report.paused and report.sent == 0
    assert {d.status for d in deliveries(app).values()} == {DeliveryStatus.QUEUED}
    assert {d.attempts for d in deliveries(app).values()} == {0}


@pytest.mark.parametrize("pipelining", [False, True], ids=["one by one", "pipelined"])
def test_lines_that_start_with_a_dot_arrive_as_they_were_written(relay, pipelining):
    # A digest's style sheet starts lines with dots; a lone dot would end the message.
    relay.handler.pipelining = pipelining
    message = (
        b"From: letters@news.test\r\nSubject: dots\r\n\r\n"
        b".outer { width: 100%; }\r\n..two\r\n.\r\nafter the lone dot\r\n."
    )
    with SmtpTransport(SmtpSettings(host="127.0.0.1", port=relay.port, timeout=5)) as transport:
        transport.send(message, "letters@news.test", ["reader@news.test"])
    [received] = relay.messages
    assert received.data == message + b"\r\n"


def test_a_signed_message_without_a_final_line_end_verifies_as_the_relay_gets_it(tmp_path, relay):
    # SMTP ends the message's last line; a space before that end is then trailing
    # white space, which relaxed canonicalization drops: the signer must see it so.
    path, record = dkim_key(tmp_path)
    signer = Signer(domain="news.test", selector="s1", private_key=path.read_bytes())
    message = b"From: letters@news.test\r\nTo: reader@news.test\r\nSubject: s\r\n\r\nlast "
    with SmtpTransport(SmtpSettings(host="127.0.0.1", port=relay.port, timeout=5)) as transport:
        transport.send(signer.sign(message), "letters@news.test", ["reader@news.test"])
    [received] = relay.messages
    assert dkim.verify(received.data, dnsfunc=lambda name, timeout=5: record)


def test_a_lost_connection_is_reopened_and_the_same_reader_tried_again(tmp_path, relay):
    app = app_with_issue(tmp_path, relay, 6)
    sender = sender_for(app, relay.port)
    original = sender.transport.send
    calls = []

    def send_then_drop(message, sender_address, recipients):
        calls.append(recipients[0])
        if len(calls) == 3:  # the relay restarts under us: the connection is gone
            relay.stop()
            relay.start()
        return original(message, sender_address, recipients)

    sender.transport.send = send_then_drop
    report = sender.run()
    assert report.sent == 6 and report.paused is None
    assert sorted(r for m in relay.messages for r in m.recipients) == sorted(readers(6))


def test_errors_held_when_the_send_is_stopped_go_back_untouched(tmp_path, relay):
    # Another sender paused the send (or Ctrl-C) while this one had a few errors in a
    # row, fewer than pause_after: nothing showed whose fault they were.
    app = app_with_issue(tmp_path, relay, 8)
    relay.handler.refuse_all = "554 5.7.1 Relay access denied"
    tries = []
    sender = sender_for(app, relay.port, pause_after=10)
    sender.should_stop = lambda: len(tries) >= 4
    original = sender.transport.send

    def send_and_count(message, sender_address, recipients):
        tries.append(recipients[0])
        return original(message, sender_address, recipients)

    sender.transport.send = send_and_count
    report = sender.run()
    assert report.sent == 0 and report.paused is None
    assert suppressed(app) == set()
    assert {d.status for d in deliveries(app).values()} == {DeliveryStatus.QUEUED}
    assert {d.attempts for d in deliveries(app).values()} == {0}


def test_hosts_sharing_a_long_prefix_keep_each_others_claims(tmp_path, relay, monkeypatch):
    # Container names often share their first 40 characters and more.
    first = "newsletter-production-worker-deployment-7f9c4b-abcde"
    second = "newsletter-production-worker-deployment-7f9c4b-fghij"
    app = app_with_issue(tmp_path, relay, 3)
    with session_factory(app)() as session:
        issue = session.scalars(select(Issue)).one()
        take_list(session, issue)
        monkeypatch.setattr(socket, "gethostname", lambda: first)
        claimed = claim(session, issue.id, f"{host_name()}:999999999:abc", 10, 300)
        assert len(claimed) == 3  # held by a sender on the first host; its pid means nothing here
        monkeypatch.setattr(socket, "gethostname", lambda: second)
        assert release_dead_local_claims(session, issue.id) == 0
        assert counts(session, issue.id)[DeliveryStatus.SENDING] == 3
        monkeypatch.setattr(socket, "gethostname", lambda: first)
        assert release_dead_local_claims(session, issue.id) == 3  # its own host: dead, put back


def test_refusals_with_no_delivery_to_show_the_relay_works_suppress_nobody(tmp_path, relay):
    # Fewer errors than pause_after, and not one message accepted: they may be the
    # relay's (it refuses everyone). They used to be recorded at the batch's end.
    app = app_with_issue(tmp_path, relay, 3)
    relay.handler.refuse_all = "554 5.7.1 Relay access denied"
    report = sender_for(app, relay.port, pause_after=10).run()
    assert report.paused and "554" in report.paused and report.sent == 0
    assert suppressed(app) == set()
    assert {(d.status, d.attempts) for d in deliveries(app).values()} == {
        (DeliveryStatus.QUEUED, 0)
    }


def test_a_refusal_after_deliveries_is_the_address_fault(tmp_path, relay):
    app = app_with_issue(tmp_path, relay, 4)
    relay.handler.refuse["reader3@newsroom.org"] = "550 5.1.1 No such user"  # the last one
    report = sender_for(app, relay.port).run()
    assert report.sent == 3 and report.paused is None
    assert suppressed(app) == {"reader3@newsroom.org"}


@pytest.mark.parametrize(
    ("live", "other"),
    [
        ("worker-1", "worker_1"),  # "_" is a LIKE wildcard: worker_1:% matched worker-1:…
        ("Mail-Relay", "mail-relay"),  # SQLite's LIKE ignores case
    ],
)
def test_a_host_releases_only_claims_under_its_exact_name(
    tmp_path, relay, monkeypatch, live, other
):
    app = app_with_issue(tmp_path, relay, 3)
    with session_factory(app)() as session:
        issue = session.scalars(select(Issue)).one()
        take_list(session, issue)
        monkeypatch.setattr(socket, "gethostname", lambda: live)
        # A live sender there; its pid means nothing on this host, where it looks dead.
        assert len(claim(session, issue.id, f"{host_name()}:999999999:abc", 10, 300)) == 3
        monkeypatch.setattr(socket, "gethostname", lambda: other)
        assert release_dead_local_claims(session, issue.id) == 0
        assert counts(session, issue.id)[DeliveryStatus.SENDING] == 3
