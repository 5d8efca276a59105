"""The session browser and the moves between screens (Textual Pilot): renaming, deleting,
exporting from the browser, its refresh from the store, its columns at 80×24, the first
Down, the per-screen help, escape / q back to the browser and ctrl+q."""
import asyncio
import time

import pytest

from conftest import write_config
from promptarbor.engine.config import load_config
from promptarbor.engine.datasets import load_icl_examples, load_seed_queries
from promptarbor.engine.runner import Runner
from promptarbor.sessions.store import SessionStore
from promptarbor.tui.app import PromptArborApp
from promptarbor.tui.screens import browser as browser_module
from promptarbor.tui.screens.browser import BrowserScreen, fit_columns, reward_text
from promptarbor.tui.screens.modals import ConfirmScreen, EditScreen, HelpScreen
from test_tui import as_text, idle, open_workbench, stored, wait_for
from test_tui_hostile import screenshot_text


def make_session(tmp_path, server, name="", steps=0, session_id=None, **search) -> str:
    """A DRPO session named `name`, run `steps` steps against the fake server."""
    cfg = load_config(write_config(tmp_path / "c.toml", server.base_url, name=name,
                                   search={"beam_width": 2, "samples_per_state": 2, "depth": 2,
                                           **search}))
    store = SessionStore(tmp_path / "store")
    runner = Runner.create(cfg, {"seed": load_seed_queries(None), "icl": load_icl_examples(None)},
                           store=store, cache_dir=store.cache_dir, session_id=session_id)
    if steps:
        asyncio.run(runner.run(steps=steps))
    session_id = runner.session["id"]
    runner.gateway.close()
    store.close()
    return session_id


async def browser_ready(pilot) -> BrowserScreen:
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, BrowserScreen)
                   and pilot.app.screen.rows)
    return pilot.app.screen


def cursor_key(screen: BrowserScreen) -> str:
    table = screen.query_one("#sessions")
    return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value


def help_text(app) -> str:
    return "\n".join(as_text(w.content, 120) for w in app.screen.query("Static"))


def test_rename_is_prefilled_and_the_cursor_stays_on_the_renamed_row(tmp_path, fake_server,
                                                                     fake_key):
    ids = [make_session(tmp_path, fake_server, name=f"session {i}") for i in range(3)]

    async def scenario():
        app = PromptArborApp(tmp_path / "store")
        async with app.run_test(size=(120, 30)) as pilot:
            browser = await browser_ready(pilot)
            order = list(browser.rows)
            original = {k: r["name"] for k, r in browser.rows.items()}
            await pilot.press("down")
            second = order[1]
            assert cursor_key(browser) == second
            await pilot.press("r")
            await wait_for(pilot, lambda: isinstance(app.screen, EditScreen))
            editor = app.screen.query_one("TextArea")
            assert editor.text == browser.rows[second]["name"]  # prefilled, not empty
            editor.text = "renamed twice"
            await pilot.press("ctrl+s")
            await wait_for(pilot, lambda: stored(tmp_path, second)["name"] == "renamed twice")
            await wait_for(pilot, lambda: app.screen is browser)
            assert cursor_key(browser) == second  # not back on row 1

            # a second rename hits the row the cursor is on, and nothing else changes
            await pilot.press("down")
            third = cursor_key(browser)
            assert third != second
            await pilot.press("r")
            await wait_for(pilot, lambda: isinstance(app.screen, EditScreen))
            editor = app.screen.query_one("TextArea")
            assert editor.text == browser.rows[third]["name"]
            editor.text = editor.text + " (v2)"
            await pilot.press("ctrl+s")
            await wait_for(pilot, lambda: stored(tmp_path, third)["name"].endswith(" (v2)"))
            assert cursor_key(browser) == third
            await pilot.press("q")
        return order, original

    order, original = asyncio.run(scenario())
    names = {i: stored(tmp_path, i)["name"] for i in ids}
    assert names == {order[0]: original[order[0]], order[1]: "renamed twice",
                     order[2]: original[order[2]] + " (v2)"}


