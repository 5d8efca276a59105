"""PICACO: Eq. 4-6 on hand-computed numbers, pool selection, stratified sampling, call counts,
and whole runs of picaco and each baseline against the fake endpoint."""
from __future__ import annotations

import asyncio
import math
import random

import pytest

from conftest import write_config
from promptarbor.engine.config import ConfigError, load_config
from promptarbor.engine.datasets import load_inputs
from promptarbor.engine.methods.picaco import (aligned_score, noise_term, p_e, q_omega, q_phi, stratified,
                                   tc_e, top_by)
from promptarbor.engine.stats import weighted_conformity
from promptarbor.engine.runner import Runner
from promptarbor.engine.values import COMPOSITIONS, builtin, seed_instruction
from promptarbor.sessions.store import SessionStore


# ----------------------------------------------------------------------------- formulas

def test_eq5_q_phi_is_one_plus_sim_s_minus_sim_x_and_stays_positive():
    assert q_phi(0.6, 0.2) == pytest.approx(1.4)
    assert q_phi(0.1, 0.9) == pytest.approx(0.2)
    assert q_phi(-1.0, 1.0) == pytest.approx(1e-6)  # 1 - 1 - 1 < 0: clamped before the log


def test_eq6_p_e_is_the_mean_similarity_to_the_samples():
    assert p_e([0.9, 0.7, 0.5]) == pytest.approx(0.7)
    assert p_e([-0.4, 0.2]) == 0.0  # a negative mean is no probability
    assert p_e([]) == 0.0


def test_eq4_tc_e_on_hand_computed_pools():
    beta = 5.0
    # prompt 1: two aligned answers, q_omega per value (judge score as a percentage) and q_phi
    assert (q_omega(4), q_omega(3), q_omega(5), q_omega(2)) == (80, 60, 100, 40)
    s11 = aligned_score([80, 60], 1.2, beta)   # 5*(ln 80 + ln 60) - ln 1.2
    s12 = aligned_score([100, 40], 0.9, beta)
    assert s11 == pytest.approx(5 * (math.log(80) + math.log(60)) - math.log(1.2))
    b1 = noise_term([{"p": 0.5, "q_phi": 1.5}, {"p": 0.3, "q_phi": 0.8}])
    assert b1 == pytest.approx(0.5 * math.log(1.5) + 0.3 * math.log(0.8))
    # prompt 2: one aligned answer, empty noise pool
    s21 = aligned_score([60, 60], 1.0, beta)
    tc = tc_e([([0.7, 0.2], [s11, s12], b1), ([0.5], [s21], 0.0)])
    expected = ((0.7 * s11 + 0.2 * s12 + b1) + (0.5 * s21)) / 2
    assert tc == pytest.approx(expected)
    # the noise term does not depend on e: it shifts every candidate by the same amount
    assert tc_e([([0.7, 0.2], [s11, s12], b1 + 1.0), ([0.5], [s21], 0.0)]) == pytest.approx(expected + 0.5)


def test_pools_keep_the_top_by_their_key():
    items = [{"id": i, "q_phi": q} for i, q in enumerate([1.1, 0.9, 1.4, 1.4, 0.2])]
    assert [x["id"] for x in top_by(items, "q_phi", 3)] == [2, 3, 0]  # ties: the earlier
    aligned = [{"id": i, "score": s} for i, s in enumerate([-3.0, -1.0, -2.0])]
    assert [x["id"] for x in top_by(aligned, "score", 2)] == [1, 2]


def test_stratified_sampling_takes_lowest_low_high_highest():
    ranked = [f"e{i}" for i in range(10)]  # ascending TC_e
    for seed in range(20):
        picked = stratified(ranked, random.Random(seed))
        assert picked[0] == "e0" and picked[3] == "e9"
        assert picked[1] in ranked[1:5] and picked[2] in ranked[5:9]
    assert stratified(["a", "b", "c"], random.Random(0)) == ["a", "b", "c"]


def test_eq7_relevance_weighting():
    assert weighted_conformity(4.0, 5.0) == 4.0
    assert weighted_conformity(4.0, 2.5) == 2.0


