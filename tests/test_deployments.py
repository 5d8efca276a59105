"""Several deployments behind one role (engine/deployments.py): a run survives one failing
deployment, load spreads, rpm limits hold, keys stay out of everything saved, the cache
ignores which deployment answered, and bad shapes are one-line config errors."""
import asyncio
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from conftest import FAKE_KEY, ROOT, drpo_responder, write_config
from fake_llm import FakeLLMServer
from promptarbor.engine import deployments as D
from promptarbor.engine.config import ConfigError, validate_config
from promptarbor.engine.gateway import Gateway
from promptarbor.engine.secrets import MASK, Redactor, key_env_names
from promptarbor.sessions.store import SessionStore

# a key whose variable's name does not say "key" and whose value has no key shape: only the
# deployment's api_key_env tells the redactor about it
DEP_VAR = "PA_DEP_CRED"
DEP_VALUE = "cred-7d1e-never-saved-4b2a"
SEARCH = {"beam_width": 2, "samples_per_state": 2, "depth": 2}


def closed_url() -> str:
    """An address where nothing listens (connection refused)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/v1"


@pytest.fixture
def dep_key(monkeypatch):
    monkeypatch.setenv(DEP_VAR, DEP_VALUE)
    return DEP_VALUE


@pytest.fixture
def failing_server():
    with FakeLLMServer(responder=drpo_responder) as server:
        server.inject("500", count=10 ** 6)
        yield server


def deps(*urls, **extra) -> list[dict]:
    return [{"model": "openai/fake", "api_base": url, "api_key_env": DEP_VAR, **extra}
            for url in urls]


def gateway(tmp_path, deployments, role="base", cache="cache", **settings):
    cfg = validate_config({"models": {role: {"deployments": deployments}},
                           "gateway": {"backoff": 0.01, "max_backoff": 0.05, "timeout": 5.0,
                                       **settings}})
    return Gateway(cfg["models"], cfg["gateway"], cache_dir=tmp_path / cache)


def ask(gw, n, role="base", prefix="q"):
    async def go():
        return await asyncio.gather(*(
            gw.call(role, [{"role": "user", "content": f"{prefix}{i}"}], purpose="t")
            for i in range(n)))
    return asyncio.run(go())


def deployment_config(path, urls, roles=("base", "optimizer", "evaluator"), **kw):
    """write_config's run, with each role served by deployments at `urls` (in that order)."""
    write_config(path, "http://unused.invalid/v1", search=SEARCH, **kw)
    text = path.read_text(encoding="utf-8")
    head, rest = text.split("[models.base]", 1)
    rest = rest[rest.index("\n[search]") + 1:]
    lines = []
    for role in ("base", "optimizer", "evaluator"):
        if role in roles:
            lines += [f"[models.{role}]", f'model = "openai/fake-{role}"', ""]
            for url in urls:
                lines += [f"[[models.{role}.deployments]]", f'model = "openai/fake-{role}"',
                          f'api_base = "{url}"', f'api_key_env = "{DEP_VAR}"', ""]
        else:
            lines += [f"[models.{role}]", f'model = "openai/fake-{role}"',
                      f'api_base = "{urls[-1]}"', 'api_key_env = "PA_FAKE_KEY"', ""]
    path.write_text(head + "\n".join(lines) + "\n" + rest, encoding="utf-8")
    return path


