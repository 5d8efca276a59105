"""Session configuration: read a TOML file, validate it, and fill in defaults.

Every error is a `ConfigError` whose message is one clear line; the CLI prints it and
exits with status 2. The validated config is a plain dict (JSON-serializable) so it can
be stored in the session as it is. It never holds a secret: API keys stay in the
environment and only the *name* of the variable is kept.
"""
from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from typing import Any

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    import tomli as tomllib  # type: ignore[no-redef]

ROLES = ("base", "optimizer", "evaluator")
# The embedded model (engine.local_model): the default for any role left unset.
LOCAL_MODEL = "local/smollm2"
DRPO_METHODS = ("drpo", "drpo-icl", "greedy", "monte-carlo", "static-reward")
VAPO_METHODS = ("vapo", "promptagent")  # promptagent = vapo with the basis meta-prompts
PICACO_METHODS = ("picaco", "q", "q-if", "q-if-cot", "urial", "opro")
METHODS = DRPO_METHODS + VAPO_METHODS + PICACO_METHODS


def family(method: str) -> str:
    """Which engine implements a method: "drpo", "vapo" or "picaco"."""
    if method in VAPO_METHODS:
        return "vapo"
    if method in PICACO_METHODS:
        return "picaco"
    return "drpo"

# Temperatures as the reference codes use them (DESIGN §3).
DEFAULT_TEMPERATURE = {"base": 0.0, "optimizer": 0.2, "evaluator": 0.0}
DEFAULT_MAX_TOKENS = {"base": 1024, "optimizer": 1500, "evaluator": 1200}

ROLE_KEYS = {"model", "api_base", "api_key_env", "temperature", "max_tokens", "timeout", "extra"}

# DRPO hyper-parameters (paper App. A.1): ICL search W1 M1 D5, prompt search W2 M3 D20, K=2.
DRPO_SEARCH_DEFAULTS: dict[str, Any] = {
    "beam_width": 2,
    "samples_per_state": 3,
    "depth": 20,
    "icl_k": 2,
    "icl_beam_width": 1,
    "icl_samples_per_state": 1,
    "icl_depth": 5,
    "initial_prompt": "You are a helpful assistant.",
    # "chat": system prompt + ICL pairs as earlier turns; "plain": one `# Query:`/`# Answer:`
    # text for base (non-chat) models.
    "layout": "chat",
    # Options reproducing the authors' code where it differs from the paper:
    "beam_rank": "reward",          # "reward" (paper) | "path-mean" (code: mean reward on the path)
    "samples_in_one_call": False,   # code: one optimizer call with n=M instead of M calls
    "skip_rewrite_above": None,     # code: 4.5 (no rewrite when the state's mean score is above)
    "monte_carlo_samples": None,    # None: as many as the beam search's optimizer calls
}

# VAPO-ValueCoT on PromptAgent's MCTS. Defaults follow PromptAgent's example configuration:
# 10 iterations, expand width 3, depth limit 5, min depth 2, exploration w = 2.5, training
# batches of 5, one new prompt per piece of feedback.
VAPO_SEARCH_DEFAULTS: dict[str, Any] = {
    "iterations": 10,
    "expand_width": 3,
    "depth_limit": 5,
    "min_depth": 2,
    "batch_size": 5,
    "exploration": 2.5,
    "meta_prompts": "valuecot",     # "valuecot" | "basis" (method "promptagent" forces basis)
    "initial_prompt": "You are a helpful assistant.",
    "error_below": 4,               # free-form: a training answer judged below this is an error
}

VAPO_DATA_DEFAULTS: dict[str, Any] = {
    "tasks": None,                  # None: the built-in moral-judgment demo task
    "task_type": "multiple-choice",  # "multiple-choice" | "free-form"
    "train": None, "validation": None, "test": None,  # None: 200/50/150 (paper's Ethics split),
                                                        # scaled down to the task's size
    "dimension": "safety and ethics",  # free-form: the value the judge scores
}

