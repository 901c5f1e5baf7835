"""VERP: an envelope sender per message, so a bounce says which message it is about.

Every message goes out from ``bounces+TOKEN@domain``. TOKEN names what was sent, a
delivery of an issue (``d``) or an outbox message (``o``), by its id, with a short
keyed hash, so a forged or altered token names nothing. Lower-case letters and digits
only: some relays change the case of a local part, and TOKEN is read in either case.
"""

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping

KINDS = ("d", "o")  # a delivery of an issue, an outbox message
TOKEN = re.compile(r"([do])([0-9a-z]{1,13})-([a-z2-7]{13})")


def bounce_address(config: Mapping) -> str:
    """The base of every envelope sender: BOUNCE_ADDRESS, or bounces@ MAIL_FROM's domain."""
    return config.get("BOUNCE_ADDRESS") or "bounces@" + config["MAIL_FROM"].rpartition("@")[2]


class Verp:
    """Makes and reads envelope senders; needs no app once made (forked senders use it)."""

    def __init__(self, secret_key: str, base: str) -> None:
        self.local, _, self.domain = base.rpartition("@")
        key = hmac.new(secret_key.encode(), b"newsletter.verp", hashlib.sha256).digest()
        self._mac = hmac.new(key, digestmod=hashlib.sha256)

    @classmethod
    def from_config(cls, config: Mapping) -> "Verp":
        """The app's VERP, from SECRET_KEY and the bounce address."""
        return cls(config["SECRET_KEY"], bounce_address(config))

    def _sign(self, text: str) -> str:
        mac = self._mac.copy()
        mac.update(text.encode())
        return base64.b32encode(mac.digest()[:8]).decode().lower().rstrip("=")

    def token(self, kind: str, row_id: int) -> str:
        """The token naming row ``row_id`` of ``kind`` (``d`` or ``o``)."""
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        text = kind + base36(row_id)
        return f"{text}-{self._sign(text)}"

    def sender(self, kind: str, row_id: int) -> str:
        """The envelope sender of one message."""
        return f"{self.local}+{self.token(kind, row_id)}@{self.domain}"

    def read(self, text: str | None) -> tuple[str, int] | None:
        """The (kind, id) an address or a token names, or None if it names nothing of ours
        (not a token, or one whose hash does not match)."""
        if not text:
            return None
        local = text.strip().strip("<>").rpartition("@")[0] or text.strip()
        token = local.rpartition("+")[2].lower()
        found = TOKEN.fullmatch(token)
        if found is None:
            return None
        kind, number, mac = found.groups()
        if not hmac.compare_digest(mac, self._sign(kind + number)):
            return None
        return kind, int(number, 36)

    def is_bounce_address(self, address: str) -> bool:
        """True for the bounce address itself and every ``local+TOKEN`` form of it."""
        local, _, domain = address.strip().strip("<>").rpartition("@")
        return domain.lower() == self.domain.lower() and (
            local.lower() == self.local.lower()
            or local.lower().startswith(self.local.lower() + "+")
        )


def base36(number: int) -> str:
    """``number`` (not negative) in base 36, lower case: short ids in tokens."""
    if number < 0:
        raise ValueError("ids are positive")
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    text = ""
    while True:
        number, rest = divmod(number, 36)
        text = digits[rest] + text
        if not number:
            return text
