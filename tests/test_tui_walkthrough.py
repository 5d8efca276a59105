"""Findings of a first walk through the app at 80×24: type-to-jump in the Candidates view,
one "best" everywhere for DRPO (system prompts, not ICL-example versions), the browser's
cursor after a workbench and its title at 80 columns, the detail header's icons and a failed
node's error, the status's failure count, and the fake server's --method."""
from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from rich.text import Text

from test_tui import as_text, open_workbench, stored, wait_for
from test_tui_nav import browser_ready, cursor_key, make_session
from promptarbor.sessions.store import summarize
from promptarbor.tui.app import PromptArborApp
from promptarbor.tui.keys import CANDIDATES_KEYS
from promptarbor.tui.screens.browser import BrowserScreen
from promptarbor.tui.screens.candidates import CandidatesScreen, candidate_rows
from promptarbor.tui.screens.modals import EditScreen
from promptarbor.tui.widgets.node_detail import detail_header
from promptarbor.tui.widgets.status_bar import status_text

TESTS = Path(__file__).resolve().parent


def _title(screen) -> str:
    return as_text(screen.query_one("#c-title").content, 200)


def _cursor_id(screen) -> str:
    table = screen.query_one("#c-table")
    return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value


# ------------------------------------------------------------------------ 1. type-to-jump

def test_candidates_type_an_id_to_go_to_it(tmp_path, fake_server, fake_key):
    session_id = make_session(tmp_path, fake_server, steps=3)

    async def scenario():
        app = PromptArborApp(tmp_path / "store", session_id)
        async with app.run_test(size=(80, 24)) as pilot:
            await open_workbench(pilot)
            await pilot.press("C")
            await wait_for(pilot, lambda: isinstance(app.screen, CandidatesScreen))
            screen = app.screen
            ids = [r["id"] for r in screen.rows]
            assert len(ids) >= 3
            target = ids[-1]  # not the first row
            assert ids[0] != target
            for char in target[1:]:  # digits only: `100` is `n100`
                await pilot.press(char)
            await pilot.pause(0.1)
            assert _cursor_id(screen) == target
            assert f"go to: {target[1:]}" in _title(screen)
            await pilot.press("x")  # a typo: no such node, the cursor stays
            await pilot.pause(0.1)
            assert f"go to: {target[1:]}x" in _title(screen) and _cursor_id(screen) == target
            await pilot.press("backspace")
            await pilot.pause(0.1)
            assert screen.typed == target[1:] and "x" not in _title(screen).split("go to:")[1]
            await pilot.press("escape")  # first clears what is typed
            await pilot.pause(0.1)
            assert app.screen is screen and "go to:" not in _title(screen)
            for char in target:  # with the n
                await pilot.press(char)
            await pilot.pause(0.1)
            assert _cursor_id(screen) == target and f"go to: {target}" in _title(screen)
            await pilot.press("enter")  # enter still jumps to the tree
            await wait_for(pilot, lambda: not isinstance(app.screen, CandidatesScreen))
            assert app.screen.selected == target
            await pilot.press("C")
            await wait_for(pilot, lambda: isinstance(app.screen, CandidatesScreen))
            await pilot.press("escape")  # nothing typed: escape leaves
            await wait_for(pilot, lambda: not isinstance(app.screen, CandidatesScreen))
    asyncio.run(scenario())
    assert any("type" in what and "id" in what for _, what in CANDIDATES_KEYS)
    assert "go to: n100" in (TESTS.parent / "README.md").read_text(encoding="utf-8")


# ------------------------------------------------------------------------ 2. one best

def _node(nid, reward, phase, status="expanded", level=1):
    return {"id": nid, "kind": "candidate", "status": status, "reward": reward, "depth": level,
            "accepted": False, "text": f"text of {nid}", "parent": None, "error": None,
            "meta": {"phase": phase, "level": level, "query": "q"}, "detail": {}}


def _drpo_session():
    nodes = {"n1": _node("n1", 5.0, "icl", level=0), "n2": _node("n2", 3.5, "prompt", level=0),
             "n3": _node("n3", 4.67, "prompt"), "n4": _node("n4", 4.0, "prompt")}
    return {"id": "s1", "name": "", "method": "drpo", "status": "done", "steps": 4,
            "tree": {"nodes": nodes, "roots": ["n1", "n2"], "next_id": 5},
            "method_state": {"phases": ["icl", "prompt"], "final": "n3"},
            "gateway": {"usage": {}}, "planned_calls": {}}


