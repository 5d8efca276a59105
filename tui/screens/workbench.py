"""The workbench (`WorkbenchScreen`): the live search tree of one session, the selected
node's detail tabs, the status lines and the log, and the person's keys (step, run, pause,
prune, edit a critique, regenerate, add a prompt, accept, export, retry, mark and compare two
nodes on the held-out set). Engine work runs on the app's `EngineThread`; its events come
back as `EngineEvent` messages and a comparison's progress as `CompareProgress`. The
drawing is in `tui.widgets` (search_tree, node_detail, status_bar, plots).
"""
from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import (Footer, RichLog, Select, Sparkline, Static, TabbedContent, TabPane,
                             Tree)

from ..text import head, safe, toast
from ..widgets.node_detail import (calls_table, critique_text, diff_text, prompt_text,
                                   response_view, reward_view)
from ..widgets.plots import spark_values
from ..widgets.search_tree import MARK, sync_tree
from ..widgets.status_bar import compare_text, status_text, title_text
from .modals import ConfirmScreen, EditScreen, HelpScreen
from .results import ResultsScreen

if TYPE_CHECKING:
    from ..app import PromptArborApp


class EngineEvent(Message):
    def __init__(self, event: dict):
        super().__init__()
        self.event = event


class CompareProgress(Message):
    """A call of the comparison finished (posted from the evaluation thread)."""

    def __init__(self, runner, calls: int):
        super().__init__()
        self.runner = runner
        self.calls = calls


