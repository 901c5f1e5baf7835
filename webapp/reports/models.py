"""What readers did with an issue: its tracked links and their clicks."""

from datetime import datetime

from sqlalchemy import (
    Boolean,
    ForeignKey,
    Index,
    Integer,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from ..db import Model, UTCDateTime, utcnow


class IssueLink(Model):
    """A tracked link of an issue, by its position, as the issue was built: ``/r/TOKEN``
    redirects to ``url`` looked up here, never to anything read from the request."""

    __tablename__ = "issue_links"

    issue_id: Mapped[int] = mapped_column(
        ForeignKey("issues.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    # Totals of the click rows folded away after CLICK_KEEP_DAYS.
    folded_clicks: Mapped[int] = mapped_column(Integer, default=0)
    folded_clickers: Mapped[int] = mapped_column(Integer, default=0)


class Click(Model):
    """One reader following one tracked link of an issue (``position``), or loading its
    open pixel (``position`` None). Kept CLICK_KEEP_DAYS for unique counts, then folded
    into the link's and the issue's totals; erased with the reader.

    ``scanner`` marks a hit that was a link scanner's, not the reader's (every link of
    one message within seconds): kept for the burst's sake, never counted.
    """

    __tablename__ = "clicks"
    __table_args__ = (Index("ix_clicks_issue_subscriber", "issue_id", "subscriber_id", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    issue_id: Mapped[int] = mapped_column(ForeignKey("issues.id", ondelete="CASCADE"))
    subscriber_id: Mapped[int] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int | None] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    scanner: Mapped[bool] = mapped_column(Boolean, default=False)
