"""Charts as inline SVG, drawn at build time from the committed history: no script, no request, and a text
alternative beside each (a table of the same numbers). Pure: numbers in, markup out.

Every label is escaped; the charts are sized by a ``viewBox`` and scale to the column's width.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

WIDTH, HEIGHT = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 14, 40  # the plot's margins in viewBox units
COLOURS = ("#3949ab", "#c62828", "#2e7d32", "#ef6c00", "#6a1b9a", "#00838f")


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _ticks(top: int) -> list[int]:
    """Round values from 0 to the first at or above ``top``: at most six (steps of 1, 2 or 5 times 10^k)."""
    if top <= 0:
        return [0]
    magnitude = 1
    while True:
        for m in (1, 2, 5):
            step = m * magnitude
            count = -(-top // step)  # steps to reach top, rounded up
            if count <= 5:
                return [i * step for i in range(count + 1)]
        magnitude *= 10


def _frame(chart_id: str, title: str, summary: str, top: int, labels: Sequence[str]) -> list[str]:
    """The SVG's opening, its accessible name and description, the y grid and the x labels (every n-th)."""
    ticks = _ticks(top)
    scale = ticks[-1] or 1
    plot_h = HEIGHT - TOP - BOTTOM
    parts = [
        f'<svg class="cpl-chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="{chart_id}-title {chart_id}-desc" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{chart_id}-title">{_esc(title)}</title><desc id="{chart_id}-desc">{_esc(summary)}</desc>',
    ]
    for t in ticks:
        y = TOP + plot_h - plot_h * t / scale
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" fill="#444">{t:,}</text>'
        )
    every = max(1, len(labels) // 8)
    step = (WIDTH - LEFT - RIGHT) / max(len(labels), 1)
    for i, label in enumerate(labels):
        if i % every == 0 or i == len(labels) - 1:
            x = LEFT + step * (i + 0.5)
            parts.append(
                f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle" font-size="11" fill="#444">'
                f"{_esc(label)}</text>"
            )
    return parts


def bar_chart(chart_id: str, title: str, points: Sequence[tuple[str, int]], unit: str) -> str:
    """One bar per labelled value (e.g. approvals per month), with a table of the same values."""
    labels = [label for label, _ in points]
    top = max((v for _, v in points), default=0)
    summary = f"{title}: " + (", ".join(f"{label} {v:,} {unit}" for label, v in points) or "no data yet")
    parts = _frame(chart_id, title, summary, top, labels)
    scale = _ticks(top)[-1] or 1
    plot_h = HEIGHT - TOP - BOTTOM
    step = (WIDTH - LEFT - RIGHT) / max(len(points), 1)
    for i, (label, v) in enumerate(points):
        h = plot_h * v / scale
        parts.append(
            f'<rect x="{LEFT + step * i + step * 0.15:.1f}" y="{TOP + plot_h - h:.1f}" width="{step * 0.7:.1f}" '
            f'height="{h:.1f}" fill="{COLOURS[0]}"><title>{_esc(label)}: {v:,} {_esc(unit)}</title></rect>'
        )
    parts.append("</svg>")
    return _figure(title, "".join(parts), ["", unit], [[label, f"{v:,}"] for label, v in points])


def line_chart(chart_id: str, title: str, labels: Sequence[str], series: Mapping[str, Sequence[int]], unit: str) -> str:
    """One line per series over the same labels (e.g. log size by month, revocations per issuer), with a
    legend and a table of the same values."""
    top = max((v for values in series.values() for v in values), default=0)
    summary = f"{title}: " + (
        "; ".join(f"{name} {values[-1]:,} {unit} at {labels[-1]}" for name, values in series.items() if values)
        or "no data yet"
    )
    parts = _frame(chart_id, title, summary, top, labels)
    scale = _ticks(top)[-1] or 1
    plot_h = HEIGHT - TOP - BOTTOM
    step = (WIDTH - LEFT - RIGHT) / max(len(labels), 1)
    for n, (name, values) in enumerate(series.items()):
        colour = COLOURS[n % len(COLOURS)]
        points = " ".join(
            f"{LEFT + step * (i + 0.5):.1f},{TOP + plot_h - plot_h * v / scale:.1f}" for i, v in enumerate(values)
        )
        parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for i, v in enumerate(values):  # a dot per value: one month alone is still seen
            parts.append(
                f'<circle cx="{LEFT + step * (i + 0.5):.1f}" cy="{TOP + plot_h - plot_h * v / scale:.1f}" r="3" '
                f'fill="{colour}"><title>{_esc(name)}, {_esc(labels[i])}: {v:,} {_esc(unit)}</title></circle>'
            )
        parts.append(
            f'<text x="{LEFT + 8}" y="{TOP + 14 * (n + 1)}" font-size="11" fill="{colour}">{_esc(name)}</text>'
        )
    parts.append("</svg>")
    rows = [[label, *(f"{values[i]:,}" for values in series.values())] for i, label in enumerate(labels)]
    return _figure(title, "".join(parts), ["", *series], rows)


def _figure(title: str, svg: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """The chart and, folded under it, the same numbers as a table (the text alternative)."""
    head = "".join(f'<th scope="col">{_esc(h)}</th>' for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return (
        f'\n<figure class="cpl-figure">{svg}<figcaption>{_esc(title)}</figcaption>'
        f'<details><summary>The numbers</summary><table class="cpl-numbers"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></details></figure>\n"
    )
