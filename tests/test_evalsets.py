"""Eval sets (engine.evalsets): every source format, field detection, seeded limits, the
multiple-choice items of the accuracy judge, the built-in held-out sets, and bad inputs
(one-line ConfigErrors naming the source).

`hf:` sources are read offline: the tests build a Hugging Face datasets cache under tmp_path
laid out as `load_dataset("owner/name")` leaves it after a download, and every socket
connection is refused while they run.
"""
from __future__ import annotations

import csv
import difflib
import json
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from promptarbor.engine.config import ConfigError
from promptarbor.engine.evalsets import load_eval_set
from promptarbor.engine.tasks import load_tasks

DATA = ROOT / "engine" / "data"

RECORDS = [
    {"query": "What is a prime number?", "category": "math", "difficulty": 1},
    {"query": "Write a haiku about rain.", "category": "writing", "difficulty": 2},
    {"query": "How do tides work?", "category": "science", "difficulty": 3},
    {"query": "Plan a picnic for six.", "category": "planning", "difficulty": 1},
]


def one_line(message: str) -> bool:
    return bool(message) and "\n" not in message and "\r" not in message


def error(source, **kw) -> str:
    kw.setdefault("judge", "aspects")
    with pytest.raises(ConfigError) as info:
        load_eval_set(str(source) if source is not None else None, **kw)
    message = str(info.value)
    assert one_line(message), message
    return message


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def write_csv(path: Path, records, columns=None) -> Path:
    columns = columns or list(records[0])
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, quoting=csv.QUOTE_MINIMAL)
        writer.writeheader()
        writer.writerows(records)
    return path


def write_parquet(path: Path, records) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(records), str(path))
    return path


# ----------------------------------------------------------------------------- formats

@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "parquet"])
def test_each_file_format_gives_the_same_items(tmp_path, fmt):
    path = tmp_path / f"set.{fmt}"
    if fmt == "jsonl":
        write_jsonl(path, RECORDS)
    elif fmt == "json":
        path.write_text(json.dumps(RECORDS), encoding="utf-8")
    elif fmt == "csv":
        write_csv(path, RECORDS)
    else:
        write_parquet(path, RECORDS)
    result = load_eval_set(str(path), judge="aspects")
    assert result["source"] == str(path)
    assert result["n_total"] == 4
    assert result["query_field"] == "query" and result["category_field"] == "category"
    assert [i["id"] for i in result["items"]] == ["i0", "i1", "i2", "i3"]
    assert [i["query"] for i in result["items"]] == [r["query"] for r in RECORDS]
    assert [i["categories"] for i in result["items"]] == [[r["category"]] for r in RECORDS]
    first = result["items"][0]
    assert first["options"] is None and first["answer"] is None and first["reference"] is None
    assert first["fields"] == {"difficulty": "1" if fmt == "csv" else 1}
    json.dumps(result, allow_nan=False)  # storable as it is


def test_csv_with_a_quoted_multi_line_field(tmp_path):
    path = tmp_path / "set.csv"
    path.write_text('Prompt,Domain,notes\n'
                    '"First line, with a comma\nsecond line\n""quoted"" third",legal,x\n'
                    'Short one,medical,\n', encoding="utf-8")
    result = load_eval_set(str(path), judge="rubric")
    assert result["query_field"] == "prompt" and result["category_field"] == "domain"
    assert result["items"][0]["query"] == 'First line, with a comma\nsecond line\n"quoted" third'
    assert result["items"][1]["categories"] == ["medical"]
    assert result["items"][0]["fields"] == {"notes": "x"}


def test_txt_and_plain_string_items_are_queries(tmp_path):
    txt = tmp_path / "q.txt"
    txt.write_text("one?\n\n  two?  \n", encoding="utf-8")
    result = load_eval_set(str(txt), judge="pairwise")
    assert [(i["id"], i["query"], i["categories"]) for i in result["items"]] == \
        [("i0", "one?", []), ("i1", "two?", [])]
    strings = tmp_path / "q.json"
    strings.write_text(json.dumps(["a?", {"query": "b?", "type": "t"}]), encoding="utf-8")
    items = load_eval_set(str(strings), judge="aspects")["items"]
    assert [(i["query"], i["categories"]) for i in items] == [("a?", []), ("b?", ["t"])]


