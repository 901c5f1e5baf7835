"""What a message heard back is: a bounce (hard or soft), a complaint, an unsubscribe by
mail, an auto-reply, a reader's reply, or unknown. Never raises: garbage is unknown.

Standard reports first: RFC 3464 delivery status notifications and RFC 5965 feedback
(ARF) reports, read here. Then the non-standard bounces real MTAs still send, through
flufl.bounce (Mailman's detectors). Then auto-replies (RFC 3834 and the usual vacation
markers), which change nothing: a vacation note is not a bounce.
"""

import email
import re
from email.message import Message
from email.policy import compat32

from flufl.bounce import all_failures

from .report import Report, ReportKind
from .verp import Verp

# Some 5.x.x statuses are not the address failing: a full mailbox (5.2.2) will empty,
# and 5.7.x is a policy refusal of the sender (spam filters, DMARC). Those count soft.
SOFT_PERMANENT = re.compile(r"5\.2\.2|5\.7\.\d{1,3}")
STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
VERP_IN_TEXT = re.compile(rb"[A-Za-z0-9._-]+\+[do][0-9a-zA-Z]{1,13}-[a-zA-Z2-7]{13}@[A-Za-z0-9.-]+")
AUTO_SUBJECT = re.compile(
    r"^\s*(out of (the )?office|automatic reply|auto(matic)?[ -]?(reply|response)|auto:|"
    r"vacation|away from|abwesenheit|absence|autosvar|відсутн)",
    re.IGNORECASE,
)
BOUNCE_SENDER = re.compile(r"mailer-daemon|postmaster|mail delivery", re.IGNORECASE)
BOUNCE_SUBJECT = re.compile(
    r"undeliver|delivery (status|failure|has failed)|returned mail|failure notice|"
    r"could not be delivered|delivery notification",
    re.IGNORECASE,
)
MAX_SCAN = 256 * 1024  # bytes of a message searched for a VERP token


def classify(raw: bytes, recipient: str | None, verp: Verp, mail_from: str) -> Report:
    """What ``raw`` (delivered to ``recipient``, the envelope recipient) is."""
    try:
        return _classify(raw, recipient, verp, mail_from)
    except Exception as exc:  # noqa: BLE001  garbage of any shape: one line, unknown
        return Report(ReportKind.UNKNOWN, detail=f"unreadable: {type(exc).__name__}")


def _classify(raw: bytes, recipient: str | None, verp: Verp, mail_from: str) -> Report:
    msg = email.message_from_bytes(raw, policy=compat32)
    token = _our_token(raw, recipient, msg, verp)
    if msg.get_content_type() == "multipart/report":
        report_type = (msg.get_param("report-type") or "").lower()
        if report_type == "feedback-report":
            return _complaint(msg, token)
        if report_type == "delivery-status":
            found = _delivery_status(msg, token)
            if found is not None:
                return found
    if _looks_like_bounce(msg) or (token and not _auto_replied(msg)):
        found = _nonstandard_bounce(msg, token)
        if found is not None:
            return found
    if _auto_replied(msg):
        return Report(ReportKind.AUTO_REPLY, token=token, detail=_subject(msg))
    to_us = (recipient or _first(msg, "Delivered-To", "X-Original-To", "To") or "").lower()
    if mail_from.lower() in to_us:
        subject = _subject(msg)
        words = subject.split()
        if len(words) == 2 and words[0].lower() == "unsubscribe":
            return Report(ReportKind.UNSUBSCRIBE, token=words[1], detail="by mail (mailto)")
        return Report(ReportKind.REPLY, address=_sender(msg), detail=subject)
    return Report(ReportKind.UNKNOWN, token=token, detail=_subject(msg))


def _our_token(raw: bytes, recipient: str | None, msg: Message, verp: Verp) -> str | None:
    """Our VERP token: in the envelope recipient, the headers it is copied to, or the
    returned original (its Return-Path) within the message."""
    for candidate in (recipient, msg.get("X-Original-To"), msg.get("Delivered-To")):
        if candidate and verp.read(str(candidate)):
            return str(candidate)
    for found in VERP_IN_TEXT.finditer(raw[:MAX_SCAN]):
        text = found.group().decode("ascii", "replace")
        if verp.read(text):
            return text
    return None


