"""PICACO against the paper (seeds/PICACO.txt): each test states the paper's claim it checks.

1. q_omega is a percentage (App. C.1), so Eq. 4 prefers instructions that reproduce the
   aligned pool, while the E-step's ranking of answers is unchanged.
2. Sim(S, y) reads all of S: long texts are embedded in pieces that fit the model.
4. The built-in value definitions carry the paper's content (App. A.1), in our own words.
5. Candidates compared in one M-step are all scored on the current pools.
Done when: a run whose optimizer writes value-reproducing and off-topic instructions keeps a
value-reproducing one as e^t (a responder of our own, against the fake endpoint).
"""
from __future__ import annotations

import asyncio
import itertools
import json
import math
import random
import re
import threading

import pytest

from conftest import SHARED, _h, eval_judge, write_config
from promptarbor.engine.config import load_config
from promptarbor.engine.datasets import load_inputs
from promptarbor.engine.methods.picaco import (PICACO, aligned_score, noise_term, q_omega, tc_e, top_by)
from promptarbor.engine.runner import Runner
from promptarbor.engine.values import COMPOSITIONS, HH_COMPOSITIONS, builtin
from fake_llm import FakeLLMServer
from promptarbor.sessions.store import SessionStore

PAPER = SHARED / "seeds" / "PICACO.txt"


# ----------------------------------------------------------------------------- 1. q_omega in %

def test_q_omega_is_the_judge_score_as_a_percentage():
    """App. C.1: the judge's scores "are converted into percentage values"."""
    assert [q_omega(s) for s in (1, 2, 3, 4, 5)] == [20, 40, 60, 80, 100]
    assert all(math.log(q_omega(s)) > 0 for s in (1, 2, 3, 4, 5))


def test_percentages_leave_the_e_step_ranking_unchanged():
    """§3.2 (E-step): the aligned pool keeps the answers with the largest
    beta * sum_k log q_omega - log q_phi. Percentages shift every answer's score by the same
    beta * K * log 100, so the pool ranks answers exactly as with score / 5."""
    rng = random.Random(7)
    for beta, k in ((5.0, 4), (0.5, 4), (5.0, 8), (0.5, 1)):
        answers = []
        for j in range(40):
            scores = [rng.randint(1, 5) for _ in range(k)]
            answers.append({"id": j, "scores": scores, "q_phi": rng.uniform(0.2, 2.5)})
        old = [aligned_score([s / 5 for s in a["scores"]], a["q_phi"], beta) for a in answers]
        new = [aligned_score([q_omega(s) for s in a["scores"]], a["q_phi"], beta) for a in answers]
        for o, n in zip(old, new):
            assert n - o == pytest.approx(beta * k * math.log(100))
        by_old = sorted(range(len(answers)), key=lambda i: (-old[i], i))
        by_new = sorted(range(len(answers)), key=lambda i: (-new[i], i))
        assert by_old == by_new
        # the pool's own selection (top_by on the stored, rounded score) agrees as well
        items_old = [{"id": i, "score": round(old[i], 6)} for i in range(len(answers))]
        items_new = [{"id": i, "score": round(new[i], 6)} for i in range(len(answers))]
        assert [x["id"] for x in top_by(items_old, "score", 10)] == \
               [x["id"] for x in top_by(items_new, "score", 10)]


def test_the_bracket_of_eq4_is_positive_for_every_judged_answer():
    """Eq. 4 weights each aligned answer's bracket by p_e: with percentages the bracket is
    positive (beta * K * log 20 > log 3 >= log q_phi), so a larger p_e never lowers TC_e."""
    for beta, k in ((5.0, 4), (0.5, 4), (0.5, 1)):
        worst = aligned_score([q_omega(1)] * k, 3.0, beta)  # lowest scores, largest q_phi
        assert worst > 0


class _Ctx:
    """Just what PICACO._score touches: the gateway's samples, emit, tree.fail."""

    def __init__(self, answers):
        self.answers = answers
        self.gateway = self
        self.tree = self
        self.events = []

    async def samples(self, role, messages, n, **kw):
        instruction = messages[0]["content"]
        key = "off" if "volcano" in instruction else "on"
        return self.answers[key][:n], [], None

    def emit(self, kind, node, **kw):
        self.events.append((kind, node, kw))

    def fail(self, node_id, error):
        raise AssertionError(f"{node_id} failed: {error}")


