"""Statistics for held-out evaluation (DESIGN.md section 10): pure functions, no I/O.

Plain Python only (no numpy), so importing the engine stays light. Every random choice comes
from ``random.Random(seed)``: the same inputs and seed give the same output, in any process.
Nothing is rounded; callers round for display.

Conventions shared by every function here:

* A value is an ``int``, ``float`` or ``bool`` (any ``numbers.Real``; ``True`` counts 1).
  NaN, +-inf, strings and other objects raise ``ValueError`` with a one-line message.
* ``None`` marks a failed sample or judgment. Where a function takes a list of values, ``None``
  entries are ignored; where it takes ``{item: value}``, an item whose value is ``None`` is
  treated as absent.
* Items are any hashable keys (ids, indices). Order is the mapping's insertion order, which
  also fixes the order in which items are resampled, so outputs are stable.
* Summaries have the shape ``{"mean": float | None, "ci": [lo, hi] | None, "n": int}``.

Bootstrap (``bootstrap_ci``): percentile bootstrap of the mean. For r = 1..reps, draw n
values uniformly with replacement from the n values (``Random.choices``) and take their mean
m_r; sort the m_r; the interval is [Q(a), Q(1 - a)] with a = (1 - level) / 2 and Q the
linear-interpolation quantile (numpy's default, Hyndman-Fan type 7): with sorted m_0..m_{R-1},
h = (R - 1) p, Q(p) = m_floor(h) + (h - floor(h)) (m_floor(h)+1 - m_floor(h)).
"""
from __future__ import annotations

import math
import numbers
import random
from collections.abc import Hashable, Iterable, Mapping

__all__ = [
    "NO_CATEGORY",
    "mean",
    "bootstrap_ci",
    "summary",
    "item_values",
    "paired",
    "summarize_prompt",
    "per_category",
    "regressions",
    "win_rate",
    "weighted_conformity",
    "conformity_percent",
]

NO_CATEGORY = "(none)"
_SHORT = 60


# --------------------------------------------------------------------------- validation

def _fmt(x: object) -> str:
    """A short, single-line repr for error messages."""
    try:
        s = repr(x)
    except Exception:  # noqa: BLE001 - a hostile __repr__ must not hide the real error
        s = f"<{type(x).__name__}>"
    s = " ".join(s.split())
    return s if len(s) <= _SHORT else s[: _SHORT - 3] + "..."


def _num(x: object, what: str) -> float:
    """``x`` as a finite float, or ValueError naming ``what``."""
    if not isinstance(x, numbers.Real):
        raise ValueError(f"stats: {what} must be a number, got {_fmt(x)}")
    try:
        f = float(x)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"stats: {what} must be a finite number, got {_fmt(x)}") from None
    if not math.isfinite(f):
        raise ValueError(f"stats: {what} must be a finite number, got {_fmt(x)}")
    return f


def _values(values: Iterable, what: str = "value") -> list[float]:
    """The finite floats of ``values``, ``None`` dropped."""
    if values is None or isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Iterable):
        raise ValueError(f"stats: expected a list of {what}s, got {_fmt(values)}")
    return [_num(v, what) for v in values if v is not None]


def _item_map(values_by_item: Mapping, what: str = "values_by_item") -> dict:
    """``{item: float}`` with items valued ``None`` dropped, insertion order kept."""
    if not isinstance(values_by_item, Mapping):
        raise ValueError(f"stats: {what} must be a dict of item -> value, got {_fmt(values_by_item)}")
    out = {}
    for item, v in values_by_item.items():
        if v is not None:
            out[item] = _num(v, f"value of item {_fmt(item)}")
    return out


def _prompt_maps(values_by_prompt: Iterable) -> list[dict]:
    if values_by_prompt is None or isinstance(values_by_prompt, (str, bytes, Mapping)) \
            or not isinstance(values_by_prompt, Iterable):
        raise ValueError(f"stats: values_by_prompt must be a list of dicts, got {_fmt(values_by_prompt)}")
    return [_item_map(m, f"values_by_prompt[{i}]") for i, m in enumerate(values_by_prompt)]


def _seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"stats: seed must be an integer, got {_fmt(seed)}")
    return int(seed)


def _reps(reps: object) -> int:
    if isinstance(reps, bool) or not isinstance(reps, numbers.Integral) or reps < 1:
        raise ValueError(f"stats: reps must be an integer >= 1, got {_fmt(reps)}")
    return int(reps)


