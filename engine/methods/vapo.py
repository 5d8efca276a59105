"""VAPO-ValueCoT on PromptAgent's Monte Carlo tree search (seeds/VAPO-ValueCoT.txt §3).

State = a system prompt; action = error feedback written by the optimizer (action
meta-prompt) on the base model's mistakes on a sampled training batch; transition = the
optimizer's rewrite (optimization meta-prompt); reward r(s) = the metric of the new prompt
on the validation split: accuracy (multiple choice) or the mean judge score mapped to [0, 1]
(free-form).

MCTS, as PromptAgent implements it (its choices are followed where the paper is silent):

    UCT(c)    = Q(c) + w * sqrt(ln(N(parent) + 1) / max(1, N(c)))          (Eq. 2 as coded)
    N(c)      = number of back-propagated trajectories through c
    Q(c)      = mean over those trajectories of the summed rewards from c to the
                trajectory's end (Eq. 3); before any, Q(c) = r(c)
    terminal  : depth >= depth_limit, or r(c) < (r(root) + r(parent)) / 2 and
                depth > min_depth
    final     = the highest-reward node on the best path, the best path being the iteration
                trajectory with the highest mean reward

One iteration = select (UCT from the root to a leaf) / expand (the leaf gets expand_width
children, one per training batch; the best child by reward continues) / simulate (greedy
rollout: expand the trajectory's end, keep its best child, until a terminal node) /
back-propagate. Each of those is one step; a simulate step expands one node. PromptAgent's
early stop (ending a rollout at a new global best) is not used: rollouts go to the depth
limit or a terminal node.

A training batch on which the parent's prompt makes no error:
    basis (PromptAgent)  skipped, and the slot draws the next batch, as PromptAgent's MCTS
                         expansion does (`if gradient_descent_output['acc'] == -1: continue`
                         in its code before 2024-05-15); its loop was unbounded, here a slot
                         draws at most NO_ERROR_DRAWS batches, then it is recorded as skipped
                         (no child; the parent's meta["skipped"] lists its batches)
    valuecot (VAPO)      expands: "correct faults if found; guard against them if none"
Feedback and rewrites run at OPTIMIZER_TEMPERATURE (1.0, PromptAgent's optimizer setting).

Calls. One expansion of a node makes, for each of its expand_width children:
    base       D * batch_size (the parent's answers on the drawn batches) + V (the child's
               validation)
    optimizer  2 (feedback + rewrite)
    evaluator  D * batch_size + V for free-form tasks (judge scores), else 0
with V = validation size and D = the batches drawn (1 for valuecot; 1 to NO_ERROR_DRAWS for
basis, and a slot skipped after NO_ERROR_DRAWS clean batches makes no optimizer or
validation call). The root's validation costs V base (+ V evaluator). An iteration whose
selected leaf is at depth d expands at most depth_limit - d nodes (fewer when the rollout
meets a terminal node). The held-out evaluation answers the test split under the root and
the final prompt: 2 * test base calls (+ its judge's calls for free-form). The planned count
is an upper bound (D = NO_ERROR_DRAWS for basis), tightened after every step and equal to the
calls made once the run ends.
"""
from __future__ import annotations

import asyncio
import math
import random
from typing import Any

from ..evaluation import HeldOut, WithHeldOut, node_prompt
from ..gateway import CallFailed, gather_or_cancel
from .. import schemas as S
from ..parsing import ParseError, extract_tagged, parse_answer
from ..prompts import vapo as P
from ..tasks import LANGUAGE, extract_choice, format_question
from ..tree import note_call

ROLES = ("base", "optimizer", "evaluator")
# PromptAgent's example config runs the optimizer at temperature 1.0; feedback and rewrites
# use it whatever the optimizer role's own temperature is.
OPTIMIZER_TEMPERATURE = 1.0
# basis (PromptAgent): batches a slot draws before an expansion slot with no error is skipped
NO_ERROR_DRAWS = 3


# ----------------------------------------------------------------------------- formulas

def q_value(node: dict) -> float:
    """Q(s, a): mean of the back-propagated cumulative rewards; the reward before any."""
    cum = node["meta"].get("cum_rewards") or []
    if not cum:
        return node["reward"] if node["reward"] is not None else 0.0
    return sum(cum) / len(cum)


