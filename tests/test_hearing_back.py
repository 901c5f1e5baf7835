"""Hearing back, right: a reason for every failed recipient, a reader suppressed only
when the address is gone, and nothing forged or token-less changes anyone."""

import base64
import re
import subprocess
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from tests import inbound_samples as samples
from tests.helpers import (
    NEWSLETTER_BIN,
    app_with_issue,
    command_env,
    history,
    make_app,
    readers,
    sent_to_readers,
    subscribe,
)
from tests.test_inbound import MAIL_FROM, feedback, hear, reader, suppressed
from webapp.db import session_factory, utcnow
from webapp.inbound.report import ReportKind
from webapp.links import unsubscribe_url
from webapp.mailout.models import Delivery
from webapp.models import (
    EventKind,
    Newsletter,
    Subscriber,
    Subscription,
    SubscriptionEvent,
    SubscriptionStatus,
)
from webapp.reports.growth import growth
from webapp.webhooks.models import WebhookMessage

NEWSLETTER = "explaining-ukraine"
GONE_AT_SEND = "550 5.1.1 <x>: Recipient address rejected: User unknown"
BLOCK = "550 5.7.1 Service unavailable; client host [127.0.0.1] blocked using zen.spamhaus.org"


@pytest.fixture
def sent(tmp_path, smtp_server):
    """An app whose issue 1 went to five readers: (app, {reader: their VERP sender})."""
    app = app_with_issue(tmp_path, smtp_server, 5, MAIL_FROM=MAIL_FROM)
    return app, sent_to_readers(app)


def test_an_altered_token_names_nobody_though_the_report_names_a_reader(sent):
    app, senders = sent
    gone = readers(5)[2]
    # Another delivery's id under this one's hash: a token that fails its check.
    genuine = senders[gone]
    local, domain = genuine.split("@")
    kind_id, mac = local.split("+")[1].split("-")
    altered = f"bounces+d{int(kind_id[1:], 36) + 1:x}-{mac}@{domain}"
    message = hear(app, samples.postfix_dsn(altered, gone), recipient=altered)
    assert message.kind == ReportKind.HARD_BOUNCE
    assert "does not verify" in message.action
    assert suppressed(app) == set() and reader(app, gone).bounce_score == 0
    assert message.subscriber_id is None


def test_a_forged_complaint_without_our_token_changes_nobody_and_is_kept(tmp_path, smtp_server):
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    app = app_with_issue(
        tmp_path,
        smtp_server,
        5,
        MAIL_FROM=MAIL_FROM,
        WEBHOOK_URLS="http://127.0.0.1:9/hook",
        WEBHOOK_SECRET=secret,
    )
    senders = sent_to_readers(app)
    target = readers(5)[1]

    def complained() -> list[str]:
        with session_factory(app)() as session:
            query = select(WebhookMessage.type).where(WebhookMessage.type == "delivery.complained")
            return session.scalars(query).all()

    message = hear(app, samples.arf_complaint(target, "bounces@newsroom.org"))
    assert message.kind == ReportKind.COMPLAINT
    assert message.action == "nothing: a complaint with no token of ours (kept for staff)"
    assert message.raw  # kept for staff
    assert suppressed(app) == set() and complained() == []
    with session_factory(app)() as session:
        statuses = session.scalars(
            select(Subscription.status).join(Subscriber).where(Subscriber.email == target)
        ).all()
    assert set(statuses) == {SubscriptionStatus.CONFIRMED}
    # The same complaint returning our message (its Return-Path) is the reader's.
    genuine = hear(app, samples.arf_complaint(target, senders[target]))
    assert genuine.action.startswith("complaint: unsubscribed")
    assert suppressed(app) == {target} and complained() == ["delivery.complained"]


def test_a_complaint_names_its_reader_by_a_signed_link_of_ours(sent):
    app, senders = sent
    angry = readers(5)[4]
    with app.app_context(), session_factory(app)() as session:
        subscription = session.scalars(
            select(Subscription).join(Subscriber).where(Subscriber.email == angry)
        ).one()
        link = unsubscribe_url(subscription)
    # The feedback loop rewrote the envelope, but the returned headers keep our link.
    raw = samples.arf_complaint(angry, "bounces@newsroom.org").replace(
        b"Subject: Explaining Ukraine, issue 1\n\n--part1",
        f"Subject: Explaining Ukraine, issue 1\nList-Unsubscribe: <{link}>\n\n--part1".encode(),
    )
    assert link.encode() in raw
    message = hear(app, raw)
    assert message.action == "complaint: unsubscribed from 1 newsletter(s), suppressed"
    assert suppressed(app) == {angry}


