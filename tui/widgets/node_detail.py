"""The node detail of the workbench: a header line (the node's id, level, kind, status,
reward and the query it was judged on) and what the tabs show for the selected node.
Prompt (its text and error), Critique, Diff (against its parent) and Calls (the model calls
made for it) are the same for every method; Response and Reward are each method's own
(`response_view`, `reward_view`): DRPO's judged answer and aspect scores; VAPO's validation
answers (extracted letter / gold, or the judge's score for free-form tasks) and MCTS
statistics; PICACO's pools and TC_e; OPRO's answers to the optimization prompts with their
per-value scores; the fixed baselines (Q, Q+IF, Q+IF+CoT, URIAL) their held-out answers.
The root and the final node of any method also list their answers on the held-out set.

Every view takes `full`: False cuts long texts to fit the pane (tables share the pane's
width by ratios and wrap); True (`z`, `full_view`) shows every text whole, for a scrollable
screen.

Each function takes the workbench snapshot and one node and returns something Rich can
render; all model, data and session text goes through `safe` (plain text, escapes
stripped): a `str` in a Rich table cell or title would be parsed as markup. Numbers read
from the session go through `number`, so a damaged or hostile value shows as text.
"""
from __future__ import annotations

import difflib
import re
from collections import Counter

from rich import box
from rich.console import Group
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from ..text import head, number, one_line, safe, strip_escapes
from .plots import conformity_chart

HELDOUT_ROWS = 8       # held-out answers listed in the tab (z: all of them)
BASELINES = ("q", "q-if", "q-if-cot", "urial")
TABS = ("tab-prompt", "tab-response", "tab-reward", "tab-critique", "tab-diff", "tab-calls")


def _cut(full: bool):
    """`head` when the view is cut to the pane, the whole text (escapes removed) if full."""
    if full:
        return lambda value, width=0: strip_escapes("" if value is None else str(value)).strip()
    return head


def _state(snap: dict) -> dict:
    state = snap["session"].get("method_state")
    return state if isinstance(state, dict) else {}


def _table(title: str | Text | None = None) -> Table:
    """A table as wide as the pane; its text columns share the width by ratio and wrap."""
    return Table(title=safe(title) if isinstance(title, str) else title, expand=True,
                 title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1))


class Grid:
    """Rows of texts (an answer, a question) and numbers (scores): a table when the pane
    leaves each text column at least `MIN_TEXT` cells beside the number columns, else one
    block per row (its texts one under the other, then its numbers on one line), so a narrow
    pane wraps the texts instead of cutting columns off. An optional short first column
    (`label`: ✓ / ✗, the pool) leads each row."""

    MIN_TEXT = 18

    def __init__(self, title: str | Text | None, texts: list[tuple[str, int]],
                 numbers: list[str], label: str | None = None):
        self.title = safe(title) if isinstance(title, str) else title
        self.texts, self.numbers, self.label = texts, numbers, label
        self.rows: list[tuple[str, list[Text], list[str]]] = []

    def add(self, texts: list, numbers: list, label: str = "") -> None:
        self.rows.append((label, [t if isinstance(t, Text) else safe(t) for t in texts],
                          [strip_escapes(str(n)) for n in numbers]))

    def need(self) -> int:
        """The width the table needs to show every column."""
        numbers = sum(max([len(h)] + [len(r[2][i]) for r in self.rows]) + 2
                      for i, h in enumerate(self.numbers))
        label = 0 if self.label is None else max([len(self.label)] + [len(r[0]) for r in self.rows]) + 2
        return numbers + label + (self.MIN_TEXT + 2) * len(self.texts)

    def table(self) -> Table:
        table = _table(self.title)
        if self.label is not None:
            table.add_column(safe(self.label), no_wrap=True)
        for name, ratio in self.texts:
            table.add_column(safe(name), ratio=ratio, min_width=8)
        for name in self.numbers:
            table.add_column(safe(name), justify="right", no_wrap=True)
        for label, texts, numbers in self.rows:
            table.add_row(*([safe(label)] if self.label is not None else []), *texts,
                          *[safe(n) for n in numbers])
        return table

    def blocks(self) -> Group:
        parts: list = [self.title] if self.title is not None else []
        for label, texts, numbers in self.rows:
            first = safe(label + " ", style="bold") if label else Text()
            if texts:
                first.append_text(Text(texts[0].plain, style="bold"))
            parts.append(first)
            parts += [Padding(text, (0, 0, 0, 2)) for text in texts[1:] if text.plain]
            shown = [f"{h} {n}" for h, n in zip(self.numbers, numbers) if n]
            if shown:
                parts.append(Padding(safe(" · ".join(shown), style="cyan"), (0, 0, 0, 2)))
        return Group(*parts)

    def __rich_console__(self, console, options):
        yield self.table() if options.max_width >= self.need() else self.blocks()


