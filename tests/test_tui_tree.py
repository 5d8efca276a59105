"""The workbench's search tree and the Candidates view, driven by keys (Textual Pilot)
against the fake server: the final node's icon, node ids, labels fitted to the pane's width
that name what each node changes, the paths opened on reopening, the `/` filter and the
Candidates view's ranking and jump."""
import asyncio
import json
import re

from conftest import _between, drpo_responder, write_config, write_tasks
from pilot import open_workbench as _open_workbench, wait_for
from promptarbor.engine.config import load_config
from promptarbor.engine.datasets import load_inputs
from promptarbor.engine.runner import Runner
from promptarbor.sessions.store import SessionStore
from promptarbor.tui.app import PromptArborApp
from promptarbor.tui.screens.workbench import WorkbenchScreen
from promptarbor.tui.widgets.search_tree import SearchTree, change_summary, fit_label, node_parts

LONG_TIP = ("be clear and honest, cite the sources you rely on, and say plainly when you are "
            "not sure of the answer")


def rewriting_responder(request: dict, index: int) -> str:
    """drpo_responder, except that (1) the root prompt's answers get 4 on every aspect but
    one (5), the others' at most 4, so the root stays the best by reward while the search's
    final node is another one, and (2) each rewrite changes the first line as well as
    adding a long bullet, so siblings share their changed first line (what labels used to
    show)."""
    last = request["messages"][-1]["content"] if request.get("messages") else ""
    answer = drpo_responder(request, index)
    if "Aspects to rate:" in last:
        root = "(Tip)" not in _between(last, "Answer to rate:\n<<<\n")
        scores = json.loads(answer)
        for i, entry in enumerate(scores.values()):
            entry["score"] = (5 if i == 0 else 4) if root else min(4, entry["score"])
        return json.dumps(scores)
    if '"new_system_prompt"' in last:
        body = json.loads(answer.split("```json\n", 1)[1].rsplit("\n```", 1)[0])
        prompt = body["new_system_prompt"].replace("helpful assistant.",
                                                   "helpful, honest assistant.")
        prompt = prompt.replace("be clear and honest.", LONG_TIP)
        body["new_system_prompt"] = prompt
        return "```json\n" + json.dumps(body) + "\n```"
    return answer


def finished_session(tmp_path, server, **search) -> str:
    """A DRPO session run to its end (W2 M2 D2), the store closed after."""
    cfg = load_config(write_config(tmp_path / "c.toml", server.base_url,
                                   search={"beam_width": 2, "samples_per_state": 2, "depth": 2,
                                           **search}))
    store = SessionStore(tmp_path / "store")
    runner = Runner.create(cfg, load_inputs(cfg), store=store, cache_dir=store.cache_dir)
    asyncio.run(runner.run())
    session_id = runner.session["id"]
    runner.gateway.close()
    store.close()
    return session_id


def edit_stored(tmp_path, session_id, change) -> dict:
    store = SessionStore(tmp_path / "store")
    session = store.load(session_id)
    change(session)
    store.save(session)
    store.close()
    return session


async def open_workbench(pilot) -> WorkbenchScreen:
    return await _open_workbench(pilot, settle=0.2)


def tree_lines(screen) -> list[str]:
    """The tree's lines as drawn (trailing blanks removed)."""
    tree = screen.query_one(SearchTree)
    return [tree.render_line(y).text.rstrip() for y in range(tree.size.height)
            if tree.render_line(y).text.strip()]


def line_of(screen, node_id: str) -> str:
    found = [ln for ln in tree_lines(screen) if re.search(rf"\b{node_id}\b", ln)]
    assert found, (node_id, tree_lines(screen))
    return found[0]


def label_text(line: str, node_id: str) -> str:
    """The text part of a drawn label: what follows the node's id and its reward."""
    return line.split(f"{node_id} ", 1)[1].split(" ", 1)[1]


def visible(screen, node_id: str) -> bool:
    """Every ancestor of the node is expanded (the node has a line in the tree)."""
    tree_node = screen.tree_nodes[node_id]
    parent = tree_node.parent
    while parent is not None and parent is not screen.query_one(SearchTree).root:
        if not parent.is_expanded:
            return False
        parent = parent.parent
    return True


