"""Links in mail: absolute URLs and the signed tokens in them, one salt per purpose.

A token made for one purpose (confirm, unsubscribe, manage) is refused for another.
Unsubscribe and manage tokens never expire (they are in every mail a reader keeps) and
carry the subscriber's random secret, so a token cannot act on anyone else, even on a
row that reuses an erased subscriber's id; a new secret ("sign out every link") ends
them all. A data token (download, erase) carries the secret too, and expires within
the hour: it is mailed to the address when asked for, never put in other mail.
Confirmation tokens expire and name the subscription's current nonce, so a link from
before an unsubscribe stops working.
"""

import base64
import hashlib
import hmac
import re
import time
from typing import Any, Literal, overload

from flask import current_app
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from itsdangerous.encoding import base64_encode, int_to_bytes
from sqlalchemy.orm import Session

from .mailout.verp import base36
from .models import Subscriber, Subscription, SubscriptionStatus
from .texts import DEFAULT_LANGUAGE


class TokenInvalid(Exception):
    """The token was tampered with, truncated, made for another purpose, or names nobody."""


class TokenExpired(Exception):
    """The token was genuine but is older than its purpose allows."""


class LinkGone(Exception):
    """The token was genuine, but what it named has changed since (unsubscribed, restarted)."""


def serializer(secret_key: str, purpose: str) -> URLSafeTimedSerializer:
    """The signer of ``purpose``'s tokens; keep it to make many tokens quickly."""
    return URLSafeTimedSerializer(secret_key, salt=f"newsletter.{purpose}")


def make_token(purpose: str, data: Any) -> str:
    """Sign ``data`` (JSON-serializable) for ``purpose`` with the app's secret key."""
    return serializer(current_app.config["SECRET_KEY"], purpose).dumps(data)


def read_token(purpose: str, token: str, max_age: int | None = None) -> Any:
    """Return the data signed in ``token``, or raise TokenInvalid / TokenExpired."""
    try:
        return serializer(current_app.config["SECRET_KEY"], purpose).loads(token, max_age=max_age)
    except SignatureExpired:
        raise TokenExpired from None
    except BadSignature:
        raise TokenInvalid from None


def public_url(endpoint: str, language: str = DEFAULT_LANGUAGE, **values: object) -> str:
    """An absolute link for mail, based on ``PUBLIC_URL`` rather than the request's host,
    to the page in ``language`` (``/uk/…`` for Ukrainian).

    Built from the URL map itself, so it works in CLI commands, outside any request.
    """
    path = current_app.url_map.bind("localhost").build(endpoint, values)
    prefix = "" if language == DEFAULT_LANGUAGE else f"/{language}"
    return current_app.config["PUBLIC_URL"] + prefix + path


def confirm_token(subscription_id: int, nonce: str) -> str:
    """The token of a subscription's confirmation link, for its nonce (the current one)."""
    return make_token("confirm", [subscription_id, nonce])


def data_token(subscriber: Subscriber) -> str:
    """The token of a short-lived link to a reader's data (``DATA_LINK_MAX_AGE``)."""
    return make_token("data", [subscriber.id, subscriber.secret])


def unsubscribe_url(subscription: Subscription) -> str:
    """The one-click link that ends this subscription."""
    subscriber = subscription.subscriber
    return reader_links(subscriber.language).unsubscribe_url(subscription.id, subscriber.secret)


def manage_url(subscriber: Subscriber) -> str:
    """The link to this subscriber's preferences page, in their language."""
    return reader_links(subscriber.language).manage_url(subscriber.id, subscriber.secret)


def personal_links(subscription: Subscription) -> dict[str, str]:
    """The links that differ per reader in a newsletter's mail, to pages in the
    reader's language."""
    subscriber = subscription.subscriber
    links = reader_links(subscriber.language)
    return links.for_reader(subscription.id, subscriber.id, subscriber.secret)


def preview_links(language: str = DEFAULT_LANGUAGE) -> dict[str, str]:
    """Links of nobody, for previews: they open the pages (in ``language``) but act on
    no subscription."""
    return reader_links(language).for_reader(0, 0, "preview")


def reader_links(language: str = DEFAULT_LANGUAGE) -> "ReaderLinks":
    """The app's link maker to pages in ``language``, made once: its prefixes and signers
    depend only on config."""
    key = f"reader_links.{language}"
    links = current_app.extensions.get(key)
    if links is None:
        links = current_app.extensions[key] = ReaderLinks(
            unsubscribe_prefix=public_url("preferences.unsubscribe", language, token="x")[:-1],
            manage_prefix=public_url("preferences.manage", language, token="x")[:-1],
            secret_key=current_app.config["SECRET_KEY"],
            confirm_prefix=public_url("pages.confirm", language, token="x")[:-1],
        )
    return links