# ----------------------------------------------------------------------------- the header

def short_codes(names) -> dict[str, str]:
    """A short code per name, unique among the names (initials for several words, else
    the first three letters, then four, then numbered): Coherence → Coh, Complexity →
    Com, Non-Toxicity → NT, Self-direction → SD."""
    unique = list(dict.fromkeys("" if n is None else str(n) for n in names))

    def options(name: str) -> list[str]:
        words = [w for w in re.split(r"[\s\-_/]+", strip_escapes(name)) if w] or ["?"]
        out = ["".join(w[0] for w in words)[:3].upper()] if len(words) > 1 else []
        joined = "".join(words)
        return out + [joined[:3].capitalize(), joined[:4].capitalize()]

    opts = {n: options(n) for n in unique}
    level = {n: 0 for n in unique}
    chosen: dict[str, str] = {}
    for _ in range(4):
        chosen = {n: opts[n][min(level[n], len(opts[n]) - 1)] for n in unique}
        counts = Counter(chosen.values())
        clashing = [n for n in unique if counts[chosen[n]] > 1]
        if not clashing:
            return chosen
        for n in clashing:
            level[n] += 1
    taken = set(chosen.values())
    seen: Counter = Counter()
    counts = Counter(chosen.values())
    for n in unique:
        code = chosen[n]
        if counts[code] > 1:
            seen[code] += 1
            candidate = f"{code[:3]}{seen[code]}"
            while candidate in taken:
                seen[code] += 1
                candidate = f"{code[:3]}{seen[code]}"
            taken.add(candidate)
            chosen[n] = candidate
    return chosen


def _heldout(snap: dict) -> dict | None:
    held = _state(snap).get("heldout")
    if not isinstance(held, dict) or not isinstance(held.get("spec"), dict):
        return None
    return held


def _heldout_indexes(snap: dict, node: dict) -> list[int]:
    """Which prompts of the held-out evaluation are this node (root, final: maybe both)."""
    held = _heldout(snap)
    if held is None:
        return []
    prompts = held["spec"].get("prompts") or []
    return [i for i, p in enumerate(prompts) if isinstance(p, dict) and p.get("node") == node["id"]]


def judged_on(snap: dict, node: dict) -> str:
    """What the node's reward was measured on, in a few words."""
    detail = node.get("detail") or {}
    query = detail.get("query")
    family = snap.get("family")
    if family == "picaco" and query:
        prompts = _state(snap).get("prompts") or []
        shown = ", ".join(f"“{head(p, 40)}”" for p in prompts[:2])
        more = f", … {len(prompts) - 2} more" if len(prompts) > 2 else ""
        return f"{one_line(query, 40)}: {shown}{more}" if shown else one_line(query, 40)
    if query:
        return one_line(query, 400)
    if _heldout_indexes(snap, node):
        held = _heldout(snap)
        n = len(held["spec"].get("items") or [])
        k = held["spec"].get("samples")
        return f"the held-out set ({n} items × {number(k, 'd')} samples)"
    return "not judged yet"


def _marks(snap: dict, node: dict) -> str:
    """The node's icons (★ best, ◎ final, ✓ accepted, ✗ failed): icons only, so they stay in
    view on a narrow pane (the tree's legend and `?` name them)."""
    marks = ""
    if snap.get("best") == node["id"]:
        marks += "★"
    if _state(snap).get("final") == node["id"] and snap["summary"].get("status") == "done":
        marks += "◎"
    if node.get("accepted"):
        marks += "✓"
    if node.get("status") == "failed":
        marks += "✗"
    return marks


