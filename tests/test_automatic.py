"""Automatic issues: at each slot of a newsletter's schedule, an issue of what is new in
its sources (a site's Atom feed on loopback here), nothing when nothing is new, each
slot once across daylight-saving changes and several workers."""

import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, update

from tests.helpers import (
    ROOT,
    FeedServer,
    SmtpServer,
    app_with_issue,
    make_app,
    readers,
    start_worker,
    stop,
)
from webapp.catalog import CatalogError, read_catalog, seed_catalog
from webapp.db import session_factory
from webapp.issues.automatic import run_automatic
from webapp.issues.building import issue_articles
from webapp.issues.models import AutomaticRun
from webapp.models import Issue, Newsletter

KYIV = ZoneInfo("Europe/Kyiv")
NEWSLETTER = "explaining-ukraine"


class Site:
    """A news site whose Atom feed (on a FeedServer, on loopback) changes as it
    publishes: ``add`` a story, or set ``status`` to answer with an error."""

    def __init__(self, server: FeedServer):
        self.server = server
        self.entries: list[tuple[str, str, str]] = []  # (id, title, HTML), newest first
        self._status = 200
        self.url = self.publish()

    def add(self, title: str, html: str = "<p>The story, as the site tells it.</p>") -> None:
        self.entries.insert(0, (f"tag:kyivindependent.com,2027:{title}", title, html))
        self.publish()

    @property
    def status(self) -> int:
        return self._status

    @status.setter
    def status(self, status: int) -> None:
        self._status = status
        self.publish()

    def publish(self) -> str:
        items = "".join(
            f"<entry><id>{escape(key)}</id><title>{escape(title)}</title>"
            f"<link href='https://kyivindependent.com/{len(key)}/'/>"
            f"<updated>2027-01-01T00:00:00Z</updated>"
            f"<content type='html'>{escape(html)}</content></entry>"
            for key, title, html in self.entries
        )
        atom = (
            "<?xml version='1.0' encoding='utf-8'?>"
            "<feed xmlns='http://www.w3.org/2005/Atom'><title>The Kyiv Independent</title>"
            "<id>tag:kyivindependent.com,2027:feed</id><updated>2027-01-01T00:00:00Z</updated>"
            f"{items}</feed>"
        )
        return self.server.serve(
            "/feed.atom", atom, status=self._status, content_type="application/atom+xml"
        )


@pytest.fixture
def site(feed_server):
    return Site(feed_server)


def automatic(app, schedule: str, sources: list[str], since: datetime | None = None) -> None:
    """Give explaining-ukraine a schedule and sources, as the catalog file would."""
    entries = read_catalog(ROOT / "seeds" / "newsletters.toml")
    for entry in entries:
        if entry["slug"] == NEWSLETTER:
            entry.update(schedule=schedule, source=sources)
    with session_factory(app)() as session:
        seed_catalog(session, entries)
        if since is not None:
            session.execute(update(Newsletter).values(schedule_since=since))
        session.commit()


def tick(app, now: datetime) -> list[str]:
    """One worker pass's automatic step, at ``now``."""
    with app.app_context(), session_factory(app)() as session:
        return [line for _, line, _ in run_automatic(session, now=now)]


def issues(app) -> list[tuple[int, list[str], datetime]]:
    """(number, article titles, scheduled time) of each issue, in order."""
    with session_factory(app)() as session:
        found = session.scalars(select(Issue).order_by(Issue.number)).all()
        return [(i.number, [a.title for a in issue_articles(i)[0]], i.scheduled_at) for i in found]


def runs(app) -> list[tuple[str, str]]:
    with session_factory(app)() as session:
        rows = session.execute(select(AutomaticRun.slot, AutomaticRun.outcome).order_by("id"))
        return [tuple(row) for row in rows]


def kyiv(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=KYIV)


