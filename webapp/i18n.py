"""Languages: English at the site's root, Ukrainian under ``/uk/``.

A request's language is its URL's: ``LanguagePrefix`` takes ``/uk`` off the path and
puts it in the script root, so every ``url_for`` of a Ukrainian page stays Ukrainian
with no endpoint of its own. The texts are gettext messages (Flask-Babel on the web,
Babel in ``emails/``); their catalogs are ``webapp/translations/<lang>/LC_MESSAGES/
messages.po``, compiled by ``make`` (``make translations``).
"""

import tomllib
from pathlib import Path

from flask import Flask, has_request_context, request
from flask_babel import Babel, format_date, format_datetime

from emails.render import DATE_FORMATS

from .texts import DEFAULT_LANGUAGE as DEFAULT
from .texts import LANGUAGES

CATALOGS = str(Path(__file__).parent / "translations")  # <lang>/LC_MESSAGES/messages.mo
PREFIXED = tuple(code for code in LANGUAGES if code != DEFAULT)  # served under /<code>/
ENVIRON_KEY = "newsletter.language"
TIME_FORMATS = {"en": "h:mm a", "uk": "HH:mm"}


class LanguagePrefix:
    """WSGI middleware: ``/uk/...`` is the app at ``/...`` in Ukrainian."""

    def __init__(self, app) -> None:
        self.app = app

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO") or "/"
        for code in PREFIXED:
            prefix = f"/{code}"
            if path == prefix or path.startswith(prefix + "/"):
                environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + prefix
                environ["PATH_INFO"] = path[len(prefix) :] or "/"
                environ[ENVIRON_KEY] = code
                break
        return self.app(environ, start_response)


def page_language() -> str:
    """The language of the page being answered (the default outside requests)."""
    if has_request_context():
        return request.environ.get(ENVIRON_KEY, DEFAULT)
    return DEFAULT


def page_in(language: str) -> str:
    """This page's address in ``language``, query included."""
    root = request.script_root
    current = page_language()
    if current != DEFAULT:
        root = root.removesuffix(f"/{current}")
    prefix = "" if language == DEFAULT else f"/{language}"
    query = request.query_string.decode("latin-1")
    return root + prefix + request.path + (f"?{query}" if query else "")


def suggested_language() -> str | None:
    """The other language, when the browser prefers it to this page's (never acted on
    without the reader: a hint beside the switch)."""
    best = request.accept_languages.best_match(list(LANGUAGES))
    return best if best and best != page_language() else None


def init_app(app: Flask) -> None:
    """Babel with the URL's language, the prefix middleware, and the template helpers."""
    Babel(app, locale_selector=page_language)
    # Flask's own way to add WSGI middleware; its types make wsgi_app a method.
    app.wsgi_app = LanguagePrefix(app.wsgi_app)  # type: ignore[method-assign]
    app.add_template_filter(
        lambda moment: format_date(moment, DATE_FORMATS[page_language()]), "long_date"
    )
    app.add_template_filter(
        lambda moment: format_datetime(
            moment, f"{DATE_FORMATS[page_language()]} {TIME_FORMATS[page_language()]}"
        ),
        "long_datetime",
    )
    app.context_processor(
        lambda: {
            "language": page_language(),
            "languages": LANGUAGES,
            "page_in": page_in if has_request_context() else None,
            "suggested_language": suggested_language() if has_request_context() else None,
        }
    )


def extract_texts(fileobj, keywords, comment_tags, options):
    """Babel extractor for ``texts.toml``: each text a message, its key a comment for
    translators (``[extractors] texts = webapp.i18n:extract_texts`` in babel.cfg)."""
    data = fileobj.read().decode("utf-8")
    lines = data.splitlines()
    for key, value in tomllib.loads(data).items():
        number = next((n for n, line in enumerate(lines, 1) if line.startswith(f"{key} ")), 0)
        yield number, "gettext", value, [key]
