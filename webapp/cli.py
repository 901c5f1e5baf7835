"""The staff command line: ``newsletter …`` (the same as ``flask --app webapp …``).

Each command's docstring is its ``--help``; each ends with a one-line summary, and bad
input ends with one line on stderr and a non-zero exit.
"""

import os
import sys
import time
from pathlib import Path

import click
from flask import Flask, current_app
from flask.cli import FlaskGroup, with_appcontext
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError

from . import migrations
from .catalog import (
    CatalogError,
    read_catalog,
    seed_catalog,
)
from .commands import StaffCommand, StaffGroup
from .config import ConfigError
from .db import engine, make_engine, session_factory
from .dbcopy import CopyError, copy_database
from .worker import deliver_outbox, run_worker


def init_app(app: Flask) -> None:
    """Attach the commands of the whole installation: db, seed, serve, outbox, worker."""
    app.cli.add_command(worker_command)
    app.cli.add_command(db_group)
    app.cli.add_command(seed_command)
    app.cli.add_command(serve_command)
    app.cli.add_command(outbox_group)


def warn_if_captured_in_production(app: Flask) -> None:
    """One line on stderr when an https site still captures its mail instead of sending it."""
    if app.config["MAIL_BACKEND"] == "file" and app.config["PUBLIC_URL"].startswith("https://"):
        click.echo(
            f"Warning: {app.config['PUBLIC_URL']} is served over https but mail is captured in "
            f"{app.config['OUTBOX_PATH']}, not sent; set NEWSLETTER_MAIL_BACKEND=smtp",
            err=True,
        )


@click.group("db", cls=StaffGroup)
def db_group() -> None:
    """Create or migrate the database."""


@db_group.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Migrate to this revision.")
def db_upgrade(revision: str) -> None:
    """Create the database or migrate it to the newest schema.

    Safe to run at every start: an up-to-date database is left as it is.

    Example: newsletter db upgrade
    """
    warn_if_captured_in_production(current_app)
    try:
        before, after = migrations.upgrade(current_app, revision)
    except migrations.MigrationError as exc:
        raise click.ClickException(f"database not upgraded: {exc}") from None
    if before == after:
        click.echo(f"Database is up to date (revision {after}).")
    else:
        click.echo(f"Database migrated from {before or 'empty'} to {after}.")


@db_group.command("copy")
@click.option(
    "--to",
    "url",
    required=True,
    help="SQLAlchemy URL of the target database (new or empty).",
)
def db_copy(url: str) -> None:
    """Copy the whole installation into another database, verifying the row counts.

    The target is migrated first and must hold no rows. Everything is copied in one
    transaction: on any error nothing is committed. Stop the web server, the outbox
    worker and any send first, then point NEWSLETTER_DATABASE_URL at the target.

    Example: newsletter db copy --to postgresql+psycopg://newsletter@127.0.0.1/newsletter
    """
    source = engine()
    try:
        target = make_engine(url)
    except (ArgumentError, ValueError) as exc:
        raise click.BadParameter(f"not a database URL: {exc}", param_hint="--to") from None
    except ImportError as exc:
        raise click.ClickException(
            f"the driver for this URL is not installed ({exc.name}); for PostgreSQL: "
            "pip install -c constraints.txt -e '.[postgres]'"
        ) from None
    if target.url == source.url:
        raise click.BadParameter("that is the database in use", param_hint="--to")
    started = time.monotonic()
    try:
        copied = copy_database(source, target)
    except CopyError as exc:
        raise click.ClickException(str(exc)) from None
    except OperationalError as exc:
        raise click.ClickException(
            f"cannot use {target.url.render_as_string(hide_password=True)}: {exc.orig}"
        ) from None
    finally:
        target.dispose()
    for table, rows in copied.items():
        click.echo(f"  {table:<20} {rows:>10,} rows")
    click.echo(
        f"Copied {sum(copied.values()):,} rows into "
        f"{target.url.render_as_string(hide_password=True)} in "
        f"{time.monotonic() - started:.1f} s; row counts verified."
    )


