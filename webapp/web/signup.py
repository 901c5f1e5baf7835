"""Signing up: the catalog with its sign-up forms, the form's post, and the confirmation
page its email links to."""

import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    current_app,
    g,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from sqlalchemy import select
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from ..catalog import newsletter_id_by_slug
from ..db import get_session
from ..i18n import page_language
from ..issues.building import seed_articles
from ..links import manage_url
from ..models import Newsletter, Subscription, SubscriptionStatus
from ..subscribers import service, signups
from ..subscribers.mail import queue_welcome, wake_worker
from ..texts import TEXTS
from .after_answer import after_answer
from .forms import ConfirmForm, SubscribeForm
from .notices import linked, notice, wants_json
from .security import limit_signups, robot_check_enabled, robot_check_passes

bp = Blueprint("pages", __name__)
log = logging.getLogger(__name__)

# Pages that carry sign-up forms: a failed post without JavaScript re-renders the page
# it came from, with the message beside the form that was used.
FORM_PAGES = {"pages.index", "reading.article", "reading.newsletter"}


def newsletters(language: str | None = None) -> list[Newsletter]:
    """The catalog in its display order; only those in ``language`` when given."""
    query = select(Newsletter).order_by(Newsletter.position, Newsletter.id)
    if language is not None:
        query = query.where(Newsletter.language == language)
    return list(get_session().scalars(query))


def signup_state(catalog: list[Newsletter]) -> dict:
    """Template values for the sign-up forms of a page.

    ``forms``: a fresh form per newsletter slug, or the posted one with its error;
    ``subscribed``: the slug whose form was just used without JavaScript (the page's
    ``?subscribed=`` says which).
    """
    posted = g.get("posted_form")
    posted_slug = posted.newsletter.data if posted is not None else None
    forms = {}
    for newsletter in catalog:
        if newsletter.slug == posted_slug:
            forms[newsletter.slug] = posted
        else:
            forms[newsletter.slug] = SubscribeForm(
                formdata=None, newsletter=newsletter.slug, source=request.path
            )
    subscribed = {request.args.get("subscribed")} & {n.slug for n in catalog} - {posted_slug}
    return {"forms": forms, "subscribed": subscribed}


@bp.get("/")
def index():
    """Every newsletter in the page's language with its sign-up form."""
    catalog = newsletters(page_language())
    titles = {n.title for n in newsletters()}  # the forms' furniture in any seed page
    articles = sorted(seed_articles(titles).values(), key=lambda a: a.title)
    return render_template(
        "index.html", newsletters=catalog, articles=articles, **signup_state(catalog)
    )


@bp.post("/subscribe")
@limit_signups
def subscribe():
    """One sign-up form's post: the same answer for every valid address, whatever its state."""
    form = SubscribeForm()
    session = get_session()
    newsletter_id = newsletter_id_by_slug(session, form.newsletter.data)
    valid = form.validate()
    if valid and newsletter_id is None:
        form.email.errors = [TEXTS.unknown_newsletter]
        valid = False
    if valid and robot_check_enabled() and not robot_check_passes(form.altcha.data):
        form.email.errors = [TEXTS.robot_check_failed]
        valid = False
    if not valid:
        return _form_error(form)
    answer = _answer(form, form.newsletter.data)
    if not form.is_bot:
        source = form.source.data or request.referrer
        consent = service.Consent.from_request(request, source)
        request_id = signups.record_request(
            session, newsletter_id, form.address, consent, page_language()
        )
        if signups.in_worker(current_app.config):
            wake_worker()  # the worker acts on it; this process's outbox thread too, if it runs
        else:
            after_answer(_acting_on(request_id))
    return answer


def _answer(form: SubscribeForm, slug: str) -> Response:
    # The same for every valid address: it must not tell who is subscribed.
    if wants_json():
        return jsonify(ok=True, title=TEXTS.success_title, text=TEXTS.success_text)
    # The page says so from its address, not from a flashed message: the post writes
    # no session cookie, which is work (and a Set-Cookie) for every sign-up.
    endpoint, args = _origin(form.source.data)
    return redirect(url_for(endpoint, **args, subscribed=slug, _anchor=f"nl-{slug}"))


def _acting_on(request_id: int):
    """What to do once the answer has gone: act on the recorded request (its work
    depends on the address's state, so it must not delay the answer)."""
    # Flask types current_app as a Flask; it is a LocalProxy, which has this.
    app = current_app._get_current_object()  # type: ignore[attr-defined]

    def act() -> None:
        with app.app_context():
            try:
                if signups.act_on_request(get_session(), request_id, app.config):
                    wake_worker()
            except Exception:  # the request stays recorded: the outbox worker retries it
                log.exception("sign-up request %s failed; left for the outbox worker", request_id)

    return act


@bp.errorhandler(429)
def _too_many(_exc: HTTPException):
    # Over a sign-up rate limit: the form's own message; nothing was stored or sent.
    # The body is read again only to put the message beside the form that was used,
    # and only if it can be: a body the view could not have read is no reason for a 500.
    if wants_json() or request.is_json:
        return jsonify(ok=False, errors={"email": TEXTS.too_many_attempts}), 429
    try:
        form = SubscribeForm()
    except HTTPException:  # no form to put the message beside: a page that says it
        return notice(TEXTS.too_many_attempts, "", 429)
    form.email.errors = [TEXTS.too_many_attempts]
    return _form_error(form, 429)


def _form_error(form: SubscribeForm, status: int = 400):
    if wants_json():
        return jsonify(ok=False, errors={"email": form.first_error()}), status
    g.posted_form = form
    endpoint, args = _origin(form.source.data)
    return make_response(current_app.view_functions[endpoint](**args), status)


def _origin(source: str | None) -> tuple[str, Mapping[str, Any]]:
    """The sign-up page a form was posted from, by its path; the index when unknown."""
    path = urlsplit(source or "/").path
    try:
        endpoint, args = current_app.url_map.bind("localhost").match(path, method="GET")
    except HTTPException:
        return "pages.index", {}
    return (endpoint, args) if endpoint in FORM_PAGES else ("pages.index", {})


@bp.get("/confirm/<token>")
def confirm(token: str):
    """The page a confirmation link opens. A GET never confirms: mail scanners open links."""
    subscription = linked("confirm", token)
    if subscription.status == SubscriptionStatus.CONFIRMED:
        return _confirmed_page(subscription)
    return render_template(
        "confirm.html", subscription=subscription, form=ConfirmForm(), error=None
    )


@bp.post("/confirm/<token>")
def confirm_post(token: str):
    """The confirm button: one click confirms, then the page shows the result."""
    subscription = linked("confirm", token)
    form = ConfirmForm()
    if subscription.status == SubscriptionStatus.PENDING:
        if not form.validate():
            page = render_template(
                "confirm.html", subscription=subscription, form=form, error=TEXTS.session_expired
            )
            return page, 400
        session = get_session()
        consent = service.Consent.from_request(request)
        if service.confirm(session, subscription, subscription.confirm_nonce, consent):
            queue_welcome(session, subscription)
        session.commit()
        wake_worker()
    return redirect(url_for("pages.confirm", token=token))


def _confirmed_page(subscription: Subscription):
    text = TEXTS.confirmed_text.format(
        email=subscription.subscriber.email, newsletter=subscription.newsletter.title
    )
    return notice(
        TEXTS.confirmed_title,
        text,
        link=(manage_url(subscription.subscriber), TEXTS.manage_link),
    )
