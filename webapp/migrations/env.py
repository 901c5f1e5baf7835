"""Alembic environment: runs on the connection handed over by ``webapp.migrations``."""

from alembic import context

from webapp import models  # noqa: F401  (registers the tables on Model.metadata)
from webapp.db import Model

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Model.metadata,
    render_as_batch=True,  # SQLite alters tables by copying them
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
