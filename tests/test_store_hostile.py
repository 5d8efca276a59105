"""The session store against an attacker: hostile ids, hostile files, hostile shapes, a
hostile file system. Everything must end in a one-line StoreError (or a "corrupt" row in
the listing), never a traceback, and nothing outside the store may be created or changed."""
from __future__ import annotations

import asyncio
import copy
import errno
import json
import os
import stat
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import promptarbor.sessions.store as store_mod
from conftest import (FAKE_KEY, FakeLLMServer, drpo_responder, picaco_responder, vapo_responder,
                      write_config, write_tasks)
from promptarbor.sessions.store import (CorruptSession, InvalidSessionId, SessionLocked, SessionNotFound,
                            SessionStore, StoreError, StoreUnavailable, UnsupportedSchema,
                            check_session, summarize)
from test_store import sample_session



def _chmod_blocks_writes() -> bool:
    """False as root (or with CAP_DAC_OVERRIDE), where a read-only folder is still written."""
    if os.name != "posix":
        return False
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o555)
        try:
            Path(d, "probe").touch()
        except PermissionError:
            return True
        finally:
            os.chmod(d, 0o755)
    return False


CHMOD_BLOCKS_WRITES = _chmod_blocks_writes()
SID = "abc123"


# --------------------------------------------------------------------------- helpers

def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert text and "\n" not in text and "\r" not in text, repr(text)
    assert "Traceback" not in text
    return text


