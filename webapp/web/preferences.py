"""The reader's own pages, opened from links in mail: unsubscribe and manage.

The token in the URL proves the address, so no login is needed. The unsubscribe POST
takes no CSRF token and no cookie, because mail providers send it that way (RFC 8058).
"""

import json

from flask import (
    Blueprint,
    current_app,
    flash,
    get_flashed_messages,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import BooleanField, HiddenField

from . import subscriptions
from .db import get_session
from .links import manage_url, subscriber_for, subscription_for
from .mail import queue_welcome
from .messages import MESSAGES
from .models import Newsletter, Status, Subscriber
from .outbox import wake_worker
from .pages import newsletters, notice
from .tokens import TokenInvalid

bp = Blueprint("preferences", __name__)


class ManageForm(FlaskForm):
    """One action of the manage page; CSRF-protected like every form."""

    action = HiddenField()
    newsletter = HiddenField()
    erase_confirm = BooleanField(MESSAGES.manage_erase_confirm)


def _invalid():
    return notice(MESSAGES.link_invalid_title, MESSAGES.link_invalid_text, 404)


@bp.get("/unsubscribe/<token>")
def unsubscribe(token: str):
    """A page with one button; opening it changes nothing (mail scanners open links)."""
    try:
        subscription = subscription_for(get_session(), token)
    except TokenInvalid:
        return _invalid()
    if subscription.status == Status.UNSUBSCRIBED:
        return _unsubscribed_page(subscription)
    return render_template("unsubscribe.html", subscription=subscription)


@bp.post("/unsubscribe/<token>")
def unsubscribe_post(token: str):
    """Unsubscribe at once and answer 200; also the RFC 8058 one-click POST."""
    session = get_session()
    try:
        subscription = subscription_for(session, token)
    except TokenInvalid:
        return _invalid()
    subscriptions.unsubscribe(session, subscription)
    session.commit()
    return _unsubscribed_page(subscription)


def _unsubscribed_page(subscription):
    text = MESSAGES.unsubscribed_text.format(
        email=subscription.subscriber.email, newsletter=subscription.newsletter.title
    )
    link = (manage_url(subscription.subscriber), MESSAGES.manage_link)
    return notice(MESSAGES.unsubscribed_title, text, link=link)


@bp.get("/manage/<token>")
def manage(token: str):
    """Every newsletter with this reader's state, and their data: download or erase."""
    session = get_session()
    try:
        subscriber = subscriber_for(session, token)
    except TokenInvalid:
        return _invalid()
    return _manage_page(subscriber, ManageForm(formdata=None))


def _manage_page(subscriber: Subscriber, form: ManageForm, error: str | None = None, status=200):
    states = {s.newsletter_id: s.status for s in subscriber.subscriptions}
    rows = [(n, states.get(n.id)) for n in newsletters()]
    return (
        render_template(
            "manage.html",
            subscriber=subscriber,
            rows=rows,
            form=form,
            error=error,
            done=get_flashed_messages(category_filter=["manage"]),
            Status=Status,
        ),
        status,
    )


@bp.post("/manage/<token>")
def manage_post(token: str):
    """Subscribe, leave one, leave all, download or erase; then back to the page."""
    session = get_session()
    try:
        subscriber = subscriber_for(session, token)
    except TokenInvalid:
        return _invalid()
    form = ManageForm()
    if not form.validate():
        return _manage_page(subscriber, form, MESSAGES.session_expired, 400)
    action = form.action.data
    consent = subscriptions.Consent(
        ip=request.remote_addr,
        user_agent=request.user_agent.string[:512] or None,
        source="manage page",
    )
    if action == "export":
        data = json.dumps(
            subscriptions.personal_data(session, subscriber), indent=2, ensure_ascii=False
        )
        return data, {
            "Content-Type": "application/json; charset=utf-8",
            "Content-Disposition": 'attachment; filename="my-newsletter-data.json"',
            "Cache-Control": "no-store",
        }
    if action == "erase":
        if not form.erase_confirm.data:
            return _manage_page(subscriber, form, MESSAGES.manage_erase_needs_confirm, 400)
        subscriptions.erase(session, subscriber.email_key, current_app.config["SECRET_KEY"])
        session.commit()
        return notice(MESSAGES.erased_title, MESSAGES.erased_text)
    if action == "leave-all":
        for subscription in subscriber.subscriptions:
            subscriptions.unsubscribe(session, subscription)
        flash(MESSAGES.manage_left_all, "manage")
    elif action in ("subscribe", "leave"):
        newsletter = session.scalar(
            select(Newsletter).where(Newsletter.slug == form.newsletter.data)
        )
        if newsletter is None:
            return _manage_page(subscriber, form, MESSAGES.unknown_newsletter, 400)
        if action == "subscribe":
            confirmed = subscriptions.subscribe_confirmed(session, subscriber, newsletter, consent)
            if confirmed is not None:
                queue_welcome(session, confirmed)
            flash(MESSAGES.manage_subscribed.format(newsletter=newsletter.title), "manage")
        else:
            for subscription in subscriber.subscriptions:
                if subscription.newsletter_id == newsletter.id:
                    subscriptions.unsubscribe(session, subscription)
            flash(MESSAGES.manage_left.format(newsletter=newsletter.title), "manage")
    else:
        return _manage_page(subscriber, form, MESSAGES.server_error_text, 400)
    session.commit()
    wake_worker()
    return redirect(url_for(".manage", token=token))