def test_final_node_marked_and_ids_in_labels(tmp_path, fake_server, fake_key):
    """Defect 3: the root is the best by reward (★), the search's final node is another
    one: it carries ◎ and its id; every label names its node's id."""
    fake_server.responder = rewriting_responder
    session_id = finished_session(tmp_path, fake_server)

    async def scenario():
        app = PromptArborApp(tmp_path / "store", session_id)
        async with app.run_test(size=(160, 45)) as pilot:
            screen = await open_workbench(pilot)
            snap = screen.snap
            root = snap["session"]["tree"]["roots"][0]
            final = snap["summary"]["final"]["node"]
            assert snap["best"] == root and final != root
            assert "◎" in screen.tree_nodes[final].label.plain
            assert "◎" not in screen.tree_nodes[root].label.plain
            assert "★" in screen.tree_nodes[root].label.plain
            assert visible(screen, final)
            assert "◎" in line_of(screen, final)
            for node_id, tree_node in screen.tree_nodes.items():
                assert re.search(rf"\b{node_id}\b", tree_node.label.plain), tree_node.label.plain
            await pilot.press("q")
    asyncio.run(scenario())


def test_labels_fit_the_pane_and_name_the_change(tmp_path, fake_server, fake_key):
    """Defect 8: labels use the pane's width (longer at 160 columns than at 80, never wider
    than the pane) and siblings read differently though they share a changed first line."""
    fake_server.responder = rewriting_responder
    session_id = finished_session(tmp_path, fake_server)
    seen, texts = {}, {}

    async def scenario(size):
        app = PromptArborApp(tmp_path / "store", session_id)
        async with app.run_test(size=size) as pilot:
            screen = await open_workbench(pilot)
            tree = screen.query_one(SearchTree)
            nodes = screen.snap["nodes"]
            root = screen.snap["session"]["tree"]["roots"][0]
            children = nodes[root]["children"]
            assert len(children) == 2
            seen[size] = {c: line_of(screen, c) for c in children}
            texts.update({c: nodes[c]["text"] for c in children})
            assert tree.virtual_size.width <= tree.size.width  # nothing runs off the pane
            await pilot.press("q")

    asyncio.run(scenario((80, 24)))
    asyncio.run(scenario((160, 45)))
    narrow, wide = seen[(80, 24)], seen[(160, 45)]
    for child in narrow:
        assert len(wide[child]) > len(narrow[child]) + 20, (narrow[child], wide[child])
        text = label_text(wide[child], child)
        assert len(text) > 45 and "Tip" in text, text  # labels were cut at 40 characters
    (one, first), (two, second) = wide.items()
    assert label_text(first, one) != label_text(second, two), (first, second)
    # the old label: the first line the child adds, the same for both siblings
    assert all(nodes_text.startswith("You are a helpful, honest assistant.")
               for nodes_text in texts.values())


def test_change_summary_names_what_differs():
    old = "You are a helpful assistant."
    assert change_summary(old, old) == "= same text as the parent"
    assert change_summary(old, old + "\n- Tip 1: be brief.") == "+ Tip 1: be brief"
    assert change_summary(old, "You are a friendly assistant.") == "helpful → friendly"
    assert change_summary(old + " Be brief.", old) == "− Be brief"
    # the largest change first; punctuation apart from the words it follows
    assert (change_summary(old, "You are a helpful, honest assistant.\n- Tip 7: cite sources.")
            == "+ Tip 7: cite sources · + honest")
    assert change_summary(old, "Answer in French only, please, always.").startswith("rewritten:")


