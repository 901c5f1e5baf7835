"""What a message heard back is: a bounce (hard, soft, or a refusal of us), a delay, a
complaint, an unsubscribe by mail, an auto-reply, a reader's reply, or unknown, with a
reason for every failed recipient. Never raises: garbage is unknown.

Standard reports first: RFC 3464 delivery status notifications and RFC 5965 feedback
(ARF) reports, read here. Then the non-standard bounces real MTAs still send: their
addresses through flufl.bounce (Mailman's detectors), their reasons from the words
before the returned message. Then auto-replies (RFC 3834 and the usual vacation
markers), which change nothing: a vacation note is not a bounce. The reason itself is
:mod:`emails.reasons`'s.

Who a message is about is decided by our VERP token only (see ``_our_token``): a token
that fails its check marks the report ``forged``, and it names nobody.

Every step is bounded, whatever the message: only its head is read (``_head``), every
field is cut before it is searched, and every pattern is linear.
"""

import email
import json
import logging
import re
from dataclasses import replace
from email.message import Message
from email.policy import compat32

from flufl.bounce import all_failures

from emails.reasons import MAX_TEXT, Reason, command_in, reason_of, reply_in, status_in

from ..mailout.verp import Verp
from .report import Report, ReportKind, Verdict

# flufl.bounce logs a traceback for each message one of its detectors trips on: anyone
# can send such messages, as many as they like. It finds nothing in them, and says so.
logging.getLogger("flufl.bounce").setLevel(logging.CRITICAL)

VERP_IN_TEXT = re.compile(
    rb"[A-Za-z0-9._-]{1,64}\+[do][0-9a-zA-Z]{1,13}-[a-zA-Z2-7]{13}@[A-Za-z0-9.-]{1,255}"
)
AUTO_SUBJECT = re.compile(
    r"^\s*(out of (the )?office|automatic reply|auto(matic)?[ -]?(reply|response)|auto:|"
    r"vacation|away from|abwesenheit|absence|autosvar|відсутн|réponse automatique|"
    r"respuesta automática)",
    re.IGNORECASE,
)
BOUNCE_SENDER = re.compile(r"mailer-daemon|postmaster|mail delivery|mail administrator", re.I)
BOUNCE_SUBJECT = re.compile(
    r"undeliver|delivery (status|failure|has failed|problem)|returned mail|failure notice|"
    r"could not be delivered|delivery notification|mail delivery failed|nondeliverable|"
    r"non[- ]delivery|delivery failure|mail system error|rejected|bounce|"
    r"warning: could not send|delivery report|message not delivered|failed delivery|"
    r"returned to sender|mail failure|error sending|permanent error|delayed mail",
    re.IGNORECASE,
)
# Where a bounce's own words end and the returned message begins: a line that starts,
# after any rule of dashes, with one of these. Matched line by line (each line cut to
# 200 characters), so a message of blank lines or spaces costs a pass, not a square.
ORIGINAL = re.compile(
    r"[ \t>|=_-]{0,40}(?:this is a copy of|below this line is a copy|"
    r"original message|the (?:original )?(?:header|headers|message) of the original|"
    r"a copy of the original|undelivered message|unsent message below|returned message|"
    r"message header follows|the header of the original message|original message header|"
    r"rfc822 header|text of the (?:original )?message|your message reads|"
    r"content-type: message/rfc822|headers of your message)",
    re.IGNORECASE,
)
ADDRESS_IN_TEXT = re.compile(
    r"[A-Za-z0-9._%+=-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){1,8}"
)
# Where an address in a bounce's words is not a failed recipient: who to contact, who
# sent the original, a Message-ID (never anyone's address)...
NOT_RECIPIENT = re.compile(
    r"(?:\bcontact\b|^[ \t>]*from[ \t]|\b(?:message-id|references|in-reply-to|from|"
    r"return-path|sender|reply-to|envelope-from)[ \t]*:)[^@\n]{0,80}$",
    re.IGNORECASE,
)
# ... and a header line of the returned original, whose To may or may not be the one.
HEADER_LINE = re.compile(
    r"^[ \t>]*(?:to|cc|bcc|subject|delivered-to|x-original-to)[ \t]*:[^@\n]{0,80}$",
    re.IGNORECASE,
)
# A signed link of ours (a reader's unsubscribe or manage page, or the mailto's subject).
OUR_LINK = re.compile(
    rb"/(unsubscribe|manage)/([A-Za-z0-9_-]{1,200}\.[A-Za-z0-9_.-]{1,300})|"
    rb"subject=unsubscribe(?:%20|\+| )([A-Za-z0-9_-]{1,200}\.[A-Za-z0-9_.-]{1,300})",
    re.IGNORECASE,
)
SES_WRAPPED = re.compile(r"^smtp; [245]\.\d{1,3}\.\d{1,3} - [^']{1,80}'([^']{1,2000})'")
SES_FIELD = re.compile(r'"notificationType"\s*:\s*"(Bounce|Complaint)"')
SES_RECIPIENTS = re.compile(
    r'"(bouncedRecipients|complainedRecipients)"\s*:\s*(\[[^\]]{0,20000}\])'
)
# Bytes of a message parsed at all. What says why mail failed (a DSN's or an ARF report's
# parts, a bounce's own words, the returned headers) comes first; the rest is the
# returned message. Parsing a 10 MB message of blank lines or of DSN blocks took seconds;
# this bounds every message's classification to a fraction of one. The largest bounce
# of sisimai's corpus is 72 KB.
MAX_PARSE = 128 * 1024
MAX_FLUFL = 64 * 1024  # bytes of a non-standard bounce handed to flufl.bounce's detectors
MAX_FLUFL_LINES = 1000  # and lines: its detectors try each of their patterns on each line
# MIME boundaries declared in what is parsed. The parser tries every open boundary on
# every line, so a thousand nested parts made 250 KB of blank lines cost 19 s. A real
# bounce declares a handful (the report, the returned message and its alternatives).
MAX_BOUNDARIES = 10
BOUNDARY = re.compile(rb"boundary", re.IGNORECASE)


