"""Hostile endpoints, in process: empty answers, non-retryable errors, leaked keys, a cache
that cannot be written, failed nodes and their retry, and the plan staying equal to the
calls made through pruning and retries."""
import asyncio

import pytest

from conftest import FAKE_KEY, drpo_responder, picaco_responder, vapo_responder, write_config, write_tasks
from promptarbor.engine.config import load_config, validate_config
from promptarbor.engine.datasets import load_inputs
from promptarbor.engine.gateway import CacheUnavailable, Gateway
from promptarbor.engine.runner import Runner
from promptarbor.engine.secrets import MASK, Redactor
from fake_llm import FakeLLMServer
from promptarbor.sessions.store import SessionStore


def run(coro):
    return asyncio.run(coro)


def gateway(server, tmp_path, **settings):
    cfg = validate_config({"models": {"default": {"model": "openai/fake", "api_base": server.base_url,
                                                  "api_key_env": "PA_FAKE_KEY"}},
                           "gateway": {"backoff": 0.01, "max_backoff": 0.05, "timeout": 5.0,
                                       **settings}})
    return Gateway(cfg["models"], cfg["gateway"], cache_dir=tmp_path / "cache")


def call(gw, content="q", role="base"):
    return run(gw.call(role, [{"role": "user", "content": content}], purpose="t"))


