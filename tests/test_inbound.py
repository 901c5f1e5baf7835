"""Hearing back: each real format classified and acted on; nothing else touched."""

import smtplib
import threading
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import event, select, update

from tests import inbound_samples as samples
from tests.helpers import (
    app_with_issue,
    free_port,
    history,
    readers,
    sent_to_readers,
    sqlite_only,
    subscribe,
    until_handled,
)
from webapp.db import engine, session_factory, utcnow
from webapp.inbound.classify import classify
from webapp.inbound.models import InboundMessage
from webapp.inbound.report import ReportKind
from webapp.inbound.server import InboundController, InboundHandler
from webapp.inbound.store import drop_old_raw, store, take_in
from webapp.links import unsubscribe_url
from webapp.mailout.models import Delivery, OutboxMail
from webapp.mailout.verp import Verp
from webapp.models import Subscriber, Subscription, SubscriptionStatus
from webapp.privacy.data import personal_data
from webapp.subscribers.mail import queue_welcome

MAIL_FROM = "letters@newsroom.org"


@pytest.fixture
def sent(tmp_path, smtp_server):
    """An app whose issue 1 went to five readers: (app, {reader: their VERP sender})."""
    app = app_with_issue(tmp_path, smtp_server, 5, MAIL_FROM=MAIL_FROM)
    return app, sent_to_readers(app)


def hear(app, raw: bytes, recipient: str | None = None) -> InboundMessage:
    with app.app_context():
        return take_in(session_factory(app), app.config, raw, source="file", recipient=recipient)


def reader(app, email: str) -> Subscriber:
    with session_factory(app)() as session:
        return session.scalars(select(Subscriber).where(Subscriber.email == email)).one()


def suppressed(app) -> set[str]:
    with session_factory(app)() as session:
        query = select(Subscriber.email).where(Subscriber.suppressed_at.is_not(None))
        return set(session.scalars(query))


def feedback(app, email: str) -> tuple[str | None, str | None]:
    with session_factory(app)() as session:
        query = select(Delivery.feedback, Delivery.feedback_code).join(Subscriber)
        return session.execute(query.where(Subscriber.email == email)).one()


@pytest.mark.parametrize(
    "make, code",
    [
        (samples.postfix_dsn, "5.1.1"),
        (samples.exchange_ndr, "5.1.10"),
        (samples.gmail_dsn, "5.1.1"),
        (samples.exim_bounce, "5.1.1"),
        (samples.yahoo_bounce, None),
    ],
    ids=["postfix", "exchange", "gmail", "exim", "yahoo"],
)
def test_a_hard_bounce_suppresses_that_reader_at_once_and_nobody_else(sent, make, code):
    app, senders = sent
    gone = readers(5)[2]
    message = hear(app, make(senders[gone], gone), recipient=senders[gone])
    assert message.kind == ReportKind.HARD_BOUNCE
    assert message.code == code
    assert "suppressed" in message.action
    assert suppressed(app) == {gone}
    assert reader(app, gone).bounce_score == 1
    assert feedback(app, gone) == ("bounced", code)
    assert history(app, gone)[-2:] == [
        ("bounced", "hard", message.id),
        ("suppressed", "hard-bounce", message.id),
    ]


def test_a_bounce_without_our_token_sends_a_probe_and_only_its_bounce_suppresses(sent):
    app, senders = sent
    gone = readers(5)[1]
    # A relay that rewrote the envelope: no token anywhere, the DSN names the address.
    message = hear(app, samples.postfix_dsn("bounces@newsroom.org", gone))
    assert message.kind == ReportKind.HARD_BOUNCE and message.reason == "userunknown"
    assert "probe sent" in message.action
    assert suppressed(app) == set() and reader(app, gone).bounce_score == 0
    with session_factory(app)() as session:
        probe = session.scalars(select(OutboxMail).where(OutboxMail.kind == "probe")).one()
        assert probe.recipient == gone
    # Another token-less report changes nothing and sends no second probe.
    again = hear(app, samples.postfix_dsn("bounces@newsroom.org", gone))
    assert "already out" in again.action and suppressed(app) == set()
    # The probe went out with a token of its own: its bounce names the reader.
    probe_sender = Verp.from_config(app.config).sender("o", probe.id)
    bounced = hear(app, samples.postfix_dsn(probe_sender, gone), recipient=probe_sender)
    assert "suppressed" in bounced.action and suppressed(app) == {gone}
    assert history(app, gone)[-1] == ("suppressed", "hard-bounce", bounced.id)


