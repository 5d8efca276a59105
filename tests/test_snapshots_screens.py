"""Every screen at the smallest size we support (80×24) and at a large one (160×45): the
browser, the wizard, the workbench of each method, the Candidates view and the help.

The sessions are finished small runs against the fake server with fixed ids, and every
timestamp and latency in them is fixed, so the pictures are deterministic. Update after an
intended change with `pytest --snapshot-update`.
"""
from __future__ import annotations

import asyncio
import time

import pytest

from conftest import (drpo_responder, picaco_responder, vapo_responder, write_config,
                      write_tasks)
from fake_llm import FakeLLMServer
from test_snapshots import _workbench_ready
from promptarbor.engine.config import load_config
from promptarbor.engine.datasets import load_inputs
from promptarbor.engine.runner import Runner
from promptarbor.sessions.store import SessionStore
from promptarbor.tui.app import PromptArborApp

SIZES = {"80x24": (80, 24), "160x45": (160, 45)}
FIXED = 1_790_000_000.0
TIME_KEYS = {"t", "created", "updated", "started", "finished", "ended", "time"}

METHODS = {
    "drpo": (drpo_responder, {"beam_width": 2, "samples_per_state": 2, "depth": 2}, None, None),
    "vapo": (vapo_responder, {"iterations": 2, "expand_width": 2, "depth_limit": 2,
                              "batch_size": 3}, "tasks", None),
    "picaco": (picaco_responder, {"iterations": 1, "prompts": 2, "aligned_pool": 2,
                                  "noise_pool": 2, "new_instructions": 2, "p_samples": 2,
                                  "buckets": 1}, None, {"composition": "harmlessness"}),
    "opro": (picaco_responder, {"iterations": 1, "prompts": 2, "aligned_pool": 2,
                                "noise_pool": 2, "new_instructions": 2, "p_samples": 2,
                                "buckets": 1}, None, {"composition": "harmlessness"}),
}


def _fix_times(value):
    """Every timestamp and latency in a session, set to one fixed value (in place)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in TIME_KEYS and isinstance(item, (int, float)):
                value[key] = FIXED
            elif key == "latency" and isinstance(item, (int, float)):
                value[key] = 0.2
            else:
                _fix_times(item)
    elif isinstance(value, list):
        for item in value:
            _fix_times(item)


def _finished_session(root, method: str) -> None:
    responder, search, data, values = METHODS[method]
    root.mkdir(parents=True, exist_ok=True)
    if data == "tasks":
        data = {"tasks": str(write_tasks(root / "tasks.jsonl", 24)), "train": 10,
                "validation": 6, "test": 6}
    with FakeLLMServer(responder=responder) as server:
        cfg = load_config(write_config(root / f"{method}.toml", server.base_url, method=method,
                                       search=search, data=data, values=values,
                                       name=f"{method} snapshot"))
        store = SessionStore(root / "store")
        runner = Runner.create(cfg, load_inputs(cfg), store=store, cache_dir=store.cache_dir,
                               session_id=f"snap{method}")
        asyncio.run(runner.run())
        session = runner.snapshot()
        _fix_times(session)
        store.save(session)
        runner.gateway.close()
        store.close()


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    """One finished session of each method in one store."""
    import os

    os.environ["PA_FAKE_KEY"] = "sk-snapshot"
    root = tmp_path_factory.mktemp("screens")
    for method in METHODS:
        _finished_session(root, method)
    return root / "store"


@pytest.fixture(autouse=True)
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")  # the browser shows local time
    time.tzset()


def _keys(*keys: str):
    async def run_before(pilot):
        await _workbench_ready(pilot)
        for key in keys:
            await pilot.press(key)
            await pilot.pause(0.3)
    return run_before


@pytest.mark.parametrize("size", SIZES)
def test_browser(snap_compare, store_dir, size):
    async def ready(pilot):
        await pilot.pause(0.5)
    assert snap_compare(PromptArborApp(store_dir), terminal_size=SIZES[size], run_before=ready)


@pytest.mark.parametrize("size", SIZES)
def test_wizard(snap_compare, store_dir, size):
    async def wizard(pilot):
        await pilot.pause(0.3)
        await pilot.press("n")
        await pilot.pause(0.5)
    assert snap_compare(PromptArborApp(store_dir), terminal_size=SIZES[size], run_before=wizard)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("method", METHODS)
def test_workbench(snap_compare, store_dir, method, size):
    assert snap_compare(PromptArborApp(store_dir, f"snap{method}"), terminal_size=SIZES[size],
                        run_before=_keys())


@pytest.mark.parametrize("size", SIZES)
def test_candidates(snap_compare, store_dir, size):
    assert snap_compare(PromptArborApp(store_dir, "snapdrpo"), terminal_size=SIZES[size],
                        run_before=_keys("C"))


@pytest.mark.parametrize("size", SIZES)
def test_help(snap_compare, store_dir, size):
    assert snap_compare(PromptArborApp(store_dir, "snapdrpo"), terminal_size=SIZES[size],
                        run_before=_keys("question_mark"))
