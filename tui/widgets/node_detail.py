"""The node detail of the workbench: what the tabs show for the selected node. Prompt (its
text and error), Critique, Diff (against its parent) and Calls (the model calls made for
it) are the same for every method; Response and Reward are each method's own
(`response_view`, `reward_view`: DRPO's judged answer and aspect scores, VAPO's validation
answers and MCTS statistics, PICACO's pools and conformity).

Each function takes the workbench snapshot and one node and returns something Rich can
render; all model, data and session text goes through `safe` (plain text, escapes
stripped): a `str` in a Rich table cell or title would be parsed as markup. Numbers read
from the session go through `number`, so a damaged or hostile value shows as text.
"""
from __future__ import annotations

import difflib

from rich.console import Group
from rich.table import Table
from rich.text import Text

from ..text import head, number, safe
from .plots import conformity_chart


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


def calls_table(snap: dict, node: dict) -> Table:
    """The model calls made for the node: role, purpose, tokens, cost, latency, error."""
    calls = Table(expand=True)
    for col in ("call", "role", "purpose", "tokens", "cost", "latency", "error"):
        calls.add_column(col)
    for record in snap["calls"].get(node["id"], []):
        calls.add_row(safe(record["id"]), safe(record["role"]), safe(record["purpose"]),
                      safe(f"{record['tokens_in']}→{record['tokens_out']}"),
                      safe("$" + number(record["cost"], ".5f")),
                      safe("cached" if record["cached"] else number(record["latency"]) + "s"),
                      safe(record.get("error") or ""))
    return calls


# ----------------------------------------------------------------------------- DRPO

def drpo_response(snap: dict, node: dict):
    detail = node.get("detail", {})
    response = Text()
    if detail.get("query"):
        response.append("Query\n", style="bold")
        response.append_text(safe(detail["query"]))
        response.append("\n\nResponse\n", style="bold")
        response.append_text(safe(detail.get("response", "")))
    else:
        response.append("not judged yet")
    return response


def drpo_reward(snap: dict, node: dict):
    detail = node.get("detail", {})
    if not detail.get("scores"):
        return Text("no reward yet")
    table = Table(expand=True, show_lines=False)
    table.add_column("aspect")
    table.add_column("score", justify="right")
    table.add_column("rationale", ratio=1)
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

def _item(snap: dict, item_id: int) -> dict:
    return snap["session"]["method_state"]["items"][item_id]


def _results_table(snap: dict, results: list[dict], title: str) -> Table:
    table = Table(title=safe(title), expand=True, title_justify="left")
    table.add_column("", width=1)
    table.add_column("question", ratio=2)
    table.add_column("answer", ratio=2)
    table.add_column("read", width=6)
    for r in results:
        item = _item(snap, r["item"])
        mark = "✓" if r.get("correct") else "✗"
        if item["options"]:
            read = f"{r.get('choice') or '?'}/{item['answer']}"
        else:
            read = f"{r.get('score', '?')}/5"
        table.add_row(mark, safe(head(item["question"], 90)), safe(head(r.get("response", ""), 90)),
                      safe(read))
    return table


def vapo_response(snap: dict, node: dict):
    detail = node.get("detail", {})
    results = detail.get("validation")
    if not results:
        return Text("not validated yet")
    parts = [_results_table(snap, results, f"Validation answers ({len(results)} items; "
                                           f"read = extracted/gold or judge score)")]
    for split in ("test",):
        if detail.get(split):
            parts.append(_results_table(snap, detail[split]["results"],
                                        f"Test answers (metric {number(detail[split]['value'])})"))
    return Group(*parts)


def vapo_reward(snap: dict, node: dict):
    stats = snap.get("stats", {}).get(node["id"], {})
    detail = node.get("detail", {})
    out = Text()
    if node["reward"] is None:
        out.append("no reward yet\n")
    else:
        metric = "accuracy" if snap["session"]["method_state"]["task_type"] == "multiple-choice" \
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
    failed = [r for r in detail.get("validation", []) if not r.get("correct")]
    if failed:
        parts.append(_results_table(snap, failed, f"Failed validation examples ({len(failed)})"))
    action = detail.get("action")
    if action:
        head_text = Text("\nWritten from the parent's ", style="bold")
        if action.get("answers") is not None:
            head_text.append(f"training batch of {len(action['batch'])}: "
                             f"{len(action.get('failed', []))} failed"
                             f"{' (no error: guard feedback)' if action.get('guard') else ''}\n",
                             style="bold")
        else:
            head_text.append_text(safe(f"{action.get('from', 'feedback')}\n", style="bold"))
        parts.append(head_text)
        bad = [a for a in action.get("answers") or [] if not a.get("correct")]
        if bad:
            parts.append(_results_table(snap, bad, "Failed training examples"))
        if action.get("feedback"):
            feedback = Text("Error feedback\n", style="bold")
            feedback.append_text(safe(action["feedback"]))
            parts.append(feedback)
    evaluation = snap["session"]["method_state"].get("evaluation")
    if evaluation and node["id"] in (snap["session"]["method_state"].get("root"),
                                     snap["session"]["method_state"].get("final")):
        parts.append(safe(f"\nTest {evaluation['metric']}: root {evaluation['root']}, "
                          f"final {evaluation['final']}", style="bold"))
    return Group(*parts)


