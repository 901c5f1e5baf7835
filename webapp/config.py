"""Configuration: defaults, then ``instance/config.py``, then ``NEWSLETTER_*`` variables.

Nothing here runs at import time; :func:`load_config` is called by ``create_app``.
"""

import base64
import os
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask import Flask
from standardwebhooks.webhooks import Webhook

from emails.transport import private_folder

# Each setting's type is its default's: a whole number, a number, true/false or text.
# None marks text that may stay unset.
DEFAULTS: dict[str, object] = {
    "DATABASE_URL": None,  # derived: SQLite file in the instance folder
    "SECRET_KEY": None,  # derived: instance/secret_key, generated once
    "PUBLIC_URL": "http://127.0.0.1:5000",
    "SITE_NAME": "The Kyiv Independent",
    "MAIL_BACKEND": "file",
    # /outbox shows captured mail, every confirmation link with it: loopback clients only.
    "CAPTURED_MAIL_PUBLIC": False,
    "MAIL_FROM": "newsletter@localhost",
    "SMTP_HOST": "localhost",
    "SMTP_PORT": 25,
    "SMTP_USERNAME": None,
    "SMTP_PASSWORD": None,
    "SMTP_SECURITY": "none",
    "SMTP_TIMEOUT": 30,
    "DKIM_DOMAIN": None,
    "DKIM_SELECTOR": None,
    "DKIM_KEY_FILE": None,
    "SEEDS_PATH": None,  # derived: ./seeds
    "CONFIRM_MAX_AGE": 7 * 24 * 3600,  # seconds a confirmation link stays valid
    "CONFIRM_COOLDOWN": 10 * 60,  # seconds between two confirmation emails per subscription
    "DATA_LINK_MAX_AGE": 3600,  # seconds a mailed link to download or erase one's data works
    "OUTBOX_WORKER": True,  # deliver queued mail from a thread of the web server
    # Where a sign-up's work (its subscription, its confirmation) is done: "server", in
    # the web process right after the answer; "worker", by `newsletter worker` in
    # batches, the web server only recording the post (the most sign-ups per second).
    "SIGNUP_WORK": "server",
    "OUTBOX_RETRY_INTERVAL": 60,  # seconds between the worker's retries
    # Seconds a claimed message is reserved for one sender. Each delivery attempt is cut
    # off at half of it, however many steps of SMTP_TIMEOUT it takes (connecting to each
    # address, TLS, EHLO, AUTH, MAIL, RCPT, DATA, reconnecting once): the claim outlives it.
    "OUTBOX_LEASE": 300,
    # Sending an issue (newsletter digest send); the command's options override the first two.
    "SEND_CONNECTIONS": 4,  # SMTP connections in parallel, one sender process each
    "SEND_RATE": 0.0,  # messages per second, all connections together; 0: as fast as possible
    "SEND_RETRY_DELAY": 60.0,  # seconds before a reader refused with 4xx is tried again, doubling
    "SEND_MAX_ATTEMPTS": 5,  # temporary refusals before a reader's delivery counts as failed
    "SEND_PAUSE_AFTER": 10,  # errors in a row (per connection) that pause the send
    "SEND_LEASE": 300,  # seconds a sender's claim on a batch holds if it dies
    "WTF_CSRF_TIME_LIMIT": None,  # the token lives as long as the session
    # The forms show only our own messages (texts.toml), never WTForms' built-in ones;
    # with this on, Flask-WTF read WTForms' catalog from disk for every form posted.
    "WTF_I18N_ENABLED": False,
    "SESSION_COOKIE_SAMESITE": "Lax",
    "MAX_CONTENT_LENGTH": 64 * 1024,  # a sign-up post is a few hundred bytes
    # The limits package's syntax, e.g. "20/minute;200/hour"; empty turns a limit off.
    "SUBSCRIBE_LIMITS": "20/minute;200/hour",  # per client IP
    "SUBSCRIBE_ADDRESS_LIMITS": "10/hour;30/day",  # per target address, from any IP
    # E.g. redis://127.0.0.1:6379 for several workers; while it is down (Redis
    # restarting), per-process limits and one warning, never a 500.
    "RATELIMIT_STORAGE_URI": "memory://",
    "CONFIRM_DAILY_CAP": 5,  # confirmation emails per address per 24 h, all newsletters
    "TRUSTED_PROXIES": 0,  # reverse proxies in front; X-Forwarded-For is used only then
    # Proof of work (ALTCHA) on the sign-up forms: set a secret key to switch it on.
    "ALTCHA_HMAC_KEY": None,
    "ALTCHA_MAX_NUMBER": 20_000,  # work per sign-up: a fraction of a second in a browser
    "ALTCHA_EXPIRES": 600,  # seconds a challenge stays valid
    # Hearing back (newsletter inbound …). Every message goes out with the envelope
    # sender bounces+TOKEN@domain: the base, by default bounces@ MAIL_FROM's domain.
    "BOUNCE_ADDRESS": None,
    "BOUNCE_SCORE_LIMIT": 3.0,  # suppressed at this score: 1 a hard bounce, 0.5 a soft one
    "BOUNCE_SCORE_RESET_DAYS": 30,  # the score is forgotten this long after the last bounce
    "INBOUND_KEEP_DAYS": 30,  # days a raw message heard back is kept (its outcome stays)
    "INBOUND_MAX_BYTES": 10 * 1024 * 1024,  # larger messages are refused (552)
    # inbound serve: sessions open at once (a new one closes the longest idle), and
    # seconds a session may say nothing before it is closed.
    "INBOUND_MAX_SESSIONS": 100,
    "INBOUND_IDLE_TIMEOUT": 60,
    "INBOUND_IMAP_HOST": None,  # newsletter inbound fetch: the hosted mailbox
    "INBOUND_IMAP_PORT": 993,
    "INBOUND_IMAP_SECURITY": "ssl",
    "INBOUND_IMAP_USERNAME": None,
    "INBOUND_IMAP_PASSWORD": None,
    "INBOUND_IMAP_MAILBOX": "INBOX",
    "INBOUND_IMAP_DONE_FOLDER": "Processed",  # where handled messages are moved
    "TRACK_CLICKS": True,  # a digest's links go through /r/TOKEN, counted per issue
    "TRACK_OPENS": False,  # an open pixel; Apple's Mail Privacy Protection inflates opens
    "CLICK_KEEP_DAYS": 30,  # days a reader's clicks are kept; then only link totals remain
    # POST /hooks/<relay>: each relay is off until its secret is set.
    # Seconds a signed webhook's timestamp may be off (replays). SNS retries for up to an
    # hour with the time it published the message; a retried event is taken once anyway.
    "HOOKS_MAX_AGE": 3600,
    "HOOKS_SES_TOPIC_ARNS": None,  # comma-separated SNS topics whose messages are taken
    "HOOKS_SES_URL": r"https://sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/[^\s#]*",
    "HOOKS_SENDGRID_PUBLIC_KEY": None,  # the Event Webhook's verification key
    "HOOKS_MAILGUN_SIGNING_KEY": None,  # the account's HTTP webhook signing key
    "HOOKS_POSTMARK_USERNAME": None,  # Basic credentials put in Postmark's webhook URL
    "HOOKS_POSTMARK_PASSWORD": None,
    # Webhooks to the newsroom's other systems, delivered by `newsletter worker`.
    "WEBHOOK_URLS": None,  # one or more http(s) URLs, separated by spaces or commas
    "WEBHOOK_SECRET": None,  # whsec_ and base64 (`newsletter webhooks secret` makes one)
    "WEBHOOK_TIMEOUT": 10.0,  # seconds an attempt may take
    "WEBHOOK_RETRY_DELAY": 10.0,  # seconds before the first retry, doubling up to 6 hours
    "WEBHOOK_RETRY_FOR": 3 * 24 * 3600,  # seconds of retries before a message is failed
    "WEBHOOK_KEEP_DAYS": 30,  # days a delivered message is kept for `webhooks list`
    # Seconds newsletter worker gives its jobs to end after SIGTERM (a send's own clean
    # stop comes first): keep it under the service manager's stop timeout.
    "WORKER_STOP_WAIT": 30.0,
}