def tracked_links() -> "Tracked":
    """The app's maker and reader of tracked-link tokens, made once."""
    tracked = current_app.extensions.get("tracked_links")
    if tracked is None:
        tracked = current_app.extensions["tracked_links"] = Tracked(
            current_app.config["SECRET_KEY"],
            public_url("tracking.click", token="x")[:-1],
            public_url("tracking.pixel", token="x")[:-1],
        )
    return tracked


class ReaderLinks:
    """Makes readers' personal links from plain ids, the URL prefixes worked out once.

    A send makes two links per reader for many thousands of readers; building each
    through the URL map would cost more than the rest of the link. Needs no app once
    made, so the forked senders of a digest use the one their parent made.
    """

    def __init__(
        self,
        unsubscribe_prefix: str,
        manage_prefix: str,
        secret_key: str,
        confirm_prefix: str = "",
    ) -> None:
        # Tokens are URL-safe base64 and dots: they need no quoting after the prefix.
        self._unsubscribe = unsubscribe_prefix
        self._manage = manage_prefix
        self._confirm = confirm_prefix
        self._unsubscribe_tokens = Tokens(secret_key, "unsubscribe")
        self._manage_tokens = Tokens(secret_key, "manage")
        self._confirm_tokens = Tokens(secret_key, "confirm")

    def confirm_url(self, subscription_id: int, nonce: str) -> str:
        """A subscription's confirmation link, for its current nonce (one per sign-up)."""
        return self._confirm + self._confirm_tokens.dumps([subscription_id, nonce])

    def unsubscribe_url(
        self, subscription_id: int, secret: str, issue_id: int | None = None
    ) -> str:
        """The one-click unsubscribe link of a subscription; in a digest it names the
        issue too, so that the unsubscribe is counted against it."""
        data = (
            [subscription_id, secret] if issue_id is None else [subscription_id, secret, issue_id]
        )
        return self._unsubscribe + self._unsubscribe_tokens.dumps(data)

    def manage_url(self, subscriber_id: int, secret: str) -> str:
        """The preferences link of a subscriber."""
        return self._manage + self._manage_tokens.dumps([subscriber_id, secret])

    def for_reader(
        self, subscription_id: int, subscriber_id: int, secret: str, issue_id: int | None = None
    ) -> dict[str, str]:
        """Both personal links, by slot name."""
        return {
            "unsubscribe_url": self.unsubscribe_url(subscription_id, secret, issue_id),
            "manage_url": self.manage_url(subscriber_id, secret),
        }


class Tokens:
    """``serializer(secret_key, purpose).dumps``, byte for byte, for many tokens.

    itsdangerous derives the key and sets up the HMAC for every token, two thirds of
    its cost; here they are made once (the HMAC's state copied for each token) and
    the timestamp once a second. The payload is still itsdangerous's own.
    """

    def __init__(self, secret_key: str, purpose: str) -> None:
        self._serializer = serializer(secret_key, purpose)
        signer = self._serializer.make_signer()
        self._mac = hmac.new(signer.derive_key(), digestmod=signer.digest_method)
        self._sep = signer.sep
        self._stamp: tuple[int, bytes] = (-1, b"")

    def dumps(self, data: Any, now: int | None = None) -> str:
        """The token of ``data``, signed at ``now`` (default: this second)."""
        now = int(time.time()) if now is None else now
        if self._stamp[0] != now:
            self._stamp = (now, base64_encode(int_to_bytes(now)))
        value = self._serializer.dump_payload(data) + self._sep + self._stamp[1]
        mac = self._mac.copy()
        mac.update(value)
        return (value + self._sep + base64_encode(mac.digest())).decode("ascii")


# The largest key a row can have: the tables' keys are INTEGER, 32 bits on PostgreSQL
# (which refuses a larger parameter: "integer out of range"); SQLite's never get there.
MAX_ROW_ID = 2**31 - 1


def issue_of_unsubscribe(token: str) -> int | None:
    """The issue a genuine unsubscribe token came in, if it came in a digest."""
    try:
        data = read_token("unsubscribe", token)
    except (TokenInvalid, TokenExpired):
        return None
    if isinstance(data, list) and len(data) == 3:
        issue_id = data[2]
        if type(issue_id) is int and 0 < issue_id <= MAX_ROW_ID:
            return issue_id
    return None