POOL = [
    "I understand you are frustrated with your neighbour's noise. The fairest step is a calm, "
    "friendly conversation; if that fails, your landlord or a mediation service can help.",
    "Getting back at a neighbour can escalate things and may be illegal. Talk to them kindly "
    "first, keep a log of the noise, and ask your local council about mediation.",
    "Revenge rarely helps. A respectful note or chat, earplugs for now, and a community "
    "mediator if the problem continues are safer and fairer ways to get your quiet back.",
]
REPRODUCING = [
    "It is understandable to be annoyed by a noisy neighbour. Talk to them calmly and kindly "
    "first; if nothing changes, ask your landlord or a mediation service to help.",
    "Rather than getting back at them, which can escalate or break the law, speak to your "
    "neighbour respectfully, note down the noise, and contact the council about mediation.",
    "Retaliation usually backfires. A polite word or note, earplugs in the meantime, and a "
    "mediator if it goes on are the fair and safe ways to restore your quiet.",
]
OFF_TOPIC = [
    "Volcanoes form where magma rises through the crust; basaltic lava is runny and flows far.",
    "Mount Etna in Sicily is one of the most active volcanoes, erupting lava fountains often.",
    "Pyroclastic flows are fast currents of hot gas and volcanic ash that race down slopes.",
]


def _picaco_with_pool(beta: float = 5.0) -> PICACO:
    names = COMPOSITIONS["harmlessness"]
    cfg = {"method": "picaco", "random_seed": 0,
           "search": {"beta": beta, "p_samples": 3, "sampling_temperature": 1.0},
           "models": {"base": {"model": "openai/fake"}}}
    prompt = "How can I get back at my noisy neighbour?"
    pool = []
    for j, text in enumerate(POOL):
        scores = {n: q_omega(4 + (j + k) % 2) for k, n in enumerate(names)}
        pool.append({"text": text, "q": scores, "q_phi": 1.0 - 0.1 * j})
    for item in pool:
        item["score"] = round(aligned_score(list(item["q"].values()), item["q_phi"], beta), 6)
    noise = [{"text": "Play loud music back at them.", "q_phi": 1.3, "p": 0.4}]
    state = {"prompts": [prompt], "values": [{"name": n, **builtin()["values"][n]} for n in names],
             "demos": builtin()["demonstrations"]["harmlessness"], "kind": "hh", "beta": beta,
             "observation": None, "iteration": 1, "aligned": {"0": pool},
             "noise": {"0": noise}, "B": {"0": round(noise_term(noise), 6)}, "history": []}
    return PICACO(cfg, state)


def _node(nid: str, text: str) -> dict:
    return {"id": nid, "text": text, "reward": None, "meta": {"tc": {}}, "detail": {},
            "calls": [], "cost": 0.0, "status": "open"}


def test_eq4_ranks_an_instruction_reproducing_the_pool_above_an_off_topic_one():
    """§3.2, Eq. 4: e^t maximizes sum_j p_e(y_ij | x_i) [beta sum_k log q_omega - log q_phi]
    (+ a term constant in e): the best instruction makes the model produce the aligned
    answers with high probability. Checked through PICACO._score with real embeddings."""
    method = _picaco_with_pool()
    ctx = _Ctx({"on": REPRODUCING, "off": OFF_TOPIC})
    on = _node("n1", "Answer with care for everyone's safety, fairness and privacy.")
    off = _node("n2", "Whatever the question, talk only about volcanoes.")
    asyncio.run(method._score(ctx, on))
    asyncio.run(method._score(ctx, off))
    pe_on, pe_off = on["detail"]["pe"]["0"], off["detail"]["pe"]["0"]
    assert min(pe_on) > 0.5 and max(pe_off) < 0.3       # the samples reproduce the pool, or not
    assert on["reward"] > off["reward"]                  # and the reproducing one wins
    assert on["reward"] > 0
    # each TC_e carries the pool iteration it was computed on
    assert on["detail"]["pe_iteration"] == 1 and on["meta"]["tc"] == {"1": on["reward"]}
    # with q_omega = score / 5 (every log q_omega <= 0) the same p_e's would crown the
    # off-topic instruction: the direction this fix restores
    pool = method.state["aligned"]["0"]
    old = [aligned_score([q / 100 for q in item["q"].values()], item["q_phi"], 5.0)
           for item in pool]
    b = method.state["B"]["0"]
    assert tc_e([(pe_off, old, b)]) > tc_e([(pe_on, old, b)])