def visits(node: dict) -> int:
    """N(c): trajectories back-propagated through the node."""
    return len(node["meta"].get("cum_rewards") or [])


def uct(node: dict, parent: dict | None, exploration: float) -> float:
    """Q(c) + w * sqrt(ln(N(parent) + 1) / max(1, N(c))) (PromptAgent's form of Eq. 2)."""
    n_parent = visits(parent) if parent is not None else 0
    return q_value(node) + exploration * math.sqrt(math.log(n_parent + 1) / max(1, visits(node)))


def cumulative_rewards(rewards: list[float]) -> list[float]:
    """For a trajectory's rewards r_0..r_L: the sums r_i + ... + r_L, one per node (Eq. 3)."""
    out, total = [], 0.0
    for r in reversed(rewards):
        total += r
        out.append(total)
    return list(reversed(out))


def is_terminal(node: dict, parent: dict | None, root_reward: float, depth_limit: int,
                min_depth: int) -> bool:
    if node["depth"] >= depth_limit:
        return True
    if parent is None or node["reward"] is None or parent["reward"] is None:
        return False
    threshold = (root_reward + parent["reward"]) / 2
    return node["reward"] < threshold and node["depth"] > min_depth


def best_path_and_node(tree, paths: list[list[str]]) -> tuple[list[str] | None, str | None]:
    """The trajectory with the highest mean reward, and its highest-reward node.

    Pruned and failed nodes are left out (a person's prune removes a node from the choice);
    ties go to the earlier trajectory and the earlier node.
    """
    best_path, best_mean = None, -math.inf
    for path in paths:
        usable = tree.usable(path)
        if not usable:
            continue
        mean = sum(n["reward"] for n in usable) / len(usable)
        if mean > best_mean:
            best_path, best_mean = path, mean
    if best_path is None:
        return None, None
    usable = tree.usable(best_path)
    node = max(usable, key=lambda n: (n["reward"], -best_path.index(n["id"])))
    return best_path, node["id"]


# ----------------------------------------------------------------------------- the method