def _delivery_status(msg: Message, token: str | None) -> Report | None:
    """An RFC 3464 DSN: the first failed or delayed recipient."""
    for part in msg.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        blocks = part.get_payload()
        if not isinstance(blocks, list):  # unparsed: read the fields ourselves
            blocks = [email.message_from_string(b, policy=compat32) for b in _blocks(part)]
        for block in blocks[1:] if len(blocks) > 1 else blocks:
            action = (block.get("Action") or "").strip().lower()
            if action not in ("failed", "delayed"):
                continue
            status = (block.get("Status") or "").strip()
            address = _address_field(block.get("Original-Recipient")) or _address_field(
                block.get("Final-Recipient")
            )
            diagnostic = " ".join((block.get("Diagnostic-Code") or "").split())
            hard = (
                action == "failed" and status.startswith("5.") and not SOFT_PERMANENT.match(status)
            )
            kind = ReportKind.HARD_BOUNCE if hard else ReportKind.SOFT_BOUNCE
            detail = f"{action} {status} {diagnostic}".strip()
            return Report(kind, address=address, token=token, code=status or None, detail=detail)
    return None


def _blocks(part: Message) -> list[str]:
    text = part.get_payload(decode=True) or b""
    return [b for b in re.split(r"\r?\n\r?\n", text.decode("utf-8", "replace")) if b.strip()]


def _complaint(msg: Message, token: str | None) -> Report:
    """An RFC 5965 feedback report: who complained about which message."""
    address = None
    for part in msg.walk():
        if part.get_content_type() == "message/feedback-report":
            fields = part.get_payload()
            block = fields[0] if isinstance(fields, list) and fields else part
            address = _address_field(block.get("Original-Rcpt-To")) or address
        elif part.get_content_type() in ("message/rfc822", "text/rfc822-headers"):
            original = part.get_payload()
            if isinstance(original, list) and original:
                address = address or _address_field(original[0].get("To"))
    feedback = _first(msg, "Subject") or "abuse report"
    return Report(ReportKind.COMPLAINT, address=address, token=token, detail=feedback[:200])


def _nonstandard_bounce(msg: Message, token: str | None) -> Report | None:
    temporary, permanent = all_failures(msg)
    failed = permanent or temporary
    if not failed and not token:
        return None
    if not failed and not _looks_like_bounce(msg):
        return None
    address = sorted(failed)[0].decode("utf-8", "replace") if failed else None
    text = _text(msg)
    status = STATUS.search(text)
    code = ".".join(status.groups()) if status else None
    hard = bool(permanent) and not (code and (code[0] == "4" or SOFT_PERMANENT.match(code)))
    if not permanent and code and code[0] == "5" and not SOFT_PERMANENT.match(code):
        hard = True
    kind = ReportKind.HARD_BOUNCE if hard else ReportKind.SOFT_BOUNCE
    return Report(kind, address=address, token=token, code=code, detail=_subject(msg))


def _looks_like_bounce(msg: Message) -> bool:
    sender = " ".join(str(msg.get(h, "")) for h in ("From", "Return-Path", "Sender"))
    return bool(BOUNCE_SENDER.search(sender) or BOUNCE_SUBJECT.search(_subject(msg)))


def _auto_replied(msg: Message) -> bool:
    submitted = (msg.get("Auto-Submitted") or "no").strip().lower()
    return (
        (submitted != "no" and not submitted.startswith("auto-generated"))
        or any(msg.get(h) for h in ("X-Autoreply", "X-Autorespond"))
        or (msg.get("Precedence") or "").strip().lower() == "auto_reply"
        or bool(AUTO_SUBJECT.match(_subject(msg)))
    )


def _subject(msg: Message) -> str:
    subject = msg.get("Subject") or ""
    try:
        decoded = str(email.header.make_header(email.header.decode_header(str(subject))))
    except (ValueError, LookupError, UnicodeError):
        decoded = str(subject)
    return " ".join(decoded.split())[:200]


def _sender(msg: Message) -> str | None:
    return _address_field(msg.get("Reply-To") or msg.get("From"))


def _first(msg: Message, *names: str) -> str | None:
    for name in names:
        if msg.get(name):
            return str(msg.get(name))
    return None


def _address_field(value) -> str | None:
    """The address of ``rfc822; reader@example.org``, ``<reader@…>`` or a From-like field."""
    if not value:
        return None
    text = str(value).rpartition(";")[2]
    found = re.search(r"[^\s<>;\"']+@[^\s<>;\"']+", text)
    return found.group().strip(".").lower() if found else None


def _text(msg: Message) -> str:
    """The message's text parts, for a status code (bounded)."""
    chunks = []
    for part in msg.walk():
        if part.get_content_maintype() == "text":
            payload = part.get_payload(decode=True) or b""
            chunks.append(payload[:MAX_SCAN].decode("utf-8", "replace"))
    return "\n".join(chunks)[:MAX_SCAN]
