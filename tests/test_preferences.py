"""Unsubscribe in one click (RFC 8058), the manage page, erasure and the welcome email."""

import json
import re
import time
from email import message_from_bytes, policy

import itsdangerous.timed
import pytest
from markupsafe import escape
from sqlalchemy import func, select

from tests.helpers import TEST_DATABASE, confirm_path, csrf_token, press_confirm, subscribe
from webapp.db import session_factory
from webapp.links import Tokens, serializer
from webapp.mailout.models import OutboxMail
from webapp.models import EventKind, Subscriber, Subscription, SubscriptionStatus
from webapp.subscribers.erased import erased_digest
from webapp.subscribers.models import ErasedAddress, Mailbox
from webapp.texts import TEXTS


def confirmed(app, client, email="reader@newsroom.org", newsletter="explaining-ukraine"):
    subscribe(client, email=email, newsletter=newsletter)
    press_confirm(client, confirm_path(app))


def newest_mail_text(app, kind: str, email: str) -> str:
    """The text part of the newest queued email of ``kind`` to ``email``."""
    with session_factory(app)() as session:
        raw = session.scalars(
            select(OutboxMail.message)
            .where(OutboxMail.kind == kind, OutboxMail.recipient == email)
            .order_by(OutboxMail.id.desc())
        ).first()
    return message_from_bytes(raw, policy=policy.default).get_body(("plain",)).get_content()


def welcome_links(app, email="reader@newsroom.org") -> dict[str, str]:
    """The unsubscribe and manage paths from the newest welcome email to ``email``."""
    text = newest_mail_text(app, "welcome", email)
    return {
        kind: re.search(rf"https?://[^/\s]+(/{kind}/\S+)", text).group(1)
        for kind in ("unsubscribe", "manage")
    }


def states(app) -> dict[tuple[str, str], SubscriptionStatus]:
    with session_factory(app)() as session:
        return {
            (s.subscriber.email, s.newsletter.slug): s.status
            for s in session.scalars(select(Subscription))
        }


def test_welcome_email_has_the_description_cadence_and_links(app, client):
    confirmed(app, client)
    with session_factory(app)() as session:
        raw = session.scalars(select(OutboxMail.message).where(OutboxMail.kind == "welcome")).one()
    msg = message_from_bytes(raw, policy=policy.default)
    assert msg["Subject"] == "Welcome to Explaining Ukraine with Kate Tsurkan"
    text = msg.get_body(("plain",)).get_content()
    assert "Each week Kate Tsurkan takes one question" in text
    assert "arrives weekly, on Fridays" in text
    assert "/manage/" in text and "/unsubscribe/" in text
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_confirmed_page_links_to_the_manage_page(app, client):
    subscribe(client)
    path = confirm_path(app)
    press_confirm(client, path)
    html = client.get(path).get_data(as_text=True)
    manage = re.search(r'href="https?://[^/"]+(/manage/[^"]+)"', html).group(1)
    assert client.get(manage).status_code == 200


def test_unsubscribe_page_changes_nothing_and_its_button_unsubscribes(app, client):
    confirmed(app, client)
    path = welcome_links(app)["unsubscribe"]
    for _ in range(2):  # mail scanners open links
        page = client.get(path)
        assert page.status_code == 200
        assert TEXTS.unsubscribe_button in page.get_data(as_text=True)
        assert page.headers["Referrer-Policy"] == "no-referrer"
    assert (
        states(app)[("reader@newsroom.org", "explaining-ukraine")] == SubscriptionStatus.CONFIRMED
    )
    # what the page's button posts
    response = client.post(path, data={"List-Unsubscribe": "One-Click", "via": "page"})
    assert response.status_code == 200  # a page, not a redirect
    assert TEXTS.unsubscribed_title in response.get_data(as_text=True)
    assert (
        states(app)[("reader@newsroom.org", "explaining-ukraine")]
        == SubscriptionStatus.UNSUBSCRIBED
    )