CHOICES = {
    "MAIL_BACKEND": ("file", "smtp"),
    "SIGNUP_WORK": ("server", "worker"),
    "SMTP_SECURITY": ("none", "starttls", "ssl"),
    "INBOUND_IMAP_SECURITY": ("ssl", "starttls", "none"),
}
# Settings Flask reads itself; they keep whatever type they are given.
FLASK_OWN = ("WTF_CSRF_TIME_LIMIT", "SESSION_COOKIE_SAMESITE", "MAX_CONTENT_LENGTH")
TRUE, FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


class ConfigError(Exception):
    """A setting has a value the service cannot run with."""


def load_config(app: Flask, test_config: dict | None = None) -> None:
    """Fill ``app.config`` in the documented order and check the result."""
    app.config.from_mapping(DEFAULTS)
    app.config.from_pyfile("config.py", silent=True)
    app.config.from_prefixed_env("NEWSLETTER")
    if test_config:
        app.config.from_mapping(test_config)
    _check(app.config)
    instance = Path(app.instance_path)
    if not app.config["DATABASE_URL"]:
        app.config["DATABASE_URL"] = f"sqlite:///{instance / 'newsletter.db'}"
    if not app.config["SEEDS_PATH"]:
        app.config["SEEDS_PATH"] = str(Path.cwd() / "seeds")
    if not app.config["SECRET_KEY"]:
        app.config["SECRET_KEY"] = instance_secret_key(instance)
    app.config["PUBLIC_URL"] = app.config["PUBLIC_URL"].rstrip("/")
    app.config["OUTBOX_PATH"] = str(instance / "outbox")
    # Session and CSRF cookies travel only over https when the site is served so.
    app.config["SESSION_COOKIE_SECURE"] = app.config["PUBLIC_URL"].startswith("https://")


