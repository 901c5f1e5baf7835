"""A newcomer in real Chromium: subscribe with JavaScript on and off, open the captured
email at /outbox, click its link, press the button and see the confirmation."""

import os
import threading
import time
from pathlib import Path

import pytest
from flask_babel import force_locale
from sqlalchemy import select
from werkzeug.serving import make_server

from tests.helpers import free_port, make_app
from webapp.db import session_factory
from webapp.models import Subscriber, Subscription, SubscriptionStatus
from webapp.texts import TEXTS

pytestmark = pytest.mark.browser


@pytest.fixture
def live_server(tmp_path):
    """The app served over HTTP on a loopback port, mail captured, outbox worker running."""
    port = free_port()
    app = make_app(tmp_path, PUBLIC_URL=f"http://127.0.0.1:{port}", OUTBOX_WORKER=True)
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield app, f"http://127.0.0.1:{port}"
    server.shutdown()
    thread.join(10)
    app.extensions["outbox_worker"].stop()


def card(page, slug):
    return page.locator(f"#nl-{slug}")


def status_of(app, email) -> SubscriptionStatus:
    with session_factory(app)() as session:
        return session.scalar(
            select(Subscription.status).join(Subscriber).where(Subscriber.email == email)
        )


def settled_status(app, email, timeout: float = 10) -> SubscriptionStatus | None:
    """The address's status once its sign-up has been acted on: the server answers
    first and acts right after, so a test that looks at once may be early (bounded)."""
    deadline = time.monotonic() + timeout
    while (status := status_of(app, email)) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return status


def open_confirmation_from_outbox(page, base, subject_part):
    """Go to /outbox, wait (bounded) for the message, open it and click its link.

    Bounded past LEFT_AFTER (30 s): on a loaded machine a sign-up the server could not
    act on at once is taken up by its outbox worker's sweep, and the mail comes then."""
    deadline = time.monotonic() + 45
    while True:
        page.goto(f"{base}/outbox/")
        link = page.get_by_role("link", name=subject_part)
        if link.count() or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    link.first.click()
    page.locator(".mail-links a").first.click()


def confirm_and_check(page, app, email):
    assert page.get_by_role("heading", name=TEXTS.confirm_title).is_visible()
    assert page.get_by_text("Explaining Ukraine with Kate Tsurkan").first.is_visible()
    assert status_of(app, email) == SubscriptionStatus.PENDING  # opening the link did not confirm
    page.get_by_role("button", name=TEXTS.confirm_button).click()
    assert page.get_by_role("heading", name=TEXTS.confirmed_title).is_visible()
    assert status_of(app, email) == SubscriptionStatus.CONFIRMED


def test_with_javascript_forms_answer_in_place(browser, live_server):
    app, base = live_server
    page = browser.new_page()
    page.goto(base + "/")
    page.evaluate("window.notReloaded = true")
    first, second = card(page, "explaining-ukraine"), card(page, "ukraine-daily")

    first.get_by_placeholder(TEXTS.email_placeholder).fill("kate@newsroom")
    first.get_by_role("button", name=TEXTS.subscribe_button).click()
    error = first.locator(".signup-error")
    error.wait_for(state="visible")
    assert error.inner_text() == TEXTS.invalid_email
    assert first.get_by_placeholder(TEXTS.email_placeholder).input_value() == "kate@newsroom"
    assert not second.locator(".signup-error").is_visible()  # forms are independent

    first.get_by_placeholder(TEXTS.email_placeholder).fill("kate@newsroom.org")
    assert not error.is_visible()  # typing again clears the old message
    first.get_by_role("button", name=TEXTS.subscribe_button).click()
    first.get_by_text(TEXTS.success_title).wait_for()
    assert first.get_by_text(TEXTS.success_text).is_visible()
    assert first.locator("form").count() == 0
    assert second.locator("form").count() == 1
    assert page.evaluate("window.notReloaded") is True  # no reload happened

    second.get_by_placeholder(TEXTS.email_placeholder).fill("kate@newsroom.org")
    second.get_by_role("button", name=TEXTS.subscribe_button).click()
    second.get_by_text(TEXTS.success_title).wait_for()
    assert page.evaluate("window.notReloaded") is True

    open_confirmation_from_outbox(page, base, "Explaining Ukraine with Kate Tsurkan")
    confirm_and_check(page, app, "kate@newsroom.org")
    page.close()


