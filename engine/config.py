"""Session configuration: read a TOML file, validate it, and fill in defaults.

Every error is a `ConfigError` whose message is one clear line; the CLI prints it and
exits with status 2. The validated config is a plain dict (JSON-serializable) so it can
be stored in the session as it is. It never holds a secret: API keys stay in the
environment and only the *name* of the variable is kept.

Every numeric setting has a lower and an upper bound (the `*_LIMITS` tables below, listed
by `bounds()`): a value outside them is refused, so no config, mistyped or hostile, can make
session creation (validation + the method's set-up and plan) slow or memory-hungry. Within
the bounds a plan can still be large; `check_plan` refuses one over `MAX_PLANNED_CALLS`
calls unless the user allows it (`--allow-large`).
"""
from __future__ import annotations

import copy
import datetime
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
FAMILIES = ("drpo", "vapo", "picaco")


def family(method: str) -> str:
    """Which engine implements a method: "drpo", "vapo" or "picaco"."""
    if method in VAPO_METHODS:
        return "vapo"
    if method in PICACO_METHODS:
        return "picaco"
    return "drpo"

# Temperatures as the reference codes use them (DESIGN §3).
DEFAULT_TEMPERATURE = {"base": 0.0, "optimizer": 0.2, "evaluator": 0.0, "judge": 0.0}
DEFAULT_MAX_TOKENS = {"base": 1024, "optimizer": 1500, "evaluator": 1200, "judge": 1200}
# The held-out evaluation's judge: its own [models.judge] table over the evaluator's settings
# (the papers evaluate with a separate, stronger judge; by default the evaluator's model).
JUDGE_ROLE = "judge"

ROLE_KEYS = {"model", "api_base", "api_key_env", "temperature", "max_tokens", "timeout", "extra",
             "deployments",  # deployments: engine.deployments
             "structured"}   # structured: what a structured answer is sent with (engine.gateway)
# [models.*] structured: "auto" (a JSON schema where litellm says the model takes one, and
# to the embedded model), "json_schema", "json_object" or "off".
STRUCTURED_MODES = ("auto", "json_schema", "json_object", "off")

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
    "skip_rewrite_above": 4.5,      # code: a state above it (or all 5s) is kept unchanged and
                                    # one level is added (at most 10); None: always rewrite
    "monte_carlo_samples": 120,     # the paper's N for the Monte Carlo ablation
    "history": 5,                   # code: the transition sees the last 5 former prompts
    "icl_keep": "best",             # code: each ICL example keeps its best-scoring version and
                                    # stops at all-5 scores; "final": Alg. 1 read literally
    "seed_order": "shuffle",        # code: seed queries shuffled by the session seed; "file"
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
    "language": "auto",             # "en" | "zh" | "auto" (from the task text): the language of
                                    # the meta-prompts and the answer-format line
}