def _check(config: dict) -> None:
    for key, default in DEFAULTS.items():
        if key not in FLASK_OWN:
            config[key] = _typed(key, config[key], default)
    for key, allowed in CHOICES.items():
        if config[key] not in allowed:
            raise ConfigError(
                f"NEWSLETTER_{key} must be one of {', '.join(allowed)}, not {config[key]!r}"
            )
    if config["SEND_CONNECTIONS"] < 1:
        raise ConfigError("NEWSLETTER_SEND_CONNECTIONS must be at least 1")
    dkim = [config[k] for k in ("DKIM_DOMAIN", "DKIM_SELECTOR", "DKIM_KEY_FILE")]
    if any(dkim) and not all(dkim):
        raise ConfigError("set all of NEWSLETTER_DKIM_DOMAIN, _SELECTOR and _KEY_FILE, or none")
    if all(dkim) and not os.access(config["DKIM_KEY_FILE"], os.R_OK):
        raise ConfigError(f"NEWSLETTER_DKIM_KEY_FILE {config['DKIM_KEY_FILE']} cannot be read")
    config["WEBHOOK_URLS"] = webhook_urls(config["WEBHOOK_URLS"])
    if config["WEBHOOK_TIMEOUT"] <= 0:
        raise ConfigError("NEWSLETTER_WEBHOOK_TIMEOUT must be more than 0 seconds")
    if config["WEBHOOK_URLS"] and not config["WEBHOOK_SECRET"]:
        raise ConfigError("NEWSLETTER_WEBHOOK_URLS needs NEWSLETTER_WEBHOOK_SECRET to sign with")
    if config["WEBHOOK_SECRET"]:
        signer(config["WEBHOOK_SECRET"])  # checks it
    if not str(config["PUBLIC_URL"]).startswith(("http://", "https://")):
        raise ConfigError(
            f"NEWSLETTER_PUBLIC_URL must start with https://, not {config['PUBLIC_URL']!r}"
        )


