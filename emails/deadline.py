"""A deadline for a whole SMTP delivery attempt, however slowly the relay answers.

A socket timeout bounds one step; a relay that answers each step just in time, or a
byte at a time, can stretch an attempt far past it. A Watch cuts the connection when
its deadline passes, waking whatever is blocked on it, and connecting takes only what
is left of the time.
"""

import contextlib
import smtplib
import socket
import threading
import time
from typing import Self


class Watch:
    """The deadline of one ``send``: a timer that cuts the connection when it passes."""

    def __init__(self, deadline: float | None) -> None:
        self.deadline = deadline
        self.ends = None if deadline is None else time.monotonic() + deadline
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> Self:
        if self.deadline is not None:
            self._timer = threading.Timer(self.deadline, self._expire)
            self._timer.daemon = True
            self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
        with self._lock:
            held, self._sockets = self._sockets, []
            for sock in held:
                sock.close()  # a duplicate: the connection stays open for the next send

    def left(self, timeout: float) -> float:
        """Seconds the next step may take: the step's timeout, or less near the deadline."""
        if self.ends is None:
            return timeout
        return min(timeout, self.ends - time.monotonic())

    def track(self, sock: socket.socket | None) -> None:
        """Cut ``sock``'s connection too when the deadline passes (at once, if it has).

        What is kept and cut is a duplicate of the socket: TLS takes a socket over by
        detaching it (SMTP over SSL, STARTTLS), after which the socket object given here
        no longer reaches the connection, handshake included; its duplicate still does.
        """
        if self.deadline is None or sock is None or sock.fileno() < 0:
            return  # no deadline (a digest's sender), or nothing left to cut
        held = socket.fromfd(sock.fileno(), sock.family, sock.type, sock.proto)
        with self._lock:
            self._sockets.append(held)
            if self.expired:
                _cut(held)

    def _expire(self) -> None:
        # Under the lock: a duplicate is closed only under it, so none is cut after its
        # descriptor may have been reused.
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _cut(sock)


def _cut(sock: socket.socket) -> None:
    # shutdown wakes a thread blocked reading or writing it; close alone may not.
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def open_socket(watch: "Watch | None", host: str, port: int, timeout: float, source_address):
    """A connected socket, each address tried within what is left of the deadline."""
    error: OSError | None = None
    for family, kind, proto, _, address in socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM):
        left = watch.left(timeout) if watch else timeout
        if left <= 0:
            break
        sock = socket.socket(family, kind, proto)
        if watch:
            watch.track(sock)
        try:
            sock.settimeout(left)
            if source_address:
                sock.bind(source_address)
            sock.connect(address)
            sock.settimeout(timeout)
            return sock
        except OSError as exc:
            error = exc
            sock.close()
    raise error or TimeoutError(f"no time left to connect to {host}:{port}")


class WatchedSMTP(smtplib.SMTP):
    """smtplib's client, connecting within the transport's deadline."""

    def __init__(self, watch: "Watch | None", *args, **kwargs) -> None:
        self._watch = watch
        super().__init__(*args, **kwargs)

    def _get_socket(self, host, port, timeout):
        return open_socket(self._watch, host, port, timeout, self.source_address)


class WatchedSMTP_SSL(smtplib.SMTP_SSL):  # noqa: N801  (smtplib's own naming)
    """smtplib's TLS client, connecting within the transport's deadline."""

    def __init__(self, watch: "Watch | None", *args, **kwargs) -> None:
        self._watch = watch
        super().__init__(*args, **kwargs)

    def _get_socket(self, host, port, timeout):
        sock = open_socket(self._watch, host, port, timeout, self.source_address)
        return self.context.wrap_socket(sock, server_hostname=self._host)
