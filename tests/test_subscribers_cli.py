"""Staff tools: import (Mailchimp, listmonk, plain), list, stats, delete, resend, purge."""

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from tests.helpers import confirm_path, press_confirm, subscribe
from webapp.db import session_factory
from webapp.mailout.models import OutboxMail
from webapp.models import Subscriber, Subscription, SubscriptionEvent, SubscriptionStatus
from webapp.subscribers.models import ErasedAddress

MAILCHIMP_HEADER = (
    "Email Address,First Name,Last Name,MEMBER_RATING,OPTIN_TIME,OPTIN_IP,CONFIRM_TIME,"
    "CONFIRM_IP,LATITUDE,LONGITUDE,GMTOFF,DSTOFF,TIMEZONE,CC,REGION,LAST_CHANGED,LEID,EUID,"
    "NOTES,TAGS"
)
MAILCHIMP_UNSUB_HEADER = MAILCHIMP_HEADER + (
    ",UNSUB_TIME,UNSUB_CAMPAIGN_TITLE,UNSUB_CAMPAIGN_ID,UNSUB_REASON,UNSUB_REASON_OTHER"
)
LISTMONK_HEADER = "uuid,email,name,attributes,status,created_at,updated_at"


def mailchimp_row(email, unsub=None):
    cells = [
        email,
        "Olena",
        "K",
        "2",
        "2024-01-02 10:00:00",
        "",
        "2024-01-02 10:05:00",
        "",
        "",
        "",
        "",
        "",
        "",
        "",
        "",
        "2024-01-02 10:05:00",
        "1",
        "abc",
        "",
        '"tag a"',
    ]
    if unsub is not None:
        cells += [unsub, "Daily", "x1", "", ""]
    return ",".join(cells)


