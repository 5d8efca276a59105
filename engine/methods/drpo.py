"""DRPO: dynamic rewarding with prompt optimization (seeds/DRPO.txt §3, App. A, C, E).

Two searches share one beam-search machine:

* ICL optimization (Alg. 1): for each base example (q_i, b_i) the state is the response;
  the evaluator scores it on q_i's selected aspects (no base-model call) and the optimizer
  rewrites it from that feedback.
* System-prompt search (Alg. 2): the state is a system prompt; the base model answers a
  seed query given the prompt and the K optimized ICL examples nearest to that query
  (sentence-embedding cosine); the evaluator scores the answer; the optimizer rewrites the
  prompt from the feedback, seeing the last former prompts on the path.

Schedule (what one step does; every node is judged exactly once, when it is created):

    root   select aspects for x_0 (evaluator, once per query per session), judge the root
           on it (base answer + evaluator score; ICL: score only, on q_i)
    expand level t: the beam = [root] at t = 1, else the top W scored, unpruned children of
           level t-1; select aspects for x_t; each beam state gets M optimizer rewrites,
           written from its own feedback (its judgement at level t-1; the person may have
           edited it), or is kept unchanged (see below)
    score  level t: judge every new child on x_t (base answer + evaluator score)

x_t = X[t mod |X|]: the root and the D levels are judged on D + 1 distinct seed queries
(cycling only when the set is smaller), as the authors' code does (`example[0]` for the
root, `example[len(state)]` after it). X is the seed set shuffled once by the session's seed
(`seed_order = "shuffle"`; "file" keeps the file's order), as the authors' code shuffles its
training queries; the order is stored in the state.

Calls for one search, with b_1 = 1 and b_{t+1} = min(W, M * b_t) beam states per level:

    optimizer  M * sum_t b_t                  (sum_t b_t with samples_in_one_call)
    base       1 + M * sum_t b_t              (0 for ICL optimization)
    evaluator  1 + M * sum_t b_t + S          (S = reward selections: one per distinct query;
                                               0 with static rewarding)

The paper's bound C = 3WMD + D counts W states at every level; the first level only has
the root. The paper's Alg. 1 judges a state before rewriting it and never judges the last
level; we also judge that last level so the final state has a reward (ICL: 1 + 2WMD + 1
per example with W = M = 1, one call more than the paper's count).

Where the authors' code (which produced the published prompts) refines the paper, we follow
it by default (DESIGN §4); a [search] key restores the paper's reading where one exists:

* seed order (`seed_order = "shuffle"`; "file": X in the file's order), see above.

* skip and extend (`skip_rewrite_above`, 4.5): a beam state whose mean score is above it, or
  whose every aspect scored 5, is not rewritten: it goes on unchanged as one child, judged on
  the next query, and the search gets one level more (once per level, at most 10 in all);
  unset: always rewrite. The system-prompt beam search only (the code's ICL loop stops
  instead, see below). Because a kept state may add levels, the plan is an upper bound:
  the worst case over every way states could be kept (each added level follows a level
  where at least one state made one child and no rewrite), recomputed after every step
  and exact once the last level is expanded.
* ICL keeps its best (`icl_keep = "best"`): each example keeps the best-scoring version of
  its response (ties: the later one, as the code's `>=`) and its search stops as soon as
  that version scores 5 on every aspect; "final": Alg. 1 read literally, the final state of
  the top beam after all D levels.
* the transition sees the last `history` (5) prompts on the path, the current one included.
* the ICL phase judges with a strict critic choosing 3-6 aspects and rewrites under the
  code's ICL rules (engine/prompts/drpo.py; no switch); the system-prompt search keeps the
  impartial judge and 2-5 aspects. The two phases keep separate aspect selections.

Other options from the code, off by default: samples_in_one_call (one optimizer call with
n = M; a provider that returns fewer choices gets the missing samples asked one per call,
and the plan counts one call per sample from then on; an unparseable choice is re-sampled
like a per-call answer), beam_rank = "path-mean" (rank by the mean reward along the path).

Monte Carlo (ablation, App. A.2): N = `monte_carlo_samples` (120, the paper's) prompts
sampled from the root with the same transition, in rounds of M; every sample is judged on
the same query x_1, so the final choice (the best) compares rewards on one query only.

An unparseable optimizer answer never crashes: that child is marked failed.
"""
from __future__ import annotations

import asyncio
import random
from typing import Any

from ..evaluation import HeldOut, WithHeldOut, node_prompt
from ..gateway import RETRY_ROUND, CallFailed
from ..parsing import (ParseError, parse_answer, parse_reward_selection, parse_scores,
                       usable_bullet, usable_instruction)
from ..prompts import drpo as P
from ..tree import note_call

SYSTEM_FIELDS = ("analysis", "thought", "new_system_prompt")
ICL_FIELDS = ("analysis", "thought", "new_response")
MAX_EXTRA_LEVELS = 10  # the authors' code: max_depth_increase = 10
ROLES = ("base", "optimizer", "evaluator")


# ----------------------------------------------------------------------------- formulas

def beam_sizes(width: int, samples: int, depth: int) -> list[int]:
    """Number of beam states expanded at each level: b_1 = 1, b_{t+1} = min(W, M * b_t)."""
    sizes = [1]
    for _ in range(depth - 1):
        sizes.append(min(width, samples * sizes[-1]))
    return sizes[:depth]


def search_calls(width: int, samples: int, depth: int, *, with_base: bool,
                 one_call: bool = False) -> dict[str, int]:
    """Calls of one beam search (reward selections excluded: they depend on the queries)."""
    sizes = beam_sizes(width, samples, depth)
    children = samples * sum(sizes)
    return {
        "optimizer": sum(sizes) if one_call else children,
        "base": (1 + children) if with_base else 0,
        "evaluator": 1 + children,
    }


def reward_of(scores: dict) -> float:
    """R(y | aspects) = mean of the selected aspects' 1-5 scores (paper §3.2.1)."""
    values = [item["score"] for item in scores.values()]
    if not values:
        raise ValueError("no scores")
    return sum(values) / len(values)


def all_fives(node: dict) -> bool:
    """Every selected aspect scored 5 (the authors' code stops or skips on it)."""
    scores = (node.get("detail") or {}).get("scores") or {}
    return bool(scores) and all(item["score"] >= 5 for item in scores.values())


def keeps_unchanged(node: dict, threshold: float | None) -> bool:
    """The authors' code keeps a state without rewriting it when its mean score is above
    4.5 or every aspect scored 5 (search_config.get_actions)."""
    if threshold is None or node.get("reward") is None:
        return False
    return node["reward"] > threshold or all_fives(node)


