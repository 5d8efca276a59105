"""Several deployments behind one role, served by litellm's Router.

A role may list deployments instead of one endpoint::

    [models.base]
    model = "openai/gpt-4o-mini"      # optional: the role's logical model (see below)
    [[models.base.deployments]]
    model = "openai/gpt-4o-mini"
    api_base = "https://llm-eu.example.com/v1"
    api_key_env = "EU_LLM_KEY"
    rpm = 500
    [[models.base.deployments]]
    model = "openai/gpt-4o-mini"
    api_key_env = "OPENAI_API_KEY"

Each deployment: `model` (required), `api_base`, `api_key_env`, `rpm`, `tpm` (optional).
The role's own `model` is its logical name: the call log shows it, the response cache keys
on it (an answer is reused whichever deployment gave it), and cost estimates price it. Left
out, it is the first deployment's model. A role with deployments sets `api_base` and
`api_key_env` on each deployment, never on the role; `[models.default]` lists none.

Who does what:

* the Router picks a deployment (at random, weighted by rpm where given: deployments
  without one are then spares), skips the deployments at their rpm limit this minute, and
  when an attempt fails tries another deployment at once. A deployment that fails (5xx,
  429, timeout, connection refused, 401, 404) is cooled down: left out for COOLDOWN_SECONDS
  after ALLOWED_FAILS + 1 failures. When a deployment sets `tpm`, routing goes by usage
  instead (litellm's usage-based routing keeps every deployment under its rpm and tpm; it
  has no failover, so the Router retries up to N - 1 times, at once and only while a
  deployment is left that is not cooling down: the same effect).
* the gateway keeps everything else: concurrency ([gateway] concurrency per deployment, so
  N x concurrency for the role), its retries with backoff when every deployment failed
  (the Router never waits before trying again, and the attempts it made are added to the
  call's `requests`), the cache, accounting (tokens from the answer, cost from the price
  of the deployment that answered), and the redaction of keys.
* here: a call that finds every deployment at its rpm or tpm limit waits for the next
  minute (at most THROTTLE_WAITS times), since a limit throttles rather than fails; a call
  that finds every deployment cooling down is a retryable error whose Retry-After is the
  cooldown.

Keys are read from the named environment variables when a role's router is built (at its
first call), kept only inside that in-memory router, and never written to the config, the
session, the call log or an error; `key_env_names` (engine.secrets) lists the variables so
their values are redacted wherever they might be echoed.
"""
from __future__ import annotations

import asyncio
import json
import math
import os
import re
import time
from typing import Any

from .config import ConfigError

MAX_DEPLOYMENTS = 16
DEPLOYMENT_KEYS = ("model", "api_base", "api_key_env", "rpm", "tpm")
# (lowest, highest): rpm and tpm are per minute and per deployment.
DEPLOYMENT_LIMITS = {"rpm": (1, 10_000_000), "tpm": (1, 10_000_000_000)}

ALLOWED_FAILS = 0        # a deployment is cooled down at its first failure...
COOLDOWN_SECONDS = 30.0  # ...for this long; the other deployments carry the calls meanwhile
THROTTLE_WAITS = 5       # next-minute waits for a call that finds every deployment at its limit

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# --------------------------------------------------------------------------- config

def check_role_table(table: dict, where: str) -> list[dict]:
    """The `deployments` of one [models.*] table, checked; raises ConfigError in one line."""
    if where == "models.default":
        raise ConfigError("[models.default] cannot list deployments; list them under a role "
                          "([[models.base.deployments]], ...)")
    for key in ("api_base", "api_key_env"):
        if table.get(key) is not None:
            raise ConfigError(f"[{where}] {key}: a role with deployments sets it on each "
                              f"deployment")
    return check_deployments(table["deployments"], where)


