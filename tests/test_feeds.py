"""Articles from the site's RSS or Atom feed, served over real HTTP on loopback: clean
paragraphs from the items' HTML, items without a title skipped, one-line errors for a
feed that cannot be read, `newsletter articles fetch`, and digests linking to the story."""

import re
from datetime import datetime
from email import message_from_bytes, policy

import pytest
from sqlalchemy import update

from emails.articles import Article, FeedItem
from emails.digest import DigestContent, render_digest
from emails.feeds import FeedError, fetch_feed, html_paragraphs, parse_feed, read_feed
from tests.helpers import free_port, make_app
from webapp.catalog import find_newsletter
from webapp.db import session_factory, utcnow
from webapp.i18n import CATALOGS
from webapp.issues.building import build_issue
from webapp.links import tracked_links
from webapp.models import Issue

ATOM = """<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xml:lang="en">
  <title>The Kyiv Independent</title>
  <id>https://news.example.org/</id>
  <updated>2024-01-02T09:00:00Z</updated>
  <entry>
    <id>tag:news.example.org,2024:1001</id>
    <title>Putin promises to intensify attacks</title>
    <link rel="alternate" href="/news/putin-promises"/>
    <published>2024-01-01T20:19:00+02:00</published>
    <updated>2024-01-01T21:00:00+02:00</updated>
    <author><name>The Kyiv Independent news desk</name></author>
    <summary>Putin said Russia would intensify its strikes.</summary>
    <content type="html"><![CDATA[
      <p>Russian President Vladimir Putin said on Jan. 1 that
         <a href="/x">Russia <b>will</b> intens<i>ify</i></a> its strikes.</p>
      <script>track("pageview")</script><style>p { color: red }</style>
      <p>Kyiv&#8217;s metro &amp; shelters&nbsp;stayed   open.</p>
      <ul><li>Kharkiv: 2 injured</li><li>Odesa: <em>no</em> damage</li></ul>
      <iframe src="https://video.example.org/embed">Watch the video</iframe>
      <div>Editor&#39;s note<br>Updated at 21:00</div>
    ]]></content>
  </entry>
  <entry>
    <id>tag:news.example.org,2024:1002</id>
    <title>Київ під обстрілом: що відомо</title>
    <link href="https://news.example.org/uk/news/kyiv"/>
    <updated>2024-01-02T05:15:00Z</updated>
    <author><name>Олена Петренко</name></author>
    <content type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml">
      <p>Уночі Росія атакувала <strong>Київ</strong>.</p><p>Друга частина.</p>
    </div></content>
  </entry>
  <entry>
    <id>tag:news.example.org,2024:1003</id>
    <title> </title>
    <summary>A photo gallery without a caption.</summary>
  </entry>
</feed>
"""

RSS = """<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/">
<channel>
  <title>Newsroom</title>
  <link>https://news.example.org/</link>
  <description>The news</description>
  <item>
    <title>Metro stations stay open</title>
    <link>https://news.example.org/news/metro</link>
    <guid isPermaLink="false">news-1042</guid>
    <pubDate>Tue, 02 Jan 2024 07:05:00 +0000</pubDate>
    <dc:creator>Olena Petrenko</dc:creator>
    <description>&lt;p&gt;First &lt;b&gt;bold&lt;/b&gt; paragraph.&lt;/p&gt;
      &lt;p&gt;Second.&lt;/p&gt;</description>
  </item>
  <item>
    <description>An item with no title at all.</description>
    <link>https://news.example.org/news/untitled</link>
  </item>
  <item>
    <title>Air raid alert</title>
    <link>https://news.example.org/news/alert-1</link>
    <description>Plain text, no markup.</description>
  </item>
  <item>
    <title>Air raid alert</title>
    <link>javascript:alert(1)</link>
    <description>The all clear.</description>
  </item>
</channel>
</rss>
"""