def test_a_delayed_dsn_is_news_and_counts_for_nothing(sent):
    app, senders = sent
    slow = readers(5)[0]
    raw = samples.postfix_dsn(
        senders[slow], slow, "4.4.1", "delayed", "smtp; 451 4.4.1 Connection timed out"
    )
    message = hear(app, raw, recipient=senders[slow])
    assert message.kind == ReportKind.DELAYED and message.action.startswith("nothing: delayed")
    assert reader(app, slow).bounce_score == 0 and suppressed(app) == set()
    assert feedback(app, slow) == (None, None)


def test_a_block_of_us_reported_by_mail_changes_no_reader(sent):
    app, senders = sent
    blocked = readers(5)[0]
    raw = samples.postfix_dsn(senders[blocked], blocked, "5.7.1", diagnostic=f"smtp; {BLOCK}")
    message = hear(app, raw, recipient=senders[blocked])
    assert (message.kind, message.reason) == (ReportKind.REFUSED, "blocked")
    assert "about us, not the reader" in message.action
    assert reader(app, blocked).bounce_score == 0 and suppressed(app) == set()
    assert feedback(app, blocked) == ("refused", "5.7.1")


def test_a_mixed_two_recipient_report_acts_on_our_readers_verdict_only(sent):
    app, senders = sent
    full, other = readers(5)[0], readers(5)[1]
    # One report about two recipients: ours (the token's) is full, the other is gone.
    raw = samples.postfix_dsn(
        senders[full], full, "5.2.2", diagnostic="smtp; 552 5.2.2 Mailbox full"
    ).replace(
        b"Diagnostic-Code: smtp; 552 5.2.2 Mailbox full\r\n",
        b"Diagnostic-Code: smtp; 552 5.2.2 Mailbox full\r\n\r\n"
        + f"Final-Recipient: rfc822; {other}\r\nAction: failed\r\nStatus: 5.1.1\r\n".encode()
        + b"Diagnostic-Code: smtp; 550 5.1.1 User unknown\r\n",
    )
    message = hear(app, raw, recipient=senders[full])
    assert (message.kind, message.reason) == (ReportKind.SOFT_BOUNCE, "mailboxfull")
    assert f"{full}: mailboxfull 5.2.2" in message.detail
    assert f"{other}: userunknown 5.1.1" in message.detail
    assert reader(app, full).bounce_score == 0.5
    assert suppressed(app) == set() and reader(app, other).bounce_score == 0


@pytest.fixture
def refusing(tmp_path, smtp_server):
    """An app whose issue 1 goes to 20 readers through a relay that refuses some."""
    app = app_with_issue(tmp_path, smtp_server, 20)
    return app, command_env(app, smtp_server, SEND_RETRY_DELAY=0.2)


def _send(env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [NEWSLETTER_BIN, "digest", "send", NEWSLETTER, "1", "--yes"],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        stdin=subprocess.DEVNULL,
    )


def test_a_refusal_at_send_time_is_history_and_the_growth_report_counts_it(refusing, smtp_server):
    app, env = refusing
    gone = readers(20)[3:5]
    for address in gone:
        smtp_server.handler.refuse[address] = (
            "550 5.1.1 <x>: Recipient address rejected: User unknown"
        )
    # Confirmed three days ago: the report must show 20 readers until today.
    with session_factory(app)() as session:
        session.execute(
            update(SubscriptionEvent).values(at=utcnow().replace(hour=12) - timedelta(days=3))
        )
        session.commit()
    done = _send(env)
    assert "18 delivered, 2 failed" in done.stdout
    assert suppressed(app) == set(gone)
    for address in gone:
        assert history(app, address)[-2:] == [
            ("bounced", "hard", None),
            ("suppressed", "hard-bounce", None),
        ]
    with session_factory(app)() as session:
        newsletter = session.scalars(select(Newsletter).where(Newsletter.slug == NEWSLETTER)).one()
        grown = growth(session, newsletter, None)
        reasons = session.scalars(
            select(Delivery.feedback_reason).where(Delivery.feedback == "bounced")
        ).all()
    assert grown.confirmed[-4:] == [20, 20, 20, 18]
    assert grown.total_left["bounce"] == 2
    assert reasons == ["userunknown", "userunknown"]


