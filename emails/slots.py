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


class Markers:
    """The slot markers of one rendering, by slot name: named ahead (the personal links)
    or made while the templates run (tracked links, one per distinct URL)."""

    def __init__(self) -> None:
        self.token = secrets.token_hex(8)
        self.names: list[str] = []

    def __getitem__(self, name: str) -> str:
        if name not in self.names:
            self.names.append(name)
        return f"slot{self.token}{name.replace('_', '')}end"


def render_slotted(
    render: Callable[[Mapping[str, str]], str],
    names: list[str],
    html: bool,
    markers: Markers | None = None,
) -> Slotted:
    """Call ``render`` with a marker per slot name and split its output at the markers,
    and at those of any slot ``markers`` made while it ran."""
    markers = markers or Markers()
    text = render({name: markers[name] for name in names})
    parts: list[str] = [text]
    for name in list(markers.names):
        marker = markers[name]
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
