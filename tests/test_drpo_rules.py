"""DRPO's formulas and selection rules, as the paper states them (seeds/DRPO.txt)."""
import pytest

from promptarbor.engine.methods.drpo import beam_sizes, rank_key, reward_of, search_calls, top_w
from promptarbor.engine.tree import Tree


def test_reward_is_mean_of_selected_aspects():
    # §3.2.1: R(σ | R_q) = 1/|R_q| Σ_{r ∈ R_q} r(σ)
    scores = {"Helpfulness": {"score": 5}, "Safety": {"score": 2}, "Depth": {"score": 4}}
    assert reward_of(scores) == pytest.approx(11 / 3)
    assert reward_of({"Clarity": {"score": 3}}) == 3


def test_reward_of_nothing_is_an_error():
    with pytest.raises(ValueError):
        reward_of({})


@pytest.mark.parametrize("W,M,D,expected", [
    (2, 3, 4, [1, 2, 2, 2]),     # the first level expands only the root
    (1, 1, 5, [1, 1, 1, 1, 1]),  # ICL defaults
    (3, 2, 4, [1, 2, 3, 3]),     # b_{t+1} = min(W, M b_t)
    (4, 1, 3, [1, 1, 1]),        # one sample per state never widens the beam
    (2, 3, 1, [1]),
])
def test_beam_sizes(W, M, D, expected):
    assert beam_sizes(W, M, D) == expected


@pytest.mark.parametrize("W,M,D", [(2, 3, 20), (1, 1, 5), (3, 2, 4), (2, 2, 3), (1, 3, 6)])
def test_search_calls_bounded_by_paper_cost(W, M, D):
    # App. A.5 counts W*M*D optimizer, base and evaluator calls (an upper bound); the exact
    # count is M * Σ b_t children, each judged once, plus the root judged up front.
    calls = search_calls(W, M, D, with_base=True)
    children = M * sum(beam_sizes(W, M, D))
    assert calls == {"optimizer": children, "base": 1 + children, "evaluator": 1 + children}
    assert calls["optimizer"] <= W * M * D


def test_paper_default_prompt_search_count():
    # W2 M3 D20: b = 1, 2, 2, ... -> Σ b = 39 -> 117 rewrites, 118 answers, 118 scores
    assert search_calls(2, 3, 20, with_base=True) == {"optimizer": 117, "base": 118, "evaluator": 118}


def test_icl_search_has_no_base_calls_and_one_call_mode():
    assert search_calls(1, 1, 5, with_base=False) == {"optimizer": 5, "base": 0, "evaluator": 6}
    assert search_calls(2, 3, 3, with_base=False, one_call=True)["optimizer"] == 1 + 2 + 2


def _tree_with_level():
    tree = Tree()
    root = tree.add("s0", kind="root")
    root["reward"] = 3.0
    kids = []
    for reward in (4.0, 4.5, 2.0, 4.5):
        node = tree.add("s", parent=root["id"])
        node["reward"] = reward
        kids.append(node["id"])
    return tree, root, kids


def test_beam_is_top_w_by_reward_ties_to_earlier():
    tree, _, kids = _tree_with_level()
    assert top_w(tree, kids, 2, "reward") == [kids[1], kids[3]]
    assert top_w(tree, kids, 3, "reward") == [kids[1], kids[3], kids[0]]


def test_beam_never_holds_pruned_failed_or_unscored_nodes():
    tree, _, kids = _tree_with_level()
    tree[kids[1]]["status"] = "pruned"
    tree.fail(kids[3], "parse failed")
    tree[kids[0]]["reward"] = None
    assert top_w(tree, kids, 2, "reward") == [kids[2]]


def test_pruned_ancestor_prunes_the_subtree():
    tree, _, kids = _tree_with_level()
    grandchild = tree.add("g", parent=kids[1])
    grandchild["reward"] = 5.0
    tree[kids[1]]["status"] = "pruned"
    assert tree.is_pruned(grandchild["id"])
    assert top_w(tree, [grandchild["id"]], 1, "reward") == []


def test_path_mean_rank_option():
    tree, root, kids = _tree_with_level()
    deep = tree.add("d", parent=kids[2])  # parent 2.0, root 3.0
    deep["reward"] = 5.0                   # path mean (3 + 2 + 5) / 3 = 3.33
    other = tree.add("o", parent=kids[1])  # parent 4.5
    other["reward"] = 4.0                  # path mean (3 + 4.5 + 4) / 3 = 3.83
    assert rank_key(tree, deep, "path-mean")[0] == pytest.approx(10 / 3)
    assert top_w(tree, [deep["id"], other["id"]], 1, "reward") == [deep["id"]]
    assert top_w(tree, [deep["id"], other["id"]], 1, "path-mean") == [other["id"]]


# ----------------------------------------------------------------------------- the plan's bound

def _worst_case(W, M, D, extra=10, one_call=False):
    """The most calls per role over every way states can be kept unchanged (skip and extend,
    the authors' code): at each level any number j of the b beam states is kept (one child
    each, no rewrite), the others get M rewrites; a level with j > 0 adds one level while
    fewer than `extra` were added. Root judged up front; one selection per level's query."""
    from functools import lru_cache

    @lru_cache(maxsize=None)
    def best(t, b, added):
        if t > D + added:
            return (0, 0, 0)
        out = None
        for j in range(b + 1):
            children = j + (b - j) * M
            opt = (b - j) if one_call and M > 1 else (b - j) * M
            grow = 1 if j and added < extra else 0
            rest = best(t + 1, min(W, children), added + grow)
            here = (children + rest[0], opt + rest[1], children + 1 + rest[2])
            out = here if out is None else tuple(max(x, y) for x, y in zip(out, here))
        return out

    base, opt, ev = best(1, 1, 0)
    return {"base": 1 + base, "optimizer": opt, "evaluator": 1 + 1 + ev}  # root + x_0's selection


@pytest.mark.parametrize("W,M,D", [(2, 3, 3), (2, 2, 4), (1, 3, 5), (3, 2, 2), (2, 1, 3)])
def test_initial_plan_bounds_every_way_of_keeping_states(tmp_path, W, M, D):
    """With skip and extend on, the plan made at creation is an upper bound of the calls,
    whatever states are kept: it is the worst case computed here by brute force (so no
    smaller bound holds); with every state rewritten it is exact (search_calls + one
    selection per query)."""
    from conftest import write_config
    from promptarbor.engine.config import load_config
    from promptarbor.engine.runner import plan_calls

    cfg = load_config(write_config(tmp_path / "c.toml", "http://127.0.0.1:9/v1",
                                   search={"beam_width": W, "samples_per_state": M, "depth": D},
                                   eval={"enabled": False}))
    inputs = {"seed": [f"query {i}" for i in range(100)], "icl": []}
    plan = plan_calls(cfg, inputs)
    worst = _worst_case(W, M, D)
    assert {r: plan[r] for r in worst} == worst
    cfg["search"]["skip_rewrite_above"] = None
    exact = search_calls(W, M, D, with_base=True)
    exact["evaluator"] += D + 1
    assert {r: plan_calls(cfg, inputs)[r] for r in exact} == exact
