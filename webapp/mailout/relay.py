"""What both mail paths share, transactional mail and issues: the transport the
configuration names, the DKIM signer, and the List-* headers of a newsletter's mail.

Everything here takes the configuration as a plain mapping: no app is needed, so the
forked senders of a digest and the outbox worker use it alike.
"""

from collections.abc import Mapping
from functools import cache
from pathlib import Path
from string import ascii_letters, digits
from urllib.parse import quote

from emails.dkim import Signer
from emails.transport import FileTransport, SmtpSettings, SmtpTransport, Transport


def transport_from_config(config: Mapping, deadline: float | None = None) -> Transport:
    """The transport ``MAIL_BACKEND`` names, set up from the configuration.

    ``deadline`` bounds each SMTP delivery attempt as a whole (see SmtpTransport).
    """
    if config["MAIL_BACKEND"] == "file":
        return FileTransport(config["OUTBOX_PATH"])
    return SmtpTransport(
        SmtpSettings(
            host=config["SMTP_HOST"],
            port=config["SMTP_PORT"],
            username=config["SMTP_USERNAME"],
            password=config["SMTP_PASSWORD"],
            security=config["SMTP_SECURITY"],
            timeout=config["SMTP_TIMEOUT"],
        ),
        deadline=deadline,
    )


def outbox_transport(config: Mapping) -> Transport:
    """The transport of the transactional outbox: every attempt ends within half the
    outbox lease, so a claim never runs out while its sender may still deliver."""
    return transport_from_config(config, deadline=config["OUTBOX_LEASE"] / 2)


def dkim_signer(config: Mapping) -> Signer | None:
    """The configured DKIM signer (its key read and parsed once), or None."""
    if not (config["DKIM_DOMAIN"] and config["DKIM_SELECTOR"] and config["DKIM_KEY_FILE"]):
        return None
    return _signer(config["DKIM_DOMAIN"], config["DKIM_SELECTOR"], config["DKIM_KEY_FILE"])


@cache
def _signer(domain: str, selector: str, path: str) -> Signer:
    return Signer(domain=domain, selector=selector, private_key=Path(path).read_bytes())


def dkim_sign(config: Mapping, message: bytes) -> bytes:
    """Sign ``message`` when NEWSLETTER_DKIM_DOMAIN, _SELECTOR and _KEY_FILE are set."""
    signer = dkim_signer(config)
    return message if signer is None else signer.sign(message)


def list_id_headers(mail_from: str, slug: str, title: str) -> dict[str, str]:
    """The List-* headers that are the same for every reader of a newsletter."""
    domain = mail_from.rpartition("@")[2] or "localhost"
    title = title.replace('"', "'").replace("\\", "")
    return {
        "List-Id": f'"{title}" <{slug}.{domain}>',
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }


_URL_SAFE = frozenset(ascii_letters + digits + "-_.")


def list_unsubscribe(mail_from: str, unsubscribe_url: str) -> str:
    """The reader's List-Unsubscribe value: the one-click link, and a mailto as well."""
    token = unsubscribe_url.rsplit("/", 1)[1]
    # A token is URL-safe base64 and dots, which quote() keeps as they are: only
    # the space needs it (checked once per token, not quoted: quote() is slow).
    subject = (
        "unsubscribe%20" + token if _URL_SAFE.issuperset(token) else quote("unsubscribe " + token)
    )
    return f"<{unsubscribe_url}>, <mailto:{mail_from}?subject={subject}>"
