"""The one way out to language models: litellm behind roles, limits, retries and a cache.

Roles are `base` (the model being aligned), `optimizer` and `evaluator`. Every call
goes through `Gateway.call` (plain text) or `Gateway.ask` (an answer that must parse):

* concurrency: one asyncio semaphore per endpoint (api_base, else the provider prefix);
* a role that lists several deployments is served by a litellm Router (engine.deployments:
  load balancing, rpm/tpm limits, cooldowns, failover); everything else here is unchanged;
* retries with exponential backoff and jitter on 429, 5xx, timeouts, connection errors and
  unreadable bodies; a Retry-After header is honoured. (litellm's own `num_retries`
  retries every exception on a fixed schedule and hides the attempts from us, so the loop
  here is ours; each attempt is still a plain `litellm.acompletion`.)
* a persistent response cache (diskcache) keyed by everything that shapes the answer plus a
  sample index and a parse-attempt index, so M samples differ yet a resumed or repeated run
  replays them without paying again;
* token and cost accounting per role (cost from litellm's price table) and a call log;
* structured answers (`ask` with the answer's pydantic model from engine.schemas): its JSON
  schema goes as `response_format` where the role's `structured` setting allows (see
  `structured_mode`); a provider that refuses one with HTTP 400 is asked again without it,
  and from then on. An answer that does not parse is asked again `parse_retries` times,
  each retry with its own seed and a raised temperature (`retry_temperature`), for every
  model: at temperature 0 the same request returns the same text.

Answers and errors are untrusted. Empty or whitespace-only content is an error, retried
like a 5xx and never cached. A non-retryable provider error (400, 401, 403, 404 / model
not found) fails at once with one line naming the role and the model, and that role's
other calls in the same step are not sent (`begin_step` clears this). Every key value the
gateway can know is redacted from answers and errors before they are recorded (see
engine.secrets). A cache write that fails (disk full, database error) keeps the paid
answer in memory; `flush_cache` writes it at the next save.

A call never raises on provider trouble: it returns a `CallResult` with `error` set.
"""
from __future__ import annotations

import asyncio
import contextvars
import hashlib
import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .deployments import Deployments, MissingKey
from .deployments import retry_after as _router_retry_after
from .deployments import unavailable as _router_unavailable
from .secrets import Redactor, key_env_names

ROLES = ("base", "optimizer", "evaluator", "judge")  # judge: the held-out evaluation's

# A retry of a failed node runs with its retry count here: a structured answer whose
# earlier attempts were all unparseable (and so cached) is asked again with new attempt
# indices, while answers that did parse, and calls that failed in transport (never cached),
# replay or are re-sent as before.
RETRY_ROUND: contextvars.ContextVar[int] = contextvars.ContextVar("retry_round", default=0)


class CacheUnavailable(RuntimeError):
    """The response cache cannot be opened or written: a store problem (exit 3)."""


class _EmptyAnswer(Exception):
    """HTTP 200 whose content is empty or only whitespace: retried like a 5xx."""


# Provider errors that no retry can fix: the request, the key or the model is wrong.
FATAL_STATUS = {400: "bad request", 401: "authentication failed", 403: "permission denied",
                404: "model or endpoint not found"}


class CallFailed(Exception):
    """A call (or all its parse attempts) failed; the message is readable by a person."""

    def __init__(self, message: str, record: dict | None = None):
        super().__init__(message)
        self.record = record


@dataclass
class CallResult:
    texts: list[str]
    record: dict
    error: str | None = None

    @property
    def text(self) -> str:
        return self.texts[0] if self.texts else ""


@dataclass
class RoleUsage:
    calls: int = 0          # logical calls (one per slot of the method's schedule)
    requests: int = 0       # HTTP requests actually sent, retries included
    cached: int = 0         # answers served from the cache
    retries: int = 0        # transport retries
    parse_retries: int = 0  # extra samples asked for because an answer did not parse
    errors: int = 0         # logical calls that ended in an error
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


async def gather_or_cancel(coros) -> list:
    """Like asyncio.gather, but when one fails the others are cancelled (and awaited) before
    the error propagates: no call keeps running after the step that started it."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def _litellm():
    """Import litellm lazily (it takes seconds) with the network price fetch disabled."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.drop_params = True          # providers that lack `seed` or `n` just ignore them
    litellm.suppress_debug_info = True
    litellm.telemetry = False
    from .local_model import register

    register(litellm)  # `local/smollm2`: the embedded model, as a litellm provider
    return litellm


