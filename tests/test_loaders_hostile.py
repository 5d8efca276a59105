"""Data-file loaders against hostile files: only a one-line ConfigError (or a valid result)
may come out of any of them, whatever the bytes.

Loaders: seed queries and ICL examples (engine.datasets), VAPO tasks of both types
(engine.tasks), PICACO prompts and demonstrations (engine.values).
"""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ROOT
from promptarbor.engine.config import ConfigError, validate_config
from promptarbor.engine.datasets import load_icl_examples, load_inputs, load_seed_queries, read_text
from promptarbor.engine.tasks import load_tasks
from promptarbor.engine.values import load_demonstrations, load_picaco_inputs, load_prompts

LOADERS = {
    "seed": load_seed_queries,
    "icl": load_icl_examples,
    "mc": lambda p: load_tasks(p, "multiple-choice"),
    "free": lambda p: load_tasks(p, "free-form"),
    "prompts": lambda p: load_prompts(p, 50),
    "demos": load_demonstrations,
}
SUFFIXES = (".jsonl", ".json", ".csv", ".txt")
FIELDS = ("query", "instruction", "prompt", "question", "response", "answer", "output",
          "options")


def one_line(message: str) -> bool:
    return bool(message) and "\n" not in message and "\r" not in message and \
        all(c.isprintable() for c in message)


def check_result(kind: str, result) -> None:
    """A loader's answer, when it has one, has the documented shape."""
    if kind in ("seed", "prompts"):
        assert result and all(isinstance(q, str) and q and q == q.strip() for q in result)
    elif kind == "icl":
        assert result and all(isinstance(q, str) and q and isinstance(r, str) and r
                              for q, r in result)
    elif kind == "demos":
        assert result and all(isinstance(d["query"], str) and d["query"] and
                              isinstance(d["response"], str) and d["response"] for d in result)
    else:
        assert result
        for item in result:
            assert isinstance(item["question"], str) and item["question"]
            assert isinstance(item["options"], list)
            assert all(isinstance(o, str) and o for o in item["options"])
            if kind == "mc":
                assert item["options"] and item["answer"] in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                assert item["answer"]
            assert item["reference"] is None or isinstance(item["reference"], str)
    # every string can be written out as UTF-8 (no lone surrogate got through)
    json.dumps(result, ensure_ascii=False).encode("utf-8")


def run_all(path: Path, only=None) -> dict:
    """Feed one file to every loader; any exception other than ConfigError fails the test."""
    out = {}
    for kind, loader in LOADERS.items():
        if only and kind not in only:
            continue
        try:
            result = loader(str(path))
        except ConfigError as exc:
            assert one_line(str(exc)), f"{kind}: {str(exc)!r}"
            out[kind] = exc
        else:
            check_result(kind, result)
            out[kind] = result
    return out


def error(loader, path) -> str:
    with pytest.raises(ConfigError) as info:
        loader(str(path))
    message = str(info.value)
    assert one_line(message), repr(message)
    return message


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("hostile")


# ----------------------------------------------------------------------------- properties

@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.binary(max_size=200) | st.binary(max_size=60).map(lambda b: b"\xef\xbb\xbf" + b))
def test_random_bytes_give_a_result_or_one_line(scratch, data):
    for suffix in SUFFIXES:
        path = scratch / f"bytes{suffix}"
        path.write_bytes(data)
        run_all(path)


field_names = st.sampled_from(FIELDS)
scalars = (st.none() | st.booleans() | st.integers() | st.floats()
           | st.text(max_size=12) | field_names | st.sampled_from(["A", "B", "(A)", "a | b"]))
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(field_names | st.text(max_size=6), inner, max_size=5),
    max_leaves=20)
records = st.dictionaries(field_names, json_values, max_size=5)


def write_json_value(path: Path, value, ascii_only: bool) -> None:
    suffix = path.suffix
    dump = lambda v: json.dumps(v, ensure_ascii=ascii_only)  # noqa: E731
    if suffix == ".jsonl":
        items = value if isinstance(value, list) else [value]
        text = "\n".join(dump(v) for v in items) + "\n"
    elif suffix == ".json":
        text = dump(value)
    elif suffix == ".csv":
        rows = value if isinstance(value, list) else [value]
        rows = [r for r in rows if isinstance(r, dict)] or [{"question": dump(value)}]
        header = sorted({k for r in rows for k in r})
        buf = io.StringIO(newline="")
        writer = csv.writer(buf)
        writer.writerow(header)
        for r in rows:
            writer.writerow([v if isinstance(v, str) else dump(v) for v in
                             (r.get(k, "") for k in header)])
        text = buf.getvalue()
    else:
        items = value if isinstance(value, list) else [value]
        text = "\n".join(v if isinstance(v, str) else dump(v) for v in items)
    # a lone surrogate (ensure_ascii=False) is written as the bytes Python would use
    path.write_bytes(text.encode("utf-8", errors="surrogatepass"))


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(value=json_values | st.lists(records, max_size=4) | records, ascii_only=st.booleans())
def test_random_json_gives_a_result_or_one_line(scratch, value, ascii_only):
    for suffix in SUFFIXES:
        path = scratch / f"value{suffix}"
        write_json_value(path, value, ascii_only)
        run_all(path)


