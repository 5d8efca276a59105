"""The held-out evaluation end to end against the fake endpoint: every judge, the plan equal
to the calls, categories, budgets, resuming after kill -9 with no call paid twice, the
commands and the reports; and every method's run ending with root vs final."""
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from html.parser import HTMLParser

import pytest

from conftest import FAKE_KEY, ROOT, drpo_responder, picaco_responder, write_config
from promptarbor.engine.config import validate_config
from promptarbor.engine.evaluation import EvalRunner, Evaluation, spec_id, text_prompt
from promptarbor.engine.evalsets import load_eval_set
from fake_llm import FakeLLMServer


def models_for(server, **judge):
    cfg = validate_config({"models": {
        "default": {"model": "openai/fake-base", "api_base": server.base_url,
                    "api_key_env": "PA_FAKE_KEY"},
        **({"judge": judge} if judge else {})},
        "gateway": {"backoff": 0.01, "max_backoff": 0.05, "timeout": 5.0}})
    return {r: cfg["models"][r] for r in ("base", "judge")}, cfg["gateway"]


def spec(judge, items, prompts, samples=1, **extra):
    return {"judge": judge, "samples": samples, "seed": 0, "rubric": extra.get("rubric"),
            "values": extra.get("values"), "kind": extra.get("kind"), "safety_category": "safety",
            "prompts": prompts, "items": items, "models": {"base": "b", "judge": "j"},
            "data": {"source": "test"}}


def run_eval(tmp_path, server, s, **judge):
    models, settings = models_for(server, **judge)
    runner = EvalRunner.create(s, models, settings, cache_dir=tmp_path / "cache")
    asyncio.run(runner.run())
    verdict = runner.verdict()
    runner.gateway.close()
    return runner, verdict


PROMPTS = [text_prompt("You are a helpful assistant.", "short"),
           text_prompt("You are a helpful assistant.\n- Tip 1: be clear.\n- Tip 2: be kind.", "long")]


@pytest.mark.parametrize("judge,samples", [("aspects", 1), ("aspects", 2), ("rubric", 1)])
def test_scored_judges_plan_calls_and_statistics(tmp_path, fake_server, fake_key, judge, samples):
    items = load_eval_set(None, judge="aspects", limit=12, seed=1)["items"]
    s = spec(judge, items, PROMPTS, samples=samples, rubric="Is it honest?")
    runner, v = run_eval(tmp_path, fake_server, s)
    assert v["status"] == "done" and v["n"] == 12 and v["samples"] == samples
    assert v["calls"] == v["planned_calls"] == {"base": 2 * 12 * samples, "judge": 2 * 12 * samples}
    for p in v["prompts"]:
        assert p["n"] == 12 and p["ci"][0] <= p["mean"] <= p["ci"][1]
    d = v["delta"]
    assert d["wins"] + d["ties"] + d["losses"] == 12
    assert d["mean"] == pytest.approx(v["prompts"][1]["mean"] - v["prompts"][0]["mean"])
    if judge == "aspects":  # safety items are rated on Safety alone, the others on five aspects
        for item in v["items"]:
            metrics = set(item["results"][0]["samples"][0]["metrics"])
            expected = {"Safety"} if "safety" in item["categories"] else \
                {"Helpfulness", "Clarity", "Factuality", "Depth", "Engagement"}
            assert metrics == expected
        assert v["prompts"][1]["mean"] > v["prompts"][0]["mean"]  # the fake judge likes tips
    losses = [r for r in v["regressions"]]
    assert len(losses) == d["losses"]
    assert [r["score_baseline"] - r["score_prompt"] for r in losses] == sorted(
        (r["score_baseline"] - r["score_prompt"] for r in losses), reverse=True)
    # k > 1: the samples differ (a sampling temperature), each has its own cache entry
    if samples > 1:
        answers = [smp["response"] for smp in v["items"][0]["results"][0]["samples"]]
        assert len(answers) == samples


def test_pairwise_is_counterbalanced(tmp_path, fake_server, fake_key):
    items = load_eval_set(None, judge="pairwise", limit=6, seed=0)["items"]
    runner, v = run_eval(tmp_path, fake_server, spec("pairwise", items, PROMPTS))
    assert v["calls"] == {"base": 12, "judge": 12}  # both orders for each item
    orders = [smp for it in v["items"] for smp in it["results"][1]["samples"]]
    assert all(r["metrics"]["win_rate"]["score"] in (0.0, 0.5, 1.0) for r in orders)
    stored = runner.evaluation.state["results"]
    for key, result in stored.items():
        if key.startswith("1|"):
            assert [o["prompt_was"] for o in result["orders"]] == ["A", "B"]
    # the fake judge prefers the longer answer: the long prompt's answers win
    assert v["prompts"][0]["mean"] is None and v["prompts"][1]["mean"] >= 0.5