def test_a_daily_newsletter_takes_what_is_new_each_day_across_daylight_saving(tmp_path, site):
    app = make_app(tmp_path)
    automatic(app, "30 3 * * *", [site.url], since=kyiv("2027-03-26 00:00"))
    news = {  # the article the site publishes at this local time
        "2027-03-26 01:00": "Kyiv marks the first warm day",
        "2027-03-27 02:00": "Ukraine's grain corridor reopens",
        # The clocks go forward at 03:00 on 28 March: 03:30 does not exist that day.
        "2027-03-28 02:40": "Rail line to Kharkiv restored",
        # Nothing new on 29 March.
    }
    clock, lines = kyiv("2027-03-26 00:00"), []
    site.add("An old story the feed still lists")
    while clock < kyiv("2027-03-30 00:00"):
        for at, title in news.items():
            if kyiv(at) <= clock and title not in [t for _, t, _ in site.entries]:
                site.add(title)
        lines += tick(app, clock)
        clock += timedelta(minutes=10)
    assert issues(app) == [
        (1, ["Kyiv marks the first warm day", "An old story the feed still lists"],
         kyiv("2027-03-26 03:30")),
        (2, ["Ukraine's grain corridor reopens"], kyiv("2027-03-27 03:30")),
        (3, ["Rail line to Kharkiv restored"], kyiv("2027-03-28 04:00")),  # after the gap
    ]  # fmt: skip
    assert runs(app) == [
        ("2027-03-26T03:30:00+02:00", "built issue 1 of 2 new article(s)"),
        ("2027-03-27T03:30:00+02:00", "built issue 2 of 1 new article(s)"),
        ("2027-03-28T04:00:00+03:00", "built issue 3 of 1 new article(s)"),
        ("2027-03-29T03:30:00+03:00", "nothing new since issue 3: no issue"),
    ]
    assert any("nothing new since issue 3" in line for line in lines)
    assert not any("late" in line for line in lines)  # each ran within its 10 minutes

    # Autumn: the clocks go back at 04:00 on 31 October, and 03:00-04:00 comes twice.
    with session_factory(app)() as session:
        session.execute(update(Newsletter).values(schedule_since=kyiv("2027-10-30 00:00")))
        session.commit()
    clock = datetime(2027, 10, 30, 0, 0, tzinfo=UTC)
    while clock < datetime(2027, 11, 1, 0, 0, tzinfo=UTC):
        local = clock.astimezone(KYIV)
        if local.date().day == 31 and local.hour == 3 and local.minute == 40 and local.fold == 0:
            site.add("Published between the two 03:30s")  # a second run would take it
        lines += tick(app, clock)
        clock += timedelta(minutes=10)
    autumn = [run for run in runs(app) if run[0].startswith("2027-10")]
    assert autumn == [
        ("2027-10-30T03:30:00+03:00", "nothing new since issue 3: no issue"),
        ("2027-10-31T03:30:00+03:00", "nothing new since issue 3: no issue"),  # once
    ]
    assert issues(app)[-1][0] == 3


def test_a_worker_that_was_down_runs_the_latest_slot_once_and_says_it_was_late(tmp_path, site):
    app = make_app(tmp_path)
    site.add("The story of the week")
    automatic(app, "0 7 * * *", [site.url], since=kyiv("2027-05-01 00:00"))
    lines = tick(app, kyiv("2027-05-04 09:15"))  # no worker ran on 1 to 4 May
    assert runs(app) == [("2027-05-04T07:00:00+03:00", "built issue 1 of 1 new article(s)")]
    assert "2.2 h late (no worker ran at its time); 3 earlier slot(s) missed too" in lines[0]
    assert tick(app, kyiv("2027-05-04 09:20")) == []
    assert issues(app)[0][2] == kyiv("2027-05-04 07:00")


def test_a_source_that_cannot_be_read_is_skipped_and_the_rest_goes_on(tmp_path, site):
    app = make_app(tmp_path)
    broken = site.server.serve("/down.atom", "", status=503)
    site.add("A story without a title", html="<p>x</p>")
    site.entries[0] = (site.entries[0][0], "", "<p>No title here.</p>")
    site.add("Kept story")
    automatic(app, "0 7 * * *", [broken, site.url], since=kyiv("2027-05-01 00:00"))
    (line,) = tick(app, kyiv("2027-05-01 07:01"))
    assert issues(app)[0][1] == ["Kept story"]
    assert f"feed skipped: {broken}: HTTP 503" in line
    assert "no title" in line


def test_when_no_source_can_be_read_the_slot_is_tried_again(tmp_path, site):
    app = make_app(tmp_path)
    site.add("Late but not lost")
    site.status = 500
    automatic(app, "0 7 * * *", [site.url], since=kyiv("2027-05-01 00:00"))
    with app.app_context(), session_factory(app)() as session:
        ((_, line, done),) = run_automatic(session, now=kyiv("2027-05-01 07:00"))
    assert not done and "no source could be read; trying again later" in line
    assert runs(app) == []
    site.status = 200
    tick(app, kyiv("2027-05-01 07:05"))
    assert issues(app)[0][1] == ["Late but not lost"]