def webhook_urls(value: Any) -> tuple[str, ...]:
    """The webhook receivers: text with URLs separated by spaces or commas, or a list
    (``instance/config.py``, or JSON in the environment); each must be http(s)."""
    if isinstance(value, tuple):
        return value  # checked already (a second app from the same config)
    if isinstance(value, list):
        value = " ".join(str(url) for url in value)
    urls = tuple(dict.fromkeys((value or "").replace(",", " ").split()))
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"NEWSLETTER_WEBHOOK_URLS: {url!r} is not an http(s) URL")
        if parts.username is not None:  # the signature is the credential; logs show URLs
            raise ConfigError(
                f"NEWSLETTER_WEBHOOK_URLS: {parts.hostname}: no user:password@ in the URL"
            )
    return urls


def signer(secret: str) -> Webhook:
    """The Standard Webhooks signer for ``secret`` (``whsec_`` and base64 of at least
    16 bytes), or ConfigError saying what is wrong with it."""
    key = secret.removeprefix("whsec_")
    try:
        raw = base64.b64decode(key + "=" * (-len(key) % 4), validate=True)
    except ValueError:  # binascii.Error
        raw = b""
    if len(raw) < 16:
        raise ConfigError(
            "NEWSLETTER_WEBHOOK_SECRET must be whsec_ and the base64 of 16 bytes or more "
            "(newsletter webhooks secret makes one)"
        )
    return Webhook(raw)


def _typed(key: str, value: Any, default: object) -> object:
    """``value`` as the type of ``default``.

    Environment values arrive parsed as JSON (``from_prefixed_env``), so an all-digit
    secret or password is an int by then: text settings turn it back into text.
    """
    if value is None:
        if default is None:
            return None
        raise ConfigError(f"NEWSLETTER_{key} must be set")
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if str(value).strip().lower() in TRUE:
            return True
        if str(value).strip().lower() in FALSE:
            return False
        raise ConfigError(f"NEWSLETTER_{key} must be true or false, not {value!r}")
    if isinstance(default, int | float):
        kind, name = (int, "a whole number") if isinstance(default, int) else (float, "a number")
        if isinstance(value, bool):
            raise ConfigError(f"NEWSLETTER_{key} must be {name}, not {value!r}")
        try:
            number = kind(value)
        except (TypeError, ValueError):
            raise ConfigError(f"NEWSLETTER_{key} must be {name}, not {value!r}") from None
        if kind is int and isinstance(value, float) and value != number:
            raise ConfigError(f"NEWSLETTER_{key} must be a whole number, not {value!r}")
        if number < 0:
            raise ConfigError(f"NEWSLETTER_{key} must not be negative")
        return number
    if isinstance(value, dict | list) and key != "WEBHOOK_URLS":
        raise ConfigError(f"NEWSLETTER_{key} must be text, not {value!r}")
    return str(value)


def instance_secret_key(instance: Path) -> str:
    """Return the installation's secret key, creating ``secret_key`` (mode 0600) once.

    The key is written to a temporary file and hard-linked into place, so that two
    workers starting together agree on one key and nobody reads a half-written file.
    """
    path = instance / "secret_key"
    private_folder(instance)  # the key signs every link
    if not path.exists():
        tmp = instance / f".secret_key.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(48) + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process won the race; use its key
        finally:
            tmp.unlink()
    key = path.read_text().strip()
    if not key:
        raise ConfigError(f"{path} is empty; delete it to generate a new key")
    return key
