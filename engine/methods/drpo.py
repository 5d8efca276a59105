"""DRPO: dynamic rewarding with prompt optimization (seeds/DRPO.txt §3, App. A, C, E).

Two searches share one beam-search machine:

* ICL optimization (Alg. 1): for each base example (q_i, b_i) the state is the response;
  the evaluator scores it on q_i's selected aspects (no base-model call) and the optimizer
  rewrites it from that feedback.
* System-prompt search (Alg. 2): the state is a system prompt; at level t the base model
  answers x_t = X[t-1] given the prompt and the K optimized ICL examples nearest to x_t
  (sentence-embedding cosine); the evaluator scores the answer; the optimizer rewrites the
  prompt from the feedback, seeing the former prompts on the path.

Schedule (what one step does; every node is judged exactly once, when it is created):

    root   select aspects for the first query (evaluator, once per query per session),
           judge the root on it (base answer + evaluator score; ICL: score only)
    expand level t: the beam = [root] at t = 1, else the top W scored, unpruned children of
           level t-1; select aspects for x_t; each beam state gets M optimizer rewrites,
           written from its own feedback (the person may have edited it)
    score  level t: judge every new child on x_t (base answer + evaluator score)

Calls for one search, with b_1 = 1 and b_{t+1} = min(W, M * b_t) beam states per level:

    optimizer  M * sum_t b_t                  (sum_t b_t with samples_in_one_call)
    base       1 + M * sum_t b_t              (0 for ICL optimization)
    evaluator  1 + M * sum_t b_t + S          (S = reward selections: one per distinct query;
                                               0 with static rewarding)

The paper's bound C = 3WMD + D counts W states at every level; the first level only has
the root. The paper's Alg. 1 judges a state before rewriting it and never judges the last
level; we also judge that last level so the final state has a reward (ICL: 1 + 2WMD + 1
per example with W = M = 1, one call more than the paper's count).

Where the authors' code differs from the paper, the paper is the default and the code's
choice is an option in [search]: samples_in_one_call (one optimizer call with n = M),
beam_rank = "path-mean" (rank by the mean reward along the path), skip_rewrite_above (no
rewrite when a state's reward is above it: the state carries on as one child). An
unparseable optimizer answer never crashes: that child is marked failed.
"""
from __future__ import annotations

import asyncio
from typing import Any

from ..evaluation import HeldOut, node_prompt
from ..gateway import CallFailed
from ..parsing import ParseError, parse_json_fields, parse_reward_selection, parse_scores
from ..prompts import drpo as P
from ..tree import note_call

SYSTEM_FIELDS = ("analysis", "thought", "new_system_prompt")
ICL_FIELDS = ("analysis", "thought", "new_response")


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


# ----------------------------------------------------------------------------- the method

