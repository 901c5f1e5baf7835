"""inbound messages, bounce scores and feedback on deliveries

Revision ID: 0010_inbound
Revises: 0009_signup_requests
Create Date: 2026-11-25 07:13:08.678799
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_inbound"
down_revision = "0009_signup_requests"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "inbound_messages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("envelope_from", sa.String(length=320), nullable=True),
        sa.Column("recipient", sa.String(length=320), nullable=True),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=True),
        sa.Column("action", sa.String(length=500), nullable=True),
        sa.Column("code", sa.String(length=32), nullable=True),
        sa.Column("detail", sa.String(length=500), nullable=True),
        sa.Column("subscriber_id", sa.Integer(), nullable=True),
        sa.Column("delivery_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["deliveries.id"],
            name=op.f("fk_inbound_messages_delivery_id_deliveries"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscribers.id"],
            name=op.f("fk_inbound_messages_subscriber_id_subscribers"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbound_messages")),
    )
    with op.batch_alter_table("inbound_messages", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_inbound_messages_kind"), ["kind"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_inbound_messages_received_at"), ["received_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_inbound_messages_subscriber_id"), ["subscriber_id"], unique=False
        )

    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("feedback", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("feedback_code", sa.String(length=32), nullable=True))

    with op.batch_alter_table("subscribers", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("bounce_score", sa.Float(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("last_bounce_at", sa.DateTime(timezone=True), nullable=True))

    with op.batch_alter_table("subscription_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("inbound_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_subscription_events_inbound_id_inbound_messages"),
            "inbound_messages",
            ["inbound_id"],
            ["id"],
            ondelete="SET NULL",
        )


def downgrade() -> None:
    with op.batch_alter_table("subscription_events", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_subscription_events_inbound_id_inbound_messages"), type_="foreignkey"
        )
        batch_op.drop_column("inbound_id")

    with op.batch_alter_table("subscribers", schema=None) as batch_op:
        batch_op.drop_column("last_bounce_at")
        batch_op.drop_column("bounce_score")

    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_column("feedback_code")
        batch_op.drop_column("feedback")

    with op.batch_alter_table("inbound_messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_inbound_messages_subscriber_id"))
        batch_op.drop_index(batch_op.f("ix_inbound_messages_received_at"))
        batch_op.drop_index(batch_op.f("ix_inbound_messages_kind"))

    op.drop_table("inbound_messages")
