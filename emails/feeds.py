"""Reading the site's RSS or Atom feed into articles.

feedparser reads the feed (RSS 0.9x to 2.0, Atom, RDF) and cleans its HTML; each
item's HTML then becomes plain-text paragraphs with BeautifulSoup, one paragraph per
block element, so that a feed article is the same plain data as a scraped page's.

An item without a title is skipped and said so; a feed that cannot be fetched or is
not a feed is a :class:`FeedError` whose ``str()`` is one line naming the feed.
"""

import html
import http.client
import io
import re
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
import warnings
from dataclasses import dataclass, field, replace
from datetime import datetime
from hashlib import sha256
from importlib import metadata
from pathlib import Path

import feedparser
from bs4 import (
    BeautifulSoup,
    MarkupResemblesLocatorWarning,
    NavigableString,
    ParserRejectedMarkup,
    Tag,
    XMLParsedAsHTMLWarning,
)
from bs4.element import PreformattedString

from .articles import CONTROL, MAX_TITLE, Article, slugify
from .deadline import url_within

MAX_FEED_BYTES = 10 * 1024 * 1024  # a site's feed is tens of kilobytes
TIMEOUT = 20  # seconds, for the whole fetch
WORDS_PER_MINUTE = 200
MAX_KEY = 512  # longer ids are kept as their hash, so that a key fits any column
MAX_BYLINE = 200
ACCEPT = (
    "application/atom+xml, application/rss+xml, application/xml;q=0.9, text/xml;q=0.9, */*;q=0.1"
)
# Each of these starts a paragraph of its own, and so does what follows it.
BLOCKS = frozenset(
    {
        "address", "article", "aside", "blockquote", "caption", "dd", "details", "dialog",
        "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "h1", "h2", "h3",
        "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol", "p", "pre", "section",
        "summary", "table", "tbody", "tfoot", "thead", "tr", "ul",
    }
)  # fmt: skip
# Elements whose content is no text for a reader: code, styles, embeds, forms.
DROPPED = frozenset(
    {
        "applet", "audio", "button", "canvas", "embed", "form", "head", "iframe", "input",
        "map", "math", "noscript", "object", "script", "select", "style", "svg", "template",
        "textarea", "title", "video",
    }
)  # fmt: skip
CELLS = frozenset({"td", "th"})
UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")  # line ends and tabs too
HTML_TYPES = ("text/html", "application/xhtml+xml")


class FeedError(ValueError):
    """A feed that cannot be read; ``str()`` is one line naming the feed and the reason.

    What came from outside (a URL or path as typed, a server's words) may hold line
    ends or other controls: they are shown escaped, so the line stays one line."""

    def __init__(self, message: str) -> None:
        super().__init__(UNPRINTABLE.sub(lambda m: repr(m.group())[1:-1], message))


@dataclass(frozen=True)
class FeedArticle:
    """One item of a feed as an article, with the key that tells it apart from the
    feed's other items from one read to the next (its id, else its link, else its title)."""

    key: str
    article: Article


@dataclass(frozen=True)
class FeedRead:
    """What one read of a feed gave: its items as articles, in the feed's order, and a
    line for each item left out (``"item 3: no title"``)."""

    url: str
    title: str
    items: list[FeedArticle] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    warning: str | None = None  # the feed is broken, but items were read from it


def user_agent() -> str:
    """The User-Agent the service reads feeds with."""
    try:
        version = metadata.version("newsletter")
    except metadata.PackageNotFoundError:
        version = "0"
    return f"newsletter/{version} (feed reader of a newsletter service)"


