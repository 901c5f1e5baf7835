"""A bounce in words, the kind no standard shapes: which addresses its text names as the
recipients that failed (flufl.bounce's detectors, checked against the words around each
address: a contact, the original's sender or a Message-ID is none of them), and the
reason those words give."""

import email
import logging
import re
from email.message import Message
from email.policy import compat32

from flufl.bounce import all_failures

from emails.reasons import MAX_TEXT, Reason, command_in, reason_of, reply_in, status_in

from .fields import one_line, parts_of
from .report import Verdict

# flufl.bounce logs a traceback for each message one of its detectors trips on: anyone
# can send such messages, as many as they like. It finds nothing in them, and says so.
logging.getLogger("flufl.bounce").setLevel(logging.CRITICAL)


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
MAX_FLUFL = 64 * 1024  # bytes of a non-standard bounce handed to flufl.bounce's detectors
MAX_FLUFL_LINES = 1000  # and lines: its detectors try each of their patterns on each line


def nonstandard_bounce(msg: Message, raw: bytes, found_only: bool = False) -> list[Verdict]:
    """A bounce in words: flufl.bounce finds the addresses, the words before the
    returned message give each its reason."""
    text = human_text(msg)
    opening = text[:MAX_TEXT]
    # flufl.bounce's detectors read whole messages, some slowly (a minute for 10 MB of
    # blank lines): they get the first lines, where a bounce says its piece.
    lines = raw[:MAX_FLUFL].split(b"\n", MAX_FLUFL_LINES)
    small = (
        msg
        if len(lines) <= MAX_FLUFL_LINES and len(raw) <= MAX_FLUFL
        else email.message_from_bytes(b"\n".join(lines[:MAX_FLUFL_LINES]), policy=compat32)
    )
    temporary: frozenset[bytes] | set[bytes]
    permanent: frozenset[bytes] | set[bytes]
    try:
        temporary, permanent = all_failures(small)
    except Exception:  # noqa: BLE001  a detector that trips on odd input finds nothing
        temporary, permanent = set(), set()
    found = {a.decode("utf-8", "replace").lower() for a in permanent | temporary}
    delayed = {a.decode("utf-8", "replace").lower() for a in temporary}
    named, excluded = failed_addresses(text)
    addresses = [a for a in named if a in found] or sorted(found - excluded)
    if not addresses and found_only:
        return []
    if not addresses:
        addresses = named[:1]
    if not addresses and not opening.strip():
        return []
    verdicts = []
    wanted: list[str | None] = [*addresses[:20]] or [None]  # no address: the words alone
    for address in wanted:
        said = around(text, address) if address else opening
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
                address.lower() if address else None,
                reason,
                status,
                reply,
                "failed",
                one_line(said),
            )
        )
    return verdicts


def failed_addresses(text: str) -> tuple[list[str], set[str]]:
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


def human_text(msg: Message) -> str:
    """The bounce's own words: its text parts, not the returned message, cut at the
    first line that starts the returned copy, and bounded."""
    chunks, size = [], 0
    for part in parts_of(msg):
        if (
            part.get_content_maintype() != "text"
            or part.get_content_type() == "text/rfc822-headers"
        ):
            continue
        payload = part.get_payload(decode=True) or b""
        text = payload[: MAX_TEXT * 4].decode(part.get_content_charset() or "utf-8", "replace")
        if part.get_content_subtype() == "html":
            text = re.sub(r"<[^<>]{0,2000}>", " ", text)
        chunks.append(before_original(text))
        size += len(chunks[-1])
        if size > MAX_TEXT * 4:
            break
    body = msg.get_payload()
    if not chunks and isinstance(body, str):
        # A multipart whose boundary does not match its parts: its body as it came.
        chunks.append(before_original(body[: MAX_TEXT * 4]))
    return "\n".join(chunks)[: MAX_TEXT * 4]


def before_original(text: str) -> str:
    """``text`` up to the line where a returned copy of the original begins."""
    at = 0
    for line in text.splitlines(keepends=True):
        if line.strip() and ORIGINAL.match(line[:200]):
            return text[:at]
        at += len(line)
    return text


def around(text: str, address: str | None) -> str:
    """The words about ``address``: from a line before where it is named, bounded."""
    if not address:
        return text[:MAX_TEXT]
    at = text.lower().find(address.lower())
    if at < 0:
        return text[:MAX_TEXT]
    start = text.rfind("\n", 0, max(0, at - 1))
    return text[max(0, start) : at + MAX_TEXT // 2]
