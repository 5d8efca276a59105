"""PICACO: one meta-instruction for several values, by total correlation
(seeds/PICACO.txt §3, App. C-D; DESIGN §6), and the paper's baselines.

Estimators (names as in the paper's §3):
    q_omega(v_k | x, y) = judge score / 5 * 100, a percentage    (evaluator, per value; App. C.1
                          "converted into percentage values": log q_omega > 0, so Eq. 4 grows
                          with p_e and rewards instructions that reproduce the aligned pool)
    q_phi(S | x, y)     = 1 + Sim(S, y) - Sim(x, y)              (Eq. 5; clamped to >= 1e-6)
    p_e(y | x)          = (1/n) sum_l Sim(y, y_l), y_l ~ p(.|x, e), n samples in one call
                                                                 (Eq. 6; clamped to >= 0)
    Sim = cosine of all-MiniLM-L6-v2 embeddings; a text longer than the model's window (S, long
    answers) is embedded in pieces that fit and their vectors averaged (engine.embeddings).

    score(y)  = beta * sum_k log q_omega(v_k|x,y) - log q_phi(S|x,y)
    B_i       = sum_{noise y} p(y|x_i) * log q_phi(S|x_i,y)                   (constant in e)
    TC_e      = (1/N) sum_i [ sum_{aligned y_ij} p_e(y_ij|x_i) * score(y_ij) + B_i ]   (Eq. 4)

Steps (each saved):
    observation  Schwartz-style compositions: S = the target model's own elaboration of the
                 values (one base call); HH compositions use S = the demonstrations.
    noise pool   once: per prompt 2*M2 samples without instruction (one call), keep the M2
                 with the largest q_phi; p(y|x) by Eq. 6 against the other samples of the draw.
    E-step t     per prompt, `buckets` calls with e^{t-1} and 3 random demonstrations each,
                 ceil(M1 / buckets) samples per call; every sample judged on all values (one
                 evaluator call); the aligned pool keeps the top M1 by score(y) across iterations.
    M-step t     `new_instructions` optimizer calls, one instruction each, each shown 4
                 existing instructions stratified by TC_e (lowest, a low one, a high one, the
                 highest; labelled poor/fair/okay/good, no numbers), 3 demonstrations, a technique
                 hint and the word limit, answering between <INS> and </INS>; candidates = the new
                 ones + the `new_instructions` best existing (by their last TC_e); each scored by
                 Eq. 4 with the current pools, n samples per prompt (one call each, a fixed
                 demonstration draw per prompt); e^t = the best of those scored on the current
                 pools. Every TC_e carries the pool iteration it was computed on (meta["tc"] keys,
                 detail["pe_iteration"]).
    evaluate     the held-out evaluation (engine.evaluation, one batch a step): root (the seed
                 instruction; for picaco answered with the final's demonstrations, for the
                 baselines as Q+IF) and the final prompt on held-out prompts (never the
                 optimization prompts), k samples each ([eval] samples, default 3), judged per
                 value by the judge role as percentages; Schwartz-style compositions weight each
                 response by its relevance, judged in its own call: mu' = mu * Relevance / 5
                 (Eq. 7, per response).

Baselines (methods sharing the evaluation): q (no instruction), q-if (the seed instruction),
q-if-cot (think about the values first, then answer: two turns), urial (a URIAL-style header
+ 3 demonstrations), opro (instructions written from the scored history; the same budget of
T * new_instructions instructions; score = mean q_omega * 100 over the prompts).
"""
from __future__ import annotations

import asyncio
import math
import random
from typing import Any

from ..evaluation import HeldOut, WithHeldOut, node_prompt
from ..gateway import CallFailed, gather_or_cancel
from .. import schemas as S
from ..parsing import ParseError, extract_tagged, parse_answer, parse_scores
from ..prompts import picaco as P
from ..tree import note_call

EPS = 1e-6
ROLES = ("base", "optimizer", "evaluator")
PERCENT = 100.0 / 5  # a 1-5 judge score as a percentage (App. C.1): 1 -> 20, 5 -> 100


# ----------------------------------------------------------------------------- formulas

def q_phi(sim_s_y: float, sim_x_y: float) -> float:
    """Eq. 5: 1 + Sim(S, y) - Sim(x, y), kept positive for the log."""
    return max(EPS, 1.0 + sim_s_y - sim_x_y)


def p_e(sims: list[float]) -> float:
    """Eq. 6: the mean similarity of y to the n samples drawn with e (negative -> 0)."""
    return max(0.0, sum(sims) / len(sims)) if sims else 0.0


def q_omega(score: float) -> float:
    """q_omega(v_k | x, y) from the judge's 1-5 score: a percentage (App. C.1)."""
    return round(score * PERCENT, 4)


def aligned_score(q_omegas: list[float], qphi: float, beta: float) -> float:
    """beta * sum_k log q_omega - log q_phi: the aligned pool's ranking (and Eq. 4's bracket).
    q_omega in percent: against score / 5 every score is shifted by beta * K * log 100, the
    same for every answer, so the pool's ranking is unchanged, but the bracket is positive for
    any judged answer (beta * K * log 20 > log q_phi's largest value, log 3, when
    beta * K >= 0.37) and Eq. 4 then prefers instructions whose samples reproduce the pool."""
    return beta * sum(math.log(max(EPS, q)) for q in q_omegas) - math.log(max(EPS, qphi))


