"""Text rendered once with holes for what differs per reader, filled without re-rendering.

Templates are rendered with a random marker per slot; the result is split at the
markers. Article text cannot contain a marker made after it was written, so filling
never touches it.
"""

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from markupsafe import escape


@dataclass(frozen=True)
class Slotted:
    """Literal chunks and slot names, alternating: chunk, slot, chunk, …, chunk."""

    parts: tuple[str, ...]
    html: bool = False

    def fill(self, values: Mapping[str, str]) -> str:
        """The text with every slot replaced by its value (HTML-escaped in HTML)."""
        return "".join(
            part if index % 2 == 0 else self.value(part, values)
            for index, part in enumerate(self.parts)
        )

    def value(self, slot: str, values: Mapping[str, str]) -> str:
        """What fills ``slot``: its value, HTML-escaped in HTML."""
        return str(escape(values[slot])) if self.html else values[slot]

    def to_json(self) -> dict:
        """JSON-ready form, for storing with an issue."""
        return {"parts": list(self.parts), "html": self.html}

    @classmethod
    def from_json(cls, data: dict) -> "Slotted":
        """The inverse of :meth:`to_json`."""
        return cls(tuple(data["parts"]), bool(data["html"]))


def render_slotted(
    render: Callable[[Mapping[str, str]], str], names: list[str], html: bool
) -> Slotted:
    """Call ``render`` with a marker per slot name and split its output at the markers."""
    token = secrets.token_hex(8)
    markers = {name: f"slot{token}{name.replace('_', '')}end" for name in names}
    text = render(markers)
    parts: list[str] = [text]
    for name, marker in markers.items():
        split: list[str] = []
        for index, part in enumerate(parts):
            if index % 2:
                split.append(part)
                continue
            pieces = part.split(marker)
            for number, piece in enumerate(pieces):
                if number:
                    split.append(name)
                split.append(piece)
        parts = split
    return Slotted(tuple(parts), html)
