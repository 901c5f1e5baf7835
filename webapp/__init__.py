"""The newsletter web application."""

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask


def create_app(test_config: dict | None = None) -> "Flask":
    """Build the app: configuration, database, pages, mail outbox and CLI commands.

    Flask is imported here rather than at the top, so that the parts of the package that
    run without an app (the forked senders of a digest) load without it.
    """
    from flask import Flask

    from . import cli, db, i18n, web
    from .articles import cli as articles_cli
    from .config import load_config
    from .inbound import cli as inbound_cli
    from .inbound import hooks
    from .issues import cli as issues_cli
    from .privacy import cli as privacy_cli  # noqa: F401  (adds subscribers delete)
    from .reports import cli as reports_cli
    from .subscribers import cli as subscribers_cli
    from .webhooks import cli as webhooks_cli
    from .worker import OutboxWorker

    instance_path = os.path.abspath(os.environ.get("NEWSLETTER_INSTANCE_PATH", "instance"))
    if test_config and "INSTANCE_PATH" in test_config:
        instance_path = os.path.abspath(test_config["INSTANCE_PATH"])
    app = Flask(__name__, instance_path=instance_path, instance_relative_config=True)
    load_config(app, test_config)

    db.init_app(app)
    i18n.init_app(app)
    app.extensions["outbox_worker"] = OutboxWorker(app) if app.config["OUTBOX_WORKER"] else None
    web.init_app(app)
    hooks.init_app(app)
    cli.init_app(app)
    subscribers_cli.init_app(app)
    issues_cli.init_app(app)
    reports_cli.init_app(app)
    inbound_cli.init_app(app)
    articles_cli.init_app(app)
    webhooks_cli.init_app(app)
    return app