def noise_term(pool: list[dict]) -> float:
    """B_i = sum over the noise pool of p(y|x) * log q_phi(S|x,y)."""
    return sum(item["p"] * math.log(max(EPS, item["q_phi"])) for item in pool)


def tc_e(per_prompt: list[tuple[list[float], list[float], float]]) -> float:
    """Eq. 4: (1/N) sum_i [sum_j p_e(y_ij) * score(y_ij) + B_i] over (p_e's, scores, B_i)."""
    if not per_prompt:
        return 0.0
    total = 0.0
    for pes, scores, b in per_prompt:
        total += sum(p * s for p, s in zip(pes, scores)) + b
    return total / len(per_prompt)


def top_by(items: list[dict], key: str, k: int) -> list[dict]:
    """The k items with the largest `key` (ties: the earlier item)."""
    order = sorted(range(len(items)), key=lambda i: (-items[i][key], i))
    return [items[i] for i in order[:k]]


def stratified(ranked: list[str], rng: random.Random) -> list[str]:
    """Four instructions from a list sorted by TC_e ascending: the lowest, one from the lower
    half, one from the upper half, the highest. Fewer exist: all of them, ascending."""
    if len(ranked) <= 4:
        return list(ranked)
    middle = ranked[1:-1]
    half = len(middle) // 2
    low = middle[:half] or middle[:1]
    high = middle[half:] or middle[-1:]
    return [ranked[0], rng.choice(low), rng.choice(high), ranked[-1]]


# ----------------------------------------------------------------------------- the method

