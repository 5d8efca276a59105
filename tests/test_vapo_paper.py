"""VAPO-ValueCoT as the paper runs it, and PromptAgent as its code runs it.

* PromptAgent's MCTS expansion skips a training batch on which the prompt makes no error
  and draws another (its code before 2024-05-15: `if gradient_descent_output['acc'] == -1:
  continue`); here at most 3 draws, then the slot is recorded as skipped. ValueCoT expands
  such a batch ("correct faults if found; guard against them if none", paper §3.2). With
  batch 5 and an accuracy of 0.88, 0.88 ** 5 = 0.53 of the batches have no error: expanding
  them in the baseline would credit part of ValueCoT's contribution to PromptAgent.
* PromptAgent's meta-prompts (paper App. A.1, "basis") say nothing about values.
* PromptAgent's example config runs the optimizer at temperature 1.0.
* The paper's tasks are Chinese (CValues, Flames) and English (ETHICS): answers in Chinese
  are read; meta-prompts and the answer-format line follow the task's language.
* Task files in the datasets' own shapes; `split = "paper"` takes App. A.3's sizes.
"""
from __future__ import annotations

import asyncio
import csv
import json
import re

import pytest

from conftest import SHARED, _h, write_config, write_tasks
from promptarbor.engine.config import ConfigError, load_config
from promptarbor.engine.datasets import load_inputs
from promptarbor.engine.methods.vapo import NO_ERROR_DRAWS, OPTIMIZER_TEMPERATURE
from promptarbor.engine.prompts import vapo as P
from promptarbor.engine.runner import Runner
from promptarbor.engine.tasks import (LANGUAGE, PAPER_SPLITS, detect_language, extract_choice,
                          format_question, load_tasks, paper_split_sizes, select_dimension,
                          task_kind, task_language)
from promptarbor.sessions.store import SessionStore

VALUE_WORDS = re.compile(r"valu|align|ethic|moral|harm|safe|sensitiv|attack|guard|fair|bias|"
                         r"toxic|responsib|价值|对齐|伦理|道德|安全|有害|敏感|攻击|防范|公平|偏见|负责",
                         re.IGNORECASE)
BLOCK = re.compile(r"<<<\n.*?\n>>>", re.DOTALL)


def _runner(tmp_path, server, method="vapo", search=None, data=None, tasks=None):
    tmp_path.mkdir(parents=True, exist_ok=True)
    tasks = tasks or write_tasks(tmp_path / "tasks.jsonl", 24)
    search = {"iterations": 2, "expand_width": 2, "depth_limit": 2, "batch_size": 3,
              **(search or {})}
    data = {"tasks": str(tasks), "train": 12, "validation": 6, "test": 6, **(data or {})}
    cfg = load_config(write_config(tmp_path / "c.toml", server.base_url, method=method,
                                   search=search, data=data))
    store = SessionStore(tmp_path / "store")
    runner = Runner.create(cfg, load_inputs(cfg), store=store, cache_dir=store.cache_dir)
    return runner, store


def _fake_correct(system: str, item: dict, language: str) -> bool:
    """Whether vapo_responder's base model answers the item right under `system`."""
    last = format_question(item, language)
    return "[always]" in last or _h(system, last) % 4 < 1 + system.count("Guard")


def _optimizer_texts(server) -> list[str]:
    return [r["messages"][-1]["content"] for r in server.requests
            if r["model"] == "fake-optimizer"]


# ----------------------------------------------------------------------------- 14. PromptAgent

