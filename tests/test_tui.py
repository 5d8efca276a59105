"""The workbench driven by keys (Textual Pilot) against the fake server; store checked after."""
import asyncio
import time

import pytest

from conftest import write_config
from engine.config import load_config
from engine.datasets import load_icl_examples, load_seed_queries
from engine.runner import Runner
from sessions.store import SessionStore
from tui.app import PromptArborApp, WorkbenchScreen
from tui.text import safe, strip_escapes


def new_session(tmp_path, server, **search) -> str:
    cfg = load_config(write_config(tmp_path / "c.toml", server.base_url,
                                   search={"beam_width": 2, "samples_per_state": 2, "depth": 2,
                                           **search}))
    store = SessionStore(tmp_path / "store")
    runner = Runner.create(cfg, load_seed_queries(None), load_icl_examples(None), store=store,
                           cache_dir=store.cache_dir)
    session_id = runner.session["id"]
    runner.gateway.close()
    store.close()
    return session_id


def stored(tmp_path, session_id) -> dict:
    return SessionStore(tmp_path / "store").load(session_id)


async def wait_for(pilot, predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await pilot.pause(0.05)
        if predicate():
            return
    raise AssertionError("condition not reached in time")


async def open_workbench(pilot) -> WorkbenchScreen:
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, WorkbenchScreen)
                   and pilot.app.screen.snap is not None)
    return pilot.app.screen


def idle(screen):
    return lambda: not screen.busy


def test_safe_text_never_markup_and_no_escapes():
    text = safe("[bold red]x[/] \x1b[2Jcleared \x1b]0;t\x07")
    assert text.plain == "[bold red]x[/] cleared "
    assert strip_escapes("a\x1b[31mb\x9bc") == "abc"


def test_keys_step_prune_accept(tmp_path, fake_server, fake_key):
    session_id = new_session(tmp_path, fake_server)

    async def scenario():
        app = PromptArborApp(tmp_path / "store", session_id)
        async with app.run_test(size=(140, 40)) as pilot:
            screen = await open_workbench(pilot)
            assert len(screen.tree_nodes) == 1  # the root prompt

            await pilot.press("space")  # judge the root
            await wait_for(pilot, lambda: stored(tmp_path, session_id)["steps"] == 1)
            await wait_for(pilot, idle(screen))

            await pilot.press("L")  # one level: expand + score
            await wait_for(pilot, lambda: stored(tmp_path, session_id)["steps"] == 3)
            await wait_for(pilot, idle(screen))
            await wait_for(pilot, lambda: len(screen.tree_nodes) == 3)

            # select a child and prune it
            child = [n for n in screen.snap["nodes"].values() if n["parent"]][0]["id"]
            screen.selected = child
            await pilot.press("x")
            await wait_for(pilot, lambda: stored(tmp_path, session_id)["tree"]["nodes"][child]
                           ["status"] == "pruned")
            await wait_for(pilot, idle(screen))
            await pilot.press("x")
            await wait_for(pilot, lambda: stored(tmp_path, session_id)["tree"]["nodes"][child]
                           ["status"] != "pruned")
            await wait_for(pilot, idle(screen))

            await pilot.press("a")
            await wait_for(pilot, lambda: stored(tmp_path, session_id)["accepted"] == child)
            await wait_for(pilot, idle(screen))
            await pilot.press("q")
        return True

    assert asyncio.run(scenario())
    session = stored(tmp_path, session_id)
    kinds = [e["kind"] for e in session["events"] if e["actor"] == "user"]
    assert kinds[-3:] == ["prune", "unprune", "accept"]


def test_model_text_is_shown_verbatim(tmp_path, fake_server, fake_key):
    fake_server.responder = lambda request, index: (
        "[bold red]x[/] \x1b[2J [/INST] y" if request["model"] == "fake-base"
        else __import__("conftest").drpo_responder(request, index))
    session_id = new_session(tmp_path, fake_server)

    async def scenario():
        app = PromptArborApp(tmp_path / "store", session_id)
        async with app.run_test(size=(140, 40)) as pilot:
            screen = await open_workbench(pilot)
            await pilot.press("space")
            await wait_for(pilot, lambda: stored(tmp_path, session_id)["steps"] == 1)
            await wait_for(pilot, idle(screen))
            await pilot.press("1")  # nothing bound: harmless
            screen.selected = screen.snap["session"]["tree"]["roots"][0]
            screen._render_detail()
            shown = screen.query_one("#response").render()
            plain = shown.plain if hasattr(shown, "plain") else str(shown)
            assert "[bold red]x[/]" in plain and "[/INST] y" in plain
            assert "\x1b" not in plain
            await pilot.press("q")

    asyncio.run(scenario())
