"""The installed product: the `promptarbor` console script runs one small session of each
method against the fake server. CI also runs this file against the built wheel installed
in a fresh virtual environment (PA_WHEEL_CHECK=1), where it checks that the code comes from
site-packages and that the wheel installs nothing but `promptarbor`."""
from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import (FAKE_KEY, drpo_responder, picaco_responder, vapo_responder, write_config,
                      write_tasks)
from fake_llm import FakeLLMServer

WHEEL = os.environ.get("PA_WHEEL_CHECK") == "1"
SCRIPT = Path(sys.executable).with_name("promptarbor")

SMALL = {
    "drpo": ({"beam_width": 2, "samples_per_state": 1, "depth": 1}, None, None),
    "vapo": ({"iterations": 1, "expand_width": 2, "depth_limit": 2, "batch_size": 2}, "tasks",
             None),
    "picaco": ({"iterations": 1, "prompts": 2, "aligned_pool": 2, "noise_pool": 1,
                "new_instructions": 1, "p_samples": 2, "buckets": 1}, None,
               {"composition": "harmlessness"}),
}
RESPONDERS = {"drpo": drpo_responder, "vapo": vapo_responder, "picaco": picaco_responder}


@pytest.mark.parametrize("method", sorted(SMALL))
def test_the_console_script_runs_a_small_session(tmp_path, method):
    search, data, values = SMALL[method]
    data = ({"tasks": str(write_tasks(tmp_path / "tasks.jsonl", 12)), "train": 4,
             "validation": 4, "test": 4} if data == "tasks" else None)
    with FakeLLMServer(responder=RESPONDERS[method]) as server:
        cfg = write_config(tmp_path / "c.toml", server.base_url, method=method, search=search,
                           data=data, values=values, eval={"limit": 2})
        env = {**os.environ, "PA_FAKE_KEY": FAKE_KEY, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
        proc = subprocess.run([str(SCRIPT), "run", str(cfg), "--store", str(tmp_path / "s"),
                               "--json"], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["status"] == "done" and out["final"]["text"].strip()


def test_the_package_holds_only_promptarbor():
    dist = importlib.metadata.distribution("promptarbor")
    if WHEEL:
        tops = {str(f).split("/")[0] for f in dist.files}
        tops = {t for t in tops if not t.endswith((".dist-info", ".data")) and t != ".."}
        assert tops == {"promptarbor"}, tops
        names = {str(f) for f in dist.files}
        for data in ("promptarbor/engine/data/values.json", "promptarbor/tui/app.tcss",
                     "promptarbor/engine/data/seed_queries.jsonl"):
            assert data in names, data
    import promptarbor.engine.values as values
    import promptarbor.tui.cli  # noqa: F401
    assert values.builtin()  # the built-in value catalogue (a data file) loads
    if WHEEL:
        assert "site-packages" in Path(values.__file__).resolve().parts, values.__file__
        for bare in ("engine", "tui", "sessions", "themes"):  # nothing clashes with them
            with pytest.raises(ModuleNotFoundError):
                __import__(bare)