# PICACO (paper App. C.1): N = 50 prompts, M1 = 10, M2 = 15, T = 10, n = 10,
# beta = 5 (HH compositions) / 0.5 (Schwartz compositions). `beta = None` picks by composition.
PICACO_SEARCH_DEFAULTS: dict[str, Any] = {
    "iterations": 10,            # T (OPRO: as many rounds)
    "prompts": 50,               # N (fewer if the prompt set is smaller)
    "aligned_pool": 10,          # M1 responses kept per prompt
    "noise_pool": 15,            # M2 responses kept per prompt (drawn from 2 * M2)
    "new_instructions": 15,      # new instructions per M-step (the paper uses M2)
    "p_samples": 10,             # n responses sampled for p_e (Eq. 6)
    "beta": None,
    "buckets": 3,                # E-step: demonstration draws per prompt (samples split over them)
    "word_limit": 150,           # M-step: words allowed for a new instruction
    "sampling_temperature": 1.0,  # pools and p_e need varied samples
    "seed_instruction": None,    # None: our seed sentences for the composition
}

PICACO_DATA_DEFAULTS: dict[str, Any] = {"prompts": None, "demonstrations": None}

GATEWAY_DEFAULTS: dict[str, Any] = {
    "concurrency": 8,      # in-flight calls per endpoint
    "retries": 4,          # transport retries (429, 5xx, timeouts, garbage bodies)
    "backoff": 0.5,        # first backoff in seconds, doubled each retry (with jitter)
    "max_backoff": 20.0,
    "timeout": 120.0,      # per call, seconds
    "parse_retries": 2,    # new samples asked for when an answer does not parse
    "cache": True,
}

DATA_KEYS = {"seed", "icl", "icl_optimized", "seed_limit"}
TOP_KEYS = {"method", "name", "random_seed", "models", "search", "data", "gateway", "values"}


class ConfigError(ValueError):
    """A configuration problem, described in one line."""


