"""The TUI against a hostile OpenAI-compatible endpoint and a damaged store (Textual Pilot).

Model answers, scores, rationales and provider errors carry Rich / Textual markup and
terminal escape sequences; session files are random bytes or JSON of the wrong shape.
The app must stay up, show the markup as literal text, never pass an escape byte to the
screen, never move a file aside while only looking, and retry failed nodes with `R`.
"""
import asyncio
import html
import json
import random
import re

import pytest
from rich.text import Text

from conftest import drpo_responder
from fake_llm import ERROR_MARKUP_TEXT, ESCAPE_TEXT, MARKUP_TEXT, hostile_responder
from promptarbor.sessions.store import SessionStore
from test_tui import as_text, idle, new_session, open_workbench, stored, wait_for
from promptarbor.tui.app import PromptArborApp
from promptarbor.tui.screens.browser import BrowserScreen
from promptarbor.tui.screens.workbench import WorkbenchScreen
from promptarbor.tui.text import one_line, plain_markup, safe, strip_escapes, toast

SIZE = (140, 40)
LITERAL = "[reverse]x[/reverse]"  # in MARKUP_TEXT and ERROR_MARKUP_TEXT
ESCAPE_BYTES = ("\x1b", "\x9b", "\x07", "\x9d", "\x90")


# ----------------------------------------------------------------------------- helpers

def screenshot_text(app) -> str:
    """The characters on the screen (every cell), from the SVG screenshot."""
    svg = app.export_screenshot()
    rows: dict[float, list] = {}
    for m in re.finditer(r'<text[^>]*\sx="([\d.]+)"\s+y="([\d.]+)"[^>]*>(.*?)</text>', svg, re.S):
        text = html.unescape(m.group(3)).replace("\xa0", " ")
        rows.setdefault(float(m.group(2)), []).append((float(m.group(1)), text))
    return "\n".join("".join(t for _, t in sorted(r)) for _, r in sorted(rows.items()))


def plain(visual) -> str:
    if visual is None:
        return ""
    if isinstance(visual, str):
        return visual
    if isinstance(visual, Text):
        return visual.plain
    if hasattr(visual, "plain"):  # textual.content.Content
        return visual.plain
    return as_text(visual)


def shown_texts(app) -> list[str]:
    """What every widget of the current screen holds to draw: Static / Label contents
    (Text, Content or Rich renderables, as text), tree labels, table cells, log lines and
    toasts."""
    from textual.widgets import DataTable, RichLog, Static, Tree

    screen = app.screen
    out = []
    for widget in screen.query(Static):
        out.append(plain(widget.content))
    for tree in screen.query(Tree):
        stack = [tree.root]
        while stack:
            node = stack.pop()
            out.append(plain(node.label))
            stack.extend(node.children)
    for table in screen.query(DataTable):
        for row_key in table.rows:
            out.extend(plain(cell) for cell in table.get_row(row_key))
    for log in screen.query(RichLog):
        out.extend("".join(seg.text for seg in strip) for strip in log.lines)
    for toast_widget in app.screen.query("Toast"):
        out.append(plain(toast_widget.render()))
    return out


def assert_no_escapes(texts) -> None:
    for text in texts:
        for byte in ESCAPE_BYTES:
            assert byte not in text, (byte, text[:200])


def shown_toasts(app) -> list[str]:
    return [plain(t.render()) for t in app.screen.query("Toast")]


def hostile_scores(request: dict, index: int) -> str:
    """drpo_responder behind hostile_responder; the rater also answers one score as a
    markup link around the number (what a hostile evaluator did)."""
    answer = HOSTILE(request, index)
    last = request["messages"][-1]["content"]
    if "Aspects to rate:" in last:
        try:
            scores = json.loads(answer)
        except ValueError:
            return answer
        first = next(iter(scores))
        scores[first]["score"] = "[link=https://evil.example]5[/link]"
        scores[first]["rationale"] = f"[link=https://evil.example]5[/link] {MARKUP_TEXT} {ESCAPE_TEXT}"
        return json.dumps(scores)
    return answer


