"""Screenshots of the browser, the workbench and the help, compared with stored SVGs.

The content is deterministic: a fixed session id, the fake server's scripted answers, and
fixed timestamps. Update after an intended change with `pytest --snapshot-update`.
"""
import asyncio
import time

import pytest

from conftest import write_config
from promptarbor.engine.config import load_config
from promptarbor.engine.datasets import load_icl_examples, load_seed_queries
from promptarbor.engine.runner import Runner
from promptarbor.sessions.store import SessionStore
from promptarbor.tui.app import PromptArborApp
from promptarbor.tui.screens.workbench import WorkbenchScreen

SIZE = (130, 34)


@pytest.fixture
def store_dir(tmp_path, fake_server, fake_key):
    """One session, root judged and one level run, with its times fixed."""
    cfg = load_config(write_config(tmp_path / "c.toml", fake_server.base_url, name="snapshot",
                                   search={"beam_width": 2, "samples_per_state": 2, "depth": 3}))
    store = SessionStore(tmp_path / "store")
    runner = Runner.create(cfg, {"seed": load_seed_queries(None), "icl": load_icl_examples(None)}, store=store,
                           cache_dir=store.cache_dir, session_id="snap0001")
    asyncio.run(runner.run(steps=3))
    session = runner.snapshot()
    session["created"] = session["updated"] = 1_790_000_000.0
    for record in session["call_log"]:
        record["latency"], record["t"] = 0.2, 1_790_000_000.0
    for event in session["events"]:
        event["t"] = 1_790_000_000.0
    store.save(session)
    runner.gateway.close()
    store.close()
    return tmp_path / "store"


async def _workbench_ready(pilot):
    for _ in range(400):
        await pilot.pause(0.05)
        screen = pilot.app.screen
        if isinstance(screen, WorkbenchScreen) and screen.snap is not None:
            break
    await pilot.pause(0.3)


def test_browser(snap_compare, store_dir, monkeypatch):
    monkeypatch.setenv("TZ", "UTC")  # the browser shows local time
    time.tzset()
    assert snap_compare(PromptArborApp(store_dir), terminal_size=SIZE)


def test_workbench(snap_compare, store_dir):
    assert snap_compare(PromptArborApp(store_dir, "snap0001"), terminal_size=SIZE,
                        run_before=_workbench_ready)


def test_workbench_reward_tab(snap_compare, store_dir):
    async def reward(pilot):
        await _workbench_ready(pilot)
        screen = pilot.app.screen
        screen.query_one("TabbedContent").active = "tab-reward"
        await pilot.pause(0.2)
    assert snap_compare(PromptArborApp(store_dir, "snap0001"), terminal_size=SIZE,
                        run_before=reward)


def test_help(snap_compare, store_dir):
    async def help_screen(pilot):
        await _workbench_ready(pilot)
        await pilot.press("question_mark")
        await pilot.pause(0.3)
    assert snap_compare(PromptArborApp(store_dir, "snap0001"), terminal_size=SIZE,
                        run_before=help_screen)


def test_wizard(snap_compare, store_dir):
    async def wizard(pilot):
        await pilot.pause(0.2)
        await pilot.press("n")
        await pilot.pause(0.5)
    assert snap_compare(PromptArborApp(store_dir), terminal_size=(130, 50), run_before=wizard)


# ----------------------------------------------------------------------------- results view
# A fixed verdict (no run): the Results view drawn at the smallest size it supports and at a
# large one; the Items tab with the side-by-side answers.

def _results(keys: tuple[str, ...] = ()):
    async def run_before(pilot):
        from test_tui_results import fixed_verdict
        from promptarbor.tui.screens.results import ResultsScreen

        await pilot.pause(0.1)
        pilot.app.push_screen(ResultsScreen(fixed_verdict()))
        await pilot.pause(0.3)
        for key in keys:
            await pilot.press(key)
            await pilot.pause(0.1)
    return run_before


def test_results_80x24(snap_compare, tmp_path):
    assert snap_compare(PromptArborApp(tmp_path / "store"), terminal_size=(80, 24),
                        run_before=_results())


def test_results_160x45(snap_compare, tmp_path):
    assert snap_compare(PromptArborApp(tmp_path / "store"), terminal_size=(160, 45),
                        run_before=_results())


def test_results_items_80x24(snap_compare, tmp_path):
    assert snap_compare(PromptArborApp(tmp_path / "store"), terminal_size=(80, 24),
                        run_before=_results(("b", "down")))


def test_results_items_160x45(snap_compare, tmp_path):
    assert snap_compare(PromptArborApp(tmp_path / "store"), terminal_size=(160, 45),
                        run_before=_results(("w",)))
