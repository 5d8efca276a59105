"""Evaluation reports (DESIGN §10): one verdict rendered as md, csv, json or html.

`render(result, fmt)` turns the dict `engine.evaluation.Evaluation.result()` returns (plus
the stored evaluation's id, name, dates, data, model, calls and cost) into text:

    md    a summary: facts, the prompts table, the paired difference(s), the per-category
          table, the ten worst regressions side by side, cost and calls;
    csv   one row per item × prompt × sample × metric (an "overall" row per sample);
    json  the result itself, exact, with no raw control character;
    html  one self-contained page: tables, inline SVG charts, every item expandable.

Every text in a result (queries, responses, rationales, labels, prompt texts, errors, even
ids) is untrusted: it came from a data file or a model. md, csv and html remove terminal
control sequences and control characters from it (newlines and tabs kept), md escapes it
for Markdown (table cells, fenced blocks longer than any backtick run inside), html escapes
it with `html.escape` and loads nothing: no script, no link, no URL in any attribute, and a
Content-Security-Policy that forbids both. Numbers that are missing (nothing scored yet) or
of the wrong type are shown as "—" and never drawn. A result whose status is not "done"
(a paused evaluation) says it is partial in every format (json: its "status" field).

Standard library only.
"""
from __future__ import annotations

import csv
import html
import io
import json
import math
import re
from datetime import datetime, timezone

FORMATS = ("md", "csv", "json", "html")
CSV_COLUMNS = ("evaluation", "status", "item", "query", "categories", "prompt", "sample",
               "metric", "score", "response", "rationale", "error")
MD_REGRESSIONS = 10  # the md report shows this many of the worst regressions
MISSING = "—"


def render(result: dict, fmt: str) -> str:
    """The report of `result` in `fmt` (one of FORMATS)."""
    if not isinstance(fmt, str) or fmt not in FORMATS:
        shown = repr(fmt)
        shown = shown if len(shown) <= 40 else shown[:39] + "…"
        raise ValueError(f"unknown report format {shown}; choose one of {', '.join(FORMATS)}")
    return {"md": _md, "csv": _csv, "json": _json, "html": _html}[fmt](result)


# ----------------------------------------------------------------------------- text

# Terminal control sequences, 7-bit (ESC ...) and 8-bit (C1) forms, then every remaining
# C0/C1 control character except tab and newline, and the bidi overrides. String sequences
# (OSC, DCS, SOS, PM, APC) run to their terminator (BEL or ST) or, unterminated, to the next
# introducer, newline or the end. (The same rules as tui.text, without its Rich import.)
_ST = r"(?:\x07|\x1b\\|\x9c)"
_CONTROLS = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"                  # CSI ... final byte
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])"            # OSC, DCS, SOS, PM, APC
    r"[^\x07\x1b\x9c\x90\x98\x9b\x9d\x9e\x9f\n]*" + _ST + r"?"
    r"|\x1b[ -/]*[0-~]"                                     # nF / Fp / Fe / Fs escapes
    r"|\x1b"                                                # a lone ESC
    r"|[\x00-\x08\x0b-\x1f\x7f-\x9f]"                       # remaining C0/C1 controls, DEL
    r"|[\u202a-\u202e\u2066-\u2069]"                        # bidi overrides
)
_SURROGATE = re.compile("[\ud800-\udfff]")


def clean(value: object) -> str:
    """`value` as text without terminal sequences or control characters (newlines and tabs
    kept; CR LF, CR and the Unicode line separators become newlines; a lone surrogate,
    which no file can encode, becomes U+FFFD)."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    text = (text.replace("\r\n", "\n").replace("\r", "\n")
            .replace("\u2028", "\n").replace("\u2029", "\n"))
    return _SURROGATE.sub("\ufffd", _CONTROLS.sub("", text))


def _line(value: object, width: int | None = None) -> str:
    """One line: whitespace runs collapsed, cut to `width` characters."""
    text = " ".join(clean(value).split())
    if width is not None and len(text) > width:
        text = text[: width - 1] + "…"
    return text


# ----------------------------------------------------------------------------- numbers

def _num(value: object) -> float | None:
    """A finite number, else None (missing, NaN, or a value of the wrong type)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


_NOT_PLAIN = re.compile(r"[^0-9A-Za-z .,:+%-]")


def _fmt(value: object, prec: int = 2, signed: bool = False) -> str:
    v = _num(value)
    if v is None:
        if value is None or isinstance(value, float):
            return MISSING
        # a damaged file: show what is there, as plain text safe in every format
        return _line(_NOT_PLAIN.sub("", _line(value, 24))) or MISSING
    return f"{v:+.{prec}f}" if signed else f"{v:.{prec}f}"


