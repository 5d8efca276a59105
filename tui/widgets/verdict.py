"""A held-out verdict drawn for the Results view (DESIGN §10), as Rich renderables.

The functions take what `engine.evaluation.Evaluation.result()` returns (plus the stored
evaluation's or session's facts: id, name, judge model, data, calls, cost) and draw:

    Summary   the header facts; the prompts table (mean, 95% CI drawn as a bar with whiskers
              on the judge's scale, n, tokens, errors, the mean per metric); the paired
              difference(s) to the baseline with wins / ties / losses; the per-category
              table with a plot of Δ per category (a bar left or right of a zero axis, with
              its CI); the worst regressions; the prompts' texts.
    Items     the items, all or only those that got worse / better for the compared prompt
              (relative to the baseline, the first prompt); one item's query and the two
              prompts' answers side by side with their scores and rationales; one answer's
              full text.

Every text of a verdict (ids, names, labels, categories, queries, answers, rationales,
errors) came from a file or a model: it is shown through `tui.text.safe` (plain text, escapes
removed), never as markup, and numbers through `number`, so a damaged verdict (a string where
a number was expected, a list where a table was) shows as text or "—" instead of raising.
The screens that show them are in `tui.screens.results`.
"""
from __future__ import annotations

import math

from rich import box
from rich.console import Group, NewLine
from rich.table import Table
from rich.text import Text

from ..text import head, number, one_line, safe
from .plots import BAR, HALF, TIE, ci_bar, delta_bar, delta_header, scale_header
from .plots import finite as _f
from .plots import interval as _ci

FULL_TEXT_CHARS = 200_000   # the full-text view shows this much of one answer
DETAIL_CHARS = 4_000        # the side-by-side view shows this much of each answer


# ----------------------------------------------------------------------------- values

def _d(value) -> dict:
    return value if isinstance(value, dict) else {}


def _l(value) -> list:
    return value if isinstance(value, list) else []


def _ci_text(value, signed: bool = False) -> str:
    ci = _ci(value)
    if ci is None:
        return ""
    spec = "+.2f" if signed else ".2f"
    return f"[{format(ci[0], spec)}, {format(ci[1], spec)}]"


def _num(value, spec: str = ".2f") -> str:
    """A number; "—" when missing; anything else as text (escapes removed)."""
    f = _f(value)
    if f is not None:
        return format(f, spec)
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return number(value, spec)


def _label(value, width: int | None = None) -> str:
    text = one_line(value, 10_000) if value is not None else ""
    if width is not None and len(text) > width:
        text = text[: width - 1] + "…"
    return text


def _cut(value, limit: int) -> tuple[str, int]:
    """Text cut to `limit` characters, and its full length."""
    text = "" if value is None else str(value)
    return (text if len(text) <= limit else text[:limit]), len(text)


def scale_of(verdict: dict) -> tuple[float, float, str]:
    scale = _d(verdict.get("scale"))
    lo, hi = _f(scale.get("lo")), _f(scale.get("hi"))
    if lo is None or hi is None or hi <= lo:
        lo, hi = (0.0, 1.0) if verdict.get("judge") in ("accuracy", "pairwise") else (1.0, 5.0)
    return lo, hi, _label(scale.get("unit")) or "score"


def prompts_of(verdict: dict) -> list[dict]:
    return [p for p in _l(verdict.get("prompts")) if isinstance(p, dict)] or [{}]


def prompt_label(verdict: dict, index: int) -> str:
    prompts = prompts_of(verdict)
    if 0 <= index < len(prompts):
        label = _label(prompts[index].get("label"))
        if label:
            return label
    return f"prompt {index + 1}"


def pairwise(verdict: dict) -> bool:
    return verdict.get("judge") == "pairwise"


# ----------------------------------------------------------------------------- drawings

def _word(mean, ci, centre: float = 0.0) -> Text:
    bounds = _ci(ci)
    if _f(mean) is None:
        return Text("")
    if bounds is None:
        return Text("\n  → no CI", style="dim")
    if bounds[0] > centre + TIE:
        return Text(f"\n  → better: the 95% CI is above {centre:g}", style="bold green")
    if bounds[1] < centre - TIE:
        return Text(f"\n  → worse: the 95% CI is below {centre:g}", style="bold red")
    return Text(f"\n  → no clear difference: the 95% CI includes {centre:g}", style="yellow")


