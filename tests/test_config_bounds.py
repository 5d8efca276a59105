"""Bounds on every numeric setting, the planned-calls limit, cheap session creation at the
bounds, and validation that only ever raises a one-line ConfigError (engine/config.py)."""
from __future__ import annotations

import datetime
import json
import time
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from promptarbor.engine import config as C
from promptarbor.engine.config import (
    DRPO_METHODS, FAMILIES, MAX_PLANNED_CALLS, METHODS, PICACO_METHODS, ROLES, VAPO_METHODS,
    ConfigError, bounds, check_plan, family, validate_config,
)
from promptarbor.engine.datasets import load_inputs
from promptarbor.engine.runner import plan_calls

CPU_LIMIT = 1.0  # seconds of process time for validate_config + plan_calls
REPRESENTATIVE = {"drpo": "drpo", "vapo": "vapo", "picaco": "picaco"}


def one_line(message: str) -> bool:
    return bool(message) and "\n" not in message and message.isprintable()


def put(raw: dict, dotted: str, value) -> dict:
    """Set "search.depth" / "models.base.max_tokens" / "random_seed" in a raw config."""
    *tables, key = dotted.split(".")
    node = raw
    for name in tables:
        node = node.setdefault(name, {})
    node[key] = value
    return raw


def base_raw(kind: str, method: str | None = None) -> dict:
    raw: dict = {"method": method or REPRESENTATIVE[kind]}
    if raw["method"] == "promptagent":
        raw.setdefault("search", {})["meta_prompts"] = "basis"
    return raw


