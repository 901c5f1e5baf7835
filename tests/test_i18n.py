"""Ukrainian: every message translated with its placeholders, pages under /uk/ in
Ukrainian with a switch to English, and the sign-up form answering in the page's language."""

import re
from datetime import datetime
from email import message_from_bytes, policy

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po
from flask_babel import force_locale
from sqlalchemy import select

from emails.render import environment
from tests.helpers import ROOT, confirm_path, csrf_token, make_app, press_confirm, subscribe
from webapp.db import session_factory
from webapp.i18n import CATALOGS
from webapp.links import manage_url
from webapp.mailout.models import OutboxMail
from webapp.models import Subscriber
from webapp.texts import TEXTS

CATALOG = ROOT / "webapp" / "translations" / "uk" / "LC_MESSAGES" / "messages.po"
PLACEHOLDER = re.compile(r"\{\w+\}|%\(\w+\)s")


def extracted() -> set[str]:
    """Every message the code, the templates and texts.toml use, extracted afresh."""
    with (ROOT / "babel.cfg").open() as f:
        method_map, options_map = parse_mapping_cfg(f)
    found = set()
    for _, _, message, _, _ in extract_from_dir(
        ROOT,
        method_map,
        options_map,
        keywords={"_": None, "gettext": None, "ngettext": (1, 2), "_l": None},
    ):
        found.add(message if isinstance(message, str) else message[0])
    return found


def test_every_message_has_a_ukrainian_translation_that_keeps_its_placeholders():
    with CATALOG.open("rb") as f:
        catalog = read_po(f, locale="uk")
    translated = {}
    for message in catalog:
        if not message.id:
            continue
        key = message.id if isinstance(message.id, str) else message.id[0]
        forms = message.string if isinstance(message.string, tuple) else (message.string,)
        assert not message.fuzzy, f"fuzzy translation of {key!r}"
        translated[key] = forms
    missing = extracted() - set(translated)
    assert not missing, f"not in the Ukrainian catalog (run make translations): {sorted(missing)}"
    for key, forms in translated.items():
        for form in forms:
            assert form, f"no Ukrainian translation of {key!r}"
            assert sorted(PLACEHOLDER.findall(form)) == sorted(PLACEHOLDER.findall(key)), (
                f"{key!r} -> {form!r} changes its placeholders"
            )


def test_the_ukrainian_plural_forms_come_from_cldr(app):
    with app.test_request_context("/uk/"), force_locale("uk"):
        from flask_babel import ngettext

        forms = [ngettext("%(num)s min read", "%(num)s min read", n) for n in (1, 2, 5, 11, 21, 22)]
    assert forms == [
        "1 хвилина читання",
        "2 хвилини читання",
        "5 хвилин читання",
        "11 хвилин читання",
        "21 хвилина читання",
        "22 хвилини читання",
    ]


@pytest.mark.parametrize(
    "path, language, other, other_href",
    [("/", "en", "Українська", "/uk/"), ("/uk/", "uk", "English", "/")],
)
def test_each_page_says_its_language_and_links_the_other(client, path, language, other, other_href):
    page = client.get(path).text
    assert f'<html lang="{language}">' in page
    switch = re.search(r'<a class="language-switch[^"]*" href="([^"]*)"[^>]*>([^<]*)</a>', page)
    assert switch.groups() == (other_href, other)


def test_english_stays_verbatim_and_ukrainian_is_ukrainian(client):
    english, ukrainian = client.get("/").text, client.get("/uk/").text
    assert TEXTS.english("email_placeholder") in english
    assert TEXTS.english("success_title") in english  # the seed's spelling, typo and all
    assert "Введіть свою електронну адресу, щоб підписатися" in ukrainian
    assert 'action="/uk/subscribe"' in ukrainian
    assert TEXTS.english("email_placeholder") not in ukrainian


def test_accept_language_suggests_but_never_redirects(client):
    answer = client.get("/", headers={"Accept-Language": "uk-UA,uk;q=0.9,en;q=0.5"})
    assert answer.status_code == 200 and '<html lang="en">' in answer.text
    assert 'class="language-switch suggested" href="/uk/"' in answer.text
    plain = client.get("/", headers={"Accept-Language": "en-GB"})
    assert 'class="language-switch" href="/uk/"' in plain.text