def test_a_probe_that_arrives_keeps_the_reader(sent):
    app, senders = sent
    kept = readers(5)[3]
    hear(app, samples.postfix_dsn("bounces@newsroom.org", kept))
    with session_factory(app)() as session:
        probe = session.scalars(select(OutboxMail).where(OutboxMail.kind == "probe")).one()
    probe_sender = Verp.from_config(app.config).sender("o", probe.id)
    # Only a delay comes back for the probe: nothing counts.
    delayed = samples.postfix_dsn(probe_sender, kept, status="4.4.1", action="delayed")
    assert hear(app, delayed, recipient=probe_sender).kind == ReportKind.DELAYED
    assert suppressed(app) == set() and reader(app, kept).bounce_score == 0


def test_soft_bounces_count_once_a_day_and_suppress_at_the_limit(sent):
    app, senders = sent
    slow = readers(5)[0]

    def soft(status="4.4.7", action="failed"):
        # The queue gave up (4.4.7 reported as failed), or the mailbox is full: soft.
        said = f"smtp; 452 {status} <{slow}>: Mailbox full"
        raw = samples.postfix_dsn(senders[slow], slow, status, action, diagnostic=said)
        return hear(app, raw, recipient=senders[slow])

    def a_day_passes():
        with session_factory(app)() as session:
            subscriber = session.scalars(select(Subscriber).where(Subscriber.email == slow)).one()
            subscriber.last_bounce_at -= timedelta(days=1, minutes=1)
            session.commit()

    first = soft()
    assert first.kind == ReportKind.SOFT_BOUNCE and first.code == "4.4.7"
    assert reader(app, slow).bounce_score == 0.5
    assert "not counted" in soft(status="5.2.2", action="failed").action  # full: soft
    assert reader(app, slow).bounce_score == 0.5  # once a day
    for expected in (1.0, 1.5, 2.0, 2.5):
        a_day_passes()
        soft()
        assert reader(app, slow).bounce_score == expected
        assert suppressed(app) == set()
    a_day_passes()
    assert "suppressed" in soft().action
    assert suppressed(app) == {slow}
    assert history(app, slow)[-1][:2] == ("suppressed", "bounce-score")


def test_the_score_is_forgotten_after_the_reset_days(sent):
    app, senders = sent
    slow = readers(5)[0]
    said = f"smtp; 552 5.2.2 <{slow}>: Mailbox full"
    raw = samples.postfix_dsn(senders[slow], slow, "5.2.2", diagnostic=said)
    hear(app, raw, recipient=senders[slow])
    with session_factory(app)() as session:
        session.execute(
            update(Subscriber)
            .where(Subscriber.email == slow)
            .values(bounce_score=2.5, last_bounce_at=utcnow() - timedelta(days=31))
        )
        session.commit()
    hear(app, raw, recipient=senders[slow])
    assert reader(app, slow).bounce_score == 0.5 and suppressed(app) == set()


def test_a_complaint_unsubscribes_from_every_newsletter_and_suppresses(sent):
    app, senders = sent
    angry = readers(5)[3]
    client = app.test_client()
    subscribe(client, angry, newsletter="ukraine-daily")  # pending on another list
    message = hear(app, samples.arf_complaint(angry, senders[angry]))
    assert message.kind == ReportKind.COMPLAINT
    assert message.action == "complaint: unsubscribed from 2 newsletter(s), suppressed"
    with session_factory(app)() as session:
        statuses = session.scalars(
            select(Subscription.status).join(Subscriber).where(Subscriber.email == angry)
        ).all()
    assert set(statuses) == {SubscriptionStatus.UNSUBSCRIBED}
    assert suppressed(app) == {angry}
    assert feedback(app, angry) == ("complained", None)
    assert ("unsubscribed", "complaint", message.id) in history(app, angry)


def test_a_mailto_unsubscribe_ends_that_subscription_at_once(sent):
    app, senders = sent
    leaving = readers(5)[4]
    with app.app_context(), session_factory(app)() as session:
        subscription = session.scalars(
            select(Subscription).join(Subscriber).where(Subscriber.email == leaving)
        ).one()
        token = unsubscribe_url(subscription).rsplit("/", 1)[1]
    message = hear(app, samples.mailto_unsubscribe(leaving, MAIL_FROM, token), MAIL_FROM)
    assert message.kind == ReportKind.UNSUBSCRIBE
    assert message.action == "unsubscribed from explaining-ukraine (mailto)"
    assert history(app, leaving)[-1] == ("unsubscribed", "mailto", message.id)
    assert suppressed(app) == set()  # leaving is not bouncing
    again = hear(app, samples.mailto_unsubscribe(leaving, MAIL_FROM, token), MAIL_FROM)
    assert again.action == "nothing: already unsubscribed"
    forged = hear(app, samples.mailto_unsubscribe(leaving, MAIL_FROM, token[:-2] + "xx"))
    assert forged.action == "nothing: the unsubscribe token is not ours"