def get(cfg: dict, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def above(hi):
    return hi + 1 if isinstance(hi, int) else hi * 1.5 + 1.0


def below(lo):
    return lo - 1 if isinstance(lo, int) else lo - 0.5


def shown_bound(bound) -> str:
    return f"{bound:,}" if isinstance(bound, int) else f"{bound:g}"


ALL_BOUNDS = [(kind, key, lim) for kind in FAMILIES for key, lim in bounds(kind).items()]


# ----------------------------------------------------------------------------- each bound

@pytest.mark.parametrize("kind,key,lim", ALL_BOUNDS, ids=[f"{k}:{n}" for k, n, _ in ALL_BOUNDS])
def test_each_bound(kind, key, lim):
    lo, hi = lim
    # at the bound: accepted, kept as given
    cfg = validate_config(put(base_raw(kind), key, hi))
    role_key = key.replace("models.default.", "models.base.")
    assert get(cfg, role_key) == hi
    cfg = validate_config(put(base_raw(kind), key, lo))
    assert get(cfg, role_key) == lo
    # above it: refused, one line naming the key, the value and the bound
    value = above(hi)
    with pytest.raises(ConfigError) as info:
        validate_config(put(base_raw(kind), key, value))
    message = str(info.value)
    assert one_line(message), message
    assert key in message and repr(value) in message and shown_bound(hi) in message, message
    assert "at most" in message
    # below the lowest: refused too
    with pytest.raises(ConfigError) as info:
        validate_config(put(base_raw(kind), key, below(lo)))
    assert one_line(str(info.value)) and key in str(info.value)


def test_every_numeric_default_is_bounded_and_within():
    """No numeric key escapes the bounds tables (defaults included)."""
    sections = {
        "drpo": C.DRPO_SEARCH_DEFAULTS, "vapo": C.VAPO_SEARCH_DEFAULTS,
        "picaco": C.PICACO_SEARCH_DEFAULTS,
    }
    for kind, defaults in sections.items():
        table = bounds(kind)
        for key, value in defaults.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                assert f"search.{key}" in table, (kind, key)
        cfg = validate_config(base_raw(kind))
        for key, (lo, hi) in table.items():
            value = get(cfg, key.replace("models.default.", "models.base."))
            if value is not None:
                assert lo <= value <= hi, (kind, key, value)
    for key in ("concurrency", "retries", "parse_retries", "backoff", "max_backoff", "timeout"):
        assert f"gateway.{key}" in bounds("drpo")
    for key in ("seed_limit",):
        assert f"data.{key}" in bounds("drpo")
    for key in ("train", "validation", "test"):
        assert f"data.{key}" in bounds("vapo")
    for role in ("default",) + ROLES:
        for key in ("max_tokens", "timeout", "temperature"):
            assert f"models.{role}.{key}" in bounds("picaco")


def test_the_attacks_from_the_report_are_refused_at_once():
    cases = [
        ({"search": {"depth": 100_000_000}}, "search.depth must be at most 200"),
        ({"method": "monte-carlo", "search": {"monte_carlo_samples": 1_000_000_000}},
         "search.monte_carlo_samples must be at most 10,000"),
        ({"method": "picaco", "search": {"iterations": 1_000_000_000, "prompts": 1_000_000_000}},
         "search.iterations must be at most 100"),
        ({"search": {"icl_depth": 100_000_000}}, "search.icl_depth must be at most 200"),
        ({"method": "picaco", "values": {"composition": ["harmlessness"]}},
         "values.composition must be a string"),
        ({"gateway": {"timeout": 10 ** 400}}, "gateway.timeout must be at most 3600"),
        ({"models": {"base": {"extra": {"max_tokens": 10 ** 9}}}},
         "max_tokens: not allowed in extra; set models.base.max_tokens instead"),
        ({"models": {"default": {"extra": {"n": 1000}}}}, "n: not allowed in extra"),
        ({"name": ["x"]}, "name must be a string"),
        ({"method": ["drpo"]}, "unknown method"),
        ({"search": "deep"}, "[search] must be a table, got a string"),
        ({"gateway": {"retries": {"a": 1}}}, "gateway.retries must be a whole number"),
        ({"models": {"base": {"extra": {"when": datetime.date(2024, 1, 1)}}}}, "date"),
        ({"search": {"initial_prompt": ["a"]}}, "search.initial_prompt must be a string"),
    ]
    for raw, needle in cases:
        start = time.process_time()
        with pytest.raises(ConfigError) as info:
            validate_config(raw)
        assert time.process_time() - start < 0.1
        assert needle in str(info.value) and one_line(str(info.value)), (raw, str(info.value))


def test_control_characters_in_messages_are_escaped():
    with pytest.raises(ConfigError) as info:
        validate_config({"data": {"seed": "nope\n\x1b[31mred.jsonl"}})
    assert one_line(str(info.value)) and "\\n\\x1b[31mred.jsonl" in str(info.value)
    with pytest.raises(ConfigError) as info:
        validate_config({"search": {"depth\u2028": 1}})
    assert one_line(str(info.value))


# ----------------------------------------------------------------------------- the plan limit

def test_check_plan():
    assert MAX_PLANNED_CALLS == 100_000
    check_plan({"base": 50_000, "optimizer": 25_000, "evaluator": 25_000}, False)
    check_plan({"base": 0, "optimizer": 0, "evaluator": 0}, False)
    with pytest.raises(ConfigError) as info:
        check_plan({"base": 50_001, "optimizer": 25_000, "evaluator": 25_000}, False)
    assert str(info.value) == (
        "the plan needs 100,001 calls (base 50,001, optimizer 25,000, evaluator 25,000), over "
        "the limit of 100,000; lower the search sizes or pass --allow-large")
    check_plan({"base": 50_001, "optimizer": 25_000, "evaluator": 25_000}, True)
    check_plan({"base": 10 ** 12, "optimizer": 0, "evaluator": 0}, True)


# ----------------------------------------------------------------------------- cheap at the bounds

def maxed(kind: str, method: str, *, data: dict | None = None) -> dict:
    """A raw config with every bounded setting at its highest (data sizes as given)."""
    raw = base_raw(kind, method)
    for key, (lo, hi) in bounds(kind).items():
        if key.startswith("data."):
            continue
        put(raw, key, hi)
    if kind == "picaco":
        raw["values"] = {"composition": "schwartz"}  # 10 values: the biggest judge tables
    raw["data"] = dict(data or {})
    return raw


def _warm(method: str) -> None:
    """Imports and first-use caches are paid once per process, not per config."""
    kind = family(method)
    cfg = validate_config(base_raw(kind, method))
    plan_calls(cfg, load_inputs(cfg))


def _timed_create(raw: dict, base_dir=None) -> tuple[dict, float, int]:
    start = time.process_time()
    cfg = validate_config(raw, base_dir=base_dir)
    spent = time.process_time() - start
    inputs = load_inputs(cfg)  # reading the data files is not part of the budget
    start = time.process_time()
    plan = plan_calls(cfg, inputs)
    spent += time.process_time() - start
    tracemalloc.start()
    try:
        plan_calls(cfg, inputs)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return plan, spent, peak


@pytest.mark.parametrize("method", METHODS)
def test_config_at_every_bound_plans_fast_with_builtin_inputs(method):
    kind = family(method)
    _warm(method)
    plan, spent, peak = _timed_create(maxed(kind, method))
    assert set(plan) == set(ROLES) | {"judge"} and all(isinstance(n, int) and n >= 0 for n in plan.values())
    assert spent < CPU_LIMIT, f"{method}: {spent:.3f} s"
    assert peak < 64 * 2 ** 20, f"{method}: {peak / 2 ** 20:.1f} MiB"
    if method in REPRESENTATIVE.values():
        with pytest.raises(ConfigError, match="over the limit of 100,000"):
            check_plan(plan, False)
        check_plan(plan, True)


@pytest.fixture(scope="module")
def big_data(tmp_path_factory):
    """Data files as large as the data bounds can use."""
    d = tmp_path_factory.mktemp("big")
    (d / "seed.jsonl").write_text("".join(json.dumps({"query": f"question {i}?"}) + "\n"
                                          for i in range(C.DRPO_DATA_LIMITS["seed_limit"][1])))
    n = sum(C.VAPO_DATA_LIMITS[k][1] for k in ("train", "validation", "test"))
    (d / "tasks.jsonl").write_text("".join(
        json.dumps({"question": f"is act {i} wrong?", "options": ["Wrong", "Not wrong"],
                    "answer": "A" if i % 2 else "B"}) + "\n" for i in range(n)))
    (d / "prompts.jsonl").write_text("".join(json.dumps({"query": f"prompt {i}"}) + "\n"
                                             for i in range(C.PICACO_SEARCH_LIMITS["prompts"][1])))
    return d


@pytest.mark.parametrize("method,data", [
    ("drpo", {"seed": "seed.jsonl", "seed_limit": 10_000}),
    ("monte-carlo", {"seed": "seed.jsonl", "seed_limit": 10_000}),
    ("vapo", {"tasks": "tasks.jsonl", "train": 10_000, "validation": 10_000, "test": 10_000}),
    ("promptagent", {"tasks": "tasks.jsonl", "train": 10_000, "validation": 10_000,
                     "test": 10_000}),
    ("picaco", {"prompts": "prompts.jsonl"}),
    ("opro", {"prompts": "prompts.jsonl"}),
    ("q-if-cot", {"prompts": "prompts.jsonl"}),
])
def test_config_at_every_bound_plans_fast_with_the_largest_data(method, data, big_data):
    kind = family(method)
    _warm(method)
    raw = maxed(kind, method, data=data)
    plan, spent, peak = _timed_create(raw, base_dir=big_data)
    assert spent < CPU_LIMIT, f"{method}: {spent:.3f} s"
    assert peak < 64 * 2 ** 20, f"{method}: {peak / 2 ** 20:.1f} MiB"
    if method != "q-if-cot":
        with pytest.raises(ConfigError, match="over the limit"):
            check_plan(plan, False)


def test_monte_carlo_with_the_most_rounds_plans_fast():
    """One sample per round: monte_carlo_samples rounds, each on its own query."""
    _warm("monte-carlo")
    raw = maxed("drpo", "monte-carlo")
    raw["search"]["samples_per_state"] = 1
    plan, spent, _ = _timed_create(raw)
    assert plan["optimizer"] >= 10_000
    assert spent < CPU_LIMIT


# ----------------------------------------------------------------------------- only ConfigError

TZ = st.sampled_from([datetime.timezone.utc, datetime.timezone(datetime.timedelta(hours=-5))])
SCALARS = st.one_of(
    st.text(max_size=12),
    st.integers(min_value=-(2 ** 63), max_value=2 ** 63 - 1),
    st.integers(),
    st.floats(),  # NaN and infinities included
    st.booleans(),
    st.datetimes(), st.datetimes(timezones=TZ), st.dates(), st.times(),
)
TOML_VALUE = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)
NEAR_BOUNDS = st.sampled_from(sorted({v for kind in FAMILIES for lim in bounds(kind).values()
                                      for b in lim for v in (b, above(b), below(b))}, key=str))
