"""``newsletter digest …``: build, list, preview, check and send issues of a newsletter."""

from pathlib import Path
from typing import TYPE_CHECKING

import click
from flask import Flask, current_app
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from emails.addresses import InvalidAddress, envelope_address, normalize_address
from emails.articles import ArticleError
from emails.dkim import DkimError
from emails.preflight import check_message
from emails.transport import DeliveryError

from ..commands import ISSUE_NUMBER, StaffGroup, issue_arg, newsletter_arg
from ..db import session_factory
from ..links import personal_links, preview_links, reader_links, tracked_links
from ..mailout.models import Delivery, DeliveryStatus
from ..mailout.relay import transport_from_config
from ..models import Issue, Newsletter, Subscriber, Subscription
from ..reports.cli import digest_report
from ..reports.numbers import issue_numbers
from .automatic import page_key, remember_articles
from .building import build_issue, page_furniture, read_articles, seed_article_paths
from .mail import IssueMail
from .queue import eligible_readers
from .running import run_send, single_sender
from .schedule import ScheduleError, local, parse_time, schedule, unschedule
from .sender import SendSettings

if TYPE_CHECKING:
    from email.message import EmailMessage

# Issue numbers as the database stores them (a 32-bit integer column).
digest_group = StaffGroup("digest", help="Build, list, preview, check and send newsletter issues.")
digest_group.add_command(digest_report)  # one issue's results, from reports/


def init_app(app: Flask) -> None:
    """Attach ``newsletter digest``."""
    app.cli.add_command(digest_group)


@digest_group.command("build")
@click.argument("newsletter")
@click.argument("articles", nargs=-1, type=click.Path(path_type=Path))
def build(newsletter: str, articles: tuple[Path, ...]) -> None:
    """Build the next issue of NEWSLETTER from ARTICLES (default: the seeds in its
    language, seeds/*.txt or seeds/LANG/*.txt).

    The first article leads. Prints what was shortened to fit, then the new issue's
    number on the last line.

    Example: newsletter digest build explaining-ukraine seeds/000_ce0462a30ea3d8dc.txt
    """
    with session_factory()() as session:
        target = newsletter_arg(session, newsletter)
        paths = list(articles) or seed_article_paths(target.language)
        try:
            read = read_articles(paths, page_furniture(session))
        except ArticleError as exc:
            raise click.ClickException(str(exc)) from None
        try:
            issue = build_issue(session, target, read)
            remember_articles(session, issue, [page_key(path) for path in paths])
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
    """List issues with their number, state, size, subject and, once sent, how many
    it was delivered to and the share of those who clicked.

    Example: newsletter digest list explaining-ukraine
    """
    with session_factory()() as session:
        query = select(Issue).join(Issue.newsletter).order_by(Newsletter.position, Issue.number)
        if newsletter:
            query = query.where(Issue.newsletter_id == newsletter_arg(session, newsletter).id)
        issues = session.scalars(query).all()
        for issue in issues:
            results = ""
            if issue.scheduled_at is not None and issue.sent_at is None:
                results = f"scheduled {local(issue)}  "
            if issue.sent_at is not None:
                numbers = issue_numbers(session, issue)
                clicked = numbers["rates"]["click"]
                rate = "-" if clicked is None else f"{100 * clicked:.1f}%"
                results = f"{numbers['delivered']:>7,} delivered {rate:>6} clicked  "
            click.echo(
                f"{issue.newsletter.slug:<24} {issue.number:>5}  {issue.state:<6} "
                f"{issue.created_at:%Y-%m-%d %H:%M}  {issue.size / 1024:6.1f} KB  "
                f"{results}{issue.subject}"
            )
        click.echo(f"{len(issues)} issue(s).")


def _body(msg: "EmailMessage", subtype: str) -> str:
    """The text of ``msg``'s part of ``subtype`` (an issue has both)."""
    part = msg.get_body((subtype,))
    if part is None:
        raise click.ClickException(f"the message has no {subtype} part")
    return part.get_content()


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
        links = preview_links(issue.newsletter.language)
    try:
        mail = IssueMail(issue, current_app.config, reader_links(issue.newsletter.language))
        return recipient, mail.message(recipient, links)
    except (OSError, DkimError) as exc:
        raise click.ClickException(f"cannot sign the message: {exc}") from None


@digest_group.command("preview")
@click.argument("newsletter")
@click.argument("number", type=ISSUE_NUMBER)
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
        issue = issue_arg(session, newsletter, number)
        recipient, raw = _one_reader_message(session, issue, reader)
    msg = message_from_bytes(raw, policy=policy.default)
    if eml_file:
        eml_file.write(raw)
    if html_file:
        html_file.write(_body(msg, "html"))
    if text_file:
        text_file.write(_body(msg, "plain"))
    if not (eml_file or html_file or text_file):
        click.echo(_body(msg, "plain"))
    click.echo(
        f"Preview of {newsletter} issue {number} for {recipient}: {len(raw)} bytes.", err=True
    )


@digest_group.command("check")
@click.argument("newsletter")
@click.argument("number", type=ISSUE_NUMBER)
def check(newsletter: str, number: int) -> None:
    """Preflight issue NUMBER: size, links, headers and warnings; exit 1 on problems.

    Example: newsletter digest check explaining-ukraine 1
    """
    with session_factory()() as session:
        issue = issue_arg(session, newsletter, number)
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


