"""Consent is history: every subscribe, confirm, welcome, unsubscribe and erasure is an
event that stays (until erasure); imports' opt-outs win; exports stream the whole list
with its history, safe to open in a spreadsheet."""

import csv
import io
import json

import pytest
from sqlalchemy import select

from tests.helpers import confirm_path, press_confirm, subscribe
from webapp.db import session_factory
from webapp.links import unsubscribe_url
from webapp.mailout.outbox import deliver_queued
from webapp.mailout.relay import transport_from_config
from webapp.models import EventKind, Subscriber, Subscription, SubscriptionEvent

NEWSLETTER = "explaining-ukraine"


def history(app, email="reader@newsroom.org") -> list[tuple[str, str | None]]:
    """(event, how) of the address's subscription to NEWSLETTER, oldest first."""
    with session_factory(app)() as session:
        subscription = session.scalars(
            select(Subscription)
            .join(Subscription.subscriber)
            .where(Subscriber.email == email, Subscription.newsletter.has(slug=NEWSLETTER))
        ).one()
        return [(e.kind.value, e.how) for e in subscription.events]


def unsubscribe_link(app, email="reader@newsroom.org") -> str:
    with app.app_context(), session_factory(app)() as session:
        subscription = session.scalars(
            select(Subscription).join(Subscription.subscriber).where(Subscriber.email == email)
        ).first()
        return unsubscribe_url(subscription).split("://", 1)[1].split("/", 1)[1]


def import_csv(app, tmp_path, lines, *options):
    path = tmp_path / "list.csv"
    path.write_text("\n".join(lines) + "\n")
    return app.test_cli_runner().invoke(
        args=["subscribers", "import", str(path), "--newsletter", NEWSLETTER, *options]
    )


def test_a_new_sign_up_after_leaving_keeps_the_earlier_consent(app, client):
    subscribe(client, headers={"User-Agent": "First/1.0"})
    press_confirm(client, confirm_path(app))
    client.post("/" + unsubscribe_link(app), data={"List-Unsubscribe": "One-Click"})
    subscribe(client, headers={"User-Agent": "Second/2.0"}, ip="127.0.0.9")  # anyone may post
    assert history(app) == [
        ("subscribed", "form"),
        ("confirmed", "link"),
        ("unsubscribed", "one-click"),
        ("resubscribed", "form"),
    ]
    with session_factory(app)() as session:
        events = session.scalars(select(SubscriptionEvent).order_by(SubscriptionEvent.id)).all()
        assert events[0].user_agent == "First/1.0" and events[1].user_agent == "Clicker/1.0"
        assert events[3].user_agent == "Second/2.0" and events[3].ip == "127.0.0.9"
        assert [e.at for e in events] == sorted(e.at for e in events)


def test_the_welcome_is_in_the_history_once_it_went_out(app, client, smtp_server):
    subscribe(client)
    press_confirm(client, confirm_path(app))
    assert history(app) == [("subscribed", "form"), ("confirmed", "link")]  # queued only
    config = {**app.config, **smtp_server.config()}
    deliver_queued(session_factory(app), transport_from_config(config), lease=60)
    assert history(app)[-1] == ("welcome_sent", None)
    assert len(smtp_server.messages) == 2


def test_erasure_removes_the_history_and_keeps_an_event_naming_nobody(app, client):
    subscribe(client)
    press_confirm(client, confirm_path(app))
    result = app.test_cli_runner().invoke(args=["subscribers", "delete", "reader@newsroom.org"])
    assert result.exit_code == 0, result.output
    with session_factory(app)() as session:
        [erased] = session.scalars(select(SubscriptionEvent)).all()
        assert erased.kind == EventKind.ERASED and erased.how == "staff"
        assert erased.subscription_id is None and erased.ip is None and erased.source is None


