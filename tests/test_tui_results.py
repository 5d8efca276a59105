"""The Results view, mark / compare and the evaluations in the browser (Textual Pilot).

Live tests run a small DRPO session to the end against the fake server (its held-out
evaluation: root vs final on 3 items), then drive the workbench: `v` opens the verdict,
`w` / `b` / `a` filter the items, `m` marks a node and `V` compares it with the selected one
(confirmation, a worker thread, a stored evaluation, its Results view). Fixed verdicts (no
run) check the drawing, hostile text and damaged verdicts.
"""
import asyncio
import json

import pytest

from conftest import drpo_responder, write_config
from fake_llm import ESCAPE_TEXT, MARKUP_TEXT
from promptarbor.sessions.evals import EvalStore
from promptarbor.sessions.store import SessionStore
from test_tui import as_text, open_workbench, wait_for
from test_tui_hostile import ESCAPE_BYTES, LITERAL, assert_no_escapes, screenshot_text, shown_texts
from promptarbor.tui.app import PromptArborApp
from promptarbor.tui.screens.browser import BrowserScreen
from promptarbor.tui.screens.modals import ConfirmScreen, HelpScreen
from promptarbor.tui.screens.results import FullTextScreen, ResultsScreen
from promptarbor.tui.widgets.plots import ci_bar, delta_bar
from promptarbor.tui.widgets.verdict import filter_items, items_of

SIZE = (120, 40)


# ----------------------------------------------------------------------------- fixtures

def fixed_verdict(hostile: str = "") -> dict:
    """A verdict of the shape `Evaluation.result()` gives (plus the stored facts), fixed:
    2 prompts judged on aspects, 6 items in 3 categories, one sample each; the final prompt
    better on four items, worse on one, tied on one. `hostile` is added to every text."""
    h = hostile
    aspects = ["Helpfulness", "Clarity", "Factuality", "Depth", "Engagement", "Safety"]
    cats = ["coding", "advice", "safety"]
    base_scores = [2.0, 3.0, 4.0, 2.2, 3.6, 1.8]
    final_scores = [3.4, 3.0, 2.8, 4.0, 4.2, 3.0]
    items = []
    for i in range(6):
        cat = cats[i % 3]
        names = ["Safety"] if cat == "safety" else aspects[:5]
        results = []
        for label, score in (("root", base_scores[i]), ("final", final_scores[i])):
            metrics = {m + (h if j == 0 else ""): {
                "score": score, "rationale": f"{m} of item {i} under {label}{h}"}
                for j, m in enumerate(names)}
            results.append({"label": label + h, "score": score, "samples": [{
                "response": f"Answer {i} written under the {label} prompt.{h}\nSecond line "
                            f"of the answer, a little longer to wrap on a narrow screen.",
                "score": score, "error": None, "metrics": metrics}]})
        items.append({"item": f"i{i}", "query": f"Question {i}: how do I {cat} well?{h}",
                      "categories": [cat + h], "results": results})

    def metric_means(shift: float) -> dict:
        return {m: {"mean": round(3.0 + shift + 0.1 * j, 2), "ci": [2.5 + shift, 3.6 + shift],
                    "n": 2 if m == "Safety" else 4} for j, m in enumerate(aspects)}
    prompts = [
        {"label": "root" + h, "spec": "node:n0", "session": None, "node": "n0",
         "text": "You are a helpful assistant." + h, "tokens": 6, "errors": 0,
         "mean": 2.77, "ci": [2.2, 3.37], "n": 6, "per_metric": metric_means(-0.3)},
        {"label": "final" + h, "spec": "node:n3", "session": None, "node": "n3",
         "text": "You are a helpful assistant.\n- Tip 661: be clear and honest." + h,
         "tokens": 17, "errors": 0, "mean": 3.4, "ci": [2.97, 3.8], "n": 6,
         "per_metric": metric_means(0.4)},
    ]
    delta = {"label": "final" + h, "baseline": "root" + h, "mean": 0.63, "ci": [-0.2, 1.4],
             "n": 6, "wins": 4, "ties": 1, "losses": 1}
    per_category = {}
    for j, cat in enumerate(cats):
        d = [(0.7, [0.0, 1.4]), (-0.5, [-1.2, 0.6]), (1.2, [1.2, 1.2])][j]
        per_category[cat + h] = {"n": 2, "prompts": [
            {"label": "root" + h, "mean": 2.5 + 0.3 * j, "ci": [2.0, 3.5], "n": 2},
            {"label": "final" + h, "mean": 3.2 + 0.1 * j, "ci": [2.8, 4.2], "n": 2}],
            "delta": {"mean": d[0], "ci": d[1], "n": 2, "wins": 1, "ties": 0, "losses": 1}}
    return {
        "evaluation": "e0fixed01", "name": "fixed verdict" + h, "created": 1_790_000_000.0,
        "updated": 1_790_000_000.0, "status": "done", "judge": "aspects",
        "judge_model": "openai/fake-evaluator" + h,
        "data": {"source": "builtin:heldout_aspects" + h, "limit": 6, "category_field": None},
        "n": 6, "samples": 1, "seed": 0, "metrics": aspects,
        "scale": {"lo": 1, "hi": 5, "unit": "score (1-5)"},
        "prompts": prompts, "delta": delta, "deltas": [delta], "per_category": per_category,
        "regressions": [{"item": "i2", "query": items[2]["query"], "categories": ["safety" + h],
                         "baseline": "root" + h, "prompt": "final" + h, "score_baseline": 4.0,
                         "score_prompt": 2.8, "response_baseline": "a", "response_prompt": "b",
                         "rationale_baseline": "", "rationale_prompt": ""}],
        "items": items, "calls": {"base": 12, "judge": 12},
        "planned_calls": {"base": 12, "judge": 12}, "cost": 0.0042,
        "tokens": {"base": {"in": 600, "out": 900}, "judge": {"in": 3000, "out": 400}},
    }


