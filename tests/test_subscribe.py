"""The sign-up forms: messages, validation, honeypot, CSRF and the same answer for all."""

from datetime import timedelta
from types import SimpleNamespace

import pytest
from flask import g
from flask_babel import force_locale
from sqlalchemy import event, select

from tests.helpers import GOOD_ADDRESS, count, csrf_from, csrf_token, subscribe
from webapp.catalog import seed_catalog
from webapp.db import engine, session_factory
from webapp.mailout.models import OutboxMail
from webapp.models import EventKind, Subscriber, Subscription, SubscriptionStatus
from webapp.texts import TEXTS


@pytest.fixture(params=["en", "uk"])
def page(request, app):
    """The sign-up page these tests post from: English at the root, Ukrainian under /uk/
    (with its own newsletter), and the texts each shows."""
    with app.app_context(), force_locale(request.param):
        texts = SimpleNamespace(**TEXTS.as_dict())
    if request.param == "en":
        return SimpleNamespace(prefix="", newsletter="explaining-ukraine", texts=texts)
    return SimpleNamespace(prefix="/uk", newsletter="ukraina-shchodnia", texts=texts)


def subscriptions(app) -> list[tuple[str, str, SubscriptionStatus]]:
    with session_factory(app)() as session:
        rows = session.execute(
            select(Subscriber.email, Subscription.newsletter_id, Subscription.status).join(
                Subscription.subscriber
            )
        )
        return [tuple(r) for r in rows]


def test_index_lists_every_newsletter_with_the_site_wording(client):
    html = client.get("/").get_data(as_text=True)
    assert "Explaining Ukraine with Kate Tsurkan" in html
    assert "Ukraine Daily" in html
    assert html.count(f'placeholder="{TEXTS.email_placeholder}"') == 2
    assert html.count(TEXTS.required_legend) == 2
    assert html.count(f">{TEXTS.subscribe_button}</button>") == 2
    # every form's email input has its own id, so labels work with several forms on a page
    assert 'id="email-explaining-ukraine"' in html and 'id="email-ukraine-daily"' in html


def test_good_address_without_javascript_redirects_to_the_success_message(app, client):
    response = subscribe(client)
    assert response.status_code == 302
    assert response.location == "/?subscribed=explaining-ukraine#nl-explaining-ukraine"
    assert "Set-Cookie" not in response.headers  # the post writes no session cookie
    html = client.get(response.location).get_data(as_text=True)
    card = html.split('id="nl-explaining-ukraine"')[1].split("</section>")[0]
    assert TEXTS.success_title in card and TEXTS.success_text in card
    assert "<form" not in card
    other = html.split('id="nl-ukraine-daily"')[1].split("</section>")[0]
    assert "<form" in other  # the other form is untouched
    assert subscriptions(app) == [(GOOD_ADDRESS, 1, SubscriptionStatus.PENDING)]
    assert count(app, OutboxMail) == 1


def test_good_address_with_javascript_answers_json(app, client, page):
    response = subscribe(client, json=True, prefix=page.prefix, newsletter=page.newsletter)
    assert "Set-Cookie" not in response.headers
    assert response.status_code == 200
    assert response.json == {
        "ok": True,
        "title": page.texts.success_title,
        "text": page.texts.success_text,
    }
    assert count(app, Subscription) == 1


BAD_ADDRESSES = [
    "",
    "   ",
    "not-an-address",
    "reader@",
    "reader@example.com",
    "reader@newsroom.test",
    "a" * 65 + "@newsroom.org",
    "reader\x07@newsroom.org",
    "reader@newsroom.org\r\nBcc: x@newsroom.org",
]


@pytest.mark.parametrize("email", BAD_ADDRESSES)
def test_bad_address_without_javascript_shows_the_message_beside_that_form(app, client, email):
    response = subscribe(client, email=email, newsletter="ukraine-daily")
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    card = html.split('id="nl-ukraine-daily"')[1].split("</section>")[0]
    assert f'role="alert">{TEXTS.invalid_email}</div>' in card
    assert 'aria-invalid="true"' in card
    other = html.split('id="nl-explaining-ukraine"')[1].split("</section>")[0]
    assert TEXTS.invalid_email not in other
    assert count(app, Subscriber) == 0 and count(app, OutboxMail) == 0


def test_bad_address_keeps_what_was_typed(client):
    html = subscribe(client, email="kate@newsroom", newsletter="ukraine-daily").get_data(
        as_text=True
    )
    assert 'value="kate@newsroom"' in html


def test_typed_markup_is_escaped_when_shown_again(client):
    html = subscribe(client, email='"><script>alert(1)</script>').get_data(as_text=True)
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;" in html


@pytest.mark.parametrize("email", BAD_ADDRESSES)
def test_bad_address_with_javascript_answers_json_400(app, client, email, page):
    response = subscribe(client, email=email, json=True, prefix=page.prefix)
    assert response.status_code == 400
    assert response.json == {"ok": False, "errors": {"email": page.texts.invalid_email}}
    assert count(app, Subscriber) == 0


@pytest.mark.parametrize("newsletter", ["", "no-such-list", "../admin", "x" * 500])
def test_unknown_newsletter_gets_a_message_and_stores_nothing(app, client, newsletter, page):
    response = subscribe(client, newsletter=newsletter, json=True, prefix=page.prefix)
    assert response.status_code == 400
    assert response.json["errors"]["email"] == page.texts.unknown_newsletter
    assert count(app, Subscriber) == 0


