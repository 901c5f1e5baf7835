"""Work a view leaves for after its answer has gone: run once the server has taken the
answer's whole body, not when it closes the answer.

A WSGI server should close every answer, and Flask runs ``call_on_close`` callbacks
then, but Werkzeug's embedded server does not always: once an answer has gone it reads
whatever the client sent past its request, and when the client resets the connection
there (Chromium can, after a redirect) the error skips the close. Work left to the close
was then never done. The server asks for the body's end only after writing all of it,
so that is when this runs the work; a close before the end (a client gone mid-answer)
runs it too, once.
"""

from collections.abc import Callable, Iterable, Iterator

from flask import Flask, request

ENVIRON_KEY = "newsletter.after_answer"


def after_answer(work: Callable[[], None]) -> None:
    """Run ``work`` once this request's answer has been sent (it must catch its own
    errors: the answer has gone, nobody is left to tell)."""
    request.environ.setdefault(ENVIRON_KEY, []).append(work)


class _ThenWork:
    """An answer's body that runs the work left for after it at its end or its close."""

    def __init__(self, body: Iterable[bytes], work: list[Callable[[], None]]) -> None:
        self._body = body
        self._chunks = iter(body)
        self._work: list[Callable[[], None]] | None = work

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        try:
            return next(self._chunks)
        except StopIteration:
            self.close()
            raise

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
                step()


class AfterAnswer:
    """WSGI middleware: an answer whose view left work for after it gets a body that
    runs that work (answers without any pass through untouched)."""

    def __init__(self, app: Callable) -> None:
        self.app = app

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        body = self.app(environ, start_response)
        work = environ.pop(ENVIRON_KEY, None)
        return _ThenWork(body, work) if work else body


def init_app(app: Flask) -> None:
    """Wrap the app so that work left with :func:`after_answer` runs."""
    app.wsgi_app = AfterAnswer(app.wsgi_app)