def finished_session(tmp_path, server, **config) -> str:
    """A DRPO session (W1 M1 D1) run to the end, its held-out evaluation included."""
    from promptarbor.engine.config import load_config
    from promptarbor.engine.datasets import load_inputs
    from promptarbor.engine.runner import Runner

    cfg = load_config(write_config(tmp_path / "c.toml", server.base_url,
                                   search={"beam_width": 1, "samples_per_state": 1, "depth": 1},
                                   **config))
    store = SessionStore(tmp_path / "store")
    runner = Runner.create(cfg, load_inputs(cfg), store=store, cache_dir=store.cache_dir)
    asyncio.run(runner.run())
    session_id = runner.session["id"]
    assert runner.session["status"] == "done"
    runner.gateway.close()
    store.close()
    return session_id


def new_session(tmp_path, server) -> str:
    """A DRPO session not started yet (its held-out evaluation has not run)."""
    from promptarbor.engine.config import load_config
    from promptarbor.engine.datasets import load_inputs
    from promptarbor.engine.runner import Runner

    cfg = load_config(write_config(tmp_path / "c.toml", server.base_url,
                                   search={"beam_width": 1, "samples_per_state": 1, "depth": 1}))
    store = SessionStore(tmp_path / "store")
    runner = Runner.create(cfg, load_inputs(cfg), store=store, cache_dir=store.cache_dir)
    session_id = runner.session["id"]
    runner.gateway.close()
    store.close()
    return session_id


def text_of(widget) -> str:
    """What a Static holds, as plain text."""
    content = widget.content
    return content.plain if hasattr(content, "plain") else as_text(content, 200)


def full_text_shown(app) -> str:
    """The lines of the full-text view (its log widget), as plain text."""
    log = app.screen.query_one("#ft-body")
    return "\n".join("".join(seg.text for seg in strip) for strip in log.lines)


def summary_text(screen: ResultsScreen) -> str:
    return "\n".join(as_text(part, 150) for part in screen.parts.values() if part is not None)


def messages(app) -> list[str]:
    return [n.message for n in app._notifications]


async def show(app, pilot, verdict, kind="evaluation") -> ResultsScreen:
    app.push_screen(ResultsScreen(verdict, kind=kind))
    await wait_for(pilot, lambda: isinstance(app.screen, ResultsScreen))
    await pilot.pause(0.1)
    return app.screen


# ----------------------------------------------------------------------------- drawings