def _level(level: object) -> float:
    f = _num(level, "level")
    if not 0.0 < f < 1.0:
        raise ValueError(f"stats: level must be strictly between 0 and 1, got {_fmt(level)}")
    return f


def _tie(tie: object) -> float:
    f = _num(tie, "tie")
    if f < 0:
        raise ValueError(f"stats: tie must be >= 0, got {_fmt(tie)}")
    return f


# --------------------------------------------------------------------------- core

def _mean(xs: list[float]) -> float | None:
    """fsum(xs) / n, clamped to [min, max] so float rounding can never leave the data's range
    (a constant list gives exactly its constant)."""
    if not xs:
        return None
    try:
        m = math.fsum(xs) / len(xs)
    except OverflowError:  # the sum passes 1.8e308: average the scaled-down values instead
        m = math.fsum(x / len(xs) for x in xs)
    return min(max(m, min(xs)), max(xs))


def _quantile(sorted_xs: list[float], p: float) -> float:
    """Type-7 quantile (numpy's default 'linear'): h = (R-1) p, interpolate between
    sorted_xs[floor(h)] and sorted_xs[floor(h) + 1]."""
    h = (len(sorted_xs) - 1) * p
    lo = math.floor(h)
    hi = min(lo + 1, len(sorted_xs) - 1)
    a, b, t = sorted_xs[lo], sorted_xs[hi], h - lo
    if t == 0 or a == b:
        return a
    q = a + t * (b - a)
    if not math.isfinite(q):  # b - a overflowed (values near 1.8e308)
        q = a * (1 - t) + b * t
    return min(max(q, a), b)


def _bootstrap(xs: list[float], seed: int, reps: int, level: float) -> list[float] | None:
    n = len(xs)
    if n == 0:
        return None
    lo_x, hi_x = min(xs), max(xs)
    if lo_x == hi_x:  # n == 1 or a constant list: every resample mean is that value
        return [lo_x, hi_x]
    rng = random.Random(seed)
    choices = rng.choices
    if max(-lo_x, hi_x) * n < 1e300:
        means = sorted(sum(choices(xs, k=n)) / n for _ in range(reps))
    else:  # a sum could overflow: draw the values divided by n (same draws, sum = mean)
        scaled = [x / n for x in xs]
        means = sorted(sum(choices(scaled, k=n)) for _ in range(reps))
    a = (1.0 - level) / 2.0
    lo = _quantile(means, a)
    hi = _quantile(means, 1.0 - a)
    # A resample mean lies in [min, max] exactly; clamp away float rounding.
    return [min(max(lo, lo_x), hi_x), min(max(hi, lo_x), hi_x)]


def _summary(xs: list[float], seed: int, reps: int, level: float) -> dict:
    return {"mean": _mean(xs), "ci": _bootstrap(xs, seed, reps, level), "n": len(xs)}


def mean(values: Iterable) -> float | None:
    """Arithmetic mean: sum(x_i) / n over the non-None values (math.fsum, exact rounding,
    clamped to [min, max]). ``None`` for no values."""
    return _mean(_values(values))


def bootstrap_ci(values: Iterable, seed: int = 0, reps: int = 2000,
                 level: float = 0.95) -> list[float] | None:
    """Percentile-bootstrap confidence interval ``[lo, hi]`` of the mean of the non-None values.

    reps resamples of n draws with replacement from ``random.Random(seed)``; the interval is
    the (1 - level)/2 and 1 - (1 - level)/2 type-7 (linear interpolation) quantiles of the
    sorted resample means (see the module docstring). n = 1 or a constant list gives [x, x]
    without drawing; no values gives ``None``.
    """
    return _bootstrap(_values(values), _seed(seed), _reps(reps), _level(level))


def summary(values: Iterable, seed: int = 0, reps: int = 2000, level: float = 0.95) -> dict:
    """``{"mean": mean(values), "ci": bootstrap_ci(values, ...), "n": count of non-None values}``."""
    return _summary(_values(values), _seed(seed), _reps(reps), _level(level))


def item_values(samples_by_item: Mapping) -> dict:
    """An item's value for one prompt = mean of its k samples, failed samples (None) ignored:
    v_item = sum(s_j) / k_ok over the k_ok non-None samples. An item whose samples all failed
    (or that has none) is absent from the result. ``{item: [s_1, ..., s_k]} -> {item: float}``;
    item order kept. A bare number is taken as a single sample.
    """
    if not isinstance(samples_by_item, Mapping):
        raise ValueError(f"stats: samples_by_item must be a dict of item -> samples, got {_fmt(samples_by_item)}")
    out = {}
    for item, samples in samples_by_item.items():
        if samples is None:
            continue
        if isinstance(samples, numbers.Real):
            samples = [samples]
        xs = _values(samples, f"sample of item {_fmt(item)}")
        if xs:
            out[item] = _mean(xs)
    return out


