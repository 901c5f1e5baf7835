"""Transactional mail of the web app: composed here, queued in the outbox, sent later."""

from flask import current_app, url_for
from sqlalchemy.orm import Session

from emails.addresses import ascii_address
from emails.message import build_message, message_bytes
from emails.render import render_pair

from .messages import MESSAGES
from .models import OutboxMessage, Subscription
from .tokens import make_token


def public_url(endpoint: str, **values: object) -> str:
    """An absolute link for mail, based on ``PUBLIC_URL`` rather than the request's host."""
    return current_app.config["PUBLIC_URL"] + url_for(endpoint, **values)


def confirm_token(subscription: Subscription) -> str:
    """The token of this subscription's current confirmation link."""
    return make_token("confirm", [subscription.id, subscription.confirm_nonce])


def queue_confirmation(session: Session, subscription: Subscription) -> OutboxMessage:
    """Render the confirmation email of a pending subscription and add it to the outbox.

    Added to the caller's transaction: it is committed with the subscription or not at all.
    """
    config = current_app.config
    newsletter = subscription.newsletter
    recipient = ascii_address(subscription.subscriber.email)
    text, html = render_pair(
        "confirm",
        site_name=config["SITE_NAME"],
        newsletter=newsletter.title,
        email=subscription.subscriber.email,
        confirm_url=public_url("pages.confirm", token=confirm_token(subscription)),
        expires_days=max(1, config["CONFIRM_MAX_AGE"] // 86400),
    )
    msg = build_message(
        subject=MESSAGES.confirm_email_subject.format(newsletter=newsletter.title),
        sender=config["MAIL_FROM"],
        sender_name=newsletter.from_name or config["SITE_NAME"],
        recipient=recipient,
        text=text,
        html=html,
        headers={"Auto-Submitted": "auto-generated"},
    )
    queued = OutboxMessage(
        kind="confirm",
        subscription_id=subscription.id,
        sender=config["MAIL_FROM"],
        recipient=recipient,
        message=message_bytes(msg),
    )
    session.add(queued)
    return queued
