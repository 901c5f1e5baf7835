"""``/outbox``: the mail captured by the ``file`` backend, readable in the browser.

Registered only with ``MAIL_BACKEND=file``, the development default, so that a
newcomer can open a confirmation email and click its link without a mail server. It
shows every confirmation link, so it answers only clients on this machine (loopback)
unless ``CAPTURED_MAIL_PUBLIC`` says otherwise; everyone else gets the not-found page,
the same as a site without the viewer.
"""

import ipaddress
import re
from email import message_from_bytes, policy
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path

from flask import Blueprint, abort, current_app, render_template, request

bp = Blueprint("captured", __name__, url_prefix="/outbox")

NAME = re.compile(r"^\d{8}T\d{12}-[0-9a-f]{8}\.eml$")
LIST_LIMIT = 200
# Headers a reverse proxy adds: with any of them, the peer on loopback is a proxy.
FORWARDING_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP")


@bp.before_request
def _loopback_only() -> None:
    if not current_app.config["CAPTURED_MAIL_PUBLIC"] and not local_client():
        abort(404)


def local_client() -> bool:
    """True when the request comes from this machine.

    Behind trusted proxies (``TRUSTED_PROXIES``) the remote address is already the
    client's. Without them, a request a proxy relayed still comes from the proxy's
    address, often loopback (the app on 127.0.0.1 behind a proxy on the same host):
    it is not a local client.
    """
    if not current_app.config["TRUSTED_PROXIES"] and any(
        name in request.headers for name in FORWARDING_HEADERS
    ):
        return False
    return is_loopback(request.remote_addr)


def is_loopback(address: str | None) -> bool:
    """True for 127.0.0.0/8 and ::1 (also written as an IPv4-mapped IPv6 address)."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def _folder() -> Path:
    return Path(current_app.config["OUTBOX_PATH"])


def _load(name: str) -> EmailMessage:
    if not NAME.match(name):
        abort(404)
    try:
        data = (_folder() / name).read_bytes()
    except FileNotFoundError:
        abort(404)
    return message_from_bytes(data, policy=policy.default)


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self._href: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self._href = dict(attrs).get("href")
            self._text = []

    def handle_data(self, data):
        if self._href is not None:
            self._text.append(data)

    def handle_endtag(self, tag):
        if tag == "a" and self._href:
            self.links.append((" ".join("".join(self._text).split()), self._href))
            self._href = None


def _parts(msg: EmailMessage) -> tuple[str, str]:
    text = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    return (text.get_content() if text else "", html.get_content() if html else "")


# Also answers /outbox itself: its redirect to /outbox/ would come before the loopback
# check and tell anyone that there is a viewer.
@bp.get("/", strict_slashes=False)
def index():
    """The newest captured messages first."""
    folder = _folder()
    names = sorted((p.name for p in folder.glob("*.eml")), reverse=True) if folder.is_dir() else []
    rows = []
    for name in names[:LIST_LIMIT]:
        msg = _load(name)
        rows.append({"name": name, "to": msg["To"], "subject": msg["Subject"], "date": msg["Date"]})
    return render_template("outbox_list.html", rows=rows, total=len(names))


@bp.get("/<name>")
def message(name: str):
    """One message: its headers, its links (to click), its text and its HTML part."""
    msg = _load(name)
    text, html = _parts(msg)
    parser = _Links()
    parser.feed(html)
    headers = [(k, v) for k, v in msg.items() if not k.lower().startswith("content-")]
    return render_template(
        "outbox_message.html",
        name=name,
        msg=msg,
        headers=headers,
        text=text,
        has_html=bool(html),
        links=parser.links,
    )


@bp.get("/<name>/html")
def message_html(name: str):
    """The HTML part alone, framed by the message page; sandboxed so no script runs."""
    _, html = _parts(_load(name))
    return html, {
        "Content-Type": "text/html; charset=utf-8",
        "Content-Security-Policy": "sandbox allow-popups allow-popups-to-escape-sandbox",
        "X-Frame-Options": "SAMEORIGIN",
    }


@bp.get("/<name>/raw")
def message_raw(name: str):
    """The message as it would have been sent, to save and open in a mail client."""
    _load(name)
    return (_folder() / name).read_bytes(), {
        "Content-Type": "message/rfc822",
        "Content-Disposition": f'attachment; filename="{name}"',
    }
