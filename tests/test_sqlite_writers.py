"""SQLite writers take turns on a lock file: a second writer waits for the first to end,
however long, without SQLite's busy polling; readers never wait."""

import sqlite3
import threading
import time

import pytest

from tests.helpers import flock_waiters
from webapp.sqlite_writers import TurnTakingConnection, lock_path

pytestmark = pytest.mark.no_database  # the PostgreSQL pass leaves these out


@pytest.fixture
def database(tmp_path):
    path = str(tmp_path / "turns.db")
    with sqlite3.connect(path) as setup:
        setup.execute("PRAGMA journal_mode=WAL")
        setup.execute("CREATE TABLE rows (n INTEGER)")
    return path


def connect(path):
    # No busy timeout at all: a writer that met another's lock would fail at once.
    return sqlite3.connect(path, timeout=0, factory=TurnTakingConnection, check_same_thread=False)


def test_a_second_writer_waits_for_the_first_to_commit_and_then_writes(database):
    first, second = connect(database), connect(database)
    first.execute("INSERT INTO rows VALUES (1)")  # holds the turn until it commits
    done = threading.Event()
    errors = []

    def write():
        try:
            second.execute("INSERT INTO rows VALUES (2)")
            second.commit()
        except sqlite3.Error as exc:  # what SQLite says when nobody takes turns
            errors.append(exc)
        done.set()

    threading.Thread(target=write).start()
    deadline = time.monotonic() + 30
    while not flock_waiters(lock_path(database)):  # queued for the turn, not failing
        assert not done.is_set(), f"the second writer did not wait: {errors}"
        assert time.monotonic() < deadline, "the second writer never came to wait"
        time.sleep(0.01)
    assert not done.is_set()
    first.commit()
    assert done.wait(10) and errors == []
    assert sorted(n for (n,) in first.execute("SELECT n FROM rows")) == [1, 2]


def test_readers_never_wait_for_a_writer(database):
    writer, reader = connect(database), connect(database)
    writer.execute("INSERT INTO rows VALUES (1)")
    started = time.monotonic()
    assert reader.execute("SELECT count(*) FROM rows").fetchone() == (0,)
    assert time.monotonic() - started < 5
    writer.rollback()


def test_the_turn_ends_with_a_rollback_a_failed_statement_and_a_close(database):
    holder = connect(database)
    for end in ("rollback", "failed", "close"):
        holder = holder if end != "close" else connect(database)
        holder.execute("INSERT INTO rows VALUES (1)")
        if end == "rollback":
            holder.rollback()
        elif end == "failed":
            with pytest.raises(sqlite3.OperationalError):
                holder.execute("INSERT INTO no_such_table VALUES (1)")
            holder.rollback()
        else:
            holder.close()
        other = connect(database)
        other.execute("INSERT INTO rows VALUES (2)")  # would wait for ever if still held
        other.commit()
        other.close()


def test_the_lock_file_sits_beside_the_database(database):
    connect(database).execute("SELECT 1")
    assert lock_path(database) == database + "-writer"
