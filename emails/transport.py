"""Delivering finished messages: to ``.eml`` files (development) or an SMTP relay.

Both transports take the message as bytes and raise :class:`DeliveryError` saying
whether trying again later can help.
"""

import os
import secrets
import smtplib
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, Self

from .deadline import Watch, WatchedSMTP, WatchedSMTP_SSL


class DeliveryError(Exception):
    """A message was not delivered. ``permanent`` means a retry cannot succeed.

    ``code`` is the relay's reply code, None when the relay could not be reached or
    the connection was lost; ``recipient`` says the refusal named the recipient (RCPT),
    not the sender or the message.
    """

    def __init__(
        self,
        reason: str,
        *,
        permanent: bool = False,
        code: int | None = None,
        recipient: bool = False,
    ) -> None:
        super().__init__(reason)
        self.permanent = permanent
        self.code = code
        self.recipient = recipient


class Transport(Protocol):
    """Anything that delivers bytes to recipients; used as a context manager."""

    def send(self, message: bytes, sender: str, recipients: list[str]) -> None: ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...


class _Closing:
    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release what the transport holds; nothing by default."""


def private_folder(folder: Path) -> None:
    """Create ``folder`` and the folders missing on the way to it, each 0700 whatever
    the umask (``mkdir -p`` would give the parents the umask's mode: a world-writable
    parent lets anyone swap the private folder for one of theirs). Folders that exist
    are left as they are: their mode is the operator's choice."""
    for missing in reversed([p for p in (folder, *folder.parents) if not p.is_dir()]):
        missing.mkdir(mode=0o700, exist_ok=True)


