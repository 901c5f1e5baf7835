"""a reason for every bounce: on each message heard back and each delivery

Revision ID: 0017_bounce_reasons
Revises: 0016_outbox_claims
Create Date: 2026-12-08 00:40:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0017_bounce_reasons"
down_revision = "0016_outbox_claims"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("inbound_messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reason", sa.String(length=32), nullable=True))
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("feedback_reason", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_column("feedback_reason")
    with op.batch_alter_table("inbound_messages", schema=None) as batch_op:
        batch_op.drop_column("reason")