def test_one_click_post_exactly_as_rfc_8058_describes(app, client):
    confirmed(app, client)
    path = welcome_links(app)["unsubscribe"]
    provider = app.test_client(use_cookies=False)  # no cookies, no CSRF token
    response = provider.post(
        path,
        data=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200
    assert (
        states(app)[("reader@newsroom.org", "explaining-ukraine")]
        == SubscriptionStatus.UNSUBSCRIBED
    )
    with session_factory(app)() as session:
        left = session.scalars(select(Subscription)).one().events[-1]
        assert left.kind == EventKind.UNSUBSCRIBED and left.how == "one-click"
    again = provider.post(
        path,
        data=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert again.status_code == 200  # idempotent
    assert client.get(path).status_code == 200


def test_a_token_acts_only_on_its_own_reader(app, client):
    confirmed(app, client, email="a@newsroom.org")
    confirmed(app, client, email="b@newsroom.org")
    a_path = welcome_links(app, "a@newsroom.org")["unsubscribe"]
    client.post(a_path)
    assert states(app) == {
        ("a@newsroom.org", "explaining-ukraine"): SubscriptionStatus.UNSUBSCRIBED,
        ("b@newsroom.org", "explaining-ukraine"): SubscriptionStatus.CONFIRMED,
    }


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-2] + ("xx" if not t.endswith("xx") else "yy"),
        lambda t: t[: len(t) // 2],
        lambda t: "nonsense",
    ],
)
@pytest.mark.parametrize("kind", ["unsubscribe", "manage"])
def test_tampered_tokens_get_a_clear_page_and_change_nothing(app, client, mangle, kind):
    confirmed(app, client)
    path = welcome_links(app)[kind]
    bad = f"/{kind}/" + mangle(path.rsplit("/", 1)[1])
    for response in (client.get(bad), app.test_client(use_cookies=False).post(bad)):
        assert response.status_code == 404
        assert TEXTS.link_invalid_title in response.get_data(as_text=True)
    assert (
        states(app)[("reader@newsroom.org", "explaining-ukraine")] == SubscriptionStatus.CONFIRMED
    )


def test_a_token_of_another_purpose_is_refused(app, client):
    confirmed(app, client)
    links = welcome_links(app)
    manage_token = links["manage"].rsplit("/", 1)[1]
    assert client.post(f"/unsubscribe/{manage_token}").status_code == 404
    unsubscribe_token = links["unsubscribe"].rsplit("/", 1)[1]
    assert client.get(f"/manage/{unsubscribe_token}").status_code == 404


def test_old_tokens_of_an_erased_reader_do_not_act_on_whoever_gets_their_row(app, client):
    confirmed(app, client, email="gone@newsroom.org")
    old = welcome_links(app, "gone@newsroom.org")
    data = data_link(app, client, old["manage"], "gone@newsroom.org")
    assert manage_post(client, data, action="erase", erase_confirm="y").status_code == 200
    confirmed(app, client, email="new@newsroom.org")
    with session_factory(app)() as session:
        new_id = session.scalar(select(Subscriber.id))
    if TEST_DATABASE == "sqlite":  # PostgreSQL's sequences never hand out an id twice
        assert new_id == 1  # SQLite handed the erased row's id to the new reader
    assert client.post(old["unsubscribe"]).status_code == 404
    assert client.get(old["manage"]).status_code == 404
    assert states(app) == {("new@newsroom.org", "explaining-ukraine"): SubscriptionStatus.CONFIRMED}


def manage_post(client, path, **data):
    return client.post(path, data={"csrf_token": csrf_token(client, path), **data})


def data_link(app, client, manage_path, email="reader@newsroom.org") -> str:
    """Ask for a link to one's data on the manage page; the path it mails to ``email``."""
    assert manage_post(client, manage_path, action="data-link").status_code == 302
    text = newest_mail_text(app, "data_link", email)
    return re.search(r"https?://[^/\s]+(/data/\S+)", text).group(1)


def test_manage_page_lists_every_newsletter_with_its_state(app, client):
    confirmed(app, client)
    html = client.get(welcome_links(app)["manage"]).get_data(as_text=True)
    assert "reader@newsroom.org" in html
    assert "Explaining Ukraine with Kate Tsurkan" in html and "Ukraine Daily" in html
    assert TEXTS.status_confirmed in html and TEXTS.status_unsubscribed in html


