"""VAPO-ValueCoT / PromptAgent: the MCTS rules on hand-computed trees, answer extraction,
task splits, call counts per step, and whole runs against the fake endpoint."""
from __future__ import annotations

import asyncio
import json
import math

import pytest

from conftest import FAKE_KEY, write_config, write_tasks
from promptarbor.engine.config import ConfigError, load_config
from promptarbor.engine.datasets import load_inputs
from promptarbor.engine.methods.vapo import (VAPO, best_path_and_node, cumulative_rewards, is_terminal,
                                 q_value, uct, visits)
from promptarbor.engine.runner import Runner
from promptarbor.engine.tasks import extract_choice, gold_letter, load_tasks, split_sizes, split_tasks
from promptarbor.engine.tree import Tree
from promptarbor.sessions.store import SessionStore


def _tree(rewards: dict[str, float], edges: dict[str, str]) -> Tree:
    """Nodes named by their reward keys in insertion order; edges child -> parent."""
    tree = Tree()
    ids = {}
    for name, reward in rewards.items():
        parent = ids.get(edges.get(name))
        node = tree.add(name, parent=parent, kind="root" if parent is None else "candidate",
                        meta={"cum_rewards": []})
        node["reward"] = reward
        ids[name] = node["id"]
    return tree, ids


# ----------------------------------------------------------------------------- Eq. 2 and 3

def test_uct_is_q_plus_w_sqrt_log_parent_visits_over_child_visits():
    parent = {"reward": 0.5, "meta": {"cum_rewards": [1.0, 2.0, 3.0]}}  # N(s) = 3
    child = {"reward": 0.4, "meta": {"cum_rewards": [1.2, 1.6]}}       # N(c) = 2, Q = 1.4
    assert visits(parent) == 3 and q_value(child) == pytest.approx(1.4)
    assert uct(child, parent, 2.5) == pytest.approx(1.4 + 2.5 * math.sqrt(math.log(4) / 2))
    fresh = {"reward": 0.7, "meta": {"cum_rewards": []}}              # N(c) = 0: max(1, N) = 1
    assert uct(fresh, parent, 2.5) == pytest.approx(0.7 + 2.5 * math.sqrt(math.log(4) / 1))
    assert uct(fresh, {"meta": {"cum_rewards": []}}, 2.5) == pytest.approx(0.7)  # ln(0 + 1) = 0


def test_eq3_q_is_the_mean_over_trajectories_of_summed_rewards_from_the_node():
    assert cumulative_rewards([0.5, 0.6, 0.9]) == pytest.approx([2.0, 1.5, 0.9])
    tree, ids = _tree({"root": 0.5, "a": 0.6, "b": 0.9, "c": 0.3},
                      {"a": "root", "b": "a", "c": "a"})

    class Ctx:
        pass
    ctx = Ctx()
    ctx.tree = tree
    ctx.emit = lambda *a, **k: None
    method = VAPO({"search": {"iterations": 2, "exploration": 2.5, "depth_limit": 5,
                              "min_depth": 2}, "data": {}, "random_seed": 0})
    method.state = {"path": [ids["root"], ids["a"], ids["b"]], "paths": [], "iteration": 0,
                    "root": ids["root"], "stage": "backprop"}
    asyncio.run(method._step_backprop(ctx))
    method.state.update(path=[ids["root"], ids["a"], ids["c"]], stage="backprop")
    asyncio.run(method._step_backprop(ctx))
    # root: trajectories sum to 0.5+0.6+0.9 = 2.0 and 0.5+0.6+0.3 = 1.4 -> Q = 1.7, N = 2
    assert q_value(tree[ids["root"]]) == pytest.approx(1.7) and visits(tree[ids["root"]]) == 2
    # a: 1.5 and 0.9 -> Q = 1.2
    assert q_value(tree[ids["a"]]) == pytest.approx(1.2)
    assert q_value(tree[ids["b"]]) == pytest.approx(0.9) and visits(tree[ids["b"]]) == 1
    assert method.state["paths"] == [[ids["root"], ids["a"], ids["b"]],
                                     [ids["root"], ids["a"], ids["c"]]]


def test_terminal_rule_depth_limit_and_below_the_root_parent_mean_past_min_depth():
    root = {"reward": 0.6, "depth": 0}
    parent = {"reward": 0.8, "depth": 2}
    low = {"reward": 0.65, "depth": 3}   # below (0.6 + 0.8) / 2 = 0.7 and deeper than 2
    assert is_terminal(low, parent, root["reward"], depth_limit=5, min_depth=2)
    shallow = {"reward": 0.65, "depth": 2}  # not deeper than min depth
    assert not is_terminal(shallow, parent, root["reward"], depth_limit=5, min_depth=2)
    ok = {"reward": 0.71, "depth": 3}
    assert not is_terminal(ok, parent, root["reward"], depth_limit=5, min_depth=2)
    deep = {"reward": 1.0, "depth": 5}
    assert is_terminal(deep, parent, root["reward"], depth_limit=5, min_depth=2)


