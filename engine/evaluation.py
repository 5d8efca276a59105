"""Held-out evaluation (DESIGN §10): prompts × an eval set × a judge × k samples.

An `Evaluation` is a step machine like a method: its spec (prompts, items, judge, samples,
seed) is fixed when it is made; its state (every response and every verdict) grows one batch
at a time and is plain JSON, saved after each batch. Every call goes through the gateway,
whose cache makes a resumed or repeated evaluation pay nothing twice.

Judges
    aspects     regular items: Helpfulness, Clarity, Factuality, Depth, Engagement; items in
                the safety category: Safety. 1-5 each with a rationale, one judge call per
                response; a response's score is the mean of its aspects.
    accuracy    multiple choice: the option the answer picks (engine.tasks.extract_choice)
                against the gold letter; 1 or 0. No judge call.
    conformity  PICACO's values, each 1-5 and converted to a percentage (score / 5 × 100);
                Schwartz-style compositions also get the values' relevance to the query (1-5,
                its own call and template) and Eq. 7 per response: mu' = mu × relevance / 5.
    rubric      the user's criterion, 1-5 with a rationale.
    pairwise    each prompt after the first against the first, in both orders; a win is 1, a
                tie 0.5, a loss 0, averaged over the two orders: the mean is the win rate.

Calls: base P·n·k (two per response for a think-first template); judge P·n·k for aspects and
rubric, P·n·k·(1 + relevance) for conformity, 2·(P-1)·n·k for pairwise, none for accuracy.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

from . import stats
from .gateway import CallFailed
from . import schemas as S
from .parsing import parse_answer, parse_scores
from .prompts import evaluation as P

JUDGES = ("aspects", "accuracy", "conformity", "rubric", "pairwise")
BATCH = 10  # items per batch: the unit of work saved after it finishes
SAMPLE_TEMPERATURE = 1.0  # k > 1 samples need varied answers (PICACO samples at 1.0)

SCALES = {
    "aspects": {"lo": 1, "hi": 5, "unit": "score (1-5)"},
    "rubric": {"lo": 1, "hi": 5, "unit": "score (1-5)"},
    "accuracy": {"lo": 0, "hi": 1, "unit": "accuracy"},
    "conformity": {"lo": 0, "hi": 100, "unit": "%"},
    "pairwise": {"lo": 0, "hi": 1, "unit": "win rate"},
}


def spec_id(spec: dict) -> str:
    """An evaluation's id: a hash of everything that shapes its results (same spec, same id)."""
    blob = json.dumps({k: spec[k] for k in ("judge", "samples", "seed", "rubric", "values",
                                             "kind", "safety_category", "prompts", "items",
                                             "models")},
                      sort_keys=True, ensure_ascii=False, default=str)
    return "e" + hashlib.sha256(blob.encode("utf-8")).hexdigest()[:9]


def text_prompt(text: str, label: str, spec: str | None = None, **extra) -> dict:
    """A prompt given as text: the system prompt of a chat, no examples."""
    return {"label": label, "spec": spec or f"text:{text}", "text": text, "examples": [],
            "k": 0, "template": "chat", "session": None, "node": None, **extra}


def build_messages(prompt: dict, query: str, examples: list) -> list[dict]:
    """The messages a prompt sends with one query (its template decides the layout)."""
    template = prompt.get("template", "chat")
    text = prompt.get("text") or ""
    if template == "plain":
        from .prompts.drpo import plain_messages
        return plain_messages(text, [tuple(e) for e in examples], query)
    if template == "demos":  # PICACO: instruction + demonstrations in one user message
        from .prompts.picaco import response_messages
        return response_messages(text or None, prompt.get("demos", []), query,
                                 framing=prompt.get("framing", True))
    messages = [{"role": "system", "content": text}] if text.strip() else []
    for q, a in examples:
        messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return messages + [{"role": "user", "content": query}]