# ----------------------------------------------------------------------------- encodings

@pytest.mark.parametrize("suffix", SUFFIXES)
def test_binary_latin1_and_utf16_name_the_byte_and_offset(tmp_path, suffix):
    cases = {
        "binary": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "byte 0x89 at offset 0"),
        "latin1": ('{"query": "café crème"}\n'.encode("latin-1"), "byte 0xe9 at offset 14"),
        "utf16": ('{"query": "hi"}\n'.encode("utf-16"), "byte 0xff at offset 0"),
        "utf16-no-bom": ('{"query": "hi"}\n'.encode("utf-16-le"), "byte 0x00 at offset 1"),
    }
    for name, (data, where) in cases.items():
        path = tmp_path / f"{name}{suffix}"
        path.write_bytes(data)
        for kind, loader in LOADERS.items():
            message = error(loader, path)
            assert message == f"{path}: not UTF-8 text ({where})" + \
                ("; it looks like UTF-16: save it as UTF-8" if "utf16" in name else ""), message


def test_read_text_strips_one_bom_and_counts_offsets_in_the_file(tmp_path):
    path = tmp_path / "q.txt"
    path.write_bytes(b"\xef\xbb\xbfhello\n")
    assert read_text(path) == "hello\n"
    path.write_bytes(b"\xef\xbb\xbfab\xffc")
    with pytest.raises(ConfigError, match=r"q.txt: not UTF-8 text \(byte 0xff at offset 5\)$"):
        read_text(path)
    path.write_bytes("queries \u00e9\n".encode("utf-8")[:-2])  # a cut multi-byte character
    with pytest.raises(ConfigError, match=r"byte 0xc3 at offset 8"):
        read_text(path)


def test_unreadable_files_are_one_line(tmp_path, monkeypatch):
    folder = tmp_path / "data.jsonl"
    folder.mkdir()
    for loader in LOADERS.values():
        assert error(loader, folder) == f"{folder}: is a directory, not a data file"
    assert "file not found" in error(load_seed_queries, tmp_path / "none.jsonl")
    locked = tmp_path / "locked.jsonl"
    locked.write_text('{"query": "x"}\n')
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        locked.chmod(0)
        try:
            assert error(load_seed_queries, locked).endswith("(permission denied)")
        finally:
            locked.chmod(0o644)

    def denied(self):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", denied)
    for loader in LOADERS.values():
        assert error(loader, locked) == f"{locked}: cannot read the file (permission denied)"


def test_empty_files(tmp_path):
    for suffix in SUFFIXES:
        path = tmp_path / f"empty{suffix}"
        path.write_text(" \n\n")
        for loader in LOADERS.values():
            assert error(loader, path) == f"{path}: the file is empty"


# ----------------------------------------------------------------------------- JSON / JSONL

@pytest.mark.parametrize("line,got", [("null", "null"), ("5", "a number"), ("[1,2]", "a list"),
                                      ("true", "a boolean")])
def test_jsonl_non_object_lines_name_the_line(tmp_path, line, got):
    path = tmp_path / "d.jsonl"
    path.write_text('{"query": "q", "response": "r", "question": "q", "options": ["a", "b"], '
                    f'"answer": "A"}}\n\n{line}\n')
    for kind in ("icl", "mc", "free", "demos"):
        message = error(LOADERS[kind], path)
        assert message.startswith(f"{path}:3: expected an object") and message.endswith(got)
    for kind in ("seed", "prompts"):  # a JSON string line is a query; other values are not
        message = error(LOADERS[kind], path)
        assert message.startswith(f"{path}:3: expected a query string") and message.endswith(got)


