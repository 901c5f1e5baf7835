"""``newsletter subscribers …``: the staff's view of the list and its upkeep."""

from datetime import timedelta
from pathlib import Path

import click
from flask import Flask, current_app
from sqlalchemy import and_, delete, select

from ..commands import Duration, StaffGroup, newsletter_arg
from ..db import rowcount, session_factory, utcnow
from ..models import (
    Newsletter,
    Subscriber,
    Subscription,
    SubscriptionStatus,
)
from .export import export_subscriptions
from .importer import ImportFileError, import_csv
from .mail import queue_confirmation, wake_worker
from .service import claim_confirmation, confirmation_due
from .stats import list_stats

subscribers_group = StaffGroup("subscribers", help="Staff view of subscribers and list upkeep.")


def init_app(app: Flask) -> None:
    """Attach ``newsletter subscribers``."""
    app.cli.add_command(subscribers_group)


@subscribers_group.command("export")
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True
)
@click.option(
    "--output",
    type=click.File("w", encoding="utf-8", lazy=True),
    default="-",
    help="File to write; default: standard output.",
)
@click.option("--newsletter", help="Only this newsletter (slug).")
@click.option(
    "--status", type=click.Choice([s.value for s in SubscriptionStatus]), help="Only this status."
)
@click.option(
    "--raw",
    is_flag=True,
    help="CSV: write cells as stored, for re-import (no apostrophe before =, +, -, @).",
)
def subscribers_export(
    fmt: str, output, newsletter: str | None, status: str | None, raw: bool
) -> None:
    """Export subscriptions with their state and history, one row per subscription.

    The consent that holds (when, how, IP, user agent and source of the sign-up and
    the confirmation) has columns of its own; every event is in the history (a JSON
    cell in CSV). CSV cells a spreadsheet would run as a formula start with an
    apostrophe unless --raw. Streams rows, so memory stays flat however long the
    list. Times are UTC, ISO 8601.

    Example: newsletter subscribers export --format csv --newsletter explaining-ukraine > list.csv
    """
    with session_factory()() as session:
        target = newsletter_arg(session, newsletter, "--newsletter") if newsletter else None
        count = export_subscriptions(
            session, output, fmt, target, SubscriptionStatus(status) if status else None, raw
        )
    click.echo(f"Exported {count} subscriptions.", err=True)


@subscribers_group.command("list")
@click.option("--newsletter", help="Only this newsletter (slug).")
@click.option(
    "--status", type=click.Choice([s.value for s in SubscriptionStatus]), help="Only this status."
)
@click.option("--search", help="Only addresses containing this text (any case).")
@click.option("--suppressed", is_flag=True, help="Only addresses the relay refused for good (5xx).")
def subscribers_list(
    newsletter: str | None, status: str | None, search: str | None, suppressed: bool
) -> None:
    """List subscriptions: address, newsletter, status, and since when.

    Addresses a digest send found refused for good are marked "suppressed: reason";
    sends leave them out.

    Example: newsletter subscribers list --newsletter ukraine-daily --status pending --search gmail
    """
    query = (
        select(
            Subscriber.email,
            Newsletter.slug,
            Subscription.status,
            Subscription.status_since,
            Subscriber.suppressed_reason,
        )
        .join(Subscription.subscriber)
        .join(Subscription.newsletter)
        .order_by(Subscriber.email_key, Newsletter.position)
    )
    if suppressed:
        query = query.where(Subscriber.suppressed_at.isnot(None))
    if status:
        query = query.where(Subscription.status == SubscriptionStatus(status))
    if search and any(ord(ch) < 32 or ord(ch) == 127 for ch in search):
        raise click.BadParameter(
            "control characters are not part of any address", param_hint="--search"
        )
    if search:
        pattern = (
            "%"
            + search.casefold().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            + "%"
        )
        query = query.where(Subscriber.email_key.like(pattern, escape="\\"))
    count = 0
    with session_factory()() as session:
        if newsletter:
            query = query.where(
                Subscription.newsletter_id == newsletter_arg(session, newsletter, "--newsletter").id
            )
        rows = session.execute(query.execution_options(yield_per=1000))
        for email, slug, state, since, refused in rows:
            mark = f"  suppressed: {refused}" if refused else ""
            click.echo(f"{email:<40} {slug:<24} {state.value:<13} {since:%Y-%m-%d %H:%M}{mark}")
            count += 1
    click.echo(f"{count} subscription(s).", err=True)


@subscribers_group.command("stats")
def subscribers_stats() -> None:
    """Per newsletter: pending, confirmed, unsubscribed, and growth over 7 and 30 days.

    Growth is confirmations minus unsubscriptions and erasures in the period, counted
    from the subscriptions' histories.

    Example: newsletter subscribers stats
    """
    click.echo(
        f"{'newsletter':<24} {'pending':>9} {'confirmed':>10} {'unsubscribed':>13} "
        f"{'7 days':>14} {'30 days':>14}"
    )
    with session_factory()() as session:
        for row in list_stats(session, utcnow()):
            click.echo(
                f"{row.slug:<24} {row.pending:>9} {row.confirmed:>10} {row.unsubscribed:>13} "
                f"{row.growth(7):>14} {row.growth(30):>14}"
            )