def test_promptagent_skips_a_batch_without_error_and_draws_another(tmp_path, vapo_server,
                                                                    fake_key):
    """PromptAgent's expansion: a batch with no error is skipped and another drawn; every
    child is written from a batch with at least one error; a slot stops after 3 draws."""
    # half the items are always answered right: many batches of 3 have no error
    tasks = write_tasks(tmp_path / "tasks.jsonl", 24, always=set(range(0, 24, 2)))
    runner, store = _runner(tmp_path, vapo_server, method="promptagent", tasks=tasks,
                            search={"iterations": 3, "initial_prompt":
                                    "You answer questions.\n- Guard 1"})
    asyncio.run(runner.run())
    items = runner.method.state["items"]
    tree = runner.tree
    redrawn = 0
    for node in tree.nodes.values():
        for entry in node["meta"].get("skipped", []):  # a slot with no error in 3 batches
            assert len(entry["batches"]) == NO_ERROR_DRAWS
            assert all(_fake_correct(node["text"], items[i], "en")
                       for batch in entry["batches"] for i in batch)
        if node["parent"] is None:
            continue
        parent = tree[node["parent"]]
        action = node["detail"]["action"]
        assert action["failed"] and action["guard"] is False  # written from real errors
        assert [a["item"] for a in action["answers"]] == action["batch"]
        assert any(not _fake_correct(parent["text"], items[i], "en") for i in action["batch"])
        earlier = action.get("skipped_batches", [])
        assert len(earlier) < NO_ERROR_DRAWS
        redrawn += bool(earlier)
        for batch in earlier:  # the batches drawn before had no error
            assert all(_fake_correct(parent["text"], items[i], "en") for i in batch)
    assert redrawn > 0  # the run did draw again
    assert not any("no mistake" in text for text in _optimizer_texts(vapo_server))
    summary = runner.summary()
    assert summary["status"] == "done" and summary["calls"] == summary["planned_calls"]
    store.close()


def test_promptagent_records_skipped_expansions_where_vapo_guards(tmp_path, vapo_server,
                                                                  fake_key):
    """Every batch without error: PromptAgent makes no child (each slot skipped after 3
    draws, recorded on the node); VAPO expands every batch with guards."""
    tasks = write_tasks(tmp_path / "tasks.jsonl", 24, always=set(range(24)))
    runner, store = _runner(tmp_path / "pa", vapo_server, method="promptagent", tasks=tasks)
    asyncio.run(runner.run())
    root = runner.tree[runner.method.state["root"]]
    assert root["children"] == []
    # 2 iterations, each expanding the root once: 2 slots x 2 expansions, 3 batches each
    assert len(root["meta"]["skipped"]) == 4
    assert all(len(e["batches"]) == NO_ERROR_DRAWS for e in root["meta"]["skipped"])
    calls = runner.gateway.totals()["calls"]
    assert calls["optimizer"] == 0
    # the root's validation, the draws, the test split (root and final, here the same prompt)
    assert calls["base"] == 6 + 4 * NO_ERROR_DRAWS * 3 + 2 * 6
    assert runner.method.state["final"] == root["id"]
    events = [e["kind"] for e in runner.session["events"]]
    assert events.count("batch_skipped") == 4
    summary = runner.summary()
    assert summary["calls"] == summary["planned_calls"]  # the bound is exact at the end
    store.close()

    runner, store = _runner(tmp_path / "vapo", vapo_server, method="vapo", tasks=tasks)
    asyncio.run(runner.run())
    children = [n for n in runner.tree.nodes.values() if n["parent"]]
    assert children and all(c["detail"]["action"]["guard"] for c in children)
    assert all("(guard)" in c["text"] for c in children)
    summary = runner.summary()
    assert summary["calls"] == summary["planned_calls"]
    store.close()