def _fatal_status(exc: BaseException) -> int | None:
    """The HTTP status of a provider error that no retry can fix, else None."""
    import litellm

    status = getattr(exc, "status_code", None)
    if isinstance(status, int) and status in FATAL_STATUS:
        return status
    for name, code in (("AuthenticationError", 401), ("PermissionDeniedError", 403),
                       ("NotFoundError", 404), ("BadRequestError", 400)):
        cls = getattr(litellm, name, None)
        if isinstance(cls, type) and isinstance(exc, cls):
            return code
    return None


def _retryable(exc: BaseException) -> bool:
    import litellm

    if isinstance(exc, (asyncio.TimeoutError, json.JSONDecodeError, UnicodeDecodeError,
                        _EmptyAnswer)):
        return True
    if _router_unavailable(exc):  # no deployment free right now; nothing was sent
        return True
    if _fatal_status(exc) is not None:
        return False
    transient = tuple(
        cls for cls in (
            getattr(litellm, name, None) for name in (
                "RateLimitError", "Timeout", "APIConnectionError", "InternalServerError",
                "ServiceUnavailableError", "BadGatewayError", "APIResponseValidationError")
        ) if isinstance(cls, type)
    )
    if isinstance(exc, transient):
        return True
    status = getattr(exc, "status_code", None)
    if isinstance(exc, getattr(litellm, "APIError", ())) and (status is None or status >= 500):
        return True
    return False


def _content(choice: Any) -> str:
    message = getattr(choice, "message", None)
    content = getattr(message, "content", None) if message is not None else None
    return content if isinstance(content, str) else ""


def _retry_after(exc: BaseException) -> float | None:
    wait = _router_retry_after(exc)  # every deployment cooling down: wait for the cooldown
    if wait is not None:
        return wait
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    try:
        return max(0.0, float(headers.get("retry-after")))
    except (TypeError, ValueError):
        return None


def _short_error(exc: BaseException) -> str:
    if isinstance(exc, _EmptyAnswer):
        return "empty answer (HTTP 200 with no content)"
    text = f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split())
    return text[:300]


def _check_failed(exc: ValueError) -> str:
    """A short reason for a check that failed outside engine.parsing (pydantic's, say)."""
    try:
        from pydantic import ValidationError

        if isinstance(exc, ValidationError):
            from .schemas import reason_of

            return reason_of(exc)
    except ImportError:
        pass
    return " ".join(str(exc).split())[:200] or type(exc).__name__


RETRY_TEMPERATURE_STEP = 0.3  # added per parse retry, up to 1.0 (never lowered)


def retry_temperature(temperature: float, attempt: int) -> float:
    """The temperature of parse attempt `attempt`: at temperature 0 a retry would return the
    same unparseable answer, so each retry samples hotter (and has its own seed)."""
    if attempt <= 0:
        return temperature
    return max(temperature, min(1.0, round(temperature + RETRY_TEMPERATURE_STEP * attempt, 4)))


def _count(value: Any) -> int:
    """A token count from a provider's usage block: garbage (NaN, strings, negatives) is 0."""
    try:
        number = float(value or 0)
    except (TypeError, ValueError):
        return 0
    if not math.isfinite(number) or number < 0:
        return 0
    return int(min(number, 10 ** 12))