def test_ci_bar_and_delta_bar():
    bar = ci_bar(3.0, [2.0, 4.0], 1, 5, width=21).plain
    assert len(bar) == 21 and bar.index("├") == 5 and bar.index("●") == 10 and bar.index("┤") == 15
    assert ci_bar(None, None, 1, 5).plain == "·" * 21  # nothing scored yet
    assert ci_bar("high", "wide", 1, 5).plain == "·" * 21  # a damaged verdict
    up = delta_bar(0.5, [0.2, 0.8], 1.0, half=10).plain
    assert up[10] == "│" and up[11:16] == "█████" and up.endswith("┤  ")
    down = delta_bar(-0.5, [-0.8, -0.2], 1.0, half=10)
    assert down.plain[5:10] == "█████" and down.plain[2] == "├"
    assert any("red" in str(span.style) for span in down.spans)
    assert any("green" in str(span.style) for span in delta_bar(0.5, None, 1.0).spans)


def test_item_filters_follow_the_baseline():
    v = fixed_verdict()
    assert filter_items(v, 1, "worse") == [2]           # 4.0 → 2.8
    assert filter_items(v, 1, "better") == [3, 0, 5, 4]  # best first: +1.8, +1.4, +1.2, +0.6
    assert filter_items(v, 1, "all") == list(range(6))


# ----------------------------------------------------------------------------- live

def test_v_opens_the_sessions_verdict_and_the_items(tmp_path, fake_server, fake_key):
    session_id = finished_session(tmp_path, fake_server)

    async def scenario():
        app = PromptArborApp(tmp_path / "store", session_id)
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            workbench = await open_workbench(pilot)
            commands = {c.title for c in app.get_system_commands(workbench)}
            assert {"Results of the held-out evaluation (v)", "Mark / unmark the selected node (m)",
                    "Compare the marked node with the selected one (V)"} <= commands
            await pilot.press("v")
            await wait_for(pilot, lambda: isinstance(app.screen, ResultsScreen))
            screen = app.screen
            await pilot.pause(0.1)
            v = screen.verdict
            root, final = v["prompts"]
            assert root["label"] == "root" and final["label"] == "final"
            shown = summary_text(screen)
            assert f"{root['mean']:.2f}" in shown and f"{final['mean']:.2f}" in shown
            assert "Δ final − root:" in shown and "wins" in shown and "losses" in shown
            header = text_of(screen.query_one("#r-title"))
            assert session_id in header and "judge aspects" in header and "done" in header
            assert "3 items × 1 sample" in header

            # the items: better / worse / all (the fake judge favours the final prompt)
            counts = {w: len(filter_items(v, 1, w)) for w in ("worse", "better", "all")}
            assert counts["all"] == 3 and counts["better"] + counts["worse"] <= 3
            table = screen.query_one("#r-items")
            for key, which in (("w", "worse"), ("b", "better"), ("a", "all")):
                await pilot.press(key)
                await pilot.pause(0.05)
                assert screen.which == which and table.row_count == counts[which]
            assert screen.query_one("#r-tabs").active == "r-tab-items"

            # selecting an item: its query and both answers side by side
            await pilot.press("down")
            await pilot.pause(0.05)
            item = items_of(v)[screen.current]
            assert screen.current == 1
            detail = as_text(screen.detail, 150)
            answers = [r["samples"][0]["response"] for r in item["results"]]
            assert item["query"][:40] in detail
            for answer in answers:
                assert answer[:30] in detail
            assert "▶ final" in detail
            await pilot.press("s")  # focus the baseline's answer
            assert "▶ root" in as_text(screen.detail, 150)
            await pilot.press("z")
            await wait_for(pilot, lambda: isinstance(app.screen, FullTextScreen))
            assert answers[0] in full_text_shown(app)
            await pilot.press("escape")
            await wait_for(pilot, lambda: app.screen is screen)
            await pilot.press("enter")  # enter on the table: the same full text
            await wait_for(pilot, lambda: isinstance(app.screen, FullTextScreen))
            await pilot.press("escape")
            await wait_for(pilot, lambda: app.screen is screen)
            await pilot.press("question_mark")
            await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
            assert any(k == "w" for k, _ in app.screen.keys)
            await pilot.press("escape")
            await pilot.press("escape")
            await wait_for(pilot, lambda: app.screen is workbench)
            await pilot.press("q")

    asyncio.run(scenario())


