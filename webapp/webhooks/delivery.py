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
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from sqlalchemy import and_, bindparam, delete, exists, or_, select, update
from sqlalchemy.orm import Session, aliased, sessionmaker

from emails.deadline import url_within

from ..config import signer
from ..db import UTCDateTime, utcnow
from .events import payload
from .models import WebhookMessage, WebhookStatus

MAX_DELAY = 6 * 3600  # seconds: a receiver that is down is tried at least this often
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


def deliver_webhooks(
    sessions: sessionmaker[Session],
    config: Mapping,
    *,
    should_stop: Callable[[], bool] = lambda: False,
    budget: float = 10.0,
    batch: int = 100,
) -> WebhookReport:
    """Post the due messages, in order per subscriber and URL, until none is due, or
    ``budget`` seconds have gone (the worker's other jobs wait meanwhile), or
    ``should_stop``. A URL that fails is left alone for the rest of the pass: its other
    messages wait their turn (not a timeout each), and other URLs' go on."""
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
    deadline = time.monotonic() + budget
    while time.monotonic() < deadline and not should_stop():
        query = _due(utcnow())
        if down:
            query = query.where(WebhookMessage.url.not_in(down))
        with sessions() as session:
            heads = session.execute(query.limit(batch)).all()
        if not heads:
            break
        for message_id, url in heads:
            if url in down or should_stop() or time.monotonic() >= deadline:
                continue
            if _deliver_one(sessions, sign, message_id, config, report) is not None:
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
        # The lease outlives the attempt: the timeout bounds each step of the request.
        until = now + timedelta(seconds=3 * timeout + 30)
        claimed = session.execute(
            _CLAIM, {"message_id": message_id, "now": now, "until": until}
        ).rowcount
        if not claimed:
            session.rollback()
            return None  # another worker has it
        message = session.get(WebhookMessage, message_id)
        session.commit()  # no transaction held open while the receiver answers
        body = json.dumps(payload(message), ensure_ascii=False, separators=(",", ":"))
        error = post(message.url, message.msg_id, body, sign, timeout)
        now, attempts = utcnow(), message.attempts + 1
        values: dict = {"attempts": attempts, "claimed_until": None}
        if error is None:
            values |= {"status": WebhookStatus.DELIVERED, "delivered_at": now, "last_error": None}
        else:
            values["last_error"] = error[:300]
            closes = message.retry_from + timedelta(seconds=config["WEBHOOK_RETRY_FOR"])
            delay = min(config["WEBHOOK_RETRY_DELAY"] * 2 ** min(attempts - 1, 20), MAX_DELAY)
            if now >= closes:
                values["status"] = WebhookStatus.FAILED
            else:
                values["next_attempt_at"] = min(now + timedelta(seconds=delay), closes)
        # Recorded only while the claim is still this worker's: past its lease another
        # worker may have taken the message and recorded it, and that record stands.
        recorded = session.execute(
            update(WebhookMessage)
            .where(WebhookMessage.id == message_id, WebhookMessage.claimed_until == until)
            .values(**values)
        ).rowcount
        if recorded and error is None and message.type == "subscriber.erased":
            _forget_erased(session, message.subscriber_id)
        session.commit()
    if not recorded:
        return error
    if error is None:
        report.delivered += 1
    else:
        report.last_error = f"{shown(message.url)}: {error}"
        if values.get("status") == WebhookStatus.FAILED:
            report.failed += 1
        else:
            report.retry += 1
    return error


def shown(url: str) -> str:
    """A receiver's URL for logs: its host, not its path (which may carry a token)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/…" if parts.path not in ("", "/") else url


def _forget_erased(session: Session, subscriber_id: int | None) -> None:
    """Once a receiver has heard of an erasure, what was sent about the address is not
    kept: the address goes from every message about it that is not waiting to be sent."""
    session.execute(
        update(WebhookMessage)
        .where(
            WebhookMessage.subscriber_id == subscriber_id,
            WebhookMessage.status != WebhookStatus.PENDING,
        )
        .values(email=None)
    )


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
        # The whole attempt within the timeout: a receiver answering a byte a second
        # meets every socket timeout, and held the worker for minutes.
        with url_within(request, timeout, _NoRedirects) as response:
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
    new retry window. None if there is no such message. The caller commits."""
    message = session.get(WebhookMessage, message_id)
    if message is None:
        return None
    now = utcnow()
    # One held by a worker now is left to it: that attempt's outcome is recorded anyway.
    message.status, message.next_attempt_at, message.retry_from = WebhookStatus.PENDING, now, now
    message.attempts = 0  # its retries start again at WEBHOOK_RETRY_DELAY
    return message