def test_an_atom_feeds_html_becomes_clean_paragraphs(feed_server):
    url = feed_server.serve("/feed.atom", ATOM, content_type="application/atom+xml")
    read = read_feed(url)
    assert read.title == "The Kyiv Independent" and read.warning is None
    lead = read.items[0]
    assert lead.key == "tag:news.example.org,2024:1001"
    assert lead.article == Article(
        slug="putin-promises-to-intensify-attacks",
        title="Putin promises to intensify attacks",
        paragraphs=[
            "Russian President Vladimir Putin said on Jan. 1 that Russia will intensify its "
            "strikes.",
            "Kyiv’s metro & shelters stayed open.",
            "Kharkiv: 2 injured",
            "Odesa: no damage",
            "Editor's note",
            "Updated at 21:00",
        ],
        byline="The Kyiv Independent news desk",
        published=datetime(2024, 1, 1, 18, 19),  # UTC
        reading_minutes=1,
        url=feed_server.url("/news/putin-promises"),  # relative to the feed
    )
    for paragraph in lead.article.paragraphs:
        assert "<" not in paragraph and "track(" not in paragraph and "color" not in paragraph
    assert "Watch the video" not in " ".join(lead.article.paragraphs)


def test_a_ukrainian_item_gets_a_transliterated_slug(feed_server):
    read = read_feed(feed_server.serve("/feed.atom", ATOM))
    item = read.items[1]
    assert item.article.title == "Київ під обстрілом: що відомо"
    assert item.article.slug == "kyiv-pid-obstrilom-shcho-vidomo"
    assert item.article.paragraphs == ["Уночі Росія атакувала Київ.", "Друга частина."]
    assert item.article.byline == "Олена Петренко"
    assert item.article.published == datetime(2024, 1, 2, 5, 15)  # updated, when not published


def test_an_item_without_a_title_is_skipped_and_the_rest_taken(feed_server):
    atom = read_feed(feed_server.serve("/feed.atom", ATOM))
    assert len(atom.items) == 2 and atom.skipped == ["item 3: no title"]
    rss = read_feed(feed_server.serve("/rss.xml", RSS, content_type="application/rss+xml"))
    assert [item.article.title for item in rss.items] == [
        "Metro stations stay open",
        "Air raid alert",
        "Air raid alert",
    ]
    assert rss.skipped == ["item 2: no title"]


def test_rss_items_become_articles(feed_server):
    metro, alert, all_clear = read_feed(feed_server.serve("/rss.xml", RSS)).items
    assert metro.key == "news-1042"  # the guid
    assert metro.article.paragraphs == ["First bold paragraph.", "Second."]
    assert metro.article.byline == "Olena Petrenko"
    assert metro.article.published == datetime(2024, 1, 2, 7, 5)
    assert metro.article.url == "https://news.example.org/news/metro"
    assert alert.key == "https://news.example.org/news/alert-1"  # no guid: the link
    assert alert.article.paragraphs == ["Plain text, no markup."]
    assert all_clear.article.url is None  # only http and https links are kept


def test_duplicate_titles_get_unique_slugs(feed_server):
    items = read_feed(feed_server.serve("/rss.xml", RSS)).items
    assert [item.article.slug for item in items] == [
        "metro-stations-stay-open",
        "air-raid-alert",
        "air-raid-alert-2",
    ]
    assert len({item.key for item in items}) == 3


def test_keys_are_stable_across_reads(feed_server):
    url = feed_server.serve("/rss.xml", RSS)
    first = [item.key for item in read_feed(url).items]
    assert [item.key for item in read_feed(url).items] == first
    # The next morning: a new item on top, the oldest gone; the others keep their keys.
    newer = RSS.replace(
        "<item>",
        "<item><title>Morning briefing</title><guid>news-1043</guid></item><item>",
        1,
    ).replace("<title>Air raid alert</title>\n    <link>javascript:alert(1)</link>", "", 1)
    feed_server.serve("/rss.xml", newer)
    again = {item.article.title: item.key for item in read_feed(url).items}
    assert again["Morning briefing"] == "news-1043"
    assert again["Metro stations stay open"] == first[0]
    assert again["Air raid alert"] == first[1]