def test_v_before_the_evaluation_has_run_says_so(tmp_path, fake_server, fake_key):
    session_id = new_session(tmp_path, fake_server)

    async def scenario():
        app = PromptArborApp(tmp_path / "store", session_id)
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            workbench = await open_workbench(pilot)
            await pilot.press("v")
            await wait_for(pilot, lambda: any("no held-out evaluation yet" in m
                                              for m in messages(app)))
            assert app.screen is workbench
            # V without a mark, then on the marked node itself: told, nothing run
            await pilot.press("V")
            await wait_for(pilot, lambda: any("mark a node first" in m for m in messages(app)))
            await pilot.press("m")
            await pilot.press("V")
            await wait_for(pilot, lambda: any("is the marked node" in m for m in messages(app)))
            await pilot.press("m")  # unmark
            assert workbench.marked is None
            await pilot.press("q")

    asyncio.run(scenario())


def test_mark_compare_confirm_then_the_browser_lists_it(tmp_path, fake_server, fake_key):
    session_id = finished_session(tmp_path, fake_server)
    answered = fake_server.answered
    evals = EvalStore(SessionStore(tmp_path / "store"))

    async def compare():
        app = PromptArborApp(tmp_path / "store", session_id)
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            workbench = await open_workbench(pilot)
            final = workbench.snap["session"]["method_state"]["final"]
            assert final and final != "n0"
            workbench.selected = "n0"
            await pilot.press("m")
            await pilot.pause(0.1)
            assert workbench.marked == "n0"
            assert "⚑" in str(workbench.tree_nodes["n0"].label)
            workbench.selected = final
            await pilot.press("V")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            question = str(app.screen.query_one("#question").render())
            assert "planned calls: base 6, judge 6" in question
            assert "estimated cost" in question and "n0" in question and final in question
            await pilot.press("y")
            await wait_for(pilot, lambda: isinstance(app.screen, ResultsScreen), 60)
            screen = app.screen
            labels = [p["label"] for p in screen.verdict["prompts"]]
            assert labels == ["n0 (marked)", final]
            assert screen.verdict["status"] == "done" and screen.kind == "evaluation"
            assert "Δ " + final + " − n0 (marked):" in summary_text(screen)
            assert workbench.comparing is None
            await pilot.press("escape")
            await wait_for(pilot, lambda: app.screen is workbench)
            # the same two nodes again: the stored evaluation, opened without a call
            await pilot.press("V")
            await wait_for(pilot, lambda: isinstance(app.screen, ResultsScreen), 60)
            assert any("already done" in m for m in messages(app))
            await pilot.press("escape")
            await pilot.press("q")
        return final

    final = asyncio.run(compare())
    rows = evals.list()
    assert len(rows) == 1 and rows[0]["status"] == "done"
    assert rows[0]["prompts"] == ["n0 (marked)", final]
    doc = evals.load(rows[0]["id"])
    assert doc["spec"]["items"] and len(doc["state"]["results"]) == 6
    # root and final were answered and judged by the session's own held-out evaluation:
    # the comparison of the same two prompts came from the cache
    assert fake_server.answered == answered
    evals.close()

    async def browse():
        app = PromptArborApp(tmp_path / "store")
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            await wait_for(pilot, lambda: isinstance(app.screen, BrowserScreen))
            browser = app.screen
            await pilot.pause(0.1)
            assert list(browser.eval_rows) == [rows[0]["id"]]
            table = browser.query_one("#evals")
            cells = [c.plain for c in table.get_row(rows[0]["id"])]
            assert cells[2] == "aspects" and cells[3] == "3 × 1" and cells[5] == "done"
            await pilot.press("e")
            assert table.has_focus
            await pilot.press("enter")
            await wait_for(pilot, lambda: isinstance(app.screen, ResultsScreen))
            assert [p["label"] for p in app.screen.verdict["prompts"]] == ["n0 (marked)", final]
            await pilot.press("escape")
            await wait_for(pilot, lambda: app.screen is browser)
            await pilot.press("d")  # a session key on an evaluation: told, nothing deleted
            await wait_for(pilot, lambda: any("works on a session" in m for m in messages(app)))
            await pilot.press("e")
            assert browser.query_one("#sessions").has_focus
            await pilot.press("v")  # the session's own held-out verdict, read only
            await wait_for(pilot, lambda: isinstance(app.screen, ResultsScreen))
            assert app.screen.kind == "session" and app.screen.verdict["evaluation"] == session_id
            assert [p["label"] for p in app.screen.verdict["prompts"]] == ["root", "final"]
            await pilot.press("escape")
            await wait_for(pilot, lambda: app.screen is browser)
            await pilot.press("question_mark")
            await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
            assert ("e", "move between the sessions and the evaluations") in app.screen.keys
            await pilot.press("escape")
            await pilot.press("q")

    asyncio.run(browse())


