"""``newsletter inbound``: take in bounces, complaints and replies, and show what came."""

import logging
import signal
import sys
import threading
from datetime import datetime
from pathlib import Path

import click
from flask import Flask, current_app
from sqlalchemy import select

from ..commands import Since, StaffGroup
from ..db import session_factory
from .imap import MailboxError, fetch_once
from .models import InboundMessage
from .reclassify import reclassify
from .report import ReportKind
from .server import InboundController, InboundHandler
from .store import drop_old_raw, take_in

inbound_group = StaffGroup("inbound", help="Bounces, complaints and replies heard back.")


def init_app(app: Flask) -> None:
    """Attach ``newsletter inbound``."""
    app.cli.add_command(inbound_group)


@inbound_group.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8025, show_default=True, type=click.IntRange(1, 65535))
@click.option("--lmtp", is_flag=True, help="Speak LMTP (as Postfix and Exim hand mail on).")
def inbound_serve(host: str, port: int, lmtp: bool) -> None:
    """Take bounces, complaints and replies from the MTA, until SIGTERM.

    Accepts mail for the bounce address (its +TOKEN forms when the token is ours) and
    MAIL_FROM only; each message is stored once before it is answered 250, then
    classified and acted on. At most NEWSLETTER_INBOUND_MAX_SESSIONS sessions at once;
    one idle NEWSLETTER_INBOUND_IDLE_TIMEOUT seconds is closed.

    Example: newsletter inbound serve --lmtp --port 8025
    """
    # Flask types current_app as a Flask; it is a LocalProxy, which has this.
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    config = app.config
    drop_old_raw(session_factory(), config["INBOUND_KEEP_DAYS"])
    # aiosmtpd logs every connection; a flood of them would be a flood of lines. Ours
    # says what matters, once a burst.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    handler = InboundHandler(app, lmtp)
    controller = InboundController(
        handler,
        host,
        port,
        config["INBOUND_MAX_BYTES"],
        max_sessions=config["INBOUND_MAX_SESSIONS"],
        idle_timeout=config["INBOUND_IDLE_TIMEOUT"],
    )
    try:
        controller.start()
    except (OSError, RuntimeError) as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc}") from None
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    protocol = "LMTP" if lmtp else "SMTP"
    click.echo(f"Taking bounces and replies by {protocol} on {host}:{port}.", err=True)
    while not stopping.wait(3600):  # an hour at a time: old raw messages dropped
        drop_old_raw(session_factory(), config["INBOUND_KEEP_DAYS"])
    controller.stop()
    click.echo("Stopped.", err=True)


@inbound_group.command("process")
@click.option("--recipient", help="The envelope recipient (else Delivered-To or X-Original-To).")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False, allow_dash=True))
def inbound_process(recipient: str | None, files: tuple[str, ...]) -> None:
    """Handle messages piped from an MTA alias (standard input: - or no FILE) or saved
    in files, as inbound serve does.

    Example: newsletter inbound process --recipient bounces@newsroom.org saved/*.eml
    """
    config = current_app.config
    sessions = session_factory()
    for name in files or ("-",):
        raw = _read(name, config["INBOUND_MAX_BYTES"])
        message = take_in(
            sessions, config, raw, source="pipe" if name == "-" else "file", recipient=recipient
        )
        click.echo(f"{message.id}\t{message.kind}\t{message.action}")


@inbound_group.command("fetch")
@click.option("--watch", is_flag=True, help="Keep looking, every --interval, until SIGTERM.")
@click.option(
    "--interval", default=60, show_default=True, type=click.IntRange(1, 86400), help="Seconds."
)
def inbound_fetch(watch: bool, interval: int) -> None:
    """Take in what is ours from the hosted mailbox (NEWSLETTER_INBOUND_IMAP_*), moving it
    to the done folder; every other message stays untouched and unread.

    Example: newsletter inbound fetch --watch --interval 300
    """
    config = current_app.config
    if not config["INBOUND_IMAP_HOST"]:
        raise click.UsageError("set NEWSLETTER_INBOUND_IMAP_HOST (and _USERNAME, _PASSWORD)")
    sessions = session_factory()
    stopping = threading.Event()
    if watch:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stopping.set())
    while True:
        try:
            fetched = fetch_once(sessions, config)
        except MailboxError as exc:
            if not watch:
                raise click.ClickException(str(exc)) from None
            click.echo(f"Error: {exc}; trying again in {interval} s", err=True)
        else:
            if fetched.seen or not watch:
                click.echo(
                    f"{fetched.seen} in {config['INBOUND_IMAP_MAILBOX']}: {fetched.handled} "
                    f"taken in and moved to {config['INBOUND_IMAP_DONE_FOLDER']}, "
                    f"{fetched.left} not ours left untouched"
                )
        if not watch or stopping.wait(interval):
            break
    drop_old_raw(sessions, config["INBOUND_KEEP_DAYS"])