# ----------------------------------------------------------------------------- summary

def progress(verdict: dict) -> tuple[int, int]:
    """(samples done, samples planned) from the items."""
    prompts = len(prompts_of(verdict))
    k = _f(verdict.get("samples")) or 1
    items = [i for i in _l(verdict.get("items")) if isinstance(i, dict)]
    n = _f(verdict.get("n"))
    total = int((n if n is not None else len(items)) * k * prompts)
    done = 0
    for item in items:
        for result in _l(item.get("results")):
            done += sum(1 for s in _l(_d(result).get("samples"))
                        if isinstance(s, dict) and not s.get("error"))
    return done, total


def header(verdict: dict, kind: str = "evaluation") -> Text:
    """Who measured what: id and name, judge and its model, source, n × k, status, cost."""
    out = Text("Results · ", style="bold")
    ident = _label(verdict.get("evaluation")) or "?"
    if kind == "session":
        out.append_text(safe(f"held-out evaluation of session {ident}", style="bold"))
    else:
        out.append_text(safe(f"evaluation {ident}", style="bold"))
    name = _label(verdict.get("name"), 60)
    if name:
        out.append_text(safe(f" “{name}”", style="bold"))
    labels = [prompt_label(verdict, i) for i in range(len(prompts_of(verdict)))]
    out.append_text(safe("   " + " vs ".join(_label(lbl, 30) for lbl in labels), style="dim"))
    out.append("\n")
    lo, hi, unit = scale_of(verdict)
    judge = _label(verdict.get("judge")) or "?"
    model = _label(verdict.get("judge_model"))
    data = _d(verdict.get("data"))
    source = _label(data.get("source")) or "—"
    facts = [f"judge {judge}" + (f" ({model})" if model else ""), f"source {source}",
             f"{_num(verdict.get('n'), 'g')} items × {_num(verdict.get('samples'), 'g')} "
             f"sample{'s' if verdict.get('samples') != 1 else ''}",
             unit]
    out.append_text(safe(" · ".join(facts)))
    out.append("\n")
    status = verdict.get("status")
    if status == "done":
        out.append("done", style="green")
    else:
        done, total = progress(verdict)
        out.append_text(safe(f"{_label(status) or 'unknown'}: partial result "
                             f"({done} of {total} samples)", style="bold yellow"))
    cost = _f(verdict.get("cost"))
    whole = " (the whole session)" if kind == "session" else ""
    out.append_text(safe(" · cost " + (f"${cost:.4f}" if cost is not None else "—") + whole))
    calls = _d(verdict.get("calls"))
    if calls:
        out.append_text(safe(" · calls " + ", ".join(f"{_label(r)} {_num(n, 'g')}"
                                                     for r, n in calls.items())))
    return out


def metric_names(verdict: dict) -> list[str]:
    """The metrics some prompt has a mean for, in the verdict's order."""
    names: list[str] = []
    for m in _l(verdict.get("metrics")):
        if isinstance(m, str) and m not in names:
            names.append(m)
    have = [m for p in prompts_of(verdict) for m in _d(p.get("per_metric"))]
    for m in have:
        if m not in names:
            names.append(m)
    return [m for m in names if m in have]


def _metric_mean(prompt: dict, metric: str) -> str:
    entry = _d(prompt.get("per_metric")).get(metric)
    if isinstance(entry, dict):
        return _num(entry.get("mean"))
    return _num(entry)


def wide_enough(verdict: dict, width: int) -> bool:
    """Whether the metric columns fit in the prompts table."""
    return width >= 78 + 9 * len(metric_names(verdict))


