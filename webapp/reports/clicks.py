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

from collections import defaultdict
from datetime import datetime, timedelta

from sqlalchemy import delete, exists, insert, literal, select, update
from sqlalchemy.orm import Session, sessionmaker

from ..db import utcnow
from ..models import Issue, Subscriber
from .models import Click, IssueLink

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
    """Fold the rows older than ``keep_days`` into totals and delete them; how many.

    The rows are deleted first, and the totals made from what the DELETE returned: a
    second process folding at the same moment waits for this one's rows and finds them
    gone, so no click is added twice.
    """
    cutoff = utcnow() - timedelta(days=keep_days)
    rows = session.execute(
        delete(Click)
        .where(Click.at < cutoff)
        .returning(Click.issue_id, Click.position, Click.subscriber_id, Click.scanner)
    ).all()
    links: dict[tuple[int, int], list] = defaultdict(lambda: [0, set()])
    issues: dict[int, list] = defaultdict(lambda: [0, set(), set()])  # clicks, clickers, openers
    for issue_id, position, subscriber_id, scanner in rows:
        if scanner:
            continue
        if position is None:
            issues[issue_id][2].add(subscriber_id)
            continue
        links[issue_id, position][0] += 1
        links[issue_id, position][1].add(subscriber_id)
        issues[issue_id][0] += 1
        issues[issue_id][1].add(subscriber_id)
    for (issue_id, position), (clicks, clickers) in links.items():
        session.execute(
            update(IssueLink)
            .where(IssueLink.issue_id == issue_id, IssueLink.position == position)
            .values(
                folded_clicks=IssueLink.folded_clicks + clicks,
                folded_clickers=IssueLink.folded_clickers + len(clickers),
            )
        )
    for issue_id, (clicks, clickers, openers) in issues.items():
        session.execute(
            update(Issue)
            .where(Issue.id == issue_id)
            .values(
                folded_clicks=Issue.folded_clicks + clicks,
                folded_clickers=Issue.folded_clickers + len(clickers),
                folded_openers=Issue.folded_openers + len(openers),
            )
        )
    return len(rows)


def fold_clicks(sessions: sessionmaker[Session], keep_days: int) -> int:
    """:func:`fold_old_clicks` in a transaction of its own: the workers' housekeeping."""
    with sessions() as session:
        folded = fold_old_clicks(session, keep_days)
        session.commit()
        return folded