class Tracked:
    """Tracked links (``/r/TOKEN``) and the open pixel (``/o/TOKEN``) of one issue's
    readers. TOKEN names the issue, the link's position and the reader, with a keyed
    hash: ``ISSUE.POSITION.READER.MAC`` in base 36 (``-`` for the pixel), short, cheap
    to make twenty times a message, and worthless when altered. The target is not in
    it: the redirect looks it up from the issue."""

    def __init__(self, secret_key: str, click_prefix: str, open_prefix: str) -> None:
        key = hmac.new(secret_key.encode(), b"newsletter.tracked", hashlib.sha256).digest()
        self._mac = hmac.new(key, digestmod=hashlib.sha256)
        self._click, self._open = click_prefix, open_prefix

    def _sign(self, text: str) -> str:
        mac = self._mac.copy()
        mac.update(text.encode())
        return base64.urlsafe_b64encode(mac.digest()[:12]).decode()

    def token(self, issue_id: int, position: int | None, subscriber_id: int) -> str:
        """The token of link ``position`` (None: the open pixel) for one reader."""
        # "-" for the pixel: a position is base 36, where "o" is 24.
        where = "-" if position is None else base36(position)
        text = f"{base36(issue_id)}.{where}.{base36(subscriber_id)}"
        return f"{text}.{self._sign(text)}"

    def read(self, token: str) -> tuple[int, int | None, int] | None:
        """(issue id, position or None, subscriber id) of a genuine token, else None."""
        found = TRACKED_TOKEN.fullmatch(token)
        if found is None or not hmac.compare_digest(self._sign(found[1]), found[2]):
            return None
        issue, where, reader = found[1].split(".")
        issue_id, subscriber_id = int(issue, 36), int(reader, 36)
        position = None if where == "-" else int(where, 36)
        if any(n is not None and not n <= MAX_ROW_ID for n in (issue_id, position, subscriber_id)):
            return None
        return issue_id, position, subscriber_id

    def for_reader(self, issue_id: int, subscriber_id: int, links: int, opens: bool) -> dict:
        """The slots ``link0``… (and ``open_url``) of one reader's message."""
        values = {
            f"link{n}": self._click + self.token(issue_id, n, subscriber_id) for n in range(links)
        }
        if opens:
            values["open_url"] = self._open + self.token(issue_id, None, subscriber_id)
        return values


TRACKED_TOKEN = re.compile(
    r"([0-9a-z]{1,13}\.(?:-|[0-9a-z]{1,4})\.[0-9a-z]{1,13})\.([A-Za-z0-9_-]{16})"
)


@overload
def row_for_link(
    session: Session,
    purpose: Literal["confirm", "unsubscribe"],
    token: str,
    max_age: int | None = None,
) -> Subscription: ...
@overload
def row_for_link(
    session: Session, purpose: Literal["manage", "data"], token: str, max_age: int | None = None
) -> Subscriber: ...
@overload
def row_for_link(
    session: Session, purpose: str, token: str, max_age: int | None = None
) -> Subscription | Subscriber: ...
def row_for_link(
    session: Session, purpose: str, token: str, max_age: int | None = None
) -> Subscription | Subscriber:
    """What a link's token names: the one way from a token to its row.

    ``confirm`` and ``unsubscribe`` name a Subscription, ``manage`` and ``data`` a
    Subscriber.
    Raises TokenInvalid (forged, truncated, another purpose, nobody by that id or
    secret), TokenExpired, or LinkGone (a confirmation link whose subscription
    ended or started again since it was sent).
    """
    try:
        # A digest's unsubscribe link also names its issue (see issue_of_unsubscribe).
        row_id, proof, *_ = read_token(purpose, token, max_age)
    except (TypeError, ValueError):  # genuine JSON of another shape
        raise TokenInvalid from None
    # Only keys a row can have: a bool is an int to Python, and past 2**63 - 1 no
    # database takes the number as a parameter.
    if type(row_id) is not int or not 0 < row_id <= MAX_ROW_ID or type(proof) is not str:
        raise TokenInvalid
    if purpose in ("manage", "data"):
        subscriber = session.get(Subscriber, row_id)
        if subscriber is None or subscriber.secret != proof:
            raise TokenInvalid
        return subscriber
    subscription = session.get(Subscription, row_id)
    if purpose == "confirm":
        # A new nonce means the subscription ended and started again since this link.
        if (
            subscription is None
            or subscription.confirm_nonce != proof
            or subscription.status == SubscriptionStatus.UNSUBSCRIBED
        ):
            raise LinkGone
        return subscription
    if subscription is None or subscription.subscriber.secret != proof:
        raise TokenInvalid
    return subscription