HOSTILE = hostile_responder(drpo_responder, seed=0)


# ----------------------------------------------------------------------------- text helpers

def test_strip_escapes_removes_every_control_sequence():
    out = strip_escapes(ESCAPE_TEXT)
    assert not any(ch in out for ch in map(chr, [*range(0, 9), *range(11, 32), *range(127, 160)]))
    assert "ZXZpbA==" not in out and "pwned" not in out and "evil.example" not in out
    assert "click" in out and "red" in out and "end" in out
    assert strip_escapes("a\tb\nc\r\nd") == "a\tb\nc\nd"
    assert strip_escapes("\x9d8;;https://x\x9clink\x9d8;;\x9c") == "link"   # 8-bit OSC 8
    assert strip_escapes("\x1b_apc\x1b\\A\x1b^pm\x9cB\x1bXsos\x07C\x90dcs\x9cD") == "ABCD"
    assert strip_escapes("x\x1b") == "x" and strip_escapes("\x1b(Bx\x1b7") == "x"
    assert safe(MARKUP_TEXT).plain == MARKUP_TEXT


@pytest.mark.parametrize("value", [MARKUP_TEXT, ERROR_MARKUP_TEXT, "[$accent]x[/]", "[B]x",
                                   "[ on red]x[/]", "a\\[b]c\\", "[@click=app.quit]q[/]"])
def test_plain_markup_shows_literally(value):
    from rich.markup import render as rich_render
    from textual.content import Content

    assert Content.from_markup(plain_markup(value)).plain == value
    assert Content.from_markup(plain_markup(value + ESCAPE_TEXT)).plain == value + strip_escapes(
        ESCAPE_TEXT)
    assert rich_render(plain_markup("[bold]x[/bold]")).plain == "[bold]x[/bold]"
    assert one_line("\n\n  first \x1b[2J line \nsecond") == "first  line"


def test_toasts_show_markup_literally(tmp_path):
    async def scenario():
        app = PromptArborApp(tmp_path / "store")
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            await pilot.pause(0.1)
            toast(app, MARKUP_TEXT + " " + ESCAPE_TEXT, severity="error")
            toast(app.screen, ERROR_MARKUP_TEXT)
            await wait_for(pilot, lambda: len(shown_toasts(app)) == 2)
            await pilot.pause(0.1)
            shown = screenshot_text(app)
            assert LITERAL in shown and "[bold red]x[/]" in shown
            assert_no_escapes(shown_toasts(app) + [shown])
            await pilot.press("q")
    asyncio.run(scenario())


# ----------------------------------------------------------------------------- workbench

