"""Benchmark: one DRPO level (W = 2, M = 3) against the fake server at 200 ms per call.

The level measured is level 2, where the beam holds W = 2 states: 1 aspect selection,
6 rewrites, 6 base answers and 6 scores (19 calls). Its critical path is 4 latencies
(selection -> rewrite -> answer -> score); done one call at a time it would take 19.
Prints ratios measured in this one run, not absolute times:

    wall / critical path     (target: within 1.3)
    sequential / wall        (the speed-up over one call at a time)
"""
from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "tests")]
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ["PA_FAKE_KEY"] = "sk-bench"

from conftest import drpo_responder, write_config  # noqa: E402
from fake_llm import FakeLLMServer  # noqa: E402

from promptarbor.engine.config import load_config  # noqa: E402
from promptarbor.engine.datasets import load_icl_examples, load_seed_queries  # noqa: E402
from promptarbor.engine.runner import Runner  # noqa: E402
from promptarbor.sessions.store import SessionStore  # noqa: E402

LATENCY = 0.2


async def main() -> None:
    with FakeLLMServer(responder=drpo_responder, latency=LATENCY) as server, \
            tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(write_config(Path(tmp) / "bench.toml", server.base_url,
                                       search={"beam_width": 2, "samples_per_state": 3,
                                               "depth": 3, "icl_k": 0},
                                       gateway={"concurrency": 16}))
        store = SessionStore(Path(tmp) / "store")
        runner = Runner.create(cfg, {"seed": load_seed_queries(None), "icl": load_icl_examples(None)},
                               store=store, cache_dir=store.cache_dir)
        await runner.run(until="level")      # the root
        await runner.run(until="level")      # level 1: the beam grows from 1 to 2 states
        assert len(runner.method.state["levels"][-1]["children"]) == 3
        first_call = len(runner.gateway.log)
        start = time.perf_counter()
        await runner.run(until="level")      # level 2: W = 2 states, M = 3 samples each
        wall = time.perf_counter() - start
        calls = runner.gateway.log[first_call:]
        sequential = sum(c["latency"] for c in calls)
        critical = 4 * LATENCY
        print(f"level 2: {len(calls)} calls, max in flight {server.max_concurrency}")
        print(f"wall / critical path (4 latencies): {wall / critical:.2f}  (target <= 1.3)")
        print(f"sequential / wall: {sequential / wall:.2f}  "
              f"(ideal {len(calls) * LATENCY / critical:.2f})")
        runner.gateway.close()
        store.close()


if __name__ == "__main__":
    asyncio.run(main())