def test_vapo_statistics_give_way_to_the_text(tmp_path, vapo_server, fake_key):
    """VAPO's Q N U statistics come after the text and go first when room is short."""
    tasks = write_tasks(tmp_path / "tasks.jsonl", 24)
    cfg = load_config(write_config(
        tmp_path / "c.toml", vapo_server.base_url, method="vapo",
        search={"iterations": 1, "expand_width": 2, "depth_limit": 2, "batch_size": 3},
        data={"tasks": str(tasks), "train": 10, "validation": 6, "test": 6}))
    store = SessionStore(tmp_path / "store")
    runner = Runner.create(cfg, load_inputs(cfg), store=store, cache_dir=store.cache_dir)
    asyncio.run(runner.run(steps=5))
    session_id = runner.session["id"]
    runner.gateway.close()
    store.close()

    async def scenario():
        app = PromptArborApp(tmp_path / "store", session_id)
        async with app.run_test(size=(160, 45)) as pilot:
            screen = await open_workbench(pilot)
            snap = screen.snap
            child = next(n for n in snap["nodes"].values() if n["parent"] and n["text"])
            parts = node_parts(snap, child)
            wide, narrow = fit_label(parts, 90).plain, fit_label(parts, 30).plain
            assert wide.index("Guard") < wide.index(" Q")     # text first, then Q N U
            assert "Guard" in narrow and " Q" not in narrow   # short room: the text stays
            assert "Guard" in line_of(screen, child["id"])
            await pilot.press("q")
    asyncio.run(scenario())


def test_reopen_shows_accepted_and_final(tmp_path, fake_server, fake_key):
    """Defect 4: a node accepted under a branch the search left behind is shown (its path
    opened) when the session is opened again; so are the final and the best node."""
    session_id = finished_session(tmp_path, fake_server)
    store = SessionStore(tmp_path / "store")
    session = store.load(session_id)
    store.close()
    nodes = session["tree"]["nodes"]
    runner_view = {"beam": [], "best_path": []}

    async def find_hidden():
        app = PromptArborApp(tmp_path / "store", session_id)
        async with app.run_test(size=(160, 45)) as pilot:
            screen = await open_workbench(pilot)
            runner_view.update(beam=screen.snap["beam"], best_path=screen.snap["best_path"],
                               final=screen.snap["summary"]["final"]["node"])
            await pilot.press("q")
    asyncio.run(find_hidden())

    def path(node_id):
        out = []
        while node_id:
            out.append(node_id)
            node_id = nodes[node_id]["parent"]
        return out
    opened = set(runner_view["beam"]) | set(runner_view["best_path"])
    shown_anyway = set(path(runner_view["final"]))
    hidden = [i for i, n in nodes.items() if n["parent"] and n["parent"] not in opened
              and n["parent"] not in shown_anyway and n["text"]]
    assert hidden, "the fixture should leave a branch closed"
    accepted = hidden[0]

    def accept(s):
        s["tree"]["nodes"][accepted]["accepted"] = True
        s["accepted"] = accepted
    edit_stored(tmp_path, session_id, accept)

    async def reopen():
        app = PromptArborApp(tmp_path / "store", session_id)
        async with app.run_test(size=(160, 45)) as pilot:
            screen = await open_workbench(pilot)
            assert visible(screen, accepted)
            assert "✓" in line_of(screen, accepted)
            assert visible(screen, runner_view["final"])
            # a branch the person closes stays closed at the next refresh
            parent = screen.tree_nodes[nodes[accepted]["parent"]]
            parent.collapse()
            await screen.refresh_view()
            assert not parent.is_expanded
            await pilot.press("q")
    asyncio.run(reopen())