def test_hostile_scores_rationales_and_errors_stay_text(tmp_path, fake_server, fake_key):
    """A DRPO session whose evaluator first answers a score as a markup link (the root
    fails: its error, in a toast and the Prompt tab, is markup), then answers, scores and
    rationales with markup and escapes, then a provider 400 whose message is markup:
    nothing raises, all of it is shown literally, no escape byte reaches the screen."""
    fake_server.responder = hostile_scores
    session_id = new_session(tmp_path, fake_server)

    async def scenario():
        app = PromptArborApp(tmp_path / "store", session_id)
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            screen = await open_workbench(pilot)
            root = screen.snap["session"]["tree"]["roots"][0]
            await pilot.press("space")  # judge the root: the score does not parse
            await wait_for(pilot, lambda: stored(tmp_path, session_id)["tree"]["nodes"][root]
                           ["status"] == "failed")
            await wait_for(pilot, idle(screen))
            await wait_for(pilot, lambda: any("[link=https://evil.example]5[/link]" in t
                                              for t in shown_toasts(app)))
            assert "[link=https://evil.example]5[/link]" in screenshot_text(app)
            assert_no_escapes(shown_texts(app))

            fake_server.responder = HOSTILE  # scores parse; texts still hostile
            screen.selected = root
            await pilot.press("R")
            await wait_for(pilot, lambda: stored(tmp_path, session_id)["tree"]["nodes"][root]
                           ["reward"] is not None)
            await wait_for(pilot, idle(screen))
            await pilot.press("L")  # one level: hostile rewrites, scored
            await wait_for(pilot, lambda: len([n for n in stored(tmp_path, session_id)["tree"]
                                               ["nodes"].values() if n["reward"] is not None]) == 3)
            await wait_for(pilot, idle(screen))
            await pilot.press("l")  # the log, with every event
            texts = []
            for node_id in list(screen.snap["nodes"]):
                screen.selected = node_id
                screen._render_detail()
                for tab in ("tab-prompt", "tab-response", "tab-reward", "tab-critique",
                            "tab-diff", "tab-calls"):
                    screen.query_one("TabbedContent").active = tab
                    await pilot.pause(0.05)
                    texts.append(screenshot_text(app))
                texts += shown_texts(app)
            assert_no_escapes(texts)
            joined = "\n".join(texts)
            assert LITERAL in joined and "[@click=app.quit]quit[/]" in joined
            assert "[link=https://evil.example]5[/link]" in joined

            # a provider error whose message is markup: every evaluator call refused
            fake_server.inject("400-markup", count=1000, model="fake-evaluator")
            await pilot.press("L")
            await wait_for(pilot, idle(screen))
            await wait_for(pilot, lambda: any(n["status"] == "failed" for n in stored(
                tmp_path, session_id)["tree"]["nodes"].values()))
            await wait_for(pilot, idle(screen))
            await wait_for(pilot, lambda: any("[link=https://evil.example]click[/link]" in t
                                              for t in shown_toasts(app)))
            assert "[link=https://evil.example]click[/link]" in screenshot_text(app)
            await wait_for(pilot, lambda: any(n["status"] == "failed"
                                              for n in screen.snap["nodes"].values()))
            failed = [n for n in screen.snap["nodes"].values() if n["status"] == "failed"]
            screen.selected = failed[0]["id"]
            screen._render_detail()
            screen.query_one("TabbedContent").active = "tab-prompt"
            await pilot.pause(0.1)
            assert LITERAL in screenshot_text(app)  # the node's error, as text
            assert_no_escapes(shown_texts(app) + [screenshot_text(app)])
            assert isinstance(app.screen, WorkbenchScreen) and app.is_running
            fake_server.clear_faults()
            await pilot.press("q")
        return True

    assert asyncio.run(scenario())


def test_R_retries_failed_nodes(tmp_path, fake_server, fake_key):
    """A failed root and failed children: R on a failed node retries it, R on a node that
    has not failed says so, R on the root retries every failed node; each ends scored."""
    session_id = new_session(tmp_path, fake_server)

    async def scenario():
        app = PromptArborApp(tmp_path / "store", session_id)
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            screen = await open_workbench(pilot)
            root = screen.snap["session"]["tree"]["roots"][0]

            fake_server.inject("400-markup", count=1000, model="fake-base")
            await pilot.press("space")  # the root's answer is refused: the root fails
            await wait_for(pilot, lambda: stored(tmp_path, session_id)["tree"]["nodes"][root]
                           ["status"] == "failed")
            await wait_for(pilot, idle(screen))
            fake_server.clear_faults()  # the provider heals
            screen.selected = root
            await pilot.press("R")
            await wait_for(pilot, lambda: stored(tmp_path, session_id)["tree"]["nodes"][root]
                           ["reward"] is not None)
            await wait_for(pilot, idle(screen))
            await wait_for(pilot, lambda: any("retried 1 failed node: " + root in t
                                              for t in shown_toasts(app)))
            assert screen.snap["nodes"][root]["status"] != "failed"

            fake_server.inject("500", count=1000, model="fake-evaluator")
            await pilot.press("L")  # the children are written, their scoring fails
            await wait_for(pilot, idle(screen))
            await wait_for(pilot, lambda: len([n for n in stored(tmp_path, session_id)["tree"]
                                               ["nodes"].values() if n["status"] == "failed"]) == 2)
            await wait_for(pilot, idle(screen))
            fake_server.clear_faults()
            failed = sorted(n["id"] for n in screen.snap["nodes"].values()
                            if n["status"] == "failed")
            assert len(failed) == 2

            screen.selected = failed[0]  # R on one failed node: that node only
            await pilot.press("R")
            await wait_for(pilot, lambda: stored(tmp_path, session_id)["tree"]["nodes"]
                           [failed[0]]["reward"] is not None)
            await wait_for(pilot, idle(screen))
            assert stored(tmp_path, session_id)["tree"]["nodes"][failed[1]]["status"] == "failed"

            screen.selected = failed[0]  # no longer failed: R says so, nothing is sent
            before = len(fake_server.requests)
            await pilot.press("R")
            await wait_for(pilot, lambda: any("has not failed" in t for t in shown_toasts(app)))
            assert len(fake_server.requests) == before and not screen.busy

            screen.selected = root  # R on the root: every failed node
            await pilot.press("R")
            await wait_for(pilot, lambda: stored(tmp_path, session_id)["tree"]["nodes"]
                           [failed[1]]["reward"] is not None)
            await wait_for(pilot, idle(screen))
            nodes = stored(tmp_path, session_id)["tree"]["nodes"]
            assert not [n for n in nodes.values() if n["status"] == "failed"]
            await wait_for(pilot, lambda: "✗" not in "".join(
                n.label.plain for n in screen.tree_nodes.values()))

            await pilot.press("R")  # nothing failed any more
            await wait_for(pilot, lambda: any("no failed node" in t for t in shown_toasts(app)))
            await pilot.press("q")

    asyncio.run(scenario())
    kinds = [e["kind"] for e in stored(tmp_path, session_id)["events"] if e["actor"] == "user"]
    assert kinds.count("retry") == 3


