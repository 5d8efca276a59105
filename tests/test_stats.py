"""engine.stats: hand-computed values, reproducibility, a brute-force bootstrap check."""
from __future__ import annotations

import itertools
import math
import subprocess
import sys
import time
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pytest

from promptarbor.engine import stats
from promptarbor.engine.stats import (
    NO_CATEGORY, bootstrap_ci, conformity_percent, item_values, mean, paired, per_category,
    regressions, summarize_prompt, summary, weighted_conformity, win_rate,
)

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- mean

def test_mean_hand_values():
    assert mean([1, 2, 3, 4]) == 2.5
    assert mean([2.5]) == 2.5
    assert mean([1, None, 2]) == 1.5          # None (failed) ignored
    assert mean((x for x in [3, 6])) == 4.5   # any iterable
    assert mean([True, False, True, True]) == 0.75
    assert mean([]) is None
    assert mean([None, None]) is None


def test_mean_of_constant_is_exact():
    assert mean([0.1] * 7) == 0.1
    assert mean([1e308, 1e308]) == 1e308      # no overflow to inf
    assert mean([1e308, 1.5e308]) == pytest.approx(1.25e308)
    lo, hi = bootstrap_ci([1e308, 1.5e308, -1e308])
    assert math.isfinite(lo) and math.isfinite(hi) and -1e308 <= lo < hi <= 1.5e308


# --------------------------------------------------------------------------- bootstrap

def test_bootstrap_reproducible_and_seed_dependent():
    xs = [1, 5, 2, 8, 3, 3, 9, 0, 4, 4]
    a = bootstrap_ci(xs, seed=7)
    assert a == bootstrap_ci(xs, seed=7) == bootstrap_ci(list(xs), seed=7, reps=2000, level=0.95)
    assert bootstrap_ci(xs) == bootstrap_ci(xs, seed=0)
    assert bootstrap_ci(xs, seed=8) != a
    lo, hi = a
    assert isinstance(lo, float) and isinstance(hi, float)
    assert min(xs) <= lo < mean(xs) < hi <= max(xs)


def test_bootstrap_ci_contains_mean_and_is_in_range():
    xs = [3, 4, 4, 5, 2, 5, 1, 4, 3, 5, 4, 2]
    lo, hi = bootstrap_ci(xs, seed=3)
    assert lo <= mean(xs) <= hi
    assert 1 <= lo <= hi <= 5


def test_bootstrap_narrows_as_n_grows():
    base = [1, 2, 3, 4, 5]                     # same spread, 4x and 40x the items

    def width(xs):
        lo, hi = bootstrap_ci(xs, seed=1)
        return hi - lo

    small, large = width(base * 4), width(base * 40)
    assert large < small / 2                   # ~ sqrt(10) narrower in theory


def test_bootstrap_degenerate_cases():
    assert bootstrap_ci([3.5]) == [3.5, 3.5]
    assert bootstrap_ci([None, 2, None]) == [2.0, 2.0]
    assert bootstrap_ci([0.1] * 9) == [0.1, 0.1]
    assert bootstrap_ci([7] * 3, reps=1) == [7.0, 7.0]
    assert bootstrap_ci([]) is None
    assert bootstrap_ci([None]) is None


def test_bootstrap_level_widens_interval():
    xs = [1, 2, 2, 3, 5, 8, 13, 1, 0, 4]
    lo50, hi50 = bootstrap_ci(xs, level=0.5)
    lo99, hi99 = bootstrap_ci(xs, level=0.99)
    assert lo99 <= lo50 <= hi50 <= hi99 and hi99 - lo99 > hi50 - lo50


def _exact_quantile(values, p):
    """Generalized inverse of the exact bootstrap distribution of the mean: enumerate all
    n^n ordered resamples (equally likely), return min{m : F(m) >= p}, and the distance from
    p to the nearest step of F (so a test can check that p is not on a step)."""
    n = len(values)
    counts = Counter(Fraction(sum(t), n) for t in itertools.product(values, repeat=n))
    total, cum, answer, gap = n ** n, 0, None, 1.0
    for m in sorted(counts):
        cum += counts[m]
        f = cum / total
        gap = min(gap, abs(f - p))
        if answer is None and f >= p:
            answer = m
    return float(answer), gap


