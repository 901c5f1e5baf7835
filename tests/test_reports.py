"""How an issue did: a real send to a relay on loopback, readers acting on it (clicks, a
scanner, a one-click unsubscribe, a bounce heard back), and every number reported."""

import json
import re
import subprocess
import threading
import time
from datetime import timedelta
from email import message_from_bytes, policy

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, text, update

from tests import inbound_samples as samples
from tests.helpers import NEWSLETTER_BIN, app_with_issue, command_env, flock_waiters, readers
from webapp.db import engine, session_factory, utcnow
from webapp.inbound.store import take_in
from webapp.links import tracked_links
from webapp.mailout.models import Delivery
from webapp.mailout.verp import Verp
from webapp.models import Issue, Subscriber
from webapp.privacy.data import personal_data
from webapp.reports.clicks import fold_clicks, fold_old_clicks
from webapp.reports.models import Click, IssueLink
from webapp.sqlite_writers import lock_path

NEWSLETTER = "explaining-ukraine"
MAIL_FROM = "letters@newsroom.org"
TRACKED = re.compile(r"https?://[^\s\"<>]+/r/[0-9a-z.]+\.[A-Za-z0-9_-]{16}")


@pytest.fixture
def sent(tmp_path, smtp_server):
    """Issue 1 sent by `digest send` to six readers through the relay: (app, {reader:
    their message})."""
    app = app_with_issue(tmp_path, smtp_server, 6, MAIL_FROM=MAIL_FROM)
    send(app, smtp_server)
    messages = {}
    for received in smtp_server.messages:
        (recipient,) = received.recipients
        messages[recipient] = message_from_bytes(received.data, policy=policy.default)
    assert sorted(messages) == sorted(readers(6))
    return app, messages