def write(tmp_path, name, lines, encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes("\n".join(lines).encode(encoding) + b"\n")
    return path


def run_import(runner, path, *extra, newsletter="ukraine-daily"):
    return runner.invoke(
        args=["subscribers", "import", str(path), "--newsletter", newsletter, *extra]
    )


def confirmed_import(runner, path, newsletter="ukraine-daily"):
    return run_import(
        runner, path, "--confirmed", "--consent-note", "Mailchimp form, 2024", newsletter=newsletter
    )


def states(app, newsletter="ukraine-daily") -> dict[str, SubscriptionStatus]:
    with session_factory(app)() as session:
        rows = session.execute(
            select(Subscriber.email, Subscription.status)
            .join(Subscription.subscriber)
            .where(Subscription.newsletter.has(slug=newsletter))
        )
        return dict(rows.all())


def outbox(app) -> list[tuple[str, str]]:
    with session_factory(app)() as session:
        return session.execute(
            select(OutboxMail.kind, OutboxMail.recipient).order_by(OutboxMail.id)
        ).all()


def test_mailchimp_export_with_bad_rows(app, runner, tmp_path):
    path = write(
        tmp_path,
        "members.csv",
        [
            MAILCHIMP_HEADER,
            mailchimp_row("olena@newsroom.org"),
            mailchimp_row("not an address"),
            mailchimp_row("taras@example.com"),
            mailchimp_row("OLENA@newsroom.org"),  # the same address again
            mailchimp_row("ivan@newsroom.org"),
            "",
        ],
    )
    result = confirmed_import(runner, path)
    assert result.exit_code == 1
    assert f"{path}:3: " in result.stderr and f"{path}:4: " in result.stderr
    assert "reserved for examples" in result.stderr
    assert "(mailchimp)" in result.stdout and "2 added as confirmed" in result.stdout
    assert "2 bad" in result.stdout and "1 already there" in result.stdout
    assert states(app) == {
        "olena@newsroom.org": SubscriptionStatus.CONFIRMED,
        "ivan@newsroom.org": SubscriptionStatus.CONFIRMED,
    }
    assert outbox(app) == []  # confirmed elsewhere: no confirmation email
    with session_factory(app)() as session:
        sources = set(session.scalars(select(SubscriptionEvent.source)))
    assert sources == {"import members.csv: Mailchimp form, 2024"}


def test_reimport_is_idempotent(app, runner, tmp_path):
    path = write(tmp_path, "members.csv", [MAILCHIMP_HEADER, mailchimp_row("olena@newsroom.org")])
    assert confirmed_import(runner, path).exit_code == 0
    again = confirmed_import(runner, path)
    assert again.exit_code == 0 and "0 added" in again.stdout and "1 already there" in again.stdout
    with session_factory(app)() as session:
        assert session.scalar(select(func.count()).select_from(Subscription)) == 1


def test_mailchimp_unsubscribed_export_keeps_them_off_the_list(app, runner, tmp_path):
    path = write(
        tmp_path,
        "unsubscribed.csv",
        [
            MAILCHIMP_UNSUB_HEADER,
            mailchimp_row("gone@newsroom.org", unsub="2024-03-01 09:00:00"),
        ],
    )
    result = confirmed_import(runner, path)
    assert result.exit_code == 0 and "1 kept unsubscribed" in result.stdout
    assert states(app) == {"gone@newsroom.org": SubscriptionStatus.UNSUBSCRIBED}
    # a later import of the subscribed list does not bring them back
    write(tmp_path, "members.csv", [MAILCHIMP_HEADER, mailchimp_row("gone@newsroom.org")])
    confirmed_import(runner, tmp_path / "members.csv")
    assert states(app) == {"gone@newsroom.org": SubscriptionStatus.UNSUBSCRIBED}


def test_listmonk_export(app, runner, tmp_path):
    path = write(
        tmp_path,
        "listmonk.csv",
        [
            LISTMONK_HEADER,
            '5d3c...1,anna@newsroom.org,Anna,"{""city"": ""Kyiv""}",enabled,2024-01-01,2024-01-01',
            "5d3c...2,block@newsroom.org,Spam,{},blocklisted,2024-01-01,2024-01-01",
            "5d3c...3,off@newsroom.org,Off,{},disabled,2024-01-01,2024-01-01",
        ],
    )
    result = confirmed_import(runner, path)
    assert result.exit_code == 0, result.output
    assert "(listmonk)" in result.stdout
    assert states(app) == {
        "anna@newsroom.org": SubscriptionStatus.CONFIRMED,
        "block@newsroom.org": SubscriptionStatus.UNSUBSCRIBED,
        "off@newsroom.org": SubscriptionStatus.CONFIRMED,
    }


@pytest.mark.parametrize("header", [None, "email", "Email"])
def test_plain_one_column_file_without_confirmed_gets_confirmation_mail(
    app, runner, tmp_path, header
):
    lines = ([header] if header else []) + ["one@newsroom.org", "two@newsroom.org"]
    result = run_import(runner, write(tmp_path, "plain.csv", lines))
    assert result.exit_code == 0, result.output
    assert "2 added as pending" in result.stdout
    assert states(app) == {
        "one@newsroom.org": SubscriptionStatus.PENDING,
        "two@newsroom.org": SubscriptionStatus.PENDING,
    }
    assert outbox(app) == [("confirm", "one@newsroom.org"), ("confirm", "two@newsroom.org")]


def test_semicolons_and_a_line_that_is_not_utf8(app, runner, tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes(
        b"email;name\r\nok@newsroom.org;Ok\r\nbad\xe9@newsroom.org;Bad\r\nfine@newsroom.org;F\r\n"
    )
    result = confirmed_import(runner, path)
    assert result.exit_code == 1
    assert f"{path}:3: not UTF-8 text" in result.stderr
    assert set(states(app)) == {"ok@newsroom.org", "fine@newsroom.org"}


def test_never_resubscribes_an_unsubscribed_or_erased_address(app, client, runner, tmp_path):
    subscribe(client, email="left@newsroom.org", newsletter="ukraine-daily")
    press_confirm(client, confirm_path(app))
    with session_factory(app)() as session:
        session.scalars(select(Subscription)).one().status = SubscriptionStatus.UNSUBSCRIBED
        session.commit()
    assert runner.invoke(args=["subscribers", "delete", "Erased@Newsroom.org"]).exit_code == 0
    path = write(tmp_path, "list.csv", ["email", "left@newsroom.org", "erased@newsroom.org"])
    result = confirmed_import(runner, path)
    assert result.exit_code == 0
    assert "1 already there" in result.stdout and "1 erased skipped" in result.stdout
    assert states(app) == {"left@newsroom.org": SubscriptionStatus.UNSUBSCRIBED}


def test_many_batches_with_duplicates_across_them(app, runner, tmp_path):
    lines = ["email"] + [f"reader{n}@newsroom.org" for n in range(2500)]
    lines += [f"READER{n}@newsroom.org" for n in range(0, 2500, 100)]  # in a later batch
    result = confirmed_import(runner, write(tmp_path, "big.csv", lines))
    assert result.exit_code == 0, result.output
    assert "2500 added" in result.stdout and "25 already there" in result.stdout
    assert len(states(app)) == 2500


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        (b"", ["--confirmed", "--consent-note", "x"], "the file is empty"),
        (b"name,city\nAnna,Kyiv\n", ["--confirmed", "--consent-note", "x"], "no email column"),
        (b"a@newsroom.org\n", ["--confirmed"], "--confirmed needs --consent-note"),
        (b"a@newsroom.org\n", ["--newsletter", "nope"], "no newsletter 'nope'"),
    ],
)
def test_files_and_options_that_cannot_be_imported(app, runner, tmp_path, content, args, message):
    path = tmp_path / "x.csv"
    path.write_bytes(content)
    if "--newsletter" in args:
        result = runner.invoke(args=["subscribers", "import", str(path), *args])
    else:
        result = run_import(runner, path, *args)
    assert result.exit_code in (1, 2)
    assert message in result.output
    assert states(app) == {}


