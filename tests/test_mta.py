"""The path real bounces take: a digest goes through Postfix, the reader's server refuses
one address, Postfix writes its own DSN to the VERP address and hands it over LMTP to
``newsletter inbound serve --lmtp``. That reader ends up suppressed; nobody else does."""

import os
import signal
import subprocess
import time

import pytest
from sqlalchemy import select

from tests.helpers import (
    NEWSLETTER_BIN,
    SmtpServer,
    app_with_issue,
    command_env,
    free_port,
    readers,
)
from tests.mailservers import POSTFIX, REQUIRE_MTA, Postfix, need, wait_for_port
from webapp.db import session_factory
from webapp.inbound.models import InboundMessage
from webapp.mailout.models import Delivery
from webapp.models import Subscriber

MAIL_FROM = "letters@newsroom.org"
BOUNCES = "bounces@bounces.newsroom.org"


@pytest.fixture
def mta():
    """Postfix relaying to a reader's server (an aiosmtpd server of the test) and
    handing the bounce domain's mail to an LMTP port: (postfix, reader's server, port)."""
    need(POSTFIX, "postfix")
    if os.getuid() != 0:
        if REQUIRE_MTA:
            pytest.fail("Postfix starts as root only (NEWSLETTER_REQUIRE_MTA)")
        pytest.skip("Postfix starts as root only")
    destination = SmtpServer().start()
    lmtp_port = free_port()
    postfix = Postfix(destination.port, BOUNCES.partition("@")[2], lmtp_port).start()
    yield postfix, destination, lmtp_port
    postfix.stop()
    destination.stop()


def test_postfix_bounce_reaches_inbound_serve_and_suppresses_that_reader_only(tmp_path, mta):
    postfix, destination, lmtp_port = mta
    gone = readers(5)[2]
    destination.handler.refuse[gone] = (
        f"550 5.1.1 <{gone}>: Recipient address rejected: User unknown"
    )
    settings = {"MAIL_FROM": MAIL_FROM, "BOUNCE_ADDRESS": BOUNCES}
    app = app_with_issue(tmp_path, postfix, 5, **settings)
    env = command_env(app, postfix, **settings)
    server = subprocess.Popen(
        [NEWSLETTER_BIN, "inbound", "serve", "--lmtp", "--port", str(lmtp_port)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_port(lmtp_port)
        send = subprocess.run(
            [NEWSLETTER_BIN, "digest", "send", "explaining-ukraine", "1", "--yes"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert send.returncode == 0, send.stderr  # Postfix took all five
        deadline = time.monotonic() + 60  # Postfix's queue manager is quick, but bounded
        with session_factory(app)() as session:
            while time.monotonic() < deadline and not session.scalars(select(InboundMessage)).all():
                time.sleep(0.2)
                session.expire_all()
    finally:
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=30)
    assert server.returncode == 0, err
    log = postfix.log.read_text()
    assert sorted(r for m in destination.messages for r in m.recipients) == sorted(
        set(readers(5)) - {gone}
    ), log
    with session_factory(app)() as session:
        (bounce,) = session.scalars(select(InboundMessage)).all()
        assert (bounce.source, bounce.kind, bounce.code) == ("lmtp", "hard-bounce", "5.1.1"), log
        assert bounce.envelope_from == "<>"  # a DSN comes from the null sender
        assert bounce.recipient.startswith("bounces+d") and bounce.recipient.endswith(
            "@bounces.newsroom.org"
        )
        assert b"MAILER-DAEMON" in bounce.raw and b"User unknown" in bounce.raw
        query = select(Subscriber.email).where(Subscriber.suppressed_at.is_not(None))
        assert set(session.scalars(query)) == {gone}
        query = select(Delivery.feedback, Delivery.feedback_code).join(Subscriber)
        assert session.execute(query.where(Subscriber.email == gone)).one() == ("bounced", "5.1.1")
        others = session.execute(query.where(Subscriber.email != gone)).all()
        assert others == [(None, None)] * 4