def test_R_is_in_the_help_and_the_palette(tmp_path, fake_server, fake_key):
    session_id = new_session(tmp_path, fake_server)

    async def scenario():
        app = PromptArborApp(tmp_path / "store", session_id)
        async with app.run_test(size=SIZE) as pilot:
            screen = await open_workbench(pilot)
            commands = {c.title: c for c in app.get_system_commands(screen)}
            title = next(t for t in commands if t.endswith("(R)"))
            assert "retry" in title.lower()
            await pilot.press("question_mark")
            await wait_for(pilot, lambda: app.screen.__class__.__name__ == "HelpScreen")
            assert "retry the selected failed node" in screenshot_text(app)
            await pilot.press("escape")
            await pilot.press("q")
    asyncio.run(scenario())


# ----------------------------------------------------------------------------- store

def damaged_store(tmp_path, fake_server) -> tuple[str, dict]:
    """One good session and bad files next to it: {file name: bytes}."""
    good = new_session(tmp_path, fake_server)
    sessions = tmp_path / "store" / "sessions"
    bad = {
        "junk0001.json": random.Random(7).randbytes(2048),
        "shape001.json": json.dumps({"session": {"1": {"id": 5, "method": MARKUP_TEXT}},
                                     "nodes": [1, 2]}).encode(),
        "list0001.json": b"[1, 2, 3]",
        "empty001.json": b"",
        "[bold]x[-].json": (MARKUP_TEXT + ESCAPE_TEXT).encode(),
        "esc\x1b[2Jx.json": b"{}",
    }
    for name, data in bad.items():
        (sessions / name).write_bytes(data)
    return good, bad


def files_unchanged(tmp_path, bad: dict) -> None:
    sessions = tmp_path / "store" / "sessions"
    for name, data in bad.items():
        assert (sessions / name).read_bytes() == data, name
    assert not list(sessions.glob("*.corrupt-*"))