def test_slash_filters_by_text_and_by_state(tmp_path, fake_server, fake_key):
    session_id = finished_session(tmp_path, fake_server)
    store = SessionStore(tmp_path / "store")
    nodes = store.load(session_id)["tree"]["nodes"]
    store.close()
    leaves = [i for i, n in nodes.items() if n["parent"] and not n["children"]]
    failed, pruned = leaves[0], leaves[1]

    def mark(s):
        s["tree"]["nodes"][failed].update(status="failed", error="the rater's answer was not JSON")
        s["tree"]["nodes"][pruned]["status"] = "pruned"
    edit_stored(tmp_path, session_id, mark)
    word = re.search(r"Tip \d+", nodes[leaves[2]]["text"].splitlines()[-1]).group(0)

    def ancestors(node_id):
        out = set()
        while node_id:
            out.add(node_id)
            node_id = nodes[node_id]["parent"]
        return out

    async def scenario():
        app = PromptArborApp(tmp_path / "store", session_id)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await open_workbench(pilot)
            assert len(screen.tree_nodes) == len(nodes)
            await pilot.press("slash")
            await pilot.press(*"failed")
            await wait_for(pilot, lambda: set(screen.tree_nodes) == ancestors(failed))
            assert "✗" in line_of(screen, failed)
            assert not screen.busy and screen.snap["summary"]["status"] == "done"  # typed, not run
            for _ in "failed":
                await pilot.press("backspace")
            await pilot.press(*"pruned")
            await wait_for(pilot, lambda: set(screen.tree_nodes) == ancestors(pruned))
            for _ in "pruned":
                await pilot.press("backspace")
            await pilot.press(*word.lower())
            await wait_for(pilot, lambda: set(screen.tree_nodes) == ancestors(leaves[2]))
            await pilot.press("enter")  # to the tree, the filter kept
            await wait_for(pilot, lambda: screen.focused is screen.query_one(SearchTree))
            assert set(screen.tree_nodes) == ancestors(leaves[2])
            await pilot.press("slash", "escape")  # cleared: every node again
            await wait_for(pilot, lambda: len(screen.tree_nodes) == len(nodes))
            assert not screen.query_one("#tree-filter").display
            await pilot.press("q")
    asyncio.run(scenario())


def test_candidates_ranked_and_enter_selects_in_tree(tmp_path, fake_server, fake_key):
    from textual.widgets import DataTable

    from promptarbor.tui.screens.candidates import CandidatesScreen

    session_id = finished_session(tmp_path, fake_server)

    async def scenario(size):
        app = PromptArborApp(tmp_path / "store", session_id)
        async with app.run_test(size=size) as pilot:
            screen = await open_workbench(pilot)
            nodes = screen.snap["nodes"]
            await pilot.press("C")
            await wait_for(pilot, lambda: isinstance(app.screen, CandidatesScreen))
            table = app.screen.query_one(DataTable)
            ids = [table.get_row_at(i)[1].plain for i in range(table.row_count)]
            rewards = [nodes[i]["reward"] for i in ids]
            assert sorted(ids) == sorted(i for i, n in nodes.items() if n["reward"] is not None)
            assert rewards == sorted(rewards, reverse=True)
            # every column fits the screen
            assert sum(c.get_render_width(table) for c in table.columns.values()) <= size[0]
            # a node on a branch the tree keeps closed: the last ranked one off the best path
            target = next(i for i in reversed(ids) if i not in screen.snap["best_path"]
                          and nodes[i]["parent"])
            await pilot.press(*["down"] * ids.index(target))
            await pilot.press("enter")
            await wait_for(pilot, lambda: app.screen is screen)
            tree = screen.query_one(SearchTree)
            await wait_for(pilot, lambda: tree.cursor_node is not None
                           and tree.cursor_node.data == target)
            assert screen.selected == target and visible(screen, target)
            assert screen.focused is tree
            await pilot.press("C")
            await wait_for(pilot, lambda: isinstance(app.screen, CandidatesScreen))
            await pilot.press("escape")
            await wait_for(pilot, lambda: app.screen is screen)
            assert screen.selected == target
            await pilot.press("q")
    asyncio.run(scenario((80, 24)))
    asyncio.run(scenario((160, 45)))


def test_a_bullet_of_the_embedded_optimizer_is_labelled_by_what_follows_its_fixed_start():
    """Every bullet the embedded optimizer adds starts "When you answer, ": a label shows what
    comes after it, so siblings cut to one width still differ."""
    parent = "You are a helpful assistant."
    first = change_summary(parent, parent + "\n\n- When you answer, keep replies short.")
    second = change_summary(parent, parent + "\n\n- When you answer, give one example.")
    assert first == "+ …keep replies short" and second == "+ …give one example"
    assert change_summary(parent, parent + " When you answer,") == "+ When you answer"