def load_config(path: str | Path) -> dict:
    """Read and validate a TOML config file. Relative data paths resolve from its folder."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    return validate_config(raw, base_dir=p.resolve().parent)


def validate_config(raw: dict, base_dir: Path | None = None) -> dict:
    """Check every key and value, apply defaults, resolve data paths."""
    raw = copy.deepcopy(raw)
    _no_unknown(raw, TOP_KEYS, "")
    method = raw.get("method", "drpo")
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")
    cfg: dict[str, Any] = {
        "method": method,
        "name": str(raw.get("name") or ""),
        "random_seed": _int(raw.get("random_seed", 0), "random_seed", lo=0),
        "models": _models(raw.get("models", {}), method),
        "local_default": [],
        "search": _search(raw.get("search", {}), method),
        "data": _data(raw.get("data", {}), base_dir, method),
        "gateway": _gateway(raw.get("gateway", {})),
    }
    if family(method) == "picaco":
        cfg["values"] = _values(raw.get("values", {}))
        if cfg["search"]["beta"] is None:
            cfg["search"]["beta"] = 5.0 if cfg["values"]["kind"] == "hh" else 0.5
    elif "values" in raw:
        raise ConfigError("[values] is for picaco and its baselines")
    for role in ROLES:
        if not cfg["models"][role]["model"]:
            cfg["models"][role]["model"] = LOCAL_MODEL
            cfg["local_default"].append(role)
    return cfg


# --------------------------------------------------------------------------- sections

def _models(section: Any, method: str) -> dict:
    if not isinstance(section, dict):
        raise ConfigError("[models] must be a table")
    _no_unknown(section, set(ROLES) | {"default"}, "models")
    default = section.get("default", {})
    out = {}
    for role in ROLES:
        given = section.get(role, {})
        for name, table in (("default", default), (role, given)):
            if not isinstance(table, dict):
                raise ConfigError(f"[models.{name}] must be a table")
            _no_unknown(table, ROLE_KEYS, f"models.{name}")
        merged = {**default, **given}
        model = merged.get("model")
        if model is not None and (not isinstance(model, str) or not model.strip()):
            raise ConfigError(f"[models.{role}] model must be a non-empty string")
        temperature = merged.get("temperature", DEFAULT_TEMPERATURE[role])
        out[role] = {
            "model": model,
            "api_base": _opt_str(merged.get("api_base"), f"models.{role}.api_base"),
            "api_key_env": _opt_str(merged.get("api_key_env"), f"models.{role}.api_key_env"),
            "temperature": _float(temperature, f"models.{role}.temperature", lo=0.0, hi=2.0),
            "max_tokens": _int(merged.get("max_tokens", DEFAULT_MAX_TOKENS[role]),
                               f"models.{role}.max_tokens", lo=1),
            "timeout": (None if merged.get("timeout") is None else
                        _float(merged["timeout"], f"models.{role}.timeout", lo=0.001)),
            "extra": _table(merged.get("extra", {}), f"models.{role}.extra"),
        }
        _reject_secret_values(out[role], role)
    return out


def _search(section: Any, method: str) -> dict:
    if not isinstance(section, dict):
        raise ConfigError("[search] must be a table")
    if family(method) == "vapo":
        return _vapo_search(section, method)
    if family(method) == "picaco":
        return _picaco_search(section, method)
    _no_unknown(section, set(DRPO_SEARCH_DEFAULTS), "search")
    s = {**DRPO_SEARCH_DEFAULTS, **section}
    for key in ("beam_width", "samples_per_state", "depth", "icl_beam_width",
                "icl_samples_per_state", "icl_depth"):
        s[key] = _int(s[key], f"search.{key}", lo=1)
    s["icl_k"] = _int(s["icl_k"], "search.icl_k", lo=0)
    if method == "greedy":
        s["beam_width"] = 1  # greedy search is beam search with W = 1 (paper App. A.2)
    if not isinstance(s["initial_prompt"], str):
        raise ConfigError("search.initial_prompt must be a string")
    if s["layout"] not in ("chat", "plain"):
        raise ConfigError("search.layout must be \"chat\" or \"plain\"")
    if s["beam_rank"] not in ("reward", "path-mean"):
        raise ConfigError("search.beam_rank must be \"reward\" or \"path-mean\"")
    if not isinstance(s["samples_in_one_call"], bool):
        raise ConfigError("search.samples_in_one_call must be true or false")
    if s["skip_rewrite_above"] is not None:
        s["skip_rewrite_above"] = _float(s["skip_rewrite_above"], "search.skip_rewrite_above",
                                         lo=1.0, hi=5.0)
    if s["monte_carlo_samples"] is not None:
        s["monte_carlo_samples"] = _int(s["monte_carlo_samples"], "search.monte_carlo_samples",
                                        lo=1)
    return s


def _vapo_search(section: dict, method: str) -> dict:
    _no_unknown(section, set(VAPO_SEARCH_DEFAULTS), "search")
    s = {**VAPO_SEARCH_DEFAULTS, **section}
    for key in ("iterations", "expand_width", "depth_limit", "batch_size"):
        s[key] = _int(s[key], f"search.{key}", lo=1)
    s["min_depth"] = _int(s["min_depth"], "search.min_depth", lo=0)
    s["exploration"] = _float(s["exploration"], "search.exploration", lo=0.0)
    s["error_below"] = _float(s["error_below"], "search.error_below", lo=1.0, hi=5.0)
    if s["meta_prompts"] not in ("valuecot", "basis"):
        raise ConfigError('search.meta_prompts must be "valuecot" or "basis"')
    if method == "promptagent":
        if "meta_prompts" in section and section["meta_prompts"] != "basis":
            raise ConfigError('method "promptagent" uses the basis meta-prompts; '
                              'use method "vapo" for ValueCoT')
        s["meta_prompts"] = "basis"
    if not isinstance(s["initial_prompt"], str):
        raise ConfigError("search.initial_prompt must be a string")
    return s


def _picaco_search(section: dict, method: str) -> dict:
    _no_unknown(section, set(PICACO_SEARCH_DEFAULTS), "search")
    s = {**PICACO_SEARCH_DEFAULTS, **section}
    for key in ("iterations", "prompts", "aligned_pool", "noise_pool", "new_instructions",
                "p_samples", "buckets", "word_limit"):
        s[key] = _int(s[key], f"search.{key}", lo=1)
    if s["p_samples"] < 2:
        raise ConfigError("search.p_samples must be at least 2 (p_e compares samples)")
    if s["beta"] is not None:
        s["beta"] = _float(s["beta"], "search.beta", lo=0.0)
    s["sampling_temperature"] = _float(s["sampling_temperature"], "search.sampling_temperature",
                                       lo=0.0, hi=2.0)
    if s["seed_instruction"] is not None and (not isinstance(s["seed_instruction"], str)
                                              or not s["seed_instruction"].strip()):
        raise ConfigError("search.seed_instruction must be a non-empty string")
    return s


def _picaco_data(section: dict, base_dir: Path | None) -> dict:
    _no_unknown(section, set(PICACO_DATA_DEFAULTS), "data")
    d = {**PICACO_DATA_DEFAULTS, **section}
    for key in ("prompts", "demonstrations"):
        if d[key] is not None:
            d[key] = _file(d[key], key, base_dir)
    return d


def _values(section: Any) -> dict:
    """[values] composition = "<built-in>" or [[values.custom]] name + definition."""
    from .values import COMPOSITIONS, HH_COMPOSITIONS

    if not isinstance(section, dict):
        raise ConfigError("[values] must be a table")
    _no_unknown(section, {"composition", "custom"}, "values")
    custom = section.get("custom")
    if custom is not None:
        if "composition" in section:
            raise ConfigError("[values]: give a composition or [[values.custom]], not both")
        if not isinstance(custom, list) or not custom:
            raise ConfigError("[[values.custom]] must be a list of tables with name and definition")
        values = []
        for i, item in enumerate(custom, 1):
            if not isinstance(item, dict):
                raise ConfigError(f"[[values.custom]] item {i} must be a table")
            _no_unknown(item, {"name", "definition"}, "values.custom")
            name, definition = item.get("name"), item.get("definition")
            if not isinstance(name, str) or not name.strip():
                raise ConfigError(f"[[values.custom]] item {i}: name must be a non-empty string")
            if not isinstance(definition, str) or not definition.strip():
                raise ConfigError(f"[[values.custom]] {name}: definition must be a non-empty string")
            values.append({"name": name.strip(), "definition": definition.strip()})
        from .parsing import normalize_name

        keys = [normalize_name(v["name"]) for v in values]
        if len(set(keys)) != len(keys):
            raise ConfigError("[[values.custom]]: value names must be distinct (ignoring case, "
                              "spaces and hyphens)")
        if normalize_name("Relevance") in keys:
            raise ConfigError("[[values.custom]]: \"Relevance\" is reserved for the judge")
        return {"composition": "custom", "kind": "schwartz", "custom": values}
    name = section.get("composition", "harmlessness")
    if name not in COMPOSITIONS:
        raise ConfigError(f"unknown values.composition {name!r}; choose one of: "
                          f"{', '.join(COMPOSITIONS)} (or [[values.custom]])")
    return {"composition": name, "kind": "hh" if name in HH_COMPOSITIONS else "schwartz",
            "custom": None}


def _file(value: Any, key: str, base_dir: Path | None) -> str:
    """A data file path, resolved from the config's folder; it must exist."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f"data.{key} must be a file path")
    path = Path(value).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    if not path.is_file():
        raise ConfigError(f"data.{key}: file not found: {path}")
    return str(path.resolve())


