"""Mail merge: a message compiled once, then made for each reader in microseconds.

The email package takes milliseconds to build one MIME message, which a send to
200,000 readers cannot pay per reader. Here the fixed headers are folded and encoded
once; each reader's message joins those bytes with the reader's few headers and the
parts filled with their links and encoded by binascii (C).
"""

import binascii
import secrets
import time
from dataclasses import dataclass
from email.headerregistry import Address as HeaderAddress
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate

from .slots import Slotted

LINE = 76  # RFC 2045 limit for encoded lines


class HeaderError(ValueError):
    """A per-reader header value that cannot go on the wire as it is."""


@dataclass(frozen=True)
class _Part:
    subtype: str
    encoding: str  # quoted-printable or base64
    body: Slotted
    # Quoted-printable only: the literal chunks encoded once, each ending in a soft line
    # break, so a reader's part is their encoded links joined between them.
    chunks: tuple[bytes, ...] = ()

    def encoded(self, values: dict[str, str]) -> bytes:
        """The part's body for one reader, transfer-encoded."""
        if self.encoding == "base64":
            return _base64(self.body.fill(values).encode("utf-8"))
        slots = self.body.parts[1::2]
        out = []
        for index, chunk in enumerate(self.chunks):
            out.append(chunk)
            if index < len(slots):
                out.append(_qp_piece(self.body.value(slots[index], values)))
        return b"".join(out)


def _crlf(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\r\n")


def _base64(data: bytes) -> bytes:
    flat = binascii.b2a_base64(data, newline=False)
    return b"\r\n".join(flat[i : i + LINE] for i in range(0, len(flat), LINE))


def _qp(data: bytes) -> bytes:
    # b2a_qp ends soft line breaks with LF when the data has no CRLF: make them CRLF.
    return binascii.b2a_qp(data, istext=True).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _qp_piece(text: str) -> bytes:
    """``text`` quoted-printable, ending at a line end or a soft line break.

    Pieces so made can be joined in any order: decoding removes the soft breaks.
    """
    encoded = _qp(text.encode("utf-8"))
    if not encoded or encoded.endswith(b"\r\n"):
        return encoded
    head, newline, last = encoded.rpartition(b"\r\n")
    if len(last) >= LINE:  # no room for the "=": break the line earlier, not inside "=XX"
        cut = LINE - 3
        while b"=" in last[cut - 2 : cut]:
            cut -= 1
        last = last[:cut] + b"=\r\n" + last[cut:]
    return head + newline + last + b"=\r\n"


def _encoding_for(sample: bytes) -> str:
    # As the email package does: the shorter of the two (Cyrillic is smaller in base64).
    if sample.isascii():
        return "quoted-printable"
    return "quoted-printable" if len(_qp(sample)) <= len(_base64(sample)) else "base64"


def _part(subtype: str, body: Slotted) -> _Part:
    body = Slotted(tuple(_crlf(part) for part in body.parts), body.html)
    literal = body.parts[::2]
    encoding = _encoding_for("".join(literal).encode("utf-8"))
    if encoding == "base64":
        return _Part(subtype, encoding, body)
    return _Part(subtype, encoding, body, tuple(_qp_piece(chunk) for chunk in literal))


def fold(name: str, value: str) -> bytes:
    """One ASCII header line, folded after commas so lines stay near 78 characters.

    Raises HeaderError for non-ASCII values and for CR or LF (header injection).
    """
    if not value.isascii() or "\r" in value or "\n" in value:
        raise HeaderError(f"{name} header value must be one line of ASCII")
    if len(name) + len(value) <= 76:  # fits on one line: most headers, most of the time
        return f"{name}: {value}\r\n".encode("ascii")
    line, lines = f"{name}: ", []
    for index, piece in enumerate(value.split(", ")):
        if index and len(line) + 2 + len(piece) > 78:
            lines.append(line + ",")
            line = " " + piece
        else:
            line = line + (", " if index else "") + piece
    lines.append(line)
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


class MergeTemplate:
    """A multipart/alternative message (text, then HTML) with slots for each reader.

    ``headers`` are the same for every reader; ``merge`` adds To, Date, Message-ID and
    the reader's own headers (List-Unsubscribe, which carries their token).
    """

    def __init__(
        self,
        *,
        subject: str,
        sender: str,
        sender_name: str,
        text: Slotted,
        html: Slotted,
        headers: dict[str, str] | None = None,
    ) -> None:
        fixed = EmailMessage(policy=SMTP)
        fixed["Subject"] = subject
        fixed["From"] = HeaderAddress(display_name=sender_name, addr_spec=sender)
        fixed["MIME-Version"] = "1.0"
        for name, value in (headers or {}).items():
            fixed[name] = value
        # The email package folds and RFC 2047-encodes these once for every reader.
        self._head = b"".join(SMTP.fold_binary(name, value) for name, value in fixed.items())
        self._domain = sender.rpartition("@")[2] or "localhost"
        # "=_" occurs in neither quoted-printable nor base64, so never inside a part.
        self._boundary = f"=_{secrets.token_hex(16)}"
        self._parts = [_part("plain", text), _part("html", html)]
        self._date: tuple[int, str] = (0, "")

    def merge(self, recipient: str, values: dict[str, str], headers: dict[str, str]) -> bytes:
        """The whole message for one reader, CRLF line ends, ready for SMTP."""
        out = [
            self._head,
            fold("To", recipient),
            fold("Date", self._now()),
            fold("Message-ID", f"<{time.time_ns():x}.{secrets.token_hex(6)}@{self._domain}>"),
        ]
        out += [fold(name, value) for name, value in headers.items()]
        boundary = self._boundary.encode("ascii")
        out.append(b'Content-Type: multipart/alternative;\r\n boundary="%s"\r\n\r\n' % boundary)
        for part in self._parts:
            out += [
                b"--%s\r\n" % boundary,
                b'Content-Type: text/%s; charset="utf-8"\r\n' % part.subtype.encode("ascii"),
                b"Content-Transfer-Encoding: %s\r\n\r\n" % part.encoding.encode("ascii"),
                part.encoded(values),
                b"\r\n",
            ]
        out.append(b"--%s--\r\n" % boundary)
        return b"".join(out)

    def _now(self) -> str:
        # One Date string per second: formatting it is a tenth of a message's cost.
        second = int(time.time())
        if self._date[0] != second:
            self._date = (second, formatdate(second, localtime=True))
        return self._date[1]
