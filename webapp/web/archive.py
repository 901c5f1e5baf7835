"""Pages to read: seed articles, a newsletter with its archive and Atom feed, sent issues."""

from flask import Blueprint, abort, current_app, render_template, url_for
from sqlalchemy import select

from ..catalog import newsletter_by_slug
from ..db import get_session
from ..i18n import page_language
from ..issues.building import issue_articles, seed_articles
from ..models import Issue, Newsletter
from .signup import newsletters, signup_state

bp = Blueprint("reading", __name__)
ARCHIVE_LIMIT = 100  # newest issues listed on a newsletter's page and in its feed


def _newsletter(slug: str) -> Newsletter:
    newsletter = newsletter_by_slug(get_session(), slug)
    if newsletter is None:
        abort(404)
    return newsletter


def _sent_issues(newsletter: Newsletter) -> list[Issue]:
    query = (
        select(Issue)
        .where(Issue.newsletter_id == newsletter.id, Issue.sent_at.is_not(None))
        .order_by(Issue.number.desc())
        .limit(ARCHIVE_LIMIT)
    )
    return list(get_session().scalars(query))


@bp.get("/articles/<slug>")
def article(slug: str):
    """A seed article as a page like the news site's: the article, its feed, the forms."""
    catalog = newsletters(page_language())
    found = seed_articles({n.title for n in newsletters()}).get(slug)
    if found is None:
        abort(404)
    return render_template(
        "article.html", article=found, newsletters=catalog, **signup_state(catalog)
    )


@bp.get("/newsletters/<slug>")
def newsletter(slug: str):
    """One newsletter: what it is, its sign-up form, the archive of sent issues."""
    found = _newsletter(slug)
    return render_template(
        "newsletter.html",
        newsletter=found,
        issues=_sent_issues(found),
        **signup_state([found]),
    )


@bp.get("/newsletters/<slug>/feed.atom")
def feed(slug: str):
    """The newsletter's sent issues as an Atom feed; links are based on PUBLIC_URL."""
    found = _newsletter(slug)
    public = current_app.config["PUBLIC_URL"]
    body = render_template(
        "feed.xml",
        newsletter=found,
        issues=_sent_issues(found),
        self_url=public + url_for("reading.feed", slug=slug),
        home_url=public + url_for("reading.newsletter", slug=slug),
    )
    return body, {"Content-Type": "application/atom+xml; charset=utf-8"}


# Issue numbers as the database stores them (32 bits): larger ones are no page at all.
@bp.get("/newsletters/<slug>/issues/<int(min=1, max=2147483647):number>")
def issue(slug: str, number: int):
    """The web version of a sent issue, without anyone's personal links."""
    found = _newsletter(slug)
    sent = get_session().scalar(
        select(Issue).where(
            Issue.newsletter_id == found.id, Issue.number == number, Issue.sent_at.is_not(None)
        )
    )
    if sent is None:
        abort(404)
    articles, feed_items = issue_articles(sent)
    return render_template(
        "issue.html", newsletter=found, issue=sent, articles=articles, feed=feed_items
    )
