"""``newsletter inbound serve``: the SMTP (or LMTP) server the site's MTA hands bounces,
complaints and replies to. Not a relay: it takes mail for the bounce address, its
``bounces+TOKEN`` forms whose token is ours, and MAIL_FROM only, and answers 550 to
anyone else.

Each message is stored once (committed) before the 250, whatever its recipients; it is
classified and acted on afterwards, in one thread of its own, so the server answers the
next connection while the slowest message is read. Messages stored but not yet handled
when the server stopped are handled when it starts again.

A server on the open internet meets clients that connect and say nothing: at most
INBOUND_MAX_SESSIONS sessions are open at once, a new one closing the one idle the
longest to make room, and a session idle for INBOUND_IDLE_TIMEOUT seconds is closed.
"""

import asyncio
import logging
import queue
import threading
import time
from typing import cast

from aiosmtpd.controller import Controller
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP
from flask import Flask
from sqlalchemy import select

from ..db import session_factory
from ..mailout.verp import Verp
from .models import InboundMessage
from .store import handle, store

log = logging.getLogger(__name__)

NOT_HERE = "550 5.1.1 No such recipient here: this server takes bounces and replies only"
TRY_LATER = "451 4.3.0 The message could not be stored; try again later"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
BUSY = b"421 4.7.0 newsletter-inbound: too many connections, try again later\r\n"
CLOSING = b"421 4.4.2 newsletter-inbound: idle too long, closing to make room\r\n"
MAX_RECIPIENTS = 100  # Postfix's own limit is 1,000; our mail has one recipient
CHUNK = 256 * 1024  # bytes of DATA read at a time


class InboundHandler:
    """aiosmtpd's handler: checks recipients and stores each message; a thread of its
    own classifies and acts on what was stored."""

    def __init__(self, app: Flask, lmtp: bool) -> None:
        self.app = app
        self.lmtp = lmtp
        self.verp = Verp.from_config(app.config)
        self.mail_from = app.config["MAIL_FROM"].lower()
        self.sessions = session_factory(app)
        self._stored: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self._handling: threading.Thread | None = None

    def takes(self, address: str) -> bool:
        """True for the bounce address, its ``+TOKEN`` forms whose token is ours, and
        MAIL_FROM: junk tokens are refused at RCPT, not stored."""
        bare = address.strip().strip("<>")
        if bare.lower() == self.mail_from:
            return True
        if not self.verp.is_bounce_address(bare):
            return False
        return "+" not in bare.rpartition("@")[0] or self.verp.read(bare) is not None

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        if not self.takes(address):
            return NOT_HERE
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return TOO_MANY_RECIPIENTS
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        raw = envelope.original_content or b""
        loop = asyncio.get_running_loop()
        server.storing = True  # not closed to make room meanwhile
        try:
            message_id = await loop.run_in_executor(None, self._store, raw, envelope)
        except Exception:  # the database is away: the MTA keeps it and tries again
            log.exception("inbound message not stored")
            reply = TRY_LATER
        else:
            self._stored.put(message_id)
            reply = "250 OK: stored"
        finally:
            server.storing = False
        # LMTP answers DATA once per recipient (RFC 2033); SMTP once.
        count = len(envelope.rcpt_tos) if self.lmtp else 1
        return "\r\n".join([reply] * max(count, 1))

    def _store(self, raw: bytes, envelope) -> int:
        # Once, whatever the recipients: a hundred of them must not mean a hundred
        # copies. The first that carries our token names the message; any other
        # recipient's token is in the message's own returned headers as well.
        recipients = envelope.rcpt_tos
        named = next((r for r in recipients if self.verp.read(r)), recipients[0])
        with self.app.app_context():
            return store(
                self.sessions,
                raw,
                source="lmtp" if self.lmtp else "smtp",
                envelope_from=envelope.mail_from,
                recipient=named,
            )

    def start(self) -> None:
        """Start the thread that handles stored messages, with those a stopped server
        left stored but not handled."""
        with self.sessions() as session:
            left = session.scalars(
                select(InboundMessage.id)
                .where(InboundMessage.kind.is_(None), InboundMessage.source.in_(("smtp", "lmtp")))
                .order_by(InboundMessage.id)
            ).all()
        for message_id in left:
            self._stored.put(message_id)
        self._handling = threading.Thread(target=self._handle_stored, name="inbound-handling")
        self._handling.start()

    def stop(self) -> None:
        """Handle what is stored, then end the thread."""
        if self._handling is not None:
            self._stored.put(None)
            self._handling.join()
            self._handling = None

    def _handle_stored(self) -> None:
        while (message_id := self._stored.get()) is not None:
            try:
                with self.app.app_context():
                    handle(self.sessions, self.app.config, message_id)
            except Exception:  # the database is away: handled when the server restarts
                log.exception("inbound message %s stored, not handled", message_id)