class VAPO(WithHeldOut):
    """VAPO-ValueCoT (meta_prompts = "valuecot") and PromptAgent ("basis") as a step machine."""

    def __init__(self, cfg: dict, state: dict | None = None):
        self.cfg = cfg
        self.search = cfg["search"]
        self.data_cfg = cfg["data"]
        self.state: dict[str, Any] = state if state is not None else {}

    # ------------------------------------------------------------------ set-up & plan

    def setup(self, ctx, inputs: dict) -> None:
        from ..tasks import (paper_split_sizes, select_dimension, split_sizes, split_tasks,
                             task_language)

        # Flames: the records of the dimension the judge scores, when the task has several
        items = select_dimension(inputs["tasks"], self.data_cfg.get("dimension"))
        if self.data_cfg.get("split") == "paper":
            sizes = paper_split_sizes(items)
        else:
            sizes = split_sizes(len(items), self.data_cfg["train"],
                                self.data_cfg["validation"], self.data_cfg["test"])
        split = split_tasks(items, sizes, self.cfg["random_seed"])
        language = task_language(items, self.search.get("language", "auto"))
        root = ctx.tree.add(self.search["initial_prompt"], kind="root", step=ctx.step,
                            meta={"phase": "prompt", "level": 0, "cum_rewards": []})
        self.state.update(
            items=items, split=split, task_type=self.data_cfg["task_type"], root=root["id"],
            language=language, stage="root", iteration=0, path=[], paths=[], final=None,
            evaluation=None, done=False, expansions={})
        # the held-out evaluation: root vs final on the test split, by the judge role
        by_id = {item["id"]: item for item in items}
        test = [{"id": f"i{i}", "query": by_id[i]["question"],
                 "options": by_id[i]["options"] or None, "answer": by_id[i]["answer"],
                 "reference": by_id[i].get("reference"), "categories": [], "fields": {}}
                for i in split["test"]]
        HeldOut.setup(self.state, self.cfg, test, "test split")

    def _reopen_evaluation(self) -> None:
        self.state["stage"] = "evaluate"

    plan_is_bound = True  # the runner re-plans after every step (see plan_remaining)
    _root_has_children = True

    def plan_remaining(self, ctx) -> dict[str, int]:
        self._root_has_children = bool(ctx.tree.usable(ctx.tree[self.state["root"]]["children"]))
        return self.plan()

    @property
    def multiple_choice(self) -> bool:
        return self.state["task_type"] == "multiple-choice"

    @property
    def language(self) -> str:
        """The language of the meta-prompts and the answer-format line ("en" / "zh")."""
        return self.state.get("language") or "en"

    @property
    def skips_clean_batches(self) -> bool:
        """PromptAgent (basis) skips a batch without error; ValueCoT expands it (guards)."""
        return self.search["meta_prompts"] == "basis"

    @property
    def draws(self) -> int:
        """Batches one expansion slot may answer: NO_ERROR_DRAWS for basis, else 1."""
        return NO_ERROR_DRAWS if self.skips_clean_batches else 1

    def expansion_calls(self) -> dict[str, int]:
        """Calls of one expansion (expand_width children), at most: for basis, every slot
        may draw NO_ERROR_DRAWS batches."""
        k = self.search["expand_width"]
        b = min(self.search["batch_size"], len(self.state["split"]["train"]))  # as _batches
        v = len(self.state["split"]["validation"])
        answers = self.draws * b
        return {"base": k * (answers + v), "optimizer": 2 * k,
                "evaluator": 0 if self.multiple_choice else k * (answers + v)}

    def plan(self) -> dict[str, int]:
        """An upper bound on the calls still to come from the current state."""
        s = self.state
        calls = {r: 0 for r in ROLES}
        if "judge" in self.cfg["models"]:
            calls["judge"] = 0
        if s["done"]:
            return calls
        for role, n in self.heldout.plan_remaining().items():
            calls[role] = calls.get(role, 0) + n
        v = len(s["split"]["validation"])
        judge = 0 if self.multiple_choice else 1
        L, T = self.search["depth_limit"], self.search["iterations"]
        expansions = 0
        if s["stage"] == "root":
            calls["base"] += v
            calls["evaluator"] += judge * v
            expansions = L + (T - 1) * (L - 1)
        elif s["stage"] != "evaluate":
            remaining = T - s["iteration"]
            if s["stage"] in ("expand", "simulate") and s["path"]:
                expansions = max(0, L - s["_end_depth"]) + (remaining - 1) * (L - 1)
            elif s["stage"] == "backprop":
                expansions = (remaining - 1) * (L - 1)
            else:  # select: a root without usable children is expanded again (L expansions)
                root = self._root_has_children
                expansions = (L if not root else L - 1) + (remaining - 1) * (L - 1)
        one = self.expansion_calls()
        for role in ROLES:
            calls[role] += expansions * one[role]
        return calls

    # ------------------------------------------------------------------ progress

    @property
    def done(self) -> bool:
        return bool(self.state.get("done"))

    def level_key(self) -> tuple:
        """Changes when an iteration completes (`L` runs one iteration)."""
        s = self.state
        return (s["iteration"], s["stage"] in ("evaluate",), s["done"])

    def describe_next(self) -> str:
        s = self.state
        T = self.search["iterations"]
        if s["done"]:
            return "finished"
        if s.get("blocked"):
            return f"waiting: the root {s['blocked']} failed; retry it"
        if s["stage"] == "root":
            return "validate the root prompt"
        if s["stage"] == "evaluate":
            if self.heldout.started:
                return self.heldout.describe_next()
            return "evaluate the root and the final prompt on the test split"
        where = f"iteration {s['iteration'] + 1}/{T}"
        if s["stage"] == "select":
            return f"{where}: select"
        if s["stage"] == "expand":
            return f"{where}: expand {s['path'][-1]}"
        if s["stage"] == "simulate":
            return f"{where}: simulate (expand {s['path'][-1]})"
        return f"{where}: back-propagate"

    # ------------------------------------------------------------------ one step

    async def step(self, ctx) -> None:
        stage = self.state["stage"]
        if self.state["done"] or self.state.get("blocked"):
            return
        await getattr(self, f"_step_{stage}")(ctx)

    async def _step_root(self, ctx) -> None:
        s = self.state
        root = ctx.tree[s["root"]]
        await self._validate(ctx, root)
        self._after_root(ctx, root)

    def _after_root(self, ctx, root: dict) -> None:
        """A validated root opens the search; a failed one blocks it until it is retried."""
        s = self.state
        if root["status"] == "failed":
            s["blocked"] = root["id"]
            ctx.emit("warning", root["id"], message="the root could not be validated; the "
                                                    "search waits until it is retried")
            return
        s.pop("blocked", None)
        s["stage"] = "select"

    @property
    def blocked(self) -> str | None:
        """The failed root the search waits on (a retry unblocks it), else None."""
        return self.state.get("blocked")

    async def retry(self, ctx, node_id: str) -> None:
        """Re-send a failed node's calls: the whole expansion of its batch if it has no prompt
        yet (answers already paid for replay from the cache), else its validation."""
        node = ctx.tree[node_id]
        ctx.tree.reopen(node_id)
        if node["kind"] == "root":
            await self._validate(ctx, node)
            if self.blocked == node_id:
                self._after_root(ctx, node)
            return
        parent = ctx.tree[node["parent"]]
        action = node["detail"].get("action") or {}
        if not node["text"] and node["kind"] == "candidate" and action.get("batch"):
            sample = node["meta"].get("sample", node["meta"].get("batch", 0))
            # the batch it failed on, then (basis) the batches its slot had left to draw
            candidates = action.get("candidates") or [action["batch"]]
            await self._child_from_batch(ctx, parent, node, candidates, sample)
        elif node["text"]:
            await self._validate(ctx, node)
        else:  # a regenerated node whose rewrite failed: regenerate from its parent again
            await self._regenerate_into(ctx, parent, node)

    def _terminal(self, ctx, node: dict) -> bool:
        parent = ctx.tree[node["parent"]] if node["parent"] else None
        root_reward = ctx.tree[self.state["root"]]["reward"] or 0.0
        return is_terminal(node, parent, root_reward, self.search["depth_limit"],
                           self.search["min_depth"])

    def select_path(self, ctx) -> list[str]:
        """From the root, follow the usable child with the highest UCT to a leaf."""
        w = self.search["exploration"]
        node = ctx.tree[self.state["root"]]
        path = [node["id"]]
        while not self._terminal(ctx, node):
            children = ctx.tree.usable(node["children"])
            if not children:
                break
            node = max(children, key=lambda c: (uct(c, node, w), -int(c["id"][1:])))
            path.append(node["id"])
        return path

    async def _step_select(self, ctx) -> None:
        s = self.state
        path = self.select_path(ctx)
        s["path"] = path
        leaf = ctx.tree[path[-1]]
        s["_end_depth"] = leaf["depth"]
        ctx.emit("selected", leaf["id"], path=path,
                 uct={p: round(uct(ctx.tree[p], ctx.tree[ctx.tree[p]["parent"]],
                                   self.search["exploration"]), 4)
                      for p in path[1:]})
        s["stage"] = "backprop" if self._terminal(ctx, leaf) else "expand"

    async def _step_expand(self, ctx) -> None:
        await self._grow(ctx)

    async def _step_simulate(self, ctx) -> None:
        await self._grow(ctx)

    async def _grow(self, ctx) -> None:
        """Expand the trajectory's end if it has no usable child; the best child continues."""
        s = self.state
        keep = next((i for i, node_id in enumerate(s["path"]) if ctx.tree.is_pruned(node_id)), None)
        if keep is not None:  # the person pruned part of the trajectory: it ends before that
            ctx.emit("warning", s["path"][keep], message="the trajectory was pruned here; "
                                                         "back-propagating what is left")
            s["path"] = s["path"][:keep]
            s["stage"] = "backprop"
            return
        end = ctx.tree[s["path"][-1]]
        if not ctx.tree.usable(end["children"]):
            await self._expand(ctx, end)
        children = ctx.tree.usable(end["children"])
        if not children:
            ctx.emit("warning", end["id"], message="no usable child; the rollout ends here")
            s["stage"] = "backprop"
            return
        best = max(children, key=lambda c: (c["reward"], -int(c["id"][1:])))
        s["path"].append(best["id"])
        s["_end_depth"] = best["depth"]
        s["stage"] = "backprop" if self._terminal(ctx, best) else "simulate"

    async def _step_backprop(self, ctx) -> None:
        s = self.state
        nodes = [ctx.tree[p] for p in s["path"]]
        rewards = [n["reward"] if n["reward"] is not None else 0.0 for n in nodes]
        for node, cum in zip(nodes, cumulative_rewards(rewards)):
            node["meta"].setdefault("cum_rewards", []).append(round(cum, 6))
        s["paths"].append(list(s["path"]))
        ctx.emit("backpropagated", s["path"][-1], path=s["path"],
                 q={n["id"]: round(q_value(n), 4) for n in nodes})
        s["iteration"] += 1
        s["path"] = []
        s["stage"] = "evaluate" if s["iteration"] >= self.search["iterations"] else "select"

    async def _step_evaluate(self, ctx) -> None:
        """Root vs final on the test split (one batch a step), by the judge role."""
        s = self.state
        if s["final"] is None:
            _, final = best_path_and_node(ctx.tree, s["paths"])
            s["final"] = final or s["root"]
        if not self.heldout.enabled:
            s.update(done=True, stage="done")
            ctx.emit("search_finished", s["final"])
            return
        if not self.heldout.started:
            self.heldout.start([node_prompt(label, ctx.tree[node_id]) for label, node_id
                                in (("root", s["root"]), ("final", s["final"]))])
        token = LANGUAGE.set(self.language)  # the test items' answer-format line
        try:
            verdict = await self.heldout.step(ctx)
        finally:
            LANGUAGE.reset(token)
        if verdict is None:
            return
        verdict["metric"] = "accuracy" if self.multiple_choice else verdict["judge"]
        s["evaluation"] = verdict
        for node_id, key in ((s["root"], "root"), (s["final"], "final")):
            ctx.tree[node_id]["detail"]["test"] = {"value": verdict[key]}
        ctx.emit("search_finished", s["final"], evaluation={
            k: verdict[k] for k in ("judge", "n", "root", "final", "delta")})
        s.update(done=True, stage="done")

    # ------------------------------------------------------------------ calls

    async def _answer(self, ctx, node: dict, item: dict) -> dict:
        """The base model's answer to one item under the node's prompt, graded."""
        messages = [{"role": "system", "content": node["text"]},
                    {"role": "user", "content": format_question(item, self.language)}]
        result = await ctx.gateway.call("base", messages, purpose="answer", node=node["id"])
        note_call(node, result.record)
        if result.error:
            raise CallFailed(f"answer: {result.error}", result.record)
        response = result.text.strip()
        out = {"item": item["id"], "response": response}
        if self.multiple_choice:
            out["choice"] = extract_choice(response, item["options"])
            out["correct"] = out["choice"] == item["answer"]
            out["value"] = 1.0 if out["correct"] else 0.0
            return out
        prompt = P.judge(self.data_cfg["dimension"], item["question"], response,
                         item.get("reference"))

        def parse(text: str) -> dict:
            verdict = parse_answer(text, S.VapoJudge)
            return {"score": verdict.score, "reasoning": verdict.reasoning}
        verdict, record = await ctx.gateway.ask(
            "evaluator", [{"role": "user", "content": prompt}], parse, purpose="judge",
            node=node["id"], schema=S.VapoJudge)
        note_call(node, record)
        out.update(score=verdict["score"], reasoning=verdict["reasoning"],
                   value=(verdict["score"] - 1) / 4,
                   correct=verdict["score"] >= self.search["error_below"])
        return out

    async def _answers(self, ctx, node: dict, ids: list[int]) -> list[dict]:
        """All answers, or CallFailed with the others cancelled (nothing runs past the step)."""
        items = self.state["items"]
        return await gather_or_cancel(self._answer(ctx, node, items[i]) for i in ids)

    async def _metric_on(self, ctx, node: dict, ids: list[int], split: str) -> float | None:
        try:
            results = await self._answers(ctx, node, ids)
        except CallFailed as exc:
            ctx.emit("warning", node["id"], message=f"{split} evaluation failed: {exc}")
            return None
        value = round(sum(r["value"] for r in results) / len(results), 4)
        node["detail"][split] = {"value": value, "results": results}
        return value

    async def _validate(self, ctx, node: dict) -> None:
        """r(node): the metric of its prompt on the validation split."""
        try:
            results = await self._answers(ctx, node, self.state["split"]["validation"])
        except CallFailed as exc:
            ctx.fail(node, exc)
            return
        node["reward"] = round(sum(r["value"] for r in results) / len(results), 4)
        node["detail"]["validation"] = results
        node["detail"]["query"] = f"validation split ({len(results)} items)"
        node["meta"]["terminal"] = self._terminal(ctx, node)
        ctx.emit("node_scored", node["id"], reward=node["reward"])

    def _batches(self, node: dict, expansion: int) -> list[list[list[int]]]:
        """For one expansion of `node`: each of its expand_width slots' candidate training
        batches, in the order the slot draws them (one for valuecot, NO_ERROR_DRAWS for
        basis). Seeded; consecutive chunks of a stream of shuffles of the training split,
        one shuffle per pass as a shuffling data loader makes them (the first expand_width
        chunks are the slots' first batches), disjoint while a pass lasts."""
        train = list(self.state["split"]["train"])
        rng = random.Random(f"{self.cfg['random_seed']}:batch:{node['id']}:{expansion}")
        b = min(self.search["batch_size"], len(train))
        k = self.search["expand_width"]
        need = k * self.draws * b
        stream: list[int] = []
        while len(stream) < need:
            rng.shuffle(train)
            stream += train
        return [[stream[(attempt * k + j) * b:(attempt * k + j + 1) * b]
                 for attempt in range(self.draws)] for j in range(k)]

    async def _draw(self, ctx, parent: dict, candidates: list[list[int]]) -> dict:
        """The parent's answers on a slot's batches, drawn in turn until one has an error
        (basis; valuecot takes the first batch as it is).

        {"outcome": "ok" | "failed" | "skipped", "batch", "answers", "clean" (the batches
        without error drawn before), "candidates" (from the batch in use on), "error"}"""
        clean: list[list[int]] = []
        for i, batch in enumerate(candidates):
            try:
                answers = await self._answers(ctx, parent, batch)
            except CallFailed as exc:
                return {"outcome": "failed", "batch": batch, "clean": clean,
                        "candidates": candidates[i:], "error": str(exc), "record": exc.record}
            if not self.skips_clean_batches or any(not a["correct"] for a in answers):
                return {"outcome": "ok", "batch": batch, "answers": answers, "clean": clean,
                        "candidates": candidates[i:]}
            clean.append(batch)
        return {"outcome": "skipped", "clean": clean}

    def _note_skipped(self, ctx, parent: dict, batches: list[list[int]], expansion: int | None,
                      slot: int | None) -> None:
        parent["meta"].setdefault("skipped", []).append(
            {"expansion": expansion, "slot": slot, "batches": batches})
        ctx.emit("batch_skipped", parent["id"], batches=batches,
                 message=f"no error on {len(batches)} training batch(es): the expansion slot is "
                         f"skipped, as PromptAgent skips a batch without error")

    async def _expand(self, ctx, node: dict) -> None:
        s = self.state
        expansion = s["expansions"].get(node["id"], 0)
        s["expansions"][node["id"]] = expansion + 1
        node["status"] = "expanded" if node["status"] == "open" else node["status"]
        slots = self._batches(node, expansion)
        draws = await gather_or_cancel(self._draw(ctx, node, candidates) for candidates in slots)
        children = []
        for j, draw in enumerate(draws):  # children are added in slot order (stable ids)
            if draw["outcome"] == "skipped":
                self._note_skipped(ctx, node, draw["clean"], expansion, j)
                continue
            child = ctx.tree.add("", parent=node["id"], kind="candidate", step=ctx.step,
                                 meta={"phase": "prompt", "level": node["depth"] + 1,
                                       "cum_rewards": [], "batch": j,
                                       "sample": expansion * 100 + j})  # a retry asks alike
            action = {"batch": draw["batch"], "candidates": draw["candidates"]}
            if draw["clean"]:
                action["skipped_batches"] = draw["clean"]
            child["detail"]["action"] = action
            if draw["outcome"] == "failed":
                if draw["record"]:
                    note_call(child, draw["record"])
                ctx.fail(child, draw["error"])
                continue
            children.append((child, draw["answers"]))
        await asyncio.gather(*(self._child_from_answers(ctx, node, child, answers,
                                                        child["meta"]["sample"])
                               for child, answers in children))
        if all(draw["outcome"] == "skipped" for draw in draws):
            ctx.emit("warning", node["id"], message=f"expansion skipped: no training batch "
                                                    f"drawn ({self.draws} per slot) had an error")
        made = [ctx.tree[c] for c in node["children"]]
        feedbacks = [c["detail"]["action"]["feedback"] for c in made
                     if c["detail"].get("action", {}).get("feedback")]
        if feedbacks and not node["meta"].get("critique_edited"):
            node["critique"] = "\n\n".join(
                f"[batch {i + 1}]\n{text}" if len(feedbacks) > 1 else text
                for i, text in enumerate(feedbacks))

    async def _child_from_batch(self, ctx, parent: dict, child: dict,
                                candidates: list[list[int]], sample: int) -> None:
        """A retry of a child whose expansion failed: draw its slot's batches again (answers
        already paid for replay from the cache), then feedback, rewrite and validation."""
        action = child["detail"].setdefault("action", {})
        draw = await self._draw(ctx, parent, candidates)
        if draw["outcome"] == "skipped":
            # every batch left had no error: PromptAgent would not have made this child
            batches = action.get("skipped_batches", []) + draw["clean"]
            s = self.state
            used = {s.get("final"), *s.get("path", []), *(i for p in s.get("paths", []) for i in p)}
            if child["children"] or child["id"] in used:  # kept where something points at it
                ctx.tree.fail(child["id"], "no error on the batches left to draw; "
                                           "nothing to expand from (prune this node)")
                return
            parent["children"].remove(child["id"])
            del ctx.tree.nodes[child["id"]]
            self._note_skipped(ctx, parent, batches, None, child["meta"].get("batch"))
            return
        action.update(batch=draw["batch"], candidates=draw["candidates"])
        if draw["clean"]:
            action["skipped_batches"] = action.get("skipped_batches", []) + draw["clean"]
        if draw["outcome"] == "failed":
            if draw["record"]:
                note_call(child, draw["record"])
            ctx.fail(child, draw["error"])
            return
        await self._child_from_answers(ctx, parent, child, draw["answers"], sample)

    async def _child_from_answers(self, ctx, parent: dict, child: dict, answers: list[dict],
                                  sample: int) -> None:
        """Feedback on the parent's answers to the child's batch, the rewrite, the child's
        validation."""
        variant = self.search["meta_prompts"]
        items = self.state["items"]
        action = child["detail"]["action"]
        try:
            failed = [a for a in answers if not a["correct"]]
            action.update(answers=answers, failed=[a["item"] for a in failed], guard=not failed)
            shown = [P.describe_example(items[a["item"]], a, self.language) for a in failed]
            feedback_result = await ctx.gateway.call(
                "optimizer", [{"role": "user", "content": P.action(
                    variant, parent["text"], shown, len(action["batch"]), self.language)}],
                purpose="feedback", node=child["id"], sample=sample,
                temperature=OPTIMIZER_TEMPERATURE)
            note_call(child, feedback_result.record)
            if feedback_result.error or not feedback_result.text.strip():
                raise CallFailed(f"feedback: {feedback_result.error or 'empty answer'}",
                                 feedback_result.record)
            action["feedback"] = feedback_result.text.strip()
            child["critique"] = None
            await self._rewrite(ctx, parent, child, shown, action["feedback"], sample)
        except CallFailed as exc:
            ctx.fail(child, exc)
            return
        await self._validate(ctx, child)

    async def _rewrite(self, ctx, parent: dict, child: dict, shown: list[str], feedback: str,
                       sample: int) -> None:
        history = [n["text"] for n in ctx.tree.path(parent["id"])]
        prompt = P.optimize(self.search["meta_prompts"], parent["text"], shown, feedback, history,
                            language=self.language)

        def parse(text: str) -> str:
            try:
                new = extract_tagged(text, "<START>", "<END>")
            except ParseError:
                new = parse_answer(text, S.Rewrite).new_prompt
            new = new.strip()
            if len(new) < 5:
                raise ParseError("the new prompt is empty")
            return new
        new_text, record = await ctx.gateway.ask(
            "optimizer", [{"role": "user", "content": prompt}], parse, purpose="rewrite",
            node=child["id"], sample=sample, schema=S.Rewrite,
            temperature=OPTIMIZER_TEMPERATURE)
        note_call(child, record)
        child["text"] = new_text
        ctx.emit("node_added", child["id"], parent=parent["id"])

    # ------------------------------------------------------------------ a person's operations

    def op_plan(self, kind: str, node: dict) -> dict[str, int]:
        v = len(self.state["split"]["validation"])
        judge = 0 if self.multiple_choice else v
        if kind == "regenerate":
            return {"optimizer": 1, "base": v, "evaluator": judge}
        return {"base": v, "evaluator": judge}

    async def add_human(self, ctx, parent_id: str, text: str) -> dict:
        parent = ctx.tree[parent_id]
        child = ctx.tree.add(text, parent=parent_id, kind="human", step=ctx.step,
                             meta={"phase": "prompt", "level": parent["depth"] + 1,
                                   "cum_rewards": []})
        await self._validate(ctx, child)
        return child

    async def regenerate(self, ctx, node_id: str) -> dict:
        """A new child of the node, rewritten from its (possibly edited) critique."""
        node = ctx.tree[node_id]
        if not (node["critique"] or "").strip():
            raise ValueError("this node has no feedback yet: expand it or write a critique first")
        if node["reward"] is None:
            raise ValueError("this node has not been validated")
        node["meta"]["regenerations"] = node["meta"].get("regenerations", 0) + 1
        child = ctx.tree.add("", parent=node_id, kind="regenerated", step=ctx.step,
                             meta={"phase": "prompt", "level": node["depth"] + 1,
                                   "cum_rewards": [],
                                   "sample": 10_000 + node["meta"]["regenerations"]})
        await self._regenerate_into(ctx, node, child)
        return child

    async def _regenerate_into(self, ctx, node: dict, child: dict) -> None:
        items = self.state["items"]
        # the training-batch failures of the node's prompt (from its expansions); never its
        # validation answers: the new child is scored on the validation split
        failed, seen = [], set()
        for child_id in node["children"]:
            for answer in ctx.tree[child_id]["detail"].get("action", {}).get("answers") or []:
                if not answer["correct"] and answer["item"] not in seen:
                    seen.add(answer["item"])
                    failed.append(answer)
        shown = [P.describe_example(items[r["item"]], r, self.language) for r in failed]
        child["detail"]["action"] = {"feedback": node["critique"], "failed": [r["item"] for r in failed],
                                     "from": "the person's critique" if node["meta"].get("critique_edited")
                                     else "the node's feedback"}
        try:
            await self._rewrite(ctx, node, child, shown, node["critique"],
                                child["meta"].get("sample", 10_000))
        except CallFailed as exc:
            ctx.fail(child, exc)
            return
        await self._validate(ctx, child)

    async def edit_aspects(self, ctx, query, aspects):
        raise ValueError("aspects belong to DRPO; VAPO scores with accuracy or a judge")

    # ------------------------------------------------------------------ results & view

    def final_node(self, ctx) -> str | None:
        return self.state.get("final")

    def best_node(self, ctx) -> str | None:
        node = ctx.tree.best()
        return node["id"] if node else None

    def evaluation(self) -> dict:
        """Test-split metric of the root and the final prompt (None until evaluated)."""
        return self.state.get("evaluation") or {
            "metric": "accuracy" if self.multiple_choice else "judge", "root": None, "final": None}

    def view(self, ctx) -> dict:
        """What the workbench highlights: the current path (or the best path when done)."""
        s = self.state
        path = list(s["path"])
        if not path and s["paths"]:
            best, _ = best_path_and_node(ctx.tree, s["paths"])
            path = list(best or [])
        per_depth: dict[int, float] = {}
        for node in ctx.tree.usable(ctx.tree.nodes):
            per_depth[node["depth"]] = max(per_depth.get(node["depth"], 0.0), node["reward"])
        w = self.search["exploration"]
        stats = {}
        for node in ctx.tree.nodes.values():
            parent = ctx.tree[node["parent"]] if node["parent"] else None
            stats[node["id"]] = {"Q": round(q_value(node), 4), "N": visits(node),
                                 "UCT": round(uct(node, parent, w), 4) if parent else None,
                                 "terminal": bool(node["reward"] is not None and self._terminal(ctx, node))}
        return {"beam": path, "per_level": [per_depth[d] for d in sorted(per_depth)],
                "stats": stats}
