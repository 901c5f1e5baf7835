"""``newsletter digest send`` against a real SMTP server (aiosmtpd) on loopback.

The command runs as a real process (it starts sender processes of its own), so a
test can interrupt it with Ctrl-C or kill -9 and run it again.
"""

import os
import random
import re
import signal
import socket
import subprocess
import time
from collections import Counter

import dkim
import pytest
from sqlalchemy import select, update

from tests.helpers import (
    NEWSLETTER_BIN,
    SmtpServer,
    app_with_issue,
    command_env,
    dkim_key,
    readers,
    sqlite_only,
)
from webapp.db import session_factory
from webapp.issues.queue import take_list
from webapp.issues.running import Progress
from webapp.links import row_for_link
from webapp.mailout.models import Delivery, DeliveryStatus
from webapp.mailout.verp import Verp
from webapp.models import Issue, Subscriber, Subscription, SubscriptionStatus

NEWSLETTER = "explaining-ukraine"


@pytest.fixture
def relay():
    server = SmtpServer().start()
    yield server
    server.stop()


def setup_list(tmp_path, relay, count: int, **config):
    """An app with ``count`` confirmed readers and issue 1 built; returns (app, env)."""
    app = app_with_issue(tmp_path, relay, count, **config)
    return app, command_env(app, relay, SEND_RETRY_DELAY=0.2, **config)