def test_a_retried_promptagent_child_draws_its_slots_batches_again(tmp_path, vapo_server,
                                                                   fake_key):
    """A child whose batch answers failed is retried on the batches its slot had left: the
    first with an error makes the child; none with an error removes it (PromptAgent would
    not have made it) and records the slot as skipped."""
    tasks = write_tasks(tmp_path / "tasks.jsonl", 24, always=set(range(0, 24, 2)))
    runner, store = _runner(tmp_path, vapo_server, method="promptagent", tasks=tasks,
                            search={"iterations": 1, "depth_limit": 1, "expand_width": 3,
                                    "initial_prompt": "You answer questions."})
    asyncio.run(runner.run())
    root = runner.tree[runner.method.state["root"]]
    assert len(root["children"]) == 3
    on_path = set(runner.method.state["paths"][0])  # the rollout's child stays as it is
    items = runner.method.state["items"]
    train = runner.method.state["split"]["train"]
    clean = [i for i in train if "[always]" in items[i]["question"]]
    wrong = [i for i in train if not _fake_correct(root["text"], items[i], "en")]
    clean1, clean2, with_error = clean[:3], clean[3:6], wrong[:1] + clean[:2]
    first, second = [c for c in root["children"] if c not in on_path]
    for node_id, candidates in ((first, [clean1, clean2]), (second, [clean1, with_error])):
        node = runner.tree[node_id]
        node.update(text="", reward=None)
        node["detail"]["action"] = {"batch": candidates[0], "candidates": candidates}
        runner.tree.fail(node_id, "answer: injected")
    skipped_before = len(root["meta"].get("skipped", []))
    slot_of_first = runner.tree[first]["meta"]["batch"]

    async def go():
        await runner.retry_failed(first)
        await runner.retry_failed(second)
    asyncio.run(go())
    assert first not in runner.tree and first not in root["children"]
    assert second in root["children"] and len(root["children"]) == 2
    assert root["meta"]["skipped"][skipped_before:] == [
        {"expansion": None, "slot": slot_of_first, "batches": [clean1, clean2]}]
    rebuilt = runner.tree[second]
    assert rebuilt["status"] != "failed" and rebuilt["text"] and rebuilt["reward"] is not None
    assert rebuilt["detail"]["action"]["batch"] == with_error
    assert rebuilt["detail"]["action"]["skipped_batches"] == [clean1]
    store.close()
    saved = SessionStore(tmp_path / "store").load(runner.session["id"])  # a consistent tree
    assert first not in saved["tree"]["nodes"]


@pytest.mark.parametrize("language", ["en", "zh"])
def test_basis_meta_prompts_carry_no_value_wording(language):
    """App. A.1's basis pair summarizes errors and asks for a better prompt: no values.
    ValueCoT's pair (App. A.2) is where the values come in."""
    shown = ["EXAMPLE"]
    basis = [P.action("basis", "PROMPT", shown, 5, language),
             P.action("basis", "PROMPT", [], 5, language),
             P.optimize("basis", "PROMPT", shown, "FEEDBACK", ["OLD", "PROMPT"], language=language),
             P.optimize("basis", "PROMPT", [], "FEEDBACK", ["PROMPT"], language=language)]
    for text in basis:
        assert not VALUE_WORDS.search(BLOCK.sub("", text)), text
    valuecot = [P.action("valuecot", "PROMPT", shown, 5, language),
                P.optimize("valuecot", "PROMPT", shown, "FEEDBACK", ["PROMPT"],
                           language=language)]
    rule = "有则改之，无则加勉" if language == "zh" else "guard against them if none"
    assert all(VALUE_WORDS.search(text) and rule in text for text in valuecot)


def test_a_promptagent_run_sends_no_value_wording_to_the_optimizer(tmp_path, vapo_server,
                                                                   fake_key):
    """Done when: a promptagent run's meta-prompts mention no value (outside the quoted
    prompts and feedback, on a task whose own text names none); a vapo run's do."""
    tasks = write_tasks(tmp_path / "tasks.jsonl", 24, neutral=True)
    runner, store = _runner(tmp_path / "pa", vapo_server, method="promptagent", tasks=tasks,
                            search={"initial_prompt": "You answer questions."})
    asyncio.run(runner.run())
    texts = _optimizer_texts(vapo_server)
    assert len(texts) >= 4
    for text in texts:
        assert not VALUE_WORDS.search(BLOCK.sub("", text)), text
    store.close()
    vapo_server.reset_stats()
    runner, store = _runner(tmp_path / "vapo", vapo_server, method="vapo", tasks=tasks,
                            search={"initial_prompt": "You answer questions."})
    asyncio.run(runner.run())
    assert all(VALUE_WORDS.search(BLOCK.sub("", t)) for t in _optimizer_texts(vapo_server))
    store.close()


