"""Real mail servers for the tests, each in a temporary folder on loopback ports: Debian's
dovecot (IMAP) and Postfix (the MTA that turns a refusal into a DSN)."""

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.helpers import free_port, tls_certificate

# Read before the tests clear NEWSLETTER_* from the environment.
REQUIRE_MTA = bool(os.environ.get("NEWSLETTER_REQUIRE_MTA"))
DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"


def need(binary: str, package: str) -> None:
    """Skip (or fail, when CI requires the mail servers) without ``binary``."""
    if not os.access(binary, os.X_OK):
        if REQUIRE_MTA:
            pytest.fail(f"{package} is required (NEWSLETTER_REQUIRE_MTA) but not installed")
        pytest.skip(f"{package} not found (apt-get install {package})")


def wait_for_port(port: int, process: subprocess.Popen | None = None, log: Path | None = None):
    """Wait (10 s at most) until something listens on 127.0.0.1:``port``."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    text = log.read_text() if log and log.exists() else ""
    raise RuntimeError(f"nothing listens on port {port} after 10 s\n{text}")


class Dovecot:
    """Dovecot serving IMAP over TLS (imaps) with its own certificate; every user name
    logs in with the password ``secret`` and has a Maildir of its own."""

    PASSWORD = "secret"

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.certificate, key = tls_certificate(folder / "tls")
        account = pwd.getpwuid(os.getuid())
        # Mail is never handled as root: as root, the mailboxes belong to nobody.
        user = pwd.getpwnam("nobody") if os.getuid() == 0 else account
        # The mail user must reach its home: not under pytest's folders (0700, root's).
        homes = self.homes = Path(tempfile.mkdtemp(prefix="dovecot-homes-"))
        os.chown(homes, user.pw_uid, user.pw_gid)
        self.config = folder / "dovecot.conf"
        self.log = folder / "dovecot.log"
        self.config.write_text(f"""
base_dir = {folder}/run
state_dir = {folder}/state
log_path = {self.log}
protocols = imap
listen = 127.0.0.1
ssl = required
ssl_cert = <{self.certificate}
ssl_key = <{key}
first_valid_uid = 1
default_internal_user = {"dovecot" if os.getuid() == 0 else account.pw_name}
default_login_user = {"dovenull" if os.getuid() == 0 else account.pw_name}
passdb {{
  driver = static
  args = password={self.PASSWORD}
}}
userdb {{
  driver = static
  args = uid={user.pw_uid} gid={user.pw_gid} home={homes}/%u
}}
mail_location = maildir:~/Maildir
service imap-login {{
  chroot =
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = {self.port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
""")

    def start(self) -> "Dovecot":
        """Start the server and wait until it listens."""
        # It goes to the background itself; its output goes to its log, not to a pipe
        # that the background process would keep open.
        subprocess.run(
            [DOVECOT, "-c", str(self.config)],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        shutil.rmtree(self.homes, ignore_errors=True)
        wait_for_port(self.port, log=self.log)
        return self

    def stop(self) -> None:
        """Stop the server (its master process and every child)."""
        subprocess.run(
            [DOVECOT, "-c", str(self.config), "stop"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        shutil.rmtree(self.homes, ignore_errors=True)