def detail_header(snap: dict, node: dict) -> Text:
    """`n4 · L2 · R 4.67 ★◎ · best final · candidate · expanded` — id, level, reward and
    icons first, the words after them (a narrow pane cuts the words, not the icons) — and,
    on a second line, `judged on: <the query>`; a failed node shows its error there instead
    (one line, cut with "…" by the pane)."""
    meta = node.get("meta") or {}
    level = meta.get("level", node.get("depth"))
    out = Text(str(node["id"]), style="bold")
    out.append_text(safe(f" L{number(level, 'd')}"))
    if node.get("reward") is not None:
        out.append_text(safe(f" R {number(node['reward'], '.4g')}", style="bold"))
    marks = _marks(snap, node)
    if marks:
        out.append(f" {marks}", style="bold")
    words = [w for w, on in (("best", "★" in marks), ("final", "◎" in marks),
                             ("accepted", "✓" in marks)) if on]
    out.append_text(safe(" · " + " ".join(words + [str(node.get("kind")),
                                                   str(node.get("status"))]), style="dim"))
    if node.get("status") == "failed":
        out.append("\nerror: ", style="bold red")
        out.append_text(safe(one_line(node.get("error") or "unknown", 400), style="red"))
    else:
        out.append("\njudged on: ", style="dim")
        out.append_text(safe(one_line(judged_on(snap, node), 400)))
    return out


# ----------------------------------------------------------------------------- every method

def prompt_text(node: dict) -> Text:
    """The Prompt tab: the node's id, kind and status, its text, and its error if it failed."""
    prompt = safe(f"{node['id']} · {node['kind']} · {node['status']}"
                  f"{' · accepted' if node['accepted'] else ''}\n\n", style="bold")
    prompt.append_text(safe(node["text"]))
    if node.get("error"):
        prompt.append_text(safe(f"\n\nerror: {node['error']}", style="red"))
    return prompt


def critique_text(node: dict) -> Text:
    critique = Text("Critique (c to edit, g to regenerate from it)\n\n", style="bold")
    critique.append_text(safe(node.get("critique") or "—"))
    return critique


def diff_text(snap: dict, node: dict) -> Text:
    """The node's text against its parent's, as a unified diff."""
    parent = snap["nodes"].get(node["parent"]) if node["parent"] else None
    if parent is None:
        return Text("a root has no parent")
    out = Text()
    for line in difflib.unified_diff(parent["text"].splitlines(), node["text"].splitlines(),
                                     parent["id"], node["id"], lineterm=""):
        style = "green" if line.startswith("+") else "red" if line.startswith("-") else ""
        out.append_text(safe(line + "\n", style=style))
    return out if out.plain else Text("no difference from the parent")


def calls_table(snap: dict, node: dict, full: bool = False) -> Grid:
    """The model calls made for the node: role, purpose, tokens, cost, latency, error."""
    cut = _cut(full)
    calls = Grid(None, [("purpose", 1), ("error", 2)], ["role", "tokens", "cost", "latency"],
                 label="call")
    for record in snap["calls"].get(node["id"], []):
        error = cut(record.get("error") or "", 120)
        calls.add([safe(record["purpose"]), safe(error, style="red")],
                  [record["role"], f"{record['tokens_in']}→{record['tokens_out']}",
                   "$" + number(record["cost"], ".5f"),
                   "cached" if record["cached"] else number(record["latency"]) + "s"],
                  label=str(record["id"]))
    return calls


def heldout_answers(snap: dict, node: dict, full: bool = False) -> list:
    """The node's answers on the held-out set (it is the root or the final prompt of the
    session's held-out evaluation), with the judge's score; [] for any other node."""
    indexes = _heldout_indexes(snap, node)
    if not indexes:
        return []
    held = _heldout(snap)
    spec, state = held["spec"], held.get("state") or {}
    results = state.get("results") if isinstance(state.get("results"), dict) else {}
    items = [i for i in spec.get("items") or [] if isinstance(i, dict)]
    k = spec.get("samples") if isinstance(spec.get("samples"), int) else 1
    cut = _cut(full)
    parts: list = []
    for p in indexes:
        label = (spec["prompts"][p] or {}).get("label", p)
        rows = []
        for item in items:
            for s in range(max(1, k)):
                r = results.get(f"{p}|{item.get('id')}|{s}")
                if isinstance(r, dict):
                    rows.append((item, s, r))
        title = (f"Held-out answers as the {label} prompt (judge {spec.get('judge')}; "
                 f"{len(rows)} of {len(items) * max(1, k)} answered)")
        if not rows:
            parts.append(safe(f"\n{title}: none yet (the held-out evaluation answers with "
                              f"this prompt when the search ends)", style="dim"))
            continue
        grid = Grid(title, [("query", 2), ("answer", 3)], ["score"])
        shown = rows if full else rows[:HELDOUT_ROWS]
        for item, s, r in shown:
            answer = r.get("error") and f"error: {r['error']}" or r.get("response")
            sample = f" (#{s + 1})" if k > 1 else ""
            grid.add([cut(item.get("query"), 90) + sample, cut(answer, 120)],
                     [number(r.get("score"), ".3g")])
        parts.append(grid)
        if len(rows) > len(shown):
            parts.append(Text(f"… {len(rows) - len(shown)} more: z shows them all, v opens the "
                              f"Results view", style="dim"))
    return parts