def _post_uk(client, email, json=False):
    data = {
        "email": email,
        "newsletter": "ukraina-shchodnia",
        "source": "/",
        "website": "",
        "csrf_token": csrf_token(client, "/uk/"),
    }
    headers = {"Accept": "application/json"} if json else {}
    return client.post("/uk/subscribe", data=data, headers=headers)


def test_the_ukrainian_form_answers_in_ukrainian_with_and_without_javascript(client):
    bad = _post_uk(client, "not-an-address")
    assert "Будь ласка, введіть правильну електронну адресу" in bad.text
    assert '<html lang="uk">' in bad.text
    bad_json = _post_uk(client, "not-an-address", json=True)
    assert bad_json.json["errors"]["email"] == "Будь ласка, введіть правильну електронну адресу"
    good_json = _post_uk(client, "olena@newsroom.org", json=True)
    assert good_json.json == {
        "ok": True,
        "title": "Ви успішно підписалися",
        "text": "Дякуємо, що підписалися на цю розсилку. Ми надіслали вам лист для підтвердження.",
    }
    good = _post_uk(client, "mykola@newsroom.org")
    assert good.status_code == 302
    assert good.headers["Location"].startswith("/uk/?subscribed=ukraina-shchodnia")
    page = client.get(good.headers["Location"]).text
    assert "Ви успішно підписалися" in page


def test_english_sign_up_answers_stay_english(client):
    answer = subscribe(client, email="not-an-address", json=True)
    assert answer.json["errors"]["email"] == TEXTS.english("invalid_email")


def test_a_missing_page_under_uk_is_a_ukrainian_notice(client):
    answer = client.get("/uk/no-such-page")
    assert answer.status_code == 404 and "Сторінку не знайдено" in answer.text


def _mails(app) -> list:
    with session_factory(app)() as session:
        rows = session.scalars(select(OutboxMail).order_by(OutboxMail.id)).all()
        return [message_from_bytes(row.message, policy=policy.default) for row in rows]


def test_a_reader_who_signs_up_in_ukrainian_is_written_to_and_answered_in_ukrainian(app, client):
    assert _post_uk(client, "olena@newsroom.org").status_code == 302
    (confirmation,) = _mails(app)
    assert confirmation["Subject"] == "Підтвердьте підписку на розсилку «Україна щодня»"
    text = confirmation.get_body(("plain",)).get_content()
    assert "Будь ласка, підтвердьте підписку" in text and "Посилання дійсне 7 днів." in text
    assert '<html lang="uk">' in confirmation.get_body(("html",)).get_content()
    path = confirm_path(app)
    assert path.startswith("/uk/confirm/")
    page = client.get(path).text
    assert '<html lang="uk">' in page and "Підтвердити підписку" in page
    done = press_confirm(client, path)
    assert done.status_code == 302 and done.headers["Location"].startswith("/uk/confirm/")
    assert "Ви підписалися" in client.get(done.headers["Location"]).text
    welcome = _mails(app)[-1]
    assert welcome["Subject"] == "Ласкаво просимо до розсилки «Україна щодня»"
    body = welcome.get_body(("plain",)).get_content()
    assert "Ви підписані, olena@newsroom.org. Дякуємо." in body
    assert "/uk/manage/" in body and "/uk/unsubscribe/" in body
    with session_factory(app)() as session:
        reader = session.scalars(select(Subscriber)).one()
        assert reader.language == "uk"


def test_an_english_sign_up_stays_english_in_mail(app, client):
    subscribe(client, email="kate@newsroom.org")
    (confirmation,) = _mails(app)
    assert (
        confirmation["Subject"]
        == "Confirm your subscription to Explaining Ukraine with Kate Tsurkan"
    )
    assert "The link is valid for 7 days." in confirmation.get_body(("plain",)).get_content()
    assert "/uk/" not in confirm_path(app)


def test_the_manage_page_changes_the_readers_language(app, client):
    subscribe(client, email="taras@newsroom.org")
    press_confirm(client, confirm_path(app))
    with app.app_context(), session_factory(app)() as session:
        reader = session.scalars(select(Subscriber)).one()
        path = manage_url(reader).split("://", 1)[1].partition("/")[2].join(["/", ""])
    assert path.startswith("/manage/")
    token = csrf_token(client, path)
    answer = client.post(path, data={"csrf_token": token, "action": "language", "language": "uk"})
    assert answer.status_code == 302 and answer.headers["Location"].startswith("/uk/manage/")
    page = client.get(answer.headers["Location"]).text
    assert '<html lang="uk">' in page and "Збережено. Наші листи до вас будуть цією мовою." in page
    with session_factory(app)() as session:
        assert session.scalars(select(Subscriber)).one().language == "uk"
    bad = client.post(
        answer.headers["Location"],
        data={
            "csrf_token": csrf_token(client, answer.headers["Location"]),
            "action": "language",
            "language": "xx",
        },
    )
    assert bad.status_code == 400