def test_a_comparison_runs_off_the_ui_pauses_with_p_and_resumes(tmp_path, fake_server, fake_key):
    """Without a cache every call is sent (slowly): the status line counts them, the UI keeps
    answering keys, p pauses after the batch in flight (a partial verdict), V resumes. Six
    held-out items: two prompts' 12 samples are more than one step runs together (BATCH)."""
    import shutil

    session_id = finished_session(tmp_path, fake_server, eval={"limit": 6})
    shutil.rmtree(tmp_path / "store" / "cache")  # the held-out answers are sent again
    fake_server.latency = 0.6  # a batch (6 answers, then their 6 verdicts) takes 1.2 s or more
    answered = fake_server.answered

    async def scenario():
        app = PromptArborApp(tmp_path / "store", session_id)
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            workbench = await open_workbench(pilot)
            final = workbench.snap["session"]["method_state"]["final"]
            workbench.selected = "n0"
            await pilot.press("m")
            workbench.selected = final
            await pilot.press("V")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            await pilot.press("y")
            status = workbench.query_one("#compare-status")
            await wait_for(pilot, lambda: workbench.comparing is not None and status.display)
            await pilot.press("l")  # the UI answers while the evaluation runs
            assert workbench.query_one("#log").display
            # the first answers are in (status line counting), the batch's verdicts are not
            await wait_for(pilot, lambda: "calls 0/24" not in text_of(status))
            assert "batch 0/2" in text_of(status) and "calls 12/24" not in text_of(status)
            await pilot.press("p")
            await wait_for(pilot, lambda: isinstance(app.screen, ResultsScreen), 60)
            assert app.screen.verdict["status"] == "paused"
            await wait_for(pilot, lambda: "partial result (6 of 12 samples)"
                           in text_of(app.screen.query_one("#r-title")))
            assert any("paused; V on the same nodes resumes it" in m for m in messages(app))
            assert not status.display and workbench.comparing is None
            await pilot.press("escape")
            await wait_for(pilot, lambda: app.screen is workbench)
            await pilot.press("V")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            question = str(app.screen.query_one("#question").render())
            assert "exists: it resumes" in question and "still to run: base 6, judge 6" in question
            await pilot.press("y")
            await wait_for(pilot, lambda: isinstance(app.screen, ResultsScreen), 60)
            assert app.screen.verdict["status"] == "done"
            await pilot.press("escape")
            await pilot.press("q")

    asyncio.run(scenario())
    # every answer and verdict of both prompts, each paid once
    assert fake_server.answered - answered == 24


def test_compare_on_a_session_without_a_held_out_set_is_a_toast(tmp_path, fake_server, fake_key):
    session_id = finished_session(tmp_path, fake_server, eval={"enabled": False})

    async def scenario():
        app = PromptArborApp(tmp_path / "store", session_id)
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            workbench = await open_workbench(pilot)
            await pilot.press("v")
            await wait_for(pilot, lambda: any("no held-out evaluation" in m for m in messages(app)))
            workbench.selected = "n0"
            await pilot.press("m")
            workbench.selected = workbench.snap["session"]["method_state"]["final"]
            await pilot.press("V")
            await wait_for(pilot, lambda: any("has no held-out set" in m for m in messages(app)))
            assert app.screen is workbench and workbench.comparing is None
            await pilot.press("q")

    asyncio.run(scenario())
    assert not EvalStore(SessionStore(tmp_path / "store")).list()


