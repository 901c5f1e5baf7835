"""The confirmation link: a page on GET, one click (POST) confirms, bad tokens get a page."""

import itsdangerous.timed
import pytest
from sqlalchemy import select

from tests.helpers import GOOD_ADDRESS, confirm_path, csrf_token, press_confirm, subscribe
from webapp.db import session_factory
from webapp.models import EventKind, Subscription, SubscriptionStatus
from webapp.texts import TEXTS


def status(app) -> SubscriptionStatus:
    with session_factory(app)() as session:
        return session.scalars(select(Subscription)).one().status


def test_get_shows_a_page_naming_the_newsletter_and_never_confirms(app, client):
    subscribe(client)
    path = confirm_path(app)
    for _ in range(3):  # what a mail scanner does
        response = app.test_client().get(path)
        assert response.status_code == 200
        html = response.get_data(as_text=True)
        assert "Explaining Ukraine with Kate Tsurkan" in html
        assert TEXTS.confirm_button in html
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert status(app) == SubscriptionStatus.PENDING


def test_one_click_confirms_and_records_consent(app, client):
    subscribe(client)
    path = confirm_path(app)
    response = press_confirm(client, path)
    assert response.status_code == 302 and response.location == path
    html = client.get(path).get_data(as_text=True)
    assert TEXTS.confirmed_title in html
    assert GOOD_ADDRESS in html and "Explaining Ukraine with Kate Tsurkan" in html
    with session_factory(app)() as session:
        subscription = session.scalars(select(Subscription)).one()
        assert subscription.status == SubscriptionStatus.CONFIRMED
        subscribed, confirmed = subscription.events
        assert subscribed.kind == EventKind.SUBSCRIBED and confirmed.kind == EventKind.CONFIRMED
        assert confirmed.at >= subscribed.at and subscription.status_since == confirmed.at
        assert confirmed.ip == "127.0.0.1"
        assert confirmed.user_agent == "Clicker/1.0"


def test_confirming_twice_is_harmless(app, client):
    subscribe(client)
    path = confirm_path(app)
    press_confirm(client, path)
    response = client.post(path, data={})  # a second press, even without a token
    assert response.status_code == 302
    assert status(app) == SubscriptionStatus.CONFIRMED


def test_post_without_csrf_token_does_not_confirm(app, client):
    subscribe(client)
    path = confirm_path(app)
    response = app.test_client().post(path, data={})
    assert response.status_code == 400
    assert TEXTS.session_expired in response.get_data(as_text=True)
    assert status(app) == SubscriptionStatus.PENDING


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-3] + ("AAA" if not t.endswith("AAA") else "BBB"),  # tampered signature
        lambda t: t[: len(t) // 2],  # cut short by a mail client
        lambda t: "x",
        lambda t: "W10.aaaa.bbbb",
        lambda t: t + "%00",
    ],
)
def test_tampered_tokens_get_a_clear_page(app, client, mangle):
    subscribe(client)
    path = confirm_path(app)
    bad = "/confirm/" + mangle(path.removeprefix("/confirm/"))
    for response in (client.get(bad), client.post(bad, data={})):
        assert response.status_code == 404
        assert TEXTS.link_invalid_title in response.get_data(as_text=True)
    assert status(app) == SubscriptionStatus.PENDING


def test_token_signed_with_another_key_or_purpose_is_refused(app, client):
    subscribe(client)
    with app.app_context():
        from webapp.links import make_token

        with session_factory(app)() as session:
            s = session.scalars(select(Subscription)).one()
            other_purpose = make_token("unsubscribe", [s.id, s.confirm_nonce])
    response = client.get(f"/confirm/{other_purpose}")
    assert response.status_code == 404


def test_expired_link_gets_a_clear_page(app, client, monkeypatch):
    subscribe(client)
    path = confirm_path(app)

    class EightDaysLater:
        @staticmethod
        def time():
            import time

            return time.time() + 8 * 86400

    monkeypatch.setattr(itsdangerous.timed, "time", EightDaysLater)
    for response in (client.get(path), client.post(path, data={})):
        assert response.status_code == 410
        assert TEXTS.link_expired_title in response.get_data(as_text=True)
    assert status(app) == SubscriptionStatus.PENDING


def test_link_of_an_unsubscribed_then_resubscribed_address_is_dead(app, client):
    subscribe(client)
    old = confirm_path(app)
    with session_factory(app)() as session:
        session.scalars(select(Subscription)).one().status = SubscriptionStatus.UNSUBSCRIBED
        session.commit()
    assert client.get(old).status_code == 410
    subscribe(client)  # subscribing again needs a new confirmation
    new = confirm_path(app)
    assert new != old
    assert status(app) == SubscriptionStatus.PENDING
    response = client.post(old, data={"csrf_token": csrf_token(client)})
    assert response.status_code == 410
    assert status(app) == SubscriptionStatus.PENDING
    press_confirm(client, new)
    assert status(app) == SubscriptionStatus.CONFIRMED
