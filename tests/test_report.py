"""The evaluation report renderer (sessions.report): md, csv, json, html from a verdict.

Fixtures are built like `Evaluation.result()` plus the stored evaluation's facts: two
prompts judged on aspects, one prompt, pairwise, accuracy (0..1), a paused partial result
with nulls, and every text field made hostile (HTML, Markdown, `|`, newlines, Rich markup,
terminal escapes, very long strings).
"""
from __future__ import annotations

import copy
import csv
import io
import json
import re
from html.parser import HTMLParser

import pytest

from promptarbor.sessions.report import CSV_COLUMNS, FORMATS, MD_REGRESSIONS, clean, render

ASPECTS = ["Helpfulness", "Clarity", "Factuality", "Depth", "Engagement", "Safety"]
ESCAPES = ("\x1b", "\x9b", "\x07", "\x90", "\x9d")
HOSTILE = ("<script>alert(1)</script> | pipe\nnew line **bold** [bold]x[/] `tick` ```fence``` "
           "\x1b[2J\x1b]52;c;ZXZpbA==\x07\x9b31m red \x1bPq#0\x1b\\ https://evil.example/x.js "
           '<img src="https://evil.example/p.png"> <a href="javascript:alert(1)">x</a> '
           "\u2028sep\u2029 \x85nel \u202eevil")


# ----------------------------------------------------------------------------- fixtures

def _score(p: int, i: int, s: int, metric: int = 0) -> float:
    """Deterministic 1..5 scores: the second prompt better on most items."""
    return float(1 + (i * 7 + s * 3 + metric + p * (2 if i % 4 else -3)) % 5)


