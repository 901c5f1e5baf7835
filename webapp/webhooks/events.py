"""Webhook events, written in the transaction of the change that causes them.

One row per receiver URL (:class:`WebhookMessage`); the worker delivers them. A change
that rolls back takes its events with it, and one that commits cannot lose them. With no
``WEBHOOK_URLS`` nothing is written. The session carries the URLs (``session.info``,
set by ``db.init_app``), so the services that record changes need no Flask.

Events and what their ``data`` carries, beside ``event_id`` and ``time``:

- ``subscription.created``: email, newsletter, how (form, manage); imports announce none
- ``subscription.confirmed``: email, newsletter, how (link, manage)
- ``subscription.unsubscribed``: email, newsletter, how (link, one-click, manage, staff,
  mailto, complaint, …)
- ``subscriber.erased``: email, how
- ``issue.sent``: newsletter, number, subject, delivered, failed
- ``delivery.bounced``: email, newsletter and issue (when known), kind (hard, soft), code
- ``delivery.complained``: email, newsletter and issue (when known)
"""

import secrets
from datetime import datetime

from sqlalchemy import bindparam, insert, literal, select
from sqlalchemy.orm import Session

from ..db import UTCDateTime, utcnow
from ..models import EventKind, Newsletter, Subscriber, Subscription
from .models import WebhookMessage, WebhookStatus

# Subscription history events that are webhook events.
FROM_HISTORY = {
    EventKind.SUBSCRIBED: "subscription.created",
    EventKind.RESUBSCRIBED: "subscription.created",
    EventKind.CONFIRMED: "subscription.confirmed",
    EventKind.UNSUBSCRIBED: "subscription.unsubscribed",
}
TYPES = (
    "subscription.created",
    "subscription.confirmed",
    "subscription.unsubscribed",
    "subscriber.erased",
    "issue.sent",
    "delivery.bounced",
    "delivery.complained",
)


def receivers(session: Session) -> tuple[str, ...]:
    """The URLs this session's changes are announced to; empty: webhooks are off."""
    return session.info.get("webhook_urls") or ()


def new_msg_id() -> str:
    """A message id (``webhook-id``): the same for every URL and every retry of one event,
    so receivers can drop a message they had already."""
    return "msg_" + secrets.token_urlsafe(18)


def subscription_changed(
    session: Session, subscription_id: int, kind: EventKind, how: str | None, at: datetime
) -> None:
    """The webhook event of one history event, if it is one (a sign-up, a confirmation,
    an unsubscribe); its address and newsletter are read in the same statement."""
    urls = receivers(session)
    event_type = FROM_HISTORY.get(kind)
    if not urls or event_type is None:
        return
    msg_id = new_msg_id()
    session.connection().execute(
        _FROM_SUBSCRIPTION,
        [
            {
                "msg_id": msg_id,
                "type": event_type,
                "url": url,
                "how": how,
                "at": at,
                "sid": subscription_id,
            }
            for url in urls
        ],
    )


def announce(
    session: Session,
    event_type: str,
    *,
    subscriber: Subscriber | None = None,
    email: str | None = None,
    newsletter: str | None = None,
    how: str | None = None,
    details: dict | None = None,
    at: datetime | None = None,
) -> None:
    """Write one event of ``event_type`` for every receiver, in the caller's transaction."""
    urls = receivers(session)
    if not urls:
        return
    assert event_type in TYPES, event_type
    at, msg_id = at or utcnow(), new_msg_id()
    session.execute(
        insert(WebhookMessage),
        [
            {
                "msg_id": msg_id,
                "type": event_type,
                "url": url,
                "subscriber_id": subscriber.id if subscriber is not None else None,
                "email": email or (subscriber.email if subscriber is not None else None),
                "newsletter": newsletter,
                "how": how,
                "details": details,
                "occurred_at": at,
                "status": WebhookStatus.PENDING,
                "attempts": 0,
                "next_attempt_at": at,
                "retry_from": at,
            }
            for url in urls
        ],
    )


def payload(message: WebhookMessage) -> dict:
    """The body of ``message`` as the Standard Webhooks specification shapes it:
    ``type``, ``timestamp`` and ``data``, built the same way for every retry."""
    time = message.occurred_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    data: dict = {"event_id": message.msg_id, "time": time}
    if message.email is not None:
        data["email"] = message.email
    if message.type != "subscriber.erased":
        data["newsletter"] = message.newsletter
    if message.how is not None:
        data["how"] = message.how
    data.update(message.details or {})
    return {"type": message.type, "timestamp": time, "data": data}


def _history_insert():
    """INSERT … SELECT of a subscription's event: address and newsletter come from the
    rows themselves, so the sign-up path pays one statement for it."""
    at = bindparam("at", type_=UTCDateTime)
    rows = (
        select(
            bindparam("msg_id"),
            bindparam("type"),
            bindparam("url"),
            Subscription.subscriber_id,
            Subscriber.email,
            Newsletter.slug,
            bindparam("how"),
            at,
            literal(WebhookStatus.PENDING.value),
            literal(0),
            at,
            at,
        )
        .join(Subscriber, Subscriber.id == Subscription.subscriber_id)
        .join(Newsletter, Newsletter.id == Subscription.newsletter_id)
        .where(Subscription.id == bindparam("sid"))
    )
    columns = [
        "msg_id",
        "type",
        "url",
        "subscriber_id",
        "email",
        "newsletter",
        "how",
        "occurred_at",
        "status",
        "attempts",
        "next_attempt_at",
        "retry_from",
    ]
    return insert(WebhookMessage).from_select(columns, rows)


_FROM_SUBSCRIPTION = _history_insert()  # built once: it runs with every change
