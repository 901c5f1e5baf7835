"""Upgrading keeps every row: for every revision, a database migrated to it with a row in
every table is upgraded to head on SQLite and on PostgreSQL, and nothing is lost.

Generic on purpose: a new migration is covered without new test code. The rows are
made from the schema as reflected at that revision.
"""

import re
from datetime import UTC, datetime

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, func, insert, inspect, select, text, types

from tests.helpers import make_app
from webapp.db import engine, make_engine
from webapp.migrations import MigrationError, alembic_config, upgrade_engine

SCRIPTS = ScriptDirectory.from_config(alembic_config())
HEAD = SCRIPTS.get_current_head()
OLDER = [rev.revision for rev in SCRIPTS.walk_revisions() if rev.revision != HEAD][::-1]


def migrate_to(db, revision: str) -> None:
    with db.begin() as connection:
        command.upgrade(alembic_config(connection), revision)


def allowed_values(connection, table: str) -> dict[str, str]:
    """A value each CHECK-constrained (enum) column accepts, by column name."""
    found = {}
    for check in inspect(connection).get_check_constraints(table):
        sql = check["sqltext"]
        column = re.match(r"\W*(\w+)", sql)
        value = re.search(r"'([^']*)'", sql)
        if column and value:
            found[column.group(1)] = value.group(1)
    return found


def value_for(column, enums: dict[str, str], row_number: int):
    kind = column.type
    if column.name in enums:
        return enums[column.name]
    if isinstance(kind, types.Boolean):
        return False
    if isinstance(kind, types.Integer):
        return row_number
    if isinstance(kind, types.Float):
        return row_number + 0.5
    if isinstance(kind, types.DateTime):
        return datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    if isinstance(kind, types.JSON):
        return {"n": row_number}
    if isinstance(kind, types.LargeBinary):
        return b"bytes"
    if isinstance(kind, types.String | types.Text):
        length = getattr(kind, "length", None) or 40
        return f"{column.name}-{row_number}@newsroom.org"[:length]
    raise AssertionError(f"no test value for {column.table.name}.{column.name}: {kind!r}")


def fill_every_table(db) -> dict[str, int]:
    """A row in every table, then how many each holds.

    Parents come first, and each foreign key points at a row of its parent, in the
    column it refers to (tables a migration already filled lend their first row).
    """
    metadata = MetaData()
    with db.begin() as connection:
        metadata.reflect(connection)
        first: dict[str, dict] = {}
        for table in metadata.sorted_tables:
            if not connection.scalar(select(func.count()).select_from(table)):
                enums = allowed_values(connection, table.name)
                row = {}
                for column in table.columns:
                    if column.foreign_keys:
                        parent = next(iter(column.foreign_keys)).column
                        row[column.name] = first.get(parent.table.name, {}).get(parent.name)
                    elif (
                        column.primary_key
                        and isinstance(column.type, types.Integer)
                        and len(table.primary_key.columns) == 1
                    ):
                        continue  # the database numbers it (a part of a composite key it does not)
                    else:
                        row[column.name] = value_for(column, enums, 1)
                connection.execute(insert(table).values(row))
            first[table.name] = dict(connection.execute(select(table).limit(1)).mappings().one())
        return row_counts(connection, [table.name for table in metadata.sorted_tables])


def row_counts(connection, tables) -> dict[str, int]:
    return {name: connection.scalar(text(f'SELECT COUNT(*) FROM "{name}"')) for name in tables}


def schema_and_rows(db) -> dict[str, tuple[list[str], int]]:
    """Every table's columns and row count: what an upgrade that changed nothing keeps."""
    with db.connect() as connection:
        reflected = inspect(connection)
        tables = reflected.get_table_names()
        counts = row_counts(connection, tables)
        return {
            name: ([column["name"] for column in reflected.get_columns(name)], counts[name])
            for name in tables
        }


@pytest.mark.parametrize("revision", OLDER)
def test_upgrading_from_each_revision_keeps_every_row(any_db_url, revision):
    db = make_engine(any_db_url)
    try:
        migrate_to(db, revision)
        before = fill_every_table(db)
        assert all(before.values()), before
        upgrade_engine(db)
        with db.connect() as connection:
            # A table a later revision drops takes its rows along; every other keeps its own.
            kept = [name for name in before if inspect(connection).has_table(name)]
            after = row_counts(connection, kept)
        assert after == {name: before[name] for name in kept}, f"rows lost {revision}→head"
        if db.dialect.name == "sqlite":
            with db.connect() as connection:  # back on for the app after the upgrade
                assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        db.dispose()


def test_orphans_fail_the_upgrade_in_one_line_and_change_nothing(tmp_path):
    db = make_engine(f"sqlite:///{tmp_path / 'orphans.db'}")
    try:
        migrate_to(db, OLDER[-1])
        fill_every_table(db)
        with db.connect() as connection:  # a row pointing at nothing, as old bugs left
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            connection.exec_driver_sql("UPDATE subscriptions SET newsletter_id = 999")
            connection.commit()
        before = schema_and_rows(db)
        with pytest.raises(
            MigrationError,
            match=r"^subscriptions: \d+ row\(s\) refer to missing rows of newsletters;[^\n]*$",
        ):
            upgrade_engine(db)
        assert schema_and_rows(db) == before  # rolled back, schema and all
        with db.connect() as connection:
            revision = connection.exec_driver_sql("SELECT version_num FROM alembic_version")
            assert revision.scalar() == OLDER[-1]
    finally:
        db.dispose()


def test_db_upgrade_says_so_in_one_line(tmp_path):
    app = make_app(tmp_path, DATABASE_URL=f"sqlite:///{tmp_path / 'app.db'}")
    with engine(app).connect() as connection:
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        connection.exec_driver_sql(
            "INSERT INTO subscription_events (subscription_id, newsletter_id, kind, at) "
            "VALUES (12345, 1, 'confirmed', '2026-01-01 00:00:00')"
        )
        connection.commit()
    result = app.test_cli_runner().invoke(args=["db", "upgrade"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: database not upgraded: subscription_events: 1 row(s) refer to missing rows "
        "of subscriptions; the upgrade was rolled back, nothing changed"
    ]