def test_list_filters_and_stats(app, client, runner):
    subscribe(client, email="kate@newsroom.org")
    press_confirm(client, confirm_path(app))
    subscribe(client, email="ivan@mail.newsroom.org", newsletter="ukraine-daily")
    result = runner.invoke(args=["subscribers", "list"])
    assert "kate@newsroom.org" in result.stdout and "ivan@mail.newsroom.org" in result.stdout
    result = runner.invoke(args=["subscribers", "list", "--status", "pending"])
    assert "ivan" in result.stdout and "kate" not in result.stdout
    result = runner.invoke(args=["subscribers", "list", "--search", "MAIL.news"])
    assert "ivan" in result.stdout and "kate" not in result.stdout
    result = runner.invoke(args=["subscribers", "list", "--search", "%"])
    assert "0 subscription(s)." in result.stderr  # % is a character, not a wildcard
    stats = runner.invoke(args=["subscribers", "stats"]).stdout.splitlines()
    assert stats[1].split()[:4] == ["explaining-ukraine", "0", "1", "0"]
    assert stats[2].split()[:4] == ["ukraine-daily", "1", "0", "0"]
    assert "+1 (+1/-0)" in stats[1]


def test_delete_erases_and_keeps_only_the_hash(app, client, runner):
    subscribe(client, email="kate@newsroom.org")
    result = runner.invoke(args=["subscribers", "delete", "KATE@newsroom.org"])
    assert result.exit_code == 0 and "1 subscription(s) deleted" in result.stdout
    with session_factory(app)() as session:
        assert session.scalar(select(func.count()).select_from(Subscriber)) == 0
        assert session.scalar(select(func.count()).select_from(OutboxMail)) == 0
        assert session.scalar(select(func.count()).select_from(ErasedAddress)) == 1
    bad = runner.invoke(args=["subscribers", "delete", "not-an-address"])
    assert bad.exit_code == 2


def test_resend_confirmations_and_purge_pending(app, client, runner):
    subscribe(client, email="slow@newsroom.org")
    subscribe(client, email="done@newsroom.org")
    press_confirm(client, confirm_path(app))
    resend = ["subscribers", "resend-confirmations", "--newsletter", "explaining-ukraine"]
    resend += ["--older-than", "2d"]
    result = runner.invoke(args=resend)
    assert "Queued 0" in result.stdout  # sent just now
    with session_factory(app)() as session:
        for s in session.scalars(select(Subscription)):
            s.confirmation_sent_at -= timedelta(days=3)
            s.status_since -= timedelta(days=31)
        session.commit()
    result = runner.invoke(args=resend)
    assert "Queued 1" in result.stdout
    assert outbox(app)[-1] == ("confirm", "slow@newsroom.org")
    result = runner.invoke(args=["subscribers", "purge-pending", "--older-than", "30d"])
    assert "Purged 1 pending subscription(s) and 1 address(es)" in result.stdout
    assert states(app, "explaining-ukraine") == {"done@newsroom.org": SubscriptionStatus.CONFIRMED}
    bad = runner.invoke(args=["subscribers", "purge-pending", "--older-than", "soon"])
    assert bad.exit_code == 2 and "not a duration" in bad.output