@pytest.mark.parametrize(
    ("header", "row"),
    [
        ("Email Address,UNSUB_TIME", "reader@newsroom.org,2025-03-01 10:00:00"),
        ("Email Address,CLEAN_TIME", "reader@newsroom.org,2025-03-01 10:00:00"),
        ("uuid,email,name,attributes,status", "u1,reader@newsroom.org,R,{},blocklisted"),
        ("email,status", "reader@newsroom.org,unsubscribed"),
    ],
    ids=["mailchimp-unsubscribed", "mailchimp-cleaned", "listmonk-blocklisted", "csv-status"],
)
def test_an_opt_out_in_an_import_unsubscribes_a_confirmed_reader(
    app, client, tmp_path, header, row
):
    subscribe(client)
    press_confirm(client, confirm_path(app))
    result = import_csv(app, tmp_path, [header, row])
    assert result.exit_code == 0, result.output
    assert "1 unsubscribed as the file says" in result.stdout
    assert history(app)[-1] == ("unsubscribed", "import")
    with session_factory(app)() as session:
        left = session.scalars(select(SubscriptionEvent).order_by(SubscriptionEvent.id)).all()[-1]
        assert left.source.startswith("import list.csv")


def test_an_import_never_brings_an_unsubscribed_reader_back(app, client, tmp_path):
    subscribe(client)
    press_confirm(client, confirm_path(app))
    client.post("/" + unsubscribe_link(app), data={"via": "page"})
    result = import_csv(
        app, tmp_path, ["email", "reader@newsroom.org"], "--confirmed", "--consent-note", "old"
    )
    assert result.exit_code == 0 and "1 already there" in result.stdout
    assert history(app)[-1] == ("unsubscribed", "link")


def test_the_same_address_twice_in_a_file_the_opt_out_wins(app, tmp_path):
    lines = ["email,status", "reader@newsroom.org,enabled", "READER@newsroom.org,blocklisted"]
    result = import_csv(app, tmp_path, lines, "--confirmed", "--consent-note", "CRM")
    assert result.exit_code == 0, result.output
    assert history(app) == [("unsubscribed", "import")]


def test_imported_readers_have_their_history(app, tmp_path):
    result = import_csv(
        app, tmp_path, ["email", "reader@newsroom.org"], "--confirmed", "--consent-note", "CRM"
    )
    assert result.exit_code == 0, result.output
    assert history(app) == [("subscribed", "import"), ("confirmed", "import")]


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_an_export_streams_past_several_batches(any_db_app, tmp_path, fmt):
    # 2,500 readers: the export used to stop after 1,000 with an identity-map error.
    app = any_db_app
    lines = ["email"] + [f"reader{n}@newsroom.org" for n in range(2500)]
    assert import_csv(app, tmp_path, lines, "--confirmed", "--consent-note", "CRM").exit_code == 0
    output = tmp_path / f"list.{fmt}"
    result = app.test_cli_runner().invoke(
        args=["subscribers", "export", "--format", fmt, "--output", str(output)]
    )
    assert result.exit_code == 0, result.output
    assert "Exported 2500 subscriptions." in result.stderr
    text = output.read_text("utf-8")
    records = list(csv.DictReader(io.StringIO(text))) if fmt == "csv" else json.loads(text)
    assert len({r["email"] for r in records}) == 2500
    last = records[-1]["history"]
    events = json.loads(last) if fmt == "csv" else last
    assert [e["event"] for e in events] == ["subscribed", "confirmed"]


FORMULAS = ['=HYPERLINK("http://127.0.0.1/x","click")', "+1+1", "-2+3", "@SUM(A1)", "\tx"]


def test_export_cells_that_a_spreadsheet_would_run_start_with_an_apostrophe(app, tmp_path):
    client = app.test_client()
    for n, formula in enumerate(FORMULAS):
        subscribe(client, f"r{n}@newsroom.org", source=formula, headers={"User-Agent": formula})
    runner = app.test_cli_runner()
    safe = runner.invoke(args=["subscribers", "export"])
    raw = runner.invoke(args=["subscribers", "export", "--raw"])
    assert safe.exit_code == raw.exit_code == 0
    safe_rows = list(csv.DictReader(io.StringIO(safe.stdout)))
    raw_rows = list(csv.DictReader(io.StringIO(raw.stdout)))
    for formula, safe_row, raw_row in zip(FORMULAS, safe_rows, raw_rows, strict=True):
        stored = formula.replace("\t", "")  # control characters never reach the database
        for cell in (safe_row["subscribe_source"], safe_row["subscribe_user_agent"]):
            assert cell == "'" + stored if stored[0] in "=+-@" else cell == stored
        assert raw_row["subscribe_source"] == stored
    for row in safe_rows:
        assert not any(value.startswith(("=", "+", "-", "@", "\t", "\r")) for value in row.values())
