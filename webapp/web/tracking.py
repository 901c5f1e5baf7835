"""Tracked links and the open pixel of digests: ``/r/TOKEN`` answers 302 to the link as
the issue was built, ``/o/TOKEN`` a transparent GIF. TOKEN is signed; the target is
never read from the request, so neither route can send anyone elsewhere."""

import base64
import logging

from flask import Blueprint, Response, redirect, request
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from ..db import get_session
from ..links import tracked_links
from ..reports.clicks import record_hit
from ..reports.models import IssueLink
from ..texts import TEXTS
from .notices import Notice

log = logging.getLogger(__name__)
bp = Blueprint("tracking", __name__)
GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")


@bp.route("/r/<token>", methods=["GET", "HEAD"])
def click(token: str):
    """Redirect to the issue's link; count a reader's GET (a HEAD is a scanner's)."""
    found = tracked_links().read(token)
    if found is None or found[1] is None:
        raise Notice(TEXTS.link_invalid_title, TEXTS.link_invalid_text, 404)
    issue_id, position, subscriber_id = found[0], found[1], found[2]
    session = get_session()
    # The issue's links in one query: the target, and how many there are (the scanner
    # check compares a burst with them).
    links = dict(
        session.execute(
            select(IssueLink.position, IssueLink.url).where(IssueLink.issue_id == issue_id)
        ).all()
    )
    url = links.get(position)
    if url is None:
        raise Notice(TEXTS.link_invalid_title, TEXTS.link_invalid_text, 404)
    if request.method == "GET":
        _record(session, issue_id, position, subscriber_id, len(links))
    response = redirect(url, 302)
    response.headers["Cache-Control"] = "no-store"  # each follow reaches us
    response.headers["Referrer-Policy"] = "no-referrer"  # the token stays here
    return response


@bp.route("/o/<token>", methods=["GET", "HEAD"])
def pixel(token: str):
    """The open pixel: a transparent GIF; a reader's GET is counted as an open."""
    found = tracked_links().read(token)
    if found is not None and found[1] is None and request.method == "GET":
        _record(get_session(), found[0], None, found[2], 0)
    return Response(GIF, mimetype="image/gif", headers={"Cache-Control": "no-store"})


def _record(session, issue_id: int, position: int | None, subscriber_id: int, links: int) -> None:
    # Counting never stands between a reader and the link: a failure is logged.
    try:
        record_hit(session, issue_id, position, subscriber_id, links)
        session.commit()
    except SQLAlchemyError:
        session.rollback()
        log.exception("a click on issue %s was not counted", issue_id)