class Gateway:
    """Roles -> litellm calls with limits, retries, cache and accounting."""

    def __init__(self, models: dict, settings: dict, cache_dir: str | Path | None = None,
                 seed: int = 0, on_event: Callable[[dict], None] | None = None):
        self.models = models
        self.settings = settings
        self.seed = seed
        self.on_event = on_event
        self.usage = {role: RoleUsage() for role in ROLES if role in models}
        self.log: list[dict] = []
        self._semaphores: dict[tuple, asyncio.Semaphore] = {}
        self.redactor = Redactor(key_env_names(models))
        self.deployments = Deployments(models, settings)  # roles served by a litellm Router
        self._fatal: dict[str, str] = {}      # role -> reason; cleared by begin_step
        # (model, api_base, response_format type) a provider refused (HTTP 400) -> the error
        self.format_refused: dict[tuple, str] = {}
        self._schema_support: dict[str, bool] = {}  # litellm.supports_response_schema
        self._pending: dict[str, dict] = {}   # paid answers the cache could not take yet
        self._cache = None
        if cache_dir is not None and settings.get("cache", True):
            import diskcache

            try:
                self._cache = diskcache.Cache(str(cache_dir))
            except Exception as exc:  # read-only or full disk, a broken database file
                raise CacheUnavailable(f"the response cache in {cache_dir} cannot be opened "
                                       f"({_short_error(exc)})") from None
        self._next_id = 0

    # ------------------------------------------------------------------ state

    def export_state(self) -> dict:
        return {"usage": {r: u.to_dict() for r, u in self.usage.items()}, "next_id": self._next_id}

    def import_state(self, state: dict) -> None:
        fields = set(RoleUsage().__dict__)
        for role, data in (state.get("usage") or {}).items():
            if role in self.usage and isinstance(data, dict):
                self.usage[role] = RoleUsage(**{k: v for k, v in data.items()
                                                if k in fields and isinstance(v, (int, float))})
        next_id = state.get("next_id", 0)
        self._next_id = next_id if isinstance(next_id, int) else 0

    def close(self) -> None:
        self.deployments.close()
        if self._cache is not None:
            try:
                self._cache.close()
            except Exception:
                pass

    def begin_step(self) -> None:
        """A new step (or operation): roles stopped by a non-retryable error may call again."""
        self._fatal.clear()

    # ------------------------------------------------------------------ cache

    def _cache_get(self, key: str) -> dict | None:
        if key in self._pending:
            return self._pending[key]
        if self._cache is None:
            return None
        try:
            return self._cache.get(key)
        except Exception:  # an unreadable entry or database: ask the provider again
            return None

    def _cache_set(self, key: str, value: dict) -> None:
        if self._cache is None:
            return
        try:
            self._cache.set(key, value)
        except Exception:  # disk full, database error: keep the paid answer in memory
            self._pending[key] = value

    @property
    def pending_cache_writes(self) -> int:
        return len(self._pending)

    def flush_cache(self) -> None:
        """Write the answers the cache could not take; raise CacheUnavailable if it still can't."""
        if not self._pending or self._cache is None:
            return
        for key in list(self._pending):
            try:
                self._cache.set(key, self._pending[key])
            except Exception as exc:
                raise CacheUnavailable(f"the response cache cannot be written "
                                       f"({_short_error(exc)}); {len(self._pending)} paid "
                                       f"answers are kept in the session only") from None
            del self._pending[key]

    # ------------------------------------------------------------------ calls

    def _endpoint(self, role: str) -> str:
        if role in self.deployments:
            return self.deployments.endpoint(role)
        cfg = self.models[role]
        return cfg.get("api_base") or (cfg["model"] or "").split("/", 1)[0]

    def _semaphore(self, endpoint: str) -> asyncio.Semaphore:
        # one per endpoint and event loop: a semaphore is bound to the loop it first waits on
        key = (id(asyncio.get_running_loop()), endpoint)
        if key not in self._semaphores:
            # a role's deployments: `concurrency` each, spread by the router
            size = self.settings["concurrency"] * self.deployments.width(endpoint)
            self._semaphores[key] = asyncio.Semaphore(size)
        return self._semaphores[key]

    def cache_key(self, role: str, messages: list[dict], sample: int, attempt: int, n: int,
                  extra: dict) -> str:
        cfg = self.models[role]
        payload = {
            "model": cfg["model"], "api_base": cfg.get("api_base"),
            "temperature": cfg["temperature"], "max_tokens": cfg["max_tokens"],
            "extra": cfg.get("extra", {}), "messages": messages, "n": n,
            "sample": sample, "attempt": attempt, "call": extra, "seed": self.seed,
        }
        blob = json.dumps(payload, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    async def call(self, role: str, messages: list[dict], *, purpose: str, node: str | None = None,
                   sample: int = 0, attempt: int = 0, n: int = 1, stop: list[str] | None = None,
                   response_format: dict | None = None, count: bool = True,
                   temperature: float | None = None) -> CallResult:
        """One completion for `role`. Never raises for provider trouble: see `.error`.

        `count=False` marks a parse retry: it is not a new slot in the method's schedule.
        """
        cfg = self.models[role]
        usage = self.usage[role]
        if count:
            usage.calls += 1
        else:
            usage.parse_retries += 1
        self._next_id += 1
        record = {
            "id": f"c{self._next_id}", "role": role, "model": cfg["model"], "purpose": purpose,
            "node": node, "sample": sample, "attempt": attempt, "cached": False, "requests": 0,
            "tokens_in": 0, "tokens_out": 0, "cost": 0.0, "latency": 0.0, "error": None,
            "t": time.time(),
        }
        self._emit({"kind": "call_started", "call": record["id"], "role": role,
                    "purpose": purpose, "node": node})
        if attempt > 0:  # a parse retry: another sample, not the same greedy answer again
            temperature = retry_temperature(
                cfg["temperature"] if temperature is None else temperature, attempt)
        call_extra = {"stop": stop, "response_format": response_format}
        if temperature is not None:  # a per-call override (sampling), part of the cache key
            call_extra["temperature"] = temperature
        key = self.cache_key(role, messages, sample, attempt, n, call_extra)
        texts: list[str] | None = None
        hit = self._cache_get(key)
        if hit is not None and isinstance(hit.get("texts"), list) and hit["texts"] \
                and all(isinstance(t, str) and t.strip() for t in hit["texts"]):
            texts = hit["texts"]
            record.update(cached=True, tokens_in=_count(hit.get("tokens_in")),
                          tokens_out=_count(hit.get("tokens_out")))
            usage.cached += 1
        error = None
        if texts is None and role in self._fatal:
            texts, error = [], f"not sent: {self._fatal[role]}"
        elif texts is None:
            if temperature is not None:
                cfg = {**cfg, "temperature": temperature}
            texts, error = await self._request(role, cfg, messages, sample, attempt, n, stop,
                                               response_format, record)
            if error is not None and record.pop("format_rejected", False):
                texts, error = await self._without_format(role, cfg, messages, sample, attempt,
                                                          n, stop, response_format, record, error)
            if error is None:
                self._cache_set(key, {"texts": texts, "tokens_in": record["tokens_in"],
                                      "tokens_out": record["tokens_out"]})
        if error:
            usage.errors += 1
        record["error"] = error
        self.log.append(record)
        self._emit({"kind": "call_finished", "call": record["id"], "role": role,
                    "purpose": purpose, "node": node, "cached": record["cached"],
                    "tokens_in": record["tokens_in"], "tokens_out": record["tokens_out"],
                    "cost": record["cost"], "latency": record["latency"], "error": error})
        return CallResult(texts=texts or [], record=record, error=error)

    async def _request(self, role, cfg, messages, sample, attempt, n, stop, response_format,
                       record) -> tuple[list[str], str | None]:
        if not cfg.get("model"):
            return [], f"no model configured for role {role!r}"
        kwargs: dict[str, Any] = {
            **cfg.get("extra", {}),  # first: the engine's own keys below always win
            "model": cfg["model"], "messages": messages, "temperature": cfg["temperature"],
            "max_tokens": cfg["max_tokens"], "n": n,
            "timeout": cfg.get("timeout") or self.settings["timeout"],
            "num_retries": 0, "max_retries": 0,
            # providers that accept a seed get one derived from the session's seed
            "seed": (self.seed * 1_000_003 + sample * 7919 + attempt) % (2 ** 31),
        }
        if n == 1:
            kwargs.pop("n")
        if cfg.get("api_base"):
            kwargs["api_base"] = cfg["api_base"]
        if cfg.get("api_key_env"):
            key = os.environ.get(cfg["api_key_env"])
            if not key:
                return [], f"environment variable {cfg['api_key_env']} is not set (role {role})"
            kwargs["api_key"] = key
        if stop:
            kwargs["stop"] = stop
        if response_format:
            kwargs["response_format"] = response_format
        routed = role in self.deployments
        if routed:
            try:
                self.deployments.router(role)  # built at the role's first call: keys read now
            except MissingKey as exc:
                return [], str(exc)
            except Exception as exc:  # litellm refused the model list
                return [], self.redactor.redact(f"deployments of role {role}: {_short_error(exc)}")
        litellm = _litellm()
        usage = self.usage[role]
        retries = self.settings["retries"]
        last_error = None
        started = time.monotonic()
        async with self._semaphore(self._endpoint(role)):
            for i in range(retries + 1):
                record["requests"] += 1
                usage.requests += 1
                try:
                    if role in self._fatal:  # a sibling call hit a non-retryable error
                        last_error = f"not sent: {self._fatal[role]}"
                        break
                    if routed:
                        response = await self.deployments.acompletion(role, kwargs)
                        tried = self.deployments.note(response, record)  # failed-over first
                        record["requests"] += tried
                        usage.requests += tried
                    else:
                        response = await litellm.acompletion(**kwargs)
                    texts = [self.redactor.redact(_content(c)) for c in response.choices]
                    self._account(role, response, record)
                    if not texts or any(not t.strip() for t in texts):
                        raise _EmptyAnswer()
                    record["latency"] = round(time.monotonic() - started, 4)
                    return texts, None
                except Exception as exc:  # provider trouble of any kind
                    last_error = self.redactor.redact(_short_error(exc))
                    status = _fatal_status(exc)
                    if status is not None:
                        last_error = (f"{role} model {cfg['model']}: {FATAL_STATUS[status]} "
                                      f"(HTTP {status}): {last_error}")[:400]
                        if status == 400 and response_format:  # `call` asks again without it
                            record["format_rejected"] = True
                            break
                        self._fatal.setdefault(role, last_error)
                        break
                    if i >= retries or not _retryable(exc):
                        break
                    usage.retries += 1
                    wait = _retry_after(exc)
                    if wait is None:
                        base = self.settings["backoff"] * (2 ** i)
                        wait = base * (0.5 + random.random())
                    await asyncio.sleep(min(wait, self.settings["max_backoff"]))
        record["latency"] = round(time.monotonic() - started, 4)
        return [], last_error

    def _account(self, role: str, response: Any, record: dict) -> None:
        usage = self.usage[role]
        u = getattr(response, "usage", None)
        tin = _count(getattr(u, "prompt_tokens", 0))
        tout = _count(getattr(u, "completion_tokens", 0))
        cost = 0.0
        try:
            cost = float(_litellm().completion_cost(completion_response=response) or 0.0)
        except Exception:  # unknown model: no price in the table
            cost = 0.0
        if not math.isfinite(cost) or cost < 0:
            cost = 0.0
        record.update(tokens_in=tin, tokens_out=tout, cost=cost)
        usage.tokens_in += tin
        usage.tokens_out += tout
        usage.cost += cost

    async def ask(self, role: str, messages: list[dict], parse: Callable[[str], Any], *,
                  purpose: str, node: str | None = None, sample: int = 0,
                  schema: dict | None = None, stop: list[str] | None = None,
                  temperature: float | None = None,
                  retries: int | None = None) -> tuple[Any, dict]:
        """A call whose answer must parse. Retries with fresh samples (each with its own
        seed and a raised temperature), then raises CallFailed. `retries`: how many, instead
        of the gateway's parse_retries.

        `schema` (the answer's pydantic model from engine.schemas, or a JSON schema) goes as
        `response_format` where the role's `structured` setting says so (see
        `response_format`); the meta-prompt carries its own format instructions, and every
        answer is parsed robustly either way. Returns (parsed value, record of the call).
        """
        from .parsing import ParseError

        response_format = None if schema is None else self.response_format(role, schema, purpose)

        reasons = []
        record: dict | None = None
        per_round = (self.settings["parse_retries"] if retries is None else retries) + 1
        # a retried node's earlier rounds replay from the cache; its last round asks anew
        for attempt in range(per_round * (RETRY_ROUND.get() + 1)):
            result = await self.call(role, messages, purpose=purpose, node=node, sample=sample,
                                     attempt=attempt, response_format=response_format, stop=stop,
                                     count=(attempt == 0), temperature=temperature)
            record = result.record
            if result.error:
                raise CallFailed(f"{purpose}: {result.error}", record)
            try:
                return parse(result.text), record
            except ValueError as exc:  # ParseError, or a check that failed (ValidationError)
                reason = str(exc) if isinstance(exc, ParseError) else _check_failed(exc)
                reasons.append(reason)
                record["error"] = f"unparseable answer: {reason}"
        self.usage[role].errors += 1
        raise CallFailed(f"{purpose}: answer did not parse after {len(reasons)} tries "
                         f"({'; '.join(dict.fromkeys(reasons))})", record)

    def one_per_call(self, role: str) -> bool:
        """Whether this role's model gives one answer per call (the embedded model): n samples
        are then n calls."""
        from .local_model import is_embedded

        return is_embedded(self.models[role].get("model") or "")

    async def samples(self, role: str, messages: list[dict], n: int, *, purpose: str,
                      node: str | None = None, sample: int = 0,
                      temperature: float | None = None) -> tuple[list[str], list[dict], str | None]:
        """n sampled answers: one call with n choices, or n calls where a model gives one."""
        if n > 1 and self.one_per_call(role):
            results = await asyncio.gather(*(
                self.call(role, messages, purpose=purpose, node=node, sample=sample * 1000 + i,
                          temperature=temperature) for i in range(n)))
            error = next((r.error for r in results if r.error), None)
            return [t for r in results for t in r.texts], [r.record for r in results], error
        result = await self.call(role, messages, purpose=purpose, node=node, sample=sample, n=n,
                                 temperature=temperature)
        return result.texts, [result.record], result.error

    def structured(self, role: str) -> bool:
        """Whether this role's structured answers go with a response_format."""
        return self.structured_mode(role) is not None

    def structured_mode(self, role: str) -> str | None:
        """What this role's model is sent for a structured answer: "json_schema",
        "json_object" or None.

        The role's `structured` setting decides: "off" sends nothing, "json_schema" and
        "json_object" send that, and "auto" (the default) sends the JSON schema to the
        embedded model (its grammar) and to every model for which
        `litellm.supports_response_schema` says yes, else nothing. A provider that refused
        a response_format with HTTP 400 (and answered without one) gets none for the rest
        of the run.
        """
        from .local_model import is_embedded

        cfg = self.models[role]
        mode = cfg.get("structured") or "auto"
        model = cfg.get("model") or ""
        if mode == "off" or not model:
            return None
        if mode == "auto":
            if is_embedded(model):
                mode = "json_schema"
            elif self._supports_schema(model):
                mode = "json_schema"
            else:
                return None
        if (model, cfg.get("api_base"), mode) in self.format_refused:
            return None
        return mode

    def _supports_schema(self, model: str) -> bool:
        if model not in self._schema_support:
            try:
                support = bool(_litellm().supports_response_schema(model=model))
            except Exception:  # an unknown provider: litellm cannot say
                support = False
            self._schema_support[model] = support
        return self._schema_support[model]

    def response_format(self, role: str, schema: Any, name: str) -> dict | None:
        """The response_format for an answer described by `schema` (a pydantic model or a
        JSON schema) from this role's model, or None (see `structured_mode`)."""
        from .schemas import response_format

        mode = self.structured_mode(role)
        return None if mode is None else response_format(schema, name, mode)

    async def _without_format(self, role, cfg, messages, sample, attempt, n, stop,
                              response_format, record, error) -> tuple[list[str], str | None]:
        """The provider refused a request with a response_format (HTTP 400): the same request
        without one. If that is answered, the role's model gets no response_format of that
        kind for the rest of the run (it is parsed from the text as any answer is)."""
        texts, again = await self._request(role, cfg, messages, sample, attempt, n, stop, None,
                                           record)
        if again is not None:
            return texts, again
        where = (cfg.get("model"), cfg.get("api_base"), response_format.get("type"))
        if where not in self.format_refused:
            self.format_refused[where] = error
            self._emit({"kind": "warning", "role": role, "node": record.get("node"),
                        "message": f"{role} model {cfg.get('model')} refused a "
                                   f"{response_format.get('type')} response_format; its "
                                   f"structured answers are asked without one from now on"})
        return texts, None

    def _emit(self, event: dict) -> None:
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:
                pass  # a broken listener must not break a call

    def parse_first_time(self) -> float | None:
        """Share of structured calls whose first answer parsed (None before any)."""
        first = [r for r in self.log if r["attempt"] == 0 and r["purpose"] != "answer"]
        if not first:
            return None
        bad = sum(1 for r in first if (r.get("error") or "").startswith("unparseable"))
        return round(1 - bad / len(first), 4)

    def totals(self) -> dict:
        return {
            "calls": {r: u.calls for r, u in self.usage.items()},
            "cost": round(sum(u.cost for u in self.usage.values()), 6),
            "tokens": {r: {"in": u.tokens_in, "out": u.tokens_out} for r, u in self.usage.items()},
        }
