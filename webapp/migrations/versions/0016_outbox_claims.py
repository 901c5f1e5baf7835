"""outbox claims name their sender: a dead one's are taken back at once

Revision ID: 0016_outbox_claims
Revises: 0015_worker
Create Date: 2026-12-04 21:40:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0016_outbox_claims"
down_revision = "0015_worker"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claimed_by", sa.String(length=300), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_column("claimed_by")