class Evaluation:
    """One evaluation as a step machine; `spec` and `state` are plain JSON."""

    def __init__(self, spec: dict, state: dict | None = None):
        if spec["judge"] not in JUDGES:
            raise ValueError(f"unknown judge {spec['judge']!r}; choose one of {', '.join(JUDGES)}")
        self.spec = spec
        self.state: dict[str, Any] = state if state is not None else {
            "results": {}, "cursor": 0, "done": False, "retrieval": {}}
        self._embedded: dict[str, list] = {}

    # ------------------------------------------------------------------ shape

    @property
    def prompts(self) -> list[dict]:
        return self.spec["prompts"]

    @property
    def items(self) -> list[dict]:
        return self.spec["items"]

    @property
    def k(self) -> int:
        return self.spec["samples"]

    @property
    def judge(self) -> str:
        return self.spec["judge"]

    @property
    def done(self) -> bool:
        return bool(self.state.get("done"))

    def batches(self) -> list[tuple[int, list[str]]]:
        """(prompt index, item ids) units, in order. Pairwise: each prompt after the first,
        with the baseline's answers made on the way."""
        ids = [item["id"] for item in self.items]
        chunks = [ids[i:i + BATCH] for i in range(0, len(ids), BATCH)] or [[]]
        first = 1 if self.judge == "pairwise" else 0
        return [(p, chunk) for p in range(first, len(self.prompts)) for chunk in chunks]

    def plan_remaining(self) -> dict[str, int]:
        """Calls of the batches not run yet (samples already done are skipped by a step)."""
        out = {"base": 0, "judge": 0}
        if self.done:
            return out
        per_judge = {"pairwise": 2, "accuracy": 0}.get(self.judge, 2 if self._relevance() else 1)
        for p, chunk in self.batches()[self.state["cursor"]:]:
            todo = [(i, s) for i in chunk for s in range(self.k)
                    if self.key(p, i, s) not in self.state["results"]]
            out["base"] += len(todo) * self._answer_calls(self.prompts[p])
            if self.judge == "pairwise":
                out["base"] += sum(self._answer_calls(self.prompts[0]) for i, s in todo
                                   if self.key(0, i, s) not in self.state["results"])
            out["judge"] += len(todo) * per_judge
        return out

    def span(self) -> int:
        """How many batches the next step runs together: the following ones while their
        samples add up to BATCH at most (a small evaluation compares root and final in one
        step, so a local model's parallel slots stay busy). Pairwise: one, since batches
        share the baseline's answers."""
        if self.judge == "pairwise":
            return 1
        count, samples = 0, 0
        for _, chunk in self.batches()[self.state["cursor"]:]:
            samples += len(chunk) * self.k
            if count and samples > BATCH:
                break
            count += 1
        return max(count, 1)

    def describe_next(self) -> str:
        if self.done:
            return "finished"
        batches = self.batches()
        cursor, span = self.state["cursor"], self.span()
        units = batches[cursor:cursor + span]
        labels = ", ".join(repr(self.prompts[p]["label"]) for p, _ in units)
        number = f"batch {cursor + 1}" if span == 1 else f"batches {cursor + 1}-{cursor + span}"
        items = len(units[0][1])
        return (f"{number}/{len(batches)}: prompt{'s' if span > 1 else ''} {labels}, "
                f"{items} item{'s' if items != 1 else ''} × {self.k} "
                f"sample{'s' if self.k != 1 else ''}")

    def _relevance(self) -> bool:
        return self.judge == "conformity" and self.spec.get("kind") == "schwartz"

    def _answer_calls(self, prompt: dict) -> int:
        return 2 if prompt.get("template") == "cot" else 1

    def plan(self) -> dict[str, int]:
        """Calls of the whole evaluation if nothing fails."""
        n, k, P_ = len(self.items), self.k, len(self.prompts)
        base = sum(self._answer_calls(p) for p in self.prompts) * n * k
        if self.judge == "pairwise":
            judge = 2 * max(P_ - 1, 0) * n * k
        elif self.judge == "accuracy":
            judge = 0
        else:
            judge = P_ * n * k * (2 if self._relevance() else 1)
        return {"base": base, "judge": judge}

    def estimate_tokens(self) -> dict[str, dict[str, int]]:
        """A rough token estimate per role (characters / 4), for the cost shown before a run."""
        queries = sum(len(i["query"]) for i in self.items) / 4
        prompts = sum(len(p.get("text") or "") + sum(len(q) + len(a) for q, a in p.get("examples", [])[:4])
                      for p in self.prompts) / 4
        n, k, P_ = len(self.items), self.k, max(len(self.prompts), 1)
        answer = 300
        plan = self.plan()
        base_in = int(k * (queries * P_ + prompts * n)) + 20 * plan["base"]
        judge_in = int(plan["judge"] * (queries / max(n, 1) + answer * (2 if self.judge == "pairwise" else 1) + 250))
        return {"base": {"in": base_in, "out": plan["base"] * answer},
                "judge": {"in": judge_in, "out": plan["judge"] * 80}}

    # ------------------------------------------------------------------ running

    def key(self, p: int, item_id: str, sample: int) -> str:
        return f"{p}|{item_id}|{sample}"

    async def step(self, gateway) -> None:
        """Run the next batch (every response and verdict in it, concurrently)."""
        if self.done:
            return
        batches = self.batches()
        span = self.span()
        units = batches[self.state["cursor"]:self.state["cursor"] + span]
        by_id = {item["id"]: item for item in self.items}
        await asyncio.gather(*(self._sample(gateway, p, by_id[i], s)
                               for p, chunk in units for i in chunk for s in range(self.k)))
        self.state["cursor"] += span
        if self.state["cursor"] >= len(batches):
            self.state["done"] = True

    def failed_keys(self) -> list[str]:
        return [key for key, r in self.state["results"].items() if r.get("error")]

    def reopen_failed(self) -> int:
        """Forget the failed samples and rewind, so the next steps send their calls again
        (answers already received replay from the cache). Returns how many."""
        failed = self.failed_keys()
        for key in failed:
            del self.state["results"][key]
        if failed:
            self.state["cursor"] = 0
            self.state["done"] = False
        return len(failed)

    async def _sample(self, gateway, p: int, item: dict, s: int) -> None:
        key = self.key(p, item["id"], s)
        if key in self.state["results"]:
            return  # done in an earlier run of this batch (a resumed evaluation)
        try:
            if self.judge == "pairwise":
                result = await self._pairwise(gateway, p, item, s)
            else:
                response = await self._respond(gateway, p, item, s)
                result = {"response": response, "error": None}
                result.update(await self._verdict(gateway, item, response, s))
        except CallFailed as exc:
            previous = self.state["results"].get(key, {})
            result = {"response": previous.get("response"), "score": None, "metrics": {},
                      "error": str(exc)}
        self.state["results"][key] = result

    def _examples(self, prompt: dict, query: str) -> list:
        examples = prompt.get("examples") or []
        k = prompt.get("k") or 0
        if not examples or not k or k >= len(examples):
            return examples
        cache = self.state.setdefault("retrieval", {})
        key = f"{prompt['label']}|{query}"
        if key not in cache:
            from .embeddings import embed, top_k

            pool_key = prompt["label"]
            if pool_key not in self._embedded:
                self._embedded[pool_key] = embed([q for q, _ in examples])
            cache[key] = top_k(embed([query])[0], self._embedded[pool_key], k)
        return [examples[i] for i in cache[key]]

    def _question(self, item: dict) -> str:
        if self.judge == "accuracy" and item.get("options"):
            from .tasks import format_question
            return format_question({"question": item["query"], "options": item["options"]})
        return item["query"]

    async def _respond(self, gateway, p: int, item: dict, s: int) -> str:
        prompt = self.prompts[p]
        temperature = SAMPLE_TEMPERATURE if self.k > 1 else None
        query = self._question(item)
        if prompt.get("template") == "cot":
            from .prompts.picaco import cot_turns

            first, second = cot_turns(prompt["text"], prompt.get("value_names", []), query)
            think = await gateway.call("base", first, purpose="eval think", sample=s,
                                       temperature=temperature)
            if think.error:
                raise CallFailed(f"think: {think.error}")
            messages = first + [{"role": "assistant", "content": think.text.strip()},
                                {"role": "user", "content": second}]
        else:
            messages = build_messages(prompt, query, self._examples(prompt, item["query"]))
        stop = None
        if prompt.get("template") == "plain":
            from .prompts.drpo import PLAIN_STOP
            stop = PLAIN_STOP
        result = await gateway.call("base", messages, purpose="eval answer", sample=s,
                                    temperature=temperature, stop=stop)
        if result.error:
            raise CallFailed(f"answer: {result.error}")
        return result.text.strip()

    async def _verdict(self, gateway, item: dict, response: str, s: int) -> dict:
        judge = self.judge
        if judge == "accuracy":
            from .tasks import extract_choice

            choice = extract_choice(response, item.get("options") or [])
            correct = choice is not None and choice == item.get("answer")
            value = 1.0 if correct else 0.0
            return {"score": value, "metrics": {"accuracy": {
                "score": value, "rationale": f"chose {choice or 'nothing'}; gold {item.get('answer')}"}}}
        if judge == "aspects":
            safety = self.spec.get("safety_category", "safety")
            aspects = P.SAFETY_ASPECTS if safety in item.get("categories", []) else P.REGULAR_ASPECTS
            from .prompts.drpo import scores_model

            model = scores_model(aspects)
            scores, _ = await gateway.ask(
                "judge", [{"role": "user", "content": P.aspects_judge(item["query"], response, aspects)}],
                lambda text: parse_scores(text, aspects, model=model), purpose="eval judge",
                schema=model)
            metrics = {a: {"score": float(v.score), "rationale": v.rationale} for a, v in scores.items()}
            return {"score": stats.mean([m["score"] for m in metrics.values()]), "metrics": metrics}
        if judge == "rubric":
            def parse(text: str) -> dict:
                verdict = parse_answer(text, S.Rubric)  # "reason" counts for "rationale"
                return {"score": verdict.score, "rationale": verdict.rationale}
            verdict, _ = await gateway.ask(
                "judge", [{"role": "user", "content": P.rubric_judge(self.spec["rubric"], item["query"], response)}],
                parse, purpose="eval judge", schema=S.Rubric)
            return {"score": float(verdict["score"]),
                    "metrics": {"rubric": {"score": float(verdict["score"]), "rationale": verdict["rationale"]}}}
        # conformity
        from .prompts import picaco as PP

        values = self.spec["values"]
        names = [v["name"] for v in values]
        model = PP.judge_model(names)
        scores, _ = await gateway.ask(
            "judge", [{"role": "user", "content": PP.judge(values, item["query"], response, False)}],
            lambda text: parse_scores(text, names, model=model), purpose="eval judge",
            schema=model)
        metrics = {n: {"score": stats.conformity_percent(scores[n].score),
                       "rationale": scores[n].rationale} for n in names}
        mu = stats.mean([m["score"] for m in metrics.values()])
        out = {"score": mu, "metrics": metrics}
        if self._relevance():
            relevance = await self._relevance_score(gateway, item)
            out["relevance"] = relevance
            out["unweighted"] = mu
            out["score"] = stats.weighted_conformity(mu, relevance["score"])
        return out

    async def _relevance_score(self, gateway, item: dict) -> dict:
        def parse(text: str) -> dict:
            verdict = parse_answer(text, S.Relevance)
            return {"score": verdict.score, "reason": verdict.reason}
        verdict, _ = await gateway.ask(
            "judge", [{"role": "user", "content": P.relevance_judge(self.spec["values"], item["query"])}],
            parse, purpose="eval relevance", schema=S.Relevance)
        return verdict

    async def _pairwise(self, gateway, p: int, item: dict, s: int) -> dict:
        base_key = self.key(0, item["id"], s)
        baseline = self.state["results"].get(base_key, {}).get("response")
        if baseline is None:
            baseline = await self._respond(gateway, 0, item, s)
            self.state["results"][base_key] = {"response": baseline, "error": None,
                                               "score": None, "metrics": {}}
        response = await self._respond(gateway, p, item, s)

        def parse(text: str) -> dict:
            verdict = parse_answer(text, S.Pairwise)  # winner: "A", "B" or "tie"
            return {"winner": verdict.winner.lower(), "reasoning": verdict.reasoning}
        orders = []
        for first, second, prompt_is in ((response, baseline, "a"), (baseline, response, "b")):
            verdict, _ = await gateway.ask(
                "judge", [{"role": "user", "content": P.pairwise_judge(item["query"], first, second)}],
                parse, purpose="eval pairwise", schema=S.Pairwise)
            outcome = 0.5 if verdict["winner"] == "tie" else (1.0 if verdict["winner"] == prompt_is else 0.0)
            orders.append({**verdict, "prompt_was": prompt_is.upper(), "outcome": outcome})
        score = stats.mean([o["outcome"] for o in orders])
        rationale = " | ".join(f"{o['prompt_was']}: {o['winner']} — {o['reasoning']}" for o in orders)
        return {"response": response, "error": None, "score": score, "orders": orders,
                "metrics": {"win_rate": {"score": score, "rationale": rationale}}}

    # ------------------------------------------------------------------ the verdict

    def metrics(self) -> list[str]:
        if self.judge == "aspects":
            return P.REGULAR_ASPECTS + P.SAFETY_ASPECTS
        if self.judge == "conformity":
            return [v["name"] for v in self.spec["values"]]
        return {"accuracy": ["accuracy"], "rubric": ["rubric"], "pairwise": ["win_rate"]}[self.judge]

    def _values(self, p: int, metric: str | None = None) -> dict[str, float]:
        """Item -> mean over its samples (of the score, or of one metric)."""
        out = {}
        for item in self.items:
            values = []
            for s in range(self.k):
                r = self.state["results"].get(self.key(p, item["id"], s))
                if not r or r.get("error"):
                    continue
                if metric is None:
                    v = r.get("score")
                else:
                    v = (r.get("metrics") or {}).get(metric, {}).get("score")
                if v is not None:
                    values.append(float(v))
            if values:
                out[item["id"]] = sum(values) / len(values)
        return out

    def result(self, *, regressions_limit: int | None = None) -> dict:
        """The verdict: means with CIs, paired differences, categories, regressions, items."""
        seed = self.spec.get("seed", 0)
        pairwise = self.judge == "pairwise"
        by_prompt = [self._values(p) for p in range(len(self.prompts))]
        prompts = []
        for p, prompt in enumerate(self.prompts):
            errors = sum(1 for item in self.items for s in range(self.k)
                         if (self.state["results"].get(self.key(p, item["id"], s)) or {}).get("error"))
            entry = {k: prompt.get(k) for k in ("label", "spec", "session", "node", "text")}
            entry["tokens"] = prompt.get("tokens")
            entry["errors"] = errors
            if pairwise and p == 0:
                entry.update(mean=None, ci=None, n=len(by_prompt[0]), per_metric={})
            elif pairwise:
                outcomes = list(by_prompt[p].values())
                rate = stats.win_rate(outcomes)
                entry.update(mean=rate["mean"], ci=rate["ci"], n=rate["n"], per_metric={},
                             wins=rate["wins"], ties=rate["ties"], losses=rate["losses"])
            else:
                per_metric = {m: self._values(p, m) for m in self.metrics()}
                per_metric = {m: v for m, v in per_metric.items() if v}
                entry.update(stats.summarize_prompt(by_prompt[p], per_metric, seed))
            prompts.append(entry)
        deltas = []
        if not pairwise:
            for p in range(1, len(self.prompts)):
                d = stats.paired(by_prompt[0], by_prompt[p], seed=seed)
                deltas.append({"label": self.prompts[p]["label"],
                               "baseline": self.prompts[0]["label"], **d})
        categories = {item["id"]: item.get("categories") or [] for item in self.items}
        if pairwise:
            per_category = {}
            for item in self.items:
                for c in (item.get("categories") or ["(none)"]):
                    per_category.setdefault(c, []).append(item["id"])
            per_category = {c: {"n": len(ids), "prompts": [
                {"label": self.prompts[p]["label"], **(
                    {"mean": None, "ci": None, "n": 0} if p == 0 else
                    {k: v for k, v in stats.win_rate([by_prompt[p][i] for i in ids if i in by_prompt[p]]).items()
                     if k in ("mean", "ci", "n")})}
                for p in range(len(self.prompts))], "delta": None}
                for c, ids in sorted(per_category.items())}
        else:
            per_category = stats.per_category(categories, by_prompt, seed)
            for entry in per_category.values():
                for p, prompt_entry in enumerate(entry["prompts"]):
                    prompt_entry["label"] = self.prompts[p]["label"]
        regressions = []
        if not pairwise:
            by_id = {item["id"]: item for item in self.items}
            for r in stats.regressions(by_prompt, limit=regressions_limit):
                item = by_id[r["item"]]
                p = r["prompt_index"]
                regressions.append({
                    "item": r["item"], "query": item["query"], "categories": item.get("categories", []),
                    "baseline": self.prompts[0]["label"], "prompt": self.prompts[p]["label"],
                    "score_baseline": r["baseline"], "score_prompt": r["score"],
                    "response_baseline": self._first(0, r["item"], "response"),
                    "response_prompt": self._first(p, r["item"], "response"),
                    "rationale_baseline": self._rationale(0, r["item"]),
                    "rationale_prompt": self._rationale(p, r["item"])})
        items = []
        for item in self.items:
            results = []
            for p, prompt in enumerate(self.prompts):
                samples = []
                for s in range(self.k):
                    r = self.state["results"].get(self.key(p, item["id"], s))
                    if r is None:
                        continue
                    samples.append({"response": r.get("response"), "score": r.get("score"),
                                    "error": r.get("error"), "metrics": r.get("metrics") or {},
                                    **({"relevance": r["relevance"]} if "relevance" in r else {})})
                results.append({"label": prompt["label"], "score": by_prompt[p].get(item["id"]),
                                "samples": samples})
            items.append({"item": item["id"], "query": item["query"],
                          "categories": item.get("categories", []), "results": results})
        return {
            "judge": self.judge, "n": len(self.items), "samples": self.k, "seed": seed,
            "metrics": self.metrics(), "scale": SCALES[self.judge],
            "prompts": prompts, "delta": deltas[0] if deltas else None, "deltas": deltas,
            "per_category": per_category, "regressions": regressions, "items": items,
            "status": "done" if self.done else "paused",
        }

    def _first(self, p: int, item_id: str, field: str):
        for s in range(self.k):
            r = self.state["results"].get(self.key(p, item_id, s))
            if r and not r.get("error") and r.get(field) is not None:
                return r[field]
        return None

    def _rationale(self, p: int, item_id: str) -> str:
        for s in range(self.k):
            r = self.state["results"].get(self.key(p, item_id, s))
            if r and not r.get("error"):
                return " · ".join(f"{m}: {v.get('rationale', '')}" for m, v in (r.get("metrics") or {}).items())
        return ""