def test_the_first_down_moves_the_cursor(tmp_path, fake_server, fake_key):
    """In the workbench (opened directly and from the browser) and in the browser."""
    session_id = make_session(tmp_path, fake_server, steps=3)
    make_session(tmp_path, fake_server)

    async def tree_moves(pilot):
        screen = await open_workbench(pilot)
        await pilot.pause(0.2)
        tree = screen.query_one("Tree")
        first = screen.selected
        assert tree.cursor_line == 0 and tree.cursor_node.data == first
        await pilot.press("down")
        await wait_for(pilot, lambda: tree.cursor_line == 1)
        assert screen.selected != first and tree.cursor_node.data == screen.selected

    async def direct():
        app = PromptArborApp(tmp_path / "store", session_id)
        async with app.run_test(size=(120, 30)) as pilot:
            await tree_moves(pilot)
            await pilot.press("q")

    async def from_browser():
        app = PromptArborApp(tmp_path / "store")
        async with app.run_test(size=(120, 30)) as pilot:
            browser = await browser_ready(pilot)
            rows = list(browser.rows)
            await pilot.press("down")
            assert cursor_key(browser) == rows[1]
            await pilot.press("up")
            browser.query_one("#sessions").move_cursor(row=rows.index(session_id))
            await pilot.press("enter")
            await tree_moves(pilot)
            await pilot.press("escape")
    asyncio.run(direct())
    asyncio.run(from_browser())


def test_each_screen_shows_its_own_keys(tmp_path, fake_server, fake_key):
    session_id = make_session(tmp_path, fake_server, name="keys")

    async def scenario():
        app = PromptArborApp(tmp_path / "store")
        async with app.run_test(size=(80, 24)) as pilot:
            browser = await browser_ready(pilot)
            await pilot.press("question_mark")
            await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
            keys = dict(app.screen.keys)
            assert keys["r"] == "rename the session" and keys["d"] == "delete the session"
            assert "run to the end" not in keys.values()
            shown = help_text(app)
            assert "Browser keys" in shown and "diff with the parent" not in shown
            assert "ctrl+q" in shown and "ctrl+p" in shown  # the app-wide keys, too
            await pilot.press("escape")
            await wait_for(pilot, lambda: app.screen is browser)

            # the palette's "Help: keys" is the help of the screen it was opened on
            commands = {c.title: c for c in app.get_system_commands(browser)}
            commands["Help: keys"].callback()
            await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
            assert "Browser keys" in help_text(app)
            await pilot.press("escape")

            await pilot.press("enter")
            await open_workbench(pilot)
            await pilot.press("question_mark")
            await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
            shown = help_text(app)
            assert "Workbench keys" in shown and "diff with the parent" in shown
            assert "back to the browser" in shown and "ctrl+q" in shown
            await pilot.press("escape")
            await pilot.press("escape")
            await wait_for(pilot, lambda: app.screen is browser)
    asyncio.run(scenario())
    assert session_id


def test_the_browser_follows_the_store(tmp_path, fake_server, fake_key, monkeypatch):
    """A session another process finished shows as done: on the timer, and on focus."""
    session_id = make_session(tmp_path, fake_server, name="elsewhere")

    def finish_elsewhere(status):
        other = SessionStore(tmp_path / "store")  # another process's view of the store
        session = other.load(session_id)
        session["status"] = status
        session["updated"] = time.time()
        other.save(session)
        other.close()

    def shown_status(browser) -> str:
        table = browser.query_one("#sessions")
        return table.get_cell(session_id, "status").plain

    async def on_timer():
        app = PromptArborApp(tmp_path / "store")
        async with app.run_test(size=(120, 30)) as pilot:
            browser = await browser_ready(pilot)
            assert shown_status(browser) == "new"
            finish_elsewhere("done")
            await wait_for(pilot, lambda: shown_status(browser) == "done", timeout=10)
            await pilot.press("q")

    async def on_focus():
        from textual import events

        app = PromptArborApp(tmp_path / "store")
        async with app.run_test(size=(120, 30)) as pilot:
            browser = await browser_ready(pilot)
            assert shown_status(browser) == "done"
            finish_elsewhere("paused")
            await pilot.pause(0.5)
            assert shown_status(browser) == "done"  # the timer is far off
            app.post_message(events.AppFocus())
            await wait_for(pilot, lambda: shown_status(browser) == "paused", timeout=10)
            await pilot.press("q")

    monkeypatch.setattr(browser_module, "REFRESH_SECONDS", 0.2)
    asyncio.run(on_timer())
    monkeypatch.setattr(browser_module, "REFRESH_SECONDS", 3600)
    asyncio.run(on_focus())


