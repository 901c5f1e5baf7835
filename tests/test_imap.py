"""newsletter inbound fetch against a real IMAP server (Debian's dovecot, over TLS on
loopback): what is ours is taken in and moved; everything else stays exactly as it was."""

import imaplib
import re
import signal
import ssl
import subprocess
import time
import uuid

import pytest
from sqlalchemy import select

from tests import inbound_samples as samples
from tests.helpers import NEWSLETTER_BIN, app_with_issue, command_env, readers, sent_to_readers
from tests.mailservers import DOVECOT, Dovecot, need
from webapp.db import session_factory
from webapp.inbound.models import InboundMessage
from webapp.links import unsubscribe_url
from webapp.models import Subscriber, Subscription

MAIL_FROM = "letters@newsroom.org"


@pytest.fixture(scope="module")
def dovecot(tmp_path_factory):
    need(DOVECOT, "dovecot-imapd")
    server = Dovecot(tmp_path_factory.mktemp("dovecot")).start()
    yield server
    server.stop()


@pytest.fixture
def mailbox(dovecot, monkeypatch):
    """A fresh mailbox of its own on the server: (server, user name, logged-in client)."""
    monkeypatch.setenv("SSL_CERT_FILE", str(dovecot.certificate))
    user = f"bounces-{uuid.uuid4().hex[:8]}"
    context = ssl.create_default_context(cafile=str(dovecot.certificate))
    client = imaplib.IMAP4_SSL("127.0.0.1", dovecot.port, ssl_context=context)
    client.login(user, Dovecot.PASSWORD)
    yield dovecot, user, client
    client.logout()


@pytest.fixture
def sent(tmp_path, smtp_server, mailbox):
    """An app whose issue 1 went to five readers, reading ``mailbox`` over IMAP:
    (app, {reader: their VERP sender})."""
    server, user, _ = mailbox
    imap = dict(HOST="127.0.0.1", PORT=server.port, USERNAME=user, PASSWORD=Dovecot.PASSWORD)
    settings = {f"INBOUND_IMAP_{key}": value for key, value in imap.items()}
    app = app_with_issue(tmp_path, smtp_server, 5, MAIL_FROM=MAIL_FROM, **settings)
    return app, sent_to_readers(app)


def unsubscribe_token(app, email: str) -> str:
    with app.app_context(), session_factory(app)() as session:
        query = select(Subscription).join(Subscriber).where(Subscriber.email == email)
        return unsubscribe_url(session.scalars(query).one()).rsplit("/", 1)[1]


def contents(client: imaplib.IMAP4, folder: str) -> dict[bytes, tuple[set[bytes], bytes]]:
    """Every message of ``folder``: UID -> (flags, bytes), read without marking anything."""
    typ, _ = client.select(folder)
    assert typ == "OK"
    found = {}
    for uid in client.uid("SEARCH", "ALL")[1][0].split():
        data = client.uid("FETCH", uid, "(FLAGS BODY.PEEK[])")[1]
        flags = set(re.search(rb"FLAGS \(([^)]*)\)", data[0][0])[1].split())
        flags.discard(rb"\Recent")  # a property of the session that looks, not the message
        found[uid] = (flags, data[0][1])
    client.close()
    return found


def fetch(app) -> str:
    result = app.test_cli_runner().invoke(args=["inbound", "fetch"])
    assert result.exit_code == 0, result.output
    return result.output.strip()


def taken_in(app) -> list[tuple[str, str, str]]:
    with session_factory(app)() as session:
        rows = session.scalars(select(InboundMessage).order_by(InboundMessage.id))
        return [(row.source, row.kind, row.action) for row in rows]