def test_builtin_values_data_is_complete():
    data = builtin()
    for name, values in COMPOSITIONS.items():
        for value in values:
            assert data["values"][value]["definition"] and data["values"][value]["seed"]
        assert len(data["demonstrations"][name]) == 8
    hh = [{"name": v, **data["values"][v]} for v in COMPOSITIONS["harmlessness"]]
    assert seed_instruction(hh, "hh") == " ".join(data["values"][v]["seed"] for v in COMPOSITIONS["harmlessness"])
    sw = [{"name": v} for v in COMPOSITIONS["confucianism"]]
    assert seed_instruction(sw, "schwartz") == ("You should always provide responses that reflect "
                                                "the values of Benevolence, Conformity, Tradition, and Security.")


def test_config_values_and_beta(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('method = "picaco"\n[values]\ncomposition = "harmlessness"\n')
    cfg = load_config(path)
    assert cfg["search"]["beta"] == 5.0 and cfg["search"]["prompts"] == 50
    assert cfg["search"]["aligned_pool"] == 10 and cfg["search"]["noise_pool"] == 15
    path.write_text('method = "picaco"\n[values]\ncomposition = "confucianism"\n')
    assert load_config(path)["search"]["beta"] == 0.5
    path.write_text('method = "picaco"\n[[values.custom]]\nname = "Thrift"\n'
                    'definition = "Spend carefully."\n')
    cfg = load_config(path)
    assert cfg["values"]["custom"] == [{"name": "Thrift", "definition": "Spend carefully."}]
    path.write_text('method = "picaco"\n[values]\ncomposition = "stoicism"\n')
    with pytest.raises(ConfigError, match="unknown values.composition"):
        load_config(path)
    path.write_text('method = "drpo"\n[values]\ncomposition = "harmlessness"\n')
    with pytest.raises(ConfigError, match=r"\[values\] is for picaco"):
        load_config(path)


def test_refiner_defaults_to_the_target_model(tmp_path):
    """App. C.1: the M-step's optimizer is "typically the target model": with only
    [models.base] set, a PICACO-family method refines with the base model (its own sampling
    settings: the optimizer's temperature and token budget); a set optimizer is kept."""
    base = ('[models.base]\nmodel = "openai/target-x"\napi_base = "http://127.0.0.1:9/v1"\n'
            'api_key_env = "PA_FAKE_KEY"\n')
    path = tmp_path / "c.toml"
    for method in ("picaco", "opro"):
        path.write_text(f'method = "{method}"\n[values]\ncomposition = "harmlessness"\n' + base)
        models = load_config(path)["models"]
        assert models["optimizer"]["model"] == "openai/target-x"
        assert models["optimizer"]["api_base"] == "http://127.0.0.1:9/v1"
        assert models["optimizer"]["api_key_env"] == "PA_FAKE_KEY"
        assert models["optimizer"]["temperature"] == 0.2 and models["base"]["temperature"] == 0.0
    path.write_text('method = "picaco"\n[values]\ncomposition = "harmlessness"\n' + base +
                    '[models.optimizer]\nmodel = "openai/refiner-y"\n')
    assert load_config(path)["models"]["optimizer"]["model"] == "openai/refiner-y"
    path.write_text('method = "picaco"\n[values]\ncomposition = "harmlessness"\n' + base +
                    '[models.optimizer]\ntemperature = 0.7\n')
    models = load_config(path)["models"]
    assert models["optimizer"]["model"] == "openai/target-x"
    assert models["optimizer"]["temperature"] == 0.7
    # other families keep their own default optimizer
    path.write_text('method = "drpo"\n' + base)
    assert load_config(path)["models"]["optimizer"]["model"] != "openai/target-x"


# ----------------------------------------------------------------------------- whole runs

SMALL = {"iterations": 2, "prompts": 3, "aligned_pool": 2, "noise_pool": 2,
         "new_instructions": 2, "p_samples": 3, "buckets": 1}


EVAL = {"limit": 4, "samples": 2}  # the held-out evaluation: 4 held-out prompts, 2 samples
L, K = 4, 2


def _runner(tmp_path, server, method="picaco", values=None, search=None, gateway=None):
    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg = load_config(write_config(tmp_path / "c.toml", server.base_url, method=method,
                                   search={**SMALL, **(search or {})}, gateway=gateway,
                                   values=values or {"composition": "harmlessness"},
                                   eval=EVAL))
    store = SessionStore(tmp_path / "store")
    runner = Runner.create(cfg, load_inputs(cfg), store=store, cache_dir=store.cache_dir)
    return runner, store


def test_picaco_run_calls_per_step_and_evaluation(tmp_path, picaco_server, fake_key):
    runner, store = _runner(tmp_path, picaco_server)
    N = 3
    # noise: N calls (n = 2*M2 each); per iteration: E-step N*buckets base + N*M1 judge,
    # M-step 2 optimizer + candidates * N base (t=1: 2 new + e0; t=2: 2 new + 2 best)
    # held-out evaluation: seed and final, L prompts x K samples, one judge call each
    assert runner.session["planned_calls"] == {
        "base": N + (N + 3 * N) + (N + 4 * N) + 2 * L * K, "optimizer": 4,
        "evaluator": 2 * (N * 2), "judge": 2 * L * K}

    def calls():
        return dict(runner.gateway.totals()["calls"])

    async def go():
        deltas = []
        while not runner.done:
            label = runner.method.describe_next()
            before = calls()
            await runner.step()
            deltas.append((label, {r: calls()[r] - before[r] for r in before}))
        return deltas
    deltas = asyncio.run(go())
    labels = [label for label, _ in deltas]
    assert labels[0].startswith("noise pool") and "E-step" in labels[1] and "M-step" in labels[2]
    assert deltas[0][1] == {"base": N, "optimizer": 0, "evaluator": 0, "judge": 0}
    assert deltas[1][1] == {"base": N, "optimizer": 0, "evaluator": N * 2, "judge": 0}
    assert deltas[2][1] == {"base": 3 * N, "optimizer": 2, "evaluator": 0, "judge": 0}
    assert deltas[4][1] == {"base": 4 * N, "optimizer": 2, "evaluator": 0, "judge": 0}
    assert runner.summary()["calls"] == runner.session["planned_calls"]
    s = runner.method.state
    assert all(len(pool) == 2 for pool in s["noise"].values())      # top M2 of 2*M2
    assert all(len(pool) == 2 for pool in s["aligned"].values())    # top M1, accumulated
    for pool in s["aligned"].values():
        for item in pool:
            assert set(item["q"]) == set(COMPOSITIONS["harmlessness"])
            assert item["score"] == pytest.approx(
                aligned_score(list(item["q"].values()), item["q_phi"], 5.0), abs=1e-5)
    assert len(s["best_per_iteration"]) == 2
    best = runner.tree[s["best_per_iteration"][-1]]
    assert best["meta"]["best_of"] and best["reward"] is not None
    ev = runner.summary()["evaluation"]
    assert ev["metric"] == "conformity" and 20 <= ev["root"] <= 100 and 20 <= ev["final"] <= 100
    assert ev["n"] == L and ev["prompts"][0]["ci"] is not None and ev["delta"]["n"] == L
    # held out: the evaluation never answered the optimization prompts
    eval_items = s["heldout"]["items"]
    assert len(eval_items) == L and not {i["query"] for i in eval_items} & set(s["prompts"])
    assert set(ev["per_value"]) == set(COMPOSITIONS["harmlessness"])
    # the fake model is kinder with a kinder instruction, and the search finds one
    assert ev["final"] >= ev["root"]
    store.close()


@pytest.mark.parametrize("method", ["q", "q-if", "q-if-cot", "urial", "opro"])
def test_baselines_share_the_evaluation(tmp_path, picaco_server, fake_key, method):
    runner, store = _runner(tmp_path, picaco_server, method=method,
                            search={"iterations": 1, "new_instructions": 2})
    asyncio.run(runner.run())
    summary = runner.summary()
    assert summary["status"] == "done"
    assert summary["calls"] == summary["planned_calls"]
    ev = summary["evaluation"]
    assert ev["metric"] == "conformity" and ev["root"] is not None and ev["final"] is not None
    if method == "q-if":
        assert ev["root"] == ev["final"]
    if method == "opro":
        assert summary["calls"]["optimizer"] == 2  # T * new_instructions: PICACO's budget
    store.close()


def test_schwartz_composition_uses_the_models_observation_and_relevance(tmp_path, picaco_server, fake_key):
    runner, store = _runner(tmp_path, picaco_server, values={"composition": "confucianism"},
                            search={"iterations": 1})
    asyncio.run(runner.run())
    s = runner.method.state
    assert s["beta"] == 0.5 and s["observation"].startswith("These values")
    ev = runner.summary()["evaluation"]
    assert "relevance" in ev and 1 <= ev["relevance"]["final"] <= 5
    # Eq. 7 per response: each sample's conformity is its values' mean x its relevance / 5
    from promptarbor.engine.evaluation import Evaluation
    evaluation = Evaluation(s["heldout"]["spec"], s["heldout"]["state"])
    for result in evaluation.state["results"].values():
        assert result["score"] == pytest.approx(result["unweighted"] * result["relevance"]["score"] / 5)
    assert runner.summary()["calls"]["judge"] == 2 * 2 * L * K  # values + relevance calls
    assert runner.summary()["calls"] == runner.session["planned_calls"]
    store.close()


def test_person_edits_an_instruction_and_regenerates_from_a_critique(tmp_path, picaco_server, fake_key):
    runner, store = _runner(tmp_path, picaco_server, search={"iterations": 1})

    async def go():
        root = runner.method.state["root"]
        with pytest.raises(ValueError, match="needs the pools"):
            await runner.add_human(root, "Be kind.")
        await runner.step()  # noise pool
        await runner.step()  # E-step
        human = await runner.add_human(root, "Be kind, kind and fair to everyone.")
        assert human["reward"] is not None and human["id"] in runner.method.state["history"]
        await runner.edit_critique(root, "Mention privacy explicitly.")
        child = await runner.regenerate(root)
        assert child["kind"] == "regenerated" and child["reward"] is not None
        assert child["detail"]["written_from"]["ladder"]
        await runner.run()
        return human["id"]
    asyncio.run(go())
    assert runner.summary()["status"] == "done"
    store.close()


def test_cli_run_json_has_per_value_evaluation(tmp_path, picaco_server, fake_key):
    import contextlib
    import io
    import json

    from promptarbor.tui.cli import main

    cfg = write_config(tmp_path / "c.toml", picaco_server.base_url, method="picaco",
                       search={**SMALL, "iterations": 1}, values={"composition": "helpfulness"})
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["run", str(cfg), "--store", str(tmp_path / "s"), "--json"])
    assert code == 0
    result = json.loads(out.getvalue().strip().splitlines()[-1])
    assert result["status"] == "done"
    ev = result["evaluation"]
    assert ev["metric"] == "conformity" and set(ev["per_value"]) == set(COMPOSITIONS["helpfulness"])
    assert result["final"]["text"] and result["calls"] == result["planned_calls"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["export", result["session"], "--format", "json",
                     "--store", str(tmp_path / "s")]) == 0
    exported = json.loads(out.getvalue())
    assert exported["text"] == result["final"]["text"]
    assert set(exported["pools"]) == {"aligned", "noise"} and len(exported["demonstrations"]) == 8
    assert exported["evaluation"]["per_value"] == ev["per_value"]