def compact(result: dict) -> dict:
    """The verdict without per-item detail: what `run --json` prints for a session."""
    prompts = [{k: p.get(k) for k in ("label", "node", "mean", "ci", "n", "per_metric", "tokens",
                                      "errors")}
               for p in result["prompts"]]
    return {"judge": result["judge"], "n": result["n"], "samples": result["samples"],
            "prompts": prompts, "delta": result["delta"]}


# ----------------------------------------------------------------------------- in a session

class HeldOut:
    """The held-out evaluation a method ends with: its root (the baseline) against its final
    prompt, by the judge role, on the [eval] set (DRPO, PICACO) or the test split (VAPO).

    It lives in the method's state under "heldout": the items (loaded when the session is
    made, so a changed file cannot change a session), then the Evaluation's spec and state.
    Each batch is one step of the method; the verdict goes to the method's "evaluation"."""

    def __init__(self, method_state: dict, cfg: dict):
        self.s = method_state
        self.cfg = cfg
        self._evaluation: Evaluation | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.s.get("heldout"))

    @staticmethod
    def setup(method_state: dict, cfg: dict, items: list[dict] | None, source: str) -> None:
        e = cfg.get("eval") or {}
        if not e.get("enabled") or not items or "judge" not in cfg["models"]:
            method_state["heldout"] = None
            return
        method_state["heldout"] = {"items": items, "source": source, "spec": None, "state": None}

    def _spec(self, prompts: list[dict], values: list[dict] | None = None,
              kind: str | None = None) -> dict:
        e = self.cfg["eval"]
        return {"judge": e["judge"], "samples": e["samples"], "seed": self.cfg["random_seed"],
                "rubric": e.get("rubric"), "values": values, "kind": kind,
                "safety_category": "safety", "prompts": prompts,
                "items": self.s["heldout"]["items"],
                "models": {r: self.cfg["models"][r]["model"] for r in ("base", "judge")},
                "data": {"source": self.s["heldout"]["source"],
                         "category_field": e.get("category_field"), "limit": e.get("limit")}}

    def plan(self, prompts: int = 2, answer_calls: tuple[int, ...] | None = None) -> dict[str, int]:
        """Calls of the whole evaluation (before it starts: `prompts` prompts)."""
        if not self.enabled:
            return {"base": 0, "judge": 0}
        if self.s["heldout"]["spec"] is not None:
            return self.evaluation.plan()
        e = self.cfg["eval"]
        placeholder = [{"label": str(i), "template": "chat"} for i in range(prompts)]
        for i, calls in enumerate(answer_calls or ()):
            placeholder[i]["template"] = "cot" if calls == 2 else "chat"
        values = [{"name": "v", "definition": "v"}] if e["judge"] == "conformity" else None
        spec = self._spec(placeholder, values=values,
                          kind=(self.cfg.get("values") or {}).get("kind"))
        return Evaluation(spec).plan()

    def plan_remaining(self) -> dict[str, int]:
        if not self.enabled:
            return {"base": 0, "judge": 0}
        if self.s["heldout"]["spec"] is None:
            return self.plan()
        return self.evaluation.plan_remaining()

    def start(self, prompts: list[dict], values: list[dict] | None = None,
              kind: str | None = None) -> None:
        prompt_tokens(prompts, self.cfg["models"]["base"]["model"])  # each prompt's length
        self.s["heldout"]["spec"] = self._spec(prompts, values, kind)
        self.s["heldout"]["state"] = None
        self._evaluation = None

    @property
    def started(self) -> bool:
        return self.enabled and self.s["heldout"]["spec"] is not None

    @property
    def evaluation(self) -> Evaluation:
        if self._evaluation is None:
            h = self.s["heldout"]
            self._evaluation = Evaluation(h["spec"], h["state"])
            h["state"] = self._evaluation.state
        return self._evaluation

    @property
    def done(self) -> bool:
        return self.started and self.evaluation.done

    async def step(self, ctx) -> dict | None:
        """One batch; returns the verdict (compact, with root/final numbers) once done."""
        await self.evaluation.step(ctx.gateway)
        if not self.evaluation.done:
            return None
        return self.verdict()

    def verdict(self) -> dict:
        full = self.evaluation.result()
        out = compact(full)
        means = [p["mean"] for p in full["prompts"]]
        out["root"] = means[0] if means else None
        out["final"] = means[-1] if means else None
        out["metric"] = self.cfg["eval"]["judge"]
        out["source"] = self.s["heldout"]["source"]
        out["per_category"] = full["per_category"]
        out["regressions"] = full["regressions"][:10]
        if self.evaluation._relevance():  # Eq. 7: the mean relevance each prompt was weighted by
            out["relevance"] = {}
            for p, label in ((0, "root"), (len(full["prompts"]) - 1, "final")):
                rel = [r["relevance"]["score"] for key, r in self.evaluation.state["results"].items()
                       if key.startswith(f"{p}|") and not r.get("error") and r.get("relevance")]
                out["relevance"][label] = stats.mean(rel)
        return out

    def describe_next(self) -> str:
        return "held-out evaluation, " + self.evaluation.describe_next()

    def failed_samples(self) -> int:
        return len(self.evaluation.failed_keys()) if self.started else 0

    def reopen_failed(self) -> int:
        """Forget the failed samples so the next evaluation steps send them again."""
        return self.evaluation.reopen_failed() if self.started else 0