def test_fetch_takes_in_what_is_ours_and_leaves_every_other_message_untouched(sent, mailbox):
    app, senders = sent
    _, _, client = mailbox
    gone, leaving, stranger = readers(5)[2], readers(5)[4], "someone@elsewhere.example"
    ours = [
        samples.postfix_dsn(senders[gone], gone),
        samples.mailto_unsubscribe(leaving, MAIL_FROM, unsubscribe_token(app, leaving)),
    ]
    not_ours = [
        samples.vacation(senders[readers(5)[0]], readers(5)[0]),
        samples.reader_reply(readers(5)[1], MAIL_FROM),
        b"From: editor@newsroom.org\r\nSubject: lunch?\r\n\r\nAt one?\r\n",
        # A bounce of somebody else's mail, and an unsubscribe with a forged token.
        samples.postfix_dsn("bounces@elsewhere.example", stranger),
        samples.mailto_unsubscribe(leaving, MAIL_FROM, "not-a-token-of-ours"),
    ]
    flags = [None, r"(\Flagged)", None, r"(\Seen)", None]
    for raw, flag in zip(not_ours, flags, strict=True):
        assert client.append("INBOX", flag, None, raw)[0] == "OK"
    for raw in ours:
        assert client.append("INBOX", None, None, raw)[0] == "OK"
    before = contents(client, "INBOX")

    summary = fetch(app)

    assert summary == "7 in INBOX: 2 taken in and moved to Processed, 5 not ours left untouched"
    after = contents(client, "INBOX")
    kept = {uid: before[uid] for uid in list(before)[: len(not_ours)]}
    assert after == kept  # the same messages, the same bytes, the same flags: none \Seen
    moved = contents(client, "Processed")
    assert sorted(raw for _, raw in moved.values()) == sorted(
        raw for _, raw in list(before.values())[len(not_ours) :]
    )
    assert taken_in(app) == [
        ("imap", "hard-bounce", "hard bounce (userunknown): suppressed; score 1"),
        ("imap", "unsubscribe", "unsubscribed from explaining-ukraine (mailto)"),
    ]
    with session_factory(app)() as session:
        query = select(Subscriber.email).where(Subscriber.suppressed_at.is_not(None))
        assert set(session.scalars(query)) == {gone}

    # Again: nothing left that is ours, nothing touched, nothing taken in twice.
    assert fetch(app) == "5 in INBOX: 0 taken in and moved to Processed, 5 not ours left untouched"
    assert contents(client, "INBOX") == kept
    assert len(taken_in(app)) == 2


def test_a_wrong_password_is_one_line_and_changes_nothing(sent, mailbox):
    app, senders = sent
    app.config["INBOUND_IMAP_PASSWORD"] = "wrong"
    result = app.test_cli_runner().invoke(args=["inbound", "fetch"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: IMAP 127.0.0.1:"), result.output
    assert "Traceback" not in result.output
    assert taken_in(app) == []


def test_fetch_without_a_host_says_what_to_set(tmp_path, smtp_server):
    app = app_with_issue(tmp_path, smtp_server, 1)
    result = app.test_cli_runner().invoke(args=["inbound", "fetch"])
    assert result.exit_code == 2
    assert "NEWSLETTER_INBOUND_IMAP_HOST" in result.output


def test_watch_takes_in_what_arrives_and_stops_on_sigterm(sent, mailbox, smtp_server):
    app, senders = sent
    server, user, client = mailbox
    env = command_env(app, smtp_server, **{k: v for k, v in app.config.items() if "IMAP" in k})
    env.update(NEWSLETTER_MAIL_FROM=MAIL_FROM, SSL_CERT_FILE=str(server.certificate))
    watcher = subprocess.Popen(
        [NEWSLETTER_BIN, "inbound", "fetch", "--watch", "--interval", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        gone = readers(5)[3]
        assert (
            client.append("INBOX", None, None, samples.postfix_dsn(senders[gone], gone))[0] == "OK"
        )
        deadline = time.monotonic() + 20
        # Stored first, classified in a second commit: wait for both.
        while time.monotonic() < deadline and not [k for _, k, _ in taken_in(app) if k]:
            time.sleep(0.2)
        assert [kind for _, kind, _ in taken_in(app)] == ["hard-bounce"]
    finally:
        watcher.send_signal(signal.SIGTERM)
        out, err = watcher.communicate(timeout=30)
    assert watcher.returncode == 0, err
    assert "1 taken in and moved to Processed" in out
    assert contents(client, "INBOX") == {}


def test_a_second_pass_downloads_nothing_it_has_seen(sent, mailbox, monkeypatch):
    # Found trying it: every pass downloaded the whole shared mailbox again.
    app, senders = sent
    _, _, client = mailbox
    for n in range(5):  # colleagues' mail, not ours
        raw = f"From: editor@newsroom.org\r\nSubject: memo {n}\r\n\r\n".encode() + b"x\r\n" * 2000
        assert client.append("INBOX", None, None, raw)[0] == "OK"
    fetched = []
    command = imaplib.IMAP4.uid

    def counting(self, name, *args):
        if name.upper() == "FETCH":
            fetched.append(args[0])
        return command(self, name, *args)

    monkeypatch.setattr(imaplib.IMAP4, "uid", counting)
    assert fetch(app) == "5 in INBOX: 0 taken in and moved to Processed, 5 not ours left untouched"
    assert len(set(fetched)) == 5
    fetched.clear()
    gone = readers(5)[3]
    assert client.append("INBOX", None, None, samples.postfix_dsn(senders[gone], gone))[0] == "OK"
    assert fetch(app) == "6 in INBOX: 1 taken in and moved to Processed, 5 not ours left untouched"
    assert len(set(fetched)) == 1  # the new message only
    fetched.clear()
    assert fetch(app) == "5 in INBOX: 0 taken in and moved to Processed, 5 not ours left untouched"
    assert fetched == []
    assert [kind for _, kind, _ in taken_in(app)] == ["hard-bounce"]