def classify(raw: bytes, recipient: str | None, verp: Verp, mail_from: str) -> Report:
    """What ``raw`` (delivered to ``recipient``, the envelope recipient) is."""
    try:
        return _classify(raw, recipient, verp, mail_from)
    except Exception as exc:  # noqa: BLE001  garbage of any shape: one line, unknown
        return Report(ReportKind.UNKNOWN, detail=f"unreadable: {type(exc).__name__}")


def _classify(raw: bytes, recipient: str | None, verp: Verp, mail_from: str) -> Report:
    raw = _head(raw)
    msg = email.message_from_bytes(raw, policy=compat32)
    token, forged = _our_token(raw, recipient, msg, verp)
    mark = {"token": token, "forged": forged}
    report_type = (msg.get_param("report-type") or "").lower() if msg.is_multipart() else ""
    if (
        report_type == "feedback-report"
        or _feedback_part(msg) is not None
        or _field(msg, "X-Apple-Unsubscribe", 16).lower() == "true"  # Mail's "unsubscribe"
    ):
        return _complaint(msg, mark, None if token else _our_link(raw))
    verdicts = _delivery_status(msg) or _ses_notification(msg)
    if not verdicts and _looks_like_bounce(msg):
        verdicts = _nonstandard_bounce(msg, raw)
    elif not verdicts and token and not _auto_replied(msg):
        # Mail to our bounce address that does not look like a bounce: one only if
        # flufl.bounce's detectors find a failed address in it.
        verdicts = _nonstandard_bounce(msg, raw, found_only=True)
    if verdicts and _filtering_gateway(msg):
        verdicts = [_as_filtered(v) for v in verdicts]
    if verdicts and all(v.reason == Reason.FEEDBACK for v in verdicts):
        return _complaint(msg, mark, None if token else _our_link(raw))
    if verdicts:
        failed = [v for v in verdicts if v.reason != Reason.DELIVERED] or verdicts
        first = failed[0]
        kind = first.kind
        if kind is ReportKind.UNKNOWN and _auto_replied(msg) and not _looks_like_bounce(msg):
            kind = ReportKind.AUTO_REPLY
        detail = "; ".join(v.line() for v in failed[:10])
        return Report(
            kind,
            address=first.address,
            code=first.code,
            detail=f"{detail} | {first.diagnostic}"[:500] if first.diagnostic else detail,
            reason=first.reason,
            verdicts=tuple(failed),
            **mark,
        )
    if _auto_replied(msg):
        return Report(ReportKind.AUTO_REPLY, detail=_subject(msg), reason=Reason.VACATION, **mark)
    to_us = (recipient or _first(msg, "Delivered-To", "X-Original-To", "To") or "").lower()
    if mail_from.lower() in to_us[:1000]:
        subject = _subject(msg)
        words = subject.split()
        if len(words) == 2 and words[0].lower() == "unsubscribe":
            return Report(ReportKind.UNSUBSCRIBE, token=words[1], detail="by mail (mailto)")
        return Report(ReportKind.REPLY, address=_sender(msg), detail=subject)
    return Report(ReportKind.UNKNOWN, detail=_subject(msg), **mark)


