"""how far inbound fetch has looked in each mailbox, so a pass downloads only new mail

Revision ID: 0018_imap_seen
Revises: 0017_bounce_reasons
Create Date: 2026-12-08 01:45:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0018_imap_seen"
down_revision = "0017_bounce_reasons"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "imap_seen",
        sa.Column("mailbox", sa.String(length=500), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("last_uid", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("mailbox", name=op.f("pk_imap_seen")),
    )


def downgrade() -> None:
    op.drop_table("imap_seen")
