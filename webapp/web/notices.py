"""Notice pages: a title, a sentence and maybe a link; what every error and every bad
link answers with, so no reader ever sees a traceback."""

from typing import Literal, overload

from flask import Flask, current_app, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from ..db import get_session
from ..links import LinkGone, TokenExpired, TokenInvalid, row_for_link
from ..models import Subscriber, Subscription
from ..texts import TEXTS


class Notice(Exception):
    """Answer with a notice page: raised by a view, or a lookup a view calls, that fails."""

    def __init__(
        self, title: str, text: str, status: int = 200, link: tuple[str, str] | None = None
    ) -> None:
        super().__init__(title)
        self.title, self.text, self.status, self.link = title, text, status, link


def init_app(app: Flask) -> None:
    """Answer notices, HTTP errors and unexpected errors with a notice page (or JSON)."""
    app.register_error_handler(Notice, lambda n: notice(n.title, n.text, n.status, n.link))
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _server_error)


def notice(title: str, text: str, status: int = 200, link: tuple[str, str] | None = None):
    """A page with a title, a sentence and, if given, one (href, label) link."""
    return render_template("notice.html", title=title, text=text, link=link), status


def wants_json() -> bool:
    """True for the in-place form script, which asks for JSON."""
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


def _http_error(exc: HTTPException):
    if exc.code == 404:
        return notice(TEXTS.not_found_title, TEXTS.not_found_text, 404)
    if wants_json():
        return jsonify(ok=False, error=exc.description), exc.code
    return notice(exc.name, exc.description or "", exc.code or 500)


def _server_error(exc: Exception):
    current_app.logger.exception("unhandled error on %s", request.path)
    get_session().rollback()
    if wants_json():
        return jsonify(ok=False, error=TEXTS.server_error_text), 500
    return notice(TEXTS.server_error_title, TEXTS.server_error_text, 500)


@overload
def linked(purpose: Literal["confirm", "unsubscribe"], token: str) -> Subscription: ...
@overload
def linked(purpose: Literal["manage", "data"], token: str) -> Subscriber: ...
@overload
def linked(purpose: str, token: str) -> Subscription | Subscriber: ...
def linked(purpose: str, token: str) -> Subscription | Subscriber:
    """The row a link in mail names, or the notice that says what is wrong with the link.

    ``confirm`` and ``unsubscribe`` links name a subscription, ``manage`` and ``data`` a
    subscriber.
    """
    config = current_app.config
    max_age = {"confirm": config["CONFIRM_MAX_AGE"], "data": config["DATA_LINK_MAX_AGE"]}
    try:
        return row_for_link(get_session(), purpose, token, max_age.get(purpose))
    except TokenExpired:
        if purpose == "data":
            raise Notice(TEXTS.link_expired_title, TEXTS.data_link_expired_text, 410) from None
        days = config["CONFIRM_MAX_AGE"] // 86400
        raise Notice(
            TEXTS.link_expired_title, TEXTS.link_expired_text.format(days=days), 410
        ) from None
    except LinkGone:
        raise Notice(TEXTS.confirm_gone_title, TEXTS.confirm_gone_text, 410) from None
    except TokenInvalid:
        raise Notice(TEXTS.link_invalid_title, TEXTS.link_invalid_text, 404) from None