def cli(*args, timeout=240):
    env = {**os.environ, "PA_FAKE_KEY": FAKE_KEY, DEP_VAR: DEP_VALUE}
    return subprocess.run([sys.executable, "-m", "promptarbor.tui.cli", *map(str, args)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


# ----------------------------------------------------------------------------- config

def test_a_role_with_deployments_has_a_logical_model_and_no_single_endpoint():
    two = [{"model": "openai/a", "api_base": "http://x/v1", "api_key_env": "K1", "rpm": 60},
           {"model": "openai/b", "tpm": 1000}]
    cfg = validate_config({"models": {
        "default": {"api_base": "http://default/v1", "api_key_env": "KD"},
        "base": {"deployments": two},
        "evaluator": {"model": "openai/pool", "temperature": 0.3, "deployments": two[:1]}}})
    base = cfg["models"]["base"]
    assert base["model"] == "openai/a"  # no model given: the first deployment's
    assert base["api_base"] is None and base["api_key_env"] is None  # not the default's
    assert base["deployments"] == two and "base" not in cfg["local_default"]
    evaluator = cfg["models"]["evaluator"]
    assert evaluator["model"] == "openai/pool" and evaluator["temperature"] == 0.3
    # the judge falls back to the evaluator, deployments included; its own model replaces them
    assert cfg["models"]["judge"]["deployments"] == two[:1]
    assert cfg["models"]["judge"]["model"] == "openai/pool"
    own = validate_config({"models": {"evaluator": {"deployments": two},
                                      "judge": {"model": "openai/judge"}}})
    assert "deployments" not in own["models"]["judge"]
    assert own["models"]["judge"]["model"] == "openai/judge"
    judged = validate_config({"models": {"judge": {"deployments": two[1:]}}})
    assert judged["models"]["judge"]["model"] == "openai/b"
    # roles without deployments are stored exactly as before
    assert "deployments" not in cfg["models"]["optimizer"]
    # PICACO's refiner is the target model: deployments included
    picaco = validate_config({"method": "picaco", "models": {"base": {"deployments": two}}})
    assert picaco["models"]["optimizer"]["deployments"] == two
    json.dumps(cfg, allow_nan=False)


BAD_SHAPES = [
    ({"deployments": {"model": "x"}}, "[[models.base.deployments]] must be a list of tables"),
    ({"deployments": []}, "must be a list of tables (each with a model), got an empty list"),
    ({"deployments": ["openai/x"]}, "models.base.deployments[1] must be a table"),
    ({"deployments": [{"model": "x", "weight": 2}]}, "unknown key 'weight' in models.base.deployments[1]"),
    ({"deployments": [{"api_base": "http://x"}]}, "models.base.deployments[1].model must be a non-empty string"),
    ({"deployments": [{"model": "x"}, {"model": " "}]}, "models.base.deployments[2].model must be"),
    ({"deployments": [{"model": "x", "rpm": 0}]}, "models.base.deployments[1].rpm must be between 1 and"),
    ({"deployments": [{"model": "x", "rpm": True}]}, "models.base.deployments[1].rpm must be a whole number"),
    ({"deployments": [{"model": "x", "tpm": 1.5}]}, "models.base.deployments[1].tpm must be a whole number"),
    ({"deployments": [{"model": "x", "tpm": 10 ** 12}]}, "models.base.deployments[1].tpm must be between"),
    ({"deployments": [{"model": "x", "api_base": ""}]}, "models.base.deployments[1].api_base must be a non-empty"),
    ({"deployments": [{"model": "x"}, {"model": "x"}]}, "models.base.deployments[2] repeats models.base.deployments[1]"),
    ({"deployments": [{"model": f"m{i}"} for i in range(17)]}, "at most 16 deployments, got 17"),
    ({"api_base": "http://x", "deployments": [{"model": "x"}]}, "[models.base] api_base: a role with deployments sets it on each"),
    ({"api_key_env": "K", "deployments": [{"model": "x"}]}, "[models.base] api_key_env: a role with deployments"),
]


@pytest.mark.parametrize("table,needle", BAD_SHAPES, ids=[n[:40] for _, n in BAD_SHAPES])
def test_bad_deployment_shapes_are_one_line_config_errors(table, needle):
    with pytest.raises(ConfigError) as info:
        validate_config({"models": {"base": table}})
    message = str(info.value)
    assert needle in message, message
    assert "\n" not in message and message.isprintable()


def test_a_key_pasted_as_the_variable_name_is_refused_and_never_echoed():
    pasted = "sk-proj-AbCdEf0123456789xyz"
    with pytest.raises(ConfigError) as info:
        validate_config({"models": {"base": {"deployments": [{"model": "x", "api_key_env": pasted}]}}})
    assert "must name an environment variable" in str(info.value)
    assert pasted not in str(info.value)


def test_the_default_table_lists_no_deployments():
    with pytest.raises(ConfigError) as info:
        validate_config({"models": {"default": {"deployments": [{"model": "x"}]}}})
    assert "[models.default] cannot list deployments" in str(info.value)


@pytest.mark.parametrize("body,needle", [
    ('[[models.base.deployments]]\nmodel = "openai/x"\nrpm = -5',
     "models.base.deployments[1].rpm must be between 1 and"),
    ('[models.base]\ndeployments = "openai/x"', "[[models.base.deployments]] must be a list"),
    ('[models.base]\napi_base = "http://x"\n[[models.base.deployments]]\nmodel = "openai/x"',
     "[models.base] api_base: a role with deployments"),
])
def test_cli_run_exits_2_on_a_bad_deployment(tmp_path, body, needle):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('method = "drpo"\n' + body + "\n")
    proc = cli("run", cfg, "--store", tmp_path / "s", timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr


# ----------------------------------------------------------------------------- the gateway

@pytest.mark.parametrize("fault", ["500", "closed"])
def test_calls_survive_one_failing_deployment(tmp_path, fake_server, failing_server, dep_key,
                                              fault):
    bad = failing_server.base_url if fault == "500" else closed_url()
    gw = gateway(tmp_path, deps(bad, fake_server.base_url), retries=3)
    results = ask(gw, 12)
    assert [r.error for r in results] == [None] * 12
    assert {r.record["deployment"] for r in results} == {2}  # the healthy one answered
    assert fake_server.answered == 12
    usage = gw.usage["base"]
    assert usage.calls == 12 and usage.errors == 0
    # requests count what was sent: the answers plus the attempts on the failing deployment
    if fault == "500":
        assert usage.requests == 12 + failing_server.count()
    assert 12 < usage.requests <= 24  # at least one attempt hit the failing one first
    assert usage.tokens_in == sum(r.record["tokens_in"] for r in results) > 0
    gw.close()


@pytest.mark.parametrize("fault", ["500", "closed"])
def test_the_failing_deployment_is_cooled_down(tmp_path, fake_server, failing_server, dep_key,
                                               fault):
    bad = failing_server.base_url if fault == "500" else closed_url()
    gw = gateway(tmp_path, deps(bad, fake_server.base_url), concurrency=1)
    results = [ask(gw, 1, prefix=f"s{i}-")[0] for i in range(10)]
    assert all(r.error is None for r in results)
    # one at a time: after its first failure the bad one is left out
    assert sum(r.record["requests"] for r in results) <= 11
    assert failing_server.count() <= 1
    assert fake_server.answered == 10
    gw.close()


def test_when_every_deployment_fails_the_call_returns_an_error(tmp_path, dep_key):
    with FakeLLMServer() as one, FakeLLMServer() as two:
        for server in (one, two):
            server.inject("503", count=10 ** 6)
        gw = gateway(tmp_path, deps(one.base_url, two.base_url), retries=2)
        result = ask(gw, 1)[0]
        assert result.error and result.texts == []
        assert gw.usage["base"].errors == 1
        sent = one.count() + two.count()
        assert 1 <= sent <= 3 * 2
        # both cool down now: the next call is refused by the router, nothing is sent
        again = ask(gw, 1, prefix="again")[0]
        assert again.error and "No deployments available" in again.error
        assert one.count() + two.count() == sent
        gw.close()


def test_load_spreads_over_two_healthy_deployments(tmp_path, dep_key):
    with FakeLLMServer() as one, FakeLLMServer() as two:
        gw = gateway(tmp_path, deps(one.base_url, two.base_url))
        results = ask(gw, 40)
        assert all(r.error is None for r in results)
        assert one.answered + two.answered == 40
        assert one.answered >= 5 and two.answered >= 5  # a fair coin: P(< 5 of 40) ~ 1e-7
        assert {r.record["deployment"] for r in results} == {1, 2}
        assert gw.usage["base"].requests == 40
        gw.close()


def test_concurrency_counts_per_deployment(tmp_path, dep_key):
    with FakeLLMServer(latency=0.2) as one, FakeLLMServer(latency=0.2) as two:
        gw = gateway(tmp_path, deps(one.base_url, two.base_url), concurrency=2)
        assert all(r.error is None for r in ask(gw, 12))
        # the role holds 2 x 2 calls in flight, spread over its two deployments
        spans = [(r["t_start"], r["t_end"]) for r in one.requests + two.requests]
        peak = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
        assert 3 <= peak <= 4, peak
        gw.close()


def _away_from_a_minute_boundary():
    """litellm counts rpm per calendar minute: keep a test within one."""
    if time.time() % 60 > 45:
        time.sleep(60 - time.time() % 60 + 0.5)


def test_rpm_limit_is_passed_to_the_router_and_respected(tmp_path, dep_key, monkeypatch):
    waits = []
    monkeypatch.setattr(D, "seconds_to_next_window", lambda: waits.append(1) or 0.01)
    monkeypatch.setattr(D, "THROTTLE_WAITS", 2)
    with FakeLLMServer() as one, FakeLLMServer() as two:
        gw = gateway(tmp_path, deps(one.base_url, two.base_url, rpm=2), retries=1,
                     concurrency=1)
        _away_from_a_minute_boundary()
        results = [ask(gw, 1, prefix=f"r{i}-")[0] for i in range(6)]
        router = gw.deployments.router("base")
        assert [d["litellm_params"]["rpm"] for d in router.model_list] == [2, 2]
        assert router.routing_strategy == "simple-shuffle"
        assert one.count() == 2 and two.count() == 2  # never more than rpm in the minute
        assert [r.error is None for r in results] == [True] * 4 + [False] * 2
        assert "No deployments available" in results[-1].error
        assert waits  # throttled calls waited for the next minute before giving up
        gw.close()


def test_deployments_without_rpm_are_spares_when_others_have_one(tmp_path, dep_key):
    with FakeLLMServer() as weighted, FakeLLMServer() as spare:
        spec = deps(weighted.base_url, rpm=1000) + deps(spare.base_url)
        gw = gateway(tmp_path, spec)
        assert all(r.error is None for r in ask(gw, 12))
        assert weighted.answered == 12 and spare.count() == 0
        weighted.inject("500", count=10 ** 6)  # the weighted one fails: the spare takes over
        assert all(r.error is None for r in ask(gw, 6, prefix="later"))
        assert spare.answered == 6
        gw.close()


@pytest.mark.parametrize("fault", ["500", "401-echo"])
@pytest.mark.parametrize("limit", ["rpm", "tpm"])
def test_a_failed_attempt_moves_on_within_the_call(tmp_path, fake_server, failing_server,
                                                   dep_key, limit, fault):
    """A failing deployment (a bad key: 401) costs no retry and no error: the router tries
    the other one within the same attempt; with a tpm limit, routing goes by usage."""
    failing_server.clear_faults()
    failing_server.inject(fault, count=10 ** 6)
    gw = gateway(tmp_path, deps(failing_server.base_url, fake_server.base_url,
                                **{limit: 10 ** 6}), retries=0)
    results = [ask(gw, 1, prefix=f"t{i}-")[0] for i in range(6)]
    strategy = gw.deployments.router("base").routing_strategy
    assert strategy == ("usage-based-routing-v2" if limit == "tpm" else "simple-shuffle")
    assert [r.error for r in results] == [None] * 6
    assert fake_server.answered == 6 and failing_server.count() <= 1
    assert sum(r.record["requests"] for r in results) == 6 + failing_server.count()
    assert gw.usage["base"].retries == 0
    gw.close()


def test_the_cache_ignores_which_deployment_answered(tmp_path, dep_key):
    with FakeLLMServer() as one, FakeLLMServer() as two:
        gw = gateway(tmp_path, deps(one.base_url, two.base_url))
        first = ask(gw, 6)
        gw.close()
        paid = one.count() + two.count()
        # other deployments (here: only the second), same logical model: every answer replays
        gw = gateway(tmp_path, deps(two.base_url))
        second = ask(gw, 6)
        assert [r.texts for r in second] == [r.texts for r in first]
        assert one.count() + two.count() == paid and gw.usage["base"].cached == 6
        gw.close()


def test_a_missing_key_variable_is_a_clear_error(tmp_path, fake_server, monkeypatch):
    monkeypatch.setenv(DEP_VAR, DEP_VALUE)
    spec = deps(fake_server.base_url) + [{"model": "openai/fake", "api_base": fake_server.base_url,
                                          "api_key_env": "PA_DEP_UNSET"}]
    monkeypatch.delenv("PA_DEP_UNSET", raising=False)
    gw = gateway(tmp_path, spec)
    result = ask(gw, 1)[0]
    assert result.error == "environment variable PA_DEP_UNSET is not set (role base, deployment 2)"
    assert fake_server.count() == 0
    gw.close()


def test_deployment_keys_are_redacted_from_answers_and_errors(tmp_path, dep_key):
    assert key_env_names({"base": {"api_key_env": "A", "deployments": [
        {"model": "x", "api_key_env": DEP_VAR}, {"model": "y"}]}, "judge": {}}) == ["A", DEP_VAR]

    def leaky(request, index):  # a hostile endpoint that repeats the key it was sent
        return f"here is your key: {DEP_VALUE}"

    with FakeLLMServer(responder=leaky) as server:
        gw = gateway(tmp_path, deps(server.base_url))
        result = ask(gw, 1)[0]
        assert DEP_VALUE not in result.text and MASK in result.text
        assert DEP_VALUE in Redactor().redact(f"x {DEP_VALUE}")  # the name alone gives no hint
        gw.close()


def test_close_unhooks_the_routers(tmp_path, fake_server, dep_key):
    import litellm

    gw = gateway(tmp_path, deps(fake_server.base_url))
    assert ask(gw, 1)[0].error is None
    router = gw.deployments.router("base")
    hooked = lambda: any(getattr(cb, "__self__", None) is router  # noqa: E731
                         for cb in litellm._async_failure_callback + litellm.failure_callback)
    assert hooked()
    gw.close()
    assert not hooked()


def test_roles_with_the_same_deployments_share_one_router(tmp_path, fake_server, dep_key):
    cfg = validate_config({"models": {"evaluator": {"deployments": deps(fake_server.base_url)}}})
    gw = Gateway(cfg["models"], cfg["gateway"], cache_dir=tmp_path / "cache")
    assert "judge" in gw.deployments and "evaluator" in gw.deployments
    assert gw.deployments.router("judge") is gw.deployments.router("evaluator")
    gw.close()


# ----------------------------------------------------------------------------- a whole run

@pytest.mark.parametrize("fault", ["500", "closed"])
def test_a_run_survives_one_deployment_failing(tmp_path, fake_server, failing_server, fault):
    bad = failing_server.base_url if fault == "500" else closed_url()
    cfg = deployment_config(tmp_path / "c.toml", [bad, fake_server.base_url])
    proc = cli("run", cfg, "--store", tmp_path / "s", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["status"] == "done" and not out.get("failed_nodes")
    assert out["calls"] == out["planned_calls"]  # every call accounted once
    # the healthy deployment answered every call exactly once
    assert fake_server.answered == sum(out["planned_calls"].values())

    if fault != "500":
        return
    # the same run on the healthy endpoint alone: the same calls, tokens and prompts
    with FakeLLMServer(responder=drpo_responder) as alone:
        plain = write_config(tmp_path / "plain.toml", alone.base_url, search=SEARCH)
        single = cli("run", plain, "--store", tmp_path / "s2", "--json")
        assert single.returncode == 0, single.stderr
    single = json.loads(single.stdout)
    assert single["calls"] == out["calls"]
    assert single["best"] == out["best"] and single["final"] == out["final"]
    session = SessionStore(tmp_path / "s").load(out["session"], move_aside=False)
    plain = SessionStore(tmp_path / "s2").load(single["session"], move_aside=False)
    for role in ("base", "optimizer", "evaluator", "judge"):
        mine, theirs = session["gateway"]["usage"][role], plain["gateway"]["usage"][role]
        assert (mine["calls"], mine["tokens_in"], mine["tokens_out"], mine["errors"]) \
            == (theirs["calls"], theirs["tokens_in"], theirs["tokens_out"], 0), role
    assert {r.get("deployment") for r in session["call_log"] if not r["cached"]} == {2}


def test_the_key_never_lands_in_the_session_store(tmp_path, failing_server):
    def leaky(request, index):  # answers well, and repeats the key once in a while
        text = drpo_responder(request, index)
        return text if text.lstrip().startswith(("{", "Here")) else f"{text} {DEP_VALUE}"

    with FakeLLMServer(responder=leaky) as server:
        failing_server.clear_faults()
        failing_server.inject("401-echo", count=10 ** 6)  # its errors echo the Authorization
        cfg = deployment_config(tmp_path / "c.toml", [failing_server.base_url, server.base_url])
        proc = cli("run", cfg, "--store", tmp_path / "s", "--json")
        assert proc.returncode == 0, proc.stderr
    assert DEP_VALUE not in proc.stdout + proc.stderr
    saved = [p for p in (tmp_path / "s").rglob("*") if p.is_file()]
    assert saved
    for path in saved:
        assert DEP_VALUE.encode() not in path.read_bytes(), path
    session = next(p for p in saved if p.suffix == ".json" and json.loads(proc.stdout)["session"]
                   in p.name)
    assert MASK in session.read_text()  # the answers that held it were kept, masked
