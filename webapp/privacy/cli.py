"""``newsletter subscribers delete``: the staff's way to erase an address, attached to
the ``subscribers`` group (the reader's own is on the data page)."""

import click
from flask import current_app

from emails.addresses import InvalidAddress, normalize_address

from ..db import session_factory
from ..subscribers.cli import subscribers_group
from .data import erase


@subscribers_group.command("delete")
@click.argument("email")
def subscribers_delete(email: str) -> None:
    """Erase an address: everything personal deleted, only a keyed hash kept.

    The same erasure as the reader's own button; imports skip the address from then on.

    Example: newsletter subscribers delete reader@newsroom.org
    """
    try:
        key = normalize_address(email).key
    except InvalidAddress as exc:
        raise click.BadParameter(str(exc), param_hint="EMAIL") from None
    with session_factory()() as session:
        count = erase(session, key, current_app.config["SECRET_KEY"], "staff")
        session.commit()
    click.echo(f"Erased {email}: {count} subscription(s) deleted; imports will skip it.")