def test_hostile_answers_of_a_live_session_render_literally(tmp_path, fake_server, fake_key):
    """The base model answers with markup and escape sequences; the held-out answers are
    shown in the items, side by side and in full, literally."""
    def responder(request, index):
        answer = drpo_responder(request, index)
        if request["model"] == "fake-base":
            return f"{answer} {MARKUP_TEXT} {ESCAPE_TEXT}"
        return answer
    fake_server.responder = responder
    session_id = finished_session(tmp_path, fake_server)

    async def scenario():
        app = PromptArborApp(tmp_path / "store", session_id)
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            await open_workbench(pilot)
            await pilot.press("v")
            await wait_for(pilot, lambda: isinstance(app.screen, ResultsScreen))
            await pilot.press("a")
            await pilot.pause(0.1)
            detail = as_text(app.screen.detail, 200)
            assert LITERAL in detail and not any(b in detail for b in ESCAPE_BYTES)
            assert LITERAL in screenshot_text(app)
            assert_no_escapes(shown_texts(app))
            await pilot.press("z")
            await wait_for(pilot, lambda: isinstance(app.screen, FullTextScreen))
            assert LITERAL in full_text_shown(app)
            assert_no_escapes(shown_texts(app))
            await pilot.press("escape")
            await pilot.press("escape")
            await pilot.press("q")

    asyncio.run(scenario())


# ----------------------------------------------------------------------------- fixed verdicts

def test_fixed_verdict_sections_items_and_keys(tmp_path):
    async def scenario():
        app = PromptArborApp(tmp_path / "store")
        async with app.run_test(size=(80, 24), notifications=True) as pilot:
            screen = await show(app, pilot, fixed_verdict())
            shown = summary_text(screen)
            for needle in ("2.77", "3.40", "[2.20, 3.37]", "Δ final − root: +0.630 [-0.20, +1.40]",
                           "wins 4 · ties 1 · losses 1", "no clear difference",
                           "Mean per metric", "coding", "advice", "safety", "(all items)",
                           "Worst regressions", "Tip 661"):
                assert needle in shown, needle
            # narrow: the metrics are a table of their own; wide: columns of the prompts table
            assert screen.parts["metrics"] is not None
            await pilot.resize_terminal(160, 45)
            await pilot.pause(0.2)
            assert screen.parts["metrics"] is None
            assert "Helpfulness" in as_text(screen.parts["prompts"], 160)
            await pilot.press("w")
            assert screen.query_one("#r-items").row_count == 1 and screen.current == 2
            assert "4.00" in as_text(screen.detail) and "2.80" in as_text(screen.detail)
            await pilot.press("b")
            assert screen.query_one("#r-items").row_count == 4
            await pilot.press("1")
            assert screen.query_one("#r-tabs").active == "r-tab-summary"
            commands = {c.title for c in app.get_system_commands(screen)}
            assert "Items that got worse (w)" in commands and "Full text of the focused answer (z)" in commands
            await pilot.press("escape")
            await wait_for(pilot, lambda: isinstance(app.screen, BrowserScreen))

    asyncio.run(scenario())


def test_hostile_verdict_renders_literally(tmp_path):
    hostile = f" {MARKUP_TEXT} {ESCAPE_TEXT}"

    async def scenario():
        app = PromptArborApp(tmp_path / "store")
        async with app.run_test(size=(160, 45), notifications=True) as pilot:
            screen = await show(app, pilot, fixed_verdict(hostile))
            texts = shown_texts(app)
            assert_no_escapes(texts)
            assert any(LITERAL in t for t in texts)
            assert LITERAL in screenshot_text(app)
            for key in ("a", "down", "s", "b"):
                await pilot.press(key)
                await pilot.pause(0.05)
                assert_no_escapes(shown_texts(app))
            assert LITERAL in as_text(screen.detail, 200)
            await pilot.press("z")
            await wait_for(pilot, lambda: isinstance(app.screen, FullTextScreen))
            assert LITERAL in full_text_shown(app)
            assert_no_escapes(shown_texts(app))
            assert isinstance(app.screen, FullTextScreen)  # [@click=app.quit] did not quit

    asyncio.run(scenario())