def test_browser_lists_corrupt_files_and_stays_up(tmp_path, fake_server, fake_key, monkeypatch):
    monkeypatch.chdir(tmp_path)
    good, bad = damaged_store(tmp_path, fake_server)

    async def scenario():
        app = PromptArborApp(tmp_path / "store")
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            await wait_for(pilot, lambda: isinstance(app.screen, BrowserScreen))
            browser = app.screen
            await wait_for(pilot, lambda: len(browser.rows) == 1 + len(bad))
            corrupt = [k for k, r in browser.rows.items() if r["status"] == "corrupt"]
            assert len(corrupt) == len(bad) and good not in corrupt
            shown = screenshot_text(app)
            assert "corrupt" in shown and "junk0001" in shown and "[bold]x[-]" in shown
            assert_no_escapes(shown_texts(app) + [shown])

            table = browser.query_one("DataTable")
            for row in range(table.row_count):  # every key on every corrupt row
                table.move_cursor(row=row)
                if browser._selected() == good:
                    continue
                for key in ("enter", "o", "r"):
                    await pilot.press(key)
                    await pilot.pause(0.05)
                    assert isinstance(app.screen, BrowserScreen), (key, browser._selected())
            await wait_for(pilot, lambda: any("cannot open junk0001" in t
                                              for t in shown_toasts(app)))
            assert not list(tmp_path.glob("promptarbor-*.md"))  # nothing exported
            files_unchanged(tmp_path, bad)

            table.move_cursor(row=list(browser.rows).index(good))
            await pilot.press("o")  # the good one is read (not scored yet: nothing to export)
            await wait_for(pilot, lambda: any("has no accepted, final or scored node" in t
                                              for t in shown_toasts(app)))
            await pilot.press("enter")  # and opens
            await open_workbench(pilot)
            await pilot.press("q")
    asyncio.run(scenario())
    files_unchanged(tmp_path, bad)


def test_opening_a_corrupt_session_directly_reports_it(tmp_path, fake_server, fake_key):
    _, bad = damaged_store(tmp_path, fake_server)

    async def scenario():
        app = PromptArborApp(tmp_path / "store", "junk0001")
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            await wait_for(pilot, lambda: any("cannot open session junk0001" in n.message
                                              for n in app._notifications))
            await wait_for(pilot, lambda: isinstance(app.screen, BrowserScreen))
            await pilot.press("q")
    asyncio.run(scenario())
    files_unchanged(tmp_path, bad)
    other = SessionStore(tmp_path / "store")  # the failed open gave its lock back
    assert other.lock("junk0001")
    other.close()


def test_hostile_session_name_and_data_file_are_text(tmp_path, fake_server, fake_key):
    session_id = new_session(tmp_path, fake_server)
    store = SessionStore(tmp_path / "store")
    session = store.load(session_id)
    session["name"] = MARKUP_TEXT + ESCAPE_TEXT
    store.save(session)
    store.close()
    seed = tmp_path / "q.jsonl"
    seed.write_text(json.dumps({"query": MARKUP_TEXT + ESCAPE_TEXT}) + "\n"
                    + json.dumps({"query": "Plan a picnic."}) + "\n")

    async def scenario():
        app = PromptArborApp(tmp_path / "store")
        async with app.run_test(size=(160, 50)) as pilot:
            await wait_for(pilot, lambda: isinstance(app.screen, BrowserScreen)
                           and app.screen.rows)
            shown = screenshot_text(app)
            assert "[/] [bold red]x[/]" in shown
            assert_no_escapes(shown_texts(app) + [shown])
            await pilot.press("n")
            await wait_for(pilot, lambda: app.screen.__class__.__name__ == "NewSessionScreen")
            wizard = app.screen
            wizard.query_one("#model-default").value = "openai/fake-any"
            wizard.query_one("#data-drpo-seed").value = str(seed)
            await wait_for(pilot, lambda: "First seed queries"
                           in plain(wizard.query_one("#preview").content))
            preview = plain(wizard.query_one("#preview").content)
            assert "[/] [bold red]x[/]" in preview
            assert_no_escapes(shown_texts(app))
            await pilot.press("escape")  # the form was filled: it asks before dropping it
            await wait_for(pilot, lambda: app.screen.__class__.__name__ == "ConfirmScreen")
            await pilot.press("y")
            await wait_for(pilot, lambda: isinstance(app.screen, BrowserScreen))
            await pilot.press("enter")
            screen = await open_workbench(pilot)
            title = plain(screen.query_one("#title").content)
            assert "[link=https://evil.example]5[/link]" in title
            assert_no_escapes(shown_texts(app))
            await pilot.press("q")
    asyncio.run(scenario())
