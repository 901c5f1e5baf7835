"""Sign-up requests: a form's post is recorded as it came and acted on after the answer.

The answer to a sign-up must not tell who is subscribed, not even by its timing. So
the post does the same for every address: it records the request in one INSERT and
answers. What the address's state calls for (a new subscription and its confirmation
email, another confirmation, or nothing) is done right after the answer has gone, in
the same process (:func:`act_on_request`). A request left behind by a process that
died in between is taken up by the outbox worker or ``newsletter outbox send``
(:func:`act_on_left_requests`). With ``SIGNUP_WORK=worker`` the web server leaves
every request to ``newsletter worker``, which takes them as they come, a batch to a
transaction.

Each request is taken by deleting its row in the transaction that acts on it, so any
number of processes may look at the same requests and each is acted on once.
"""

import logging
import time
from datetime import timedelta
from typing import cast

from sqlalchemy import Engine, Row, and_, bindparam, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from emails.addresses import Address, InvalidAddress, normalize_address

from ..db import utcnow
from ..models import Newsletter
from . import batches, service
from .mail import queue_confirmations_of
from .models import SignupRequest

log = logging.getLogger(__name__)

LEFT_AFTER = 30  # seconds: a request this old was left by a process that stopped
MAX_ATTEMPTS = 5  # a request that failed this often is left alone, and logged
# Requests acted on in one transaction by a pass. Their new addresses (most of a wave)
# are written a statement per table for the whole batch (batches.subscribe_many), so a
# bigger batch costs less per sign-up: measured alone, the worker spent 0.85 ms of CPU
# a sign-up acted on and delivered with 2, 0.65 with 4, 0.49 with 8 and 0.41 with 32.
# SQLite's writer lock is held for the batch and the web posts' INSERTs wait for it:
# 32 new addresses held it 4 ms, 32 known ones 3 ms, and the p99 of a post at 16
# connections stayed between 32 and 48 ms (bench/subscribe_bench.py, six runs).
BATCH = 32
# Seconds a pass waits between two batches. The writer lock (sqlite_writers) is a flock,
# which is not fair: a pass that took it again at once kept the web posts waiting for
# its whole backlog. This lets a post woken by the commit take its turn first, on the
# core the pass leaves (at 16 connections, the p99 of a post: 56 ms against 62 with no
# wait, 38 ms with 0.1 ms against 44 with 0.3; medians of 3 runs each).
GIVE_WAY = 0.0001


# Built once: each sign-up runs them (see service.subscribe).
_RECORD = insert(SignupRequest).returning(SignupRequest.id)
_TAKE = (
    delete(SignupRequest)
    .where(SignupRequest.id.in_(bindparam("ids", expanding=True)))
    .returning(
        SignupRequest.id,
        SignupRequest.newsletter_id,
        SignupRequest.email,
        SignupRequest.ip,
        SignupRequest.user_agent,
        SignupRequest.source,
        SignupRequest.language,
        SignupRequest.created_at,
    )
)
_NEWSLETTER = select(Newsletter.title, Newsletter.from_name).where(Newsletter.id == bindparam("id"))


def record_request(
    session: Session,
    newsletter_id: int,
    address: Address,
    consent: service.Consent,
    language: str = "en",
) -> int:
    """Record one sign-up post (made on a page in ``language``) and commit; its id. The
    same work for every address.

    Written in a transaction of its own on a connection of ``session``'s engine: the
    post needs no more, and a session's transaction cost a twentieth of its CPU. A
    session that holds a connection already (it looked something up) writes through
    it: a second one for each of many concurrent posts would empty the pool.
    """
    values = {
        "newsletter_id": newsletter_id,
        "email": address.email,
        "email_key": address.key,
        "ip": consent.ip,
        "user_agent": consent.user_agent,
        "source": consent.source,
        "language": language,
        "created_at": utcnow(),
        "attempts": 0,
    }
    if session.in_transaction():
        request_id = session.connection().execute(_RECORD, values).scalar_one()
        session.commit()
        return request_id
    with cast(Engine, session.get_bind()).begin() as db:  # sessions are bound to an engine
        return db.execute(_RECORD, values).scalar_one()


def act_on_request(session: Session, request_id: int, config) -> bool:
    """Act on one recorded sign-up and commit; True if a confirmation email was queued.

    Does nothing if another process took the request first. A concurrent change to the
    same subscription (IntegrityError) is retried; any other failure rolls back and
    leaves the request, counted, for a later pass.
    """
    for attempt in range(3):
        try:
            queued = _act(session, [request_id], config, {})
            session.commit()
            return queued > 0
        except IntegrityError:
            # A concurrent sign-up or import made the same subscriber or subscription:
            # run again to find it. The third time something else is wrong.
            session.rollback()
            if attempt == 2:
                _count_failure(session, request_id)
                raise
        except Exception:
            session.rollback()
            _count_failure(session, request_id)
            raise
    return False  # not reached


