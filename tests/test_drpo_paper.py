"""DRPO as the paper (seeds/DRPO.txt) and the authors' code (Singla17/DRPO, the same code as
llm-reasoners' examples/DRPO) run it, end to end against the fake endpoint.

Each test names the claim it checks: Alg. 1 / Alg. 2 and App. A of the paper, or the file of
the authors' code whose behaviour PromptArbor follows by default (DESIGN §4).
"""
import asyncio
import json
import re

import pytest

from conftest import SHARED, _between, drpo_responder, write_config
from promptarbor.engine.config import load_config
from promptarbor.engine.datasets import load_inputs, load_seed_queries
from promptarbor.engine.methods.drpo import DRPO, keeps_unchanged, search_calls
from promptarbor.engine.prompts import drpo as P
from promptarbor.engine.runner import Runner, plan_calls
from promptarbor.engine.tree import Tree
from fake_llm import GARBAGE_CONTENT, FakeLLMServer
from promptarbor.sessions.store import SessionStore

SEED_FILE = SHARED / "data" / "drpo" / "seed_samples_combined.jsonl"


def run(coro):
    return asyncio.run(coro)


def make(tmp_path, server, *, rewrite_all=False, random_seed=None, **kw):
    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg = load_config(write_config(tmp_path / "c.toml", server.base_url, **kw))
    if rewrite_all:
        cfg["search"]["skip_rewrite_above"] = None
    if random_seed is not None:
        cfg["random_seed"] = random_seed
    store = SessionStore(tmp_path / "store")
    return Runner.create(cfg, load_inputs(cfg), store=store, cache_dir=store.cache_dir), store


def run_checking_plan(runner):
    """Run to the end; the plan never grows, never falls below the calls made, and equals
    them at the end (nothing fails in these runs)."""
    initial = dict(runner.session["planned_calls"])
    previous = initial
    while not runner.done:
        run(runner.step())
        now = dict(runner.session["planned_calls"])
        made = runner.gateway.totals()["calls"]
        assert all(now[r] <= previous[r] for r in now), (previous, now)
        assert all(made[r] <= now[r] for r in now), (made, now)
        previous = now
    summary = runner.summary()
    assert summary["calls"] == summary["planned_calls"]
    return initial, summary


def scores_json(last: str, score_of) -> str:
    block = last.split("Aspects to rate:\n", 1)[1].split("\n\n", 1)[0]
    aspects = re.findall(r"^- ([^:]+):", block, flags=re.M)
    answer = _between(last, "Answer to rate:\n<<<\n")
    return json.dumps({a: {"rationale": f"{a}: fair", "score": score_of(answer, a)}
                       for a in aspects})


def write_icl(tmp_path, n=1):
    path = tmp_path / "icl.jsonl"
    path.write_text("\n".join(json.dumps({"query": f"How do I keep basil alive {i}?",
                                          "response": f"Water it {i}."}) for i in range(n)),
                    encoding="utf-8")
    return str(path)


def levels_of(runner):
    """(query, node ids) of the root and of each level of the system-prompt search, from the
    session's events (the method's state keeps only the search in progress)."""
    root = runner.tree[runner.method.state["roots"]["prompt"]]
    out = [(root["detail"]["query"], [root["id"]])]
    for event in runner.session["events"]:
        if event["kind"] == "beam":
            level = event["payload"]["level"]
            ids = [n["id"] for n in prompt_nodes(runner) if n["parent"] is not None
                   and n["meta"]["level"] == level]
            out.append((event["payload"]["query"], ids))
    return out


def prompt_nodes(runner):
    return sorted((n for n in runner.tree.nodes.values() if n["meta"].get("phase") == "prompt"),
                  key=lambda n: int(n["id"][1:]))


# ----------------------------------------------------------------------------- 6. a new query per level


def test_root_and_each_level_are_judged_on_a_new_seed_query(tmp_path, fake_server, fake_key):
    """Alg. 2 judges level t on x_t; the authors' world_model.py judges the root on
    `example[0]` and every later state on `example[len(state)]`: with D levels the root and
    the levels use D + 1 distinct queries."""
    runner, store = make(tmp_path, fake_server, rewrite_all=True,
                         search={"beam_width": 2, "samples_per_state": 2, "depth": 3})
    run_checking_plan(runner)
    seed = runner.method.state["data"]["seed"]
    levels = levels_of(runner)
    assert [query for query, _ in levels] == seed[:4]
    assert len(set(seed[:4])) == 4
    for query, ids in levels:
        assert ids and all(runner.tree[i]["detail"]["query"] == query for i in ids)
    # one reward selection per distinct query: root + 3 levels
    selections = [r for r in fake_server.requests if '"selected_aspects"' in r["messages"][-1]["content"]]
    assert len(selections) == 4
    store.close()