def prompts_table(verdict: dict, with_metrics: bool) -> Table:
    lo, hi, unit = scale_of(verdict)
    title = ("Win rate against the baseline (the first prompt)" if pairwise(verdict)
             else f"Prompts ({unit}; the first is the baseline)")
    table = Table(title=safe(title), title_justify="left", title_style="bold", expand=True,
                  box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1))
    table.add_column("prompt", ratio=1, min_width=8, overflow="fold")
    table.add_column("mean", justify="right", no_wrap=True)
    table.add_column("95% CI", no_wrap=True)
    table.add_column(scale_header(lo, hi), no_wrap=True, width=BAR)
    table.add_column("n", justify="right", no_wrap=True)
    table.add_column("tok", justify="right", no_wrap=True)
    table.add_column("err", justify="right", no_wrap=True)
    metrics = metric_names(verdict) if with_metrics else []
    for m in metrics:
        table.add_column(safe(m), justify="right", max_width=11, overflow="fold")
    for i, p in enumerate(prompts_of(verdict)):
        label = prompt_label(verdict, i)
        errors = p.get("errors")
        mean = p.get("mean")
        table.add_row(safe(label), safe(_num(mean)), safe(_ci_text(p.get("ci"))),
                      ci_bar(mean, p.get("ci"), lo, hi) if not (pairwise(verdict) and i == 0)
                      else safe("baseline", style="dim"),
                      safe(_num(p.get("n"), "g")), safe(_num(p.get("tokens"), "g")),
                      safe(_num(errors, "g"), style="red" if _f(errors) else ""),
                      *[safe(_metric_mean(p, m)) for m in metrics])
    return table


def metrics_table(verdict: dict, compare: int) -> Table | None:
    """Metrics as rows, prompts as columns (for narrow screens), with Δ of the compared one."""
    metrics = metric_names(verdict)
    if not metrics:
        return None
    prompts = prompts_of(verdict)
    table = Table(title="Mean per metric", title_justify="left", title_style="bold", expand=True,
                  box=box.SIMPLE_HEAD, show_edge=False)
    table.add_column("metric", ratio=1, overflow="fold")
    for i in range(len(prompts)):
        table.add_column(safe(_label(prompt_label(verdict, i), 14)), justify="right",
                         overflow="fold")
    compared = len(prompts) > 1 and 0 < compare < len(prompts)
    if compared:
        table.add_column("Δ", justify="right", no_wrap=True)
    for m in metrics:
        row = [safe(m)] + [safe(_metric_mean(p, m)) for p in prompts]
        if compared:
            a = _f(_d(_d(prompts[0].get("per_metric")).get(m)).get("mean"))
            b = _f(_d(_d(prompts[compare].get("per_metric")).get(m)).get("mean"))
            if a is None or b is None:
                row.append(safe("—"))
            else:
                d = b - a
                row.append(safe(f"{d:+.2f}", style="green" if d > TIE else "red" if d < -TIE else ""))
        table.add_row(*row)
    return table


def delta_lines(verdict: dict) -> Text:
    """The paired difference(s) to the baseline: Δ mean [CI], wins / ties / losses."""
    out = Text()
    if pairwise(verdict):
        prompts = prompts_of(verdict)
        for i in range(1, len(prompts)):
            p = prompts[i]
            out.append_text(safe(f"win rate {prompt_label(verdict, i)} vs "
                                 f"{prompt_label(verdict, 0)}: ", style="bold"))
            out.append_text(safe(f"{_num(p.get('mean'))} {_ci_text(p.get('ci'))}   wins "
                                 f"{_num(p.get('wins'), 'g')} · ties {_num(p.get('ties'), 'g')}"
                                 f" · losses {_num(p.get('losses'), 'g')} (n {_num(p.get('n'), 'g')})"))
            out.append_text(_word(p.get("mean"), p.get("ci"), 0.5))
            out.append("\n")
    else:
        for d in _l(verdict.get("deltas")) or ([verdict["delta"]] if isinstance(
                verdict.get("delta"), dict) else []):
            d = _d(d)
            mean = _f(d.get("mean"))
            colour = "green" if mean is not None and mean > TIE else \
                "red" if mean is not None and mean < -TIE else ""
            out.append_text(safe(f"Δ {_label(d.get('label')) or '?'} − "
                                 f"{_label(d.get('baseline')) or '?'}: ", style="bold"))
            out.append_text(safe(_num(d.get("mean"), "+.3f"), style=f"bold {colour}".strip()))
            out.append_text(safe(f" {_ci_text(d.get('ci'), signed=True)}   wins "
                                 f"{_num(d.get('wins'), 'g')} · ties {_num(d.get('ties'), 'g')} · "
                                 f"losses {_num(d.get('losses'), 'g')} (n {_num(d.get('n'), 'g')})"))
            out.append_text(_word(d.get("mean"), d.get("ci")))
            out.append("\n")
    if not out.plain:
        out.append("one prompt: no difference to show\n", style="dim")
    out.rstrip()
    return out