class PICACO(WithHeldOut):
    """PICACO and its baselines (q, q-if, q-if-cot, urial, opro) as a step machine."""

    def __init__(self, cfg: dict, state: dict | None = None):
        self.cfg = cfg
        self.method = cfg["method"]
        self.search = cfg["search"]
        self.state: dict[str, Any] = state if state is not None else {}
        self._vectors: dict[str, list[float]] = {}

    # ------------------------------------------------------------------ set-up & plan

    def setup(self, ctx, inputs: dict) -> None:
        s = self.state
        s.update(prompts=list(inputs["prompts"]), values=inputs["values"],
                 demos=inputs["demonstrations"], composition=inputs["composition"],
                 kind=inputs["kind"], beta=self.search["beta"], observation=None,
                 iteration=0, noise={}, aligned={}, B={}, best_per_iteration=[],
                 evaluation=None, done=False, final=None)
        root = ctx.tree.add(inputs["seed_instruction"], kind="root", step=ctx.step,
                            meta={"phase": "prompt", "level": 0, "template": "if", "tc": {}})
        s["root"] = s["current"] = root["id"]
        s["history"] = [root["id"]]
        if self.method == "picaco":
            s["stages"] = (["observation"] if s["kind"] != "hh" else []) + ["noise"]
            for t in range(1, self.search["iterations"] + 1):
                s["stages"] += [f"estep:{t}", f"mstep:{t}"]
            s["stages"].append("evaluate")
        elif self.method == "opro":
            s["stages"] = ["opro:0"] + [f"opro:{t}" for t in range(1, self.search["iterations"] + 1)]
            s["stages"].append("evaluate")
        else:
            s["stages"] = ["evaluate"]
            s["final"] = self._baseline_node(ctx, root)["id"]
        s["stage_index"] = 0
        # the held-out evaluation: seed vs final on held-out prompts, k samples, by the judge
        HeldOut.setup(s, self.cfg, inputs.get("eval_items"), inputs.get("eval_source", ""))

    def _reopen_evaluation(self) -> None:
        self.state["stage_index"] = self.state["stages"].index("evaluate")

    def _answer_calls(self) -> tuple[int, int]:
        """Calls per held-out answer of (root, final): two for the think-first baseline."""
        return (1, 2 if self.method == "q-if-cot" else 1)

    def _baseline_node(self, ctx, root: dict) -> dict:
        """The prompt a fixed baseline evaluates (q-if: the root itself)."""
        from ..values import join_names

        if self.method == "q-if":
            return root
        names = join_names([v["name"] for v in self.state["values"]])
        text, template = {
            "q": ("", "q"),
            "q-if-cot": (root["text"], "cot"),
            "urial": (P.URIAL_HEADER.format(values=names), "urial"),
        }[self.method]
        return ctx.tree.add(text, parent=root["id"], kind="candidate", step=ctx.step,
                            meta={"phase": "prompt", "level": 1, "template": template, "tc": {}})

    def _k(self, n: int) -> int:
        """Calls for n samples: one, or n where the base model gives one answer per call."""
        from ..local_model import is_embedded

        return n if is_embedded(self.cfg["models"]["base"]["model"]) else 1

    def _per_bucket(self) -> int:
        return math.ceil(self.search["aligned_pool"] / self.search["buckets"])

    def plan(self) -> dict[str, int]:
        """Calls of the whole run if nothing fails and the person changes nothing."""
        s, sr = self.state, self.search
        N, T, new = len(s["prompts"]), sr["iterations"], sr["new_instructions"]
        calls = {r: 0 for r in ROLES}
        if self.method == "picaco":
            if s["kind"] != "hh":
                calls["base"] += 1
            calls["base"] += N * self._k(2 * sr["noise_pool"])
            history = 1
            for _ in range(T):
                calls["base"] += N * sr["buckets"] * self._k(self._per_bucket())
                calls["evaluator"] += N * sr["buckets"] * self._per_bucket()
                calls["optimizer"] += new
                candidates = new + min(new, history)
                calls["base"] += candidates * N * self._k(sr["p_samples"])
                history += new
        elif self.method == "opro":
            calls["base"] += N * (1 + T * new)
            calls["evaluator"] += N * (1 + T * new)
            calls["optimizer"] += T * new
        # the held-out evaluation: seed (as Q+IF) and final, k samples per held-out prompt
        if "judge" in self.cfg["models"]:
            calls["judge"] = 0
        for role, n in self.heldout.plan(answer_calls=self._answer_calls()).items():
            calls[role] = calls.get(role, 0) + n
        return calls

    plan_is_bound = True  # the runner re-plans after every step and operation

    def plan_remaining(self, ctx) -> dict[str, int]:
        """Calls still to come from the current stage if nothing fails: the runner shows calls
        made + this as the plan, so failed nodes and their retries keep plan = calls made."""
        s, sr = self.state, self.search
        calls = {r: 0 for r in ROLES}
        if s["done"]:
            return calls
        N, new = len(s["prompts"]), sr["new_instructions"]
        ranked = self._ranked_history(ctx)
        history = len(ranked)  # instructions an M-step can take as existing candidates
        if s["root"] not in ranked and not ctx.tree[s["root"]]["meta"].get("tc"):
            history += 1  # e0 joins the first M-step as an existing candidate
        for stage in s["stages"][s["stage_index"]:]:
            kind, _, t = stage.partition(":")
            if kind == "observation":
                calls["base"] += 1
            elif kind == "noise":
                calls["base"] += N * self._k(2 * sr["noise_pool"])
            elif kind == "estep":
                calls["base"] += N * sr["buckets"] * self._k(self._per_bucket())
                calls["evaluator"] += N * sr["buckets"] * self._per_bucket()
            elif kind == "mstep":
                calls["optimizer"] += new
                calls["base"] += (new + min(new, history)) * N * self._k(sr["p_samples"])
                history += new
            elif kind == "opro":
                count = 1 if t == "0" else new
                calls["optimizer"] += 0 if t == "0" else new
                calls["base"] += count * N
                calls["evaluator"] += count * N
            elif kind == "evaluate":
                remaining = (self.heldout.plan_remaining() if self.heldout.started
                             else self.heldout.plan(answer_calls=self._answer_calls()))
                for role, n in remaining.items():
                    calls[role] = calls.get(role, 0) + n
        if "judge" in self.cfg["models"]:
            calls.setdefault("judge", 0)
        return calls

    # ------------------------------------------------------------------ progress

    @property
    def done(self) -> bool:
        return bool(self.state.get("done"))

    @property
    def stage(self) -> str:
        s = self.state
        return "done" if s["done"] else s["stages"][s["stage_index"]]

    def level_key(self) -> tuple:
        """`L` runs one iteration (E-step + M-step; one OPRO round)."""
        s = self.state
        finished = sum(1 for st in s["stages"][:s["stage_index"]]
                       if st.startswith(("mstep", "opro", "evaluate")))
        return (finished, s["done"])

    def describe_next(self) -> str:
        stage, T = self.stage, self.search["iterations"]
        if stage == "done":
            return "finished"
        if stage == "evaluate" and self.heldout.started:
            return self.heldout.describe_next()
        kind, _, t = stage.partition(":")
        return {
            "observation": "observation S: the target model elaborates on the values",
            "noise": "noise pool: answers without instruction, top M2 by q_phi",
            "estep": f"iteration {t}/{T}: E-step (aligned pool)",
            "mstep": f"iteration {t}/{T}: M-step (new instructions, TC_e)",
            "opro": "OPRO: score the seed instruction" if t == "0" else f"OPRO round {t}/{T}",
            "evaluate": "held-out evaluation of the seed and the final prompt",
        }[kind]

    # ------------------------------------------------------------------ one step

    def _upgrade_pools(self) -> None:
        """Aligned pools saved when q_omega was score / 5 (every q <= 1; a percentage is >= 20)
        move to percentages, their scores recomputed, so old and new answers rank together."""
        s = self.state
        for pool in (s.get("aligned") or {}).values():
            for item in pool:
                q = item.get("q") or {}
                if q and all(isinstance(v, (int, float)) and v <= 1 for v in q.values()):
                    item["q"] = {n: round(v * 100, 4) for n, v in q.items()}
                    item["score"] = round(aligned_score(list(item["q"].values()),
                                                        item.get("q_phi", 1.0),
                                                        s.get("beta", self.search["beta"])), 6)

    async def step(self, ctx) -> None:
        if self.done:
            return
        if self.method == "picaco":
            self._upgrade_pools()
        kind, _, t = self.stage.partition(":")
        handler = getattr(self, f"_step_{kind}")
        await (handler(ctx, int(t)) if t else handler(ctx))
        if not self.done:
            self.state["stage_index"] += 1

    async def _step_observation(self, ctx) -> None:
        messages = [{"role": "user", "content": P.observation(self.state["values"])}]
        result = await ctx.gateway.call("base", messages, purpose="observation",
                                        node=self.state["root"])
        if result.error or not result.text.strip():
            ctx.emit("warning", None, message=f"the values' elaboration failed ({result.error}); "
                                              f"S falls back to the values' definitions")
            self.state["observation"] = self._definitions_text()
        else:
            self.state["observation"] = result.text.strip()

    def _definitions_text(self) -> str:
        return "\n".join(f"{v['name']}: {v['definition']}" for v in self.state["values"])

    def observation_text(self) -> str:
        """S: the demonstrations (HH), or the target model's elaboration of the values."""
        s = self.state
        if s["kind"] == "hh":
            demos = s["demos"]
            return "\n\n".join(f"{d['query']}\n{d['response']}" for d in demos) or self._definitions_text()
        return s["observation"] or self._definitions_text()

    async def _embed(self, texts: list[str]) -> list[list[float]]:
        from ..embeddings import embed

        missing = list(dict.fromkeys(t for t in texts if t not in self._vectors))
        if missing:
            for text, vec in zip(missing, await asyncio.to_thread(embed, missing)):
                self._vectors[text] = vec
        return [self._vectors[t] for t in texts]

    async def _q_phis(self, prompt: str, texts: list[str]) -> list[float]:
        from ..embeddings import cosine

        s_vec, x_vec = await self._embed([self.observation_text(), prompt])
        vecs = await self._embed(texts)
        return [q_phi(cosine(s_vec, v), cosine(x_vec, v)) for v in vecs]

    async def _step_noise(self, ctx) -> None:
        from ..embeddings import cosine

        s = self.state
        m2 = self.search["noise_pool"]

        async def one(i: int, prompt: str) -> None:
            texts, records, error = await ctx.gateway.samples(
                "base", P.plain_messages(None, prompt), 2 * m2, purpose="noise sample",
                node=s["root"], sample=i, temperature=self.search["sampling_temperature"])
            texts = [t.strip() for t in texts if t.strip()]
            if error or len(texts) < 2 * m2:
                ctx.emit("warning", None, message=f"noise pool for prompt {i + 1}: {len(texts)} of "
                                                  f"{2 * m2} answers ({error or 'the provider gave fewer'})")
            if len(texts) < 2:
                s["noise"][str(i)], s["B"][str(i)] = [], 0.0
                return
            vecs = await self._embed(texts)
            qs = await self._q_phis(prompt, texts)
            items = []
            for j, text in enumerate(texts):
                others = [cosine(vecs[j], vecs[l]) for l in range(len(texts)) if l != j]
                items.append({"text": text, "q_phi": round(qs[j], 6), "p": round(p_e(others), 6)})
            pool = top_by(items, "q_phi", m2)
            s["noise"][str(i)] = pool
            s["B"][str(i)] = round(noise_term(pool), 6)
        await asyncio.gather(*(one(i, x) for i, x in enumerate(s["prompts"])))
        ctx.emit("pool", None, pool="noise", sizes={k: len(v) for k, v in s["noise"].items()})

    def _demo_draw(self, purpose: str) -> list[dict]:
        demos = self.state["demos"]
        rng = random.Random(f"{self.cfg['random_seed']}:{purpose}")
        return rng.sample(demos, min(3, len(demos)))

    async def _judge(self, ctx, prompt: str, response: str, node: str | None,
                     relevance: bool = False, sample: int = 0) -> dict:
        values = self.state["values"]
        keys = [v["name"] for v in values] + (["Relevance"] if relevance else [])
        model = P.judge_model(keys)
        scores, record = await ctx.gateway.ask(
            "evaluator", [{"role": "user", "content": P.judge(values, prompt, response, relevance)}],
            lambda text: parse_scores(text, keys, model=model), purpose="judge", node=node,
            sample=sample, schema=model)
        return {k: {"score": v.score, "reason": v.rationale} for k, v in scores.items()}

    async def _step_estep(self, ctx, t: int) -> None:
        s = self.state
        current = ctx.tree[s["current"]]
        beta, m1 = s["beta"], self.search["aligned_pool"]
        names = [v["name"] for v in s["values"]]

        async def bucket(i: int, prompt: str, b: int) -> list[dict]:
            demos = self._demo_draw(f"estep:{t}:{i}:{b}")
            texts, records, error = await ctx.gateway.samples(
                "base", P.response_messages(current["text"], demos, prompt), self._per_bucket(),
                purpose="E-step sample", node=current["id"], sample=(t * 1000 + i) * 10 + b,
                temperature=self.search["sampling_temperature"])
            if error:
                ctx.emit("warning", current["id"], message=f"E-step prompt {i + 1}: {error}")
            out = []
            for j, text in enumerate(t_.strip() for t_ in texts):
                if not text:
                    continue
                try:
                    verdict = await self._judge(ctx, prompt, text, current["id"],
                                                sample=(t * 1000 + i) * 100 + b * 10 + j)
                except CallFailed as exc:
                    ctx.emit("warning", current["id"], message=f"E-step judge: {exc}")
                    continue
                out.append({"text": text, "q": {n: q_omega(verdict[n]["score"]) for n in names},
                            "reasons": {n: verdict[n]["reason"] for n in names}, "iteration": t})
            return out

        async def one(i: int, prompt: str) -> None:
            batches = await asyncio.gather(*(bucket(i, prompt, b) for b in range(self.search["buckets"])))
            new = [item for batch in batches for item in batch]
            if new:
                qs = await self._q_phis(prompt, [item["text"] for item in new])
                for item, q in zip(new, qs):
                    item["q_phi"] = round(q, 6)
                    item["score"] = round(aligned_score(list(item["q"].values()), q, beta), 6)
            pool = s["aligned"].get(str(i), []) + new
            s["aligned"][str(i)] = top_by(pool, "score", m1)
        await asyncio.gather(*(one(i, x) for i, x in enumerate(s["prompts"])))
        s["iteration"] = t
        ctx.emit("pool", current["id"], pool="aligned", iteration=t,
                 sizes={k: len(v) for k, v in s["aligned"].items()})

    def _on_current_pools(self, node: dict) -> bool:
        """Whether the node's TC_e was computed with the pools as they are now."""
        return (node["reward"] is not None
                and node.get("detail", {}).get("pe_iteration") == self.state["iteration"])

    def _ranked_history(self, ctx) -> list[str]:
        """Scored, usable instructions by latest TC_e, ascending (ties: the earlier node)."""
        usable = [n for n in ctx.tree.usable(self.state["history"])]
        return [n["id"] for n in sorted(usable, key=lambda n: (n["reward"], -int(n["id"][1:])))]

    def _parse_instruction(self, text: str) -> str:
        try:
            out = extract_tagged(text, "<INS>", "</INS>")
        except ParseError:
            out = parse_answer(text, S.Instruction).instruction
        out = out.strip()
        if len(out.split()) < 3:
            raise ParseError("the instruction is too short")
        return out

    async def _write_instruction(self, ctx, parent: dict, child: dict, sample: int,
                                 guidance: str | None = None, based_on: str | None = None) -> bool:
        s = self.state
        rng = random.Random(f"{self.cfg['random_seed']}:mstep:{sample}")
        ranked = self._ranked_history(ctx)
        ladder_ids = stratified(ranked, rng) if ranked else [parent["id"]]
        if based_on and based_on not in ladder_ids:
            # the node being revised joins the ladder at its own rank (ascending TC_e)
            ladder_ids = sorted(ladder_ids + [based_on],
                                key=lambda i: (ctx.tree[i]["reward"] if ctx.tree[i]["reward"] is not None
                                               else -math.inf))
            while len(ladder_ids) > 4:
                middle = [i for i in ladder_ids[1:-1] if i != based_on]
                ladder_ids.remove(middle[0])
        technique = rng.choice(P.TECHNIQUES)
        demos = self._demo_draw(f"mstep:{sample}")
        messages = P.m_step(s["values"], demos, [ctx.tree[i]["text"] for i in ladder_ids],
                            technique, self.search["word_limit"], guidance)
        child["detail"]["written_from"] = {"ladder": ladder_ids, "technique": technique,
                                           "demonstrations": [d["query"] for d in demos]}
        if not await self._ask_instruction(ctx, child, messages, sample):
            return False
        ctx.emit("node_added", child["id"], parent=parent["id"])
        return True

    async def _ask_instruction(self, ctx, child: dict, messages: list[dict], sample: int) -> bool:
        """The optimizer writes one instruction between <INS> tags into `child` (False: the
        node failed, with the reason)."""
        try:
            text, record = await ctx.gateway.ask(
                "optimizer", messages, self._parse_instruction, purpose="instruction",
                node=child["id"], sample=sample, schema=S.Instruction)
        except CallFailed as exc:
            ctx.fail(child, exc)
            return False
        note_call(child, record)
        child["text"] = text
        return True

    async def _score(self, ctx, node: dict, existing: bool = False) -> None:
        """TC_e of one instruction with the current pools (Eq. 4)."""
        from ..embeddings import cosine

        s = self.state
        self._upgrade_pools()
        per_prompt, pes = [], {}

        async def one(i: int, prompt: str):
            pool = s["aligned"].get(str(i), [])
            demos = self._demo_draw(f"pe:{i}")
            texts, records, error = await ctx.gateway.samples(
                "base", P.response_messages(node["text"], demos, prompt), self.search["p_samples"],
                purpose="p_e samples", node=node["id"], sample=i,
                temperature=self.search["sampling_temperature"])
            for record in records:
                note_call(node, record)
            texts = [t.strip() for t in texts if t.strip()]
            if error or not texts:
                raise CallFailed(f"p_e samples for prompt {i + 1}: {error or 'no answer'}")
            if not pool:
                return i, [], [], s["B"].get(str(i), 0.0)
            sample_vecs = await self._embed(texts)
            pool_vecs = await self._embed([item["text"] for item in pool])
            values = [round(p_e([cosine(v, w) for w in sample_vecs]), 6) for v in pool_vecs]
            return i, values, [item["score"] for item in pool], s["B"].get(str(i), 0.0)
        try:
            results = await gather_or_cancel(one(i, x) for i, x in enumerate(s["prompts"]))
        except CallFailed as exc:
            if existing:
                # an earlier instruction keeps its last TC_e; it sits out this iteration
                node["meta"]["stale"] = s["iteration"]
                ctx.emit("warning", node["id"], message=f"re-scoring failed, the last TC_e is "
                                                        f"kept and it sits out this M-step: {exc}")
                return
            ctx.fail(node, exc)
            return
        for i, values, scores, b in results:
            pes[str(i)] = values
            per_prompt.append((values, scores, b))
        node["reward"] = round(tc_e(per_prompt), 4)
        node["meta"].setdefault("tc", {})[str(s["iteration"])] = node["reward"]
        node["meta"].pop("stale", None)
        node["detail"]["pe"] = pes
        node["detail"]["pe_iteration"] = s["iteration"]  # p_e belongs to this aligned pool
        node["detail"]["query"] = f"{len(s['prompts'])} prompts"
        ctx.emit("node_scored", node["id"], reward=node["reward"])

    async def _step_mstep(self, ctx, t: int) -> None:
        s = self.state
        new_count = self.search["new_instructions"]
        parent = ctx.tree[s["current"]]
        parent["status"] = "expanded" if parent["status"] == "open" else parent["status"]
        existing = list(reversed(self._ranked_history(ctx)))[:new_count]
        if s["root"] not in existing and not ctx.tree[s["root"]]["meta"].get("tc"):
            existing = (existing + [s["root"]])[:max(new_count, 1)]  # e^0 is scored at t = 1
        children = [ctx.tree.add("", parent=parent["id"], kind="candidate", step=ctx.step,
                                 meta={"phase": "prompt", "level": t, "template": "picaco",
                                       "tc": {}, "iteration": t, "sample": t * 100 + j})
                    for j in range(new_count)]
        written = await asyncio.gather(*(self._write_instruction(ctx, parent, child, t * 100 + j)
                                         for j, child in enumerate(children)))
        new = [c for c, ok in zip(children, written) if ok]
        candidates = new + [ctx.tree[i] for i in existing]
        # every candidate is (re-)scored with the current pools, whenever it was last scored:
        # an instruction written or scored mid-iteration (a person's, a regenerated one) or in
        # an earlier iteration is never ranked by a TC_e from other pools
        await asyncio.gather(*(self._score(ctx, node, existing=node["id"] in existing)
                               for node in candidates))
        s["history"] += [c["id"] for c in new]
        # one whose re-scoring failed keeps an older TC_e and sits out
        scored = [n for n in ctx.tree.usable([c["id"] for c in candidates])
                  if self._on_current_pools(n)]
        if scored:
            best = max(scored, key=lambda n: (n["reward"], -int(n["id"][1:])))
            s["current"] = best["id"]
            best["meta"].setdefault("best_of", []).append(t)
        s["best_per_iteration"].append(s["current"])
        ctx.emit("best", s["current"], iteration=t, tc=ctx.tree[s["current"]]["reward"])
        if t == self.search["iterations"]:
            s["final"] = s["current"]

    # ------------------------------------------------------------------ OPRO

    async def _opro_score(self, ctx, node: dict) -> None:
        """OPRO's score: mean q_omega (in percent: 0-100) over the prompts' answers. Each
        answer and its q_omega per value are kept in detail["answers"] (the workbench shows
        them)."""
        s = self.state

        async def one(i: int, prompt: str) -> dict:
            result = await ctx.gateway.call("base", P.plain_messages(node["text"], prompt),
                                            purpose="answer", node=node["id"])
            note_call(node, result.record)
            if result.error:
                raise CallFailed(f"answer: {result.error}", result.record)
            verdict = await self._judge(ctx, prompt, result.text.strip(), node["id"])
            return {"prompt": i, "response": result.text.strip(),
                    "q": {k: q_omega(v["score"]) for k, v in verdict.items()}}
        try:
            answers = await gather_or_cancel(one(i, x) for i, x in enumerate(s["prompts"]))
        except CallFailed as exc:
            ctx.fail(node, exc)
            return
        scores = [sum(a["q"].values()) / len(a["q"]) for a in answers]
        node["reward"] = round(sum(scores) / len(scores), 2)  # mean q_omega, already in percent
        node["detail"]["query"] = f"{len(s['prompts'])} prompts"
        node["detail"]["answers"] = answers
        ctx.emit("node_scored", node["id"], reward=node["reward"])

    async def _step_opro(self, ctx, t: int) -> None:
        s = self.state
        if t == 0:
            await self._opro_score(ctx, ctx.tree[s["root"]])
            s["final"] = s["root"]
            return
        ranked = self._ranked_history(ctx)[-20:]
        scored = [(ctx.tree[i]["text"], ctx.tree[i]["reward"]) for i in ranked]
        parent = ctx.tree[ranked[-1]] if ranked else ctx.tree[s["root"]]
        children = []
        for j in range(self.search["new_instructions"]):
            child = ctx.tree.add("", parent=parent["id"], kind="candidate", step=ctx.step,
                                 meta={"phase": "prompt", "level": t, "template": "if",
                                       "iteration": t, "sample": t * 100 + j})
            children.append(child)
        await asyncio.gather(*(self._opro_write(ctx, child, scored) for child in children))
        s["history"] += [c["id"] for c in children]
        s["iteration"] = t
        best = self._ranked_history(ctx)
        if best:
            s["final"] = s["current"] = best[-1]
        s["best_per_iteration"].append(s["current"])

    async def _opro_write(self, ctx, child: dict, scored: list) -> None:
        """One OPRO instruction from the scored history, then its score."""
        sample = child["meta"]["sample"]
        t, j = divmod(sample, 100)
        messages = P.opro(self.state["values"], self._demo_draw(f"opro:{t}:{j}"), scored,
                          self.search["word_limit"])
        if await self._ask_instruction(ctx, child, messages, sample):
            await self._opro_score(ctx, child)

    # ------------------------------------------------------------------ retrying failed nodes

    async def retry(self, ctx, node_id: str) -> None:
        """Re-send a failed node's calls: its instruction (if it has none yet), then its score
        with the current pools. A retried instruction joins the history: the next M-step (or
        OPRO round) can pick it, the finished one is not re-decided."""
        node = ctx.tree[node_id]
        ctx.tree.reopen(node_id)
        s = self.state
        if not node["text"] and node["parent"] is not None and node["kind"] != "human":
            parent = ctx.tree[node["parent"]]
            if self.method == "opro":
                ranked = self._ranked_history(ctx)[-20:]
                scored = [(ctx.tree[i]["text"], ctx.tree[i]["reward"]) for i in ranked]
                await self._opro_write(ctx, node, scored)
            else:
                ok = await self._write_instruction(
                    ctx, parent, node, node["meta"].get("sample", 0),
                    guidance=parent["critique"] if node["kind"] == "regenerated" else None,
                    based_on=parent["id"] if node["kind"] == "regenerated" else None)
                if ok and s["aligned"]:
                    await self._score(ctx, node)
        elif self.method == "opro":
            await self._opro_score(ctx, node)
        elif s["aligned"]:
            await self._score(ctx, node)
        if node["reward"] is not None and node["id"] not in s["history"]:
            s["history"].append(node["id"])

    # ------------------------------------------------------------------ evaluation

    async def _answer(self, ctx, node: dict, i: int, prompt: str, template: str | None = None) -> str:
        template = template or node["meta"].get("template", "if")
        if template == "cot":
            first, second = P.cot_turns(node["text"], [v["name"] for v in self.state["values"]], prompt)
            result = await ctx.gateway.call("base", first, purpose="think", node=node["id"])
            note_call(node, result.record)
            if result.error:
                raise CallFailed(f"think: {result.error}", result.record)
            messages = first + [{"role": "assistant", "content": result.text.strip()},
                                {"role": "user", "content": second}]
        elif template == "picaco":
            messages = P.response_messages(node["text"], self._demo_draw(f"pe:{i}"), prompt)
        elif template == "urial":
            messages = P.response_messages(node["text"], self._demo_draw(f"eval:{i}"), prompt,
                                           framing=False)
        else:  # "if" (an instruction as system prompt) and "q" (nothing)
            messages = P.plain_messages(node["text"] or None, prompt)
        result = await ctx.gateway.call("base", messages, purpose="answer", node=node["id"])
        note_call(node, result.record)
        if result.error:
            raise CallFailed(f"answer: {result.error}", result.record)
        return result.text.strip()

    def _eval_prompt(self, label: str, node: dict, template: str | None = None) -> dict:
        """A node as the held-out evaluation answers with it (its template decides)."""
        template = template or node["meta"].get("template", "if")
        names = [v["name"] for v in self.state["values"]]
        if template in ("picaco", "urial"):
            return node_prompt(label, node, template="demos", demos=self._demo_draw("eval"),
                               framing=template == "picaco")
        if template == "cot":
            return node_prompt(label, node, template="cot", value_names=names)
        return node_prompt(label, node)  # "if": the instruction as system prompt; "q": none

    async def _step_evaluate(self, ctx) -> None:
        """Seed vs final on held-out prompts (one batch a step), by the judge role."""
        s = self.state
        root = ctx.tree[s["root"]]
        final = ctx.tree[s["final"] or s["root"]]
        s["final"] = final["id"]
        if not self.heldout.enabled:
            s["done"] = True
            ctx.emit("search_finished", final["id"])
            return
        if not self.heldout.started:
            # PICACO's seed is answered like its final prompt (instruction + the same
            # demonstrations), so seed vs final isolates the instruction; baselines vs Q+IF
            self.heldout.start([
                self._eval_prompt("root", root, "picaco" if self.method == "picaco" else "if"),
                self._eval_prompt("final", final)],
                values=s["values"], kind=s["kind"])
        verdict = await self.heldout.step(ctx)
        if verdict is None:
            self.state["stage_index"] -= 1  # the evaluation goes on at the next step
            return
        verdict["metric"] = "conformity" if verdict["judge"] == "conformity" else verdict["judge"]
        names = [v["name"] for v in s["values"]]
        prompts = verdict["prompts"]
        verdict["per_value"] = {n: {"root": prompts[0]["per_metric"].get(n, {}).get("mean"),
                                    "final": prompts[-1]["per_metric"].get(n, {}).get("mean")}
                                for n in names}
        s["evaluation"] = verdict
        for node, key in ((root, "root"), (final, "final")):
            if node["reward"] is None and verdict[key] is not None:
                node["reward"] = verdict[key]  # fixed baselines: their reward is the verdict
        ctx.emit("search_finished", final["id"], evaluation={
            k: verdict[k] for k in ("judge", "n", "root", "final", "delta")})
        s["done"] = True

    # ------------------------------------------------------------------ a person's operations

    def _can_score(self) -> None:
        if self.method not in ("picaco", "opro"):
            raise ValueError(f"{self.method} has a fixed prompt: there is nothing to score")
        if self.method == "picaco" and not self.state["aligned"]:
            raise ValueError("TC_e needs the pools: run the noise pool and an E-step first")

    def op_plan(self, kind: str, node: dict) -> dict[str, int]:
        N = len(self.state["prompts"])
        if self.method == "opro":
            plan = {"base": N, "evaluator": N}
        else:
            plan = {"base": N * self._k(self.search["p_samples"])}
        if kind == "regenerate":
            plan["optimizer"] = 1
        if self.method == "picaco" and not self.state["best_per_iteration"]:
            # before the first M-step, a scored instruction joins e0 as an existing candidate
            extra = [i for i in self.state["history"] if i != self.state["root"]]
            if len(extra) + 1 < self.search["new_instructions"]:
                plan["base"] += N * self._k(self.search["p_samples"])
        return plan

    async def _rescore(self, ctx, node: dict) -> None:
        if self.method == "opro":
            await self._opro_score(ctx, node)
        else:
            await self._score(ctx, node)
        if node["reward"] is not None and node["id"] not in self.state["history"]:
            self.state["history"].append(node["id"])

    async def add_human(self, ctx, parent_id: str, text: str) -> dict:
        self._can_score()
        parent = ctx.tree[parent_id]
        child = ctx.tree.add(text, parent=parent_id, kind="human", step=ctx.step,
                             meta={"phase": "prompt", "level": parent["depth"] + 1,
                                   "template": parent["meta"].get("template", "picaco"), "tc": {}})
        await self._rescore(ctx, child)
        return child

    async def regenerate(self, ctx, node_id: str) -> dict:
        """A new instruction written with the node's critique as a reviewer's note, scored."""
        self._can_score()
        node = ctx.tree[node_id]
        if not (node["critique"] or "").strip():
            raise ValueError("write a critique first (c): it guides the new instruction")
        node["meta"]["regenerations"] = node["meta"].get("regenerations", 0) + 1
        child = ctx.tree.add("", parent=node_id, kind="regenerated", step=ctx.step,
                             meta={"phase": "prompt", "level": node["depth"] + 1,
                                   "template": node["meta"].get("template", "picaco"), "tc": {}})
        ok = await self._write_instruction(ctx, node, child, 100_000 + node["meta"]["regenerations"],
                                           guidance=node["critique"], based_on=node_id)
        if ok:
            await self._rescore(ctx, child)
        return child

    async def edit_aspects(self, ctx, query, aspects):
        raise ValueError("aspects belong to DRPO; PICACO scores every value of the composition")

    # ------------------------------------------------------------------ results & view

    def final_node(self, ctx) -> str | None:
        return self.state.get("final") if self.done else None

    def best_node(self, ctx) -> str | None:
        if self.method == "picaco":
            # TC_e values from different pools are not compared: the best of those scored with
            # the current pools; none yet (just after an E-step): the last M-step's choice
            ranked = self._ranked_history(ctx)
            current = [i for i in ranked if self._on_current_pools(ctx.tree[i])]
            if current:
                return current[-1]
            chosen = self.state.get("current")
            if chosen in ctx.tree and ctx.tree[chosen]["reward"] is not None:
                return chosen
            return ranked[-1] if ranked else None
        if self.method == "opro":
            ranked = self._ranked_history(ctx)
            return ranked[-1] if ranked else None
        return self.state.get("final")

    def evaluation(self) -> dict:
        return self.state.get("evaluation") or {"metric": "conformity", "root": None,
                                                "final": None, "per_value": {}}

    def view(self, ctx) -> dict:
        s = self.state
        # TC_e with the pool iteration it was computed on ("t"; current pools: s["iteration"])
        stats = {n["id"]: {"TC": n["reward"], "t": n.get("detail", {}).get("pe_iteration"),
                           "current": self._on_current_pools(n)}
                 for n in ctx.tree.nodes.values()
                 if n["reward"] is not None and self.method == "picaco"}
        per = [ctx.tree[i]["reward"] for i in s["best_per_iteration"]
               if ctx.tree[i]["reward"] is not None]
        return {"beam": list(dict.fromkeys(s["best_per_iteration"] + [s["current"]])),
                "per_level": per, "stats": stats}