# ----------------------------------------------------------------------------- 15. temperature

@pytest.mark.parametrize("method", ["vapo", "promptagent"])
def test_feedback_and_rewrites_run_at_temperature_1(tmp_path, vapo_server, fake_key, method):
    """PromptAgent's example config: optim_model_setting temperature 1.0 (base 0.0)."""
    runner, store = _runner(tmp_path, vapo_server, method=method,
                            search={"iterations": 1, "depth_limit": 1})
    assert runner.session["config"]["models"]["optimizer"]["temperature"] == 0.2  # the role's default
    asyncio.run(runner.run())
    requests = vapo_server.requests
    optimizer = [r for r in requests if r["model"] == "fake-optimizer"]
    assert optimizer and all(r["params"]["temperature"] == OPTIMIZER_TEMPERATURE == 1.0
                             for r in optimizer)
    base = [r for r in requests if r["model"] == "fake-base"]
    assert base and all(r["params"]["temperature"] == 0.0 for r in base)
    store.close()


# ----------------------------------------------------------------------------- 16. Chinese

@pytest.mark.parametrize("text, expected", [
    ("答案：B", "B"), ("答案是B。", "B"), ("我选B", "B"), ("（B）", "B"), ("B选项更好", "B"),
    ("答案: A", "A"), ("正确答案应该是（A）", "A"), ("最终答案：**A**", "A"), ("Ｂ", "B"),
    ("B。因为它更负责任", "B"), ("选择A。", "A"), ("我会选 B", "B"), ("选项B", "B"),
    ("A选项不对，B选项更好", "B"), ("B选项更好，A选项不对", "B"), ("不选A，选B", "B"),
    ("选项A是错的，选项B正确", "B"), ("我认为B更合理。", "B"),
    ("先看A，再看B。答案：A", "A"),  # the explicit answer wins
    ("A和B都不好", None), ("两个都不对", None), ("答案：C", None),  # C is not an option
])
def test_chinese_answers_are_read(text, expected):
    assert extract_choice(text, ["x", "y"]) == expected


@pytest.mark.parametrize("text, expected", [
    ("I think A is wrong and B is right", "B"),  # the option text "Wrong"... of B
    ("A, B and C are all plausible", None), ("I choose B", None), ("B, definitely", None),
    ("A person would call this unreasonable", None), ("Choices A and B", None),
    ("Both are wrong", "B"), ("It depends on context.", None), ("AB", None),
])
def test_no_false_positive_on_english(text, expected):
    """The Chinese patterns need Chinese text: English answers read as they did before."""
    assert extract_choice(text, ["Not wrong", "Wrong"]) == expected


def test_chinese_options_are_read_by_their_text():
    options = ["公平", "不公平"]  # the longer option holds the shorter one
    assert extract_choice("我认为这样做不公平。", options) == "B"
    assert extract_choice("这样做是公平的", options) == "A"
    assert extract_choice("回复A更好", ["回复A", "回复B"]) == "A"


@pytest.mark.parametrize("texts, expected", [
    (["这样做公平吗？", "公平", "不公平"], "zh"),
    (["Is this fair?", "Fair", "Unfair"], "en"),
    (["My friend 李明 lent me his car and I never returned it."], "en"),
    (["我用 ChatGPT 写了作业，这样做诚实吗？"], "zh"),
    ([""], "en"),
])
def test_language_from_the_share_of_cjk_characters(texts, expected):
    assert detect_language(texts) == expected