def test_a_failed_rescore_keeps_an_existing_instruction(tmp_path, picaco_server, fake_key):
    # no response cache: re-scoring an existing instruction really calls the model again
    runner, store = _runner(tmp_path, picaco_server, search={"iterations": 2},
                            gateway={"cache": False})

    async def go():
        for _ in range(3):  # noise, E-step 1, M-step 1
            await runner.step()
        best = runner.method.state["current"]
        tc = runner.tree[best]["reward"]
        await runner.step()  # E-step 2
        # every p_e sample call of M-step 2 fails for one round of retries
        picaco_server.inject("500", count=200, model="fake-base")
        await runner.step()  # M-step 2
        picaco_server.clear_faults()
        node = runner.tree[best]
        assert node["status"] != "failed" and node["reward"] == tc  # kept, sat out
        await runner.run()
    asyncio.run(go())
    assert runner.summary()["status"] == "done"
    store.close()


def test_custom_value_names_must_differ_beyond_case_and_hyphens(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('method = "picaco"\n[[values.custom]]\nname = "Self-direction"\ndefinition = "a"\n'
                    '[[values.custom]]\nname = "self direction"\ndefinition = "b"\n')
    with pytest.raises(ConfigError, match="distinct"):
        load_config(path)
    path.write_text('method = "picaco"\n[[values.custom]]\nname = "Relevance"\ndefinition = "a"\n')
    with pytest.raises(ConfigError, match="reserved"):
        load_config(path)