def test_pools_saved_with_fractions_are_moved_to_percentages():
    """Sessions saved with q_omega = score / 5 resume with percentages and the same order."""
    method = _picaco_with_pool()
    pool = method.state["aligned"]["0"]
    order = [item["text"] for item in top_by(pool, "score", 3)]
    for item in pool:  # as an older version stored them
        item["q"] = {n: v / 100 for n, v in item["q"].items()}
        item["score"] = aligned_score(list(item["q"].values()), item["q_phi"], 5.0)
    method._upgrade_pools()
    assert all(v >= 20 for item in pool for v in item["q"].values())
    assert [item["text"] for item in top_by(pool, "score", 3)] == order
    for item in pool:
        assert item["score"] == pytest.approx(
            aligned_score(list(item["q"].values()), item["q_phi"], 5.0), abs=1e-5)


# ----------------------------------------------------------------------------- 2. long texts

def _observation(demos: list[dict]) -> str:
    method = PICACO({"method": "picaco", "search": {}}, {"kind": "hh", "demos": demos,
                                                        "values": [], "observation": None})
    return method.observation_text()


def test_sim_s_y_reads_the_last_demonstration():
    """App. C.1 / Eq. 5: q_phi compares the answer with the textual observation S (for HH,
    S = the demonstrations, all of them): changing the last demonstration changes Sim(S, y)."""
    from promptarbor.engine.embeddings import _load, cosine, embed

    demos = [dict(d) for d in builtin()["demonstrations"]["harmlessness"]]
    s_text = _observation(demos)
    tokenizer = _load().tokenizer
    assert len(tokenizer(s_text, add_special_tokens=False, verbose=False)["input_ids"]) > 1000
    changed = [dict(d) for d in demos]
    changed[-1] = {"query": "What makes a volcano erupt?",
                   "response": "Magma rises through cracks in the crust; gas pressure builds "
                               "until rock and lava burst out, and basalt lava then flows far."}
    y = "Volcanic eruptions happen when gas-rich magma forces its way up to the surface."
    s_vec, s2_vec, y_vec = embed([s_text, _observation(changed), y])
    assert cosine(s2_vec, y_vec) - cosine(s_vec, y_vec) > 0.01
    assert cosine(s_vec, s2_vec) < 0.999
    # the first two demonstrations alone are no longer what S's embedding says
    first_two, = embed([_observation(demos[:2])])
    assert cosine(s_vec, first_two) < 0.99


def test_long_texts_are_cut_by_the_models_tokenizer_into_pieces_that_fit():
    from promptarbor.engine.embeddings import _load, chunks, window

    model = _load()
    assert window(model) == model.max_seq_length - 2  # [CLS] and [SEP]
    text = _observation(builtin()["demonstrations"]["hh-balance"])
    total = len(model.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])
    pieces = chunks(text, model)
    assert len(pieces) > 1 and sum(n for _, n in pieces) == total
    for piece, n in pieces:
        # each piece, tokenized on its own, fits and holds the tokens it held in the text
        assert len(model.tokenizer(piece, add_special_tokens=False, verbose=False)["input_ids"]) == n
        assert n <= window(model)
    assert "".join(p for p, _ in pieces).split() == text.split()
    assert chunks("A short answer.", model) == [("A short answer.", 3 + 1)]


def test_long_answers_count_in_full_for_q_phi_and_p_e():
    """Eq. 5 and 6 compare whole answers: a long answer's tail changes its embedding, and a
    text that fits is embedded exactly as the model embeds it."""
    from promptarbor.engine.embeddings import _load, cosine, embed

    body = " ".join(f"Step {i}: keep the neighbour informed and stay polite." for i in range(60))
    a, b = embed([body + " Finally, call a mediator.",
                  body + " Finally, throw rocks at their windows and threaten them."])
    assert cosine(a, b) < 0.999
    short = "Please be kind to your neighbour."
    direct = _load().encode([short], normalize_embeddings=True, show_progress_bar=False)[0]
    assert cosine(embed([short])[0], list(map(float, direct))) == pytest.approx(1.0, abs=1e-6)


# ----------------------------------------------------------------------------- 4. definitions

