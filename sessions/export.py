"""Export a prompt from a session: the accepted node by default, else the final one."""
from __future__ import annotations

import json

FORMATS = ("txt", "md", "json")


def choose_node(session: dict, node_id: str | None = None) -> dict:
    nodes = session["tree"]["nodes"]
    if node_id is not None:
        if node_id not in nodes:
            raise KeyError(f"no node {node_id!r} in session {session['id']}")
        return nodes[node_id]
    accepted = next((n for n in nodes.values() if n.get("accepted")), None)
    if accepted is not None:
        return accepted
    state = session.get("method_state", {})
    final = state.get("final")
    if final is None and state.get("icl_final"):
        final = state["icl_final"][str(max(map(int, state["icl_final"])))]
    if final is not None:
        return nodes[final]
    scored = [n for n in nodes.values() if n["reward"] is not None and n["status"] != "failed"]
    if scored:
        return max(scored, key=lambda n: n["reward"])
    raise KeyError(f"session {session['id']} has no accepted, final or scored node yet")


def optimized_examples(session: dict) -> list[dict]:
    """The ICL examples the prompt goes with (optimized ones where the ICL search ran)."""
    state = session.get("method_state", {})
    nodes = session["tree"]["nodes"]
    out = []
    for i, (query, response) in enumerate(state.get("data", {}).get("icl", [])):
        node_id = state.get("icl_final", {}).get(str(i))
        out.append({"query": query, "response": nodes[node_id]["text"] if node_id else response})
    return out


def export(session: dict, node_id: str | None = None, fmt: str = "txt") -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    node = choose_node(session, node_id)
    if fmt == "txt":
        return node["text"].rstrip() + "\n"
    info = {
        "session": session["id"], "name": session.get("name", ""), "method": session["method"],
        "node": node["id"], "kind": node["kind"], "phase": node["meta"].get("phase"),
        "reward": node["reward"], "accepted": node.get("accepted", False),
        "text": node["text"],
    }
    if fmt == "json":
        info["detail"] = node.get("detail", {})
        state = session.get("method_state", {})
        if node["meta"].get("phase") == "prompt" and "data" in state:
            info["icl_examples"] = optimized_examples(session)
        if state.get("evaluation"):
            info["evaluation"] = state["evaluation"]
        if "aligned" in state:  # PICACO: the pools, per prompt, and the demonstrations
            info["prompts"] = state["prompts"]
            info["pools"] = {"aligned": state["aligned"], "noise": state["noise"]}
            info["demonstrations"] = state["demos"]
        return json.dumps(info, indent=2, ensure_ascii=False) + "\n"
    reward = "—" if node["reward"] is None else f"{node['reward']:.2f}"
    lines = [f"# {session.get('name') or session['id']} — {session['method']}", "",
             f"- node: `{node['id']}` ({node['kind']}{', accepted' if info['accepted'] else ''})",
             f"- reward: {reward}", "", "## Prompt", "", "```text", node["text"].rstrip(), "```", ""]
    scores = node.get("detail", {}).get("scores") or {}
    if scores:
        lines += ["## Evaluation", "", "| aspect | score | rationale |", "|---|---|---|"]
        for aspect, item in scores.items():
            rationale = " ".join(str(item["rationale"]).split()).replace("|", "\\|")
            lines.append(f"| {aspect} | {item['score']:g} | {rationale} |")
        lines.append("")
    return "\n".join(lines)