@click.command("seed", cls=StaffCommand)
@with_appcontext
@click.option(
    "--file",
    "path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Catalog file. Default: newsletters.toml in the seeds folder.",
)
def seed_command(path: Path | None) -> None:
    """Load the newsletter catalog into the database (idempotent).

    Newsletters are matched by slug: new ones are created, changed ones updated,
    and newsletters no longer in the file are kept.

    Example: newsletter seed --file seeds/newsletters.toml
    """
    path = path or Path(current_app.config["SEEDS_PATH"]) / "newsletters.toml"
    try:
        entries = read_catalog(path)
    except CatalogError as exc:
        raise click.ClickException(str(exc)) from None
    with session_factory()() as session:
        report = seed_catalog(session, entries)
        session.commit()
    click.echo(
        f"Catalog loaded from {path}: {report.created} created, "
        f"{report.updated} updated, {report.unchanged} unchanged."
    )


@click.command("serve", cls=StaffCommand)
@with_appcontext
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535))
def serve_command(host: str, port: int) -> None:
    """Serve the site with the embedded server (for production use gunicorn, see README).

    Example: newsletter serve --host 127.0.0.1 --port 8000
    """
    from werkzeug.serving import run_simple

    # Flask types current_app as a Flask; it is a LocalProxy, which has this.
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    click.echo(f"Serving {app.config['SITE_NAME']} newsletters on http://{host}:{port}/")
    if app.config["MAIL_BACKEND"] == "file":
        click.echo(f"Mail is captured, not sent: read it at http://{host}:{port}/outbox")
    warn_if_captured_in_production(app)
    try:
        run_simple(host, port, app, threaded=True, use_reloader=False, use_debugger=False)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None


@click.group("outbox", cls=StaffGroup)
def outbox_group() -> None:
    """Transactional mail (confirmations) waiting to be delivered."""


@click.command("worker", cls=StaffCommand)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=2.0,
    show_default=True,
    help="Seconds between passes over the outbox, webhooks and schedules.",
)
@with_appcontext
def worker_command(interval: float) -> None:
    """The background process, until SIGTERM: delivers the outbox and the webhooks,
    does the sign-ups' work as they come (with NEWSLETTER_SIGNUP_WORK=worker), builds
    automatic issues at their slots and starts scheduled sends at their time.
    On PostgreSQL run as many as you like; on SQLite one.

    Example: newsletter worker
    """
    # Flask types current_app as a Flask; it is a LocalProxy, which has this.
    run_worker(current_app._get_current_object(), interval)  # type: ignore[attr-defined]


@outbox_group.command("send")
@click.option("--watch", is_flag=True, help="Keep delivering as mail is queued, until stopped.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=2.0,
    show_default=True,
    help="With --watch: seconds between looks at the outbox.",
)
def outbox_send(watch: bool, interval: float) -> None:
    """Deliver every queued transactional email now, through the configured transport.

    Messages waiting out a retry delay are tried too. Exits 1 if the relay still fails;
    what was not delivered stays queued for the next run. With --watch it runs until
    stopped (Ctrl-C or SIGTERM): it is then `newsletter worker`, which also starts the
    scheduled sends.

    Example: NEWSLETTER_MAIL_BACKEND=smtp newsletter outbox send --watch
    """
    # Flask types current_app as a Flask; it is a LocalProxy, which has this.
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if not watch:
        report = deliver_outbox(app, due_only=False)
        click.echo(f"Outbox: {report.sent} sent, {report.retry} to retry, {report.failed} failed.")
        if report.retry:
            raise click.ClickException(f"delivery stopped, mail stays queued: {report.last_error}")
        return
    run_worker(app, interval)  # --watch: the worker


def main() -> None:
    """The ``newsletter`` console script."""
    from . import create_app

    group = FlaskGroup(create_app=create_app, help="Newsletter service: staff commands.")
    try:
        group.main(prog_name="newsletter")
    except ConfigError as exc:
        click.echo(f"Error: configuration: {exc}", err=True)
        sys.exit(2)
    except SQLAlchemyError as exc:
        orig = getattr(exc, "orig", None)  # the driver's error, on a DBAPIError
        reason = str(orig or exc).splitlines()[0]
        click.echo(
            f"Error: database: {reason} (is it migrated? run: newsletter db upgrade)", err=True
        )
        sys.exit(1)
    except Exception as exc:
        # A bug, not bad input: one line for the operator, the traceback on request.
        if os.environ.get("NEWSLETTER_DEBUG"):
            raise
        click.echo(
            f"Error: unexpected {type(exc).__name__}: {exc} (NEWSLETTER_DEBUG=1 shows more)",
            err=True,
        )
        sys.exit(70)  # EX_SOFTWARE