def test_escape_and_q_go_back_to_the_browser_and_another_session_opens(tmp_path, fake_server,
                                                                       fake_key):
    first = make_session(tmp_path, fake_server, name="first")
    second = make_session(tmp_path, fake_server, name="second")

    def free(session_id) -> bool:
        other = SessionStore(tmp_path / "store")
        try:
            return other.lock(session_id)
        except Exception:
            return False
        finally:
            other.close()

    async def scenario():
        app = PromptArborApp(tmp_path / "store")
        async with app.run_test(size=(120, 30)) as pilot:
            browser = await browser_ready(pilot)
            table = browser.query_one("#sessions")
            table.move_cursor(row=list(browser.rows).index(first))
            await pilot.press("enter")
            screen = await open_workbench(pilot)
            assert screen.session_id == first and not free(first)
            await pilot.press("escape")
            await wait_for(pilot, lambda: app.screen is browser)
            await wait_for(pilot, lambda: free(first))  # the session was given back
            assert cursor_key(browser) == first

            table.move_cursor(row=list(browser.rows).index(second))
            await pilot.press("enter")
            screen = await open_workbench(pilot)
            assert screen.session_id == second
            await pilot.press("space")  # the workbench works as usual
            await wait_for(pilot, lambda: stored(tmp_path, second)["steps"] == 1)
            await wait_for(pilot, idle(screen))
            await pilot.press("q")  # q: back, too
            await wait_for(pilot, lambda: app.screen is browser)
            await wait_for(pilot, lambda: free(second))
            await wait_for(pilot, lambda: browser.rows[second]["steps"] == 1)

            table.move_cursor(row=list(browser.rows).index(first))
            await pilot.press("enter")  # the first one opens again
            screen = await open_workbench(pilot)
            assert screen.session_id == first
            await pilot.press("escape")
            await wait_for(pilot, lambda: app.screen is browser)
            await pilot.press("q")  # q in the browser quits
            await wait_for(pilot, lambda: app.return_code is not None, timeout=5)
    asyncio.run(scenario())


def test_a_workbench_opened_directly_quits_with_q_and_ignores_escape(tmp_path, fake_server,
                                                                      fake_key):
    session_id = make_session(tmp_path, fake_server)

    async def scenario():
        app = PromptArborApp(tmp_path / "store", session_id)
        async with app.run_test(size=(120, 30)) as pilot:
            screen = await open_workbench(pilot)
            await pilot.press("escape")
            await pilot.pause(0.2)
            assert app.screen is screen and screen.runner is not None
            assert not any(isinstance(s, BrowserScreen) for s in app.screen_stack)
            await pilot.press("q")
            await wait_for(pilot, lambda: app.return_code is not None, timeout=5)
    asyncio.run(scenario())


def test_ctrl_q_and_escape_ask_while_a_run_is_in_progress(tmp_path, fake_server, fake_key):
    fake_server.latency = 0.1
    session_id = make_session(tmp_path, fake_server, depth=6)

    async def back_during_a_run():
        app = PromptArborApp(tmp_path / "store")
        async with app.run_test(size=(120, 30)) as pilot:
            browser = await browser_ready(pilot)
            await pilot.press("enter")
            screen = await open_workbench(pilot)
            await pilot.press("r")
            await wait_for(pilot, lambda: screen.busy)
            await pilot.press("ctrl+q")  # asks; no answers "no"
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            assert "run is in progress" in str(app.screen.question)
            await pilot.press("escape")
            await wait_for(pilot, lambda: app.screen is screen)
            assert app.return_code is None and screen.busy
            await pilot.press("escape")  # back: asks too; yes pauses, then goes back
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            await pilot.press("y")
            await wait_for(pilot, lambda: app.screen is browser, timeout=30)
            assert not screen.busy
            await wait_for(pilot, lambda: browser.rows[session_id]["status"] == "paused")
            await pilot.press("q")

    async def quit_during_a_run():
        app = PromptArborApp(tmp_path / "store", session_id)
        async with app.run_test(size=(120, 30)) as pilot:
            screen = await open_workbench(pilot)
            await pilot.press("r")
            await wait_for(pilot, lambda: screen.busy)
            await pilot.press("ctrl+q")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            await pilot.press("y")
            await wait_for(pilot, lambda: app.return_code is not None, timeout=10)

    asyncio.run(back_during_a_run())
    steps = stored(tmp_path, session_id)["steps"]
    assert stored(tmp_path, session_id)["status"] == "paused" and steps >= 1
    asyncio.run(quit_during_a_run())
    assert stored(tmp_path, session_id)["status"] in ("paused", "running")


