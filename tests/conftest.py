"""Fixtures: ``app``, ``client``, ``runner``, ``smtp_server`` (aiosmtpd on loopback)."""

import os
import re
import socket
import sys
import time
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from webapp import create_app, migrations
from webapp.catalog import read_catalog, seed_catalog
from webapp.db import session_factory

ROOT = Path(__file__).resolve().parent.parent
GOOD_ADDRESS = "reader@newsroom.org"
# TEST_DATABASE=postgresql runs the whole suite on PostgreSQL: every app make_app
# makes gets a fresh database on a throw-away cluster. `make test` runs both.
TEST_DATABASE = os.environ.get("TEST_DATABASE", "sqlite")
# Read before the tests clear NEWSLETTER_* from the environment.
REQUIRE_POSTGRES = bool(os.environ.get("NEWSLETTER_REQUIRE_POSTGRES"))
sqlite_only = pytest.mark.skipif(
    TEST_DATABASE != "sqlite", reason="about SQLite itself; runs in the SQLite pass"
)


_apps: list = []


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch):
    """Tests see the documented defaults, not the developer's NEWSLETTER_* settings;
    each test's database connections are closed after it."""
    for name in list(os.environ):
        if name.startswith("NEWSLETTER_"):
            monkeypatch.delenv(name)
    yield
    while _apps:
        session_factory(_apps.pop()).kw["bind"].dispose()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_app(tmp_path: Path, **config):
    """A migrated, seeded app with its instance folder under ``tmp_path``."""
    settings = {
        "INSTANCE_PATH": tmp_path / "instance",
        "TESTING": True,
        "OUTBOX_WORKER": False,
        "SEEDS_PATH": str(ROOT / "seeds"),
        # Rate limits are tested where they are the subject; elsewhere they are off.
        "SUBSCRIBE_LIMITS": "",
        "SUBSCRIBE_ADDRESS_LIMITS": "",
    }
    settings.update(config)
    if TEST_DATABASE == "postgresql" and "DATABASE_URL" not in config:
        settings["DATABASE_URL"] = postgres_cluster().create_database(migrated=True)
    app = create_app(settings)
    _apps.append(app)
    migrations.upgrade(app)
    with session_factory(app)() as session:
        seed_catalog(session, read_catalog(ROOT / "seeds" / "newsletters.toml"))
        session.commit()
    return app


def command_env(app, relay: "SmtpServer", **settings) -> dict:
    """The environment for running ``newsletter`` as a process on ``app``'s data,
    sending through ``relay``: the developer's NEWSLETTER_* left out."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env.update(
        NEWSLETTER_INSTANCE_PATH=str(app.instance_path),
        NEWSLETTER_DATABASE_URL=app.config["DATABASE_URL"],
        NEWSLETTER_SEEDS_PATH=app.config["SEEDS_PATH"],
        NEWSLETTER_MAIL_BACKEND="smtp",
        NEWSLETTER_SMTP_HOST="127.0.0.1",
        NEWSLETTER_SMTP_PORT=str(relay.port),
        NEWSLETTER_SMTP_TIMEOUT="5",
    )
    env.update({f"NEWSLETTER_{key}": str(value) for key, value in settings.items()})
    return env


NEWSLETTER_BIN = str(Path(sys.executable).parent / "newsletter")


@pytest.fixture
def app(tmp_path):
    return make_app(tmp_path)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


def csrf_token(client, path: str = "/") -> str:
    """The CSRF token a page gives this client's session."""
    html = client.get(path).get_data(as_text=True)
    return re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html).group(1)


def subscribe(client, email=GOOD_ADDRESS, newsletter="explaining-ukraine", json=False, **extra):
    """Post a sign-up form as a browser would (with its CSRF token)."""
    data = {
        "email": email,
        "newsletter": newsletter,
        "source": "/",
        "website": "",
        "csrf_token": csrf_token(client),
    }
    data.update(extra)
    headers = {"Accept": "application/json"} if json else {}
    return client.post("/subscribe", data=data, headers=headers)


@dataclass
class Received:
    sender: str
    recipients: list[str]
    data: bytes

    @property
    def message(self):
        return message_from_bytes(self.data, policy=policy.default)


@dataclass
class Recorder:
    """An aiosmtpd handler that keeps what it accepts and refuses what it is told to."""

    messages: list[Received] = field(default_factory=list)
    refuse: dict[str, str] = field(default_factory=dict)  # recipient -> SMTP answer
    defer: dict[str, int] = field(default_factory=dict)  # recipient -> 451s before a 250
    refuse_all: str | None = None  # an answer to every recipient (a misconfigured relay)
    pipelining: bool = False  # offer PIPELINING (RFC 2920), as Postfix does

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.refuse_all:
            return self.refuse_all
        if address in self.refuse:
            return self.refuse[address]
        if self.defer.get(address):
            self.defer[address] -= 1
            return "451 4.7.1 Greylisted, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(
            Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
        )
        return "250 Message accepted for delivery"

    def wait_for(self, count: int, timeout: float = 10) -> list[Received]:
        """Wait until ``count`` messages arrived (bounded), then return them all."""
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.messages


class SmtpServer:
    """A real SMTP server on a loopback port; ``start``/``stop`` simulate a relay outage."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.handler = Recorder()
        self._controller: Controller | None = None

    def start(self) -> "SmtpServer":
        self._controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def messages(self) -> list[Received]:
        return self.handler.messages

    def config(self) -> dict:
        """App settings that send through this server."""
        return {
            "MAIL_BACKEND": "smtp",
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": self.port,
            "SMTP_TIMEOUT": 5,
        }


_cluster = None


def postgres_cluster():
    """The session's PostgreSQL cluster, started on first use; pytest.fail/skip without one."""
    global _cluster
    if _cluster is None:
        from tests.postgres import PostgresCluster, server_binaries

        bindir = server_binaries()
        if bindir is None:
            if REQUIRE_POSTGRES or TEST_DATABASE == "postgresql":
                pytest.fail("PostgreSQL is required but not installed (apt-get install postgresql)")
            pytest.skip("PostgreSQL server binaries not found (apt-get install postgresql)")
        _cluster = PostgresCluster(bindir, free_port()).start()
    return _cluster


@pytest.fixture(scope="session", autouse=True)
def _stop_postgres():
    yield
    if _cluster is not None:
        _cluster.stop()


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL cluster for the session; skipped (with a reason) when not installed."""
    return postgres_cluster()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A real redis-server on a free loopback port, for the shared rate-limit storage."""
    import shutil
    import subprocess

    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("NEWSLETTER_REQUIRE_REDIS"):
            pytest.fail("redis-server is required (NEWSLETTER_REQUIRE_REDIS) but not installed")
        pytest.skip("redis-server not found (apt-get install redis-server)")
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    server = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(folder),
        ],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}"
    server.terminate()
    server.wait(10)


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
