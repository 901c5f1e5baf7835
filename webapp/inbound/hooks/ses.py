"""Amazon SES notifications through SNS: Bounce and Complaint.

SNS signs each message: SignatureVersion 1 is SHA1withRSA, 2 is SHA256withRSA, over the
documented fields in their documented order, with the certificate at SigningCertURL.
That URL (and a subscription's SubscribeURL) must match HOOKS_SES_URL, by default
https on an ``sns.<region>.amazonaws.com`` host, so a forger cannot bring a certificate
of their own. Only the topics in HOOKS_SES_TOPIC_ARNS are taken. A subscription
confirmation for one of them is confirmed by visiting its SubscribeURL.
"""

import base64
import binascii
import http.client
import logging
import re
from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from emails.deadline import url_within
from emails.reasons import Reason, reason_of

from ...config import ConfigError
from ..report import Report, ReportKind, relay_bounce
from .base import Event, Malformed, Refused, fresh, json_body, text

log = logging.getLogger(__name__)

TIMEOUT = 10  # seconds to fetch a certificate or confirm a subscription
FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type",
    ),
}  # fmt: skip
FIELDS["UnsubscribeConfirmation"] = FIELDS["SubscriptionConfirmation"]
HASHES = {"1": hashes.SHA1, "2": hashes.SHA256}


def configured(config: Mapping) -> bool:
    """Whether any SNS topic is configured."""
    return bool(_topics(config))


def check(config: Mapping) -> None:
    """HOOKS_SES_URL is a regular expression, or ConfigError."""
    try:
        re.compile(config["HOOKS_SES_URL"])
    except re.error as exc:
        raise ConfigError(f"NEWSLETTER_HOOKS_SES_URL is not a regular expression: {exc}") from None


def _topics(config: Mapping) -> set[str]:
    return {t.strip() for t in (config["HOOKS_SES_TOPIC_ARNS"] or "").split(",") if t.strip()}


def verify(request, body: bytes, config: Mapping) -> None:
    """An SNS message of a configured topic, fresh, signed with an SNS certificate."""
    message = json_body(body)
    # Only text is looked up: a list or an object would not even hash.
    if not isinstance(message, dict) or text(message.get("Type"), 32) not in FIELDS:
        raise Malformed("not an SNS message")
    topic = message.get("TopicArn")
    if not isinstance(topic, str) or topic not in _topics(config):
        raise Refused(f"topic {str(topic)[:200]!r} is not configured")
    digest = HASHES.get(text(message.get("SignatureVersion")) or "")
    if digest is None:
        raise Refused("an unknown SignatureVersion")
    url = message.get("SigningCertURL")
    if (
        not isinstance(url, str)
        or not url.endswith(".pem")
        or not re.fullmatch(config["HOOKS_SES_URL"], url)
    ):
        raise Refused("SigningCertURL is not an SNS certificate's address")
    try:
        moment = datetime.fromisoformat(str(message.get("Timestamp")).replace("Z", "+00:00"))
        signature = base64.b64decode(str(message.get("Signature")), validate=True)
    except (ValueError, binascii.Error):
        raise Refused("an unreadable Timestamp or Signature") from None
    if moment.tzinfo is None or not fresh(moment, config["HOOKS_MAX_AGE"]):
        raise Refused("a stale timestamp")
    try:
        key = _certificate_key(url)
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise Refused(f"cannot get the signing certificate: {exc}") from None
    try:
        key.verify(signature, canonical(message), padding.PKCS1v15(), digest())
    except InvalidSignature:
        raise Refused("the signature does not match") from None


def canonical(message: dict) -> bytes:
    """The string SNS signs: each present field of its type, ``name\\nvalue\\n``."""
    lines = []
    for name in FIELDS[message["Type"]]:
        if name in message and message[name] is not None:
            lines.append(f"{name}\n{message[name]}\n")
    # JSON can carry a lone surrogate, which UTF-8 cannot: kept, so the signature fails.
    return "".join(lines).encode("utf-8", "surrogatepass")


@lru_cache(maxsize=16)
def _certificate_key(url: str) -> rsa.RSAPublicKey:
    """The public key of the certificate at ``url``, fetched once per process."""
    with url_within(url, TIMEOUT) as answer:  # the URL is checked: SNS's own
        pem = answer.read(64 * 1024)
    key = x509.load_pem_x509_certificate(pem).public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("the certificate's key is not RSA")
    return key