def make_result(*, prompts=("baseline", "final"), judge="aspects", n=12, k=2,
                status="done", regressions=12) -> dict:
    cats = ["coding", "safety", "writing"]
    if judge == "aspects":
        metrics = ASPECTS
        scale = {"lo": 1, "hi": 5, "unit": "score (1-5)"}
    elif judge == "accuracy":
        metrics = ["accuracy"]
        scale = {"lo": 0, "hi": 1, "unit": "accuracy"}
    else:
        metrics = ["win_rate"]
        scale = {"lo": 0, "hi": 1, "unit": "win rate"}
    items = []
    for i in range(n):
        cat = cats[i % 3]
        results = []
        for p, label in enumerate(prompts):
            samples = []
            for s in range(k):
                if judge == "accuracy":
                    score = float((i + s + p) % 2)
                    ms = {"accuracy": {"score": score, "rationale": f"picked {'AB'[i % 2]}"}}
                elif judge == "pairwise":
                    if p == 0:
                        samples.append({"response": f"base answer {i}", "score": None,
                                        "error": None, "metrics": {}})
                        continue
                    score = [0.0, 0.5, 1.0][(i + s) % 3]
                    ms = {"win_rate": {"score": score, "rationale": f"A: B — better {i}"}}
                else:
                    names = ["Safety"] if cat == "safety" else ASPECTS[:5]
                    ms = {m: {"score": _score(p, i, s, j), "rationale": f"{m} of {i}/{s}"}
                          for j, m in enumerate(names)}
                    score = sum(m["score"] for m in ms.values()) / len(ms)
                if p == 0 and i == 1 and s == 0 and judge == "aspects":  # a failed sample
                    samples.append({"response": None, "score": None, "error": "answer: timeout",
                                    "metrics": {}})
                    continue
                samples.append({"response": f"Answer {i}.{s} by {label},\nwith a comma, and \"quotes\".",
                                "score": score, "error": None, "metrics": ms})
            scored = [s["score"] for s in samples if s["score"] is not None]
            results.append({"label": label, "score": sum(scored) / len(scored) if scored else None,
                            "samples": samples})
        items.append({"item": f"i{i}", "query": f"Question {i}: how, exactly?\nSecond line.",
                      "categories": [cat], "results": results})

    def stat(m):
        return {"mean": m, "ci": [round(m - 0.2, 3), round(m + 0.2, 3)], "n": n}
    entries = []
    for p, label in enumerate(prompts):
        entry = {"label": label, "spec": f"text:You are prompt {label}.", "session": None, "node": None,
                 "text": f"You are prompt {label}.\nBe helpful.", "tokens": 7 + p, "errors": 0}
        if judge == "pairwise":
            if p == 0:
                entry.update(mean=None, ci=None, n=n, per_metric={})
            else:
                entry.update(mean=0.62, ci=[0.5, 0.74], n=n, per_metric={}, wins=6, ties=2, losses=4)
        else:
            base = 0.6 if judge == "accuracy" else 3.5
            entry.update(stat(base + 0.1 * p))
            entry["per_metric"] = {m: {**stat(base + 0.05 * j), "n": 4 if m == "Safety" else n}
                                   for j, m in enumerate(metrics)}
        if p:
            entry.update(session="a1b2c3d4", node=f"n{10 + p}")
        entries.append(entry)
    entries[0]["errors"] = 1 if judge == "aspects" else 0
    deltas = []
    if judge != "pairwise":
        for p, label in enumerate(prompts[1:], 1):
            deltas.append({"label": label, "baseline": prompts[0], "mean": 0.1 * p,
                           "ci": [-0.05, 0.25 * p], "wins": 6, "ties": 2, "losses": 4, "n": n})
    per_category = {}
    for j, cat in enumerate(cats):
        cps = []
        for p, label in enumerate(prompts):
            if judge == "pairwise":
                cps.append({"label": label, "mean": None if p == 0 else 0.5 + 0.1 * j,
                            "ci": None if p == 0 else [0.3, 0.8], "n": 0 if p == 0 else n // 3})
            else:
                cps.append({"label": label, "mean": 3.0 + j * 0.3 + p * 0.2,
                            "ci": [2.8, 3.9], "n": n // 3})
        delta = None
        if deltas:
            delta = {"mean": [0.4, -0.6, 0.0][j], "ci": [[0.1, 0.7], [-1.0, -0.2], [-0.3, 0.3]][j],
                     "wins": 2, "ties": 1, "losses": 1, "n": n // 3}
        per_category[cat] = {"n": n // 3, "prompts": cps, "delta": delta}
    regs = []
    if judge != "pairwise" and len(prompts) > 1:
        for r in range(regressions):
            regs.append({"item": f"i{r % n}", "query": f"Question {r}", "categories": [cats[r % 3]],
                         "baseline": prompts[0], "prompt": prompts[1],
                         "score_baseline": 4.5, "score_prompt": 4.0 - 0.25 * r,
                         "response_baseline": f"Good answer {r}", "response_prompt": f"Worse answer {r}",
                         "rationale_baseline": "Helpfulness: clear", "rationale_prompt": "Helpfulness: vague"})
    calls = len(prompts) * n * k
    return {
        "evaluation": "e1a2b3c4", "name": "", "created": 1795000000.0, "updated": 1795000100.0,
        "status": status, "judge": judge,
        "judge_model": None if judge == "accuracy" else "openai/gpt-4o",
        "data": {"source": f"builtin:{judge}", "n_total": n + 10, "limit": n, "category_field": "category"},
        "n": n, "samples": k, "seed": 0, "metrics": metrics, "scale": scale,
        "prompts": entries, "delta": deltas[0] if deltas else None, "deltas": deltas,
        "per_category": per_category, "regressions": regs, "items": items,
        "calls": {"base": calls, "judge": 0 if judge == "accuracy" else calls},
        "planned_calls": {"base": calls, "judge": 0 if judge == "accuracy" else calls},
        "cost": 0.0123, "tokens": {"base": {"in": 1000, "out": 2000}, "judge": {"in": 3000, "out": 500}},
    }


def make_paused() -> dict:
    """Half done: the second prompt has nothing scored yet (nulls everywhere)."""
    r = make_result(status="paused", n=6, k=1, regressions=0)
    final = r["prompts"][1]
    final.update(mean=None, ci=None, n=0, per_metric={}, errors=2)
    r["prompts"][0]["per_metric"] = {}
    r["delta"] = r["deltas"][0] = {"label": "final", "baseline": "baseline", "mean": None, "ci": None,
                                   "wins": 0, "ties": 0, "losses": 0, "n": 0}
    for entry in r["per_category"].values():
        entry["prompts"][1].update(mean=None, ci=None, n=0)
        entry["delta"] = {"mean": None, "ci": None, "wins": 0, "ties": 0, "losses": 0, "n": 0}
    for item in r["items"]:
        res = item["results"][1]
        res["score"] = None
        res["samples"] = [{"response": None, "score": None, "error": "answer: rate limited", "metrics": {}}] \
            if item["item"] in ("i0", "i1") else []
    r["calls"] = {"base": 8, "judge": 6}
    r["cost"] = None
    return r


def make_hostile() -> dict:
    """Every text field hostile; a very long response."""
    r = make_result(n=4, k=2, regressions=3)
    r["name"] = HOSTILE
    r["evaluation"] = "e1\x1b[31m|<b>"
    r["judge_model"] = HOSTILE
    r["data"]["source"] = HOSTILE
    r["data"]["category_field"] = HOSTILE
    for p in r["prompts"]:
        p["label"] = p["label"] + " " + HOSTILE
        p["text"] = HOSTILE + "\n````\n" + HOSTILE
        p["spec"] = "text:" + HOSTILE
    for d in r["deltas"]:
        d["label"] = r["prompts"][1]["label"]
        d["baseline"] = r["prompts"][0]["label"]
    r["per_category"] = {HOSTILE: v for v in list(r["per_category"].values())[:1]}
    for entry in r["per_category"].values():
        for cp, p in zip(entry["prompts"], r["prompts"]):
            cp["label"] = p["label"]
    for g in r["regressions"]:
        for key in ("item", "query", "response_baseline", "response_prompt",
                    "rationale_baseline", "rationale_prompt", "baseline", "prompt"):
            g[key] = HOSTILE
        g["categories"] = [HOSTILE]
    for item in r["items"]:
        item["query"] = HOSTILE
        item["categories"] = [HOSTILE, "plain"]
        for res, p in zip(item["results"], r["prompts"]):
            res["label"] = p["label"]
            for s in res["samples"]:
                s["response"] = HOSTILE + ("x" * 200_000 if item["item"] == "i0" else "")
                if s["error"]:
                    s["error"] = HOSTILE
                s["metrics"] = {HOSTILE if j == 0 else m: {**v, "rationale": HOSTILE}
                                for j, (m, v) in enumerate(s["metrics"].items())}
    return r


FIXTURES = {
    "aspects": lambda: make_result(),
    "one_prompt": lambda: make_result(prompts=("only",), regressions=0),
    "pairwise": lambda: make_result(judge="pairwise", prompts=("baseline", "challenger")),
    "accuracy": lambda: make_result(judge="accuracy", k=1),
    "three_prompts": lambda: make_result(prompts=("baseline", "final", "best"), k=1, regressions=2),
    "paused": make_paused,
    "hostile": make_hostile,
}


# ----------------------------------------------------------------------------- helpers

class Page(HTMLParser):
    """Tags, attributes and text of a page; raises on a mis-nested or unclosed element."""
    VOID = {"meta", "link", "br", "hr", "img", "input", "col", "area", "base", "wbr", "source"}

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.tags: dict[str, int] = {}
        self.attrs: list[tuple[str, str, str]] = []
        self.data: list[str] = []
        self.style = ""
        self.feed(text)
        self.close()
        assert not self.stack, f"unclosed: {self.stack}"

    def _tag(self, tag, attrs):
        self.tags[tag] = self.tags.get(tag, 0) + 1
        self.attrs += [(tag, k, v or "") for k, v in attrs]

    def handle_starttag(self, tag, attrs):
        self._tag(tag, attrs)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self._tag(tag, attrs)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-3:]}"
        self.stack.pop()

    def handle_data(self, data):
        if self.stack and self.stack[-1] == "style":
            self.style += data
        else:
            self.data.append(data)


def md_section(md: str, title: str) -> list[str]:
    lines = md.split("\n")
    start = lines.index(title) + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("## ")), len(lines))
    return lines[start:end]


def md_outside_fences(md: str) -> list[str]:
    """The lines of `md` that are not inside a fenced block."""
    out, fence = [], None
    for line in md.split("\n"):
        if fence is None:
            m = re.match(r"(`{3,})", line)
            if m:
                fence = m.group(1)
            else:
                out.append(line)
        elif line == fence:
            fence = None
    assert fence is None, "an unclosed fence"
    return out


def cells(row: str) -> list[str]:
    """A Markdown table row's cells, split on unescaped pipes."""
    assert row.startswith("| ") and row.endswith(" |"), row
    return re.split(r"(?<!\\)\|", row[2:-2])


def table_after(lines: list[str]) -> list[str]:
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return lines[start:end]


def csv_rows(text: str) -> list[dict]:
    """The rows, read back with the csv module (whose default field limit, 128 KiB, is
    below the hostile fixture's 200,000-character response: raised while reading)."""
    limit = csv.field_size_limit(1 << 24)
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        assert tuple(reader.fieldnames) == CSV_COLUMNS
        return list(reader)
    finally:
        csv.field_size_limit(limit)


# ----------------------------------------------------------------------------- api

def test_formats_and_unknown_format():
    assert FORMATS == ("md", "csv", "json", "html")
    for bad in ("pdf", "MD", "", "x\ny" * 50, None):
        with pytest.raises(ValueError) as info:
            render(make_result(n=2), bad)
        message = str(info.value)
        assert "\n" not in message and "md, csv, json, html" in message


@pytest.mark.parametrize("name", FIXTURES)
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_fixture_renders_in_every_format(name, fmt):
    result = FIXTURES[name]()
    before = copy.deepcopy(result)
    text = render(result, fmt)
    assert isinstance(text, str) and text
    assert result == before  # the result is not modified
    if fmt != "json":
        assert "nan" not in text.lower().replace("nano", "") or name == "hostile"
    partial = before["status"] != "done"
    if fmt in ("md", "html"):
        assert ("Partial result: this evaluation is paused" in text) == partial
    elif fmt == "csv":
        rows = csv_rows(text)
        assert rows and {r["status"] for r in rows} == {before["status"]}
    else:
        assert json.loads(text)["status"] == before["status"]


# ----------------------------------------------------------------------------- md

def test_md_header_tables_and_difference():
    r = make_result()
    md = render(r, "md")
    assert md.startswith("# Evaluation report: e1a2b3c4\n")
    for fact in ("- judge: aspects", "- judge model: openai/gpt-4o", "- data: builtin:aspects",
                 "- items: 12 (of 22; limit 12)", "- samples per item: 2", "- status: done"):
        assert fact in md
    table = table_after(md_section(md, "## Prompts"))
    assert len(table) == 2 + len(r["prompts"])
    header = cells(table[0])
    assert [h.strip() for h in header] == ["prompt", "mean [95% CI], score (1-5)", "n", "errors",
                                           *ASPECTS, "tokens"]
    assert all(len(cells(row)) == len(header) for row in table[2:])
    base = [c.strip() for c in cells(table[2])]
    assert base[:4] == ["baseline", "3.50 [3.30, 3.70]", "12", "1"]
    assert base[-2] == "3.75 (n 4)"  # Safety: fewer items than the prompt
    assert base[-1] == "7"
    diff = "\n".join(md_section(md, "## Paired difference to the baseline"))
    assert "**final − baseline**: **+0.10** [-0.05, +0.25] over 12 items; wins 6, ties 2, losses 4" in diff
    assert "includes 0" in diff
    cats = table_after(md_section(md, "## Per category"))
    assert len(cats) == 2 + 3
    assert [c.strip() for c in cells(cats[0])] == ["category", "n", "baseline", "final", "Δ final", "W/T/L"]
    safety = [c.strip() for c in cells(cats[3])]
    assert safety[0] == "safety" and safety[4] == "-0.60 [-1.00, -0.20]" and safety[5] == "2/1/1"
    cost = "\n".join(md_section(md, "## Cost and calls"))
    assert "| total | 96 | 96 | 4,000 | 2,500 |" in cost and "Cost: $0.0123" in cost
    assert "node n11" in md  # the prompt texts section says where a prompt came from


def test_md_shows_the_ten_worst_regressions_side_by_side():
    r = make_result(regressions=12)
    section = md_section(render(r, "md"), "## Regressions")
    heads = [line for line in section if line.startswith("### ")]
    assert len(heads) == MD_REGRESSIONS == 10
    assert "12 items scored below the baseline; the 10 worst:" in section
    assert heads[0] == "### 1. i0: final 4.00 vs baseline 4.50 (-0.50)"
    assert heads[-1].startswith("### 10. i9: final 1.75 vs baseline 4.50 (-2.75)")
    tables = [line for line in section if line.startswith("| score |")]
    assert tables[0] == "| score | 4.50 | 4.00 |" and len(tables) == 10
    assert "| rationale | Helpfulness: clear | Helpfulness: vague |" in section
    text = "\n".join(section)
    assert "Good answer 9" in text and "Worse answer 9" in text and "Good answer 10" not in text


def test_md_one_prompt_pairwise_accuracy_and_paused():
    one = render(make_result(prompts=("only",), regressions=0), "md")
    assert "Only one prompt: no paired difference." in one
    assert "None: no item scored below the baseline." in one
    assert len(table_after(md_section(one, "## Prompts"))) == 3

    pw = render(make_result(judge="pairwise", prompts=("baseline", "challenger")), "md")
    row = cells(table_after(md_section(pw, "## Prompts"))[2])
    assert row[1].strip() == "— (baseline)"
    assert "**challenger** vs baseline: win rate **0.620** [0.500, 0.740] over 12 items; wins 6" in pw
    assert [c.strip() for c in cells(table_after(md_section(pw, "## Per category"))[0])] == [
        "category", "n", "challenger"]

    acc = render(make_result(judge="accuracy", k=1), "md")
    assert "0.600 [0.400, 0.800]" in acc and "- judge model: —" in acc
    header = [c.strip() for c in cells(table_after(md_section(acc, "## Prompts"))[0])]
    assert header == ["prompt", "mean [95% CI], accuracy", "n", "errors", "tokens"]  # no repeat

    paused = render(make_paused(), "md")
    assert paused.split("\n")[2].startswith("> **Partial result: this evaluation is paused (14 of 24 planned calls made)")
    final = [c.strip() for c in cells(table_after(md_section(paused, "## Prompts"))[3])]
    assert final[:4] == ["final", "—", "0", "2"]
    assert "**final − baseline**: **—**  over 0 items" in paused
    assert "Cost: unknown" in paused


def test_md_hostile_text_is_escaped():
    r = make_hostile()
    md = render(r, "md")
    for b in ESCAPES + ("\x85", "\u2028", "\u202e"):
        assert b not in md
    outside = md_outside_fences(md)
    assert not any("<script" in line.lower() or "<img" in line.lower() for line in outside)
    assert "&lt;script&gt;" in md and "\\[bold\\]x\\[/\\]" in md
    # tables keep their shape although labels carry | and newlines
    for title in ("## Prompts", "## Per category"):
        table = table_after(md_section(md, title))
        width = len(cells(table[0]))
        assert all(len(cells(row)) == width for row in table[2:])
    # the fenced blocks hold the hostile text as it is (controls removed), fence longer than ````
    assert "`````text\n" + clean(HOSTILE) + "\n````\n" + clean(HOSTILE) + "\n`````" in md
    assert md.count("### ") >= 3 + len(r["prompts"])


# ----------------------------------------------------------------------------- csv

def expected_rows(r: dict) -> int:
    return sum(1 + len(s["metrics"]) for item in r["items"] for res in item["results"]
               for s in res["samples"])


@pytest.mark.parametrize("name", FIXTURES)
def test_csv_rows_and_columns(name):
    r = FIXTURES[name]()
    rows = csv_rows(render(r, "csv"))
    assert len(rows) == expected_rows(r)
    overall = [row for row in rows if row["metric"] == "overall"]
    assert len(overall) == sum(len(res["samples"]) for it in r["items"] for res in it["results"])
    if name == "hostile":
        return
    first = r["items"][0]
    row = rows[0]
    assert (row["evaluation"], row["item"], row["query"], row["categories"], row["prompt"], row["sample"]) == (
        "e1a2b3c4", "i0", first["query"], "; ".join(first["categories"]), first["results"][0]["label"], "1")
    score = first["results"][0]["samples"][0]["score"]
    assert "\n" in row["query"] and row["score"] == ("" if score is None else str(score))


def test_csv_details():
    r = make_result()
    rows = csv_rows(render(r, "csv"))
    failed = [row for row in rows if row["error"]]
    assert len(failed) == 1 and failed[0]["item"] == "i1" and failed[0]["score"] == ""
    assert failed[0]["metric"] == "overall" and failed[0]["error"] == "answer: timeout"
    metric = next(row for row in rows if row["item"] == "i0" and row["prompt"] == "final"
                  and row["sample"] == "2" and row["metric"] == "Clarity")
    assert metric["rationale"] == "Clarity of 0/1" and metric["response"].startswith("Answer 0.1 by final,\n")
    assert {row["sample"] for row in rows} == {"1", "2"}
    safety = {row["metric"] for row in rows if row["categories"] == "safety"}
    assert safety == {"overall", "Safety"}


def test_csv_hostile_text_is_clean():
    r = make_hostile()
    text = render(r, "csv")
    for b in ESCAPES + ("\x85", "\u202e"):
        assert b not in text
    rows = csv_rows(text)
    assert len(rows) == expected_rows(r)
    assert rows[0]["query"] == clean(HOSTILE) and rows[0]["categories"] == clean(HOSTILE) + "; plain"
    assert rows[0]["evaluation"] == "e1|<b>"


# ----------------------------------------------------------------------------- json

@pytest.mark.parametrize("name", [n for n in FIXTURES if n != "hostile"])
def test_json_round_trips(name):
    r = FIXTURES[name]()
    text = render(r, "json")
    assert json.loads(text) == r
    assert text.startswith('{\n  "evaluation": "e1a2b3c4"')


def test_json_hostile_values_are_exact_without_raw_controls():
    r = make_hostile()
    r["items"][1]["query"] = "lone \ud800 surrogate, DEL \x7f, NEL \x85, C1 \x9b, LS \u2028 PS \u2029"
    text = render(r, "json")
    for ch in ("\x1b", "\x9b", "\x85", "\x7f", "\u2028", "\u2029", "\ud800", "\x07"):
        assert ch not in text
    assert "\\u009b" in text and "\\u2028" in text and "\\ud800" in text
    assert json.loads(text) == r
    text.encode("utf-8")  # writable as a file


def test_json_non_finite_numbers_become_null():
    r = make_result(n=2)
    r["prompts"][0]["mean"] = float("nan")
    out = json.loads(render(r, "json"), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert out["prompts"][0]["mean"] is None


# ----------------------------------------------------------------------------- html

def check_self_contained(text: str) -> Page:
    page = Page(text)
    assert "<script" not in text.lower()
    assert page.tags.get("script", 0) == 0 and page.tags.get("link", 0) == 0
    assert page.tags.get("iframe", 0) == page.tags.get("img", 0) == page.tags.get("object", 0) == 0
    for tag, name, value in page.attrs:
        if name in ("src", "href", "xlink:href", "action", "formaction", "poster", "background"):
            assert value == "" or value.startswith("#") or value.startswith("data:"), (tag, name, value)
        assert "://" not in value, (tag, name, value)
        assert not name.startswith("on"), (tag, name)
    assert "url(" not in page.style and "@import" not in page.style
    assert "prefers-color-scheme: dark" in page.style
    return page


def test_html_structure():
    r = make_result()
    text = render(r, "html")
    assert "http://" not in text and "https://" not in text
    page = check_self_contained(text)
    assert text.startswith("<!DOCTYPE html>")
    assert page.tags["html"] == page.tags["body"] == page.tags["style"] == 1
    # prompts, categories, cost, and a metrics table per scored sample in the items
    scored = sum(1 for it in r["items"] for res in it["results"] for s in res["samples"] if s["metrics"])
    assert page.tags["table"] == 3 + scored
    # means, the per-category difference, one small multiple per metric
    assert page.tags["svg"] == 2 + len(ASPECTS)
    assert page.tags["details"] == len(r["prompts"]) + len(r["regressions"]) + len(r["items"])
    ids = {v for _, k, v in page.attrs if k == "id"}
    targets = {v[1:] for _, k, v in page.attrs if k == "href"}
    assert targets <= ids and {"item-0", "prompts", "cost"} <= targets
    data = "".join(page.data)
    assert "Paired difference to the baseline, per category" in data
    assert "final − baseline: +0.10 [-0.05, +0.25] over 12 items; wins 6, ties 2, losses 4" in data
    assert "Answer 0.1 by final," in data and "Clarity of 0/1" in data and "answer: timeout" in data
    assert 'class="up"' in text and 'class="down"' in text  # the category bars' colours
    assert "Partial result" not in text


def test_html_svg_has_ticks_zero_line_and_dashes_for_nulls():
    text = render(make_paused(), "html")
    page = check_self_contained(text)
    assert page.tags["svg"] == 2  # per_metric empty: no small multiples
    svgs = re.findall(r"<svg.*?</svg>", text, re.S)
    means, diff = svgs
    assert means.count("<rect") == 1  # the final prompt's mean is null: no bar ...
    assert ">—</text>" in means  # ... but a dash
    assert 'class="tick"' in means and ">1</text>" in means and ">5</text>" in means
    assert 'class="zero"' in diff and diff.count("<rect") == 0 and diff.count(">—</text>") == 4
    assert "nan" not in text.lower()
    assert "Partial result: this evaluation is paused" in text


def test_html_pairwise_accuracy_and_one_prompt():
    pw = render(make_result(judge="pairwise", prompts=("baseline", "challenger")), "html")
    page = check_self_contained(pw)
    assert "Win rate against the baseline, per category" in pw and page.tags["svg"] == 2
    assert "— (baseline)" in pw
    acc = render(make_result(judge="accuracy", k=1), "html")
    assert check_self_contained(acc).tags["svg"] == 2  # one metric: no small multiples
    assert "0.600 [0.400, 0.800]" in acc
    one = render(make_result(prompts=("only",), regressions=0), "html")
    page = check_self_contained(one)
    assert page.tags["svg"] == 1 + len(ASPECTS) and "Only one prompt" in one


def test_html_hostile_text_is_escaped():
    r = make_hostile()
    text = render(r, "html")
    page = check_self_contained(text)
    for b in ESCAPES + ("\x85", "\u2028", "\u202e"):
        assert b not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<img" not in text and "<a href=\"javascript" not in text
    data = "".join(page.data)
    assert "<script>alert(1)</script>" in data  # shown as text
    assert "https://evil.example/x.js" in data  # ... and a URL only as text
    assert "[bold]x[/]" in data
    assert page.tags["details"] == len(r["prompts"]) + len(r["regressions"]) + len(r["items"])
    # the long response is there in full, summaries are cut
    assert "x" * 200_000 in text
    for summary in re.findall(r"<summary>(.*?)</summary>", text, re.S):
        assert len(summary) < 2000


@pytest.mark.parametrize("fmt", ["md", "csv", "html"])
def test_a_damaged_result_still_renders(fmt):
    """Wrong types everywhere (a hand-edited or damaged store): shown as text or "—"."""
    r = make_result(n=3, regressions=1)
    r["prompts"][0].update(mean="high", ci="wide", n=None, per_metric=["x"], tokens="7<b>")
    r["prompts"][1].update(mean=float("inf"), ci=[None, 2], per_metric={"Clarity": 3})
    r["deltas"][0].update(mean=True, ci=[1], wins="<i>")
    r["per_category"]["coding"] = {"n": "?", "prompts": "none", "delta": [1]}
    r["per_category"]["junk"] = "not a dict"
    r["regressions"].append("not a dict")
    r["items"].append("not a dict")
    r["items"][0]["results"][0]["samples"][0]["metrics"] = {"Clarity": 4}
    r.update(scale={"lo": 5, "hi": 1}, calls=None, tokens={"base": "lots"}, created="yesterday",
             status=None)
    text = render(r, fmt)
    assert "<i>" not in text and "<b>" not in text
    if fmt == "md":
        assert "| baseline | high | — | 1 | 7b |" in text and "wins i," in text
    assert "Partial result" in text or fmt == "csv"
    if fmt == "html":
        check_self_contained(text)
    assert render({}, fmt) is not None


def test_clean_removes_control_sequences():
    assert clean("a\x1b[31mb\x9b31mc\x1b]52;c;ZXZpbA==\x07d\x1bPq#0\x1b\\e\x00f\tg\r\nh") == "abcdef\tg\nh"
    assert clean(None) == "" and clean(3.5) == "3.5"
