"""mailboxes: the daily cap of emails on request counts inboxes, not spellings

Revision ID: 0008_mailboxes
Revises: 0007_subscription_history
Create Date: 2026-11-25 02:40:00

The 24-hour window of confirmation emails moves from each subscriber to the inbox
the address reaches (``+tags`` dropped, Gmail's dots too): the windows open now are
carried over, adding up the spellings of one inbox.
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_mailboxes"
down_revision = "0007_subscription_history"
branch_labels = None
depends_on = None


def mailbox(address_key: str) -> str:
    """The inbox an address reaches, as this revision counts it (a copy of
    emails.addresses.mailbox as it was: a migration must not change with the code)."""
    local, _, domain = address_key.rpartition("@")
    local = local.split("+", 1)[0] or local
    if domain in ("gmail.com", "googlemail.com"):
        local, domain = local.replace(".", ""), "gmail.com"
    return f"{local}@{domain}"


def upgrade() -> None:
    op.create_table(
        "mailboxes",
        sa.Column("key", sa.String(length=320), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("window_count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_mailboxes")),
    )
    connection = op.get_bind()
    windows: dict[str, list] = {}
    rows = connection.execute(
        sa.text(
            "SELECT email_key, confirm_window_start, confirm_window_count FROM subscribers "
            "WHERE confirm_window_start IS NOT NULL"
        )
    )
    for email_key, start, count in rows:
        found = windows.setdefault(mailbox(email_key), [start, 0])
        found[0] = max(found[0], start)
        found[1] += count or 0
    if windows:
        connection.execute(
            sa.text(
                "INSERT INTO mailboxes (key, window_start, window_count) "
                "VALUES (:key, :start, :count)"
            ),
            [{"key": k, "start": start, "count": n} for k, (start, n) in windows.items()],
        )
    with op.batch_alter_table("subscribers", schema=None) as batch_op:
        batch_op.drop_column("confirm_window_count")
        batch_op.drop_column("confirm_window_start")


def downgrade() -> None:
    with op.batch_alter_table("subscribers", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("confirm_window_start", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("confirm_window_count", sa.Integer(), nullable=False, server_default="0")
        )
    op.drop_table("mailboxes")
