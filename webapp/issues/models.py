"""An issue's stories and the automatic issues' runs."""

from datetime import datetime

from sqlalchemy import (
    ForeignKey,
    Index,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from ..db import Model, UTCDateTime, utcnow


class AutomaticRun(Model):
    """One slot of a newsletter's schedule, taken by one worker: the row is the claim.

    ``slot`` is the slot's time in the newsletter's zone with its UTC offset: slots come
    from cron as Debian's cron runs it (a daily slot in the hour a daylight-saving change
    repeats runs once, one in the hour it skips runs at its end).
    """

    __tablename__ = "automatic_runs"
    __table_args__ = (UniqueConstraint("newsletter_id", "slot"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    newsletter_id: Mapped[int] = mapped_column(ForeignKey("newsletters.id", ondelete="CASCADE"))
    slot: Mapped[str] = mapped_column(String(32))  # 2026-11-27T07:00:00+02:00 (local)
    slot_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ran_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    issue_id: Mapped[int | None] = mapped_column(ForeignKey("issues.id", ondelete="SET NULL"))
    outcome: Mapped[str] = mapped_column(String(300))


class IssueArticle(Model):
    """An article an issue carried, by its source's key (a feed item's id, a page's file
    name): an automatic issue takes only articles no earlier issue carried."""

    __tablename__ = "issue_articles"
    __table_args__ = (Index("ix_issue_articles_newsletter_key", "newsletter_id", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    newsletter_id: Mapped[int] = mapped_column(ForeignKey("newsletters.id", ondelete="CASCADE"))
    issue_id: Mapped[int] = mapped_column(ForeignKey("issues.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(512))  # feeds.MAX_KEY