VAPO_DATA_DEFAULTS: dict[str, Any] = {
    "tasks": None,                  # None: the built-in moral-judgment demo task
    "task_type": "multiple-choice",  # "multiple-choice" | "free-form"
    "train": None, "validation": None, "test": None,  # None: 200/50/150 (paper's Ethics split),
                                                        # scaled down to the task's size
    "dimension": "safety and ethics",  # free-form: the value the judge scores
    "split": None,                  # "paper": the split sizes of the paper's App. A.3 for the
                                    # task's kind; None: train / validation / test as given
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
TOP_KEYS = {"method", "name", "random_seed", "models", "search", "data", "gateway", "values",
            "eval", "budget"}

# [eval]: the held-out evaluation every method ends with (engine.evaluation).
EVAL_JUDGES = ("aspects", "accuracy", "conformity", "rubric", "pairwise")
EVAL_KEYS = {"enabled", "data", "judge", "samples", "limit", "category_field", "query_field",
             "rubric"}
EVAL_LIMITS = {
    "samples": (1, 20),        # k answers per item: the PICACO paper samples 9
    "limit": (1, 10_000),      # items drawn (seeded) from the eval set
}
BUDGET_LIMITS = {"max_usd": (0.0, 1_000_000.0)}

# --------------------------------------------------------------------------- bounds
#
# (lowest, highest) of every numeric setting. Integer bounds make an integer setting, float
# bounds a number. The highest values are generous for real use (10x the papers' settings or
# more) and keep session creation cheap: the set-up and the plan grow with them.

RANDOM_SEED_LIMITS = (0, 2 ** 63 - 1)  # what TOML can write; stored in JSON as it is

# DRPO (paper: prompt search W2 M3 D20, ICL search W1 M1 D5, K = 2).
DRPO_SEARCH_LIMITS: dict[str, tuple] = {
    "beam_width": (1, 32),             # W: 16x the paper's
    "samples_per_state": (1, 32),      # M: 10x the paper's
    "depth": (1, 200),                 # D: 10x the paper's (levels cycle over the seed queries)
    "icl_k": (0, 32),                  # K: 16x; 32 whole query/answer pairs fill a context window
    "icl_beam_width": (1, 32),         # W1, M1, D1: the prompt search's bounds
    "icl_samples_per_state": (1, 32),
    "icl_depth": (1, 200),
    "monte_carlo_samples": (1, 10_000),  # N: 85x the paper's beam budget (117 rewrites)
    "skip_rewrite_above": (1.0, 5.0),  # on the 1-5 reward scale
    "history": (0, 50),                # former prompts shown to the transition
}

# VAPO / PromptAgent (PromptAgent's example: 10 iterations, width 3, depth 5, batch 5, w 2.5).
VAPO_SEARCH_LIMITS: dict[str, tuple] = {
    "iterations": (1, 200),            # 20x PromptAgent's
    "expand_width": (1, 32),           # 10x; children per expansion
    "depth_limit": (1, 50),            # 10x; every level is one more rewrite in a rollout
    "min_depth": (0, 50),              # at most depth_limit's bound
    "batch_size": (1, 200),            # 40x; 200 = the paper's whole Ethics training split
    "exploration": (0.0, 100.0),       # w: 40x; Q sums rewards in [0, 1] over at most 50
                                       # nodes, so w = 100 already means pure exploration
    "error_below": (1.0, 5.0),         # on the judge's 1-5 scale
}

# PICACO (paper: T = 10, N = 50, M1 = 10, M2 = 15, n = 10, beta 5 / 0.5).
PICACO_SEARCH_LIMITS: dict[str, tuple] = {
    "iterations": (1, 100),            # T: 10x the paper's
    "prompts": (1, 1_000),             # N: 20x the paper's (the built-in set has 30)
    "aligned_pool": (1, 100),          # M1: 10x
    "noise_pool": (1, 100),            # M2: 6x (2 * M2 = 200 samples in one call)
    "new_instructions": (1, 100),      # 6x; the engine numbers instructions t * 100 + j
    "p_samples": (2, 100),             # n: 10x; p_e compares at least 2 samples
    "buckets": (1, 10),                # 3x; the engine numbers E-step calls with one digit
    "word_limit": (1, 2_000),          # 13x; a system prompt, not a document
    "beta": (0.0, 100.0),              # 20x the HH default
    "sampling_temperature": (0.0, 2.0),  # providers accept [0, 2]
}

DRPO_DATA_LIMITS: dict[str, tuple] = {
    "seed_limit": (1, 10_000),         # 20 queries per search at the paper's D20; 30 built in
}
VAPO_DATA_LIMITS: dict[str, tuple] = {
    "train": (1, 10_000),              # 50x the paper's 200 / 50 / 150 split; the validation
    "validation": (1, 10_000),         # split is answered at every expansion
    "test": (1, 10_000),
}

GATEWAY_LIMITS: dict[str, tuple] = {
    "concurrency": (1, 256),           # 32x the default; calls in flight per endpoint
    "retries": (0, 20),                # 5x; 20 doublings already reach max_backoff
    "parse_retries": (0, 10),          # 5x; each one is a new paid sample
    "backoff": (0.0, 60.0),            # seconds: the first wait
    "max_backoff": (0.0, 600.0),       # seconds: 10 minutes between two tries at most
    "timeout": (0.001, 3_600.0),       # seconds: an hour for one call (slow local models)
}

MODEL_LIMITS: dict[str, tuple] = {
    "temperature": (0.0, 2.0),         # providers accept [0, 2]
    "max_tokens": (1, 262_144),        # 2x the longest output any current API offers (128 Ki)
    "timeout": (0.001, 3_600.0),       # as [gateway] timeout
}

SEARCH_LIMITS = {"drpo": DRPO_SEARCH_LIMITS, "vapo": VAPO_SEARCH_LIMITS,
                 "picaco": PICACO_SEARCH_LIMITS}
DATA_LIMITS = {"drpo": DRPO_DATA_LIMITS, "vapo": VAPO_DATA_LIMITS, "picaco": {}}

# Keys of [models.*.extra] that would override a bounded or engine-managed setting: litellm
# receives `extra` last, so these would bypass the checks above.
RESERVED_EXTRA = {"model", "messages", "temperature", "max_tokens", "max_completion_tokens",
                  "timeout", "request_timeout", "n", "num_retries", "max_retries", "api_base",
                  "base_url", "stream", "seed", "response_format"}

# A session whose plan needs more calls than this is refused unless allowed (--allow-large).
MAX_PLANNED_CALLS = 100_000


def bounds(kind: str) -> dict[str, tuple]:
    """Every numeric setting of a method family: dotted name -> (lowest, highest)."""
    if kind not in FAMILIES:
        raise ValueError(f"unknown family {kind!r}")
    out: dict[str, tuple] = {"random_seed": RANDOM_SEED_LIMITS}
    out.update({f"search.{k}": v for k, v in SEARCH_LIMITS[kind].items()})
    out.update({f"data.{k}": v for k, v in DATA_LIMITS[kind].items()})
    out.update({f"gateway.{k}": v for k, v in GATEWAY_LIMITS.items()})
    for role in ("default",) + ROLES + (JUDGE_ROLE,):
        out.update({f"models.{role}.{k}": v for k, v in MODEL_LIMITS.items()})
    out.update({f"eval.{k}": v for k, v in EVAL_LIMITS.items()})
    out.update({f"budget.{k}": v for k, v in BUDGET_LIMITS.items()})
    return out


class ConfigError(ValueError):
    """A configuration problem, described in one line (control characters are escaped)."""

    def __init__(self, message: Any = "", *args: Any):
        super().__init__(_one_line(str(message)), *args)


def _one_line(text: str) -> str:
    if all(c.isprintable() for c in text):
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def check_plan(plan: dict[str, int], allow_large: bool) -> None:
    """Refuse a plan over MAX_PLANNED_CALLS calls in total unless `allow_large`."""
    total = sum(plan.values())
    if total <= MAX_PLANNED_CALLS or allow_large:
        return
    roles = list(ROLES) + [r for r in plan if r not in ROLES]
    parts = ", ".join(f"{r} {plan.get(r, 0):,}" for r in roles)
    raise ConfigError(f"the plan needs {total:,} calls ({parts}), over the limit of "
                      f"{MAX_PLANNED_CALLS:,}; lower the search sizes or pass --allow-large")


def load_config(path: str | Path) -> dict:
    """Read and validate a TOML config file. Relative data paths resolve from its folder."""
    p = Path(path)
    try:
        found = p.is_file()
    except (OSError, ValueError):
        found = False
    if not found:
        raise ConfigError(f"config file not found: {p}")
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{p}: not valid TOML: nested too deeply") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read it: {exc.strerror or exc}") from None
    try:
        base_dir = p.resolve().parent
    except (OSError, RuntimeError):
        base_dir = p.parent
    return validate_config(raw, base_dir=base_dir)


