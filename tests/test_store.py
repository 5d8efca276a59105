"""The TinyDB session store: atomic saves, exact reload, one writer, corrupt files kept aside."""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from promptarbor.sessions.export import export
from promptarbor.sessions.store import (SCHEMA_VERSION, CorruptSession, SessionLocked, SessionNotFound,
                            SessionStore, StoreError, StoreUnavailable)


def sample_session(session_id="abc123"):
    nodes = {
        "n0": {"id": "n0", "parent": None, "children": ["n1"], "kind": "root",
               "text": "You are a helpful assistant.", "status": "expanded", "accepted": False,
               "error": None, "reward": 3.5, "detail": {"scores": {"Clarity": {"score": 3.5,
                                                                              "rationale": "ok"}}},
               "critique": "Clarity: 3.5/5", "meta": {"phase": "prompt"}, "created_step": 0,
               "cost": 0.0, "calls": ["c1"], "depth": 0},
        "n1": {"id": "n1", "parent": "n0", "children": [], "kind": "candidate",
               "text": "Be brief — and kind. 🌱 [bold]x[/]", "status": "open", "accepted": True,
               "error": None, "reward": 4.0, "detail": {}, "critique": None,
               "meta": {"phase": "prompt"}, "created_step": 1, "cost": 0.001, "calls": [],
               "depth": 1},
    }
    return {
        "schema": SCHEMA_VERSION, "id": session_id, "name": "t", "method": "drpo",
        "config": {"method": "drpo", "random_seed": 0,
                   "models": {"base": {"model": "openai/x"}, "optimizer": {"model": None}},
                   "search": {"beam_width": 2}, "data": {}, "gateway": {"retries": 0}},
        "status": "paused", "steps": 2,
        "created": 1.0, "updated": 2.0,
        "tree": {"nodes": nodes, "roots": ["n0"], "next_id": 2},
        "method_state": {"final": None, "icl_final": {}}, "events": [{"kind": "x", "step": 0}],
        "call_log": [{"id": "c1", "role": "base"}], "gateway": {"usage": {}},
        "planned_calls": {"base": 3}, "accepted": "n1",
    }


def test_save_and_load_round_trip(tmp_path):
    store = SessionStore(tmp_path)
    session = sample_session()
    store.save(session)
    loaded = store.load("abc123")
    assert loaded == session
    assert [p.name for p in (tmp_path / "sessions").iterdir() if p.suffix == ".tmp"] == []
    store.close()


def test_the_file_is_a_tinydb_database(tmp_path):
    from tinydb import TinyDB

    store = SessionStore(tmp_path)
    store.save(sample_session())
    store.close()
    db = TinyDB(tmp_path / "sessions" / "abc123.json")
    assert len(db.table("nodes")) == 2
    assert db.table("session").all()[0]["method"] == "drpo"
    db.close()


def test_second_writer_in_another_process_is_refused(tmp_path):
    store = SessionStore(tmp_path)
    store.save(sample_session())  # takes the lock
    code = ("import sys; sys.path.insert(0, %r)\n"
            "from sessions.store import SessionStore, SessionLocked\n"
            "s = SessionStore(%r)\n"
            "try:\n    s.lock('abc123')\nexcept SessionLocked as e:\n    print('LOCKED', e)\n")
    out = subprocess.run([sys.executable, "-c", code % (str(ROOT), str(tmp_path))],
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.startswith("LOCKED")
    store.close()
    out = subprocess.run([sys.executable, "-c", code % (str(ROOT), str(tmp_path))],
                         capture_output=True, text=True, timeout=60)
    assert out.stdout == ""  # released: the other process could take it


def test_corrupt_file_is_kept_aside_and_reported(tmp_path):
    store = SessionStore(tmp_path)
    store.save(sample_session())
    store.close()
    path = tmp_path / "sessions" / "abc123.json"
    path.write_text('{"session": {"1": {"id": "abc1')  # a torn write
    listing = SessionStore(tmp_path).list()
    assert listing[0]["status"] == "corrupt"
    with pytest.raises(CorruptSession) as info:
        SessionStore(tmp_path).load("abc123")
    assert "kept aside" in str(info.value)
    aside = [p for p in (tmp_path / "sessions").iterdir() if ".corrupt-" in p.name]
    assert len(aside) == 1 and aside[0].read_text().startswith('{"session"')
    assert not path.exists()


def test_newer_schema_is_refused_not_touched(tmp_path):
    store = SessionStore(tmp_path)
    store.save(sample_session())
    store.close()
    path = tmp_path / "sessions" / "abc123.json"
    raw = json.loads(path.read_text())
    raw["session"]["1"]["schema"] = SCHEMA_VERSION + 1
    path.write_text(json.dumps(raw))
    with pytest.raises(StoreError, match="newer PromptArbor"):
        SessionStore(tmp_path).load("abc123")
    assert path.exists()


def test_missing_session_and_bad_id(tmp_path):
    with pytest.raises(SessionNotFound):
        SessionStore(tmp_path).load("nothere")
    with pytest.raises(StoreError):
        SessionStore(tmp_path).path("../etc/passwd")


def test_crash_during_write_leaves_previous_version(tmp_path, monkeypatch):
    store = SessionStore(tmp_path)
    session = sample_session()
    store.save(session)
    session["steps"] = 99

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(StoreUnavailable, match="disk full"):  # one line, not an OSError
        store.save(session)
    monkeypatch.undo()
    assert store.load("abc123")["steps"] == 2
    assert not [p for p in (tmp_path / "sessions").iterdir() if p.suffix == ".tmp"]
    store.close()


def test_export_formats_default_to_the_accepted_node():
    session = sample_session()
    assert export(session, fmt="txt") == "Be brief — and kind. 🌱 [bold]x[/]\n"
    assert json.loads(export(session, fmt="json"))["node"] == "n1"
    md = export(session, "n0", fmt="md")
    assert "| Clarity | 3.5 | ok |" in md
    with pytest.raises(KeyError):
        export(session, "n9")
