"""Importing subscribers from CSV: Mailchimp and listmonk exports, or a plain list.

Rows are read and written in batches, so memory does not grow with the file, and each
batch is committed: a run that stops part-way is finished by running it again, since
an address already on the newsletter is left as it is.
"""

import csv
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import insert, select
from sqlalchemy.orm import Session, selectinload

from emails.addresses import InvalidAddress, normalize_address

from ..db import utcnow
from ..models import (
    EventKind,
    Newsletter,
    Subscriber,
    Subscription,
    SubscriptionEvent,
    SubscriptionStatus,
)
from .erased import erased_digest
from .mail import queue_confirmation
from .models import ErasedAddress
from .service import Consent, unsubscribe

BATCH = 1000
# Values of a status column that mean "do not mail": Mailchimp's unsubscribed and cleaned
# exports, listmonk's blocklist, and our own export.
SUPPRESSED = {"unsubscribed", "cleaned", "blocklisted", "bounced", "complained"}


class ImportFileError(ValueError):
    """The file cannot be imported at all; ``str()`` says why."""


@dataclass
class ImportReport:
    """What an import did, row by row."""

    format: str = ""
    rows: int = 0
    added: int = 0
    already: int = 0
    suppressed: int = 0  # new, and kept unsubscribed as the file says
    opted_out: int = 0  # on the list here, unsubscribed because the file says so
    erased: int = 0
    bad: int = 0
    confirmations: int = 0


@dataclass(frozen=True)
class _Layout:
    name: str
    email: int
    status: int | None
    suppress_columns: tuple[int, ...]  # a value in any of these means "do not mail"
    header: bool


def _layout(first: list[str]) -> _Layout:
    names = [cell.strip().lower() for cell in first]
    if "email address" in names:  # Mailchimp audience export
        suppress = tuple(i for i, n in enumerate(names) if n in ("unsub_time", "clean_time"))
        return _Layout("mailchimp", names.index("email address"), None, suppress, True)
    if "email" in names:
        status = names.index("status") if "status" in names else None
        name = "listmonk" if {"uuid", "attributes"} & set(names) else "csv with header"
        return _Layout(name, names.index("email"), status, (), True)
    if len(first) == 1:
        header = names[0] in ("e-mail", "mail", "address", "email_address")
        return _Layout("one column", 0, None, (), header)
    raise ImportFileError("no email column: the header needs 'email' or 'Email Address'")


def _rows(path: Path) -> Iterator[tuple[int, list[str] | str]]:
    """(line, cells) for each record, or (line, reason) for one the csv module refuses
    (a field over its size limit): that record is a bad row and reading goes on."""
    # surrogateescape: a line that is not UTF-8 becomes one bad row, not a failed import
    with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        sample = f.read(4096)
        f.seek(0)
        try:
            dialect = csv.Sniffer().sniff(sample, delimiters=",;\t")
        except csv.Error:
            dialect = csv.excel
        reader = csv.reader(f, dialect)
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield reader.line_num, f"cannot be read as CSV: {exc}"
                continue
            yield reader.line_num, row


def import_csv(
    session: Session,
    path: Path,
    newsletter: Newsletter,
    *,
    confirmed: bool,
    consent_note: str,
    secret_key: str,
    on_bad_row: Callable[[int, str], None] = lambda line, reason: None,
    on_progress: Callable[[ImportReport], None] = lambda report: None,
) -> ImportReport:
    """Import ``path`` into ``newsletter``; commits batch by batch.

    New addresses become confirmed (``confirmed=True``: consent obtained elsewhere, as
    ``consent_note`` records) or pending with a confirmation email. Addresses already on
    the newsletter, in any state, are left alone; erased ones and those the file marks
    unsubscribed are never subscribed.
    """
    report = ImportReport()
    rows = _rows(path)
    try:
        first_line, first = next(rows)
    except StopIteration:
        raise ImportFileError("the file is empty") from None
    except OSError as exc:
        raise ImportFileError(f"cannot read: {exc.strerror}") from None
    if isinstance(first, str):
        raise ImportFileError(f"line {first_line}: {first}")
    layout = _layout(first)
    report.format = layout.name
    source = f"import {path.name}: {consent_note}"[:200]

    def all_rows():
        if not layout.header:
            yield first_line, first
        yield from rows

    batch: list[tuple[int, list[str]]] = []
    for line, row in all_rows():
        if isinstance(row, str):  # a record the csv module refused
            report.rows += 1
            report.bad += 1
            on_bad_row(line, row)
            continue
        if not any(cell.strip() for cell in row):
            continue
        report.rows += 1
        batch.append((line, row))
        if len(batch) == BATCH:
            _import_batch(
                session,
                batch,
                layout,
                newsletter,
                confirmed,
                source,
                secret_key,
                report,
                on_bad_row,
            )
            on_progress(report)
            batch = []
    if batch:
        _import_batch(
            session, batch, layout, newsletter, confirmed, source, secret_key, report, on_bad_row
        )
        on_progress(report)
    return report