def test_the_feed_is_asked_for_as_the_service_and_redirects_followed(feed_server):
    feed_server.serve("/feed.atom", ATOM)
    moved = feed_server.serve("/old-feed", "", status=301, headers={"Location": "/feed.atom"})
    assert len(read_feed(moved).items) == 2
    assert [path for path, _ in feed_server.requests] == ["/old-feed", "/feed.atom"]
    assert all(agent.startswith("newsletter/") for _, agent in feed_server.requests)


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (lambda s: s.serve("/page", "<html><body><p>Down</p></body></html>"), "not a feed"),
        (lambda s: s.serve("/api", '{"items": []}', content_type="application/json"), "not a feed"),
        (lambda s: s.serve("/empty", b""), "not a feed"),
        (lambda s: s.url("/missing"), "HTTP 404 Not Found"),
        (lambda s: s.serve("/error", "oops", status=500), "HTTP 500 Internal Server Error"),
        (lambda s: s.serve("/down", "", status=503), "HTTP 503 Service Unavailable"),
        (lambda s: f"http://127.0.0.1:{free_port()}/feed", "connection refused"),
        (lambda s: s.serve("/slow", RSS, delay=3), "timed out"),
        (lambda s: s.serve("/big", "x" * 5000), "5000 bytes, larger than 4096 bytes"),
        (lambda s: s.serve("/drip", "x" * 5000, length=False), "larger than 4096 bytes"),
        (
            lambda s: s.serve(
                "/moved", "", status=302, headers={"Location": "ftp://news.example.org/f"}
            ),
            "redirected to ftp://news.example.org/f, not http or https",
        ),
        (lambda s: "ftp://news.example.org/feed.xml", "only http and https feeds are read"),
        (lambda s: "file:///etc/passwd", "only http and https feeds are read"),
        (lambda s: "http://", "no host given"),
    ],
)
def test_a_feed_that_cannot_be_read_is_one_line(feed_server, answer, reason):
    url = answer(feed_server)
    with pytest.raises(FeedError) as refused:
        parse_feed(fetch_feed(url, timeout=2, max_bytes=4096), url)
    assert str(refused.value).startswith(f"{url}: ")
    assert reason in str(refused.value)
    assert "\n" not in str(refused.value)


def test_a_feed_broken_part_way_gives_the_items_before_the_break(feed_server):
    url = feed_server.serve("/cut.xml", RSS[: RSS.index("<item>", RSS.index("<item>") + 1)])
    read = read_feed(url)
    assert [item.key for item in read.items] == ["news-1042"]
    assert read.warning and "XML" in read.warning


def test_a_local_file_is_read_for_offline_use(tmp_path):
    path = tmp_path / "feed.atom"
    path.write_text(ATOM, encoding="utf-8")
    assert len(read_feed(str(path)).items) == 2
    with pytest.raises(FeedError, match="cannot read"):
        read_feed(str(tmp_path / "missing.atom"))
    # Typed names with a NUL or a line end: one line, the controls shown escaped.
    with pytest.raises(FeedError, match=r"^a\\x00b: not a file name$"):
        read_feed("a\x00b")
    with pytest.raises(FeedError, match=r"^feed\\r\\n\.xml: cannot read"):
        read_feed("feed\r\n.xml")