def _head(raw: bytes) -> bytes:
    """The part of ``raw`` that is read: its first MAX_PARSE bytes, cut before a
    boundary past the first MAX_BOUNDARIES."""
    head = raw[:MAX_PARSE]
    for count, found in enumerate(BOUNDARY.finditer(head)):
        if count == MAX_BOUNDARIES:
            return head[: found.start()]
    return head


def _our_token(
    raw: bytes, recipient: str | None, msg: Message, verp: Verp
) -> tuple[str | None, bool]:
    """Our VERP token, and whether a token of ours failed its check (forged).

    The envelope recipient and the headers an MTA copies it to decide when they carry
    a ``bounces+…`` form: a genuine token there is the answer, an altered one makes the
    report forged whatever else it holds. Else the returned original's Return-Path (or
    any copy of an envelope sender of ours) within the message."""
    for candidate in (recipient, msg.get("X-Original-To"), msg.get("Delivered-To")):
        candidate = str(candidate or "")[:512]
        if not candidate or not verp.is_bounce_address(candidate):
            continue
        if verp.read(candidate):
            return candidate, False
        if "+" in candidate.partition("@")[0]:
            return None, True
    forged = False
    for found in VERP_IN_TEXT.finditer(raw):
        text = found.group().decode("ascii", "replace")
        if verp.read(text):
            return text, False
        forged = forged or verp.is_bounce_address(text)
    return None, forged


def _delivery_status(msg: Message) -> list[Verdict]:
    """An RFC 3464 DSN's recipients, each with its verdict."""
    verdicts: list[Verdict] = []
    for part in _parts(msg):
        if part.get_content_type() not in (
            "message/delivery-status",
            "message/global-delivery-status",
        ):
            continue
        blocks = part.get_payload()
        if not isinstance(blocks, list):  # unparsed: read the fields ourselves
            blocks = [email.message_from_string(b, policy=compat32) for b in _blocks(part)]
        text = _human_text(msg)
        # The per-recipient blocks that say something (the parser makes empty ones of
        # trailing blank lines).
        recipients = [
            block
            for block in (blocks[1:] if len(blocks) > 1 else blocks)
            if any(block.get(name) for name in ("Action", "Final-Recipient", "Original-Recipient"))
        ]
        for block in recipients:
            action = _field(block, "Action", 32).lower().split(" ")[0] or None
            address = _address_field(_field(block, "Original-Recipient")) or _address_field(
                _field(block, "Final-Recipient")
            )
            if not (action or address):
                continue
            status = status_in(_field(block, "Status", 64))
            diagnostic = _field(block, "Diagnostic-Code", MAX_TEXT)
            if wrapped := SES_WRAPPED.search(diagnostic):
                # SES's own category ("Unknown address error") around the server's reply.
                diagnostic = f"smtp; {wrapped.group(1)}"
            if not diagnostic.partition(";")[2].strip() or diagnostic.lower().startswith("x-unix"):
                # The report's own words: all of them when it names one recipient with
                # no particular status (a reason may be said lines above the address),
                # else those about this one.
                whole = len(recipients) == 1 and (not status or status.endswith(".0.0"))
                said = text[:MAX_TEXT] if whole else _around(text, address)
                diagnostic = f"{diagnostic} {said}".strip()
            if not status or status.endswith((".0.0", ".1.0")):
                # A generic status ("other address status"): the reply quoted in the
                # diagnostic says more.
                status = (
                    status_in(diagnostic.partition(";")[2].replace(status or "-", "")) or status
                )
            reply = reply_in(diagnostic.partition(";")[2] or diagnostic)
            command = command_in(diagnostic) or command_in(_around(text, address))
            reason = reason_of(status, reply, diagnostic, action, command)
            verdicts.append(Verdict(address, reason, status, reply, action, _line(diagnostic)))
    return verdicts