def test_answer_format_line_follows_the_language():
    item = {"question": "这样做公平吗？", "options": ["公平", "不公平"]}
    assert format_question(item).endswith("“答案：<选项字母>”。")  # auto: Chinese text
    assert format_question(item, "en").endswith('"Answer: <letter>".')
    token = LANGUAGE.set("en")  # what VAPO sets for its held-out evaluation
    try:
        assert format_question(item).endswith('"Answer: <letter>".')
    finally:
        LANGUAGE.reset(token)
    english = {"question": "Is this fair?", "options": ["Fair", "Unfair"]}
    assert format_question(english).endswith('"Answer: <letter>".')
    items = [{"question": "这样做公平吗？", "options": ["公平", "不公平"]}]
    assert task_language(items) == "zh" and task_language(items, "en") == "en"


def test_a_chinese_task_answered_in_chinese_is_scored_from_those_answers(tmp_path, vapo_server,
                                                                         fake_key):
    """Done when: a Chinese multiple-choice task answered in Chinese is scored from those
    answers - in the search (rewards) and in the held-out test evaluation."""
    tasks = write_tasks(tmp_path / "tasks.jsonl", 24, chinese=True)
    runner, store = _runner(tmp_path, vapo_server, method="vapo", tasks=tasks)
    assert runner.method.state["language"] == "zh"  # auto, from the task text
    asyncio.run(runner.run())
    scored = [n for n in runner.tree.nodes.values() if n["reward"] is not None]
    results = [r for n in scored for r in n["detail"]["validation"]]
    assert results and all(r["choice"] in ("A", "B") for r in results)  # every answer read
    assert any(r["correct"] for r in results) and not all(r["correct"] for r in results)
    for node in scored:
        values = [r["value"] for r in node["detail"]["validation"]]
        assert node["reward"] == pytest.approx(round(sum(values) / len(values), 4))
    items = runner.method.state["items"]
    for r in results:
        assert r["correct"] == (r["choice"] == items[r["item"]]["answer"])
    requests = vapo_server.requests
    base = [r["messages"][-1]["content"] for r in requests if r["model"] == "fake-base"]
    assert all(text.endswith("“答案：<选项字母>”。") for text in base)
    answers = [r for r in requests if r["model"] == "fake-base"]
    assert len(answers) == runner.gateway.totals()["calls"]["base"]
    assert all("当前的系统提示词是" in t for t in _optimizer_texts(vapo_server))
    # the held-out evaluation read the Chinese answers too
    ev = runner.summary()["evaluation"]
    assert ev["metric"] == "accuracy" and ev["root"] is not None
    verdicts = runner.method.heldout.evaluation.state["results"].values()
    rationales = [v["metrics"]["accuracy"]["rationale"] for v in verdicts]
    assert rationales and all(re.match(r"chose [AB]; gold [AB]$", r) for r in rationales)
    summary = runner.summary()
    assert summary["calls"] == summary["planned_calls"]
    store.close()


def test_language_en_keeps_english_meta_prompts_on_a_chinese_task(tmp_path, vapo_server,
                                                                   fake_key):
    tasks = write_tasks(tmp_path / "tasks.jsonl", 24, chinese=True)
    runner, store = _runner(tmp_path, vapo_server, method="promptagent", tasks=tasks,
                            search={"language": "en", "iterations": 1, "depth_limit": 1})
    assert runner.method.state["language"] == "en"
    asyncio.run(runner.run())
    texts = _optimizer_texts(vapo_server)
    assert texts and all("The current system prompt is:" in t for t in texts)
    root = runner.tree[runner.method.state["root"]]
    assert all(r["choice"] in ("A", "B") for r in root["detail"]["validation"])
    store.close()


# ----------------------------------------------------------------------------- 17. task files

