"""Links in mail: absolute URLs and the signed tokens in them, one purpose each.

Unsubscribe and manage tokens never expire (they are in every mail a reader keeps) and
carry the subscriber's random secret, so a token cannot act on anyone else, even on a
row that reuses an erased subscriber's id.
"""

from flask import current_app
from sqlalchemy.orm import Session

from .models import Subscriber, Subscription
from .tokens import TokenInvalid, make_token, read_token, serializer


def public_url(endpoint: str, **values: object) -> str:
    """An absolute link for mail, based on ``PUBLIC_URL`` rather than the request's host.

    Built from the URL map itself, so it works in CLI commands, outside any request.
    """
    path = current_app.url_map.bind("localhost").build(endpoint, values)
    return current_app.config["PUBLIC_URL"] + path


def confirm_token(subscription: Subscription) -> str:
    """The token of this subscription's current confirmation link."""
    return make_token("confirm", [subscription.id, subscription.confirm_nonce])


def unsubscribe_url(subscription: Subscription) -> str:
    """The one-click link that ends this subscription."""
    return reader_links().unsubscribe_url(subscription.id, subscription.subscriber.secret)


def manage_url(subscriber: Subscriber) -> str:
    """The link to this subscriber's preferences page."""
    return reader_links().manage_url(subscriber.id, subscriber.secret)


def personal_links(subscription: Subscription) -> dict[str, str]:
    """The links that differ per reader in a newsletter's mail."""
    subscriber = subscription.subscriber
    return reader_links().for_reader(subscription.id, subscriber.id, subscriber.secret)


def preview_links() -> dict[str, str]:
    """Links of nobody, for previews: they open the pages but act on no subscription."""
    return reader_links().for_reader(0, 0, "preview")


def reader_links() -> "ReaderLinks":
    """The app's link maker, made once: its prefixes and signers depend only on config."""
    links = current_app.extensions.get("reader_links")
    if links is None:
        links = current_app.extensions["reader_links"] = ReaderLinks()
    return links


class ReaderLinks:
    """Makes readers' personal links from plain ids, the URL prefixes worked out once.

    A send makes two links per reader for many thousands of readers; building each
    through the URL map would cost more than the rest of the link.
    """

    def __init__(self) -> None:
        # Tokens are URL-safe base64 and dots: they need no quoting after the prefix.
        self._unsubscribe = public_url("preferences.unsubscribe", token="x")[:-1]
        self._manage = public_url("preferences.manage", token="x")[:-1]
        self._unsubscribe_tokens = serializer("unsubscribe")
        self._manage_tokens = serializer("manage")

    def unsubscribe_url(self, subscription_id: int, secret: str) -> str:
        """The one-click unsubscribe link of a subscription."""
        return self._unsubscribe + self._unsubscribe_tokens.dumps([subscription_id, secret])

    def manage_url(self, subscriber_id: int, secret: str) -> str:
        """The preferences link of a subscriber."""
        return self._manage + self._manage_tokens.dumps([subscriber_id, secret])

    def for_reader(self, subscription_id: int, subscriber_id: int, secret: str) -> dict[str, str]:
        """Both personal links, by slot name."""
        return {
            "unsubscribe_url": self.unsubscribe_url(subscription_id, secret),
            "manage_url": self.manage_url(subscriber_id, secret),
        }


def _owned(session: Session, model, purpose: str, token: str):
    try:
        row_id, secret = read_token(purpose, token)
    except (TypeError, ValueError):
        raise TokenInvalid from None
    row = session.get(model, row_id) if isinstance(row_id, int) else None
    owner = row if model is Subscriber else getattr(row, "subscriber", None)
    if owner is None or owner.secret != secret:
        raise TokenInvalid
    return row


def subscription_for(session: Session, token: str) -> Subscription:
    """The subscription an unsubscribe token names, or TokenInvalid."""
    return _owned(session, Subscription, "unsubscribe", token)


def subscriber_for(session: Session, token: str) -> Subscriber:
    """The subscriber a manage token names, or TokenInvalid."""
    return _owned(session, Subscriber, "manage", token)