def test_accuracy_on_multiple_choice(tmp_path, fake_key):
    from conftest import vapo_responder

    with FakeLLMServer(responder=vapo_responder) as server:
        items = [{"id": f"i{i}", "query": f"Case {i}: is this fair? [#{'AB'[i % 2]}]",
                  "options": ["Fair choice", "Unfair choice"], "answer": "AB"[i % 2],
                  "categories": ["justice" if i < 4 else "care"]} for i in range(8)]
        prompts = [text_prompt("You are a judge.", "root"),
                   text_prompt("You are a judge. Guard 1. Guard 2. Guard 3.", "final")]
        runner, v = run_eval(tmp_path, server, spec("accuracy", items, prompts))
    assert v["calls"] == {"base": 16, "judge": 0}
    assert all(smp["score"] in (0.0, 1.0) for it in v["items"] for r in it["results"]
               for smp in r["samples"])
    assert v["prompts"][1]["mean"] >= v["prompts"][0]["mean"]
    assert v["per_category"]["justice"]["n"] == 4 and v["per_category"]["care"]["n"] == 4


@pytest.mark.parametrize("kind", ["hh", "schwartz"])
def test_conformity_percentages_and_eq7_per_response(tmp_path, fake_key, kind):
    values = [{"name": "Fairness", "definition": "treats people equally"},
              {"name": "Benevolence", "definition": "cares for others"}]
    with FakeLLMServer(responder=picaco_responder) as server:
        items = load_eval_set(None, judge="conformity", limit=5, seed=0)["items"]
        prompts = [text_prompt("Answer.", "root"), text_prompt("Be kind, kind and kind.", "final")]
        runner, v = run_eval(tmp_path, server, spec("conformity", items, prompts, values=values,
                                                    kind=kind))
    per = 2 if kind == "schwartz" else 1  # relevance is its own call
    assert v["calls"] == {"base": 10, "judge": 10 * per}
    for result in runner.evaluation.state["results"].values():
        percents = [m["score"] for m in result["metrics"].values()]
        assert all(p in (20.0, 40.0, 60.0, 80.0, 100.0) for p in percents)
        mu = sum(percents) / len(percents)
        if kind == "schwartz":  # Eq. 7 on this response: mu' = mu * relevance / 5
            assert result["score"] == pytest.approx(mu * result["relevance"]["score"] / 5)
        else:
            assert result["score"] == pytest.approx(mu)
    assert v["scale"]["hi"] == 100 and v["prompts"][1]["mean"] > v["prompts"][0]["mean"]


def test_list_valued_categories_count_an_item_in_each(tmp_path, fake_server, fake_key):
    data = tmp_path / "set.jsonl"
    rows = [{"instruction": f"Question {i}?", "dataset": ["alpha", "beta"] if i < 3 else "gamma"}
            for i in range(6)]
    data.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    items = load_eval_set(str(data), judge="aspects", category_field="dataset")["items"]
    runner, v = run_eval(tmp_path, fake_server, spec("aspects", items, PROMPTS))
    counts = {c: e["n"] for c, e in v["per_category"].items()}
    assert counts == {"alpha": 3, "beta": 3, "gamma": 3}


def test_judge_role_falls_back_to_the_evaluator_or_its_own_table(fake_server):
    cfg = validate_config({"models": {"evaluator": {"model": "openai/eval-model"}}})
    assert cfg["models"]["judge"]["model"] == "openai/eval-model"
    cfg = validate_config({"models": {"evaluator": {"model": "openai/eval-model"},
                                      "judge": {"model": "openai/strong"}}})
    assert cfg["models"]["judge"]["model"] == "openai/strong"
    cfg = validate_config({})
    assert cfg["models"]["judge"]["model"] == "local/smollm2"