def _our_link(raw: bytes) -> tuple[str, str] | None:
    """The first signed link of ours in a returned original, as (purpose, token)."""
    found = OUR_LINK.search(raw)
    if found is None:
        return None
    if found.group(3):
        return "unsubscribe", found.group(3).decode("ascii")
    return found.group(1).decode("ascii").lower(), found.group(2).decode("ascii")


def _filtering_gateway(msg: Message) -> bool:
    """The bounce comes from a mail security gateway (McAfee's appliance, SurfControl),
    or from a mail system whose bounces never say at which stage a recipient was
    refused (X1's "Mail Deliver System", MailFoundry, MXLogic): their "user unknown"
    alone does not prove the mailbox is gone."""
    sender, subject = _field(msg, "From", 200), _field(msg, "Subject", 200)
    return (
        bool(msg.get("X-NAI-Header"))
        or "surfcontrol" in _field(msg, "X-Mailer", 200).lower()
        or (sender.startswith('"Mail Deliver System" ') and subject.startswith("Returned Mail: "))
        or (
            subject == "Message delivery has failed"
            and any("(MAILFOUNDRY) id" in str(r) for r in msg.get_all("Received", [])[:20])
        )
        or bool(re.search(r"@[\w.-]*\.mxlogic\.net>?$", sender, re.IGNORECASE))
    )


def _as_filtered(verdict: Verdict) -> Verdict:
    """Such a system's "user unknown" is its filter's verdict (as sisimai reads them),
    not the mailbox's, unless a 5.1.x status or an answer to RCPT says otherwise."""
    if (
        verdict.reason != Reason.USERUNKNOWN
        or (verdict.status or "")[1:4] == ".1."
        or command_in(verdict.diagnostic or "") == "rcpt"
    ):
        return verdict
    return replace(verdict, reason=Reason.FILTERED)


def _ses_notification(msg: Message) -> list[Verdict]:
    """An Amazon SES notification that came by mail (an SNS email subscription): JSON,
    one verdict per recipient. Read by its fields, not as a whole: mail systems wrap
    long lines, which breaks the JSON around the headers that follow the recipients."""
    if "amazonaws.com" not in _field(msg, "From", 200) or msg.is_multipart():
        return []
    text = (msg.get_payload(decode=True) or b"").decode("utf-8", "replace")
    kind = SES_FIELD.search(text)
    if kind is None:
        return []
    listed = SES_RECIPIENTS.search(text)
    try:
        recipients = json.loads(listed.group(2)) if listed else []
    except ValueError:
        return []
    if kind.group(1) == "Complaint":
        return [
            Verdict(
                _address_field(str(r.get("emailAddress", ""))), Reason.FEEDBACK, action="failed"
            )
            for r in recipients[:20]
            if isinstance(r, dict)
        ]
    hard = '"bounceType":"Permanent"' in text.replace(" ", "")
    verdicts = []
    for item in recipients[:20]:
        if not isinstance(item, dict):
            continue
        status = status_in(str(item.get("status") or ""))
        diagnostic = " ".join(str(item.get("diagnosticCode") or "").split())[:MAX_TEXT]
        reason = reason_of(status, reply_in(diagnostic), diagnostic, "failed")
        if reason in (Reason.ONHOLD, Reason.UNDEFINED) and not hard:
            reason = Reason.EXPIRED
        address = _address_field(str(item.get("emailAddress") or ""))
        verdicts.append(
            Verdict(address, reason, status, reply_in(diagnostic), "failed", _line(diagnostic))
        )
    return verdicts


