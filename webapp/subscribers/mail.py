"""Transactional mail to subscribers: composed here, queued in the outbox, sent later.

Everything queued is added to the caller's transaction, so it is committed with the
change that caused it (a sign-up, a confirmation) or not at all. Each kind of email
is rendered once per newsletter into a mail-merge template (the digests' own), so
queuing one is a merge of bytes, not a run of the templates and the email package:
a sign-up pays tens of microseconds for its confirmation, not milliseconds.
"""

from collections.abc import Sequence
from functools import lru_cache

from flask import current_app
from flask_babel import force_locale
from sqlalchemy import Row, insert
from sqlalchemy.orm import Session

from emails.addresses import envelope_address
from emails.mailmerge import MergeTemplate
from emails.render import environment
from emails.slots import render_slotted

from ..i18n import CATALOGS
from ..links import data_token, manage_url, personal_links, public_url, reader_links
from ..mailout.models import OutboxMail
from ..mailout.relay import dkim_sign, list_id_headers, list_unsubscribe
from ..models import Newsletter, Subscriber, Subscription
from ..texts import DEFAULT_LANGUAGE, TEXTS
from .service import Due


def _queue(session: Session, *mail, **options) -> None:
    """Queue one email (see :func:`_mail`): one INSERT, no object loaded or flushed."""
    session.connection().execute(_NEW_MAIL, _mail(*mail, **options))


def _mail(
    to: tuple[int, str],
    newsletter: Newsletter | Row | None,
    subscription_id: int | None,
    kind: str,
    subject: str,
    fixed: dict,
    personal: dict[str, str],
    headers: tuple[dict[str, str], dict[str, str]] = ({}, {}),
    language: str = DEFAULT_LANGUAGE,
) -> dict:
    """The outbox row of ``kind`` to ``to`` (subscriber id, address) in the reader's
    ``language``: ``fixed`` is the same for every reader of the newsletter, ``personal``
    fills the reader's slots; ``headers`` are (fixed, personal)."""
    config = current_app.config
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
        language,
    )
    subscriber_id, email = to
    recipient = envelope_address(email)
    raw = template.merge(recipient, {"email": email, **personal}, headers[1])
    return {
        "kind": kind,
        "subscription_id": subscription_id,
        "subscriber_id": subscriber_id,
        "sender": config["MAIL_FROM"],
        "recipient": recipient,
        "message": dkim_sign(config, raw),
    }


_NEW_MAIL = insert(OutboxMail)  # built once: every confirmation runs it


@lru_cache(maxsize=256)
def _template(
    kind: str,
    subject: str,
    sender: str,
    sender_name: str,
    fixed: tuple,
    slots: tuple[str, ...],
    headers: tuple,
    language: str,
) -> MergeTemplate:
    # Everything a template depends on is in its key: a newsletter renamed in the
    # catalog, another site name or another language makes another template.
    env, context = environment(language, CATALOGS), dict(fixed)

    def part(name: str, html: bool):
        template = env.get_template(f"{kind}.{name}")
        return render_slotted(
            lambda markers: template.render({**context, **markers}), list(slots), html
        )

    return MergeTemplate(
        subject=subject,
        sender=sender,
        sender_name=sender_name,
        text=part("txt", html=False),
        html=part("html", html=True),
        headers={"Auto-Submitted": "auto-generated", **dict(headers)},
    )


def queue_confirmation(session: Session, subscription: Subscription) -> None:
    """Queue the confirmation email of a pending subscription."""
    subscriber = subscription.subscriber
    queue_confirmation_of(
        session,
        subscription.newsletter,
        Due(
            subscription.id,
            subscription.confirm_nonce,
            subscriber.id,
            subscriber.email,
            subscriber.language,
        ),
    )


def queue_confirmation_of(session: Session, newsletter, due: Due) -> None:
    """Queue the confirmation email a sign-up called for (:func:`service.subscribe`);
    ``newsletter`` is a Newsletter or a row with its ``title`` and ``from_name``."""
    queue_confirmations_of(session, [(newsletter, due)])


