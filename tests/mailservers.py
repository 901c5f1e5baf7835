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


def wait_for_port(port: int, log: Path | None = None) -> None:
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


class Postfix:
    """Debian's Postfix as the site's MTA, its queue and configuration in a folder of
    its own: it takes mail on ``port``, relays it to ``relay_port``, and hands mail for
    ``lmtp_domain`` (the bounce address's) over LMTP to ``lmtp_port``, as a site hands
    bounces to ``newsletter inbound serve --lmtp``. Postfix starts as root only."""

    def __init__(self, relay_port: int, lmtp_domain: str, lmtp_port: int) -> None:
        self.port = free_port()
        # Postfix's own processes (user postfix) must reach the queue: not under
        # pytest's folders, which are 0700 and root's.
        self.folder = Path(tempfile.mkdtemp(prefix="postfix-"))
        self.folder.chmod(0o755)
        self.etc, queue, data = self.folder / "etc", self.folder / "queue", self.folder / "data"
        for folder in (self.etc, queue, data):
            folder.mkdir()
        shutil.chown(data, "postfix", "postfix")
        self.log = self.folder / "maillog"
        (self.etc / "main.cf").write_text(f"""
compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
maillog_file = {self.log}
maillog_file_prefixes = {self.folder}
mail_owner = postfix
setgid_group = postdrop
myhostname = mta.newsroom.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
relay_domains = {lmtp_domain}
relayhost = [127.0.0.1]:{relay_port}
transport_maps = inline:{{ {lmtp_domain}=lmtp:inet:127.0.0.1:{lmtp_port} }}
smtp_dns_support_level = disabled
smtp_host_lookup = native
lmtp_host_lookup = native
smtp_tls_security_level = none
smtpd_tls_security_level = none
biff = no
""")
        services = [
            f"127.0.0.1:{self.port} inet n - n - - smtpd",
            "pickup unix n - n 60 1 pickup",
            "cleanup unix n - n - 0 cleanup",
            "qmgr unix n - n 300 1 qmgr",
            "rewrite unix - - n - - trivial-rewrite",
            "bounce unix - - n - 0 bounce",
            "defer unix - - n - 0 bounce",
            "trace unix - - n - 0 bounce",
            "verify unix - - n - 1 verify",
            "flush unix n - n 1000? 0 flush",
            "proxymap unix - - n - - proxymap",
            "smtp unix - - n - - smtp",
            "relay unix - - n - - smtp",
            "showq unix n - n - - showq",
            "error unix - - n - - error",
            "retry unix - - n - - error",
            "discard unix - - n - - discard",
            "lmtp unix - - n - - lmtp",
            "anvil unix - - n - 1 anvil",
            "scache unix - - n - 1 scache",
            "postlog unix-dgram n - n - 1 postlogd",
        ]
        (self.etc / "master.cf").write_text("\n".join(services) + "\n")

    def config(self) -> dict:
        """App settings that send through this MTA."""
        return {"MAIL_BACKEND": "smtp", "SMTP_HOST": "127.0.0.1", "SMTP_PORT": self.port}

    def _postfix(self, command: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [POSTFIX, "-c", str(self.etc), command],
            env={**os.environ, "MAIL_CONFIG": str(self.etc)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def start(self) -> "Postfix":
        """Start Postfix and wait until it takes mail."""
        if self._postfix("start").returncode != 0:
            text = self.log.read_text() if self.log.exists() else "(no log)"
            raise RuntimeError(f"postfix did not start\n{text}")
        wait_for_port(self.port, log=self.log)
        return self

    def stop(self) -> None:
        """Stop Postfix and remove its folder."""
        self._postfix("stop")
        shutil.rmtree(self.folder, ignore_errors=True)