def test_manage_subscribe_leave_and_leave_all(app, client):
    confirmed(app, client)
    path = welcome_links(app)["manage"]
    response = manage_post(client, path, action="subscribe", newsletter="ukraine-daily")
    assert response.status_code == 302
    # the token proves the address: confirmed at once, with consent, and welcomed
    assert states(app)[("reader@newsroom.org", "ukraine-daily")] == SubscriptionStatus.CONFIRMED
    with session_factory(app)() as session:
        daily = session.scalars(
            select(Subscription)
            .join(Subscription.newsletter)
            .where(Subscription.newsletter.has(slug="ukraine-daily"))
        ).one()
        joined, proven = daily.events
        assert joined.how == proven.how == "manage"
        assert joined.source == "manage page" and proven.ip == "127.0.0.1"
        kinds = session.scalars(select(OutboxMail.kind).order_by(OutboxMail.id)).all()
    assert kinds == ["confirm", "welcome", "welcome"]
    assert "You are subscribed to Ukraine Daily." in client.get(path).get_data(as_text=True)

    manage_post(client, path, action="leave", newsletter="explaining-ukraine")
    assert (
        states(app)[("reader@newsroom.org", "explaining-ukraine")]
        == SubscriptionStatus.UNSUBSCRIBED
    )
    assert states(app)[("reader@newsroom.org", "ukraine-daily")] == SubscriptionStatus.CONFIRMED
    manage_post(client, path, action="leave-all")
    assert set(states(app).values()) == {SubscriptionStatus.UNSUBSCRIBED}


def test_manage_post_without_csrf_token_changes_nothing(app, client):
    confirmed(app, client)
    path = welcome_links(app)["manage"]
    response = app.test_client().post(path, data={"action": "leave-all"})
    assert response.status_code == 400
    assert TEXTS.session_expired in response.get_data(as_text=True)
    assert (
        states(app)[("reader@newsroom.org", "explaining-ukraine")] == SubscriptionStatus.CONFIRMED
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"action": "subscribe", "newsletter": "nope"}, TEXTS.unknown_newsletter),
        ({"action": "erase", "erase_confirm": "y"}, TEXTS.server_error_text),
        ({"action": "export"}, TEXTS.server_error_text),
        ({"action": "dance"}, TEXTS.server_error_text),
    ],
)
def test_manage_bad_actions_get_a_message(app, client, data, message):
    confirmed(app, client)
    response = manage_post(client, welcome_links(app)["manage"], **data)
    assert response.status_code == 400
    assert message in response.get_data(as_text=True)
    assert (
        states(app)[("reader@newsroom.org", "explaining-ukraine")] == SubscriptionStatus.CONFIRMED
    )


def test_download_my_data(app, client):
    confirmed(app, client)
    response = manage_post(
        client, data_link(app, client, welcome_links(app)["manage"]), action="export"
    )
    assert response.status_code == 200
    assert response.headers["Content-Disposition"].startswith("attachment")
    data = json.loads(response.data)
    assert data["email"] == "reader@newsroom.org"
    [subscription] = data["subscriptions"]
    assert subscription["newsletter"] == "explaining-ukraine"
    assert subscription["status"] == "confirmed"
    joined, proven = subscription["history"]
    assert joined["event"] == "subscribed" and joined["ip"] == "127.0.0.1"
    assert proven["event"] == "confirmed" and proven["user_agent"]
    assert [m["kind"] for m in data["mail_sent"]] == ["confirm", "welcome", "data_link"]


def test_erase_my_data_keeps_only_a_keyed_hash(app, client):
    confirmed(app, client)
    path = welcome_links(app)["manage"]
    link = data_link(app, client, path)
    response = manage_post(client, link, action="erase")  # without the tick: nothing
    assert response.status_code == 400
    assert TEXTS.manage_erase_needs_confirm in response.get_data(as_text=True)
    response = manage_post(client, link, action="erase", erase_confirm="y")
    assert response.status_code == 200
    assert TEXTS.erased_title in response.get_data(as_text=True)
    with session_factory(app)() as session:
        for model in (Subscriber, Subscription, OutboxMail, Mailbox):
            assert session.scalar(select(func.count()).select_from(model)) == 0
        [kept] = session.scalars(select(ErasedAddress)).all()
    assert kept.digest == erased_digest("reader@newsroom.org", app.config["SECRET_KEY"])
    assert "reader" not in kept.digest
    assert client.get(path).status_code == 404
    # the reader may come back by themselves, with a new confirmation
    assert subscribe(client, json=True).json["ok"]
    assert states(app) == {
        ("reader@newsroom.org", "explaining-ukraine"): SubscriptionStatus.PENDING
    }


