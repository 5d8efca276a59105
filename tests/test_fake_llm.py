import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import http.client  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402

import pytest  # noqa: E402

from fake_llm import (  # noqa: E402
    AUTH_ECHO_PREFIX,
    DEEP_CONTENT,
    ERROR_MARKUP_TEXT,
    ESCAPE_TEXT,
    FAULTS,
    GARBAGE_CONTENT,
    HOSTILE_FAULTS,
    HOSTILE_SCHEDULE_FAULTS,
    HUGE_CONTENT,
    HUGE_SIZE,
    INVALID_UTF8_BYTES,
    MARKUP_TEXT,
    NAN_CONTENT,
    WHITESPACE_CONTENT,
    FakeLLMServer,
    ScriptedResponder,
    hostile_responder,
    hostile_schedule,
)

MSGS = [{"role": "user", "content": "say hello to the world"}]


def post(base_url, body, path="/chat/completions", timeout=10, headers=None):
    """POST JSON; returns (status, headers, raw_body_bytes)."""
    req = urllib.request.Request(
        base_url + path, data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})}, method="POST"
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


# ----------------------------------------------------------------------------- hostile mode

def error_of(raw):
    data = json.loads(raw)
    assert set(data) == {"error"}
    err = data["error"]
    assert set(err) == {"message", "type", "param", "code"}
    return err


def content_of(raw):
    return [c["message"]["content"] for c in json.loads(raw)["choices"]]


def test_hostile_fault_names():
    assert HOSTILE_FAULTS == ("401-echo", "400-markup", "404-model", "invalid-utf8", "nan", "huge",
                              "deep", "markup", "escapes", "whitespace")
    assert set(HOSTILE_FAULTS) <= set(FAULTS)
    assert {"429", "500", "503", "timeout", "garbage", "garbage-content", "empty"} <= set(FAULTS)
    assert set(HOSTILE_SCHEDULE_FAULTS) == set(HOSTILE_FAULTS) | {"429", "500"}
    with FakeLLMServer() as srv:
        for f in HOSTILE_FAULTS:
            srv.inject(f)
        assert [f for f, _, _ in srv.pending_faults()] == list(HOSTILE_FAULTS)