def test_drpo_best_is_the_best_system_prompt_everywhere():
    session = _drpo_session()
    assert summarize(session)["best_reward"] == 4.67  # not the ICL example's 5.00
    snap = {"family": "drpo", "method": "drpo", "nodes": session["tree"]["nodes"],
            "best": "n3", "beam": [], "best_path": [], "session": session,
            "summary": {"status": "done", "final": {"node": "n3"}, "accepted": None}}
    rows = candidate_rows(snap)
    assert [r["id"] for r in rows] == ["n3", "n4", "n2", "n1"]  # ★ first, ICL in its group
    assert rows[0]["rank"] == 1 and "best" in rows[0]["states"]
    assert rows[-1]["group"] == "icl" and rows[-1]["rank"] is None
    # a session of the ICL stage alone ranks its ICL versions as usual
    only_icl = dict(session, method="drpo-icl", method_state={"phases": ["icl"]})
    assert summarize(only_icl)["best_reward"] == 5.0


# ------------------------------------------------------------------------ 3. browser

def test_browser_cursor_back_on_the_session_left_and_title_fits_80(tmp_path, fake_server,
                                                                  fake_key):
    ids = [make_session(tmp_path, fake_server, name=f"session {i}") for i in range(3)]

    async def scenario():
        app = PromptArborApp(tmp_path / "store")
        async with app.run_test(size=(80, 24)) as pilot:
            browser = await browser_ready(pilot)
            title = as_text(browser.query_one("#title").content, 80).splitlines()
            assert len([ln for ln in title if ln.strip()]) == 1, title  # not cut, not wrapped
            order = list(browser.rows)
            last = order[-1]
            browser.query_one("#sessions").move_cursor(row=len(order) - 1)
            await pilot.press("enter")
            screen = await open_workbench(pilot)
            assert screen.session_id == last
            await pilot.press("space")  # a step: the session becomes the newest
            await wait_for(pilot, lambda: stored(tmp_path, last)["steps"] == 1)
            await wait_for(pilot, lambda: not screen.busy)
            await pilot.press("escape")
            await wait_for(pilot, lambda: app.screen is browser)
            await wait_for(pilot, lambda: browser.rows[last]["steps"] == 1)
            await pilot.pause(0.3)
            assert cursor_key(browser) == last
            await pilot.press("r")  # renames the session just left
            await wait_for(pilot, lambda: isinstance(app.screen, EditScreen))
            assert last in as_text(app.screen.query_one("Static").content, 200) or \
                app.screen.query_one("TextArea").text == browser.rows[last]["name"]
            await pilot.press("escape")
    asyncio.run(scenario())


# ------------------------------------------------------------------------ 4, 5. detail, status

def _first_lines(text: Text, width: int) -> list[str]:
    return [line[:width] for line in text.plain.splitlines()]


def test_detail_header_keeps_id_level_reward_and_icons_in_a_narrow_pane():
    session = _drpo_session()
    node = dict(session["tree"]["nodes"]["n3"], id="n100", accepted=True)
    session["method_state"]["final"] = "n100"
    snap = {"best": "n100", "session": session, "summary": {"status": "done"},
            "family": "drpo", "nodes": {"n100": node}}
    first = _first_lines(detail_header(snap, node), 24)[0]
    for part in ("n100", "1", "4.67", "★", "◎", "✓"):
        assert part in first, first


def test_failed_node_shows_its_error_under_the_id_and_the_status_counts_failures():
    session = _drpo_session()
    node = dict(session["tree"]["nodes"]["n4"], status="failed", reward=None,
                error="the rollout failed: 429 Too Many Requests\nsecond line [b]x[/b]")
    snap = {"best": "n3", "session": session, "summary": {"status": "paused"},
            "family": "drpo", "nodes": {"n4": node}}
    lines = detail_header(snap, node).plain.splitlines()
    assert len(lines) == 2 and lines[1].startswith("error: the rollout failed: 429")
    assert "second line" not in lines[1]
    status_snap = {"summary": {"status": "paused", "steps": 5, "failed_nodes": 1,
                               "calls": {"base": 60, "optimizer": 20, "evaluator": 40},
                               "planned_calls": {"base": 90, "optimizer": 30, "evaluator": 60},
                               "cost": 0.0123},
                   "usage": {}, "next": "waiting: the rollouts of level 3 on query 2 of 4",
                   "nodes": {}, "family": "drpo", "method": "drpo", "best_per_level": []}
    for width in (78, 158):
        shown = status_text(status_snap, width).plain
        assert "✗ 1 failed — R retry, l log" in shown, (width, shown)
        assert all(len(line) <= width for line in shown.splitlines())
    assert "next:" not in status_text(status_snap, 78).plain  # next yields to the failures


# ------------------------------------------------------------------------ 6. fake server

def test_fake_server_command_line_answers_like_a_method():
    import conftest
    import fake_llm

    for method in ("drpo", "vapo", "picaco"):
        assert fake_llm.method_responder(method) is getattr(conftest, f"{method}_responder")
    out = subprocess.run([sys.executable, str(TESTS / "fake_llm.py"), "--help"],
                         capture_output=True, text=True, timeout=60).stdout
    assert "--method" in out
    readme = (TESTS.parent / "README.md").read_text(encoding="utf-8")
    assert "fake_llm.py --method drpo" in readme
