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
import re
from dataclasses import replace
from email.message import Message
from email.policy import compat32
from typing import TypedDict

from emails.reasons import MAX_TEXT, Reason, command_in, reason_of, reply_in, status_in

from ..mailout.verp import Verp
from .fields import (
    address_field,
    decoded,
    feedback_part,
    field_text,
    first_field,
    one_line,
    parts_of,
    sender_of,
    subject_of,
)
from .report import Report, ReportKind, Verdict
from .words import around, human_text, nonstandard_bounce

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
# MIME boundaries declared in what is parsed. The parser tries every open boundary on
# every line, so a thousand nested parts made 250 KB of blank lines cost 19 s. A real
# bounce declares a handful (the report, the returned message and its alternatives).
MAX_BOUNDARIES = 10
BOUNDARY = re.compile(rb"boundary", re.IGNORECASE)


class Mark(TypedDict):
    """What every report of a message carries: our token in it, and whether a token of
    ours in it failed its check."""

    token: str | None
    forged: bool


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
    mark = Mark(token=token, forged=forged)
    param = msg.get_param("report-type") if msg.is_multipart() else None
    report_type = param.lower() if isinstance(param, str) else ""
    if (
        report_type == "feedback-report"
        or feedback_part(msg) is not None
        or field_text(msg, "X-Apple-Unsubscribe", 16).lower() == "true"  # Mail's "unsubscribe"
    ):
        return _complaint(msg, mark, None if token else _our_link(raw))
    verdicts = _delivery_status(msg) or _ses_notification(msg)
    if not verdicts and _looks_like_bounce(msg):
        verdicts = nonstandard_bounce(msg, raw)
    elif not verdicts and token and not _auto_replied(msg):
        # Mail to our bounce address that does not look like a bounce: one only if
        # flufl.bounce's detectors find a failed address in it.
        verdicts = nonstandard_bounce(msg, raw, found_only=True)
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
        return Report(ReportKind.AUTO_REPLY, detail=subject_of(msg), reason=Reason.VACATION, **mark)
    to_us = (recipient or first_field(msg, "Delivered-To", "X-Original-To", "To") or "").lower()
    if mail_from.lower() in to_us[:1000]:
        subject = subject_of(msg)
        words = subject.split()
        if len(words) == 2 and words[0].lower() == "unsubscribe":
            return Report(ReportKind.UNSUBSCRIBE, token=words[1], detail="by mail (mailto)")
        return Report(ReportKind.REPLY, address=sender_of(msg), detail=subject)
    return Report(ReportKind.UNKNOWN, detail=subject_of(msg), **mark)


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
    for part in parts_of(msg):
        if part.get_content_type() not in (
            "message/delivery-status",
            "message/global-delivery-status",
        ):
            continue
        blocks = part.get_payload()
        if not isinstance(blocks, list):  # unparsed: read the fields ourselves
            blocks = [email.message_from_string(b, policy=compat32) for b in blocks(part)]
        text = human_text(msg)
        # The per-recipient blocks that say something (the parser makes empty ones of
        # trailing blank lines).
        recipients = [
            block
            for block in (blocks[1:] if len(blocks) > 1 else blocks)
            if any(block.get(name) for name in ("Action", "Final-Recipient", "Original-Recipient"))
        ]
        for block in recipients:
            action = field_text(block, "Action", 32).lower().split(" ")[0] or None
            address = address_field(field_text(block, "Original-Recipient")) or address_field(
                field_text(block, "Final-Recipient")
            )
            if not (action or address):
                continue
            status = status_in(field_text(block, "Status", 64))
            diagnostic = field_text(block, "Diagnostic-Code", MAX_TEXT)
            if wrapped := SES_WRAPPED.search(diagnostic):
                # SES's own category ("Unknown address error") around the server's reply.
                diagnostic = f"smtp; {wrapped.group(1)}"
            if not diagnostic.partition(";")[2].strip() or diagnostic.lower().startswith("x-unix"):
                # The report's own words: all of them when it names one recipient with
                # no particular status (a reason may be said lines above the address),
                # else those about this one.
                whole = len(recipients) == 1 and (not status or status.endswith(".0.0"))
                said = text[:MAX_TEXT] if whole else around(text, address)
                diagnostic = f"{diagnostic} {said}".strip()
            if not status or status.endswith((".0.0", ".1.0")):
                # A generic status ("other address status"): the reply quoted in the
                # diagnostic says more.
                status = (
                    status_in(diagnostic.partition(";")[2].replace(status or "-", "")) or status
                )
            reply = reply_in(diagnostic.partition(";")[2] or diagnostic)
            command = command_in(diagnostic) or command_in(around(text, address))
            reason = reason_of(status, reply, diagnostic, action, command)
            verdicts.append(Verdict(address, reason, status, reply, action, one_line(diagnostic)))
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
    sender, subject = field_text(msg, "From", 200), field_text(msg, "Subject", 200)
    return (
        bool(msg.get("X-NAI-Header"))
        or "surfcontrol" in field_text(msg, "X-Mailer", 200).lower()
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
    if "amazonaws.com" not in field_text(msg, "From", 200) or msg.is_multipart():
        return []
    text = decoded(msg).decode("utf-8", "replace")
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
            Verdict(address_field(str(r.get("emailAddress", ""))), Reason.FEEDBACK, action="failed")
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
        address = address_field(str(item.get("emailAddress") or ""))
        verdicts.append(
            Verdict(address, reason, status, reply_in(diagnostic), "failed", one_line(diagnostic))
        )
    return verdicts


def _complaint(msg: Message, mark: Mark, link: tuple[str, str] | None) -> Report:
    """An RFC 5965 feedback report: who complained about which message. The address it
    names is only shown to staff; the token (in the returned original) names the reader."""
    address, feedback = None, ""
    part = feedback_part(msg)
    if part is not None:
        fields = part.get_payload()
        block = fields[0] if isinstance(fields, list) and fields else part
        if not isinstance(block, Message):
            block = email.message_from_string(str(block)[:MAX_TEXT], policy=compat32)
        address = address_field(field_text(block, "Original-Rcpt-To"))
        feedback = field_text(block, "Feedback-Type", 64).lower()
    for part in parts_of(msg):
        if part.get_content_type() in ("message/rfc822", "text/rfc822-headers"):
            original = part.get_payload()
            if isinstance(original, list) and original:
                address = address or address_field(field_text(original[0], "To"))
    detail = " ".join(x for x in (feedback, first_field(msg, "Subject") or "abuse report") if x)
    return Report(
        ReportKind.COMPLAINT,
        address=address,
        detail=detail[:200],
        reason=Reason.FEEDBACK,
        verdicts=(Verdict(address, Reason.FEEDBACK, action="failed", diagnostic=feedback),),
        link=link,
        **mark,
    )


def _looks_like_bounce(msg: Message) -> bool:
    sender = " ".join(field_text(msg, h, 500) for h in ("From", "Return-Path", "Sender"))
    return bool(BOUNCE_SENDER.search(sender) or BOUNCE_SUBJECT.search(subject_of(msg)))


def _auto_replied(msg: Message) -> bool:
    submitted = field_text(msg, "Auto-Submitted", 64).lower() or "no"
    return (
        (submitted != "no" and not submitted.startswith("auto-generated"))
        or any(msg.get(h) for h in ("X-Autoreply", "X-Autorespond", "X-Autoresponder"))
        or field_text(msg, "Precedence", 64).lower() == "auto_reply"
        or bool(AUTO_SUBJECT.match(subject_of(msg)))
    )