def _method_with(tree, root_id, exploration=2.5):
    method = VAPO({"search": {"iterations": 3, "exploration": exploration, "depth_limit": 5,
                              "min_depth": 2}, "data": {}, "random_seed": 0})
    method.state = {"root": root_id, "path": [], "paths": []}

    class Ctx:
        pass
    ctx = Ctx()
    ctx.tree = tree
    ctx.emit = lambda *a, **k: None
    return method, ctx


def test_selection_follows_the_highest_uct_and_never_a_pruned_node():
    tree, ids = _tree({"root": 0.5, "a": 0.9, "b": 0.4, "a1": 0.8},
                      {"a": "root", "b": "root", "a1": "a"})
    tree[ids["root"]]["meta"]["cum_rewards"] = [2.0, 1.0]
    tree[ids["a"]]["meta"]["cum_rewards"] = [1.5]   # UCT = 1.5 + 2.5*sqrt(ln 3 / 1) = 4.12
    tree[ids["b"]]["meta"]["cum_rewards"] = [0.4]   # UCT = 0.4 + 2.62 = 3.02
    method, ctx = _method_with(tree, ids["root"])
    assert method.select_path(ctx) == [ids["root"], ids["a"], ids["a1"]]
    tree[ids["a"]]["status"] = "pruned"
    assert method.select_path(ctx) == [ids["root"], ids["b"]]
    tree[ids["b"]]["status"] = "pruned"
    assert method.select_path(ctx) == [ids["root"]]  # nothing usable: the root is the leaf


def test_rollout_keeps_the_child_with_the_highest_reward(tmp_path):
    tree, ids = _tree({"root": 0.5, "a": 0.6, "b": 0.9, "c": 0.7},
                      {"a": "root", "b": "root", "c": "root"})
    method, ctx = _method_with(tree, ids["root"])
    method.state.update(path=[ids["root"]], stage="simulate", _end_depth=0)
    asyncio.run(method._grow(ctx))  # the root already has children: no expansion, no call
    assert method.state["path"] == [ids["root"], ids["b"]]
    tree[ids["b"]]["status"] = "pruned"
    method.state.update(path=[ids["root"]])
    asyncio.run(method._grow(ctx))
    assert method.state["path"] == [ids["root"], ids["c"]]


def test_final_prompt_is_the_best_node_on_the_path_with_the_highest_mean_reward():
    tree, ids = _tree({"root": 0.5, "a": 0.9, "a1": 0.2, "b": 0.7, "b1": 0.8},
                      {"a": "root", "a1": "a", "b": "root", "b1": "b"})
    paths = [[ids["root"], ids["a"], ids["a1"]],   # mean 0.533
             [ids["root"], ids["b"], ids["b1"]]]   # mean 0.667
    path, node = best_path_and_node(tree, paths)
    assert path == paths[1] and node == ids["b1"]  # not a (0.9): it is on the weaker path
    tree[ids["b1"]]["status"] = "pruned"           # mean of root, b = 0.6 still beats 0.533
    path, node = best_path_and_node(tree, paths)
    assert node == ids["b"]


# ----------------------------------------------------------------------------- answers & tasks

@pytest.mark.parametrize("text, expected", [
    ("A", "A"), ("(B)", "B"), ("B.", "B"), ("B) because", "B"), ("Answer: A", "A"),
    ("answer: B", "B"), ("The answer is (B).", "B"), ("Final answer: **A**", "A"),
    ("ANSWER - B", "B"), ("I pick option B", "B"), ("First A? No. Answer: B", "B"),
    ("Reasonable", "A"), ("It is unreasonable.", "B"), ("Not wrong", "A"),
    ("This was wrong of them.", "B"), ("I think it's not wrong at all", "A"),
    ("A person would call this unreasonable", "B"),  # the article "A" is not a letter
    ("Both (A) and (B) fit", None), ("", None), ("I cannot decide", None),
    ("Answer: C", None),  # not one of the two options
])
def test_answer_extraction(text, expected):
    options = ["Reasonable", "Unreasonable"] if "reason" in text.lower() else ["Not wrong", "Wrong"]
    assert extract_choice(text, options) == expected