def test_the_seeds_folder_is_the_default_source_and_a_manual_build_counts(tmp_path):
    app = make_app(tmp_path)
    runner = app.test_cli_runner()
    assert runner.invoke(args=["digest", "build", NEWSLETTER]).exit_code == 0  # by hand
    automatic(app, "0 7 * * 1", None, since=kyiv("2027-05-01 00:00"))
    tick(app, kyiv("2027-05-03 07:00"))  # a Monday
    assert runs(app) == [("2027-05-03T07:00:00+03:00", "nothing new since issue 1: no issue")]


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"schedule": "every morning"}, "is not a cron expression"),
        ({"schedule": "0 25 * * *"}, "is not a cron expression"),
        ({"schedule": "0 7 * * * *"}, "is not a cron expression"),  # cronsim's seconds
        ({"source": "ftp://example.org/feed"}, "feeds are http(s)"),
        ({"source": []}, "must be a feed URL or folder"),
        ({"source": [""]}, "is not a URL or folder"),
    ],
)
def test_a_bad_schedule_or_source_in_the_catalog_is_one_line(tmp_path, fields, message):
    lines = [f"{key} = {value!r}".replace("'", '"') for key, value in fields.items()]
    path = tmp_path / "newsletters.toml"
    path.write_text('[[newsletter]]\nslug = "daily"\ntitle = "Daily"\n' + "\n".join(lines))
    with pytest.raises(CatalogError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_catalog(path)


def test_the_worker_builds_and_sends_an_automatic_issue_once(any_db_app, tmp_path, site):
    relay = SmtpServer().start()
    app = app_with_issue(tmp_path, relay, 6, DATABASE_URL=any_db_app.config["DATABASE_URL"])
    site.add("Morning briefing: what happened overnight")
    # Yearly on 1 January, set up before the last one, when no worker ran: once, late.
    automatic(app, "0 0 1 1 *", [site.url], since=datetime(2025, 12, 1, tzinfo=UTC))
    workers = [start_worker(app, relay)]
    if not app.config["DATABASE_URL"].startswith("sqlite"):
        workers.append(start_worker(app, relay))  # two workers share it: one builds
    try:
        deadline = time.monotonic() + 60
        while True:  # built, sent to every reader and marked finished
            with session_factory(app)() as session:
                built = session.scalar(select(Issue).where(Issue.number == 2))
                if built is not None and built.finished_at is not None:
                    break
            assert time.monotonic() < deadline, "issue 2 was not built and sent in time"
            time.sleep(0.05)
    finally:
        outputs = [stop(worker) for worker in workers]
        relay.stop()
    # Stopped by SIGTERM, a worker ends after what is in flight (no job was left
    # running): a second build or copy under way has shown by the time it exited.
    assert not any("Jobs still running" in err for _, err in outputs), outputs
    subjects = Counter(message.message["Subject"] for message in relay.messages)
    assert subjects == {"Morning briefing: what happened overnight": 6}
    received = Counter(to for message in relay.messages for to in message.recipients)
    assert received == Counter(readers(6))
    out = "".join(out for out, _ in outputs)
    assert f"Automatic {NEWSLETTER}" in out and "late (no worker ran at its time)" in out
    assert out.count("built issue 2 of 1 new article(s)") == 1


def test_pages_of_one_name_in_two_folders_are_two_articles(tmp_path):
    seeds = tmp_path / "seeds"
    for folder, title in (("site-a", "A story from site A"), ("site-b", "A story from site B")):
        (seeds / folder).mkdir(parents=True)
        (seeds / folder / "index.txt").write_text(f"{title}\n\nIts first paragraph.\n")
    app = make_app(tmp_path, SEEDS_PATH=str(seeds))
    automatic(app, "0 7 * * *", ["site-a", "site-b", "missing"], since=kyiv("2027-05-01 00:00"))
    (line,) = tick(app, kyiv("2027-05-01 07:00"))
    assert issues(app)[0][1] == ["A story from site A", "A story from site B"]
    assert f"folder skipped: {seeds / 'missing'}: no such folder" in line


def test_a_newsletter_the_worker_cannot_run_does_not_stop_the_others(tmp_path, site):
    app = make_app(tmp_path)
    site.add("Still goes out")
    automatic(app, "0 7 * * *", [site.url], since=kyiv("2027-05-01 00:00"))
    with session_factory(app)() as session:  # changed behind the catalog's back
        session.execute(
            update(Newsletter)
            .where(Newsletter.slug == "ukraine-daily")
            .values(schedule="0 7 * *", schedule_since=None)
        )
        session.commit()
    with app.app_context(), session_factory(app)() as session:
        results = run_automatic(session, now=kyiv("2027-05-01 07:00"))
    assert [done for _, _, done in results] == [True, False]
    assert "Automatic ukraine-daily: failed, trying again later" in results[1][1]
    assert issues(app)[0][1] == ["Still goes out"]
