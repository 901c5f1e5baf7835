"""Shared test helpers: apps on a fresh instance, the form post, the CSRF reader, the
row counter, a real SMTP server on loopback, a web server of feeds on loopback, the
PostgreSQL cluster, DKIM keys."""

import asyncio
import atexit
import base64
import contextlib
import functools
import ipaddress
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from flask.testing import FlaskClient
from sqlalchemy import func, select

from webapp import create_app, migrations
from webapp.catalog import read_catalog, seed_catalog
from webapp.db import engine, session_factory
from webapp.issues.queue import take_list
from webapp.mailout.models import Delivery, OutboxMail
from webapp.mailout.verp import Verp
from webapp.models import Issue, Subscriber, Subscription, SubscriptionEvent

ROOT = Path(__file__).resolve().parent.parent
GOOD_ADDRESS = "reader@newsroom.org"
# TEST_DATABASE=postgresql runs the whole suite on PostgreSQL: every app make_app
# makes gets a fresh database on a throw-away cluster. `make test` runs both.
TEST_DATABASE = os.environ.get("TEST_DATABASE", "sqlite")
NO_DATABASE = False  # set for a test marked no_database: making an app fails it
# Read before the tests clear NEWSLETTER_* from the environment.
REQUIRE_POSTGRES = bool(os.environ.get("NEWSLETTER_REQUIRE_POSTGRES"))
REQUIRE_REDIS = bool(os.environ.get("NEWSLETTER_REQUIRE_REDIS"))
REQUIRE_BROWSER = bool(os.environ.get("NEWSLETTER_REQUIRE_BROWSER"))
CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium")
# Started by root in CI and with no network: flags as the machine's notes prescribe.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# About SQLite itself: the PostgreSQL pass leaves it out (tests/conftest.py).
sqlite_only = pytest.mark.sqlite_only
NEWSLETTER_BIN = str(Path(sys.executable).parent / "newsletter")
CSRF_FIELD = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')

# Every app make_app made, so that the fixtures can close its connections after a test.
made_apps: list = []


def dispose_apps() -> None:
    """Close the database connections of every app made since the last call."""
    while made_apps:
        engine(made_apps.pop()).dispose()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(binary: str, folder: Path, port: int) -> subprocess.Popen:
    """A redis-server on 127.0.0.1:``port`` keeping nothing on disk, once it takes
    connections."""
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        + ["--dir", str(folder)],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return server
        except OSError:
            time.sleep(0.05)
    server.kill()
    raise RuntimeError(f"redis-server did not take connections on port {port} within 10 s")


class ServerLikeClient(FlaskClient):
    """A test client that, like a WSGI server, takes each response's whole body once it
    has it: the work a view leaves for after its answer (``after_answer``) is done when
    a test looks. ``buffered=False`` takes the first part only and leaves the response
    open, to time the answer alone (and to play a server that stopped right after it)."""

    def open(self, *args, buffered: bool = True, **kwargs):
        return super().open(*args, buffered=buffered, **kwargs)


def make_app(tmp_path: Path, **config):
    """A migrated, seeded app with its instance folder under ``tmp_path``."""
    if NO_DATABASE:
        pytest.fail("a test marked no_database makes an app: remove the mark")
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
    ready = False
    if TEST_DATABASE == "postgresql" and "DATABASE_URL" not in config:
        settings["DATABASE_URL"] = postgres_cluster().create_database(migrated=True)
    elif "DATABASE_URL" not in config:
        # A copy of the migrated, seeded file, where the app will look for it.
        database = Path(settings["INSTANCE_PATH"]) / "newsletter.db"
        # Named, so that no NEWSLETTER_DATABASE_URL or instance config points elsewhere.
        settings["DATABASE_URL"] = f"sqlite:///{database}"
        if not database.exists():
            database.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(sqlite_template(), database)
            ready = True
    app = create_app(settings)
    app.test_client_class = ServerLikeClient
    made_apps.append(app)
    if not ready:
        migrate_and_seed(app)
    return app


def migrate_and_seed(app) -> None:
    """Bring ``app``'s database to the head revision and seed its catalog."""
    migrations.upgrade(app)
    with session_factory(app)() as session:
        seed_catalog(session, read_catalog(ROOT / "seeds" / "newsletters.toml"))
        session.commit()


