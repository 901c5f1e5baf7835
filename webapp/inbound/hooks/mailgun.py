"""Mailgun's webhooks: failed (permanent or temporary), complained, unsubscribed.

Mailgun signs ``timestamp + token`` with the account's webhook signing key (HMAC-SHA256,
hex), and not the body. So besides the signature and a fresh timestamp, each token is
taken once (the ``hook_tokens`` table): a captured request's signature cannot carry
another body. The token is recorded in the transaction that stores the event: a first
try that fails leaves it unused, and Mailgun's retry is taken.
"""

import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select

from ...db import session_factory, utcnow
from ..models import HookToken
from ..report import Report, ReportKind, relay_bounce
from .base import Event, Malformed, Refused, fresh, json_body, text


def configured(config: Mapping) -> bool:
    """Whether Mailgun's signing key is set."""
    return bool(config["HOOKS_MAILGUN_SIGNING_KEY"])


def check(config: Mapping) -> None:
    """Nothing to check at start: any text can be the signing key."""


def verify(request, body: bytes, config: Mapping) -> str:
    """A valid signature over a fresh timestamp and a token not used before, or Refused;
    the token's digest, to be recorded with the event."""
    payload = json_body(body)
    signature = payload.get("signature") if isinstance(payload, dict) else None
    if not isinstance(signature, dict):
        raise Refused("no signature")
    timestamp, token, given = (signature.get(k) for k in ("timestamp", "token", "signature"))
    if not (
        isinstance(timestamp, str)
        and isinstance(token, str)
        and isinstance(given, str)
        and timestamp
        and token
        and given
    ):
        raise Refused("an incomplete signature")
    # JSON can carry a lone surrogate, which UTF-8 cannot: kept, so the signature fails.
    key = config["HOOKS_MAILGUN_SIGNING_KEY"].encode()
    signed = (timestamp + token).encode("utf-8", "surrogatepass")
    expected = hmac.new(key, signed, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), given.encode("utf-8", "surrogatepass")):
        raise Refused("the signature does not match")
    try:
        moment = datetime.fromtimestamp(int(timestamp), UTC)
    except (ValueError, OverflowError, OSError):
        raise Refused("a timestamp that is not one") from None
    if not fresh(moment, config["HOOKS_MAX_AGE"]):
        raise Refused("a stale timestamp")
    # Kept as its digest: whatever the token holds, the row is 64 hex digits.
    digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()
    if _used(digest, config["HOOKS_MAX_AGE"]):
        raise Refused("a token used before")
    return digest


def _used(token: str, max_age: int) -> bool:
    with session_factory()() as session:
        # Tokens older than the window can no longer pass the timestamp check.
        cutoff = utcnow() - timedelta(seconds=2 * max_age)
        session.execute(
            delete(HookToken).where(HookToken.relay == "mailgun", HookToken.seen_at < cutoff)
        )
        session.commit()
        used = select(HookToken.token).filter_by(relay="mailgun", token=token)
        return session.scalar(used) is not None


def events(body: bytes, config: Mapping) -> list[Event]:
    """The event-data as at most one event."""
    payload = json_body(body)
    data = payload.get("event-data") if isinstance(payload, dict) else None  # verify: a dict
    if not isinstance(data, dict):
        raise Malformed("no event-data")
    kind = _kind(data)
    if kind is None:
        return []  # delivered, opened, clicked, accepted: nothing to act on
    address = text(data.get("recipient"))
    if address is None:
        raise Malformed("the event names no recipient")
    status = data.get("delivery-status")
    if not isinstance(status, dict):
        status = {}
    code = status.get("code")
    code = text(str(code), 32) if isinstance(code, int | str) and code else None
    detail = text(status.get("description"), 200) or text(status.get("message"), 200) or ""
    envelope = data.get("envelope")
    if not isinstance(envelope, dict):
        envelope = {}
    if kind == ReportKind.SOFT_BOUNCE:  # a failure: its reason read from what it says
        enhanced = text(str(status.get("enhanced-code") or ""), 32)
        report = relay_bounce(
            address,
            permanent=text(data.get("severity")) != "temporary",
            status=enhanced or code,
            diagnostic=f"{code or ''} {enhanced or ''} {detail or text(data.get('reason'), 200)}",
            token=text(envelope.get("sender")),
        )
        return [Event(text(data.get("id"), 200), report, json.dumps(data).encode())]
    report = Report(
        kind,
        address=address,
        token=text(envelope.get("sender")),  # our VERP sender, naming the delivery
        code=code,
        detail=detail or text(data.get("reason"), 200) or "",
    )
    return [Event(text(data.get("id"), 200), report, json.dumps(data).encode())]


def _kind(data: dict) -> ReportKind | None:
    event = text(data.get("event"))  # a list or an object names no event
    if event == "failed":
        return ReportKind.SOFT_BOUNCE  # a bounce of some kind: relay_bounce reads which
    if event == "complained":
        return ReportKind.COMPLAINT
    if event == "unsubscribed":
        return ReportKind.UNSUBSCRIBE
    return None
