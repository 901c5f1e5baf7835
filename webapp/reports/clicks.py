"""Clicks and opens: recorded per reader for a while, scanners left out, then folded
into totals.

Link scanners (Microsoft Safe Links, Barracuda, Mimecast) fetch every link of a message
within seconds of its delivery; HEAD requests are theirs too. A burst of hits on one
reader's message, each within SCANNER_SECONDS of the one before, that reaches
SCANNER_LINKS distinct links (or every link of a message with fewer) is taken for a
scanner: its rows are kept, marked, for the burst's sake, and never counted. A reader
clicking one link twice is two clicks and one clicker.

A reader's rows are kept CLICK_KEEP_DAYS, long enough to count unique clickers; then
they are folded into the link's and the issue's totals and deleted. A reader who
clicks a link again after that counts once more as a clicker.
"""

from datetime import datetime, timedelta

from sqlalchemy import and_, delete, distinct, exists, func, insert, literal, select, update
from sqlalchemy.orm import Session, sessionmaker

from ..db import utcnow
from ..models import Click, Issue, IssueLink, Subscriber

SCANNER_SECONDS = 5
SCANNER_LINKS = 3
BURST_LOOKBACK = timedelta(minutes=2)  # bounds the rows read for one burst


def record_hit(
    session: Session, issue_id: int, position: int | None, subscriber_id: int, links: int
) -> None:
    """Record one GET of link ``position`` (None: the open pixel) of ``issue_id`` by a
    reader; an erased reader's hit is not recorded. Marks a scanner's burst."""
    now = utcnow()
    values = select(
        literal(issue_id), literal(subscriber_id), literal(position), literal(now), literal(False)
    ).where(exists().where(Subscriber.id == subscriber_id))
    columns = ["issue_id", "subscriber_id", "position", "at", "scanner"]
    session.execute(insert(Click).from_select(columns, values))
    if position is not None:
        _mark_scanner_burst(session, issue_id, subscriber_id, links, now)


def _mark_scanner_burst(
    session: Session, issue_id: int, subscriber_id: int, links: int, now: datetime
) -> None:
    rows = session.execute(
        select(Click.id, Click.position, Click.at)
        .where(
            Click.issue_id == issue_id,
            Click.subscriber_id == subscriber_id,
            Click.position.is_not(None),
            Click.at >= now - BURST_LOOKBACK,
        )
        .order_by(Click.at.desc(), Click.id.desc())
    ).all()
    burst, last = [], None
    for row in rows:
        if last is not None and (last - row.at).total_seconds() > SCANNER_SECONDS:
            break
        burst.append(row)
        last = row.at
    reached = {row.position for row in burst}
    if len(reached) >= max(2, min(links, SCANNER_LINKS)):
        ids = [row.id for row in burst]
        session.execute(update(Click).where(Click.id.in_(ids)).values(scanner=True))


def fold_old_clicks(session: Session, keep_days: int) -> int:
    """Fold the rows older than ``keep_days`` into totals and delete them; how many."""
    cutoff = utcnow() - timedelta(days=keep_days)
    old = and_(Click.at < cutoff, Click.scanner.is_(False))
    per_link = session.execute(
        select(
            Click.issue_id,
            Click.position,
            func.count(),
            func.count(distinct(Click.subscriber_id)),
        )
        .where(old)
        .group_by(Click.issue_id, Click.position)
    ).all()
    for issue_id, position, clicks, clickers in per_link:
        if position is None:
            session.execute(
                update(Issue)
                .where(Issue.id == issue_id)
                .values(folded_openers=Issue.folded_openers + clickers)
            )
            continue
        session.execute(
            update(IssueLink)
            .where(IssueLink.issue_id == issue_id, IssueLink.position == position)
            .values(
                folded_clicks=IssueLink.folded_clicks + clicks,
                folded_clickers=IssueLink.folded_clickers + clickers,
            )
        )
    per_issue = session.execute(
        select(Click.issue_id, func.count(), func.count(distinct(Click.subscriber_id)))
        .where(old, Click.position.is_not(None))
        .group_by(Click.issue_id)
    ).all()
    for issue_id, clicks, clickers in per_issue:
        session.execute(
            update(Issue)
            .where(Issue.id == issue_id)
            .values(
                folded_clicks=Issue.folded_clicks + clicks,
                folded_clickers=Issue.folded_clickers + clickers,
            )
        )
    return session.execute(delete(Click).where(Click.at < cutoff)).rowcount


def fold_clicks(sessions: sessionmaker[Session], keep_days: int) -> int:
    """:func:`fold_old_clicks` in a transaction of its own: the workers' housekeeping."""
    with sessions() as session:
        folded = fold_old_clicks(session, keep_days)
        session.commit()
        return folded
