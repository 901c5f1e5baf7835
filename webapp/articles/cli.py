"""``newsletter articles …``: what the site's feed offers, before an issue takes it."""

import click
from flask import Flask

from emails.feeds import FeedError, read_feed

from ..commands import StaffGroup

articles_group = StaffGroup("articles", help="Articles from the site's RSS or Atom feed.")


def init_app(app: Flask) -> None:
    """Attach ``newsletter articles``."""
    app.cli.add_command(articles_group)


@articles_group.command("fetch")
@click.argument("url")
def fetch(url: str) -> None:
    """Read the RSS or Atom feed at URL (http, https, or a file on this machine) and show
    the articles an issue would take from it: one line each with its time (UTC), title,
    key, link and length. Items left out are listed on stderr. Nothing is stored.

    Example: newsletter articles fetch https://news.example.org/feed.xml
    """
    try:
        read = read_feed(url)
    except FeedError as exc:
        raise click.ClickException(str(exc)) from None
    if read.warning:
        click.echo(f"warning: {url}: {read.warning}; the items before it were read", err=True)
    for item in read.items:
        article = item.article
        when = f"{article.published:%Y-%m-%d %H:%M}" if article.published else "-"
        words = sum(len(p.split()) for p in article.paragraphs)
        link = f" {article.url}" if article.url and article.url != item.key else ""
        click.echo(
            f"{when:<16}  {article.title}  [{item.key}]{link}  "
            f"{len(article.paragraphs)} paragraph(s), {words} words"
        )
    for skipped in read.skipped:
        click.echo(f"skipped: {skipped}", err=True)
    click.echo(f"{len(read.items)} article(s) would be taken, {len(read.skipped)} skipped.")