def read_feed(url: str, timeout: float = TIMEOUT, max_bytes: int = MAX_FEED_BYTES) -> FeedRead:
    """Fetch the feed at ``url`` and read its items: :func:`fetch_feed`, then
    :func:`parse_feed`."""
    return parse_feed(fetch_feed(url, timeout, max_bytes), url)


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects to http and https only (urllib would follow one to ftp)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urllib.parse.urlsplit(newurl).scheme.lower() not in ("http", "https"):
            fp.close()
            raise FeedError(f"{req.full_url}: redirected to {newurl[:200]}, not http or https")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def fetch_feed(url: str, timeout: float = TIMEOUT, max_bytes: int = MAX_FEED_BYTES) -> bytes:
    """The bytes of the feed at ``url``: an http or https address, or a local file path.

    The whole fetch takes at most about ``timeout`` seconds and ``max_bytes`` bytes;
    an answer other than 2xx, a connection that fails and any other scheme are a
    :class:`FeedError`.
    """
    scheme = url.partition(":")[0].lower() if ":" in url else ""
    if scheme not in ("http", "https"):
        if "://" in url or scheme in ("file", "data", "ftp", "feed"):
            raise FeedError(f"{url}: only http and https feeds are read")
        return _read_file(url, max_bytes)
    try:
        request = urllib.request.Request(
            url, headers={"User-Agent": user_agent(), "Accept": ACCEPT}
        )
        # A server sending a byte a second meets every socket timeout: the whole fetch
        # is cut off instead.
        with url_within(request, timeout, _Redirects) as response:
            length = response.headers.get("Content-Length", "")
            if length.isdigit() and int(length) > max_bytes:
                raise FeedError(f"{url}: {int(length)} bytes, larger than {_size(max_bytes)}")
            chunks, size = [], 0
            while chunk := response.read(64 * 1024):
                chunks.append(chunk)
                size += len(chunk)
                if size > max_bytes:
                    raise FeedError(f"{url}: larger than {_size(max_bytes)}")
            data = b"".join(chunks)
        return data
    except FeedError:
        raise
    except urllib.error.HTTPError as exc:
        exc.close()
        reason = " ".join(str(exc.reason or "").split())
        raise FeedError(f"{url}: HTTP {exc.code}{' ' + reason if reason else ''}") from None
    except urllib.error.URLError as exc:
        raise FeedError(f"{url}: {_reason(exc.reason)}") from None
    except http.client.InvalidURL as exc:
        raise FeedError(f"{url}: not a valid address ({_one_line(exc)})") from None
    except (OSError, http.client.HTTPException) as exc:
        raise FeedError(f"{url}: {_reason(exc)}") from None
    except ValueError as exc:
        raise FeedError(f"{url}: not a valid address ({_one_line(exc)})") from None


def _read_file(path: str, max_bytes: int) -> bytes:
    try:
        with Path(path).open("rb") as file:
            data = file.read(max_bytes + 1)
    except OSError as exc:
        raise FeedError(f"{path}: cannot read: {exc.strerror or _one_line(exc)}") from None
    except ValueError:  # a NUL in the path
        raise FeedError(f"{path}: not a file name") from None
    if len(data) > max_bytes:
        raise FeedError(f"{path}: larger than {_size(max_bytes)}")
    return data


def _reason(exc: object) -> str:
    # What went wrong with the connection, in the words an operator searches for.
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({exc.strerror})"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted ({exc.verify_message})"
    if isinstance(exc, OSError) and exc.strerror:  # "connection refused", "… reset by peer"
        return exc.strerror[0].lower() + exc.strerror[1:]
    if isinstance(exc, http.client.HTTPException):
        return f"not a valid HTTP answer ({type(exc).__name__}: {_one_line(exc)})"
    return _one_line(exc)


def _one_line(exc: object) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _size(size: int) -> str:
    return f"{size / 1024 / 1024:g} MiB" if size >= 1024 * 1024 else f"{size} bytes"


def parse_feed(data: bytes, url: str) -> FeedRead:
    """Read the items of a feed document as articles; ``url`` is where it came from
    (for relative links and for the messages).

    Raises :class:`FeedError` when the document is no feed at all; a feed that is broken
    part way gives the items before the break, and says so in ``warning``.
    """
    parsed = feedparser.parse(
        io.BytesIO(data),  # not a string: feedparser would take one for a path or URL to open
        # XML's own rules (the declaration, else UTF-8) decide the encoding. No address:
        # feedparser would resolve a relative guid against it, and a key would then
        # change with the address the feed was read from.
        response_headers={"content-type": "application/xml"},
        # feedparser's sanitizer keeps the text of what it removes (an iframe's fallback);
        # html_paragraphs drops such elements whole and leaves no markup at all.
        sanitize_html=False,
    )
    problem = _problem(parsed)
    if not parsed.get("version") and not parsed.entries:
        raise FeedError(f"{url}: not a feed{f' ({problem})' if problem else ''}")
    read = FeedRead(
        url=url,
        title=_plain(parsed.feed.get("title", ""), parsed.feed.get("title_detail")),
        warning=problem,
    )
    slugs, keys = set(), set()
    for number, entry in enumerate(parsed.entries, 1):
        try:
            title = _title(entry)
            key = _key(entry, title) if title else ""
            article = _article(entry, title, url) if title and key not in keys else None
        except (ValueError, ParserRejectedMarkup) as exc:  # a link or markup past repair
            read.skipped.append(f"item {number}: cannot be read ({_one_line(exc)})")
            continue
        if not title:
            read.skipped.append(f"item {number}: no title")
            continue
        if article is None:
            read.skipped.append(f"item {number}: the same id as an item before it ({key[:100]})")
            continue
        keys.add(key)
        slug, n = article.slug, 1
        while slug in slugs:  # two items with one title still get their own anchors
            n += 1
            slug = f"{article.slug}-{n}"
        slugs.add(slug)
        read.items.append(FeedArticle(key, replace(article, slug=slug)))
    return read


