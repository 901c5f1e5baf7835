"""The reader-facing texts, kept in ``texts.toml`` beside this module.

Editors change the wording in the TOML file; code and tests use ``TEXTS.key`` so that
no text is written twice.
"""

import tomllib
from importlib import resources
from types import MappingProxyType


class Texts:
    """Read-only attribute access to the texts of one TOML file."""

    def __init__(self, texts: dict[str, str]) -> None:
        self._texts = MappingProxyType(dict(texts))

    def __getattr__(self, key: str) -> str:
        try:
            return self._texts[key]
        except KeyError:
            raise AttributeError(f"no text {key!r} in texts.toml") from None

    def __getitem__(self, key: str) -> str:
        return self._texts[key]

    def as_dict(self) -> dict[str, str]:
        """All texts, e.g. for templates and the in-place form script."""
        return dict(self._texts)


def load_texts() -> Texts:
    """Read the texts shipped with the package."""
    text = resources.files(__package__).joinpath("texts.toml").read_text("utf-8")
    return Texts(tomllib.loads(text))


# The texts are package data, not configuration: reading them once at import is safe.
TEXTS = load_texts()
