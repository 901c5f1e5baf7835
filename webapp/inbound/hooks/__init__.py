"""``POST /hooks/<relay>``: what relays that report by webhook say about our readers.

Amazon SES (through SNS), SendGrid, Mailgun and Postmark, each checked by that relay's
own scheme with its secret from the configuration. A relay that is not configured is
not found (404); a request that fails its check is refused (401) and changes nothing; a
checked request that cannot be read is a 400. Each event is stored under the relay's
event id (a retried event is taken once) and acted on as a message heard back is.
"""

import logging

from flask import Blueprint, abort, current_app, request
from sqlalchemy.exc import InterfaceError, OperationalError

from ...db import session_factory
from ..store import UsedBefore, record_once, take_in_event
from . import mailgun, postmark, sendgrid, ses
from .base import Malformed, Refused

log = logging.getLogger(__name__)
bp = Blueprint("hooks", __name__)
RELAYS = {"ses": ses, "sendgrid": sendgrid, "mailgun": mailgun, "postmark": postmark}
MAX_BODY = 1024 * 1024  # SendGrid posts batches of up to 768 KB


@bp.post("/hooks/<relay>")
def hook(relay: str):
    """Check, store and act on one webhook request."""
    config = current_app.config
    module = RELAYS.get(relay)
    if module is None or not module.configured(config):
        abort(404)
    # The site's MAX_CONTENT_LENGTH is sized for its forms; a relay's batch is larger.
    request.max_content_length = MAX_BODY
    if (request.content_length or 0) > MAX_BODY:
        abort(413)
    body = request.stream.read(MAX_BODY + 1)
    if len(body) > MAX_BODY:
        abort(413)
    try:
        once = module.verify(request, body, config)
        events = module.events(body, config)
    except Refused as exc:
        return _refused(relay, exc)
    except Malformed as exc:
        return f"{exc}.\n", 400
    sessions = session_factory()
    taken = 0
    try:
        if once and not events:
            record_once(sessions, relay, once)
        for n, event in enumerate(events):
            kept = take_in_event(
                sessions,
                config,
                relay,
                event.event_id,
                event.report,
                event.raw,
                once=once if n == 0 else None,
            )
            taken += kept is not None
    except UsedBefore:
        return _refused(relay, Refused("a token used before"))
    except (OperationalError, InterfaceError) as exc:  # the relay retries: nothing is lost
        log.warning("webhook %s: the database is away: %s", relay, getattr(exc, "orig", exc))
        return "The event could not be stored; try again later.\n", 503, {"Retry-After": "60"}
    return f"{taken} of {len(events)} event(s) taken in.\n", 200


def _refused(relay: str, exc: Refused):
    log.warning("webhook %s refused: %s", relay, exc)
    headers = {"WWW-Authenticate": 'Basic realm="hooks"'} if relay == "postmark" else {}
    return "The request's signature or credentials do not check.\n", 401, headers


def init_app(app) -> None:
    """Mount the webhooks, once their settings are known to be usable: a setting that
    cannot be read would otherwise fail every request of its relay, unnoticed."""
    for module in RELAYS.values():
        module.check(app.config)
    app.register_blueprint(bp)
