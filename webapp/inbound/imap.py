"""Reading a hosted mailbox over IMAP: what is ours is taken in and moved away; every
other message stays exactly as it was.

A bounce mailbox is often shared with people, or catches mail that is not about our
sends at all, and listmonk's processing deleting all of it is a known complaint. So a
message is only fetched with ``BODY.PEEK[]`` (which sets no ``\\Seen`` flag), and only a
message we recognise is stored, acted on and moved to ``INBOUND_IMAP_DONE_FOLDER``:
a bounce or complaint naming one of our sends or readers, or an unsubscribe carrying
our token. Replies, auto-replies and the unknown are left where they are, unread.

Each pass downloads only the messages it has not looked at before (their UIDs, while
the mailbox keeps its UIDVALIDITY). A crash between acting and moving means the
message is taken in again next time;
acting is idempotent for that (a suppression stays one suppression, a bounce is
scored at most once a day, an unsubscribe happens once).
"""

import contextlib
import imaplib
import logging
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from ..links import LinkGone, TokenExpired, TokenInvalid, row_for_link
from ..mailout.verp import Verp
from .acting import by_address, find_target
from .classify import classify
from .models import ImapSeen
from .report import BOUNCES, Report, ReportKind
from .store import take_in

log = logging.getLogger(__name__)

TIMEOUT = 60  # seconds for connecting and each command: a stuck server is an error
ABOUT_A_READER = (*BOUNCES, ReportKind.DELAYED, ReportKind.COMPLAINT)


class MailboxError(Exception):
    """The mailbox could not be read: one line for staff."""


@dataclass
class Fetched:
    """What one pass over the mailbox did."""

    seen: int = 0  # messages in the mailbox
    handled: int = 0  # ours: taken in and moved
    left: int = 0  # not ours: untouched


def connect(config: Mapping) -> imaplib.IMAP4:
    """Log in to INBOUND_IMAP_HOST with the configured security (TLS unless told not)."""
    host, port = config["INBOUND_IMAP_HOST"], config["INBOUND_IMAP_PORT"]
    security = config["INBOUND_IMAP_SECURITY"]
    context = ssl.create_default_context()  # the system's CAs (or SSL_CERT_FILE's)
    client: imaplib.IMAP4 | None = None
    try:
        if security == "ssl":
            client = imaplib.IMAP4_SSL(host, port, ssl_context=context, timeout=TIMEOUT)
        else:
            client = imaplib.IMAP4(host, port, timeout=TIMEOUT)
            if security == "starttls":
                client.starttls(context)
        client.login(config["INBOUND_IMAP_USERNAME"] or "", config["INBOUND_IMAP_PASSWORD"] or "")
    except (OSError, imaplib.IMAP4.error) as exc:
        if client is not None:
            with contextlib.suppress(OSError):
                client.shutdown()
        raise MailboxError(f"IMAP {host}:{port}: {_reason(exc)}") from None
    return client


def fetch_once(sessions: sessionmaker[Session], config: Mapping) -> Fetched:
    """One pass: every message of INBOUND_IMAP_MAILBOX looked at, ours taken in and
    moved to INBOUND_IMAP_DONE_FOLDER, the rest left untouched."""
    client = connect(config)
    try:
        return _pass(client, sessions, config)
    except (OSError, imaplib.IMAP4.error) as exc:
        raise MailboxError(f"IMAP {config['INBOUND_IMAP_HOST']}: {_reason(exc)}") from None
    finally:
        with contextlib.suppress(OSError, imaplib.IMAP4.error):
            client.logout()  # a connection already gone needs no closing


def _pass(client: imaplib.IMAP4, sessions: sessionmaker[Session], config: Mapping) -> Fetched:
    mailbox, done = config["INBOUND_IMAP_MAILBOX"], config["INBOUND_IMAP_DONE_FOLDER"]
    _ok(client.select(_quoted(mailbox)), f"cannot open mailbox {mailbox}")
    # Asked again: the list imaplib keeps is the one from before logging in.
    caps = set(_ok(client.capability(), "cannot list capabilities")[0].decode().upper().split())
    if "MOVE" not in caps and "UIDPLUS" not in caps:
        # Without either, moving one message means EXPUNGE, which would also remove
        # messages someone else marked deleted: not ours to do.
        raise MailboxError("the server offers neither MOVE nor UIDPLUS: cannot move one message")
    _ensure_folder(client, done)
    everything = _ok(client.uid("SEARCH", "ALL"), "cannot list the mailbox")[0].split()
    # Only what was not looked at before is downloaded: a shared mailbox's other mail
    # stays where it is, and was downloaded whole every pass.
    key = _mailbox_key(config)
    validity = _uidvalidity(client)
    last = _last_seen(sessions, key, validity)
    # As text: imaplib's commands take str arguments (and send them as ASCII).
    uids = [uid.decode() for uid in everything if int(uid) > last]
    verp = Verp.from_config(config)
    fetched = Fetched(seen=len(everything), left=len(everything) - len(uids))
    try:
        for uid in uids:
            raw = _peek(client, uid, config["INBOUND_MAX_BYTES"])
            # No envelope over IMAP: the classifier reads Delivered-To and X-Original-To.
            report = None if raw is None else classify(raw, None, verp, config["MAIL_FROM"])
            if raw is None or report is None or not recognised(sessions, report, verp):
                fetched.left += 1
                last = int(uid)
                continue
            message = take_in(sessions, config, raw, source="imap")
            log.info("IMAP %s: inbound message %s: %s", uid, message.id, message.action)
            _move(client, uid, done, caps)
            fetched.handled += 1
            last = int(uid)
    finally:
        if validity is not None:
            _remember(sessions, key, validity, last)
    return fetched


