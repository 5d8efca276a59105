"""The search tree of the workbench: the icons of a node's state (`ICONS`, `MARK` for the
node marked to compare), the label of one node (icon, reward, the method's short statistics,
the first line it adds to its parent's text) and `sync_tree`, which brings a Textual `Tree`
up to date with a snapshot: new nodes added under their parents, changed labels set, the
live path kept open and off-path branches left collapsed. Labels are `rich.text.Text`
(model text is never read as markup).
"""
from __future__ import annotations

from rich.text import Text
from textual.widgets import Tree

from ..text import head, number, safe

ICONS = {"root": "◆", "beam": "●", "best": "★", "expanded": "○", "pruned": "⌀",
         "failed": "✗", "accepted": "✓", "open": "·"}
MARK = "⚑"


def label_suffix(snap: dict, node: dict) -> str:
    """Short per-node statistics after the reward in the tree label."""
    stats = snap.get("stats", {}).get(node["id"])
    if not stats:
        return ""
    if snap["family"] == "vapo":
        u = "" if stats.get("UCT") is None else f" U{number(stats['UCT'])}"
        return f"Q{number(stats.get('Q'))} N{number(stats.get('N'), 'd')}{u} "
    return ""  # PICACO: the reward shown is TC_e (OPRO: its score)


def node_roles(snap: dict, node: dict) -> set[str]:
    roles = set()
    if node["kind"] == "root":
        roles.add("root")
    if node["id"] in snap["beam"]:
        roles.add("beam")
    if node["id"] == snap["best"]:
        roles.add("best")
    return roles


def node_label(snap: dict, node: dict, marked: str | None = None) -> Text:
    roles = node_roles(snap, node)
    if node["accepted"]:
        icon = ICONS["accepted"]
    elif node["status"] == "failed":
        icon = ICONS["failed"]
    elif node["status"] == "pruned":
        icon = ICONS["pruned"]
    elif "best" in roles:
        icon = ICONS["best"]
    elif "root" in roles:
        icon = ICONS["root"]
    elif "beam" in roles:
        icon = ICONS["beam"]
    elif node["reward"] is None:
        icon = ICONS["open"]
    else:
        icon = ICONS["expanded"]
    reward = "  —  " if node["reward"] is None else number(node["reward"])
    text = node["text"] if node["text"] else ("(failed)" if node["status"] == "failed"
                                              else "(writing…)")
    if node["meta"].get("phase") == "icl" and node["kind"] == "root":
        text = f"ICL {node['meta'].get('example', 0) + 1}: {node['meta'].get('query', '')}"
    parent = snap["nodes"].get(node["parent"]) if node["parent"] else None
    if parent is not None and node["text"]:
        # siblings share most of their text: show the first line this one adds
        old_lines = set(parent["text"].splitlines())
        added = [ln for ln in node["text"].splitlines() if ln.strip() and ln not in old_lines]
        if added:
            text = "+ " + added[0].strip()
    label = Text()
    if node["id"] == marked:
        label.append(f"{MARK} ", style="bold yellow")
    label.append(f"{icon} {reward} {label_suffix(snap, node)}")
    label.append_text(safe(head(text, 40)))
    if node["status"] == "pruned":
        label.stylize("dim")
    elif "best" in roles:
        label.stylize("bold")
    return label


def sync_tree(tree: Tree, snap: dict, tree_nodes: dict, marked: str | None = None) -> None:
    """Bring `tree` up to date with `snap`; `tree_nodes` (node id -> tree node) is updated."""
    nodes = snap["nodes"]
    on_path = set(snap["best_path"]) | set(snap["beam"])
    for node_id in sorted(nodes, key=lambda i: int(i[1:])):  # parents before children
        node = nodes[node_id]
        label = node_label(snap, node, marked)
        if node_id in tree_nodes:
            tree_node = tree_nodes[node_id]
            if tree_node.label != label:
                tree_node.set_label(label)
            continue
        parent = tree_nodes.get(node["parent"]) if node["parent"] else tree.root
        if parent is None:
            continue
        parent.allow_expand = True
        tree_node = parent.add(label, data=node_id, expand=node_id in on_path or
                               node["parent"] is None, allow_expand=bool(node["children"]))
        tree_nodes[node_id] = tree_node
    for node_id in on_path:  # keep the live path open; off-path branches stay collapsed
        tree_node = tree_nodes.get(node_id)
        while tree_node is not None and tree_node is not tree.root:
            tree_node.expand()
            tree_node = tree_node.parent
