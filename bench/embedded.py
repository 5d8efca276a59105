"""Benchmark: the embedded model (local/smollm2) with one slot and with N slots, in one run.

    python bench/embedded.py                 # 1 slot, then N slots (default: the model's
                                             # default), then the quickstart's calls/minute
    python bench/embedded.py --slots 1,2,4,8 --no-quickstart
    python bench/embedded.py --lengths 30    # free-text answer lengths, uncapped

Tokens/s: the same 8 short prompts, greedy, 128 tokens at most each; with 1 slot they go one
at a time, with N slots all 8 are in flight at once. Tokens/s = completion tokens / wall time.

Quickstart: `promptarbor run examples/quickstart.toml` in a fresh store (no cache), with
its wall time and the requests it sent per minute.

Lengths: each built-in held-out request answered at temperature 0 with no cap (1,024 tokens
at most), to choose the free-text cap: how long the answers that end by themselves are, and
how many run to the limit.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from promptarbor.engine import local_model as lm  # noqa: E402

PROMPTS = [
    "Name three primary colours.",
    "What is a prime number? Answer in two sentences.",
    "Give me a tip for sleeping better.",
    "Write a haiku about rain.",
    "How do I boil an egg?",
    "Explain what a variable is in programming.",
    "Suggest a name for a pet turtle.",
    "Why is the sky blue?",
]
MAX_TOKENS = 128


def tokens_per_second(slots: int, threads: int | None) -> tuple[float, int, float]:
    """(tokens/s, completion tokens, wall seconds) for the 8 prompts on `slots` slots."""
    model = lm.LocalModel(lm.model_path(), slots=slots, threads=threads)
    model.complete([{"role": "user", "content": "Hi"}], max_tokens=4)  # warm up

    def one(i: int) -> int:
        out = model.complete([{"role": "user", "content": PROMPTS[i]}], max_tokens=MAX_TOKENS,
                             temperature=0.0, seed=i)
        return out["completion_tokens"]

    started = time.perf_counter()
    if slots == 1:
        tokens = sum(one(i) for i in range(len(PROMPTS)))
    else:
        with ThreadPoolExecutor(len(PROMPTS)) as pool:
            tokens = sum(pool.map(one, range(len(PROMPTS))))
    wall = time.perf_counter() - started
    model.close()
    return tokens / wall, tokens, wall


def quickstart(threads: int) -> dict:
    env = {**os.environ, lm.THREADS_ENV: str(threads)}
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "promptarbor.tui.cli", "run",
             str(ROOT / "examples" / "quickstart.toml"), "--store", tmp, "--json"],
            cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if proc.returncode not in (0, 4):
            raise SystemExit(f"quickstart failed ({proc.returncode}): {proc.stderr[-1500:]}")
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        requests = _requests(Path(tmp), out["session"])
    calls = sum(out["calls"].values())
    return {"wall": wall, "calls": calls, "requests": requests, "status": out["status"]}


def _requests(store: Path, session: str) -> int | None:
    """Requests sent (calls plus parse retries), from the session's saved usage."""
    try:
        data = json.loads((store / "sessions" / f"{session}.json").read_text())
    except (OSError, ValueError):
        return None
    total = 0
    found = False
    stack = [data]
    while stack:  # the gateway's usage per role, wherever the store keeps it
        item = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("requests"), int) and "parse_retries" in item:
                total += item["requests"]
                found = True
            else:
                stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return total if found else None


def lengths(n: int, slots: int) -> None:
    rows = [json.loads(line) for line in
            (ROOT / "engine" / "data" / "heldout_aspects.jsonl").read_text().splitlines()
            if line.strip()][:n]
    model = lm.LocalModel(lm.model_path(), slots=slots)

    def one(row: dict) -> dict:  # no schema: complete() itself applies no cap
        return model.complete([{"role": "user", "content": row["query"]}], max_tokens=1024)

    started = time.perf_counter()
    with ThreadPoolExecutor(slots) as pool:
        outs = list(pool.map(one, rows))
    wall = time.perf_counter() - started
    ended = sorted(o["completion_tokens"] for o in outs if o["finish_reason"] == "stop")
    runaway = sum(1 for o in outs if o["finish_reason"] != "stop")
    print(f"free-text answers to {len(outs)} held-out requests, no cap (1,024 max), "
          f"{wall:.0f} s on {slots} slots")
    print(f"  ended by themselves: {len(ended)}; ran to 1,024 tokens: {runaway}")
    if ended:
        q = statistics.quantiles(ended, n=10) if len(ended) > 1 else [ended[0]] * 9
        print(f"  lengths of those that ended: median {statistics.median(ended):.0f}, "
              f"p90 {q[8]:.0f}, max {ended[-1]}")
        for cap in (256, 320, 384, 512):
            kept = sum(1 for t in ended if t <= cap)
            print(f"  cap {cap}: {kept}/{len(ended)} of them fit whole")
    print(f"  all lengths: {sorted(o['completion_tokens'] for o in outs)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", default=f"1,{lm.default_slots()}",
                        help="comma-separated slot counts (default 1 and the model's default)")
    parser.add_argument("--threads", type=int, default=None,
                        help=f"llama.cpp threads (default {lm.default_threads()})")
    parser.add_argument("--no-quickstart", action="store_true")
    parser.add_argument("--lengths", type=int, default=0, metavar="N",
                        help="only measure free-text answer lengths on N held-out requests")
    args = parser.parse_args()
    if args.lengths:
        lengths(args.lengths, lm.default_slots())
        return
    threads = args.threads or lm.default_threads()
    print(f"embedded model, {os.cpu_count()} cores, {threads} threads; {len(PROMPTS)} prompts, "
          f"{MAX_TOKENS} tokens at most each, greedy; load average {os.getloadavg()[0]:.1f}")
    for slots in [int(s) for s in args.slots.split(",") if s.strip()]:
        rate, tokens, wall = tokens_per_second(slots, threads)
        how = "one at a time" if slots == 1 else f"all {len(PROMPTS)} in flight"
        print(f"  {slots} slot{'s' if slots > 1 else ''} ({how}): {rate:6.1f} tokens/s "
              f"({tokens} tokens in {wall:.1f} s)")
    if not args.no_quickstart:
        q = quickstart(threads)
        per_minute = q["calls"] / (q["wall"] / 60)
        line = (f"quickstart ({lm.default_slots()} slots): {q['wall']:.0f} s wall, "
                f"{q['calls']} calls, {per_minute:.1f} calls/minute")
        if q["requests"] is not None:
            line += f" ({q['requests']} requests, {q['requests'] / (q['wall'] / 60):.1f}/minute)"
        print(line + f", status {q['status']}")


if __name__ == "__main__":
    main()