class Sessions:
    """The open sessions of one server: at most ``cap``. A new connection at the cap
    closes the session idle the longest to make room (one storing a message is never
    closed); only when every session is busy is the new one refused. Refusals and
    closings are logged once a burst, not once a connection."""

    def __init__(self, cap: int, clock=time.monotonic) -> None:
        self.cap = cap
        self.clock = clock
        self.open: dict[SMTP, float] = {}  # session: when it last said something
        self.burst = 0  # connections refused or closed at the cap since the burst began

    def admit(self, protocol: SMTP) -> bool:
        """Whether ``protocol``, just connected, may go on (room made if need be)."""
        if len(self.open) >= self.cap:
            idle = [p for p in self.open if not getattr(p, "storing", False)]
            if not idle:
                self._refused("refusing new connections")
                return False
            oldest = min(idle, key=self.open.__getitem__)
            self._refused("closing the longest idle sessions to make room")
            self.closed(oldest)
            if oldest.transport is not None:
                # aiosmtpd types it as a BaseTransport; asyncio hands it a Transport.
                transport = cast(asyncio.Transport, oldest.transport)
                transport.write(CLOSING)
                transport.close()
        self.open[protocol] = self.clock()
        return True

    def touch(self, protocol: SMTP) -> None:
        """``protocol``'s client said something."""
        if protocol in self.open:
            self.open[protocol] = self.clock()

    def closed(self, protocol: SMTP) -> None:
        """``protocol``'s connection ended."""
        self.open.pop(protocol, None)
        if self.burst and len(self.open) < self.cap // 2:
            log.warning(
                "%d connection(s) refused or closed at the cap of %d sessions; the burst is over",
                self.burst,
                self.cap,
            )
            self.burst = 0

    def _refused(self, what: str) -> None:
        if not self.burst:
            log.warning("%d sessions open, the cap: %s", len(self.open), what)
        self.burst += 1


class _Capped(SMTP):
    """An SMTP or LMTP session counted in its server's Sessions."""

    sessions: Sessions
    storing = False

    def connection_made(self, transport) -> None:
        if self.transport is None and not self.sessions.admit(self):
            transport.write(BUSY)
            transport.close()
            return
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.sessions.touch(self)
        super().data_received(data)

    def connection_lost(self, error) -> None:
        self.sessions.closed(self)
        if self.session is not None:  # admitted: aiosmtpd has set it up
            super().connection_lost(error)

    async def smtp_DATA(self, arg: str) -> None:  # noqa: N802  (aiosmtpd's naming)
        """DATA read in chunks, not in lines: aiosmtpd's own loop takes a step of the
        event loop per line, so a 10 MB message of blank lines (five million of them)
        kept every other connection from its banner for a second."""
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None  # set up with the session (aiosmtpd asserts it too)
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        # A line break before the first line: the end and a stuffed dot are found the
        # same way on it as on every other line.
        received, size, end = bytearray(b"\r\n"), 0, -1
        limit = self.data_size_limit  # 0 or None: no limit, as aiosmtpd reads it
        while end < 0:
            chunk = await self._reader.read(CHUNK)
            if not chunk:
                return  # the client went away
            start = max(0, len(received) - 4)
            received += chunk
            size += len(chunk)
            end = received.find(b"\r\n.\r\n", start)
            if end < 0 and limit and size > limit + 5:
                del received[:-4]  # too much: the rest is only read to its end
        # What came after the end is the client's next command (pipelining).
        after = received[end + 5 :]
        # StreamReader's own buffer: private, so not in its stubs.
        self._reader._buffer[0:0] = after  # type: ignore[attr-defined]
        if limit and size - len(after) - 5 > limit:
            await self.push("552 Error: Too much mail data")
            self._set_post_data_state()
            return
        # RFC 5321 4.5.2: a line's leading dot was doubled by the client.
        content = bytes(received[: end + 2]).replace(b"\r\n.", b"\r\n")[2:]
        self.envelope.content = self.envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push(status)


class CappedSMTP(_Capped, SMTP):
    """aiosmtpd's SMTP session, counted."""


class CappedLMTP(_Capped, LMTP):
    """aiosmtpd's LMTP session, counted."""


class InboundController(Controller):
    """aiosmtpd's controller, speaking LMTP when asked, with the size limit, the cap on
    sessions and the idle timeout."""

    def __init__(
        self,
        handler: InboundHandler,
        host: str,
        port: int,
        max_bytes: int,
        max_sessions: int = 100,
        idle_timeout: float = 60,
    ) -> None:
        self.max_bytes = max_bytes
        self.sessions = Sessions(max_sessions)
        self.idle_timeout = idle_timeout
        super().__init__(handler, hostname=host, port=port)

    def factory(self):
        """The protocol instance for one connection."""
        protocol = CappedLMTP if self.handler.lmtp else CappedSMTP
        made = protocol(
            self.handler,
            data_size_limit=self.max_bytes,
            hostname="newsletter-inbound",
            ident="newsletter inbound",
            timeout=self.idle_timeout,
        )
        made.sessions = self.sessions
        return made

    def start(self) -> None:
        """Handle what a stopped server left, then listen."""
        self.handler.start()
        super().start()

    def stop(self, no_assert: bool = False) -> None:
        """Stop listening, then finish handling what was stored."""
        try:
            super().stop(no_assert)
        finally:
            self.handler.stop()