def paired(baseline: Mapping, other: Mapping, seed: int = 0, reps: int = 2000,
           tie: float = 1e-9, level: float = 0.95) -> dict:
    """Paired difference of ``other`` to ``baseline`` over the items both have (items valued
    None count as absent), in ``baseline``'s item order.

    d_i = other_i - baseline_i; mean = sum(d_i) / n; ci = bootstrap_ci(d) (resampling items);
    wins = #{d_i > tie}, losses = #{d_i < -tie}, ties = n - wins - losses.
    Returns ``{"mean", "ci", "n", "wins", "ties", "losses"}``; no common item gives n 0 and
    mean/ci None.
    """
    b = _item_map(baseline, "baseline")
    o = _item_map(other, "other")
    seed, reps, level, tie = _seed(seed), _reps(reps), _level(level), _tie(tie)
    d = [o[item] - v for item, v in b.items() if item in o]
    wins = sum(1 for x in d if x > tie)
    losses = sum(1 for x in d if x < -tie)
    return {"mean": _mean(d), "ci": _bootstrap(d, seed, reps, level), "n": len(d),
            "wins": wins, "ties": len(d) - wins - losses, "losses": losses}


def summarize_prompt(values_by_item: Mapping, per_metric: Mapping | None = None, seed: int = 0,
                     reps: int = 2000, level: float = 0.95) -> dict:
    """One prompt's summary: mean, bootstrap CI and n over its item values (``values_by_item``,
    usually from ``item_values``), and the same per metric.

    Returns ``{"mean", "ci", "n", "per_metric": {metric: {"mean", "ci", "n"}}}``, metrics in
    the given order; ``per_metric`` None gives ``{}``.
    """
    seed, reps, level = _seed(seed), _reps(reps), _level(level)
    out = _summary(list(_item_map(values_by_item).values()), seed, reps, level)
    if per_metric is None:
        per_metric = {}
    if not isinstance(per_metric, Mapping):
        raise ValueError(f"stats: per_metric must be a dict of metric -> {{item: value}}, got {_fmt(per_metric)}")
    out["per_metric"] = {
        m: _summary(list(_item_map(vals, f"per_metric[{_fmt(m)}]").values()), seed, reps, level)
        for m, vals in per_metric.items()}
    return out


def _category_names(raw: object, item: Hashable) -> list[str]:
    """The item's categories: a string or a list of them (numbers are turned into strings);
    blanks and duplicates dropped, order kept. Empty means "no category"."""
    if raw is None:
        return []
    seq = [raw] if isinstance(raw, (str, numbers.Real)) else raw
    if isinstance(seq, (bytes, Mapping)) or not isinstance(seq, Iterable):
        raise ValueError(f"stats: categories of item {_fmt(item)} must be a string or a list of strings, got {_fmt(raw)}")
    names: list[str] = []
    for c in seq:
        if c is None:
            continue
        if isinstance(c, numbers.Real) and not isinstance(c, bool):
            c = str(c)
        if not isinstance(c, str):
            raise ValueError(f"stats: category of item {_fmt(item)} must be a string, got {_fmt(c)}")
        if c.strip() and c not in names:
            names.append(c)
    return names


def per_category(categories: Mapping | None, values_by_prompt: list, seed: int = 0,
                 reps: int = 2000, level: float = 0.95, tie: float = 1e-9) -> dict:
    """Results per category.

    The items are those valued by at least one prompt (first appearance order, prompt 0
    first). An item counts in each of its categories (``categories[item]`` is a string or a
    list of strings); an item absent from ``categories`` or with no category goes to
    ``"(none)"``. For category C: n = number of its items; prompts[j] = summary (mean, ci, n)
    of prompt j's values on C's items; delta = ``paired(prompt 0, prompt 1)`` on C's items when
    there are at least two prompts, else None.

    Returns ``{C: {"n", "prompts": [{"mean", "ci", "n"}, ...], "delta": {"mean", "ci", "wins",
    "ties", "losses", "n"} | None}}``, categories sorted by name.
    """
    prompts = _prompt_maps(values_by_prompt)
    seed, reps, level, tie = _seed(seed), _reps(reps), _level(level), _tie(tie)
    if categories is None:
        categories = {}
    if not isinstance(categories, Mapping):
        raise ValueError(f"stats: categories must be a dict of item -> category list, got {_fmt(categories)}")
    items = list(dict.fromkeys(item for p in prompts for item in p))
    groups: dict[str, list] = {}
    for item in items:
        for c in _category_names(categories.get(item), item) or [NO_CATEGORY]:
            groups.setdefault(c, []).append(item)
    out = {}
    for c in sorted(groups):
        members = groups[c]
        sub = [{item: p[item] for item in members if item in p} for p in prompts]
        out[c] = {
            "n": len(members),
            "prompts": [_summary(list(s.values()), seed, reps, level) for s in sub],
            "delta": paired(sub[0], sub[1], seed=seed, reps=reps, tie=tie, level=level)
            if len(sub) >= 2 else None,
        }
    return out