WORDS = st.sampled_from(list(METHODS) + ["chat", "plain", "reward", "path-mean", "valuecot",
                                         "basis", "multiple-choice", "free-form", "harmlessness",
                                         "schwartz", "local/smollm2", "openai/x", "", " "])
ANY = st.one_of(TOML_VALUE, NEAR_BOUNDS, WORDS)

SEARCH_KEYS = sorted(set(C.DRPO_SEARCH_DEFAULTS) | set(C.VAPO_SEARCH_DEFAULTS)
                     | set(C.PICACO_SEARCH_DEFAULTS))
DATA_KEYS = sorted(C.DATA_KEYS | set(C.VAPO_DATA_DEFAULTS) | set(C.PICACO_DATA_DEFAULTS))
KEY_NOISE = st.text(min_size=1, max_size=6)


def table_of(keys, value=ANY):
    key = st.one_of(st.sampled_from(sorted(keys)), KEY_NOISE) if keys else KEY_NOISE
    return st.dictionaries(st.sampled_from(sorted(keys)), value, max_size=len(keys)) | \
        st.dictionaries(key, value, max_size=4)


EXTRA = st.dictionaries(st.sampled_from(sorted(C.RESERVED_EXTRA) + ["top_p", "stop", "api_key"])
                        | st.text(max_size=6), ANY, max_size=3)
