"""DRPO end to end through litellm against the fake OpenAI-compatible server, in process."""
import asyncio

import pytest

from conftest import FAKE_KEY, write_config
from promptarbor.engine.config import load_config
from promptarbor.engine.datasets import load_icl_examples, load_seed_queries
from promptarbor.engine.runner import Runner
from promptarbor.sessions.store import SessionStore


DEFAULT = object()


def make_runner(tmp_path, server, skip=DEFAULT, **kw):
    """skip: search.skip_rewrite_above (None: always rewrite, so the plan is exact)."""
    cfg = load_config(write_config(tmp_path / "c.toml", server.base_url, **kw))
    if skip is not DEFAULT:
        cfg["search"]["skip_rewrite_above"] = skip
    store = SessionStore(tmp_path / "store")
    seed = load_seed_queries(cfg["data"]["seed"], cfg["data"]["seed_limit"])
    icl = load_icl_examples(cfg["data"]["icl"])
    return Runner.create(cfg, {"seed": seed, "icl": icl}, store=store, cache_dir=store.cache_dir), store


def run(coro):
    return asyncio.run(coro)


@pytest.mark.parametrize("search,data", [
    ({"beam_width": 2, "samples_per_state": 3, "depth": 3}, {}),
    ({"beam_width": 1, "samples_per_state": 2, "depth": 4}, {}),
    ({"beam_width": 3, "samples_per_state": 2, "depth": 3}, {}),
    ({"beam_width": 2, "samples_per_state": 2, "depth": 2, "icl_depth": 2,
      "icl_samples_per_state": 2, "icl_beam_width": 1}, {"icl_optimized": False}),
])
def test_planned_calls_equal_calls_made(tmp_path, fake_server, fake_key, search, data):
    # every state rewritten (skip_rewrite_above unset): the plan made at creation is exact
    runner, store = make_runner(tmp_path, fake_server, skip=None, search=search, data=data)
    planned = dict(runner.session["planned_calls"])
    run(runner.run())
    summary = runner.summary()
    assert summary["status"] == "done"
    assert summary["calls"] == planned
    # every logical call reached the server exactly once (no retries needed here)
    assert fake_server.answered == sum(planned.values())
    assert fake_server.count(model="fake-base") == planned["base"]
    assert fake_server.count(model="fake-optimizer") == planned["optimizer"]
    store.close()


@pytest.mark.parametrize("search,data", [
    ({"beam_width": 2, "samples_per_state": 3, "depth": 3}, {}),
    ({"beam_width": 1, "samples_per_state": 2, "depth": 4}, {}),
    ({"beam_width": 2, "samples_per_state": 2, "depth": 2, "icl_depth": 2,
      "icl_samples_per_state": 2, "icl_beam_width": 1}, {"icl_optimized": False}),
])
def test_with_skip_and_extend_the_plan_bounds_the_calls_and_ends_exact(
        tmp_path, fake_server, fake_key, search, data):
    # the default (skip_rewrite_above = 4.5): a kept state may add a level, so the plan made
    # at creation is an upper bound; it never grows and equals the calls made at the end
    runner, store = make_runner(tmp_path, fake_server, search=search, data=data)
    planned = dict(runner.session["planned_calls"])
    previous = planned
    while not runner.done:
        run(runner.step())
        now = runner.session["planned_calls"]
        assert all(now[r] <= previous[r] for r in now), (previous, now)
        previous = dict(now)
    summary = runner.summary()
    assert summary["status"] == "done"
    assert summary["calls"] == summary["planned_calls"]
    assert all(summary["calls"][r] <= planned[r] for r in planned)
    assert fake_server.answered == sum(summary["calls"].values())
    store.close()


def test_static_reward_makes_no_selection_calls(tmp_path, fake_server, fake_key):
    runner, store = make_runner(tmp_path, fake_server, method="static-reward")
    run(runner.run())
    assert runner.summary()["calls"] == runner.summary()["planned_calls"]
    root = runner.tree[runner.method.state["roots"]["prompt"]]
    assert root["detail"]["aspects"] == ["Helpfulness", "Clarity", "Factuality", "Depth",
                                         "Engagement", "Safety"]
    assert not any("selected_aspects" in r["messages"][-1]["content"] for r in fake_server.requests)
    store.close()