def check_deployments(value: Any, where: str) -> list[dict]:
    name = f"{where}.deployments"
    if not isinstance(value, list) or not value:
        raise ConfigError(f"[[{name}]] must be a list of tables (each with a model), "
                          f"got {_kind(value)}")
    if len(value) > MAX_DEPLOYMENTS:
        raise ConfigError(f"[[{name}]]: at most {MAX_DEPLOYMENTS} deployments, got {len(value)}")
    out: list[dict] = []
    seen: dict[tuple, int] = {}
    for i, item in enumerate(value, 1):
        here = f"{name}[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{here} must be a table, got {_kind(item)}")
        for key in item:
            if key not in DEPLOYMENT_KEYS:
                raise ConfigError(f"unknown key {_show(key)} in {here}; allowed: "
                                  f"{', '.join(DEPLOYMENT_KEYS)}")
        model = item.get("model")
        if not isinstance(model, str) or not model.strip():
            raise ConfigError(f"{here}.model must be a non-empty string (a litellm model)")
        dep: dict[str, Any] = {"model": model.strip()}
        api_base = item.get("api_base")
        if api_base is not None:
            if not isinstance(api_base, str) or not api_base.strip():
                raise ConfigError(f"{here}.api_base must be a non-empty string, got "
                                  f"{_kind(api_base)}")
            dep["api_base"] = api_base.strip()
        env = item.get("api_key_env")
        if env is not None:
            # the value is never shown: someone may have pasted the key itself here
            if not isinstance(env, str) or not _ENV_NAME.match(env):
                raise ConfigError(f"{here}.api_key_env must name an environment variable "
                                  f"(letters, digits, underscores), not hold the key itself")
            dep["api_key_env"] = env
        for key, (lo, hi) in DEPLOYMENT_LIMITS.items():
            number = item.get(key)
            if number is None:
                continue
            if isinstance(number, bool) or not isinstance(number, int):
                raise ConfigError(f"{here}.{key} must be a whole number, got {_show(number)}")
            if not lo <= number <= hi:
                raise ConfigError(f"{here}.{key} must be between {lo:,} and {hi:,}, "
                                  f"got {_show(number)}")
            dep[key] = number
        ident = (dep["model"], dep.get("api_base"), dep.get("api_key_env"))
        if ident in seen:
            raise ConfigError(f"{here} repeats {name}[{seen[ident]}] (same model, api_base "
                              f"and api_key_env)")
        seen[ident] = i
        out.append(dep)
    return out


def role_settings(table: dict) -> dict:
    """What a role with deployments sets over its merged settings: its logical model (the
    table's own `model`, else the first deployment's), no single endpoint, the deployments."""
    deployments = table["deployments"]
    return {"model": table.get("model") or deployments[0]["model"], "api_base": None,
            "api_key_env": None, "deployments": deployments}