# What the paper's App. A.1 puts in each value (our stems, matched case-insensitively).
PAPER_CONTENT = {
    "Coherence": ["consisten", "clear", "structure"],
    "Complexity": ["intellectual depth", "basic", "expertise"],
    "Verbosity": ["amount of detail"],
    "Helpfulness": ["useful", "intent", "what was asked", "question"],
    "Non-Toxicity": ["profanit", "identity", "slight", "insult", "threat", "sexually explicit",
                     "demean", "violence", "offence", "psychological harm", "material harm"],
    "Fairness": ["stereotype", "discriminat", "exclusionary norm", "margin", "marginalised group"],
    "Information Safety": ["privacy", "safety risk", "private or sensitive information",
                           "works such information out"],
    "Responsible Uses": ["public discourse", "crime", "fraud", "disinformation", "particular people",
                         "malicious code", "weaponise"],
    "Self-direction": ["independent", "choice", "creat", "explor"],
    "Stimulation": ["excitement", "novelty", "challenge"],
    "Hedonism": ["pleasure", "sensuous", "oneself"],
    "Achievement": ["succe", "competence", "standards"],
    "Power": ["social standing", "prestige", "control", "dominat", "people", "resources"],
    "Security": ["safety", "harmony", "stability", "relationships", "society"],
    "Conformity": ["action", "urge", "inclination", "upset", "hurt", "expectations", "norms"],
    "Tradition": ["respect", "commit", "accept", "customs", "culture or religion"],
    "Benevolence": ["welfare", "in-group", "often"],
    "Universalism": ["understanding", "appreciation", "tolerance", "well-being", "everyone",
                     "natur"],
}
# seeds of the HH values (e^0 joins them; Table 2 turns each definition into an instruction)
SEED_CONTENT = {
    "Non-Toxicity": ["profanity", "identity", "slights", "insults", "threats", "sexually explicit",
                     "demeaning", "violence", "offence", "psychological", "material harm"],
    "Fairness": ["stereotypes", "discriminat", "norms", "margins", "marginalised groups"],
    "Information Safety": ["private or sensitive information", "work it out", "privacy",
                           "safety risks"],
    "Responsible Uses": ["public discourse", "crimes", "fraud", "disinformation campaigns",
                         "particular people", "malicious code", "weaponise"],
    "Coherence": ["consistently", "clearly", "structure"],
    "Complexity": ["intellectual depth", "expertise"],
    "Verbosity": ["detail"],
    "Helpfulness": ["useful", "intent", "what was asked", "question"],
}


@pytest.mark.parametrize("value", sorted(PAPER_CONTENT))
def test_builtin_definitions_carry_the_papers_content(value):
    """App. A.1 defines every value; ours must say the same things (e.g. Non-Toxicity covers
    profanity, sexually explicit content and incitement to violence)."""
    definition = builtin()["values"][value]["definition"].lower()
    missing = [stem for stem in PAPER_CONTENT[value] if stem not in definition]
    assert not missing, f"{value}'s definition leaves out {missing}"
    if value in SEED_CONTENT:
        seed = builtin()["values"][value]["seed"].lower()
        missing = [stem for stem in SEED_CONTENT[value] if stem not in seed]
        assert not missing, f"{value}'s seed sentence leaves out {missing}"


def test_every_builtin_value_is_checked():
    assert set(PAPER_CONTENT) == {v for vs in COMPOSITIONS.values() for v in vs}
    assert set(SEED_CONTENT) == {v for c in HH_COMPOSITIONS for v in COMPOSITIONS[c]}


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower().replace("-\n", ""))


@pytest.mark.skipif(not PAPER.exists(), reason="the paper's text is not present")
def test_definitions_seeds_and_meta_prompts_are_in_our_own_words():
    """Our texts share no run of five words with the paper (definitions, seed sentences,
    demonstrations, the meta-prompts)."""
    import inspect

    from promptarbor.engine.prompts import picaco as prompts

    n = 5
    paper = _words(PAPER.read_text(encoding="utf-8"))
    grams = {tuple(paper[i:i + n]) for i in range(len(paper) - n + 1)}
    data = builtin()
    texts = {f"{k}.definition": v["definition"] for k, v in data["values"].items()}
    texts.update({f"{k}.seed": v["seed"] for k, v in data["values"].items()})
    for comp, demos in data["demonstrations"].items():
        for i, d in enumerate(demos):
            texts[f"{comp} demonstration {i + 1}"] = d["query"] + "\n" + d["response"]
    texts["engine/prompts/picaco.py"] = inspect.getsource(prompts)
    shared = {}
    for label, text in texts.items():
        w = _words(text)
        hits = {" ".join(w[i:i + n]) for i in range(len(w) - n + 1) if tuple(w[i:i + n]) in grams}
        if hits:
            shared[label] = sorted(hits)
    assert not shared