def test_monte_carlo_samples_only_from_the_root(tmp_path, fake_server, fake_key):
    runner, store = make_runner(tmp_path, fake_server, method="monte-carlo",
                                search={"beam_width": 2, "samples_per_state": 3, "depth": 3,
                                        "monte_carlo_samples": 15})
    planned = dict(runner.session["planned_calls"])
    assert planned["optimizer"] == 15
    run(runner.run())
    root_id = runner.method.state["roots"]["prompt"]
    children = [n for n in runner.tree.nodes.values() if n["parent"] is not None]
    assert len(children) == 15 and all(n["parent"] == root_id for n in children)
    assert runner.summary()["calls"] == planned
    store.close()


def test_greedy_keeps_one_state(tmp_path, fake_server, fake_key):
    runner, store = make_runner(tmp_path, fake_server, method="greedy",
                                search={"beam_width": 5, "samples_per_state": 2, "depth": 3})
    run(runner.run())
    for record in runner.method.state["levels"]:
        assert len(record["beam"]) <= 1
    store.close()


def test_children_are_judged_on_their_level_query_and_transition_sees_former_prompts(
        tmp_path, fake_server, fake_key):
    # Alg. 2 and the authors' code (`example[0]` for the root, `example[len(state)]` after):
    # the root on X[0], level t on X[t]; D = 3 -> four distinct seed queries
    runner, store = make_runner(tmp_path, fake_server, skip=None,
                                search={"beam_width": 1, "samples_per_state": 1, "depth": 3})
    run(runner.run())
    seed = runner.method.state["data"]["seed"]
    nodes = sorted(runner.tree.nodes.values(), key=lambda n: n["depth"])
    assert [n["detail"]["query"] for n in nodes] == [seed[0], seed[1], seed[2], seed[3]]
    assert len({n["detail"]["query"] for n in nodes}) == 4
    rewrites = [r for r in fake_server.requests if r["model"] == "fake-optimizer"]
    last = rewrites[-1]["messages"][-1]["content"]
    # the third rewrite lists the root and both earlier prompts as former prompts
    assert "[1]\nYou are a helpful assistant." in last and "[3]\n" in last
    store.close()


def test_pruned_nodes_are_never_expanded(tmp_path, fake_server, fake_key):
    runner, store = make_runner(tmp_path, fake_server,
                                search={"beam_width": 2, "samples_per_state": 2, "depth": 3})
    run(runner.run(steps=3))  # root, expand level 1, score level 1
    level1 = runner.method.state["levels"][-1]["children"]
    best = max(level1, key=lambda i: runner.tree[i]["reward"])
    run(runner.prune(best))
    run(runner.run())
    assert runner.tree[best]["children"] == []
    for record in runner.method.state["levels"]:
        assert best not in record["beam"]
    assert runner.summary()["best"]["node"] != best
    run(runner.unprune(best))
    assert runner.tree[best]["status"] != "pruned"
    kinds = [e["kind"] for e in runner.session["events"] if e["actor"] == "user"]
    assert kinds[-2:] == ["prune", "unprune"] or "prune" in kinds
    store.close()


def test_person_operations(tmp_path, fake_server, fake_key):
    runner, store = make_runner(tmp_path, fake_server,
                                search={"beam_width": 1, "samples_per_state": 1, "depth": 2})
    run(runner.run(steps=1))
    root_id = runner.method.state["roots"]["prompt"]
    before = fake_server.answered

    run(runner.edit_critique(root_id, "Depth: 1/5 - far too shallow, add structure"))
    child = run(runner.regenerate(root_id))
    assert child["kind"] == "regenerated" and child["reward"] is not None
    sent = [r for r in fake_server.requests if r["model"] == "fake-optimizer"][-1]
    assert "far too shallow" in sent["messages"][-1]["content"]

    human = run(runner.add_human(root_id, "You are a careful, kind assistant."))
    assert human["kind"] == "human" and human["reward"] is not None
    # regenerate: opt + base + eval, and the aspects of x_1 (a child of the root is judged on
    # level 1's query, a new one); human: base + eval
    assert fake_server.answered - before == 1 + 3 + 2

    query = runner.tree[root_id]["detail"]["query"]
    rescored = run(runner.edit_aspects(query, ["Safety", "Empathy"]))
    assert root_id in rescored
    assert set(runner.tree[root_id]["detail"]["scores"]) == {"Safety", "Empathy"}

    run(runner.accept(human["id"]))
    assert runner.summary()["accepted"] == human["id"]
    kinds = [e["kind"] for e in runner.session["events"] if e["actor"] == "user"]
    for kind in ("edit_critique", "regenerate", "add_human", "edit_aspects", "accept"):
        assert kind in kinds
    # the planned count grows with the person's operations, and matches what ran
    run(runner.run())
    assert runner.summary()["calls"] == runner.session["planned_calls"]
    store.close()


