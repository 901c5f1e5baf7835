"""The parts every staff command is made of: the command and group classes (one
``Error:`` line for whatever escapes a command), the NEWSLETTER and NUMBER arguments,
and the Duration and Since options. A leaf: it imports no feature, so each feature's
``cli.py`` stands on it and on nothing above."""

import os
import re
from datetime import UTC, datetime, timedelta

import click
from flask.cli import AppGroup
from sqlalchemy.exc import OperationalError, ProgrammingError, SQLAlchemyError
from sqlalchemy.orm import Session

from .catalog import NotInCatalog, find_issue, find_newsletter
from .db import utcnow
from .models import Issue, Newsletter

ISSUE_NUMBER = click.IntRange(1, 2**31 - 1)


class BugError(click.ClickException):
    """Something no input should cause: one line still, the traceback on request."""

    exit_code = 70  # EX_SOFTWARE


class StaffCommand(click.Command):
    """A staff command: whatever escapes it ends in one ``Error:`` line and a non-zero
    exit, run as ``newsletter`` or as ``flask --app webapp`` alike (Flask's CLI prints
    a traceback for anything but Click's own errors)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except SQLAlchemyError as exc:
            reason = _first_line(getattr(exc, "orig", None) or exc)
            if isinstance(exc, OperationalError | ProgrammingError):
                reason += " (is it migrated? run: newsletter db upgrade)"
            raise click.ClickException(f"database: {reason}") from None
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            raise click.ClickException(f"{where}{exc.strerror or _first_line(exc)}") from None
        except Exception as exc:
            if os.environ.get("NEWSLETTER_DEBUG"):
                raise
            raise BugError(
                f"unexpected {type(exc).__name__}: {_first_line(exc)} "
                "(NEWSLETTER_DEBUG=1 shows more)"
            ) from None


def _first_line(exc: object) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]


class StaffGroup(AppGroup):
    """A group of staff commands (see StaffCommand), each run in the app's context."""

    command_class = StaffCommand
    group_class = type  # subgroups are StaffGroups too


def newsletter_arg(session: Session, slug: str, param_hint: str = "NEWSLETTER") -> Newsletter:
    """The newsletter SLUG names, or a usage error naming the known slugs."""
    try:
        return find_newsletter(session, slug)
    except NotInCatalog as exc:
        raise click.BadParameter(str(exc), param_hint=param_hint) from None


def issue_arg(session: Session, slug: str, number: int) -> Issue:
    """Issue NUMBER of newsletter SLUG, or a usage error naming what is missing."""
    newsletter_arg(session, slug)
    try:
        return find_issue(session, slug, number)
    except NotInCatalog as exc:
        raise click.BadParameter(str(exc), param_hint="NUMBER") from None


class Duration(click.ParamType):
    """A span like 30m, 12h, 2d or 1w."""

    name = "duration"
    UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

    def convert(self, value, param, ctx) -> timedelta:
        if isinstance(value, timedelta):
            return value
        match = re.fullmatch(r"\s*(\d{1,9})\s*([smhdw])\s*", str(value))
        if not match:
            self.fail(f"{value!r} is not a duration like 30m, 12h, 2d or 1w", param, ctx)
        seconds = int(match[1]) * self.UNITS[match[2]]
        if seconds > 100 * 365 * 86400:
            self.fail(f"{value!r} is longer than a hundred years", param, ctx)
        return timedelta(seconds=seconds)


class Since(click.ParamType):
    """A date (2026-11-20), a time (2026-11-20T08:00) or a span back from now (2d)."""

    name = "since"

    def convert(self, value, param, ctx) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            return utcnow() - Duration().convert(value, param, ctx)
        except click.BadParameter:
            pass
        try:
            moment = datetime.fromisoformat(str(value))
        except ValueError:
            self.fail(f"{value!r} is not a date, a time or a span like 2d", param, ctx)
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