def _show(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"a number ({_show(value)})"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an empty list" if not value else "a list"
    if isinstance(value, dict):
        return "a table"
    return "null" if value is None else f"a {type(value).__name__}"


# --------------------------------------------------------------------------- runtime

class MissingKey(Exception):
    """A deployment names a key variable that is not set."""


def seconds_to_next_window() -> float:
    """Until the next minute (litellm counts rpm and tpm per calendar minute), plus a margin."""
    return 60.0 - (time.time() % 60.0) + 0.25


def throttled(exc: BaseException) -> bool:
    """Whether the Router refused a call because every deployment is at its rpm/tpm limit
    (nothing was sent), as opposed to every deployment cooling down."""
    name = type(exc).__name__
    if name == "RouterRateLimitErrorBasic":
        return True
    if name == "RouterRateLimitError":
        return not getattr(exc, "all_deployments_in_cooldown", False)
    return name == "RateLimitError" and "No deployments available" in str(exc) \
        and getattr(exc, "response", None) is None


def unavailable(exc: BaseException) -> bool:
    """A Router refusal (no deployment available now): retryable, nothing was sent."""
    return type(exc).__name__ in ("RouterRateLimitError", "RouterRateLimitErrorBasic")


def retry_after(exc: BaseException) -> float | None:
    """The wait a Router refusal asks for: the cooldown when every deployment cools down."""
    if type(exc).__name__ == "RouterRateLimitError" \
            and getattr(exc, "all_deployments_in_cooldown", False):
        wait = getattr(exc, "cooldown_time", None)
        if isinstance(wait, (int, float)) and math.isfinite(wait) and wait >= 0:
            return float(wait)
    return None


def _spec_key(deployments: list[dict]) -> str:
    return json.dumps(deployments, sort_keys=True)


class Deployments:
    """The routers of one gateway's roles, built at a role's first call; roles with the same
    deployments (the judge inherits the evaluator's) share one router and its cooldowns."""

    def __init__(self, models: dict, settings: dict):
        self.settings = settings
        self.specs = {role: cfg["deployments"] for role, cfg in models.items()
                      if isinstance(cfg, dict) and cfg.get("deployments")}
        keys = list(dict.fromkeys(_spec_key(spec) for spec in self.specs.values()))
        self._group = {role: f"promptarbor-group-{keys.index(_spec_key(spec)) + 1}"
                       for role, spec in self.specs.items()}
        self._routers: dict[str, Any] = {}   # group -> litellm Router
        self._index: dict[str, int] = {}     # deployment id -> its 1-based place

    def __contains__(self, role: str) -> bool:
        return role in self.specs

    def endpoint(self, role: str) -> str:
        return f"deployments:{self._group[role]}"

    def width(self, endpoint: str) -> int:
        """How many deployments share an endpoint's concurrency limit (1 for a plain one)."""
        for role, group in self._group.items():
            if endpoint == f"deployments:{group}":
                return len(self.specs[role])
        return 1

    def router(self, role: str):
        """The role's router, built now if needed. Raises MissingKey (a readable line)."""
        group = self._group[role]
        if group in self._routers:
            return self._routers[group]
        from .gateway import _litellm

        litellm = _litellm()
        spec = self.specs[role]
        cap = self.settings["concurrency"] * len(spec)
        model_list = []
        for i, dep in enumerate(spec, 1):
            # max_parallel_requests: litellm would derive a cap from rpm/tpm and answer 429
            # above it; the gateway's semaphore is the concurrency limit
            params: dict[str, Any] = {"model": dep["model"], "max_retries": 0,
                                      "max_parallel_requests": cap}
            if dep.get("api_base"):
                params["api_base"] = dep["api_base"]
            if dep.get("api_key_env"):
                key = os.environ.get(dep["api_key_env"])
                if not key:
                    raise MissingKey(f"environment variable {dep['api_key_env']} is not set "
                                     f"(role {role}, deployment {i})")
                params["api_key"] = key
            for limit in ("rpm", "tpm"):
                if dep.get(limit) is not None:
                    params[limit] = dep[limit]
            ident = f"{group}#{i}"
            self._index[ident] = i
            model_list.append({"model_name": group, "litellm_params": params,
                               "model_info": {"id": ident}})
        by_usage = any(dep.get("tpm") is not None for dep in spec)
        by_rpm = any(dep.get("rpm") is not None for dep in spec)
        router = litellm.Router(
            model_list=model_list,
            routing_strategy="usage-based-routing-v2" if by_usage else "simple-shuffle",
            enable_pre_call_checks=by_rpm and not by_usage,  # skip deployments at their rpm
            # a failed attempt is tried at once on another deployment: by failover, or (usage
            # routing has none) by a retry, which litellm sends only while a deployment is
            # left that is not cooling down, and without waiting; the gateway keeps the
            # retries with backoff for when every deployment failed
            enable_weighted_failover=not by_usage,
            max_fallbacks=max(1, len(spec) - 1),
            num_retries=len(spec) - 1 if by_usage else 0,
            allowed_fails=ALLOWED_FAILS, cooldown_time=COOLDOWN_SECONDS,
        )
        self._routers[group] = router
        return router

    async def acompletion(self, role: str, kwargs: dict) -> Any:
        """One attempt through the role's router: the deployment's own endpoint and key."""
        router = self.router(role)
        # the router's own setting decides its retries (see `router`)
        call = {k: v for k, v in kwargs.items() if k not in ("api_base", "api_key", "num_retries")}
        call["model"] = self._group[role]
        for wait in range(THROTTLE_WAITS + 1):
            try:
                return await router.acompletion(**call)
            except Exception as exc:
                if wait >= THROTTLE_WAITS or not throttled(exc):
                    raise
            await asyncio.sleep(seconds_to_next_window())
        raise AssertionError("unreachable")  # pragma: no cover

    def note(self, response: Any, record: dict) -> int:
        """Record which deployment answered (1-based); returns the extra requests the router
        sent within this attempt (deployments tried before the one that answered)."""
        hidden = getattr(response, "_hidden_params", None)
        hidden = hidden if isinstance(hidden, dict) else {}
        place = self._index.get(str(hidden.get("model_id")))
        if place is not None:
            record["deployment"] = place
        headers = hidden.get("additional_headers")
        extra = 0
        for name in ("x-litellm-attempted-fallbacks", "x-litellm-attempted-retries"):
            tried = headers.get(name) if isinstance(headers, dict) else 0
            try:
                extra += int(tried or 0)
            except (TypeError, ValueError):
                pass
        return max(0, min(extra, MAX_DEPLOYMENTS))

    def close(self) -> None:
        """Unhook the routers from litellm's global callbacks (litellm caps their number)."""
        for router in self._routers.values():
            try:
                router.discard()
            except Exception:
                pass
        self._routers.clear()
