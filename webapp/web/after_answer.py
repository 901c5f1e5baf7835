"""Work a view leaves for after its answer has gone: run once the server has taken the
answer's whole body, not only when it closes the answer.

A WSGI server should close every answer, and Flask runs ``call_on_close`` callbacks
then, but Werkzeug's embedded server does not always: once an answer has gone it reads
whatever the client sent past its request, and when the client resets the connection
there (Chromium can, after a redirect) the error skips the close. Work left to the close
was then never done. An answer with a Content-Length is whole on the wire once the
server has written that many bytes, which it does before asking for more; so when the
server asks past the last byte, the work runs. Any other answer (no body, or chunked:
the server still has its end to write) runs it at its close. Either way, once.
"""

import logging
from collections.abc import Callable, Iterable, Iterator

from flask import Flask, request

ENVIRON_KEY = "newsletter.after_answer"

log = logging.getLogger(__name__)


def after_answer(work: Callable[[], None]) -> None:
    """Run ``work`` once this request's answer has been sent (a failure is logged: the
    answer has gone, nobody is left to tell)."""
    request.environ[ENVIRON_KEY].append(work)  # a KeyError: the middleware is missing


class _ThenWork:
    """An answer's body that runs the work left for after it once all of its
    ``length`` bytes have been taken (None: at its close), or at its close if sooner."""

    def __init__(
        self, body: Iterable[bytes], work: list[Callable[[], None]], length: int | None
    ) -> None:
        self._body = body
        self._chunks = iter(body)
        self._work: list[Callable[[], None]] | None = work
        self._left = length

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        try:
            chunk = next(self._chunks)
        except StopIteration:
            if self._left == 0:  # every byte written: the answer is whole
                self.close()
            raise
        if self._left is not None:
            self._left -= len(chunk)
        return chunk

    def close(self) -> None:
        """Close the body and run the work, the first time only."""
        work, self._work = self._work, None
        if work is None:
            return
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            for step in work:
                try:
                    step()
                except Exception:  # the others still run; the server is not told
                    log.exception("work left for after an answer failed")


class AfterAnswer:
    """WSGI middleware: an answer whose view left work for after it gets a body that
    runs that work (answers without any pass through untouched)."""

    def __init__(self, app: Callable) -> None:
        self.app = app

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        environ[ENVIRON_KEY] = []
        length: list[int | None] = [None]

        def starting(status, headers, exc_info=None):
            found = [value for name, value in headers if name.lower() == "content-length"]
            length[0] = int(found[0]) if found and found[0].isdigit() else None
            return start_response(status, headers, exc_info)

        body = self.app(environ, starting)
        work = environ.pop(ENVIRON_KEY)
        if not work:
            return body
        # A body-less answer (HEAD, 204, 304) is not on the wire before the server
        # writes its headers after the body's end: its work waits for the close.
        return _ThenWork(body, work, length[0] or None)


def init_app(app: Flask) -> None:
    """Wrap the app so that work left with :func:`after_answer` runs."""
    # Flask's own way to add WSGI middleware; its types make wsgi_app a method.
    app.wsgi_app = AfterAnswer(app.wsgi_app)  # type: ignore[method-assign]