def send(app, relay) -> None:
    """`newsletter digest send` of issue 1, as staff run it."""
    done = subprocess.run(
        [NEWSLETTER_BIN, "digest", "send", NEWSLETTER, "1", "--yes"],
        env=command_env(app, relay, MAIL_FROM=MAIL_FROM),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


def tracked_in(message) -> list[str]:
    """A reader's tracked links, from both parts, by position (the token's)."""
    found = {}
    for kind in ("plain", "html"):
        for url in TRACKED.findall(message.get_body((kind,)).get_content()):
            issue, position, reader = url.rsplit("/", 1)[1].split(".")[:3]
            found[int(position, 36)] = url
    return [found[n] for n in sorted(found)]


def path(url: str) -> str:
    return url.split("://", 1)[1].partition("/")[2].join(["/", ""])


def report(app) -> dict:
    result = app.test_cli_runner().invoke(
        args=["digest", "report", NEWSLETTER, "1", "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def targets(app) -> list[str]:
    with session_factory(app)() as session:
        return list(session.scalars(select(IssueLink.url).order_by(IssueLink.position)))


def test_an_issue_report_counts_what_readers_did_and_not_what_scanners_did(sent):
    app, messages = sent
    client = app.test_client()
    r = readers(6)
    links = {reader: tracked_in(messages[reader]) for reader in r}
    urls = targets(app)
    assert len(urls) >= 2 and all(len(found) == len(urls) for found in links.values())
    # Personal links are never wrapped.
    text = messages[r[0]].get_body(("plain",)).get_content()
    assert "/unsubscribe/" in text and "/manage/" in text

    def follow(reader, n, method="get"):
        answer = getattr(client, method)(path(links[reader][n]))
        assert answer.status_code == 302
        assert answer.headers["Location"] == urls[n]

    follow(r[0], 0)  # the web version
    follow(r[1], 1)  # the lead story, twice
    follow(r[1], 1)
    follow(r[2], 1)
    for n in range(len(urls)):  # a scanner: every link of one message at once
        follow(r[3], n)
    follow(r[4], 0, "head")  # a HEAD is a scanner's too
    # One-click unsubscribe from the header of reader 4's message.
    header = messages[r[4]]["List-Unsubscribe"]
    unsubscribe = re.search(r"<(https?://[^>]+)>", header)[1]
    answer = client.post(path(unsubscribe), data={"List-Unsubscribe": "One-Click"})
    assert answer.status_code == 200
    # A hard bounce of reader 5, by the inbound path, to their VERP sender.
    verp = Verp.from_config(app.config)
    with session_factory(app)() as session:
        delivery = session.scalar(
            select(Delivery.id).join(Subscriber).where(Subscriber.email == r[5])
        )
    with app.app_context():
        bounce = take_in(
            session_factory(app),
            app.config,
            samples.postfix_dsn(verp.sender("d", delivery), r[5]),
            source="file",
        )
    assert bounce.kind == "hard-bounce"

    numbers = report(app)
    assert {k: numbers[k] for k in numbers if not isinstance(numbers[k], dict | list)} | {
        "links": numbers["links"]
    } == {
        "newsletter": NEWSLETTER,
        "number": 1,
        "subject": numbers["subject"],
        "sent_at": numbers["sent_at"],
        "recipients": 6,
        "delivered": 5,
        "failed": 0,
        "skipped": 0,
        "bounced": 1,
        "refused": 0,
        "complained": 0,
        "unsubscribed": 1,
        "clicks": 4,
        "unique_clickers": 3,
        "opens": None,
        "delivery_rate": round(5 / 6, 4),
        "bounce_rate": round(1 / 6, 4),
        "refusal_rate": 0.0,
        "complaint_rate": 0.0,
        "unsubscribe_rate": 0.2,
        "click_rate": 0.6,
        "open_rate": None,
        "links": [
            {
                "position": n,
                "url": url,
                "clicks": {0: 1, 1: 3}.get(n, 0),
                "unique_clickers": {0: 1, 1: 2}.get(n, 0),
            }
            for n, url in enumerate(urls)
        ],
    }
    assert numbers["rates"] == {
        "delivery": round(5 / 6, 4),
        "bounce": round(1 / 6, 4),
        "refusal": 0.0,
        "complaint": 0.0,
        "unsubscribe": 0.2,
        "click": 0.6,
        "open": None,
    }
    assert numbers["bounces_by_reason"] == {"userunknown": 1}
    assert numbers["refusals_by_domain"] == []
    text = app.test_cli_runner().invoke(args=["digest", "report", NEWSLETTER, "1"]).output
    assert re.search(r"delivered\s+5\s+83\.3%", text) and "(open tracking off)" in text
    listed = app.test_cli_runner().invoke(args=["digest", "list", NEWSLETTER]).output
    assert re.search(r"\s5 delivered\s+60\.0% clicked", listed), listed


def test_a_tracked_link_never_leads_elsewhere(sent):
    app, messages = sent
    client = app.test_client()
    genuine = path(tracked_in(messages[readers(6)[0]])[0])
    urls = targets(app)
    # Whatever is added to the request, the target is the issue's.
    answer = client.get(genuine + "?url=https://evil.example/&next=//evil.example")
    assert answer.headers["Location"] == urls[0]
    token = genuine.rsplit("/", 1)[1]
    with app.app_context():
        issue_id, _, reader = tracked_links().read(token)
        past_the_end = tracked_links().token(issue_id, len(urls), reader)
        other_issue = tracked_links().token(issue_id + 1, 0, reader)
    altered = token[:-1] + ("A" if token[-1] != "A" else "B")
    for bad in (altered, token.replace(".0.", ".1.", 1), past_the_end, other_issue, "x", "0.0.0"):
        answer = client.get(f"/r/{bad}")
        assert answer.status_code == 404, bad
        assert "Location" not in answer.headers
    with session_factory(app)() as session:
        assert session.scalar(select(func.count()).select_from(Click)) == 1  # the genuine one


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(token=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=80))
def test_no_made_up_token_redirects(sent, token):
    app, _ = sent
    answer = app.test_client().get("/r/" + token.replace("/", "_").replace("?", "_"))
    assert answer.status_code == 404 and "Location" not in answer.headers


def test_clicks_are_folded_into_totals_after_the_keep_days(sent):
    app, messages = sent
    client = app.test_client()
    for reader, n in ((0, 0), (1, 0), (1, 0), (2, 1)):
        client.get(path(tracked_in(messages[readers(6)[reader]])[n]))
    before = report(app)
    with session_factory(app)() as session:
        session.execute(update(Click).values(at=utcnow() - timedelta(days=31)))
        session.commit()
    after = report(app)  # the report folds what is past CLICK_KEEP_DAYS (30)
    with session_factory(app)() as session:
        assert session.scalar(select(func.count()).select_from(Click)) == 0
        issue = session.scalars(select(Issue)).one()
        assert (issue.folded_clicks, issue.folded_clickers) == (4, 3)
    assert (after["clicks"], after["unique_clickers"], after["links"]) == (
        before["clicks"],
        before["unique_clickers"],
        before["links"],
    )
    # Nothing about the readers is left: their data download lists no clicks.
    with app.app_context(), session_factory(app)() as session:
        reader = session.scalars(select(Subscriber).where(Subscriber.email == readers(6)[1])).one()
        assert personal_data(session, reader)["clicks"] == []
    client.get(path(tracked_in(messages[readers(6)[3]])[1]))
    assert report(app)["clicks"] == 5


def test_a_readers_clicks_are_in_their_data_and_go_with_erasure(sent):
    app, messages = sent
    reader = readers(6)[2]
    app.test_client().get(path(tracked_in(messages[reader])[0]))
    with app.app_context(), session_factory(app)() as session:
        subscriber = session.scalars(select(Subscriber).where(Subscriber.email == reader)).one()
        (click,) = personal_data(session, subscriber)["clicks"]
        assert (click["issue"], click["link"], click["counted"]) == (1, targets(app)[0], True)
    result = app.test_cli_runner().invoke(args=["subscribers", "delete", reader])
    assert result.exit_code == 0, result.output
    with session_factory(app)() as session:
        assert session.scalar(select(func.count()).select_from(Click)) == 0


def test_opens_are_counted_only_when_tracked(tmp_path, smtp_server):
    app = app_with_issue(tmp_path, smtp_server, 2, MAIL_FROM=MAIL_FROM, TRACK_OPENS=True)
    send(app, smtp_server)
    message = message_from_bytes(smtp_server.messages[0].data, policy=policy.default)
    pixel = re.search(r'<img src="([^"]+/o/[^"]+)"', message.get_body(("html",)).get_content())[1]
    client = app.test_client()
    assert client.head(path(pixel)).status_code == 200  # not counted
    answer = client.get(path(pixel))
    assert answer.status_code == 200 and answer.mimetype == "image/gif"
    numbers = report(app)
    assert numbers["opens"] == 1 and numbers["open_rate"] == 0.5
    assert "Apple Mail Privacy Protection" in numbers["opens_note"]


@pytest.mark.browser
def test_the_html_report_draws_its_charts_in_chromium(sent, browser, tmp_path):
    app, messages = sent
    client = app.test_client()
    for reader in readers(6)[:3]:
        client.get(path(tracked_in(messages[reader])[1]))
    out = tmp_path / "report.html"
    result = app.test_cli_runner().invoke(args=["report", "--since", "30d", "--html", str(out)])
    assert result.exit_code == 0, result.output
    html = out.read_text()
    assert "<script" not in html and "http://" not in html.split("<body>")[0]  # self-contained
    page = browser.new_page(viewport={"width": 1000, "height": 900})
    page.goto(out.as_uri())
    sections = page.locator("section.newsletter")
    assert sections.count() == 3  # every newsletter of the catalog
    first = sections.nth(0)
    assert first.locator("figure.growth svg").count() == 1
    assert first.locator("figure.rates svg").count() == 1
    # Drawn, not empty: the growth line and the issue's bars are paths in the SVG.
    assert first.locator("figure.growth svg path").count() > 10
    assert first.locator("figure.rates svg path").count() > 10
    box = first.locator("figure.growth svg").bounding_box()
    assert box["width"] > 600 and box["height"] > 300
    row = first.locator("table.issues tr").nth(1).inner_text()
    assert "No. 1" in row and "3 (50.0%)" in row  # three of six clicked
    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    page.close()


def test_every_position_is_a_link_and_only_the_pixel_is_the_pixel(app):
    # Position 24 is "o" in base 36: it once read back as the open pixel.
    with app.app_context():
        tracked = tracked_links()
        for position in range(200):
            assert tracked.read(tracked.token(7, position, 3)) == (7, position, 3)
        assert tracked.read(tracked.token(7, None, 3)) == (7, None, 3)


def a_writer_waits(app) -> bool:
    """Whether a connection to ``app``'s database waits for another's write to end: on
    PostgreSQL a backend waiting for a lock, on SQLite a writer queued for the writer
    lock file (webapp/sqlite_writers.py)."""
    url = engine(app).url
    if url.get_backend_name() == "sqlite":
        return flock_waiters(lock_path(url.database)) > 0
    query = text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    with engine(app).connect() as connection:
        return connection.scalar(query) > 0


def test_two_processes_folding_at_once_count_each_click_once(sent):
    # Found by review: each read the counts, added them, then deleted the rows.
    app, messages = sent
    client = app.test_client()
    for reader, n in ((0, 0), (1, 0), (2, 1)):
        client.get(path(tracked_in(messages[readers(6)[reader]])[n]))
    with session_factory(app)() as session:
        session.execute(update(Click).values(at=utcnow() - timedelta(days=31)))
        session.commit()
    sessions = session_factory(app)
    first = sessions()
    assert fold_old_clicks(first, 30) == 3  # not committed yet
    other = threading.Thread(target=fold_clicks, args=(sessions, 30))
    other.start()
    try:
        deadline = time.monotonic() + 30
        while not a_writer_waits(app):  # the other process waits for this one's rows
            assert other.is_alive(), "the other process did not wait for this one's rows"
            assert time.monotonic() < deadline, "the other process never came to wait"
            time.sleep(0.02)
    finally:
        first.commit()
        first.close()
    other.join(30)
    assert not other.is_alive()
    with session_factory(app)() as session:
        issue = session.scalars(select(Issue)).one()
        assert (issue.folded_clicks, issue.folded_clickers) == (3, 3)
        totals = session.execute(
            select(IssueLink.folded_clicks, IssueLink.folded_clickers).order_by(IssueLink.position)
        ).all()
        assert totals[:2] == [(2, 2), (1, 1)]
