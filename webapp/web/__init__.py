"""The site readers see: sign-up pages, their own pages, articles and archives, the
defences of it all, and the captured-mail viewer of development installations."""

from flask import Flask

from ..texts import TEXTS
from . import after_answer, archive, captured, notices, preferences, security, signup, tracking


def init_app(app: Flask) -> None:
    """Register the pages, their error pages and defences, and the outbox worker's start."""
    notices.init_app(app)
    after_answer.init_app(app)
    app.register_blueprint(signup.bp)
    app.register_blueprint(archive.bp)
    app.register_blueprint(preferences.bp)
    app.register_blueprint(tracking.bp)
    security.init_app(app)
    if app.config["MAIL_BACKEND"] == "file":
        app.register_blueprint(captured.bp)
    app.context_processor(
        lambda: {
            "texts": TEXTS,
            "site_name": app.config["SITE_NAME"],
            "robot_check": security.robot_check_enabled(),
        }
    )

    @app.before_request
    def _start_outbox_worker() -> None:
        worker = app.extensions["outbox_worker"]
        if worker is not None:
            worker.start()
