"""Postmark's webhooks: bounce, spam complaint and subscription change records.

Postmark does not sign its webhooks; its documented protection is HTTP Basic
credentials in the webhook's URL (``https://user:password@…/hooks/postmark``), checked
here against HOOKS_POSTMARK_USERNAME and _PASSWORD in constant time.
"""

import hmac
import json
from collections.abc import Mapping

from emails.reasons import Reason, reason_of

from ...config import ConfigError
from ..report import Report, ReportKind, relay_bounce
from .base import Event, Malformed, Refused, json_body, text

# Postmark's bounce types, and the reason each is when its details say nothing more.
BOUNCES = {
    "HardBounce": Reason.USERUNKNOWN,
    "BadEmailAddress": Reason.USERUNKNOWN,
    "ManuallyDeactivated": Reason.SUSPEND,
    "SoftBounce": Reason.MAILBOXFULL,
    "Transient": None,  # Postmark tries again: a delay
    "DnsError": Reason.NETWORKERROR,
    "Blocked": Reason.BLOCKED,
    "DMARCPolicy": Reason.AUTHFAILURE,
    "Unknown": Reason.ONHOLD,
}
COMPLAINT = {"SpamNotification", "SpamComplaint"}
SUPPRESSION: dict[str | None, ReportKind] = {  # looked up with a field's text, or None
    "HardBounce": ReportKind.HARD_BOUNCE,
    "SpamComplaint": ReportKind.COMPLAINT,
    "ManualSuppression": ReportKind.UNSUBSCRIBE,
}


def configured(config: Mapping) -> bool:
    """Whether Postmark's credentials are set."""
    return bool(config["HOOKS_POSTMARK_USERNAME"] and config["HOOKS_POSTMARK_PASSWORD"])


def check(config: Mapping) -> None:
    """Both of Postmark's credentials or neither, or ConfigError: one alone would leave
    the hook off without a word."""
    if bool(config["HOOKS_POSTMARK_USERNAME"]) != bool(config["HOOKS_POSTMARK_PASSWORD"]):
        raise ConfigError("set both NEWSLETTER_HOOKS_POSTMARK_USERNAME and _PASSWORD, or neither")


def verify(request, body: bytes, config: Mapping) -> None:
    """The request's Basic credentials are the configured ones, or Refused."""
    auth = request.authorization
    if auth is None or auth.type != "basic":
        raise Refused("no Basic credentials")
    user_ok = hmac.compare_digest(
        (auth.username or "").encode(), config["HOOKS_POSTMARK_USERNAME"].encode()
    )
    password_ok = hmac.compare_digest(
        (auth.password or "").encode(), config["HOOKS_POSTMARK_PASSWORD"].encode()
    )
    if not (user_ok and password_ok):
        raise Refused("wrong credentials")


def events(body: bytes, config: Mapping) -> list[Event]:
    """The record as at most one event."""
    record = json_body(body)
    if not isinstance(record, dict):
        raise Malformed("a Postmark record is a JSON object")
    kind = _kind(record)
    if kind is None:
        return []  # deliveries, opens, clicks: nothing to act on
    address = text(record.get("Email")) or text(record.get("Recipient"))
    if address is None:
        raise Malformed("the record names no address")
    code = record.get("TypeCode")
    code = text(str(code), 32) if isinstance(code, int | str) and code else None
    detail = text(record.get("Details"), 200) or text(record.get("Description"), 200) or ""
    bounce_type = text(record.get("Type"))
    if kind == ReportKind.SOFT_BOUNCE and bounce_type in BOUNCES:
        said = reason_of(None, None, detail, "failed") if detail else Reason.ONHOLD
        default = BOUNCES[bounce_type]
        report = relay_bounce(
            address,
            permanent=default is not None,
            diagnostic=detail,
            reason=default if said in (Reason.ONHOLD, Reason.UNDEFINED) else said,
        )
    else:
        gone = Reason.USERUNKNOWN if kind == ReportKind.HARD_BOUNCE else None
        report = Report(kind, address=address, code=code, detail=detail, reason=gone)
    record_id = record.get("ID") or record.get("MessageID")
    event_id = f"{record.get('RecordType')}:{record_id}:{record.get('ChangedAt', '')}"
    return [Event(event_id if record_id else None, report, json.dumps(record).encode())]


def _kind(record: dict) -> ReportKind | None:
    # Only text is looked up: a list or an object where a name belongs names nothing.
    record_type, bounce_type = text(record.get("RecordType")), text(record.get("Type"))
    if record_type == "Bounce":
        if bounce_type in BOUNCES:
            return ReportKind.SOFT_BOUNCE  # a bounce of some kind: relay_bounce reads which
        if bounce_type in COMPLAINT:
            return ReportKind.COMPLAINT
        if bounce_type == "Unsubscribe":
            return ReportKind.UNSUBSCRIBE
        return None  # auto-responders, address changes, challenges: nothing
    if record_type == "SpamComplaint":
        return ReportKind.COMPLAINT
    if record_type == "SubscriptionChange" and record.get("SuppressSending") is True:
        return SUPPRESSION.get(text(record.get("SuppressionReason")), ReportKind.UNSUBSCRIBE)
    return None