def test_queries_cycle_only_when_the_seed_set_is_smaller(tmp_path, fake_server, fake_key):
    seed = tmp_path / "seed.txt"
    seed.write_text("First question?\nSecond question?\n", encoding="utf-8")
    runner, store = make(tmp_path, fake_server, rewrite_all=True,
                         search={"beam_width": 1, "samples_per_state": 1, "depth": 3,
                                 "seed_order": "file"},
                         data={"seed": str(seed)})
    run_checking_plan(runner)
    assert [query for query, _ in levels_of(runner)] == [
        "First question?", "Second question?", "First question?", "Second question?"]
    store.close()


# ----------------------------------------------------------------------------- 7. shuffled seed queries


def _setup_state(tmp_path, random_seed, **search):
    cfg = load_config(write_config(tmp_path / f"c{random_seed}.toml", "http://127.0.0.1:9/v1",
                                   search={"depth": 20, **search},
                                   data={"seed": str(SEED_FILE)}))
    cfg["random_seed"] = random_seed
    method = DRPO(cfg)

    class Ctx:
        tree = Tree()
        step = 0
    method.setup(Ctx(), load_inputs(cfg))
    return method.state


@pytest.mark.skipif(not SEED_FILE.exists(), reason="the authors' seed file is not present")
def test_seed_queries_are_shuffled_once_by_the_session_seed(tmp_path):
    """The authors' run.py shuffles its training queries with a fixed seed before the search
    (np.random.seed(42); np.random.shuffle(examples)); the paper's 180 seed samples mix
    AlpacaEval, LIMA and HH-RLHF red-team queries. In file order the first D + 1 = 21 queries
    are all Alpaca; shuffled by the session's seed they mix the sources."""
    rows = [json.loads(line) for line in SEED_FILE.read_text(encoding="utf-8").splitlines()]
    source = {r["query"].strip(): r["source"] for r in rows}
    file_order = load_seed_queries(str(SEED_FILE))

    kept = _setup_state(tmp_path, 0, seed_order="file")
    assert kept["data"]["seed"] == file_order
    assert {source[q] for q in file_order[:21]} == {"alpaca"}  # no red-team query

    state = _setup_state(tmp_path, 0)  # the default: shuffle
    order = state["data"]["seed"]
    assert sorted(order) == sorted(file_order) and order != file_order
    assert [file_order[i] for i in state["data"]["seed_file_index"]] == order  # stored
    used = order[:21]
    assert {"alpaca", "lima", "malicious"} <= {source[q] for q in used}
    assert _setup_state(tmp_path, 0)["data"]["seed"] == order          # replayable
    assert _setup_state(tmp_path, 1)["data"]["seed"] != order          # seed-dependent


def test_a_run_uses_the_stored_order(tmp_path, fake_server, fake_key):
    runner, store = make(tmp_path, fake_server, rewrite_all=True, random_seed=7,
                         search={"beam_width": 1, "samples_per_state": 1, "depth": 2})
    order = runner.method.state["data"]["seed"]
    run(runner.run())
    assert [query for query, _ in levels_of(runner)] == order[:3]
    store.close()


# ----------------------------------------------------------------------------- 8. ICL keeps its best


def icl_chain_server(chain):
    """The ICL judge scores the k-th rewrite chain[k] on every aspect."""
    def responder(request, index):
        last = request["messages"][-1]["content"]
        if "Aspects to rate:" in last:
            return scores_json(last, lambda answer, a: chain[min(answer.count("(improved"),
                                                                 len(chain) - 1)])
        return drpo_responder(request, index)
    return FakeLLMServer(responder=responder)


