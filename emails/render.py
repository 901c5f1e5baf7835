"""Rendering mail from paired templates: ``NAME.txt`` and ``NAME.html`` from one context,
in a language: the templates' texts are gettext messages, translated with Babel from
the catalogs in ``catalogs`` (no Flask here)."""

from functools import cache

from babel.dates import format_date
from babel.support import NullTranslations, Translations
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

# CLDR date patterns: "January 1, 2024", "1 січня 2024" (Babel's own "long" adds "р.").
DATE_FORMATS = {"en": "MMMM d, y", "uk": "d MMMM y"}


@cache
def environment(language: str = "en", catalogs: str | None = None) -> Environment:
    """The Jinja environment for mail in ``language``: HTML autoescaped, undefined names
    are errors, ``_``/``ngettext`` from the catalogs (English as written without them)."""
    env = Environment(
        loader=PackageLoader("emails", "templates"),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        extensions=["jinja2.ext.i18n"],
    )
    translations = (
        Translations.load(catalogs, [language]) if catalogs and language != "en" else None
    )
    # Added to the environment by the i18n extension at run time: not in Jinja's types.
    env.install_gettext_translations(translations or NullTranslations(), newstyle=True)  # type: ignore[attr-defined]
    env.globals["lang"] = language
    pattern = DATE_FORMATS.get(language, "long")
    env.filters["long_date"] = lambda moment: format_date(moment, pattern, locale=language)
    return env
