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


class DeliveryError(Exception):
    """A message was not delivered. ``permanent`` means a retry cannot succeed."""

    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.permanent = permanent


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


class FileTransport(_Closing):
    """Writes each message as ``<time>-<random>.eml`` into a folder, atomically."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def send(self, message: bytes, sender: str, recipients: list[str]) -> None:
        """Write the message; the envelope is kept in ``X-Envelope-*`` lines on top."""
        self.folder.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        name = f"{stamp}-{secrets.token_hex(4)}.eml"
        envelope = f"X-Envelope-From: {sender}\r\nX-Envelope-To: {', '.join(recipients)}\r\n"
        tmp = self.folder / f".{name}.tmp"
        try:
            tmp.write_bytes(envelope.encode("ascii") + message)
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
    """Sends through one SMTP connection, opened on first use and reopened if lost."""

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        self._smtp: smtplib.SMTP | None = None

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        context = ssl.create_default_context()
        if s.security == "ssl":
            smtp = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout, context=context)
        else:
            smtp = smtplib.SMTP(s.host, s.port, timeout=s.timeout)
        try:
            if s.security == "starttls":
                smtp.starttls(context=context)
            if s.username:
                smtp.login(s.username, s.password or "")
        except BaseException:
            smtp.close()
            raise
        return smtp

    def send(self, message: bytes, sender: str, recipients: list[str]) -> None:
        """Deliver to every recipient or raise :class:`DeliveryError`."""
        for attempt in (1, 2):
            try:
                if self._smtp is None:
                    self._smtp = self._connect()
                refused = self._smtp.sendmail(sender, recipients, message)
            except smtplib.SMTPServerDisconnected as exc:
                self._drop()
                if attempt == 2:
                    raise DeliveryError(f"relay closed the connection: {exc}") from exc
                continue  # a kept-alive connection may have timed out; reopen once
            except smtplib.SMTPRecipientsRefused as exc:
                code, text = next(iter(exc.recipients.values()))
                self._reset()
                raise _refusal(code, text) from exc
            except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
                self._reset()
                raise _refusal(exc.smtp_code, exc.smtp_error) from exc
            except smtplib.SMTPAuthenticationError as exc:
                self._drop()
                raise DeliveryError(f"relay refused the login: {exc.smtp_code}") from exc
            except (TimeoutError, smtplib.SMTPException, OSError) as exc:
                self._drop()
                host = f"{self.settings.host}:{self.settings.port}"
                raise DeliveryError(f"cannot reach the relay at {host}: {exc}") from exc
            if refused:  # some of several recipients refused
                code, text = next(iter(refused.values()))
                raise _refusal(code, text)
            return

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


def _refusal(code: int, text: bytes | str) -> DeliveryError:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return DeliveryError(f"relay answered {code} {text}", permanent=500 <= code < 600)