@pytest.mark.parametrize("keep,chain,kept_version,rewrites", [
    # the authors' offline_icl_opti.py keeps the best-scoring response (ties: the later one)
    ("best", [2, 4, 3, 3, 2, 2], 1, 5),
    ("best", [2, 3, 4, 4, 1, 1], 3, 5),
    # ... and stops as soon as every aspect scores 5
    ("best", [2, 5, 4, 3, 3, 2], 1, 1),
    ("best", [5, 1, 1, 1, 1, 1], 0, 0),
    # Alg. 1 read literally: the final state of the top beam, after all D levels
    ("final", [2, 5, 4, 3, 3, 2], 5, 5),
])
def test_icl_keeps_the_best_version_and_stops_at_all_fives(tmp_path, fake_key, keep, chain,
                                                           kept_version, rewrites):
    with icl_chain_server(chain) as server:
        runner, store = make(tmp_path, server, method="drpo-icl",
                             search={"icl_depth": 5, "icl_keep": keep},
                             data={"icl": write_icl(tmp_path)})
        initial, summary = run_checking_plan(runner)
        final = runner.tree[runner.method.state["icl_final"]["0"]]
        assert final["text"].count("(improved") == kept_version
        assert final["reward"] == chain[kept_version]
        assert summary["calls"]["optimizer"] == rewrites
        assert summary["calls"]["evaluator"] == 1 + (1 + rewrites)  # selection + judgements
        assert initial == {"base": 0, "optimizer": 5, "evaluator": 7, **(
            {"judge": 0} if "judge" in initial else {})}  # no early stop planned: a bound
        store.close()


# ----------------------------------------------------------------------------- 9. skip and extend


def test_keep_unchanged_rule():
    """The authors' search_config.get_actions: no rewrite when every aspect scored 5 or the
    mean is above 4.5."""
    def node(*scores):
        return {"reward": sum(scores) / len(scores),
                "detail": {"scores": {f"A{i}": {"score": s} for i, s in enumerate(scores)}}}
    assert keeps_unchanged(node(5, 5, 4), 4.5)       # 4.67 > 4.5
    assert not keeps_unchanged(node(5, 4), 4.5)      # 4.5 is not above 4.5
    assert keeps_unchanged(node(5, 5), 5.0)          # all 5s, whatever the threshold
    assert not keeps_unchanged(node(5, 5, 5), None)  # the option unset: always rewrite


def all_fives_server():
    def responder(request, index):
        last = request["messages"][-1]["content"]
        if "Aspects to rate:" in last:
            return scores_json(last, lambda answer, a: 5)
        return drpo_responder(request, index)
    return FakeLLMServer(responder=responder)


def test_a_perfect_state_is_kept_unchanged_and_the_search_extends_at_most_ten_levels(
        tmp_path, fake_key):
    """The authors' beam_search.py: a state that is not rewritten carries on as one child,
    judged on the next query, and max_depth grows by one for that level, at most
    max_depth_increase = 10 times."""
    with all_fives_server() as server:
        runner, store = make(tmp_path, server, eval={"enabled": False},
                             search={"beam_width": 2, "samples_per_state": 2, "depth": 2})
        initial, summary = run_checking_plan(runner)
        levels = levels_of(runner)
        assert len(levels) == 1 + 2 + 10  # root + D + 10 added levels
        assert summary["calls"]["optimizer"] == 0
        root = runner.tree[runner.method.state["roots"]["prompt"]]
        for _, ids in levels[1:]:
            [child] = ids
            assert runner.tree[child]["text"] == root["text"]
            assert "kept unchanged" in runner.tree[child]["meta"]["kept"]
        seed = runner.method.state["data"]["seed"]
        assert [query for query, _ in levels] == [seed[t % len(seed)] for t in range(13)]
        # the plan made at creation covered the added levels
        assert all(summary["calls"][r] <= initial[r] for r in initial)
        assert summary["calls"]["base"] == 13 and summary["calls"]["evaluator"] == 13 + 13
        extended = [e for e in runner.session["events"] if e["kind"] == "extended"]
        assert len(extended) == 10
        store.close()