class WithHeldOut:
    """What a method (with `state` and `cfg`) needs for its end-of-run held-out evaluation;
    it names the stage that runs it in `_reopen_evaluation`."""

    state: dict
    cfg: dict

    @property
    def heldout(self) -> HeldOut:
        if getattr(self, "_heldout", None) is None or self._heldout.s is not self.state:
            self._heldout = HeldOut(self.state, self.cfg)
        return self._heldout

    def _reopen_evaluation(self) -> None:
        raise NotImplementedError

    def retry_heldout(self) -> int:
        """Failed samples of a finished held-out evaluation are sent again by the next steps."""
        if not self.heldout.failed_samples():
            return 0
        n = self.heldout.reopen_failed()
        self.state["done"] = False
        self._reopen_evaluation()
        return n


def node_prompt(label: str, node: dict, *, examples: list | None = None, k: int = 0,
                template: str = "chat", **extra) -> dict:
    """A prompt spec for one node of a session."""
    return {"label": label, "spec": f"node:{node['id']}", "text": node["text"],
            "examples": [list(e) for e in (examples or [])], "k": k, "template": template,
            "session": None, "node": node["id"], **extra}


# ----------------------------------------------------------------------------- standalone

def session_prompt(session: dict, node_id: str | None, label: str) -> dict:
    """A node of a stored session as a prompt, with what it goes with: DRPO's optimized ICL
    examples (K nearest per query) and layout, PICACO's template and demonstrations.
    `node_id` None: the accepted node, else the final one."""
    nodes = session["tree"]["nodes"]
    state = session.get("method_state") or {}
    if node_id is None:
        node_id = next((n["id"] for n in nodes.values() if n.get("accepted")), None) \
            or state.get("final")
        if node_id is None:
            raise ValueError(f"session {session['id']} has no accepted or final node yet; "
                             f"name one as {session['id']}:NODE")
    if node_id not in nodes:
        raise ValueError(f"no node {node_id!r} in session {session['id']}")
    node = nodes[node_id]
    if node.get("status") == "failed" or not (node.get("text") or "").strip() and \
            node["meta"].get("template") != "q":
        raise ValueError(f"node {node_id} of session {session['id']} has no usable prompt")
    cfg = session["config"]
    from .config import family

    kind = family(cfg["method"])
    spec = f"{session['id']}:{node_id}"
    if kind == "drpo":
        if node["meta"].get("phase") == "icl":
            raise ValueError(f"node {node_id} is an ICL example's answer, not a system prompt")
        examples = []
        for i, (query, response) in enumerate((state.get("data") or {}).get("icl", [])):
            final = (state.get("icl_final") or {}).get(str(i))
            examples.append([query, nodes[final]["text"] if final in nodes else response])
        k = cfg["search"].get("icl_k", 0)
        prompt = node_prompt(label, node, examples=examples if k else [], k=k,
                             template=cfg["search"].get("layout", "chat"))
    elif kind == "picaco":
        template = node["meta"].get("template", "if")
        names = [v["name"] for v in state.get("values", [])]
        if template in ("picaco", "urial"):
            import random

            demos = state.get("demos") or []
            draw = random.Random(f"{cfg['random_seed']}:eval").sample(demos, min(3, len(demos)))
            prompt = node_prompt(label, node, template="demos", demos=draw,
                                 framing=template == "picaco")
        elif template == "cot":
            prompt = node_prompt(label, node, template="cot", value_names=names)
        else:
            prompt = node_prompt(label, node)
    else:
        prompt = node_prompt(label, node)
    prompt.update(spec=spec, session=session["id"])
    return prompt


