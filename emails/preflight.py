"""Preflight of a finished message: size, links, headers, and what would hurt delivery."""

import re
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from html.parser import HTMLParser
from urllib.parse import urlsplit

from .digest import GMAIL_CLIP_BYTES

REQUIRED_HEADERS = (
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
)
NEAR_CLIP = 0.9  # warn from 90% of Gmail's clipping size


class _Scan(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.images_without_alt = 0

    def handle_starttag(self, tag, attrs):
        values = dict(attrs)
        if tag == "a" and "href" in values:
            self.links.append(values["href"] or "")
        if tag == "img" and not (values.get("alt") or "").strip():
            self.images_without_alt += 1


@dataclass
class Preflight:
    """What ``newsletter digest check`` prints; ``problems`` make it exit non-zero."""

    size: int
    headers: list[tuple[str, str]]
    links: list[str]
    warnings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def check_message(raw: bytes) -> Preflight:
    """Inspect one reader's message as a mail client and a spam filter would."""
    msg = message_from_bytes(raw, policy=policy.default)
    html_part = msg.get_body(("html",))
    text_part = msg.get_body(("plain",))
    scan = _Scan()
    scan.feed(html_part.get_content() if html_part else "")
    text = text_part.get_content() if text_part else ""
    links = list(dict.fromkeys(scan.links + re.findall(r"https?://[^\s<>\"]+", text)))
    headers = [(name, " ".join(str(value).split())) for name, value in msg.items()]
    report = Preflight(size=len(raw), headers=headers, links=links)

    if len(raw) > GMAIL_CLIP_BYTES:
        report.problems.append(
            f"message is {len(raw) / 1024:.1f} KB: "
            f"Gmail clips it above {GMAIL_CLIP_BYTES // 1024} KB"
        )
    elif len(raw) > NEAR_CLIP * GMAIL_CLIP_BYTES:
        report.warnings.append(f"message is {len(raw) / 1024:.1f} KB, near Gmail's clipping size")
    for name in REQUIRED_HEADERS:
        if not msg[name]:
            report.problems.append(f"header {name} is missing")
    if msg["List-Unsubscribe"] and "https://" not in msg["List-Unsubscribe"]:
        report.warnings.append("List-Unsubscribe has no https link (set NEWSLETTER_PUBLIC_URL)")
    if not html_part or not text_part:
        report.problems.append("the message needs both an HTML and a text part")
    plain_http = 0
    for link in links:
        parts = urlsplit(link)
        if parts.scheme not in ("http", "https", "mailto") or (
            parts.scheme != "mailto" and not parts.netloc
        ):
            report.problems.append(f"relative or odd link: {link}")
        plain_http += parts.scheme == "http"
    if plain_http:
        report.warnings.append(f"{plain_http} link(s) not https (see NEWSLETTER_PUBLIC_URL)")
    if scan.images_without_alt:
        report.warnings.append(f"{scan.images_without_alt} image(s) without alt text")
    if not msg["DKIM-Signature"]:
        report.warnings.append("not DKIM-signed (set NEWSLETTER_DKIM_DOMAIN, _SELECTOR, _KEY_FILE)")
    return report