class DRPO:
    """DRPO and its ablations as a step machine. `state` is plain JSON, saved each step."""

    def __init__(self, cfg: dict, state: dict | None = None):
        self.cfg = cfg
        self.method = cfg["method"]
        self.search = cfg["search"]
        self.state: dict[str, Any] = state if state is not None else {}
        self._selections: dict[str, asyncio.Future] = {}

    # ------------------------------------------------------------------ set-up & plan

    @property
    def static(self) -> bool:
        return self.method == "static-reward"

    def phases(self) -> list[str]:
        phases = []
        if self.method == "drpo-icl" or not self.cfg["data"]["icl_optimized"]:
            phases.append("icl")
        if self.method != "drpo-icl":
            phases.append("prompt")
        return phases

    def setup(self, ctx, inputs: dict) -> None:
        """Create the roots (no calls) and the initial state from {"seed", "icl"}."""
        seed_queries, icl = inputs["seed"], [tuple(p) for p in inputs["icl"]]
        s = self.state
        s.update(data={"seed": seed_queries, "icl": [list(p) for p in icl]},
                 phases=self.phases(), phase_index=0, stage="root", example=0, level=0,
                 levels=[], aspect_cache={}, icl_final={}, retrieval={}, roots={},
                 final=None, done=False)
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

    @property
    def heldout(self) -> HeldOut:
        if getattr(self, "_heldout", None) is None or self._heldout.s is not self.state:
            self._heldout = HeldOut(self.state, self.cfg)
        return self._heldout

    def _with_judge(self, calls: dict[str, int]) -> dict[str, int]:
        """The judge's calls (held-out evaluation) join the plan when the session has a judge."""
        if "judge" in self.cfg["models"]:
            calls.setdefault("judge", 0)
        return calls

    def queries_for_prompt_search(self) -> list[str]:
        seed = self.state["data"]["seed"]
        rounds = self._rounds()
        return [seed[t % len(seed)] for t in range(len(rounds))]

    def _rounds(self) -> list[int]:
        """Beam states per level (beam search) or samples per round (Monte Carlo)."""
        W, M, D = self.search["beam_width"], self.search["samples_per_state"], self.search["depth"]
        sizes = beam_sizes(W, M, D)
        if self.method != "monte-carlo":
            return sizes
        total = self.search["monte_carlo_samples"] or M * sum(sizes)
        if self.search["monte_carlo_samples"] is None:
            return [M * b for b in sizes]  # the beam's level sizes, all sampled from the root
        return [min(M, total - i) for i in range(0, total, M)]

    def plan(self) -> dict[str, int]:
        """Calls the whole run will make if nothing fails and the person changes nothing."""
        s = self.state
        calls = {"base": 0, "optimizer": 0, "evaluator": 0}
        queries: set[str] = set()
        if "icl" in s["phases"]:
            W, M, D = (self.search["icl_beam_width"], self.search["icl_samples_per_state"],
                       self.search["icl_depth"])
            one = search_calls(W, M, D, with_base=False,
                               one_call=self.search["samples_in_one_call"])
            for query, _ in s["data"]["icl"]:
                for role in calls:
                    calls[role] += one[role]
                queries.add(query)
        if "prompt" in s["phases"]:
            rounds = self._rounds()
            if self.method == "monte-carlo":
                n = sum(rounds)
                one = {"optimizer": n, "base": 1 + n, "evaluator": 1 + n}
            else:
                one = search_calls(self.search["beam_width"], self.search["samples_per_state"],
                                   len(rounds), with_base=True,
                                   one_call=self.search["samples_in_one_call"])
            for role in calls:
                calls[role] += one[role]
            queries.update(self.queries_for_prompt_search())
        if not self.static:
            calls["evaluator"] += len(queries)
        for role, n in self.heldout.plan().items():
            calls[role] = calls.get(role, 0) + n
        return self._with_judge(calls)

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
        if self.phase == "icl":
            return self.search["icl_depth"]
        return len(self._rounds())

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
        """x_{t-1} = X[t-1] for level t (1-based); the root is judged on the first query."""
        if self.phase == "icl":
            return self.state["data"]["icl"][self.state["example"]][0]
        seed = self.state["data"]["seed"]
        return seed[(max(level, 1) - 1) % len(seed)]

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
        query = self.query_for_level(1)
        await self._judge(ctx, root, query, level=1)
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

    async def _step_expand(self, ctx) -> None:
        s = self.state
        t = s["level"] + 1
        previous = s["levels"][-1]
        if self.method == "monte-carlo" and self.phase == "prompt":
            beam = [self.current_root()]
        else:
            width = self.search["icl_beam_width"] if self.phase == "icl" else self.search["beam_width"]
            beam = top_w(ctx.tree, previous["children"], width, self.search["beam_rank"])
            if not beam and len(s["levels"]) > 1:
                beam = list(previous["beam"])  # nothing survived: the previous beam carries on
                ctx.emit("warning", None, message=f"level {t - 1} has no usable node; "
                                                  f"the previous beam carries on")
        query = self.query_for_level(t)
        ctx.emit("beam", None, level=t, beam=beam, query=query)
        record = {"level": t, "query": query, "beam": beam, "children": []}
        s["levels"].append(record)
        tasks = [self._ensure_aspects(ctx, query)]
        if self.method == "monte-carlo" and self.phase == "prompt":
            count = self._rounds()[t - 1]
            offset = sum(self._rounds()[:t - 1])
            tasks.append(self._expand(ctx, ctx.tree[beam[0]], t, count, offset, record))
        else:
            M = self.search["icl_samples_per_state"] if self.phase == "icl" else self.search["samples_per_state"]
            # sample indices differ per level, so a beam state carried over to a later level
            # gets fresh rewrites rather than its cached ones
            for node_id in beam:
                tasks.append(self._expand(ctx, ctx.tree[node_id], t, M, (t - 1) * M, record))
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
        if s["level"] >= self.depth():
            self._finish_search(ctx)
        else:
            s["stage"] = "expand"

    def _finish_search(self, ctx) -> None:
        """Final state of the top beam (paper); next example or phase."""
        s = self.state
        final = None
        for record in reversed(s["levels"]):
            if self.method == "monte-carlo" and self.phase == "prompt":
                pool = [c for r in s["levels"] for c in r["children"]]
                best = top_w(ctx.tree, pool, 1, "reward")
            else:
                best = top_w(ctx.tree, record["children"], 1, self.search["beam_rank"])
            if best:
                final = best[0]
                break
        if final is None:
            final = self.current_root()
        ctx.emit("search_finished", final, phase=self.phase, example=s["example"])
        if self.phase == "icl":
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
        """I*: the final response of each ICL search, or the examples as given."""
        s = self.state
        out = []
        for i, (query, response) in enumerate(s["data"]["icl"]):
            node_id = s["icl_final"].get(str(i))
            out.append((query, ctx.tree[node_id]["text"] if node_id else response))
        return out

    def _prepare_retrieval(self, ctx) -> None:
        """K nearest optimized ICL examples for every query the search will use."""
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
        if indices is None:  # a query outside the plan (a person's edit): embed it now
            from ..embeddings import embed, top_k

            vecs = embed([q for q, _ in examples] + [query])
            indices = top_k(vecs[-1], vecs[:-1], self.search["icl_k"])
            self.state["retrieval"][query] = indices
        return [examples[i] for i in indices]

    async def _ensure_aspects(self, ctx, query: str) -> dict:
        """Dynamic reward selection, once per query for the whole session."""
        cache = self.state["aspect_cache"]
        if query in cache:
            return cache[query]
        if self.static:
            cache[query] = {"aspects": list(P.STATIC_ASPECTS), "reasoning": "static rewarding",
                            "analysis": {}, "new_aspects": {}, "source": "static"}
            return cache[query]
        if query not in self._selections:
            self._selections[query] = asyncio.ensure_future(self._select(ctx, query))
        try:
            return await asyncio.shield(self._selections[query])
        finally:
            if self._selections.get(query) is not None and self._selections[query].done():
                self._selections.pop(query, None)

    async def _select(self, ctx, query: str) -> dict:
        cache = self.state["aspect_cache"]
        try:
            sel, _ = await ctx.gateway.ask(
                "evaluator", [{"role": "user", "content": P.reward_selection(query)}],
                lambda text: parse_reward_selection(text, P.ASPECTS),
                purpose="reward selection", schema=P.selection_schema())
            entry = {"aspects": sel.aspects, "reasoning": sel.reasoning,
                     "analysis": sel.analysis, "new_aspects": sel.new_aspects,
                     "source": "selected", "warnings": sel.warnings}
        except CallFailed as exc:
            entry = {"aspects": list(P.STATIC_ASPECTS), "reasoning": "", "analysis": {},
                     "new_aspects": {}, "source": "fallback", "error": str(exc)}
            ctx.emit("warning", None, message=f"reward selection failed, using the static "
                                              f"aspects for this query: {exc}")
        cache[query] = entry
        ctx.emit("aspects", None, query=query, aspects=entry["aspects"])
        return entry

    async def _judge(self, ctx, node: dict, query: str, level: int) -> None:
        """Base answer (system prompts only) + aspect scores -> reward and feedback."""
        aspects_task = asyncio.ensure_future(self._ensure_aspects(ctx, query))
        try:
            if self.phase == "prompt":
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
            prompt = P.scoring(query, response, aspects, selection["reasoning"],
                               selection.get("new_aspects"))
            scores, record = await ctx.gateway.ask(
                "evaluator", [{"role": "user", "content": prompt}],
                lambda text: parse_scores(text, aspects), purpose="score", node=node["id"],
                schema=P.scores_schema(aspects))
            note_call(node, record)
        except CallFailed as exc:
            if not aspects_task.done():
                await asyncio.gather(aspects_task, return_exceptions=True)
            if exc.record:
                note_call(node, exc.record)
            ctx.tree.fail(node["id"], str(exc))
            ctx.emit("node_failed", node["id"], error=str(exc))
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
                      record: dict) -> None:
        """`count` optimizer rewrites of `parent` from its feedback -> children at `level`."""
        threshold = self.search["skip_rewrite_above"]
        parent["status"] = "expanded" if parent["status"] == "open" else parent["status"]
        if threshold is not None and parent["reward"] is not None and parent["reward"] > threshold:
            child = self._child(ctx, parent, parent["text"], level, "candidate")
            child["meta"]["kept"] = f"reward {parent['reward']:.2f} > {threshold}: not rewritten"
            record["children"].append(child["id"])
            return
        messages = [{"role": "user", "content": self.transition_prompt(ctx, parent)}]
        if self.search["samples_in_one_call"] and count > 1:
            await self._expand_one_call(ctx, parent, level, count, offset, record, messages)
            return
        slots = [self._child(ctx, parent, "", level, "candidate") for _ in range(count)]
        for i, child in enumerate(slots):
            child["meta"]["sample"] = offset + i  # a retry rewrites with the same sample
        record["children"].extend(c["id"] for c in slots)
        await asyncio.gather(*(self._rewrite(ctx, parent, child, messages, offset + i)
                               for i, child in enumerate(slots)))

    async def _rewrite(self, ctx, parent: dict, child: dict, messages: list[dict],
                       sample: int) -> None:
        fields, key = self._fields()

        def parse(text: str) -> dict:
            answer = parse_json_fields(text, fields, (key,))
            if answer[key].strip().lower() in P.PLACEHOLDERS:
                raise ParseError("the answer repeats the template's placeholder")
            return answer
        try:
            answer, record = await ctx.gateway.ask(
                "optimizer", messages, parse,
                purpose="rewrite", node=child["id"], sample=sample,
                schema=P.transition_schema(key))
        except CallFailed as exc:
            if exc.record:
                note_call(child, exc.record)
            ctx.tree.fail(child["id"], str(exc))
            ctx.emit("node_failed", child["id"], error=str(exc))
            return
        note_call(child, record)
        child["text"] = answer[key].strip()
        child["detail"]["transition"] = {"analysis": answer.get("analysis", ""),
                                         "thought": answer.get("thought", "")}
        ctx.emit("node_added", child["id"], parent=parent["id"])

    async def _expand_one_call(self, ctx, parent, level, count, offset, record, messages) -> None:
        fields, key = self._fields()
        result = await ctx.gateway.call("optimizer", messages, purpose="rewrite",
                                        node=parent["id"], sample=offset, n=count)
        texts = result.texts + [""] * (count - len(result.texts))
        for i in range(count):
            child = self._child(ctx, parent, "", level, "candidate")
            child["meta"]["sample"] = offset + i
            record["children"].append(child["id"])
            note_call(child, result.record)
            try:
                if result.error:
                    raise ParseError(result.error)
                answer = parse_json_fields(texts[i], fields, (key,))
            except ParseError as exc:
                ctx.tree.fail(child["id"], f"rewrite: {exc}")
                ctx.emit("node_failed", child["id"], error=str(exc))
                continue
            child["text"] = answer[key].strip()
            child["detail"]["transition"] = {"analysis": answer.get("analysis", ""),
                                             "thought": answer.get("thought", "")}
            ctx.emit("node_added", child["id"], parent=parent["id"])

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
        former = [n["text"] for n in ctx.tree.path(node["id"])]
        return P.system_prompt_transition(node["text"], detail.get("query", ""),
                                          detail.get("response", ""), evaluation, former)

    # ------------------------------------------------------------------ re-planning

    plan_is_bound = True  # the runner re-plans after every step and operation

    def _search_calls(self, phase: str) -> dict[str, int]:
        """Calls of one whole search of `phase` (reward selections excluded)."""
        if phase == "icl":
            return search_calls(self.search["icl_beam_width"], self.search["icl_samples_per_state"],
                                self.search["icl_depth"], with_base=False,
                                one_call=self.search["samples_in_one_call"])
        rounds = self._rounds()
        if self.method == "monte-carlo":
            n = sum(rounds)
            return {"optimizer": n, "base": 1 + n, "evaluator": 1 + n}
        return search_calls(self.search["beam_width"], self.search["samples_per_state"],
                            len(rounds), with_base=True, one_call=self.search["samples_in_one_call"])

    def _levels_ahead(self, ctx, first_beam: int, from_level: int) -> dict[str, int]:
        """Calls of the levels from `from_level` to the last, the first with `first_beam` states."""
        phase = self.phase
        if phase == "prompt" and self.method == "monte-carlo":
            sizes, M = self._rounds()[from_level - 1:], 1
        else:
            W = self.search["icl_beam_width"] if phase == "icl" else self.search["beam_width"]
            M = (self.search["icl_samples_per_state"] if phase == "icl"
                 else self.search["samples_per_state"])
            sizes = []
            b = first_beam
            for _ in range(from_level, self.depth() + 1):
                sizes.append(b)
                b = min(W, M * b)
        children = M * sum(sizes)
        one_call = self.search["samples_in_one_call"] and M > 1
        return {"optimizer": sum(sizes) if one_call else children,
                "base": children if phase == "prompt" else 0, "evaluator": children}

    def _current_search_remaining(self, ctx) -> dict[str, int]:
        s = self.state
        if s["stage"] == "root":
            return self._search_calls(self.phase)
        W = self.search["icl_beam_width"] if self.phase == "icl" else self.search["beam_width"]
        record = s["levels"][-1]
        if s["stage"] == "expand":
            beam = len(top_w(ctx.tree, record["children"], W, self.search["beam_rank"]))
            if not beam and len(s["levels"]) > 1:
                beam = len(record["beam"])
            return self._levels_ahead(ctx, beam, s["level"] + 1)
        # score: the level's unjudged children, then the levels after it
        pending = [c for c in record["children"]
                   if ctx.tree[c]["reward"] is None and ctx.tree[c]["status"] != "failed"
                   and not ctx.tree.is_pruned(c)]
        calls = {"optimizer": 0, "evaluator": len(pending),
                 "base": len(pending) if self.phase == "prompt" else 0}
        if s["level"] < self.depth():
            alive = [c for c in record["children"]
                     if ctx.tree[c]["status"] != "failed" and not ctx.tree.is_pruned(c)]
            beam = min(W, len(alive)) or len(record["beam"])
            for role, n in self._levels_ahead(ctx, beam, s["level"] + 1).items():
                calls[role] += n
        return calls

    def plan_remaining(self, ctx) -> dict[str, int]:
        """Calls still to come from the current state if nothing fails (an upper bound that is
        exact when nothing fails): the runner shows calls made + this as the plan, so pruning
        a node before it is judged removes its calls, and a retry adds the calls it made."""
        s = self.state
        calls = self._with_judge({"base": 0, "optimizer": 0, "evaluator": 0})
        if s["done"]:
            return calls
        for role, n in self.heldout.plan_remaining().items():
            calls[role] = calls.get(role, 0) + n
        if s["stage"] == "evaluate":
            return calls
        queries: list[str] = []
        for pi in range(s["phase_index"], len(s["phases"])):
            phase = s["phases"][pi]
            current_phase = pi == s["phase_index"]
            if phase == "icl":
                first = s["example"] if current_phase else 0
                whole = self._search_calls("icl")
                for e in range(first, len(s["data"]["icl"])):
                    one = (self._current_search_remaining(ctx) if current_phase and e == first
                           else whole)
                    for role in calls:
                        calls[role] += one.get(role, 0)
                    queries.append(s["data"]["icl"][e][0])
            else:
                one = (self._current_search_remaining(ctx) if current_phase
                       else self._search_calls("prompt"))
                for role in calls:
                    calls[role] += one.get(role, 0)
                queries += self.queries_for_prompt_search()
        if not self.static:
            calls["evaluator"] += len({q for q in queries if q not in s["aspect_cache"]})
        return calls

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
                await self._judge(ctx, node, query, node["meta"].get("level", 1) or 1)
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
        seed = self.state["data"]["seed"]
        return seed[(max(node["meta"].get("level", 1), 1) - 1) % len(seed)]

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
        """Replace a query's aspects and re-score every node judged on it (evaluator only)."""
        if not 1 <= len(aspects) <= 5:
            raise ValueError("choose between 1 and 5 aspects")
        entry = dict(self.state["aspect_cache"].get(query, {}))
        entry.update(aspects=list(aspects), source="person",
                     reasoning=entry.get("reasoning", "") + " (aspects set by the person)")
        entry.setdefault("analysis", {})
        entry.setdefault("new_aspects", {})
        self.state["aspect_cache"][query] = entry
        nodes = [n for n in ctx.tree.nodes.values()
                 if n["detail"].get("query") == query and n["reward"] is not None]

        async def rescore(node):
            with self._with_phase(node):
                prompt = P.scoring(query, node["detail"]["response"], list(aspects),
                                   entry["reasoning"], entry.get("new_aspects"))
                try:
                    scores, record = await ctx.gateway.ask(
                        "evaluator", [{"role": "user", "content": prompt}],
                        lambda text: parse_scores(text, list(aspects)), purpose="score",
                        node=node["id"], schema=P.scores_schema(list(aspects)))
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