@pytest.mark.parametrize(
    "make, kind",
    [
        (lambda s, to: samples.vacation(s, to), ReportKind.AUTO_REPLY),
        (lambda s, to: samples.reader_reply(to, MAIL_FROM), ReportKind.REPLY),
        (lambda s, to: b"Subject: hello\r\n\r\nnothing of ours", ReportKind.UNKNOWN),
    ],
    ids=["vacation", "reply", "unknown"],
)
def test_auto_replies_replies_and_the_unknown_change_nothing(sent, make, kind):
    app, senders = sent
    away = readers(5)[0]
    recipient = MAIL_FROM if kind == ReportKind.REPLY else senders[away]
    message = hear(app, make(senders[away], away), recipient=recipient)
    assert message.kind == kind and message.action == "nothing"
    assert suppressed(app) == set() and reader(app, away).bounce_score == 0
    assert feedback(app, away) == (None, None)
    assert message.raw  # kept for staff


def test_a_forged_token_names_nobody(sent):
    app, senders = sent
    gone = readers(5)[2]
    forged = senders[gone][:-20] + "aaaaaaaaaaaaa@newsroom.org"
    message = hear(app, samples.postfix_dsn(forged, "stranger@elsewhere.org"), forged)
    assert message.kind == ReportKind.HARD_BOUNCE
    assert message.action == "nothing: a token of ours in it does not verify (forged or altered)"
    assert suppressed(app) == set()


def test_a_suppressed_reader_gets_no_welcome(sent):
    app, senders = sent
    gone = readers(5)[2]
    hear(app, samples.postfix_dsn(senders[gone], gone), recipient=senders[gone])
    with app.app_context(), session_factory(app)() as session:
        subscription = session.scalars(
            select(Subscription).join(Subscriber).where(Subscriber.email == gone)
        ).one()
        queue_welcome(session, subscription)  # suppressed: nothing queued
        session.commit()
        assert session.scalar(select(OutboxMail).where(OutboxMail.kind == "welcome")) is None


def test_the_readers_data_download_lists_what_was_heard_about_them(sent):
    app, senders = sent
    gone = readers(5)[2]
    hear(app, samples.postfix_dsn(senders[gone], gone), recipient=senders[gone])

    with app.app_context(), session_factory(app)() as session:
        subscriber = session.scalars(select(Subscriber).where(Subscriber.email == gone)).one()
        data = personal_data(session, subscriber)
    assert data["heard_back"][0]["kind"] == "hard-bounce"
    assert data["issues_sent"][0]["feedback"] == "bounced"
    assert data["bounce_score"] == 1


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=3000), st.sampled_from([None, MAIL_FROM, "bounces+d1-x@n.org"]))
def test_any_bytes_are_classified_without_raising(raw, recipient):
    report = classify(raw, recipient, Verp("k", "bounces@newsroom.org"), MAIL_FROM)
    assert isinstance(report.kind, ReportKind)


def test_raw_messages_are_dropped_after_the_keep_days_and_their_outcome_stays(sent):
    app, senders = sent
    message = hear(app, samples.vacation(senders[readers(5)[0]], readers(5)[0]))
    with session_factory(app)() as session:
        session.execute(update(InboundMessage).values(received_at=utcnow() - timedelta(days=31)))
        session.commit()
    assert drop_old_raw(session_factory(app), 30) == 1
    with session_factory(app)() as session:
        kept = session.get(InboundMessage, message.id)
        assert kept.raw is None and kept.kind == "auto-reply"


def test_process_list_and_show_from_the_command_line(sent, tmp_path):
    app, senders = sent
    gone = readers(5)[2]
    saved = tmp_path / "bounce.eml"
    saved.write_bytes(samples.gmail_dsn(senders[gone], gone))
    runner = app.test_cli_runner()
    result = runner.invoke(args=["inbound", "process", str(saved)])
    assert result.exit_code == 0, result.output
    assert "hard-bounce" in result.output  # the recipient came from Delivered-To
    listed = runner.invoke(args=["inbound", "list", "--kind", "hard-bounce", "--since", "1d"])
    assert listed.exit_code == 0 and "5.1.1" in listed.output
    message_id = listed.output.splitlines()[1].split("\t")[0]
    shown = runner.invoke(args=["inbound", "show", message_id])
    assert shown.exit_code == 0 and "Delivery Status Notification" in shown.output
    assert "Action: hard bounce (userunknown): suppressed" in shown.output
    missing = runner.invoke(args=["inbound", "show", "999999"])
    assert missing.exit_code == 1 and "no inbound message 999999" in missing.output
    bad = runner.invoke(args=["inbound", "list", "--since", "yesterdayish"])
    assert bad.exit_code == 2