# ----------------------------------------------------------------------------- DRPO

def drpo_response(snap: dict, node: dict, full: bool = False):
    detail = node.get("detail", {})
    response = Text()
    if detail.get("query"):
        response.append("Query\n", style="bold")
        response.append_text(safe(detail["query"]))
        response.append("\n\nResponse\n", style="bold")
        response.append_text(safe(detail.get("response", "")))
    else:
        response.append("not judged yet")
    held = heldout_answers(snap, node, full)
    return Group(response, *held) if held else response


def drpo_reward(snap: dict, node: dict, full: bool = False):
    detail = node.get("detail", {})
    if not detail.get("scores"):
        return Text("no reward yet")
    table = _table()
    table.add_column("aspect", no_wrap=not full, max_width=None if full else 24)
    table.add_column("score", justify="right", no_wrap=True)
    table.add_column("rationale", ratio=1, min_width=10)
    scores = detail["scores"]
    if not isinstance(scores, dict):
        return safe(f"scores: {scores}")
    for aspect, item in scores.items():
        if not isinstance(item, dict):
            item = {"score": None, "rationale": item}
        table.add_row(safe(aspect), safe(number(item.get("score"), "g")),
                      safe(item.get("rationale")))
    aspects = detail.get("aspects") or []
    reasoning = safe("Aspects chosen: " + ", ".join(map(str, aspects if isinstance(aspects, list)
                                                         else [aspects])) +
                     "\nwhy: " + str(detail.get("reasoning") or "—") + "\n")
    total = Text(f"\nR = {number(node['reward'])} (mean of {len(scores)} aspects)",
                 style="bold")
    return Group(reasoning, table, total)


# ----------------------------------------------------------------------------- VAPO

def _item(snap: dict, item_id) -> dict:
    items = _state(snap).get("items") or []
    try:
        item = items[item_id]
    except (IndexError, TypeError, KeyError):
        item = None
    return item if isinstance(item, dict) else {"question": f"item {item_id}", "options": None,
                                                 "answer": None}


def _read(snap: dict, item: dict, r: dict) -> str:
    """What was read from an answer: the extracted letter / the gold one (multiple
    choice), or the judge's score out of 5 (free-form)."""
    if _state(snap).get("task_type") == "free-form" or "score" in r and "choice" not in r:
        return f"{number(r.get('score'), 'g', '?')}/5"
    return f"{r.get('choice') or '?'}/{item.get('answer') or '?'}"


def _results_table(snap: dict, results: list[dict], title: str, full: bool = False) -> Grid:
    cut = _cut(full)
    free = _state(snap).get("task_type") == "free-form"
    grid = Grid(title, [("question", 2), ("answer", 2)], ["score" if free else "read"], label="")
    for r in results:
        if not isinstance(r, dict):
            continue
        item = _item(snap, r.get("item"))
        grid.add([cut(item.get("question"), 90), cut(r.get("response", ""), 90)],
                 [_read(snap, item, r)], label="✓" if r.get("correct") else "✗")
    return grid


def vapo_response(snap: dict, node: dict, full: bool = False):
    detail = node.get("detail", {})
    results = detail.get("validation")
    if not results:
        return Group(Text("not validated yet"), *heldout_answers(snap, node, full))
    free = _state(snap).get("task_type") == "free-form"
    how = "score = the judge's score out of 5" if free else "read = extracted / gold letter"
    parts = [_results_table(snap, results, f"Validation answers ({len(results)} items; {how})",
                            full)]
    test = detail.get("test")
    if isinstance(test, dict) and isinstance(test.get("results"), list):  # older sessions
        parts.append(_results_table(snap, test["results"],
                                    f"Test answers (metric {number(test.get('value'))})", full))
    parts += heldout_answers(snap, node, full)
    return Group(*parts)