def make(tmp_path, server, method="drpo", rewrite_all=False, **kw):
    """rewrite_all: DRPO without skip and extend (skip_rewrite_above unset), so that its plan
    is exact from the start rather than an upper bound."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    if method in ("vapo", "promptagent"):
        tasks = write_tasks(tmp_path / "tasks.jsonl", 24)
        kw.setdefault("search", {"iterations": 2, "expand_width": 2, "depth_limit": 3,
                                 "batch_size": 3})
        kw.setdefault("data", {"tasks": str(tasks), "train": 10, "validation": 6, "test": 6})
    if method in ("picaco", "opro"):
        kw.setdefault("search", {"iterations": 2, "prompts": 3, "aligned_pool": 2,
                                 "noise_pool": 2, "new_instructions": 2, "p_samples": 2,
                                 "buckets": 1})
        kw.setdefault("values", {"composition": "harmlessness"})
    cfg = load_config(write_config(tmp_path / "c.toml", server.base_url, method=method, **kw))
    if rewrite_all:
        cfg["search"]["skip_rewrite_above"] = None
    store = SessionStore(tmp_path / "store")
    return Runner.create(cfg, load_inputs(cfg), store=store, cache_dir=store.cache_dir), store


# ----------------------------------------------------------------------------- gateway


@pytest.mark.parametrize("fault", ["empty", "whitespace"])
def test_empty_content_is_retried_never_cached_never_an_answer(tmp_path, fake_server, fake_key, fault):
    gw = gateway(fake_server, tmp_path, retries=2)
    fake_server.inject(fault, count=3)
    result = call(gw)
    assert result.error and "empty answer" in result.error and result.texts == []
    assert fake_server.count() == 3  # retried like a 5xx
    # nothing was cached: the next call goes out and gets a real answer
    fake_server.inject(fault, count=1)
    result = call(gw)
    assert result.error is None and result.text.startswith("Answer")
    assert fake_server.count() == 5
    gw.close()


def test_a_401_fails_at_once_names_role_and_model_and_hides_the_key(tmp_path, fake_server, fake_key):
    gw = gateway(fake_server, tmp_path, retries=4)
    fake_server.inject("401-echo", count=1)

    async def two_calls():
        first = await gw.call("evaluator", [{"role": "user", "content": "a"}], purpose="t")
        second = await gw.call("evaluator", [{"role": "user", "content": "b"}], purpose="t")
        other = await gw.call("base", [{"role": "user", "content": "c"}], purpose="t")
        return first, second, other
    first, second, other = run(two_calls())
    assert fake_server.count() == 2  # no retry; the role's second call was not sent
    assert first.error.startswith("evaluator model openai/fake: authentication failed (HTTP 401)")
    assert FAKE_KEY not in first.error and MASK in first.error
    assert second.error.startswith("not sent: evaluator model openai/fake")
    assert other.error is None  # another role goes on
    assert all(FAKE_KEY not in str(r) for r in gw.log)
    gw.begin_step()  # the next step may call again
    assert call(gw, role="evaluator").error is None
    gw.close()


@pytest.mark.parametrize("fault,status", [("400-markup", 400), ("404-model", 404)])
def test_other_non_retryable_errors_fail_at_once(tmp_path, fake_server, fake_key, fault, status):
    gw = gateway(fake_server, tmp_path, retries=4)
    fake_server.inject(fault, count=1)
    result = call(gw)
    assert fake_server.count() == 1
    assert f"(HTTP {status})" in result.error and "\n" not in result.error
    gw.close()


def test_garbage_in_usage_and_bodies_never_crash(tmp_path, fake_server, fake_key):
    gw = gateway(fake_server, tmp_path, retries=1)
    fake_server.inject("nan", count=2)  # both tries
    result = call(gw, "nan")
    assert fake_server.count() <= 2
    if result.error is None:  # accepted: the NaN/Infinity token counts count as 0
        assert result.text == "NaN"
        assert gw.usage["base"].tokens_in == 0 and gw.usage["base"].tokens_out == 0
    for fault in ("invalid-utf8", "huge", "deep", "markup", "escapes"):
        fake_server.inject(fault, count=2)
        result = call(gw, fault)
        assert isinstance(result.error, (str, type(None)))
    gw.close()


def test_a_cache_that_cannot_be_written_keeps_the_paid_answer(tmp_path, fake_server, fake_key):
    gw = gateway(fake_server, tmp_path)
    real_set = gw._cache.set

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")
    gw._cache.set = full_disk
    first = call(gw, "paid")
    assert first.error is None and gw.pending_cache_writes == 1
    again = call(gw, "paid")  # served from memory: not paid twice
    assert again.record["cached"] and fake_server.count() == 1
    with pytest.raises(CacheUnavailable):
        gw.flush_cache()  # still full: one clear error, the answer still kept
    assert gw.pending_cache_writes == 1
    gw._cache.set = real_set
    gw.flush_cache()
    assert gw.pending_cache_writes == 0
    gw.close()
    gw = gateway(fake_server, tmp_path)  # a new process finds it on disk
    assert call(gw, "paid").record["cached"] and fake_server.count() == 1
    gw.close()


def test_redactor_masks_known_values_and_key_shapes(monkeypatch):
    monkeypatch.setenv("MY_CUSTOM_VAR", "custom-secret-value-123")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "ant-key-value-456789")
    r = Redactor(["MY_CUSTOM_VAR"])
    text = ("custom-secret-value-123 ant-key-value-456789 Bearer abcdefghijklmnopqrstuv "
            "sk-proj-0123456789abcdef ok")
    out = r.redact(text)
    for secret in ("custom-secret-value-123", "ant-key-value-456789", "abcdefghijklmnopqrstuv",
                   "sk-proj-0123456789abcdef"):
        assert secret not in out
    assert out.endswith(" ok")
    assert r.redact_all({"a": [text], "b": 3})["a"][0] == out


# ----------------------------------------------------------------------------- runs


def test_initial_plan_equals_calls_made_when_nothing_fails(tmp_path, fake_server, fake_key):
    runner, store = make(tmp_path, fake_server, rewrite_all=True,
                         search={"beam_width": 2, "samples_per_state": 2, "depth": 3})
    planned = dict(runner.session["planned_calls"])
    assert runner.method.plan_remaining(runner.ctx) == planned
    while not runner.done:
        run(runner.step())
        assert runner.session["planned_calls"] == planned  # re-planning keeps the promise
    assert runner.gateway.totals()["calls"] == planned
    store.close()


def test_drpo_skip_and_extend_plan_is_a_bound_tightened_to_exact(tmp_path, fake_server, fake_key):
    # DRPO's default keeps a state scoring above 4.5 unchanged and adds a level (the authors'
    # code): the initial plan is an upper bound, never exceeded, exact at the end
    runner, store = make(tmp_path, fake_server, search={"beam_width": 2, "samples_per_state": 2,
                                                        "depth": 3})
    planned = dict(runner.session["planned_calls"])
    assert runner.method.plan_remaining(runner.ctx) == planned
    while not runner.done:
        run(runner.step())
        now = runner.session["planned_calls"]
        assert all(now[r] <= planned[r] for r in planned)
        assert all(runner.gateway.totals()["calls"][r] <= now[r] for r in now)
    assert runner.gateway.totals()["calls"] == runner.session["planned_calls"]
    store.close()


def test_pruning_a_node_before_it_is_scored_removes_its_calls(tmp_path, fake_server, fake_key):
    runner, store = make(tmp_path, fake_server, search={"beam_width": 2, "samples_per_state": 2,
                                                        "depth": 2})
    planned = dict(runner.session["planned_calls"])
    run(runner.run(steps=2))  # root judged, level 1 expanded: its children wait to be judged
    waiting = runner.method.state["levels"][-1]["children"]
    run(runner.prune(waiting[0]))
    after = runner.session["planned_calls"]
    # its own judgement (base + evaluator) and the M = 2 children it would have had at level 2
    assert after == {"base": planned["base"] - 3, "optimizer": planned["optimizer"] - 2,
                     "evaluator": planned["evaluator"] - 3, "judge": planned["judge"]}
    run(runner.run())
    summary = runner.summary()
    assert summary["status"] == "done" and summary["calls"] == summary["planned_calls"]
    store.close()


def test_failed_root_blocks_then_retry_completes_the_run(tmp_path, fake_key):
    with FakeLLMServer(responder=drpo_responder) as server:
        runner, store = make(tmp_path, server, gateway={"retries": 1}, rewrite_all=True,
                             search={"beam_width": 1, "samples_per_state": 2, "depth": 2})
        planned = dict(runner.session["planned_calls"])
        server.inject("503", count=2, model="fake-base")
        run(runner.run())
        summary = runner.summary()
        assert summary["status"] == "failed" and summary["failed_nodes"] == 1
        assert runner.blocked and not runner.done
        assert run(runner.step()) == []  # a blocked search does not move
        retried = run(runner.retry_failed())
        assert retried == [runner.method.state["roots"]["prompt"]]
        assert runner.blocked is None and runner.session["status"] == "paused"
        run(runner.run())
        summary = runner.summary()
        assert summary["status"] == "done" and summary["failed_nodes"] == 0
        # the retried root made one base call more than planned: the plan grew by it
        assert summary["calls"] == summary["planned_calls"]
        assert summary["planned_calls"]["base"] == planned["base"] + 1
        store.close()


def test_endpoint_down_mid_run_then_retry_failed_nodes(tmp_path, fake_key):
    with FakeLLMServer(responder=drpo_responder) as server:
        runner, store = make(tmp_path, server, gateway={"retries": 0},
                             search={"beam_width": 2, "samples_per_state": 2, "depth": 3})
        run(runner.run(steps=2))
        server.inject("500", count=3, model="fake-base")  # three answers of level 1 fail
        run(runner.run())
        summary = runner.summary()
        assert summary["status"] == "done" and summary["failed_nodes"] >= 1
        failed = runner.failed_nodes()
        reasons = summary["failures"]
        assert sum(len(v) for v in reasons.values()) == len(failed)
        before = server.count()
        ids = run(runner.retry_failed())
        assert ids == failed and runner.failed_nodes() == []
        assert all(runner.tree[i]["reward"] is not None for i in ids)
        # only the failed calls went out again (the evaluator's cached selections replayed)
        assert server.count() - before == 2 * len(ids)
        summary = runner.summary()
        assert summary["calls"] == summary["planned_calls"]
        store.close()


def test_an_answer_that_never_parsed_is_asked_anew_on_retry(tmp_path, fake_key):
    with FakeLLMServer(responder=drpo_responder) as server:
        runner, store = make(tmp_path, server, gateway={"parse_retries": 1},
                             search={"beam_width": 1, "samples_per_state": 1, "depth": 1})
        run(runner.run(steps=1))
        server.inject("garbage-content", count=2, model="fake-optimizer")
        run(runner.run())
        [bad] = runner.failed_nodes()
        assert "did not parse" in runner.tree[bad]["error"]
        run(runner.retry_failed(bad))
        node = runner.tree[bad]
        assert node["status"] != "failed" and node["text"] and node["reward"] is not None
        assert node["meta"]["retries"] == 1 and "did not parse" in node["meta"]["errors"][0]
        with pytest.raises(ValueError):
            run(runner.retry_failed(bad))  # not failed any more
        store.close()


def test_vapo_failed_child_and_root_are_retried(tmp_path, fake_key):
    with FakeLLMServer(responder=vapo_responder) as server:
        runner, store = make(tmp_path, server, method="vapo", gateway={"retries": 0})
        server.inject("500", count=1, model="fake-base")
        run(runner.run())
        assert runner.summary()["status"] == "failed" and runner.blocked
        run(runner.retry_failed())
        assert not runner.blocked
        run(runner.run(steps=2))  # select, expand
        server.inject("500", count=1, model="fake-optimizer")
        run(runner.run())
        summary = runner.summary()
        assert summary["status"] == "done"
        if summary["failed_nodes"]:
            run(runner.retry_failed())
            assert runner.failed_nodes() == []
        summary = runner.summary()
        assert summary["calls"] == summary["planned_calls"]
        store.close()


@pytest.mark.parametrize("method", ["picaco", "opro"])
def test_picaco_and_opro_failed_instructions_are_retried(tmp_path, fake_key, method):
    with FakeLLMServer(responder=picaco_responder) as server:
        runner, store = make(tmp_path, server, method=method, gateway={"retries": 0})
        stage = "mstep:1" if method == "picaco" else "opro:1"
        while runner.method.stage != stage:
            run(runner.step())
        server.inject("500", count=1, model="fake-optimizer")
        run(runner.run())
        failed = runner.failed_nodes()
        assert runner.summary()["status"] == "done" and failed
        run(runner.retry_failed())
        assert runner.failed_nodes() == []
        node = runner.tree[failed[0]]
        assert node["text"] and node["reward"] is not None
        assert node["id"] in runner.method.state["history"]
        summary = runner.summary()
        assert summary["calls"] == summary["planned_calls"]
        store.close()


def test_hostile_answers_and_errors_keep_the_key_off_disk(tmp_path, fake_key):
    from fake_llm import hostile_responder

    with FakeLLMServer(responder=hostile_responder(drpo_responder)) as server:
        server.hostile(rate=0.35, seed=3)
        runner, store = make(tmp_path, server, gateway={"retries": 2},
                             search={"beam_width": 2, "samples_per_state": 2, "depth": 2})
        run(runner.run())
        assert runner.summary()["status"] in ("done", "failed")
        server.hostile(None)
        server.inject("401-echo", count=1)
        root = runner.tree.roots[0]
        child = run(runner.add_human(root, "You are a careful assistant."))
        assert child["status"] == "failed" and "(HTTP 401)" in child["error"]
        assert MASK in child["error"] and FAKE_KEY not in child["error"]
        store.close()
        runner.gateway.close()
    for path in (tmp_path / "store").rglob("*"):
        if path.is_file():
            assert FAKE_KEY.encode() not in path.read_bytes(), path


@pytest.mark.parametrize("method", ["picaco", "opro", "q", "q-if", "q-if-cot", "urial"])
def test_picaco_family_replans_to_its_initial_plan_when_nothing_fails(tmp_path, picaco_server,
                                                                      fake_key, method):
    runner, store = make(tmp_path, picaco_server, method=method)
    planned = dict(runner.session["planned_calls"])
    assert runner.method.plan_remaining(runner.ctx) == planned
    while not runner.done:
        run(runner.step())
        assert runner.session["planned_calls"] == planned
    assert runner.gateway.totals()["calls"] == planned
    store.close()


@pytest.mark.parametrize("method,responder", [("drpo", drpo_responder), ("vapo", vapo_responder),
                                             ("opro", picaco_responder)])
def test_failed_held_out_samples_are_reported_and_retried(tmp_path, fake_key, method, responder):
    with FakeLLMServer(responder=responder) as server:
        kw = {"search": {"beam_width": 1, "samples_per_state": 1, "depth": 1}} if method == "drpo" \
            else ({"search": {"iterations": 1, "expand_width": 1, "depth_limit": 1,
                              "batch_size": 3}} if method == "vapo" else
                  {"search": {"iterations": 1, "prompts": 2, "new_instructions": 1}})
        runner, store = make(tmp_path, server, method=method, gateway={"retries": 0},
                             eval={"limit": 3, "samples": 1}, **kw)
        while "held-out" not in runner.method.describe_next() and \
                "evaluat" not in runner.method.describe_next():
            run(runner.step())
        server.inject("500", count=2, model="fake-base")  # two held-out answers fail
        run(runner.run())
        summary = runner.summary()
        assert summary["status"] == "done" and summary["failed_samples"] == 2
        assert sum(p["errors"] for p in summary["evaluation"]["prompts"]) == 2
        run(runner.retry_failed())  # the held-out samples go back to the evaluation
        assert not runner.done and runner.session["status"] == "paused"
        run(runner.run())
        summary = runner.summary()
        assert summary["status"] == "done" and summary["failed_samples"] == 0
        n = len(runner.method.state["heldout"]["items"])
        assert [p["n"] for p in summary["evaluation"]["prompts"]] == [n, n]
        assert summary["calls"] == summary["planned_calls"]
        store.close()