def rank_key(tree, node: dict, rule: str) -> tuple:
    """Sort key for the beam: higher is better; ties go to the earlier node."""
    if rule == "path-mean":
        rewards = [n["reward"] for n in tree.path(node["id"]) if n["reward"] is not None]
        value = sum(rewards) / len(rewards)
    else:
        value = node["reward"]
    return (value, -int(node["id"][1:]))


def top_w(tree, node_ids: list[str], width: int, rule: str) -> list[str]:
    """The top W usable (scored, not failed, not pruned) nodes."""
    usable = tree.usable(node_ids)
    usable.sort(key=lambda n: rank_key(tree, n, rule), reverse=True)
    return [n["id"] for n in usable[:width]]


def best_version(tree, node_ids) -> str | None:
    """The best-scoring usable node; ties go to the later one (the code's `>=`)."""
    usable = tree.usable(node_ids)
    if not usable:
        return None
    return max(usable, key=lambda n: (n["reward"], int(n["id"][1:])))["id"]


def shuffled_order(count: int, seed: Any) -> list[int]:
    """The seed queries' order for a session: a permutation derived from its seed."""
    order = list(range(count))
    random.Random(f"{seed}:drpo seed order").shuffle(order)
    return order


def _add(total: dict, calls: dict) -> None:
    for role, n in calls.items():
        total[role] = total.get(role, 0) + n


# ----------------------------------------------------------------------------- the method