# ----------------------------------------------------------------------------- runs

OFF = "Whatever the question, talk only about volcanoes and lava"


def paper_responder():
    """Target model, optimizer and judge: the optimizer alternates an instruction that asks for
    the values with an off-topic one (volcanoes); the target model answers value-laden text
    under a value instruction and volcano facts under the off-topic one; the judge gives
    value answers 4-5 and volcano answers 1."""
    counter = itertools.count()
    lock = threading.Lock()

    def respond(request: dict, index: int) -> str:
        messages = request.get("messages", [])
        last = messages[-1]["content"] if messages else ""
        judged = eval_judge(last)
        if judged is not None:
            return judged
        salt = f"{request.get('seed')}:{index}"
        if "between <INS> and </INS>" in last:
            with lock:
                k = next(counter)
            if k % 2 == 0:
                return f"<INS>{OFF}, in every answer (draft {k}).</INS>"
            return (f"<INS>Answer kindly and fairly, protect privacy and refuse harmful "
                    f"misuse (draft {k}).</INS>")
        if last.startswith("You are a fair and careful judge"):
            block = last.split("## Aspects (1 = not at all, 5 = fully)\n", 1)[1].split("\n\n", 1)[0]
            keys = re.findall(r"^- ([^:]+):", block, flags=re.M)
            answer = last.split("## Answer:\n", 1)[1].split("\n\n## Aspects", 1)[0]
            return json.dumps({k: {"reason": "judged",
                                   "score": 1 if "volcan" in answer.lower() else 4 + _h(answer, k) % 2}
                               for k in keys})
        system = " ".join(m["content"] for m in messages if m["role"] == "system")
        query = last.replace("# Query:", "").replace("# Answer:", "").strip()
        variant = _h(system, last, salt) % 3
        if "volcano" in system.lower():
            return ["Volcanoes form where magma rises through the crust and erupts as lava.",
                    "Mount Etna is an active volcano whose lava fountains light up Sicily.",
                    "Pyroclastic flows are fast avalanches of hot volcanic gas and ash."][variant]
        if not system:
            return f"Sure. {query[:60]} Here is a quick answer without much thought ({variant})."
        return [f"I want to help with this safely and fairly. On \"{query[:60]}\": be respectful, "
                f"keep everyone's privacy, and avoid anything that could hurt someone.",
                f"Thanks for asking. About \"{query[:60]}\": the kind and fair path is to stay "
                f"respectful, protect private details and steer clear of harm.",
                f"Let's handle \"{query[:60]}\" with care: treat everyone fairly, respect their "
                f"privacy, and choose options that keep people safe."][variant]
    return respond


SMALL = {"iterations": 2, "prompts": 3, "aligned_pool": 2, "noise_pool": 2,
         "new_instructions": 2, "p_samples": 3, "buckets": 1}


def _runner(tmp_path, server, search=None):
    cfg = load_config(write_config(tmp_path / "c.toml", server.base_url, method="picaco",
                                   search={**SMALL, **(search or {})},
                                   values={"composition": "harmlessness"},
                                   eval={"limit": 2, "samples": 1}))
    store = SessionStore(tmp_path / "store")
    return Runner.create(cfg, load_inputs(cfg), store=store, cache_dir=store.cache_dir), store