def _act(
    session: Session,
    request_ids: list[int],
    config,
    newsletters: dict[int, Row],
    addresses: dict[int, Address | InvalidAddress] | None = None,
) -> int:
    """Act on requests in ``session``'s transaction, in their order; how many
    confirmation emails that queued. ``newsletters``: the titles and sender names found
    so far, by id; ``addresses``: the requests' addresses, checked before the
    transaction (the writer lock) when the caller could."""
    db = session.connection()
    # Taken by deleting them: those another process took first do not come back.
    taken = {request.id: request for request in db.execute(_TAKE, {"ids": request_ids})}
    signups = []
    for request_id in request_ids:
        request = taken.get(request_id)
        if request is None:
            continue
        address = addresses[request_id] if addresses else _checked(request.email)
        if isinstance(address, InvalidAddress):  # refused by a stricter policy since recorded
            log.warning("sign-up request %s dropped: the address is no longer accepted", request_id)
            continue
        consent = service.Consent(request.ip, request.user_agent, request.source)
        signups.append(
            batches.SignUp(
                request.newsletter_id, address, consent, request.created_at, request.language
            )
        )
    if not signups:
        return 0
    dues = batches.subscribe_many(
        session, signups, cooldown=config["CONFIRM_COOLDOWN"], daily_cap=config["CONFIRM_DAILY_CAP"]
    )
    confirmations = []
    for signup, due in zip(signups, dues, strict=True):
        if due is not None:
            newsletter = newsletters.get(signup.newsletter_id)
            if newsletter is None:
                newsletter = db.execute(_NEWSLETTER, {"id": signup.newsletter_id}).one()
                newsletters[signup.newsletter_id] = newsletter
            confirmations.append((newsletter, due))
    if confirmations:
        queue_confirmations_of(session, confirmations)
    return len(confirmations)


def _checked(email: str) -> Address | InvalidAddress:
    try:
        return normalize_address(email)
    except InvalidAddress as exc:
        return exc


def _count_failure(session: Session, request_id: int) -> None:
    session.execute(
        update(SignupRequest)
        .where(SignupRequest.id == request_id)
        .values(attempts=SignupRequest.attempts + 1)
    )
    session.commit()


def in_worker(config) -> bool:
    """True when ``newsletter worker`` does the sign-ups' work (``SIGNUP_WORK=worker``):
    the web server only records each post, and every recorded request is the worker's."""
    return config["SIGNUP_WORK"] == "worker"


def act_on_left_requests(
    sessions: sessionmaker[Session], config, limit: int = 1000, new_only: bool = False
) -> int:
    """Act on requests left to this pass; how many confirmation emails that queued.
    Bounded by ``limit`` requests a pass.

    A request is left to a pass when the process that recorded it stopped before acting
    (it is LEFT_AFTER seconds old), or at once when the worker does the sign-ups' work.
    One that failed is tried again only once LEFT_AFTER seconds old, and never by a
    ``new_only`` pass (the worker's looks between passes): MAX_ATTEMPTS failures must
    span more than a moment's trouble.
    """
    left = SignupRequest.created_at <= utcnow() - timedelta(seconds=LEFT_AFTER)
    taken = SignupRequest.attempts == 0
    if not in_worker(config):
        taken = and_(taken, left)
    if not new_only:
        taken = or_(taken, and_(SignupRequest.attempts < MAX_ATTEMPTS, left))
    with sessions() as session:
        found = session.execute(
            select(SignupRequest.id, SignupRequest.email)
            .where(taken)
            .order_by(SignupRequest.id)
            .limit(limit)
        ).all()
    ids = [request_id for request_id, _ in found]
    # Checked here, not while the batch holds the writer lock (SQLite's: the web posts
    # wait for it); the newsletters' titles found once a pass.
    addresses = {request_id: _checked(email) for request_id, email in found}
    newsletters: dict[int, Row] = {}
    queued = 0
    for start in range(0, len(ids), BATCH):
        batch = ids[start : start + BATCH]
        if start:
            time.sleep(GIVE_WAY)
        with sessions() as session:
            try:
                done = _act(session, batch, config, newsletters, addresses)
                session.commit()
                queued += done
                continue
            except Exception as exc:  # rolled back, the batch untouched: one at a time
                session.rollback()
                log.warning(
                    "a batch of %d sign-up requests failed (%r); acting on them one at a time",
                    len(batch),
                    exc,
                )
        for request_id in batch:
            with sessions() as session:
                try:
                    queued += act_on_request(session, request_id, config)
                except Exception:  # the others still go; this one is counted and retried
                    log.exception("sign-up request %s failed", request_id)
    return queued


# New requests only: one that failed waits for a pass (see act_on_left_requests).
_WAITING = select(SignupRequest.id).where(SignupRequest.attempts == 0).limit(1)


def requests_waiting(sessions: sessionmaker[Session]) -> bool:
    """True when a new sign-up request waits to be acted on (a look at one row)."""
    with sessions() as session:
        return session.scalar(_WAITING) is not None
