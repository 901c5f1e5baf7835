"""What became of each delivery a sender claimed, recorded in one statement per batch,
and what a refusal means: a bounce counted against its reader, a refusal of us against
the send and the receiving domain only."""

from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import Connection, Table, bindparam, func
from sqlalchemy.orm import Session

from ..db import utcnow
from ..mailout.models import Delivery, DeliveryStatus
from ..models import Subscriber
from ..subscribers.suppression import Rules, bounced


@dataclass(frozen=True)
class Bounce:
    """What a relay's permanent refusal says of a reader: ``how`` "hard" (the address
    is gone), "soft" (the mailbox, for now) or "refused" (the receiving system refused
    us: not the reader's doing), with sisimai's ``reason`` and the reply code."""

    subscriber_id: int
    how: str
    reason: str
    code: str | None = None


@dataclass
class Result:
    """What became of one claimed delivery, to be recorded."""

    id: int
    status: DeliveryStatus
    attempts: int
    error: str | None = None
    next_attempt_at: datetime | None = None
    bounce: Bounce | None = None  # a permanent refusal: counted for the reader or the send


def record(
    connection: Connection,
    owner: str,
    results: list[Result],
    issue_id: int | None = None,
    rules: Rules | None = None,
) -> None:
    """Record what became of claimed deliveries, and count the refusals: a bounce
    against its reader (through the suppression rules, with its history event), a
    refusal of us against the send and the receiving domain only.

    Only rows ``owner`` still holds are changed: after its lease ran out, another
    sender may own them.
    """
    now = utcnow()
    rows = [
        {
            "b_id": result.id,
            "b_owner": owner,
            "b_status": result.status.value,
            "b_attempts": result.attempts,
            "b_error": result.error,
            "b_next": result.next_attempt_at,
            "b_sent": now if result.status is DeliveryStatus.SENT else None,
        }
        for result in results
    ]
    connection.execute(_RECORD, rows)
    refused = [result for result in results if result.bounce is not None]
    if refused:
        _count_refusals(connection, refused, issue_id, rules or Rules(), now)


def _count_refusals(
    connection: Connection,
    refused: list[Result],
    issue_id: int | None,
    rules: Rules,
    now: datetime,
) -> None:
    # Rare (a refusal or two in a batch): one ORM session on the batch's transaction.
    with Session(bind=connection) as session:
        for result in refused:
            bounce = result.bounce
            assert bounce is not None  # only refusals are counted
            what = "refused" if bounce.how == "refused" else "bounced"
            session.execute(
                _deliveries.update()
                .where(_deliveries.c.id == result.id)
                .values(feedback=what, feedback_code=bounce.code, feedback_reason=bounce.reason)
            )
            subscriber = session.get(Subscriber, bounce.subscriber_id)
            if bounce.how != "refused" and subscriber is not None:
                bounced(
                    session,
                    subscriber,
                    bounce.how,
                    bounce.reason,
                    rules,
                    code=bounce.code,
                    issue_id=issue_id,
                    now=now,
                )
        session.flush()


_deliveries = cast(Table, Delivery.__table__)  # a mapped class's table is a Table
# Built once: a send records a few thousand times a second.
_RECORD = (
    _deliveries.update()
    # Only rows this sender still holds: after a lease ran out, another owns them.
    .where(_deliveries.c.id == bindparam("b_id"), _deliveries.c.claimed_by == bindparam("b_owner"))
    .values(
        status=bindparam("b_status"),
        attempts=bindparam("b_attempts"),
        last_error=func.coalesce(bindparam("b_error"), _deliveries.c.last_error),
        next_attempt_at=bindparam("b_next"),
        sent_at=bindparam("b_sent"),
        claimed_by=None,
        claimed_until=None,
    )
)
