"""Building issues: articles read from files, rendered once into an issue with slots for
each reader's own links."""

from dataclasses import replace
from functools import lru_cache
from pathlib import Path

from flask import current_app
from flask_babel import force_locale, gettext
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from emails.articles import Article, ArticleError, FeedItem, read_article
from emails.digest import DigestContent, render_digest

from ..i18n import CATALOGS
from ..links import public_url
from ..models import Issue, Newsletter
from ..reports.models import IssueLink
from ..texts import DEFAULT_LANGUAGE

PREHEADER_CHARS = 140


def seed_article_paths(language: str = DEFAULT_LANGUAGE) -> list[Path]:
    """The seed articles in ``language``, in name order: ``seeds/*.txt`` for English,
    ``seeds/<language>/*.txt`` for the others."""
    folder = Path(current_app.config["SEEDS_PATH"])
    if language != DEFAULT_LANGUAGE:
        folder = folder / language
    return sorted(folder.glob("*.txt"))


def page_furniture(session: Session) -> set[str]:
    """Lines the sign-up forms leave in scraped pages: the newsletters' titles."""
    return set(session.scalars(select(Newsletter.title)))


def read_articles(paths: list[Path], furniture: set[str]) -> list[Article]:
    """Read every path, or raise ArticleError for the first that is not an article."""
    if not paths:
        raise ArticleError("no articles given, and none in the seeds folder")
    articles, slugs = [], set()
    for path in paths:
        article = read_article(path, furniture)
        slug, n = article.slug, 1
        while slug in slugs:  # two pages with one title still get their own anchors
            n += 1
            slug = f"{article.slug}-{n}"
        slugs.add(slug)
        articles.append(replace(article, slug=slug))
    return articles


@lru_cache(maxsize=4)
def _seed_articles_cached(key: tuple) -> dict[str, Article]:
    paths = [Path(path) for path, _ in key[1]]
    articles: dict[str, Article] = {}
    for path in paths:
        try:
            article = read_article(path, set(key[0]))
        except ArticleError:
            continue  # a bad file is refused by `digest build`; the site skips it
        articles.setdefault(article.slug, article)
    return articles


def seed_articles(furniture: set[str]) -> dict[str, Article]:
    """The readable seed articles by slug, re-read only when a file changed.

    ``furniture``: the newsletter titles, which pages pass from the catalog they show.
    """
    paths = seed_article_paths()
    key = (
        tuple(sorted(furniture)),
        tuple((str(p), p.stat().st_mtime_ns) for p in paths),
    )
    return _seed_articles_cached(key)


def build_issue(session: Session, newsletter: Newsletter, articles: list[Article]) -> Issue:
    """Render and store the next issue of ``newsletter``; the first article leads.

    The caller commits; two builds at once collide on the unique number and one fails.
    """
    config = current_app.config
    number = (
        session.scalar(select(func.max(Issue.number)).where(Issue.newsletter_id == newsletter.id))
        or 0
    ) + 1
    lead, *stories = articles
    with force_locale(newsletter.language):  # the issue is in its newsletter's language
        reason = gettext(
            "You receive this email because you subscribed to %(newsletter)s from %(site)s.",
            newsletter=newsletter.title,
            site=config["SITE_NAME"],
        )
    content = DigestContent(
        site_name=config["SITE_NAME"],
        newsletter_title=newsletter.title,
        number=number,
        subject=lead.title[:300],
        preheader=_preheader(lead),
        lead=lead,
        stories=stories,
        feed=_merged_feed(articles),
        web_url=public_url(
            "reading.issue", newsletter.language, slug=newsletter.slug, number=number
        ),
        reason=reason,
        track_clicks=config["TRACK_CLICKS"],
        track_opens=config["TRACK_OPENS"],
        language=newsletter.language,
        catalogs=CATALOGS,
    )
    rendered = render_digest(content)
    issue = Issue(
        newsletter=newsletter,
        number=number,
        subject=content.subject,
        preheader=content.preheader,
        content={
            "articles": [a.to_dict() for a in articles],
            "feed": [item.__dict__ for item in content.feed],
            "links": rendered.links,  # tracked link N goes here
        },
        html=rendered.html.to_json(),
        text=rendered.text.to_json(),
        size=rendered.size,
        notes=rendered.notes,
    )
    session.add(issue)
    session.flush()
    session.add_all(
        IssueLink(issue_id=issue.id, position=n, url=url) for n, url in enumerate(rendered.links)
    )
    return issue


def issue_articles(issue: Issue) -> tuple[list[Article], list[FeedItem]]:
    """The articles and news feed an issue was built from."""
    articles = [Article.from_dict(a) for a in issue.content["articles"]]
    return articles, [FeedItem(**item) for item in issue.content["feed"]]


def _preheader(lead: Article) -> str:
    text = lead.paragraphs[0] if lead.paragraphs else lead.title
    if len(text) <= PREHEADER_CHARS:
        return text
    return text[:PREHEADER_CHARS].rsplit(" ", 1)[0] + "…"


def _merged_feed(articles: list[Article]) -> list[FeedItem]:
    seen, feed = set(), []
    for article in articles:
        for item in article.feed:
            if item.headline not in seen:
                seen.add(item.headline)
                feed.append(item)
    return feed
