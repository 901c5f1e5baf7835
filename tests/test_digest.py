"""Digests: build, preview and check from the CLI; the message as mail clients parse it."""

import re
from email import message_from_bytes, policy
from pathlib import Path

import dkim
import pytest
from sqlalchemy import func, select

from emails.preflight import check_message
from tests.helpers import ROOT, confirm_path, make_app, press_confirm, subscribe
from tests.helpers import dkim_key as make_dkim_key
from webapp.db import session_factory, utcnow
from webapp.models import Issue

ARTICLES = Path(__file__).parent / "articles"
SEED = ROOT / "seeds" / "000_ce0462a30ea3d8dc.txt"
PUBLIC = "https://news.newsroom.org"


@pytest.fixture
def app(tmp_path):
    return make_app(tmp_path, PUBLIC_URL=PUBLIC, MAIL_FROM="letters@newsroom.org")


def build(runner, *args) -> int:
    result = runner.invoke(args=["digest", "build", *args])
    assert result.exit_code == 0, result.output
    return int(result.output.strip().splitlines()[-1])


def preview(runner, tmp_path, number=1, *extra) -> bytes:
    eml = tmp_path / f"issue{number}.eml"
    result = runner.invoke(
        args=["digest", "preview", "explaining-ukraine", str(number), "--eml", str(eml), *extra]
    )
    assert result.exit_code == 0, result.output
    return eml.read_bytes()


def issues(app) -> int:
    with session_factory(app)() as session:
        return session.scalar(select(func.count()).select_from(Issue))


def test_build_numbers_issues_and_prints_the_number_last(runner):
    assert build(runner, "explaining-ukraine") == 1
    assert build(runner, "explaining-ukraine", str(SEED)) == 2
    assert build(runner, "ukraine-daily") == 1
    listing = runner.invoke(args=["digest", "list"]).output
    assert "explaining-ukraine" in listing and "draft" in listing and "3 issue(s)." in listing


def test_the_message_a_reader_gets(runner, tmp_path):
    build(runner, "explaining-ukraine", str(SEED), str(ARTICLES / "metro_crlf_bom.txt"))
    raw = preview(runner, tmp_path)
    msg = message_from_bytes(raw, policy=policy.default)
    # Python's parser keeps the space of a folded first line; RFC 5322 unfolding does not.
    assert msg["Subject"].strip() == (
        "Putin promises to intensify attacks on Ukraine in response to Belgorod strike"
    )
    assert msg["From"] == '"Kate Tsurkan, The Kyiv Independent" <letters@newsroom.org>'
    assert (
        msg["List-Id"].strip()
        == '"Explaining Ukraine with Kate Tsurkan" <explaining-ukraine.newsroom.org>'
    )
    unsubscribe, mailto = re.findall(r"<([^>]+)>", msg["List-Unsubscribe"])
    assert unsubscribe.startswith(f"{PUBLIC}/unsubscribe/")
    assert mailto.startswith("mailto:letters@newsroom.org?subject=unsubscribe")
    assert msg["List-Unsubscribe-Post"].strip() == "List-Unsubscribe=One-Click"
    for header in ("Date", "Message-ID", "MIME-Version"):
        assert msg[header]
    assert msg.get_content_type() == "multipart/alternative"
    html = msg.get_body(("html",)).get_content()
    text = msg.get_body(("plain",)).get_content()
    for part in (html, text):
        assert "Explaining Ukraine with Kate Tsurkan" in part
        assert "Putin promises to intensify attacks" in part  # lead
        assert "Kyiv’s metro stations stay open" in part  # more stories
        assert "Zelensky meets with CIA director in Kyiv." in part  # news feed
        assert "City adds night buses" in part  # feed of the second article too
        assert "you subscribed to Explaining Ukraine with Kate Tsurkan" in part
        assert f"{PUBLIC}/newsletters/explaining-ukraine/issues/1" in part  # web version
        assert unsubscribe in part and f"{PUBLIC}/manage/" in part
    links = re.findall(r'href="([^"]+)"', html)
    assert links and all(link.startswith(PUBLIC + "/") for link in links)
    assert 'style="' in html  # CSS inlined for clients that drop <style>
    assert "@media only screen and (max-width: 620px)" in html  # phones
    assert 'class="preheader"' in html
    assert len(raw) < 102 * 1024


def test_each_reader_gets_their_own_links_and_the_rest_is_the_same(app, runner, tmp_path):
    client = app.test_client()
    for email in ("one@newsroom.org", "two@newsroom.org"):
        subscribe(client, email=email)
        press_confirm(client, confirm_path(app))
    build(runner, "explaining-ukraine")
    one = preview(runner, tmp_path, 1, "--reader", "one@newsroom.org")
    two = preview(runner, tmp_path, 1, "--reader", "TWO@newsroom.org")
    html_one, html_two = (
        message_from_bytes(raw, policy=policy.default).get_body(("html",)).get_content()
        for raw in (one, two)
    )
    links_one = set(re.findall(r"/(?:unsubscribe|manage)/[^\"]+", html_one))
    links_two = set(re.findall(r"/(?:unsubscribe|manage)/[^\"]+", html_two))
    assert len(links_one) == 2 and links_one.isdisjoint(links_two)
    strip = re.compile(r"/(?:unsubscribe|manage)/[^\"]+")
    assert strip.sub("", html_one) == strip.sub("", html_two)
    result = runner.invoke(
        args=["digest", "preview", "explaining-ukraine", "1", "--reader", "three@newsroom.org"]
    )
    assert result.exit_code == 2 and "not on explaining-ukraine" in result.output