@pytest.mark.parametrize("body,needle", [
    ("42", "got a number"),
    ('"hello"', "got a string"),
    ("null", "got null"),
    ("true", "got a boolean"),
])
def test_json_scalars_are_refused(tmp_path, body, needle):
    path = tmp_path / "d.json"
    path.write_text(body)
    messages = {kind: error(loader, path) for kind, loader in LOADERS.items()}
    assert messages["seed"] == (f"{path}: expected a list of seed queries (strings, or objects "
                                f"with a query / instruction / prompt / question field), {needle}")
    assert messages["prompts"].startswith(f"{path}: expected a list of prompts")
    assert messages["icl"].startswith(f"{path}: expected a list of ICL examples")
    assert messages["demos"].startswith(f"{path}: expected a list of demonstrations")
    for kind in ("mc", "free"):
        assert messages[kind].startswith(f"{path}: expected a list of task items")
    assert all(m.endswith(needle) for m in messages.values())


def test_seed_string_is_not_split_into_characters(tmp_path):
    path = tmp_path / "seed.json"
    path.write_text('"hello"')
    assert "expected a list of seed queries" in error(load_seed_queries, path)


def test_object_without_the_expected_fields(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('{"a": 5}')
    assert error(load_seed_queries, path) == (
        f"{path}: key 'a': expected a query string or an object with a query / instruction / "
        f"prompt / question field, got a number")
    assert error(load_icl_examples, path) == (
        f"{path}: key 'a': the response must be a string, got a number")
    assert error(LOADERS["mc"], path).endswith("got an object")
    path.write_text('[{"a": 5}]')
    assert error(load_seed_queries, path) == (
        f"{path}: item 1: no query (query or instruction or prompt or question must be a "
        f"non-empty string)")
    assert error(load_icl_examples, path).startswith(f"{path}: item 1: no query")
    assert error(LOADERS["free"], path).startswith(f"{path}: item 1: no question")
    path = tmp_path / "d.jsonl"
    path.write_text('{"query": "q"}\n')
    assert error(load_icl_examples, path).startswith(f"{path}:1: no response (response or answer")


@pytest.mark.parametrize("suffix,body", [
    (".json", "[" * 100_000),
    (".jsonl", "[" * 100_000),
    (".json", '{"a":' * 100_000),
    (".json", "[" * 100_000 + "]" * 100_000),
])
def test_deep_nesting_is_one_line(tmp_path, suffix, body):
    path = tmp_path / f"deep{suffix}"
    path.write_text(body)
    for loader in LOADERS.values():
        assert error(loader, path).endswith("not valid JSON: nested too deeply")


@pytest.mark.parametrize("body,needle", [
    ('[{"query": NaN}]', "NaN is not allowed"),
    ('[{"query": "q", "n": -Infinity}]', "-Infinity is not allowed"),
    ('[{"query": "q", "n": 1e999}]', "the number 1e999 is out of range"),
    ('[{"query": "q", "n": ' + "9" * 5000 + "}]", "a number has more than 1000 digits"),
    ('[{"query": "q"}', "not valid JSON: Expecting ',' delimiter (column 16)"),
    ('[\n{"query": "q"},\n]', "(line 3 column 1)"),
])
def test_json_numbers_and_syntax(tmp_path, body, needle):
    path = tmp_path / "d.json"
    path.write_text(body)
    for loader in LOADERS.values():
        message = error(loader, path)
        assert message.startswith(f"{path}: not valid JSON") and needle in message, message


def test_wrong_types_are_errors_not_str(tmp_path):
    path = tmp_path / "t.jsonl"
    ab = ["a", "b"]
    cases = [
        ({"question": [1], "options": ab, "answer": "A"}, "question must be a string, got a list"),
        ({"question": {"x": 1}, "options": ab, "answer": "A"},
         "question must be a string, got an object"),
        ({"question": 7, "options": ab, "answer": "A"}, "question must be a string, got a number"),
        ({"question": "q", "options": "abc", "answer": "A"},
         "options must be a non-empty list, got a string"),
        ({"question": "q", "options": [], "answer": "A"},
         "options must be a non-empty list, got an empty list"),
        ({"question": "q", "options": {"a": 1}, "answer": "A"},
         "options must be a non-empty list, got an object"),
        ({"question": "q", "options": ["a", ["b"]], "answer": "A"},
         "option 2 must be a string, got a list"),
        ({"question": "q", "options": ["a", None], "answer": "A"},
         "option 2 must be a string, got null"),
        ({"question": "q", "options": ["a", " "], "answer": "A"}, "option 2 is empty"),
        ({"question": "q", "options": ab, "answer": ["A"]},
         "answer must be a letter, an option's text or an option index, got a list"),
        ({"question": "q", "options": ab, "answer": True}, "got a boolean"),
        ({"question": "q", "options": ab}, "no answer (a multiple-choice task needs one)"),
        ({"question": "q", "answer": "A"}, "no options (a multiple-choice task needs them)"),
        ({"question": "q", "options": [str(i) for i in range(27)], "answer": "A"},
         "more than 26 options"),
        ({"question": "\ud800?", "options": ab, "answer": "A"},
         "question holds an unpaired surrogate (\\ud800)"),
    ]
    for record, needle in cases:
        path.write_text(json.dumps(record) + "\n")
        message = error(LOADERS["mc"], path)
        assert message.startswith(f"{path}:1: ") and message.endswith(needle), message
    path.write_text(json.dumps({"question": "q", "answer": {"text": "x"}}) + "\n")
    assert error(LOADERS["free"], path).endswith("got an object")
    icl = tmp_path / "icl.jsonl"
    icl.write_text(json.dumps({"query": "q", "response": ["r"]}) + "\n")
    assert error(load_icl_examples, icl) == f"{icl}:1: response must be a string, got a list"
    icl.write_text(json.dumps({"query": "q", "response": "<START> <END>"}) + "\n")
    assert error(load_icl_examples, icl) == f"{icl}:1: the response is empty"


def test_numbers_as_options_and_index_answers_still_load(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps([
        {"question": "2 + 3?", "options": [4, 5, 6], "answer": 1},
        {"question": "Sky?", "options": ["blue", "green"], "answer": "blue"},
        {"question": "Free?", "answer": 42}]))
    items = load_tasks(str(path), "free-form")
    assert items[0]["options"] == ["4", "5", "6"] and items[0]["answer"] == "B"
    assert items[1]["answer"] == "A" and items[2]["reference"] == "42"


def test_jsonl_keeps_unicode_line_separators_inside_strings(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_bytes(json.dumps({"query": "a\u2028b\x85c"}, ensure_ascii=False).encode() + b"\r\n"
                     + b'"second"\r\n')
    assert load_seed_queries(str(path)) == ["a\u2028b\x85c", "second"]


# ----------------------------------------------------------------------------- CSV

def test_csv_quoted_multiline_field_keeps_its_newline(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('question,options,answer\n"Line one\nline two, with a comma","Yes | No",B\n'
                    '"Second","[""x"", ""y""]",A\n', newline="")
    items = load_tasks(str(path), "multiple-choice")
    assert items[0]["question"] == "Line one\nline two, with a comma"
    assert [i["answer"] for i in items] == ["B", "A"] and items[1]["options"] == ["x", "y"]
    path.write_bytes(b'question,options,answer\r\n"a\r\nb","x|y",A\r\n')
    assert load_tasks(str(path), "multiple-choice")[0]["question"] == "a\r\nb"


def test_csv_with_excel_bom_loads(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes("\ufeffQuestion,Options,Answer\r\nFair?,Yes | No,No\r\n".encode("utf-8"))
    items = load_tasks(str(path), "multiple-choice")
    assert items[0]["question"] == "Fair?" and items[0]["answer"] == "B"


def test_csv_field_over_the_default_size_limit_loads(tmp_path):
    path = tmp_path / "t.csv"
    long = "x" * 200_000
    path.write_text(f'question,options,answer\n"{long}","a | b",A\n')
    assert load_tasks(str(path), "multiple-choice")[0]["question"] == long
    assert load_seed_queries(str(path)) == [long]


def test_malformed_csv_is_one_line(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('question,options,answer\n"unclosed,a | b,A\nmore,a | b,A\n')
    for loader in LOADERS.values():
        message = error(loader, path)
        assert message.startswith(f"{path}:") and "not valid CSV: unexpected end of data" in message
    path.write_text('question,options,answer\n"q"x,a | b,A\n')
    assert "not valid CSV" in error(LOADERS["mc"], path)
    path.write_text("question,options,answer\nIs a, b fine?,a | b,A\n")
    assert error(LOADERS["mc"], path) == (f"{path}:2: the row has 4 fields but the header has 3 "
                                          f"(quote fields that contain commas)")
    path.write_text("prompt,answer\nq,A\n")
    assert error(LOADERS["free"], path) == (f"{path}: the CSV header has no question column "
                                            f"(columns: 'prompt', 'answer')")
    path.write_text('question,options,answer\nq,"[1, [2]",A\n')
    assert error(LOADERS["mc"], path).startswith(f"{path}:2: options: not valid JSON")
    path.write_text('question,options,answer\nq,"' + "[" * 100_000 + '",A\n')
    assert error(LOADERS["mc"], path) == f"{path}:2: options: not valid JSON: nested too deeply"
    path.write_text('question,options,answer\nq,"[""a"", 3, null]",A\n')
    assert error(LOADERS["mc"], path) == f"{path}:2: option 3 must be a string, got null"


def test_csv_for_seeds_and_icl(tmp_path):
    path = tmp_path / "icl.csv"
    path.write_text('query,response\n"How?","<START>Like\nthis.<END>"\n', newline="")
    assert load_icl_examples(str(path)) == [("How?", "Like\nthis.")]
    assert load_seed_queries(str(path)) == ["How?"]


# ----------------------------------------------------------------------------- existing formats

def test_documented_formats_still_load(tmp_path):
    assert len(load_seed_queries(None)) == 30 and len(load_icl_examples(None)) == 16
    assert len(load_tasks(None, "multiple-choice")) == 40
    txt = tmp_path / "q.txt"
    txt.write_text("one\n\n  two  \r\nthree\r")
    assert load_seed_queries(str(txt)) == ["one", "two", "three"]
    assert load_seed_queries(str(txt), 2) == ["one", "two"]
    listing = tmp_path / "q.json"
    listing.write_text(json.dumps(["a", {"prompt": "b"}, {"query": "", "instruction": "c"}, " "]))
    assert load_seed_queries(str(listing)) == ["a", "b", "c"]
    mapping = tmp_path / "icl.json"
    mapping.write_text(json.dumps({"q1": "<START> r1 <END>", "q2": "r2"}))
    assert load_icl_examples(str(mapping)) == [("q1", "r1"), ("q2", "r2")]
    jsonl = tmp_path / "icl.jsonl"
    jsonl.write_text('{"query": "q", "answer": "a", "extra": [1]}\n')
    assert load_icl_examples(str(jsonl)) == [("q", "a")]
    assert load_demonstrations(str(jsonl)) == [{"query": "q", "response": "a"}]
    none = tmp_path / "none.json"
    none.write_text("[]")
    assert error(load_seed_queries, none) == f"{none}: no seed queries"
    assert error(lambda p: load_prompts(p), none) == f"{none}: no prompts"
    assert error(load_demonstrations, none) == f"{none}: no demonstrations"
    assert error(LOADERS["mc"], none) == f"{none}: no task items"


def test_picaco_and_vapo_inputs_from_config(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join(f"prompt {i}" for i in range(10)))
    demos = tmp_path / "d.jsonl"
    demos.write_text('{"query": "q", "response": "r"}\n')
    cfg = validate_config({"method": "picaco", "values": {"composition": "harmlessness"},
                           "search": {"prompts": 4},
                           "data": {"prompts": str(prompts), "demonstrations": str(demos)}})
    inputs = load_picaco_inputs(cfg)
    assert inputs["prompts"] == [f"prompt {i}" for i in range(4)]
    assert inputs["demonstrations"] == [{"query": "q", "response": "r"}]
    demos.write_text("5\n")
    with pytest.raises(ConfigError, match=r"d.jsonl:1: expected an object with query and response"):
        load_inputs(cfg)
    tasks = tmp_path / "t.json"
    tasks.write_text("42")
    cfg = validate_config({"method": "vapo", "data": {"tasks": str(tasks)}})
    with pytest.raises(ConfigError, match="expected a list of task items"):
        load_inputs(cfg)


def test_odd_path_names_stay_on_one_line(tmp_path):
    path = tmp_path / "a\nb\x1b.json"
    path.write_text("42")
    message = error(load_seed_queries, path)
    assert "a\\nb\\x1b.json: expected a list" in message


def test_cli_prints_one_line_and_exits_2(tmp_path):
    seed = tmp_path / "queries.jsonl"
    seed.write_bytes(b'{"query": "ok"}\n\xff\xfe')
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'method = "drpo"\n[data]\nseed = "{seed.name}"\n')
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    proc = subprocess.run([sys.executable, "-m", "promptarbor.tui.cli", "run", str(cfg), "--store",
                           str(tmp_path / "s")], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].endswith(
        "queries.jsonl: not UTF-8 text (byte 0xff at offset 16)"), proc.stderr


def test_a_file_with_too_many_records_is_one_line(tmp_path):
    from promptarbor.engine.datasets import MAX_RECORDS, load_seed_queries

    path = tmp_path / "many.txt"
    path.write_text("".join(f"query {i}\n" for i in range(MAX_RECORDS + 1)), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_seed_queries(str(path))
    assert "at most 100,000" in str(info.value) and "\n" not in str(info.value)