def vapo_reward(snap: dict, node: dict, full: bool = False):
    stats = snap.get("stats", {}).get(node["id"], {})
    detail = node.get("detail", {})
    state = _state(snap)
    out = Text()
    if node["reward"] is None:
        out.append("no reward yet\n")
    else:
        metric = "accuracy" if state.get("task_type") == "multiple-choice" \
            else "mean judge score mapped to [0, 1]"
        out.append(f"r = {number(node['reward'], '.3f')}  ({metric} on the validation split)\n",
                   style="bold")
    if stats:
        uct = number(stats.get("UCT"), ".3f")
        out.append_text(safe(f"Q = {number(stats.get('Q'), '.3f')}   N = {number(stats.get('N'))}"
                             f"   UCT = {uct}{'   terminal' if stats.get('terminal') else ''}\n"))
    cum = node["meta"].get("cum_rewards") or []
    if cum:
        out.append_text(safe("cumulative rewards back-propagated: "
                             + ", ".join(number(c) for c in cum) + "\n"))
    parts: list = [out]
    failed = [r for r in detail.get("validation", []) if isinstance(r, dict) and not r.get("correct")]
    if failed:
        parts.append(_results_table(snap, failed, f"Failed validation examples ({len(failed)})",
                                    full))
    action = detail.get("action")
    if action:
        head_text = Text("\nWritten from the parent's ", style="bold")
        if action.get("answers") is not None:
            head_text.append(f"training batch of {len(action.get('batch') or [])}: "
                             f"{len(action.get('failed', []))} failed"
                             f"{' (no error: guard feedback)' if action.get('guard') else ''}\n",
                             style="bold")
        else:
            head_text.append_text(safe(f"{action.get('from', 'feedback')}\n", style="bold"))
        parts.append(head_text)
        bad = [a for a in action.get("answers") or [] if isinstance(a, dict) and not a.get("correct")]
        if bad:
            parts.append(_results_table(snap, bad, "Failed training examples", full))
        if action.get("feedback"):
            feedback = Text("Error feedback\n", style="bold")
            feedback.append_text(safe(action["feedback"]))
            parts.append(feedback)
    evaluation = state.get("evaluation")
    if isinstance(evaluation, dict) and node["id"] in (state.get("root"), state.get("final")):
        parts.append(safe(f"\nTest {evaluation.get('metric')}: root {number(evaluation.get('root'))}"
                          f", final {number(evaluation.get('final'))}", style="bold"))
    return Group(*parts)


# ----------------------------------------------------------------------------- PICACO

POOL_PROMPTS = 5  # prompts whose pools are listed in full (the rest: export the session JSON)


def _legend(names: list[str], codes: dict[str, str], what: str) -> Text:
    return safe(f"{what}: " + ", ".join(f"{codes[n]} = {n}" for n in names), style="dim")


def picaco_response(snap: dict, node: dict, prompt: int | None = None, full: bool = False):
    """For one prompt (chosen above the tab; by default the first ones): its aligned pool
    (q_omega per value, q_phi, p_e under this node's instruction) and its noise pool (q_phi, p)."""
    state = _state(snap)
    cut = _cut(full)
    names = [v["name"] for v in state["values"]]
    codes = short_codes(names)
    pes = node.get("detail", {}).get("pe", {})
    if node.get("detail", {}).get("pe_iteration") != state["iteration"]:
        pes = {}  # p_e was computed for an earlier aligned pool
    parts: list = []
    if not state["aligned"] and not state["noise"]:
        parts.append(Text("the pools are empty: step the noise pool and an E-step"))
    legend = _legend(names, codes, "q_ω columns")
    legend.append("   (q_ω = judge score / 5 × 100, in %)")
    parts.append(legend)
    if prompt is not None:
        shown = [prompt]
    elif full:
        shown = list(range(len(state["prompts"])))
    else:
        shown = list(range(min(POOL_PROMPTS, len(state["prompts"]))))
    for i in shown:
        key = str(i)
        prompt_text_ = state["prompts"][i]
        grid = Grid(safe(f"Prompt {i + 1}: {cut(prompt_text_, 80)}"), [("answer", 1)],
                    [codes[n] for n in names] + ["q_φ", "p_e"], label="pool")
        for j, item in enumerate(state["aligned"].get(key, [])):
            pe = pes.get(key, [])
            grid.add([cut(item["text"], 70)],
                     [number(item['q'].get(n, 0), ".0f") for n in names]
                     + [number(item['q_phi']), number(pe[j]) if j < len(pe) else "—"],
                     label="aligned")
        for item in state["noise"].get(key, []):
            grid.add([cut(item["text"], 70)],
                     ["" for _ in names] + [number(item['q_phi']), number(item['p'])], label="noise")
        parts.append(grid)
    if prompt is None and not full and len(state["prompts"]) > POOL_PROMPTS:
        parts.append(Text(f"… {len(state['prompts']) - POOL_PROMPTS} more prompts: z shows every "
                          f"pool", style="dim"))
    evaluation = node.get("detail", {}).get("evaluation")
    if isinstance(evaluation, dict):
        grid = Grid("Evaluation answers", [("prompt", 2), ("answer", 3), ("scores", 2)], [])
        for row in evaluation.get("rows") or []:
            row_codes = short_codes(list(row["scores"]))
            grid.add([cut(state["prompts"][row["prompt"]], 60), cut(row["response"], 80),
                      " ".join(f"{row_codes[k]} {number(v['score'], 'g')}"
                               for k, v in row["scores"].items())], [])
        parts.append(grid)
    parts += heldout_answers(snap, node, full)
    return Group(*parts)