@pytest.fixture
def ukrainian_issue(app, tmp_path):
    """Issue 1 of the Ukrainian newsletter, built from its Cyrillic seed: (text, html)."""
    runner = app.test_cli_runner()
    built = runner.invoke(args=["digest", "build", "ukraina-shchodnia"])
    assert built.exit_code == 0, built.output
    text, html = tmp_path / "issue.txt", tmp_path / "issue.html"
    shown = runner.invoke(
        args=[
            "digest",
            "preview",
            "ukraina-shchodnia",
            "1",
            "--text",
            str(text),
            "--html",
            str(html),
        ]
    )
    assert shown.exit_code == 0, shown.output
    return text.read_text(), html.read_text()


def test_a_ukrainian_newsletters_issue_is_built_in_ukrainian(ukrainian_issue):
    text, html = ukrainian_issue
    public = "http://127.0.0.1:5000"
    for expected in (
        "Україна щодня · № 1",
        f"Переглянути в браузері: {public}/uk/newsletters/ukraina-shchodnia/issues/1",
        "ГОЛОВНЕ",
        "Путін пообіцяв посилити удари по Україні у відповідь на удар по Бєлгороду",
        "автор: Редакція новин The Kyiv Independent",
        "1 січня 2024 · 1 хвилина читання",
        "СТРІЧКА НОВИН",
        "Ви отримуєте цей лист, бо підписалися на розсилку «Україна щодня» від The Kyiv "
        "Independent.",
        f"Керувати підписками: {public}/uk/manage/",
        f"Відписатися: {public}/uk/unsubscribe/",
    ):
        assert expected in text, expected
    assert '<html lang="uk"' in html and "Переглянути в браузері" in html
    assert "min read" not in text and "View in your browser" not in text


def test_reading_time_in_mail_takes_ukrainian_plural_forms_from_cldr():
    env = environment("uk", CATALOGS)
    template = env.from_string('{{ ngettext("%(num)s min read", "%(num)s min read", n) }}')
    assert [template.render(n=n) for n in (1, 2, 5, 11, 21, 24)] == [
        "1 хвилина читання",
        "2 хвилини читання",
        "5 хвилин читання",
        "11 хвилин читання",
        "21 хвилина читання",
        "24 хвилини читання",
    ]
    date = env.from_string("{{ d | long_date }}").render(d=datetime(2024, 1, 1))
    assert date == "1 січня 2024"


@pytest.mark.browser
@pytest.mark.parametrize("width", [600, 375])
def test_the_ukrainian_issue_reads_well_in_chromium(ukrainian_issue, browser, tmp_path, width):
    _, html = ukrainian_issue
    page = browser.new_page(viewport={"width": width, "height": 900})
    page.set_content(html)
    assert page.evaluate("document.documentElement.scrollWidth") <= width  # nothing cut off
    assert page.get_by_text("Путін пообіцяв посилити удари").first.is_visible()
    assert page.get_by_text("1 січня 2024 · 1 хвилина читання").first.is_visible()
    page.screenshot(path=str(tmp_path / f"issue-uk-{width}.png"), full_page=True)
    page.close()


def test_the_limit_and_the_robot_check_speak_ukrainian_too(tmp_path):
    app = make_app(tmp_path, SUBSCRIBE_LIMITS="1/minute", ALTCHA_HMAC_KEY="test-key")
    client = app.test_client()
    page = client.get("/uk/").text
    assert "Щоб перевірити, що ви не робот, цій формі потрібен увімкнений JavaScript." in page
    first = _post_uk(client, "a@newsroom.org", json=True)
    assert (
        first.json["errors"]["email"]
        == "Нам не вдалося перевірити, що ви не робот. Спробуйте ще раз."
    )
    second = _post_uk(client, "b@newsroom.org", json=True)
    assert second.status_code == 429
    assert (
        second.json["errors"]["email"]
        == "Забагато спроб. Зачекайте кілька хвилин і спробуйте ще раз."
    )