def test_401_echo_repeats_authorization_header(srv):
    secret = "Bearer sk-test-SECRET-0123456789abcdef"
    srv.inject("401-echo", count=2)
    status, _, raw = post(srv.base_url, {"model": "m1", "messages": MSGS}, headers={"Authorization": secret})
    assert status == 401
    err = error_of(raw)
    assert err["message"].startswith(AUTH_ECHO_PREFIX + secret)
    assert secret in err["message"]
    assert err["type"] == "invalid_request_error" and err["code"] == "invalid_api_key"

    # raw http.client, no Authorization header: still a 401 with the same shape
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
    try:
        conn.request("POST", "/v1/chat/completions", body=json.dumps({"model": "m1", "messages": MSGS}),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 401
        assert error_of(resp.read())["message"].startswith(AUTH_ECHO_PREFIX)
    finally:
        conn.close()
    assert [r["fault"] for r in srv.requests] == ["401-echo", "401-echo"]
    assert srv.answered == 0
    assert chat(srv.base_url)[0] == 200


def test_400_markup_and_404_model(srv):
    srv.inject("400-markup")
    srv.inject("404-model")
    status, _, raw = chat(srv.base_url)
    assert status == 400
    err = error_of(raw)
    assert err["message"] == ERROR_MARKUP_TEXT
    assert "[link=https://evil.example]" in err["message"] and "[bold red]" in err["message"]
    assert err["type"] == "invalid_request_error"

    status, _, raw = chat(srv.base_url, model="gpt-nonexistent")
    assert status == 404
    err = error_of(raw)
    assert err["code"] == "model_not_found" and err["type"] == "invalid_request_error"
    assert "gpt-nonexistent" in err["message"]
    assert [r["status"] for r in srv.requests] == [400, 404] and srv.answered == 0


def test_invalid_utf8(srv):
    srv.inject("invalid-utf8")
    status, headers, raw = chat(srv.base_url, n=2)
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert b"\xff\xfe" in raw and raw.count(INVALID_UTF8_BYTES) == 2
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    with pytest.raises(ValueError):  # UnicodeDecodeError is a ValueError
        json.loads(raw)
    data = json.loads(raw.decode("utf-8", errors="replace"))  # otherwise a normal completion
    assert data["object"] == "chat.completion" and len(data["choices"]) == 2
    assert "\ufffd" in data["choices"][0]["message"]["content"]
    assert srv.answered == 0 and srv.requests[0]["fault"] == "invalid-utf8"


def test_nan(srv):
    srv.inject("nan")
    status, _, raw = chat(srv.base_url)
    assert status == 200
    assert b"NaN" in raw and b"Infinity" in raw
    data = json.loads(raw)  # default settings accept bare NaN / Infinity
    assert math.isnan(data["usage"]["prompt_tokens"])
    assert data["usage"]["completion_tokens"] == float("inf")
    assert content_of(raw) == [NAN_CONTENT] == ["NaN"]

    def reject(name):
        raise ValueError(f"non-standard JSON constant {name}")

    with pytest.raises(ValueError):
        json.loads(raw, parse_constant=reject)  # strict JSON refuses it
    assert srv.answered == 0


def test_content_faults(srv):
    for f in ("huge", "deep", "markup", "escapes", "whitespace"):
        srv.inject(f)

    status, _, raw = chat(srv.base_url)
    assert status == 200
    [huge] = content_of(raw)
    assert huge == HUGE_CONTENT and len(huge) == HUGE_SIZE >= 1_000_000

    status, _, raw = chat(srv.base_url, n=2)
    assert status == 200 and content_of(raw) == [DEEP_CONTENT] * 2
    assert DEEP_CONTENT == "[" * 100_000

    status, _, raw = chat(srv.base_url)
    [markup] = content_of(raw)
    assert status == 200 and markup == MARKUP_TEXT
    for piece in ("[link=https://evil.example]5[/link]", "[reverse]x[/reverse]", "[/]", "[bold red]x[/]"):
        assert piece in markup

    status, _, raw = chat(srv.base_url)
    [esc] = content_of(raw)
    assert status == 200 and esc == ESCAPE_TEXT
    for piece in ("\x1b]52;c;ZXZpbA==\x07", "\x1b[2J", "\x1b]0;pwned\x07",
                  "\x1b]8;;https://evil.example\x1b\\click\x1b]8;;\x1b\\", "\x9b31m", "\x1bPq#0\x1b\\"):
        assert piece in esc
    assert esc.replace("\x1b]52;c;ZXZpbA==\x07", "").replace("\x1b]0;pwned\x07", "").count("\x07") >= 1

    status, _, raw = chat(srv.base_url)
    [ws] = content_of(raw)
    assert status == 200 and ws == WHITESPACE_CONTENT == "  \n\t " and ws.strip() == ""

    assert [r["fault"] for r in srv.requests] == ["huge", "deep", "markup", "escapes", "whitespace"]
    assert srv.answered == 5
    assert content_of(chat(srv.base_url)[2]) == ["ok"]


# -- hostile_responder

SCORES = '{"Clarity": {"rationale": "clear enough", "score": 4}, "Safety": {"rationale": "fine", "score": "4/5"}}'
SELECTION = ('Here you go:\n```json\n{\n  "query_analysis": {"intent": "help"},\n  "aspects_selection": '
             '{"reasoning": "because", "selected_aspects": ["Clarity", "Safety"]},\n'
             '  "new_aspects": {"Empathy": "caring about people"},\n  "weight": 0.5, "ok": true\n}\n```\nDone.')


def embedded_json(text):
    """The JSON object inside a hostile answer, parsed with plain json.loads."""
    start, end = text.index("{"), text.rindex("}") + 1
    return json.loads(text[start:end])


def test_hostile_responder_json_still_parses():
    for seed in range(4):
        h = hostile_responder(lambda req, i: SCORES, seed=seed)
        out = h({"model": "m"}, 0)
        data = json.loads(out)  # whole answer is still plain JSON
        assert list(data) == ["Clarity", "Safety"]
        assert data["Clarity"]["score"] == 4 and data["Safety"]["score"] == "4/5"  # scores kept
        for aspect in data.values():
            r = aspect["rationale"]
            assert MARKUP_TEXT in r and ESCAPE_TEXT in r
        assert "clear enough" in data["Clarity"]["rationale"]

        out = hostile_responder(lambda req, i: SELECTION, seed=seed)({"model": "m"}, 0)
        assert out.startswith("Here you go:\n```json\n") and out.endswith("\n```\nDone.")
        data = embedded_json(out)
        assert data["aspects_selection"]["selected_aspects"] == ["Clarity", "Safety"]  # names kept
        assert data["weight"] == 0.5 and data["ok"] is True
        assert ESCAPE_TEXT in data["aspects_selection"]["reasoning"]
        assert MARKUP_TEXT in data["query_analysis"]["intent"]
        assert list(data["new_aspects"]) == ["Empathy"] and MARKUP_TEXT in data["new_aspects"]["Empathy"]

    # JSON in prose, and a list of entries with protected "aspect" names
    out = hostile_responder(seed=0).transform('I think {"new_prompt": "Be brief."} is best')
    assert out.startswith("I think {") and out.endswith("} is best")
    assert MARKUP_TEXT in embedded_json(out)["new_prompt"] and "Be brief." in embedded_json(out)["new_prompt"]
    entries = '[{"aspect": "Clarity", "score": 3, "reason": "meh"}, {"aspect": "Safety", "score": 5, "reason": ""}]'
    data = json.loads(hostile_responder(seed=3).transform(entries))
    assert [(e["aspect"], e["score"]) for e in data] == [("Clarity", 3), ("Safety", 5)]
    assert ESCAPE_TEXT in data[0]["reason"] and data[1]["reason"] == ""  # empty strings kept

    # JSON without any string to carry it: unchanged, hostile text after it
    out = hostile_responder(seed=0).transform('{"score": 4}')
    assert out.startswith('{"score": 4}\n\n') and MARKUP_TEXT in out and ESCAPE_TEXT in out
    assert json.JSONDecoder().raw_decode(out)[0] == {"score": 4}


def test_hostile_responder_tags_and_plain_text():
    h = hostile_responder(seed=0)
    out = h.transform("Sure. <START>You are a careful assistant.<END> Thanks.")
    assert out.startswith("Sure. <START>") and out.endswith("<END> Thanks.")
    inner = out[len("Sure. <START>"):-len("<END> Thanks.")]
    assert "You are a careful assistant." in inner and MARKUP_TEXT in inner and ESCAPE_TEXT in inner

    out = h.transform('<INS>Be kind.</INS> and {"instruction": "x"}')
    assert out.count("<INS>") == 1 and out.count("</INS>") == 1
    inner = out[out.index("<INS>") + 5:out.index("</INS>")]
    assert "Be kind." in inner and MARKUP_TEXT in inner and ESCAPE_TEXT in inner
    assert out.endswith('</INS> and {"instruction": "x"}')  # tags win: rest untouched

    out = h.transform("Answer: B")
    assert out.startswith("Answer: B\n\n") and MARKUP_TEXT in out and ESCAPE_TEXT in out

    # deterministic; the seed changes the arrangement of some answers
    samples = [SCORES, SELECTION, "<START>p<END>", "plain text", '{"a": "b", "c": "d"}']
    for seed in range(3):
        a = [hostile_responder(seed=seed).transform(t) for t in samples]
        b = [hostile_responder(seed=seed).transform(t) for t in samples]
        assert a == b
    assert len({tuple(hostile_responder(seed=s).transform(t) for t in samples) for s in range(8)}) > 1

    # a pathological inner answer is handled quickly and left as text
    t0 = time.monotonic()
    out = h.transform(DEEP_CONTENT)
    assert out.startswith(DEEP_CONTENT) and time.monotonic() - t0 < 2.0


def test_hostile_responder_through_server():
    inner = ScriptedResponder({"judge": [SCORES], "opt": ["<START>new prompt<END>"]}, default="hello")
    with FakeLLMServer(responder=hostile_responder(inner, seed=1)) as srv:
        with urllib.request.urlopen(srv.base_url + "/models", timeout=5) as resp:  # models forwarded
            assert {m["id"] for m in json.loads(resp.read())["data"]} == {"judge", "opt"}
        status, _, raw = chat(srv.base_url, model="judge", n=2)
        assert status == 200
        for text in content_of(raw):
            data = json.loads(text)
            assert data["Clarity"]["score"] == 4 and MARKUP_TEXT in data["Clarity"]["rationale"]
        status, _, raw = chat(srv.base_url, model="opt")
        [text] = content_of(raw)
        assert text.startswith("<START>") and text.endswith("<END>") and ESCAPE_TEXT in text
        status, _, raw = chat(srv.base_url, model="other")
        [text] = content_of(raw)
        assert text.startswith("hello\n\n") and MARKUP_TEXT in text
        assert inner.calls == {"judge": 2, "opt": 1, "other": 1}
        assert srv.answered == 3


# -- random-fault schedule

def run_schedule(n, **kw):
    with FakeLLMServer() as srv:
        srv.hostile(**kw)
        statuses = [chat(srv.base_url)[0] for _ in range(n)]
        return [r["fault"] for r in srv.requests], statuses, srv.answered


def test_hostile_schedule_deterministic():
    faults, statuses, answered = run_schedule(30, rate=0.5, seed=7)
    again, statuses2, _ = run_schedule(30, rate=0.5, seed=7)
    assert faults == again == hostile_schedule(30, rate=0.5, seed=7)
    assert statuses == statuses2
    assert 3 <= sum(f is not None for f in faults) <= 27
    assert all(f is None or f in HOSTILE_SCHEDULE_FAULTS for f in faults)
    expected_status = {None: 200, "401-echo": 401, "400-markup": 400, "404-model": 404, "429": 429, "500": 500}
    assert statuses == [expected_status.get(f, 200) for f in faults]
    assert answered == sum(f in (None, "huge", "deep", "markup", "escapes", "whitespace") for f in faults)

    assert hostile_schedule(50, rate=0.5, seed=8) != hostile_schedule(50, rate=0.5, seed=7)
    assert hostile_schedule(20, rate=1.0, faults=("429",), seed=3) == ["429"] * 20
    only_500, statuses, _ = run_schedule(10, rate=1.0, faults=("500",), seed=0)
    assert only_500 == ["500"] * 10 and statuses == [500] * 10


def test_hostile_schedule_off_and_precedence(srv):
    assert run_schedule(15, rate=0)[0] == [None] * 15
    assert hostile_schedule(15, rate=0.0) == [None] * 15

    srv.hostile(rate=1.0, faults=("429",), seed=0)
    assert srv.hostile_settings["rate"] == 1.0
    srv.inject("404-model")  # explicit fault wins over the draw
    assert chat(srv.base_url)[0] == 404
    assert chat(srv.base_url)[0] == 429
    assert srv.hostile_settings["draws"] == 2
    srv.hostile(None)
    assert srv.hostile_settings is None
    assert chat(srv.base_url)[0] == 200
    srv.hostile(rate=1.0, faults=("500",), model="m2")  # model filter
    assert chat(srv.base_url, model="m1")[0] == 200
    assert chat(srv.base_url, model="m2")[0] == 500
    srv.hostile(rate=0)
    assert chat(srv.base_url, model="m2")[0] == 200
    assert [r["fault"] for r in srv.requests] == ["404-model", "429", None, None, "500", None]

    for bad in ({"rate": 1.5}, {"rate": -0.1}, {"faults": ()}, {"faults": ("bogus",)}):
        with pytest.raises(ValueError):
            srv.hostile(**{"rate": 0.3, **bad})