def queue_confirmations_of(
    session: Session, confirmations: Sequence[tuple[Newsletter | Row, Due]]
) -> None:
    """:func:`queue_confirmation_of` for each (newsletter, due) of ``confirmations``,
    in one statement."""
    session.connection().execute(
        _NEW_MAIL, [_confirmation(newsletter, due) for newsletter, due in confirmations]
    )


def _confirmation(newsletter: Newsletter | Row, due: Due) -> dict:
    subject = _confirm_subject(due.language, newsletter.title)
    links = reader_links(due.language)
    return _mail(
        (due.subscriber_id, due.email),
        newsletter,
        due.subscription_id,
        "confirm",
        subject,
        {"expires_days": max(1, current_app.config["CONFIRM_MAX_AGE"] // 86400)},
        {"confirm_url": links.confirm_url(due.subscription_id, due.nonce)},
        language=due.language,
    )


@lru_cache(maxsize=256)
def _confirm_subject(language: str, title: str) -> str:
    # Each sign-up's: the catalogs are loaded once per process, so it is found once.
    with force_locale(language):
        return TEXTS.confirm_email_subject.format(newsletter=title)


def queue_welcome(session: Session, subscription: Subscription) -> None:
    """Queue the welcome email of a just-confirmed subscription, if its newsletter has one."""
    newsletter = subscription.newsletter
    if not newsletter.welcome or subscription.subscriber.suppressed_at is not None:
        return  # a suppressed address gets no welcome (confirming lifts it first)
    links = personal_links(subscription)
    mail_from = current_app.config["MAIL_FROM"]
    subscriber = subscription.subscriber
    with force_locale(subscriber.language):
        subject = TEXTS.welcome_email_subject.format(newsletter=newsletter.title)
    _queue(
        session,
        (subscriber.id, subscriber.email),
        newsletter,
        subscription.id,
        "welcome",
        subject,
        {"description": newsletter.description, "cadence": newsletter.cadence},
        links,
        (
            list_id_headers(mail_from, newsletter.slug, newsletter.title),
            {"List-Unsubscribe": list_unsubscribe(mail_from, links["unsubscribe_url"])},
        ),
        language=subscriber.language,
    )


def queue_data_link(session: Session, subscriber: Subscriber) -> None:
    """Queue the short-lived link to a reader's data (download, erase) to their address."""
    config = current_app.config
    with force_locale(subscriber.language):
        subject = TEXTS.data_email_subject.format(site=config["SITE_NAME"])
    data_url = public_url("preferences.data", subscriber.language, token=data_token(subscriber))
    _queue(
        session,
        (subscriber.id, subscriber.email),
        None,
        None,
        "data_link",
        subject,
        {"minutes": max(1, config["DATA_LINK_MAX_AGE"] // 60)},
        {"data_url": data_url},
        language=subscriber.language,
    )


def queue_probe(session: Session, subscriber: Subscriber) -> None:
    """Queue a probe to a reader whose address a report with no token of ours said is
    gone: it goes out with a fresh VERP token of its own, so only its own bounce can
    name the reader (as Mailman probes)."""
    config = current_app.config
    with force_locale(subscriber.language):
        subject = TEXTS.probe_email_subject.format(site=config["SITE_NAME"])
    _queue(
        session,
        (subscriber.id, subscriber.email),
        None,
        None,
        "probe",
        subject,
        {},
        {"manage_url": manage_url(subscriber)},
        language=subscriber.language,
    )


def wake_worker() -> None:
    """Ask this process's outbox thread, if it runs (in a web server), to deliver what
    was just queued: a signal through ``app.extensions``, so nothing here imports the
    worker, and a staff command never starts one."""
    worker = current_app.extensions.get("outbox_worker")
    if worker is not None:
        worker.wake()