def test_transport_faults_are_retried_and_garbage_answers_resampled(tmp_path, fake_server, fake_key):
    runner, store = make_runner(tmp_path, fake_server, skip=None,
                                search={"beam_width": 2, "samples_per_state": 2, "depth": 2})
    planned = dict(runner.session["planned_calls"])
    fake_server.inject("429", count=2)
    fake_server.inject("500")
    fake_server.inject("garbage")
    fake_server.inject("garbage-content", model="fake-evaluator")
    fake_server.inject("garbage-content", model="fake-optimizer")
    run(runner.run())
    summary = runner.summary()
    assert summary["status"] == "done"
    assert summary["calls"] == planned
    usage = runner.gateway.usage
    assert sum(u.retries for u in usage.values()) == 4
    assert usage["evaluator"].parse_retries + usage["optimizer"].parse_retries == 2
    assert not [n for n in runner.tree.nodes.values() if n["status"] == "failed"]
    store.close()


def test_timeouts_retry(tmp_path, fake_server, fake_key):
    fake_server.timeout_sleep = 3
    runner, store = make_runner(tmp_path, fake_server, gateway={"timeout": 0.5},
                                search={"beam_width": 1, "samples_per_state": 1, "depth": 1})
    fake_server.inject("timeout", model="fake-base")
    run(runner.run())
    assert runner.summary()["status"] == "done"
    assert runner.gateway.usage["base"].retries == 1
    store.close()


def test_an_answer_that_never_parses_fails_only_its_node(tmp_path, fake_server, fake_key):
    runner, store = make_runner(tmp_path, fake_server, skip=None,
                                search={"beam_width": 1, "samples_per_state": 1, "depth": 2},
                                gateway={"parse_retries": 1})
    run(runner.run(steps=1))
    fake_server.inject("garbage-content", count=2, model="fake-optimizer")  # both tries
    run(runner.run())
    failed = [n for n in runner.tree.nodes.values() if n["status"] == "failed"]
    assert len(failed) == 1
    assert "did not parse" in failed[0]["error"]
    # nothing survived level 1, so the root's beam carried on into level 2
    root_id = runner.method.state["roots"]["prompt"]
    beams = [e["payload"]["beam"] for e in runner.session["events"] if e["kind"] == "beam"]
    assert beams == [[root_id], [root_id]]
    assert any(e["kind"] == "warning" for e in runner.session["events"])
    assert runner.summary()["status"] == "done"
    store.close()


def test_dead_endpoint_fails_cleanly(tmp_path, fake_key):
    from fake_llm import FakeLLMServer

    with FakeLLMServer() as server:
        url = server.base_url
    runner, store = make_runner(tmp_path, type("S", (), {"base_url": url})(),
                                gateway={"retries": 1, "timeout": 1.0},
                                search={"beam_width": 1, "samples_per_state": 1, "depth": 1})
    run(runner.run())
    summary = runner.summary()
    assert summary["status"] == "failed"
    root = runner.tree[runner.method.state["roots"]["prompt"]]
    assert root["status"] == "failed" and "answer" in root["error"]
    store.close()


def test_api_key_is_never_stored(tmp_path, fake_server, fake_key):
    runner, store = make_runner(tmp_path, fake_server,
                                search={"beam_width": 1, "samples_per_state": 1, "depth": 1})
    run(runner.run())
    store.close()
    runner.gateway.close()
    for path in (tmp_path / "store").rglob("*"):
        if path.is_file():
            assert FAKE_KEY.encode() not in path.read_bytes(), path
