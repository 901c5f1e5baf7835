"""Defences of the public pages: rate limits, trusted proxies, headers, quiet logs.

Sign-up forms are attacked: bots fill them, and "subscription bombing" uses them to
flood a victim's inbox with confirmations. Readers must not notice any of it.
"""

import base64
import hashlib
import ipaddress
import json
import logging
import re
from datetime import datetime, timedelta
from functools import wraps

import altcha
import regex
from flask import Blueprint, Flask, Response, abort, current_app, jsonify, request
from werkzeug.middleware.proxy_fix import ProxyFix

from emails.addresses import InvalidAddress, mailbox, normalize_address

from .rate_limits import RateLimits, rate_limits

# No inline script or style anywhere on our pages; forms post only to us.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "object-src 'none'"
)
TOKEN_PATH = re.compile(
    # Tracked links (/r/, /o/) name a reader too.
    r"(/(?:confirm|unsubscribe|manage|data|r|o)/)([A-Za-z0-9_\-.]{6})[A-Za-z0-9_\-.]{0,2000}"
)
bp = Blueprint("security", __name__)
log = logging.getLogger(__name__)
# An address in a log line: its local part (apostrophes and the rest of atext) is masked.
# Every quantifier is bounded (a local part has at most 64 octets, a domain label 63, a
# domain 127 labels) and a match starts only after a character that cannot go on a
# local part's word, so a search costs a bounded number of steps per character: linear
# in the line's length, however long a request line an attacker sends. A domain label
# is letters, digits, hyphens and marks (regex's \p{M}: Devanagari and Tamil names are
# written with them, and re has no class for them), or percent-encoded octets, as a
# query string is logged when sent; a query string's %40 counts as the @.
_LOCAL = r"[^\s@<>\"(),;:&?/=\[\]]"
_LABEL = r"(?:[\w\p{M}\-]|%[0-9A-Fa-f]{2})"
ADDRESS = regex.compile(
    rf"(?<![\w\p{{M}}.+%\-])({_LOCAL}){_LOCAL}{{0,63}}(?:@|%40)"
    rf"((?:{_LABEL}{{1,63}}\.){{1,126}}{_LABEL}{{2,63}})"
)


def client_network(address: str) -> str:
    """What a per-client limit counts: the IPv4 address, or an IPv6 client's /64 (one
    subscriber line gets a whole /64, and picking a new address in it costs nothing)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 4:
        return str(ip)
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.ip_network(f"{ip}/64", strict=False))


def init_app(app: Flask) -> None:
    """Rate-limit storage, trusted proxies, headers and redacted logs for the app."""
    if app.config["TRUSTED_PROXIES"]:
        hops = app.config["TRUSTED_PROXIES"]
        # Flask's own way to add WSGI middleware; its types make wsgi_app a method.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]
    app.extensions["rate_limits"] = RateLimits(app)
    app.register_blueprint(bp)
    app.after_request(security_headers)
    redact_logs()


def limit_signups(view):
    """The sign-up limits on ``view``: per client network, and per target inbox from any
    client. A post over one is answered 429 (by the view's blueprint) and goes no further."""

    @wraps(view)
    def limited(*args, **kwargs):
        limits = rate_limits()
        for name, each, key_of in (
            ("per-client", limits.per_client, _client_key),
            ("per-address", limits.per_address, _address_key),
        ):
            if each and not limits.hit(each, f"subscribe-{name}", key := key_of()):
                log.info("a sign-up post over the %s limit (%s)", name, key)  # redacted
                abort(429)
        return view(*args, **kwargs)

    return limited


def _client_key() -> str:
    return client_network(request.remote_addr or "")


def _address_key() -> str:
    # The target of a bombing is the inbox, whatever IPs the posts come from and
    # whatever spelling of its address they use.
    raw = (request.form.get("email") or "")[:400]
    try:
        return mailbox(normalize_address(raw).key)
    except InvalidAddress:
        return raw.strip().casefold()


def security_headers(response: Response) -> Response:
    """Headers for every response; routes that need another CSP set their own first."""
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CSP)
    # Pages carry tokens in their URLs (mail links): never send them on as a Referer.
    headers.setdefault("Referrer-Policy", "no-referrer")
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    if current_app.config["PUBLIC_URL"].startswith("https://"):
        headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    return response