class FileTransport(_Closing):
    """Writes each message as ``<time>-<random>.eml`` into a folder, atomically."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def send(self, message: bytes, sender: str, recipients: list[str]) -> None:
        """Write the message; the envelope is kept in ``X-Envelope-*`` lines on top."""
        # Captured mail holds every confirmation link: this user's only, whatever the umask.
        private_folder(self.folder)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        name = f"{stamp}-{secrets.token_hex(4)}.eml"
        envelope = f"X-Envelope-From: {sender}\r\nX-Envelope-To: {', '.join(recipients)}\r\n"
        tmp = self.folder / f".{name}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(envelope.encode("ascii") + message)
            os.replace(tmp, self.folder / name)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise DeliveryError(f"cannot write {self.folder}: {exc.strerror}") from exc


@dataclass(frozen=True)
class SmtpSettings:
    """Where and how to reach the relay."""

    host: str = "localhost"
    port: int = 25
    username: str | None = None
    password: str | None = None
    security: str = "none"  # none, starttls or ssl
    timeout: float = 30


class SmtpTransport(_Closing):
    """Sends through one SMTP connection, opened on first use and reopened if lost.

    ``timeout`` bounds each step (connect, each command, each read). ``deadline``, when
    given, bounds a whole ``send``, however the relay answers (slowly, or a byte at a
    time): the connection is cut when it passes. A sender holding a lease on what it
    sends sets it shorter than the lease, so no one else takes the message over while
    this attempt may still deliver it.
    """

    def __init__(self, settings: SmtpSettings, deadline: float | None = None) -> None:
        self.settings = settings
        self.deadline = deadline
        self._smtp: smtplib.SMTP | None = None
        self._body_sent = False
        self._watch: Watch | None = None

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        context = ssl.create_default_context()
        smtp: smtplib.SMTP
        if s.security == "ssl":
            smtp = WatchedSMTP_SSL(self._watch, s.host, s.port, timeout=s.timeout, context=context)
        else:
            smtp = WatchedSMTP(self._watch, s.host, s.port, timeout=s.timeout)
        try:
            smtp.ehlo_or_helo_if_needed()
            if s.security == "starttls":
                smtp.starttls(context=context)
                smtp.ehlo()
            if s.username:
                smtp.login(s.username, s.password or "")
        except BaseException:
            smtp.close()
            raise
        return smtp

    def send(self, message: bytes, sender: str, recipients: list[str]) -> None:
        """Deliver to every recipient or raise :class:`DeliveryError`.

        ``message`` has CRLF line ends; addresses are ASCII. A connection found closed
        before the message went out is reopened once (kept-alive connections time out).
        """
        with Watch(self.deadline) as watch:
            self._watch = watch
            try:
                self._send(watch, message, sender, recipients)
            except DeliveryError:
                if watch.expired:
                    raise DeliveryError(
                        f"the relay took longer than {self.deadline:g} s; connection cut"
                    ) from None
                raise
            finally:
                self._watch = None

    def _send(self, watch: Watch, message: bytes, sender: str, recipients: list[str]) -> None:
        for attempt in (1, 2):
            self._body_sent = False
            try:
                if self._smtp is None:
                    self._smtp = self._connect()
                else:
                    watch.track(self._smtp.sock)
                self._transaction(self._smtp, message, sender, recipients)
                return
            except smtplib.SMTPServerDisconnected as exc:
                self._drop()
                if attempt == 2 or self._body_sent or watch.expired:
                    raise DeliveryError(f"relay closed the connection: {exc}") from exc
            except smtplib.SMTPAuthenticationError as exc:
                self._drop()
                raise DeliveryError(f"relay refused the login: {exc.smtp_code}") from exc
            except (TimeoutError, smtplib.SMTPException, OSError) as exc:
                self._drop()
                host = f"{self.settings.host}:{self.settings.port}"
                raise DeliveryError(f"cannot reach the relay at {host}: {exc}") from exc

    def _transaction(
        self, smtp: smtplib.SMTP, message: bytes, sender: str, recipients: list[str]
    ) -> None:
        """MAIL, RCPT and DATA, in one write when the relay offers PIPELINING (RFC 2920).

        Pipelining halves the round trips of a message, which is most of the time a
        fast relay takes. Raises DeliveryError for a refusal; the connection stays usable.
        """
        commands = [f"MAIL FROM:<{sender}>", *(f"RCPT TO:<{r}>" for r in recipients), "DATA"]
        for command in commands:
            if not command.isascii() or "\r" in command or "\n" in command:
                raise DeliveryError(f"address cannot go on the wire: {command!r}", permanent=True)
        if smtp.has_extn("pipelining"):
            smtp.send("".join(f"{command}\r\n" for command in commands))
            replies = [smtp.getreply() for _ in commands]
        else:
            replies = [_ask(smtp, commands[0])]
            if replies[0][0] == 250:
                replies += [_ask(smtp, command) for command in commands[1:-1]]
                if any(code in (250, 251) for code, _ in replies[1:]):
                    replies.append(_ask(smtp, "DATA"))
        mail, rcpts = replies[0], replies[1 : 1 + len(recipients)]
        data = replies[-1] if len(replies) == len(commands) else (503, b"not asked")
        refused = [reply for reply in rcpts if reply[0] not in (250, 251)]
        if mail[0] != 250 or len(refused) == len(recipients) or data[0] != 354:
            if data[0] == 354:  # a relay may accept DATA anyway: end it empty
                smtp.send(".\r\n")
                smtp.getreply()
            self._reset()
            if mail[0] != 250:
                raise _refusal(*mail)
            if refused:
                raise _refusal(*refused[0], recipient=True)
            raise _refusal(*data)
        if not message.endswith(b"\r\n"):
            message += b"\r\n"
        # Dot-stuffing (RFC 5321 4.5.2); a message starts with a header, never a dot.
        # Split and joined: twice as fast as bytes.replace on a digest whose style
        # sheet starts lines with dots.
        self._body_sent = True
        smtp.send(b"\r\n..".join(message.split(b"\r\n.")) + b".\r\n")
        code, text = smtp.getreply()
        if code != 250:
            raise _refusal(code, text)
        if refused:  # some of several recipients refused; the others got it
            raise _refusal(*refused[0], recipient=True)

    def _reset(self) -> None:
        # After a refusal the connection is still good for the next message.
        try:
            if self._smtp is not None:
                self._smtp.rset()
        except (smtplib.SMTPException, OSError):
            self._drop()

    def _drop(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.close()
            finally:
                self._smtp = None

    def close(self) -> None:
        """Say QUIT and close the connection, if one is open."""
        if self._smtp is not None:
            try:
                self._smtp.quit()
            except (smtplib.SMTPException, OSError):
                pass
            finally:
                self._drop()


def _ask(smtp: smtplib.SMTP, command: str) -> tuple[int, bytes]:
    smtp.send(f"{command}\r\n")
    return smtp.getreply()


def _refusal(code: int, text: bytes | str, *, recipient: bool = False) -> DeliveryError:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return DeliveryError(
        f"relay answered {code} {text}",
        permanent=500 <= code < 600,
        # 421: the relay is closing the connection; like an unreachable relay, not a refusal.
        code=None if code == 421 else code,
        recipient=recipient,
    )