def _category_delta(verdict: dict, entry: dict) -> tuple[float | None, tuple | None]:
    """Δ of one category (pairwise: the win rate − 0.5) and its CI."""
    if pairwise(verdict):
        prompts = _l(entry.get("prompts"))
        p = _d(prompts[1]) if len(prompts) > 1 else {}
        mean, ci = _f(p.get("mean")), _ci(p.get("ci"))
        if mean is None:
            return None, None
        return mean - 0.5, (ci[0] - 0.5, ci[1] - 0.5) if ci else None
    d = _d(entry.get("delta"))
    return _f(d.get("mean")), _ci(d.get("ci"))


def _overall_delta(verdict: dict) -> tuple[float | None, tuple | None, str]:
    if pairwise(verdict):
        prompts = prompts_of(verdict)
        p = prompts[1] if len(prompts) > 1 else {}
        mean, ci = _f(p.get("mean")), _ci(p.get("ci"))
        label = prompt_label(verdict, 1)
        if mean is None:
            return None, None, label
        return mean - 0.5, (ci[0] - 0.5, ci[1] - 0.5) if ci else None, label
    d = _d(verdict.get("delta"))
    return _f(d.get("mean")), _ci(d.get("ci")), _label(d.get("label")) or prompt_label(verdict, 1)


def category_table(verdict: dict, wide: bool = True):
    """The per-category means and the plot of Δ per category. Wide: one table; narrow: the
    means, then Δ with its CI and the plot (a Group of two tables)."""
    cats = {k: v for k, v in _d(verdict.get("per_category")).items()}
    if not cats:
        return None
    prompts = prompts_of(verdict)
    two = len(prompts) > 1
    overall, overall_ci, compared = _overall_delta(verdict)
    rows = []
    for name, entry in cats.items():
        entry = _d(entry)
        mean, ci = _category_delta(verdict, entry)
        rows.append((name, entry, mean, ci))
    span = 0.0
    for mean, ci in [(r[2], r[3]) for r in rows] + [(overall, overall_ci)]:
        for x in ([mean] if mean is not None else []) + (list(ci) if ci else []):
            span = max(span, abs(x))
    span = span or 1.0
    what = "win rate − 0.5" if pairwise(verdict) else "Δ"

    def means_table(title: Text) -> Table:
        table = Table(title=title, title_justify="left", title_style="bold", expand=True,
                      box=box.SIMPLE_HEAD, show_edge=False)
        table.add_column("category", ratio=1, min_width=8, overflow="fold")
        table.add_column("n", justify="right", no_wrap=True)
        for i in range(len(prompts)):
            table.add_column(safe(_label(prompt_label(verdict, i), 12)), justify="right",
                             overflow="fold")
        return table

    def plot_columns(table: Table) -> None:
        table.add_column(safe(what), justify="right", no_wrap=True)
        table.add_column(delta_header(span), no_wrap=True, width=2 * HALF + 1)

    def means(entry_prompts: list, bold: bool = False) -> list:
        return [safe(_num(_d(entry_prompts[i]).get("mean")) if i < len(entry_prompts) else "—",
                     style="bold" if bold else "") for i in range(len(prompts))]

    def delta_cells(mean, ci, bold: bool = False) -> list:
        ci_text = f" {_ci_text(list(ci), signed=True)}" if ci else ""
        return [safe(_num(mean, "+.2f") + ci_text, style="bold" if bold else ""),
                delta_bar(mean, ci, span)]

    plot_title = safe(f"{what} of {_label(compared, 30)} per category (bar: mean, ├─┤: 95% CI)")
    if not two:
        table = means_table(safe("Per category"))
        for name, entry, _, _ in rows:
            table.add_row(safe(name), safe(_num(entry.get("n"), "g")), *means(_l(entry.get("prompts"))))
        return table
    all_label = safe("(all items)", style="bold")
    n_all = safe(_num(verdict.get("n"), "g"))
    if wide:
        table = means_table(safe(f"Per category: means, and {what} of {_label(compared, 30)} "
                                 f"(bar: mean, ├─┤: 95% CI)"))
        plot_columns(table)
        table.add_row(all_label, n_all, *means(prompts, bold=True),
                      *delta_cells(overall, overall_ci, bold=True))
        for name, entry, mean, ci in rows:
            table.add_row(safe(name), safe(_num(entry.get("n"), "g")),
                          *means(_l(entry.get("prompts"))), *delta_cells(mean, ci))
        return table
    table = means_table(safe("Per category: means"))
    table.add_row(all_label, n_all, *means(prompts, bold=True))
    for name, entry, _, _ in rows:
        table.add_row(safe(name), safe(_num(entry.get("n"), "g")), *means(_l(entry.get("prompts"))))
    plot = Table(title=plot_title, title_justify="left", title_style="bold", expand=True,
                 box=box.SIMPLE_HEAD, show_edge=False)
    plot.add_column("category", ratio=1, min_width=8, overflow="fold")
    plot_columns(plot)
    plot.add_row(all_label, *delta_cells(overall, overall_ci, bold=True))
    for name, _, mean, ci in rows:
        plot.add_row(safe(name), *delta_cells(mean, ci))
    return Group(table, NewLine(), plot)


