"""Each sender's journal: the messages the relay accepted that are not yet recorded.

A sender (of an issue, or of the outbox) commits its results in groups, so a
``kill -9`` would lose the results of the messages sent since its last commit, and
the next run would send them again. Instead, right after the relay accepts a
message, the sender appends the message's id to a file of its own with one
unbuffered ``write``: the data is then in the system's page cache, which outlives the
killed process. Each group commit empties the journal; the next run, or a sender
taking back a dead sender's claims, folds what a dead sender's journal holds into the
database first (:func:`dead_journals` finds them; :func:`fold_journals` folds an
issue's, the outbox folds its own). Only the message in flight when the process dies
(accepted by the relay, not yet written here) can go out twice.

The journal does not survive the machine going down (nothing is synced to disk):
then the bound is a group's worth of messages per connection.
Part of the sending core: no Flask.
"""

import os
from collections.abc import Container, Iterator
from pathlib import Path

from sqlalchemy import update
from sqlalchemy.orm import Session

from emails.transport import private_folder

from ..db import rowcount, utcnow
from .models import Delivery, DeliveryStatus
from .senders import alive, host_name

SUFFIX = ".journal"


def journal_folder(instance_path: str) -> Path:
    """Where this host's senders keep their journals: in the instance folder."""
    return Path(instance_path) / "send-journals"


class Journal:
    """The journal of one sender of ``job`` (``issue-ID``, ``outbox``): its name on the
    first line, then one id a line."""

    def __init__(self, folder: Path, job: str, sender: str) -> None:
        private_folder(folder)  # and those on the way: who was sent what is private
        self.path = folder / f"{job}.{sender.replace(':', '.')}{SUFFIX}"
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        self._header = f"{sender}\n".encode()
        os.write(self._fd, self._header)

    def accepted(self, message_id: int) -> None:
        """Note a message (a delivery's or an outbox message's id) the relay accepted:
        one write, in the page cache on return."""
        os.write(self._fd, b"%d\n" % message_id)

    def recorded(self) -> None:
        """Everything noted so far is committed to the database: start again empty."""
        os.ftruncate(self._fd, len(self._header))

    def close(self, recorded: bool) -> None:
        """Close the file; remove it when everything in it was recorded."""
        os.close(self._fd)
        if recorded:
            self.path.unlink(missing_ok=True)


def dead_journals(
    folder: Path, job: str, *, all_dead: bool, open_here: Container[str] | None = None
) -> Iterator[tuple[str, list[int]]]:
    """The journals of ``job`` whose senders are dead: each one's sender and ids.

    With ``all_dead`` (the caller knows no sender of the job runs) every journal;
    otherwise only those of this host's senders whose process is gone, and, given
    ``open_here`` (the senders of this process at work), this process's others: a
    pass that could not record its results left them. The caller records the ids,
    commits, then goes on: each journal is removed as the next is asked for, so one
    whose ids were not recorded is found again.
    """
    if not folder.is_dir():
        return
    for path in sorted(folder.glob(f"{job}.*{SUFFIX}")):
        try:
            lines = path.read_bytes().split(b"\n")
        except FileNotFoundError:  # its sender ended cleanly meanwhile, or another folded it
            continue
        sender = lines[0].decode("utf-8", "replace")
        host, pid, _ = (sender.rsplit(":", 2) + ["", ""])[:3]
        if not all_dead and not _dead(host, pid, sender, open_here):
            continue
        # The last line may be cut short by a full disk; every complete line is an id.
        yield sender, [int(line) for line in lines[1:-1] if line.isdigit()]
        path.unlink(missing_ok=True)


def _dead(host: str, pid: str, sender: str, open_here: Container[str] | None) -> bool:
    if host != host_name() or not pid.isdigit():
        return False  # another host's: its lease tells
    if open_here is not None and int(pid) == os.getpid():
        return sender not in open_here
    return not alive(int(pid))


def fold_journals(session: Session, folder: Path, issue_id: int, *, all_dead: bool) -> int:
    """Record as sent what the journals of dead senders of the issue hold; remove them.

    Only rows still claimed by the journal's sender change: one that was put back and
    claimed since is another sender's. With ``all_dead`` (the SQLite lock is held: no
    sender of the issue runs) every journal is folded; otherwise only those of this
    host's senders whose process is gone. Returns how many deliveries were recorded.
    """
    folded = 0
    for sender, ids in dead_journals(folder, f"issue-{issue_id}", all_dead=all_dead):
        for start in range(0, len(ids), 500):  # bounded parameter lists
            folded += rowcount(
                session.execute(
                    update(Delivery)
                    .where(
                        Delivery.id.in_(ids[start : start + 500]),
                        Delivery.issue_id == issue_id,
                        Delivery.status == DeliveryStatus.SENDING,
                        Delivery.claimed_by == sender,
                    )
                    .values(
                        status=DeliveryStatus.SENT,
                        attempts=Delivery.attempts + 1,
                        sent_at=utcnow(),
                        claimed_by=None,
                        claimed_until=None,
                    )
                    .execution_options(synchronize_session=False)
                )
            )
        session.commit()
    return folded