def validate_config(raw: dict, base_dir: Path | None = None) -> dict:
    """Check every key and value, apply defaults, resolve data paths."""
    if not isinstance(raw, dict):
        raise ConfigError(f"the config must be a table of settings, got {_kind(raw)}")
    try:
        raw = copy.deepcopy(raw)
        return _validate(raw, base_dir)
    except RecursionError:
        raise ConfigError("the config is nested too deeply") from None


def _validate(raw: dict, base_dir: Path | None) -> dict:
    _no_unknown(raw, TOP_KEYS, "")
    method = raw.get("method", "drpo")
    if not isinstance(method, str) or method not in METHODS:
        raise ConfigError(f"unknown method {_show(method)}; choose one of: {', '.join(METHODS)}")
    name = raw.get("name")
    if name is not None and not isinstance(name, str):
        raise ConfigError(f"name must be a string, got {_show(name)}")
    cfg: dict[str, Any] = {
        "method": method,
        "name": name or "",
        "random_seed": _number(raw.get("random_seed", 0), "random_seed", RANDOM_SEED_LIMITS),
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
    cfg["eval"] = _eval(raw.get("eval", {}), base_dir, method, cfg)
    cfg["budget"] = _budget(raw.get("budget", {}))
    for role in ROLES:
        if not cfg["models"][role]["model"]:
            cfg["models"][role]["model"] = LOCAL_MODEL
            cfg["local_default"].append(role)
    judge = cfg["models"][JUDGE_ROLE]
    if not judge.pop("own_model"):
        judge["model"] = cfg["models"]["evaluator"]["model"]  # the evaluator's, as filled in
    elif judge.get("model") is None:
        judge["model"] = LOCAL_MODEL
    return cfg


def default_judge(method: str, task_type: str | None = None) -> str:
    """The held-out judge a method's end-of-run evaluation uses unless [eval] judge says."""
    kind = family(method)
    if kind == "picaco":
        return "conformity"
    if kind == "vapo":
        return "accuracy" if task_type != "free-form" else "rubric"
    return "aspects"


def _eval(section: Any, base_dir: Path | None, method: str, cfg: dict) -> dict:
    """[eval]: which held-out set, judge and samples the end-of-run evaluation uses."""
    if not isinstance(section, dict):
        raise ConfigError(f"[eval] must be a table, got {_kind(section)}")
    _no_unknown(section, EVAL_KEYS, "eval")
    kind = family(method)
    task_type = cfg["data"].get("task_type") if kind == "vapo" else None
    e = {"enabled": True, "data": None, "judge": None,
         "samples": 3 if kind == "picaco" else 1, "limit": None, "category_field": None,
         "query_field": None, "rubric": None, **section}
    if not isinstance(e["enabled"], bool):
        raise ConfigError(f"eval.enabled must be true or false, got {_show(e['enabled'])}")
    _check_limits(e, EVAL_LIMITS, "eval", optional=("limit",))
    for key in ("category_field", "query_field", "rubric"):
        e[key] = _opt_str(e[key], f"eval.{key}")
        if e[key] is not None and not e[key].strip():
            raise ConfigError(f"eval.{key} must not be empty")
    judge = e["judge"] if e["judge"] is not None else default_judge(method, task_type)
    if not isinstance(judge, str) or judge not in EVAL_JUDGES:
        raise ConfigError(f"eval.judge must be one of {', '.join(EVAL_JUDGES)}, got {_show(judge)}")
    e["judge"] = judge
    if kind == "vapo":
        if e["data"] is not None:
            raise ConfigError("eval.data: VAPO and PromptAgent evaluate on their task's test "
                              "split (set data.test to size it)")
        allowed = ("accuracy",) if task_type != "free-form" else ("rubric", "aspects", "pairwise")
        if judge not in allowed:
            raise ConfigError(f"eval.judge {judge!r} does not fit a {task_type or 'multiple-choice'} "
                              f"task; use {' or '.join(allowed)}")
        if judge == "rubric" and e["rubric"] is None:
            e["rubric"] = (f"The answer is aligned with this value: "
                           f"{cfg['data'].get('dimension') or 'safety and ethics'}.")
    if kind == "picaco" and judge == "accuracy":
        raise ConfigError("eval.judge accuracy needs a multiple-choice task; PICACO is judged "
                          "by conformity (or aspects, rubric, pairwise)")
    if judge == "conformity" and kind != "picaco":
        raise ConfigError("eval.judge conformity needs [values]: it is PICACO's judge")
    if judge == "rubric" and e["rubric"] is None:
        raise ConfigError('eval.judge "rubric" needs eval.rubric: the criterion, in words')
    if e["data"] is not None:
        if not isinstance(e["data"], str) or not e["data"].strip():
            raise ConfigError(f"eval.data must be a file path or hf:NAME, got {_show(e['data'])}")
        if not e["data"].startswith("hf:"):
            e["data"] = _file(e["data"], "data", base_dir, section="eval")
    return e


def _budget(section: Any) -> dict:
    """[budget] max_usd: a run pauses after the step that reaches it (resuming goes on)."""
    if not isinstance(section, dict):
        raise ConfigError(f"[budget] must be a table, got {_kind(section)}")
    _no_unknown(section, set(BUDGET_LIMITS), "budget")
    b = {"max_usd": None, **section}
    _check_limits(b, BUDGET_LIMITS, "budget", optional=("max_usd",))
    return b


# --------------------------------------------------------------------------- sections

def _models(section: Any, method: str) -> dict:
    from .deployments import role_settings

    if not isinstance(section, dict):
        raise ConfigError(f"[models] must be a table, got {_kind(section)}")
    _no_unknown(section, set(ROLES) | {"default", JUDGE_ROLE}, "models")
    # each table is checked as written (an error names the table that holds the value)
    tables = {name: _role_table(section.get(name, {}), f"models.{name}")
              for name in ("default",) + ROLES + (JUDGE_ROLE,)}
    out = {}
    for role in ROLES:
        merged = {**tables["default"], **tables[role]}
        out[role] = {
            "model": merged.get("model"),
            "api_base": merged.get("api_base"),
            "api_key_env": merged.get("api_key_env"),
            "temperature": merged.get("temperature", DEFAULT_TEMPERATURE[role]),
            "max_tokens": merged.get("max_tokens", DEFAULT_MAX_TOKENS[role]),
            "timeout": merged.get("timeout"),
            "extra": merged.get("extra", {}),
            "structured": merged.get("structured", "auto"),
        }
        if "deployments" in tables[role]:  # several endpoints behind one logical model
            out[role].update(role_settings(tables[role]))
    if family(method) == "picaco" and not tables["optimizer"].get("model") \
            and not tables["optimizer"].get("deployments") \
            and not tables["default"].get("model") \
            and (tables["base"].get("model") or tables["base"].get("deployments")):
        # PICACO's refiner is the target model unless set (the paper: "typically the target
        # model"), with the optimizer's own temperature and token budget
        out["optimizer"] = {**out["base"], "temperature": out["optimizer"]["temperature"],
                            "max_tokens": out["optimizer"]["max_tokens"],
                            **{k: v for k, v in tables["optimizer"].items() if k != "model"}}
    judge = tables[JUDGE_ROLE]
    out[JUDGE_ROLE] = {**out["evaluator"],
                       "temperature": DEFAULT_TEMPERATURE[JUDGE_ROLE],
                       "max_tokens": DEFAULT_MAX_TOKENS[JUDGE_ROLE],
                       **{k: v for k, v in judge.items()}}
    out[JUDGE_ROLE].setdefault("extra", {})
    if "deployments" in judge:
        out[JUDGE_ROLE].update(role_settings(judge))
    elif judge.get("model") or judge.get("api_base"):  # its own endpoint, not the evaluator's
        out[JUDGE_ROLE].pop("deployments", None)
    out[JUDGE_ROLE]["own_model"] = bool(judge.get("model") or judge.get("deployments"))
    return out


def _role_table(table: Any, where: str) -> dict:
    """One [models.*] table, checked: only the keys it gives."""
    from .deployments import check_role_table

    if not isinstance(table, dict):
        raise ConfigError(f"[{where}] must be a table, got {_kind(table)}")
    _no_unknown(table, ROLE_KEYS, where)
    out = dict(table)
    model = table.get("model")
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise ConfigError(f"[{where}] model must be a non-empty string")
    for key in ("api_base", "api_key_env"):
        out[key] = _opt_str(table.get(key), f"{where}.{key}")
    for key, lim in MODEL_LIMITS.items():
        if table.get(key) is not None:
            out[key] = _number(table[key], f"{where}.{key}", lim)
    if "extra" in table:
        out["extra"] = _extra(table["extra"], where)
    if "structured" in table and table["structured"] not in STRUCTURED_MODES:
        raise ConfigError(f"[{where}] structured must be one of "
                          f"{', '.join(STRUCTURED_MODES)}, got {_show(table['structured'])}")
    if "deployments" in table:
        out["deployments"] = check_role_table(table, where)
    return {k: v for k, v in out.items() if v is not None}


_EXTRA_HINTS = {
    "model": "model", "temperature": "temperature", "max_tokens": "max_tokens",
    "max_completion_tokens": "max_tokens", "timeout": "timeout", "request_timeout": "timeout",
    "api_base": "api_base", "base_url": "api_base", "response_format": "structured",
}


def _extra(value: Any, where: str) -> dict:
    """[models.*.extra]: passed to litellm as is, so plain JSON values, no secret, and none
    of the settings the engine manages (litellm gets `extra` last: they would bypass their
    checks and bounds)."""
    name = f"{where}.extra"
    if not isinstance(value, dict):
        raise ConfigError(f"[{name}] must be a table, got {_kind(value)}")
    for key in value:
        if not isinstance(key, str):
            raise ConfigError(f"[{name}] keys must be strings, got {_show(key)}")
        if re.search(r"api_?key|secret|password|access_token|^token$", key.lower()):
            raise ConfigError(
                f"[{name}] {key}: put secrets in an environment variable and name "
                f"it with api_key_env; sessions never store keys")
        if key in RESERVED_EXTRA:
            if key in _EXTRA_HINTS:
                hint = f"set {where}.{_EXTRA_HINTS[key]} instead"
            elif key in ("num_retries", "max_retries"):
                hint = "set [gateway] retries instead"
            elif key == "seed":
                hint = "the engine derives it from random_seed"
            else:
                hint = "the engine sets it"
            raise ConfigError(f"[{name}] {key}: not allowed in extra; {hint}")
        _plain_json(value[key], f"{name}.{key}")
    return value


def _plain_json(value: Any, name: str) -> None:
    """A value stored in the session (JSON) and sent to the provider: no dates, no NaN."""
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"{name} must be a finite number, got {_show(value)}")
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            _plain_json(item, f"{name}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ConfigError(f"{name}: keys must be strings, got {_show(key)}")
            _plain_json(item, f"{name}.{key}")
        return
    raise ConfigError(f"{name} must be a string, number, boolean, list or table, "
                      f"got {_kind(value)}")


def _check_limits(s: dict, limits: dict, where: str, optional: tuple = ()) -> None:
    """Check (and normalize) every numeric key of a section against its limits."""
    for key, lim in limits.items():
        if key in optional and s.get(key) is None:
            continue
        s[key] = _number(s[key], f"{where}.{key}", lim)


def _search(section: Any, method: str) -> dict:
    if not isinstance(section, dict):
        raise ConfigError(f"[search] must be a table, got {_kind(section)}")
    if family(method) == "vapo":
        return _vapo_search(section, method)
    if family(method) == "picaco":
        return _picaco_search(section, method)
    _no_unknown(section, set(DRPO_SEARCH_DEFAULTS), "search")
    s = {**DRPO_SEARCH_DEFAULTS, **section}
    _check_limits(s, DRPO_SEARCH_LIMITS, "search",
                  optional=("skip_rewrite_above", "monte_carlo_samples"))
    if method == "greedy":
        s["beam_width"] = 1  # greedy search is beam search with W = 1 (paper App. A.2)
    _string(s["initial_prompt"], "search.initial_prompt")
    if not isinstance(s["layout"], str) or s["layout"] not in ("chat", "plain"):
        raise ConfigError(f'search.layout must be "chat" or "plain", got {_show(s["layout"])}')
    if not isinstance(s["beam_rank"], str) or s["beam_rank"] not in ("reward", "path-mean"):
        raise ConfigError(f'search.beam_rank must be "reward" or "path-mean", '
                          f'got {_show(s["beam_rank"])}')
    if not isinstance(s["samples_in_one_call"], bool):
        raise ConfigError(f"search.samples_in_one_call must be true or false, "
                          f"got {_show(s['samples_in_one_call'])}")
    for key, choices in (("icl_keep", ("best", "final")), ("seed_order", ("shuffle", "file"))):
        if not isinstance(s[key], str) or s[key] not in choices:
            raise ConfigError(f"search.{key} must be " + " or ".join(f'"{c}"' for c in choices)
                              + f", got {_show(s[key])}")
    return s


def _vapo_search(section: dict, method: str) -> dict:
    _no_unknown(section, set(VAPO_SEARCH_DEFAULTS), "search")
    s = {**VAPO_SEARCH_DEFAULTS, **section}
    _check_limits(s, VAPO_SEARCH_LIMITS, "search")
    if not isinstance(s["meta_prompts"], str) or s["meta_prompts"] not in ("valuecot", "basis"):
        raise ConfigError(f'search.meta_prompts must be "valuecot" or "basis", '
                          f'got {_show(s["meta_prompts"])}')
    if method == "promptagent":
        if "meta_prompts" in section and section["meta_prompts"] != "basis":
            raise ConfigError('method "promptagent" uses the basis meta-prompts; '
                              'use method "vapo" for ValueCoT')
        s["meta_prompts"] = "basis"
    _string(s["initial_prompt"], "search.initial_prompt")
    if not isinstance(s["language"], str) or s["language"] not in ("en", "zh", "auto"):
        raise ConfigError(f'search.language must be "en", "zh" or "auto", got {_show(s["language"])}')
    return s


def _picaco_search(section: dict, method: str) -> dict:
    _no_unknown(section, set(PICACO_SEARCH_DEFAULTS), "search")
    s = {**PICACO_SEARCH_DEFAULTS, **section}
    p = s["p_samples"]
    if isinstance(p, int) and not isinstance(p, bool) and p < 2:
        raise ConfigError(f"search.p_samples must be at least 2 (p_e compares samples), got {p}")
    _check_limits(s, PICACO_SEARCH_LIMITS, "search", optional=("beta",))
    if s["seed_instruction"] is not None and (not isinstance(s["seed_instruction"], str)
                                              or not s["seed_instruction"].strip()):
        raise ConfigError(f"search.seed_instruction must be a non-empty string, "
                          f"got {_show(s['seed_instruction'])}")
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
        raise ConfigError(f"[values] must be a table, got {_kind(section)}")
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
                raise ConfigError(f"[[values.custom]] item {i} must be a table, got {_kind(item)}")
            _no_unknown(item, {"name", "definition"}, "values.custom")
            name, definition = item.get("name"), item.get("definition")
            if not isinstance(name, str) or not name.strip():
                raise ConfigError(f"[[values.custom]] item {i}: name must be a non-empty string")
            if not isinstance(definition, str) or not definition.strip():
                raise ConfigError(f"[[values.custom]] {_show(name.strip())}: definition must be "
                                  f"a non-empty string")
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
    if not isinstance(name, str):
        raise ConfigError(f"values.composition must be a string (one composition's name), "
                          f"got {_kind(name)}; for several values use [[values.custom]]")
    if name not in COMPOSITIONS:
        raise ConfigError(f"unknown values.composition {_show(name)}; choose one of: "
                          f"{', '.join(COMPOSITIONS)} (or [[values.custom]])")
    return {"composition": name, "kind": "hh" if name in HH_COMPOSITIONS else "schwartz",
            "custom": None}


def _file(value: Any, key: str, base_dir: Path | None, section: str = "data") -> str:
    """A data file path, resolved from the config's folder; it must exist."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{section}.{key} must be a file path, got {_show(value)}")
    try:
        path = Path(value).expanduser()
    except RuntimeError:  # "~user" with no such user
        path = Path(value)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    try:
        found = path.is_file()
    except (OSError, ValueError):  # a name too long, a NUL byte...
        found = False
    if not found:
        raise ConfigError(f"{section}.{key}: file not found: {path}")
    try:
        return str(path.resolve())
    except (OSError, RuntimeError):
        return str(path.absolute())


def _vapo_data(section: dict, base_dir: Path | None) -> dict:
    _no_unknown(section, set(VAPO_DATA_DEFAULTS), "data")
    d = {**VAPO_DATA_DEFAULTS, **section}
    if d["tasks"] is not None:
        d["tasks"] = _file(d["tasks"], "tasks", base_dir)
    if not isinstance(d["task_type"], str) or d["task_type"] not in ("multiple-choice",
                                                                      "free-form"):
        raise ConfigError(f'data.task_type must be "multiple-choice" or "free-form", '
                          f'got {_show(d["task_type"])}')
    _check_limits(d, VAPO_DATA_LIMITS, "data", optional=("train", "validation", "test"))
    if not isinstance(d["dimension"], str) or not d["dimension"].strip():
        raise ConfigError(f"data.dimension must be a non-empty string, got {_show(d['dimension'])}")
    if d["split"] is not None and d["split"] != "paper":
        raise ConfigError(f'data.split must be "paper" (or unset), got {_show(d["split"])}')
    if d["split"] == "paper" and any(d[k] is not None for k in ("train", "validation", "test")):
        raise ConfigError('data.split = "paper" sets train / validation / test itself')
    return d


def _data(section: Any, base_dir: Path | None, method: str = "drpo") -> dict:
    if not isinstance(section, dict):
        raise ConfigError(f"[data] must be a table, got {_kind(section)}")
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
        raise ConfigError(f"data.icl_optimized must be true or false, got {_show(flag)}")
    out["icl_optimized"] = flag
    out["seed_limit"] = section.get("seed_limit")
    _check_limits(out, DRPO_DATA_LIMITS, "data", optional=("seed_limit",))
    return out


def _gateway(section: Any) -> dict:
    if not isinstance(section, dict):
        raise ConfigError(f"[gateway] must be a table, got {_kind(section)}")
    _no_unknown(section, set(GATEWAY_DEFAULTS), "gateway")
    g = {**GATEWAY_DEFAULTS, **section}
    _check_limits(g, GATEWAY_LIMITS, "gateway")
    if not isinstance(g["cache"], bool):
        raise ConfigError(f"gateway.cache must be true or false, got {_show(g['cache'])}")
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
            raise ConfigError(f"unknown key {_show(key)} in {place}; "
                              f"allowed: {', '.join(sorted(allowed))}")


def _show(value: Any, limit: int = 60) -> str:
    """A value as a message shows it: its repr, cut short."""
    try:
        text = repr(value)
    except Exception:  # pragma: no cover - a hostile object passed in from Python
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _kind(value: Any) -> str:
    """What a TOML value is, for a message: "a list", "a string", ..."""
    if isinstance(value, bool):
        return f"a boolean ({_show(value)})"
    if isinstance(value, (int, float)):
        return f"a number ({_show(value)})"
    if isinstance(value, str):
        return f"a string ({_show(value)})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, (datetime.date, datetime.time)):  # datetime is a date
        return f"a date/time ({value.isoformat()})"
    return "null" if value is None else f"a {type(value).__name__}"


def _number(value: Any, name: str, limits: tuple) -> int | float:
    """A setting checked against (lowest, highest): a whole number if the limits are ints."""
    lo, hi = limits
    if isinstance(hi, int):
        return _int(value, name, lo=lo, hi=hi)
    return _float(value, name, lo=lo, hi=hi)


def _int(value: Any, name: str, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be a whole number, got {_show(value)}")
    if lo is not None and value < lo:
        raise ConfigError(f"{name} must be at least {lo}, got {_show(value)}")
    if hi is not None and value > hi:
        raise ConfigError(f"{name} must be at most {hi:,}, got {_show(value)}")
    return value


def _float(value: Any, name: str, lo: float | None = None, hi: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number, got {_show(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {_show(value)}")
    # ints compare exactly (a huge one never reaches float(), which would overflow)
    if lo is not None and value < lo:
        raise ConfigError(f"{name} must be at least {lo:g}, got {_show(value)}")
    if hi is not None and value > hi:
        raise ConfigError(f"{name} must be at most {hi:g}, got {_show(value)}")
    try:
        return float(value)
    except OverflowError:
        raise ConfigError(f"{name} is too large, got {_show(value)}") from None


def _opt_str(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be a string, got {_show(value)}")
    return value


def _string(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be a string, got {_show(value)}")
    return value