def regressions_table(verdict: dict, limit: int = 5) -> Table | None:
    regs = [r for r in _l(verdict.get("regressions")) if isinstance(r, dict)]
    if not regs:
        return None
    table = Table(title=safe(f"Worst regressions ({len(regs)}{'+' if len(regs) >= 10 else ''}; "
                             f"w on the Items tab lists them all)"),
                  title_justify="left", title_style="bold", expand=True, box=box.SIMPLE_HEAD, show_edge=False)
    table.add_column("item", no_wrap=True, max_width=12)
    table.add_column("prompt", max_width=14, overflow="ellipsis", no_wrap=True)
    table.add_column("score", no_wrap=True)
    table.add_column("query", ratio=1, overflow="ellipsis", no_wrap=True)
    for r in regs[:limit]:
        table.add_row(safe(_label(r.get("item"), 12)), safe(_label(r.get("prompt"), 14)),
                      safe(f"{_num(r.get('score_baseline'))} → {_num(r.get('score_prompt'))}",
                           style="red"),
                      safe(head(r.get("query"), 200)))
    return table


def prompt_texts(verdict: dict) -> Text:
    out = Text("Prompts' texts\n", style="bold")
    for i, p in enumerate(prompts_of(verdict)):
        out.append_text(safe(f"── {prompt_label(verdict, i)}", style="bold"))
        where = " ".join(x for x in (_label(p.get("session")), _label(p.get("node"))) if x)
        if where:
            out.append_text(safe(f"  ({where})", style="dim"))
        out.append("\n")
        text, total = _cut(p.get("text"), DETAIL_CHARS)
        out.append_text(safe(text or "(empty)"))
        if total > len(text):
            out.append(f"… ({total} characters)", style="dim")
        out.append("\n")
    out.rstrip()
    return out


SECTIONS = ("prompts", "deltas", "metrics", "categories", "regressions", "texts")


def sections(verdict: dict, width: int = 120, compare: int = 1) -> dict:
    """The Summary tab's parts, by name (None: nothing to show): the prompts table (with the
    metric columns when they fit in `width`, else the metrics as a table of their own), the
    paired differences, the per-category table and plot, the worst regressions, the texts."""
    def part(build, what: str):
        try:
            return build()
        except Exception as exc:  # a damaged verdict: this part says so, the others show
            return safe(f"cannot show {what}: {type(exc).__name__}: {exc}", style="red")
    try:
        wide = wide_enough(verdict, width)
    except Exception:
        wide = False
    return {
        "prompts": part(lambda: prompts_table(verdict, with_metrics=wide), "the prompts"),
        "deltas": part(lambda: delta_lines(verdict), "the differences"),
        "metrics": None if wide else part(lambda: metrics_table(verdict, compare), "the metrics"),
        "categories": part(lambda: category_table(verdict, wide=width >= 110), "the categories"),
        "regressions": part(lambda: regressions_table(verdict), "the regressions"),
        "texts": part(lambda: prompt_texts(verdict), "the prompts' texts"),
    }