def _import_batch(
    session, batch, layout, newsletter, confirmed, source, secret_key, report, on_bad_row
) -> None:
    wanted: dict[str, tuple] = {}  # key -> (address, suppressed)
    for line, row in batch:
        reason = None
        if len(row) <= layout.email:
            reason = "no email in this row"
        elif any("\udc80" <= ch <= "\udcff" for cell in row for ch in cell):
            reason = "not UTF-8 text"
        else:
            try:
                address = normalize_address(row[layout.email])
            except InvalidAddress as exc:
                reason = str(exc)
        if reason:
            report.bad += 1
            on_bad_row(line, reason)
            continue
        suppressed = any(i < len(row) and row[i].strip() for i in layout.suppress_columns) or (
            layout.status is not None
            and layout.status < len(row)
            and row[layout.status].strip().lower() in SUPPRESSED
        )
        if address.key in wanted:
            report.already += 1  # the same address twice in the file: an opt-out wins
            first, opted_out = wanted[address.key]
            wanted[address.key] = (first, opted_out or suppressed)
        else:
            wanted[address.key] = (address, suppressed)

    keys = list(wanted)
    digests = {erased_digest(key, secret_key): key for key in keys}
    erased = {
        digests[d]
        for d in session.scalars(
            select(ErasedAddress.digest).where(ErasedAddress.digest.in_(digests))
        )
    }
    subscriber_ids = dict(
        session.execute(
            select(Subscriber.email_key, Subscriber.id).where(Subscriber.email_key.in_(keys))
        ).all()
    )
    on_list = dict(
        session.execute(
            select(Subscription.subscriber_id, Subscription).where(
                Subscription.newsletter_id == newsletter.id,
                Subscription.subscriber_id.in_(subscriber_ids.values()),
            )
        ).all()
    )
    new = []
    for key, (address, suppressed) in wanted.items():
        existing = on_list.get(subscriber_ids.get(key))
        if key in erased:
            report.erased += 1
        elif existing is None:
            new.append((key, address, suppressed))
        elif suppressed and existing.status != SubscriptionStatus.UNSUBSCRIBED:
            # An opt-out from any source wins: the file says this reader left.
            unsubscribe(session, existing, "import", Consent(None, None, source))
            report.opted_out += 1
        else:
            report.already += 1  # never turned back from unsubscribed, never re-confirmed
    if new:
        _add_new(session, new, subscriber_ids, newsletter, confirmed, source, report)
    session.commit()
    session.expunge_all()  # keep memory flat across batches


def _add_new(session, new, subscriber_ids, newsletter, confirmed, source, report) -> None:
    now = utcnow()
    missing = [(key, address) for key, address, _ in new if key not in subscriber_ids]
    if missing:
        session.execute(
            insert(Subscriber),
            [{"email": a.email, "email_key": key, "created_at": now} for key, a in missing],
        )
        subscriber_ids.update(
            session.execute(
                select(Subscriber.email_key, Subscriber.id).where(
                    Subscriber.email_key.in_([key for key, _ in missing])
                )
            ).all()
        )
    statuses = {}
    for key, _address, suppressed in new:
        statuses[subscriber_ids[key]] = (
            SubscriptionStatus.UNSUBSCRIBED
            if suppressed
            else (SubscriptionStatus.CONFIRMED if confirmed else SubscriptionStatus.PENDING)
        )
        if suppressed:
            report.suppressed += 1
        else:
            report.added += 1
    session.execute(
        insert(Subscription),
        [
            {
                "subscriber_id": subscriber_id,
                "newsletter_id": newsletter.id,
                "status": status,
                "status_since": now,
                "confirm_nonce": secrets.token_urlsafe(12),
                "confirmation_sent_at": now if status == SubscriptionStatus.PENDING else None,
            }
            for subscriber_id, status in statuses.items()
        ],
    )
    made = session.execute(
        select(Subscription.id, Subscription.subscriber_id).where(
            Subscription.newsletter_id == newsletter.id,
            Subscription.subscriber_id.in_(statuses),
        )
    ).all()
    events = []
    for subscription_id, subscriber_id in made:
        status = statuses[subscriber_id]
        kinds = {
            SubscriptionStatus.UNSUBSCRIBED: [EventKind.UNSUBSCRIBED],  # an opt-out, kept
            SubscriptionStatus.CONFIRMED: [EventKind.SUBSCRIBED, EventKind.CONFIRMED],
            SubscriptionStatus.PENDING: [EventKind.SUBSCRIBED],
        }[status]
        events += [
            {
                "subscription_id": subscription_id,
                "newsletter_id": newsletter.id,
                "kind": kind,
                "how": "import",
                "at": now,
                "source": source,
            }
            for kind in kinds
        ]
    session.execute(insert(SubscriptionEvent), events)
    if not confirmed:
        pending = session.scalars(
            select(Subscription)
            .options(selectinload(Subscription.subscriber), selectinload(Subscription.newsletter))
            .where(
                Subscription.newsletter_id == newsletter.id,
                Subscription.status == SubscriptionStatus.PENDING,
                Subscription.subscriber_id.in_(
                    [sid for sid, st in statuses.items() if st == SubscriptionStatus.PENDING]
                ),
            )
        ).all()
        for subscription in pending:
            queue_confirmation(session, subscription)
        report.confirmations += len(pending)
