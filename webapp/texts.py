"""The catalog of reader-facing texts, kept in ``messages.toml`` beside this module.

Editors change the wording in the TOML file; code and tests use ``MESSAGES.key``
so that no text is written twice.
"""

import tomllib
from importlib import resources
from types import MappingProxyType


class Messages:
    """Read-only attribute access to the texts of one catalog file."""

    def __init__(self, texts: dict[str, str]) -> None:
        self._texts = MappingProxyType(dict(texts))

    def __getattr__(self, key: str) -> str:
        try:
            return self._texts[key]
        except KeyError:
            raise AttributeError(f"no message {key!r} in the catalog") from None

    def as_dict(self) -> dict[str, str]:
        """All texts, e.g. for templates and the in-place form script."""
        return dict(self._texts)


def load_messages() -> Messages:
    """Read the catalog shipped with the package."""
    text = resources.files(__package__).joinpath("messages.toml").read_text("utf-8")
    return Messages(tomllib.loads(text))


# The catalog is package data, not configuration: reading it once at import is safe.
MESSAGES = load_messages()