@pytest.mark.parametrize("level", [0.6, 0.9, 0.95])
def test_bootstrap_matches_brute_force_for_n3(level):
    values = [1, 2, 6]
    a = (1 - level) / 2
    exact_lo, gap_lo = _exact_quantile(values, a)
    exact_hi, gap_hi = _exact_quantile(values, 1 - a)
    # p sits well inside a step of the exact CDF, so the Monte-Carlo quantile (with 60,000
    # reps its CDF is off by < 0.002) and its interpolation neighbours fall on the same value.
    assert min(gap_lo, gap_hi) >= 0.01
    lo, hi = bootstrap_ci(values, seed=11, reps=60_000, level=level)
    assert lo == pytest.approx(exact_lo, abs=1e-9)
    assert hi == pytest.approx(exact_hi, abs=1e-9)


def test_bootstrap_fast_enough():
    import random
    rng = random.Random(5)
    xs = [rng.randint(1, 5) for _ in range(1000)]
    t = time.perf_counter()
    ci = bootstrap_ci(xs, seed=0, reps=2000)
    elapsed = time.perf_counter() - t
    assert ci[0] < mean(xs) < ci[1]
    assert elapsed < 1.0, f"2,000 resamples of 1,000 items took {elapsed:.2f}s"


def test_summary_shape():
    assert summary([1, 2, None, 3]) == {"mean": 2.0, "ci": bootstrap_ci([1, 2, 3]), "n": 3}
    assert summary([]) == {"mean": None, "ci": None, "n": 0}


# --------------------------------------------------------------------------- items

def test_item_values_mean_of_samples_ignoring_failures():
    got = item_values({"a": [1, 2, None], "b": [None, None], "c": [], "d": [4], "e": 5,
                       "f": None, 7: (0.5, 1.5)})
    assert got == {"a": 1.5, "d": 4.0, "e": 5.0, 7: 1.0}
    assert list(got) == ["a", "d", "e", 7]


def test_paired_hand_table():
    baseline = {"a": 3, "b": 4, "c": 2, "d": 5, "e": 1, "g": None}
    other = {"f": 3, "a": 4, "b": 4, "c": 1, "d": 5.5, "e": None, "g": 2}
    # common items (baseline order): a b c d; d = +1, 0, -1, +0.5
    r = paired(baseline, other, seed=4)
    assert set(r) == {"mean", "ci", "n", "wins", "ties", "losses"}
    assert r["n"] == 4 and r["mean"] == 0.125
    assert (r["wins"], r["ties"], r["losses"]) == (2, 1, 1)
    assert r["ci"] == bootstrap_ci([1, 0, -1, 0.5], seed=4)
    assert -1 <= r["ci"][0] <= r["mean"] <= r["ci"][1] <= 1
    assert r == paired(baseline, other, seed=4)


def test_paired_tie_tolerance_and_empty():
    r = paired({"a": 0.3}, {"a": 0.1 + 0.2})  # differs by 5.6e-17: a tie
    assert (r["wins"], r["ties"], r["losses"]) == (0, 1, 0)
    r = paired({"a": 1, "b": 1}, {"a": 1.25, "b": 0.75}, tie=0.5)
    assert (r["wins"], r["ties"], r["losses"]) == (0, 2, 0)
    assert paired({"a": 1}, {"b": 2}) == {"mean": None, "ci": None, "n": 0,
                                          "wins": 0, "ties": 0, "losses": 0}
    assert paired({}, {})["n"] == 0


def test_summarize_prompt():
    r = summarize_prompt({"a": 1, "b": 2, "c": 3, "d": None},
                         {"Helpfulness": {"a": 2, "b": 4}, "Clarity": {"a": 5}, "Depth": {}},
                         seed=2)
    assert (r["mean"], r["n"]) == (2.0, 3)
    assert r["ci"] == bootstrap_ci([1, 2, 3], seed=2)
    assert list(r["per_metric"]) == ["Helpfulness", "Clarity", "Depth"]
    assert r["per_metric"]["Helpfulness"]["mean"] == 3.0
    assert r["per_metric"]["Helpfulness"]["n"] == 2
    assert r["per_metric"]["Clarity"] == {"mean": 5.0, "ci": [5.0, 5.0], "n": 1}
    assert r["per_metric"]["Depth"] == {"mean": None, "ci": None, "n": 0}
    assert summarize_prompt({}, None)["per_metric"] == {}


# --------------------------------------------------------------------------- categories