def _read(name: str, limit: int) -> bytes:
    try:
        if name == "-":
            raw = sys.stdin.buffer.read(limit + 1)
        else:
            with Path(name).open("rb") as f:
                raw = f.read(limit + 1)
    except OSError as exc:
        raise click.ClickException(f"cannot read {name}: {exc.strerror}") from None
    if len(raw) > limit:
        raise click.ClickException(f"{name}: larger than INBOUND_MAX_BYTES ({limit:,} bytes)")
    return raw


@inbound_group.command("list")
@click.option("--kind", type=click.Choice([k.value for k in ReportKind]), help="Only this kind.")
@click.option("--since", type=Since(), help="Only since then: a date, a time or a span (2d).")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 100_000))
def inbound_list(kind: str | None, since: datetime | None, limit: int) -> None:
    """What arrived and what was done, newest first.

    Example: newsletter inbound list --kind hard-bounce --since 7d
    """
    query = select(InboundMessage).order_by(InboundMessage.id.desc()).limit(limit)
    if kind:
        query = query.where(InboundMessage.kind == kind)
    if since:
        query = query.where(InboundMessage.received_at >= since)
    with session_factory()() as session:
        rows = session.scalars(query).all()
        click.echo("id\treceived\tkind\treason\tcode\tfrom\taction")
        for row in rows:
            received = row.received_at.strftime("%Y-%m-%d %H:%M")
            # A webhook event has no envelope: the relay it came from says more.
            sender = row.envelope_from or (row.source if row.source.startswith("hook:") else "-")
            click.echo(
                f"{row.id}\t{received}\t{row.kind or '-'}\t{row.reason or '-'}\t{row.code or '-'}\t"
                f"{sender}\t{row.action or '-'}"
            )


@inbound_group.command("show")
@click.argument("message_id", type=click.IntRange(1, 2**63 - 1), metavar="ID")
def inbound_show(message_id: int) -> None:
    """One message: what it was, what was done, and the raw message while it is kept.

    Example: newsletter inbound show 42
    """
    with session_factory()() as session:
        row = session.get(InboundMessage, message_id)
        if row is None:
            raise click.ClickException(f"no inbound message {message_id}")
        for label, value in (
            ("Received", row.received_at.isoformat()),
            ("Source", row.source),
            ("Event id", row.external_id),  # a relay's id for a webhook event
            ("Envelope from", row.envelope_from),
            ("Recipient", row.recipient),
            ("Kind", row.kind),
            ("Reason", row.reason),
            ("Code", row.code),
            ("Detail", row.detail),
            ("Action", row.action),
            ("Subscriber", row.subscriber_id),
            ("Delivery", row.delivery_id),
        ):
            click.echo(f"{label}: {value if value is not None else '-'}")
        click.echo("")
        if row.raw is None:
            keep = current_app.config["INBOUND_KEEP_DAYS"]
            click.echo(f"(the raw message was dropped after {keep} days)")
        else:
            click.echo(row.raw.decode("utf-8", "replace"))


@inbound_group.command("reclassify")
@click.option("--since", type=Since(), help="Only messages since then: a date or a span (30d).")
@click.option("--dry-run", is_flag=True, help="List what would change; change nothing.")
def inbound_reclassify(since: datetime | None, dry_run: bool) -> None:
    """Classify the kept messages again with today's rules, and lift every suppression
    today's rules would not have made (a block or a spam filter taken for a dead
    address, a forged or token-less report), each with a history event saying why.

    \b
    Example: newsletter inbound reclassify --since 30d --dry-run
    """
    classified, mends = reclassify(session_factory(), current_app.config, since, dry_run)
    verb = "would be lifted" if dry_run else "lifted"
    for mend in mends:
        cause = f"message {mend.message_id}" if mend.message_id else "a refusal at send time"
        click.echo(f"{mend.email}\t{verb}\twas: {mend.was}\tnow: {mend.now} ({cause})")
    click.echo(
        f"{classified:,} kept message(s) classified again; {len(mends):,} suppression(s) {verb}."
        + (" Nothing was changed: run without --dry-run to apply." if dry_run else "")
    )
