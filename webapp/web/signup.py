"""The reader's pages: the newsletter catalog with its sign-up forms, and confirmation."""

from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    current_app,
    flash,
    g,
    get_flashed_messages,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import HTTPException

from . import subscriptions
from .db import get_session
from .digests import seed_articles
from .forms import ConfirmForm, SubscribeForm
from .links import manage_url
from .mail import queue_confirmation, queue_welcome
from .messages import MESSAGES
from .models import Newsletter, Status, Subscription
from .outbox import wake_worker
from .security import robot_check_enabled, robot_check_passes
from .tokens import TokenExpired, TokenInvalid, read_token

bp = Blueprint("pages", __name__)

# Pages that carry sign-up forms: a failed post without JavaScript re-renders the page
# it came from, with the message beside the form that was used.
FORM_PAGES = {"pages.index", "reading.article", "reading.newsletter"}


def init_app(app: Flask) -> None:
    """Error pages, response headers, template globals and the outbox worker's start."""
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _server_error)
    app.context_processor(
        lambda: {
            "messages": MESSAGES,
            "site_name": app.config["SITE_NAME"],
            "robot_check": robot_check_enabled(),
        }
    )

    @app.before_request
    def _start_outbox_worker() -> None:
        worker = app.extensions["outbox_worker"]
        if worker is not None:
            worker.start()


def _http_error(exc: HTTPException):
    if exc.code == 429 and request.endpoint == "pages.subscribe":
        # Over a sign-up rate limit: the form's own message; nothing was stored or sent.
        form = SubscribeForm()
        form.email.errors = [MESSAGES.too_many_attempts]
        return _form_error(form, 429)
    if exc.code == 404:
        return notice(MESSAGES.not_found_title, MESSAGES.not_found_text, 404)
    if wants_json():
        return jsonify(ok=False, error=exc.description), exc.code
    return notice(exc.name, exc.description or "", exc.code or 500)


def _server_error(exc: Exception):
    current_app.logger.exception("unhandled error on %s", request.path)
    get_session().rollback()
    if wants_json():
        return jsonify(ok=False, error=MESSAGES.server_error_text), 500
    return notice(MESSAGES.server_error_title, MESSAGES.server_error_text, 500)


def notice(title: str, text: str, status: int = 200, link: tuple[str, str] | None = None):
    """A page with a title, a sentence and, if given, one (href, label) link."""
    return render_template("notice.html", title=title, text=text, link=link), status


def wants_json() -> bool:
    """True for the in-place form script, which asks for JSON."""
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


def newsletters() -> list[Newsletter]:
    """The catalog in its display order."""
    query = select(Newsletter).order_by(Newsletter.position, Newsletter.id)
    return list(get_session().scalars(query))


def signup_state(catalog: list[Newsletter]) -> dict:
    """Template values for the sign-up forms of a page.

    ``forms``: a fresh form per newsletter slug, or the posted one with its error;
    ``subscribed``: the slugs whose form was just used without JavaScript.
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
    subscribed = set(get_flashed_messages(category_filter=["subscribed"])) - {posted_slug}
    return {"forms": forms, "subscribed": subscribed}


@bp.get("/")
def index():
    """Every newsletter of the catalog with its sign-up form."""
    catalog = newsletters()
    articles = sorted(seed_articles({n.title for n in catalog}).values(), key=lambda a: a.title)
    return render_template(
        "index.html", newsletters=catalog, articles=articles, **signup_state(catalog)
    )


@bp.post("/subscribe")
def subscribe():
    """One sign-up form's post: the same answer for every valid address, whatever its state."""
    form = SubscribeForm()
    session = get_session()
    newsletter = session.scalar(select(Newsletter).where(Newsletter.slug == form.newsletter.data))
    valid = form.validate()
    if valid and newsletter is None:
        form.email.errors = [MESSAGES.unknown_newsletter]
        valid = False
    if valid and robot_check_enabled() and not robot_check_passes(form.altcha.data):
        form.email.errors = [MESSAGES.robot_check_failed]
        valid = False
    if not valid:
        return _form_error(form)
    if not form.is_bot:
        consent = subscriptions.Consent(
            ip=request.remote_addr,
            user_agent=request.user_agent.string[:512] or None,
            source=(form.source.data or request.referrer or "")[:200] or None,
        )
        _subscribe(newsletter, form.address, consent)
    if wants_json():
        return jsonify(ok=True, title=MESSAGES.success_title, text=MESSAGES.success_text)
    flash(newsletter.slug, "subscribed")
    endpoint, args = _origin(form.source.data)
    return redirect(url_for(endpoint, **args, _anchor=f"nl-{newsletter.slug}"))