def test_article_markup_appears_literally_everywhere(app, runner, tmp_path):
    build(runner, "explaining-ukraine", str(ARTICLES / "markup.txt"))
    msg = message_from_bytes(preview(runner, tmp_path), policy=policy.default)
    html = msg.get_body(("html",)).get_content()
    assert "<script>" not in html and "<b>Bold</b>" not in html
    assert "&lt;script&gt;alert(" in html and "&lt;b&gt;Bold&lt;/b&gt;" in html
    assert "{{ config.SECRET_KEY }}" in html and app.config["SECRET_KEY"] not in html
    assert "{% if true %}template tags{% endif %}" in html
    assert "<img" not in html
    text = msg.get_body(("plain",)).get_content()
    assert '<script>alert("x")</script>' in text  # text is text
    with session_factory(app)() as session:
        session.scalars(select(Issue)).one().sent_at = utcnow()
        session.commit()
    page = app.test_client().get("/newsletters/explaining-ukraine/issues/1").get_data(as_text=True)
    assert "<script>alert" not in page and "&lt;script&gt;alert(" in page
    assert "{{ config.SECRET_KEY }}" in page


def test_oversized_articles_become_leads_and_the_build_says_so(runner, tmp_path):
    long_article = tmp_path / "long.txt"
    paragraph = "A very long paragraph about the reconstruction of bridges in Kyiv oblast. " * 12
    long_article.write_text("A very long report\n\n" + "\n\n".join([paragraph] * 150))
    others = []
    for n in range(30):
        other = tmp_path / f"other{n}.txt"
        other.write_text(f"Further story number {n}\n\n" + "\n\n".join([paragraph] * 20))
        others.append(str(other))
    result = runner.invoke(
        args=["digest", "build", "explaining-ukraine", str(long_article), *others]
    )
    assert result.exit_code == 0, result.output
    assert "would exceed" in result.output
    raw = preview(runner, tmp_path)
    assert len(raw) < 102 * 1024
    html = message_from_bytes(raw, policy=policy.default).get_body(("html",)).get_content()
    assert "Continue reading" in html and "#a-very-long-report" in html
    check = runner.invoke(args=["digest", "check", "explaining-ukraine", "1"])
    assert check.exit_code == 0, check.output


def test_a_file_that_is_not_an_article_stops_the_build_and_stores_nothing(app, runner, tmp_path):
    bad = tmp_path / "photo.txt"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    result = runner.invoke(args=["digest", "build", "explaining-ukraine", str(SEED), str(bad)])
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: {bad}: binary file, not text"
    assert issues(app) == 0


def test_unknown_newsletter_and_issue_are_refused(runner):
    result = runner.invoke(args=["digest", "build", "nope"])
    assert result.exit_code == 2 and "no newsletter 'nope'" in result.output
    result = runner.invoke(args=["digest", "preview", "explaining-ukraine", "7"])
    assert result.exit_code == 2 and "has no issue 7" in result.output


def test_check_prints_size_links_headers_and_warnings(runner):
    build(runner, "explaining-ukraine")
    result = runner.invoke(args=["digest", "check", "explaining-ukraine", "1"])
    assert result.exit_code == 0, result.output
    assert re.search(r"^Size: \d+ bytes", result.output, re.M)
    assert "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in result.output
    assert f"{PUBLIC}/newsletters/explaining-ukraine/issues/1" in result.output
    assert "Warning: not DKIM-signed" in result.output
    assert "no problems" in result.output


def test_check_finds_what_would_hurt_delivery():
    raw = (
        b"From: a@newsroom.org\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/html; charset=utf-8\r\n\r\n"
        b'<a href="/relative">x</a><img src="https://news.newsroom.org/x.png">'
        + b"x"
        * (103 * 1024)
    )
    report = check_message(raw)
    problems = "\n".join(report.problems)
    assert "Gmail clips it" in problems
    assert "relative or odd link: /relative" in problems
    assert "header List-Unsubscribe is missing" in problems
    assert "both an HTML and a text part" in problems
    assert "1 image(s) without alt text" in report.warnings


@pytest.fixture
def dkim_key(tmp_path):
    return make_dkim_key(tmp_path)


def test_dkim_signature_covers_the_list_headers_and_verifies(tmp_path, dkim_key):
    key_file, dns_record = dkim_key
    app = make_app(
        tmp_path,
        PUBLIC_URL=PUBLIC,
        MAIL_FROM="letters@newsroom.org",
        DKIM_DOMAIN="newsroom.org",
        DKIM_SELECTOR="mail2026",
        DKIM_KEY_FILE=str(key_file),
    )
    runner = app.test_cli_runner()
    build(runner, "explaining-ukraine")
    raw = preview(runner, tmp_path)
    msg = message_from_bytes(raw, policy=policy.default)
    signature = msg["DKIM-Signature"]
    signed = re.search(r"h=([^;]+)", signature.replace(" ", "")).group(1).lower().split(":")
    assert {"list-unsubscribe", "list-unsubscribe-post", "list-id", "from"} <= set(signed)

    def dns(name, timeout=5):
        assert name == b"mail2026._domainkey.newsroom.org."
        return dns_record

    assert dkim.verify(raw, dnsfunc=dns)
    tampered = raw.replace(
        b"List-Unsubscribe-Post: List-Unsubscribe=One-Click",
        b"List-Unsubscribe-Post: List-Unsubscribe=Two-Clicks",
    )
    assert not dkim.verify(tampered, dnsfunc=dns)
    assert (
        "Warning: not DKIM-signed"
        not in runner.invoke(args=["digest", "check", "explaining-ukraine", "1"]).output
    )