ROLE_TABLE = st.fixed_dictionaries({}, optional={
    "model": ANY, "api_base": ANY, "api_key_env": ANY, "temperature": ANY, "max_tokens": ANY,
    "timeout": ANY, "extra": EXTRA | ANY,
})
MODELS = st.dictionaries(st.sampled_from(("default",) + ROLES) | KEY_NOISE, ROLE_TABLE | ANY,
                         max_size=4)
CUSTOM = st.lists(st.fixed_dictionaries({}, optional={"name": ANY | WORDS, "definition": ANY})
                  | ANY, max_size=3)
VALUES = st.fixed_dictionaries({}, optional={"composition": ANY, "custom": CUSTOM | ANY})
RAW = st.fixed_dictionaries({}, optional={
    "method": st.sampled_from(METHODS) | ANY,
    "name": ANY,
    "random_seed": ANY,
    "models": MODELS | ANY,
    "search": table_of(SEARCH_KEYS) | ANY,
    "data": table_of(DATA_KEYS) | ANY,
    "gateway": table_of(set(C.GATEWAY_DEFAULTS)) | ANY,
    "values": VALUES | ANY,
}) | st.dictionaries(KEY_NOISE | st.sampled_from(sorted(C.TOP_KEYS)), ANY, max_size=3)


