"""Reading scraped news pages (``seeds/*.txt``) into articles.

A page scraped to text holds the article between page furniture: navigation, an
audio note, the news feed, "MORE NEWS", "Editors' Picks" and what the sign-up forms
left behind. The reader keeps the article and its news feed and drops the rest.
"""

import re
import unicodedata
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

# Lines that are page furniture wherever they stand.
FURNITURE = {
    "skip to content",
    "перейти до вмісту",  # the same, on the site's Ukrainian pages
    "edit post",
    "редагувати допис",
    "this audio is created with ai assistance",
    "це аудіо створено за допомогою ші",
    "more news",
    "більше новин",
    "editors' picks",
    "editors’ picks",
    "вибір редакції",
    "subscribe",
    "* indicates required",
    "enter your email to subscribe",
    "please, enter correct email address",
    "successfuly subscribed",
    "successfully subscribed",
    "thank you for signing up for this newsletter. we’ve sent you a confirmation email.",
    "thank you for signing up for this newsletter. we've sent you a confirmation email.",
    "підписатися",
    "* позначає обов’язкове поле",
    "введіть свою електронну адресу, щоб підписатися",
    "будь ласка, введіть правильну електронну адресу",
    "ви успішно підписалися",
    "дякуємо, що підписалися на цю розсилку. ми надіслали вам лист для підтвердження.",
}
# Where the article (and then the news feed) ends and the sign-up forms begin.
END_OF_PAGE = {"more news", "editors' picks", "editors’ picks", "більше новин", "вибір редакції"}
NEWS_FEEDS = {"news feed", "стрічка новин"}
MONTHS = "January|February|March|April|May|June|July|August|September|October|November|December"
BYLINE = re.compile(
    rf"^(?:by\s+(?P<byline>.+?)\s*)?"
    rf"(?P<date>(?:{MONTHS})\s+\d{{1,2}},\s+\d{{4}})"
    rf"(?:\s+(?P<time>\d{{1,2}}:\d{{2}}\s*[AP]M))?"
    rf"(?:\s+(?P<minutes>\d+)\s+min\s+read)?\s*$",
    re.IGNORECASE,
)
BYLINE_ONLY = re.compile(r"^by\s+(?P<byline>\S.{0,150}?)(?:\s+(?P<minutes>\d+)\s+min\s+read)?$")
# The site's Ukrainian pages: "Автор: … 1 січня 2024 20:19 1 хв читання".
UK_MONTHS = "січня лютого березня квітня травня червня липня серпня вересня жовтня листопада грудня"
MONTHS_UK = {month: number for number, month in enumerate(UK_MONTHS.split(" "), 1)}
BYLINE_UK = re.compile(
    rf"^(?:(?:автор|авторка|автори):?\s+(?P<byline>.+?)\s*)?"
    rf"(?P<day>\d{{1,2}})\s+(?P<month>{'|'.join(MONTHS_UK)})\s+(?P<year>\d{{4}})"
    rf"(?:\s+(?P<time>\d{{1,2}}:\d{{2}}))?"
    rf"(?:\s+(?P<minutes>\d+)\s+хв\.?\s+читання)?\s*$",
    re.IGNORECASE,
)
FEED_TIME = re.compile(r"^(?:\d{1,2}:\d{2}\s*[AP]M|\d{1,2}:\d{2})$", re.IGNORECASE)
# C0 and C1 controls and DEL, and the two non-characters XML refuses: no field may hold
# one (an Atom feed or a mail header with one is broken). Tabs and line ends stay: they
# are white space to the reader, which splits and joins on them.
CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufffe\uffff]")
MAX_TITLE = 300
MAX_BYTES = 5 * 1024 * 1024  # a scraped page is tens of kilobytes; refuse anything absurd


class ArticleError(ValueError):
    """A file that cannot be read as an article; ``str()`` names the file and the reason."""


@dataclass(frozen=True)
class FeedItem:
    """One entry of the page's news feed."""

    time: str
    headline: str
    summary: str = ""


@dataclass(frozen=True)
class Article:
    """What a reader needs of one news page; plain text throughout, never markup."""

    slug: str
    title: str
    paragraphs: list[str]
    byline: str | None = None
    published: datetime | None = None
    reading_minutes: int | None = None
    feed: list[FeedItem] = field(default_factory=list)
    url: str | None = None  # the story on the site (http or https), when it came from a feed

    def to_dict(self) -> dict:
        """JSON-ready form, for storing with an issue."""
        data = asdict(self)
        data["published"] = self.published.isoformat() if self.published else None
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Article":
        """The inverse of :meth:`to_dict`."""
        published = data.get("published")
        return cls(
            slug=data["slug"],
            title=data["title"],
            paragraphs=list(data["paragraphs"]),
            byline=data.get("byline"),
            published=datetime.fromisoformat(published) if published else None,
            reading_minutes=data.get("reading_minutes"),
            feed=[FeedItem(**item) for item in data.get("feed", [])],
            url=data.get("url"),
        )