@functools.cache
def sqlite_template() -> Path:
    """A migrated, seeded SQLite database, made once per test process: each test app
    gets a copy of the file, a millisecond, where migrating took 200 ms."""
    folder = Path(tempfile.mkdtemp(prefix="newsletter-template-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    app = create_app(
        {
            "INSTANCE_PATH": folder,
            "DATABASE_URL": f"sqlite:///{folder / 'newsletter.db'}",
            "TESTING": True,
            "OUTBOX_WORKER": False,
            "SEEDS_PATH": str(ROOT / "seeds"),
        }
    )
    migrate_and_seed(app)
    with engine(app).connect() as connection:
        # Everything into the main file, so that the file alone is the database.
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine(app).dispose()
    return folder / "newsletter.db"


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


def readers(count: int) -> list[str]:
    """``count`` distinct reader addresses."""
    return [f"reader{n}@newsroom.org" for n in range(count)]


def app_with_issue(tmp_path: Path, relay: "SmtpServer", count: int, **config):
    """An app sending through ``relay``, with ``count`` confirmed readers of
    explaining-ukraine and its issue 1 built."""
    app = make_app(tmp_path, **relay.config(), **config)
    runner = app.test_cli_runner()
    csv = tmp_path / "readers.csv"
    csv.write_text("email\n" + "\n".join(readers(count)) + "\n")
    newsletter = "explaining-ukraine"
    result = runner.invoke(
        args=["subscribers", "import", str(csv), "--newsletter", newsletter]
        + ["--confirmed", "--consent-note", "test list"]
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(args=["digest", "build", newsletter])
    assert result.exit_code == 0, result.output
    return app


def count(app, model) -> int:
    """How many rows ``model``'s table holds."""
    with session_factory(app)() as session:
        return session.scalar(select(func.count()).select_from(model))


def csrf_from(html: str) -> str:
    """The CSRF token in a page's form."""
    return CSRF_FIELD.search(html).group(1)


def csrf_token(client, path: str = "/") -> str:
    """The CSRF token a page gives this client's session."""
    return csrf_from(client.get(path).get_data(as_text=True))


def subscribe(
    client,
    email=GOOD_ADDRESS,
    newsletter="explaining-ukraine",
    json=False,
    ip=None,
    headers=None,
    answer_only=False,
    prefix="",
    **extra,
):
    """Post a sign-up form as a browser would (with its CSRF token), from ``ip`` if given,
    on the pages under ``prefix`` ("/uk" for the Ukrainian ones).

    ``answer_only``: the response is left open, so what the server does after its
    answer has not happened (as when the server stops right after answering)."""
    data = {
        "email": email,
        "newsletter": newsletter,
        "source": "/",
        "website": "",
        "csrf_token": csrf_token(client, prefix + "/"),
    }
    data.update(extra)
    sent_headers = {"Accept": "application/json"} if json else {}
    sent_headers.update(headers or {})
    environ = {"REMOTE_ADDR": ip} if ip else {}
    return client.post(
        prefix + "/subscribe",
        data=data,
        headers=sent_headers,
        environ_base=environ,
        buffered=not answer_only,
    )


def confirm_path(app, index: int = -1) -> str:
    """The confirmation link of a queued email, as a path."""
    with session_factory(app)() as session:
        message = session.scalars(select(OutboxMail).order_by(OutboxMail.id)).all()[index]
        text = message_from_bytes(message.message, policy=policy.default).get_body(("plain",))
    return re.search(r"https?://[^/\s]+((?:/uk)?/confirm/\S+)", text.get_content()).group(1)


def press_confirm(client, path):
    """Open a confirmation page and press its button, as a reader does."""
    token = csrf_token(client, path)
    return client.post(path, data={"csrf_token": token}, headers={"User-Agent": "Clicker/1.0"})


def dkim_key(folder: Path) -> tuple[Path, bytes]:
    """Write ``dkim.pem`` (RSA-2048) into ``folder``; return it and its TXT record."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = folder / "dkim.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return path, b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)


def self_signed(key, common_name: str, ip: str | None = None) -> x509.Certificate:
    """A certificate for ``key`` that is its own CA, valid from an hour ago for a day."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )
    if ip is not None:
        address = x509.IPAddress(ipaddress.ip_address(ip))
        builder = builder.add_extension(x509.SubjectAlternativeName([address]), critical=False)
    return builder.sign(key, hashes.SHA256())


def tls_certificate(folder: Path) -> tuple[Path, Path]:
    """Write ``cert.pem`` and ``key.pem`` into ``folder``: a certificate for 127.0.0.1
    that is its own CA, which a client trusts when SSL_CERT_FILE names it."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = self_signed(key, "127.0.0.1", ip="127.0.0.1")
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@dataclass
class Received:
    sender: str
    recipients: list[str]
    data: bytes
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    peer: tuple | None = None  # the client's address and port: which connection

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
    delay: float = 0  # seconds to wait before answering DATA (a slow relay)
    greetings: int = 0  # EHLOs: the connections a client opened
    quits: int = 0

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        self.greetings += 1
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_QUIT(self, server, session, envelope):
        self.quits += 1
        return "221 Bye"

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
        if self.delay:
            await asyncio.sleep(self.delay)
        self.messages.append(
            Received(
                envelope.mail_from,
                list(envelope.rcpt_tos),
                envelope.original_content,
                peer=session.peer,
            )
        )
        return "250 Message accepted for delivery"

    def wait_for(self, count: int, timeout: float = 10) -> list[Received]:
        """Wait until ``count`` messages arrived (bounded), then return them all."""
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.messages


class SmtpServer:
    """A real SMTP server on a loopback port; ``start``/``stop`` simulate a relay outage.

    ``security`` as in NEWSLETTER_SMTP_SECURITY: ``ssl`` and ``starttls`` need a
    ``folder`` for the server's certificate, which clients trust through SSL_CERT_FILE
    set to ``certificate``.
    """

    def __init__(
        self, port: int | None = None, security: str = "none", folder: Path | None = None
    ) -> None:
        self.port = port or free_port()
        self.handler = Recorder()
        self.security = security
        self.certificate: Path | None = None
        self._tls: ssl.SSLContext | None = None
        if security != "none":
            self.certificate, key = tls_certificate(folder)
            self._tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self._tls.load_cert_chain(self.certificate, key)
        self._controller: Controller | None = None

    def start(self) -> "SmtpServer":
        tls = {}
        if self.security == "ssl":
            tls = {"ssl_context": self._tls}
        elif self.security == "starttls":
            tls = {"tls_context": self._tls}  # handed on to the SMTP server
        self._controller = Controller(self.handler, hostname="127.0.0.1", port=self.port, **tls)
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
            "SMTP_SECURITY": self.security,
            "SMTP_TIMEOUT": 5,
        }


@dataclass
class Page:
    """What the feed server answers for one path."""

    body: bytes
    status: int = 200
    content_type: str = "application/xml; charset=utf-8"
    length: bool = True  # send Content-Length (without it, the body ends as the connection does)
    delay: float = 0  # seconds before answering (a slow server)
    headers: dict[str, str] = field(default_factory=dict)


class FeedServer:
    """A real HTTP server on a loopback port serving ``pages`` by path (404 for any
    other); ``requests`` keeps each request's path and User-Agent."""

    def __init__(self) -> None:
        self.pages: dict[str, Page] = {}
        self.requests: list[tuple[str, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append((self.path, self.headers.get("User-Agent", "")))
                page = server.pages.get(self.path, Page(b"<h1>Not found</h1>", 404, "text/html"))
                time.sleep(page.delay)
                self.send_response(page.status)
                self.send_header("Content-Type", page.content_type)
                for name, value in page.headers.items():
                    self.send_header(name, value)
                if page.length:
                    self.send_header("Content-Length", str(len(page.body)))
                else:
                    self.close_connection = True
                self.end_headers()
                with contextlib.suppress(ConnectionError):  # a client that stopped reading
                    self.wfile.write(page.body)

            def log_message(self, format, *args) -> None:
                pass  # quiet: the test says what matters

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread: threading.Thread | None = None

    def start(self) -> "FeedServer":
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def serve(self, path: str, body: str | bytes, **page) -> str:
        """Answer ``path`` with ``body`` from now on; its URL."""
        self.pages[path] = Page(body.encode() if isinstance(body, str) else body, **page)
        return self.url(path)


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


def stop_postgres() -> None:
    """Stop the session's cluster, if one was started."""
    if _cluster is not None:
        _cluster.stop()


def history(app, email: str) -> list[tuple[str, str | None, int | None]]:
    """(kind, how, inbound message) of every event of ``email``'s subscriptions, in order."""
    with session_factory(app)() as session:
        query = (
            select(SubscriptionEvent.kind, SubscriptionEvent.how, SubscriptionEvent.inbound_id)
            .join(Subscription)
            .join(Subscriber)
            .where(Subscriber.email == email)
            .order_by(SubscriptionEvent.id)
        )
        return [(kind.value, how, inbound) for kind, how, inbound in session.execute(query)]


def sent_to_readers(app) -> dict[str, str]:
    """Take issue 1's list as a send does; {reader: the VERP sender of their delivery}."""
    verp = Verp.from_config(app.config)
    with session_factory(app)() as session:
        take_list(session, session.scalars(select(Issue)).one())
        session.commit()
        rows = session.execute(select(Subscriber.email, Delivery.id).join(Delivery)).all()
    return {email: verp.sender("d", delivery_id) for email, delivery_id in rows}


def start_worker(app, relay, interval: float = 0.2, **settings):
    """``newsletter worker`` as a process on ``app``'s data, sending through ``relay``."""
    return subprocess.Popen(
        [NEWSLETTER_BIN, "worker", "--interval", str(interval)],
        env=command_env(app, relay, **settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop(worker) -> tuple[str, str]:
    """SIGTERM a worker and wait for it: its (stdout, stderr).

    Sent once the worker handles it: one still starting up on a loaded machine would
    just die of it (exit -15), which is not what a test of its stopping looks at."""
    deadline = time.monotonic() + 60
    while worker.poll() is None and not handles_sigterm(worker.pid):
        assert time.monotonic() < deadline, "the worker never got ready for SIGTERM"
        time.sleep(0.05)
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
    return worker.communicate(timeout=60)


def handles_sigterm(pid: int) -> bool:
    """Whether process ``pid`` has its own SIGTERM handler (Linux: /proc's SigCgt mask)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:  # gone
        return True
    caught = re.search(r"^SigCgt:\s*([0-9a-f]+)", status, re.MULTILINE)
    return bool(caught and int(caught.group(1), 16) & (1 << (signal.SIGTERM - 1)))


def flock_waiters(path: str) -> int:
    """How many flock() calls are blocked waiting for the lock on the file ``path``
    (Linux lists each in /proc/locks: a "->" line naming the file's device and inode)."""
    found = os.stat(path)
    file_id = f"{os.major(found.st_dev):02x}:{os.minor(found.st_dev):02x}:{found.st_ino}"
    lines = [line.split() for line in Path("/proc/locks").read_text().splitlines()]
    return sum(fields[1:3] == ["->", "FLOCK"] and file_id in fields for fields in lines)


def until_one_gives_way(workers, timeout: float = 60) -> None:
    """Wait (bounded) until one of two workers on SQLite has found the other and left.
    The second may still be starting when the work is done (a loaded machine); stopped
    then, it would never have looked."""
    deadline = time.monotonic() + timeout
    while all(w.poll() is None for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)


def until_handled(app, count: int, timeout: float = 60) -> None:
    """Wait (bounded) until ``count`` messages heard back are stored and handled:
    ``inbound serve`` answers 250 once a message is stored, and handles it after."""
    from webapp.inbound.models import InboundMessage

    deadline = time.monotonic() + timeout
    handled = InboundMessage.kind.is_not(None)
    while True:
        with session_factory(app)() as session:
            done = session.scalar(select(func.count()).where(handled))
        if done >= count:
            return
        assert time.monotonic() < deadline, f"{done} of {count} messages handled"
        time.sleep(0.02)


def wait_for_deliveries(relay, count: int, timeout: float = 60) -> None:
    """Wait (bounded) until ``relay`` has taken ``count`` messages."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(relay.messages) < count:
        time.sleep(0.1)


class DripServer:
    """An HTTP server on loopback that answers every request one byte at a time, one
    every ``pace`` seconds, for at most ``limit`` bytes: it meets every socket timeout
    and never finishes in time. ``requests``: the paths asked for."""

    def __init__(self, pace: float = 0.5, limit: int = 240) -> None:
        self.pace, self.limit = pace, limit
        self.requests: list[str] = []
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._drip, args=(connection,), daemon=True).start()

    def _drip(self, connection: socket.socket) -> None:
        with connection:
            connection.settimeout(10)
            try:
                head = connection.recv(65536).decode("latin-1")
                self.requests.append(head.split(" ", 2)[1] if " " in head else "")
                answer = (
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\n"
                    b"Content-Length: 100000\r\n\r\n<rss>" + b" " * self.limit
                )
                for n in range(min(len(answer), self.limit)):
                    if self._stop.wait(self.pace):
                        return
                    connection.sendall(answer[n : n + 1])
            except OSError:
                return

    def stop(self) -> None:
        self._stop.set()
        self._listener.close()
