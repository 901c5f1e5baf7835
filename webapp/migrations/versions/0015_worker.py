"""the worker: automatic issues, webhooks, when a send finished

Revision ID: 0015_worker
Revises: 0014_schedules
Create Date: 2026-11-25 10:27:41.499868
"""

import sqlalchemy as sa
from alembic import op

revision = "0015_worker"
down_revision = "0014_schedules"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_messages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("msg_id", sa.String(length=40), nullable=False),
        sa.Column("type", sa.String(length=40), nullable=False),
        sa.Column("url", sa.String(length=2000), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=True),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("newsletter", sa.String(length=64), nullable=True),
        sa.Column("how", sa.String(length=40), nullable=True),
        sa.Column("details", sa.JSON(), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "pending", "delivered", "failed", name="webhookstatus", native_enum=False, length=16
            ),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retry_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(length=300), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_messages")),
    )
    with op.batch_alter_table("webhook_messages", schema=None) as batch_op:
        batch_op.create_index(
            "ix_webhook_messages_due", ["status", "next_attempt_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_webhook_messages_msg_id"), ["msg_id"], unique=False)
        batch_op.create_index(
            "ix_webhook_messages_order", ["url", "subscriber_id", "status"], unique=False
        )

    op.create_table(
        "automatic_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("newsletter_id", sa.Integer(), nullable=False),
        sa.Column("slot", sa.String(length=32), nullable=False),
        sa.Column("slot_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ran_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("issue_id", sa.Integer(), nullable=True),
        sa.Column("outcome", sa.String(length=300), nullable=False),
        sa.ForeignKeyConstraint(
            ["issue_id"],
            ["issues.id"],
            name=op.f("fk_automatic_runs_issue_id_issues"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["newsletter_id"],
            ["newsletters.id"],
            name=op.f("fk_automatic_runs_newsletter_id_newsletters"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_automatic_runs")),
        sa.UniqueConstraint("newsletter_id", "slot", name=op.f("uq_automatic_runs_newsletter_id")),
    )
    op.create_table(
        "issue_articles",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("newsletter_id", sa.Integer(), nullable=False),
        sa.Column("issue_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=512), nullable=False),
        sa.ForeignKeyConstraint(
            ["issue_id"],
            ["issues.id"],
            name=op.f("fk_issue_articles_issue_id_issues"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["newsletter_id"],
            ["newsletters.id"],
            name=op.f("fk_issue_articles_newsletter_id_newsletters"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_issue_articles")),
    )
    with op.batch_alter_table("issue_articles", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_issue_articles_issue_id"), ["issue_id"], unique=False)
        batch_op.create_index(
            "ix_issue_articles_newsletter_key", ["newsletter_id", "key"], unique=False
        )

    with op.batch_alter_table("issues", schema=None) as batch_op:
        batch_op.add_column(sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True))
    # Sends that finished before: finished when they were sent, so resuming one by
    # mistake announces nothing.
    op.execute(
        "UPDATE issues SET finished_at = sent_at WHERE sent_at IS NOT NULL AND NOT EXISTS "
        "(SELECT 1 FROM deliveries WHERE deliveries.issue_id = issues.id "
        "AND deliveries.status IN ('queued', 'sending'))"
    )

    with op.batch_alter_table("newsletters", schema=None) as batch_op:
        batch_op.add_column(sa.Column("schedule", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("sources", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("schedule_since", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("newsletters", schema=None) as batch_op:
        batch_op.drop_column("schedule_since")
        batch_op.drop_column("sources")
        batch_op.drop_column("schedule")

    with op.batch_alter_table("issues", schema=None) as batch_op:
        batch_op.drop_column("finished_at")

    with op.batch_alter_table("issue_articles", schema=None) as batch_op:
        batch_op.drop_index("ix_issue_articles_newsletter_key")
        batch_op.drop_index(batch_op.f("ix_issue_articles_issue_id"))

    op.drop_table("issue_articles")
    op.drop_table("automatic_runs")
    with op.batch_alter_table("webhook_messages", schema=None) as batch_op:
        batch_op.drop_index("ix_webhook_messages_order")
        batch_op.drop_index(batch_op.f("ix_webhook_messages_msg_id"))
        batch_op.drop_index("ix_webhook_messages_due")

    op.drop_table("webhook_messages")