def test_kept_and_rewritten_states_mix_in_one_beam(tmp_path, fake_key):
    """Some answers score 5 everywhere (their state is kept), the others 3 (rewritten): the
    plan stays an upper bound, tightened after every step, exact at the end."""
    import hashlib

    def responder(request, index):
        last = request["messages"][-1]["content"]
        if "Aspects to rate:" in last:
            return scores_json(last, lambda answer, a: 5 if int(hashlib.sha256(
                answer.encode()).hexdigest(), 16) % 3 == 0 else 3)
        return drpo_responder(request, index)

    with FakeLLMServer(responder=responder) as server:
        runner, store = make(tmp_path, server, random_seed=3,
                             search={"beam_width": 2, "samples_per_state": 3, "depth": 4})
        initial, summary = run_checking_plan(runner)
        kept = [n for n in prompt_nodes(runner) if n["meta"].get("kept")]
        rewritten = [n for n in prompt_nodes(runner)
                     if n["parent"] is not None and not n["meta"].get("kept")]
        assert kept and rewritten
        for node in kept:
            parent = runner.tree[node["parent"]]
            assert node["text"] == parent["text"] and keeps_unchanged(parent, 4.5)
            assert node["detail"]["query"] != parent["detail"]["query"]  # judged anew
        extended = [e for e in runner.session["events"] if e["kind"] == "extended"]
        levels = {e["payload"]["level"] for e in extended}
        assert len(levels_of(runner)) == 1 + 4 + len(levels)  # one more level per such level
        assert all(summary["calls"][r] <= initial[r] for r in initial)
        store.close()


def test_skip_rewrite_above_unset_rewrites_every_state(tmp_path, fake_key):
    with all_fives_server() as server:
        runner, store = make(tmp_path, server, rewrite_all=True,
                             search={"beam_width": 2, "samples_per_state": 2, "depth": 2})
        planned = dict(runner.session["planned_calls"])
        run(runner.run())
        assert len(levels_of(runner)) == 3
        assert runner.summary()["calls"] == planned
        assert planned["optimizer"] == search_calls(2, 2, 2, with_base=True)["optimizer"]
        store.close()


# ----------------------------------------------------------------------------- 10. history


@pytest.mark.parametrize("history,shown", [(5, [3, 4, 5, 6, 7]), (2, [6, 7])])
def test_the_transition_shows_the_last_former_prompts(tmp_path, fake_server, fake_key,
                                                      history, shown):
    """The authors' search_config.py: previous_system_prompts[-5:], the current one last."""
    runner, store = make(tmp_path, fake_server, rewrite_all=True,
                         search={"beam_width": 1, "samples_per_state": 1, "depth": 7,
                                 "history": history})
    run(runner.run())
    rewrites = [r for r in fake_server.requests if r["model"] == "fake-optimizer"]
    last = rewrites[-1]["messages"][-1]["content"]  # rewriting the level-6 state (path of 7)
    numbers = [int(n) for n in re.findall(r"^\[(\d+)\]$", last, flags=re.M)]
    assert numbers == shown
    assert "(versions 1 to" in last
    store.close()


# ----------------------------------------------------------------------------- 11. Monte Carlo


def test_monte_carlo_defaults_to_the_papers_120_samples(tmp_path):
    """App. A.2: "we sampled 120 prompts in this method"."""
    cfg = load_config(write_config(tmp_path / "c.toml", "http://127.0.0.1:9/v1",
                                   method="monte-carlo", eval={"enabled": False},
                                   search={"beam_width": 2, "samples_per_state": 3, "depth": 20}))
    assert cfg["search"]["monte_carlo_samples"] == 120
    plan = plan_calls(cfg, load_inputs(cfg))
    assert plan["optimizer"] == 120 and plan["base"] == 121
    assert plan["evaluator"] == 121 + 2  # the root's query and the samples' one query


def test_monte_carlo_compares_samples_judged_on_the_same_query(tmp_path, fake_server, fake_key):
    runner, store = make(tmp_path, fake_server, method="monte-carlo",
                         search={"beam_width": 2, "samples_per_state": 3, "depth": 3,
                                 "monte_carlo_samples": 7})
    planned = dict(runner.session["planned_calls"])
    run(runner.run())
    assert runner.summary()["calls"] == planned
    state = runner.method.state
    samples = [n for n in prompt_nodes(runner) if n["parent"] is not None]
    assert len(samples) == 7 and [len(ids) for _, ids in levels_of(runner)[1:]] == [3, 3, 1]
    assert {n["detail"]["query"] for n in samples} == {state["data"]["seed"][1]}
    best = max(samples, key=lambda n: (n["reward"], -int(n["id"][1:])))
    assert state["final"] == best["id"]
    store.close()


# ----------------------------------------------------------------------------- 12. n samples in one call


def garbage_second_choice(request, index):
    """With n > 1, the second choice never parses; a call for one sample is answered well."""
    if request.get("n", 1) > 1 and index == 1:
        return GARBAGE_CONTENT
    return drpo_responder(request, index)


