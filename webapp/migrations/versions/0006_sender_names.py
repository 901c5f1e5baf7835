"""sender names long enough for a whole host name

Revision ID: 0006_sender_names
Revises: 0005_deliveries
Create Date: 2026-11-25 01:50:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_sender_names"
down_revision = "0005_deliveries"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # host:pid:random, and a host name may be a 253-character FQDN.
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.alter_column(
            "claimed_by",
            existing_type=sa.String(length=64),
            type_=sa.String(length=300),
            existing_nullable=True,
        )


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.alter_column(
            "claimed_by",
            existing_type=sa.String(length=300),
            type_=sa.String(length=64),
            existing_nullable=True,
        )