def test_max_cost_pauses_after_the_batch_that_reaches_it(tmp_path, fake_server, fake_key):
    items = load_eval_set(None, judge="aspects", limit=25, seed=0)["items"]  # 3 batches a prompt
    models, settings = models_for(fake_server)
    runner = EvalRunner.create(spec("aspects", items, PROMPTS), models, settings,
                               cache_dir=tmp_path / "cache")
    real = runner.gateway._account

    def priced(role, response, record):
        real(role, response, record)
        record["cost"] = 0.001
        runner.gateway.usage[role].cost += 0.001
    runner.gateway._account = priced
    reason = asyncio.run(runner.run(max_cost=0.015))
    assert reason == "budget" and not runner.done
    assert runner.evaluation.state["cursor"] == 1  # 20 calls ($0.02): the first batch crossed
    reason = asyncio.run(runner.run())  # running again goes on
    assert reason == "done"
    runner.gateway.close()


def test_run_budget_pauses_a_session(tmp_path, fake_server, fake_key):
    from promptarbor.engine.config import load_config
    from promptarbor.engine.datasets import load_inputs
    from promptarbor.engine.runner import Runner
    from promptarbor.sessions.store import SessionStore

    path = write_config(tmp_path / "c.toml", fake_server.base_url,
                        search={"beam_width": 2, "samples_per_state": 2, "depth": 2})
    path.write_text(path.read_text() + "\n[budget]\nmax_usd = 0.005\n")
    cfg = load_config(path)
    store = SessionStore(tmp_path / "s")
    runner = Runner.create(cfg, load_inputs(cfg), store=store, cache_dir=store.cache_dir)
    real = runner.gateway._account

    def priced(role, response, record):
        real(role, response, record)
        runner.gateway.usage[role].cost += 0.003
    runner.gateway._account = priced
    steps = asyncio.run(runner.run())
    assert steps == 1 and not runner.done  # the root's 3 calls ($0.009) crossed it
    assert any(e["kind"] == "budget" for e in runner.session["events"])
    asyncio.run(runner.run(steps=1))  # a new run: a new budget
    assert runner.session["steps"] == 2
    store.close()


def test_spec_id_is_stable_and_changes_with_what_is_measured():
    items = [{"id": "i0", "query": "q"}]
    a = spec("aspects", items, PROMPTS)
    assert spec_id(a) == spec_id(json.loads(json.dumps(a)))
    assert spec_id(a) != spec_id({**a, "samples": 2})
    assert spec_id(a) != spec_id({**a, "prompts": PROMPTS[:1]})


def test_plan_remaining_counts_only_what_is_left(tmp_path, fake_server, fake_key):
    items = load_eval_set(None, judge="aspects", limit=15, seed=0)["items"]
    models, settings = models_for(fake_server)
    runner = EvalRunner.create(spec("aspects", items, PROMPTS), models, settings,
                               cache_dir=tmp_path / "cache")
    assert runner.evaluation.plan_remaining() == runner.evaluation.plan() == {"base": 30, "judge": 30}
    asyncio.run(runner.run(steps=1))
    assert runner.evaluation.plan_remaining() == {"base": 20, "judge": 20}
    runner.gateway.close()


# ----------------------------------------------------------------------------- commands


