"""A throw-away PostgreSQL cluster in a temporary folder, on a free loopback port.

Uses Debian's server binaries (package ``postgresql``); as root, runs them as the
``postgres`` user, since ``initdb`` refuses to run as root.
"""

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg
from sqlalchemy.orm import Session


def server_binaries() -> Path | None:
    """The folder holding initdb and pg_ctl, or None when PostgreSQL is not installed."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(versions[-1]).parent if versions else None


class PostgresCluster:
    """``start()`` a private cluster, ``create_database()`` per test, ``stop()`` removes it."""

    def __init__(self, bindir: Path, port: int) -> None:
        self.bindir = bindir
        self.port = port
        self.folder = Path(tempfile.mkdtemp(prefix="newsletter-pg-"))
        self.data = self.folder / "data"
        self._databases = 0
        self._template: str | None = None

    def _run(self, *args: str) -> None:
        command = [str(self.bindir / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def start(self) -> "PostgresCluster":
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.folder / "log"),
            "-w",
            "start",
        )
        return self

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def create_database(self, migrated: bool = False) -> str:
        """A new database, empty or (``migrated``) with the schema and the seed catalog.

        Migrated ones are copies of a template made once: CREATE DATABASE … TEMPLATE
        takes a fraction of the time the migrations take.
        """
        if migrated and not self._template:
            self._template = self._url(self._create("template_app", None))
            _migrate_and_seed(self._template)
        self._databases += 1
        name = self._create(f"test_{self._databases}", "template_app" if migrated else None)
        return self._url(name)

    def _create(self, name: str, template: str | None) -> str:
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as connection:
            connection.execute(
                f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else "")
            )
        return name

    def _url(self, name: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def dsn(self, database: str) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={database}"


def _migrate_and_seed(url: str) -> None:
    from webapp import migrations
    from webapp.catalog import read_catalog, seed_catalog
    from webapp.db import make_engine

    root = Path(__file__).resolve().parent.parent
    engine = make_engine(url)
    try:
        migrations.upgrade_engine(engine)
        with Session(engine) as session:
            seed_catalog(session, read_catalog(root / "seeds" / "newsletters.toml"))
            session.commit()
    finally:
        engine.dispose()  # a template must have no connections when copied
