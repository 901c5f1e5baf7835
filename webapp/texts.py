"""The reader-facing texts, kept in ``texts.toml`` beside this module.

The English wording is in the TOML file; each text is also a gettext message, so
``TEXTS.key`` is the text in the language of the page being answered (translations in
``translations/<lang>/LC_MESSAGES/messages.po``). Code and tests use ``TEXTS.key`` so
that no text is written twice.
"""

import tomllib
from importlib import resources
from types import MappingProxyType

# The languages of pages and mail: English at the site's root, the others under /<code>/.
LANGUAGES = {"en": "English", "uk": "Українська"}
DEFAULT_LANGUAGE = "en"


class Texts:
    """Read-only attribute access to the texts of one TOML file."""

    def __init__(self, texts: dict[str, str]) -> None:
        self._texts = MappingProxyType(dict(texts))

    def __getattr__(self, key: str) -> str:
        try:
            return _translated(self._texts[key])
        except KeyError:
            raise AttributeError(f"no text {key!r} in texts.toml") from None

    def __getitem__(self, key: str) -> str:
        return _translated(self._texts[key])

    def english(self, key: str) -> str:
        """The text as written in texts.toml, whatever the page's language."""
        return self._texts[key]

    def as_dict(self) -> dict[str, str]:
        """All texts in the page's language, e.g. for templates and the form script."""
        return {key: _translated(text) for key, text in self._texts.items()}


def _translated(text: str) -> str:
    """``text`` in the current language: Flask-Babel's within an app, else as written."""
    from flask import has_app_context

    if not has_app_context():
        return text
    from flask_babel import gettext

    return gettext(text)


def load_texts() -> Texts:
    """Read the texts shipped with the package."""
    text = resources.files(__package__).joinpath("texts.toml").read_text("utf-8")
    return Texts(tomllib.loads(text))


# The texts are package data, not configuration: reading them once at import is safe.
TEXTS = load_texts()
