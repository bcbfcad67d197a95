"""Charts drawn as SVG on the server: no script, no font or file fetched, the same input gives the same
bytes. Each chart is an ``<svg role="img">`` with a title and description; the numbers themselves are in
the accessible table the page puts beneath it. Marks carry ``class="mark"`` (points and bars), norms
``class="norm"``. Coordinates are written with one decimal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

PALETTE = ("#01689b", "#e17000", "#39870c", "#a90061", "#8fcae7", "#673327", "#42145f", "#ffb612")
WIDTH, HEIGHT = 720, 320
LEFT, RIGHT, TOP, BOTTOM = 64, 200, 24, 72
TICKS = 5


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float | None]  # one per x label; None = suppressed or not published


@dataclass(frozen=True)
class Norm:
    label: str
    value: float


def number(value: float | None, decimals: int = 0) -> str:
    """Dutch notation: thousands with '.', decimals with ','; None is '.' (geheim)."""
    if value is None:
        return "."
    text = f"{value:,.{decimals}f}"
    return text.replace(",", "\x00").replace(".", ",").replace("\x00", ".")


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    step = 10 ** (len(str(int(value))) - 1)
    for factor in (1, 2, 2.5, 5, 10):
        if value <= factor * step:
            return float(factor * step)
    return float(10 * step)


def _f(x: float) -> str:
    return f"{x:.1f}"


def _frame(chart_id: str, title: str, desc: str, body: list[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="{chart_id}" role="img" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" aria-labelledby="{chart_id}-t {chart_id}-d">'
        f'<title id="{chart_id}-t">{escape(title)}</title><desc id="{chart_id}-d">{escape(desc)}</desc>'
        + "".join(body)
        + "</svg>"
    )


def _axis(ymax: float, unit: str) -> list[str]:
    plot_h = HEIGHT - TOP - BOTTOM
    ticks = [ymax * k / TICKS for k in range(TICKS + 1)]
    decimals = 0 if all(float(t).is_integer() for t in ticks) else 1
    out = []
    for k, v in enumerate(ticks):
        y = TOP + plot_h - plot_h * k / TICKS
        out.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{_f(y)}" y2="{_f(y)}" />'
            f'<text class="tick" x="{LEFT - 6}" y="{_f(y + 4)}" text-anchor="end">'
            f"{number(v, decimals)}</text>"
        )
    out.append(f'<text class="unit" x="{LEFT - 6}" y="{TOP - 8}" text-anchor="end">{escape(unit)}</text>')
    return out


def _legend(series: Sequence[Series]) -> list[str]:
    """Swatch and name per series, right of the plot; long names wrap onto a second line."""
    out, y = [], TOP + 4
    for k, s in enumerate(series):
        words, lines = s.name.split(), [""]
        for w in words:
            if len(lines[-1]) + len(w) > 28 and lines[-1] and len(lines) < 2:
                lines.append("")
            lines[-1] = f"{lines[-1]} {w}".strip()
        colour = PALETTE[k % len(PALETTE)]
        out.append(f'<rect x="{WIDTH - RIGHT + 6}" y="{y}" width="10" height="10" fill="{colour}" />')
        for i, text in enumerate(lines):
            out.append(
                f'<text class="legend" x="{WIDTH - RIGHT + 20}" y="{y + 9 + 12 * i}">{escape(text)}</text>'
            )
        y += 12 * len(lines) + 6
    return out


def line_chart(
    chart_id: str,
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    unit: str = "",
    decimals: int = 0,
    norms: Sequence[Norm] = (),
) -> str:
    """Values over periods: a line per series, a point per published value, gaps where suppressed."""
    values = [v for s in series for v in s.values if v is not None] + [n.value for n in norms]
    ymax = _nice_max(max(values, default=0.0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    step = plot_w / max(len(labels), 1)

    def x(i: int) -> float:
        return LEFT + step * (i + 0.5)

    def y(v: float) -> float:
        return TOP + plot_h - plot_h * v / ymax

    body = _axis(ymax, unit)
    slanted = len(labels) > 4  # many periods: labels at an angle so they do not overlap
    for i, label in enumerate(labels):
        lx, ly = _f(x(i)), HEIGHT - BOTTOM + 16
        turn = f' transform="rotate(-35 {lx} {ly})"' if slanted else ""
        body.append(
            f'<text class="tick" x="{lx}" y="{ly}" text-anchor="{"end" if slanted else "middle"}"{turn}>'
            f"{escape(label)}</text>"
        )
    for n in norms:
        body.append(
            f'<line class="norm" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{_f(y(n.value))}" '
            f'y2="{_f(y(n.value))}" />'
            f'<text class="norm-label" x="{LEFT + 4}" y="{_f(y(n.value) - 4)}">{escape(n.label)}</text>'
        )
    for k, s in enumerate(series):
        colour = PALETTE[k % len(PALETTE)]
        run: list[str] = []
        for i, v in enumerate([*s.values, None]):
            if v is not None:
                run.append(f"{_f(x(i))},{_f(y(v))}")
            elif run:
                if len(run) > 1:
                    body.append(f'<polyline class="line" stroke="{colour}" points="{" ".join(run)}" />')
                run = []
        for i, v in enumerate(s.values):
            if v is not None:
                body.append(
                    f'<circle class="mark" cx="{_f(x(i))}" cy="{_f(y(v))}" r="4" fill="{colour}">'
                    f"<title>{escape(s.name)}, {escape(labels[i])}: {number(v, decimals)}</title></circle>"
                )
    body += _legend(series)
    desc = (
        f"Lijndiagram over {len(labels)} perioden, {len(series)} reeks(en); "
        "de cijfers staan in de tabel eronder."
    )
    return _frame(chart_id, title, desc, body)


def _wrapped(x: float, y: float, text: str, width: int = 34, anchor: str = "start") -> str:
    """A label on up to two lines (words kept whole), vertically centred on ``y``."""
    lines = [""]
    for word in text.split():
        if lines[-1] and len(lines[-1]) + len(word) >= width and len(lines) < 2:
            lines.append("")
        lines[-1] = f"{lines[-1]} {word}".strip()
    top = y - 6 * (len(lines) - 1)
    return "".join(
        f'<text class="legend" x="{_f(x)}" y="{_f(top + 12 * i)}" text-anchor="{anchor}">'
        f"{escape(line)}</text>"
        for i, line in enumerate(lines)
    )


def funnel_chart(chart_id: str, title: str, steps: Sequence[tuple[str, float | None]]) -> str:
    """A cohort through the chain: one bar per step, its share of the first step beside it."""
    first = steps[0][1] if steps and steps[0][1] else None
    bar_h = (HEIGHT - TOP - 16) / max(len(steps), 1)
    left, plot_w = 250, WIDTH - 250 - 120
    body = []
    for i, (label, v) in enumerate(steps):
        y = TOP + i * bar_h
        body.append(_wrapped(6, y + bar_h / 2 + 4, label))
        if v is None:
            body.append(f'<text class="tick" x="{left}" y="{_f(y + bar_h / 2 + 4)}">. (geheim)</text>')
            continue
        share = f" ({number(100 * v / first, 0)}%)" if first else ""
        w = plot_w * (v / first) if first else 0.0
        mid = _f(y + bar_h / 2 + 4)
        body.append(
            f'<rect class="mark" x="{left}" y="{_f(y + 4)}" width="{_f(max(w, 1.0))}" '
            f'height="{_f(bar_h - 8)}" fill="{PALETTE[0]}"><title>{escape(label)}: {number(v)}</title></rect>'
            f'<text class="value" x="{_f(left + 4 + w)}" y="{mid}">{number(v)}{share}</text>'
        )
    desc = f"Trechter over {len(steps)} stappen; de cijfers staan in de tabel eronder."
    return _frame(chart_id, title, desc, body)


def bar_chart(
    chart_id: str,
    title: str,
    categories: Sequence[str],
    series: Sequence[Series],
    *,
    unit: str = "",
    decimals: int = 0,
) -> str:
    """Grouped horizontal bars: a group per category, a bar per series; '.' where suppressed."""
    values = [v for s in series for v in s.values if v is not None]
    vmax = _nice_max(max(values, default=0.0))
    left, plot_w = 200, WIDTH - 200 - RIGHT
    group_h = (HEIGHT - TOP - 8) / max(len(categories), 1)
    bar_h = max(min((group_h - 6) / max(len(series), 1), 14.0), 2.0)
    body = [f'<text class="unit" x="{left}" y="{TOP - 8}">{escape(unit)}</text>']
    for i, category in enumerate(categories):
        y0 = TOP + i * group_h
        body.append(_wrapped(left - 6, y0 + group_h / 2 + 4, category, 30, "end"))
        for k, s in enumerate(series):
            v, y = s.values[i], y0 + 3 + k * bar_h
            if v is None:
                body.append(f'<text class="tick" x="{left + 2}" y="{_f(y + bar_h - 1)}">.</text>')
                continue
            body.append(
                f'<rect class="mark" x="{left}" y="{_f(y)}" width="{_f(max(plot_w * v / vmax, 1.0))}" '
                f'height="{_f(bar_h - 1)}" fill="{PALETTE[k % len(PALETTE)]}">'
                f"<title>{escape(category)}, {escape(s.name)}: {number(v, decimals)}</title></rect>"
            )
    body += _legend(series)
    desc = (
        f"Staafdiagram, {len(categories)} groepen, {len(series)} reeks(en); "
        "de cijfers staan in de tabel eronder."
    )
    return _frame(chart_id, title, desc, body)