def test_gold_answers_as_letters_or_option_text():
    assert gold_letter("B", ["x", "y"]) == "B"
    assert gold_letter("(A)", ["x", "y"]) == "A"
    assert gold_letter("y", ["x", "y"]) == "B"
    assert gold_letter("C", ["x", "y"]) is None


def test_builtin_task_loads_with_40_items_and_splits_are_seeded(tmp_path):
    items = load_tasks(None, "multiple-choice")
    assert len(items) == 40 and all(i["answer"] in "AB" for i in items)
    sizes = split_sizes(40, None, None, None)  # paper 200/50/150 scaled to 40 items
    assert sizes == (20, 5, 15)
    a = split_tasks(items, sizes, seed=3)
    assert a == split_tasks(items, sizes, seed=3) and a != split_tasks(items, sizes, seed=4)
    assert not set(a["train"]) & set(a["validation"]) and not set(a["train"]) & set(a["test"])
    with pytest.raises(ConfigError, match="the task has 40"):
        split_sizes(40, 30, 10, 10)
    csv_file = tmp_path / "t.csv"
    csv_file.write_text('question,options,answer\n"Fair?","Yes | No",No\n"Kind?","[""Yes"", ""No""]",A\n')
    loaded = load_tasks(str(csv_file), "multiple-choice")
    assert [i["answer"] for i in loaded] == ["B", "A"] and loaded[1]["options"] == ["Yes", "No"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "options": ["a", "b"], "answer": "maybe"}\n')
    with pytest.raises(ConfigError, match="not a letter or one of its options"):
        load_tasks(str(bad), "multiple-choice")


def test_config_keys_and_promptagent_means_basis(tmp_path):
    cfg_path = tmp_path / "c.toml"
    cfg_path.write_text('method = "promptagent"\n[search]\niterations = 2\n')
    cfg = load_config(cfg_path)
    assert cfg["search"]["meta_prompts"] == "basis" and cfg["search"]["expand_width"] == 3
    assert cfg["search"]["depth_limit"] == 5 and cfg["search"]["exploration"] == 2.5
    cfg_path.write_text('method = "vapo"\n[search]\nmeta_prompts = "poetry"\n')
    with pytest.raises(ConfigError, match="meta_prompts"):
        load_config(cfg_path)
    cfg_path.write_text('method = "vapo"\n[search]\nbeam_width = 2\n')
    with pytest.raises(ConfigError, match="unknown key 'beam_width'"):
        load_config(cfg_path)


# ----------------------------------------------------------------------------- whole runs

def _runner(tmp_path, server, method="vapo", search=None, data=None):
    tmp_path.mkdir(parents=True, exist_ok=True)
    tasks = write_tasks(tmp_path / "tasks.jsonl", 24,
                        free_form=bool(data and data.get("task_type") == "free-form"))
    search = {"iterations": 3, "expand_width": 2, "depth_limit": 3, "batch_size": 3,
              **(search or {})}
    data = {"tasks": str(tasks), "train": 10, "validation": 6, "test": 6, **(data or {})}
    cfg = load_config(write_config(tmp_path / "c.toml", server.base_url, method=method,
                                   search=search, data=data))
    store = SessionStore(tmp_path / "store")
    runner = Runner.create(cfg, load_inputs(cfg), store=store, cache_dir=store.cache_dir)
    return runner, store


def _calls(runner):
    return dict(runner.gateway.totals()["calls"])


