"""Work a view leaves for after its answer runs once the answer is whole on the wire,
whether or not the server closes the answer, and only once."""

import logging

import pytest
from flask import Flask
from werkzeug.test import EnvironBuilder

from webapp.web import after_answer

pytestmark = pytest.mark.no_database  # the PostgreSQL pass leaves these out


def app_leaving(*steps) -> Flask:
    app = Flask(__name__)
    after_answer.init_app(app)

    @app.route("/", methods=["GET", "POST"])
    def view():
        for step in steps:
            after_answer.after_answer(step)
        return "answered"

    return app


def call(app: Flask, method: str = "POST"):
    """The app's answer as a server gets it: its status and its body, not yet iterated."""
    started = []
    body = app(EnvironBuilder(method=method).get_environ(), lambda s, h, e=None: started.append(s))
    return started[0], body


def test_the_work_runs_once_the_whole_body_is_taken_even_if_never_closed():
    done = []
    status, body = call(app_leaving(lambda: done.append("acted")))
    chunks = iter(body)
    assert status == "200 OK" and next(chunks) == b"answered" and done == []
    assert list(chunks) == [] and done == ["acted"]  # the server asked past the end
    body.close()
    assert done == ["acted"]  # once


def test_the_work_of_an_answer_closed_before_its_end_runs_at_the_close():
    done = []
    _, body = call(app_leaving(lambda: done.append("acted")))
    body.close()
    assert done == ["acted"]


def test_an_answer_without_a_body_runs_its_work_at_the_close_not_before_its_headers():
    # A HEAD answer's headers go out after the server has found its body empty.
    done = []
    _, body = call(app_leaving(lambda: done.append("acted")), method="HEAD")
    assert list(body) == [] and done == []
    body.close()
    assert done == ["acted"]


def test_a_failing_step_is_logged_and_the_others_still_run(caplog):
    done = []
    _, body = call(app_leaving(lambda: 1 / 0, lambda: done.append("second")))
    with caplog.at_level(logging.ERROR):
        assert list(body) == [b"answered"]
    assert done == ["second"] and "ZeroDivisionError" in caplog.text


def test_answers_without_work_pass_through_untouched():
    app = app_leaving()
    _, body = call(app)
    assert not isinstance(body, after_answer._ThenWork)
