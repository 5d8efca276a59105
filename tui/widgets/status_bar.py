"""The workbench's status lines: the title (session, method, base model, state), the status
line under the tree (what the next step does, steps, calls done of planned, each role's
calls, tokens and cost, the held-out evaluation's root → final) and the progress line of a
comparison on the held-out set. Each returns plain `rich.text.Text` (session and model text
never read as markup).
"""
from __future__ import annotations

from rich.text import Text

from ..text import number, one_line, safe


def title_text(snap: dict, busy: bool = False) -> Text:
    s = snap["summary"]
    state = "running" if busy else s["status"]
    return safe(f"PromptArbor ─ session {snap['id']} {one_line(snap['name'], 60)} ─ "
                f"{snap['method']} ─ base: {snap['models']['base']} ─ ● {state}")


def status_text(snap: dict) -> Text:
    s = snap["summary"]
    calls, plan = s["calls"], s["planned_calls"]
    done_calls, planned = sum(calls.values()), sum(plan.values())
    usage = snap["usage"]
    roles = " · ".join(f"{r[:4]} {calls.get(r, 0)} ({usage.get(r, {}).get('tokens_in', 0)}→"
                       f"{usage.get(r, {}).get('tokens_out', 0)} tok"
                       f" ${usage.get(r, {}).get('cost', 0.0):.3f})"
                       for r in ("base", "optimizer", "evaluator"))
    line = safe(f"{snap['next']}   steps {s['steps']}   calls {done_calls}/{planned}   "
                f"{roles}   ${number(s['cost'], '.4f')}")
    ev = s.get("evaluation")
    if ev and (ev.get("final") is not None or ev.get("root") is not None):
        line.append_text(safe(f"   evaluation ({ev['metric']}): root {number(ev.get('root'))}"
                              f" → final {number(ev.get('final'))}", style="bold"))
    return line


def compare_text(runner, calls: int | None = None) -> Text:
    """A comparison's progress: evaluation, batch, calls done of planned, cost."""
    ev = runner.evaluation
    totals = runner.gateway.totals()["calls"]
    done_calls = sum(totals.values()) if calls is None else calls
    planned = sum((runner.doc.get("planned_calls") or {}).values())
    return safe(
        f"comparing {ev.prompts[0].get('label')} with {ev.prompts[-1].get('label')}: "
        f"evaluation {runner.doc['id']} · batch {ev.state['cursor']}/{len(ev.batches())} · "
        f"calls {done_calls}/{planned} · ${runner.cost():.4f}  (p pauses)", style="bold")
