"""The history of each subscription: an append-only list of events with their consent.

Every subscribe, confirm, welcome, unsubscribe and erasure is an event in the same
transaction as the change it records; the subscription row keeps only the current
state. Exports and the reader's data download show the history as it is.
"""

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import insert
from sqlalchemy.orm import Session

from ..db import utcnow
from ..models import EventKind, Subscription, SubscriptionEvent
from ..webhooks.events import subscription_changed

if TYPE_CHECKING:
    from .service import Consent


def record_event(
    session: Session,
    subscription: Subscription,
    kind: EventKind,
    how: str | None = None,
    consent: "Consent | None" = None,
    at: datetime | None = None,
    inbound_id: int | None = None,
    issue_id: int | None = None,
) -> None:
    """Append one event to ``subscription``'s history, in the caller's transaction;
    ``inbound_id`` names the message heard back that caused it, ``issue_id`` the issue
    whose link it came from."""
    record_event_of(
        session,
        subscription.id,
        subscription.newsletter_id,
        kind,
        how,
        consent,
        at,
        inbound_id,
        issue_id,
    )


def record_event_of(
    session: Session,
    subscription_id: int,
    newsletter_id: int,
    kind: EventKind,
    how: str | None = None,
    consent: "Consent | None" = None,
    at: datetime | None = None,
    inbound_id: int | None = None,
    issue_id: int | None = None,
) -> None:
    """:func:`record_event` for a subscription known by its ids, not loaded; a sign-up,
    confirmation or unsubscribe is also a webhook event, in the same transaction."""
    at = at or utcnow()
    session.connection().execute(
        _NEW_EVENT,
        _row(subscription_id, newsletter_id, kind, how, consent, at, inbound_id, issue_id),
    )
    subscription_changed(session, subscription_id, kind, how, at)


_NEW_EVENT = insert(SubscriptionEvent)  # built once: it runs with every change


def _row(
    subscription_id: int,
    newsletter_id: int,
    kind: EventKind,
    how: str | None,
    consent: "Consent | None",
    at: datetime,
    inbound_id: int | None = None,
    issue_id: int | None = None,
) -> dict:
    return {
        "subscription_id": subscription_id,
        "newsletter_id": newsletter_id,
        "kind": kind,
        "how": how,
        "at": at,
        "ip": consent.ip if consent else None,
        "user_agent": consent.user_agent if consent else None,
        "source": consent.source if consent else None,
        "inbound_id": inbound_id,
        "issue_id": issue_id,
    }


def record_events_of(
    session: Session,
    events: list[tuple[int, int, "Consent", datetime]],
    kind: EventKind,
    how: str,
) -> None:
    """:func:`record_event_of` for several subscriptions at once, one statement: each
    of ``events`` is (subscription id, newsletter id, consent, time)."""
    session.connection().execute(
        _NEW_EVENT,
        [
            _row(subscription_id, newsletter_id, kind, how, consent, at)
            for subscription_id, newsletter_id, consent, at in events
        ],
    )
    for subscription_id, _, _, at in events:
        subscription_changed(session, subscription_id, kind, how, at)


def iso(value: datetime | None) -> str | None:
    """A time as ISO 8601 text (UTC), or None."""
    return value.isoformat() if value else None


def event_record(event) -> dict:
    """One event (a SubscriptionEvent, or a row of its columns), JSON-ready: for
    exports and the reader's data download."""
    return {
        "event": event.kind.value,
        "how": event.how,
        "at": iso(event.at),
        "ip": event.ip,
        "user_agent": event.user_agent,
        "source": event.source,
    }