def _problem(parsed) -> str | None:
    if not parsed.get("bozo"):
        return None
    exc = parsed.get("bozo_exception")
    if hasattr(exc, "getMessage"):  # the XML parser's SAXParseException
        return f"bad XML: {exc.getMessage()}"
    return _one_line(exc) if exc else "bad XML"


def _article(entry, title: str, base: str) -> Article:
    paragraphs = _body(entry)
    words = sum(len(p.split()) for p in paragraphs)
    link = (entry.get("link") or "").strip()
    link = urllib.parse.urljoin(base, link) if link else ""  # relative to the feed
    return Article(
        slug=slugify(title) or slugify(_key(entry, title)) or "article",
        title=title,
        paragraphs=paragraphs,
        byline=_byline(entry),
        published=_published(entry),
        reading_minutes=max(1, round(words / WORDS_PER_MINUTE)) if words else None,
        url=link if urllib.parse.urlsplit(link).scheme.lower() in ("http", "https") else None,
    )


def _title(entry) -> str:
    title = _plain(entry.get("title", ""), entry.get("title_detail"))
    if len(title) > MAX_TITLE:
        title = title[: MAX_TITLE - 1].rsplit(" ", 1)[0] + "…"
    return title


def _key(entry, title: str) -> str:
    for value in (entry.get("id"), entry.get("link"), title):
        key = " ".join(CONTROL.sub("", value or "").split())
        if key:
            return key if len(key) <= MAX_KEY else "sha256:" + sha256(key.encode()).hexdigest()
    return ""


def _byline(entry) -> str | None:
    names = [author.get("name") for author in entry.get("authors") or [] if author.get("name")]
    byline = ", ".join(names) or entry.get("author") or ""
    byline = " ".join(CONTROL.sub("", byline).split())[:MAX_BYLINE]
    return byline or None


def _published(entry) -> datetime | None:
    """When the item was published (else updated), in UTC, naive like the seeds' times."""
    moment = entry.get("published_parsed") or entry.get("updated_parsed")
    if not moment:
        return None
    try:
        return datetime(*moment[:6])
    except (TypeError, ValueError):
        return None


def _body(entry) -> list[str]:
    contents = entry.get("content") or []
    chosen = next((c for c in contents if c.get("type") in HTML_TYPES), None)
    chosen = chosen or (contents[0] if contents else entry.get("summary_detail"))
    if not chosen:
        return []
    if chosen.get("type") in HTML_TYPES:
        return html_paragraphs(chosen.get("value", ""))
    return _text_paragraphs(chosen.get("value", ""))


def _plain(value: str, detail) -> str:
    """A title as plain text on one line, whether the feed gave it as text or HTML."""
    if detail and detail.get("type") in HTML_TYPES:
        return " ".join(html_paragraphs(value))
    return " ".join(CONTROL.sub("", value).split())


def _text_paragraphs(text: str) -> list[str]:
    # Plain text: blank lines part paragraphs; white space is collapsed.
    paragraphs, lines = [], []
    for line in [*CONTROL.sub("", text).splitlines(), ""]:
        if line.strip():
            lines.append(line)
        elif lines:
            paragraphs.append(" ".join(" ".join(lines).split()))
            lines = []
    return paragraphs


_END = object()  # the end of a block: what was gathered is a paragraph
_SPACE = object()  # the end of a table cell


def html_paragraphs(markup: str) -> list[str]:
    """HTML as plain-text paragraphs: one per block element (p, li, h1…h6, blockquote,
    pre, a div's own text…) and per line a ``<br>`` ends; inline elements join their
    text, white space is collapsed, entities decoded, and scripts, styles, embeds and
    forms dropped with their content. No markup is left."""
    if "<" not in markup:  # no tags: text with entities at most (and bs4 would warn)
        return _text_paragraphs(html.unescape(markup))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", XMLParsedAsHTMLWarning)
        warnings.simplefilter("ignore", MarkupResemblesLocatorWarning)
        soup = BeautifulSoup(markup, "html.parser")
    paragraphs: list[str] = []
    gathered: list[str] = []
    # Depth first without recursion: a feed may nest elements thousands deep.
    todo: list = [_END, *reversed(soup.contents)]
    while todo:
        node = todo.pop()
        if node is _SPACE:
            gathered.append(" ")
        elif node is _END:
            text = " ".join(CONTROL.sub("", "".join(gathered)).split())
            if text:
                paragraphs.append(text)
            gathered.clear()
        elif isinstance(node, NavigableString):
            if not isinstance(node, PreformattedString):  # comments, CDATA, doctypes
                gathered.append(str(node))
        elif isinstance(node, Tag):
            name = node.name.lower()
            if name in DROPPED:
                continue
            if name == "br":
                todo.append(_END)
            elif name in BLOCKS:
                todo += [_END, *reversed(node.contents), _END]
            else:
                if name in CELLS:
                    todo.append(_SPACE)
                todo += reversed(node.contents)
    return paragraphs