def test_per_category_counts_with_list_valued_categories():
    categories = {"q1": ["math", "logic"], "q2": "math", "q3": [], "q4": ["logic", "logic"],
                  "q6": ["new"], "zz": ["unused"]}               # q5: no entry at all
    p0 = {"q1": 1, "q2": 2, "q3": 3, "q4": 4, "q5": 5}
    p1 = {"q1": 2, "q2": 2, "q3": 1, "q4": 4, "q5": 5, "q6": 3}
    r = per_category(categories, [p0, p1], seed=1)
    assert list(r) == [NO_CATEGORY, "logic", "math", "new"]     # sorted by name
    assert {c: r[c]["n"] for c in r} == {NO_CATEGORY: 2, "logic": 2, "math": 2, "new": 1}

    math_ = r["math"]                          # q1 (also in logic) and q2
    assert [p["mean"] for p in math_["prompts"]] == [1.5, 2.0]
    assert [p["n"] for p in math_["prompts"]] == [2, 2]
    d = math_["delta"]
    assert (d["mean"], d["n"], d["wins"], d["ties"], d["losses"]) == (0.5, 2, 1, 1, 0)

    logic = r["logic"]                         # q1 and q4 (listed twice, counted once)
    assert [p["mean"] for p in logic["prompts"]] == [2.5, 3.0]
    assert (logic["delta"]["mean"], logic["delta"]["wins"], logic["delta"]["ties"]) == (0.5, 1, 1)

    none = r[NO_CATEGORY]                      # q3 (empty list) and q5 (absent)
    assert [p["mean"] for p in none["prompts"]] == [4.0, 3.0]
    assert (none["delta"]["mean"], none["delta"]["losses"], none["delta"]["ties"]) == (-1.0, 1, 1)

    new = r["new"]                             # only prompt 1 has q6
    assert new["prompts"][0] == {"mean": None, "ci": None, "n": 0}
    assert new["prompts"][1]["mean"] == 3.0
    assert new["delta"]["n"] == 0 and new["delta"]["mean"] is None

    assert r == per_category(categories, [p0, p1], seed=1)     # stable


def test_per_category_single_prompt_and_no_categories():
    r = per_category(None, [{"a": 1, "b": 3}])
    assert list(r) == [NO_CATEGORY]
    assert r[NO_CATEGORY]["n"] == 2 and r[NO_CATEGORY]["delta"] is None
    assert r[NO_CATEGORY]["prompts"][0]["mean"] == 2.0
    assert per_category({}, []) == {}
    r = per_category({"a": 3, "b": [None, " "]}, [{"a": 1, "b": 2}, {"a": 2, "b": 2}, {"a": 0}])
    assert list(r) == [NO_CATEGORY, "3"]       # a number category becomes a string
    assert len(r["3"]["prompts"]) == 3         # delta still compares prompt 1 with prompt 0
    assert r["3"]["delta"]["mean"] == 1.0


# --------------------------------------------------------------------------- regressions

def test_regressions_worst_first():
    p0 = {"a": 5, "b": 3, "c": 4, "d": 2}
    p1 = {"a": 4, "b": 3, "c": 1, "d": 3}
    p2 = {"a": 2, "b": 1, "c": 4}
    rows = regressions([p0, p1, p2])
    assert [(r["item"], r["prompt_index"], r["drop"]) for r in rows] == [
        ("a", 2, 3.0), ("c", 1, 3.0),          # equal drops: baseline's item order
        ("b", 2, 2.0), ("a", 1, 1.0)]
    assert rows[1] == {"item": "c", "prompt_index": 1, "baseline": 4.0, "score": 1.0, "drop": 3.0}
    assert regressions([p0, p1, p2], limit=2) == rows[:2]
    assert regressions([p0, p1, p2], limit=0) == []
    assert regressions([p0]) == [] and regressions([]) == []
    assert regressions([{"a": 0.3}, {"a": 0.1 + 0.2}]) == []   # float noise is no regression


# --------------------------------------------------------------------------- pairwise, PICACO

def test_win_rate_with_ties():
    r = win_rate([1, 1, 0.5, 0, 1, None])
    assert (r["n"], r["wins"], r["ties"], r["losses"]) == (5, 3, 1, 1)
    assert r["mean"] == pytest.approx(0.7)    # (3 + 0.5) / 5
    assert r["ci"][0] <= r["mean"] <= r["ci"][1]
    assert r["ci"] == bootstrap_ci([1, 1, 0.5, 0, 1])
    assert win_rate([0.5, 0.5])["mean"] == 0.5 and win_rate([0.5, 0.5])["ties"] == 2
    assert win_rate([]) == {"mean": None, "ci": None, "n": 0, "wins": 0, "ties": 0, "losses": 0}
    with pytest.raises(ValueError):
        win_rate([1, 2])


