"""subscription history: consent moves from subscription columns into events

Revision ID: 0007_subscription_history
Revises: 0006_sender_names
Create Date: 2026-11-25 02:00:00

Each subscription's consent columns (subscribed, confirmed, unsubscribed: when, IP,
user agent, source) become events in ``subscription_events``; the subscription keeps
its current state and since when. Nothing is lost: every non-empty time becomes an
event with what was recorded with it.
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_subscription_history"
down_revision = "0006_sender_names"
branch_labels = None
depends_on = None

KINDS = ("subscribed", "resubscribed", "confirmed", "welcome_sent", "unsubscribed", "erased")


def upgrade() -> None:
    op.create_table(
        "subscription_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subscription_id", sa.Integer(), nullable=True),
        sa.Column("newsletter_id", sa.Integer(), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(*KINDS, name="eventkind", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("how", sa.String(length=32), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ip", sa.String(length=45), nullable=True),
        sa.Column("user_agent", sa.String(length=512), nullable=True),
        sa.Column("source", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(
            ["newsletter_id"],
            ["newsletters.id"],
            name=op.f("fk_subscription_events_newsletter_id_newsletters"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["subscriptions.id"],
            name=op.f("fk_subscription_events_subscription_id_subscriptions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscription_events")),
    )
    with op.batch_alter_table("subscription_events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_subscription_events_newsletter", ["newsletter_id", "at"], unique=False
        )
        batch_op.create_index(
            "ix_subscription_events_subscription", ["subscription_id", "id"], unique=False
        )

    # The history, in the order things happened to each subscription: the sign-up,
    # then its confirmation, then its end (the old columns kept only the latest cycle).
    columns = "subscription_id, newsletter_id, kind, how, at, ip, user_agent, source"
    op.execute(
        f"INSERT INTO subscription_events ({columns}) "
        "SELECT id, newsletter_id, 'subscribed', "
        "CASE WHEN subscribe_source LIKE 'import %' THEN 'import' "
        "WHEN subscribe_source = 'manage page' THEN 'manage' ELSE 'form' END, "
        "subscribed_at, subscribe_ip, subscribe_user_agent, subscribe_source "
        "FROM subscriptions ORDER BY id"
    )
    op.execute(
        f"INSERT INTO subscription_events ({columns}) "
        "SELECT id, newsletter_id, 'confirmed', NULL, confirmed_at, confirm_ip, "
        "confirm_user_agent, NULL FROM subscriptions WHERE confirmed_at IS NOT NULL ORDER BY id"
    )
    op.execute(
        f"INSERT INTO subscription_events ({columns}) "
        "SELECT id, newsletter_id, 'unsubscribed', NULL, unsubscribed_at, NULL, NULL, NULL "
        "FROM subscriptions WHERE unsubscribed_at IS NOT NULL ORDER BY id"
    )

    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("status_since", sa.DateTime(timezone=True), nullable=True))
    op.execute(
        "UPDATE subscriptions SET status_since = CASE status "
        "WHEN 'confirmed' THEN COALESCE(confirmed_at, subscribed_at) "
        "WHEN 'unsubscribed' THEN COALESCE(unsubscribed_at, subscribed_at) "
        "ELSE subscribed_at END"
    )
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.alter_column(
            "status_since", existing_type=sa.DateTime(timezone=True), nullable=False
        )
        for name in (
            "subscribed_at",
            "subscribe_ip",
            "subscribe_user_agent",
            "subscribe_source",
            "confirmed_at",
            "confirm_ip",
            "confirm_user_agent",
            "unsubscribed_at",
        ):
            batch_op.drop_column(name)


def downgrade() -> None:
    # Back to one consent record per subscription: its latest events of each kind.
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("subscribe_source", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("unsubscribed_at", sa.DateTime(timezone=True)))
        batch_op.add_column(sa.Column("subscribed_at", sa.DateTime(timezone=True)))
        batch_op.add_column(sa.Column("confirm_ip", sa.String(length=45), nullable=True))
        batch_op.add_column(sa.Column("subscribe_ip", sa.String(length=45), nullable=True))
        batch_op.add_column(sa.Column("subscribe_user_agent", sa.String(512), nullable=True))
        batch_op.add_column(sa.Column("confirm_user_agent", sa.String(512), nullable=True))
        batch_op.add_column(sa.Column("confirmed_at", sa.DateTime(timezone=True)))

    def latest(column: str, kinds: str) -> str:
        return (
            f"(SELECT e.{column} FROM subscription_events e "
            f"WHERE e.subscription_id = subscriptions.id AND e.kind IN ({kinds}) "
            "ORDER BY e.id DESC LIMIT 1)"
        )

    joined, confirmed, left = "'subscribed', 'resubscribed'", "'confirmed'", "'unsubscribed'"
    op.execute(
        "UPDATE subscriptions SET "
        f"subscribed_at = COALESCE({latest('at', joined)}, status_since), "
        f"subscribe_ip = {latest('ip', joined)}, "
        f"subscribe_user_agent = {latest('user_agent', joined)}, "
        f"subscribe_source = {latest('source', joined)}, "
        f"confirmed_at = {latest('at', confirmed)}, "
        f"confirm_ip = {latest('ip', confirmed)}, "
        f"confirm_user_agent = {latest('user_agent', confirmed)}, "
        f"unsubscribed_at = {latest('at', left)}"
    )
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.alter_column(
            "subscribed_at", existing_type=sa.DateTime(timezone=True), nullable=False
        )
        batch_op.drop_column("status_since")
    with op.batch_alter_table("subscription_events", schema=None) as batch_op:
        batch_op.drop_index("ix_subscription_events_subscription")
        batch_op.drop_index("ix_subscription_events_newsletter")
    op.drop_table("subscription_events")
