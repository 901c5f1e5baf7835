"""Rendering once with slots, then filling each reader's values without rendering again."""

import pytest

from emails.slots import Slotted, render_slotted

pytestmark = pytest.mark.no_database  # the PostgreSQL pass leaves these out


def test_fill_replaces_every_slot_and_nothing_else():
    article = "Text that mentions unsubscribe_url and slot tokens like slotdeadbeefend"
    slotted = render_slotted(
        lambda m: f"<p>{article}</p><a href='{m['url']}'>x</a><a href='{m['url']}'>y</a>",
        ["url"],
        html=True,
    )
    assert slotted.parts.count("url") == 2
    filled = slotted.fill({"url": "https://news.newsroom.org/u/1?a=1&b=2"})
    assert article in filled
    assert filled.count("https://news.newsroom.org/u/1?a=1&amp;b=2") == 2  # escaped in HTML


def test_text_slots_are_not_escaped_and_survive_storage():
    slotted = render_slotted(lambda m: f"Leave: {m['a']}\nManage: {m['b']}\n", ["a", "b"], False)
    again = Slotted.from_json(slotted.to_json())
    assert again.fill({"a": "https://x.org/?q=1&r=2", "b": "B"}) == (
        "Leave: https://x.org/?q=1&r=2\nManage: B\n"
    )


def test_markers_differ_between_renderings():
    seen = []
    render_slotted(lambda m: seen.append(m["a"]) or "", ["a"], False)
    render_slotted(lambda m: seen.append(m["a"]) or "", ["a"], False)
    assert seen[0] != seen[1]