def test_one_call_resamples_unparseable_choices(tmp_path, fake_key):
    with FakeLLMServer(responder=garbage_second_choice) as server:
        runner, store = make(tmp_path, server, rewrite_all=True,
                             search={"beam_width": 2, "samples_per_state": 3, "depth": 2,
                                     "samples_in_one_call": True})
        planned = dict(runner.session["planned_calls"])
        run(runner.run())
        summary = runner.summary()
        assert summary["failed_nodes"] == 0
        assert summary["calls"] == planned
        assert planned["optimizer"] == 1 + 2  # one call per beam state
        children = [n for n in prompt_nodes(runner) if n["parent"] is not None]
        assert len(children) == 3 * 3 and all(n["text"] for n in children)
        # one fresh sample per unparseable choice, asked like a parse retry
        assert runner.gateway.usage["optimizer"].parse_retries == 3
        store.close()


def test_one_call_asks_missing_samples_one_per_call(tmp_path, fake_key):
    """A provider that returns fewer choices than n (the embedded model; litellm dropping
    `n`): the missing samples are asked one per call, and so are later ones."""
    with FakeLLMServer(responder=garbage_second_choice) as server:
        complete = server._completion
        server._completion = lambda body, texts: complete(body, texts[:1])  # one choice only
        runner, store = make(tmp_path, server, rewrite_all=True,
                             search={"beam_width": 2, "samples_per_state": 3, "depth": 2,
                                     "samples_in_one_call": True})
        run(runner.run())
        summary = runner.summary()
        assert summary["failed_nodes"] == 0
        assert summary["calls"] == summary["planned_calls"]
        children = [n for n in prompt_nodes(runner) if n["parent"] is not None]
        assert len(children) == 9 and all(n["text"] for n in children)
        assert runner.method.state["n_ignored"]
        # level 1: one call with n = 3 (one choice back) + 2 single calls; level 2: 2 x 3 single
        assert summary["calls"]["optimizer"] == 3 + 6
        n_calls = [r for r in server.requests if r["model"] == "fake-optimizer"
                   and r["params"].get("n", 1) > 1]
        assert len(n_calls) == 1
        store.close()


# ----------------------------------------------------------------------------- 13. the ICL critic


def test_icl_phase_judges_with_the_strict_critic_and_rewrites_under_its_rules(
        tmp_path, fake_server, fake_key):
    """The authors' icl_opti_prompts.py: a ruthless critic selects 3 to 6 aspects and scores
    harshly, giving a reason and a fix for every point taken off; the optimizer answers every
    point. The system-prompt search (prompt.py) keeps the impartial judge, 2-5 aspects."""
    runner, store = make(tmp_path, fake_server, rewrite_all=True,
                         search={"beam_width": 1, "samples_per_state": 1, "depth": 1,
                                 "icl_depth": 2},
                         data={"icl": write_icl(tmp_path, 2), "icl_optimized": False})
    run(runner.run())
    sent = [r["messages"][-1]["content"] for r in fake_server.requests]
    icl_queries = {q for q, _ in runner.method.state["data"]["icl"]}

    def about_icl(text):
        return any(q in text for q in icl_queries)
    icl_selection = [t for t in sent if '"selected_aspects"' in t and about_icl(t)]
    icl_scoring = [t for t in sent if "Aspects to rate:" in t and about_icl(t)]
    icl_rewrite = [t for t in sent if '"new_response"' in t]
    prompt_scoring = [t for t in sent if "Aspects to rate:" in t and not about_icl(t)]
    assert len(icl_selection) == 2 and all("between 3 and 6 aspects" in t for t in icl_selection)
    assert all(t.startswith(P.STRICT_CRITIC) for t in icl_selection + icl_scoring)
    assert all(P.STRICT_RULES in t for t in icl_scoring)
    assert icl_rewrite and all("Keep what the critic found right" in t and "no more than 6" in t
                               and "what you keep" in t for t in icl_rewrite)
    assert prompt_scoring and not any(P.STRICT_CRITIC in t for t in prompt_scoring)
    for node in runner.tree.nodes.values():
        aspects = node["detail"].get("aspects", [])
        if node["meta"].get("phase") == "icl":
            assert 3 <= len(aspects) <= 6
        elif aspects:
            assert 2 <= len(aspects) <= 5
    # the two phases keep separate selections
    assert set(runner.method.state["icl_aspect_cache"]) == icl_queries
    assert not icl_queries & set(runner.method.state["aspect_cache"])
    assert runner.summary()["calls"] == runner.summary()["planned_calls"]
    store.close()
