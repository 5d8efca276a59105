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
    if snap["family"] == "picaco" and stats.get("TC") is not None:
        return f"TC{stats['TC']:.2f} "
    return ""


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


RESPONSE = {"drpo": drpo_response, "vapo": vapo_response}
REWARD = {"drpo": drpo_reward, "vapo": vapo_reward}


def response_view(snap: dict, node: dict):
    return RESPONSE.get(snap["family"], drpo_response)(snap, node)


def reward_view(snap: dict, node: dict):
    return REWARD.get(snap["family"], drpo_reward)(snap, node)