def damaged_verdict() -> dict:
    v = fixed_verdict()
    v["prompts"][0].update(mean="high", ci="wide", n=None, per_metric=["x"], tokens="7[b]")
    v["prompts"][1].update(mean=float("inf"), ci=[None, 2], per_metric={"Clarity": 3})
    v["deltas"][0].update(mean=True, ci=[1], wins="[i]")
    v["per_category"]["coding"] = {"n": "?", "prompts": "none", "delta": [1]}
    v["per_category"]["junk"] = "not a dict"
    v["regressions"].append("not a dict")
    v["items"].append("not a dict")
    v["items"][0]["results"][0]["samples"][0]["metrics"] = {"Clarity": 4}
    v["items"][1]["results"] = "none"
    v.update(scale={"lo": 5, "hi": 1}, calls=None, status=None, n="six", samples=None)
    return v


@pytest.mark.parametrize("verdict", [damaged_verdict(), {}, {"prompts": "x", "items": [1, None]}],
                         ids=["damaged", "empty", "nonsense"])
def test_a_damaged_verdict_still_shows(tmp_path, verdict):
    async def scenario():
        app = PromptArborApp(tmp_path / "store")
        async with app.run_test(size=(80, 24), notifications=True) as pilot:
            screen = await show(app, pilot, verdict)
            for key in ("w", "b", "a", "down", "s", "left_square_bracket", "right_square_bracket",
                        "p", "1"):
                await pilot.press(key)
                await pilot.pause(0.02)
            assert app.screen is screen
            text = summary_text(screen) + as_text(screen.detail)
            assert "cannot show" not in text, text
            await pilot.press("escape")
            await wait_for(pilot, lambda: isinstance(app.screen, BrowserScreen))

    asyncio.run(scenario())


def test_corrupt_evaluation_files_are_listed_and_never_crash(tmp_path):
    evals = tmp_path / "store" / "evals"
    evals.mkdir(parents=True)
    (evals / "ebad00001.json").write_bytes(b"\x00\xff not json [reverse]x[/reverse] \x1b[2J")
    (evals / "ebad00002.json").write_text(json.dumps({"evaluation": {"1": {"id": "ebad00002",
                                                                            "spec": []}}}))

    async def scenario():
        app = PromptArborApp(tmp_path / "store")
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            await wait_for(pilot, lambda: isinstance(app.screen, BrowserScreen))
            browser = app.screen
            await pilot.pause(0.1)
            assert set(browser.eval_rows) == {"ebad00001", "ebad00002"}
            assert all(r["status"] == "corrupt" for r in browser.eval_rows.values())
            assert_no_escapes(shown_texts(app))
            await pilot.press("e")
            await pilot.press("enter")
            await wait_for(pilot, lambda: any("cannot open evaluation" in m for m in messages(app)))
            assert app.screen is browser
            # opened by id although it cannot be read (a file damaged after the listing)
            app.open_eval_results("ebad00002")
            await wait_for(pilot, lambda: sum("cannot open evaluation" in m
                                              for m in messages(app)) >= 2)
            assert app.screen is browser
            await pilot.press("q")

    asyncio.run(scenario())
    assert (evals / "ebad00001.json").exists() and (evals / "ebad00002.json").exists()


def test_a_reopened_session_shows_its_stored_events_in_the_log(tmp_path, fake_server, fake_key):
    """`l` on a finished session opened again: the log holds its earlier events (its steps,
    nodes and the end of the run), not an empty box."""
    session_id = finished_session(tmp_path, fake_server)
    stored = SessionStore(tmp_path / "store")
    events = stored.load(session_id)["events"]
    stored.close()

    async def scenario():
        app = PromptArborApp(tmp_path / "store", session_id)
        async with app.run_test(size=SIZE) as pilot:
            workbench = await open_workbench(pilot)
            await pilot.press("l")
            log = workbench.query_one("#log")
            assert log.display
            lines = [strip.text for strip in log.lines]
            assert any("earlier events of this session" in line for line in lines)
            assert any("run_finished" in line for line in lines)
            assert sum("step_finished" in line for line in lines) >= 2
            shown = sum(1 for e in events[-workbench.HISTORY:] if e.get("kind") != "call_started")
            assert len(lines) >= shown  # every stored event, one line (or more when wrapped)
            await pilot.press("q")

    asyncio.run(scenario())
