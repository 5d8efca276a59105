"""Local fake OpenAI-compatible chat-completions server for tests and benchmarks.

Standard library only.  The server binds 127.0.0.1 exclusively, so tests that use
it never reach the network.

Usage::

    with FakeLLMServer(responder=fn, latency=0.0) as srv:
        client_base_url = srv.base_url          # "http://127.0.0.1:PORT/v1"
        srv.inject("429", count=2, model="gpt-x")
        ...
        assert srv.answered == 10

Endpoints:
    POST /v1/chat/completions, POST /chat/completions
    GET  /v1/models, GET /models

Standalone (manual use)::

    python tests/fake_llm.py --port 8911 --latency 0.2
    python tests/fake_llm.py --hostile 0.3 --seed 1     # random hostile faults

Hostile mode
------------
Used by tests that attack the app (display safety, secret leaks, crash resistance).

Hostile faults (:data:`HOSTILE_FAULTS`, all accepted by :meth:`FakeLLMServer.inject`)::

    "401-echo"      401; the error message echoes the request's Authorization header
                    verbatim: AUTH_ECHO_PREFIX + "Bearer sk-..." (a secret-leak probe)
    "400-markup"    400; the error message is ERROR_MARKUP_TEXT (Rich markup)
    "404-model"     404 model-not-found (type invalid_request_error, code model_not_found)
    "invalid-utf8"  200 chat.completion whose content holds the raw invalid UTF-8 bytes
                    INVALID_UTF8_BYTES (the body is not valid UTF-8)
    "nan"           200 chat.completion with bare NaN / Infinity in "usage" (not strict
                    JSON; Python's json.loads accepts it); content NAN_CONTENT ("NaN")
    "huge"          200, content HUGE_CONTENT (HUGE_SIZE = 1 MiB, one "word", no spaces)
    "deep"          200, content DEEP_CONTENT (100,000 "[")
    "markup"        200, content MARKUP_TEXT (Rich / Textual markup)
    "escapes"       200, content ESCAPE_TEXT (OSC 52 / OSC 0 / OSC 8, CSI, 8-bit CSI, DCS, BEL)
    "whitespace"    200, content WHITESPACE_CONTENT ("  \\n\\t ")

With ``n`` > 1 every choice carries the same hostile content.  ``srv.answered`` counts
huge / deep / markup / escapes / whitespace (well-formed completions) but not
invalid-utf8 or nan (their bodies are not strict JSON) nor the error statuses.

Random faults: ``srv.hostile(rate=0.3, faults=HOSTILE_SCHEDULE_FAULTS, seed=0)`` makes
every later chat request draw a fault with probability ``rate``.  Draw k depends only on
the seed and k (the k-th request to reach the fault stage, counted from the hostile()
call), so :func:`hostile_schedule` predicts the sequence.  Every request consumes one
draw; a fault queued with :meth:`FakeLLMServer.inject` takes precedence over the draw.
``srv.hostile(None)`` or ``rate=0`` turns the schedule off.  The fault actually used is
recorded in ``requests[i]["fault"]`` as for injected faults.

Hostile answers that still work: ``hostile_responder(inner, seed=0)`` wraps a responder
and adds MARKUP_TEXT and ESCAPE_TEXT where they survive parsing (JSON string values,
text inside <START>/<END> or <INS>/</INS>, otherwise appended to plain text) while
keeping keys, numbers, score-like strings and name fields intact.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import socket
import sys
import threading
import time
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

__all__ = [
    "FakeLLMServer",
    "ScriptedResponder",
    "UnknownModelError",
    "FAULTS",
    "GARBAGE_BODY",
    "GARBAGE_CONTENT",
    "HOSTILE_FAULTS",
    "HOSTILE_SCHEDULE_FAULTS",
    "AUTH_ECHO_PREFIX",
    "ERROR_MARKUP_TEXT",
    "MARKUP_TEXT",
    "ESCAPE_TEXT",
    "INVALID_UTF8_BYTES",
    "NAN_CONTENT",
    "HUGE_SIZE",
    "HUGE_CONTENT",
    "DEEP_CONTENT",
    "WHITESPACE_CONTENT",
    "PROTECTED_KEYS",
    "ok_responder",
    "hostile_responder",
    "hostile_schedule",
    "estimate_tokens",
]

HOST = "127.0.0.1"
DEFAULT_MODEL = "fake-model"

#: Hostile faults (see "Hostile mode" in the module docstring).
HOSTILE_FAULTS = ("401-echo", "400-markup", "404-model", "invalid-utf8", "nan", "huge", "deep",
                  "markup", "escapes", "whitespace")
#: Fault names accepted by :meth:`FakeLLMServer.inject`.
FAULTS = ("429", "500", "503", "timeout", "garbage", "garbage-content", "empty") + HOSTILE_FAULTS
#: Default fault set of :meth:`FakeLLMServer.hostile`.
HOSTILE_SCHEDULE_FAULTS = HOSTILE_FAULTS + ("429", "500")

#: Body sent (HTTP 200, Content-Type: application/json) for the "garbage" fault: not JSON.
GARBAGE_BODY = b"<html>oops: upstream proxy error</html>"
#: Assistant content for the "garbage-content" fault: a valid completion whose text is junk.
GARBAGE_CONTENT = "}{{not json at all]] <<%$#@!>> ```{\"broken\": tru"

#: "401-echo": the error message is this prefix + the request's Authorization header value
#: (verbatim, e.g. "Bearer sk-...") + AUTH_ECHO_SUFFIX.
AUTH_ECHO_PREFIX = "Incorrect API key provided: "
AUTH_ECHO_SUFFIX = ". You can find your API key at https://platform.openai.com/account/api-keys."
#: "400-markup": the error message (Rich markup in an error a UI may print).
ERROR_MARKUP_TEXT = ("bad request [link=https://evil.example]click[/link] [reverse]x[/reverse] "
                     "[bold red]boom[/]")
#: Rich / Textual markup: "markup" fault content, and injected by hostile_responder.
#: Holds an unbalanced "[/]" and "[/bold]" (Rich raises MarkupError on them), a link, a
#: Textual click action and a number inside a link.  No braces, quotes, "<" or backticks,
#: so it never disturbs JSON extraction or tag parsing.
MARKUP_TEXT = ("[/] [bold red]x[/] [link=https://evil.example]5[/link] [reverse]x[/reverse] "
               "[@click=app.quit]quit[/] [/bold]")
#: Terminal escape sequences: "escapes" fault content, and injected by hostile_responder.
#: OSC 52 clipboard write, clear screen, OSC 0 window title, OSC 8 hyperlink, 8-bit CSI,
#: DCS, SGR colour and a lone BEL.
ESCAPE_TEXT = ("esc: \x1b]52;c;ZXZpbA==\x07 \x1b[2J \x1b]0;pwned\x07 "
               "\x1b]8;;https://evil.example\x1b\\click\x1b]8;;\x1b\\ \x9b31mred \x1bPq#0\x1b\\ "
               "\x1b[31mbell\x07\x1b[0m end")
#: "invalid-utf8": raw bytes placed inside the JSON content string (not valid UTF-8).
INVALID_UTF8_BYTES = b"bad bytes \xff\xfe here \xc3\x28 and \xed\xa0\x80 end"
#: "nan": assistant content (usage holds bare NaN / Infinity).
NAN_CONTENT = "NaN"
#: "huge": content size in characters (1 MiB, ASCII, no whitespace).
HUGE_SIZE = 1024 * 1024
HUGE_CONTENT = ("abcdefghijklmnop" * (HUGE_SIZE // 16 + 1))[:HUGE_SIZE]
#: "deep": 100,000 opening brackets.
DEEP_CONTENT = "[" * 100_000
#: "whitespace": content made only of whitespace.
WHITESPACE_CONTENT = "  \n\t "

_UTF8_PLACEHOLDER = "@@fake-llm-invalid-utf8@@"

#: Status recorded for requests whose connection was closed without any HTTP answer
#: ("timeout" fault, hang ended by stop(), latency sleep cut short by stop()).
NO_ANSWER = 0

Responder = Callable[[Dict[str, Any], int], str]
Latency = Union[float, int, Callable[[Dict[str, Any]], float]]


def ok_responder(request: Dict[str, Any], index: int) -> str:
    """Default responder: always answers "ok"."""
    return "ok"


def estimate_tokens(text: str) -> int:
    """Deterministic token estimate: round(words * 4 / 3), at least 1."""
    return max(1, round(len(str(text).split()) * 4 / 3))


def _message_text(message: Any) -> str:
    if not isinstance(message, Mapping):
        return str(message)
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # multimodal "parts" format
        parts = []
        for part in content:
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, str):
                parts.append(part)
        return " ".join(parts)
    return str(content)


def _error_body(message: str, type_: str, code: Optional[str], param: Optional[str] = None) -> Dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class UnknownModelError(LookupError):
    """Raised by ScriptedResponder for a model without a script and no default."""


class ScriptedResponder:
    """Per-model scripted answers.

    ``script`` maps model name -> list of strings (served in order; the last one
    is repeated once exhausted), a single string (always served), or a callable
    ``(request, index) -> str``.  ``default`` (same kinds) is used for models not
    in the script; without it an unknown model raises :class:`UnknownModelError`
    (the server turns that into an HTTP 500 with the message).

    Every choice (``n`` > 1) consumes one scripted item.  Thread-safe.
    """

    _DEFAULT_KEY = object()

    def __init__(
        self,
        script: Mapping[str, Union[Sequence[str], str, Responder]],
        default: Union[Sequence[str], str, Responder, None] = None,
    ) -> None:
        self._lock = threading.Lock()
        self._entries: Dict[Any, Union[List[str], Responder]] = {}
        self._pos: Dict[Any, int] = {}
        for model, entry in script.items():
            self._entries[model] = self._normalise(model, entry)
        self._has_default = default is not None
        if default is not None:
            self._entries[self._DEFAULT_KEY] = self._normalise("<default>", default)
        #: number of answers produced per model (including defaulted models)
        self.calls: Dict[str, int] = {}

    @staticmethod
    def _normalise(model: Any, entry: Any) -> Union[List[str], Responder]:
        if callable(entry):
            return entry
        if isinstance(entry, str):
            return [entry]
        items = list(entry)
        if not items:
            raise ValueError(f"ScriptedResponder: empty script for model {model!r}")
        for item in items:
            if not isinstance(item, str):
                raise TypeError(f"ScriptedResponder: script items must be str, got {type(item).__name__} for {model!r}")
        return items

    @property
    def models(self) -> List[str]:
        return [m for m in self._entries if m is not self._DEFAULT_KEY]

    def __call__(self, request: Dict[str, Any], index: int) -> str:
        model = request.get("model")
        key: Any = model
        if key not in self._entries:
            if not self._has_default:
                raise UnknownModelError(
                    f"ScriptedResponder has no script for model {model!r} "
                    f"(known: {sorted(map(str, self.models))}) and no default"
                )
            key = self._DEFAULT_KEY
        entry = self._entries[key]
        with self._lock:
            self.calls[str(model)] = self.calls.get(str(model), 0) + 1
            if not callable(entry):
                pos = self._pos.get(key, 0)
                self._pos[key] = pos + 1
                return entry[min(pos, len(entry) - 1)]
        return entry(request, index)


# --------------------------------------------------------------------------- hostile answers

#: Keys whose string values (also inside lists under them) hostile_responder leaves alone:
#: names and identifiers an app matches exactly (compared lower-case, "-"/" " -> "_").
PROTECTED_KEYS = ("name", "names", "aspect", "aspects", "aspect_name", "selected", "selected_aspects",
                  "title", "id", "key", "label", "model", "role", "type", "answer", "choice", "option",
                  "letter")

_SCORE_LIKE_RE = re.compile(
    r"\s*[\[(*`\"']*\s*(?:(?:score|rating|grade)\s*[:=]?\s*)?[-+]?\d+(?:\.\d+)?"
    r"(?:\s*(?:/|out\s+of|of)\s*\d+(?:\.\d+)?)?\s*[\])*`\"']*\.?\s*", re.I)
_TAG_RES = (re.compile(r"(<START>)(.*?)(<END>)", re.S | re.I),
            re.compile(r"(<INS>)(.*?)(</INS>)", re.S | re.I))
_JSON_OPEN_RE = re.compile(r"[\[{]")
_MAX_JSON_STARTS = 64  # raw_decode attempts per answer (keeps bracket-heavy answers cheap)


def _norm_key(key: Any) -> str:
    return re.sub(r"[\s\-]+", "_", str(key).strip().lower())


class _HostileResponder:
    """See :func:`hostile_responder`.  Other attributes (``models``, ``calls``...) are
    forwarded to the inner responder."""

    def __init__(self, inner: "Responder", seed: int, protect_keys: Sequence[str]) -> None:
        self.inner = inner
        self.seed = seed
        self.protect_keys = frozenset(_norm_key(k) for k in protect_keys)

    def __getattr__(self, name: str) -> Any:
        if name == "inner":  # not yet set (e.g. during unpickling): avoid recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __call__(self, request: Dict[str, Any], index: int) -> str:
        text = self.inner(request, index)
        if not isinstance(text, str):
            return text  # the server reports the responder error
        return self.transform(text, index)

    # -- the transformation (pure and deterministic: depends on seed, index, text) --
    def _bits(self, index: int, salt: Any, text: str) -> int:
        key = f"{self.seed}\x00{index}\x00{salt}\x00{text}".encode("utf-8", "surrogatepass")
        return zlib.crc32(key)

    def _hostile(self, bits: int) -> str:
        parts = (MARKUP_TEXT, ESCAPE_TEXT) if bits & 1 else (ESCAPE_TEXT, MARKUP_TEXT)
        return " ".join(parts)

    def _decorate(self, text: str, index: int, salt: Any) -> str:
        bits = self._bits(index, salt, text)
        hostile = self._hostile(bits)
        return f"{hostile} {text}" if bits & 2 else f"{text} {hostile}"

    def transform(self, text: str, index: int = 0) -> str:
        # 1. tagged answers: inject inside every <START>...<END> / <INS>...</INS> pair
        counter = [0]

        def in_tag(m: "re.Match[str]") -> str:
            counter[0] += 1
            return m.group(1) + self._decorate(m.group(2), index, f"tag{counter[0]}") + m.group(3)

        tagged = text
        for tag_re in _TAG_RES:
            tagged = tag_re.sub(in_tag, tagged)
        if counter[0]:
            return tagged
        # 2. JSON objects (fenced or inside prose): inject into string values
        result = self._inject_json(text, index)
        if result is not None:
            return result
        # 3. plain text: append
        return f"{text}\n\n{self._hostile(self._bits(index, 'plain', text))}"

    def _inject_json(self, text: str, index: int) -> Optional[str]:
        """None if ``text`` holds no JSON container; else the text with every JSON
        container's injectable strings decorated (hostile text appended after the last
        container if none had any)."""
        decoder = json.JSONDecoder()
        out: List[str] = []
        pos = 0
        found = changed = False
        counter = [0]
        starts = 0
        search_from = 0
        while starts < _MAX_JSON_STARTS:
            m = _JSON_OPEN_RE.search(text, search_from)
            if m is None:
                break
            start = m.start()
            starts += 1
            try:
                obj, end = decoder.raw_decode(text, start)
            except (ValueError, RecursionError):
                search_from = start + 1
                continue
            found = True
            before = counter[0]
            new_obj = self._walk(obj, None, index, counter)
            if counter[0] != before:
                span = text[start:end]
                out.append(text[pos:start])
                out.append(json.dumps(new_obj, ensure_ascii=False, indent=2 if "\n" in span else None))
                pos = end
                changed = True
            search_from = end
        if not found:
            return None
        out.append(text[pos:])
        result = "".join(out)
        if not changed:  # e.g. {"score": 4}: nothing to carry it inside, so add it after
            result += "\n\n" + self._hostile(self._bits(index, "json", text))
        return result

    def _walk(self, node: Any, key: Optional[str], index: int, counter: List[int]) -> Any:
        if isinstance(node, dict):
            return {k: self._walk(v, _norm_key(k), index, counter) for k, v in node.items()}
        if isinstance(node, list):
            return [self._walk(v, key, index, counter) for v in node]
        if isinstance(node, str):
            if (not node.strip() or (key is not None and key in self.protect_keys)
                    or _SCORE_LIKE_RE.fullmatch(node)):
                return node
            counter[0] += 1
            return self._decorate(node, index, counter[0])
        return node  # numbers, booleans, null


def hostile_responder(inner: Optional["Responder"] = None, seed: int = 0, *,
                      protect_keys: Sequence[str] = PROTECTED_KEYS) -> "_HostileResponder":
    """Wrap responder ``inner`` (default :func:`ok_responder`) so its answers still do their
    job but carry :data:`MARKUP_TEXT` and :data:`ESCAPE_TEXT` where they survive parsing:

    * ``<START>...<END>`` / ``<INS>...</INS>`` answers: added inside every tag pair
      (tags, and text outside them, unchanged);
    * otherwise, JSON containers (whole answer, in a ```json fence or inside prose, found
      with ``json.JSONDecoder.raw_decode``): added to every string value; keys, numbers,
      booleans, null, empty strings, score-like strings ("4", "4/5", "Score: 4") and
      strings under :data:`PROTECTED_KEYS` (names such as selected aspects) are kept, so
      the JSON still parses with ``json.loads`` and scores/names stay valid.  A container
      whose values change is re-serialised (``indent=2`` if it spanned several lines);
      if no string could carry the text, it is appended after the answer instead;
    * plain text: appended after a blank line (a bare "B" or "4" answer becomes
      multi-line: use "Answer: B" style inner answers where that matters).

    Whether the hostile text goes before or after a value, and in which order, is
    derived from ``seed``, the choice index and the text: deterministic, thread-safe.
    ``.transform(text, index=0)`` applies the transformation to a string directly.
    """
    return _HostileResponder(inner or ok_responder, seed, protect_keys)


# --------------------------------------------------------------------------- hostile schedule

class _FaultSchedule:
    """Deterministic fault draws: draw k depends only on (rate, faults, seed, k)."""

    def __init__(self, rate: float, faults: Sequence[str], seed: int, model: Optional[str] = None) -> None:
        rate = float(rate)
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be within [0, 1], got {rate!r}")
        faults = tuple(str(f) for f in faults)
        if not faults:
            raise ValueError("faults must not be empty")
        bad = [f for f in faults if f not in FAULTS]
        if bad:
            raise ValueError(f"unknown fault(s) {bad}; expected names from {FAULTS}")
        self.rate = rate
        self.faults = faults
        self.seed = seed
        self.model = model
        self.draws = 0
        self._rng = random.Random(f"fake-llm-hostile:{seed}")

    def draw(self) -> Optional[str]:
        # always two draws per request, so draw k never depends on earlier outcomes
        u = self._rng.random()
        j = self._rng.randrange(len(self.faults))
        self.draws += 1
        return self.faults[j] if u < self.rate else None


def hostile_schedule(n: int, rate: float = 0.3, faults: Sequence[str] = HOSTILE_SCHEDULE_FAULTS,
                     seed: int = 0) -> List[Optional[str]]:
    """The first ``n`` draws (fault name or None) that ``srv.hostile(rate, faults, seed)``
    hands out, in request order."""
    sched = _FaultSchedule(rate, faults, seed)
    return [sched.draw() for _ in range(n)]


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256
    fake: "FakeLLMServer"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; stop() force-closes open connections
    server_version = "FakeLLM/1.0"
    server: _HTTPServer

    # -- connection tracking (so stop() can close idle keep-alive connections) --
    def setup(self) -> None:
        super().setup()
        self.server.fake._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.fake._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence
        pass

    # -- helpers --
    def _path(self) -> str:
        return self.path.split("?", 1)[0].rstrip("/") or "/"

    def _send(self, status: int, body: bytes, content_type: str = "application/json",
              headers: Optional[Mapping[str, str]] = None) -> bool:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            return True
        except OSError:
            self.close_connection = True
            return False

    def _send_json(self, status: int, obj: Any, headers: Optional[Mapping[str, str]] = None) -> bool:
        return self._send(status, json.dumps(obj).encode("utf-8"), headers=headers)

    def _drop(self) -> None:
        """Close the connection without sending any answer."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # -- endpoints --
    def do_GET(self) -> None:
        if self._path() in ("/v1/models", "/models"):
            self._send_json(200, self.server.fake._models_body())
        else:
            self._send_json(404, _error_body(f"Unknown path {self.path}", "invalid_request_error", "not_found"))

    def do_POST(self) -> None:
        fake = self.server.fake
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        if self._path() not in ("/v1/chat/completions", "/chat/completions"):
            self._send_json(404, _error_body(f"Unknown path {self.path}", "invalid_request_error", "not_found"))
            return
        if fake._stopping.is_set():
            self._drop()
            return
        fake._handle_completion(self, raw)


class FakeLLMServer:
    """Fake OpenAI-compatible chat-completions server on 127.0.0.1 (OS-chosen port).

    Public attributes (settable at runtime): ``responder``, ``latency`` (float
    seconds or callable(request)->float), ``timeout_sleep`` (seconds a "timeout"
    fault sleeps before dropping the connection, default 30).
    """

    def __init__(self, responder: Optional[Responder] = None, latency: Latency = 0.0,
                 port: int = 0, timeout_sleep: float = 30.0) -> None:
        self.responder: Responder = responder or ok_responder
        self.latency: Latency = latency
        self.timeout_sleep = float(timeout_sleep)
        self._requested_port = int(port)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._httpd: Optional[_HTTPServer] = None
        self._thread: Optional[threading.Thread] = None
        self._conns: set = set()
        self._faults: List[List[Any]] = []  # [fault, remaining, model]
        self._schedule: Optional[_FaultSchedule] = None  # hostile() random faults
        self._hang_remaining: Optional[int] = None
        self._hang_gen = 0
        self._blocked = 0
        self._requests: List[Dict[str, Any]] = []
        self._answered = 0
        self._in_flight = 0
        self._max_concurrency = 0

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "FakeLLMServer":
        if self._httpd is not None:
            raise RuntimeError("FakeLLMServer already started")
        self._stopping.clear()
        httpd = _HTTPServer((HOST, self._requested_port), _Handler)
        httpd.fake = self
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"FakeLLMServer:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Shut down quickly: cuts short latency/timeout sleeps, ends hangs, closes connections."""
        httpd = self._httpd
        if httpd is None:
            return
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        httpd.shutdown()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=2)
        with self._cond:  # let woken handlers finish their bookkeeping
            self._cond.wait_for(lambda: self._in_flight == 0, timeout=1.0)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> "FakeLLMServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._httpd is not None

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("FakeLLMServer not started")
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}/v1"

    # ------------------------------------------------------------------ faults
    def inject(self, fault: Union[str, int], count: int = 1, model: Optional[str] = None) -> None:
        """Queue ``fault`` for the next ``count`` requests matching ``model`` (None = any)."""
        fault = str(fault)
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; expected one of {FAULTS}")
        if count < 1:
            raise ValueError("count must be >= 1")
        with self._lock:
            self._faults.append([fault, int(count), model])

    def pending_faults(self) -> List[tuple]:
        with self._lock:
            return [(f, c, m) for f, c, m in self._faults]

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def hostile(self, rate: Optional[float] = 0.3, faults: Sequence[str] = HOSTILE_SCHEDULE_FAULTS,
                seed: int = 0, model: Optional[str] = None) -> None:
        """Random-fault schedule: every later chat request (matching ``model``; None = any)
        gets a fault drawn from ``faults`` with probability ``rate``, deterministically from
        ``seed`` and the request order (see :func:`hostile_schedule`).  Each call restarts
        the sequence.  Faults queued with :meth:`inject` take precedence (the request still
        consumes its draw).  ``hostile(None)`` or ``rate=0`` turns the schedule off."""
        if rate is None or float(rate) == 0.0:
            with self._lock:
                self._schedule = None
            return
        sched = _FaultSchedule(rate, faults, seed, model)
        with self._lock:
            self._schedule = sched

    @property
    def hostile_settings(self) -> Optional[Dict[str, Any]]:
        """{rate, faults, seed, model, draws} of the active hostile schedule, or None."""
        with self._lock:
            sc = self._schedule
            if sc is None:
                return None
            return {"rate": sc.rate, "faults": sc.faults, "seed": sc.seed, "model": sc.model,
                    "draws": sc.draws}

    def _draw_fault(self, model: Any) -> Optional[str]:
        with self._lock:
            sc = self._schedule
            if sc is None or (sc.model is not None and sc.model != model):
                return None
            return sc.draw()

    def _pop_fault(self, model: Any) -> Optional[str]:
        with self._lock:
            for i, entry in enumerate(self._faults):
                if entry[2] is None or entry[2] == model:
                    entry[1] -= 1
                    if entry[1] <= 0:
                        del self._faults[i]
                    return entry[0]
        return None

    # ------------------------------------------------------------------ hang
    def hang_after(self, k: int) -> None:
        """Let the next ``k`` requests through; every later one blocks (never answers)
        until :meth:`release` or :meth:`stop`.  With no faults injected this means the
        server answers exactly ``k`` more requests and then goes silent."""
        if k < 0:
            raise ValueError("k must be >= 0")
        with self._cond:
            self._hang_remaining = int(k)

    def release(self) -> None:
        """Disable hang mode; blocked requests proceed and are answered normally."""
        with self._cond:
            self._hang_remaining = None
            self._hang_gen += 1
            self._cond.notify_all()

    @property
    def blocked(self) -> int:
        """Number of requests currently blocked by hang_after()."""
        with self._lock:
            return self._blocked

    def _hang_gate(self) -> bool:
        """Returns True if the request blocked (hung) at some point."""
        with self._cond:
            if self._hang_remaining is None:
                return False
            if self._hang_remaining > 0:
                self._hang_remaining -= 1
                return False
            gen = self._hang_gen
            self._blocked += 1
            try:
                self._cond.wait_for(lambda: self._stopping.is_set() or self._hang_gen != gen)
            finally:
                self._blocked -= 1
            return True

    # ------------------------------------------------------------------ accounting
    @property
    def requests(self) -> List[Dict[str, Any]]:
        """Snapshot of request records: {model, messages, params, t_start, t_end, status,
        fault, hung}.  Times are time.monotonic(); status None = still in flight,
        0 = connection dropped without an HTTP answer."""
        with self._lock:
            return [dict(r) for r in self._requests]

    @property
    def answered(self) -> int:
        """Requests that got an HTTP 200 valid chat.completion (incl. empty/garbage-content and
        the huge/deep/markup/escapes/whitespace faults; not invalid-utf8 or nan)."""
        with self._lock:
            return self._answered

    @property
    def max_concurrency(self) -> int:
        with self._lock:
            return self._max_concurrency

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    def count(self, model: Optional[str] = None, status: Optional[int] = None) -> int:
        with self._lock:
            return sum(1 for r in self._requests
                       if (model is None or r["model"] == model)
                       and (status is None or r["status"] == status))

    def reset_stats(self) -> None:
        with self._lock:
            self._requests = []
            self._answered = 0
            self._max_concurrency = self._in_flight

    # ------------------------------------------------------------------ internals
    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)
        if add and self._stopping.is_set():
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _models_body(self) -> Dict[str, Any]:
        names = list(getattr(self.responder, "models", None) or []) or [DEFAULT_MODEL]
        return {"object": "list",
                "data": [{"id": n, "object": "model", "created": 0, "owned_by": "fake-llm"} for n in names]}

    def _sleep(self, seconds: float) -> bool:
        """Interruptible sleep; returns True if cut short by stop()."""
        if seconds and seconds > 0:
            return self._stopping.wait(seconds)
        return self._stopping.is_set()

    def _completion(self, request: Dict[str, Any], texts: List[str]) -> Dict[str, Any]:
        prompt_text = " ".join(_message_text(m) for m in request.get("messages") or [])
        p = estimate_tokens(prompt_text)
        c = sum(estimate_tokens(t) for t in texts)
        return {
            "id": "chatcmpl-" + uuid.uuid4().hex[:24],
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.get("model", DEFAULT_MODEL),
            "choices": [
                {"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
                for i, t in enumerate(texts)
            ],
            "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c},
        }

    def _handle_completion(self, h: _Handler, raw: bytes) -> None:
        try:
            body = json.loads(raw.decode("utf-8")) if raw else None
        except (UnicodeDecodeError, json.JSONDecodeError):
            body = None
        parsed_ok = isinstance(body, dict)
        if not parsed_ok:
            body = {}
        rec: Dict[str, Any] = {
            "model": body.get("model"),
            "messages": body.get("messages"),
            "params": {k: v for k, v in body.items() if k not in ("model", "messages")},
            "t_start": time.monotonic(), "t_end": None, "status": None, "fault": None, "hung": False,
        }
        with self._lock:
            self._requests.append(rec)
            self._in_flight += 1
            self._max_concurrency = max(self._max_concurrency, self._in_flight)
        resp: Optional[_Response] = None
        try:
            resp = self._respond(body, parsed_ok, rec, _auth_header(h.headers))
        finally:
            # Accounting is committed *before* the bytes go out, so a client that has
            # just received its answer always sees up-to-date stats; rolled back below
            # if the write demonstrably fails.
            with self._cond:
                rec["t_end"] = time.monotonic()
                rec["status"] = resp.status if resp is not None else NO_ANSWER
                if resp is not None and resp.valid:
                    self._answered += 1
                self._in_flight -= 1
                self._cond.notify_all()
        if resp is None:
            h._drop()
            return
        sent = h._send(resp.status, resp.body, resp.content_type, resp.headers)
        if not sent:
            with self._lock:
                rec["status"] = NO_ANSWER
                if resp.valid:
                    self._answered -= 1

    def _respond(self, body: Dict[str, Any], parsed_ok: bool, rec: Dict[str, Any],
                 auth: str = "") -> Optional["_Response"]:
        """Decide the answer; None means: drop the connection without answering."""
        def err(status: int, message: str, type_: str, code: Optional[str], param: Optional[str] = None,
                headers: Optional[Mapping[str, str]] = None) -> _Response:
            return _Response(status, json.dumps(_error_body(message, type_, code, param)).encode("utf-8"),
                             headers=dict(headers or {}))

        if not parsed_ok:
            return err(400, "Request body is not a valid JSON object.", "invalid_request_error", "invalid_json")
        if body.get("stream"):
            return err(400, "Streaming is not supported by the fake LLM server.", "invalid_request_error",
                       "unsupported_value", "stream")
        if not isinstance(body.get("messages"), list):
            return err(400, "'messages' must be a list.", "invalid_request_error", "invalid_type", "messages")
        n = body.get("n", 1)
        if n is None:
            n = 1
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            return err(400, f"Invalid 'n': {n!r}; must be an integer >= 1.", "invalid_request_error",
                       "invalid_value", "n")

        if self._hang_gate():
            rec["hung"] = True
            if self._stopping.is_set():
                return None

        latency = self.latency
        try:
            delay = float(latency(body) if callable(latency) else latency)
        except Exception as exc:  # noqa: BLE001
            return err(500, f"latency callable failed: {exc!r}", "server_error", "latency_error")
        if self._sleep(delay):
            return None

        fault = self._pop_fault(body.get("model"))
        drawn = self._draw_fault(body.get("model"))
        if fault is None:
            fault = drawn
        rec["fault"] = fault
        if fault == "429":
            return err(429, "Rate limit reached for requests (injected fault).", "rate_limit_error",
                       "rate_limit_exceeded", headers={"Retry-After": "0"})
        if fault == "500":
            return err(500, "The server had an error while processing your request (injected fault).",
                       "server_error", "internal_error")
        if fault == "503":
            return err(503, "The engine is currently overloaded, please try again later (injected fault).",
                       "server_error", "service_unavailable")
        if fault == "timeout":
            self._sleep(self.timeout_sleep)
            return None
        if fault == "garbage":
            return _Response(200, GARBAGE_BODY)  # claims JSON, is not
        if fault == "401-echo":
            return err(401, AUTH_ECHO_PREFIX + auth + AUTH_ECHO_SUFFIX, "invalid_request_error",
                       "invalid_api_key")
        if fault == "400-markup":
            return err(400, ERROR_MARKUP_TEXT, "invalid_request_error", "invalid_request")
        if fault == "404-model":
            return err(404, f"The model `{body.get('model')}` does not exist or you do not have access to it.",
                       "invalid_request_error", "model_not_found")
        if fault == "invalid-utf8":
            data = json.dumps(self._completion(body, [_UTF8_PLACEHOLDER] * n)).encode("utf-8")
            return _Response(200, data.replace(_UTF8_PLACEHOLDER.encode("ascii"), INVALID_UTF8_BYTES))
        if fault == "nan":
            completion = self._completion(body, [NAN_CONTENT] * n)
            completion["usage"] = {"prompt_tokens": float("nan"), "completion_tokens": float("inf"),
                                   "total_tokens": float("nan")}
            return _Response(200, json.dumps(completion).encode("utf-8"))  # allow_nan: bare NaN

        if fault == "garbage-content":
            texts = [GARBAGE_CONTENT] * n
        elif fault == "empty":
            texts = [""] * n
        elif fault in _CONTENT_FAULTS:
            texts = [_CONTENT_FAULTS[fault]] * n
        else:
            try:
                texts = []
                for i in range(n):
                    t = self.responder(body, i)
                    if not isinstance(t, str):
                        raise TypeError(f"responder returned {type(t).__name__}, expected str")
                    texts.append(t)
            except Exception as exc:  # noqa: BLE001
                return err(500, f"Fake LLM responder error: {type(exc).__name__}: {exc}", "server_error",
                           "responder_error")
        if self._stopping.is_set():
            return None
        return _Response(200, json.dumps(self._completion(body, texts)).encode("utf-8"), valid=True)


_CONTENT_FAULTS = {"huge": HUGE_CONTENT, "deep": DEEP_CONTENT, "markup": MARKUP_TEXT,
                   "escapes": ESCAPE_TEXT, "whitespace": WHITESPACE_CONTENT}


def _auth_header(headers: Any) -> str:
    """The request's Authorization header value (else api-key / x-api-key), verbatim.

    http.server decodes header bytes as latin-1; re-decode them as UTF-8 when they are."""
    value = ""
    for name in ("Authorization", "api-key", "x-api-key"):
        got = headers.get(name) if headers is not None else None
        if got is not None:
            value = got
            break
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


class _Response:
    __slots__ = ("status", "body", "content_type", "headers", "valid")

    def __init__(self, status: int, body: bytes, content_type: str = "application/json",
                 headers: Optional[Dict[str, str]] = None, valid: bool = False) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers or {}
        self.valid = valid  # HTTP 200 with a well-formed chat.completion


#: --method NAME -> the responder of tests/conftest.py answering like that method's roles
METHOD_RESPONDERS = {"drpo": "drpo_responder", "vapo": "vapo_responder",
                     "picaco": "picaco_responder"}


def method_responder(method: str) -> "Responder":
    """The scripted responder for `method`, imported lazily from the tests' conftest (it
    imports pytest, which the development environment has)."""
    here = os.path.dirname(os.path.abspath(__file__))
    if here not in sys.path:
        sys.path.insert(0, here)
    import conftest

    return getattr(conftest, METHOD_RESPONDERS[method])


def main(argv: Optional[Sequence[str]] = None) -> None:
    ap = argparse.ArgumentParser(description="Fake OpenAI-compatible chat-completions server (127.0.0.1 only).")
    ap.add_argument("--port", type=int, default=8911, help="port to bind (0 = OS-chosen); default 8911")
    ap.add_argument("--latency", type=float, default=0.0, help="seconds to sleep before each answer")
    ap.add_argument("--hostile", type=float, default=0.0, metavar="RATE",
                    help="random hostile-fault rate in [0, 1] (default 0 = off)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the hostile-fault schedule")
    ap.add_argument("--hostile-answers", action="store_true",
                    help="wrap answers with hostile_responder (markup and escape sequences)")
    ap.add_argument("--method", choices=sorted(METHOD_RESPONDERS), default=None,
                    help="answer like a base model, optimizer and evaluator of this method "
                         "(drpo also serves its baselines, picaco also OPRO and the fixed "
                         "baselines); default: every answer is \"ok\"")
    args = ap.parse_args(argv)

    def _interrupt(*_: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
    signal.signal(signal.SIGTERM, _interrupt)
    inner = method_responder(args.method) if args.method else ok_responder
    responder = (hostile_responder(inner, seed=args.seed) if args.hostile_answers
                 else None if inner is ok_responder else inner)
    with FakeLLMServer(responder=responder, latency=args.latency, port=args.port) as srv:
        if args.hostile:
            srv.hostile(args.hostile, seed=args.seed)
        print(f"Fake LLM serving at {srv.base_url}  (Ctrl-C to stop)", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("\nstopping", flush=True)


if __name__ == "__main__":
    main()