def _subscribe(newsletter, address, consent) -> None:
    session = get_session()
    for attempt in range(3):
        try:
            due = subscriptions.subscribe(
                session,
                newsletter,
                address,
                consent,
                cooldown=current_app.config["CONFIRM_COOLDOWN"],
                daily_cap=current_app.config["CONFIRM_DAILY_CAP"],
            )
            if due is not None:
                queue_confirmation(session, due)
            session.commit()
            break
        except IntegrityError:
            # A concurrent post created the same subscriber or subscription; run again to
            # find it. The third time something else is wrong.
            session.rollback()
            if attempt == 2:
                raise
    if due is not None:
        wake_worker()


def _form_error(form: SubscribeForm, status: int = 400):
    if wants_json():
        return jsonify(ok=False, errors={"email": form.first_error()}), status
    g.posted_form = form
    endpoint, args = _origin(form.source.data)
    return make_response(current_app.view_functions[endpoint](**args), status)


def _origin(source: str | None) -> tuple[str, dict]:
    """The sign-up page a form was posted from, by its path; the index when unknown."""
    path = urlsplit(source or "/").path
    try:
        endpoint, args = current_app.url_map.bind("localhost").match(path, method="GET")
    except HTTPException:
        return "pages.index", {}
    return (endpoint, args) if endpoint in FORM_PAGES else ("pages.index", {})


def _confirmation(token: str) -> Subscription | tuple:
    """The subscription a confirmation token names, or the notice to answer with."""
    try:
        subscription_id, nonce = read_token(
            "confirm", token, max_age=current_app.config["CONFIRM_MAX_AGE"]
        )
    except TokenExpired:
        days = current_app.config["CONFIRM_MAX_AGE"] // 86400
        return notice(
            MESSAGES.link_expired_title, MESSAGES.link_expired_text.format(days=days), 410
        )
    except (TokenInvalid, TypeError, ValueError):
        return notice(MESSAGES.link_invalid_title, MESSAGES.link_invalid_text, 404)
    subscription = get_session().get(Subscription, subscription_id)
    # A new nonce means the subscription ended and started again since this link was sent.
    if (
        subscription is None
        or subscription.confirm_nonce != nonce
        or subscription.status == Status.UNSUBSCRIBED
    ):
        return notice(MESSAGES.confirm_gone_title, MESSAGES.confirm_gone_text, 410)
    return subscription


@bp.get("/confirm/<token>")
def confirm(token: str):
    """The page a confirmation link opens. A GET never confirms: mail scanners open links."""
    found = _confirmation(token)
    if not isinstance(found, Subscription):
        return found
    if found.status == Status.CONFIRMED:
        return _confirmed_page(found)
    return render_template("confirm.html", subscription=found, form=ConfirmForm(), error=None)


@bp.post("/confirm/<token>")
def confirm_post(token: str):
    """The confirm button: one click confirms, then the page shows the result."""
    found = _confirmation(token)
    if not isinstance(found, Subscription):
        return found
    form = ConfirmForm()
    if found.status == Status.PENDING:
        if not form.validate():
            error = MESSAGES.session_expired
            return render_template("confirm.html", subscription=found, form=form, error=error), 400
        consent = subscriptions.Consent(
            ip=request.remote_addr, user_agent=request.user_agent.string[:512] or None
        )
        session = get_session()
        if subscriptions.confirm(session, found, found.confirm_nonce, consent):
            queue_welcome(session, found)
        session.commit()
        wake_worker()
    return redirect(url_for("pages.confirm", token=token))


def _confirmed_page(subscription: Subscription):
    text = MESSAGES.confirmed_text.format(
        email=subscription.subscriber.email, newsletter=subscription.newsletter.title
    )
    return notice(
        MESSAGES.confirmed_title,
        text,
        link=(manage_url(subscription.subscriber), MESSAGES.manage_link),
    )