def tree_state(root: Path) -> dict:
    """Every path under `root` with its bytes (files) and mtime: to prove nothing changed."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            info = os.lstat(p)
            content = p.read_bytes() if stat.S_ISREG(info.st_mode) else None
            out[str(p.relative_to(root))] = (content, info.st_mtime_ns, stat.S_IFMT(info.st_mode))
    return out


def saved_store(tmp_path, session=None) -> tuple[Path, Path]:
    """A store holding one saved session (lock released); returns (store dir, file)."""
    root = tmp_path / "S"
    store = SessionStore(root)
    store.save(session or sample_session(SID))
    store.close()
    return root, root / "sessions" / f"{SID}.json"


def asides(root: Path, sid: str = SID) -> list[Path]:
    return sorted((root / "sessions").glob(f"{sid}.json.corrupt-*"))


def tmp_files(root: Path) -> list[Path]:
    return [p for p in (root / "sessions").iterdir() if p.name.endswith(".tmp")]


@contextmanager
def read_only_fs(monkeypatch, root: Path, code: int = errno.EROFS):
    """Every write under `root` fails as on a read-only file system (works as root too,
    where chmod does not stop writes)."""
    prefix = os.path.abspath(root)

    def inside(path) -> bool:
        try:
            return os.path.abspath(os.fsdecode(path)).startswith(prefix)
        except TypeError:
            return False

    def refuse(path):
        raise OSError(code, os.strerror(code), os.fsdecode(path))

    real = {name: getattr(os, name) for name in ("open", "mkdir", "link", "replace", "rename",
                                                  "unlink", "remove", "rmdir")}
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def fake_open(path, flags, *args, **kwargs):
        if flags & write_flags and inside(path):
            refuse(path)
        return real["open"](path, flags, *args, **kwargs)

    def one_path(name):
        def fake(path, *args, **kwargs):
            if inside(path):
                refuse(path)
            return real[name](path, *args, **kwargs)
        return fake

    def two_paths(name):
        def fake(src, dst, *args, **kwargs):
            if inside(src) or inside(dst):
                refuse(dst)
            return real[name](src, dst, *args, **kwargs)
        return fake

    monkeypatch.setattr(os, "open", fake_open)
    for name in ("mkdir", "unlink", "remove", "rmdir"):
        monkeypatch.setattr(os, name, one_path(name))
    for name in ("link", "replace", "rename"):
        monkeypatch.setattr(os, name, two_paths(name))
    try:
        yield
    finally:
        for name, fn in real.items():
            monkeypatch.setattr(os, name, fn)


# --------------------------------------------------------------------------- session ids

BAD_IDS = ["../../proj/poetry", "../x", "..", ".", "/etc/passwd", "a/b", "a\\b", "", "x" * 65,
           ".hidden", "-rf", "abc\n", "abc\r", "a..b", "nul\x00", " ab", "ab ", "ü", "a:b",
           "a*", None, 42, ["a"]]


def _id_calls(store: SessionStore):
    return {
        "path": store.path, "exists": store.exists, "lock": store.lock, "unlock": store.unlock,
        "delete": store.delete, "load": store.load,
        "load(move_aside=False)": lambda i: store.load(i, move_aside=False),
        "save": lambda i: store.save({**sample_session(), "id": i}),
    }


@pytest.mark.parametrize("bad", BAD_IDS, ids=repr)
def test_bad_ids_are_refused_before_any_file_is_touched(tmp_path, bad):
    (tmp_path / "S").mkdir()
    store = SessionStore(tmp_path / "S")
    before = tree_state(tmp_path)
    for name, call in _id_calls(store).items():
        with pytest.raises(InvalidSessionId) as info:
            call(bad)
        assert "not a valid session id" in one_line(info.value), name
    assert tree_state(tmp_path) == before  # not even the sessions folder was created


def test_dotdot_id_does_not_create_or_truncate_files_outside_the_store(tmp_path):
    """`promptarbor run --session ../../proj/poetry --store S` once truncated proj/poetry.lock."""
    proj = tmp_path / "proj"
    proj.mkdir()
    victim = proj / "poetry.lock"
    victim.write_bytes(b'[[package]]\nname = "tinydb"\n')
    decoy = proj / "poetry.json"  # what load("../../proj/poetry") would have read/moved aside
    decoy.write_bytes(b"not json at all")
    old = 1_600_000_000_000_000_000
    os.utime(victim, ns=(old, old))
    os.utime(decoy, ns=(old, old))
    absolute = str(tmp_path / "abs" / "victim")
    store = SessionStore(tmp_path / "S")
    before = tree_state(tmp_path)
    for session_id in ("../../proj/poetry", absolute, str(victim.with_suffix(""))):
        for name, call in _id_calls(store).items():
            with pytest.raises(StoreError):
                call(session_id)
    assert victim.read_bytes() == b'[[package]]\nname = "tinydb"\n'
    assert victim.stat().st_mtime_ns == old and decoy.stat().st_mtime_ns == old
    assert decoy.read_bytes() == b"not json at all"
    assert not (tmp_path / "abs").exists()
    assert tree_state(tmp_path) == before


@pytest.mark.parametrize("good", ["abc123", "A.b-c_d", "x" * 64, "9", "a.json"])
def test_good_ids_name_a_file_in_the_store(tmp_path, good):
    store = SessionStore(tmp_path)
    assert store.path(good).parent == tmp_path / "sessions"
    assert store.path(good).name == f"{good}.json"
    store.save(sample_session(good))
    assert store.load(good)["id"] == good
    store.close()


# --------------------------------------------------------------------------- the store path

@pytest.mark.parametrize("layout", ["root", "parent", "grandparent", "sessions", "cache"])
def test_a_store_path_that_is_a_file_is_refused_by_the_constructor(tmp_path, layout):
    blocker = tmp_path / "blocker"
    blocker.write_text("I am a file")
    root = {"root": blocker, "parent": blocker / "store", "grandparent": blocker / "a" / "store",
            "sessions": tmp_path / "S", "cache": tmp_path / "S"}[layout]
    if layout in ("sessions", "cache"):
        root.mkdir()
        (root / layout).write_text("I am a file")
    before = tree_state(tmp_path)
    with pytest.raises(StoreUnavailable) as info:
        SessionStore(root)
    assert "is a file, not a folder" in one_line(info.value)
    assert tree_state(tmp_path) == before


@pytest.mark.parametrize("name", ["a\x00b", "x" * 5000, "line\nbreak/\x1b[31m"])
def test_odd_store_paths_fail_in_one_line(tmp_path, name):
    try:
        store = SessionStore(tmp_path / name)
    except StoreUnavailable as exc:
        one_line(exc)
        return
    for call in (store.list, lambda: store.save(sample_session(SID)), lambda: store.load(SID)):
        try:
            call()
        except StoreError as exc:
            one_line(exc)
    store.close()


def test_a_store_path_that_becomes_a_file_fails_every_operation(tmp_path):
    root = tmp_path / "S"
    store = SessionStore(root)  # does not exist yet: fine
    root.write_text("now a file")
    for call in (store.list, lambda: store.load(SID), lambda: store.exists(SID),
                 lambda: store.lock(SID), lambda: store.save(sample_session(SID)),
                 lambda: store.delete(SID), lambda: store.load(SID, move_aside=False)):
        with pytest.raises(StoreUnavailable) as info:
            call()
        assert "is a file, not a folder" in one_line(info.value)
    assert root.read_text() == "now a file"


def test_missing_store_lists_nothing_and_loads_nothing(tmp_path):
    store = SessionStore(tmp_path / "nowhere")
    assert store.list() == []
    assert store.exists(SID) is False
    with pytest.raises(SessionNotFound):
        store.load(SID)
    assert not (tmp_path / "nowhere").exists()


# --------------------------------------------------------------------------- undecodable files

GARBAGE = {
    "random bytes": bytes(range(256)) * 3,
    "not UTF-8": b'{"session": {"1": {"id": "\xff\xfe"}}}',
    "lone continuation byte": b"\x80",
    "empty": b"",
    "whitespace": b"  \n\t",
    "BOM": b'\xef\xbb\xbf{"session": {}}',
    "torn write": b'{"session": {"1": {"id": "abc1',
    "deep nesting": b"[" * 100_000,
    "deep objects": b'{"a":' * 50_000,
    "huge integer": b"1" * 5000,
    "null": b"null",
    "list": b"[1, 2]",
    "string": b'"session"',
    "NaN": b"NaN",
    "UTF-16": '{"session": {}}'.encode("utf-16"),
}


@pytest.mark.parametrize("name", list(GARBAGE))
def test_undecodable_files_are_corrupt_listed_and_moved_only_when_asked(tmp_path, name):
    root, path = saved_store(tmp_path)
    data = GARBAGE[name]
    path.write_bytes(data)
    store = SessionStore(root)

    rows = store.list()
    assert [r["status"] for r in rows] == ["corrupt"] and rows[0]["id"] == SID
    one_line(rows[0]["error"])
    assert isinstance(rows[0]["updated"], float) and path.read_bytes() == data

    with pytest.raises(CorruptSession) as info:
        store.load(SID, move_aside=False)
    assert "left in place" in one_line(info.value) and str(path) in str(info.value)
    assert info.value.aside is None and info.value.path == path
    assert path.read_bytes() == data and asides(root) == []

    with pytest.raises(CorruptSession) as info:
        store.load(SID)
    text = one_line(info.value)
    [aside] = asides(root)
    assert str(aside) in text and info.value.aside == aside
    assert aside.read_bytes() == data and not path.exists()


# --------------------------------------------------------------------------- wrong shapes

def _head(raw):
    return raw["session"]["1"]


def _node(raw, node_id):
    return next(n for n in raw["nodes"].values() if n["id"] == node_id)


def _set(path, value):
    """A mutation setting raw[path...] = value (a missing last key: deleted)."""
    def mutate(raw):
        target = raw
        for key in path[:-1]:
            target = target[key]
        if value is _DELETE:
            del target[path[-1]]
        else:
            target[path[-1]] = value
    return mutate


_DELETE = object()
H = ("session", "1")

SHAPES = {
    "no steps": (_set(H + ("steps",), _DELETE), "'steps' is missing"),
    "steps negative": (_set(H + ("steps",), -1), "'steps'"),
    "steps text": (_set(H + ("steps",), "2"), "'steps' is a string"),
    "steps boolean": (_set(H + ("steps",), True), "'steps' is a boolean"),
    "steps float": (_set(H + ("steps",), 2.5), "'steps'"),
    "method_state a list": (_set(H + ("method_state",), []), "'method_state' is a list"),
    "no method_state": (_set(H + ("method_state",), _DELETE), "'method_state' is missing"),
    "config a list": (_set(H + ("config",), [1]), "'config' is a list"),
    "config without search": (_set(H + ("config", "search"), _DELETE), "'search' is missing"),
    "config without models": (_set(H + ("config", "models"), _DELETE), "'models' is missing"),
    "config without data": (_set(H + ("config", "data"), _DELETE), "'data' is missing"),
    "config without gateway": (_set(H + ("config", "gateway"), _DELETE), "'gateway' is missing"),
    "config without method": (_set(H + ("config", "method"), _DELETE), "'method' is missing"),
    "config without seed": (_set(H + ("config", "random_seed"), _DELETE), "'random_seed'"),
    "a model not an object": (_set(H + ("config", "models", "base"), "gpt"), "model 'base'"),
    "a model without a name": (_set(H + ("config", "models", "base", "model"), _DELETE),
                               "'model' is missing"),
    "final points nowhere": (_set(H + ("method_state", "final"), "n99"), "final node 'n99'"),
    "final a number": (_set(H + ("method_state", "final"), 3), "final node 3"),
    "icl_final points nowhere": (_set(H + ("method_state", "icl_final"), {"0": "n42"}),
                                 "n42"),
    "icl_final bad key": (_set(H + ("method_state", "icl_final"), {"x": "n1"}), "icl_final"),
    "accepted points nowhere": (_set(H + ("accepted",), "n7"), "accepted node 'n7'"),
    "id of another session": (_set(H + ("id",), "other"), "holds session 'other'"),
    "id missing": (_set(H + ("id",), _DELETE), "'id' is missing"),
    "name a number": (_set(H + ("name",), 5), "'name' is a number"),
    "method null": (_set(H + ("method",), None), "'method' is null"),
    "status a list": (_set(H + ("status",), ["paused"]), "'status' is a list"),
    "updated text": (_set(H + ("updated",), "yesterday"), "'updated'"),
    "updated huge": (_set(H + ("updated",), 1e300), "'updated'"),
    "created missing": (_set(H + ("created",), _DELETE), "'created' is missing"),
    "planned_calls a list": (_set(H + ("planned_calls",), [3]), "'planned_calls' is a list"),
    "planned_calls text count": (_set(H + ("planned_calls", "base"), "3"), "planned_calls"),
    "gateway a string": (_set(H + ("gateway",), "x"), "'gateway' is a string"),
    "usage counters text": (_set(H + ("gateway", "usage"), {"base": {"cost": "free"}}),
                            "gateway usage"),
    "usage not an object": (_set(H + ("gateway", "usage"), [1]), "'usage' is a list"),
    "schema text": (_set(H + ("schema",), "1"), "schema version"),
    "schema boolean": (_set(H + ("schema",), True), "schema version"),
    "schema 0 (no migration)": (_set(H + ("schema",), 0), "no migration"),
    "no tree_meta": (_set(H + ("tree_meta",), _DELETE), "'tree_meta'"),
    "roots not a list": (_set(H + ("tree_meta", "roots"), "n0"), "'roots' is a string"),
    "root points nowhere": (_set(H + ("tree_meta", "roots"), ["n0", "n5"]), "root 'n5'"),
    "root listed twice": (_set(H + ("tree_meta", "roots"), ["n0", "n0"]), "twice"),
    "next_id too small": (_set(H + ("tree_meta", "next_id"), 1), "next id"),
    "next_id text": (_set(H + ("tree_meta", "next_id"), "2"), "'next_id' is a string"),
    "no session table": (lambda raw: raw.pop("session"), "no 'session' table"),
    "two session documents": (lambda raw: raw["session"].update({"2": _head(raw)}),
                              "one session document"),
    "session table a list": (_set(("session",), [1]), "'session' is a list"),
    "events table a list": (_set(("events",), []), "'events' is a list"),
    "an event a string": (_set(("events", "1"), "boom"), "document '1' is a string"),
    "a call a number": (_set(("calls", "1"), 3), "table 'calls'"),
    "document id not a number": (lambda raw: raw["events"].update({"x": {}}), "not a number"),
    "document id too long": (lambda raw: raw["events"].update({"1" * 5000: {}}), "not a number"),
    "nodes table null": (_set(("nodes",), None), "'nodes' is null"),
    "a node a list": (_set(("nodes", "1"), []), "table 'nodes'"),
    "node without text": (lambda raw: _node(raw, "n1").pop("text"), "'text' is missing"),
    "node with a bad id": (lambda raw: _node(raw, "n1").update(id="x1"), "'x1'"),
    "node id twice": (lambda raw: _node(raw, "n1").update(id="n0"), "two nodes"),
    "node reward text": (lambda raw: _node(raw, "n1").update(reward="high"), "'reward'"),
    "node reward boolean": (lambda raw: _node(raw, "n1").update(reward=True), "'reward'"),
    "node calls numbers": (lambda raw: _node(raw, "n0").update(calls=[1]), "'calls'"),
    "node children text": (lambda raw: _node(raw, "n0").update(children="n1"), "'children'"),
    "node detail a list": (lambda raw: _node(raw, "n0").update(detail=[]), "'detail'"),
    "node meta null": (lambda raw: _node(raw, "n0").update(meta=None), "'meta'"),
    "node accepted text": (lambda raw: _node(raw, "n0").update(accepted="yes"), "'accepted'"),
    "node without depth": (lambda raw: _node(raw, "n0").pop("depth"), "'depth'"),
    "node cost text": (lambda raw: _node(raw, "n0").update(cost="0"), "'cost'"),
    "node error a number": (lambda raw: _node(raw, "n0").update(error=1), "'error'"),
    "scores malformed": (lambda raw: _node(raw, "n0")["detail"].update(scores={"a": 1}),
                         "score of 'a'"),
    "child points nowhere": (lambda raw: _node(raw, "n0")["children"].append("n9"), "'n9'"),
    "parent points nowhere": (lambda raw: _node(raw, "n1").update(parent="n9"), "'n9'"),
    "child listed twice": (lambda raw: _node(raw, "n0")["children"].append("n1"), "twice"),
    "child of the wrong parent": (lambda raw: _node(raw, "n1").update(parent=None),
                                  "another parent"),
    "parent does not list the child": (lambda raw: _node(raw, "n0").update(children=[]),
                                       "does not list"),
    "parent cycle": (lambda raw: (_node(raw, "n0").update(parent="n1", children=["n1"]),
                                  _node(raw, "n1").update(children=["n0"])), "parent"),
    "orphan": (lambda raw: (_node(raw, "n1").update(parent=None),
                            _node(raw, "n0").update(children=[])), "not a root"),
}


@pytest.mark.parametrize("name", list(SHAPES))
def test_wrong_shapes_are_corrupt_with_a_one_line_reason(tmp_path, name):
    mutate, expected = SHAPES[name]
    root, path = saved_store(tmp_path)
    raw = json.loads(path.read_text())
    mutate(raw)
    path.write_text(json.dumps(raw))
    data = path.read_bytes()
    store = SessionStore(root)
    with pytest.raises(CorruptSession) as info:
        store.load(SID, move_aside=False)
    assert expected in one_line(info.value)
    assert path.read_bytes() == data
    [row] = store.list()
    assert row["status"] == "corrupt" and expected in one_line(row["error"])


def test_a_cycle_of_children_does_not_hang(tmp_path):
    root, path = saved_store(tmp_path)
    raw = json.loads(path.read_text())
    _node(raw, "n0").update(parent="n1")
    _node(raw, "n1").update(children=["n0"])
    _head(raw)["tree_meta"]["roots"] = []
    path.write_text(json.dumps(raw))
    with pytest.raises(CorruptSession, match="cycle"):
        SessionStore(root).load(SID, move_aside=False)


def test_newer_schema_is_not_moved_aside_and_lists_as_corrupt(tmp_path):
    root, path = saved_store(tmp_path)
    raw = json.loads(path.read_text())
    _head(raw)["schema"] = 99
    path.write_text(json.dumps(raw))
    store = SessionStore(root)
    with pytest.raises(UnsupportedSchema, match="newer PromptArbor"):
        store.load(SID)  # move_aside=True, but this file is not corrupt
    assert path.exists() and asides(root) == []
    [row] = store.list()
    assert row["status"] == "corrupt" and "newer" in row["error"]


def test_unknown_extra_tables_and_keys_are_kept_harmless(tmp_path):
    root, path = saved_store(tmp_path)
    raw = json.loads(path.read_text())
    raw["_default"] = {"1": {"anything": [1, 2]}}
    _head(raw)["future_key"] = {"x": 1}
    path.write_text(json.dumps(raw))
    assert SessionStore(root).load(SID)["future_key"] == {"x": 1}


def test_save_refuses_a_session_load_would_refuse(tmp_path):
    root, path = saved_store(tmp_path)
    data = path.read_bytes()
    store = SessionStore(root)
    bad = sample_session(SID)
    bad["method_state"]["final"] = "n42"
    with pytest.raises(StoreError, match="cannot save session abc123: the final node") as info:
        store.save(bad)
    one_line(info.value)
    bad = sample_session(SID)
    bad["events"].append({1, 2})  # not an object
    with pytest.raises(StoreError, match=r"events\[1\] is set") as info:
        store.save(bad)
    one_line(info.value)
    bad = sample_session(SID)
    bad["events"].append({"kind": {1, 2}})  # not JSON
    with pytest.raises(StoreError, match="not JSON data") as info:
        store.save(bad)
    one_line(info.value)
    with pytest.raises(StoreError):
        store.save("not a session")
    store.close()
    assert path.read_bytes() == data and tmp_files(root) == []


# --------------------------------------------------------------------------- moving aside

def test_three_corruptions_within_one_second_keep_three_asides(tmp_path, monkeypatch):
    root, path = saved_store(tmp_path)
    monkeypatch.setattr(store_mod.time, "strftime", lambda fmt, *a: "20250101-120000")
    store = SessionStore(root)
    messages = []
    for i in range(3):
        path.write_bytes(b"corrupt #%d" % i)
        with pytest.raises(CorruptSession) as info:
            store.load(SID)
        messages.append(one_line(info.value))
    base = f"{SID}.json.corrupt-20250101-120000"
    assert [p.name for p in asides(root)] == [base, base + "-2", base + "-3"]
    for i, name in enumerate((base, base + "-2", base + "-3")):
        assert (root / "sessions" / name).read_bytes() == b"corrupt #%d" % i
        assert name in messages[i]


def test_three_corruptions_in_real_time_keep_three_asides(tmp_path):
    root, path = saved_store(tmp_path)
    store = SessionStore(root)
    for i in range(3):
        path.write_bytes(b"\xff corrupt #%d" % i)
        with pytest.raises(CorruptSession):
            store.load(SID)
    assert sorted(p.read_bytes() for p in asides(root)) == [b"\xff corrupt #%d" % i
                                                            for i in range(3)]


def test_an_unrelated_file_with_the_aside_name_is_never_overwritten(tmp_path, monkeypatch):
    root, path = saved_store(tmp_path)
    monkeypatch.setattr(store_mod.time, "strftime", lambda fmt, *a: "20250101-120000")
    taken = root / "sessions" / f"{SID}.json.corrupt-20250101-120000"
    taken.write_bytes(b"precious")
    path.write_bytes(b"garbage")
    with pytest.raises(CorruptSession, match="-2"):
        SessionStore(root).load(SID)
    assert taken.read_bytes() == b"precious"
    assert taken.with_name(taken.name + "-2").read_bytes() == b"garbage"


def test_moving_aside_works_without_hard_links(tmp_path, monkeypatch):
    root, path = saved_store(tmp_path)
    monkeypatch.setattr(store_mod.time, "strftime", lambda fmt, *a: "20250101-120000")

    def no_links(*a, **k):
        raise OSError(errno.EPERM, "Operation not permitted")
    monkeypatch.setattr(os, "link", no_links)
    for i in range(2):
        path.write_bytes(b"bad %d" % i)
        with pytest.raises(CorruptSession, match="kept aside"):
            SessionStore(root).load(SID)
    assert [p.read_bytes() for p in asides(root)] == [b"bad 0", b"bad 1"]
    assert not path.exists()


def test_a_corrupt_file_on_a_read_only_store_is_left_in_place(tmp_path, monkeypatch):
    root, path = saved_store(tmp_path)
    path.write_bytes(b"garbage")
    with read_only_fs(monkeypatch, root):
        with pytest.raises(CorruptSession) as info:
            SessionStore(root).load(SID)
    assert "could not be moved aside" in one_line(info.value)
    assert "left in place" in str(info.value) and info.value.aside is None
    assert path.read_bytes() == b"garbage" and asides(root) == []


def test_listing_never_moves_anything(tmp_path):
    root, path = saved_store(tmp_path)
    (root / "sessions" / "bad1.json").write_bytes(b"\x00\x01")
    (root / "sessions" / "bad2.json").write_text('{"session": {"1": {"id": "bad2"}}}')
    store = SessionStore(root)
    before = tree_state(root)
    rows = store.list()
    assert tree_state(root) == before
    assert {r["id"]: r["status"] for r in rows} == {SID: "paused", "bad1": "corrupt",
                                                   "bad2": "corrupt"}


# --------------------------------------------------------------------------- special files

def test_special_files_do_not_hang_or_crash_the_listing(tmp_path):
    root, path = saved_store(tmp_path)
    sessions = root / "sessions"
    os.mkfifo(sessions / "fifo.json")
    (sessions / "dir.json").mkdir()
    (sessions / "dev.json").symlink_to("/dev/zero")
    (sessions / "dangling.json").symlink_to(tmp_path / "nothing")
    (sessions / ".json").write_text("{}")
    (sessions / "bad name.json").write_text("{}")
    (sessions / ("é" * 70 + ".json")).write_text("{}")
    fd = os.open(os.fsencode(sessions) + b"/\xff\nx\x1b[31m.json", os.O_CREAT | os.O_WRONLY)
    os.close(fd)
    store = SessionStore(root)
    rows = {r["id"]: r for r in store.list()}
    assert rows.pop(SID)["status"] == "paused"
    assert set(rows) == {"fifo", "dir", "dev", "dangling", "", "bad name", "é" * 70,
                         "\\udcff\\nx\\x1b[31m"}
    for row in rows.values():
        assert row["status"] == "corrupt"
        one_line(row["error"])
        json.dumps(row, ensure_ascii=False).encode("utf-8")  # prints: no lone surrogates
        assert row["id"].isprintable()
    for sid in ("fifo", "dir", "dev"):
        with pytest.raises(CorruptSession, match="not a regular file"):
            store.load(sid, move_aside=False)
    with pytest.raises(SessionNotFound):
        store.load("dangling")
    with pytest.raises(CorruptSession) as info:
        store.load("dir")  # a folder cannot be moved over the placeholder: left in place
    assert "left in place" in one_line(info.value) and (sessions / "dir.json").is_dir()
    with pytest.raises(CorruptSession, match="kept aside"):
        store.load("dev")  # the symlink itself goes aside, /dev/zero is untouched
    assert os.path.exists("/dev/zero") and not (sessions / "dev.json").is_symlink()


def test_a_lone_surrogate_from_a_provider_round_trips(tmp_path):
    store = SessionStore(tmp_path)
    session = sample_session()
    session["tree"]["nodes"]["n1"]["text"] = "half a pair: \ud83d and \x00 and \u2028"
    session["events"].append({"kind": "x", "payload": {"text": "\udfff"}})
    store.save(session)
    assert store.load(SID) == session
    store.close()


def test_deleting_a_session_held_here_is_refused(tmp_path):
    root, path = saved_store(tmp_path)
    store = SessionStore(root)
    store.lock(SID)
    with pytest.raises(SessionLocked, match="open here"):
        store.delete(SID)
    assert path.exists()
    store.unlock(SID)
    store.delete(SID)
    assert not path.exists() and not (root / "sessions" / f"{SID}.lock").exists()
    store.close()


# --------------------------------------------------------------------------- the file system

def test_read_only_store(tmp_path, monkeypatch):
    root, path = saved_store(tmp_path)
    data = path.read_bytes()
    session = sample_session(SID)
    session["steps"] = 5
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    with read_only_fs(monkeypatch, tmp_path):
        store = SessionStore(root)
        assert store.load(SID, move_aside=False)["steps"] == 2  # reading still works
        assert [r["id"] for r in store.list()] == [SID]
        for call in (lambda: store.lock(SID), lambda: store.save(session),
                     lambda: store.delete(SID), lambda: SessionStore(fresh).save(session),
                     lambda: SessionStore(fresh / "new").lock(SID)):
            with pytest.raises(StoreUnavailable) as info:
                call()
            assert "Read-only file system" in one_line(info.value)
    assert path.read_bytes() == data and tmp_files(root) == []
    assert list(fresh.iterdir()) == []


@pytest.mark.skipif(not CHMOD_BLOCKS_WRITES, reason="chmod does not stop root: see "
                                                   "test_read_only_store for the simulation")
def test_read_only_store_by_chmod(tmp_path):
    root, path = saved_store(tmp_path)
    data = path.read_bytes()
    sessions = root / "sessions"
    (sessions / f"{SID}.lock").unlink()
    os.chmod(sessions, 0o555)
    try:
        store = SessionStore(root)
        assert store.load(SID, move_aside=False)["steps"] == 2
        for call in (lambda: store.lock(SID), lambda: store.save(sample_session(SID)),
                     lambda: store.delete(SID)):
            with pytest.raises(StoreUnavailable) as info:
                call()
            assert "Permission denied" in one_line(info.value)
        assert path.read_bytes() == data
        path.write_bytes(b"garbage")  # the file itself is writable, its folder is not
        with pytest.raises(CorruptSession, match="left in place"):
            store.load(SID)
    finally:
        os.chmod(sessions, 0o755)
    assert path.read_bytes() == b"garbage" and asides(root) == []


@pytest.mark.parametrize("where", ["fsync", "write"])
def test_disk_full_during_save_leaves_the_previous_file(tmp_path, monkeypatch, where):
    root, path = saved_store(tmp_path)
    data = path.read_bytes()
    store = SessionStore(root)
    session = sample_session(SID)
    session["steps"] = 7
    session["events"] = [{"kind": "big", "text": "x" * 100_000}]

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    if where == "fsync":
        monkeypatch.setattr(os, "fsync", full)
    else:
        real_write = os.write

        def half_then_full(fd, buf):
            if len(buf) > 10:
                return real_write(fd, bytes(buf[:len(buf) // 2]))
            full()
        monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(StoreUnavailable) as info:
        store.save(session)
    monkeypatch.undo()
    text = one_line(info.value)
    assert "No space left on device" in text and "unchanged" in text
    assert path.read_bytes() == data and tmp_files(root) == []
    assert store.load(SID)["steps"] == 2
    store.close()


def test_temp_file_creation_refused(tmp_path, monkeypatch):
    root, path = saved_store(tmp_path)
    data = path.read_bytes()
    store = SessionStore(root)

    def refuse(*a, **k):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(StoreUnavailable, match="Permission denied"):
        store.save(sample_session(SID))
    monkeypatch.undo()
    assert path.read_bytes() == data
    store.close()


def test_permission_denied_reading_a_session(tmp_path, monkeypatch):
    root, path = saved_store(tmp_path)
    real_open = os.open

    def denied(p, flags, *a, **k):
        if os.fsdecode(p) == str(path):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(p))
        return real_open(p, flags, *a, **k)
    monkeypatch.setattr(os, "open", denied)
    store = SessionStore(root)
    [row] = store.list()
    assert row["status"] == "corrupt" and "Permission denied" in one_line(row["error"])
    for move_aside in (True, False):
        with pytest.raises(StoreUnavailable, match="Permission denied") as info:
            store.load(SID, move_aside=move_aside)
        one_line(info.value)
    monkeypatch.undo()
    assert path.exists() and asides(root) == []


def test_lock_file_that_cannot_be_created(tmp_path):
    root, path = saved_store(tmp_path)
    data = path.read_bytes()
    lock = root / "sessions" / f"{SID}.lock"
    lock.unlink()
    lock.mkdir()  # a folder where the lock file goes
    store = SessionStore(root)
    for call in (lambda: store.lock(SID), lambda: store.save(sample_session(SID)),
                 lambda: store.delete(SID)):
        with pytest.raises(StoreUnavailable, match="cannot lock session abc123") as info:
            call()
        one_line(info.value)
    assert path.read_bytes() == data


def test_unreadable_sessions_folder(tmp_path, monkeypatch):
    root, path = saved_store(tmp_path)

    def denied(p):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(p))
    monkeypatch.setattr(os, "scandir", denied)
    with pytest.raises(StoreUnavailable, match="Permission denied") as info:
        SessionStore(root).list()
    one_line(info.value)


# --------------------------------------------------------------------------- real sessions

def _run(coro):
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def real_drpo():
    """A real DRPO session (engine + fake provider) with the person's operations on it:
    the file the mutation property starts from."""
    from promptarbor.engine.config import load_config
    from promptarbor.engine.datasets import load_inputs
    from promptarbor.engine.runner import Runner

    old_key = os.environ.get("PA_FAKE_KEY")
    os.environ["PA_FAKE_KEY"] = FAKE_KEY
    try:
        with tempfile.TemporaryDirectory() as d, FakeLLMServer(responder=drpo_responder) as server:
            d = Path(d)
            cfg = load_config(write_config(d / "c.toml", server.base_url,
                                           search={"beam_width": 2, "samples_per_state": 2,
                                                   "depth": 2}))
            store = SessionStore(d / "store")
            runner = Runner.create(cfg, load_inputs(cfg), store=store, cache_dir=store.cache_dir,
                                   session_id="real0001")
            _run(runner.run(steps=3))
            root_id = runner.method.state["roots"]["prompt"]
            human = _run(runner.add_human(root_id, "You are careful. 🌱 [bold]x[/]"))
            level1 = runner.tree[root_id]["children"]
            _run(runner.prune(level1[0]))
            _run(runner.accept(human["id"]))
            _run(runner.run())
            runner.gateway.close()
            store.close()
            path = store.path("real0001")
            yield {"bytes": path.read_bytes(), "session": SessionStore(d / "store").load(
                "real0001", move_aside=False)}
    finally:
        if old_key is None:
            os.environ.pop("PA_FAKE_KEY", None)
        else:
            os.environ["PA_FAKE_KEY"] = old_key


def test_a_real_drpo_session_passes_the_checks(real_drpo):
    session = real_drpo["session"]
    assert session["status"] == "done" and session["method_state"]["final"]
    assert len(session["tree"]["nodes"]) > 3
    check_session(session, "real0001")


@pytest.mark.parametrize("method", ["vapo", "picaco"])
def test_real_vapo_and_picaco_sessions_pass_the_checks(tmp_path, monkeypatch, method):
    from promptarbor.engine.config import load_config
    from promptarbor.engine.datasets import load_inputs
    from promptarbor.engine.runner import Runner

    monkeypatch.setenv("PA_FAKE_KEY", FAKE_KEY)
    if method == "vapo":
        responder = vapo_responder
        tasks = write_tasks(tmp_path / "tasks.jsonl", 12)
        kw = {"search": {"iterations": 2, "expand_width": 2, "depth_limit": 2, "batch_size": 2},
              "data": {"tasks": str(tasks), "train": 6, "validation": 3, "test": 3}}
    else:
        responder = picaco_responder
        kw = {"search": {"iterations": 1, "prompts": 2, "aligned_pool": 2, "noise_pool": 2,
                         "new_instructions": 2, "p_samples": 2, "buckets": 1},
              "values": {"composition": "harmlessness"}}
    with FakeLLMServer(responder=responder) as server:
        cfg = load_config(write_config(tmp_path / "c.toml", server.base_url, method=method, **kw))
        store = SessionStore(tmp_path / "store")
        runner = Runner.create(cfg, load_inputs(cfg), store=store, cache_dir=store.cache_dir)
        _run(runner.run())
        runner.gateway.close()
        store.close()
    session_id = runner.session["id"]
    loaded = SessionStore(tmp_path / "store").load(session_id, move_aside=False)
    check_session(loaded, session_id)
    [row] = SessionStore(tmp_path / "store").list()
    assert row["status"] != "corrupt"


# --------------------------------------------------------------------------- properties

PROPERTY = settings(max_examples=120, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])

json_scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70)
                | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=15)
doc_ids = st.integers(0, 4).map(str) | st.text(max_size=3)
tinydb_shaped = st.dictionaries(
    st.sampled_from(["session", "nodes", "events", "calls", "_default"]) | st.text(max_size=6),
    st.dictionaries(doc_ids, st.dictionaries(
        st.sampled_from(["id", "steps", "method", "schema", "tree_meta", "config", "parent",
                         "children"]) | st.text(max_size=6), json_values, max_size=5),
        max_size=3) | json_values,
    max_size=5)
session_shaped = st.fixed_dictionaries({"session": st.fixed_dictionaries({"1": st.fixed_dictionaries(
    {"id": st.just(SID), "schema": st.just(1), "tree_meta": json_values}, optional={
        k: json_values for k in ("name", "method", "status", "steps", "config", "planned_calls",
                                 "gateway", "method_state", "created", "updated")})}),
    "nodes": st.dictionaries(doc_ids, json_values, max_size=3)})


def _check_property(data: bytes) -> None:
    """What any hostile file may do to the store: only StoreError, and the rules of asides."""
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        sessions = root / "sessions"
        sessions.mkdir()
        path = sessions / f"{SID}.json"
        path.write_bytes(data)
        store = SessionStore(root)

        rows = store.list()
        assert len(rows) == 1 and rows[0]["id"] == SID
        if rows[0]["status"] == "corrupt":
            one_line(rows[0]["error"])
        assert path.read_bytes() == data

        try:
            session = store.load(SID, move_aside=False)
        except StoreError as exc:
            one_line(exc)
            assert rows[0]["status"] == "corrupt"
            event(f"refused: {type(exc).__name__}")
        else:
            event("accepted")  # accepted: then everything the CLI and TUI read from it works
            assert rows[0]["status"] != "corrupt"
            check_session(session, SID)
            summarize(session)
            {r: m["model"] for r, m in session["config"]["models"].items()}
        assert path.read_bytes() == data and asides(root) == []

        try:
            store.load(SID)
        except CorruptSession as exc:
            one_line(exc)
            [aside] = asides(root)
            assert aside.read_bytes() == data and not path.exists()
            assert exc.aside == aside
        except StoreError as exc:  # e.g. a newer schema: not moved
            one_line(exc)
            assert path.read_bytes() == data and asides(root) == []
        else:
            assert path.read_bytes() == data
        store.close()


@PROPERTY
@given(st.binary(max_size=300))
def test_property_random_bytes(data):
    _check_property(data)


@PROPERTY
@given(json_values)
def test_property_random_json(value):
    _check_property(json.dumps(value).encode())


@PROPERTY
@given(st.one_of(tinydb_shaped, session_shaped))
def test_property_tinydb_shaped_documents(value):
    _check_property(json.dumps(value).encode())


def _paths(value, prefix=()):
    """Every (container path, key) inside a JSON value."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield prefix, key
            yield from _paths(item, prefix + (key,))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield prefix, i
            yield from _paths(item, prefix + (i,))