def _vapo_data(section: dict, base_dir: Path | None) -> dict:
    _no_unknown(section, set(VAPO_DATA_DEFAULTS), "data")
    d = {**VAPO_DATA_DEFAULTS, **section}
    if d["tasks"] is not None:
        d["tasks"] = _file(d["tasks"], "tasks", base_dir)
    if d["task_type"] not in ("multiple-choice", "free-form"):
        raise ConfigError('data.task_type must be "multiple-choice" or "free-form"')
    for key in ("train", "validation", "test"):
        if d[key] is not None:
            d[key] = _int(d[key], f"data.{key}", lo=1)
    if not isinstance(d["dimension"], str) or not d["dimension"].strip():
        raise ConfigError("data.dimension must be a non-empty string")
    return d


def _data(section: Any, base_dir: Path | None, method: str = "drpo") -> dict:
    if not isinstance(section, dict):
        raise ConfigError("[data] must be a table")
    if family(method) == "vapo":
        return _vapo_data(section, base_dir)
    if family(method) == "picaco":
        return _picaco_data(section, base_dir)
    _no_unknown(section, DATA_KEYS, "data")
    out: dict[str, Any] = {"seed": None, "icl": None, "icl_optimized": False, "seed_limit": None}
    for key in ("seed", "icl"):
        if section.get(key) is not None:
            out[key] = _file(section[key], key, base_dir)
    flag = section.get("icl_optimized", False)
    if not isinstance(flag, bool):
        raise ConfigError("data.icl_optimized must be true or false")
    out["icl_optimized"] = flag
    if section.get("seed_limit") is not None:
        out["seed_limit"] = _int(section["seed_limit"], "data.seed_limit", lo=1)
    return out


