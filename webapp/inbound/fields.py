"""A message's parts and header fields, read bounded: whatever a field's length, only its
first characters are read."""

import email
import re
from email.message import Message


def feedback_part(msg: Message) -> Message | None:
    """The feedback report (ARF) part of a complaint, if it has one."""
    for part in parts_of(msg):
        if part.get_content_type() == "message/feedback-report":
            return part
    return None


def parts_of(msg: Message):
    """The parts of ``msg``, not descending into a returned message."""
    stack = [msg]
    while stack:
        part = stack.pop(0)
        yield part
        if part.get_content_type() == "message/rfc822":
            continue
        payload = part.get_payload()
        if part.is_multipart() and isinstance(payload, list):
            stack[0:0] = [p for p in payload[:50] if isinstance(p, Message)]


def subject_of(msg: Message) -> str:
    """The Subject, decoded and on one line, its first 200 characters."""
    subject = field_text(msg, "Subject", 2000)
    try:
        decoded = str(email.header.make_header(email.header.decode_header(subject)))
    except (ValueError, LookupError, UnicodeError, email.errors.HeaderParseError):
        decoded = subject
    return " ".join(decoded.split())[:200]


def sender_of(msg: Message) -> str | None:
    """Who to answer: the address of Reply-To, else of From."""
    return address_field(field_text(msg, "Reply-To") or field_text(msg, "From"))


def first_field(msg: Message, *names: str) -> str | None:
    """The value of the first of the fields ``names`` that the message has."""
    for name in names:
        if value := field_text(msg, name):
            return value
    return None


def field_text(msg: Message, name: str, limit: int = 1000) -> str:
    """A header field's value as text, unfolded and cut to ``limit``: what is read of any
    field is bounded, whatever its length."""
    value = msg.get(name)
    if value is None:
        return ""
    return " ".join(str(value)[: limit * 2].split())[:limit]


def address_field(value: str | None) -> str | None:
    """The address of ``rfc822; reader@example.org``, ``<reader@…>`` or a From-like field."""
    if not value:
        return None
    text = str(value)[:1000].rpartition(";")[2]
    for word in re.split(r"[\s<>;\"',()]+", text):
        if "@" in word and 3 <= len(word) <= 320:
            return word.strip(".:").lower()
    return None


def one_line(text: str) -> str:
    """``text`` on one line, its first 300 characters: what a report quotes."""
    return " ".join(text.split())[:300]


def blocks(part: Message) -> list[str]:
    """The blocks of a part, split at blank lines (a DSN's per-message and
    per-recipient fields)."""
    text = decoded(part).decode("utf-8", "replace")
    return [b for b in re.split(r"\r?\n\r?\n", text) if b.strip()]


def decoded(part: Message) -> bytes:
    """A part's body with its transfer encoding undone; empty for a multipart (the
    typing of ``get_payload(decode=True)`` covers both)."""
    payload = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""
