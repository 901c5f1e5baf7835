"""tracked links, clicks and opens; unsubscribes name their issue

Revision ID: 0012_clicks
Revises: 0011_inbound_external_id
Create Date: 2026-11-25 07:53:59.240851
"""

import sqlalchemy as sa
from alembic import op

revision = "0012_clicks"
down_revision = "0011_inbound_external_id"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "clicks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("issue_id", sa.Integer(), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("scanner", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["issue_id"], ["issues.id"], name=op.f("fk_clicks_issue_id_issues"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscribers.id"],
            name=op.f("fk_clicks_subscriber_id_subscribers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clicks")),
    )
    with op.batch_alter_table("clicks", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_clicks_at"), ["at"], unique=False)
        batch_op.create_index(
            "ix_clicks_issue_subscriber", ["issue_id", "subscriber_id", "at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_clicks_subscriber_id"), ["subscriber_id"], unique=False
        )

    op.create_table(
        "issue_links",
        sa.Column("issue_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("folded_clicks", sa.Integer(), nullable=False),
        sa.Column("folded_clickers", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["issue_id"],
            ["issues.id"],
            name=op.f("fk_issue_links_issue_id_issues"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("issue_id", "position", name=op.f("pk_issue_links")),
    )
    with op.batch_alter_table("issues", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("folded_clicks", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("folded_clickers", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("folded_openers", sa.Integer(), server_default="0", nullable=False)
        )

    with op.batch_alter_table("subscription_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("issue_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_subscription_events_issue_id_issues"),
            "issues",
            ["issue_id"],
            ["id"],
            ondelete="SET NULL",
        )


def downgrade() -> None:
    with op.batch_alter_table("subscription_events", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_subscription_events_issue_id_issues"), type_="foreignkey"
        )
        batch_op.drop_column("issue_id")

    with op.batch_alter_table("issues", schema=None) as batch_op:
        batch_op.drop_column("folded_openers")
        batch_op.drop_column("folded_clickers")
        batch_op.drop_column("folded_clicks")

    op.drop_table("issue_links")
    with op.batch_alter_table("clicks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_clicks_subscriber_id"))
        batch_op.drop_index("ix_clicks_issue_subscriber")
        batch_op.drop_index(batch_op.f("ix_clicks_at"))

    op.drop_table("clicks")