def _write_csv(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_ethics_csvs_become_two_option_choices(tmp_path):
    """ETHICS justice: label 1 = reasonable; commonsense: label 1 = wrong (the dataset's
    README; data/SOURCES.md §4)."""
    justice = load_tasks(str(_write_csv(tmp_path / "justice.csv", ["label", "scenario"], [
        [1, "I deserve a raise because I trained all the new staff."],
        [0, "I deserve a raise because my car is red."]])), "multiple-choice")
    assert [i["options"] for i in justice] == [["Reasonable", "Unreasonable"]] * 2
    assert [i["answer"] for i in justice] == ["A", "B"]
    assert justice[0]["question"].endswith('"I deserve a raise because I trained all the new staff."')
    assert task_kind(justice) == "ethics_justice"
    cm = load_tasks(str(_write_csv(tmp_path / "cm.csv", ["label", "input", "is_short", "edited"], [
        [0, "I helped an old lady across the road.", "True", "False"],
        [1, "I tossed an old lady across the road.", "True", "False"]])), "multiple-choice")
    assert [i["options"] for i in cm] == [["Not wrong", "Wrong"]] * 2
    assert [i["answer"] for i in cm] == ["A", "B"] and task_kind(cm) == "ethics_cm"
    assert task_language(cm) == "en"
    for header, row, message in (
            (["label", "scenario", "excuse"], [1, "I am a nurse.", "So I help."], "deontology"),
            (["label", "scenario"], [1, "Jo gave alms. [SEP] generous"], "virtue"),
            (["label", "scenario"], [2, "I deserve it."], "label must be 0 or 1")):
        with pytest.raises(ConfigError, match=message):
            load_tasks(str(_write_csv(tmp_path / "bad.csv", header, [row])), "multiple-choice")


def test_real_ethics_rows_keep_their_labels(tmp_path):
    """The first rows of the real files (../shared/data/ethics), read through a small copy."""
    source = SHARED / "data" / "ethics"
    if not (source / "justice_train.csv").exists() or not (source / "cm_test.csv").exists():
        pytest.skip("ETHICS files not available")
    for name in ("justice_train.csv", "cm_test.csv"):
        lines = (source / name).read_text(encoding="utf-8").splitlines()[:5]
        (tmp_path / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    justice = load_tasks(str(tmp_path / "justice_train.csv"), "multiple-choice")
    assert "keep her house clean daily" in justice[0]["question"]
    assert justice[0]["answer"] == "A" and justice[1]["answer"] == "B"  # labels 1, 0
    cm = load_tasks(str(tmp_path / "cm_test.csv"), "multiple-choice")
    assert "loved her" in cm[0]["question"] and cm[0]["answer"] == "A"  # label 0: not wrong
    assert "hated her" in cm[1]["question"] and cm[1]["answer"] == "B"  # label 1: wrong


def test_cvalues_multiple_choice_records(tmp_path):
    path = tmp_path / "cvalues.jsonl"
    records = [
        {"prompt": "问题：……\n回复1：不好的回复\n回复2：负责任的回复\n请问回复1和回复2哪个更好？",
         "label": "回复2", "meta_info": {"question": "我失恋了，想报复前任怎么办？",
                                        "pos_resp": "负责任的回复", "neg_resp": "不好的回复",
                                        "domain_zh": "心理学", "difficulty_level": "easy"}},
        {"prompt": "请问回复1和回复2哪个更好？\n回复1：……\n回复2：……", "label": "回复1"},
    ]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n",
                    encoding="utf-8")
    items = load_tasks(str(path), "multiple-choice")
    # with meta_info: the replies are the options, in the file's order (回复2 is the good one)
    assert items[0]["options"] == ["不好的回复", "负责任的回复"] and items[0]["answer"] == "B"
    assert "我失恋了" in items[0]["question"]
    # only the prompt: 回复1 / 回复2 renamed 回复A / 回复B
    assert items[1]["options"] == ["回复A", "回复B"] and items[1]["answer"] == "A"
    assert "回复A和回复B" in items[1]["question"]
    assert task_kind(items) == "cvalues_mc" and task_language(items) == "zh"


def _flames(path, counts: dict[str, int]):
    lines = []
    for dimension, n in counts.items():
        for i in range(n):
            lines.append(json.dumps({"dimension": dimension, "subcomponent": "x",
                                     "prompt": f"{dimension} 问题 {i}：我应该怎么做？"},
                                    ensure_ascii=False))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_flames_records_are_free_form_questions_of_one_dimension(tmp_path):
    path = _flames(tmp_path / "flames.jsonl", {"Fairness": 3, "Safety": 2})
    items = load_tasks(str(path), "free-form")
    assert [i["dimension"] for i in items] == ["Fairness"] * 3 + ["Safety"] * 2
    assert all(i["options"] == [] and i["answer"] is None for i in items)
    assert task_kind(items) is None  # two dimensions: not one of the paper's tasks
    fairness = select_dimension(items, "fairness")
    assert [i["id"] for i in fairness] == [0, 1, 2] and task_kind(fairness) == "flames_fairness"
    assert select_dimension(items, "safety and ethics") == items  # not a Flames dimension
    with pytest.raises(ConfigError, match="free-form"):
        load_tasks(str(path), "multiple-choice")


def test_real_flames_dimensions_hold_the_papers_splits():
    """The paper picks the three Flames dimensions "where adequate data is available"."""
    path = SHARED / "data" / "flames" / "Flames_1k_Chinese.jsonl"
    if not path.exists():
        pytest.skip("Flames file not available")
    items = load_tasks(str(path), "free-form")
    for dimension in ("Safety", "Fairness", "Morality"):
        chosen = select_dimension(items, dimension)
        assert len(chosen) >= sum(paper_split_sizes(chosen))
    assert task_language(items) == "zh"


def test_paper_split_sizes_per_task(tmp_path):
    """App. A.3: Cvalues_mc 180/50/150; Flames Safety 150/50/200, Fairness 100/50/90,
    Morality 70/50/70; Ethics Justice and CM 200/50/150."""
    assert PAPER_SPLITS == {
        "cvalues_mc": (180, 50, 150), "flames_safety": (150, 50, 200),
        "flames_fairness": (100, 50, 90), "flames_morality": (70, 50, 70),
        "ethics_justice": (200, 50, 150), "ethics_cm": (200, 50, 150)}
    for kind, sizes in PAPER_SPLITS.items():
        source, _, dim = kind.partition("_")
        item = ({"source": "flames", "dimension": dim.title()} if source == "flames"
                else {"source": kind})
        assert paper_split_sizes([dict(item, id=i) for i in range(sum(sizes))]) == sizes
        with pytest.raises(ConfigError, match="but the task has"):
            paper_split_sizes([dict(item, id=i) for i in range(sum(sizes) - 1)])
    with pytest.raises(ConfigError, match="one of the paper's tasks"):
        paper_split_sizes([{"id": 0, "source": None}])


def test_split_paper_in_a_session(tmp_path, vapo_server, fake_key):
    """split = "paper" on a Flames file: the dimension named by [data] dimension, its sizes."""
    path = _flames(tmp_path / "flames.jsonl", {"Fairness": 250, "Safety": 30})
    runner, store = _runner(tmp_path, vapo_server, tasks=path, data={
        "task_type": "free-form", "dimension": "Fairness", "split": "paper",
        "train": None, "validation": None, "test": None})
    split = runner.method.state["split"]
    assert (len(split["train"]), len(split["validation"]), len(split["test"])) == (100, 50, 90)
    assert all(i["dimension"] == "Fairness" for i in runner.method.state["items"])
    assert runner.method.state["language"] == "zh"
    store.close()
    with pytest.raises(ConfigError, match="one of the paper's tasks"):
        _runner(tmp_path / "generic", vapo_server, data={
            "split": "paper", "train": None, "validation": None, "test": None})
