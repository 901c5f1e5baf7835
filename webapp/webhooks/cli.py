"""``newsletter webhooks …``: show the messages sent to the newsroom's other systems,
replay one, and make a signing secret."""

import base64
import secrets

import click
from flask import Flask, current_app
from sqlalchemy import func, select

from ..commands import StaffGroup
from ..db import session_factory
from .delivery import retry
from .models import WebhookMessage, WebhookStatus

webhooks_group = StaffGroup("webhooks", help="Show, replay and sign the webhook messages.")


def init_app(app: Flask) -> None:
    """Attach ``newsletter webhooks``."""
    app.cli.add_command(webhooks_group)


@webhooks_group.command("list")
@click.option(
    "--failed",
    is_flag=True,
    help="Only messages not delivered after an attempt: failed, or waiting to retry.",
)
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True)
def list_messages(failed: bool, limit: int) -> None:
    """List webhook messages, newest first: id, state, attempts, event, whom it is about,
    URL and the last error. Delivered ones are kept WEBHOOK_KEEP_DAYS.

    Example: newsletter webhooks list --failed
    """
    with session_factory()() as session:
        query = select(WebhookMessage)
        if failed:
            query = query.where(
                WebhookMessage.status != WebhookStatus.DELIVERED, WebhookMessage.attempts > 0
            )
        found = session.execute(select(func.count()).select_from(query.subquery())).scalar_one()
        for message in session.scalars(query.order_by(WebhookMessage.id.desc()).limit(limit)):
            state = message.status.value
            if message.status == WebhookStatus.PENDING and message.attempts:
                state = f"retry {message.next_attempt_at:%Y-%m-%d %H:%M:%S}"
            about = message.email or (message.details or {}).get("subject", "")
            where = f"{message.newsletter} " if message.newsletter else ""
            error = f"  ({message.last_error})" if message.last_error else ""
            click.echo(
                f"{message.id:>7}  {message.occurred_at:%Y-%m-%d %H:%M:%S}  {state:<9}  "
                f"{message.attempts:>2} attempt(s)  {message.type:<26} {where}{about}  "
                f"{message.url}{error}"
            )
        shown = min(found, limit)
        click.echo(
            f"{found} message(s)" + (f", the newest {shown} shown." if shown < found else ".")
        )
        if not current_app.config["WEBHOOK_URLS"]:
            click.echo("Webhooks are off: set NEWSLETTER_WEBHOOK_URLS to send them.", err=True)


@webhooks_group.command("retry")
@click.argument("message_id", metavar="ID", type=click.IntRange(1, 2**31 - 1))
def retry_message(message_id: int) -> None:
    """Send message ID again (as `webhooks list` numbers it), failed or delivered: the
    worker posts it on its next pass, with the same webhook-id and a new retry window.

    Example: newsletter webhooks retry 42
    """
    with session_factory()() as session:
        message = retry(session, message_id)
        if message is None:
            raise click.ClickException(f"no webhook message {message_id}")
        session.commit()
        click.echo(
            f"Message {message_id} ({message.type} to {message.url}) goes again "
            "on the worker's next pass."
        )


@webhooks_group.command("secret")
def make_secret() -> None:
    """Print a new signing secret for NEWSLETTER_WEBHOOK_SECRET (whsec_ and 32 random
    bytes in base64); give the same secret to the receivers.

    Example: newsletter webhooks secret
    """
    click.echo("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode())