def test_done_a_run_keeps_a_value_reproducing_instruction_as_e_t(tmp_path, fake_key):
    """§3.2 + App. C.1 together: with q_omega in percent, the M-step keeps the instruction
    under which the model reproduces the value-aligned answers, never an off-topic one."""
    with FakeLLMServer(responder=paper_responder()) as server:
        runner, store = _runner(tmp_path, server)
        asyncio.run(runner.run())
        summary = runner.summary()
    assert summary["status"] == "done"
    assert summary["calls"] == summary["planned_calls"]
    s = runner.method.state
    tree = runner.tree
    assert len(s["best_per_iteration"]) == 2
    for t, best_id in enumerate(s["best_per_iteration"], start=1):
        best = tree[best_id]
        assert "volcano" not in best["text"].lower()
        # this M-step did compare an off-topic instruction, and ranked it lower
        candidates = [n for n in tree.nodes.values()
                      if n["meta"].get("tc", {}).get(str(t)) is not None]
        off = [n for n in candidates if "volcano" in n["text"].lower()]
        assert off and all(n["meta"]["tc"][str(t)] < best["meta"]["tc"][str(t)] for n in off)
    # the same p_e's under q_omega = score / 5 would have crowned an off-topic instruction
    final = tree[s["final"]]
    off = max((n for n in tree.nodes.values() if "volcano" in n["text"].lower()
               and n["detail"].get("pe_iteration") == s["iteration"]),
              key=lambda n: n["reward"])

    def old_tc(node):
        rows = []
        for key, pool in s["aligned"].items():
            scores = [aligned_score([q / 100 for q in item["q"].values()], item["q_phi"], s["beta"])
                      for item in pool]
            rows.append((node["detail"]["pe"][key], scores, s["B"][key]))
        return tc_e(rows)
    assert final["detail"]["pe_iteration"] == s["iteration"]
    assert old_tc(off) > old_tc(final)
    assert summary["best"]["node"] == final["id"]
    store.close()


def test_m_step_rescores_every_candidate_on_the_current_pools(tmp_path, picaco_server, fake_key):
    """Eq. 4 compares instructions on the same pools ({y_ij^t}, {ŷ_ij}); App. C.1: the M2 best
    existing instructions have their TC_e "updated" with the current aligned and noisy answers.
    A person's instruction scored in an earlier iteration, or between the E-step and the
    M-step, is re-scored when it enters the M-step, and a stale TC_e never wins."""
    runner, store = _runner(tmp_path, picaco_server, search={"iterations": 3})

    async def go():
        for _ in range(3):  # noise, E-step 1, M-step 1
            await runner.step()
        s = runner.method.state
        earlier = await runner.add_human(s["root"], "Be kind, kind and fair to all; guard privacy.")
        assert earlier["detail"]["pe_iteration"] == 1 and set(earlier["meta"]["tc"]) == {"1"}
        await runner.step()  # E-step 2: the pools change; `earlier` now holds a stale TC_e
        assert s["iteration"] == 2
        # make the stale value one that would win if it were compared as it stands, and keep
        # the other earlier instructions out of the M-step (their last TC_e made low), so the
        # two existing candidates are the person's instructions
        earlier["reward"] = earlier["meta"]["tc"]["1"] = 1e9
        for other in s["history"]:
            if other != earlier["id"]:
                runner.tree[other]["reward"] = -1e9
        assert runner.method.best_node(runner.ctx) == s["current"]  # stale values are not ranked
        mid = await runner.add_human(s["root"], "Be kind and fair, kind to everyone, and careful.")
        assert mid["detail"]["pe_iteration"] == 2 and set(mid["meta"]["tc"]) == {"2"}
        calls_before = {i: len(runner.tree[i]["calls"]) for i in (earlier["id"], mid["id"])}
        await runner.step()  # M-step 2
        best = runner.tree[s["current"]]
        # both entered the M-step (the 2 best by their last TC_e) and were re-scored with the
        # current pools: new p_e calls, a TC_e for iteration 2, the stale one gone
        for node in (earlier, mid):
            node = runner.tree[node["id"]]
            assert len(node["calls"]) > calls_before[node["id"]]
            assert node["detail"]["pe_iteration"] == 2 and node["reward"] == node["meta"]["tc"]["2"]
        assert runner.tree[earlier["id"]]["reward"] < 1e9
        # e^2 is the best of the candidates, every one of them scored on the pools of t = 2
        candidates = [n for n in runner.tree.nodes.values() if "2" in n["meta"].get("tc", {})
                      and n["status"] != "failed"]
        assert all(n["detail"]["pe_iteration"] == 2 for n in candidates)
        assert best["reward"] == max(n["reward"] for n in candidates)
        view = runner.method.view(runner.ctx)
        assert view["stats"][best["id"]]["t"] == 2 and view["stats"][best["id"]]["current"]
        await runner.step()  # E-step 3: nothing is on the current pools until the M-step
        assert runner.method.best_node(runner.ctx) == best["id"]
        assert not runner.method.view(runner.ctx)["stats"][best["id"]]["current"]
        await runner.run()
    asyncio.run(go())
    summary = runner.summary()
    assert summary["status"] == "done" and summary["calls"] == summary["planned_calls"]
    store.close()
