"""SQLite writers of one database wait their turn on a file lock, not by polling.

SQLite lets one writer at a time; a second one is told "busy" and its busy handler
sleeps and tries again, 1, 2, 5, 10, then up to 100 ms at a time. Under a wave of
sign-ups the web workers and their outbox threads write many short transactions, and
those sleeps, not the work, set the pace and the latency. So every connection opened
here takes an exclusive ``flock`` on a file beside the database just before its first
write of a transaction and lets it go when the transaction ends: the kernel wakes the
next writer the moment the lock is free. Readers never take it (WAL lets them read
beside a writer), and a process that does not use this (the ``sqlite3`` shell) still
meets the busy timeout as before.
"""

import fcntl
import os
import re
import sqlite3

# The statements that make SQLite take its write lock.
WRITES = re.compile(r"\s*(INSERT|UPDATE|DELETE|REPLACE|BEGIN\s+IMMEDIATE)\b", re.IGNORECASE)


def lock_path(database: str) -> str:
    """The lock file of the SQLite database file ``database``."""
    return database + "-writer"


class TurnTakingConnection(sqlite3.Connection):
    """A sqlite3 connection that holds the database's writer lock from its first write
    of a transaction to the transaction's end (pass as ``factory=`` to connect).

    The lock file is opened per connection: flock locks belong to an open file, so two
    connections of one process (a request and the outbox thread) take turns too.
    """

    def __init__(self, database, *args, **kwargs) -> None:
        super().__init__(database, *args, **kwargs)
        self._lock_fd = os.open(lock_path(str(database)), os.O_RDWR | os.O_CREAT, 0o600)
        self._holding = False

    def cursor(self, factory=None):
        """A cursor whose writes take the lock first."""
        return super().cursor(factory or TurnTakingCursor)

    def execute(self, sql, parameters=()):
        """As sqlite3's shortcut, through a turn-taking cursor."""
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql, seq_of_parameters):
        """As sqlite3's shortcut, through a turn-taking cursor."""
        return self.cursor().executemany(sql, seq_of_parameters)

    def take_turn(self) -> None:
        """Wait for the writer lock, unless this connection holds it."""
        if not self._holding:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            self._holding = True

    def end_turn(self) -> None:
        """Let the next writer go, once no transaction is open here."""
        if self._holding and not self.in_transaction:
            self._holding = False
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self.end_turn()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self.end_turn()

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self._lock_fd >= 0:
                os.close(self._lock_fd)  # closing lets the lock go too
                self._lock_fd, self._holding = -1, False


class TurnTakingCursor(sqlite3.Cursor):
    """A cursor of a TurnTakingConnection: a write waits for the writer lock."""

    def execute(self, sql, parameters=()):
        return self._run(super().execute, sql, parameters)

    def executemany(self, sql, seq_of_parameters):
        return self._run(super().executemany, sql, seq_of_parameters)

    def _run(self, method, sql, parameters):
        connection = self.connection
        if WRITES.match(sql):
            connection.take_turn()
        try:
            return method(sql, parameters)
        finally:
            # In autocommit, or after a failed statement, no transaction may be open.
            connection.end_turn()