def _mailbox_key(config: Mapping) -> str:
    user, host = config["INBOUND_IMAP_USERNAME"] or "", config["INBOUND_IMAP_HOST"]
    return f"{user}@{host}:{config['INBOUND_IMAP_PORT']}/{config['INBOUND_IMAP_MAILBOX']}"[:500]


def _uidvalidity(client: imaplib.IMAP4) -> int | None:
    """The selected mailbox's UIDVALIDITY (None if the server did not say: then every
    pass looks at everything, as before)."""
    _, data = client.response("UIDVALIDITY")
    try:
        return int(data[0])
    except (TypeError, ValueError, IndexError):
        return None


def _last_seen(sessions: sessionmaker[Session], key: str, validity: int | None) -> int:
    with sessions() as session:
        seen = session.get(ImapSeen, key)
        if seen is None or validity is None or seen.uidvalidity != validity:
            return 0  # renumbered (or new): every UID is new
        return seen.last_uid


def _remember(sessions: sessionmaker[Session], key: str, validity: int, last: int) -> None:
    with sessions() as session:
        seen = session.get(ImapSeen, key) or ImapSeen(mailbox=key)
        seen.uidvalidity, seen.last_uid = validity, last
        session.add(seen)
        session.commit()


def recognised(sessions: sessionmaker[Session], report: Report, verp: Verp) -> bool:
    """Whether ``report`` is about us: a bounce or complaint naming one of our sends or
    readers, or an unsubscribe carrying a token of ours."""
    with sessions() as session:
        if report.kind == ReportKind.UNSUBSCRIBE:
            try:
                row_for_link(session, "unsubscribe", report.token or "")
            except (TokenInvalid, TokenExpired, LinkGone):
                return False
            return True
        if report.kind not in ABOUT_A_READER or report.forged:
            return False
        if find_target(session, report, verp).subscriber is not None:
            return True
        # A bounce with no token of ours that names a reader: taken in for its probe.
        return report.kind in BOUNCES and any(
            by_address(session, verdict.address) is not None
            for verdict in report.verdicts
            if verdict.address
        )


def _peek(client: imaplib.IMAP4, uid: str, limit: int) -> bytes | None:
    """The message's bytes without setting \\Seen; None when larger than ``limit``."""
    size = _ok(client.uid("FETCH", uid, "(RFC822.SIZE)"), "cannot read a message's size")
    match = re.search(rb"RFC822\.SIZE (\d+)", size[0] if isinstance(size[0], bytes) else b"")
    if match and int(match[1]) > limit:
        return None
    data = _ok(client.uid("FETCH", uid, "(BODY.PEEK[])"), "cannot read a message")
    for part in data:
        if isinstance(part, tuple) and len(part) == 2:
            return part[1]
    return None  # expunged by someone else meanwhile


def _move(client: imaplib.IMAP4, uid: str, folder: str, caps: set[str]) -> None:
    if "MOVE" in caps:
        _ok(client.uid("MOVE", uid, _quoted(folder)), f"cannot move a message to {folder}")
        return
    # UIDPLUS: copy, flag, and expunge this one message only (RFC 4315's UID EXPUNGE).
    _ok(client.uid("COPY", uid, _quoted(folder)), f"cannot copy a message to {folder}")
    _ok(client.uid("STORE", uid, "+FLAGS.SILENT", r"(\Deleted)"), "cannot flag a moved message")
    _ok(client.uid("EXPUNGE", uid), "cannot remove a moved message")


def _ensure_folder(client: imaplib.IMAP4, folder: str) -> None:
    """Create ``folder`` unless it is there already."""
    typ, listed = client.list('""', _quoted(folder))
    if typ == "OK" and listed and listed[0] is not None:
        return
    _ok(client.create(_quoted(folder)), f"cannot create folder {folder}")


def _ok(answer: tuple[str, list], what: str) -> list:
    typ, data = answer
    if typ != "OK":
        text = b" ".join(d for d in data if isinstance(d, bytes)).decode("utf-8", "replace")
        raise MailboxError(f"{what}: {text or typ}")
    return data


def _quoted(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.removeprefix("b'").removesuffix("'")
