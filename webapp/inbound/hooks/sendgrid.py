"""SendGrid's Event Webhook: bounce, blocked, deferred, spamreport, unsubscribe.

Signed webhooks: an ECDSA (P-256, SHA-256) signature over the timestamp header followed
by the raw body, checked with the verification key SendGrid shows for the webhook
(HOOKS_SENDGRID_PUBLIC_KEY, base64 DER as SendGrid gives it, or PEM). The timestamp
must be fresh.
"""

import base64
import binascii
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cache

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key, load_pem_public_key

from emails.reasons import Reason

from ...config import ConfigError
from ..report import Report, ReportKind, relay_bounce
from .base import Event, Malformed, Refused, fresh, json_body, text

SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"
KINDS: dict[str | None, ReportKind] = {  # looked up with a field's text, or None
    "blocked": ReportKind.SOFT_BOUNCE,
    "deferred": ReportKind.SOFT_BOUNCE,
    "spamreport": ReportKind.COMPLAINT,
    "unsubscribe": ReportKind.UNSUBSCRIBE,
    "group_unsubscribe": ReportKind.UNSUBSCRIBE,
}


def configured(config: Mapping) -> bool:
    """Whether SendGrid's verification key is set."""
    return bool(config["HOOKS_SENDGRID_PUBLIC_KEY"])


def check(config: Mapping) -> None:
    """HOOKS_SENDGRID_PUBLIC_KEY, when set, is an elliptic-curve public key, or ConfigError."""
    if config["HOOKS_SENDGRID_PUBLIC_KEY"]:
        try:
            _key(config["HOOKS_SENDGRID_PUBLIC_KEY"])
        except (ValueError, TypeError, binascii.Error):
            raise ConfigError(
                "NEWSLETTER_HOOKS_SENDGRID_PUBLIC_KEY is not the verification key SendGrid "
                "shows (an elliptic-curve public key, base64 DER or PEM)"
            ) from None


@cache
def _key(text_key: str) -> ec.EllipticCurvePublicKey:
    if "BEGIN PUBLIC KEY" in text_key:
        key = load_pem_public_key(text_key.encode())
    else:
        key = load_der_public_key(base64.b64decode(text_key))
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError("not an elliptic-curve key")
    return key


def verify(request, body: bytes, config: Mapping) -> None:
    """A valid signature over a fresh timestamp and this body, or Refused."""
    signature, timestamp = request.headers.get(SIGNATURE), request.headers.get(TIMESTAMP)
    if not signature or not timestamp:
        raise Refused("no signature")
    try:
        key = _key(config["HOOKS_SENDGRID_PUBLIC_KEY"])
    except (ValueError, TypeError, binascii.Error) as exc:
        raise Refused(f"HOOKS_SENDGRID_PUBLIC_KEY cannot be read: {exc}") from None
    try:
        key.verify(
            base64.b64decode(signature), timestamp.encode() + body, ec.ECDSA(hashes.SHA256())
        )
        moment = datetime.fromtimestamp(int(timestamp), UTC)
    except (InvalidSignature, binascii.Error, ValueError, OverflowError, OSError):
        raise Refused("the signature does not match") from None
    if not fresh(moment, config["HOOKS_MAX_AGE"]):
        raise Refused("a stale timestamp")


def events(body: bytes, config: Mapping) -> list[Event]:
    """Each event of the batch that calls for something."""
    batch = json_body(body)
    if not isinstance(batch, list):
        raise Malformed("SendGrid posts a JSON array of events")
    found = []
    for item in batch:
        if not isinstance(item, dict):
            raise Malformed("an event is not a JSON object")
        kind = _kind(item)
        address = text(item.get("email"))
        if kind is None or address is None:
            continue  # processed, delivered, opens, clicks, dropped: nothing to act on
        status = text(item.get("status"), 32)
        detail = text(item.get("reason"), 200) or text(item.get("response"), 200) or ""
        if kind == ReportKind.SOFT_BOUNCE:  # a bounce, a block or a deferral: read which
            event = text(item.get("event"))
            report = relay_bounce(
                address,
                permanent=event == "bounce",
                status=status,
                diagnostic=f"{status or ''} {detail}",
                reason=Reason.BLOCKED if item.get("type") == "blocked" else None,
            )
        else:
            report = Report(kind, address=address, code=status, detail=detail)
        found.append(Event(text(item.get("sg_event_id"), 200), report, json.dumps(item).encode()))
    return found


def _kind(item: dict) -> ReportKind | None:
    event = text(item.get("event"))  # a list or an object names no event
    if event == "bounce":
        return ReportKind.SOFT_BOUNCE  # a bounce of some kind: relay_bounce reads which
    return KINDS.get(event)
