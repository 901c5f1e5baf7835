"""A deadline for a whole SMTP delivery attempt or HTTP request, however slowly the
other side answers.

A socket timeout bounds one step; a relay that answers each step just in time, or a
server that sends a byte a second, can stretch an attempt far past it. A Watch cuts the
connection when its deadline passes, waking whatever is blocked on it, and connecting
takes only what is left of the time.
"""

import contextlib
import functools
import heapq
import http.client
import itertools
import logging
import os
import smtplib
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Self


class Watchdog:
    """One daemon thread that calls each armed callback when its time comes.

    Arming is a push on a heap: a thread started per delivery (``threading.Timer``)
    cost more than the rest of sending a confirmation to a local relay.
    """

    def __init__(self) -> None:
        self._reset()
        # A forked child has none of the parent's threads, and may have a copy of the
        # lock taken: it starts afresh.
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._changed = threading.Condition()
        self._due: list[tuple[float, int, Callable[[], None]]] = []
        self._cancelled: set[int] = set()
        self._numbers = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, delay: float, callback: Callable[[], None]) -> int:
        """Call ``callback`` (in the watchdog's thread) in ``delay`` seconds; its number."""
        with self._changed:
            number = next(self._numbers)
            heapq.heappush(self._due, (time.monotonic() + delay, number, callback))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
                self._thread.start()
            if self._due[0][1] == number:  # sooner than what the thread waits for
                self._changed.notify()
            return number

    def cancel(self, number: int) -> None:
        """Do not call what ``number`` armed (if it has not been called yet)."""
        with self._changed:
            self._cancelled.add(number)
            if len(self._cancelled) > 64 and len(self._cancelled) * 2 > len(self._due):
                # Most of the heap is cancelled (deadlines are long, sends short): drop them.
                self._due = [d for d in self._due if d[1] not in self._cancelled]
                heapq.heapify(self._due)
                self._cancelled.clear()

    def _run(self) -> None:
        while True:
            with self._changed:
                while True:
                    while self._due and self._due[0][1] in self._cancelled:
                        self._cancelled.discard(heapq.heappop(self._due)[1])
                    wait = self._due[0][0] - time.monotonic() if self._due else None
                    if wait is not None and wait <= 0:
                        _, _, callback = heapq.heappop(self._due)
                        break
                    self._changed.wait(wait)
            try:
                callback()
            except Exception:  # one failing callback must not end every later deadline
                logging.getLogger(__name__).exception("a deadline's callback failed")


WATCHDOG = Watchdog()


class Watch:
    """The deadline of one ``send``: a timer that cuts the connection when it passes."""

    def __init__(self, deadline: float | None) -> None:
        self.deadline = deadline
        self.ends = None if deadline is None else time.monotonic() + deadline
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._armed: int | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> Self:
        if self.deadline is not None:
            self._armed = WATCHDOG.arm(self.deadline, self._expire)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._armed is not None:
            WATCHDOG.cancel(self._armed)
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


@contextlib.contextmanager
def url_within(request: urllib.request.Request | str, seconds: float, *handlers) -> Iterator:
    """urllib's answer to ``request``, the whole exchange (connecting, TLS, the answer
    and reading it) cut off when ``seconds`` pass: TimeoutError then, however the cut
    showed (a read may just have ended early). ``handlers`` join urllib's own."""
    with Watch(seconds) as watch:
        watched = [_WatchedHTTPHandler(watch), _WatchedHTTPSHandler(watch)]
        opener = urllib.request.build_opener(*handlers, *watched)
        try:
            with opener.open(request, timeout=seconds) as response:
                yield response
        except Exception:
            if watch.expired:
                raise TimeoutError(f"no whole answer within {seconds:g} s") from None
            raise
        if watch.expired:
            raise TimeoutError(f"no whole answer within {seconds:g} s")


def _watched(connection_class, watch: Watch, *args, **kwargs):
    # http.client connects through this attribute: the socket made is tracked.
    connection = connection_class(*args, **kwargs)
    connection._create_connection = lambda address, timeout, source=None: open_socket(
        watch, address[0], address[1], timeout, source
    )
    return connection


class _WatchedHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, watch: Watch) -> None:
        super().__init__()
        self._watch = watch

    def http_open(self, req):
        return self.do_open(
            functools.partial(_watched, http.client.HTTPConnection, self._watch), req
        )


class _WatchedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, watch: Watch) -> None:
        super().__init__()
        self._watch = watch

    def https_open(self, req):
        return self.do_open(
            functools.partial(_watched, http.client.HTTPSConnection, self._watch),
            req,
            context=self._context,
        )