@pytest.mark.parametrize(
    ("markup", "paragraphs"),
    [
        ("<p>One <b>bo<i>ld</i></b> word</p>", ["One bold word"]),
        ("<div>Own text<p>Inner</p>tail</div>", ["Own text", "Inner", "tail"]),
        ("first line<br>second<br/><br/>third", ["first line", "second", "third"]),
        ("<ol><li>a</li><li><p>b</p> c</li></ol>", ["a", "b", "c"]),
        ("<h2>Head</h2><blockquote>Quote</blockquote>", ["Head", "Quote"]),
        ("<pre>  code\n   here </pre>", ["code here"]),
        ("<table><tr><td>1</td><td>2</td></tr><tr><th>3</th></tr></table>", ["1 2", "3"]),
        ("<p>a<script>x<p>y</p></script><style>b</style><noscript>c</noscript>d</p>", ["ad"]),
        ("<p>x<!-- comment -->y</p><![CDATA[z]]>", ["xy"]),
        ("<form><input value=a><button>Go</button></form><p>kept</p>", ["kept"]),
        ("Tom &amp; Jerry &lt;3", ["Tom & Jerry <3"]),
        ("https://news.example.org/a", ["https://news.example.org/a"]),
        ("<?xml version='1.0'?><p>x</p>", ["x"]),
        ("<p>bell\x07 and\x00 nul</p>", ["bell and nul"]),
        ("<p>  </p><p>&nbsp;</p>", []),
        ("<div>" * 5000 + "deep" + "</div>" * 5000, ["deep"]),
    ],
)
def test_html_becomes_plain_paragraphs(markup, paragraphs):
    assert html_paragraphs(markup) == paragraphs


def test_articles_fetch_shows_what_would_be_taken(feed_server, runner):
    url = feed_server.serve("/feed.atom", ATOM)
    result = runner.invoke(args=["articles", "fetch", url])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == (
        "2024-01-01 18:19  Putin promises to intensify attacks  "
        f"[tag:news.example.org,2024:1001] {feed_server.url('/news/putin-promises')}  "
        "6 paragraph(s), 31 words"
    )
    assert lines[1].startswith("2024-01-02 05:15  Київ під обстрілом: що відомо  [")
    assert lines[-1] == "2 article(s) would be taken, 1 skipped."
    assert result.stderr == "skipped: item 3: no title\n"


def test_articles_fetch_warns_of_a_feed_broken_part_way(feed_server, runner):
    url = feed_server.serve("/cut.xml", RSS[: RSS.index("<description>Plain text")])
    result = runner.invoke(args=["articles", "fetch", url])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == "2 article(s) would be taken, 1 skipped."
    assert result.stderr.splitlines() == [
        f"warning: {url}: bad XML: no element found; the items before it were read",
        "skipped: item 2: no title",
    ]


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (lambda s: s.url("/missing"), "HTTP 404 Not Found"),
        (
            lambda s: s.serve("/page", "<html><p>Down</p></html>", content_type="text/html"),
            "not a feed",
        ),
        (lambda s: f"http://127.0.0.1:{free_port()}/", "connection refused"),
    ],
)
def test_articles_fetch_of_a_feed_that_cannot_be_read(feed_server, runner, answer, reason):
    url = answer(feed_server)
    result = runner.invoke(args=["articles", "fetch", url])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == f"Error: {url}: {reason}\n"


