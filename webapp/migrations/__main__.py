"""Write a new migration from the models' changes: ``python -m webapp.migrations "message"``."""

import sys

from alembic import command

from .. import create_app
from ..db import engine as app_engine
from . import alembic_config

if len(sys.argv) != 2:
    sys.exit('usage: python -m webapp.migrations "what changed"')
engine = app_engine(create_app())
with engine.begin() as connection:
    command.revision(alembic_config(connection), message=sys.argv[1], autogenerate=True)