class DRPO(WithHeldOut):
    """DRPO and its ablations as a step machine. `state` is plain JSON, saved each step."""

    def __init__(self, cfg: dict, state: dict | None = None):
        self.cfg = cfg
        self.method = cfg["method"]
        self.search = cfg["search"]
        self.state: dict[str, Any] = state if state is not None else {}
        self._selections: dict[tuple, asyncio.Future] = {}

    # ------------------------------------------------------------------ set-up & plan

    @property
    def static(self) -> bool:
        return self.method == "static-reward"

    @property
    def monte_carlo(self) -> bool:
        return self.method == "monte-carlo"

    def phases(self) -> list[str]:
        phases = []
        if self.method == "drpo-icl" or not self.cfg["data"]["icl_optimized"]:
            phases.append("icl")
        if self.method != "drpo-icl":
            phases.append("prompt")
        return phases

    def setup(self, ctx, inputs: dict) -> None:
        """Create the roots (no calls) and the initial state from {"seed", "icl"}."""
        seed_queries, icl = list(inputs["seed"]), [tuple(p) for p in inputs["icl"]]
        s = self.state
        if self.search.get("seed_order", "shuffle") == "shuffle":
            order = shuffled_order(len(seed_queries), self.cfg.get("random_seed", 0))
        else:
            order = list(range(len(seed_queries)))
        limit = (self.cfg.get("data") or {}).get("seed_limit")
        if limit:
            order = order[:limit]  # after the shuffle: a limited set still mixes the sources
        s.update(data={"seed": [seed_queries[i] for i in order], "seed_file_index": order,
                       "icl": [list(p) for p in icl]},
                 phases=self.phases(), phase_index=0, stage="root", example=0, level=0,
                 levels=[], aspect_cache={}, icl_aspect_cache={}, icl_final={}, retrieval={},
                 roots={}, final=None, done=False, query_shift=0, extra_levels=0,
                 n_ignored=False)
        for i, (query, response) in enumerate(icl):
            if "icl" in s["phases"]:
                node = ctx.tree.add(response, kind="root", step=ctx.step,
                                    meta={"phase": "icl", "example": i, "query": query})
                s["roots"][f"icl:{i}"] = node["id"]
        if "prompt" in s["phases"]:
            node = ctx.tree.add(self.search["initial_prompt"], kind="root", step=ctx.step,
                                meta={"phase": "prompt", "level": 0})
            s["roots"]["prompt"] = node["id"]
        # the held-out evaluation of root vs final (system prompts only: not for drpo-icl)
        HeldOut.setup(s, self.cfg, inputs.get("eval_items") if "prompt" in s["phases"] else None,
                      inputs.get("eval_source", ""))

    def _reopen_evaluation(self) -> None:
        self.state["stage"] = "evaluate"

    def _with_judge(self, calls: dict[str, int]) -> dict[str, int]:
        """The judge's calls (held-out evaluation) join the plan when the session has a judge."""
        if "judge" in self.cfg["models"]:
            calls.setdefault("judge", 0)
        return calls

    # ------------------------------------------------------------------ queries & sizes

    def _seed_query(self, level: int) -> str:
        """The seed query level `level` of the system-prompt search is judged on: the root
        (level 0) on X[0], level t on X[t] (cycling). Monte Carlo judges every sample on X[1].
        Sessions saved before this rule (no `query_shift`) keep theirs: level t on X[t-1]."""
        seed = self.state["data"]["seed"]
        if self.monte_carlo:
            level = min(level, 1)
        shift = self.state.get("query_shift", 1)
        return seed[max(level - shift, 0) % len(seed)]

    def _regular_levels(self) -> int:
        """Levels of the system-prompt search before any extension (MC: its rounds)."""
        return len(self._mc_rounds()) if self.monte_carlo else self.search["depth"]

    def queries_for_prompt_search(self) -> list[str]:
        """The queries of the root and the regular levels, in order (MC: x_0 and x_1)."""
        return [self._seed_query(t) for t in range(self._regular_levels() + 1)]

    def _mc_rounds(self) -> list[int]:
        """Monte Carlo: samples per round (rounds of M, all drawn from the root)."""
        W, M, D = self.search["beam_width"], self.search["samples_per_state"], self.search["depth"]
        total = self.search["monte_carlo_samples"]
        if total is None:  # as many as the beam search's rewrites, in its level sizes
            return [M * b for b in beam_sizes(W, M, D)]
        return [min(M, total - i) for i in range(0, total, M)]

    def _width(self, phase: str) -> int:
        return self.search["icl_beam_width"] if phase == "icl" else self.search["beam_width"]

    def _samples(self, phase: str) -> int:
        return (self.search["icl_samples_per_state"] if phase == "icl"
                else self.search["samples_per_state"])

    def _depth(self, phase: str | None) -> int:
        if phase == "icl":
            return self.search["icl_depth"]
        if self.monte_carlo:
            return len(self._mc_rounds())
        return self.search["depth"] + self.state.get("extra_levels", 0)

    def _skips(self, phase: str | None) -> bool:
        """Skip and extend applies to the system-prompt beam search (not MC, not ICL)."""
        return (phase == "prompt" and not self.monte_carlo
                and self.search.get("skip_rewrite_above") is not None)

    def _one_call(self, samples: int) -> bool:
        """Whether M rewrites of a state go out as one call with n = M."""
        if not self.search["samples_in_one_call"] or samples <= 1 or self.state.get("n_ignored"):
            return False
        from ..local_model import is_embedded

        return not is_embedded(self.cfg["models"]["optimizer"].get("model"))

    def _icl_keep_best(self) -> bool:
        return self.search.get("icl_keep", "best") == "best"

    def _cache(self, phase: str | None) -> dict:
        """Aspect selections per query: the ICL phase's critic has its own."""
        if phase == "icl":
            return self.state.setdefault("icl_aspect_cache", {})
        return self.state["aspect_cache"]

    # ------------------------------------------------------------------ plan

    plan_is_bound = True  # the runner re-plans after every step and operation

    def plan(self) -> dict[str, int]:
        """Calls the whole run will make at most if nothing fails and the person changes
        nothing: exact unless a state is kept unchanged (skip and extend) or an ICL search
        stops early at all-5 scores, which only ever make it smaller."""
        return self.plan_remaining(None)

    def plan_remaining(self, ctx) -> dict[str, int]:
        """Calls still to come from the current state if nothing fails: an upper bound that is
        exact once no level can be added. The runner shows calls made + this as the plan, so
        pruning a node before it is judged removes its calls, and a retry adds the calls it
        made. `ctx` may be None before the first step."""
        s = self.state
        calls = self._with_judge({"base": 0, "optimizer": 0, "evaluator": 0})
        if s["done"]:
            return calls
        _add(calls, self.heldout.plan_remaining())
        if s["stage"] == "evaluate":
            return calls
        for pi in range(s["phase_index"], len(s["phases"])):
            phase = s["phases"][pi]
            current = pi == s["phase_index"] and s["stage"] != "root"
            if phase == "icl":
                _add(calls, self._icl_remaining(ctx, pi == s["phase_index"]))
            elif current:
                _add(calls, self._current_remaining(ctx, "prompt"))
            else:  # the whole search: the root's judgement, then every level
                _add(calls, self._levels_bound("prompt", 1, 1, {"base": 1, "evaluator": 1},
                                               known=[self._seed_query(0)]))
        return calls

    def _icl_remaining(self, ctx, current: bool) -> dict[str, int]:
        s = self.state
        M = self._samples("icl")
        whole = search_calls(self._width("icl"), M, self.search["icl_depth"], with_base=False,
                             one_call=self._one_call(M))
        calls = {"base": 0, "optimizer": 0, "evaluator": 0}
        first = s["example"] if current else 0
        queries = set()
        for e in range(first, len(s["data"]["icl"])):
            if current and e == first and s["stage"] != "root":
                _add(calls, self._current_remaining(ctx, "icl"))
            else:
                _add(calls, whole)
            queries.add(s["data"]["icl"][e][0])
        if not self.static:
            cache = self._cache("icl")
            calls["evaluator"] += sum(1 for q in queries if q not in cache)
        return calls

    def _current_remaining(self, ctx, phase: str) -> dict[str, int]:
        """The rest of the search in progress (stage expand or score)."""
        s = self.state
        record = s["levels"][-1]
        W = self._width(phase)
        if s["stage"] == "expand":
            if phase == "prompt" and self.monte_carlo:
                beam = 1
            else:
                beam = len(top_w(ctx.tree, record["children"], W, self.search["beam_rank"]))
                if not beam and len(s["levels"]) > 1:
                    beam = len(record["beam"])
            return self._levels_bound(phase, s["level"] + 1, beam, {}, known=[])
        # score: the level's unjudged children, then the levels after it
        pending = [c for c in record["children"]
                   if ctx.tree[c]["reward"] is None and ctx.tree[c]["status"] != "failed"
                   and not ctx.tree.is_pruned(c)]
        fixed = {"evaluator": len(pending), "base": len(pending) if phase == "prompt" else 0}
        alive = [c for c in record["children"]
                 if ctx.tree[c]["status"] != "failed" and not ctx.tree.is_pruned(c)]
        beam = min(W, len(alive)) or len(record["beam"])
        return self._levels_bound(phase, s["level"] + 1, beam, fixed, known=[])

    def _levels_bound(self, phase: str, first: int, beam: int, fixed: dict,
                      known: list[str]) -> dict[str, int]:
        """Calls of levels `first` .. the last, `beam` states at the first, plus `fixed` calls
        and the reward selections of the queries not cached yet (system-prompt search; the
        ICL phase counts its own). With skip and extend, k more levels may come, each after
        a level where at least one state was kept unchanged (no rewrite, one child instead
        of M): the bound is, per role, the most over k = 0 .. the levels still allowed."""
        if phase == "prompt" and self.monte_carlo:
            return self._monte_carlo_bound(first, fixed, known)
        depth = self._depth(phase)
        W, M = self._width(phase), self._samples(phase)
        one_call = self._one_call(M)
        with_base = phase == "prompt"
        selections = phase == "prompt" and not self.static
        cache = self._cache(phase)
        extra_left = 0
        if self._skips(phase) and first <= depth:
            extra_left = max(0, MAX_EXTRA_LEVELS - self.state.get("extra_levels", 0))
        best: dict[str, int] | None = None
        for k in range(extra_left + 1):
            calls = {role: fixed.get(role, 0) for role in ROLES}
            queries = {q for q in known if q not in cache} if selections else set()
            b = beam
            for level in range(first, depth + k + 1):
                children = M * b
                calls["optimizer"] += b if one_call else children
                calls["evaluator"] += children
                if with_base:
                    calls["base"] += children
                if selections:
                    query = self._seed_query(level)
                    if query not in cache:
                        queries.add(query)
                b = min(W, children)
            calls["optimizer"] -= k * (1 if one_call else M)
            calls["evaluator"] -= k * (M - 1)
            if with_base:
                calls["base"] -= k * (M - 1)
            calls["evaluator"] += len(queries)
            best = calls if best is None else {r: max(best[r], calls[r]) for r in ROLES}
        return best

    def _monte_carlo_bound(self, first: int, fixed: dict, known: list[str]) -> dict[str, int]:
        rounds = self._mc_rounds()
        calls = {role: fixed.get(role, 0) for role in ROLES}
        for size in rounds[first - 1:]:
            calls["optimizer"] += 1 if self._one_call(size) else size
            calls["base"] += size
            calls["evaluator"] += size
        if not self.static:
            cache = self._cache("prompt")
            queries = set(known) | ({self._seed_query(1)} if first <= len(rounds) else set())
            calls["evaluator"] += sum(1 for q in queries if q not in cache)
        return calls

    # ------------------------------------------------------------------ progress

    @property
    def done(self) -> bool:
        return bool(self.state.get("done"))

    @property
    def blocked(self) -> str | None:
        """The failed root the search waits on (a retry unblocks it), else None."""
        return self.state.get("blocked")

    @property
    def phase(self) -> str | None:
        s = self.state
        if s["done"] or s["phase_index"] >= len(s["phases"]):
            return None  # finished, or in the held-out evaluation
        return s["phases"][s["phase_index"]]

    def depth(self) -> int:
        """Levels of the current search (the system-prompt search's grows as it extends)."""
        return self._depth(self.phase)

    def level_key(self) -> tuple:
        """Changes when a level (or a whole ICL example at its root) is complete."""
        s = self.state
        if s["stage"] == "root":
            completed = -1
        else:
            completed = s["level"] if s["stage"] == "expand" else s["level"] - 1
        return (s["phase_index"], s["example"], completed, s["done"])

    def describe_next(self) -> str:
        s = self.state
        if s["done"]:
            return "finished"
        if s.get("blocked"):
            return f"waiting: the root {s['blocked']} failed; retry it"
        if s["stage"] == "evaluate":
            return self.heldout.describe_next()
        where = (f"ICL example {s['example'] + 1}/{len(s['data']['icl'])}"
                 if self.phase == "icl" else "system prompt")
        if s["stage"] == "root":
            return f"{where}: judge the root"
        return f"{where}, level {s['level'] + (s['stage'] == 'expand')}/{self.depth()}: {s['stage']}"

    def current_root(self) -> str:
        s = self.state
        key = f"icl:{s['example']}" if self.phase == "icl" else "prompt"
        return s["roots"][key]

    def query_for_level(self, level: int) -> str:
        """ICL: the example's own query. System prompt: the root (level 0) on X[0], level t
        on X[t] (Monte Carlo: every sample on X[1])."""
        if self.phase == "icl":
            return self.state["data"]["icl"][self.state["example"]][0]
        return self._seed_query(level)

    # ------------------------------------------------------------------ one step

    async def step(self, ctx) -> None:
        s = self.state
        if s["done"] or s.get("blocked"):
            return
        if s["stage"] == "evaluate":
            verdict = await self.heldout.step(ctx)
            if verdict is not None:
                s["evaluation"] = verdict
                ctx.emit("evaluated", s["final"], evaluation={
                    k: verdict[k] for k in ("judge", "n", "root", "final", "delta")})
                s["done"] = True
        elif s["stage"] == "root":
            await self._step_root(ctx)
        elif s["stage"] == "expand":
            await self._step_expand(ctx)
        else:
            await self._step_score(ctx)

    async def _step_root(self, ctx) -> None:
        s = self.state
        root = ctx.tree[self.current_root()]
        if self.phase == "prompt" and self.search["icl_k"] > 0 and not s["retrieval"]:
            self._prepare_retrieval(ctx)
        query = self.query_for_level(0)
        await self._judge(ctx, root, query, level=0)
        self._after_root(ctx, root, query)

    def _after_root(self, ctx, root: dict, query: str) -> None:
        """A judged root opens its search; a failed one blocks it until it is retried."""
        s = self.state
        if root["status"] == "failed":
            s["blocked"] = root["id"]
            ctx.emit("warning", root["id"], message="the root could not be judged; the search "
                                                    "waits until it is retried")
            return
        s.pop("blocked", None)
        s["levels"] = [{"level": 0, "query": query, "beam": [], "children": [root["id"]]}]
        s["stage"], s["level"] = "expand", 0
        if self._stops_early(ctx):
            self._finish_search(ctx)

    def _search_nodes(self, ctx) -> list[str]:
        """Every node of the current search (its root's subtree)."""
        return [n["id"] for n in ctx.tree.subtree(self.current_root())]

    def _stops_early(self, ctx) -> bool:
        """ICL with icl_keep = "best": the example's best version scores 5 on every aspect
        (the authors' ICL loop stops there)."""
        if self.phase != "icl" or not self._icl_keep_best():
            return False
        best = best_version(ctx.tree, self._search_nodes(ctx))
        return best is not None and all_fives(ctx.tree[best])

    async def _step_expand(self, ctx) -> None:
        s = self.state
        t = s["level"] + 1
        previous = s["levels"][-1]
        phase = self.phase
        if self.monte_carlo and phase == "prompt":
            beam = [self.current_root()]
        else:
            beam = top_w(ctx.tree, previous["children"], self._width(phase),
                         self.search["beam_rank"])
            if not beam and len(s["levels"]) > 1:
                beam = list(previous["beam"])  # nothing survived: the previous beam carries on
                ctx.emit("warning", None, message=f"level {t - 1} has no usable node; "
                                                  f"the previous beam carries on")
        query = self.query_for_level(t)
        ctx.emit("beam", None, level=t, beam=beam, query=query)
        record = {"level": t, "query": query, "beam": beam, "children": []}
        s["levels"].append(record)
        tasks = [self._ensure_aspects(ctx, query)]
        if self.monte_carlo and phase == "prompt":
            rounds = self._mc_rounds()
            tasks.append(self._expand(ctx, ctx.tree[beam[0]], t, rounds[t - 1],
                                      sum(rounds[:t - 1]), record))
        else:
            M = self._samples(phase)
            threshold = self.search.get("skip_rewrite_above") if self._skips(phase) else None
            kept = [node_id for node_id in beam if keeps_unchanged(ctx.tree[node_id], threshold)]
            if kept and s.get("extra_levels", 0) < MAX_EXTRA_LEVELS:
                s["extra_levels"] = s.get("extra_levels", 0) + 1
                ctx.emit("extended", None, level=t, kept=kept, depth=self.depth(),
                         message=f"level {t}: {len(kept)} state(s) kept unchanged; the search "
                                 f"gets one more level ({self.depth()} in all)")
            # sample indices differ per level, so a beam state carried over to a later level
            # gets fresh rewrites rather than its cached ones
            for node_id in beam:
                tasks.append(self._expand(ctx, ctx.tree[node_id], t, M, (t - 1) * M, record,
                                          keep=node_id in kept))
        await asyncio.gather(*tasks)
        s["stage"], s["level"] = "score", t

    async def _step_score(self, ctx) -> None:
        s = self.state
        record = s["levels"][-1]
        pending = [ctx.tree[c] for c in record["children"]
                   if ctx.tree[c]["reward"] is None and ctx.tree[c]["status"] != "failed"
                   and not ctx.tree.is_pruned(c)]
        await asyncio.gather(*(self._judge(ctx, node, record["query"], level=record["level"])
                               for node in pending))
        if s["level"] >= self.depth() or self._stops_early(ctx):
            self._finish_search(ctx)
        else:
            s["stage"] = "expand"

    def _finish_search(self, ctx) -> None:
        """The search's result; then the next example or phase.

        System prompt: the final state of the top beam (paper). Monte Carlo: the best sample
        (all judged on the same query). ICL: the example's best-scoring version (icl_keep =
        "best", the authors' code) or the final state of the top beam ("final", Alg. 1)."""
        s = self.state
        phase = self.phase
        final = None
        if phase == "icl" and self._icl_keep_best():
            final = best_version(ctx.tree, self._search_nodes(ctx))
        elif phase == "prompt" and self.monte_carlo:
            pool = [c for record in s["levels"][1:] for c in record["children"]]
            best = top_w(ctx.tree, pool, 1, "reward")
            final = best[0] if best else None
        else:
            for record in reversed(s["levels"]):
                best = top_w(ctx.tree, record["children"], 1, self.search["beam_rank"])
                if best:
                    final = best[0]
                    break
        if final is None:
            final = self.current_root()
        ctx.emit("search_finished", final, phase=phase, example=s["example"],
                 levels=s["level"])
        if phase == "icl":
            s["icl_final"][str(s["example"])] = final
            s["example"] += 1
            if s["example"] < len(s["data"]["icl"]):
                s.update(stage="root", level=0, levels=[])
                return
        else:
            s["final"] = final
        s["phase_index"] += 1
        s.update(stage="root", level=0, levels=[], example=0)
        if s["phase_index"] >= len(s["phases"]):
            if self.heldout.enabled and s.get("final"):
                self._start_heldout(ctx)
            else:
                s["done"] = True

    def _start_heldout(self, ctx) -> None:
        """Root vs final on the held-out set, each with the ICL examples it goes with."""
        s = self.state
        examples = [list(e) for e in self.optimized_icl(ctx)]
        layout = self.search["layout"]
        root = ctx.tree[s["roots"]["prompt"]]
        final = ctx.tree[s["final"]]
        prompts = [node_prompt(label, node, examples=examples, k=self.search["icl_k"],
                               template=layout)
                   for label, node in (("root", root), ("final", final))]
        if self.search["icl_k"] == 0:
            for prompt in prompts:
                prompt["examples"] = []
        self.heldout.start(prompts)
        s["stage"] = "evaluate"

    # ------------------------------------------------------------------ pieces

    def optimized_icl(self, ctx) -> list[tuple[str, str]]:
        """I*: the result of each ICL search, or the examples as given."""
        s = self.state
        out = []
        for i, (query, response) in enumerate(s["data"]["icl"]):
            node_id = s["icl_final"].get(str(i))
            out.append((query, ctx.tree[node_id]["text"] if node_id else response))
        return out

    def _prepare_retrieval(self, ctx) -> None:
        """K nearest optimized ICL examples for every query the regular levels use (a level
        added later embeds its query when it comes)."""
        from ..embeddings import embed, top_k

        examples = self.optimized_icl(ctx)
        queries = list(dict.fromkeys(self.queries_for_prompt_search()))
        vectors = embed([q for q, _ in examples] + queries)
        ex_vecs, q_vecs = vectors[:len(examples)], vectors[len(examples):]
        self.state["retrieval"] = {
            q: top_k(v, ex_vecs, self.search["icl_k"]) for q, v in zip(queries, q_vecs)}
        ctx.emit("retrieval", None, k=self.search["icl_k"], queries=len(queries))

    def examples_for(self, ctx, query: str) -> list[tuple[str, str]]:
        if self.phase != "prompt" or self.search["icl_k"] == 0:
            return []
        examples = self.optimized_icl(ctx)
        indices = self.state["retrieval"].get(query)
        if indices is None:  # a query outside the regular levels: embed it now
            from ..embeddings import embed, top_k

            vecs = embed([q for q, _ in examples] + [query])
            indices = top_k(vecs[-1], vecs[:-1], self.search["icl_k"])
            self.state["retrieval"][query] = indices
        return [examples[i] for i in indices]

    async def _ensure_aspects(self, ctx, query: str) -> dict:
        """Dynamic reward selection, once per query (and phase) for the whole session."""
        phase = self.phase
        cache = self._cache(phase)
        if query in cache:
            return cache[query]
        if self.static:
            cache[query] = {"aspects": list(P.STATIC_ASPECTS), "reasoning": "static rewarding",
                            "analysis": {}, "new_aspects": {}, "source": "static"}
            return cache[query]
        key = (phase, query)
        if key not in self._selections:
            self._selections[key] = asyncio.ensure_future(self._select(ctx, query, phase))
        try:
            return await asyncio.shield(self._selections[key])
        finally:
            if self._selections.get(key) is not None and self._selections[key].done():
                self._selections.pop(key, None)

    async def _select(self, ctx, query: str, phase: str | None) -> dict:
        cache = self._cache(phase)
        if phase == "icl":  # the authors' ICL critic: 3-6 aspects
            prompt, bounds = P.icl_reward_selection(query), P.ICL_SELECTION_RANGE
        else:
            prompt, bounds = P.reward_selection(query), P.SELECTION_RANGE
        model = P.selection_model(bounds)  # 2-5 distinct catalogue names (ICL: 3-6)
        try:
            sel, _ = await ctx.gateway.ask(
                "evaluator", [{"role": "user", "content": prompt}],
                lambda text: parse_reward_selection(text, P.ASPECTS, min_aspects=bounds[0],
                                                    max_aspects=bounds[1], model=model),
                purpose="reward selection", schema=model)
            entry = {"aspects": sel.aspects, "reasoning": sel.reasoning,
                     "analysis": sel.analysis, "new_aspects": sel.new_aspects,
                     "source": "selected", "warnings": sel.warnings}
        except CallFailed as exc:
            entry = {"aspects": list(P.STATIC_ASPECTS), "reasoning": "", "analysis": {},
                     "new_aspects": {}, "source": "fallback", "error": str(exc)}
            ctx.emit("warning", None, message=f"reward selection failed, using the static "
                                              f"aspects for this query: {exc}")
        cache[query] = entry
        ctx.emit("aspects", None, query=query, aspects=entry["aspects"], phase=phase)
        return entry

    def _scoring_prompt(self, phase: str | None):
        """The ICL phase's strict critic, or the system-prompt search's impartial judge."""
        return P.icl_scoring if phase == "icl" else P.scoring

    async def _judge(self, ctx, node: dict, query: str, level: int) -> None:
        """Base answer (system prompts only) + aspect scores -> reward and feedback."""
        phase = self.phase
        aspects_task = asyncio.ensure_future(self._ensure_aspects(ctx, query))
        try:
            if phase == "prompt":
                examples = self.examples_for(ctx, query)
                layout = P.plain_messages if self.search["layout"] == "plain" else P.chat_messages
                result = await ctx.gateway.call(
                    "base", layout(node["text"], examples, query), purpose="answer",
                    node=node["id"], stop=P.PLAIN_STOP if self.search["layout"] == "plain" else None)
                note_call(node, result.record)
                if result.error:
                    raise CallFailed(f"answer: {result.error}")
                response = result.text.strip()
                if self.search["layout"] == "plain":
                    response = response.split("```")[0].strip() or response
            else:
                response = node["text"]
            selection = await aspects_task
            aspects = selection["aspects"]
            prompt = self._scoring_prompt(phase)(query, response, aspects, selection["reasoning"],
                                                 selection.get("new_aspects"))
            model = P.scores_model(aspects)
            scores, record = await ctx.gateway.ask(
                "evaluator", [{"role": "user", "content": prompt}],
                lambda text: parse_scores(text, aspects, model=model), purpose="score",
                node=node["id"], schema=model)
            note_call(node, record)
        except CallFailed as exc:
            if not aspects_task.done():
                await asyncio.gather(aspects_task, return_exceptions=True)
            ctx.fail(node, exc)
            return
        score_dict = {a: {"score": v.score, "rationale": v.rationale} for a, v in scores.items()}
        node["reward"] = round(reward_of(score_dict), 4)
        node["detail"] = {"query": query, "response": response, "aspects": aspects,
                          "reasoning": selection["reasoning"],
                          "analysis": selection.get("analysis", {}), "scores": score_dict}
        node["meta"].setdefault("level", level)
        if not node["meta"].get("critique_edited"):
            node["critique"] = P.format_evaluation(score_dict)
        ctx.emit("node_scored", node["id"], reward=node["reward"])

    async def _expand(self, ctx, parent: dict, level: int, count: int, offset: int,
                      record: dict, keep: bool = False) -> None:
        """`count` optimizer rewrites of `parent` from its feedback -> children at `level`;
        or (`keep`) the parent goes on unchanged as one child, judged on the new query."""
        parent["status"] = "expanded" if parent["status"] == "open" else parent["status"]
        if keep:
            child = self._child(ctx, parent, parent["text"], level, "candidate")
            threshold = self.search.get("skip_rewrite_above")
            child["meta"]["kept"] = (
                "every aspect scored 5: kept unchanged" if all_fives(parent)
                else f"reward {parent['reward']:.2f} > {threshold}: kept unchanged")
            record["children"].append(child["id"])
            ctx.emit("node_added", child["id"], parent=parent["id"])
            return
        messages = [{"role": "user", "content": self.transition_prompt(ctx, parent)}]
        if count > 1 and self._one_call(count):
            await self._expand_one_call(ctx, parent, level, count, offset, record, messages)
            return
        slots = [self._child(ctx, parent, "", level, "candidate") for _ in range(count)]
        for i, child in enumerate(slots):
            child["meta"]["sample"] = offset + i  # a retry rewrites with the same sample
        record["children"].extend(c["id"] for c in slots)
        await asyncio.gather(*(self._rewrite(ctx, parent, child, messages, offset + i)
                               for i, child in enumerate(slots)))

    def _small_optimizer(self) -> bool:
        """Whether the optimizer is the embedded model, whose system-prompt rewrites are held
        to an instruction to the assistant of at least USABLE_WORDS words (its grammar fixes
        the start; `usable_instruction` checks the rest), so that a run ends with a prompt a
        person can use rather than a sentence about prompts."""
        from ..local_model import is_embedded

        return is_embedded(self.cfg["models"]["optimizer"].get("model"))

    def _small_mode(self, key: str, parent: dict | None) -> str:
        """How the embedded optimizer rewrites `parent`'s system prompt: "bullet" (it writes one
        new bullet, added to the prompt), "whole" (a new prompt with a fixed start, once the
        prompt has the most bullets); "" for other models and for ICL answers."""
        if key != "new_system_prompt" or not self._small_optimizer():
            return ""
        return "bullet" if parent and P.small_prompt_base(parent["text"]) else "whole"

    def _transition_model(self, key: str, parent: dict | None = None):
        mode = self._small_mode(key, parent)
        if mode == "bullet":
            return P.small_bullet_model()
        if mode == "whole":
            return P.transition_model(key, prefix=P.SMALL_PROMPT_START,
                                      min_length=P.SMALL_PROMPT_CHARS)
        return P.transition_model(key)

    def _rewrite_retries(self, gateway, key: str, parent: dict | None) -> int:
        """New samples for a rewrite that does not parse: the gateway's parse_retries, and at
        least P.SMALL_RETRIES for the embedded model's bullets (about half are refused, and
        its samples cost nothing)."""
        retries = gateway.settings["parse_retries"]
        if self._small_mode(key, parent) == "bullet":
            return max(retries, P.SMALL_RETRIES)
        return retries

    def _parser(self, parent: dict | None = None):
        _, key = self._fields()
        model = self._transition_model(key, parent)
        mode = self._small_mode(key, parent)

        def parse(text: str) -> dict:
            answer = parse_answer(text, model).model_dump()
            if mode == "bullet":
                query = parent.get("detail", {}).get("query", "")
                new = usable_bullet(P.small_prompt_base(parent["text"]), answer.pop("new_bullet"),
                                    P.SMALL_BULLET_START, P.USABLE_WORDS, query=query)
                return {**answer, "thought": "added one bullet", key: new}
            if answer[key].strip().lower() in P.PLACEHOLDERS:
                raise ParseError("the answer repeats the template's placeholder")
            if mode == "whole":
                answer[key] = usable_instruction(answer[key], P.USABLE_WORDS)
            return answer
        return parse

    def _accept(self, ctx, parent: dict, child: dict, answer: dict) -> None:
        _, key = self._fields()
        child["text"] = answer[key].strip()
        child["detail"]["transition"] = {"analysis": answer.get("analysis", ""),
                                         "thought": answer.get("thought", "")}
        ctx.emit("node_added", child["id"], parent=parent["id"])

    async def _rewrite(self, ctx, parent: dict, child: dict, messages: list[dict],
                       sample: int) -> None:
        _, key = self._fields()
        try:
            answer, record = await ctx.gateway.ask(
                "optimizer", messages, self._parser(parent),
                purpose="rewrite", node=child["id"], sample=sample,
                schema=self._transition_model(key, parent),
                retries=self._rewrite_retries(ctx.gateway, key, parent))
        except CallFailed as exc:
            ctx.fail(child, exc)
            return
        note_call(child, record)
        self._accept(ctx, parent, child, answer)

    async def _expand_one_call(self, ctx, parent, level, count, offset, record, messages) -> None:
        """M rewrites in one call with n = M (samples_in_one_call). A provider that returns
        fewer choices (the embedded model, litellm dropping `n`) gets the missing samples
        asked one per call, and is asked one per call from then on; a choice that does not
        parse is re-sampled as in the per-call mode (parse_retries fresh samples)."""
        result = await ctx.gateway.call("optimizer", messages, purpose="rewrite",
                                        node=parent["id"], sample=offset, n=count)
        slots = []
        for i in range(count):
            child = self._child(ctx, parent, "", level, "candidate")
            child["meta"]["sample"] = offset + i
            record["children"].append(child["id"])
            note_call(child, result.record)
            slots.append(child)
        if result.error:
            for child in slots:
                ctx.fail(child, f"rewrite: {result.error}")
            return
        texts = result.texts
        if len(texts) < count:
            self.state["n_ignored"] = True
            ctx.emit("warning", parent["id"],
                     message=f"the optimizer returned {len(texts)} of {count} samples asked in "
                             f"one call; the others are asked one per call, and so are later "
                             f"samples")
        parse = self._parser(parent)
        work = []
        for i, child in enumerate(slots):
            if i >= len(texts):
                work.append(self._rewrite(ctx, parent, child, messages, offset + i))
                continue
            try:
                self._accept(ctx, parent, child, parse(texts[i]))
            except ParseError as exc:
                work.append(self._resample(ctx, parent, child, messages, offset + i, str(exc)))
        await asyncio.gather(*work)

    async def _resample(self, ctx, parent: dict, child: dict, messages: list[dict],
                        sample: int, first_reason: str) -> None:
        """Fresh samples for a choice of an n-call that did not parse: attempts 1 .. the
        gateway's parse_retries, as `Gateway.ask` makes them (not new slots of the plan)."""
        gateway = ctx.gateway
        _, key = self._fields()
        parse = self._parser(parent)
        response_format = gateway.response_format("optimizer", self._transition_model(key, parent),
                                                  "rewrite")
        reasons = [first_reason]
        rounds = gateway.settings["parse_retries"] + 1
        for attempt in range(1, rounds * (RETRY_ROUND.get() + 1)):
            result = await gateway.call("optimizer", messages, purpose="rewrite",
                                        node=child["id"], sample=sample, attempt=attempt,
                                        response_format=response_format, count=False)
            note_call(child, result.record)
            if result.error:
                ctx.fail(child, f"rewrite: {result.error}")
                return
            try:
                self._accept(ctx, parent, child, parse(result.text))
                return
            except ParseError as exc:
                reasons.append(str(exc))
                result.record["error"] = f"unparseable answer: {exc}"
        gateway.usage["optimizer"].errors += 1
        ctx.fail(child, f"rewrite: answer did not parse after {len(reasons)} tries "
                               f"({'; '.join(dict.fromkeys(reasons))})")

    def _fields(self) -> tuple[tuple[str, ...], str]:
        return (ICL_FIELDS, "new_response") if self.phase == "icl" else (SYSTEM_FIELDS, "new_system_prompt")

    def _child(self, ctx, parent: dict, text: str, level: int, kind: str) -> dict:
        meta = {"phase": parent["meta"].get("phase"), "level": level}
        if "example" in parent["meta"]:
            meta["example"] = parent["meta"]["example"]
            meta["query"] = parent["meta"].get("query")
        return ctx.tree.add(text, parent=parent["id"], kind=kind, step=ctx.step, meta=meta)

    def transition_prompt(self, ctx, node: dict) -> str:
        detail = node["detail"]
        evaluation = node["critique"] or ""
        if node["meta"].get("phase") == "icl":
            return P.icl_response_transition(detail.get("query", node["meta"].get("query", "")),
                                             node["text"], evaluation)
        # the last `history` prompts on the path, the current one included (the authors'
        # code: previous_system_prompts[-5:])
        path = ctx.tree.path(node["id"])
        history = self.search.get("history", 5)
        shown = path[-history:] if history else []
        first = len(path) - len(shown) + 1 if shown else 1
        if self._small_mode("new_system_prompt", node) == "bullet":
            return P.small_system_prompt_transition(detail.get("query", ""),
                                                    detail.get("response", ""), evaluation)
        return P.system_prompt_transition(node["text"], detail.get("query", ""),
                                          detail.get("response", ""), evaluation,
                                          [n["text"] for n in shown], first)

    # ------------------------------------------------------------------ retrying failed nodes

    async def retry(self, ctx, node_id: str) -> None:
        """Re-send a failed node's calls: its rewrite (if it has no text yet) and its judgement.

        A node of the level waiting to be judged is left to that step. A failed root that
        blocked its search opens it again."""
        node = ctx.tree[node_id]
        ctx.tree.reopen(node_id)
        with self._with_phase(node):
            if node["kind"] != "root" and not node["text"]:
                parent = ctx.tree[node["parent"]]
                messages = [{"role": "user", "content": self.transition_prompt(ctx, parent)}]
                await self._rewrite(ctx, parent, node, messages, node["meta"].get("sample", 0))
                if node["status"] == "failed":
                    return
            s = self.state
            waiting = (not self.done and s["stage"] == "score" and s["levels"]
                       and node_id in s["levels"][-1]["children"])
            if node["reward"] is None and not waiting:
                query = self._query_of(ctx, node)
                await self._judge(ctx, node, query, node["meta"].get("level", 0))
        if self.blocked == node_id:
            self._after_root(ctx, node, self._query_of(ctx, node))

    # ------------------------------------------------------------------ a person's operations

    def op_plan(self, kind: str, node: dict) -> dict[str, int]:
        """Calls a person's operation on `node` adds to the plan."""
        with_base = node["meta"].get("phase") == "prompt"
        if kind == "regenerate":
            return {"optimizer": 1, "evaluator": 1, "base": 1 if with_base else 0}
        return {"evaluator": 1, "base": 1 if with_base else 0}

    def _level_record(self, level: int) -> dict | None:
        for record in self.state["levels"]:
            if record["level"] == level:
                return record
        return None

    def _in_current_search(self, ctx, node: dict) -> bool:
        if self.done:
            return False
        return ctx.tree.path(node["id"])[0]["id"] == self.current_root()

    def _adopt(self, ctx, node: dict) -> None:
        """A person's node joins its level, so it can enter the beam if that is still ahead."""
        if not self._in_current_search(ctx, node):
            return
        record = self._level_record(node["meta"]["level"])
        if record is not None and node["id"] not in record["children"]:
            record["children"].append(node["id"])

    def _query_of(self, ctx, node: dict) -> str:
        """The query a node at this place in the tree is judged on (its siblings' query)."""
        if node["meta"].get("phase") == "icl":
            return node["meta"].get("query") or self.state["data"]["icl"][node["meta"]["example"]][0]
        return self._seed_query(node["meta"].get("level", 0))

    def _with_phase(self, node: dict):
        """Run judge/rewrite helpers in the node's own phase (it may not be the current one)."""
        method = self

        class _Phase:
            def __enter__(self_inner):
                self_inner.saved = (method.state["phase_index"], method.state["done"])
                phase = node["meta"].get("phase")
                if phase in method.state["phases"]:
                    method.state["phase_index"] = method.state["phases"].index(phase)
                    method.state["done"] = False

            def __exit__(self_inner, *exc):
                method.state["phase_index"], method.state["done"] = self_inner.saved

        return _Phase()

    async def add_human(self, ctx, parent_id: str, text: str) -> dict:
        parent = ctx.tree[parent_id]
        child = self._child(ctx, parent, text, parent["meta"].get("level", 0) + 1, "human")
        with self._with_phase(child):
            await self._judge(ctx, child, self._query_of(ctx, child), child["meta"]["level"])
        self._adopt(ctx, child)
        return child

    async def regenerate(self, ctx, node_id: str) -> dict:
        parent = ctx.tree[node_id]
        if parent["reward"] is None:
            raise ValueError("this node has no evaluation yet: judge it before regenerating")
        parent["meta"]["regenerations"] = parent["meta"].get("regenerations", 0) + 1
        sample = 1000 + parent["meta"]["regenerations"]  # never collides with search samples
        child = self._child(ctx, parent, "", parent["meta"].get("level", 0) + 1, "regenerated")
        with self._with_phase(child):
            messages = [{"role": "user", "content": self.transition_prompt(ctx, parent)}]
            await self._rewrite(ctx, parent, child, messages, sample)
            if child["status"] != "failed":
                await self._judge(ctx, child, self._query_of(ctx, child), child["meta"]["level"])
        self._adopt(ctx, child)
        return child

    async def edit_aspects(self, ctx, query: str, aspects: list[str]) -> list[str]:
        """Replace a query's aspects and re-score every node judged on it (evaluator only).

        The ICL phase keeps its own selections: a query of both phases changes in both."""
        icl_cache = self._cache("icl")
        phases = [p for p, cache in (("prompt", self.state["aspect_cache"]), ("icl", icl_cache))
                  if query in cache] or ["prompt"]
        limit = P.ICL_SELECTION_RANGE[1] if phases == ["icl"] else P.SELECTION_RANGE[1]
        if not 1 <= len(aspects) <= limit:
            raise ValueError(f"choose between 1 and {limit} aspects")
        entries = {}
        for phase in phases:
            cache = self._cache(phase)
            entry = dict(cache.get(query, {}))
            entry.update(aspects=list(aspects), source="person",
                         reasoning=entry.get("reasoning", "") + " (aspects set by the person)")
            entry.setdefault("analysis", {})
            entry.setdefault("new_aspects", {})
            cache[query] = entries[phase] = entry
        nodes = [n for n in ctx.tree.nodes.values()
                 if n["detail"].get("query") == query and n["reward"] is not None
                 and (n["meta"].get("phase") or "prompt") in entries]

        async def rescore(node):
            entry = entries[node["meta"].get("phase") or "prompt"]
            with self._with_phase(node):
                prompt = self._scoring_prompt(self.phase)(
                    query, node["detail"]["response"], list(aspects), entry["reasoning"],
                    entry.get("new_aspects"))
                try:
                    model = P.scores_model(list(aspects))
                    scores, record = await ctx.gateway.ask(
                        "evaluator", [{"role": "user", "content": prompt}],
                        lambda text: parse_scores(text, list(aspects), model=model),
                        purpose="score", node=node["id"], schema=model)
                except CallFailed as exc:
                    ctx.emit("warning", node["id"], message=f"re-scoring failed: {exc}")
                    return
                note_call(node, record)
                score_dict = {a: {"score": v.score, "rationale": v.rationale}
                              for a, v in scores.items()}
                node["reward"] = round(reward_of(score_dict), 4)
                node["detail"].update(aspects=list(aspects), scores=score_dict,
                                      reasoning=entry["reasoning"])
                if not node["meta"].get("critique_edited"):
                    node["critique"] = P.format_evaluation(score_dict)
                ctx.emit("node_scored", node["id"], reward=node["reward"])

        for node in nodes:  # sequential: keeps the order (and the call ids) reproducible
            await rescore(node)
        return [n["id"] for n in nodes]

    # ------------------------------------------------------------------ results

    def final_node(self, ctx) -> str | None:
        s = self.state
        if s.get("final"):
            return s["final"]
        if s["phases"] == ["icl"] and s["icl_final"]:
            return s["icl_final"][str(max(map(int, s["icl_final"])))]
        return None

    def best_node(self, ctx) -> str | None:
        phase = "prompt" if "prompt" in self.state["phases"] else "icl"
        node = ctx.tree.best(phase)
        return node["id"] if node else None

    def evaluation(self) -> dict | None:
        """The held-out verdict of root vs final (None before it, or when [eval] is off)."""
        return self.state.get("evaluation")

    def view(self, ctx) -> dict:
        """What the workbench highlights: the current beam, best reward per level."""
        s = self.state
        beam = list(s["levels"][-1].get("beam", [])) if s.get("levels") else []
        per_level: dict[int, float] = {}
        for node in ctx.tree.usable(ctx.tree.nodes):
            if node["meta"].get("phase") != "prompt":
                continue
            level = node["meta"].get("level", 0)
            per_level[level] = max(per_level.get(level, 0.0), node["reward"])
        return {"beam": beam, "per_level": [per_level[k] for k in sorted(per_level)], "stats": {}}
