"""The staff CLI: help with examples, idempotent set-up, CSV export, one-line errors."""

import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

from tests.helpers import ROOT, confirm_path, press_confirm, subscribe
from webapp.subscribers.export import EXPORT_COLUMNS

NEWSLETTER = str(Path(sys.executable).parent / "newsletter")


def run(tmp_path, *args, env=None):
    """The real console script, in a fresh process, with its instance under tmp_path."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    environ["NEWSLETTER_INSTANCE_PATH"] = str(tmp_path / "instance")
    environ.update(env or {})
    return subprocess.run(
        [NEWSLETTER, *args], cwd=ROOT, env=environ, capture_output=True, text=True, timeout=60
    )


def leaf_commands(group: click.Group, prefix=()):
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from leaf_commands(command, (*prefix, name))
        else:
            yield (*prefix, name)


def test_every_staff_command_has_help_with_an_example(app, runner):
    ours = [c for c in leaf_commands(app.cli) if c[0] not in ("run", "shell", "routes")]
    assert len(ours) >= 5
    for path in ours:
        result = runner.invoke(args=[*path, "--help"])
        assert result.exit_code == 0, path
        # The example runs this very command (settings may come first, as in a shell).
        example = rf"Example: (?:NEWSLETTER_\w+=\S+ )*newsletter {' '.join(path)}(?: |$)"
        assert re.search(example, " ".join(result.output.split())), (path, result.output)


def test_set_up_from_nothing_is_idempotent(tmp_path):
    first = run(tmp_path, "db", "upgrade")
    assert first.returncode == 0 and "migrated from empty" in first.stdout
    again = run(tmp_path, "db", "upgrade")
    assert again.returncode == 0 and "up to date" in again.stdout
    assert "3 created" in run(tmp_path, "seed").stdout  # the seeded catalog's newsletters
    assert "0 created, 0 updated, 3 unchanged" in run(tmp_path, "seed").stdout
    secret = tmp_path / "instance" / "secret_key"
    assert secret.stat().st_mode & 0o777 == 0o600


def test_seed_updates_changed_newsletters(tmp_path):
    run(tmp_path, "db", "upgrade")
    run(tmp_path, "seed")
    catalog = tmp_path / "catalog.toml"
    text = (ROOT / "seeds" / "newsletters.toml").read_text()
    catalog.write_text(text.replace('title = "Ukraine Daily"', 'title = "Ukraine This Morning"'))
    result = run(tmp_path, "seed", "--file", str(catalog))
    assert "0 created, 1 updated, 2 unchanged" in result.stdout


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "no such file"),
        ("[[newsletter]\nslug=", "not valid TOML"),
        ("title = 'x'", "no [[newsletter]] entries"),
        ("[[newsletter]]\nslug = 'Bad Slug'\ntitle = 'x'", "needs a slug"),
        ("[[newsletter]]\nslug = 'a'\ntitle = ''", "needs a title"),
        ("[[newsletter]]\nslug='a'\ntitle='x'\n[[newsletter]]\nslug='a'\ntitle='y'", "used twice"),
        ("[[newsletter]]\nslug='a'\ntitle='x'\nlanguage='xx'", "a.language must be one of en, uk"),
    ],
)
def test_bad_catalog_is_one_line_and_changes_nothing(tmp_path, content, reason):
    run(tmp_path, "db", "upgrade")
    catalog = tmp_path / "catalog.toml"
    if content is not None:
        catalog.write_text(content)
    result = run(tmp_path, "seed", "--file", str(catalog))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and reason in lines[0] and str(catalog) in lines[0]
    assert "3 created" in run(tmp_path, "seed").stdout  # nothing was half-loaded


def test_bad_configuration_is_one_line(tmp_path):
    result = run(tmp_path, "seed", env={"NEWSLETTER_MAIL_BACKEND": "pigeon"})
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "Error: configuration: NEWSLETTER_MAIL_BACKEND must be one of file, smtp, not 'pigeon'"
    )


def test_unmigrated_database_is_one_line(tmp_path):
    result = run(tmp_path, "seed")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "newsletter db upgrade" in lines[0]


def test_export_csv_shows_the_confirmed_subscription_with_its_consent(app, client, runner):
    subscribe(client)
    press_confirm(client, confirm_path(app))
    subscribe(client, email="other@newsroom.org", newsletter="ukraine-daily")
    result = runner.invoke(args=["subscribers", "export", "--format", "csv"])
    assert result.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert tuple(rows[0]) == EXPORT_COLUMNS
    first, second = rows
    assert first["email"] == "reader@newsroom.org"
    assert first["newsletter"] == "explaining-ukraine"
    assert first["status"] == "confirmed"
    assert first["subscribe_ip"] == first["confirm_ip"] == "127.0.0.1"
    assert first["subscribe_source"] == "/"
    assert first["subscribe_user_agent"].startswith("Werkzeug")
    assert first["confirm_user_agent"] == "Clicker/1.0"
    assert first["subscribe_how"] == "form" and first["since"] == first["confirmed_at"]
    for column in ("subscribed_at", "confirmed_at"):
        assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d.*\+00:00$", first[column])
    history = json.loads(first["history"])
    assert [event["event"] for event in history] == ["subscribed", "confirmed"]
    assert history[1]["user_agent"] == "Clicker/1.0"
    assert second["status"] == "pending" and second["confirmed_at"] == ""
    assert "Exported 2 subscriptions." in result.stderr


def test_export_json_and_filters(app, client, runner, tmp_path):
    subscribe(client)
    subscribe(client, email="other@newsroom.org", newsletter="ukraine-daily")
    out = tmp_path / "export.json"
    result = runner.invoke(
        args=[
            "subscribers",
            "export",
            "--format",
            "json",
            "--newsletter",
            "ukraine-daily",
            "--output",
            str(out),
        ]
    )
    assert result.exit_code == 0
    records = json.loads(out.read_text())
    assert [r["email"] for r in records] == ["other@newsroom.org"]
    empty = runner.invoke(
        args=["subscribers", "export", "--format", "json", "--status", "confirmed"]
    )
    assert json.loads(empty.stdout) == []


def test_export_of_an_unknown_newsletter_is_refused(runner):
    result = runner.invoke(args=["subscribers", "export", "--newsletter", "nope"])
    assert result.exit_code == 2
    assert "no newsletter 'nope'" in result.output