@subscribers_group.command("import")
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--newsletter", required=True, help="The newsletter to subscribe them to.")
@click.option(
    "--confirmed",
    is_flag=True,
    help="They consented elsewhere: subscribe without a confirmation email.",
)
@click.option("--consent-note", help="Where and when they consented (needed with --confirmed).")
def subscribers_import(csv_file: Path, newsletter: str, confirmed: bool, consent_note: str | None):
    """Import a Mailchimp or listmonk export, or a plain one-column list of addresses.

    Every row is checked like the sign-up form checks it; bad rows are reported with
    their line numbers and the rest imported. Running it again adds nothing. Addresses
    unsubscribed here or in the file, and erased ones, are never subscribed; an opt-out
    in the file (Mailchimp's UNSUB_TIME or CLEAN_TIME, listmonk's blocklisted, an
    "unsubscribed" status) unsubscribes an address that is on the list here. Without
    --confirmed the new addresses are pending and get a confirmation email.

    Example: newsletter subscribers import members.csv --newsletter ukraine-daily
    (add --confirmed --consent-note "Mailchimp form, 2024" when consent was given there)
    """
    if confirmed and not (consent_note or "").strip():
        raise click.UsageError("--confirmed needs --consent-note saying how they consented")
    shown = 0

    def bad_row(line: int, reason: str) -> None:
        nonlocal shown
        shown += 1
        if shown <= 1000:
            click.echo(f"{csv_file}:{line}: {reason}", err=True)

    def progress(report) -> None:
        if report.rows >= 10_000 and report.rows % 10_000 < 1000:
            click.echo(f"… {report.rows:,} rows read, {report.added:,} added", err=True)

    with session_factory()() as session:
        target = newsletter_arg(session, newsletter, "--newsletter")
        try:
            report = import_csv(
                session,
                csv_file,
                target,
                confirmed=confirmed,
                consent_note=(consent_note or "confirmation email").strip(),
                secret_key=current_app.config["SECRET_KEY"],
                on_bad_row=bad_row,
                on_progress=progress,
            )
        except ImportFileError as exc:
            raise click.ClickException(f"{csv_file}: {exc}") from None
    if report.confirmations:
        wake_worker()
    if shown > 1000:
        click.echo(f"… and {shown - 1000} more bad rows", err=True)
    click.echo(
        f"Imported {csv_file} ({report.format}) into {newsletter}: {report.rows} rows, "
        f"{report.added} added{' as confirmed' if confirmed else ' as pending'}, "
        f"{report.already} already there, {report.suppressed} kept unsubscribed, "
        f"{report.opted_out} unsubscribed as the file says, "
        f"{report.erased} erased skipped, {report.bad} bad."
    )
    if report.bad:
        raise click.ClickException(f"{report.bad} bad row(s) were not imported (listed above)")


@subscribers_group.command("resend-confirmations")
@click.option("--newsletter", required=True, help="The newsletter (slug).")
@click.option(
    "--older-than",
    type=Duration(),
    required=True,
    help="Only if the last confirmation email is older than this (e.g. 2d).",
)
def resend_confirmations(newsletter: str, older_than: timedelta) -> None:
    """Send a new confirmation email to pending subscribers who have not confirmed.

    Example: newsletter subscribers resend-confirmations --newsletter ukraine-daily --older-than 2d
    """
    config = current_app.config
    cutoff = utcnow() - older_than
    queued = capped = 0
    with session_factory()() as session:
        target = newsletter_arg(session, newsletter, "--newsletter")
        while True:
            batch = session.scalars(
                select(Subscription)
                .where(
                    Subscription.newsletter_id == target.id,
                    Subscription.status == SubscriptionStatus.PENDING,
                    confirmation_due(cutoff),
                )
                .order_by(Subscription.id)
                .limit(500)
            ).all()
            if not batch:
                break
            # The same decision as a sign-up's: a claim marks the email sent (so the next
            # batch moves on), and the address's daily cap holds.
            for subscription in batch:
                key = subscription.subscriber.email_key
                if claim_confirmation(
                    session, subscription.id, key, cutoff, config["CONFIRM_DAILY_CAP"]
                ):
                    queue_confirmation(session, subscription)
                    queued += 1
                else:
                    capped += 1
            session.commit()
    if queued:
        wake_worker()
    click.echo(
        f"Queued {queued} confirmation email(s) for {newsletter}"
        + (f"; {capped} address(es) over the daily cap skipped." if capped else ".")
    )


@subscribers_group.command("purge-pending")
@click.option(
    "--older-than",
    type=Duration(),
    required=True,
    help="Delete pending subscriptions started before this long ago (e.g. 30d).",
)
@click.option("--newsletter", help="Only this newsletter (slug).")
def purge_pending(older_than: timedelta, newsletter: str | None) -> None:
    """Delete sign-ups never confirmed, and addresses left with no subscription.

    Example: newsletter subscribers purge-pending --older-than 30d
    """
    cutoff = utcnow() - older_than
    with session_factory()() as session:
        condition = and_(
            Subscription.status == SubscriptionStatus.PENDING, Subscription.status_since <= cutoff
        )
        if newsletter:
            condition = and_(
                condition,
                Subscription.newsletter_id
                == newsletter_arg(session, newsletter, "--newsletter").id,
            )
        purged = rowcount(session.execute(delete(Subscription).where(condition)))
        orphans = rowcount(
            session.execute(delete(Subscriber).where(~Subscriber.subscriptions.any()))
        )
        session.commit()
    click.echo(f"Purged {purged} pending subscription(s) and {orphans} address(es) left with none.")
