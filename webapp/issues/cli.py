"""``newsletter digest …``: build, list, preview and check issues of a newsletter."""

from pathlib import Path

import click
from flask import current_app
from flask.cli import AppGroup
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from emails.addresses import InvalidAddress, normalize_address
from emails.articles import ArticleError
from emails.dkim import DkimError
from emails.preflight import check_message

from .catalog import issue_or_fail, newsletter_or_fail
from .db import session_factory
from .digests import (
    build_issue,
    page_furniture,
    read_articles,
    reader_message,
    seed_article_paths,
)
from .links import personal_links, preview_links
from .models import Issue, Newsletter, Subscriber, Subscription
from .send_cli import send_command

digest_group = AppGroup("digest", help="Build, list, preview, check and send newsletter issues.")
digest_group.add_command(send_command)


@digest_group.command("build")
@click.argument("newsletter")
@click.argument("articles", nargs=-1, type=click.Path(path_type=Path))
def build(newsletter: str, articles: tuple[Path, ...]) -> None:
    """Build the next issue of NEWSLETTER from ARTICLES (default: seeds/*.txt).

    The first article leads. Prints what was shortened to fit, then the new issue's
    number on the last line.

    Example: newsletter digest build explaining-ukraine seeds/000_ce0462a30ea3d8dc.txt
    """
    with session_factory()() as session:
        target = newsletter_or_fail(session, newsletter)
        try:
            read = read_articles(list(articles) or seed_article_paths(), page_furniture(session))
        except ArticleError as exc:
            raise click.ClickException(str(exc)) from None
        try:
            issue = build_issue(session, target, read)
            session.commit()
        except IntegrityError:
            raise click.ClickException(
                "another build of this newsletter ran at the same time; run again"
            ) from None
        for note in issue.notes:
            click.echo(note)
        click.echo(
            f"Built {target.slug} issue {issue.number} from {len(read)} article(s), "
            f"{issue.size / 1024:.1f} KB: {issue.subject}"
        )
        click.echo(issue.number)


@digest_group.command("list")
@click.argument("newsletter", required=False)
def list_issues(newsletter: str | None) -> None:
    """List issues with their number, state, size and subject.

    Example: newsletter digest list explaining-ukraine
    """
    with session_factory()() as session:
        query = select(Issue).join(Issue.newsletter).order_by(Newsletter.position, Issue.number)
        if newsletter:
            query = query.where(Issue.newsletter_id == newsletter_or_fail(session, newsletter).id)
        issues = session.scalars(query).all()
        for issue in issues:
            click.echo(
                f"{issue.newsletter.slug:<24} {issue.number:>5}  {issue.state:<6} "
                f"{issue.created_at:%Y-%m-%d %H:%M}  {issue.size / 1024:6.1f} KB  {issue.subject}"
            )
        click.echo(f"{len(issues)} issue(s).")


def _one_reader_message(session, issue: Issue, reader: str | None) -> tuple[str, bytes]:
    """The message ``reader`` (a subscriber's address) gets, or a preview reader's."""
    subscription = None
    if reader:
        try:
            key = normalize_address(reader).key
        except InvalidAddress as exc:
            raise click.BadParameter(str(exc), param_hint="--reader") from None
        subscription = session.scalar(
            select(Subscription)
            .join(Subscription.subscriber)
            .where(Subscriber.email_key == key, Subscription.newsletter_id == issue.newsletter_id)
        )
        if subscription is None:
            raise click.BadParameter(
                f"{reader} is not on {issue.newsletter.slug}", param_hint="--reader"
            )
    if subscription is not None:
        recipient = normalize_address(subscription.subscriber.email).ascii
        links = personal_links(subscription)
    else:
        domain = current_app.config["MAIL_FROM"].rpartition("@")[2]
        recipient = f"preview@{domain}"
        links = preview_links()
    try:
        return recipient, reader_message(issue, recipient, links)
    except (OSError, DkimError) as exc:
        raise click.ClickException(f"cannot sign the message: {exc}") from None


@digest_group.command("preview")
@click.argument("newsletter")
@click.argument("number", type=int)
@click.option(
    "--html", "html_file", type=click.File("w", encoding="utf-8"), help="Write the HTML part here."
)
@click.option(
    "--text", "text_file", type=click.File("w", encoding="utf-8"), help="Write the text part here."
)
@click.option("--eml", "eml_file", type=click.File("wb"), help="Write the whole MIME message here.")
@click.option("--reader", help="Personalize for this subscriber (default: a preview reader).")
def preview(newsletter, number, html_file, text_file, eml_file, reader) -> None:
    """Show issue NUMBER of NEWSLETTER exactly as one reader gets it.

    Without an output option, prints the text part.

    Example: newsletter digest preview explaining-ukraine 1 --html issue.html --eml issue.eml
    """
    from email import message_from_bytes, policy

    with session_factory()() as session:
        issue = issue_or_fail(session, newsletter, number)
        recipient, raw = _one_reader_message(session, issue, reader)
    msg = message_from_bytes(raw, policy=policy.default)
    if eml_file:
        eml_file.write(raw)
    if html_file:
        html_file.write(msg.get_body(("html",)).get_content())
    if text_file:
        text_file.write(msg.get_body(("plain",)).get_content())
    if not (eml_file or html_file or text_file):
        click.echo(msg.get_body(("plain",)).get_content())
    click.echo(
        f"Preview of {newsletter} issue {number} for {recipient}: {len(raw)} bytes.", err=True
    )


@digest_group.command("check")
@click.argument("newsletter")
@click.argument("number", type=int)
def check(newsletter: str, number: int) -> None:
    """Preflight issue NUMBER: size, links, headers and warnings; exit 1 on problems.

    Example: newsletter digest check explaining-ukraine 1
    """
    with session_factory()() as session:
        issue = issue_or_fail(session, newsletter, number)
        _, raw = _one_reader_message(session, issue, None)
    report = check_message(raw)
    click.echo(f"Size: {report.size} bytes ({report.size / 1024:.1f} KB)")
    click.echo("Headers:")
    for name, value in report.headers:
        if not name.lower().startswith("content-"):
            click.echo(f"  {name}: {value}")
    click.echo(f"Links ({len(report.links)}):")
    for link in report.links:
        click.echo(f"  {link}")
    for warning in report.warnings:
        click.echo(f"Warning: {warning}")
    for problem in report.problems:
        click.echo(f"Problem: {problem}")
    if report.problems:
        raise click.ClickException(f"{len(report.problems)} problem(s) would hurt delivery")
    click.echo(f"OK: {len(report.warnings)} warning(s), no problems.")
