"""The runner: one per session. It owns the method, the tree and the gateway.

`step()` performs exactly one unit of the method and then saves the whole session
(tree, method state, counters, event log, call log). Because every LLM answer is also in
the gateway's persistent cache, a process killed in the middle of a step replays that step
on resume without paying for the calls it had already made.

A person's operations (prune, unprune, edit critique, regenerate, hand-written prompt,
edit aspects, accept) go through the runner too; each is logged as an event with actor
"user" and saved at once. Steps and operations never overlap (one asyncio lock).
"""
from __future__ import annotations

import asyncio
import copy
import random
import time
import uuid
from typing import Any, Callable, Protocol

from .config import family, missing_models
from .gateway import RETRY_ROUND, Gateway
from .methods.drpo import DRPO
from .tree import Tree, note_call

SCHEMA_VERSION = 1


class Store(Protocol):
    """What the runner needs from a session store (sessions.store implements it)."""

    def save(self, session: dict) -> None: ...


class NoModelError(RuntimeError):
    pass


class SessionStateError(ValueError):
    """A stored session whose method state this version cannot resume (one line)."""


def make_method(cfg: dict, state: dict | None = None):
    kind = family(cfg["method"])
    if kind == "drpo":
        return DRPO(cfg, state)
    if kind == "vapo":
        from .methods.vapo import VAPO
        return VAPO(cfg, state)
    if kind == "picaco":
        from .methods.picaco import PICACO
        return PICACO(cfg, state)
    raise ValueError(f"unknown method {cfg['method']!r}")


def plan_calls(cfg: dict, inputs: dict) -> dict[str, int]:
    """Calls per role a new session with this config and inputs would plan (no calls made)."""
    method = make_method(cfg)

    class _Ctx:  # the set-up only adds roots to a tree
        tree = Tree()
        step = 0

    method.setup(_Ctx(), inputs)
    return method.plan()


class Context:
    """What a method sees while it works: the tree, the gateway, the step number, events."""

    def __init__(self, runner: "Runner"):
        self._runner = runner

    @property
    def tree(self) -> Tree:
        return self._runner.tree

    @property
    def gateway(self) -> Gateway:
        return self._runner.gateway

    @property
    def step(self) -> int:
        return self._runner.session["steps"]

    def rng(self, purpose: str) -> random.Random:
        """A random source derived from the session seed and a purpose (replayable)."""
        return random.Random(f"{self._runner.session['config']['random_seed']}:{purpose}")

    def emit(self, kind: str, node: str | None = None, **payload) -> None:
        self._runner.emit(kind, node, actor="engine", **payload)

    def fail(self, node: dict, problem: Exception | str) -> None:
        """A node's work failed: book the failed call (if any) on it, mark it failed with the
        reason, and say so."""
        record = getattr(problem, "record", None)
        if record:
            note_call(node, record)
        self.tree.fail(node["id"], str(problem))
        self.emit("node_failed", node["id"], error=str(problem))