def test_a_digest_of_feed_articles_links_to_each_story_tracked(tmp_path, feed_server):
    app = make_app(tmp_path, PUBLIC_URL="https://news.example.org", TRACK_CLICKS=True)
    read = read_feed(feed_server.serve("/feed.atom", ATOM))
    stories = [feed_server.url("/news/putin-promises"), "https://news.example.org/uk/news/kyiv"]
    with app.app_context(), session_factory(app)() as session:
        newsletter = find_newsletter(session, "explaining-ukraine")
        issue = build_issue(session, newsletter, [item.article for item in read.items])
        session.commit()
        # Under each story, in both parts, the slot of a tracked link to it.
        html, text = issue.html["parts"], issue.text["parts"]
        in_html = [
            html[n]
            for n in range(1, len(html), 2)
            if re.match(r'"[^>]*>Read the full story →', html[n + 1])
        ]
        in_text = [
            text[n] for n in range(1, len(text), 2) if text[n - 1].endswith("Read the full story: ")
        ]
        assert in_html == in_text and len(in_html) == 2
        positions = [int(slot.removeprefix("link")) for slot in in_html]
        assert [issue.content["links"][n] for n in positions] == stories
        tokens = [tracked_links().token(issue.id, n, 1) for n in positions]
    client = app.test_client()
    assert [client.head(f"/r/{token}").headers["Location"] for token in tokens] == stories
    # A preview shows the links themselves.
    eml = tmp_path / "issue.eml"
    result = app.test_cli_runner().invoke(
        args=["digest", "preview", "explaining-ukraine", "1", "--eml", str(eml)]
    )
    assert result.exit_code == 0, result.output
    message = message_from_bytes(eml.read_bytes(), policy=policy.default)
    html = message.get_body(("html",)).get_content()
    text = message.get_body(("plain",)).get_content()
    assert re.findall(r'<a href="([^"]+)"[^>]*>Read the full story →</a>', html) == stories
    assert re.findall(r"Read the full story: (\S+)", text) == stories
    # So does the issue's web version, once it is sent.
    with session_factory(app)() as session:
        session.execute(update(Issue).values(sent_at=utcnow()))
        session.commit()
    page = client.get("/newsletters/explaining-ukraine/issues/1").get_data(as_text=True)
    assert re.findall(r'<a href="([^"]+)">Read the full story →</a>', page) == stories


def test_a_digest_links_to_the_story_untracked_and_in_ukrainian():
    article = Article("kyiv", "Київ під обстрілом", ["Уночі."], url="https://news.example.org/k")
    content = DigestContent(
        site_name="Newsroom",
        newsletter_title="Україна щодня",
        number=1,
        subject=article.title,
        preheader="Уночі.",
        lead=article,
        stories=[Article("seed", "A seed article", ["Body."])],
        feed=[],
        web_url="https://news.example.org/uk/newsletters/u/issues/1",
        reason="…",
        language="uk",
        catalogs=CATALOGS,
    )
    rendered = render_digest(content)
    personal = {"unsubscribe_url": "https://u", "manage_url": "https://m"}
    html, text = rendered.html.fill(personal), rendered.text.fill(personal)
    assert re.search(
        r'<a href="https://news.example.org/k"[^>]*>Читати повністю на сайті →</a>', html
    )
    assert "Читати повністю на сайті: https://news.example.org/k" in text
    assert html.count("Читати повністю на сайті") == 1  # not under the seed article
    assert rendered.links == []


@pytest.mark.parametrize("url", ["https://news.example.org/news/metro", None])
def test_an_article_round_trips_through_storage(url):
    article = Article(
        slug="metro",
        title="Metro stations stay open",
        paragraphs=["First.", "Second."],
        byline="Olena Petrenko",
        published=datetime(2024, 1, 2, 7, 5),
        reading_minutes=1,
        feed=[FeedItem("07:05", "An update")],
        url=url,
    )
    assert Article.from_dict(article.to_dict()) == article


def test_an_article_stored_before_links_still_loads():
    stored = {"slug": "old", "title": "Old", "paragraphs": ["Body."], "feed": []}
    assert Article.from_dict(stored) == Article("old", "Old", ["Body."])


def test_items_past_repair_are_skipped_and_the_rest_taken(feed_server):
    bad_link = "<item><title>Bad link</title><link>http://[bad/</link><guid>a</guid></item>"
    bad_markup = (
        "<item><title>Bad markup</title><guid>b</guid>"
        "<description>&lt;!x&lt;![ a</description></item>"
    )
    no_link = (
        "<item><title>Only a guid</title><guid isPermaLink='false'>c</guid>"
        "<description>Text.</description></item>"
    )
    feed = (
        "<?xml version='1.0'?><rss version='2.0'><channel><title>Site</title>"
        f"{bad_link}{bad_markup}{no_link}</channel></rss>"
    )
    read = read_feed(feed_server.serve("/odd.xml", feed))
    assert [item.key for item in read.items] == ["c"]
    assert read.items[0].article.url is None  # not the feed's own address
    assert len(read.skipped) == 2 and all("cannot be read" in line for line in read.skipped)