# ----------------------------------------------------------------------------- PICACO

POOL_PROMPTS = 5  # prompts whose pools are listed in full (the rest: export the session JSON)


def _short(name: str) -> str:
    return "".join(w[0] for w in name.replace("-", " ").split()).upper()[:3]


def picaco_response(snap: dict, node: dict, prompt: int | None = None):
    """For one prompt (chosen above the tab; by default the first ones): its aligned pool
    (q_omega per value, q_phi, p_e under this node's instruction) and its noise pool (q_phi, p)."""
    state = snap["session"]["method_state"]
    names = [v["name"] for v in state["values"]]
    pes = node.get("detail", {}).get("pe", {})
    if node.get("detail", {}).get("pe_iteration") != state["iteration"]:
        pes = {}  # p_e was computed for an earlier aligned pool
    parts: list = []
    if not state["aligned"] and not state["noise"]:
        parts.append(Text("the pools are empty: step the noise pool and an E-step"))
    legend = safe("q_ω columns: " + ", ".join(f"{_short(n)} = {n}" for n in names) +
                  "   (q_ω = judge score / 5 × 100, in %)", style="dim")
    parts.append(legend)
    shown = [prompt] if prompt is not None else list(range(min(POOL_PROMPTS, len(state["prompts"]))))
    for i in shown:
        key = str(i)
        prompt_text = state["prompts"][i]
        table = Table(title=safe(f"Prompt {i + 1}: {head(prompt_text, 80)}"), title_justify="left",
                      expand=True)
        table.add_column("pool", width=7)
        table.add_column("answer", ratio=3)
        for n in names:
            table.add_column(safe(_short(n)), width=4, justify="right")
        table.add_column("q_φ", width=5, justify="right")
        table.add_column("p_e", width=5, justify="right")
        for j, item in enumerate(state["aligned"].get(key, [])):
            pe = pes.get(key, [])
            table.add_row("aligned", safe(head(item["text"], 70)),
                          *[safe(number(item['q'].get(n, 0), ".0f")) for n in names],
                          safe(number(item['q_phi'])), safe(number(pe[j]) if j < len(pe) else "—"))
        for item in state["noise"].get(key, []):
            table.add_row("noise", safe(head(item["text"], 70)), *["" for _ in names],
                          safe(number(item['q_phi'])), safe(number(item['p'])))
        parts.append(table)
    if prompt is None and len(state["prompts"]) > POOL_PROMPTS:
        parts.append(Text(f"… {len(state['prompts']) - POOL_PROMPTS} more prompts: every pool is in "
                          f"promptarbor export {snap['id']} --format json", style="dim"))
    evaluation = node.get("detail", {}).get("evaluation")
    if evaluation:
        table = Table(title="Evaluation answers", title_justify="left", expand=True)
        table.add_column("prompt", ratio=2)
        table.add_column("answer", ratio=3)
        table.add_column("scores", ratio=2)
        for row in evaluation["rows"]:
            table.add_row(safe(head(state["prompts"][row["prompt"]], 60)),
                          safe(head(row["response"], 80)),
                          safe(" ".join(f"{_short(k)}{number(v['score'], 'g')}"
                                        for k, v in row["scores"].items())))
        parts.append(table)
    return Group(*parts)


def picaco_reward(snap: dict, node: dict):
    state = snap["session"]["method_state"]
    method = snap["method"]
    out = Text()
    if node["reward"] is None:
        out.append("not scored yet\n")
    elif method == "opro":
        out.append(f"OPRO score = {number(node['reward'], '.1f')}  (mean q_ω in %, over the prompts)\n",
                   style="bold")
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
    if evaluation and evaluation.get("root") is not None:
        parts.append(conformity_chart(evaluation))
        if evaluation.get("relevance"):
            rel = evaluation["relevance"]
            parts.append(safe(f"Schwartz weighting (Eq. 7): overall = mean × relevance / 5; "
                              f"relevance root {rel['root']}, final {rel['final']}"))
    return Group(*parts)


RESPONSE = {"drpo": drpo_response, "vapo": vapo_response, "picaco": picaco_response}
REWARD = {"drpo": drpo_reward, "vapo": vapo_reward, "picaco": picaco_reward}


def response_view(snap: dict, node: dict, prompt: int | None = None):
    if snap["family"] == "picaco":
        return picaco_response(snap, node, prompt)
    return RESPONSE.get(snap["family"], drpo_response)(snap, node)


def reward_view(snap: dict, node: dict):
    return REWARD.get(snap["family"], drpo_reward)(snap, node)