class Runner:
    def __init__(self, session: dict, store: Store | None = None, cache_dir=None,
                 on_event: Callable[[dict], None] | None = None):
        self.session = session
        self.store = store
        self.listeners: list[Callable[[dict], None]] = [on_event] if on_event else []
        cfg = session["config"]
        self.tree = Tree.from_dict(session["tree"])
        self.method = make_method(cfg, session["method_state"])
        if session["method_state"]:
            self._check_state()
        self.gateway = Gateway(cfg["models"], cfg["gateway"], cache_dir=cache_dir,
                               seed=cfg["random_seed"], on_event=self._on_call_event)
        self.gateway.import_state(session.get("gateway", {}))
        self.gateway.log = list(session.get("call_log", []))
        self.ctx = Context(self)
        self._lock = asyncio.Lock()
        self._pause = False
        self.running = False

    # ------------------------------------------------------------------ creation

    @classmethod
    def create(cls, cfg: dict, inputs: dict, *,
               store: Store | None = None, cache_dir=None, session_id: str | None = None,
               on_event=None, allow_large: bool = False) -> "Runner":
        """A new session, saved. A plan over the calls limit raises ConfigError unless
        `allow_large` (nothing is saved then)."""
        now = time.time()
        session = {
            "schema": SCHEMA_VERSION, "id": session_id or uuid.uuid4().hex[:8],
            "name": cfg.get("name") or "", "method": cfg["method"], "config": cfg,
            "status": "new", "steps": 0, "created": now, "updated": now,
            "tree": Tree().to_dict(), "method_state": {}, "events": [], "call_log": [],
            "gateway": {}, "planned_calls": {}, "accepted": None,
        }
        runner = cls(session, store=store, cache_dir=cache_dir, on_event=on_event)
        runner.method.setup(runner.ctx, inputs)
        session["planned_calls"] = runner.method.plan()
        try:
            from .config import check_plan

            check_plan(session["planned_calls"], allow_large)
        except BaseException:
            runner.gateway.close()
            raise
        runner.emit("session_created", None, actor="user", method=cfg["method"],
                    planned_calls=session["planned_calls"])
        runner.save()
        return runner

    def _check_state(self) -> None:
        """Read what every step reads, so a hand-edited or damaged state fails here, in one
        line, rather than in the middle of a step."""
        try:
            self.method.describe_next()
            self.method.level_key()
            _ = self.method.done, getattr(self.method, "blocked", None)
            self.method.best_node(Context(self))
            self.method.final_node(Context(self))
            if getattr(self.method, "plan_is_bound", False):
                self.method.plan_remaining(Context(self))
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            raise SessionStateError(
                f"session {self.session.get('id')} has a method state this version cannot "
                f"resume ({type(exc).__name__}: {exc})") from None

    # ------------------------------------------------------------------ events & saving

    def emit(self, kind: str, node: str | None, actor: str = "engine", **payload) -> dict:
        event = {"t": round(time.time(), 3), "step": self.session["steps"], "actor": actor,
                 "kind": kind, "node": node, "payload": payload}
        self.session["events"].append(event)
        self._notify(event)
        return event

    def _on_call_event(self, event: dict) -> None:
        # call events go to listeners (live UI); the call log itself is saved with the session
        self._notify({"t": round(time.time(), 3), "step": self.session["steps"],
                      "actor": "engine", "kind": event["kind"], "node": event.get("node"),
                      "payload": event})

    def _notify(self, event: dict) -> None:
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception:
                pass

    def snapshot(self) -> dict:
        """The whole session as plain JSON (a deep copy, safe to hand to another thread)."""
        s = self.session
        s["tree"] = self.tree.to_dict()
        s["method_state"] = self.method.state
        s["gateway"] = self.gateway.export_state()
        s["call_log"] = self.gateway.log
        s["accepted"] = self.tree.accepted()
        s["updated"] = time.time()
        return copy.deepcopy(s)

    def save(self) -> None:
        """Save the whole session, then the cache writes that failed earlier (if any)."""
        snapshot = self.snapshot()
        self._redact(snapshot)
        if self.store is not None:
            self.store.save(snapshot)
        self.gateway.flush_cache()

    def _redact(self, snapshot: dict) -> None:
        """Belt and braces: the gateway redacts keys at the source; errors, events and call
        records are checked again before anything is written."""
        redact = self.gateway.redactor.redact
        for node in snapshot["tree"]["nodes"].values():
            if node.get("error"):
                node["error"] = redact(node["error"])
        for record in snapshot["call_log"]:
            if record.get("error"):
                record["error"] = redact(record["error"])
        snapshot["events"] = [
            {**e, "payload": self.gateway.redactor.redact_all(e["payload"])}
            if e["kind"] in ("node_failed", "warning", "retry") else e
            for e in snapshot["events"]]

    # ------------------------------------------------------------------ stepping

    @property
    def done(self) -> bool:
        return self.method.done

    @property
    def blocked(self) -> str | None:
        """The failed root a search waits on: nothing runs until it is retried."""
        return getattr(self.method, "blocked", None)

    def failed_nodes(self) -> list[str]:
        return self.tree.failed()

    def failed_samples(self) -> int:
        """Samples of the held-out evaluation that failed (their items are left out)."""
        heldout = getattr(self.method, "heldout", None)
        return heldout.failed_samples() if heldout is not None else 0

    def check_models(self) -> None:
        missing = missing_models(self.session["config"])
        if missing:
            raise NoModelError(
                f"no model configured for {', '.join(missing)}: set [models.default] (or "
                f"[models.base], [models.optimizer], [models.evaluator]) to a litellm model string")

    async def step(self) -> list[dict]:
        """Run exactly one unit of the method, then save. Returns the events it produced."""
        async with self._lock:
            if self.method.done or self.blocked:
                return []
            self.check_models()
            self.gateway.begin_step()
            first = len(self.session["events"])
            label = self.method.describe_next()
            self.session["status"] = "running"
            self.emit("step_started", None, label=label)
            await self.method.step(self.ctx)
            self.session["steps"] += 1
            self._replan()
            self.session["status"] = self._status_after_step()
            self.emit("step_finished", None, label=label, calls=self.gateway.totals()["calls"])
            if self.method.done:
                self.emit("run_finished", self.method.final_node(self.ctx),
                          best=self.method.best_node(self.ctx))
            self.save()
            return self.session["events"][first:]

    def _replan(self) -> None:
        """Methods whose plan is an upper bound (DRPO, MCTS) tighten it after every step and
        operation: calls made + calls still to come."""
        if not getattr(self.method, "plan_is_bound", False):
            return
        done = self.gateway.totals()["calls"]
        remaining = self.method.plan_remaining(self.ctx)
        self.session["planned_calls"] = {r: done.get(r, 0) + remaining.get(r, 0) for r in done}

    def _status_after_step(self) -> str:
        if self.blocked:
            return "failed"  # a search's root could not be judged: retry it to go on
        if not self.method.done:
            return "paused"
        final = self.method.final_node(self.ctx)
        if final is None or self.tree[final]["reward"] is None:
            return "failed"  # the search could not judge even its root
        return "done"

    async def run(self, steps: int | None = None, until: str = "end") -> int:
        """Step until done, paused, `steps` units, or (until="level") the level changes."""
        self._pause = False
        self.running = True
        self._cost_at_start = self.gateway.totals()["cost"]
        done_steps = 0
        start_key = self.method.level_key()
        try:
            while not self.method.done and not self._pause and not self.blocked:
                if steps is not None and done_steps >= steps:
                    break
                if self.over_budget():
                    self.emit("budget", None, cost=self.gateway.totals()["cost"],
                              max_usd=self._budget())
                    break
                await self.step()
                done_steps += 1
                if until == "level" and self.method.level_key() != start_key:
                    break
        finally:
            self.running = False
        return done_steps

    def _budget(self) -> float | None:
        return (self.session["config"].get("budget") or {}).get("max_usd")

    def over_budget(self) -> bool:
        """[budget] max_usd: a run (one `run` call) pauses after the step whose cost reaches
        it; resuming starts a new budget, so the search goes on."""
        budget = self._budget()
        spent = self.gateway.totals()["cost"] - getattr(self, "_cost_at_start", 0.0)
        return budget is not None and spent >= budget

    def pause(self) -> None:
        """Let the step in flight finish, then stop before the next one."""
        self._pause = True

    # ------------------------------------------------------------------ a person's operations

    async def _operation(self, kind: str, node: str | None, work, planned: dict | None = None,
                         **payload) -> Any:
        async with self._lock:
            self.gateway.begin_step()
            result = await work() if asyncio.iscoroutinefunction(work) else work()
            if getattr(self.method, "plan_is_bound", False):
                self._replan()
            elif planned:
                for role, n in planned.items():
                    self.session["planned_calls"][role] = self.session["planned_calls"].get(role, 0) + n
            self.emit(kind, node, actor="user", **payload)
            self.save()
            return result

    def _node(self, node_id: str) -> dict:
        if node_id not in self.tree:
            raise KeyError(f"no node {node_id!r} in this session")
        return self.tree[node_id]

    async def prune(self, node_id: str) -> None:
        node = self._node(node_id)
        if node["kind"] == "root":
            raise ValueError("a root cannot be pruned")

        def work():
            node["meta"]["status_before_prune"] = node["status"]
            node["status"] = "pruned"
        await self._operation("prune", node_id, work)

    async def unprune(self, node_id: str) -> None:
        node = self._node(node_id)
        if node["status"] != "pruned":
            raise ValueError("this node is not pruned")

        def work():
            node["status"] = node["meta"].pop("status_before_prune", "open")
        await self._operation("unprune", node_id, work)

    async def edit_critique(self, node_id: str, text: str) -> None:
        node = self._node(node_id)

        def work():
            node["critique"] = text
            node["meta"]["critique_edited"] = True
        await self._operation("edit_critique", node_id, work, text=text)

    async def regenerate(self, node_id: str) -> dict:
        node = self._node(node_id)

        async def work():
            return await self.method.regenerate(self.ctx, node_id)
        child = await self._operation("regenerate", node_id, work,
                                      planned=self.method.op_plan("regenerate", node))
        return child

    async def add_human(self, parent_id: str, text: str) -> dict:
        if not text.strip():
            raise ValueError("the prompt is empty")
        parent = self._node(parent_id)

        async def work():
            return await self.method.add_human(self.ctx, parent_id, text)
        child = await self._operation("add_human", parent_id, work, text=text,
                                      planned=self.method.op_plan("add_human", parent))
        return child

    async def edit_aspects(self, query: str, aspects: list[str]) -> list[str]:
        holder: dict = {}

        async def work():
            holder["ids"] = await self.method.edit_aspects(self.ctx, query, aspects)
            return holder["ids"]
        ids = await self._operation("edit_aspects", None, work, query=query, aspects=aspects)
        self.session["planned_calls"]["evaluator"] += len(ids)
        self.save()
        return ids

    async def retry_failed(self, node_id: str | None = None) -> list[str]:
        """Re-send the failed nodes' calls (all of them, or one node), then save.

        Answers already paid for replay from the cache; calls that failed in transport are
        sent again; a structured answer that never parsed is asked again with new attempt
        indices. The plan grows by the calls the retry made. Returns the ids retried."""
        heldout = self.failed_samples() if node_id is None else 0
        if node_id is not None:
            node = self._node(node_id)
            if node["status"] != "failed":
                raise ValueError(f"node {node_id} has not failed: nothing to retry")
            ids = [node_id]
        else:
            ids = self.tree.failed()
            if not ids and not heldout:
                raise ValueError("no failed node or held-out sample to retry")
        roots = [i for i in ids if self.tree[i]["parent"] is None]
        ids = roots + [i for i in ids if i not in roots]  # a blocked search's root first
        self.check_models()

        async def work():
            before = self.gateway.totals()["calls"]
            for nid in ids:
                if self.tree[nid]["status"] != "failed":
                    continue
                rounds = self.tree[nid]["meta"].get("retries", 0) + 1
                token = RETRY_ROUND.set(rounds)
                try:
                    await self.method.retry(self.ctx, nid)
                finally:
                    RETRY_ROUND.reset(token)
            if heldout:  # the held-out evaluation's failed samples: sent by the next steps
                self.method.retry_heldout()
            after = self.gateway.totals()["calls"]
            for role, n in after.items():
                self.session["planned_calls"][role] = (self.session["planned_calls"].get(role, 0)
                                                       + n - before.get(role, 0))
            if not self.blocked:
                self.session["status"] = "done" if self.method.done else "paused"
            return ids

        return await self._operation("retry", node_id, work, nodes=ids)

    async def accept(self, node_id: str) -> None:
        node = self._node(node_id)
        if node["status"] == "failed" or not node["text"]:
            raise ValueError("a failed node cannot be accepted")

        def work():
            for other in self.tree.nodes.values():
                other["accepted"] = False
            node["accepted"] = True
        await self._operation("accept", node_id, work)

    # ------------------------------------------------------------------ summaries

    def summary(self) -> dict:
        """The object `promptarbor run --json` prints (DESIGN §8)."""
        best_id = self.method.best_node(self.ctx)
        final_id = self.method.final_node(self.ctx)
        best = self.tree[best_id] if best_id else None
        final = self.tree[final_id] if final_id else None
        status = self.session["status"]
        if status in ("new", "running"):
            status = "paused"
        evaluation = self.method.evaluation()
        return {
            "session": self.session["id"], "status": status,
            "steps": self.session["steps"], "calls": self.gateway.totals()["calls"],
            "planned_calls": dict(self.session["planned_calls"]),
            "cost": self.gateway.totals()["cost"],
            "parsed_first_time": self.gateway.parse_first_time(),
            "best": ({"node": best["id"], "reward": best["reward"], "text": best["text"]}
                     if best else None),
            "final": {"node": final["id"], "text": final["text"]} if final else None,
            "accepted": self.tree.accepted(),
            "failed_nodes": len(self.tree.failed()),
            "failed_samples": self.failed_samples(),
            "failures": self.failure_reasons(),
            **({"evaluation": evaluation} if evaluation is not None else {}),
        }

    def failure_reasons(self) -> dict[str, list[str]]:
        """Failed nodes grouped by reason (the reason's first 160 characters)."""
        groups: dict[str, list[str]] = {}
        for node_id in self.tree.failed():
            reason = " ".join(str(self.tree[node_id]["error"] or "unknown").split())
            reason = reason if len(reason) <= 160 else reason[:159] + "…"
            groups.setdefault(reason, []).append(node_id)
        return groups