def test_a_domain_that_blocks_us_warns_staff_and_drops_no_reader(refusing, smtp_server):
    app, env = refusing
    blocked = readers(20)[:4]
    for address in blocked:
        smtp_server.handler.refuse[address] = BLOCK
    done = _send(env)
    assert "16 delivered, 4 failed" in done.stdout
    assert "Warning: newsroom.org: 4 of 20 readers (20.0 %) refused: blocked 4" in done.stderr
    assert suppressed(app) == set()
    for address in blocked:
        assert not any(kind in ("bounced", "suppressed") for kind, _, _ in history(app, address))
    report = app.test_cli_runner().invoke(args=["digest", "report", NEWSLETTER, "1"])
    assert report.exit_code == 0, report.output
    assert re.search(r"^refused\s+4\b", report.output, re.MULTILINE)
    assert "newsroom.org (20.0 % of its 20 readers): blocked 4" in report.output


def test_reclassify_lifts_what_the_old_rules_suppressed_with_a_history_event(sent):
    app, senders = sent
    blocked, gone = readers(5)[0], readers(5)[1]
    # Two suppressions the old rules made: a block taken for a dead address (by mail),
    # and a send's 5.7.1 refusal (the reply kept as the reason, no event).
    raw = samples.postfix_dsn(senders[blocked], blocked, "5.7.1", diagnostic=f"smtp; {BLOCK}")
    message = hear(app, raw, recipient=senders[blocked])
    dead = hear(app, samples.postfix_dsn(senders[gone], gone), recipient=senders[gone])
    with session_factory(app)() as session:
        subscriber = session.scalars(select(Subscriber).where(Subscriber.email == blocked)).one()
        subscriber.suppressed_at, subscriber.suppressed_reason = utcnow(), "hard bounce 5.7.1"
        (subscription,) = subscriber.subscriptions
        session.add(
            SubscriptionEvent(
                subscription_id=subscription.id,
                newsletter_id=subscription.newsletter_id,
                kind=EventKind.SUPPRESSED,
                how="hard-bounce",
                inbound_id=message.id,
            )
        )
        third = session.scalars(select(Subscriber).where(Subscriber.email == readers(5)[2])).one()
        third.suppressed_at = utcnow()
        third.suppressed_reason = f"relay answered {BLOCK}"
        session.commit()
    assert suppressed(app) == {blocked, gone, readers(5)[2]}
    runner = app.test_cli_runner()
    dry = runner.invoke(args=["inbound", "reclassify", "--since", "30d", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert f"{blocked}\twould be lifted" in dry.output
    assert f"{readers(5)[2]}\twould be lifted" in dry.output
    assert "2 suppression(s) would be lifted" in dry.output
    assert suppressed(app) == {blocked, gone, readers(5)[2]}  # nothing changed
    done = runner.invoke(args=["inbound", "reclassify", "--since", "30d"])
    assert done.exit_code == 0, done.output
    assert "2 suppression(s) lifted" in done.output
    assert suppressed(app) == {gone}  # the dead address stays suppressed
    assert history(app, blocked)[-1] == (
        "unsuppressed",
        "reclassified: refused (blocked)",
        message.id,
    )
    assert history(app, readers(5)[2])[-1][0] == "unsuppressed"
    assert dead.id  # its suppression was right: kept


def test_a_confirmation_refused_for_a_dead_address_suppresses_it_and_a_block_does_not(
    tmp_path, smtp_server
):
    app = make_app(tmp_path, **smtp_server.config())
    client = app.test_client()
    dead, blocked = "gone@newsroom.org", "walled@newsroom.org"
    smtp_server.handler.refuse[dead] = GONE_AT_SEND
    smtp_server.handler.refuse[blocked] = BLOCK
    for address in (dead, blocked):
        subscribe(client, address)
    sent = app.test_cli_runner().invoke(args=["outbox", "send"])
    assert sent.exit_code == 0, sent.output
    assert suppressed(app) == {dead}
    assert history(app, dead)[-2:] == [
        ("bounced", "hard", None),
        ("suppressed", "hard-bounce", None),
    ]
    assert [kind for kind, _, _ in history(app, blocked)] == ["subscribed"]