def opro_response(snap: dict, node: dict, full: bool = False):
    """OPRO: the node's answers to the optimization prompts, each judged on every value
    (q_ω in %), their mean being the node's score."""
    state = _state(snap)
    cut = _cut(full)
    names = [v["name"] for v in state.get("values") or [] if isinstance(v, dict)]
    codes = short_codes(names)
    answers = (node.get("detail") or {}).get("answers")
    parts: list = []
    if node.get("reward") is None and not answers:
        parts.append(Text("not scored yet: OPRO answers every optimization prompt with this "
                          "instruction and judges each answer on every value"))
    elif not isinstance(answers, list):
        parts.append(Text("this session did not keep the answers (it is older than that); "
                          "the Calls tab lists the calls made for this node", style="dim"))
    else:
        parts.append(_legend(names, codes, "q_ω in % (judge score / 5 × 100)"))
        prompts = state.get("prompts") or []
        grid = Grid(f"Answers to the {len(prompts)} optimization prompts "
                    f"(score = mean q_ω; the node's score is their mean)",
                    [("prompt", 2), ("answer", 3)], [codes[n] for n in names] + ["score"])
        for a in answers:
            if not isinstance(a, dict):
                continue
            i = a.get("prompt")
            question = prompts[i] if isinstance(i, int) and 0 <= i < len(prompts) else i
            q = a.get("q") if isinstance(a.get("q"), dict) else {}
            values = [v for v in q.values() if isinstance(v, (int, float))]
            grid.add([cut(question, 80), cut(a.get("response"), 120)],
                     [number(q.get(n), ".0f") for n in names]
                     + [number(sum(values) / len(values), ".1f") if values else "—"])
        parts.append(grid)
    parts += heldout_answers(snap, node, full)
    return Group(*parts)


def baseline_response(snap: dict, node: dict, full: bool = False):
    """A fixed baseline (Q, Q+IF, Q+IF+CoT, URIAL): no search; its prompt is answered on
    the held-out set only."""
    template = (node.get("meta") or {}).get("template")
    how = {"q": "the query alone, no instruction", "if": "the instruction as system prompt",
           "cot": "the instruction; the model thinks about the values first, then answers",
           "urial": "a URIAL-style header with three demonstrations"}.get(template, template)
    parts: list = [safe(f"A fixed prompt ({how}): {snap['method']} has no search; the held-out "
                        f"evaluation judges its answers", style="dim")]
    answers = heldout_answers(snap, node, full)
    if not answers:
        parts.append(Text("this prompt is not one the held-out evaluation answers with"))
    return Group(*parts, *answers)