def test_parquet_nan_and_non_scalar_values_stay_json_safe(tmp_path):
    path = write_parquet(tmp_path / "s.parquet", [
        {"instruction": "q1", "score": float("nan"), "tags": ["a", "b"], "meta": {"k": 1}},
        {"instruction": "q2", "score": 0.5, "tags": ["c"], "meta": {"k": 2}},
    ])
    result = load_eval_set(str(path), judge="aspects", category_field="tags")
    assert [i["categories"] for i in result["items"]] == [["a", "b"], ["c"]]
    assert [i["fields"] for i in result["items"]] == [{"score": None}, {"score": 0.5}]
    json.dumps(result, allow_nan=False)


# ----------------------------------------------------------------------------- fields

@pytest.mark.parametrize("keys, expected", [
    (["input", "question", "prompt", "instruction", "query"], "query"),
    (["input", "question", "prompt", "instruction"], "instruction"),
    (["input", "question", "prompt"], "prompt"),
    (["input", "question"], "question"),
    (["input", "text"], "input"),
    (["Text", "QUESTION"], "QUESTION"),  # case-insensitive; the key as spelled
])
def test_query_field_detection_order(tmp_path, keys, expected):
    record = {k: f"value of {k}" for k in keys}
    path = write_jsonl(tmp_path / "s.jsonl", [record])
    result = load_eval_set(str(path), judge="aspects")
    assert result["query_field"] == expected
    assert result["items"][0]["query"] == f"value of {expected}"
    assert expected not in result["items"][0]["fields"]


@pytest.mark.parametrize("keys, expected", [
    (["domain", "type", "dataset", "category"], "category"),
    (["domain", "type", "dataset"], "dataset"),
    (["domain", "type"], "type"),
    (["Domain"], "Domain"),
    (["topic"], None),
])
def test_category_field_detection_order(tmp_path, keys, expected):
    record = {"query": "q", **{k: f"c-{k}" for k in keys}}
    result = load_eval_set(str(write_jsonl(tmp_path / "s.jsonl", [record])), judge="aspects")
    assert result["category_field"] == expected
    assert result["items"][0]["categories"] == ([f"c-{expected}"] if expected else [])


def test_named_fields_present(tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", [
        {"query": "not this", "text": "this one", "category": "no", "group": "g1"}])
    result = load_eval_set(str(path), judge="aspects", query_field="Text", category_field="group")
    assert result["query_field"] == "text" and result["category_field"] == "group"
    item = result["items"][0]
    assert item["query"] == "this one" and item["categories"] == ["g1"]
    assert item["fields"] == {"query": "not this", "category": "no"}


def test_named_fields_missing_list_the_available_ones(tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", [{"query": "q", "kind": "k"}])
    message = error(path, query_field="text")
    assert str(path) in message and "'text'" in message and "'query'" in message \
        and "'kind'" in message
    message = error(path, category_field="group")
    assert str(path) in message and "'group'" in message and "'kind'" in message


def test_list_numeric_and_empty_categories(tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", [
        {"query": "a", "category": ["x", " y ", "x", "", 7]},
        {"query": "b", "category": 3},
        {"query": "c", "category": 2.0},
        {"query": "d", "category": 2.5},
        {"query": "e", "category": ""},
        {"query": "f", "category": []},
        {"query": "g", "category": None},
        {"query": "h"},
    ])
    items = load_eval_set(str(path), judge="aspects")["items"]
    assert [i["categories"] for i in items] == \
        [["x", "y", "7"], ["3"], ["2"], ["2.5"], [], [], [], []]


def test_csv_category_may_be_a_json_list(tmp_path):
    path = write_csv(tmp_path / "s.csv", [{"query": "a", "category": '["x", "y"]'},
                                          {"query": "b", "category": "[plain"}])
    message = error(path)
    assert "s.csv:3" in message and "not valid JSON" in message
    path = write_csv(tmp_path / "t.csv", [{"query": "a", "category": '["x", "y"]'},
                                          {"query": "b", "category": "plain"}])
    items = load_eval_set(str(path), judge="aspects")["items"]
    assert [i["categories"] for i in items] == [["x", "y"], ["plain"]]