def _int(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    v = _num(value)
    if v is not None and v == int(v):
        return f"{int(v):,}"
    return _fmt(value) if value is not None else MISSING


def _ci_pair(ci: object) -> tuple[float, float] | None:
    if isinstance(ci, (list, tuple)) and len(ci) == 2:
        lo, hi = _num(ci[0]), _num(ci[1])
        if lo is not None and hi is not None:
            return (min(lo, hi), max(lo, hi))
    return None


def _ci(ci: object, prec: int, signed: bool = False) -> str:
    pair = _ci_pair(ci)
    if pair is None:
        return ""
    return f"[{_fmt(pair[0], prec, signed)}, {_fmt(pair[1], prec, signed)}]"


def _mean_ci(mean: object, ci: object, prec: int, signed: bool = False) -> str:
    text = _fmt(mean, prec, signed)
    if _num(mean) is not None and _ci_pair(ci):
        text += " " + _ci(ci, prec, signed)
    return text


def _wtl(d: dict) -> str:
    if not any(k in d for k in ("wins", "ties", "losses")):
        return ""
    return f"{_int(d.get('wins'))}/{_int(d.get('ties'))}/{_int(d.get('losses'))}"


def _verdict(d: dict, center: float = 0.0) -> str:
    pair = _ci_pair(d.get("ci"))
    if pair is None:
        return ""
    if pair[0] > center:
        return "better: the interval is above " + f"{center:g}"
    if pair[1] < center:
        return "worse: the interval is below " + f"{center:g}"
    return "no clear difference: the interval includes " + f"{center:g}"


def _time(value: object) -> str:
    v = _num(value)
    if v is None:
        return MISSING
    try:
        return datetime.fromtimestamp(v, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    except (OverflowError, OSError, ValueError):
        return MISSING


def _cost(value: object) -> str:
    v = _num(value)
    if v is None:
        return "unknown" if value is None else _fmt(value)
    return f"${v:.2f}" if v >= 1 else f"${v:.4f}"


# ----------------------------------------------------------------------------- the view

def _dict(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list:
    return value if isinstance(value, list) else []


class _View:
    """What md and html both show, read defensively from a result."""

    def __init__(self, result: dict):
        r = _dict(result)
        self.r = r
        self.id = _line(r.get("evaluation"))
        self.name = _line(r.get("name"))
        self.title = self.name or self.id or "evaluation"
        self.status = _line(r.get("status")) or "unknown"
        self.judge = _line(r.get("judge"))
        self.pairwise = r.get("judge") == "pairwise"
        scale = _dict(r.get("scale"))
        lo, hi = _num(scale.get("lo")), _num(scale.get("hi"))
        if lo is None or hi is None or hi <= lo:
            lo, hi = (0.0, 1.0) if self.pairwise else (None, None)
        self.lo, self.hi = lo, hi
        self.unit = _line(scale.get("unit")) or ("win rate" if self.pairwise else "score")
        span = (hi - lo) if lo is not None else 5
        self.prec = 3 if span <= 1 else 2 if span <= 10 else 1
        self.prompts = [p for p in _list(r.get("prompts")) if isinstance(p, dict)]
        self.labels = [_line(p.get("label")) or f"prompt {i + 1}" for i, p in enumerate(self.prompts)]
        deltas = [d for d in _list(r.get("deltas")) if isinstance(d, dict)]
        if not deltas and isinstance(r.get("delta"), dict):
            deltas = [r["delta"]]
        self.deltas = deltas
        self.baseline = self.labels[0] if self.labels else "baseline"
        names = [_line(m) for m in _list(r.get("metrics"))]
        for p in self.prompts:
            names += [_line(m) for m in _dict(p.get("per_metric"))]
        seen, metrics = set(), []
        for m in names:
            if m and m not in seen and any(self.metric_entry(p, m) for p in self.prompts):
                seen.add(m)
                metrics.append(m)
        self.metrics = metrics
        # the table's metric columns: none where the one metric is the score itself
        redundant = len(metrics) == 1 and r.get("judge") in ("accuracy", "rubric", "pairwise")
        self.columns = [] if redundant else metrics
        self.categories = [(c, e) for c, e in _dict(r.get("per_category")).items() if isinstance(e, dict)]
        self.regressions = [g for g in _list(r.get("regressions")) if isinstance(g, dict)]
        self.items = [it for it in _list(r.get("items")) if isinstance(it, dict)]
        # the domain of the means chart: the scale, else what the numbers span
        if self.lo is None:
            values = []
            for p in self.prompts:
                values.append(_num(p.get("mean")))
                values += list(_ci_pair(p.get("ci")) or ())
            values = [v for v in values if v is not None]
            self.lo = min(values + [0.0])
            self.hi = max(values + [self.lo + 1.0])

    def metric_entry(self, prompt: dict, metric: str) -> dict:
        per = _dict(prompt.get("per_metric"))
        if metric in per:
            return _dict(per[metric])
        for key, value in per.items():  # the metric's name was cleaned: match it cleaned
            if _line(key) == metric:
                return _dict(value)
        return {}

    def facts(self) -> list[tuple[str, str]]:
        r = self.r
        data = _dict(r.get("data"))
        items = _int(r.get("n"))
        extra = []
        if data.get("n_total") is not None:
            extra.append(f"of {_int(data.get('n_total'))}")
        if data.get("limit") is not None:
            extra.append(f"limit {_int(data.get('limit'))}")
        if extra:
            items += f" ({'; '.join(extra)})"
        scale = f"{self.unit}" + (f", {self.lo:g} to {self.hi:g}" if self.lo is not None else "")
        out = [("evaluation", self.id or MISSING)]
        if self.name:
            out.append(("name", self.name))
        out += [
            ("status", self.status),
            ("judge", self.judge or MISSING),
            ("judge model", _line(r.get("judge_model")) or MISSING),
            ("data", _line(data.get("source")) or MISSING),
            ("items", items),
        ]
        if data.get("category_field"):
            out.append(("category field", _line(data.get("category_field"))))
        out += [
            ("samples per item", _int(r.get("samples"))),
            ("seed", _line(r.get("seed")) or MISSING),
            ("scale", scale),
            ("created", _time(r.get("created"))),
            ("updated", _time(r.get("updated"))),
        ]
        return out

    def partial(self) -> str | None:
        if self.r.get("status") == "done":
            return None
        made = sum(v for v in (_num(x) for x in _dict(self.r.get("calls")).values()) if v is not None)
        planned = sum(v for v in (_num(x) for x in _dict(self.r.get("planned_calls")).values()) if v is not None)
        text = (f"Partial result: this evaluation is {self.status}" if self.r.get("status")
                else "Partial result: this evaluation's status is unknown")
        if planned:
            text += f" ({int(made):,} of {int(planned):,} planned calls made)"
        return text + (". Means, intervals, differences and regressions cover only the samples "
                       "scored so far; resume the evaluation to complete them.")

    def series(self) -> list[str]:
        """The labels of the paired differences (one per prompt after the first)."""
        return [_line(d.get("label")) or (self.labels[i + 1] if i + 1 < len(self.labels) else "?")
                for i, d in enumerate(self.deltas)]

    def category_deltas(self, entry: dict) -> list[dict]:
        """The category's paired differences, aligned with `series()`."""
        labels = self.series()
        out = [{} for _ in labels]
        many = [d for d in _list(entry.get("deltas")) if isinstance(d, dict)]
        if many:
            for i, d in enumerate(many):
                label = _line(d.get("label"))
                j = labels.index(label) if label in labels else i
                if j < len(out):
                    out[j] = d
        elif isinstance(entry.get("delta"), dict) and out:
            d = entry["delta"]
            label = _line(d.get("label"))
            out[labels.index(label) if label in labels else 0] = d
        return out

    def category_prompts(self, entry: dict) -> list[dict]:
        """The category's per-prompt entries, aligned with the prompts."""
        given = [p for p in _list(entry.get("prompts")) if isinstance(p, dict)]
        out = []
        for i, label in enumerate(self.labels):
            if i < len(given) and (_line(given[i].get("label")) == label or not given[i].get("label")):
                match = given[i]  # in the prompts' order (labels may repeat)
            else:
                match = next((p for p in given if _line(p.get("label")) == label), {})
            out.append(match)
        return out

    def roles(self) -> list[str]:
        r = self.r
        roles = []
        for source in (r.get("calls"), r.get("planned_calls"), r.get("tokens")):
            for k in _dict(source):
                if k not in roles:
                    roles.append(k)
        return roles

    def cost_rows(self) -> list[tuple[str, str, str, str, str]]:
        r = self.r
        calls, planned, tokens = _dict(r.get("calls")), _dict(r.get("planned_calls")), _dict(r.get("tokens"))
        rows = []
        totals = [0.0, 0.0, 0.0, 0.0]
        for role in self.roles():
            t = _dict(tokens.get(role))
            values = [calls.get(role), planned.get(role), t.get("in"), t.get("out")]
            for i, v in enumerate(values):
                totals[i] += _num(v) or 0
            rows.append((_line(role), *(_int(v) for v in values)))
        if len(rows) > 1:
            rows.append(("total", *(_int(int(v)) for v in totals)))
        return rows


def _drop(g: dict) -> float | None:
    a, b = _num(g.get("score_prompt")), _num(g.get("score_baseline"))
    return None if a is None or b is None else a - b


# ----------------------------------------------------------------------------- md

_MD_PUNCT = re.compile(r"([\\`*_\[\]|~])")


def _md_text(value: object) -> str:
    """Markdown-safe inline text (still multi-line): HTML and emphasis neutralized."""
    text = clean(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_PUNCT.sub(r"\\\1", text).replace("\t", " ")


def _md_inline(value: object, width: int | None = None) -> str:
    return _md_text(_line(value, width))


def _md_cell(value: object) -> str:
    """A table cell: `|` escaped, newlines as <br>."""
    text = _md_text(value).strip()
    return "<br>".join(" ".join(part.split()) for part in text.split("\n"))


def _md_fence(value: object, info: str = "text") -> list[str]:
    """A fenced block whose fence is longer than any backtick run in the text."""
    body = clean(value).rstrip("\n")
    longest = max((len(m) for m in re.findall(r"`+", body)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence + info, body, fence]


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(c if c else " " for c in cells) + " |"


def _md_table(header: list[str], rows: list[list[str]], align: list[str] | None = None) -> list[str]:
    align = align or ["---"] * len(header)
    return [_md_row(header), "|" + "|".join(align) + "|", *(_md_row(r) for r in rows)]


def _md(result: dict) -> str:
    v = _View(result)
    prec = v.prec
    out = [f"# Evaluation report: {_md_inline(v.title)}", ""]
    partial = v.partial()
    if partial:
        out += [f"> **{_md_inline(partial)}**", ""]
    out += [f"- {k}: {_md_inline(val)}" for k, val in v.facts()] + [""]

    # prompts
    out += ["## Prompts", ""]
    if v.prompts:
        wtl = any(_wtl(p) for p in v.prompts)
        header = ["prompt", f"mean [95% CI], {_md_inline(v.unit)}", "n", "errors"]
        header += ["W/T/L"] if wtl else []
        header += [_md_inline(m) for m in v.columns] + ["tokens"]
        rows = []
        for label, p in zip(v.labels, v.prompts):
            mean = _mean_ci(p.get("mean"), p.get("ci"), prec)
            if v.pairwise and p is v.prompts[0] and _num(p.get("mean")) is None:
                mean = f"{MISSING} (baseline)"
            row = [_md_inline(label, 80), mean, _int(p.get("n")), _int(p.get("errors"))]
            row += [_wtl(p) or MISSING] if wtl else []
            for m in v.columns:
                e = v.metric_entry(p, m)
                cell = _fmt(e.get("mean"), prec) if e else MISSING
                if e and _num(e.get("n")) is not None and e.get("n") != p.get("n"):
                    cell += f" (n {_int(e.get('n'))})"
                row.append(cell)
            row.append(_int(p.get("tokens")))
            rows.append(row)
        out += _md_table(header, rows, ["---"] + ["--:"] * (len(header) - 1)) + [""]
    else:
        out += ["No prompts.", ""]

    # paired differences
    if v.pairwise:
        out += ["## Pairwise comparison with the baseline", ""]
        lines = []
        for label, p in list(zip(v.labels, v.prompts))[1:]:
            line = (f"- **{_md_inline(label, 80)}** vs {_md_inline(v.baseline, 80)}: win rate "
                    f"**{_fmt(p.get('mean'), prec)}** {_ci(p.get('ci'), prec)} over {_int(p.get('n'))} items")
            if _wtl(p):
                line += f"; wins {_int(p.get('wins'))}, ties {_int(p.get('ties'))}, losses {_int(p.get('losses'))}"
            verdict = _verdict(p, 0.5)
            lines.append(line + (f" ({verdict})" if verdict else ""))
        out += (lines or ["Only one prompt: nothing to compare."]) + [""]
    else:
        out += ["## Paired difference to the baseline", ""]
        lines = []
        for label, d in zip(v.series(), v.deltas):
            base = _line(d.get("baseline")) or v.baseline
            line = (f"- **{_md_inline(label, 80)} − {_md_inline(base, 80)}**: **{_fmt(d.get('mean'), prec, True)}** "
                    f"{_ci(d.get('ci'), prec, True)} over {_int(d.get('n'))} items")
            if _wtl(d):
                line += f"; wins {_int(d.get('wins'))}, ties {_int(d.get('ties'))}, losses {_int(d.get('losses'))}"
            verdict = _verdict(d)
            lines.append(line + (f" ({verdict})" if verdict else ""))
        out += (lines or ["Only one prompt: no paired difference."]) + [""]

    # categories
    out += ["## Per category", ""]
    if v.categories:
        shown = [(i, label) for i, label in enumerate(v.labels) if not (v.pairwise and i == 0)]
        series = [] if v.pairwise else v.series()
        header = ["category", "n"] + [_md_inline(label, 80) for _, label in shown]
        for s in series:
            header += [f"Δ {_md_inline(s, 80)}", "W/T/L"]
        rows = []
        for cat, entry in v.categories:
            cps = v.category_prompts(entry)
            row = [_md_cell(cat), _int(entry.get("n"))]
            for i, _ in shown:
                row.append(_mean_ci(cps[i].get("mean"), cps[i].get("ci"), prec))
            for d in v.category_deltas(entry)[: len(series)]:
                row += [_mean_ci(d.get("mean"), d.get("ci"), prec, True), _wtl(d) or MISSING]
            rows.append(row)
        out += _md_table(header, rows, ["---"] + ["--:"] * (len(header) - 1)) + [""]
    else:
        out += ["No categories.", ""]

    # regressions
    out += ["## Regressions", ""]
    regs = v.regressions
    if regs:
        top = regs[:MD_REGRESSIONS]
        out += [f"{len(regs)} item{'s' if len(regs) != 1 else ''} scored below the baseline; "
                + (f"the {len(top)} worst:" if len(top) < len(regs) else "worst first:"), ""]
        for n, g in enumerate(top, 1):
            base, prompt = _line(g.get("baseline")) or v.baseline, _line(g.get("prompt")) or "prompt"
            drop = _drop(g)
            out += [f"### {n}. {_md_inline(g.get('item'), 60)}: {_md_inline(prompt, 60)} "
                    f"{_fmt(g.get('score_prompt'), prec)} vs {_md_inline(base, 60)} "
                    f"{_fmt(g.get('score_baseline'), prec)} ({_fmt(drop, prec, True)})", ""]
            cats = [_line(c) for c in _list(g.get("categories"))]
            if cats:
                out += [f"Categories: {_md_inline('; '.join(cats), 200)}", ""]
            out += ["Query:", "", *_md_fence(g.get("query")), ""]
            out += _md_table(["", _md_inline(base, 80), _md_inline(prompt, 80)], [
                ["score", _fmt(g.get("score_baseline"), prec), _fmt(g.get("score_prompt"), prec)],
                ["rationale", _md_cell(g.get("rationale_baseline")) or MISSING,
                 _md_cell(g.get("rationale_prompt")) or MISSING]]) + [""]
            out += [f"Response, {_md_inline(base, 80)}:", "", *_md_fence(g.get("response_baseline")), ""]
            out += [f"Response, {_md_inline(prompt, 80)}:", "", *_md_fence(g.get("response_prompt")), ""]
    else:
        out += ["None: no item scored below the baseline." if not v.pairwise
                else "Not listed for the pairwise judge (see the win rates).", ""]

    # prompt texts
    if v.prompts:
        out += ["## Prompt texts", ""]
        for label, p in zip(v.labels, v.prompts):
            meta = [f"spec {_md_inline(p.get('spec'), 120)}" if p.get("spec") else "",
                    f"session {_md_inline(p.get('session'))}" if p.get("session") else "",
                    f"node {_md_inline(p.get('node'))}" if p.get("node") else "",
                    f"{_int(p.get('tokens'))} tokens" if p.get("tokens") is not None else ""]
            out += [f"### {_md_inline(label)}", ""]
            meta = [m for m in meta if m]
            if meta:
                out += ["; ".join(meta), ""]
            out += [*_md_fence(p.get("text")), ""]

    # cost
    out += ["## Cost and calls", ""]
    rows = v.cost_rows()
    if rows:
        out += _md_table(["role", "calls", "planned", "tokens in", "tokens out"], [list(r) for r in rows],
                         ["---", "--:", "--:", "--:", "--:"]) + [""]
    out += [f"Cost: {_md_inline(_cost(v.r.get('cost')))}", ""]
    return "\n".join(out)


# ----------------------------------------------------------------------------- csv

def _csv_number(value: object) -> str:
    if value is None:
        return ""
    v = _num(value)
    if v is None:
        return clean(value)
    return str(value) if not isinstance(value, bool) else str(v)


def _csv(result: dict) -> str:
    r = _dict(result)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    evaluation, status = clean(r.get("evaluation")), clean(r.get("status"))
    for item in _list(r.get("items")):
        if not isinstance(item, dict):
            continue
        head = [evaluation, status, clean(item.get("item")), clean(item.get("query")),
                "; ".join(clean(c) for c in _list(item.get("categories")))]
        for res in _list(item.get("results")):
            if not isinstance(res, dict):
                continue
            label = clean(res.get("label"))
            for s, sample in enumerate(_list(res.get("samples")), 1):
                if not isinstance(sample, dict):
                    continue
                response, error = clean(sample.get("response")), clean(sample.get("error"))
                writer.writerow([*head, label, s, "overall", _csv_number(sample.get("score")),
                                 response, "", error])
                for metric, m in _dict(sample.get("metrics")).items():
                    m = m if isinstance(m, dict) else {"score": m}
                    writer.writerow([*head, label, s, clean(metric), _csv_number(m.get("score")),
                                     response, clean(m.get("rationale")), error])
    return buf.getvalue()


# ----------------------------------------------------------------------------- json

_JSON_ESCAPE = re.compile("[\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def _finite(obj):
    """`obj` with NaN and infinities as null (JSON has no such numbers)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _json(result: dict) -> str:
    """The result, exact: json.dumps escapes C0 controls; C1 controls, DEL, the Unicode line
    separators and lone surrogates are escaped here as \\uXXXX (inside strings, the only
    place they can be), which keeps every value as it is."""
    try:
        text = json.dumps(result, indent=2, ensure_ascii=False, allow_nan=False)
    except ValueError:
        text = json.dumps(_finite(result), indent=2, ensure_ascii=False, allow_nan=False)
    return _JSON_ESCAPE.sub(lambda m: f"\\u{ord(m.group()):04x}", text) + "\n"


# ----------------------------------------------------------------------------- html

def _h(value: object) -> str:
    return html.escape(clean(value), quote=True)


def _hl(value: object, width: int | None = None) -> str:
    return html.escape(_line(value, width), quote=True)


_CSS = """
:root { color-scheme: light dark;
  --bg: #ffffff; --fg: #1f2328; --muted: #59636e; --border: #d1d9e0; --panel: #f6f8fa;
  --head: #eef1f4; --grid: #e3e7eb; --axis: #59636e; --up: #1a7f37; --down: #cf222e;
  --flat: #8c959f; --warn-bg: #fff8c5; --warn-fg: #3b2300; --warn-border: #d4a72c;
  --err: #cf222e; --link: #0969da; }
@media (prefers-color-scheme: dark) { :root {
  --bg: #0d1117; --fg: #e6edf3; --muted: #9198a1; --border: #3d444d; --panel: #151b23;
  --head: #1c232c; --grid: #262c36; --axis: #9198a1; --up: #3fb950; --down: #f85149;
  --flat: #6e7681; --warn-bg: #2e2500; --warn-fg: #f2cc60; --warn-border: #9e6a03;
  --err: #ff7b72; --link: #4493f8; } }
html { background: var(--bg); color: var(--fg); }
body { background: var(--bg); color: var(--fg); margin: 0 auto; max-width: 1280px;
  padding: 1rem 1.5rem 3rem; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
h1 { font-size: 1.6rem; margin: .2rem 0 .6rem; overflow-wrap: anywhere; }
h2 { font-size: 1.25rem; margin: 2rem 0 .6rem; border-bottom: 1px solid var(--border); padding-bottom: .2rem; }
h3, h4 { margin: .8rem 0 .3rem; overflow-wrap: anywhere; }
a { color: var(--link); }
nav a { margin-right: 1rem; }
.banner { background: var(--warn-bg); color: var(--warn-fg); border: 1px solid var(--warn-border);
  border-radius: 6px; padding: .6rem .9rem; font-weight: 600; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .15rem 1rem; margin: .6rem 0; }
dl.facts dt { color: var(--muted); } dl.facts dd { margin: 0; overflow-wrap: anywhere; }
table { border-collapse: collapse; margin: .5rem 0 1rem; background: var(--bg); color: var(--fg); }
th, td { border: 1px solid var(--border); padding: .3rem .55rem; vertical-align: top; text-align: left; }
th { background: var(--head); }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.text { overflow-wrap: anywhere; max-width: 40rem; }
.up { color: var(--up); } .down { color: var(--down); } .muted { color: var(--muted); }
.error { color: var(--err); }
pre { background: var(--panel); color: var(--fg); border: 1px solid var(--border); border-radius: 6px;
  padding: .5rem .7rem; margin: .3rem 0; white-space: pre-wrap; overflow-wrap: anywhere;
  max-height: 32rem; overflow: auto; font: 13px/1.45 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
details { border: 1px solid var(--border); border-radius: 6px; margin: .35rem 0; background: var(--bg); }
details > summary { cursor: pointer; padding: .4rem .7rem; background: var(--panel); overflow-wrap: anywhere; }
details[open] > summary { border-bottom: 1px solid var(--border); }
details > .body { padding: .5rem .8rem; }
.cols { display: grid; grid-template-columns: repeat(auto-fit, minmax(18rem, 1fr)); gap: .8rem; }
.col { min-width: 0; }
.sample { border-top: 1px dashed var(--border); padding-top: .3rem; margin-top: .4rem; }
.charts { display: flex; flex-wrap: wrap; gap: 1rem; align-items: flex-start; }
svg.chart { max-width: 100%; height: auto; background: var(--bg); }
svg.chart text { fill: var(--fg); font: 12px system-ui, -apple-system, "Segoe UI", sans-serif; }
svg.chart text.tick, svg.chart text.unit { fill: var(--muted); font-size: 11px; }
svg.chart text.ttl { font-weight: 600; font-size: 13px; }
svg.chart .grid { stroke: var(--grid); stroke-width: 1; }
svg.chart .axis { stroke: var(--axis); stroke-width: 1; }
svg.chart .zero { stroke: var(--fg); stroke-width: 1.5; }
svg.chart .ci { stroke: var(--fg); stroke-width: 1.5; }
svg.chart rect.up { fill: var(--up); } svg.chart rect.down { fill: var(--down); }
svg.chart rect.flat { fill: var(--flat); }
svg.chart rect.s0 { fill: #4e79a7; } svg.chart rect.s1 { fill: #f28e2b; } svg.chart rect.s2 { fill: #59a14f; }
svg.chart rect.s3 { fill: #e15759; } svg.chart rect.s4 { fill: #76b7b2; } svg.chart rect.s5 { fill: #edc948; }
svg.chart rect.s6 { fill: #b07aa1; } svg.chart rect.s7 { fill: #ff9da7; }
footer { margin-top: 2rem; color: var(--muted); font-size: .85rem; }
"""

# nothing is loaded and nothing runs, whatever got into the page
_CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


def _nice_step(span: float, count: int = 5) -> float:
    raw = span / max(count, 1)
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag + 1e-12:
            return m * mag
    return 10 * mag


def _ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    step = _nice_step(hi - lo, count)
    v = math.ceil(lo / step - 1e-9) * step
    out = []
    while v <= hi + step * 1e-9 and len(out) < 50:
        out.append(round(v, 10) + 0.0)
        v += step
    return out


def _svg_bars(rows: list[dict], lo: float, hi: float, *, title: str, unit: str, prec: int,
              center: float | None = None, width: int = 640, label_w: int = 170,
              label_chars: int = 24) -> str:
    """A horizontal bar chart: per row a bar (from `lo`, or from `center` for a diverging
    chart, coloured up/down), its CI as a whisker with caps, and the value; "—" where the
    value is missing. rows: {label, value, ci, cls}."""
    right, top, row_h, bottom = 64, 30, 26, 36
    plot_w = width - label_w - right
    height = top + row_h * max(len(rows), 1) + bottom
    span = (hi - lo) or 1.0

    def x(value: float) -> float:
        return round(label_w + (min(max(value, lo), hi) - lo) / span * plot_w, 1)

    plot_bottom = top + row_h * max(len(rows), 1)
    out = [f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
           f'role="img" aria-label="{_hl(title)}">',
           f'<title>{_hl(title)}</title>',
           f'<text class="ttl" x="{label_w}" y="18">{_hl(title, 80)}</text>']
    for t in _ticks(lo, hi):
        out.append(f'<line class="grid" x1="{x(t)}" y1="{top}" x2="{x(t)}" y2="{plot_bottom}"/>')
        out.append(f'<line class="axis" x1="{x(t)}" y1="{plot_bottom}" x2="{x(t)}" y2="{plot_bottom + 4}"/>')
        out.append(f'<text class="tick" x="{x(t)}" y="{plot_bottom + 16}" text-anchor="middle">{t:g}</text>')
    out.append(f'<line class="axis" x1="{label_w}" y1="{plot_bottom}" x2="{label_w + plot_w}" y2="{plot_bottom}"/>')
    out.append(f'<text class="unit" x="{label_w + plot_w}" y="{plot_bottom + 31}" text-anchor="end">{_hl(unit, 60)}</text>')
    base = lo if center is None else center
    for i, row in enumerate(rows):
        y = top + i * row_h
        mid = y + row_h / 2
        out.append(f'<text x="{label_w - 8}" y="{mid + 4}" text-anchor="end"><title>{_hl(row["label"])}</title>'
                   f'{_hl(row["label"], label_chars)}</text>')
        value = _num(row.get("value"))
        if value is None:
            out.append(f'<text x="{x(base) + 4}" y="{mid + 4}">{MISSING}</text>')
            continue
        cls = row.get("cls") or "s0"
        if center is not None:
            cls = "up" if value > center else "down" if value < center else "flat"
        x0, x1 = sorted((x(base), x(value)))
        out.append(f'<rect class="{cls}" x="{x0}" y="{round(y + row_h * 0.22, 1)}" '
                   f'width="{max(round(x1 - x0, 1), 1.0)}" height="{round(row_h * 0.56, 1)}"/>')
        start, end = x0, x1
        ci = _ci_pair(row.get("ci"))
        if ci:
            c0, c1 = x(ci[0]), x(ci[1])
            out.append(f'<line class="ci" x1="{c0}" y1="{mid}" x2="{c1}" y2="{mid}"/>')
            for c in (c0, c1):
                out.append(f'<line class="ci" x1="{c}" y1="{mid - 6}" x2="{c}" y2="{mid + 6}"/>')
            start, end = min(start, c0), max(end, c1)
        shown = f"{value:+.{prec}f}" if center == 0 else f"{value:.{prec}f}"
        if center is not None and value < center and start - 5 - 7 * len(shown) >= label_w:
            # a bar going left: its value on its left, clear of the zero line
            out.append(f'<text x="{round(start - 5, 1)}" y="{mid + 4}" text-anchor="end">{shown}</text>')
        else:
            out.append(f'<text x="{round(end + 5, 1)}" y="{mid + 4}">{shown}</text>')
    if center is not None and lo <= center <= hi:
        out.append(f'<line class="zero" x1="{x(center)}" y1="{top - 4}" x2="{x(center)}" y2="{plot_bottom}"/>')
    out.append("</svg>")
    return "\n".join(out)


def _symmetric(values: list[float], floor: float) -> float:
    m = max([abs(v) * 1.15 for v in values] + [floor])  # room for the value labels
    step = _nice_step(m, 4)
    return math.ceil(m / step - 1e-9) * step


def _html_table(header: list[str], rows: list[list[str]], kinds: list[str] | None = None) -> str:
    """header and rows are HTML already; kinds: per column "text" or "num" (default: the
    first column text, the others numbers)."""
    kinds = kinds or ["text"] + ["num"] * (len(header) - 1)

    def cls(i: int) -> str:
        return f' class="{kinds[i] if i < len(kinds) else "num"}"'
    out = ["<table>", "<thead><tr>" + "".join(f"<th{cls(i)}>{h}</th>" for i, h in enumerate(header)) + "</tr></thead>",
           "<tbody>"]
    for row in rows:
        out.append("<tr>" + "".join(f"<td{cls(i)}>{c}</td>" for i, c in enumerate(row)) + "</tr>")
    out += ["</tbody>", "</table>"]
    return "\n".join(out)


def _signed_class(value: object) -> str:
    v = _num(value)
    return "" if v is None or v == 0 else (' class="up"' if v > 0 else ' class="down"')


def _html(result: dict) -> str:
    v = _View(result)
    prec, r = v.prec, v.r
    item_index = {}
    for i, it in enumerate(v.items):
        item_index.setdefault(clean(it.get("item")), i)
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           '<meta name="color-scheme" content="light dark">',
           '<meta name="referrer" content="no-referrer">',
           f"<title>Evaluation report: {_hl(v.title, 100)}</title>",
           f"<style>{_CSS}</style>", "</head>", "<body>", "<header>",
           f"<h1>Evaluation report: {_hl(v.title)}</h1>"]
    partial = v.partial()
    if partial:
        out.append(f'<p class="banner">{_hl(partial)}</p>')
    out.append('<dl class="facts">' + "".join(f"<dt>{_hl(k)}</dt><dd>{_hl(val)}</dd>" for k, val in v.facts()) + "</dl>")
    out += ['<nav><a href="#prompts">prompts</a><a href="#difference">difference</a>'
            '<a href="#categories">categories</a><a href="#regressions">regressions</a>'
            '<a href="#items">items</a><a href="#cost">cost</a></nav>', "</header>"]

    # prompts: table, means chart, per-metric small multiples, texts
    out += ['<section id="prompts">', "<h2>Prompts</h2>"]
    if v.prompts:
        wtl = any(_wtl(p) for p in v.prompts)
        header = ["prompt", f"mean [95% CI], {_hl(v.unit)}", "n", "errors"] + (["W/T/L"] if wtl else [])
        header += [_hl(m) for m in v.columns] + ["tokens"]
        rows = []
        for i, (label, p) in enumerate(zip(v.labels, v.prompts)):
            mean = _mean_ci(p.get("mean"), p.get("ci"), prec)
            if v.pairwise and i == 0 and _num(p.get("mean")) is None:
                mean = f"{MISSING} (baseline)"
            errors = _int(p.get("errors"))
            err_cls = ' class="error"' if (_num(p.get("errors")) or 0) > 0 else ""
            row = [_hl(label), _hl(mean), _hl(_int(p.get("n"))), f"<span{err_cls}>{_hl(errors)}</span>"]
            row += [_hl(_wtl(p) or MISSING)] if wtl else []
            for m in v.columns:
                e = v.metric_entry(p, m)
                cell = _mean_ci(e.get("mean"), e.get("ci"), prec) if e else MISSING
                if e and _num(e.get("n")) is not None and e.get("n") != p.get("n"):
                    cell += f" (n {_int(e.get('n'))})"
                row.append(_hl(cell))
            row.append(_hl(_int(p.get("tokens"))))
            rows.append(row)
        out.append(_html_table(header, rows))
        chart_rows = [{"label": label, "value": p.get("mean"), "ci": p.get("ci"), "cls": f"s{i % 8}"}
                      for i, (label, p) in enumerate(zip(v.labels, v.prompts))]
        out.append('<div class="charts">')
        out.append(_svg_bars(chart_rows, v.lo, v.hi, title="Mean per prompt with its 95% CI",
                             unit=v.unit, prec=prec))
        out.append("</div>")
        if v.metrics and (len(v.metrics) > 1 or v.pairwise):
            out += ["<h3>Per metric</h3>", '<div class="charts">']
            for m in v.metrics:
                rows_m = []
                for i, (label, p) in enumerate(zip(v.labels, v.prompts)):
                    e = v.metric_entry(p, m)
                    rows_m.append({"label": label, "value": e.get("mean"), "ci": e.get("ci"), "cls": f"s{i % 8}"})
                out.append(_svg_bars(rows_m, v.lo, v.hi, title=m, unit=v.unit, prec=prec,
                                     width=330, label_w=100, label_chars=13))
            out.append("</div>")
        out.append("<h3>Prompt texts</h3>")
        for label, p in zip(v.labels, v.prompts):
            meta = [f"spec {_line(p.get('spec'), 160)}" if p.get("spec") else "",
                    f"session {_line(p.get('session'))}" if p.get("session") else "",
                    f"node {_line(p.get('node'))}" if p.get("node") else "",
                    f"{_int(p.get('tokens'))} tokens" if p.get("tokens") is not None else ""]
            meta = "; ".join(m for m in meta if m)
            out.append(f"<details><summary><strong>{_hl(label)}</strong> "
                       f'<span class="muted">{_hl(meta)}</span></summary>'
                       f'<div class="body"><pre>{_h(p.get("text"))}</pre></div></details>')
    else:
        out.append("<p>No prompts.</p>")
    out.append("</section>")

    # the paired difference(s), per category chart
    out += ['<section id="difference">',
            "<h2>Pairwise comparison with the baseline</h2>" if v.pairwise else
            "<h2>Paired difference to the baseline</h2>", "<ul>"]
    lines = []
    if v.pairwise:
        for label, p in list(zip(v.labels, v.prompts))[1:]:
            text = (f"<strong>{_hl(label)}</strong> vs {_hl(v.baseline)}: win rate "
                    f"<strong>{_hl(_fmt(p.get('mean'), prec))}</strong> {_hl(_ci(p.get('ci'), prec))} "
                    f"over {_hl(_int(p.get('n')))} items")
            if _wtl(p):
                text += (f"; wins {_hl(_int(p.get('wins')))}, ties {_hl(_int(p.get('ties')))}, "
                         f"losses {_hl(_int(p.get('losses')))}")
            verdict = _verdict(p, 0.5)
            lines.append(text + (f' <span class="muted">({_hl(verdict)})</span>' if verdict else ""))
    else:
        for label, d in zip(v.series(), v.deltas):
            base = _line(d.get("baseline")) or v.baseline
            text = (f"<strong>{_hl(label)} − {_hl(base)}</strong>: "
                    f"<strong{_signed_class(d.get('mean'))}>{_hl(_fmt(d.get('mean'), prec, True))}</strong> "
                    f"{_hl(_ci(d.get('ci'), prec, True))} over {_hl(_int(d.get('n')))} items")
            if _wtl(d):
                text += (f"; wins {_hl(_int(d.get('wins')))}, ties {_hl(_int(d.get('ties')))}, "
                         f"losses {_hl(_int(d.get('losses')))}")
            verdict = _verdict(d)
            lines.append(text + (f' <span class="muted">({_hl(verdict)})</span>' if verdict else ""))
    if not lines:
        lines = ["Only one prompt: nothing to compare."]
    out += [f"<li>{line}</li>" for line in lines] + ["</ul>"]
    chart = []  # (label, value, ci)
    if v.pairwise:
        for i, label in enumerate(v.labels[1:], 1):
            many = len(v.labels) > 2
            p = v.prompts[i]
            chart.append({"label": f"all items · {label}" if many else "all items",
                          "value": p.get("mean"), "ci": p.get("ci")})
            for cat, entry in v.categories:
                cp = v.category_prompts(entry)[i]
                chart.append({"label": f"{_line(cat)} · {label}" if many else _line(cat),
                              "value": cp.get("mean"), "ci": cp.get("ci")})
        if chart:
            out.append('<div class="charts">' + _svg_bars(
                chart, 0.0, 1.0, center=0.5, prec=prec, unit="win rate (0.5: as good as the baseline)",
                title="Win rate against the baseline, per category") + "</div>")
    elif v.deltas:
        series = v.series()
        many = len(series) > 1
        for j, (label, d) in enumerate(zip(series, v.deltas)):
            chart.append({"label": f"all items · {label}" if many else "all items",
                          "value": d.get("mean"), "ci": d.get("ci")})
        for cat, entry in v.categories:
            for label, d in zip(series, v.category_deltas(entry)):
                chart.append({"label": f"{_line(cat)} · {label}" if many else _line(cat),
                              "value": d.get("mean"), "ci": d.get("ci")})
        values = []
        for row in chart:
            values += [x for x in [_num(row["value"]), *(_ci_pair(row["ci"]) or ())] if x is not None]
        floor = (v.hi - v.lo) / 20 if v.hi > v.lo else 0.1
        m = _symmetric(values, floor)
        out.append('<div class="charts">' + _svg_bars(
            chart, -m, m, center=0.0, prec=prec, unit=f"Δ {v.unit}: prompt − baseline",
            title="Paired difference to the baseline, per category") + "</div>")
    out.append("</section>")

    # categories table
    out += ['<section id="categories">', "<h2>Per category</h2>"]
    if v.categories:
        shown = [(i, label) for i, label in enumerate(v.labels) if not (v.pairwise and i == 0)]
        series = [] if v.pairwise else v.series()
        header = ["category", "n"] + [_hl(label) for _, label in shown]
        for s in series:
            header += [f"Δ {_hl(s)}", "W/T/L"]
        rows = []
        for cat, entry in v.categories:
            cps = v.category_prompts(entry)
            row = [_hl(cat), _hl(_int(entry.get("n")))]
            row += [_hl(_mean_ci(cps[i].get("mean"), cps[i].get("ci"), prec)) for i, _ in shown]
            for d in v.category_deltas(entry)[: len(series)]:
                row += [f"<span{_signed_class(d.get('mean'))}>{_hl(_mean_ci(d.get('mean'), d.get('ci'), prec, True))}</span>",
                        _hl(_wtl(d) or MISSING)]
            rows.append(row)
        out.append(_html_table(header, rows))
    else:
        out.append("<p>No categories.</p>")
    out.append("</section>")

    # regressions
    out += ['<section id="regressions">', f"<h2>Regressions ({len(v.regressions)})</h2>"]
    if v.regressions:
        out.append('<p class="muted">Items scored below the baseline, worst first.</p>')
        for n, g in enumerate(v.regressions, 1):
            base, prompt = _line(g.get("baseline")) or v.baseline, _line(g.get("prompt")) or "prompt"
            cats = "; ".join(_line(c) for c in _list(g.get("categories")))
            summary = (f"#{n} · {_hl(g.get('item'), 60)} · {_hl(prompt, 40)} "
                       f"{_hl(_fmt(g.get('score_prompt'), prec))} vs {_hl(base, 40)} "
                       f"{_hl(_fmt(g.get('score_baseline'), prec))} "
                       f'<span class="down">({_hl(_fmt(_drop(g), prec, True))})</span>'
                       + (f' · <span class="muted">{_hl(cats, 80)}</span>' if cats else "")
                       + f' · {_hl(g.get("query"), 90)}')
            link = ""
            idx = item_index.get(clean(g.get("item")))
            if idx is not None:
                link = f'<p><a href="#item-{idx}">the item with every sample</a></p>'
            cols = []
            for side, label, key in (("baseline", base, "baseline"), ("prompt", prompt, "prompt")):
                cols.append(f'<div class="col"><h4>{_hl(label)} · score {_hl(_fmt(g.get("score_" + key), prec))}</h4>'
                            f'<pre>{_h(g.get("response_" + key))}</pre>'
                            f'<p><span class="muted">rationale:</span> {_h(g.get("rationale_" + key)) or MISSING}</p></div>')
            out.append(f"<details><summary>{summary}</summary><div class=\"body\">"
                       f"<h4>Query</h4><pre>{_h(g.get('query'))}</pre>"
                       f'<div class="cols">{"".join(cols)}</div>{link}</div></details>')
    else:
        out.append("<p>None: no item scored below the baseline.</p>" if not v.pairwise else
                   "<p>Not listed for the pairwise judge (see the win rates).</p>")
    out.append("</section>")

    # items
    out += ['<section id="items">', f"<h2>Items ({len(v.items)})</h2>"]
    for idx, it in enumerate(v.items):
        results = [x for x in _list(it.get("results")) if isinstance(x, dict)]
        cats = "; ".join(_line(c) for c in _list(it.get("categories")))
        scores = " · ".join(f"{_hl(x.get('label'), 30)} {_hl(_fmt(x.get('score'), prec))}" for x in results)
        summary = (f"{_hl(it.get('item'), 60)}" + (f' · <span class="muted">{_hl(cats, 80)}</span>' if cats else "")
                   + (f" · {scores}" if scores else "") + f" · {_hl(it.get('query'), 90)}")
        cols = []
        for x in results:
            parts = [f'<div class="col"><h4>{_hl(x.get("label"))} · score {_hl(_fmt(x.get("score"), prec))}</h4>']
            samples = [s for s in _list(x.get("samples")) if isinstance(s, dict)]
            if not samples:
                parts.append('<p class="muted">no sample yet</p>')
            for k, s in enumerate(samples, 1):
                parts.append(f'<div class="sample"><div class="muted">sample {k} · score {_hl(_fmt(s.get("score"), prec))}</div>')
                if s.get("error"):
                    parts.append(f'<p class="error">error: {_h(s.get("error"))}</p>')
                if s.get("response") is not None:
                    parts.append(f"<pre>{_h(s.get('response'))}</pre>")
                metrics = _dict(s.get("metrics"))
                if metrics:
                    mrows = []
                    for name, m in metrics.items():
                        m = m if isinstance(m, dict) else {"score": m}
                        mrows.append([_hl(name), _hl(_fmt(m.get("score"), prec)), _h(m.get("rationale"))])
                    parts.append(_html_table(["metric", "score", "rationale"], mrows, ["text", "num", "text"]))
                parts.append("</div>")
            parts.append("</div>")
            cols.append("".join(parts))
        out.append(f'<details id="item-{idx}"><summary>{summary}</summary><div class="body">'
                   f"<h4>Query</h4><pre>{_h(it.get('query'))}</pre>"
                   f'<div class="cols">{"".join(cols)}</div></div></details>')
    if not v.items:
        out.append("<p>No items.</p>")
    out.append("</section>")

    # cost
    out += ['<section id="cost">', "<h2>Cost and calls</h2>"]
    rows = v.cost_rows()
    if rows:
        out.append(_html_table(["role", "calls", "planned", "tokens in", "tokens out"],
                               [[_hl(c) for c in row] for row in rows]))
    out.append(f"<p>Cost: {_hl(_cost(r.get('cost')))}</p>")
    out += ["</section>", "<footer>PromptArbor evaluation report · self-contained, works offline</footer>",
            "</body>", "</html>", ""]
    return "\n".join(out)