def redact(text: str) -> str:
    """``/confirm/abcdef…`` for tokens and ``r…@newsroom.org`` for addresses."""
    text = TOKEN_PATH.sub(r"\1\2…", text)
    return ADDRESS.sub(r"\1…@\2", text)


def redact_record(record: logging.LogRecord) -> None:
    """Shorten link tokens and mask addresses in a log record: its message (the access
    log's included) and the traceback of an error, which the message does not hold."""
    try:
        message = record.getMessage()
    except Exception:  # a broken format: logging reports it when the record is handled
        message = None
    if message is not None and (cleaned := redact(message)) != message:
        record.msg, record.args = cleaned, ()
    if record.exc_info and not record.exc_text:
        # Formatters print exc_text when it is set: format it once, redacted.
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


class _RedactingRecords:
    """A log record factory: the one before it, each record redacted as it is made."""

    def __init__(self, make) -> None:
        self.make = make

    def __call__(self, *args, **kwargs) -> logging.LogRecord:
        record = self.make(*args, **kwargs)
        redact_record(record)
        return record


def redact_logs() -> None:
    """Redact every log record of this process, whichever logger makes it (once).

    Done where records are made, not by filters: a logger's filter sees neither the
    records its children pass up nor those of loggers made after it was attached, and
    addresses reach the logs through libraries too (a mail server's refusal quotes the
    address it refused).
    """
    if not isinstance(logging.getLogRecordFactory(), _RedactingRecords):
        logging.setLogRecordFactory(_RedactingRecords(logging.getLogRecordFactory()))


def robot_check_enabled() -> bool:
    """True when the sign-up forms ask for an ALTCHA proof of work."""
    return bool(current_app.config["ALTCHA_HMAC_KEY"])


@bp.get("/altcha/challenge")
def altcha_challenge():
    """A fresh proof-of-work challenge for one sign-up (404 when the check is off)."""
    if not robot_check_enabled():
        abort(404)
    config = current_app.config
    challenge = altcha.create_challenge_v1(
        altcha.ChallengeOptionsV1(
            hmac_key=config["ALTCHA_HMAC_KEY"],
            max_number=config["ALTCHA_MAX_NUMBER"],
            expires=datetime.now() + timedelta(seconds=config["ALTCHA_EXPIRES"]),
        )
    )
    body = {
        "algorithm": challenge.algorithm,
        "challenge": challenge.challenge,
        "maxnumber": challenge.max_number,
        "salt": challenge.salt,
        "signature": challenge.signature,
    }
    return jsonify(body), {"Cache-Control": "no-store"}


def robot_check_passes(payload: str | None) -> bool:
    """Verify a solved challenge, once: a replayed solution is refused.

    Used challenges are counted in the rate limits' storage, so with Redis every
    worker and host sees them.
    """
    if not payload or len(payload) > 2000:
        return False
    try:
        ok, _ = altcha.verify_solution_v1(
            payload, current_app.config["ALTCHA_HMAC_KEY"], check_expires=True
        )
    except (ValueError, TypeError, KeyError):
        return False
    if not ok:
        return False
    # The same solution may be sent in many spellings (bytes appended to the base64, the
    # JSON re-indented): what makes it one solution is its signature.
    signature = json.loads(base64.b64decode(payload).decode())["signature"]
    key = f"altcha-used:{hashlib.sha256(str(signature).encode()).hexdigest()}"
    return rate_limits().increment(key, current_app.config["ALTCHA_EXPIRES"]) == 1
