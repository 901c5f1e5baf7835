"""Moving a whole installation to another database: ``newsletter db copy --to URL``.

A newsroom starts on SQLite and moves to PostgreSQL (or back) without losing a
subscriber: every table is copied in dependency order, keys and all, in one
transaction on the target, and the row counts of both sides are compared before it
commits.
"""

from collections.abc import Callable

from sqlalchemy import Engine, Integer, func, insert, select, text

from . import migrations
from .tables import METADATA

BATCH = 5000  # rows read and written at a time: memory stays flat for any list size


class CopyError(Exception):
    """The copy cannot be done (target not empty, counts differ); nothing was committed."""


def copy_database(
    source: Engine, target: Engine, progress: Callable[[str, int], None] = lambda t, n: None
) -> dict[str, int]:
    """Copy every table from ``source`` into ``target`` (migrated first, must be empty).

    Returns the rows per table. Raises CopyError, leaving the target without rows.
    """
    migrations.upgrade_engine(target)
    tables = METADATA.sorted_tables  # parents before children
    copied: dict[str, int] = {}
    with source.connect() as reading, target.begin() as writing:
        for table in tables:
            if writing.scalar(select(func.count()).select_from(table)):
                raise CopyError(f"the target database is not empty: {table.name} has rows")
        for table in tables:
            rows = reading.execution_options(yield_per=BATCH).execute(
                select(table).order_by(*table.primary_key.columns)
            )
            copied[table.name] = 0
            for part in rows.partitions():
                writing.execute(insert(table), [row._asdict() for row in part])
                copied[table.name] += len(part)
                progress(table.name, copied[table.name])
        for table in tables:
            there = writing.scalar(select(func.count()).select_from(table))
            here = reading.scalar(select(func.count()).select_from(table))
            if not here == there == copied[table.name]:
                raise CopyError(
                    f"{table.name}: {here} rows in the source, {there} in the target; "
                    "nothing was committed"
                )
        if writing.dialect.name == "postgresql":
            _reset_sequences(writing, tables)
    return copied


def _reset_sequences(connection, tables) -> None:
    # Rows came with their ids; the next id PostgreSQL hands out must come after them.
    for table in tables:
        key = list(table.primary_key.columns)
        if len(key) == 1 and isinstance(key[0].type, Integer):
            connection.execute(
                text(
                    f"SELECT setval(pg_get_serial_sequence('{table.name}', '{key[0].name}'), "
                    f"COALESCE((SELECT MAX({key[0].name}) FROM {table.name}), 0) + 1, false)"
                )
            )
