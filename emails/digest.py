"""Rendering a newsletter issue (digest) from articles: once per issue, fitted to size.

The HTML part is table-based (Outlook), 600 px wide and fluid below that (phones),
with its CSS inlined by css-inline; the text part comes from the same context. What
differs per reader (unsubscribe and manage links) is left as slots, see ``slots.py``.
"""

from dataclasses import dataclass, field, replace
from functools import cache

import css_inline

from .articles import Article, FeedItem
from .mailmerge import MergeTemplate
from .render import environment
from .slots import Markers, Slotted, render_slotted

PERSONAL = ["unsubscribe_url", "manage_url"]
OPEN_PIXEL = "open_url"  # the slot of the open pixel's address, when opens are tracked
SAMPLE_LINK = "https://" + "x" * 200  # as long as a real personal or tracked link
GMAIL_CLIP_BYTES = 102 * 1024  # Gmail hides the rest of a message larger than this
SIZE_BUDGET = 95 * 1024  # leaves room for headers, DKIM and the personal links
EXCERPT_PARAGRAPHS = 2


@dataclass(frozen=True)
class DigestContent:
    """Everything an issue shows, as plain data; links are absolute."""

    site_name: str
    newsletter_title: str
    number: int
    subject: str
    preheader: str
    lead: Article
    stories: list[Article]
    feed: list[FeedItem]
    web_url: str  # the web version; articles are anchors in it
    reason: str  # why the reader gets this email
    track_clicks: bool = False  # each link a slot of its own (``link0``…), see ``links``
    track_opens: bool = False  # an open pixel in the HTML part (slot ``open_url``)
    language: str = "en"  # of the labels, dates and plurals
    catalogs: str | None = None  # where the translations are (see render.environment)


@dataclass(frozen=True)
class Layout:
    """How much of the content one rendering shows."""

    lead_paragraphs: int | None = None  # None: the whole article
    story_paragraphs: int | None = None
    max_stories: int | None = None
    max_feed: int | None = None


@dataclass(frozen=True)
class RenderedDigest:
    """An issue rendered once: both parts with personal slots, and what fitting changed."""

    html: Slotted
    text: Slotted
    size: int  # bytes of a whole message with sample personal links
    notes: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)  # tracked link N (slot linkN) goes here


class Tracker:
    """Tracked links of one rendering: each distinct URL gets a position and a slot,
    ``link0``, ``link1``…, the same in both parts; untracked, a URL stays itself."""

    def __init__(self, markers: Markers, on: bool) -> None:
        self.markers, self.on = markers, on
        self.urls: list[str] = []

    def __call__(self, url: str) -> str:
        if not self.on:
            return url
        if url not in self.urls:
            self.urls.append(url)
        return self.markers[f"link{self.urls.index(url)}"]


@cache
def _inliner() -> css_inline.CSSInliner:
    # Style tags stay for the clients that read them (the phone layout's media query).
    return css_inline.CSSInliner(keep_style_tags=True, load_remote_stylesheets=False)


def _context(content: DigestContent, layout: Layout) -> dict:
    stories = content.stories
    if layout.max_stories is not None:
        stories = stories[: layout.max_stories]
    feed = content.feed if layout.max_feed is None else content.feed[: layout.max_feed]
    return {
        "c": content,
        "lead": _shown(content.lead, layout.lead_paragraphs),
        "stories": [_shown(story, layout.story_paragraphs) for story in stories],
        "more_stories": len(content.stories) - len(stories),
        "feed": feed,
        "more_feed": len(content.feed) - len(feed),
    }


def _shown(article: Article, paragraphs: int | None) -> dict:
    shortened = paragraphs is not None and len(article.paragraphs) > paragraphs
    return {
        "a": article,
        "paragraphs": article.paragraphs[:paragraphs] if shortened else article.paragraphs,
        "shortened": shortened,
    }


def render_parts(
    content: DigestContent, layout: Layout = Layout()
) -> tuple[Slotted, Slotted, list[str]]:
    """Render the HTML and text parts once, with personal slots and tracked links."""
    env = environment(content.language, content.catalogs)
    context = _context(content, layout)
    markers = Markers()
    link = Tracker(markers, content.track_clicks)
    pixel = markers[OPEN_PIXEL] if content.track_opens else None

    def html(slots):
        page = env.get_template("digest.html").render(context, link=link, open_pixel=pixel, **slots)
        return _inliner().inline(page)

    def text(slots):
        return env.get_template("digest.txt").render(context, link=link, **slots)

    html_part = render_slotted(html, PERSONAL, html=True, markers=markers)
    text_part = render_slotted(text, PERSONAL, html=False, markers=markers)
    return html_part, text_part, link.urls


def sample_size(html: Slotted, text: Slotted, subject: str) -> int:
    """Bytes of a whole message with links as long as real ones."""
    sample = {name: SAMPLE_LINK for part in (html, text) for name in part.parts[1::2]}
    template = MergeTemplate(
        subject=subject,
        sender="newsletter@" + "x" * 40,
        sender_name="x" * 60,
        text=text,
        html=html,
    )
    message = template.merge("x" * 64 + "@" + "x" * 60, sample, {"List-Unsubscribe": "x" * 300})
    return len(message)


def render_digest(content: DigestContent, budget: int = SIZE_BUDGET) -> RenderedDigest:
    """Render the issue in full, or shortened step by step until it fits ``budget`` bytes.

    Long articles become a lead with a "Continue reading" link to the web version,
    then fewer stories and feed items are shown; ``notes`` says what was done.
    """
    plans = [
        (Layout(), None),
        (Layout(story_paragraphs=EXCERPT_PARAGRAPHS), "further stories shortened to their lead"),
        (
            Layout(lead_paragraphs=EXCERPT_PARAGRAPHS + 1, story_paragraphs=EXCERPT_PARAGRAPHS),
            "all articles shortened to their lead",
        ),
        (
            Layout(lead_paragraphs=EXCERPT_PARAGRAPHS, story_paragraphs=1, max_feed=10),
            "articles shortened to one paragraph and the news feed to 10 items",
        ),
    ]
    stories = len(content.stories)
    while stories > 1:  # then fewer stories, halving
        stories //= 2
        plans.append(
            (
                Layout(lead_paragraphs=1, story_paragraphs=1, max_stories=stories, max_feed=5),
                f"only {stories} further stories shown, the rest in the web version",
            )
        )
    plans.append(
        (
            Layout(lead_paragraphs=1, story_paragraphs=0, max_stories=0, max_feed=0),
            "only the lead paragraph shown, the rest in the web version",
        )
    )
    for layout, note in plans:
        html, text, links = render_parts(content, layout)
        size = sample_size(html, text, content.subject)
        if size <= budget:
            notes = (
                []
                if note is None
                else [f"The full issue would exceed {budget // 1024} KB: {note}."]
            )
            return RenderedDigest(html, text, size, notes, links)
    # A single paragraph over the budget: cut the lead's text itself.
    lead = replace(content.lead, paragraphs=[content.lead.paragraphs[0][:2000] + "…"])
    html, text, links = render_parts(replace(content, lead=lead), plans[-1][0])
    size = sample_size(html, text, content.subject)
    return RenderedDigest(html, text, size, ["The lead paragraph alone was too long: cut."], links)
