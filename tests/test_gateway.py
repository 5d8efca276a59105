"""The gateway: concurrency limit per endpoint, cache, retries, errors as values."""
import asyncio
import subprocess
import sys

from conftest import FAKE_KEY, ROOT
from promptarbor.engine.config import validate_config
from promptarbor.engine.gateway import Gateway


def gateway(server, tmp_path, **settings):
    cfg = validate_config({"models": {"default": {"model": "openai/fake", "api_base": server.base_url,
                                                  "api_key_env": "PA_FAKE_KEY"}},
                           "gateway": {"backoff": 0.01, "max_backoff": 0.05, "timeout": 5.0,
                                       **settings}})
    return Gateway(cfg["models"], cfg["gateway"], cache_dir=tmp_path / "cache")


def ask_many(gw, n, role="base"):
    async def go():
        return await asyncio.gather(*(
            gw.call(role, [{"role": "user", "content": f"q{i}"}], purpose="t") for i in range(n)))
    return asyncio.run(go())


def test_concurrency_is_limited_per_endpoint(tmp_path, fake_server, fake_key):
    fake_server.latency = 0.2
    gw = gateway(fake_server, tmp_path, concurrency=3)
    results = ask_many(gw, 9)
    assert all(r.error is None for r in results)
    assert fake_server.max_concurrency == 3
    gw.close()


def test_cache_replays_without_a_request(tmp_path, fake_server, fake_key):
    gw = gateway(fake_server, tmp_path)
    first = ask_many(gw, 3)
    gw.close()
    gw = gateway(fake_server, tmp_path)  # a new process would see the same disk cache
    second = ask_many(gw, 3)
    assert [r.texts for r in first] == [r.texts for r in second]
    assert fake_server.answered == 3
    assert gw.usage["base"].cached == 3 and gw.usage["base"].calls == 3
    gw.close()


def test_samples_have_their_own_cache_entries(tmp_path, fake_server, fake_key):
    gw = gateway(fake_server, tmp_path)

    async def go():
        msgs = [{"role": "user", "content": "same"}]
        return [await gw.call("optimizer", msgs, purpose="t", sample=i) for i in range(3)]
    asyncio.run(go())
    assert fake_server.answered == 3
    gw.close()


def test_retries_then_error_value_never_raises(tmp_path, fake_server, fake_key):
    gw = gateway(fake_server, tmp_path, retries=2)
    fake_server.inject("503", count=5)
    result = ask_many(gw, 1)[0]
    assert result.error and result.texts == []
    assert fake_server.count() == 3  # one try + two retries
    assert gw.usage["base"].errors == 1 and gw.usage["base"].retries == 2
    gw.close()


def test_missing_key_is_a_clear_error(tmp_path, fake_server, monkeypatch):
    monkeypatch.delenv("PA_FAKE_KEY", raising=False)
    gw = gateway(fake_server, tmp_path)
    result = ask_many(gw, 1)[0]
    assert result.error == "environment variable PA_FAKE_KEY is not set (role base)"
    assert fake_server.count() == 0
    gw.close()


def test_engine_imports_no_ui_and_no_heavy_libraries():
    code = ("import sys; sys.path.insert(0, %r)\n"
            "import engine.runner, engine.methods.drpo, sessions.store\n"
            "bad = [m for m in ('textual', 'tui', 'litellm', 'torch', 'sentence_transformers') "
            "if m in sys.modules]\nprint(bad)") % str(ROOT)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


def test_one_gateway_serves_several_event_loops(tmp_path, fake_server, fake_key):
    fake_server.latency = 0.05
    gw = gateway(fake_server, tmp_path, concurrency=2, cache=False)
    for _ in range(2):  # contention in two successive loops
        assert all(r.error is None for r in ask_many(gw, 5))
    assert fake_server.max_concurrency == 2
    gw.close()
