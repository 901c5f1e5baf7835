"""scheduled sends: an issue's time, a newsletter's zone

Revision ID: 0014_schedules
Revises: 0013_languages
Create Date: 2026-11-25 09:19:56.287924
"""

import sqlalchemy as sa
from alembic import op

revision = "0014_schedules"
down_revision = "0013_languages"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("issues", schema=None) as batch_op:
        batch_op.add_column(sa.Column("scheduled_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f("ix_issues_scheduled_at"), ["scheduled_at"], unique=False)

    with op.batch_alter_table("newsletters", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "timezone", sa.String(length=64), server_default="Europe/Kyiv", nullable=False
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("newsletters", schema=None) as batch_op:
        batch_op.drop_column("timezone")

    with op.batch_alter_table("issues", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_issues_scheduled_at"))
        batch_op.drop_column("scheduled_at")
