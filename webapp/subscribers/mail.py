"""Transactional mail to subscribers: composed here, queued in the outbox, sent later.

Everything queued is added to the caller's transaction, so it is committed with the
change that caused it (a sign-up, a confirmation) or not at all.
"""

from flask import current_app
from sqlalchemy.orm import Session

from emails.addresses import envelope_address
from emails.message import build_message, message_bytes
from emails.render import render_pair

from ..delivery import dkim_sign, list_headers
from ..links import confirm_token, data_token, personal_links, public_url
from ..models import OutboxMail, Subscriber, Subscription
from ..texts import TEXTS


def _queue(
    session: Session,
    subscriber: Subscriber,
    subscription: Subscription | None,
    kind: str,
    subject: str,
    context: dict,
    headers: dict[str, str],
) -> OutboxMail:
    config = current_app.config
    newsletter = subscription.newsletter if subscription is not None else None
    recipient = envelope_address(subscriber.email)
    if newsletter is not None:
        context = {"newsletter": newsletter.title, **context}
    text, html = render_pair(kind, site_name=config["SITE_NAME"], email=subscriber.email, **context)
    msg = build_message(
        subject=subject,
        sender=config["MAIL_FROM"],
        sender_name=(newsletter.from_name if newsletter else "") or config["SITE_NAME"],
        recipient=recipient,
        text=text,
        html=html,
        headers={"Auto-Submitted": "auto-generated", **headers},
    )
    queued = OutboxMail(
        kind=kind,
        subscription_id=subscription.id if subscription is not None else None,
        subscriber_id=subscriber.id,
        sender=config["MAIL_FROM"],
        recipient=recipient,
        message=dkim_sign(config, message_bytes(msg)),
    )
    session.add(queued)
    return queued


def queue_confirmation(session: Session, subscription: Subscription) -> OutboxMail:
    """Queue the confirmation email of a pending subscription."""
    title = subscription.newsletter.title
    return _queue(
        session,
        subscription.subscriber,
        subscription,
        "confirm",
        TEXTS.confirm_email_subject.format(newsletter=title),
        {
            "confirm_url": public_url("pages.confirm", token=confirm_token(subscription)),
            "expires_days": max(1, current_app.config["CONFIRM_MAX_AGE"] // 86400),
        },
        {},
    )


def queue_welcome(session: Session, subscription: Subscription) -> OutboxMail | None:
    """Queue the welcome email of a just-confirmed subscription, if its newsletter has one."""
    newsletter = subscription.newsletter
    if not newsletter.welcome:
        return None
    links = personal_links(subscription)
    return _queue(
        session,
        subscription.subscriber,
        subscription,
        "welcome",
        TEXTS.welcome_email_subject.format(newsletter=newsletter.title),
        {"description": newsletter.description, "cadence": newsletter.cadence, **links},
        list_headers(
            current_app.config["MAIL_FROM"],
            newsletter.slug,
            newsletter.title,
            links["unsubscribe_url"],
        ),
    )


def queue_data_link(session: Session, subscriber: Subscriber) -> OutboxMail:
    """Queue the short-lived link to a reader's data (download, erase) to their address."""
    config = current_app.config
    return _queue(
        session,
        subscriber,
        None,
        "data_link",
        TEXTS.data_email_subject.format(site=config["SITE_NAME"]),
        {
            "data_url": public_url("preferences.data", token=data_token(subscriber)),
            "minutes": max(1, config["DATA_LINK_MAX_AGE"] // 60),
        },
        {},
    )
