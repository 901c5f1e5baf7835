"""``newsletter inbound serve``: the SMTP (or LMTP) server the site's MTA hands bounces,
complaints and replies to. Not a relay: it takes mail for the bounce address (and its
bounces+TOKEN forms) and for MAIL_FROM only, and answers 550 to anyone else.

Each message is stored (committed) before the 250; classifying and acting on it follow
in the same worker thread, so a message is never lost, whatever happens after.
"""

import asyncio
import logging

from aiosmtpd.controller import Controller
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP
from flask import Flask

from ..db import session_factory
from .store import handle, store
from .verp import Verp

log = logging.getLogger(__name__)

NOT_HERE = "550 5.1.1 No such recipient here: this server takes bounces and replies only"
TRY_LATER = "451 4.3.0 The message could not be stored; try again later"


class InboundHandler:
    """aiosmtpd's handler: checks recipients, stores and handles each message."""

    def __init__(self, app: Flask, lmtp: bool) -> None:
        self.app = app
        self.lmtp = lmtp
        self.verp = Verp.from_config(app.config)
        self.mail_from = app.config["MAIL_FROM"].lower()
        self.sessions = session_factory(app)

    def takes(self, address: str) -> bool:
        """True for the bounce address (any +TOKEN form) and MAIL_FROM."""
        return self.verp.is_bounce_address(address) or address.lower() == self.mail_from

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        if not self.takes(address):
            return NOT_HERE
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        raw = envelope.original_content or b""
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, self._take, raw, envelope)
        except Exception:  # the database is away: the MTA keeps it and tries again
            log.exception("inbound message not stored")
            reply = TRY_LATER
        else:
            reply = "250 OK: stored"
        # LMTP answers DATA once per recipient (RFC 2033); SMTP once.
        count = len(envelope.rcpt_tos) if self.lmtp else 1
        return "\r\n".join([reply] * max(count, 1))

    def _take(self, raw: bytes, envelope) -> None:
        with self.app.app_context():
            stored = [
                store(
                    self.sessions,
                    raw,
                    source="lmtp" if self.lmtp else "smtp",
                    envelope_from=envelope.mail_from,
                    recipient=recipient,
                )
                for recipient in envelope.rcpt_tos
            ]
            for message_id in stored:  # stored first, all of them: then acted on
                handle(self.sessions, self.app.config, message_id)


class InboundController(Controller):
    """aiosmtpd's controller, speaking LMTP when asked, with the size limit."""

    def __init__(self, handler: InboundHandler, host: str, port: int, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        super().__init__(handler, hostname=host, port=port)

    def factory(self):
        """The protocol instance for one connection."""
        protocol = LMTP if self.handler.lmtp else SMTP
        return protocol(
            self.handler,
            data_size_limit=self.max_bytes,
            hostname="newsletter-inbound",
            ident="newsletter inbound",
        )
