"""The workbench's node detail (header line, tab keys, full text, each method's own tabs) and
its status lines (state, progress with ETA, tokens and cost, evaluation; footer and toasts),
driven by keys (Textual Pilot) at 80×24 and 160×45 against the fake server."""
from __future__ import annotations

import asyncio
import json

import pytest

from conftest import (FAKE_KEY, drpo_responder, picaco_responder, vapo_responder, write_config)
from fake_llm import FakeLLMServer
from pilot import open_workbench as _open_workbench, wait_for
from promptarbor.engine.config import load_config
from promptarbor.engine.datasets import load_inputs
from promptarbor.engine.runner import Runner
from promptarbor.engine.values import COMPOSITIONS
from promptarbor.sessions.store import SessionStore
from promptarbor.tui.app import PromptArborApp
from promptarbor.tui.screens.results import FullTextScreen
from promptarbor.tui.screens.workbench import WorkbenchScreen
from promptarbor.tui.widgets import node_detail, plots, status_bar
from test_tui import as_text

LONG_END = "the very last words of a long prompt"
LONG_PROMPT = ("You are a careful assistant. " * 120) + LONG_END


def _session(root, server, method, sid, search=None, data=None, values=None, run=True):
    cfg = load_config(write_config(root / f"{sid}.toml", server.base_url, method=method,
                                   search=search, data=data, values=values, name=f"{sid} name"))
    store = SessionStore(root / "store")
    runner = Runner.create(cfg, load_inputs(cfg), store=store, cache_dir=store.cache_dir,
                           session_id=sid)
    if run:
        asyncio.run(runner.run())
    runner.gateway.close()
    store.close()


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    """Finished DRPO and OPRO sessions and an unstarted DRPO one whose root prompt is long,
    in one store."""
    root = tmp_path_factory.mktemp("detail")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PA_FAKE_KEY", FAKE_KEY)
        drpo = {"beam_width": 2, "samples_per_state": 2, "depth": 2}
        with FakeLLMServer(responder=drpo_responder) as server:
            _session(root, server, "drpo", "drpodone", search=drpo)
            _session(root, server, "drpo", "drpolong", run=False,
                     search={**drpo, "initial_prompt": LONG_PROMPT})
        with FakeLLMServer(responder=picaco_responder) as server:
            _session(root, server, "opro", "oprodone",
                     search={"iterations": 1, "prompts": 2, "new_instructions": 2},
                     values={"composition": "harmlessness"})
        yield root / "store"


@pytest.fixture(scope="module")
def vapo_store(tmp_path_factory):
    """A finished VAPO session on free-form items that also carry options (the task type,
    not the options, decides how an answer is read)."""
    root = tmp_path_factory.mktemp("detail-vapo")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PA_FAKE_KEY", FAKE_KEY)
        tasks = root / "free.jsonl"
        tasks.write_text("\n".join(json.dumps({
            "question": f"Free question {i}: is it kind to lie? [#A]",
            "options": ["Yes", "No"], "answer": "A"}) for i in range(24)) + "\n")
        with FakeLLMServer(responder=vapo_responder) as server:
            _session(root, server, "vapo", "vapofree",
                     search={"iterations": 1, "expand_width": 2, "depth_limit": 1,
                             "batch_size": 3},
                     data={"tasks": str(tasks), "train": 10, "validation": 6, "test": 6,
                           "task_type": "free-form"})
        yield root / "store"