def test_without_javascript_forms_post_and_answer_with_a_page(browser, live_server):
    app, base = live_server
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto(base + "/")
    first = card(page, "explaining-ukraine")

    first.get_by_placeholder(TEXTS.email_placeholder).fill("reader@example.com")
    first.get_by_role("button", name=TEXTS.subscribe_button).click()
    page.wait_for_load_state()
    first = card(page, "explaining-ukraine")
    assert first.locator(".signup-error").inner_text() == TEXTS.invalid_email
    assert first.get_by_placeholder(TEXTS.email_placeholder).input_value() == ("reader@example.com")
    assert not card(page, "ukraine-daily").locator(".signup-error").is_visible()

    first.get_by_placeholder(TEXTS.email_placeholder).fill("ivan@newsroom.org")
    first.get_by_role("button", name=TEXTS.subscribe_button).click()
    page.wait_for_load_state()
    first = card(page, "explaining-ukraine")
    assert first.get_by_text(TEXTS.success_title).is_visible()
    assert first.get_by_text(TEXTS.success_text).is_visible()
    assert page.url.endswith("/?subscribed=explaining-ukraine#nl-explaining-ukraine")

    open_confirmation_from_outbox(page, base, "Explaining Ukraine with Kate Tsurkan")
    confirm_and_check(page, app, "ivan@newsroom.org")
    context.close()


@pytest.mark.parametrize("width", [600, 375])
def test_digest_fits_the_screen_at_600_and_375_px(browser, tmp_path, width):
    from tests.helpers import ROOT

    app = make_app(tmp_path, PUBLIC_URL="https://news.newsroom.org")
    runner = app.test_cli_runner()
    articles = [str(ROOT / "seeds" / "000_ce0462a30ea3d8dc.txt")]
    articles += [str(p) for p in sorted((ROOT / "tests" / "articles").glob("*.txt"))]
    assert runner.invoke(args=["digest", "build", "explaining-ukraine", *articles]).exit_code == 0
    html_file = tmp_path / "issue.html"
    result = runner.invoke(
        args=["digest", "preview", "explaining-ukraine", "1", "--html", str(html_file)]
    )
    assert result.exit_code == 0, result.output
    page = browser.new_page(viewport={"width": width, "height": 900})
    page.goto(html_file.as_uri())
    # Nothing overflows horizontally: no sideways scrolling on a phone.
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    widest = page.evaluate(
        "Math.max(...[...document.querySelectorAll('body *')]"
        ".map(e => e.getBoundingClientRect().right))"
    )
    assert widest <= width + 0.5
    shots = Path(os.environ.get("NEWSLETTER_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / f"digest-{width}.png"), full_page=True)
    page.close()


def test_robot_check_is_solved_by_the_page_script(browser, tmp_path):
    port = free_port()
    app = make_app(tmp_path, PUBLIC_URL=f"http://127.0.0.1:{port}", ALTCHA_HMAC_KEY="k" * 32)
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{port}/")
        first = card(page, "explaining-ukraine")
        first.get_by_placeholder(TEXTS.email_placeholder).fill("solver@newsroom.org")
        first.get_by_role("button", name=TEXTS.subscribe_button).click()
        first.get_by_text(TEXTS.success_title).wait_for(timeout=20_000)
        assert settled_status(app, "solver@newsroom.org") == SubscriptionStatus.PENDING
        page.close()
    finally:
        server.shutdown()
        thread.join(10)


def in_ukrainian(app, key: str) -> str:
    """A text of texts.toml as the Ukrainian pages show it."""
    with app.app_context(), force_locale("uk"):
        return TEXTS[key]


@pytest.mark.parametrize("javascript", [True, False], ids=["javascript", "no-javascript"])
def test_the_ukrainian_sign_up_answers_in_ukrainian(browser, live_server, javascript):
    app, base = live_server
    uk = {key: in_ukrainian(app, key) for key in TEXTS.as_dict()}
    assert uk["email_placeholder"] != TEXTS.english("email_placeholder")
    context = browser.new_context(java_script_enabled=javascript)
    page = context.new_page()
    page.goto(base + "/uk/")
    assert page.locator("html").get_attribute("lang") == "uk"
    form = card(page, "ukraina-shchodnia")
    form.get_by_placeholder(uk["email_placeholder"]).fill("olena@newsroom")
    form.get_by_role("button", name=uk["subscribe_button"]).click()
    form = card(page, "ukraina-shchodnia")
    error = form.locator(".signup-error")
    error.wait_for(state="visible")
    assert error.inner_text() == uk["invalid_email"]

    form.get_by_placeholder(uk["email_placeholder"]).fill("olena@newsroom.org")
    form.get_by_role("button", name=uk["subscribe_button"]).click()
    form = card(page, "ukraina-shchodnia")
    form.get_by_text(uk["success_title"]).wait_for()
    assert form.get_by_text(uk["success_text"]).is_visible()
    if not javascript:
        assert page.url.endswith("/uk/?subscribed=ukraina-shchodnia#nl-ukraina-shchodnia")

    open_confirmation_from_outbox(page, base, "Україна щодня")
    assert page.locator("html").get_attribute("lang") == "uk"
    assert page.get_by_role("heading", name=uk["confirm_title"]).is_visible()
    page.get_by_role("button", name=uk["confirm_button"]).click()
    assert page.get_by_role("heading", name=uk["confirmed_title"]).is_visible()
    assert status_of(app, "olena@newsroom.org") == SubscriptionStatus.CONFIRMED
    page.get_by_role("link", name="English").click()
    assert page.locator("html").get_attribute("lang") == "en"
    context.close()
