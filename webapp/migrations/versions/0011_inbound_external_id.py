"""a relay's event id on inbound messages, unique per source; webhook tokens taken once

Revision ID: 0011_inbound_external_id
Revises: 0010_inbound
Create Date: 2026-11-25 07:45:31.294405
"""

import sqlalchemy as sa
from alembic import op

revision = "0011_inbound_external_id"
down_revision = "0010_inbound"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hook_tokens",
        sa.Column("relay", sa.String(length=16), nullable=False),
        sa.Column("token", sa.String(length=128), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("relay", "token", name=op.f("pk_hook_tokens")),
    )
    with op.batch_alter_table("hook_tokens", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_hook_tokens_seen_at"), ["seen_at"], unique=False)
    with op.batch_alter_table("inbound_messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("external_id", sa.String(length=200), nullable=True))
        batch_op.create_unique_constraint(
            batch_op.f("uq_inbound_messages_source"), ["source", "external_id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("inbound_messages", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_inbound_messages_source"), type_="unique")
        batch_op.drop_column("external_id")
    op.drop_table("hook_tokens")
