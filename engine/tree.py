"""The search tree (a forest: DRPO's ICL phase has one tree per example) and its nodes.

Nodes are plain dicts so the whole tree serializes as it is. Fields (DESIGN §2):

    id, parent, children, kind ("root" | "candidate" | "human" | "regenerated"),
    text (the state: a system prompt, an ICL response, a meta-instruction),
    status ("open" | "expanded" | "pruned" | "failed"), accepted (bool), error,
    reward (float | None), detail (method-specific: query, response, aspects, scores...),
    critique (the feedback its children were written from; the person may edit it),
    meta (method-specific: phase, level, example...), created_step, cost, calls (ids)
"""
from __future__ import annotations

from typing import Iterable, Iterator

STATUSES = ("open", "expanded", "pruned", "failed")
KINDS = ("root", "candidate", "human", "regenerated")


def note_call(node: dict, record: dict) -> None:
    """Book a gateway call (its id and cost) on the node it worked for, once."""
    if record["id"] not in node["calls"]:
        node["calls"].append(record["id"])
        node["cost"] = round(node["cost"] + record.get("cost", 0.0), 8)


class Tree:
    def __init__(self, nodes: dict | None = None, roots: list | None = None, next_id: int = 0):
        self.nodes: dict[str, dict] = nodes or {}
        self.roots: list[str] = roots or []
        self.next_id = next_id

    # ------------------------------------------------------------------ building

    def add(self, text: str, *, parent: str | None = None, kind: str = "candidate",
            step: int = 0, meta: dict | None = None) -> dict:
        if kind not in KINDS:
            raise ValueError(f"unknown node kind {kind!r}")
        node_id = f"n{self.next_id}"
        self.next_id += 1
        node = {
            "id": node_id, "parent": parent, "children": [], "kind": kind, "text": text,
            "status": "open", "accepted": False, "error": None, "reward": None,
            "detail": {}, "critique": None, "meta": dict(meta or {}),
            "created_step": step, "cost": 0.0, "calls": [],
            "depth": 0 if parent is None else self.nodes[parent]["depth"] + 1,
        }
        self.nodes[node_id] = node
        if parent is None:
            self.roots.append(node_id)
        else:
            self.nodes[parent]["children"].append(node_id)
        return node

    def fail(self, node_id: str, reason: str) -> None:
        node = self.nodes[node_id]
        node["status"] = "failed"
        node["error"] = reason

    def reopen(self, node_id: str) -> int:
        """A failed node, made ready for a retry: its error is kept in its history.

        Returns how many times it has been retried (1 for the first retry)."""
        node = self.nodes[node_id]
        meta = node["meta"]
        meta.setdefault("errors", []).append(node["error"])
        meta["retries"] = meta.get("retries", 0) + 1
        node["status"] = "expanded" if node["children"] else "open"
        node["error"] = None
        return meta["retries"]

    def failed(self) -> list[str]:
        """Failed nodes outside pruned subtrees, in creation order."""
        return [n["id"] for n in sorted(self.nodes.values(), key=lambda n: int(n["id"][1:]))
                if n["status"] == "failed" and not self.is_pruned(n["id"])]

    # ------------------------------------------------------------------ queries

    def __getitem__(self, node_id: str) -> dict:
        return self.nodes[node_id]

    def __contains__(self, node_id: str) -> bool:
        return node_id in self.nodes

    def __len__(self) -> int:
        return len(self.nodes)

    def path(self, node_id: str) -> list[dict]:
        """Nodes from the root down to `node_id` (inclusive)."""
        out = []
        current: str | None = node_id
        while current is not None:
            node = self.nodes[current]
            out.append(node)
            current = node["parent"]
        return list(reversed(out))

    def subtree(self, node_id: str) -> Iterator[dict]:
        stack = [node_id]
        while stack:
            node = self.nodes[stack.pop()]
            yield node
            stack.extend(reversed(node["children"]))

    def is_pruned(self, node_id: str) -> bool:
        """A node is pruned when it or any ancestor is: a pruned subtree is out of the search."""
        return any(n["status"] == "pruned" for n in self.path(node_id))

    def usable(self, node_ids: Iterable[str]) -> list[dict]:
        """Nodes that may be ranked or expanded: scored, not failed, not in a pruned subtree."""
        out = []
        for node_id in node_ids:
            node = self.nodes[node_id]
            if node["status"] == "failed" or node["reward"] is None:
                continue
            if self.is_pruned(node_id):
                continue
            out.append(node)
        return out

    def accepted(self) -> str | None:
        for node in self.nodes.values():
            if node["accepted"]:
                return node["id"]
        return None

    def best(self, phase: str | None = None) -> dict | None:
        """Highest-reward usable node (ties: the earlier node)."""
        candidates = [n for n in self.usable(self.nodes)
                      if phase is None or n["meta"].get("phase") == phase]
        if not candidates:
            return None
        return max(candidates, key=lambda n: (n["reward"], -int(n["id"][1:])))

    # ------------------------------------------------------------------ state

    def to_dict(self) -> dict:
        return {"nodes": self.nodes, "roots": self.roots, "next_id": self.next_id}

    @classmethod
    def from_dict(cls, data: dict) -> "Tree":
        return cls(nodes=data.get("nodes", {}), roots=data.get("roots", []),
                   next_id=data.get("next_id", 0))