def prompt_tokens(prompts: list[dict], model: str) -> None:
    """Each prompt's length in tokens (what it adds to every future call), in place."""
    try:
        from .gateway import _litellm

        counter = _litellm().token_counter
    except Exception:  # no tokenizer: a rough count
        counter = None
    for prompt in prompts:
        text = prompt.get("text") or ""
        extra = " ".join(f"{q} {a}" for q, a in (prompt.get("examples") or [])[:prompt.get("k") or None])
        full = f"{text} {extra}".strip()
        try:
            prompt["tokens"] = int(counter(model=model, text=full)) if counter and full else \
                max(0, round(len(full) / 4))
        except Exception:
            prompt["tokens"] = max(0, round(len(full) / 4))


def estimate_cost(evaluation: Evaluation, models: dict) -> dict:
    """Planned calls, estimated tokens and $ per role (prices from litellm's table; a model
    not in the table, such as a local one, costs 0)."""
    tokens = evaluation.estimate_tokens()
    plan = evaluation.plan()
    out = {"calls": plan, "tokens": tokens, "cost": {}, "priced": {}}
    try:
        from .gateway import _litellm

        table = _litellm().model_cost
    except Exception:
        table = {}
    for role in ("base", "judge"):
        model = models[role]["model"]
        entry = table.get(model) or table.get(model.split("/", 1)[-1]) or {}
        price_in = entry.get("input_cost_per_token")
        price_out = entry.get("output_cost_per_token")
        out["priced"][role] = price_in is not None
        out["cost"][role] = round((price_in or 0) * tokens[role]["in"]
                                  + (price_out or 0) * tokens[role]["out"], 6)
    out["total"] = round(sum(out["cost"].values()), 6)
    return out


