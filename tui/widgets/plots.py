"""Small plots drawn as Rich text for the workbench and the Results view: the CI bar (a mean
and its 95% interval on the judge's scale) and its header, the Δ bar left or right of a zero
axis and its header, the filled bar and the per-value conformity chart (PICACO's held-out
evaluation), and the workbench's sparkline of the best reward per level (with its scale).
Numbers that are missing or damaged (a string, NaN) draw as an empty bar or "—", never raise.
"""
from __future__ import annotations

import math

from rich import box
from rich.table import Table
from rich.text import Text

from ..text import number, safe

BAR = 21                    # the CI bar's width (cells)
HALF = 10                   # the Δ plot: cells each side of the zero axis
TIE = 1e-9


def finite(value) -> float | None:
    """A finite number, or None (a bool, a string, NaN from a damaged verdict)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def interval(value) -> tuple[float, float] | None:
    """A (low, high) interval, or None when it is not two finite numbers in order."""
    ci = list(value) if isinstance(value, (list, tuple)) else []
    if len(ci) != 2:
        return None
    lo, hi = finite(ci[0]), finite(ci[1])
    if lo is None or hi is None or lo > hi:
        return None
    return lo, hi


def ci_bar(mean, ci, lo: float, hi: float, width: int = BAR) -> Text:
    """A mean and its CI on the scale lo..hi: `···├──●──┤·····`."""
    m = finite(mean)
    out = Text()
    if m is None:
        return Text("·" * width, style="dim")

    def pos(x: float) -> int:
        return int(round(max(0.0, min(1.0, (x - lo) / (hi - lo))) * (width - 1)))
    cells = ["·"] * width
    styles = ["dim"] * width
    bounds = interval(ci)
    if bounds is not None:
        a, b = pos(bounds[0]), pos(bounds[1])
        for i in range(a, b + 1):
            cells[i], styles[i] = "─", "cyan"
        if a == b:
            cells[a] = "│"
        else:
            cells[a], cells[b] = "├", "┤"
    cells[pos(m)], styles[pos(m)] = "●", "bold"
    for cell, style in zip(cells, styles):
        out.append(cell, style=style)
    return out


def scale_header(lo: float, hi: float, width: int = BAR) -> Text:
    """The bar column's header: the scale's ends at the bar's ends."""
    left, right = f"{lo:g}", f"{hi:g}"
    middle = " 95% CI "
    gap = width - len(left) - len(right)
    if gap >= len(middle) + 2:
        pad = gap - len(middle)
        text = left + "·" * (pad // 2) + middle + "·" * (pad - pad // 2) + right
    else:
        text = left + " " * max(1, gap) + right
    return Text(text)


def delta_bar(mean, ci, span: float, half: int = HALF) -> Text:
    """Δ as a bar left (worse, red) or right (better, green) of a zero axis, with its CI."""
    width = 2 * half + 1
    m = finite(mean)
    if m is None or span <= 0:
        return Text(" " * half + "│" + " " * half, style="dim")

    def pos(x: float) -> int:
        return half + int(round(max(-1.0, min(1.0, x / span)) * half))
    cells = [" "] * width
    styles = [""] * width
    bounds = interval(ci)
    if bounds is not None:
        a, b = pos(bounds[0]), pos(bounds[1])
        for i in range(a, b + 1):
            cells[i], styles[i] = "─", "dim"
    colour = "green" if m > TIE else "red" if m < -TIE else "yellow"
    end = pos(m)
    if end > half:
        for i in range(half + 1, end + 1):
            cells[i], styles[i] = "█", colour
    elif end < half:
        for i in range(end, half):
            cells[i], styles[i] = "█", colour
    if bounds is not None:
        for i, mark in ((pos(bounds[0]), "├"), (pos(bounds[1]), "┤")):
            if cells[i] != "█" and i != half:
                cells[i], styles[i] = mark, "bold"
    cells[half], styles[half] = "│", "bold"
    out = Text()
    for cell, style in zip(cells, styles):
        out.append(cell, style=style)
    return out


def delta_header(span: float, half: int = HALF) -> Text:
    left, right = f"−{span:.2g}", f"+{span:.2g}"
    width = 2 * half + 1
    text = list(left.ljust(half) + "0" + right.rjust(half))
    return Text("".join(text)[:width])


def bar(value: float | None, width: int = 20, top: float = 5) -> str:
    if not isinstance(value, (int, float)):
        return "—"
    filled = max(0.0, min(1.0, value / top)) * width
    return "█" * int(filled) + ("▌" if filled - int(filled) >= 0.5 else "")


class ConformityChart:
    """Per-value conformity (%) of the seed (root) and the final prompt on held-out prompts:
    a table whose bars take the width the pane leaves (5 to 20 cells each)."""

    def __init__(self, evaluation: dict):
        self.evaluation = evaluation

    def table(self, width: int) -> Table:
        evaluation = self.evaluation
        per_value = evaluation.get("per_value") if isinstance(evaluation.get("per_value"), dict) else {}
        names = [safe(name) for name in per_value]
        name_width = max([len(n.plain) for n in names] + [len("overall")])
        cells = max(5, min(20, (width - name_width - 2 * 7 - 6) // 2))
        table = Table(title=f"Held-out conformity per value (%, n = {evaluation.get('n')})",
                      title_justify="left", expand=True, box=box.SIMPLE_HEAD, show_edge=False)
        table.add_column("value", ratio=1)
        table.add_column("root", no_wrap=True)
        table.add_column("final", no_wrap=True)
        for name, pair in zip(names, per_value.values()):
            pair = pair if isinstance(pair, dict) else {}
            table.add_row(name, *[safe(f"{bar(pair.get(k), width=cells, top=100):<{cells + 1}}"
                                       f"{number(pair.get(k), '.1f')}") for k in ("root", "final")])
        if evaluation.get("root") is not None:
            table.add_row(Text("overall", style="bold"), safe(number(evaluation["root"], ".1f")),
                          safe(number(evaluation.get("final"), ".1f")))
        return table

    def __rich_console__(self, console, options):
        yield self.table(options.max_width)


def conformity_chart(evaluation: dict) -> ConformityChart:
    """Per-value conformity (%) of the seed (root) and the final prompt on held-out prompts."""
    return ConformityChart(evaluation)


def spark_values(snap: dict) -> list[float]:
    """The sparkline's data: the best reward per level (finite numbers only; none before
    the first level is scored)."""
    return [v for v in map(finite, snap.get("best_per_level") or []) if v is not None]


SPARKS = "▁▂▃▄▅▆▇█"


def spark_text(values: list, width: int = 12, label: str = "best") -> Text:
    """The best reward per level as a short sparkline with its scale: `best ▁▃▅█ 2.33–4.67`
    (the last `width` levels; one level: its value; none yet: `best —`)."""
    points = [v for v in (finite(x) for x in values) if v is not None][-max(1, width):]
    out = Text(f"{label} ", style="dim")
    if not points:
        out.append("—", style="dim")
        return out
    lo, hi = min(points), max(points)
    for v in points:
        level = 3 if hi - lo <= TIE else int(round((v - lo) / (hi - lo) * (len(SPARKS) - 1)))
        out.append(SPARKS[level], style="cyan")
    scale = f"{lo:.3g}" if hi - lo <= TIE else f"{lo:.3g}–{hi:.3g}"
    out.append(f" {scale}")
    return out