class _Real:
    """The real session's raw document and every path in it (with a short repr: hypothesis
    prints the test's arguments)."""

    def __init__(self, raw):
        raw["session"]["1"]["id"] = SID  # the property writes it as abc123.json
        self.raw = raw
        self.paths = list(_paths(raw))

    def __repr__(self):
        return f"<real session, {len(self.paths)} paths>"


@pytest.fixture(scope="module")
def real_raw(real_drpo):
    return _Real(json.loads(real_drpo["bytes"]))


@PROPERTY
@given(data=st.data())
def test_property_mutations_of_a_real_session(real_raw, data):
    raw = copy.deepcopy(real_raw.raw)
    if data.draw(st.integers(0, 9), label="unchanged") == 0:
        _check_property(json.dumps(raw).encode())  # the original is accepted
        return
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        kind = data.draw(st.sampled_from(["drop", "retype", "final", "dangling"]), label="kind")
        try:  # (an earlier mutation may have removed or replaced what this one goes through)
            if kind == "final":
                raw["session"]["1"]["method_state"]["final"] = data.draw(
                    st.sampled_from(["n999", None, 3, "", ["n0"]]), label="final")
            elif kind == "dangling":
                node = data.draw(st.sampled_from(sorted(raw["nodes"])), label="node")
                field = data.draw(st.sampled_from(["parent", "children"]), label="field")
                raw["nodes"][node][field] = "n999" if field == "parent" else ["n999"]
            else:
                prefix, key = data.draw(st.sampled_from(real_raw.paths), label="where")
                target = raw
                for step in prefix:
                    target = target[step]
                if kind == "drop":
                    del target[key]
                else:
                    target[key] = data.draw(json_scalars | st.just([]) | st.just({}),
                                            label="value")
        except (KeyError, IndexError, TypeError, AttributeError):
            continue
    _check_property(json.dumps(raw).encode())