class WorkbenchScreen(Screen):
    # priority: the tree would otherwise take space (toggle) and other keys for itself
    BINDINGS = [
        Binding("space", "step", "step", priority=True),
        Binding("L", "level", "level", priority=True),
        Binding("r", "run", "run", priority=True), Binding("p", "pause", "pause", priority=True),
        Binding("x", "prune", "prune", priority=True),
        Binding("c", "critique", "critique", priority=True),
        Binding("g", "regenerate", "regenerate", priority=True),
        Binding("n", "new_prompt", "new", priority=True),
        Binding("a", "accept", "accept", priority=True),
        Binding("o", "export", "export", priority=True),
        Binding("d", "diff", "diff", priority=True),
        Binding("l", "toggle_log", "log", priority=True),
        Binding("question_mark", "help", "help", priority=True),
        Binding("q", "quit", "quit", priority=True),
        Binding("R", "retry", "retry", priority=True),
        Binding("v", "results", "results", priority=True),
        Binding("m", "mark", "mark", priority=True),
        Binding("V", "compare", "compare", priority=True),
    ]

    def __init__(self, session_id: str):
        super().__init__()
        self.session_id = session_id
        self.runner = None
        self.snap: dict | None = None
        self.tree_nodes: dict[str, object] = {}
        self.busy = False
        self.selected: str | None = None
        self.marked: str | None = None      # m: the node V compares the selected one with
        self.comparing = None               # the EvalRunner of a comparison in progress
        self._stop_compare = False
        self._preparing = False
        self._refresh_pending = False

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        yield Static(id="title")
        with Horizontal(id="main"):
            tree: Tree[str] = Tree("search", id="tree")
            tree.show_root = False
            tree.guide_depth = 3
            yield tree
            with TabbedContent(id="tabs"):
                with TabPane("Prompt", id="tab-prompt"):
                    yield VerticalScroll(Static(id="prompt"))
                with TabPane("Response", id="tab-response"):
                    # PICACO: which prompt's pools the Response tab lists
                    pools = Select([], prompt="prompt", id="pool-prompt")
                    pools.display = False
                    yield pools
                    yield VerticalScroll(Static(id="response"))
                with TabPane("Reward", id="tab-reward"):
                    yield VerticalScroll(Static(id="reward"))
                with TabPane("Critique", id="tab-critique"):
                    yield VerticalScroll(Static(id="critique"))
                with TabPane("Diff", id="tab-diff"):
                    yield VerticalScroll(Static(id="diff"))
                with TabPane("Calls", id="tab-calls"):
                    yield VerticalScroll(Static(id="calls"))
        with Vertical(id="bottom"):
            yield Static(id="status")
            compare = Static(id="compare-status")
            compare.display = False
            yield compare
            yield Sparkline([], id="spark")
            log = RichLog(id="log", max_lines=500, markup=False, wrap=True)
            log.display = False
            yield log
        yield Footer()

    def on_mount(self) -> None:
        self.open_session()

    @work(group="open", exit_on_error=False)
    async def open_session(self) -> None:
        app: PromptArborApp = self.app  # type: ignore[assignment]
        try:
            self.runner = await app.engine.run(app.open_runner(self.session_id, self._from_engine))
        except Exception as exc:
            toast(self.app, f"cannot open session {self.session_id}: {exc}", severity="error",
                  timeout=10)
            self.app.pop_screen()
            return
        await self.refresh_view()
        self.query_one(Tree).focus()

    def _from_engine(self, event: dict) -> None:
        """Called on the engine thread; post_message is thread-safe."""
        self.post_message(EngineEvent(event))

    @on(EngineEvent)
    def _engine_event(self, message: EngineEvent) -> None:
        self.handle_engine_event(message.event)

    @on(CompareProgress)
    def _compare_progress(self, message: CompareProgress) -> None:
        if self.comparing is message.runner:
            self._compare_status(message.runner, message.calls)

    def handle_engine_event(self, event: dict) -> None:
        """Log line, failure notice, and a debounced refresh of the view."""
        kind = event["kind"]
        log = self.query_one(RichLog)
        payload = event.get("payload", {})
        if kind == "call_finished":
            line = (f"call {payload.get('role')} {payload.get('purpose')} node={event.get('node')} "
                    f"{'cached' if payload.get('cached') else str(payload.get('latency')) + 's'}"
                    f" tokens {payload.get('tokens_in')}/{payload.get('tokens_out')}")
            if payload.get("error"):
                line += f" ERROR {payload['error']}"
        elif kind != "call_started":
            try:
                shown = json.dumps(payload, ensure_ascii=False, default=str)[:300]
            except (TypeError, ValueError):  # a circular or odd payload: still one log line
                shown = repr(payload)[:300]
            line = f"{event.get('actor')} {kind} {event.get('node') or ''} " + shown
        else:
            return
        log.write(safe(line))
        if kind in ("node_failed",):
            toast(self, f"node {event.get('node')} failed: {payload.get('error')}",
                  severity="warning")
        if kind in ("step_finished", "node_scored", "node_added", "node_failed", "beam",
                    "warning") and not self._refresh_pending:
            self._refresh_pending = True
            self.set_timer(0.1, self._scheduled_refresh)

    def _scheduled_refresh(self) -> None:
        self._refresh_pending = False
        self.run_worker(self.refresh_view, group="refresh", exclusive=True, exit_on_error=False)

    # ------------------------------------------------------------------ rendering

    async def refresh_view(self) -> None:
        """A new snapshot from the engine, rendered. Never raises: a session whose contents
        cannot be shown keeps the workbench up and says why."""
        if self.runner is None:
            return
        app: PromptArborApp = self.app  # type: ignore[assignment]
        try:
            self.snap = await app.engine.run(app.view_of(self.runner))
            self._prepare_pool_select()
            self._render_tree()
            self._render_status()
        except Exception as exc:
            self._render_failed("the view", exc)
            return
        self._render_detail()

    def _render_failed(self, what: str, exc: Exception) -> None:
        message = f"cannot show {what}: {type(exc).__name__}: {exc}"
        try:
            self.query_one(RichLog).write(safe(message, style="red"))
        except Exception:
            pass
        toast(self, message, severity="error", timeout=8)

    def _prepare_pool_select(self) -> None:
        """PICACO sessions: fill the prompt chooser of the Response tab once."""
        select = self.query_one("#pool-prompt", Select)
        if self.snap["family"] != "picaco" or select.display:
            return
        prompts = self.snap["session"]["method_state"]["prompts"]
        select.set_options([(safe(f"{i + 1}. {head(p, 70)}"), i) for i, p in enumerate(prompts)])
        select.value = 0
        select.display = True

    @on(Select.Changed, "#pool-prompt")
    def _pool_prompt_changed(self) -> None:
        self._render_detail()

    def _render_tree(self) -> None:
        sync_tree(self.query_one(Tree), self.snap, self.tree_nodes, self.marked)
        if self.selected is None and self.tree_nodes:
            first = next(iter(self.tree_nodes))
            self.selected = first

    def _render_status(self) -> None:
        snap = self.snap
        title, line = title_text(snap, self.busy), status_text(snap)
        self.query_one("#title", Static).update(title)
        self.query_one("#status", Static).update(line)
        spark = self.query_one(Sparkline)
        spark.data = spark_values(snap)

    def _render_detail(self) -> None:
        try:
            self._render_detail_tabs()
        except Exception as exc:  # a node whose contents cannot be shown: say so, stay up
            self._render_failed(f"node {self.selected}", exc)

    def _render_detail_tabs(self) -> None:
        if not self.snap or self.selected not in self.snap["nodes"]:
            return
        node = self.snap["nodes"][self.selected]
        self.query_one("#prompt", Static).update(prompt_text(node))

        select = self.query_one("#pool-prompt", Select)
        prompt = select.value if select.display and isinstance(select.value, int) else None
        self.query_one("#response", Static).update(response_view(self.snap, node, prompt))
        self.query_one("#reward", Static).update(reward_view(self.snap, node))
        self.query_one("#critique", Static).update(critique_text(node))
        self.query_one("#diff", Static).update(diff_text(self.snap, node))
        self.query_one("#calls", Static).update(calls_table(self.snap, node))

    @on(Tree.NodeHighlighted)
    def _highlighted(self, event: Tree.NodeHighlighted) -> None:
        if event.node.data:
            self.selected = event.node.data
            self._render_detail()

    # ------------------------------------------------------------------ actions

    def _engine_job(self, coro_factory, message=None, long: bool = False) -> None:
        """Run `coro_factory()` on the engine thread; then `message` (a text, or a function
        of the coroutine's result giving one) as a notification, and a refresh."""
        if self.runner is None:
            return
        if self.busy:
            toast(self, "the engine is busy; press p to pause", severity="warning")
            return
        self.busy = True
        if self.snap:
            try:
                self._render_status()
            except Exception:
                pass
        self.run_worker(self._job(coro_factory, message), group="engine", exit_on_error=False)

    async def _job(self, coro_factory, message) -> None:
        app: PromptArborApp = self.app  # type: ignore[assignment]
        try:
            result = await app.engine.run(coro_factory())
            if callable(message):
                message = message(result)
            if message:
                toast(self, message)
        except Exception as exc:
            toast(self, exc, severity="error", timeout=8)
        finally:
            self.busy = False
            await self.refresh_view()

    def action_step(self) -> None:
        self._engine_job(lambda: self.runner.step())

    def action_level(self) -> None:
        self._engine_job(lambda: self.runner.run(until="level"))

    def action_run(self) -> None:
        self._engine_job(lambda: self.runner.run())

    def action_pause(self) -> None:
        if self.runner is not None:
            self.runner.pause()
            toast(self, "pausing after the step in flight")
        if self.comparing is not None:
            self._stop_compare = True
            self.comparing.pause()
            toast(self, "pausing the comparison after the batch in flight")

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen())

    # ------------------------------------------------------------------ results, compare

    def action_results(self) -> None:
        """v: the Results view of the session's held-out evaluation (root vs final)."""
        if not self.snap:
            toast(self, "the session is still opening", severity="warning")
            return
        session = self.snap["session"]
        held = (session.get("method_state") or {}).get("heldout")
        if not isinstance(held, dict) or not held.get("spec"):
            why = ("its [eval] is off or it is older than the held-out evaluation"
                   if not held else "it runs when the search ends")
            toast(self, f"session {self.session_id} has no held-out evaluation yet ({why}); "
                        f"m and V compare two nodes on the held-out set", severity="warning")
            return
        self.run_worker(self._open_results(session), group="results", exclusive=True,
                        exit_on_error=False)

    async def _open_results(self, session: dict) -> None:
        from promptarbor.engine.evaluation import session_verdict

        try:  # bootstrap CIs take a moment on a big set: off the UI thread
            verdict = await asyncio.to_thread(session_verdict, session)
        except Exception as exc:
            toast(self, exc, severity="error")
            return
        self.app.push_screen(ResultsScreen(verdict, kind="session"))

    def action_mark(self) -> None:
        """m: mark / unmark the selected node; V compares the marked node with the selected."""
        node = self._node()
        if node is None:
            return
        self.marked = None if self.marked == node["id"] else node["id"]
        self._render_tree()
        if self.marked:
            toast(self, f"marked {node['id']} ({MARK}); select another node and press V to "
                        f"compare them on the held-out set")
        else:
            toast(self, f"unmarked {node['id']}")

    def action_compare(self) -> None:
        """V: evaluate the marked node (the baseline) against the selected one on the
        session's held-out set, after a confirmation with the planned calls and cost."""
        node = self._node()
        if node is None:
            return
        if self.comparing is not None:
            toast(self, "a comparison is already running (p pauses it)", severity="warning")
            return
        if not self.marked:
            toast(self, "mark a node first (m), then select another one and press V",
                  severity="warning")
            return
        if self.marked == node["id"]:
            toast(self, f"{node['id']} is the marked node; select another one to compare",
                  severity="warning")
            return
        if self.marked not in self.snap["nodes"]:
            toast(self, f"the marked node {self.marked} is gone", severity="warning")
            self.marked = None
            return
        if self._preparing:
            toast(self, "preparing the comparison…")
            return
        self._preparing = True
        toast(self, f"preparing the comparison of {self.marked} with {node['id']} (planned calls "
                    f"and cost)…", timeout=3)
        self.run_worker(self._prepare_compare(self.snap["session"], self.marked, node["id"]),
                        group="compare", exit_on_error=False)

    async def _prepare_compare(self, session: dict, baseline: str, other: str) -> None:
        app: PromptArborApp = self.app  # type: ignore[assignment]
        try:
            prepared = await app.eval_thread().run(app.prepare_compare(session, baseline, other))
        except Exception as exc:  # ValueError (no held-out set, no usable prompt), StoreError
            toast(self, exc, severity="error", timeout=8)
            return
        finally:
            self._preparing = False
        runner, est, existed = prepared
        ev = runner.evaluation
        if existed and runner.done and not ev.failed_keys():
            toast(self, f"evaluation {runner.doc['id']} of {baseline} vs {other} is already done; "
                        f"opening it")
            self.run_worker(self._run_compare(runner, confirmed=False), group="compare",
                            exit_on_error=False)
            return
        remaining = ev.plan_remaining()
        plan, priced = est["calls"], all(est["priced"].values())
        question = Text(f"Compare {baseline} (marked, the baseline) with {other}\n", style="bold")
        question.append_text(safe(
            f"on session {self.session_id}'s held-out set: judge {ev.judge}, {len(ev.items)} items "
            f"× {ev.k} sample{'s' if ev.k != 1 else ''}\n"
            f"planned calls: " + ", ".join(f"{r} {n}" for r, n in plan.items())
            + f" (total {sum(plan.values())})\n"
            + (f"still to run: " + ", ".join(f"{r} {n}" for r, n in remaining.items())
               + " (answers already paid for come from the cache)\n" if existed else "")
            + f"estimated cost: about ${est['total']:.4f}"
            + ("" if priced else " (no price known for "
               + ", ".join(r for r, ok in est["priced"].items() if not ok) + ")")
            + f"\nevaluation {runner.doc['id']}"
            + (" exists: it resumes" if existed else " (new)") + "\n\nRun it?"))

        def answer(yes: bool | None) -> None:
            if yes:
                self.run_worker(self._run_compare(runner), group="compare", exit_on_error=False)
            else:
                app.release_eval(runner)
        self.app.push_screen(ConfirmScreen(question, yes_variant="primary"), answer)

    def _compare_status(self, runner, calls: int | None = None) -> None:
        status = self.query_one("#compare-status", Static)
        status.update(compare_text(runner, calls))
        status.display = True

    async def _run_compare(self, runner, confirmed: bool = True) -> None:
        """Run the evaluation batch by batch on the evaluation thread (its own event loop),
        with its progress on the status line, then open its Results view."""
        app: PromptArborApp = self.app  # type: ignore[assignment]
        self.comparing = runner
        calls = {"n": sum(runner.gateway.totals()["calls"].values())}

        def on_event(event: dict) -> None:  # on the evaluation thread: post_message is safe
            if event.get("kind") == "call_finished":
                calls["n"] += 1
                self.post_message(CompareProgress(runner, calls["n"]))
        self._stop_compare = False
        try:
            if confirmed:
                runner.gateway.on_event = on_event
                self._compare_status(runner)
                toast(self, f"evaluation {runner.doc['id']} started")
                engine = app.eval_thread()
                reason = await engine.run(runner.run(steps=1))
                while reason == "paused" and not runner.done and not self._stop_compare:
                    self._compare_status(runner)
                    reason = await engine.run(runner.run(steps=1))
                self._compare_status(runner)
            verdict = await app.eval_thread().run(app.verdict_of(runner))
        except Exception as exc:  # StoreError, CacheUnavailable, a damaged evaluation
            toast(self, f"the comparison stopped: {exc}", severity="error", timeout=10)
            return
        finally:
            self.comparing = None
            runner.gateway.on_event = None
            self.query_one("#compare-status", Static).display = False
            app.release_eval(runner)
        if verdict["status"] == "done":
            failed = sum(p.get("errors") or 0 for p in verdict["prompts"])
            toast(self, f"evaluation {runner.doc['id']} done"
                  + (f"; {failed} samples failed (V again retries them)" if failed else ""),
                  severity="warning" if failed else "information")
        else:
            toast(self, f"evaluation {runner.doc['id']} paused; V on the same nodes resumes it")
        self.app.push_screen(ResultsScreen(verdict, kind="evaluation"))

    def _node(self) -> dict | None:
        if not self.snap or self.selected not in self.snap["nodes"]:
            toast(self, "select a node first", severity="warning")
            return None
        return self.snap["nodes"][self.selected]

    def action_prune(self) -> None:
        node = self._node()
        if node is None:
            return
        if node["status"] == "pruned":
            self._engine_job(lambda: self.runner.unprune(node["id"]), f"unpruned {node['id']}")
        else:
            self._engine_job(lambda: self.runner.prune(node["id"]), f"pruned {node['id']}")

    def action_accept(self) -> None:
        node = self._node()
        if node is not None:
            self._engine_job(lambda: self.runner.accept(node["id"]), f"accepted {node['id']}")

    def action_regenerate(self) -> None:
        node = self._node()
        if node is not None:
            self._engine_job(lambda: self.runner.regenerate(node["id"]),
                             f"regenerated a child of {node['id']}")

    def action_retry(self) -> None:
        """R: re-send the calls of the selected failed node; on a root that has not failed,
        of every failed node. The plan grows by the calls re-sent."""
        node = self._node()
        if node is None:
            return
        if node["status"] == "failed":
            target = node["id"]
        elif node["parent"] is None:
            if not any(n["status"] == "failed" for n in self.snap["nodes"].values()) \
                    and not (self.runner and self.runner.failed_samples()):
                toast(self, "no failed node to retry")
                return
            target = None
        else:
            toast(self, f"node {node['id']} has not failed (status {node['status']}); select a "
                  f"failed node (✗), or a root to retry every failed node", severity="warning")
            return

        def done(retried) -> str:
            ids = list(retried or [])
            if not ids:
                return ("the held-out evaluation's failed samples go again at the next steps "
                        "(space or r)")
            shown = ", ".join(ids[:8]) + (f" and {len(ids) - 8} more" if len(ids) > 8 else "")
            return f"retried {len(ids)} failed node{'s' if len(ids) != 1 else ''}: {shown}"
        self._engine_job(lambda: self.runner.retry_failed(target), done)

    def action_critique(self) -> None:
        node = self._node()
        if node is None:
            return

        def done(text: str | None) -> None:
            if text is not None:
                self._engine_job(lambda: self.runner.edit_critique(node["id"], text),
                                 f"critique of {node['id']} saved; g regenerates from it")
        self.app.push_screen(EditScreen(f"Critique of {node['id']}", node.get("critique") or ""),
                             done)

    def action_new_prompt(self) -> None:
        node = self._node()
        if node is None:
            return

        def done(text: str | None) -> None:
            if text and text.strip():
                self._engine_job(lambda: self.runner.add_human(node["id"], text),
                                 "your prompt was added and scored")
        self.app.push_screen(EditScreen(f"New prompt under {node['id']}", node["text"]), done)

    def action_export(self) -> None:
        node = self._node()
        if node is not None:
            self.app.export_session(self.session_id, node["id"], self.snap["session"])

    def action_diff(self) -> None:
        self.query_one(TabbedContent).active = "tab-diff"

    def action_toggle_log(self) -> None:
        log = self.query_one(RichLog)
        log.display = not log.display

    def action_quit(self) -> None:
        if self.busy or self.comparing is not None:
            def done(yes: bool | None) -> None:
                if yes:
                    if self.busy:
                        self.runner.pause()
                    if self.comparing is not None:
                        self.comparing.pause()
                    self.app.exit()
            question = ("A run is in progress. Pause it and quit? (every finished step is saved)"
                        if self.busy else
                        "A comparison is in progress. Pause it and quit? (every finished batch "
                        "is saved; V on the same nodes resumes it)")
            self.app.push_screen(ConfirmScreen(question), done)
        else:
            self.app.exit()

