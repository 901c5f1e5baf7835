"""The newsletter web application."""

import os

from flask import Flask


def create_app(test_config: dict | None = None) -> Flask:
    """Build the app: configuration, database, pages, mail outbox and CLI commands."""
    from . import captured, cli, db, pages, preferences, reading, security
    from .config import load_config
    from .outbox import OutboxWorker

    instance_path = os.path.abspath(os.environ.get("NEWSLETTER_INSTANCE_PATH", "instance"))
    if test_config and "INSTANCE_PATH" in test_config:
        instance_path = os.path.abspath(test_config["INSTANCE_PATH"])
    app = Flask(__name__, instance_path=instance_path, instance_relative_config=True)
    load_config(app, test_config)

    db.init_app(app)
    app.extensions["outbox_worker"] = OutboxWorker(app) if app.config["OUTBOX_WORKER"] else None
    pages.init_app(app)
    app.register_blueprint(pages.bp)
    app.register_blueprint(reading.bp)
    app.register_blueprint(preferences.bp)
    security.init_app(app)
    if app.config["MAIL_BACKEND"] == "file":
        app.register_blueprint(captured.bp)
    cli.init_app(app)
    return app
