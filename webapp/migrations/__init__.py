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


def upgrade(app: Flask, revision: str = "head") -> tuple[str | None, str | None]:
    """Migrate the app's database to ``revision``; return the revisions before and after."""
    return upgrade_engine(engine(app), revision)


def upgrade_engine(engine: Engine, revision: str = "head") -> tuple[str | None, str | None]:
    """Migrate the database ``engine`` points at; return the revisions before and after."""
    with engine.begin() as connection:
        before = MigrationContext.configure(connection).get_current_revision()
        command.upgrade(alembic_config(connection), revision)
        after = MigrationContext.configure(connection).get_current_revision()
    return before, after