def regressions(values_by_prompt: list, limit: int | None = None, tie: float = 1e-9) -> list[dict]:
    """Every (prompt j >= 1, item) where prompt j scored below the baseline (prompt 0):
    drop = baseline_item - score_item > tie (the same tolerance as ``paired``'s losses).

    Sorted by drop, largest first; equal drops keep the baseline's item order, then prompt
    index. ``limit`` (an int >= 0) keeps the first ``limit`` rows. Returns
    ``[{"item", "prompt_index", "baseline", "score", "drop"}, ...]``.
    """
    prompts = _prompt_maps(values_by_prompt)
    tie = _tie(tie)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, numbers.Integral) or limit < 0):
        raise ValueError(f"stats: limit must be None or an integer >= 0, got {_fmt(limit)}")
    if len(prompts) < 2:
        return []
    rows = []
    for item, base in prompts[0].items():
        for j in range(1, len(prompts)):
            score = prompts[j].get(item)
            if score is not None and base - score > tie:
                rows.append({"item": item, "prompt_index": j, "baseline": base,
                             "score": score, "drop": base - score})
    rows.sort(key=lambda r: -r["drop"])  # stable: ties keep item, then prompt, order
    return rows if limit is None else rows[: int(limit)]


def win_rate(outcomes: Iterable, seed: int = 0, reps: int = 2000, level: float = 0.95) -> dict:
    """Pairwise judging: outcomes 1 (win), 0.5 (tie), 0 (loss), None (failed, ignored); any
    value in [0, 1] is accepted (e.g. 0.75 from averaging two orders).

    mean = sum(o_i) / n, the win rate with ties counted half; ci = bootstrap_ci(outcomes);
    wins = #{o_i > 0.5}, losses = #{o_i < 0.5}, ties = #{o_i = 0.5} (within 1e-9).
    Returns ``{"mean", "ci", "n", "wins", "ties", "losses"}``.
    """
    xs = _values(outcomes, "outcome")
    for x in xs:
        if not 0.0 <= x <= 1.0:
            raise ValueError(f"stats: outcomes must be between 0 and 1, got {_fmt(x)}")
    out = _summary(xs, _seed(seed), _reps(reps), _level(level))
    wins = sum(1 for x in xs if x > 0.5 + 1e-9)
    losses = sum(1 for x in xs if x < 0.5 - 1e-9)
    out.update(wins=wins, ties=len(xs) - wins - losses, losses=losses)
    return out


def weighted_conformity(mu: float, relevance: float) -> float:
    """PICACO Eq. 7, applied per response: mu' = mu * relevance / 5, where mu is the
    response's conformity (any non-negative scale, e.g. a percentage) and relevance its
    1-5 relevance score. E.g. mu 80 (%) and relevance 4 give 64."""
    m = _num(mu, "mu")
    if m < 0:
        raise ValueError(f"stats: mu must be >= 0, got {_fmt(mu)}")
    r = _num(relevance, "relevance")
    if not 1.0 <= r <= 5.0:
        raise ValueError(f"stats: relevance must be a 1-5 score, got {_fmt(relevance)}")
    return m * r / 5.0


def conformity_percent(score_1_to_5: float) -> float:
    """A 1-5 conformity score as a percentage: score / 5 * 100 (computed as score * 100 / 5,
    exact for integer scores). E.g. 4 gives 80."""
    s = _num(score_1_to_5, "conformity score")
    if not 1.0 <= s <= 5.0:
        raise ValueError(f"stats: conformity score must be between 1 and 5, got {_fmt(score_1_to_5)}")
    return s * 100.0 / 5.0
