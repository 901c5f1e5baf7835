"""Transactional mail to subscribers: composed here, queued in the outbox, sent later.

Everything queued is added to the caller's transaction, so it is committed with the
change that caused it (a sign-up, a confirmation) or not at all. Each kind of email
is rendered once per newsletter into a mail-merge template (the digests' own), so
queuing one is a merge of bytes, not a run of the templates and the email package:
a sign-up pays tens of microseconds for its confirmation, not milliseconds.
"""

from functools import lru_cache

from flask import current_app
from sqlalchemy.orm import Session

from emails.addresses import envelope_address
from emails.mailmerge import MergeTemplate
from emails.render import environment
from emails.slots import render_slotted

from ..delivery import dkim_sign, list_id_headers, list_unsubscribe
from ..links import confirm_token, data_token, personal_links, public_url
from ..models import OutboxMail, Subscriber, Subscription
from ..texts import TEXTS


def _queue(
    session: Session,
    subscriber: Subscriber,
    subscription: Subscription | None,
    kind: str,
    subject: str,
    fixed: dict,
    personal: dict[str, str],
    headers: tuple[dict[str, str], dict[str, str]] = ({}, {}),
) -> OutboxMail:
    """Queue ``kind`` to ``subscriber``: ``fixed`` is the same for every reader of the
    newsletter, ``personal`` fills the reader's slots; ``headers`` are (fixed, personal)."""
    config = current_app.config
    newsletter = subscription.newsletter if subscription is not None else None
    if newsletter is not None:
        fixed = {"newsletter": newsletter.title, **fixed}
    template = _template(
        kind,
        subject,
        config["MAIL_FROM"],
        (newsletter.from_name if newsletter else "") or config["SITE_NAME"],
        tuple(sorted({"site_name": config["SITE_NAME"], **fixed}.items())),
        ("email", *personal),
        tuple(headers[0].items()),
    )
    recipient = envelope_address(subscriber.email)
    raw = template.merge(recipient, {"email": subscriber.email, **personal}, headers[1])
    queued = OutboxMail(
        kind=kind,
        subscription_id=subscription.id if subscription is not None else None,
        subscriber_id=subscriber.id,
        sender=config["MAIL_FROM"],
        recipient=recipient,
        message=dkim_sign(config, raw),
    )
    session.add(queued)
    return queued


@lru_cache(maxsize=256)
def _template(
    kind: str,
    subject: str,
    sender: str,
    sender_name: str,
    fixed: tuple,
    slots: tuple[str, ...],
    headers: tuple,
) -> MergeTemplate:
    # Everything a template depends on is in its key: a newsletter renamed in the
    # catalog, or another site name, makes another template.
    env, context = environment(), dict(fixed)

    def part(name: str, html: bool):
        template = env.get_template(f"{kind}.{name}")
        return render_slotted(lambda markers: template.render(context | markers), list(slots), html)

    return MergeTemplate(
        subject=subject,
        sender=sender,
        sender_name=sender_name,
        text=part("txt", html=False),
        html=part("html", html=True),
        headers={"Auto-Submitted": "auto-generated", **dict(headers)},
    )


def queue_confirmation(session: Session, subscription: Subscription) -> OutboxMail:
    """Queue the confirmation email of a pending subscription."""
    title = subscription.newsletter.title
    return _queue(
        session,
        subscription.subscriber,
        subscription,
        "confirm",
        TEXTS.confirm_email_subject.format(newsletter=title),
        {"expires_days": max(1, current_app.config["CONFIRM_MAX_AGE"] // 86400)},
        {"confirm_url": public_url("pages.confirm", token=confirm_token(subscription))},
    )


def queue_welcome(session: Session, subscription: Subscription) -> OutboxMail | None:
    """Queue the welcome email of a just-confirmed subscription, if its newsletter has one."""
    newsletter = subscription.newsletter
    if not newsletter.welcome:
        return None
    links = personal_links(subscription)
    mail_from = current_app.config["MAIL_FROM"]
    return _queue(
        session,
        subscription.subscriber,
        subscription,
        "welcome",
        TEXTS.welcome_email_subject.format(newsletter=newsletter.title),
        {"description": newsletter.description, "cadence": newsletter.cadence},
        links,
        (
            list_id_headers(mail_from, newsletter.slug, newsletter.title),
            {"List-Unsubscribe": list_unsubscribe(mail_from, links["unsubscribe_url"])},
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
        {"minutes": max(1, config["DATA_LINK_MAX_AGE"] // 60)},
        {"data_url": public_url("preferences.data", token=data_token(subscriber))},
    )