class EvalRunner:
    """One standalone evaluation: the Evaluation, its gateway (roles base and judge) and its
    store. A batch is a step; the whole document is saved after each one."""

    def __init__(self, doc: dict, store=None, cache_dir=None, on_event=None):
        from .gateway import Gateway

        self.doc = doc
        self.store = store
        self.on_event = on_event
        self.evaluation = Evaluation(doc["spec"], doc.get("state"))
        doc["state"] = self.evaluation.state
        self.gateway = Gateway(doc["models"], doc["gateway_settings"], cache_dir=cache_dir,
                               seed=doc["spec"].get("seed", 0), on_event=on_event)
        self.gateway.import_state(doc.get("gateway") or {})
        self.gateway.log = list(doc.get("call_log") or [])
        self._pause = False

    @classmethod
    def create(cls, spec: dict, models: dict, settings: dict, *, name: str = "", store=None,
               cache_dir=None, on_event=None) -> "EvalRunner":
        import time

        now = time.time()
        doc = {"id": spec_id(spec), "kind": "evaluation", "name": name, "created": now,
               "updated": now, "status": "new", "steps": 0, "spec": spec, "state": None,
               "models": {r: models[r] for r in ("base", "judge")},
               "gateway_settings": settings, "gateway": {}, "call_log": [],
               "planned_calls": Evaluation(spec).plan()}
        return cls(doc, store=store, cache_dir=cache_dir, on_event=on_event)

    @property
    def done(self) -> bool:
        return self.evaluation.done

    def save(self) -> None:
        import time

        doc = self.doc
        doc["state"] = self.evaluation.state
        doc["gateway"] = self.gateway.export_state()
        doc["call_log"] = [{**r, "error": self.gateway.redactor.redact(r.get("error"))}
                           for r in self.gateway.log]
        for result in doc["state"]["results"].values():
            if result.get("error"):
                result["error"] = self.gateway.redactor.redact(result["error"])
        doc["updated"] = time.time()
        if self.store is not None:
            self.store.save_eval(doc)
        self.gateway.flush_cache()

    def cost(self) -> float:
        return self.gateway.totals()["cost"]

    def pause(self) -> None:
        self._pause = True

    async def step(self) -> None:
        self.gateway.begin_step()
        self.doc["status"] = "running"
        await self.evaluation.step(self.gateway)
        self.doc["steps"] += 1
        self.doc["status"] = "done" if self.done else "paused"
        self.save()

    async def run(self, max_cost: float | None = None, steps: int | None = None) -> str:
        """Batches until done, paused, `steps` batches, or this call's cost reaches
        `max_cost` (the batch that crosses it finishes first; running again goes on). Failed samples of a finished evaluation are
        sent again. Returns why it stopped: "done", "paused", "budget"."""
        self._pause = False
        start_cost = self.cost()
        if self.done and self.evaluation.reopen_failed():
            self.doc["planned_calls"] = {r: self.gateway.totals()["calls"].get(r, 0) + n
                                         for r, n in self.evaluation.plan_remaining().items()}
        count = 0
        while not self.done and not self._pause:
            if max_cost is not None and self.cost() - start_cost >= max_cost:
                self.doc["status"] = "paused"
                self.save()
                return "budget"
            if steps is not None and count >= steps:
                break
            await self.step()
            count += 1
        if self.doc["status"] in ("new", "running"):
            self.doc["status"] = "paused"
        self.save()
        return "done" if self.done else "paused"

    def verdict(self) -> dict:
        """The full verdict (`eval --json`, reports)."""
        out = self.evaluation.result()
        totals = self.gateway.totals()
        out.update(
            evaluation=self.doc["id"], name=self.doc.get("name", ""),
            created=self.doc["created"], updated=self.doc["updated"],
            status="done" if self.done else "paused",
            judge_model=self.doc["models"]["judge"]["model"],
            data=self.doc["spec"].get("data", {}), calls=totals["calls"],
            planned_calls=dict(self.doc["planned_calls"]), cost=totals["cost"],
            tokens=totals["tokens"])
        return out