def test_a_forwarded_manage_link_cannot_download_or_erase(app, client):
    confirmed(app, client)
    forwarded = app.test_client()  # whoever the digest was forwarded to
    path = welcome_links(app)["manage"]
    page = forwarded.get(path).get_data(as_text=True)
    assert 'value="export"' not in page and 'value="erase"' not in page
    for action in ("export", "erase"):
        response = manage_post(forwarded, path, action=action, erase_confirm="y")
        assert response.status_code == 400 and not response.is_json
        assert "127.0.0.1" not in response.get_data(as_text=True)
    response = manage_post(forwarded, path, action="data-link")
    assert response.status_code == 302
    html = forwarded.get(path).get_data(as_text=True)
    assert TEXTS.manage_data_sent.format(email="reader@newsroom.org") in html
    assert states(app) == {
        ("reader@newsroom.org", "explaining-ukraine"): SubscriptionStatus.CONFIRMED
    }
    with session_factory(app)() as session:  # the link went to the reader's address
        [mail] = session.scalars(select(OutboxMail).where(OutboxMail.kind == "data_link")).all()
        assert mail.recipient == "reader@newsroom.org"


def test_a_data_link_works_for_an_hour(app, client, monkeypatch):
    confirmed(app, client)
    link = data_link(app, client, welcome_links(app)["manage"])
    assert client.get(link).status_code == 200
    assert client.get(link).headers["Cache-Control"] == "no-store"
    token = csrf_token(client, link)

    class An_hour_later:  # noqa: N801
        @staticmethod
        def time():
            return time.time() + 3601

    monkeypatch.setattr(itsdangerous.timed, "time", An_hour_later)
    for response in (
        client.get(link),
        client.post(link, data={"csrf_token": token, "action": "export"}),
    ):
        assert response.status_code == 410
        assert TEXTS.data_link_expired_text in response.get_data(as_text=True)
    assert "reader@newsroom.org" in str(states(app))  # nothing erased, nothing shown


def test_asking_for_data_links_counts_toward_the_daily_cap(app, client):
    confirmed(app, client)  # one confirmation email already today
    path = welcome_links(app)["manage"]
    for _ in range(app.config["CONFIRM_DAILY_CAP"] + 3):
        assert manage_post(client, path, action="data-link").status_code == 302
    with session_factory(app)() as session:
        sent = session.scalars(select(OutboxMail.kind).where(OutboxMail.kind != "welcome")).all()
    assert len(sent) == app.config["CONFIRM_DAILY_CAP"]  # the confirmation and four links


def test_signing_out_every_link(app, client):
    confirmed(app, client)
    old = welcome_links(app)
    old_data = data_link(app, client, old["manage"])
    response = manage_post(client, old["manage"], action="sign-out")
    assert response.status_code == 302
    new_manage = response.location
    assert new_manage != old["manage"] and "/manage/" in new_manage
    page = client.get(new_manage).get_data(as_text=True)
    assert str(escape(TEXTS.manage_signed_out)) in page
    for path in (old["manage"], old_data):
        response = client.get(path)
        assert response.status_code == 404
        assert TEXTS.link_invalid_title in response.get_data(as_text=True)
    assert (
        client.post(old["unsubscribe"], data={"List-Unsubscribe": "One-Click"}).status_code == 404
    )
    assert states(app) == {
        ("reader@newsroom.org", "explaining-ukraine"): SubscriptionStatus.CONFIRMED
    }


@pytest.mark.parametrize(
    "data",
    [[1, "s3cret"], [2**63 - 1, "x" * 64], [7, "a" * 200]],  # the last one compresses
    ids=["small", "largest-id", "compressed"],
)
def test_the_senders_fast_tokens_are_itsdangerous_tokens_byte_for_byte(monkeypatch, data):
    monkeypatch.setattr(
        itsdangerous.timed.TimestampSigner, "get_timestamp", lambda _: 1_800_000_000
    )
    expected = serializer("key", "unsubscribe").dumps(data)
    assert Tokens("key", "unsubscribe").dumps(data, now=1_800_000_000) == expected
    assert serializer("key", "unsubscribe").loads(Tokens("key", "unsubscribe").dumps(data)) == data
