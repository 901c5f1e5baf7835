"""Configuration order: defaults, instance/config.py, NEWSLETTER_* variables, test mapping."""

import pytest

from tests.helpers import confirm_path, make_app, subscribe
from webapp import create_app
from webapp.config import ConfigError


def test_defaults(tmp_path):
    app = create_app({"INSTANCE_PATH": tmp_path})
    assert app.config["MAIL_BACKEND"] == "file"
    assert app.config["PUBLIC_URL"] == "http://127.0.0.1:5000"
    assert app.config["DATABASE_URL"] == f"sqlite:///{tmp_path / 'newsletter.db'}"
    assert app.config["OUTBOX_PATH"] == str(tmp_path / "outbox")
    assert app.config["CONFIRM_MAX_AGE"] == 7 * 86400
    assert app.config["CONFIRM_COOLDOWN"] == 600


def test_order_is_defaults_then_file_then_environment_then_tests(tmp_path, monkeypatch):
    (tmp_path / "config.py").write_text(
        'PUBLIC_URL = "https://from-file.newsroom.org/"\nSITE_NAME = "From file"\n'
        'SMTP_HOST = "file-relay"\n'
    )
    monkeypatch.setenv("NEWSLETTER_INSTANCE_PATH", str(tmp_path))
    monkeypatch.setenv("NEWSLETTER_SITE_NAME", "From environment")
    monkeypatch.setenv("NEWSLETTER_SMTP_HOST", "env-relay")
    monkeypatch.setenv("NEWSLETTER_SMTP_PASSWORD", "1234")  # JSON-parsed to int by Flask
    app = create_app({"SMTP_HOST": "test-relay"})
    assert app.instance_path == str(tmp_path)
    assert app.config["PUBLIC_URL"] == "https://from-file.newsroom.org"  # trailing / dropped
    assert app.config["SITE_NAME"] == "From environment"
    assert app.config["SMTP_HOST"] == "test-relay"
    assert app.config["SMTP_PASSWORD"] == "1234"


def test_each_setting_takes_the_type_of_its_default(tmp_path, monkeypatch):
    # Environment values arrive parsed as JSON: digits become numbers, true a bool.
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "20261125")
    monkeypatch.setenv("NEWSLETTER_SEND_RATE", "50")
    monkeypatch.setenv("NEWSLETTER_SEND_CONNECTIONS", "2")
    monkeypatch.setenv("NEWSLETTER_OUTBOX_WORKER", "false")
    monkeypatch.setenv("NEWSLETTER_SMTP_USERNAME", "2026")
    config = create_app({"INSTANCE_PATH": tmp_path}).config
    assert config["SECRET_KEY"] == "20261125"
    assert config["SEND_RATE"] == 50.0 and isinstance(config["SEND_RATE"], float)
    assert config["SEND_CONNECTIONS"] == 2 and isinstance(config["SEND_CONNECTIONS"], int)
    assert config["OUTBOX_WORKER"] is False
    assert config["SMTP_USERNAME"] == "2026"


def test_an_all_digit_secret_key_signs_links_for_sign_ups(tmp_path, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET_KEY", "12345678901234567890")
    app = make_app(tmp_path)
    assert app.config["SECRET_KEY"] == "12345678901234567890"
    assert subscribe(app.test_client(), json=True).json["ok"] is True
    assert confirm_path(app).startswith("/confirm/")


def test_secret_key_is_generated_once_and_kept(tmp_path):
    first = create_app({"INSTANCE_PATH": tmp_path}).config["SECRET_KEY"]
    second = create_app({"INSTANCE_PATH": tmp_path}).config["SECRET_KEY"]
    assert first == second and len(first) >= 40
    assert (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["secret_key"]  # no temporary left


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"MAIL_BACKEND": "pigeon"}, "NEWSLETTER_MAIL_BACKEND must be one of file, smtp"),
        ({"SMTP_SECURITY": "tls"}, "NEWSLETTER_SMTP_SECURITY must be one of none, starttls, ssl"),
        ({"SMTP_PORT": "twenty-five"}, "NEWSLETTER_SMTP_PORT must be a whole number"),
        ({"PUBLIC_URL": "newsroom.org"}, "NEWSLETTER_PUBLIC_URL must start with"),
        ({"SEND_RATE": "fast"}, "NEWSLETTER_SEND_RATE must be a number"),
        ({"SEND_RATE": -1}, "NEWSLETTER_SEND_RATE must not be negative"),
        ({"OUTBOX_WORKER": "maybe"}, "NEWSLETTER_OUTBOX_WORKER must be true or false"),
        ({"SIGNUP_WORK": "cron"}, "NEWSLETTER_SIGNUP_WORK must be one of server, worker"),
        ({"CONFIRM_COOLDOWN": 1.5}, "NEWSLETTER_CONFIRM_COOLDOWN must be a whole number"),
        ({"SITE_NAME": ["a"]}, "NEWSLETTER_SITE_NAME must be text"),
        ({"HOOKS_SES_URL": "https://sns\\.(["}, "NEWSLETTER_HOOKS_SES_URL is not a regular"),
        ({"HOOKS_SENDGRID_PUBLIC_KEY": "bm90IGEga2V5"}, "NEWSLETTER_HOOKS_SENDGRID_PUBLIC_KEY"),
        ({"HOOKS_POSTMARK_USERNAME": "postmark"}, "set both NEWSLETTER_HOOKS_POSTMARK_USERNAME"),
        ({"SUBSCRIBE_LIMITS": "20 per minit"}, "NEWSLETTER_SUBSCRIBE_LIMITS: '20 per minit' is"),
        ({"SUBSCRIBE_ADDRESS_LIMITS": "ten/hour"}, "NEWSLETTER_SUBSCRIBE_ADDRESS_LIMITS: 'ten"),
        ({"RATELIMIT_STORAGE_URI": "pigeon://x"}, "NEWSLETTER_RATELIMIT_STORAGE_URI: unknown"),
    ],
)
def test_bad_settings_are_refused_with_a_reason(tmp_path, setting, message):
    with pytest.raises(ConfigError, match=message):
        create_app({"INSTANCE_PATH": tmp_path, **setting})
