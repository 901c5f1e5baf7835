"""Links in mail: absolute URLs and the signed tokens in them, one purpose each.

Unsubscribe and manage tokens never expire (they are in every mail a reader keeps) and
carry the subscriber's random secret, so a token cannot act on anyone else, even on a
row that reuses an erased subscriber's id.
"""

from flask import current_app
from sqlalchemy.orm import Session

from .models import Subscriber, Subscription
from .tokens import TokenInvalid, make_token, read_token


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
    token = make_token("unsubscribe", [subscription.id, subscription.subscriber.secret])
    return public_url("preferences.unsubscribe", token=token)


def manage_url(subscriber: Subscriber) -> str:
    """The link to this subscriber's preferences page."""
    token = make_token("manage", [subscriber.id, subscriber.secret])
    return public_url("preferences.manage", token=token)


def personal_links(subscription: Subscription) -> dict[str, str]:
    """The links that differ per reader in a newsletter's mail."""
    return {
        "unsubscribe_url": unsubscribe_url(subscription),
        "manage_url": manage_url(subscription.subscriber),
    }


def preview_links() -> dict[str, str]:
    """Links of nobody, for previews: they open the pages but act on no subscription."""
    return {
        "unsubscribe_url": public_url(
            "preferences.unsubscribe", token=make_token("unsubscribe", [0, "preview"])
        ),
        "manage_url": public_url("preferences.manage", token=make_token("manage", [0, "preview"])),
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
