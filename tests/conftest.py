"""Fixtures only: ``app``, ``client``, ``runner``, ``smtp_server`` (aiosmtpd on loopback),
``feed_server`` (HTTP on loopback), ``postgres``, ``redis_url``, ``any_db_app`` and
``any_db_url``; helpers are in ``tests/helpers.py``."""

import os
import shutil

import pytest
from hypothesis import settings

from tests import helpers
from tests.helpers import (
    CHROMIUM,
    CHROMIUM_ARGS,
    REQUIRE_BROWSER,
    REQUIRE_REDIS,
    ROOT,
    TEST_DATABASE,
    FeedServer,
    SmtpServer,
    dispose_apps,
    free_port,
    make_app,
    postgres_cluster,
    start_redis,
    stop_postgres,
)

# CI replays the same examples on every run, so that its verdict is reproducible;
# a developer's run explores new examples each time and keeps what fails.
settings.register_profile("ci", derandomize=True, database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


# Tests that pick their database themselves: the SQLite pass runs them on both.
BOTH_DATABASES = {"any_db_app", "any_db_url", "postgres"}


def _ran_in_the_sqlite_pass(item) -> bool:
    return bool(
        item.get_closest_marker("no_database")
        or item.get_closest_marker("sqlite_only")
        or BOTH_DATABASES & set(getattr(item, "fixturenames", ()))
    )


def pytest_collection_modifyitems(config, items):
    """The PostgreSQL pass (TEST_DATABASE=postgresql) runs only what touches the
    database it is about: a test marked ``no_database`` or ``sqlite_only``, or one that
    picks its database itself (on both, or on PostgreSQL), ran in the SQLite pass; it
    is left out, not skipped."""
    if TEST_DATABASE != "postgresql":
        return
    left_out = [item for item in items if _ran_in_the_sqlite_pass(item)]
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = [item for item in items if not _ran_in_the_sqlite_pass(item)]


@pytest.fixture(autouse=True)
def _no_database_kept(request, monkeypatch):
    """A test marked ``no_database`` that makes an app fails: the mark would hide it
    from the PostgreSQL pass."""
    if request.node.get_closest_marker("no_database"):
        monkeypatch.setattr(helpers, "NO_DATABASE", True)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch):
    """Tests see the documented defaults, not the developer's NEWSLETTER_* settings;
    each test's database connections are closed after it."""
    for name in list(os.environ):
        if name.startswith("NEWSLETTER_"):
            monkeypatch.delenv(name)
    yield
    dispose_apps()


@pytest.fixture
def app(tmp_path):
    return make_app(tmp_path)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture(scope="session", autouse=True)
def _stop_postgres():
    yield
    stop_postgres()


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL cluster for the session; skipped (with a reason) when not installed."""
    return postgres_cluster()


@pytest.fixture(scope="session")
def redis_binary():
    """The redis-server program (the test is skipped without it, or fails when
    NEWSLETTER_REQUIRE_REDIS is set)."""
    binary = shutil.which("redis-server")
    if binary is None:
        if REQUIRE_REDIS:
            pytest.fail("redis-server is required (NEWSLETTER_REQUIRE_REDIS) but not installed")
        pytest.skip("redis-server not found (apt-get install redis-server)")
    return binary


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory, redis_binary):
    """A real redis-server on a free loopback port, for the shared rate-limit storage."""
    port = free_port()
    server = start_redis(redis_binary, tmp_path_factory.mktemp("redis"), port)
    yield f"redis://127.0.0.1:{port}"
    server.terminate()
    server.wait(10)


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db_url(request, tmp_path):
    """An empty database on SQLite, then on PostgreSQL: for tests that migrate it themselves."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.db'}"
    return request.getfixturevalue("postgres").create_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db_app(request, tmp_path):
    """The app on SQLite, then on PostgreSQL: for tests about what the database does."""
    if request.param == "sqlite":
        return make_app(
            tmp_path, DATABASE_URL=f"sqlite:///{tmp_path / 'instance' / 'newsletter.db'}"
        )
    url = request.getfixturevalue("postgres").create_database()
    return make_app(tmp_path, DATABASE_URL=url)


@pytest.fixture
def smtp_server():
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture
def feed_server():
    server = FeedServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium driven by Playwright; skipped (or failed in CI) without it."""
    if not CHROMIUM:
        if REQUIRE_BROWSER:
            pytest.fail("Chromium is required (NEWSLETTER_REQUIRE_BROWSER) but was not found")
        pytest.skip("Chromium not found: install it (apt-get install chromium) for browser tests")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="session", autouse=True)
def compiled_catalogs():
    """The translation catalogs compiled from their .po files, as `make` does, so that a
    bare `pytest` tests the translations as they are written."""
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    for po in (ROOT / "webapp" / "translations").glob("*/LC_MESSAGES/messages.po"):
        mo = po.with_suffix(".mo")
        if not mo.exists() or mo.stat().st_mtime < po.stat().st_mtime:
            with po.open("rb") as source, mo.open("wb") as target:
                write_mo(target, read_po(source, locale=po.parts[-3]))