def _within(draw_lim, lim):
    lo, hi = lim
    if isinstance(hi, int):
        return draw_lim(st.integers(min_value=lo, max_value=hi))
    return draw_lim(st.floats(min_value=lo, max_value=hi))


@st.composite
def valid_raw(draw):
    """Configs within every bound (random values in range, built-in data)."""
    method = draw(st.sampled_from(METHODS))
    kind = family(method)
    raw = base_raw(kind, method)
    for key, lim in bounds(kind).items():
        if key.startswith("data.") or not draw(st.booleans()):
            continue
        put(raw, key, _within(draw, lim))
    if kind == "picaco":
        raw["values"] = {"composition": draw(st.sampled_from(["harmlessness", "schwartz"]))}
    return raw


ALL_PATHS = sorted(
    {f"search.{k}" for k in SEARCH_KEYS} | {f"data.{k}" for k in DATA_KEYS}
    | {f"gateway.{k}" for k in C.GATEWAY_DEFAULTS} | set(C.TOP_KEYS)
    | {f"models.{r}.{k}" for r in ("default",) + ROLES for k in C.ROLE_KEYS}
    | {f"models.{r}.extra.{k}" for r in ("default",) + ROLES
       for k in sorted(C.RESERVED_EXTRA) + ["top_p", "api_key"]}
    | {"values.composition", "values.custom", "models.base", "models.default"})


@st.composite
def mutated_raw(draw):
    """A config within the bounds with one to three keys (from the real key sets) set to any
    TOML value: it gets past the first checks, so every section's checks are reached."""
    raw = draw(valid_raw())
    if draw(st.booleans()):
        raw["models"] = {"base": {"model": "openai/x", "extra": {"top_p": 0.9}}}
    if family(raw["method"]) == "picaco" and draw(st.booleans()):
        raw["values"] = {"custom": [{"name": "Thrift", "definition": "Spends carefully."}]}
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        path = draw(st.sampled_from(ALL_PATHS + ["values.custom.0.name",
                                                 "values.custom.0.definition"]))
        value = draw(ANY)
        if path.startswith("values.custom.0."):
            custom = raw.setdefault("values", {}).get("custom")
            if isinstance(custom, list) and custom and isinstance(custom[0], dict):
                custom[0][path.rsplit(".", 1)[1]] = value
            continue
        *tables, key = path.split(".")
        node = raw
        for name in tables:
            if not isinstance(node.get(name), dict):
                node[name] = {}
            node = node[name]
        node[key] = value
    return raw


def _check_valid(cfg: dict) -> None:
    json.dumps(cfg, allow_nan=False)  # the session stores the config as JSON
    for key, (lo, hi) in bounds(family(cfg["method"])).items():
        if key.startswith("models.default."):
            continue
        value = get(cfg, key)
        if value is not None:
            assert not isinstance(value, bool) and lo <= value <= hi, (key, value)


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
@given(RAW | mutated_raw())
def test_validate_config_raises_only_one_line_config_errors(raw):
    try:
        cfg = validate_config(raw)
    except ConfigError as exc:
        assert one_line(str(exc)), repr(str(exc))
    else:
        _check_valid(cfg)


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(valid_raw())
def test_any_config_within_the_bounds_plans_within_a_second(raw):
    start = time.process_time()
    cfg = validate_config(raw)
    spent = time.process_time() - start
    _check_valid(cfg)
    inputs = load_inputs(cfg)
    start = time.process_time()
    plan = plan_calls(cfg, inputs)
    spent += time.process_time() - start
    assert spent < CPU_LIMIT
    total = sum(plan.values())
    if total > MAX_PLANNED_CALLS:
        with pytest.raises(ConfigError):
            check_plan(plan, False)
    else:
        check_plan(plan, False)


def test_families_cover_every_method():
    assert set(DRPO_METHODS) | set(VAPO_METHODS) | set(PICACO_METHODS) == set(METHODS)
    assert {family(m) for m in METHODS} == set(FAMILIES)
