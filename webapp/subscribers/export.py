"""Taking the list out: every subscription with its consent record, as CSV or JSON.

Rows are streamed from the database and written as they come, so memory stays flat
however long the list.
"""

import csv
import json
from typing import TextIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..models import Newsletter, Subscriber, Subscription, SubscriptionStatus
from .service import consent_record

EXPORT_COLUMNS = (
    "email",
    "newsletter",
    "status",
    "subscribed_at",
    "subscribe_ip",
    "subscribe_user_agent",
    "subscribe_source",
    "confirmed_at",
    "confirm_ip",
    "confirm_user_agent",
    "unsubscribed_at",
)


def export_subscriptions(
    session: Session,
    output: TextIO,
    fmt: str,
    newsletter: Newsletter | None = None,
    status: SubscriptionStatus | None = None,
) -> int:
    """Write the subscriptions (of one newsletter, in one status) to ``output``.

    ``fmt`` is ``csv`` (a header of :data:`EXPORT_COLUMNS`) or ``json`` (an array of
    objects). Returns how many were written.
    """
    query = (
        select(Subscriber.email, Newsletter.slug, Subscription)
        .join(Subscription.subscriber)
        .join(Subscription.newsletter)
        .order_by(Subscription.id)
    )
    if newsletter is not None:
        query = query.where(Subscription.newsletter_id == newsletter.id)
    if status is not None:
        query = query.where(Subscription.status == status)
    count = 0
    rows = session.execute(query.execution_options(yield_per=1000))
    if fmt == "csv":
        # DictWriter refuses a record whose keys differ from the columns.
        writer = csv.DictWriter(output, fieldnames=EXPORT_COLUMNS, lineterminator="\n")
        writer.writeheader()
    else:
        output.write("[")
    for email, slug, subscription in rows:
        record = {"email": email, "newsletter": slug} | consent_record(subscription)
        if fmt == "csv":
            writer.writerow(record)
        else:
            output.write(("," if count else "") + "\n" + json.dumps(record, ensure_ascii=False))
        count += 1
        if count % 1000 == 0:
            session.expunge_all()  # keep memory flat on long exports
    if fmt == "json":
        output.write("\n]\n")
    return count