@pytest.fixture
def inbound_server(sent):
    app, senders = sent
    port = free_port()

    def serve(lmtp=False, max_bytes=100_000):
        controller = InboundController(InboundHandler(app, lmtp), "127.0.0.1", port, max_bytes)
        controller.start()
        started.append(controller)
        return port

    started: list = []
    yield app, senders, serve
    for controller in started:
        controller.stop()


def test_the_server_takes_bounce_and_list_mail_only_and_stores_before_answering(inbound_server):
    app, senders, serve = inbound_server
    port = serve()
    gone = readers(5)[2]
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as exc:
            smtp.sendmail("", ["someone@elsewhere.org"], b"Subject: x\r\n\r\nx")
        assert exc.value.recipients["someone@elsewhere.org"][0] == 550  # not a relay
        smtp.sendmail("", [senders[gone]], samples.postfix_dsn(senders[gone], gone))
    until_handled(app, 1)
    assert suppressed(app) == {gone}
    with session_factory(app)() as session:
        stored = session.scalars(select(InboundMessage)).one()
    assert stored.source == "smtp" and stored.recipient == senders[gone]


def test_the_server_refuses_a_message_over_the_size_limit(inbound_server):
    app, senders, serve = inbound_server
    port = serve(max_bytes=2000)
    big = b"Subject: big\r\n\r\n" + b"x" * 5000
    with (
        smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp,
        pytest.raises((smtplib.SMTPSenderRefused, smtplib.SMTPDataError)) as exc,
    ):
        smtp.sendmail("", [MAIL_FROM], big)  # refused at MAIL (SIZE) or after DATA
    assert exc.value.smtp_code == 552
    with session_factory(app)() as session:
        assert session.scalar(select(InboundMessage)) is None


def test_lmtp_answers_each_recipient(inbound_server):
    app, senders, serve = inbound_server
    port = serve(lmtp=True)
    a, b = readers(5)[0], readers(5)[1]
    with smtplib.LMTP("127.0.0.1", port, timeout=10) as lmtp:
        lmtp.ehlo_or_helo_if_needed()
        assert lmtp.mail("")[0] == 250
        assert lmtp.rcpt(senders[a])[0] == 250 and lmtp.rcpt(senders[b])[0] == 250
        assert lmtp.rcpt("someone@elsewhere.org")[0] == 550
        assert lmtp.data(samples.vacation(senders[a], a))[0] == 250  # the first recipient
        assert lmtp.getreply()[0] == 250  # and the second: one reply each (RFC 2033)
    until_handled(app, 1)
    with session_factory(app)() as session:  # stored once, whatever its recipients
        (stored,) = session.scalars(select(InboundMessage)).all()
    assert stored.recipient == senders[a] and stored.kind == "auto-reply"


def test_many_concurrent_clients_lose_nothing(inbound_server):
    app, senders, serve = inbound_server
    port = serve(lmtp=True)
    gone = readers(5)[2]
    raw = samples.postfix_dsn(senders[gone], gone, status="4.4.7", action="delayed")
    errors = []

    def client(n):
        try:
            with smtplib.LMTP("127.0.0.1", port, timeout=30) as lmtp:
                for _ in range(25):
                    lmtp.sendmail("", [senders[gone]], raw)
        except Exception as exc:  # noqa: BLE001  reported below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    until_handled(app, 100)
    with session_factory(app)() as session:
        assert len(session.scalars(select(InboundMessage.id)).all()) == 100
        kinds = set(session.scalars(select(InboundMessage.kind)))
    assert kinds == {"delayed"}  # news, not bounces: none counts


@sqlite_only
def test_a_stored_message_is_synced_to_disk_before_the_answer(app):
    # The app's SQLite commits with synchronous=NORMAL (survives the process, not a
    # power cut); the commit that keeps a message the MTA then forgets waits for the disk.
    seen = []

    @event.listens_for(engine(app), "commit")
    def _level(connection):
        seen.append(connection.exec_driver_sql("PRAGMA synchronous").scalar())

    for connection in [engine(app).connect() for _ in range(2)]:
        connection.close()  # two idle connections in the pool, as in a busy server
    with app.app_context():
        store(session_factory(app), b"Subject: x\r\n\r\nx", source="file")
    assert seen == [2]  # FULL
    # Set back on that connection, before the pool hands it out again (found by review:
    # it was set back on whichever connection the pool gave next).
    pooled = [engine(app).connect() for _ in range(3)]
    try:
        levels = [c.exec_driver_sql("PRAGMA synchronous").scalar() for c in pooled]
    finally:
        for connection in pooled:
            connection.close()
    assert levels == [1, 1, 1]  # NORMAL