def read_article(path: str | Path, extra_furniture: set[str] | frozenset = frozenset()) -> Article:
    """Read one scraped page. ``extra_furniture`` adds lines to drop (e.g. newsletter titles).

    Raises :class:`ArticleError` for files that are empty, binary, not text in UTF-8
    (or UTF-16 with a byte-order mark), or without a title.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ArticleError(f"{path}: cannot read: {exc.strerror}") from None
    return parse_article(
        decode(data, path), slug_hint=path.stem, extra_furniture=extra_furniture, name=str(path)
    )


def decode(data: bytes, name: str | Path = "article") -> str:
    """Bytes of a scraped page as text, or :class:`ArticleError` saying why not."""
    if len(data) > MAX_BYTES:
        raise ArticleError(f"{name}: too large for an article ({len(data)} bytes)")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            raise ArticleError(f"{name}: not valid UTF-16 text") from None
    if b"\x00" in data:
        raise ArticleError(f"{name}: binary file, not text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ArticleError(f"{name}: not UTF-8 text (byte {exc.start})") from None


def parse_article(
    text: str,
    slug_hint: str = "article",
    extra_furniture: set[str] | frozenset = frozenset(),
    name: str = "article",
) -> Article:
    """Parse a page's text into an :class:`Article`."""
    furniture = FURNITURE | {line.casefold() for line in extra_furniture}
    if sum(1 for ch in text if unicodedata.category(ch) == "Cc" and ch not in "\r\n\t") > 8:
        raise ArticleError(f"{name}: binary file, not text")
    # Control characters go before the text is cut into lines: splitlines() takes some
    # of them (\v, \f, \x1c-\x1e, \x85) for line ends, which cut a title in two.
    lines = [_clean(line) for line in CONTROL.sub("", text).splitlines()]
    if not any(lines):
        raise ArticleError(f"{name}: empty file")

    body: list[str] = []
    feed_lines: list[str] = []
    title = byline = None
    published = None
    minutes = None
    in_feed = False
    for line in lines:
        key = line.casefold()
        if not line:
            continue
        if key in END_OF_PAGE:
            break
        if key in furniture:
            continue
        if key in NEWS_FEEDS:
            in_feed = True
            continue
        if in_feed:
            feed_lines.append(line)
        elif title is None:
            title = line
        elif not body and byline is None and published is None and (match := _byline(line)):
            byline, published, minutes = match
        else:
            body.append(line)
    if not title:
        raise ArticleError(f"{name}: no title found")
    if len(title) > MAX_TITLE:
        raise ArticleError(f"{name}: the first line is {len(title)} characters, not a title")
    return Article(
        slug=slugify(title) or slugify(slug_hint) or "article",
        title=title,
        paragraphs=body,
        byline=byline,
        published=published,
        reading_minutes=minutes,
        feed=_feed(feed_lines),
    )


def _clean(line: str) -> str:
    # Non-breaking and other odd spaces from the scrape become plain ones.
    return " ".join(line.split())


def _byline(line: str):
    match = BYLINE_UK.match(line)
    if match:
        hour, minute = (int(n) for n in (match["time"] or "0:00").split(":"))
        try:
            published = datetime(
                int(match["year"]),
                MONTHS_UK[match["month"].lower()],
                int(match["day"]),
                hour,
                minute,
            )
        except ValueError:
            published = None
        minutes = int(match["minutes"]) if match["minutes"] else None
        return match["byline"], published, minutes
    match = BYLINE.match(line)
    if match:
        published = None
        when = match["date"] + (
            " " + match["time"].upper().replace(" ", "") if match["time"] else ""
        )
        for fmt in ("%B %d, %Y %I:%M%p", "%B %d, %Y"):
            try:
                published = datetime.strptime(when, fmt)
                break
            except ValueError:
                continue
        minutes = int(match["minutes"]) if match["minutes"] else None
        return match["byline"], published, minutes
    match = BYLINE_ONLY.match(line)
    if match:
        return match["byline"], None, int(match["minutes"]) if match["minutes"] else None
    return None


def _feed(lines: list[str]) -> list[FeedItem]:
    items: list[FeedItem] = []
    current: list[str] | None = None
    for line in lines:
        if FEED_TIME.match(line):
            if current:
                items.append(_feed_item(current))
            current = [line]
        elif current is not None:
            current.append(line)
    if current:
        items.append(_feed_item(current))
    return [item for item in items if item.headline]


def _feed_item(lines: list[str]) -> FeedItem:
    time, *rest = lines
    headline = rest[0] if rest else ""
    return FeedItem(time=time.upper(), headline=headline, summary=" ".join(rest[1:]))


# Ukrainian letters in Latin, as the national transliteration (2010) writes them.
TRANSLIT = str.maketrans(
    {
        "а": "a", "б": "b", "в": "v", "г": "h", "ґ": "g", "д": "d", "е": "e", "є": "ie",
        "ж": "zh", "з": "z", "и": "y", "і": "i", "ї": "i", "й": "i", "к": "k", "л": "l",
        "м": "m", "н": "n", "о": "o", "п": "p", "р": "r", "с": "s", "т": "t", "у": "u",
        "ф": "f", "х": "kh", "ц": "ts", "ч": "ch", "ш": "sh", "щ": "shch", "ь": "", "ю": "iu",
        "я": "ia", "’": "", "'": "", "ё": "e", "ы": "y", "э": "e", "ъ": "",
    }
)  # fmt: skip


def slugify(text: str, max_length: int = 80) -> str:
    """A URL slug of ASCII letters, digits and dashes (Cyrillic transliterated); empty
    when nothing is left."""
    text = text.lower().translate(TRANSLIT)
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:max_length].rstrip("-")