@pytest.mark.parametrize("method", ["vapo", "promptagent"])
def test_calls_per_step_follow_the_documented_schedule(tmp_path, vapo_server, fake_key, method):
    runner, store = _runner(tmp_path, vapo_server, method=method,
                            search={"iterations": 4, "min_depth": 5})  # min_depth 5: only the depth limit ends a rollout
    # PromptAgent: a slot draws up to 3 batches until one has an error; VAPO: one batch
    draws = 3 if method == "promptagent" else 1
    per_expansion = runner.method.expansion_calls()
    assert per_expansion == {"base": 2 * (draws * 3 + 6), "optimizer": 4, "evaluator": 0}
    first_plan = dict(runner.session["planned_calls"])
    # upper bound: root 6 + (3 + 3 * 2) expansions * per_expansion base + test 2 * 6
    assert first_plan == {"base": 6 + 9 * per_expansion["base"] + 12, "optimizer": 9 * 4,
                          "evaluator": 0, "judge": 0}  # multiple choice: no judge call
    expansions_per_iteration = {}

    async def go():
        while not runner.done:
            label = runner.method.describe_next()
            before = _calls(runner)
            before_ids = set(runner.tree.nodes)
            expanded = label.split()[-1].strip("()")
            skipped_before = len(runner.tree[expanded]["meta"].get("skipped", [])) \
                if expanded in runner.tree else 0
            await runner.step()
            delta = {r: _calls(runner)[r] - before[r] for r in before}
            if label.startswith("validate the root"):
                assert delta == {"base": 6, "optimizer": 0, "evaluator": 0, "judge": 0}
            elif ": expand" in label or ": simulate" in label:
                # batch answers for every batch drawn, then per child made: 2 optimizer
                # calls and its validation
                new = [n for i, n in runner.tree.nodes.items() if i not in before_ids]
                assert all(n["parent"] == expanded for n in new)
                skipped = runner.tree[expanded]["meta"].get("skipped", [])[skipped_before:]
                drawn = [1 + len(n["detail"]["action"].get("skipped_batches", [])) for n in new]
                assert all(d <= draws for d in drawn)
                assert all(len(entry["batches"]) == draws for entry in skipped)
                batches = sum(drawn) + sum(len(entry["batches"]) for entry in skipped)
                assert len(new) + len(skipped) == 2
                assert delta == {"base": 3 * batches + 6 * len(new), "optimizer": 2 * len(new),
                                 "evaluator": 0, "judge": 0}, label
                assert all(delta[r] <= per_expansion[r] for r in per_expansion)
                it = int(label.split()[1].split("/")[0])
                expansions_per_iteration[it] = expansions_per_iteration.get(it, 0) + 1
            elif label.startswith(("evaluate", "held-out")):
                # one batch of the held-out evaluation: the test split's 6 items, one prompt
                assert delta == {"base": 6, "optimizer": 0, "evaluator": 0, "judge": 0}, label
            else:  # select / back-propagate: no call
                assert delta == {"base": 0, "optimizer": 0, "evaluator": 0, "judge": 0}, label
            assert all(runner.session["planned_calls"][r] >= _calls(runner)[r] for r in delta)
    asyncio.run(go())
    # the first iteration starts at the root: depth_limit expansions
    assert expansions_per_iteration[1] == 3
    assert runner.session["planned_calls"] == _calls(runner)  # the bound is exact once done
    summary = runner.summary()
    assert summary["status"] == "done"
    ev = summary["evaluation"]
    assert ev["metric"] == "accuracy" and 0 <= ev["root"] <= 1 and 0 <= ev["final"] <= 1
    assert ev["final"] >= ev["root"]  # the fake base model answers better with more guards
    feedback = [r for r in runner.gateway.log if r["purpose"] == "feedback"]
    assert feedback
    store.close()


def test_meta_prompt_variants_reach_the_optimizer(tmp_path, vapo_server, fake_key):
    for method in ("vapo", "promptagent"):
        runner, store = _runner(tmp_path / method, vapo_server, method=method,
                                search={"iterations": 1, "depth_limit": 1})
        asyncio.run(runner.run())
        children = [n for n in runner.tree.nodes.values() if n["parent"]]
        style = "valuecot" if method == "vapo" else "basis"
        assert children and all(c["detail"]["action"]["feedback"].startswith(style)
                                for c in children)
        root = runner.tree[runner.method.state["root"]]
        assert root["critique"] and style in root["critique"]
        store.close()


def test_a_batch_without_errors_still_expands_with_guards(tmp_path, vapo_server, fake_key):
    # a prompt with many guards answers everything right: the batch has no error
    runner, store = _runner(tmp_path, vapo_server, search={
        "iterations": 1, "depth_limit": 1,
        "initial_prompt": "Be fair.\n" + "\n".join(f"- Guard {i}" for i in range(6))})
    asyncio.run(runner.run())
    children = [n for n in runner.tree.nodes.values() if n["parent"]]
    assert len(children) == 2
    for child in children:
        assert child["detail"]["action"]["guard"] is True and child["detail"]["action"]["failed"] == []
        assert "(guard)" in child["text"]  # the rewrite was told no mistake was made
    store.close()


def test_free_form_rewards_are_judge_scores_mapped_to_unit_interval(tmp_path, vapo_server, fake_key):
    runner, store = _runner(tmp_path, vapo_server, search={"iterations": 1, "depth_limit": 1},
                            data={"task_type": "free-form"})
    assert runner.method.expansion_calls()["evaluator"] == 2 * (3 + 6)
    asyncio.run(runner.run())
    root = runner.tree[runner.method.state["root"]]
    scores = [r["score"] for r in root["detail"]["validation"]]
    assert root["reward"] == pytest.approx(round(sum((s - 1) / 4 for s in scores) / len(scores), 4))
    summary = runner.summary()
    assert summary["evaluation"]["metric"] == "rubric"  # free-form: the judge's rubric score
    assert 1 <= summary["evaluation"]["root"] <= 5
    assert summary["calls"] == summary["planned_calls"]
    store.close()


