"""Mail of the web app: composed here, queued in the outbox, sent later.

Everything queued is added to the caller's transaction, so it is committed with the
change that caused it (a sign-up, a confirmation) or not at all.
"""

from functools import cache
from pathlib import Path
from urllib.parse import quote

from flask import current_app
from sqlalchemy.orm import Session

from emails.addresses import envelope_address
from emails.dkim import Signer
from emails.message import build_message, message_bytes
from emails.render import render_pair

from .links import confirm_token, personal_links, public_url
from .messages import MESSAGES
from .models import Newsletter, OutboxMessage, Subscription


def list_headers(newsletter: Newsletter, unsubscribe_url: str) -> dict[str, str]:
    """The List-* headers of mail to a newsletter's readers (RFC 2369, 2919, 8058)."""
    headers = list_id_headers(newsletter)
    headers["List-Unsubscribe"] = list_unsubscribe(unsubscribe_url)
    return headers


def list_id_headers(newsletter: Newsletter) -> dict[str, str]:
    """The List-* headers that are the same for every reader of a newsletter."""
    domain = current_app.config["MAIL_FROM"].rpartition("@")[2] or "localhost"
    title = newsletter.title.replace('"', "'").replace("\\", "")
    return {
        "List-Id": f'"{title}" <{newsletter.slug}.{domain}>',
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }


def list_unsubscribe(unsubscribe_url: str) -> str:
    """The reader's List-Unsubscribe value: the one-click link, and a mailto as well."""
    token = unsubscribe_url.rsplit("/", 1)[1]
    mailto = f"mailto:{current_app.config['MAIL_FROM']}?subject={quote('unsubscribe ' + token)}"
    return f"<{unsubscribe_url}>, <{mailto}>"


def _queue(
    session: Session,
    subscription: Subscription,
    kind: str,
    subject: str,
    context: dict,
    headers: dict[str, str],
) -> OutboxMessage:
    config = current_app.config
    newsletter = subscription.newsletter
    recipient = envelope_address(subscription.subscriber.email)
    text, html = render_pair(
        kind,
        site_name=config["SITE_NAME"],
        newsletter=newsletter.title,
        email=subscription.subscriber.email,
        **context,
    )
    msg = build_message(
        subject=subject,
        sender=config["MAIL_FROM"],
        sender_name=newsletter.from_name or config["SITE_NAME"],
        recipient=recipient,
        text=text,
        html=html,
        headers={"Auto-Submitted": "auto-generated", **headers},
    )
    queued = OutboxMessage(
        kind=kind,
        subscription_id=subscription.id,
        subscriber_id=subscription.subscriber_id,
        sender=config["MAIL_FROM"],
        recipient=recipient,
        message=dkim_sign(message_bytes(msg)),
    )
    session.add(queued)
    return queued


def queue_confirmation(session: Session, subscription: Subscription) -> OutboxMessage:
    """Queue the confirmation email of a pending subscription."""
    title = subscription.newsletter.title
    return _queue(
        session,
        subscription,
        "confirm",
        MESSAGES.confirm_email_subject.format(newsletter=title),
        {
            "confirm_url": public_url("pages.confirm", token=confirm_token(subscription)),
            "expires_days": max(1, current_app.config["CONFIRM_MAX_AGE"] // 86400),
        },
        {},
    )


def queue_welcome(session: Session, subscription: Subscription) -> OutboxMessage | None:
    """Queue the welcome email of a just-confirmed subscription, if its newsletter has one."""
    newsletter = subscription.newsletter
    if not newsletter.welcome:
        return None
    links = personal_links(subscription)
    return _queue(
        session,
        subscription,
        "welcome",
        MESSAGES.welcome_email_subject.format(newsletter=newsletter.title),
        {"description": newsletter.description, "cadence": newsletter.cadence, **links},
        list_headers(newsletter, links["unsubscribe_url"]),
    )


def dkim_sign(message: bytes) -> bytes:
    """Sign ``message`` when NEWSLETTER_DKIM_DOMAIN, _SELECTOR and _KEY_FILE are set."""
    signer = dkim_signer()
    return message if signer is None else signer.sign(message)


def dkim_signer() -> Signer | None:
    """The configured DKIM signer (its key read and parsed once), or None."""
    config = current_app.config
    if not (config["DKIM_DOMAIN"] and config["DKIM_SELECTOR"] and config["DKIM_KEY_FILE"]):
        return None
    return _signer(config["DKIM_DOMAIN"], config["DKIM_SELECTOR"], config["DKIM_KEY_FILE"])


@cache
def _signer(domain: str, selector: str, path: str) -> Signer:
    return Signer(domain=domain, selector=selector, private_key=Path(path).read_bytes())