def cli(*args, timeout=240):
    env = {**os.environ, "PA_FAKE_KEY": FAKE_KEY}
    return subprocess.run([sys.executable, "-m", "promptarbor.tui.cli", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def models_file(tmp_path, server):
    path = tmp_path / "models.toml"
    path.write_text(f'[models.default]\nmodel = "openai/fake"\napi_base = "{server.base_url}"\n'
                    f'api_key_env = "PA_FAKE_KEY"\n[gateway]\nretries = 1\nbackoff = 0.01\n'
                    f'concurrency = 4\n', encoding="utf-8")
    return path


def test_eval_command_json_then_again_without_new_calls(tmp_path, fake_server):
    data = tmp_path / "instructions.jsonl"
    rows = [{"instruction": f"Explain topic {i} simply.", "category": "help",
             "dataset": "alpha" if i % 2 else "beta"} for i in range(14)]
    data.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    args = ["eval", "--prompt", "text:You are a helpful assistant.",
            "--prompt", "text:You are a helpful assistant.\n- Tip 1: be clear.",
            "--data", data, "--category-field", "dataset", "--limit", 10, "--judge", "aspects",
            "--models", models_file(tmp_path, fake_server), "--store", tmp_path / "s", "--json"]
    first = cli(*args)
    assert first.returncode == 0, first.stderr
    assert "planned calls base 20, judge 20" in first.stderr  # shown before the first call
    out = json.loads(first.stdout)
    assert {"evaluation", "judge", "n", "prompts", "delta", "per_category", "regressions",
            "calls", "cost"} <= set(out)
    assert out["n"] == 10 and set(out["per_category"]) == {"alpha", "beta"}
    assert all(p["ci"] is not None and "per_metric" in p for p in out["prompts"])
    for r in out["regressions"]:
        assert {"item", "query", "baseline", "prompt", "score_baseline", "score_prompt"} <= set(r)
    answered = fake_server.answered
    again = cli(*args)
    assert again.returncode == 0 and json.loads(again.stdout)["prompts"] == out["prompts"]
    assert fake_server.answered == answered  # nothing paid twice
    listed = json.loads(cli("evals", "list", "--store", tmp_path / "s", "--json").stdout)
    assert [e["id"] for e in listed] == [out["evaluation"]]
    shown = cli("evals", "show", out["evaluation"], "--store", tmp_path / "s")
    assert shown.returncode == 0 and "wins" in shown.stdout

    html_path = tmp_path / "report.html"
    rep = cli("report", out["evaluation"], "--format", "html", "-o", html_path,
              "--store", tmp_path / "s")
    assert rep.returncode == 0, rep.stderr
    page = html_path.read_text(encoding="utf-8")

    class Tags(HTMLParser):
        def __init__(self):
            super().__init__()
            self.tags, self.urls = [], []

        def handle_starttag(self, tag, attrs):
            self.tags.append(tag)
            self.urls += [v for k, v in attrs if k in ("src", "href") and v
                          and not v.startswith(("#", "data:"))]
    parser = Tags()
    parser.feed(page)
    assert "table" in parser.tags and "svg" in parser.tags and "details" in parser.tags
    assert not parser.urls and "<script" not in page
    for fmt in ("md", "csv", "json"):
        assert cli("report", out["evaluation"], "--format", fmt, "--store", tmp_path / "s").returncode == 0


def test_eval_of_a_session_node_and_a_bad_spec(tmp_path, fake_server):
    cfg = write_config(tmp_path / "c.toml", fake_server.base_url,
                       search={"beam_width": 1, "samples_per_state": 1, "depth": 1})
    done = json.loads(cli("run", cfg, "--store", tmp_path / "s", "--json").stdout)
    ev = done["evaluation"]
    assert ev["judge"] == "aspects" and ev["n"] == 3 and [p["label"] for p in ev["prompts"]] == ["root", "final"]
    assert isinstance(ev["root"], float) and isinstance(ev["final"], float)
    assert {"mean", "ci", "wins", "ties", "losses"} <= set(ev["delta"])
    sid = done["session"]
    out = cli("eval", "--prompt", f"{sid}:n0", "--prompt", sid, "--limit", 3,
              "--store", tmp_path / "s", "--json")  # models from the first session
    assert out.returncode == 0, out.stderr
    labels = [p["label"] for p in json.loads(out.stdout)["prompts"]]
    assert labels == [f"{sid}:n0", sid]
    bad = cli("eval", "--prompt", f"{sid}:n999", "--store", tmp_path / "s")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    report = cli("report", sid, "--store", tmp_path / "s")  # a session's held-out evaluation
    assert report.returncode == 0 and "root" in report.stdout


def test_kill_during_an_evaluation_then_resume_pays_no_call_twice(tmp_path):
    with FakeLLMServer(responder=drpo_responder, latency=0.05) as server:
        args = ["eval", "--prompt", "text:You are a helpful assistant.",
                "--prompt", "text:You are a careful assistant.", "--limit", 30,
                "--models", models_file(tmp_path, server), "--store", tmp_path / "s"]
        server.hang_after(25)  # 25 answers, then every request waits
        env = {**os.environ, "PA_FAKE_KEY": FAKE_KEY}
        proc = subprocess.Popen([sys.executable, "-m", "promptarbor.tui.cli", *map(str, args)], cwd=ROOT,
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        deadline = time.time() + 120
        while server.blocked < 1 and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)  # the 25 answers are in the cache (written as each arrives)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        answered = server.answered
        assert answered == 25
        server.release()
        server.reset_stats()
        again = cli(*args, "--json")
        assert again.returncode == 0, again.stderr
        out = json.loads(again.stdout)
        assert out["status"] == "done" and out["calls"] == {"base": 60, "judge": 60}
        assert server.answered == 120 - answered  # the 25 paid answers were not asked again
