"""Method-specific parts of the workbench: the Response and Reward tabs, label suffixes.

Each function takes the workbench snapshot and one node and returns something Rich can
render; all model text goes through `safe` (plain text, escapes stripped).
"""
from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text

from .text import head, safe

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def label_suffix(snap: dict, node: dict) -> str:
    """Short per-node statistics after the reward in the tree label."""
    stats = snap.get("stats", {}).get(node["id"])
    if not stats:
        return ""
    if snap["family"] == "vapo":
        u = "" if stats.get("UCT") is None else f" U{stats['UCT']:.2f}"
        return f"Q{stats['Q']:.2f} N{stats['N']}{u} "
    return ""  # PICACO: the reward shown is TC_e (OPRO: its score)


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
    for aspect, item in detail["scores"].items():
        table.add_row(safe(aspect), f"{item['score']:g}", safe(item["rationale"]))
    reasoning = safe("Aspects chosen: " + ", ".join(detail.get("aspects", [])) +
                     "\nwhy: " + (detail.get("reasoning") or "—") + "\n")
    total = Text(f"\nR = {node['reward']:.2f} (mean of {len(detail['scores'])} aspects)",
                 style="bold")
    return Group(reasoning, table, total)


# ----------------------------------------------------------------------------- VAPO

def _item(snap: dict, item_id: int) -> dict:
    return snap["session"]["method_state"]["items"][item_id]


def _results_table(snap: dict, results: list[dict], title: str) -> Table:
    table = Table(title=title, expand=True, title_justify="left")
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
                      read)
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
                                        f"Test answers (metric {detail[split]['value']:.2f})"))
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
        out.append(f"r = {node['reward']:.3f}  ({metric} on the validation split)\n", style="bold")
    if stats:
        uct = "—" if stats.get("UCT") is None else f"{stats['UCT']:.3f}"
        out.append(f"Q = {stats['Q']:.3f}   N = {stats['N']}   UCT = {uct}"
                   f"{'   terminal' if stats.get('terminal') else ''}\n")
    cum = node["meta"].get("cum_rewards") or []
    if cum:
        out.append("cumulative rewards back-propagated: " + ", ".join(f"{c:.2f}" for c in cum) + "\n")
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
            head_text.append(f"{action.get('from', 'feedback')}\n", style="bold")
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
        parts.append(Text(f"\nTest {evaluation['metric']}: root {evaluation['root']}, "
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
    legend = Text("q_ω columns: " + ", ".join(f"{_short(n)} = {n}" for n in names) +
                  "   (q_ω = judge score / 5)", style="dim")
    parts.append(legend)
    shown = [prompt] if prompt is not None else list(range(min(POOL_PROMPTS, len(state["prompts"]))))
    for i in shown:
        key = str(i)
        prompt_text = state["prompts"][i]
        table = Table(title=f"Prompt {i + 1}: {head(prompt_text, 80)}", title_justify="left", expand=True)
        table.add_column("pool", width=7)
        table.add_column("answer", ratio=3)
        for n in names:
            table.add_column(_short(n), width=4, justify="right")
        table.add_column("q_φ", width=5, justify="right")
        table.add_column("p_e", width=5, justify="right")
        for j, item in enumerate(state["aligned"].get(key, [])):
            pe = pes.get(key, [])
            table.add_row("aligned", safe(head(item["text"], 70)),
                          *[f"{item['q'].get(n, 0):.1f}" for n in names],
                          f"{item['q_phi']:.2f}", f"{pe[j]:.2f}" if j < len(pe) else "—")
        for item in state["noise"].get(key, []):
            table.add_row("noise", safe(head(item["text"], 70)), *["" for _ in names],
                          f"{item['q_phi']:.2f}", f"{item['p']:.2f}")
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
                          " ".join(f"{_short(k)}{v['score']:g}" for k, v in row["scores"].items()))
        parts.append(table)
    return Group(*parts)


def _bar(value: float | None, width: int = 20) -> str:
    if value is None:
        return "—"
    filled = max(0.0, min(1.0, value / 5)) * width
    return "█" * int(filled) + ("▌" if filled - int(filled) >= 0.5 else "")


def conformity_chart(evaluation: dict) -> Table:
    """Per-value conformity of the seed (root) and the final prompt, as bars."""
    table = Table(title="Conformity per value (1-5)", title_justify="left", expand=True)
    table.add_column("value")
    table.add_column("root", ratio=1)
    table.add_column("final", ratio=1)
    for name, pair in evaluation.get("per_value", {}).items():
        table.add_row(safe(name), f"{_bar(pair['root'])} {pair['root'] or 0:.2f}",
                      f"{_bar(pair['final'])} {pair['final'] or 0:.2f}")
    if evaluation.get("root") is not None:
        table.add_row(Text("overall", style="bold"), f"{evaluation['root']:.2f}",
                      f"{evaluation['final']:.2f}" if evaluation.get("final") is not None else "—")
    return table


def picaco_reward(snap: dict, node: dict):
    state = snap["session"]["method_state"]
    method = snap["method"]
    out = Text()
    if node["reward"] is None:
        out.append("not scored yet\n")
    elif method == "opro":
        out.append(f"OPRO score = {node['reward']:.1f}  (mean q_ω × 100 over the prompts)\n", style="bold")
    elif method == "picaco" and node["meta"].get("tc"):
        out.append(f"TC_e = {node['reward']:.3f}  (Eq. 4 with the current pools; β = {state['beta']})\n",
                   style="bold")
        out.append("TC_e after each M-step: " + ", ".join(
            f"t{t} {v:.3f}" for t, v in sorted(node["meta"]["tc"].items(), key=lambda kv: int(kv[0]))) + "\n")
    else:
        out.append(f"conformity = {node['reward']:.3f}\n", style="bold")
    if node["meta"].get("best_of"):
        out.append(f"best instruction of iteration {', '.join(map(str, node['meta']['best_of']))}\n",
                   style="bold")
    written = node.get("detail", {}).get("written_from")
    if written:
        out.append(f"written with the hint “{written['technique']}”, shown "
                   f"{len(written['ladder'])} earlier instruction(s): {', '.join(written['ladder'])}\n")
    parts: list = [out]
    evaluation = state.get("evaluation")
    if evaluation and evaluation.get("root") is not None:
        parts.append(conformity_chart(evaluation))
        if evaluation.get("relevance"):
            rel = evaluation["relevance"]
            parts.append(Text(f"Schwartz weighting (Eq. 7): overall = mean × relevance / 5; "
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