def picaco_reward(snap: dict, node: dict, full: bool = False):
    state = _state(snap)
    method = snap["method"]
    out = Text()
    if node["reward"] is None:
        out.append("not scored yet\n")
    elif method == "opro":
        out.append(f"OPRO score = {number(node['reward'], '.1f')}  (mean q_ω in %, over the prompts)\n",
                   style="bold")
        ranked = sorted((n for n in snap["nodes"].values()
                         if n.get("reward") is not None and isinstance(n["reward"], (int, float))),
                        key=lambda n: -n["reward"])
        place = next((i for i, n in enumerate(ranked) if n["id"] == node["id"]), None)
        if place is not None:
            out.append_text(safe(f"rank {place + 1} of {len(ranked)} scored instructions\n"))
        answers = (node.get("detail") or {}).get("answers")
        if isinstance(answers, list) and answers:
            names = [v["name"] for v in state.get("values") or [] if isinstance(v, dict)]
            per = []
            for n in names:
                vals = [a["q"][n] for a in answers if isinstance(a, dict)
                        and isinstance(a.get("q"), dict) and isinstance(a["q"].get(n), (int, float))]
                per.append(f"{n} {number(sum(vals) / len(vals), '.1f') if vals else '—'}")
            out.append_text(safe("per value (mean q_ω, %): " + ", ".join(per) + "\n"))
    elif method == "picaco" and node["meta"].get("tc"):
        pool_t = node.get("detail", {}).get("pe_iteration")
        out.append_text(safe(f"TC_e = {number(node['reward'], '.3f')}  (Eq. 4 on the pools of "
                             f"iteration {pool_t}; β = {state['beta']})\n", style="bold"))
        if pool_t is not None and pool_t != state.get("iteration"):
            out.append_text(safe(f"stale: the pools are now at iteration {state.get('iteration')}; "
                                 f"re-scored if it enters an M-step\n", style="yellow"))
        out.append_text(safe("TC_e by pool iteration: " + ", ".join(
            f"t{t} {number(v, '.3f')}" for t, v in sorted(node["meta"]["tc"].items(),
                                                        key=lambda kv: int(kv[0]))) + "\n"))
    else:
        out.append(f"conformity = {number(node['reward'], '.3f')}\n", style="bold")
    if node["meta"].get("best_of"):
        out.append_text(safe(f"best instruction of iteration "
                             f"{', '.join(map(str, node['meta']['best_of']))}\n", style="bold"))
    written = node.get("detail", {}).get("written_from")
    if written:
        out.append_text(safe(f"written with the hint “{written['technique']}”, shown "
                             f"{len(written['ladder'])} earlier instruction(s): "
                             f"{', '.join(map(str, written['ladder']))}\n"))
    parts: list = [out]
    evaluation = state.get("evaluation")
    if isinstance(evaluation, dict) and evaluation.get("root") is not None:
        parts.append(conformity_chart(evaluation))
        if evaluation.get("relevance"):
            rel = evaluation["relevance"]
            parts.append(safe(f"Schwartz weighting (Eq. 7): overall = mean × relevance / 5; "
                              f"relevance root {rel['root']}, final {rel['final']}"))
    return Group(*parts)


RESPONSE = {"drpo": drpo_response, "vapo": vapo_response}
REWARD = {"drpo": drpo_reward, "vapo": vapo_reward, "picaco": picaco_reward}


def response_view(snap: dict, node: dict, prompt: int | None = None, full: bool = False):
    """The Response tab, the method's own (PICACO: `prompt` picks the pools shown)."""
    if snap["family"] == "picaco":
        if snap["method"] == "opro":
            return opro_response(snap, node, full)
        if snap["method"] in BASELINES:
            return baseline_response(snap, node, full)
        return picaco_response(snap, node, prompt, full)
    return RESPONSE.get(snap["family"], drpo_response)(snap, node, full)


def reward_view(snap: dict, node: dict, full: bool = False):
    return REWARD.get(snap["family"], drpo_reward)(snap, node, full)


def full_view(snap: dict, node: dict, tab: str, prompt: int | None = None) -> tuple[Text, object]:
    """`z`: the active tab of the node with every text whole (a title and a renderable)."""
    names = {"tab-prompt": "Prompt", "tab-response": "Response", "tab-reward": "Reward",
             "tab-critique": "Critique", "tab-diff": "Diff", "tab-calls": "Calls"}
    body = {
        "tab-prompt": lambda: prompt_text(node),
        "tab-response": lambda: response_view(snap, node, prompt, full=True),
        "tab-reward": lambda: reward_view(snap, node, full=True),
        "tab-critique": lambda: critique_text(node),
        "tab-diff": lambda: diff_text(snap, node),
        "tab-calls": lambda: calls_table(snap, node, full=True),
    }.get(tab, lambda: prompt_text(node))()
    title = detail_header(snap, node)
    title.append_text(safe(f"\n{names.get(tab, 'Prompt')} in full · escape back",
                           style="bold"))
    return title, body