def test_eq7_per_response_hand_numbers():
    assert weighted_conformity(80, 4) == 64.0              # mu 80 %, relevance 4
    assert weighted_conformity(80.0, 5) == 80.0            # fully relevant: unchanged
    assert weighted_conformity(80, 1) == 16.0
    assert weighted_conformity(4, 3) == pytest.approx(2.4)  # on the 1-5 scale too
    assert conformity_percent(4) == 80.0
    assert conformity_percent(3) == 60.0
    assert conformity_percent(1) == 20.0 and conformity_percent(5) == 100.0
    assert weighted_conformity(conformity_percent(4), 4) == 64.0
    for bad in ((80, 0), (80, 6), (-1, 3)):
        with pytest.raises(ValueError):
            weighted_conformity(*bad)
    with pytest.raises(ValueError):
        conformity_percent(0)


# --------------------------------------------------------------------------- validation

@pytest.mark.parametrize("call", [
    lambda: mean([1, math.nan]),
    lambda: mean([math.inf]),
    lambda: bootstrap_ci([1, 2, -math.inf]),
    lambda: item_values({"a": [1, math.nan]}),
    lambda: paired({"a": math.nan}, {"a": 1}),
    lambda: paired({"a": 1}, {"a\nb": math.inf}),
    lambda: summarize_prompt({"a": 1}, {"m": {"a": math.nan}}),
    lambda: per_category({}, [{"a": math.nan}]),
    lambda: regressions([{"a": 1}, {"a": math.nan}]),
    lambda: win_rate([math.nan]),
    lambda: weighted_conformity(math.nan, 3),
    lambda: weighted_conformity(50, math.inf),
    lambda: conformity_percent(math.nan),
    lambda: mean([1, "2"]),
    lambda: mean("123"),
    lambda: mean(None),
    lambda: item_values({"a": "12"}),
    lambda: bootstrap_ci([1, 2], level=1.0),
    lambda: bootstrap_ci([1, 2], reps=0),
    lambda: bootstrap_ci([1, 2], seed=None),
    lambda: paired({"a": 1}, {"a": 1}, tie=-1),
    lambda: regressions([{"a": 1}], limit=-1),
    lambda: per_category({"a": [["nested"]]}, [{"a": 1}]),
])
def test_bad_values_raise_one_line_value_error(call):
    with pytest.raises(ValueError) as e:
        call()
    msg = str(e.value)
    assert msg.startswith("stats: ") and "\n" not in msg


def test_error_names_the_item():
    with pytest.raises(ValueError, match="q17"):
        paired({"q17": 1}, {"q17": math.nan})


# --------------------------------------------------------------------------- imports

def test_imports_nothing_heavy():
    code = ("import engine.stats, sys; "
            "heavy = [m for m in ('numpy', 'textual', 'tui', 'litellm', 'torch', "
            "'sentence_transformers', 'scipy') if m in sys.modules]; "
            "assert not heavy, heavy")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr


def test_public_api():
    assert set(stats.__all__) >= {"mean", "bootstrap_ci", "item_values", "paired",
                                  "summarize_prompt", "per_category", "regressions", "win_rate",
                                  "weighted_conformity", "conformity_percent"}


def test_quantile_rule_is_linear_interpolation():
    # numpy.quantile([1, 2, 3, 4], [0.25, 0.975]) == [1.75, 3.925] (type 7, by hand:
    # h = 3 * 0.25 = 0.75 -> 1 + 0.75 * 1; h = 3 * 0.975 = 2.925 -> 3 + 0.925 * 1)
    from promptarbor.engine.stats import _quantile
    assert _quantile([1.0, 2.0, 3.0, 4.0], 0.25) == 1.75
    assert _quantile([1.0, 2.0, 3.0, 4.0], 0.975) == pytest.approx(3.925)
    assert _quantile([1.0, 2.0, 3.0, 4.0], 0.0) == 1.0
    assert _quantile([1.0, 2.0, 3.0, 4.0], 1.0) == 4.0
    assert _quantile([5.0], 0.5) == 5.0
    assert _quantile([-1e308, 1.5e308], 0.5) == pytest.approx(2.5e307)   # no overflow
