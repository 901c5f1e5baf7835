"""``newsletter digest report`` (one issue's results) and ``newsletter report`` (a
self-contained HTML file with the lists' growth and the issues side by side)."""

import json
from datetime import datetime
from pathlib import Path

import click
from flask import Flask, current_app, render_template
from flask.cli import with_appcontext
from sqlalchemy import select

from ..commands import ISSUE_NUMBER, Since, StaffCommand, issue_arg, newsletter_arg
from ..db import session_factory, utcnow
from ..models import Issue, Newsletter
from .clicks import fold_old_clicks
from .growth import REASONS, growth
from .numbers import OPENS_CAVEAT, issue_numbers


def init_app(app: Flask) -> None:
    """Attach ``report`` (``issues/`` attaches ``digest report`` to its group)."""
    app.cli.add_command(report_command)


def _fold(session) -> None:
    # Reports count from what is kept: clicks past the keep window become totals first.
    fold_old_clicks(session, current_app.config["CLICK_KEEP_DAYS"])
    session.commit()


@click.command("report", cls=StaffCommand)
@click.argument("newsletter")
@click.argument("number", type=ISSUE_NUMBER)
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@with_appcontext
def digest_report(newsletter: str, number: int, fmt: str) -> None:
    """How one sent issue did: delivered, bounced, complained, unsubscribed, clicked.

    Example: newsletter digest report explaining-ukraine 3 --format json
    """
    with session_factory()() as session:
        _fold(session)
        issue = issue_arg(session, newsletter, number)
        numbers = issue_numbers(session, issue)
    if fmt == "json":
        click.echo(json.dumps(numbers, indent=2, ensure_ascii=False))
        return
    click.echo(_text(numbers))


def _text(n: dict) -> str:
    def pct(rate):
        return "" if rate is None else f"{100 * rate:6.1f}%"

    sent = n["sent_at"][:16].replace("T", " ") + " UTC" if n["sent_at"] else "not sent"
    lines = [f"{n['newsletter']} issue {n['number']}: {n['subject']}", f"sent {sent}", ""]
    rows = [
        ("recipients", n["recipients"], None),
        ("delivered", n["delivered"], n["rates"]["delivery"]),
        ("failed", n["failed"], None),
        ("bounced", n["bounced"], n["rates"]["bounce"]),
        ("refused", n["refused"], n["rates"]["refusal"]),
        ("complained", n["complained"], n["rates"]["complaint"]),
        ("unsubscribed", n["unsubscribed"], n["rates"]["unsubscribe"]),
        ("unique clickers", n["unique_clickers"], n["rates"]["click"]),
        ("clicks", n["clicks"], None),
    ]
    for label, count, rate in rows:
        lines.append(f"{label:<16}{count:>9,} {pct(rate)}".rstrip())
    if n["opens"] is None:
        lines.append(f"{'opens':<16}{'-':>9}  (open tracking off)")
    else:
        lines.append(f"{'opens':<16}{n['opens']:>9,} {pct(n['rates']['open'])}  (see below)")
    if n["bounces_by_reason"]:
        lines += ["", "Bounces by reason (the reader's address or mailbox):"]
        lines += [f"{count:>9,}  {reason}" for reason, count in n["bounces_by_reason"].items()]
    if n["refusals_by_domain"]:
        lines += ["", "Refused by the receiving system, by domain (about us, not the readers):"]
        for found in n["refusals_by_domain"]:
            reasons = ", ".join(f"{r} {c:,}" for r, c in found["reasons"].items())
            lines.append(
                f"{found['refused']:>9,}  {found['domain']} ({100 * found['share']:.1f} % of "
                f"its {found['readers']:,} readers): {reasons}"
            )
    if n["links"]:
        lines += ["", f"{'clicks':>7} {'clickers':>8}  link"]
        for link in sorted(n["links"], key=lambda link: -link["clicks"]):
            lines.append(f"{link['clicks']:>7,} {link['unique_clickers']:>8,}  {link['url']}")
    lines += ["", "Rates: delivered and bounced of recipients, the rest of delivered."]
    lines.append("Link scanners' fetches (HEAD, or every link within seconds) are not counted.")
    if n["opens"] is not None:
        lines.append(OPENS_CAVEAT)
    return "\n".join(lines)


@click.command("report", cls=StaffCommand)
@click.option("--newsletter", "slug", help="Only this newsletter (default: every one).")
@click.option("--since", type=Since(), help="From then: a date, a time or a span (90d).")
@click.option(
    "--html",
    "html_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the report here.",
)
@with_appcontext
def report_command(slug: str | None, since: datetime | None, html_file: Path) -> None:
    """One self-contained HTML file: each list's growth and why readers left, and the
    issues' rates side by side, charted.

    Example: newsletter report --since 90d --html report.html
    """
    try:
        from .charts import growth_chart, rates_chart
    except ImportError:  # the charts' one dependency is an extra
        raise click.ClickException(
            "the HTML report draws its charts with matplotlib, which is not installed: "
            "pip install 'newsletter[charts]'"
        ) from None

    with session_factory()() as session:
        _fold(session)
        newsletters = (
            [newsletter_arg(session, slug, "--newsletter")]
            if slug
            else list(session.scalars(select(Newsletter).order_by(Newsletter.position)))
        )
        sections = []
        for newsletter in newsletters:
            grown = growth(session, newsletter, since)
            query = select(Issue).where(
                Issue.newsletter_id == newsletter.id, Issue.sent_at.is_not(None)
            )
            if since is not None:
                query = query.where(Issue.sent_at >= since)
            issues = [
                issue_numbers(session, i) for i in session.scalars(query.order_by(Issue.number))
            ]
            section = {"newsletter": newsletter, "growth": grown, "issues": issues}
            section["growth_svg"] = growth_chart(
                "Readers mail can reach, and each day's joins and leaves",
                grown.days,
                grown.confirmed,
                grown.joined,
                grown.left,
            )
            if issues:
                section["rates_svg"] = rates_chart(
                    [f"No. {n['number']}" for n in issues],
                    [n["rates"]["delivery"] or 0 for n in issues],
                    {
                        name: [n["rates"][key] or 0 for n in issues]
                        for name, key in (
                            ("bounced", "bounce"),
                            ("complained", "complaint"),
                            ("unsubscribed", "unsubscribe"),
                            ("clicked", "click"),
                        )
                    },
                )
            sections.append(section)
        page = render_template(
            "report.html",
            sections=sections,
            since=since,
            made=utcnow(),
            reasons=REASONS,
            opens_caveat=OPENS_CAVEAT,
        )
    try:
        html_file.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise click.ClickException(f"cannot write {html_file}: {exc.strerror}") from None
    click.echo(f"Report of {len(sections)} newsletter(s) written to {html_file}.")