@digest_group.command("send")
@click.argument("newsletter")
@click.argument("number", type=ISSUE_NUMBER)
@click.option("--to", "test_to", multiple=True, help="Send a test copy here; records nothing.")
@click.option("--dry-run", is_flag=True, help="Render every message and count; send nothing.")
@click.option(
    "--rate", type=click.FloatRange(min=0, min_open=True), help="At most this many messages/s."
)
@click.option(
    "--connections",
    type=click.IntRange(1, 64),
    help="SMTP connections in parallel (default: NEWSLETTER_SEND_CONNECTIONS, 4).",
)
@click.option("--at", "at", help="Schedule the send (2026-11-27 07:00): a worker starts it.")
@click.option("--tz", "zone", help="The zone of --at (default: the newsletter's).")
@click.option("--yes", is_flag=True, help="Do not ask before sending.")
def send_command(newsletter, number, test_to, dry_run, rate, connections, at, zone, yes) -> None:
    """Send issue NUMBER of NEWSLETTER to every confirmed subscriber.

    The readers confirmed when the send starts are its list. Run the same command
    again after an interruption (Ctrl-C, relay down, a crash) to resume: only readers
    not yet delivered get the issue. Exits 1 when deliveries failed, 75 when errors
    in a row paused the send.

    With --at the send is scheduled and the command returns at once: `newsletter
    worker` starts it at that time, in the newsletter's zone unless --tz says another.

    Example: newsletter digest send explaining-ukraine 3 --rate 50 --yes
    """
    # Flask types current_app as a Flask; it is a LocalProxy, which has this.
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    with session_factory()() as session:
        issue = issue_arg(session, newsletter, number)
        if at is not None or zone is not None:
            _schedule(session, issue, at, zone, yes)
            return
        try:
            # A key that cannot sign stops here.
            IssueMail(issue, app.config, reader_links(issue.newsletter.language))
        except (DkimError, OSError) as exc:
            raise click.ClickException(f"cannot sign with the DKIM key: {exc}") from None
        if test_to:
            _send_tests(issue, test_to)
            return
        if dry_run:
            _dry_run(session, issue)
            return
        with single_sender(app, issue):
            run_send(
                app,
                session,
                issue,
                SendSettings.from_config(app.config, rate=rate, connections=connections),
                yes,
            )


def _schedule(session, issue: Issue, at: str | None, zone: str | None, yes: bool) -> None:
    if at is None:
        raise click.UsageError("--tz goes with --at")
    try:
        moment = parse_time(at, zone or issue.newsletter.timezone)
        schedule(session, issue, moment)
    except ScheduleError as exc:
        raise click.UsageError(str(exc)) from None
    name = f"{issue.newsletter.slug} issue {issue.number}"
    if not yes:
        click.confirm(f"Schedule {name} for {local(issue)}?", abort=True)
    session.commit()
    click.echo(f"Scheduled {name} for {local(issue)}; `newsletter worker` sends it then.")


@digest_group.command("unschedule")
@click.argument("newsletter")
@click.argument("number", type=ISSUE_NUMBER)
def unschedule_command(newsletter: str, number: int) -> None:
    """Cancel the scheduled send of an issue, before it starts.

    Example: newsletter digest unschedule explaining-ukraine 3
    """
    with session_factory()() as session:
        issue = issue_arg(session, newsletter, number)
        try:
            unschedule(session, issue)
        except ScheduleError as exc:
            raise click.UsageError(str(exc)) from None
        session.commit()
    click.echo(f"Unscheduled {newsletter} issue {number}: it is a draft again.")


def _send_tests(issue: Issue, addresses: tuple[str, ...]) -> None:
    recipients = []
    for address in addresses:
        try:
            recipients.append(normalize_address(address).ascii)
        except InvalidAddress as exc:
            raise click.BadParameter(f"{address}: {exc}", param_hint="--to") from None
    mail = IssueMail(issue, current_app.config, reader_links(issue.newsletter.language))
    links = preview_links(issue.newsletter.language)
    with transport_from_config(current_app.config) as transport:
        for recipient in recipients:
            try:
                transport.send(mail.message(recipient, links), mail.sender, [recipient])
            except DeliveryError as exc:
                raise click.ClickException(f"test copy to {recipient} not sent: {exc}") from None
            click.echo(
                f"Test copy of {issue.newsletter.slug} issue {issue.number} sent to {recipient}."
            )


def _dry_run(session, issue: Issue) -> None:
    mail = IssueMail(
        issue, current_app.config, reader_links(issue.newsletter.language), tracked_links()
    )
    if issue.sent_at is None:
        query = eligible_readers(issue).add_columns(Subscriber.email, Subscriber.secret)
    else:
        query = (
            select(
                Delivery.subscriber_id,
                Delivery.subscription_id,
                Subscriber.email,
                Subscriber.secret,
            )
            .join(Subscriber, Subscriber.id == Delivery.subscriber_id)
            .where(
                Delivery.issue_id == issue.id,
                Delivery.status.in_([DeliveryStatus.QUEUED, DeliveryStatus.SENDING]),
            )
        )
    messages = size = 0
    for subscriber_id, subscription_id, email, secret in session.execute(
        query.execution_options(yield_per=1000)
    ):
        try:
            recipient = envelope_address(email)
            size += len(mail.for_reader(recipient, subscription_id, subscriber_id, secret))
        except ValueError as exc:
            click.echo(f"{email}: {exc}", err=True)
            continue
        messages += 1
    average = size / messages / 1024 if messages else 0
    click.echo(
        f"Dry run of {issue.newsletter.slug} issue {issue.number}: {messages:,} message(s) "
        f"rendered, {average:.1f} KB each, {size / 1024 / 1024:.1f} MB in all; "
        "nothing sent or recorded."
    )