def _complaint(msg: Message, mark: dict, link: tuple[str, str] | None) -> Report:
    """An RFC 5965 feedback report: who complained about which message. The address it
    names is only shown to staff; the token (in the returned original) names the reader."""
    address, feedback = None, ""
    part = _feedback_part(msg)
    if part is not None:
        fields = part.get_payload()
        block = fields[0] if isinstance(fields, list) and fields else part
        if not isinstance(block, Message):
            block = email.message_from_string(str(block)[:MAX_TEXT], policy=compat32)
        address = _address_field(_field(block, "Original-Rcpt-To"))
        feedback = _field(block, "Feedback-Type", 64).lower()
    for part in _parts(msg):
        if part.get_content_type() in ("message/rfc822", "text/rfc822-headers"):
            original = part.get_payload()
            if isinstance(original, list) and original:
                address = address or _address_field(_field(original[0], "To"))
    detail = " ".join(x for x in (feedback, _first(msg, "Subject") or "abuse report") if x)
    return Report(
        ReportKind.COMPLAINT,
        address=address,
        detail=detail[:200],
        reason=Reason.FEEDBACK,
        verdicts=(Verdict(address, Reason.FEEDBACK, action="failed", diagnostic=feedback),),
        link=link,
        **mark,
    )


def _feedback_part(msg: Message) -> Message | None:
    for part in _parts(msg):
        if part.get_content_type() == "message/feedback-report":
            return part
    return None


def _nonstandard_bounce(msg: Message, raw: bytes, found_only: bool = False) -> list[Verdict]:
    """A bounce in words: flufl.bounce finds the addresses, the words before the
    returned message give each its reason."""
    text = _human_text(msg)
    opening = text[:MAX_TEXT]
    # flufl.bounce's detectors read whole messages, some slowly (a minute for 10 MB of
    # blank lines): they get the first lines, where a bounce says its piece.
    lines = raw[:MAX_FLUFL].split(b"\n", MAX_FLUFL_LINES)
    small = (
        msg
        if len(lines) <= MAX_FLUFL_LINES and len(raw) <= MAX_FLUFL
        else email.message_from_bytes(b"\n".join(lines[:MAX_FLUFL_LINES]), policy=compat32)
    )
    try:
        temporary, permanent = all_failures(small)
    except Exception:  # noqa: BLE001  a detector that trips on odd input finds nothing
        temporary, permanent = set(), set()
    found = {a.decode("utf-8", "replace").lower() for a in permanent | temporary}
    delayed = {a.decode("utf-8", "replace").lower() for a in temporary}
    named, excluded = _failed_addresses(text)
    addresses = [a for a in named if a in found] or sorted(found - excluded)
    if not addresses and found_only:
        return []
    if not addresses:
        addresses = named[:1]
    if not addresses and not opening.strip():
        return []
    verdicts = []
    for address in addresses[:20] or [None]:
        said = _around(text, address) if address else opening
        command = command_in(said)
        reason = reason_of(None, None, said, command=command)
        if reason in (Reason.ONHOLD, Reason.UNDEFINED):
            reason = reason_of(None, None, opening, command=command)
        status = status_in(said) or status_in(opening)
        reply = reply_in(said) or reply_in(opening)
        if address in delayed and not status and reason in (Reason.ONHOLD, Reason.UNDEFINED):
            reason = Reason.EXPIRED
        verdicts.append(
            Verdict(
                address.lower() if address else None, reason, status, reply, "failed", _line(said)
            )
        )
    return verdicts


def _failed_addresses(text: str) -> tuple[list[str], set[str]]:
    """The addresses a bounce's words name as recipients, lower-cased, in the order they
    are first named, and those they name as anything else (a contact, the original's
    sender, a Message-ID). A returned header line (To:, Cc:) names a recipient only
    when nothing else does."""
    named: dict[str, None] = {}
    in_headers: dict[str, None] = {}
    excluded: set[str] = set()
    for found in ADDRESS_IN_TEXT.finditer(text[:MAX_TEXT]):
        address = found.group().lower()
        line = text[text.rfind("\n", 0, found.start()) + 1 : found.start()]
        if NOT_RECIPIENT.search(line[-200:]):
            excluded.add(address)
        else:
            (in_headers if HEADER_LINE.match(line) else named).setdefault(address)
    recipients = [a for a in named if a not in excluded]
    return recipients or [a for a in in_headers if a not in excluded], excluded


