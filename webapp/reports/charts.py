"""Charts for the report, drawn by matplotlib into inline SVG (no files beside the HTML,
no script): a list's growth over time, and issues' rates side by side.

This module (and matplotlib with it, the ``charts`` extra) is imported only when a report
is made: the web workers never load it.
"""

import io
from datetime import date

import matplotlib.dates as mdates
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

LEFT_COLOURS = {
    "link": "#d95f02",
    "one-click": "#e7298a",
    "mailto": "#7570b3",
    "complaint": "#a6761d",
    "bounce": "#666666",
    "other": "#bbbbbb",
}
RATE_COLOURS = {
    "bounced": "#666666",
    "complained": "#a6761d",
    "unsubscribed": "#d95f02",
    "clicked": "#1b9e77",
}


def _figure(width: float, height: float):
    figure = Figure(figsize=(width, height), layout="constrained")
    figure.set_facecolor("white")
    return figure


def _svg(figure) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg")
    text = buffer.getvalue()
    return text[text.index("<svg") :]  # inline: without the XML prologue and doctype


def growth_chart(
    title: str,
    days: list[date],
    confirmed: list[int],
    joined: list[int],
    left: dict[str, list[int]],
) -> str:
    """Confirmed readers over time above, each day's joins and leaves (by why) below."""
    figure = _figure(9, 5.2)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 2])
    top.plot(days, confirmed, color="#1b9e77", linewidth=2, label="confirmed")
    top.fill_between(days, confirmed, color="#1b9e77", alpha=0.12)
    top.set_ylabel("confirmed readers")
    top.set_title(title, loc="left", fontsize=11)
    top.grid(axis="y", alpha=0.3)
    top.set_ylim(0, max([*confirmed, 1]) * 1.1)
    for axes in (top, bottom):
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    bottom.bar(days, joined, color="#1b9e77", label="joined (confirmed)")
    below = [0] * len(days)
    for reason, counts in left.items():
        negative = [-n for n in counts]
        bottom.bar(
            days, negative, bottom=below, color=LEFT_COLOURS[reason], label=f"left: {reason}"
        )
        below = [b + n for b, n in zip(below, negative, strict=True)]
    bottom.axhline(0, color="black", linewidth=0.6)
    if not any(joined) and not any(map(any, left.values())):
        bottom.set_ylim(-1, 1)  # nothing happened: a flat day, not a scale of hundredths
    bottom.set_ylabel("per day")
    bottom.grid(axis="y", alpha=0.3)
    bottom.legend(loc="upper left", fontsize=8, ncols=4, frameon=False)
    bottom.xaxis.set_major_formatter(mdates.ConciseDateFormatter(bottom.xaxis.get_major_locator()))
    return _svg(figure)


def rates_chart(labels: list[str], delivered: list[float], rates: dict[str, list[float]]) -> str:
    """Each issue's delivery rate, then its bounce, complaint, unsubscribe and click
    rates as grouped bars, in per cent."""
    figure = _figure(9, 5.2)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[1, 2])
    positions = list(range(len(labels)))
    top.bar(positions, [100 * r for r in delivered], color="#1b9e77", width=0.6)
    top.set_ylabel("delivered %")
    top.set_ylim(0, 100)
    top.set_title("Issues side by side", loc="left", fontsize=11)
    top.grid(axis="y", alpha=0.3)
    width = 0.8 / max(len(rates), 1)
    for n, (name, values) in enumerate(rates.items()):
        shifted = [p - 0.4 + width * (n + 0.5) for p in positions]
        bottom.bar(
            shifted, [100 * v for v in values], width=width, color=RATE_COLOURS[name], label=name
        )
    bottom.set_ylabel("% of delivered (bounced: of recipients)")
    bottom.set_xticks(positions, labels, rotation=30, ha="right", fontsize=8)
    bottom.grid(axis="y", alpha=0.3)
    bottom.legend(loc="upper left", fontsize=8, ncols=4, frameon=False)
    return _svg(figure)