def events(body: bytes, config: Mapping) -> list[Event]:
    """A notification's bounced or complaining recipients; a subscription confirmed."""
    message = json_body(body)
    if not isinstance(message, dict):  # refused by verify already
        raise Malformed("not an SNS message")
    if message["Type"] == "SubscriptionConfirmation":
        _confirm(message, config)
        return []
    if message["Type"] != "Notification":
        return []
    inner = message.get("Message")
    try:
        notification = json_body(inner if isinstance(inner, str) else "")
    except Malformed:
        raise Malformed("the notification's Message is not JSON") from None
    if not isinstance(notification, dict):
        raise Malformed("the notification's Message is not a JSON object")
    kind = notification.get("notificationType") or notification.get("eventType")
    mail = notification.get("mail")
    if not isinstance(mail, dict):
        mail = {}
    sender = text(mail.get("source"))  # the envelope sender: our VERP address
    message_id = text(message.get("MessageId"), 180) or ""
    found = []
    if kind == "Bounce":
        bounce = _object(notification, "bounce")
        hard = bounce.get("bounceType") == "Permanent"
        for n, item in enumerate(_list(bounce, "bouncedRecipients")):
            code = text(item.get("status"), 32)
            diagnostic = text(item.get("diagnosticCode"), 500) or ""
            subtype = text(bounce.get("bounceSubType"), 200) or ""
            report = relay_bounce(
                text(item.get("emailAddress")),
                # SES retried a transient bounce until it gave up: the mailbox's doing.
                permanent=True,
                status=code,
                diagnostic=diagnostic or subtype,
                token=sender,
                reason=_reason(hard, subtype, diagnostic),
            )
            found.append(Event(f"{message_id}:{n}", report, body))
    elif kind == "Complaint":
        complaint = _object(notification, "complaint")
        for n, item in enumerate(_list(complaint, "complainedRecipients")):
            detail = text(complaint.get("complaintFeedbackType"), 200) or ""
            report = Report(
                ReportKind.COMPLAINT,
                address=text(item.get("emailAddress")),
                token=sender,
                detail=detail,
            )
            found.append(Event(f"{message_id}:{n}", report, body))
    return [event for event in found if event.report.address]


# What SES's bounce subtypes say when the receiving server's own words say nothing.
PERMANENT = {
    "NoEmail": Reason.USERUNKNOWN,
    "Suppressed": Reason.USERUNKNOWN,  # SES's list: the address bounced hard before
    "OnAccountSuppressionList": Reason.USERUNKNOWN,
}
TRANSIENT = {
    "MailboxFull": Reason.MAILBOXFULL,
    "MessageTooLarge": Reason.MESGTOOBIG,
    "ContentRejected": Reason.CONTENTERROR,
    "AttachmentRejected": Reason.POLICYVIOLATION,
}


def _reason(hard: bool, subtype: str, diagnostic: str) -> str:
    """A bounce's reason: the receiving server's words first, then SES's subtype; a
    transient bounce SES gave up on is the mailbox's doing at worst."""
    said = reason_of(None, None, diagnostic, "failed") if diagnostic else None
    if said not in (None, Reason.ONHOLD, Reason.UNDEFINED):
        return said
    if hard:
        return PERMANENT.get(subtype, Reason.ONHOLD)
    return TRANSIENT.get(subtype, Reason.EXPIRED)


def _object(parent: dict, name: str) -> dict:
    value = parent.get(name)
    if not isinstance(value, dict):
        raise Malformed(f"the notification has no {name} object")
    return value


def _list(parent: dict, name: str) -> list[dict]:
    value = parent.get(name)
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise Malformed(f"the notification's {name} is not a list of objects")
    return value


def _confirm(message: dict, config: Mapping) -> None:
    url = message.get("SubscribeURL")
    if not isinstance(url, str) or not re.fullmatch(config["HOOKS_SES_URL"], url):
        raise Malformed("SubscribeURL is not an SNS address")
    try:
        with url_within(url, TIMEOUT) as answer:  # the URL is checked: SNS's own
            answer.read(64 * 1024)
    except (OSError, ValueError, http.client.HTTPException) as exc:
        # Not the request's fault; SNS sends the confirmation again.
        log.warning("SNS subscription to %s not confirmed: %s", message.get("TopicArn"), exc)
        return
    log.info("SNS subscription to %s confirmed", message.get("TopicArn"))