def _human_text(msg: Message) -> str:
    """The bounce's own words: its text parts, not the returned message, cut at the
    first line that starts the returned copy, and bounded."""
    chunks, size = [], 0
    for part in _parts(msg):
        if (
            part.get_content_maintype() != "text"
            or part.get_content_type() == "text/rfc822-headers"
        ):
            continue
        payload = part.get_payload(decode=True) or b""
        text = payload[: MAX_TEXT * 4].decode(part.get_content_charset() or "utf-8", "replace")
        if part.get_content_subtype() == "html":
            text = re.sub(r"<[^<>]{0,2000}>", " ", text)
        chunks.append(_before_original(text))
        size += len(chunks[-1])
        if size > MAX_TEXT * 4:
            break
    if not chunks and isinstance(msg.get_payload(), str):
        # A multipart whose boundary does not match its parts: its body as it came.
        chunks.append(_before_original(msg.get_payload()[: MAX_TEXT * 4]))
    return "\n".join(chunks)[: MAX_TEXT * 4]


def _before_original(text: str) -> str:
    """``text`` up to the line where a returned copy of the original begins."""
    at = 0
    for line in text.splitlines(keepends=True):
        if line.strip() and ORIGINAL.match(line[:200]):
            return text[:at]
        at += len(line)
    return text


def _around(text: str, address: str | None) -> str:
    """The words about ``address``: from a line before where it is named, bounded."""
    if not address:
        return text[:MAX_TEXT]
    at = text.lower().find(address.lower())
    if at < 0:
        return text[:MAX_TEXT]
    start = text.rfind("\n", 0, max(0, at - 1))
    return text[max(0, start) : at + MAX_TEXT // 2]


def _parts(msg: Message):
    """The parts of ``msg``, not descending into a returned message."""
    stack = [msg]
    while stack:
        part = stack.pop(0)
        yield part
        if part.get_content_type() == "message/rfc822":
            continue
        payload = part.get_payload()
        if part.is_multipart() and isinstance(payload, list):
            stack[0:0] = payload[:50]


def _looks_like_bounce(msg: Message) -> bool:
    sender = " ".join(_field(msg, h, 500) for h in ("From", "Return-Path", "Sender"))
    return bool(BOUNCE_SENDER.search(sender) or BOUNCE_SUBJECT.search(_subject(msg)))


def _auto_replied(msg: Message) -> bool:
    submitted = _field(msg, "Auto-Submitted", 64).lower() or "no"
    return (
        (submitted != "no" and not submitted.startswith("auto-generated"))
        or any(msg.get(h) for h in ("X-Autoreply", "X-Autorespond", "X-Autoresponder"))
        or _field(msg, "Precedence", 64).lower() == "auto_reply"
        or bool(AUTO_SUBJECT.match(_subject(msg)))
    )


def _subject(msg: Message) -> str:
    subject = _field(msg, "Subject", 2000)
    try:
        decoded = str(email.header.make_header(email.header.decode_header(subject)))
    except (ValueError, LookupError, UnicodeError, email.errors.HeaderParseError):
        decoded = subject
    return " ".join(decoded.split())[:200]


def _sender(msg: Message) -> str | None:
    return _address_field(_field(msg, "Reply-To") or _field(msg, "From"))


def _first(msg: Message, *names: str) -> str | None:
    for name in names:
        if value := _field(msg, name):
            return value
    return None


def _field(msg: Message, name: str, limit: int = 1000) -> str:
    """A header field's value as text, unfolded and cut to ``limit``: what is read of any
    field is bounded, whatever its length."""
    value = msg.get(name)
    if value is None:
        return ""
    return " ".join(str(value)[: limit * 2].split())[:limit]


def _address_field(value: str | None) -> str | None:
    """The address of ``rfc822; reader@example.org``, ``<reader@…>`` or a From-like field."""
    if not value:
        return None
    text = str(value)[:1000].rpartition(";")[2]
    for word in re.split(r"[\s<>;\"',()]+", text):
        if "@" in word and 3 <= len(word) <= 320:
            return word.strip(".:").lower()
    return None


def _line(text: str) -> str:
    return " ".join(text.split())[:300]


def _blocks(part: Message) -> list[str]:
    text = part.get_payload(decode=True) or b""
    return [b for b in re.split(r"\r?\n\r?\n", text.decode("utf-8", "replace")) if b.strip()]