def summary(verdict: dict, width: int = 120, compare: int = 1) -> Group:
    """The Summary tab as one renderable (tests, exports)."""
    parts = []
    for part in sections(verdict, width, compare).values():
        if part is not None:
            parts += [part, NewLine()]
    return Group(*parts[:-1])


# ----------------------------------------------------------------------------- items

def items_of(verdict: dict) -> list[dict]:
    return [i for i in _l(verdict.get("items")) if isinstance(i, dict)]


def _result(item: dict, index: int) -> dict:
    results = _l(item.get("results"))
    return _d(results[index]) if 0 <= index < len(results) else {}


def item_delta(verdict: dict, item: dict, compare: int) -> float | None:
    """The compared prompt's score minus the baseline's (pairwise: win rate − 0.5)."""
    other = _f(_result(item, compare).get("score"))
    if other is None:
        return None
    if pairwise(verdict):
        return other - 0.5
    base = _f(_result(item, 0).get("score"))
    return None if base is None else other - base


def filter_items(verdict: dict, compare: int, which: str) -> list[int]:
    """Indexes of the items shown: "worse" worst first, "better" best first, "all" in order."""
    rows = [(i, item_delta(verdict, item, compare)) for i, item in enumerate(items_of(verdict))]
    if which == "worse":
        found = [(i, d) for i, d in rows if d is not None and d < -TIE]
        return [i for i, _ in sorted(found, key=lambda r: r[1])]
    if which == "better":
        found = [(i, d) for i, d in rows if d is not None and d > TIE]
        return [i for i, _ in sorted(found, key=lambda r: -r[1])]
    return [i for i, _ in rows]


def _categories(item: dict) -> str:
    cats = item.get("categories")
    if isinstance(cats, list):
        return ", ".join(_label(c) for c in cats)
    return _label(cats)


def _samples(item: dict, index: int) -> list:
    return _l(_result(item, index).get("samples"))


def _sample_block(verdict: dict, item: dict, index: int, sample: int, limit: int) -> Text:
    """One prompt's answer to the item: the answer, its score, each metric with its rationale."""
    samples = _samples(item, index)
    out = Text()
    if not samples:
        out.append("(no answer yet)", style="dim")
        return out
    s = _d(samples[min(sample, len(samples) - 1)])
    if s.get("error"):
        out.append_text(safe(f"error: {s.get('error')}\n", style="red"))
    text, total = _cut(s.get("response"), limit)
    if s.get("response") is None:
        out.append("(no answer)\n", style="dim")
    else:
        out.append_text(safe(text))
        if total > len(text):
            out.append(f"\n… {total - len(text)} more characters (z: full text)", style="dim")
        out.append("\n")
    metrics = _d(s.get("metrics"))
    if metrics:
        out.append("\n")
    for name, m in metrics.items():
        m = m if isinstance(m, dict) else {"score": m}
        out.append_text(safe(f"{_label(name)} {_num(m.get('score'), 'g')}", style="bold"))
        rationale, total = _cut(m.get("rationale"), limit)
        if rationale:
            out.append_text(safe(f" — {rationale}" + ("…" if total > len(rationale) else "")))
        out.append("\n")
    relevance = s.get("relevance")
    if isinstance(relevance, dict):
        out.append_text(safe(f"relevance {_num(relevance.get('score'), 'g')} — "
                             f"{_label(relevance.get('reason'))}\n", style="dim"))
    out.rstrip()
    return out


def _side_title(verdict: dict, index: int, focused: bool, baseline: bool) -> Text:
    label = prompt_label(verdict, index)
    if baseline and label != "baseline":
        label += " (baseline)"
    return safe(f"{'▶ ' if focused else '  '}{label}", style="bold reverse" if focused else "bold")


