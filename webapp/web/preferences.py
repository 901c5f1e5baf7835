"""The reader's own pages, opened from links in mail: unsubscribe, manage, and the
short-lived page of one's data (download, erase).

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
from flask_babel import force_locale

from ..catalog import newsletter_by_slug
from ..db import get_session
from ..links import issue_of_unsubscribe, manage_url
from ..models import Subscriber, Subscription, SubscriptionStatus
from ..privacy import data as personal
from ..subscribers import service
from ..subscribers.mail import queue_data_link, queue_welcome, wake_worker
from ..texts import LANGUAGES, TEXTS
from .forms import ManageForm
from .notices import linked, notice
from .signup import newsletters

bp = Blueprint("preferences", __name__)


@bp.get("/unsubscribe/<token>")
def unsubscribe(token: str):
    """A page with one button; opening it changes nothing (mail scanners open links)."""
    subscription = linked("unsubscribe", token)
    if subscription.status == SubscriptionStatus.UNSUBSCRIBED:
        return _unsubscribed_page(subscription)
    return render_template("unsubscribe.html", subscription=subscription)


@bp.post("/unsubscribe/<token>")
def unsubscribe_post(token: str):
    """Unsubscribe at once and answer 200; also the RFC 8058 one-click POST."""
    subscription = linked("unsubscribe", token)
    session = get_session()
    # The page's button says so; anything else posting here is a mail client's one-click.
    how = "link" if request.form.get("via") == "page" else "one-click"
    consent = service.Consent.from_request(request)
    service.unsubscribe(session, subscription, how, consent, issue_id=issue_of_unsubscribe(token))
    session.commit()
    return _unsubscribed_page(subscription)


def _unsubscribed_page(subscription: Subscription):
    text = TEXTS.unsubscribed_text.format(
        email=subscription.subscriber.email, newsletter=subscription.newsletter.title
    )
    link = (manage_url(subscription.subscriber), TEXTS.manage_link)
    return notice(TEXTS.unsubscribed_title, text, link=link)


@bp.get("/manage/<token>")
def manage(token: str):
    """Every newsletter with this reader's state, and their data: download or erase."""
    return _manage_page(linked("manage", token), ManageForm(formdata=None))


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
            Status=SubscriptionStatus,
        ),
        status,
    )


@bp.post("/manage/<token>")
def manage_post(token: str):
    """Subscribe, leave one, leave all, ask for a link to one's data, sign out every link,
    choose the language of the mail.

    Downloading and erasing are not done from here: a manage link travels with every
    forwarded email, so they need a short-lived link mailed to the address.
    """
    subscriber = linked("manage", token)
    session = get_session()
    form = ManageForm()
    if not form.validate():
        return _manage_page(subscriber, form, TEXTS.session_expired, 400)
    action = form.action.data
    consent = service.Consent.from_request(request, "manage page")
    if action == "data-link":
        # The same answer whether or not the cap let an email go: nothing to learn here.
        if service.claim_daily_slot(
            session, subscriber.email_key, current_app.config["CONFIRM_DAILY_CAP"]
        ):
            queue_data_link(session, subscriber)
        flash(TEXTS.manage_data_sent.format(email=subscriber.email), "manage")
    elif action == "sign-out":
        service.sign_out_links(subscriber)
        session.commit()
        flash(TEXTS.manage_signed_out, "manage")
        return redirect(url_for(".manage", token=manage_url(subscriber).rsplit("/", 1)[1]))
    elif action == "leave-all":
        for subscription in subscriber.subscriptions:
            service.unsubscribe(session, subscription, "manage", consent)
        flash(TEXTS.manage_left_all, "manage")
    elif action in ("subscribe", "leave"):
        newsletter = newsletter_by_slug(session, form.newsletter.data)
        if newsletter is None:
            return _manage_page(subscriber, form, TEXTS.unknown_newsletter, 400)
        if action == "subscribe":
            confirmed = service.subscribe_confirmed(session, subscriber, newsletter, consent)
            if confirmed is not None:
                queue_welcome(session, confirmed)
            flash(TEXTS.manage_subscribed.format(newsletter=newsletter.title), "manage")
        else:
            for subscription in subscriber.subscriptions:
                if subscription.newsletter_id == newsletter.id:
                    service.unsubscribe(session, subscription, "manage", consent)
            flash(TEXTS.manage_left.format(newsletter=newsletter.title), "manage")
    elif action == "language" and form.language.data in LANGUAGES:
        subscriber.language = form.language.data
        session.commit()
        with force_locale(subscriber.language):  # said on the page in the new language
            flash(TEXTS.manage_language_changed, "manage")
        # The page, and the mail from now on, in the language chosen.
        return redirect(manage_url(subscriber).replace(current_app.config["PUBLIC_URL"], "", 1))
    else:
        return _manage_page(subscriber, form, TEXTS.server_error_text, 400)
    session.commit()
    wake_worker()
    return redirect(url_for(".manage", token=token))


@bp.get("/data/<token>")
def data(token: str):
    """The page a mailed data link opens: download or erase. Opening it changes nothing."""
    return _data_page(linked("data", token), ManageForm(formdata=None))


def _data_page(subscriber: Subscriber, form: ManageForm, error: str | None = None, status=200):
    page = render_template("data.html", subscriber=subscriber, form=form, error=error)
    return page, status, {"Cache-Control": "no-store"}


@bp.post("/data/<token>")
def data_post(token: str):
    """Download everything stored (JSON), or erase it; only from a link under an hour old."""
    subscriber = linked("data", token)
    session = get_session()
    form = ManageForm()
    if not form.validate():
        return _data_page(subscriber, form, TEXTS.session_expired, 400)
    if form.action.data == "export":
        body = json.dumps(personal.personal_data(session, subscriber), indent=2, ensure_ascii=False)
        return body, {
            "Content-Type": "application/json; charset=utf-8",
            "Content-Disposition": 'attachment; filename="my-newsletter-data.json"',
            "Cache-Control": "no-store",
        }
    if form.action.data == "erase":
        if not form.erase_confirm.data:
            return _data_page(subscriber, form, TEXTS.manage_erase_needs_confirm, 400)
        personal.erase(session, subscriber.email_key, current_app.config["SECRET_KEY"], "reader")
        session.commit()
        return notice(TEXTS.erased_title, TEXTS.erased_text)
    return _data_page(subscriber, form, TEXTS.server_error_text, 400)
