import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import http.client  # noqa: E402
import json  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402

import pytest  # noqa: E402

from fake_llm import (  # noqa: E402
    GARBAGE_CONTENT,
    FakeLLMServer,
    ScriptedResponder,
)

MSGS = [{"role": "user", "content": "say hello to the world"}]


def post(base_url, body, path="/chat/completions", timeout=10):
    """POST JSON; returns (status, headers, raw_body_bytes)."""
    req = urllib.request.Request(
        base_url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def chat(base_url, model="m1", **params):
    return post(base_url, {"model": model, "messages": MSGS, **params})


def wait_until(pred, timeout=3.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.01)
    return pred()


@pytest.fixture
def srv():
    with FakeLLMServer() as s:
        yield s


def test_base_url_and_models(srv):
    assert srv.base_url.startswith("http://127.0.0.1:") and srv.base_url.endswith("/v1")
    with urllib.request.urlopen(srv.base_url + "/models", timeout=5) as resp:
        data = json.loads(resp.read())
    assert data["object"] == "list" and data["data"][0]["object"] == "model"


def test_normal_completion_n3():
    def responder(req, i):
        return f"answer {i} for {req['model']}"

    with FakeLLMServer(responder=responder) as srv:
        status, headers, raw = chat(srv.base_url, model="gpt-fake", n=3, temperature=0.5)
        assert status == 200
        data = json.loads(raw)
        assert data["object"] == "chat.completion"
        assert data["id"].startswith("chatcmpl-")
        assert isinstance(data["created"], int)
        assert data["model"] == "gpt-fake"
        assert [c["index"] for c in data["choices"]] == [0, 1, 2]
        assert [c["message"] for c in data["choices"]] == [
            {"role": "assistant", "content": f"answer {i} for gpt-fake"} for i in range(3)
        ]
        assert all(c["finish_reason"] == "stop" for c in data["choices"])
        u = data["usage"]
        assert u["prompt_tokens"] >= 1 and u["completion_tokens"] >= 3
        assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]

        # path without /v1 prefix works too, default n=1
        status, _, raw = post(srv.base_url[: -len("/v1")], {"model": "x", "messages": MSGS})
        assert status == 200 and len(json.loads(raw)["choices"]) == 1

        assert srv.answered == 2
        assert srv.count() == 2 and srv.count(model="gpt-fake", status=200) == 1
        rec = srv.requests[0]
        assert rec["model"] == "gpt-fake" and rec["messages"] == MSGS
        assert rec["params"] == {"n": 3, "temperature": 0.5}
        assert rec["status"] == 200 and rec["fault"] is None and rec["t_end"] >= rec["t_start"]
        srv.reset_stats()
        assert srv.answered == 0 and srv.requests == []


def test_default_responder_and_stream_rejected(srv):
    status, _, raw = chat(srv.base_url)
    assert status == 200 and json.loads(raw)["choices"][0]["message"]["content"] == "ok"
    status, _, raw = chat(srv.base_url, stream=True)
    assert status == 400
    err = json.loads(raw)["error"]
    assert err["type"] == "invalid_request_error" and err["param"] == "stream"


def test_scripted_responder_order_per_model():
    resp = ScriptedResponder({"a": ["a1", "a2"], "b": ["b1"], "c": lambda req, i: f"c{i}"})
    with FakeLLMServer(responder=resp) as srv:
        def content(model, **kw):
            status, _, raw = chat(srv.base_url, model=model, **kw)
            assert status == 200, raw
            return [c["message"]["content"] for c in json.loads(raw)["choices"]]

        assert content("a") == ["a1"]
        assert content("b") == ["b1"]
        assert content("a") == ["a2"]
        assert content("a") == ["a2"]  # exhausted: repeat last
        assert content("b") == ["b1"]
        assert content("c", n=2) == ["c0", "c1"]

        status, _, raw = chat(srv.base_url, model="unknown")
        assert status == 500
        assert "unknown" in json.loads(raw)["error"]["message"]
        assert srv.count(model="unknown", status=500) == 1

    with FakeLLMServer(responder=ScriptedResponder({"a": ["x"]}, default="dflt")) as srv:
        status, _, raw = chat(srv.base_url, model="zzz")
        assert status == 200 and json.loads(raw)["choices"][0]["message"]["content"] == "dflt"