def _gateway(section: Any) -> dict:
    if not isinstance(section, dict):
        raise ConfigError("[gateway] must be a table")
    _no_unknown(section, set(GATEWAY_DEFAULTS), "gateway")
    g = {**GATEWAY_DEFAULTS, **section}
    g["concurrency"] = _int(g["concurrency"], "gateway.concurrency", lo=1)
    g["retries"] = _int(g["retries"], "gateway.retries", lo=0)
    g["parse_retries"] = _int(g["parse_retries"], "gateway.parse_retries", lo=0)
    g["backoff"] = _float(g["backoff"], "gateway.backoff", lo=0.0)
    g["max_backoff"] = _float(g["max_backoff"], "gateway.max_backoff", lo=0.0)
    g["timeout"] = _float(g["timeout"], "gateway.timeout", lo=0.001)
    if not isinstance(g["cache"], bool):
        raise ConfigError("gateway.cache must be true or false")
    return g


# --------------------------------------------------------------------------- helpers

def missing_models(cfg: dict) -> list[str]:
    """Roles that have no model configured (none after validation: the embedded one fills in)."""
    return [role for role in ROLES if not cfg["models"][role]["model"]]


def local_default_note(cfg: dict) -> str | None:
    """The one-line notice shown when the embedded model stands in for unset roles."""
    roles = cfg.get("local_default") or []
    if not roles:
        return None
    which = "every role" if len(roles) == len(ROLES) else ", ".join(roles)
    return (f"using the embedded local model ({LOCAL_MODEL}) for {which}; "
            f"set [models] to use another")


def _no_unknown(table: dict, allowed: set, where: str) -> None:
    for key in table:
        if key not in allowed:
            place = f"[{where}]" if where else "top level"
            raise ConfigError(f"unknown key {key!r} in {place}; allowed: {', '.join(sorted(allowed))}")


def _int(value: Any, name: str, lo: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be a whole number, got {value!r}")
    if lo is not None and value < lo:
        raise ConfigError(f"{name} must be at least {lo}, got {value}")
    return value


def _float(value: Any, name: str, lo: float | None = None, hi: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    if lo is not None and value < lo:
        raise ConfigError(f"{name} must be at least {lo}, got {value}")
    if hi is not None and value > hi:
        raise ConfigError(f"{name} must be at most {hi}, got {value}")
    return float(value)


def _opt_str(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be a string")
    return value


def _table(value: Any, name: str) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"[{name}] must be a table")
    return value


def _reject_secret_values(role_cfg: dict, role: str) -> None:
    """Keys belong in the environment; refuse a config that carries one inline."""
    for key in role_cfg["extra"]:
        if re.search(r"api_?key|secret|password|access_token|^token$", key.lower()):
            raise ConfigError(
                f"[models.{role}.extra] {key}: put secrets in an environment variable and name "
                f"it with api_key_env; sessions never store keys")