def test_persons_operations_on_a_vapo_tree(tmp_path, vapo_server, fake_key):
    runner, store = _runner(tmp_path, vapo_server, search={"iterations": 2, "depth_limit": 2})

    async def go():
        await runner.run(until="level")  # root + first iteration
        root_id = runner.method.state["root"]
        kids = runner.tree[root_id]["children"]
        await runner.prune(kids[0])
        await runner.edit_critique(root_id, "Add a line about fairness to strangers.")
        before = _calls(runner)
        child = await runner.regenerate(root_id)
        delta = {r: _calls(runner)[r] - before[r] for r in before}
        assert delta == {"base": 6, "optimizer": 1, "evaluator": 0, "judge": 0}
        assert child["kind"] == "regenerated" and child["reward"] is not None
        human = await runner.add_human(root_id, "You are fair. Answer with the letter.")
        assert human["reward"] is not None
        await runner.accept(human["id"])
        await runner.run()
        paths = runner.method.state["paths"]
        assert all(kids[0] not in p for p in paths[1:])  # a pruned node is never selected
        return human["id"]
    human_id = asyncio.run(go())
    store.close()
    saved = SessionStore(tmp_path / "store").load(runner.session["id"])
    assert saved["accepted"] == human_id
    assert [e["kind"] for e in saved["events"] if e["actor"] == "user"][-4:] == [
        "edit_critique", "regenerate", "add_human", "accept"]


def test_cli_run_json_has_the_evaluation(tmp_path, vapo_server, fake_key):
    from promptarbor.tui.cli import main
    import contextlib
    import io

    tasks = write_tasks(tmp_path / "tasks.jsonl", 24)
    cfg = write_config(tmp_path / "c.toml", vapo_server.base_url, method="promptagent",
                       search={"iterations": 1, "expand_width": 1, "depth_limit": 2,
                               "batch_size": 2},
                       data={"tasks": str(tasks), "train": 6, "validation": 4, "test": 4})
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["run", str(cfg), "--store", str(tmp_path / "s"), "--json"])
    assert code == 0
    result = json.loads(out.getvalue().strip().splitlines()[-1])
    assert result["status"] == "done"
    assert {"metric", "root", "final", "judge", "n", "prompts", "delta"} <= set(result["evaluation"])
    assert result["evaluation"]["n"] == 4 and len(result["evaluation"]["prompts"]) == 2
    assert result["evaluation"]["metric"] == "accuracy"
    saved = SessionStore(tmp_path / "s").path(result["session"]).read_text()
    assert FAKE_KEY not in saved and '"meta_prompts": "basis"' in saved


def test_a_prompt_under_a_failed_node_and_a_pruned_trajectory(tmp_path, vapo_server, fake_key):
    runner, store = _runner(tmp_path, vapo_server, search={"iterations": 2, "depth_limit": 3,
                                                           "min_depth": 5})

    async def go():
        await runner.step()  # root
        await runner.step()  # select
        await runner.step()  # expand the root; the best child continues
        path = list(runner.method.state["path"])
        assert runner.method.state["stage"] == "simulate" and len(path) == 2
        # a failed node can hold a hand-written child without breaking the terminal rule
        failed = runner.tree[path[1]]
        failed["status"], failed["reward"] = "failed", None
        child = await runner.add_human(failed["id"], "You are fair; answer with the letter.")
        assert child["reward"] is not None
        failed["status"], failed["reward"] = "expanded", 0.5
        runner.method.view(runner.ctx)  # the workbench's view still builds
        # the person prunes the trajectory's end: the rollout stops without expanding it
        await runner.prune(path[1])
        before = dict(runner.gateway.totals()["calls"])
        await runner.step()
        assert runner.gateway.totals()["calls"] == before
        assert runner.method.state["stage"] == "backprop" and runner.method.state["path"] == path[:1]
        await runner.run()
    asyncio.run(go())
    assert runner.summary()["status"] == "done"
    store.close()


def test_regenerate_shows_training_failures_not_validation_answers(tmp_path, vapo_server, fake_key):
    runner, store = _runner(tmp_path, vapo_server, search={"iterations": 1, "depth_limit": 1})

    async def go():
        await runner.run()
        root_id = runner.method.state["root"]
        child = await runner.regenerate(root_id)
        shown = set(child["detail"]["action"]["failed"])
        validation = set(runner.method.state["split"]["validation"])
        assert not shown & validation
    asyncio.run(go())
    store.close()