def _score_line(item: dict, index: int, sample: int) -> Text:
    samples = _samples(item, index)
    score = _result(item, index).get("score")
    if len(samples) > 1:
        chosen = min(sample, len(samples) - 1)
        return safe(f"score {_num(_d(samples[chosen]).get('score'))} (sample {chosen + 1}/"
                    f"{len(samples)}; item mean {_num(score)})\n", style="bold")
    return safe(f"score {_num(score)}\n", style="bold")


def item_detail(verdict: dict, item: dict, compare: int, sample: int, side: int) -> Group:
    """The item's query, and the baseline's and the compared prompt's answers side by side."""
    query, total = _cut(item.get("query"), DETAIL_CHARS)
    top = Text()
    top.append_text(safe(f"Item {_label(item.get('item'))}", style="bold"))
    cats = _categories(item)
    if cats:
        top.append_text(safe(f"  ·  {cats}", style="dim"))
    delta = item_delta(verdict, item, compare)
    if delta is not None:
        what = "win rate − 0.5" if pairwise(verdict) else "Δ"
        top.append_text(safe(f"  ·  {what} {delta:+.2f}",
                             style="green" if delta > TIE else "red" if delta < -TIE else "yellow"))
    top.append("\nQuery: ", style="bold")
    top.append_text(safe(query))
    if total > len(query):
        top.append(f"… ({total} characters)", style="dim")
    table = Table(expand=True, show_lines=False, padding=(0, 1))
    table.add_column(_side_title(verdict, 0, side == 0, True), ratio=1, overflow="fold")
    cells = [_score_line(item, 0, sample) + _sample_block(verdict, item, 0, sample, DETAIL_CHARS)]
    if compare:
        table.add_column(_side_title(verdict, compare, side == 1, False), ratio=1, overflow="fold")
        cells.append(_score_line(item, compare, sample)
                     + _sample_block(verdict, item, compare, sample, DETAIL_CHARS))
    table.add_row(*cells)
    return Group(top, table)


def full_text(verdict: dict, item: dict, index: int, sample: int) -> Text:
    """One answer in full: the query, the answer, every metric with its rationale."""
    samples = _samples(item, index)
    out = Text()
    out.append_text(safe(f"Item {_label(item.get('item'))} · {prompt_label(verdict, index)}",
                         style="bold"))
    if samples:
        chosen = min(sample, len(samples) - 1)
        out.append_text(safe(f" · sample {chosen + 1}/{len(samples)}"))
    out.append("\n\nQuery\n", style="bold")
    query, total = _cut(item.get("query"), FULL_TEXT_CHARS)
    out.append_text(safe(query))
    if total > len(query):
        out.append(f"\n… {total - len(query)} more characters", style="dim")
    out.append("\n\nAnswer\n", style="bold")
    if not samples:
        out.append("(no answer yet)", style="dim")
        return out
    s = _d(samples[min(sample, len(samples) - 1)])
    if s.get("error"):
        out.append_text(safe(f"error: {s.get('error')}\n", style="red"))
    text, total = _cut(s.get("response"), FULL_TEXT_CHARS)
    out.append_text(safe(text) if s.get("response") is not None else Text("(no answer)", style="dim"))
    if total > len(text):
        out.append(f"\n… {total - len(text)} more characters (the report has them all)",
                   style="dim")
    out.append("\n\nScores\n", style="bold")
    out.append_text(safe(f"score {_num(s.get('score'), 'g')}\n"))
    for name, m in _d(s.get("metrics")).items():
        m = m if isinstance(m, dict) else {"score": m}
        out.append_text(safe(f"{_label(name)} {_num(m.get('score'), 'g')}", style="bold"))
        rationale, _ = _cut(m.get("rationale"), FULL_TEXT_CHARS)
        if rationale:
            out.append_text(safe(f" — {rationale}"))
        out.append("\n")
    relevance = s.get("relevance")
    if isinstance(relevance, dict):
        out.append_text(safe(f"relevance {_num(relevance.get('score'), 'g')} — "
                             f"{relevance.get('reason') or ''}\n"))
    out.rstrip()
    return out

