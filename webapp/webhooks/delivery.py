"""Delivering webhook messages: claim, sign, POST, record.

Each message is claimed by one conditional UPDATE with a lease, so any number of
workers share the queue and none posts a message another holds. A message about a
subscriber waits while an earlier one about them to the same URL is pending: each
receiver hears of a reader's changes in the order they happened. A failed attempt is
retried after WEBHOOK_RETRY_DELAY seconds, doubling up to six hours, until
WEBHOOK_RETRY_FOR seconds after the event; then the message is failed, and waits for
``newsletter webhooks retry``. Delivery is at least once: a receiver that took a
message but timed out answering gets it again, under the same ``webhook-id``.
"""

import http.client
import json
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, bindparam, delete, exists, or_, select, update
from sqlalchemy.orm import Session, aliased, sessionmaker

from ..config import signer
from ..db import UTCDateTime, utcnow
from ..models import WebhookMessage, WebhookStatus
from .events import payload

MAX_DELAY = 6 * 3600  # seconds: a receiver that is down is tried at least this often
PASS_LIMIT = 1000  # messages one pass takes at most; the worker's next pass goes on
USER_AGENT = "newsletter-webhooks/1"


@dataclass
class WebhookReport:
    """What one pass over the webhook queue did."""

    delivered: int = 0
    retry: int = 0
    failed: int = 0
    last_error: str | None = None


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer, not a delivery: the receiver's URL must be the right one."""

    def redirect_request(self, *_args, **_kwargs):
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def deliver_webhooks(
    sessions: sessionmaker[Session],
    config: Mapping,
    *,
    should_stop: Callable[[], bool] = lambda: False,
    batch: int = 100,
) -> WebhookReport:
    """Post the due messages, in order per subscriber and URL, until none is due (or
    PASS_LIMIT, or ``should_stop``). A URL that fails is left alone for the rest of the
    pass: its other messages wait their turn, not a timeout each."""
    report = WebhookReport()
    with sessions() as session:
        _forget_delivered(session, config["WEBHOOK_KEEP_DAYS"])
        if session.scalar(select(_due(utcnow()).exists())) is not True:
            return report
    if not config["WEBHOOK_SECRET"]:
        report.last_error = "messages wait: NEWSLETTER_WEBHOOK_SECRET is not set"
        return report
    sign = signer(config["WEBHOOK_SECRET"])
    down: set[str] = set()
    taken = 0
    while taken < PASS_LIMIT and not should_stop():
        with sessions() as session:
            heads = session.execute(_due(utcnow()).limit(batch)).all()
        heads = [(message_id, url) for message_id, url in heads if url not in down]
        if not heads:
            break
        for message_id, url in heads:
            if url in down or should_stop():
                continue
            taken += 1
            error = _deliver_one(sessions, sign, message_id, config, report)
            if error is not None:
                down.add(url)
    return report


def _due(now: datetime):
    """Messages that may be posted now: pending, due, unclaimed, and first in line for
    their subscriber and URL."""
    earlier = aliased(WebhookMessage)
    first_in_line = ~exists().where(
        earlier.url == WebhookMessage.url,
        earlier.subscriber_id == WebhookMessage.subscriber_id,
        earlier.status == WebhookStatus.PENDING,
        earlier.id < WebhookMessage.id,
    )
    return (
        select(WebhookMessage.id, WebhookMessage.url)
        .where(
            WebhookMessage.status == WebhookStatus.PENDING,
            WebhookMessage.next_attempt_at <= now,
            or_(WebhookMessage.claimed_until.is_(None), WebhookMessage.claimed_until < now),
            first_in_line,
        )
        .order_by(WebhookMessage.id)
    )


NOW = bindparam("now", type_=UTCDateTime)
_CLAIM = (
    update(WebhookMessage)
    .where(
        WebhookMessage.id == bindparam("message_id"),
        WebhookMessage.status == WebhookStatus.PENDING,
        WebhookMessage.next_attempt_at <= NOW,
        or_(WebhookMessage.claimed_until.is_(None), WebhookMessage.claimed_until < NOW),
    )
    .values(claimed_until=bindparam("until", type_=UTCDateTime))
)


def _deliver_one(sessions, sign, message_id: int, config: Mapping, report) -> str | None:
    """Claim, post and record one message; the error if it was not delivered."""
    timeout = config["WEBHOOK_TIMEOUT"]
    with sessions() as session:
        now = utcnow()
        # The lease outlives the attempt (its timeout, once per step of the request).
        until = now + timedelta(seconds=3 * timeout + 30)
        claimed = session.execute(
            _CLAIM, {"message_id": message_id, "now": now, "until": until}
        ).rowcount
        session.commit()
        if not claimed:
            return None  # another worker has it
        message = session.get(WebhookMessage, message_id)
        body = json.dumps(payload(message), ensure_ascii=False, separators=(",", ":"))
        error = post(message.url, message.msg_id, body, sign, timeout)
        now = utcnow()
        message.attempts += 1
        message.claimed_until = None
        if error is None:
            message.status, message.delivered_at, message.last_error = (
                WebhookStatus.DELIVERED,
                now,
                None,
            )
            report.delivered += 1
        else:
            message.last_error = error[:300]
            report.last_error = f"{message.url}: {error}"
            closes = message.retry_from + timedelta(seconds=config["WEBHOOK_RETRY_FOR"])
            delay = min(config["WEBHOOK_RETRY_DELAY"] * 2 ** (message.attempts - 1), MAX_DELAY)
            if now >= closes:
                message.status = WebhookStatus.FAILED
                report.failed += 1
            else:
                message.next_attempt_at = min(now + timedelta(seconds=delay), closes)
                report.retry += 1
        session.commit()
        return error


def post(url: str, msg_id: str, body: str, sign, timeout: float) -> str | None:
    """POST ``body`` signed as Standard Webhooks says; None when the receiver answered
    2xx, else what went wrong, in one line."""
    sent_at = utcnow()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(sent_at.timestamp())),
        "webhook-signature": sign.sign(msg_id, sent_at, body),
    }
    request = urllib.request.Request(url, data=body.encode(), headers=headers, method="POST")
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            response.read(4096)  # the answer is not ours to keep; reading lets it finish
            return None
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code} {exc.reason}".strip()
    except urllib.error.URLError as exc:
        return str(exc.reason)
    except (TimeoutError, OSError, http.client.HTTPException, ValueError) as exc:
        return str(exc) or type(exc).__name__


def _forget_delivered(session: Session, keep_days: int) -> None:
    cutoff = utcnow() - timedelta(days=keep_days)
    session.execute(
        delete(WebhookMessage).where(
            and_(
                WebhookMessage.status == WebhookStatus.DELIVERED,
                WebhookMessage.delivered_at < cutoff,
            )
        )
    )
    session.commit()


def retry(session: Session, message_id: int) -> WebhookMessage | None:
    """Send message ``message_id`` again, whatever became of it: pending from now, with a
    new retry window. None if there is no such message."""
    message = session.get(WebhookMessage, message_id)
    if message is None:
        return None
    now = utcnow()
    # One held by a worker now is left to it: that attempt's outcome is recorded anyway.
    message.status, message.next_attempt_at, message.retry_from = WebhookStatus.PENDING, now, now
    session.commit()
    return message
