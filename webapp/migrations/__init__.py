"""Alembic migrations, run from code: ``newsletter db upgrade`` needs no alembic.ini.

Developers add a revision after changing the models with::

    .venv/bin/python -m webapp.migrations "what changed"
"""

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from flask import Flask
from sqlalchemy import Engine

from ..db import engine

HERE = Path(__file__).parent


def alembic_config(connection=None) -> Config:
    """An Alembic config pointing at this folder, sharing ``connection`` if given."""
    config = Config()
    config.set_main_option("script_location", str(HERE))
    config.attributes["connection"] = connection
    return config


class MigrationError(Exception):
    """An upgrade found the data inconsistent; nothing was changed. ``str()`` says where."""


def upgrade(app: Flask, revision: str = "head") -> tuple[str | None, str | None]:
    """Migrate the app's database to ``revision``; return the revisions before and after."""
    return upgrade_engine(engine(app), revision)


def upgrade_engine(db: Engine, revision: str = "head") -> tuple[str | None, str | None]:
    """Migrate the database ``db`` points at; return the revisions before and after.

    The whole upgrade is one transaction. On SQLite, foreign keys are off while it
    runs: Alembic's batch mode rebuilds a table by copying it and dropping the old
    one, and with them on, that drop deletes every row that refers to the table
    (ON DELETE CASCADE). Before committing, ``PRAGMA foreign_key_check`` must find
    nothing; otherwise the upgrade rolls back with MigrationError.
    """
    with db.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            # Only outside a transaction does SQLite take this pragma.
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            connection.commit()
            # pysqlite runs DDL outside transactions unless one is begun explicitly;
            # IMMEDIATE takes the write lock now, waiting (busy timeout) for a running
            # app's writes instead of failing halfway when it first needs to write.
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            before = MigrationContext.configure(connection).get_current_revision()
            command.upgrade(alembic_config(connection), revision)
            if sqlite:
                _check_foreign_keys(connection)
            after = MigrationContext.configure(connection).get_current_revision()
            connection.commit()
        except BaseException:
            connection.rollback()
            raise
        finally:
            if sqlite:
                connection.exec_driver_sql("PRAGMA foreign_keys=ON")
                connection.commit()
    return before, after


def _check_foreign_keys(connection) -> None:
    orphans = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
    if orphans:
        tables = sorted({row[0] for row in orphans})
        parents = sorted({row[2] for row in orphans})
        raise MigrationError(
            f"{', '.join(tables)}: {len(orphans)} row(s) refer to missing rows of "
            f"{', '.join(parents)}; the upgrade was rolled back, nothing changed"
        )