def session_verdict(session: dict) -> dict:
    """The full verdict of a session's end-of-run held-out evaluation (for reports and the
    Results view); ValueError (one line) when it has not run."""
    held = (session.get("method_state") or {}).get("heldout") or {}
    if not held.get("spec"):
        raise ValueError(f"session {session['id']} has no held-out evaluation yet (it runs "
                         f"when the search ends)")
    out = Evaluation(held["spec"], held["state"]).result()
    usage = (session.get("gateway") or {}).get("usage") or {}
    out.update(evaluation=session["id"], name=session.get("name", ""),
               created=session.get("created"), updated=session.get("updated"),
               judge_model=session["config"]["models"].get("judge", {}).get("model"),
               data=held["spec"].get("data", {}),
               calls={r: u.get("calls", 0) for r, u in usage.items()},
               planned_calls=session.get("planned_calls", {}),
               cost=round(sum(u.get("cost", 0.0) for u in usage.values()), 6),
               tokens={r: {"in": u.get("tokens_in", 0), "out": u.get("tokens_out", 0)}
                       for r, u in usage.items()})
    return out


def compare_spec(session: dict, baseline_node: str, other_node: str) -> tuple[dict, dict, dict]:
    """An evaluation of two nodes of a session on its held-out set, with its judge: the
    (spec, models, gateway settings) for EvalRunner.create. ValueError (one line) when the
    session has no held-out items or a node has no usable prompt."""
    held = (session.get("method_state") or {}).get("heldout") or {}
    cfg = session["config"]
    if not held.get("items") or "judge" not in cfg["models"]:
        raise ValueError(f"session {session['id']} has no held-out set ([eval] is off, or the "
                         f"session is older than the held-out evaluation)")
    prompts = [session_prompt(session, baseline_node, f"{baseline_node} (marked)"),
               session_prompt(session, other_node, other_node)]
    prompt_tokens(prompts, cfg["models"]["base"]["model"])
    e = cfg["eval"]
    state = session.get("method_state") or {}
    spec = {"judge": e["judge"], "samples": e["samples"], "seed": cfg["random_seed"],
            "rubric": e.get("rubric"), "values": state.get("values"),
            "kind": state.get("kind"), "safety_category": "safety", "prompts": prompts,
            "items": held["items"],
            "models": {r: cfg["models"][r]["model"] for r in ("base", "judge")},
            "data": {"source": held.get("source"), "limit": e.get("limit"),
                     "category_field": e.get("category_field")}}
    models = {r: dict(cfg["models"][r]) for r in ("base", "judge")}
    return spec, models, dict(cfg["gateway"])