def test_faults(srv):
    srv.inject("429", count=2)
    srv.inject("500", model="m2")
    srv.inject("503")
    srv.inject("garbage")
    srv.inject("garbage-content")
    srv.inject("empty")

    for _ in range(2):
        status, headers, raw = chat(srv.base_url)
        assert status == 429
        assert headers.get("Retry-After") == "0"
        assert json.loads(raw) == {
            "error": {
                "message": json.loads(raw)["error"]["message"],
                "type": "rate_limit_error",
                "param": None,
                "code": "rate_limit_exceeded",
            }
        }

    # model-specific fault is skipped for other models; next any-model fault is 503
    status, _, raw = chat(srv.base_url, model="m1")
    assert status == 503 and "error" in json.loads(raw)
    status, _, raw = chat(srv.base_url, model="m2")
    assert status == 500 and json.loads(raw)["error"]["type"] == "server_error"

    status, _, raw = chat(srv.base_url)
    assert status == 200
    with pytest.raises(ValueError):
        json.loads(raw)

    status, _, raw = chat(srv.base_url)
    assert status == 200 and json.loads(raw)["choices"][0]["message"]["content"] == GARBAGE_CONTENT
    status, _, raw = chat(srv.base_url)
    assert status == 200 and json.loads(raw)["choices"][0]["message"]["content"] == ""

    # queue drained: back to normal
    status, _, raw = chat(srv.base_url)
    assert status == 200 and json.loads(raw)["choices"][0]["message"]["content"] == "ok"

    assert srv.pending_faults() == []
    # answered counts only valid 200 completions: garbage-content, empty, normal
    assert srv.answered == 3
    assert [r["fault"] for r in srv.requests] == [
        "429", "429", "503", "500", "garbage", "garbage-content", "empty", None
    ]
    with pytest.raises(ValueError):
        srv.inject("bogus")


def test_timeout_fault_drops_connection(srv):
    srv.timeout_sleep = 0.2
    srv.inject("timeout")
    t0 = time.monotonic()
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError, urllib.error.URLError)):
        chat(srv.base_url)
    assert time.monotonic() - t0 >= 0.2
    assert srv.count(status=0) == 1 and srv.answered == 0
    assert chat(srv.base_url)[0] == 200


def test_latency(srv):
    srv.latency = 0.2
    t0 = time.monotonic()
    assert chat(srv.base_url)[0] == 200
    assert time.monotonic() - t0 >= 0.2
    srv.latency = lambda req: 0.0 if req["model"] == "fast" else 0.2
    t0 = time.monotonic()
    assert chat(srv.base_url, model="fast")[0] == 200
    assert time.monotonic() - t0 < 0.2


def test_max_concurrency():
    # 1 s per answer: the five requests overlap even when thread start-up is slow (a busy
    # machine once started them more than 0.2 s apart)
    with FakeLLMServer(latency=1.0) as srv:
        results = []
        threads = [threading.Thread(target=lambda: results.append(chat(srv.base_url)[0])) for _ in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert results == [200] * 5
        assert srv.max_concurrency == 5
        assert srv.answered == 5


def test_hang_after_and_release(srv):
    srv.hang_after(1)
    assert chat(srv.base_url)[0] == 200
    results = []
    t = threading.Thread(target=lambda: results.append(chat(srv.base_url)))
    t.start()
    assert wait_until(lambda: srv.blocked == 1)
    time.sleep(0.2)
    assert results == [] and srv.answered == 1
    srv.release()
    t.join(5)
    assert results and results[0][0] == 200
    assert srv.answered == 2 and srv.requests[1]["hung"] is True
    assert chat(srv.base_url)[0] == 200  # hang mode off after release


def test_stop_is_quick_during_timeout_fault():
    srv = FakeLLMServer().start()
    srv.inject("timeout")  # default timeout_sleep = 30 s
    assert srv.timeout_sleep == 30
    errors = []

    def client():
        try:
            chat(srv.base_url, timeout=20)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    t = threading.Thread(target=client)
    t.start()
    assert wait_until(lambda: srv.in_flight == 1)
    t0 = time.monotonic()
    srv.stop()
    assert time.monotonic() - t0 < 2.0
    t.join(5)
    assert not t.is_alive() and len(errors) == 1
    assert srv.answered == 0 and srv.count(status=0) == 1
    assert not srv.running


def test_stop_is_quick_with_hung_request_and_keepalive():
    srv = FakeLLMServer().start()
    # idle keep-alive connection must not keep stop() waiting
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
    conn.request("POST", "/v1/chat/completions", body=json.dumps({"model": "m", "messages": MSGS}),
                 headers={"Content-Type": "application/json"})
    assert conn.getresponse().read()
    srv.hang_after(0)
    t = threading.Thread(target=lambda: pytest.raises(Exception, chat, srv.base_url))
    t.start()
    assert wait_until(lambda: srv.blocked == 1)
    t0 = time.monotonic()
    srv.stop()
    assert time.monotonic() - t0 < 2.0
    t.join(5)
    assert not t.is_alive()
    assert srv.answered == 1
    conn.close()