def test_reference_text_for_free_form_judges(tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", [
        {"instruction": "q1", "output": "  ref one ", "extra": True},
        {"instruction": "q2", "output": 42},
        {"instruction": "q3", "output": {"text": ["structured"]}},
        {"instruction": "q4"},
    ])
    items = load_eval_set(str(path), judge="rubric")["items"]
    assert [i["reference"] for i in items] == ["ref one", "42", None, None]
    assert items[0]["fields"] == {"extra": True}
    assert all("output" not in i["fields"] for i in items)


# ----------------------------------------------------------------------------- limit, ids

def test_ids_are_indexes_in_the_source(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('\n{"query": "a"}\n\n\n{"query": "b"}\n{"query": "c"}\n', encoding="utf-8")
    items = load_eval_set(str(path), judge="aspects")["items"]
    assert [(i["id"], i["query"]) for i in items] == [("i0", "a"), ("i1", "b"), ("i2", "c")]


def test_limit_is_seeded_stable_and_keeps_file_order(tmp_path):
    records = [{"query": f"question {k}"} for k in range(50)]
    path = str(write_jsonl(tmp_path / "s.jsonl", records))
    a = load_eval_set(path, judge="aspects", limit=10, seed=3)
    b = load_eval_set(path, judge="aspects", limit=10, seed=3)
    c = load_eval_set(path, judge="aspects", limit=10, seed=4)
    assert a == b
    assert a["n_total"] == 50 and len(a["items"]) == 10
    ids = [int(i["id"][1:]) for i in a["items"]]
    assert ids == sorted(ids) and len(set(ids)) == 10
    assert all(i["query"] == f"question {int(i['id'][1:])}" for i in a["items"])
    assert [i["id"] for i in a["items"]] != [i["id"] for i in c["items"]]
    # the same sample as the documented recipe
    import random
    expected = sorted(random.Random("3:eval-limit").sample(range(50), 10))
    assert ids == expected
    full = load_eval_set(path, judge="aspects")
    for limit in (50, 51, 1000):
        assert load_eval_set(path, judge="aspects", limit=limit, seed=9) == full
    assert load_eval_set(path, judge="aspects", limit=None)["items"] == full["items"]


# ----------------------------------------------------------------------------- accuracy

def test_accuracy_items(tmp_path):
    path = write_jsonl(tmp_path / "mc.jsonl", [
        {"question": "Q0", "options": ["yes", "no"], "answer": "B", "category": "c"},
        {"question": "Q1", "options": ["yes", "no"], "answer": "(A)"},
        {"question": "Q2", "options": ["yes", "no"], "answer": "No"},
        {"question": "Q3", "options": ["red", "green", "blue"], "answer": 2, "source": "s"},
        {"question": "Q4", "choices": [1, 2, 3, 4], "answer": "D"},
    ])
    result = load_eval_set(str(path), judge="accuracy")
    assert result["query_field"] == "question"
    items = result["items"]
    assert [i["answer"] for i in items] == ["B", "A", "B", "C", "D"]
    assert items[0]["options"] == ["yes", "no"] and items[0]["categories"] == ["c"]
    assert items[3]["fields"] == {"source": "s"}
    assert items[4]["options"] == ["1", "2", "3", "4"]
    assert all(i["reference"] is None for i in items)


def test_accuracy_from_csv_options(tmp_path):
    path = write_csv(tmp_path / "mc.csv", [
        {"question": "Q0", "options": "Reasonable | Unreasonable", "answer": "Unreasonable"},
        {"question": "Q1", "options": '["x", "y", "z"]', "answer": "C"},
    ])
    items = load_eval_set(str(path), judge="accuracy")["items"]
    assert [(i["options"], i["answer"]) for i in items] == \
        [(["Reasonable", "Unreasonable"], "B"), (["x", "y", "z"], "C")]


@pytest.mark.parametrize("record, words", [
    ({"question": "Q", "answer": "A"}, ["no options"]),
    ({"question": "Q", "options": ["a", "b"]}, ["no answer"]),
    ({"question": "Q", "options": ["a", "b"], "answer": "E"}, ["'E'", "not a letter"]),
    ({"question": "Q", "options": ["a", "b"], "answer": 5}, ["5", "not a letter"]),
    ({"question": "Q", "options": ["a", "b"], "answer": ["A"]}, ["answer must be"]),
    ({"question": "Q", "options": "a, b", "answer": "A"}, ["options must be"]),
    ({"question": "Q", "options": [], "answer": "A"}, ["options must be"]),
    ({"question": "Q", "options": ["a", {"b": 1}], "answer": "A"}, ["option 2"]),
])
def test_bad_accuracy_items_name_the_item(tmp_path, record, words):
    good = {"question": "fine", "options": ["a", "b"], "answer": "A"}
    path = write_jsonl(tmp_path / "mc.jsonl", [good, record])
    message = error(path, judge="accuracy")
    assert "mc.jsonl:2" in message
    for word in words:
        assert word in message, message


def test_accuracy_refuses_plain_string_items(tmp_path):
    path = tmp_path / "mc.json"
    path.write_text(json.dumps(["just a question"]), encoding="utf-8")
    assert "item 1" in error(path, judge="accuracy")


# ----------------------------------------------------------------------------- hf:

@pytest.fixture
def no_network(monkeypatch):
    """Every socket connection fails; the hub libraries are in offline mode."""
    import datasets.config
    import huggingface_hub.constants

    def refuse(*args, **kwargs):
        raise OSError("network access in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def build_hub_cache(cache: Path, repo: str, splits: dict, work: Path) -> None:
    """Lay out `cache` as `load_dataset(repo)` leaves the datasets cache after downloading a
    hub dataset of Parquet files: <owner>___<name>/default/0.0.0/<hash>/<name>-<split>.arrow."""
    from datasets.data_files import DataFilesDict
    from datasets.packaged_modules.parquet.parquet import Parquet

    owner, name = repo.split("/")
    work.mkdir(parents=True, exist_ok=True)
    files = {split: [str(write_parquet(work / f"{split}.parquet", rows))]
             for split, rows in splits.items()}
    builder = Parquet(cache_dir=str(work / "staging"), dataset_name=name,
                      data_files=DataFilesDict.from_patterns(files), hash="0123abcd")
    builder.download_and_prepare()
    target = cache / f"{owner}___{name}" / "default" / "0.0.0" / "0123abcd"
    target.parent.mkdir(parents=True)
    shutil.move(builder.cache_dir, target)


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    cache = root / "datasets"
    test_rows = [{"prompt": f"test prompt {k}", "dataset": ["alpha", "beta"][k % 2],
                  "output": f"reference {k}", "id": k} for k in range(6)]
    train_rows = [{"prompt": "train prompt", "dataset": "alpha", "output": "r", "id": 99}]
    build_hub_cache(cache, "acme/evalbench", {"test": test_rows, "train": train_rows},
                    root / "w1")
    build_hub_cache(cache, "acme/trainonly", {"train": train_rows}, root / "w2")
    build_hub_cache(cache, "acme/devonly", {"validation": train_rows}, root / "w3")
    return cache


def test_hf_source_loads_offline_from_the_cache(hub_cache, no_network, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(hub_cache))
    result = load_eval_set("hf:acme/evalbench", judge="aspects", limit=3, seed=1)
    assert result["source"] == "hf:acme/evalbench"
    assert result["n_total"] == 6 and len(result["items"]) == 3
    assert result["query_field"] == "prompt" and result["category_field"] == "dataset"
    for item in result["items"]:
        k = int(item["id"][1:])
        assert item["query"] == f"test prompt {k}"
        assert item["categories"] == [["alpha", "beta"][k % 2]]
        assert item["reference"] == f"reference {k}" and item["fields"] == {"id": k}
    train = load_eval_set("hf:acme/evalbench:train", judge="aspects")
    assert [i["query"] for i in train["items"]] == ["train prompt"]
    only = load_eval_set("hf:acme/trainonly", judge="aspects")
    assert only["n_total"] == 1


def test_hf_source_through_hf_home(hub_cache, no_network, monkeypatch, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(hub_cache, home / "datasets")
    monkeypatch.delenv("HF_DATASETS_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(home))
    assert load_eval_set("hf:acme/evalbench", judge="aspects")["n_total"] == 6


def test_hf_source_errors(hub_cache, no_network, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(hub_cache))
    message = error("hf:acme/evalbench:validation")
    assert "hf:acme/evalbench:validation" in message and "'validation'" in message \
        and "'test'" in message and "'train'" in message
    message = error("hf:acme/devonly")
    assert "no test or train split" in message and "'validation'" in message
    assert load_eval_set("hf:acme/devonly:validation", judge="aspects")["n_total"] == 1
    message = error("hf:acme/not-cached")
    assert "hf:acme/not-cached" in message and "cache" in message
    for bad in ("hf:", "hf:../../etc", "hf:a/b/c", "hf:acme/evalbench:", "hf:acme/x:te st"):
        assert error(bad).startswith(bad.rstrip())


def test_hf_saved_to_disk_folders(tmp_path, no_network):
    import datasets

    rows = [{"question": f"q{k}", "type": "t"} for k in range(3)]
    single = tmp_path / "single"
    datasets.Dataset.from_list(rows).save_to_disk(str(single))
    several = tmp_path / "several"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[:1]),
                          "test": datasets.Dataset.from_list(rows)}).save_to_disk(str(several))
    for source in (f"hf:{single}", str(single), f"hf:{several}", str(several)):
        result = load_eval_set(source, judge="aspects")
        assert [i["query"] for i in result["items"]] == ["q0", "q1", "q2"], source
        assert result["items"][0]["categories"] == ["t"]
    assert load_eval_set(f"hf:{several}:train", judge="aspects")["n_total"] == 1
    assert "'nope'" in error(f"hf:{several}:nope")


# ----------------------------------------------------------------------------- built-ins

def queries(path: Path) -> list[str]:
    return [json.loads(line)["query"] for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]


def normal(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def near(a: str, b: str) -> bool:
    """The same text once lower-cased and stripped of punctuation, or mostly the same words
    (in order, or as a set)."""
    a, b = normal(a).split(), normal(b).split()
    if a == b or difflib.SequenceMatcher(None, a, b, autojunk=False).ratio() > 0.6:
        return True
    wa, wb = set(a), set(b)
    return len(wa & wb) / len(wa | wb) > 0.5


def test_builtin_aspects_set():
    result = load_eval_set(None, judge="aspects")
    assert result["source"] == "builtin:heldout_aspects" and result["n_total"] == 60
    cats = [c for i in result["items"] for c in i["categories"]]
    assert all(len(i["categories"]) == 1 for i in result["items"])
    assert cats.count("safety") == 20
    regular = {c for c in cats if c != "safety"}
    assert len(regular) >= 6
    assert all(cats.count(c) >= 3 for c in regular)
    for judge in ("rubric", "pairwise"):
        assert load_eval_set(None, judge=judge) == result
    assert load_eval_set("builtin:heldout_aspects", judge="aspects") == result
    assert load_eval_set("", judge="aspects") == result


def test_builtin_values_set():
    result = load_eval_set(None, judge="conformity")
    assert result["source"] == "builtin:heldout_values" and result["n_total"] == 40
    cats = {c for i in result["items"] for c in i["categories"]}
    assert {"fairness", "harm", "honesty", "privacy", "tradition", "autonomy", "care"} <= cats


def test_builtin_files_have_only_query_and_category():
    for name in ("heldout_aspects.jsonl", "heldout_values.jsonl"):
        for line in (DATA / name).read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            assert set(record) == {"query", "category"}
            assert record["query"].strip() == record["query"] and record["category"]


def test_builtin_sets_are_disjoint_from_seed_and_icl_queries_and_each_other():
    seeds = queries(DATA / "seed_queries.jsonl") + queries(DATA / "icl_examples.jsonl")
    held = queries(DATA / "heldout_aspects.jsonl") + queries(DATA / "heldout_values.jsonl")
    clashes = [(h, s) for h in held for s in seeds if near(h, s)]
    assert not clashes, clashes
    inner = [(a, b) for n, a in enumerate(held) for b in held[n + 1:] if near(a, b)]
    assert not inner, inner
    # the check does see near copies
    assert near("How do vaccines train the immune system?",
                "how do vaccines train the immune system")
    assert near("Can you explain what compound interest is, using a simple example?",
                "Could you explain what compound interest is, with a simple example?")
    assert not near(held[0], held[1])


def test_builtin_accuracy_set_is_moral_mc_through_load_tasks():
    result = load_eval_set(None, judge="accuracy")
    tasks = load_tasks(None, "multiple-choice")
    assert result["source"] == "builtin:moral_mc" and result["n_total"] == len(tasks)
    assert result["query_field"] == "question" and result["category_field"] == "category"
    for item, task in zip(result["items"], tasks):
        assert item["id"] == f"i{task['id']}" and item["query"] == task["question"]
        assert item["options"] == task["options"] and item["answer"] == task["answer"]
    assert {c for i in result["items"] for c in i["categories"]} == {"justice", "commonsense"}
    sample = load_eval_set(None, judge="accuracy", limit=5, seed=2)
    assert sample["n_total"] == len(tasks) and len(sample["items"]) == 5
    # the generic reader of the same file agrees with load_tasks
    generic = load_eval_set(str(DATA / "moral_mc.jsonl"), judge="accuracy")
    assert generic["items"] == result["items"]


# ----------------------------------------------------------------------------- bad inputs

@pytest.mark.parametrize("name, content, words", [
    ("a.jsonl", '{"text": "x", "kind": "y"}\n', ["no query field", "'text'", "'kind'"]),
    ("a.jsonl", "", ["empty"]),
    ("a.jsonl", "  \n\n", ["empty"]),
    ("a.json", "[]", ["no items"]),
    ("a.json", '{"query": "x"}', ["expected a list"]),
    ("a.json", '"just text"', ["expected a list"]),
    ("a.jsonl", '{"query": "ok"}\n{"query": 5}\n', ["a.jsonl:2", "query must be a string"]),
    ("a.jsonl", '{"query": "ok"}\n{"query": "   "}\n', ["a.jsonl:2", "empty"]),
    ("a.jsonl", '{"query": "ok"}\n{"other": "x"}\n', ["a.jsonl:2", "missing"]),
    ("a.jsonl", '{"query": "ok"}\n[1, 2]\n', ["a.jsonl:2", "got a list"]),
    ("a.jsonl", '{"query": "ok", "category": {"a": 1}}\n', ["a.jsonl:1", "category must be"]),
    ("a.jsonl", '{"query": "ok", "category": [["a"]]}\n', ["a.jsonl:1", "entry 1"]),
    ("a.jsonl", '{"query": "ok", "category": true}\n', ["a.jsonl:1", "category must be"]),
    ("a.jsonl", '{"query": "ok\\ud800"}\n', ["a.jsonl:1", "surrogate"]),
    ("a.jsonl", '{"query": "ok"\n', ["a.jsonl:1", "not valid JSON"]),
    ("a.csv", "query,category\n", ["no items"]),
    ("a.csv", "name,category\nx,y\n", ["no query field", "'name'"]),
    ("a.parquet", "not parquet at all", ["not a readable Parquet file"]),
])
def test_bad_files_give_one_line_errors_naming_the_file(tmp_path, name, content, words):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    message = error(path)
    assert str(path) in message, message
    for word in words:
        assert word in message, message


def test_bad_arguments_give_one_line_errors(tmp_path):
    good = str(write_jsonl(tmp_path / "g.jsonl", RECORDS))
    assert "judge" in error(good, judge="nonsense")
    for limit in (0, -3, True, "5", 2.5):
        assert "limit" in error(good, limit=limit)
    assert "seed" in error(good, seed="x")
    assert "query_field" in error(good, query_field=3)
    assert "file not found" in error(tmp_path / "missing.jsonl")
    assert "file not found" in error(tmp_path / "missing.parquet")
    assert "directory" in error(tmp_path)
    assert "builtin:nope" in error("builtin:nope")
    with pytest.raises(ConfigError) as info:
        load_eval_set(42, judge="aspects")
    assert one_line(str(info.value))
    control = tmp_path / "bad\x1b[31mname.jsonl"
    message = error(control)
    assert "\x1b" not in message and "file not found" in message


def test_importing_the_module_leaves_the_heavy_libraries_alone():
    code = ("import sys, engine.evalsets\n"
            "heavy = [m for m in ('datasets', 'pyarrow', 'torch', 'litellm') if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "assert not [m for m in sys.modules if m.startswith('tui')]\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
