"""languages: a newsletter's, a reader's, a sign-up's

Revision ID: 0013_languages
Revises: 0012_clicks
Create Date: 2026-11-25 08:43:14.187061
"""

import sqlalchemy as sa
from alembic import op

revision = "0013_languages"
down_revision = "0012_clicks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("newsletters", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("language", sa.String(length=8), server_default="en", nullable=False)
        )

    with op.batch_alter_table("signup_requests", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("language", sa.String(length=8), server_default="en", nullable=False)
        )

    with op.batch_alter_table("subscribers", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("language", sa.String(length=8), server_default="en", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("subscribers", schema=None) as batch_op:
        batch_op.drop_column("language")

    with op.batch_alter_table("signup_requests", schema=None) as batch_op:
        batch_op.drop_column("language")

    with op.batch_alter_table("newsletters", schema=None) as batch_op:
        batch_op.drop_column("language")
