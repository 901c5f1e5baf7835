"""Rendering mail from paired templates: ``NAME.txt`` and ``NAME.html`` from one context."""

from functools import cache

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape


@cache
def environment() -> Environment:
    """The Jinja environment for mail: HTML autoescaped, undefined names are errors."""
    return Environment(
        loader=PackageLoader("emails", "templates"),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render_pair(name: str, **context: object) -> tuple[str, str]:
    """Render ``name.txt`` and ``name.html`` with the same context: (text, html)."""
    env = environment()
    text = env.get_template(f"{name}.txt").render(context)
    html = env.get_template(f"{name}.html").render(context)
    return text, html