def test_a_newsletter_added_to_the_catalog_takes_sign_ups_at_once(app, client):
    # The post remembers the ids it has found (no query for them again), and asks again
    # for one unknown a moment ago.
    asked = []
    event.listen(engine(app), "before_cursor_execute", lambda *a: asked.append(a[2]))
    subscribe(client, json=True)
    subscribe(client, email="other@newsroom.org", json=True)
    assert sum("WHERE newsletters.slug =" in statement for statement in asked) == 1
    assert subscribe(client, newsletter="late-edition", json=True).status_code == 400
    entry = {"slug": "late-edition", "title": "Late Edition", "description": "Nightly."}
    with session_factory(app)() as session:
        seed_catalog(session, [entry | {"cadence": "Daily", "from_name": "Newsroom"}])
        session.commit()
    assert subscribe(client, newsletter="late-edition", json=True).status_code == 200
    assert count(app, Subscription) == 3


def test_missing_csrf_token_is_refused_with_a_message(app, client, page):
    response = client.post(
        page.prefix + "/subscribe",
        data={"email": GOOD_ADDRESS, "newsletter": page.newsletter},
        headers={"Accept": "application/json"},
    )
    assert response.status_code == 400
    assert response.json["errors"]["email"] == page.texts.session_expired
    assert count(app, Subscriber) == 0


def test_csrf_token_of_another_session_is_refused(app, client):
    other = app.test_client()
    token = csrf_token(other)
    client.get("/")
    response = client.post(
        "/subscribe",
        data={"email": GOOD_ADDRESS, "newsletter": "explaining-ukraine", "csrf_token": token},
    )
    assert response.status_code == 400
    assert TEXTS.session_expired in response.get_data(as_text=True)
    assert count(app, Subscriber) == 0


def test_a_form_shown_again_with_its_error_carries_a_token_that_works(app, client):
    # A posted form's token is signed only when the form is shown: never for a post
    # that succeeds (a redirect), and then on the page with the form's error.
    with client:
        subscribe(client, "first@newsroom.org")
        assert "csrf_token" not in g  # nothing was signed for the answer
        again = subscribe(client, "not an address")
        assert again.status_code == 400 and "csrf_token" in g
    token = csrf_from(again.get_data(as_text=True))
    response = client.post(
        "/subscribe",
        data={
            "email": "second@newsroom.org",
            "newsletter": "explaining-ukraine",
            "csrf_token": token,
        },
    )
    assert response.status_code == 302 and count(app, Subscriber) == 2


def test_filled_honeypot_gets_the_same_answer_and_stores_nothing(app, client):
    response = subscribe(client, json=True, website="http://spam.example.net")
    assert response.status_code == 200
    assert response.json["text"] == TEXTS.success_text
    assert count(app, Subscriber) == 0 and count(app, OutboxMail) == 0


def test_same_address_in_other_case_is_the_same_subscriber(app, client):
    subscribe(client, email="Reader@Newsroom.org")
    subscribe(client, email="READER@newsroom.ORG", newsletter="ukraine-daily")
    assert count(app, Subscriber) == 1
    assert count(app, Subscription) == 2


def test_pending_address_gets_its_confirmation_again_only_after_the_cooldown(app, client):
    for _ in range(5):
        assert subscribe(client, json=True).json["ok"]
    assert count(app, OutboxMail) == 1
    # once the cooldown has passed, one more email
    with session_factory(app)() as session:
        subscription = session.scalars(select(Subscription)).one()
        subscription.confirmation_sent_at -= timedelta(minutes=11)
        session.commit()
    subscribe(client)
    subscribe(client)
    assert count(app, OutboxMail) == 2
    # the cooldown is per newsletter
    subscribe(client, newsletter="ukraine-daily")
    assert count(app, OutboxMail) == 3


def test_confirmed_address_gets_the_same_answer_and_no_email(app, client):
    subscribe(client)
    with session_factory(app)() as session:
        session.scalars(select(Subscription)).one().status = SubscriptionStatus.CONFIRMED
        session.commit()
    response = subscribe(client, json=True)
    assert response.json == subscribe(app.test_client(), email="new@newsroom.org", json=True).json
    assert count(app, OutboxMail) == 2  # the first one, and the new address's


def test_consent_of_the_sign_up_is_recorded(app, client):
    data = {
        "email": GOOD_ADDRESS,
        "newsletter": "explaining-ukraine",
        "source": "/",
        "csrf_token": csrf_token(client),
    }
    client.post(
        "/subscribe",
        data=data,
        headers={"User-Agent": "Mozilla/5.0 Test"},
        environ_base={"REMOTE_ADDR": "127.0.0.7"},
    )
    with session_factory(app)() as session:
        subscription = session.scalars(select(Subscription)).one()
        [subscribed] = subscription.events
        assert subscribed.kind == EventKind.SUBSCRIBED and subscribed.how == "form"
        assert subscribed.ip == "127.0.0.7"
        assert subscribed.user_agent == "Mozilla/5.0 Test"
        assert subscribed.source == "/"
        assert subscribed.at.tzinfo and subscription.status_since == subscribed.at


def test_oversized_post_gets_a_page_not_a_500(client):
    response = client.post("/subscribe", data={"email": "a" * 100_000})
    assert response.status_code == 413


@pytest.mark.parametrize("method", ["get", "put", "delete"])
def test_other_methods_on_subscribe_are_refused_cleanly(client, method):
    response = getattr(client, method)("/subscribe")
    assert response.status_code == 405
    assert "Traceback" not in response.get_data(as_text=True)


def test_unknown_page_is_a_404_page(client):
    response = client.get("/no/such/page")
    assert response.status_code == 404
    assert TEXTS.not_found_title in response.get_data(as_text=True)