def screen_text(app) -> str:
    """Every cell of the current screen, row by row."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


async def open_workbench(pilot) -> WorkbenchScreen:
    return await _open_workbench(pilot, settle=0.2)


def run_app(store_dir, session_id, size, scenario, notifications=False):
    async def go():
        app = PromptArborApp(store_dir, session_id)
        async with app.run_test(size=size, notifications=notifications) as pilot:
            screen = await open_workbench(pilot)
            await scenario(app, pilot, screen)
    asyncio.run(go())


def plain(widget) -> str:
    content = widget.content
    return content.plain if hasattr(content, "plain") else str(content)


# ----------------------------------------------------------------------------- the detail

def test_header_line_shows_node_id_level_and_query(store_dir):
    async def scenario(app, pilot, screen):
        node = next(n for n in screen.snap["nodes"].values() if n["parent"])
        screen.selected = node["id"]
        screen._render_detail()
        await pilot.pause(0.1)
        head = plain(screen.query_one("#detail-head"))
        assert head.startswith(f"{node['id']} L{node['meta']['level']} ")
        assert f"judged on: {node['detail']['query'][:30]}" in head
        shown = screen_text(app)  # drawn in the detail pane at 80 columns
        assert f"{node['id']} L{node['meta']['level']}" in shown
        assert "judged on: " + node["detail"]["query"][:20] in shown
    run_app(store_dir, "drpodone", (80, 24), scenario)


def test_digit_keys_switch_tabs(store_dir):
    async def scenario(app, pilot, screen):
        tabs = screen.query_one("TabbedContent")
        for key, tab in (("2", "tab-response"), ("6", "tab-calls"), ("3", "tab-reward"),
                         ("1", "tab-prompt")):
            await pilot.press(key)
            await pilot.pause(0.05)
            assert tabs.active == tab, key
    run_app(store_dir, "drpodone", (80, 24), scenario)


def test_z_opens_the_full_prompt_and_escape_closes_it(store_dir):
    async def scenario(app, pilot, screen):
        assert LONG_END not in screen_text(app)  # the tab shows its start only
        await pilot.press("z")
        await wait_for(pilot, lambda: isinstance(app.screen, FullTextScreen))
        log = app.screen.query_one("#ft-body")
        await wait_for(pilot, lambda: log.lines)
        text = " ".join(" ".join(line.text for line in log.lines).split())
        assert LONG_END in text and text.count("careful") == 120
        await pilot.press("end")
        await pilot.pause(0.2)
        assert "last words" in screen_text(app)  # scrolled to the end of it
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is screen)
    run_app(store_dir, "drpolong", (80, 24), scenario)


def test_full_view_shows_truncated_texts_whole(vapo_store):
    """z on the Response tab: a validation question longer than a table cell, whole."""
    async def scenario(app, pilot, screen):
        snap = screen.snap
        items = snap["session"]["method_state"]["items"]
        root = snap["nodes"][snap["session"]["method_state"]["root"]]
        first = root["detail"]["validation"][0]["item"]
        items[first]["question"] = "Q " + "word " * 60 + "END-OF-QUESTION"
        cut = as_text(node_detail.response_view(snap, root), 150)
        assert "END-OF-QUESTION" not in cut
        title, body = node_detail.full_view(snap, root, "tab-response")
        assert "END-OF-QUESTION" in as_text(body, 150)
        assert "Response in full" in title.plain and root["id"] in title.plain
    run_app(vapo_store, "vapofree", (160, 45), scenario)


def test_opro_response_shows_its_answers_and_scores_not_pools(store_dir):
    async def scenario(app, pilot, screen):
        snap = screen.snap
        assert not screen.query_one("#pool-prompt").display  # OPRO has no pools
        best = snap["nodes"][snap["best"]]
        answers = best["detail"]["answers"]
        assert len(answers) == 2 and all(a["response"].startswith("Reply") for a in answers)
        text = as_text(node_detail.response_view(snap, best), 150)
        assert "pools are empty" not in text and "aligned" not in text
        assert "Answers to the 2 optimization prompts" in text
        assert answers[0]["response"][:20] in text
        assert "NT = Non-Toxicity" in text
        mean = sum(answers[0]["q"].values()) / len(answers[0]["q"])
        assert f"{mean:.1f}" in text
        reward = as_text(node_detail.reward_view(snap, best), 150)
        assert "OPRO score" in reward and "rank 1 of" in reward
        # drawn at 80 columns: the answers and their scores, one block per answer
        screen.selected = best["id"]
        screen._render_detail()
        await pilot.press("2")
        await pilot.pause(0.2)
        shown = screen_text(app)
        assert answers[0]["response"][:15] in shown and "· score " in shown
    run_app(store_dir, "oprodone", (80, 24), scenario)


def test_value_legend_codes_are_unique():
    for name, values in COMPOSITIONS.items():
        codes = node_detail.short_codes(values)
        assert len(set(codes.values())) == len(values), (name, codes)
        assert all(1 <= len(c) <= 4 for c in codes.values()), codes
    codes = node_detail.short_codes(["Coherence", "Complexity", "Non-Toxicity", "Care", "Caring",
                                     "Car", "Car park", "CP"])
    assert codes["Coherence"] != codes["Complexity"]
    assert len(set(codes.values())) == 8, codes


def test_helpfulness_legend_has_no_repeated_letters():
    values = [{"name": n} for n in COMPOSITIONS["helpfulness"]]
    snap = {"family": "picaco", "method": "picaco", "id": "x", "nodes": {},
            "session": {"method_state": {"values": values, "iteration": 0, "aligned": {},
                                         "noise": {}, "prompts": []}}}
    node = {"id": "n0", "detail": {}, "meta": {}}
    text = as_text(node_detail.response_view(snap, node), 200)
    assert "C = Coherence" not in text and "C = Complexity" not in text
    assert "Coh = Coherence" in text and "Com = Complexity" in text


@pytest.mark.parametrize("size", [(160, 45), (80, 24)])
def test_vapo_free_form_read_is_the_judge_score_and_fits(vapo_store, size):
    async def scenario(app, pilot, screen):
        snap = screen.snap
        root = snap["nodes"][snap["session"]["method_state"]["root"]]
        scores = [r["score"] for r in root["detail"]["validation"]]
        text = as_text(node_detail.response_view(snap, root), 150)
        assert "?/" not in text
        assert f"{scores[0]:g}/5" in text
        await pilot.press("2")
        await pilot.pause(0.3)
        shown = screen_text(app)
        assert "?/" not in shown
        assert f"{scores[0]:g}/5" in shown  # the score column is drawn, not cut off
        if size[0] >= 160:
            assert " score" in shown  # a table with its score column
    run_app(vapo_store, "vapofree", size, scenario)


# ----------------------------------------------------------------------------- the status

def _lines(app) -> list[str]:
    return screen_text(app).splitlines()


def test_status_at_80x24_is_two_lines_with_nothing_important_cut(store_dir):
    async def scenario(app, pilot, screen):
        s = screen.snap["summary"]
        done = sum(s["calls"].values())
        lines = _lines(app)
        status = plain(screen.query_one("#status")).splitlines()
        assert len(status) == 2
        # drawn: the state, the progress bar with calls / planned, tokens, cost, evaluation
        first = next(i for i, line in enumerate(lines) if "✓ done" in line and "▕" in line)
        assert f"{done}/{sum(s['planned_calls'].values())} calls" in lines[first]
        second = lines[first + 1]
        ev = s["evaluation"]
        assert "tok " in second and "$0.0000" in second
        assert f"root {ev['root']:.3g} → final {ev['final']:.3g}" in second
        assert all(len(line.rstrip()) <= 80 for line in lines)
        # the title keeps the run state at its right edge
        assert lines[0].rstrip().endswith("✓ done")
        # the footer: the keys used most, none cut
        footer = lines[-1]
        for key in ("space step", "r run", "p pause", "? help", "z full"):
            assert key in footer, footer
    run_app(store_dir, "drpodone", (80, 24), scenario)


def test_status_at_160x45_is_one_line_with_the_evaluation(store_dir):
    async def scenario(app, pilot, screen):
        ev = screen.snap["summary"]["evaluation"]
        status = plain(screen.query_one("#status"))
        assert "\n" not in status
        assert f"root {ev['root']:.3g} → final {ev['final']:.3g}" in screen_text(app)
        assert "best ▁" in status and "–" in status  # the sparkline with its scale
    run_app(store_dir, "drpodone", (160, 45), scenario)


def test_no_sparkline_block_before_any_data(store_dir):
    async def scenario(app, pilot, screen):
        shown = screen_text(app)
        assert "▁▁▁▁" not in shown and "████" not in shown
        assert "best —" in shown
        assert "■ paused" in shown.splitlines()[0]  # the header's run state, not cut
    run_app(store_dir, "drpolong", (80, 24), scenario)


def test_picaco_final_worse_than_its_seed_is_said_so():
    snap = {"id": "s", "name": "n", "method": "picaco", "family": "picaco",
            "models": {"base": "m"}, "next": "finished", "best_per_level": [2.0, 2.5],
            "usage": {"base": {"tokens_in": 1200, "tokens_out": 30, "cost": 0.01}},
            "summary": {"status": "done", "steps": 9, "calls": {"base": 10},
                        "planned_calls": {"base": 10}, "cost": 0.01,
                        "evaluation": {"metric": "conformity", "root": 2.4, "final": 2.1}}}
    for width in (78, 200):
        text = status_bar.status_text(snap, width).plain
        assert "final 2.1 < seed 2.4" in text
        assert all(len(line) <= width for line in text.splitlines())
    snap["family"], snap["summary"]["evaluation"] = "drpo", {"metric": "aspects", "root": 2.4,
                                                             "final": 3.0}
    assert "root 2.4 → final 3 ▲" in status_bar.status_text(snap, 200).plain
    # a higher final whose paired difference could be 0 is not shown as better
    snap["summary"]["evaluation"]["delta"] = {"mean": 0.45, "ci": [-1.5, 1.9]}
    text = status_bar.status_text(snap, 200).plain
    assert "root 2.4 → final 3 ≈ no clear difference" in text and "▲" not in text
    snap["summary"]["evaluation"]["delta"] = {"mean": 0.6, "ci": [0.2, 1.0]}
    assert "root 2.4 → final 3 ▲" in status_bar.status_text(snap, 200).plain


def test_progress_bar_and_eta_from_the_measured_rate():
    now = [100.0]
    rate = status_bar.CallRate(clock=lambda: now[0])

    def answers(n, every):
        for _ in range(n):
            now[0] += every
            rate.tick()
    assert rate.eta(50) is None                  # nothing measured yet
    rate.tick()                                  # no job running: not counted
    rate.observe(running=True)                   # a run starts
    answers(1, 5.0)                              # its first answer, after a slow start
    assert rate.eta(40) is None
    answers(10, 0.5)                             # 10 more calls in 5 s: 2 a second
    assert rate.eta(40) == pytest.approx(20.0)
    rate.observe(running=False)                  # the run ends
    now[0] += 100                                # idle time does not count
    rate.observe(running=True)
    assert rate.eta(10) == pytest.approx(5.0)
    answers(5, 0.25)                             # 4 calls in 1 s after the first
    assert rate.per_second() == pytest.approx(14 / 6)
    snap = {"id": "s", "name": "n", "method": "drpo", "family": "drpo", "models": {"base": "m"},
            "next": "level 2: expand", "best_per_level": [], "usage": {},
            "summary": {"status": "paused", "steps": 3, "calls": {"base": 30},
                        "planned_calls": {"base": 40}, "cost": 0.0}}
    text = status_bar.status_text(snap, 78, busy=True, eta=5.0).plain
    assert "● running" in text and "▕███████" in text and "30/40 calls" in text
    assert "ETA 5s" in text
    assert "~5s to go" in status_bar.status_text(snap, 78, busy=False, eta=5.0).plain
    assert status_bar.title_text(snap, True, 40).plain.endswith("● running")
    assert plots.spark_text([]).plain == "best —"
    assert plots.spark_text([3.0, 4.67]).plain == "best ▁█ 3–4.67"


def test_space_on_a_finished_session_says_so_and_toasts_sit_above_the_status(store_dir):
    async def scenario(app, pilot, screen):
        await pilot.press("space")
        await wait_for(pilot, lambda: any("nothing to step" in n.message
                                          for n in app._notifications))
        assert not screen.busy
        await wait_for(pilot, lambda: list(app.screen.query("Toast")))
        await pilot.pause(0.3)
        toast = app.screen.query_one("Toast").region
        for widget in ("#status", "Footer"):
            region = screen.query_one(widget).region
            assert toast.bottom <= region.y, (widget, toast, region)
        await pilot.press("r")
        await wait_for(pilot, lambda: sum("nothing to step" in n.message
                                          for n in app._notifications) == 2)
    run_app(store_dir, "drpodone", (80, 24), scenario, notifications=True)


def test_z_full_text_is_drawn_to_the_width_shown(store_dir):
    """The full text at 80 columns: a table's last column (the score) is not cut off."""
    async def scenario(app, pilot, screen):
        final = screen.snap["session"]["method_state"]["final"]
        screen.selected = final
        await pilot.press("2")
        await pilot.press("z")
        await wait_for(pilot, lambda: isinstance(app.screen, FullTextScreen))
        await wait_for(pilot, lambda: app.screen.query_one("#ft-body").lines)
        await pilot.pause(0.2)
        shown = screen_text(app)
        assert "Response in full" in shown and "Held-out answers as the final prompt" in shown
        header = next(line for line in shown.splitlines() if "answer" in line and "query" in line)
        assert header.rstrip().endswith("score")
    run_app(store_dir, "drpodone", (80, 24), scenario)


def test_digits_and_z_are_typed_into_the_tree_filter(store_dir):
    async def scenario(app, pilot, screen):
        await pilot.press("2")
        await pilot.press("slash")
        await wait_for(pilot, lambda: screen.query_one("#tree-filter").has_focus)
        for key in ("n", "1", "z", "6"):
            await pilot.press(key)
        await pilot.pause(0.1)
        assert screen.query_one("#tree-filter").value == "n1z6"
        assert screen.query_one("TabbedContent").active == "tab-response"
        assert app.screen is screen
    run_app(store_dir, "drpodone", (80, 24), scenario)