def send(env, *args) -> subprocess.CompletedProcess:
    """Run the send command to its end (bounded) and return what it did."""
    return subprocess.run(
        [NEWSLETTER_BIN, "digest", "send", NEWSLETTER, "1", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        stdin=subprocess.DEVNULL,
    )


def start_send(env, *args) -> subprocess.Popen:
    """Start the send command in its own process group (so a test can kill them all),
    with Ctrl-C's default action, as in a terminal: a suite started in the background
    of a shell inherits SIGINT ignored, and so would the command."""
    return subprocess.Popen(
        [NEWSLETTER_BIN, "digest", "send", NEWSLETTER, "1", "--yes", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def statuses(app) -> Counter:
    with session_factory(app)() as session:
        return Counter(d.status for d in session.scalars(select(Delivery)))


def received_by(relay) -> Counter:
    return Counter(to for message in relay.messages for to in message.recipients)


def wait_until(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_each_reader_gets_one_copy_with_their_own_links_signed_and_a_rerun_sends_nothing(
    tmp_path, relay
):
    key_file, dns_record = dkim_key(tmp_path)
    app, env = setup_list(
        tmp_path,
        relay,
        60,
        MAIL_FROM="letters@newsroom.org",
        DKIM_DOMAIN="newsroom.org",
        DKIM_SELECTOR="s2026",
        DKIM_KEY_FILE=str(key_file),
    )
    client = app.test_client()
    assert client.get(f"/newsletters/{NEWSLETTER}/issues/1").status_code == 404  # a draft

    done = send(env, "--yes")
    assert done.returncode == 0, done.stderr
    assert "60 delivered, 0 failed, 0 skipped, 0 left of 60" in done.stdout
    assert received_by(relay) == Counter(readers(60))  # each exactly once

    with app.app_context(), session_factory(app)() as session:
        for received in relay.messages:
            msg = received.message
            link = msg["List-Unsubscribe"].split(">")[0].lstrip("<")
            assert link.startswith("http://127.0.0.1:5000/unsubscribe/")
            owner = row_for_link(session, "unsubscribe", link.rsplit("/", 1)[1])
            assert owner.subscriber.email == received.recipients[0]  # their own link
            assert link in msg.get_body(("plain",)).get_content()
            assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
            assert dkim.verify(received.data, dnsfunc=lambda name, timeout=5: dns_record)
            # The envelope sender names the reader's delivery (VERP); From stays.
            kind, delivery_id = Verp.from_config(app.config).read(received.sender)
            delivery = session.get(Delivery, delivery_id)
            reader = session.get(Subscriber, delivery.subscriber_id)
            assert kind == "d" and reader.email == received.recipients[0]
            assert received.sender.startswith("bounces+")
            assert received.sender.endswith("@newsroom.org")
            assert msg["From"].addresses[0].addr_spec == "letters@newsroom.org"
    assert client.get(f"/newsletters/{NEWSLETTER}/issues/1").status_code == 200  # now public

    again = send(env, "--yes")
    assert again.returncode == 0, again.stderr
    assert "0 sent in this run" in again.stdout
    assert len(relay.messages) == 60


def test_the_list_is_taken_once_and_readers_who_left_since_are_skipped(tmp_path, relay):
    app, env = setup_list(tmp_path, relay, 10)
    with app.app_context(), session_factory(app)() as session:
        issue = session.scalar(select(Issue))
        assert take_list(session, issue) == 10
        assert take_list(session, issue) == 0  # a second start adds nobody
        session.execute(
            update(Subscription)
            .where(Subscription.subscriber_id.in_(select(Subscriber.id).limit(2)))
            .values(status=SubscriptionStatus.UNSUBSCRIBED)
        )
        session.commit()
    late = tmp_path / "late.csv"
    late.write_text("email\nlate@newsroom.org\n")
    args = ["subscribers", "import", str(late), "--newsletter", NEWSLETTER]
    imported = app.test_cli_runner().invoke(args=args + ["--confirmed", "--consent-note", "t"])
    assert imported.exit_code == 0  # confirmed after the list was taken: not on it
    done = send(env, "--yes")
    assert done.returncode == 0, done.stderr
    assert "8 delivered, 0 failed, 2 skipped, 0 left of 10" in done.stdout
    assert len(relay.messages) == 8 and "late@newsroom.org" not in received_by(relay)


@pytest.mark.parametrize("pipelining", [False, True], ids=["stepwise", "pipelined"])
def test_refused_readers_fail_and_are_suppressed_deferred_ones_are_retried(
    tmp_path, relay, pipelining
):
    relay.handler.pipelining = pipelining
    app, env = setup_list(tmp_path, relay, 20)
    relay.handler.refuse["reader3@newsroom.org"] = "550 5.1.1 No such user"
    relay.handler.defer["reader7@newsroom.org"] = 2  # greylisted twice, then accepted

    done = send(env, "--yes")
    assert done.returncode == 1
    assert "19 delivered, 1 failed" in done.stdout
    assert "Failed: reader3@newsroom.org: relay answered 550 5.1.1 No such user" in done.stderr
    assert received_by(relay)["reader7@newsroom.org"] == 1
    assert "reader3@newsroom.org" not in received_by(relay)
    with session_factory(app)() as session:
        refused = session.scalar(select(Subscriber).where(Subscriber.email.startswith("reader3@")))
        assert refused.suppressed_at is not None and "550" in refused.suppressed_reason
        late = session.scalar(
            select(Delivery).join(Subscriber).where(Subscriber.email.startswith("reader7@"))
        )
        assert late.status is DeliveryStatus.SENT and late.attempts == 3

    runner = app.test_cli_runner()
    listed = runner.invoke(args=["subscribers", "list", "--suppressed"])
    assert listed.exit_code == 0
    assert "reader3@newsroom.org" in listed.output
    assert "suppressed: hard bounce: userunknown 550" in listed.output
    assert "reader7@" not in listed.output

    # The next issue leaves the refused address out.
    assert runner.invoke(args=["digest", "build", NEWSLETTER]).exit_code == 0
    relay.handler.messages.clear()
    nxt = subprocess.run(
        [NEWSLETTER_BIN, "digest", "send", NEWSLETTER, "2", "--yes"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert nxt.returncode == 0, nxt.stderr
    assert "19 delivered" in nxt.stdout and len(relay.messages) == 19


@pytest.mark.parametrize("pipelining", [False, True], ids=["stepwise", "pipelined"])
def test_a_relay_refusing_everyone_pauses_the_send_and_suppresses_nobody(
    tmp_path, relay, pipelining
):
    relay.handler.pipelining = pipelining
    app, env = setup_list(tmp_path, relay, 30, SEND_PAUSE_AFTER=5)
    relay.handler.refuse_all = "554 5.7.1 Relay access denied"

    paused = send(env, "--yes", "--connections", "2")
    assert paused.returncode == 75
    assert "Paused after 5 delivery errors in a row" in paused.stderr
    assert "554 5.7.1 Relay access denied" in paused.stderr
    assert "run the same command to resume" in paused.stderr
    with session_factory(app)() as session:
        suppressed = select(Subscriber).where(Subscriber.suppressed_at.isnot(None))
        assert session.scalar(suppressed) is None
    assert statuses(app)[DeliveryStatus.FAILED] == 0
    assert statuses(app)[DeliveryStatus.SENDING] == 0

    relay.handler.refuse_all = None  # the operator fixed the relay
    resumed = send(env, "--yes")
    assert resumed.returncode == 0, resumed.stderr
    assert received_by(relay) == Counter(readers(30))


def test_a_relay_that_goes_away_mid_send_and_comes_back(tmp_path, relay):
    app, env = setup_list(tmp_path, relay, 150)
    process = start_send(env, "--rate", "100", "--connections", "2")
    wait_until(lambda: len(relay.messages) >= 40)
    relay.stop()
    # Meanwhile its port answers as a relay shutting down does (421, then it hangs up):
    # a connection there is a sender that found the relay gone and tries it again. Two
    # turned away (both senders, or one again after its wait), the relay comes back.
    with socket.create_server(("127.0.0.1", relay.port)) as away:
        away.settimeout(30)  # only a sender that never noticed takes that long
        for _ in range(2):
            connection, _ = away.accept()
            with connection:
                connection.sendall(b"421 4.3.2 Service shutting down\r\n")
    relay.start()
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "150 delivered, 0 failed" in out
    counts = received_by(relay)
    assert set(counts) == set(readers(150))
    # A message whose answer the outage swallowed may be sent again: one per connection.
    assert sum(counts.values()) - 150 <= 2


def test_kill_9_at_random_points_then_resume_sends_at_most_one_copy_again_per_connection(
    tmp_path, relay
):
    total, connections, kills = 2000, 2, 3
    app, env = setup_list(tmp_path, relay, total)
    seed = random.randrange(2**32)
    chosen = random.Random(seed)
    for _ in range(kills):
        process = start_send(env, "--connections", str(connections))
        target = len(relay.messages) + chosen.randint(1, 400)
        wait_until(lambda target=target: len(relay.messages) >= target)
        os.killpg(process.pid, signal.SIGKILL)  # the command and its senders, at once
        process.communicate(timeout=10)  # reaps it and closes its pipes
    assert len(relay.messages) < total
    assert statuses(app)[DeliveryStatus.SENDING] > 0  # claims left behind by the dead

    resumed = send(env, "--yes")
    assert resumed.returncode == 0, resumed.stderr
    assert f"{total:,} delivered, 0 failed" in resumed.stdout
    counts = received_by(relay)
    assert set(counts) == set(readers(total)), f"seed {seed}"  # nobody missed
    twice = sum(counts.values()) - total
    # The bound the README states: the message in flight on each connection.
    assert twice <= kills * connections, f"{twice} second copies; seed {seed}"


def test_a_short_lease_outlived_by_a_paced_send_gives_every_reader_one_copy(tmp_path, relay):
    # 30 readers at 4 messages/s take 7.5 s: more than twice the lease.
    app, env = setup_list(tmp_path, relay, 30, SEND_LEASE=3)
    done = send(env, "--yes", "--rate", "4", "--connections", "2")
    assert done.returncode == 0, done.stderr
    assert received_by(relay) == Counter(readers(30))  # each exactly once
    assert statuses(app) == Counter({DeliveryStatus.SENT: 30})


def test_a_paced_send_of_a_short_list_goes_out_over_all_its_connections(tmp_path, relay):
    # The rate is shared out among the connections. A list shorter than a batch was
    # claimed whole by one connection while the other waited: half the rate asked.
    app, env = setup_list(tmp_path, relay, 30)
    done = send(env, "--yes", "--rate", "6", "--connections", "2")
    assert done.returncode == 0, done.stderr
    assert received_by(relay) == Counter(readers(30))
    # The first claims are 15 and 8; the second sender has 5 s to start before the
    # first is through its 15 (and then the first claims only 8 of the last 15).
    by_connection = Counter(message.peer for message in relay.messages)
    assert len(by_connection) == 2 and min(by_connection.values()) >= 5, by_connection


def test_a_relay_slower_than_the_lease_per_batch_gives_every_reader_one_copy(tmp_path, relay):
    # The two connections' first claims are 15 and 8 of the 30 readers: at 0.5 s a
    # message, each outlasts the 3 s lease.
    relay.handler.delay = 0.5
    app, env = setup_list(tmp_path, relay, 30, SEND_LEASE=3)
    done = send(env, "--yes", "--connections", "2")
    assert done.returncode == 0, done.stderr
    assert received_by(relay) == Counter(readers(30))  # each exactly once
    assert statuses(app) == Counter({DeliveryStatus.SENT: 30})


def test_ctrl_c_stops_after_the_messages_in_flight_and_a_rerun_sends_the_rest(tmp_path, relay):
    app, env = setup_list(tmp_path, relay, 200)
    process = start_send(env, "--rate", "60", "--connections", "2")
    wait_until(lambda: len(relay.messages) >= 10)

    os.killpg(process.pid, signal.SIGINT)  # Ctrl-C reaches the whole process group
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130
    assert "Interrupted: run the same command to resume." in err
    assert statuses(app)[DeliveryStatus.SENDING] == 0  # everything in flight was recorded
    sent = statuses(app)[DeliveryStatus.SENT]
    assert sent == len(relay.messages) < 200

    resumed = send(env, "--yes")
    assert resumed.returncode == 0, resumed.stderr
    assert f"{200 - sent:,} sent in this run" in resumed.stdout
    assert received_by(relay) == Counter(readers(200))  # nobody twice


@sqlite_only
def test_on_sqlite_a_second_sender_of_the_issue_is_told_one_is_running(tmp_path, relay):
    app, env = setup_list(tmp_path, relay, 100)
    process = start_send(env, "--rate", "40", "--connections", "1")
    wait_until(lambda: len(relay.messages) >= 5)
    second = send(env, "--yes")
    assert second.returncode == 1
    assert "is already running" in second.stderr
    os.killpg(process.pid, signal.SIGINT)
    process.communicate(timeout=30)
    assert send(env, "--yes").returncode == 0
    assert received_by(relay) == Counter(readers(100))


def test_on_postgresql_two_senders_share_one_send_and_each_reader_gets_one_copy(
    tmp_path, relay, postgres
):
    url = postgres.create_database(migrated=True)
    app, env = setup_list(tmp_path, relay, 400, DATABASE_URL=url)
    senders = [start_send(env, "--rate", "150", "--connections", "2") for _ in range(2)]
    outputs = [sender.communicate(timeout=60) for sender in senders]
    for sender, (_, err) in zip(senders, outputs, strict=True):
        assert sender.returncode == 0, err
    assert received_by(relay) == Counter(readers(400))  # each exactly once
    sent_by = [int(re.search(r"([\d,]+) sent in this run", out).group(1)) for out, _ in outputs]
    assert all(sent_by) and sum(sent_by) == 400  # both did part of the work
    assert statuses(app) == Counter({DeliveryStatus.SENT: 400})


def test_test_copies_dry_runs_and_refusals_record_nothing(tmp_path, relay):
    app, env = setup_list(tmp_path, relay, 5)

    test_copy = send(env, "--to", "editor@newsroom.org", "--to", "desk@newsroom.org")
    assert test_copy.returncode == 0, test_copy.stderr
    assert sorted(received_by(relay)) == ["desk@newsroom.org", "editor@newsroom.org"]

    dry = send(env, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "5 message(s) rendered" in dry.stdout and "nothing sent or recorded" in dry.stdout

    bad = send(env, "--to", "not an address")
    assert bad.returncode == 2 and "--to" in bad.stderr

    unconfirmed = send(env)  # no --yes and nobody to answer: nothing happens
    assert unconfirmed.returncode == 1 and "Aborted" in unconfirmed.stderr

    assert len(relay.messages) == 2
    assert statuses(app) == Counter()
    with session_factory(app)() as session:
        assert session.scalar(select(Issue)).sent_at is None  # still a draft


def test_without_a_terminal_the_progress_is_counted_and_written_every_ten_seconds(capsys):
    # A send's log (cron, systemd) gets a line every 10 s, and the parent counts the
    # deliveries only then: counting 200,000 rows twice a second cost 2 % of a core.
    now = [1_000.0]
    progress = Progress(total=200, done=0, clock=lambda: now[0])  # stderr: not a terminal
    found = {status: 0 for status in DeliveryStatus} | {DeliveryStatus.QUEUED: 200}
    assert progress.due()
    progress.show(found)
    now[0] += 9.5
    assert not progress.due()
    now[0] += 1
    assert progress.due()
    progress.show(found | {DeliveryStatus.SENT: 50, DeliveryStatus.QUEUED: 150})
    lines = capsys.readouterr().err.splitlines()
    assert [line.split()[:2] for line in lines] == [["0/200", "0.0%"], ["50/200", "25.0%"]]
