"""Building MIME messages: plain data in, :class:`email.message.EmailMessage` out."""

from email.headerregistry import Address as HeaderAddress
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, localtime, make_msgid


def build_message(
    *,
    subject: str,
    sender: str,
    sender_name: str,
    recipient: str,
    text: str,
    html: str,
    headers: dict[str, str] | None = None,
) -> EmailMessage:
    """A multipart/alternative message with a text and an HTML part.

    Adds ``Date``, ``Message-ID`` (on the sender's domain) and ``MIME-Version``;
    ``headers`` adds more (List-* headers, for one).
    """
    msg = EmailMessage(policy=SMTP)
    msg["Subject"] = subject
    msg["From"] = HeaderAddress(display_name=sender_name, addr_spec=sender)
    msg["To"] = recipient
    msg["Date"] = format_datetime(localtime())
    msg["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    for name, value in (headers or {}).items():
        msg[name] = value
    # No transfer encoding is forced: the email package picks the shorter of
    # quoted-printable and base64, which keeps non-Latin text small.
    msg.set_content(text, subtype="plain")
    msg.add_alternative(html, subtype="html")
    return msg


def message_bytes(msg: EmailMessage) -> bytes:
    """The message as sent on the wire: CRLF line ends, every header encoded."""
    return msg.as_bytes(policy=SMTP)