def test_delete_asks_with_the_sessions_name(tmp_path, fake_server, fake_key):
    session_id = make_session(tmp_path, fake_server, name="tides of March")

    async def scenario():
        app = PromptArborApp(tmp_path / "store")
        async with app.run_test(size=(80, 24)) as pilot:
            browser = await browser_ready(pilot)
            await pilot.press("d")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            question = app.screen.question
            assert "tides of March" in question.plain and session_id in question.plain
            await pilot.press("y")
            await wait_for(pilot, lambda: app.screen is browser and not browser.rows)
    asyncio.run(scenario())
    assert not SessionStore(tmp_path / "store").exists(session_id)


def test_browser_export_names_the_node_it_exported(tmp_path, fake_server, fake_key,
                                                    monkeypatch):
    monkeypatch.chdir(tmp_path)
    session_id = make_session(tmp_path, fake_server, steps=1)  # paused: the root is scored
    assert stored(tmp_path, session_id)["status"] == "paused"

    async def scenario():
        app = PromptArborApp(tmp_path / "store")
        async with app.run_test(size=(120, 30)) as pilot:
            await browser_ready(pilot)
            await pilot.press("o")
            await wait_for(pilot, lambda: list(tmp_path.glob("promptarbor-*.md")))
    asyncio.run(scenario())
    assert [p.name for p in tmp_path.glob("promptarbor-*.md")] == [
        f"promptarbor-{session_id}-n0.md"]


@pytest.mark.parametrize("size", [(80, 24), (160, 45)])
def test_browser_columns_fit_and_the_status_stays_visible(tmp_path, fake_server, fake_key,
                                                           size):
    session_id = make_session(tmp_path, fake_server, steps=1,
                              name="A rather long session name about tides, moons and more")
    (tmp_path / "store" / "sessions" / "junk0001.json").write_bytes(b"not json at all")

    async def scenario():
        app = PromptArborApp(tmp_path / "store")
        async with app.run_test(size=size) as pilot:
            browser = await browser_ready(pilot)
            await pilot.pause(0.2)
            shown = screenshot_text(app)
            lines = shown.splitlines()
            junk = next(line for line in lines if "junk0001" in line)
            assert "corrupt" in junk
            header = next(line for line in lines if " status " in line)
            assert "best" in header and "cost" in header
            row = next(line for line in lines if session_id in line)
            assert "paused" in row and "/5" in row  # DRPO's scale
            if size[0] < 100:
                assert "A rather long" in row and "…" in row
            else:
                assert "last change" in header
            table = browser.query_one("#sessions")
            assert sum(c.get_render_width(table) for c in table.columns.values()) <= size[0]
    asyncio.run(scenario())


def test_best_is_shown_on_each_methods_scale():
    assert reward_text("drpo", 3.6667) == "3.67/5"
    assert reward_text("static-reward", 4) == "4.00/5"
    assert reward_text("vapo", 0.4) == "40%" and reward_text("promptagent", 0.4125) == "41.2%"
    assert reward_text("picaco", -30.0213) == "-30.02 TC"
    assert reward_text("opro", 59.0) == "59.0%" and reward_text("urial", 61.25) == "61.2%"
    assert reward_text("drpo", None) == "—" and reward_text("vapo", "x[/]") == "x[/]"


def test_columns_give_the_name_up_first_then_the_date():
    rows = [{"id": "a1b2c3d4", "name": "n" * 60, "method": "static-reward", "status": "corrupt",
             "steps": "12", "best": "-30.02 TC", "cost": "$12.3456", "updated": 0}]
    cols = browser_module.SESSION_COLUMNS
    wide, short = fit_columns(cols, rows, 200)
    assert not short and dict((k, w) for k, _, w in wide)["name"] == 40
    narrow, short = fit_columns(cols, rows, 78)
    keys = [k for k, _, _ in narrow]
    assert "status" in keys and sum(w + 2 for _, _, w in narrow) <= 78
