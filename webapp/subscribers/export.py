"""Taking the list out: every subscription with its state and its history, as CSV or JSON.

Rows are streamed from the database as plain rows (no ORM objects, so nothing piles
up in a session) and written as they come, a batch at a time with the batch's
history fetched in one query: memory stays flat however long the list.
"""

import csv
import json
from collections import defaultdict
from collections.abc import Iterator
from typing import TextIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..models import (
    EventKind,
    Newsletter,
    Subscriber,
    Subscription,
    SubscriptionEvent,
    SubscriptionStatus,
)
from .history import event_record, iso

BATCH = 1000
EXPORT_COLUMNS = (
    "email",
    "newsletter",
    "status",
    "since",
    "subscribed_at",
    "subscribe_how",
    "subscribe_ip",
    "subscribe_user_agent",
    "subscribe_source",
    "confirmed_at",
    "confirm_ip",
    "confirm_user_agent",
    "unsubscribed_at",
    "unsubscribed_how",
    "history",
)
# A spreadsheet runs a cell that starts with one of these as a formula (OWASP, "CSV
# injection"); the form's source field and the user agent are whatever was sent.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def export_subscriptions(
    session: Session,
    output: TextIO,
    fmt: str,
    newsletter: Newsletter | None = None,
    status: SubscriptionStatus | None = None,
    raw: bool = False,
) -> int:
    """Write the subscriptions (of one newsletter, in one status) to ``output``.

    ``fmt`` is ``csv`` (a header of :data:`EXPORT_COLUMNS`, the history as a JSON
    cell) or ``json`` (an array of objects). CSV cells that a spreadsheet would run
    as a formula get a leading apostrophe unless ``raw``. Returns how many were
    written.
    """
    if fmt == "csv":
        # DictWriter refuses a record whose keys differ from the columns.
        writer = csv.DictWriter(output, fieldnames=EXPORT_COLUMNS, lineterminator="\n")
        writer.writeheader()
    else:
        output.write("[")
    count = 0
    for record in _records(session, newsletter, status):
        if fmt == "csv":
            record["history"] = json.dumps(record["history"], ensure_ascii=False)
            writer.writerow(record if raw else {k: neutralize(v) for k, v in record.items()})
        else:
            output.write(("," if count else "") + "\n" + json.dumps(record, ensure_ascii=False))
        count += 1
    if fmt == "json":
        output.write("\n]\n")
    return count


def neutralize(value: object) -> object:
    """A cell's value made safe to open in a spreadsheet: formulas become text."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def _records(
    session: Session, newsletter: Newsletter | None, status: SubscriptionStatus | None
) -> Iterator[dict]:
    query = (
        select(
            Subscription.id,
            Subscriber.email,
            Newsletter.slug,
            Subscription.status,
            Subscription.status_since,
        )
        .join(Subscriber, Subscriber.id == Subscription.subscriber_id)
        .join(Newsletter, Newsletter.id == Subscription.newsletter_id)
        .order_by(Subscription.id)
    )
    if newsletter is not None:
        query = query.where(Subscription.newsletter_id == newsletter.id)
    if status is not None:
        query = query.where(Subscription.status == status)
    rows = session.execute(query.execution_options(yield_per=BATCH))
    for part in rows.partitions():
        histories = _histories(session, [row.id for row in part])
        for row in part:
            yield _record(row, histories[row.id])


def _histories(session: Session, ids: list[int]) -> dict[int, list[dict]]:
    events = session.execute(
        select(
            SubscriptionEvent.subscription_id,
            SubscriptionEvent.kind,
            SubscriptionEvent.how,
            SubscriptionEvent.at,
            SubscriptionEvent.ip,
            SubscriptionEvent.user_agent,
            SubscriptionEvent.source,
        )
        .where(SubscriptionEvent.subscription_id.in_(ids))
        .order_by(SubscriptionEvent.subscription_id, SubscriptionEvent.id)
    )
    found: dict[int, list[dict]] = defaultdict(list)
    for event in events:
        found[event.subscription_id].append(event_record(event))
    return found


_STARTS = {EventKind.SUBSCRIBED.value, EventKind.RESUBSCRIBED.value}


def _record(row, history: list[dict]) -> dict:
    # The consent that holds now: the latest sign-up, and what followed it.
    starts = [i for i, e in enumerate(history) if e["event"] in _STARTS]
    cycle = history[starts[-1] :] if starts else history

    def latest(kind: EventKind) -> dict:
        return next((e for e in reversed(cycle) if e["event"] == kind.value), {})

    joined = cycle[0] if starts else {}
    confirmed = latest(EventKind.CONFIRMED)
    left = latest(EventKind.UNSUBSCRIBED)
    return {
        "email": row.email,
        "newsletter": row.slug,
        "status": row.status.value,
        "since": iso(row.status_since),
        "subscribed_at": joined.get("at"),
        "subscribe_how": joined.get("how"),
        "subscribe_ip": joined.get("ip"),
        "subscribe_user_agent": joined.get("user_agent"),
        "subscribe_source": joined.get("source"),
        "confirmed_at": confirmed.get("at"),
        "confirm_ip": confirmed.get("ip"),
        "confirm_user_agent": confirmed.get("user_agent"),
        "unsubscribed_at": left.get("at"),
        "unsubscribed_how": left.get("how"),
        "history": history,
    }
