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
from textual.widgets import (Footer, Input, RichLog, Select, Static, TabbedContent, TabPane,
                             Tree)

from ..keys import KEYS
from ..text import head, safe, toast
from ..widgets.node_detail import (TABS, calls_table, critique_text, detail_header, diff_text,
                                   full_view, prompt_text, response_view, reward_view)
from ..widgets.search_tree import MARK, FilterInput, SearchTree, sync_tree
from ..widgets.status_bar import CallRate, compare_text, status_text, title_text
from .candidates import CandidatesScreen
from .modals import ConfirmScreen, EditScreen, HelpScreen
from .results import FullTextScreen, ResultsScreen

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
        Binding("x", "prune", "prune", show=False, priority=True),
        Binding("c", "critique", "critique", show=False, priority=True),
        Binding("g", "regenerate", "regenerate", show=False, priority=True),
        Binding("n", "new_prompt", "new", show=False, priority=True),
        Binding("a", "accept", "accept", priority=True),
        Binding("o", "export", "export", show=False, priority=True),
        Binding("d", "diff", "diff", show=False, priority=True),
        Binding("l", "toggle_log", "log", show=False, priority=True),
        Binding("question_mark", "help", "help", priority=True),
        Binding("escape", "back", "back", show=False),  # not priority: a focused field's escape comes first
        Binding("q", "back", "back", priority=True), Binding("q", "quit", "quit", priority=True),
        Binding("R", "retry", "retry", show=False, priority=True),
        Binding("v", "results", "results", show=False, priority=True),
        Binding("m", "mark", "mark", show=False, priority=True),
        Binding("V", "compare", "compare", show=False, priority=True),
        Binding("C", "candidates", "candidates", priority=True),
        Binding("slash", "filter", "filter", show=False, priority=True),
        Binding("1", "tab(0)", "Prompt tab", show=False, priority=True),
        Binding("2", "tab(1)", "Response tab", show=False, priority=True),
        Binding("3", "tab(2)", "Reward tab", show=False, priority=True),
        Binding("4", "tab(3)", "Critique tab", show=False, priority=True),
        Binding("5", "tab(4)", "Diff tab", show=False, priority=True),
        Binding("6", "tab(5)", "Calls tab", show=False, priority=True),
        Binding("z", "full_text", "full", priority=True),
    ]

    HISTORY = 200  # stored events shown in the log when a session opens

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
        self._history_shown = False         # the stored events written to the log once
        self._leaving = False               # escape / q: back to the browser once idle
        self.rate = CallRate()              # calls per second while the engine works: the ETA
        self._live = 0                      # calls answered since the snapshot (progress bar)
        self._status_pending = False

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        yield Static(id="title")
        with Horizontal(id="main"):
            with Vertical(id="tree-pane"):
                tree_filter = FilterInput(placeholder="filter: words, an id, or best final "
                                          "accepted beam pruned failed open", id="tree-filter")
                tree_filter.display = False
                yield tree_filter
                tree: Tree[str] = SearchTree("search", id="tree")
                tree.show_root = False
                tree.guide_depth = 3
                yield tree
            with Vertical(id="detail"):
                yield Static(id="detail-head")
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
            log = RichLog(id="log", max_lines=500, markup=False, wrap=True)
            log.display = False
            yield log
        yield Footer(compact=True)  # the keys used most (show=False: the others); ? lists all

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
            self.app.back_to_browser(self)
            return
        await self.refresh_view()
        self.query_one(Tree).focus()
        # the cursor on the selected node, so the first Down moves from it (not onto it)
        self.call_after_refresh(self._cursor_on_selected)

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

    @staticmethod
    def log_line(event: dict) -> str | None:
        """An event as one log line (None for the ones not logged)."""
        kind = event.get("kind")
        payload = event.get("payload")
        payload = payload if isinstance(payload, dict) else {}
        if kind == "call_finished":
            line = (f"call {payload.get('role')} {payload.get('purpose')} node={event.get('node')} "
                    f"{'cached' if payload.get('cached') else str(payload.get('latency')) + 's'}"
                    f" tokens {payload.get('tokens_in')}/{payload.get('tokens_out')}")
            if payload.get("error"):
                line += f" ERROR {payload['error']}"
            return line
        if kind == "call_started":
            return None
        try:
            shown = json.dumps(payload, ensure_ascii=False, default=str)[:300]
        except (TypeError, ValueError):  # a circular or odd payload: still one log line
            shown = repr(payload)[:300]
        return f"{event.get('actor')} {kind} {event.get('node') or ''} " + shown

    def _show_history(self) -> None:
        """The session's stored events (its last HISTORY) in the log, once, when it opens:
        a reopened session's log is not empty."""
        if self._history_shown or not self.snap:
            return
        self._history_shown = True
        events = (self.snap.get("session") or {}).get("events") or []
        lines = [line for event in events[-self.HISTORY:] if isinstance(event, dict)
                 for line in [self.log_line(event)] if line]
        if lines:
            log = self.query_one(RichLog)
            log.write(safe(f"— {len(lines)} earlier events of this session —", style="dim"))
            for line in lines:
                log.write(safe(line))

    def handle_engine_event(self, event: dict) -> None:
        """Log line, failure notice, and a debounced refresh of the view."""
        kind = event["kind"]
        log = self.query_one(RichLog)
        payload = event.get("payload", {})
        if kind == "call_finished":
            self.rate.tick()  # the ETA's measured rate; the progress bar between refreshes
            self._live += 1
            if not self._status_pending:
                self._status_pending = True
                self.set_timer(0.25, self._live_status)
        line = self.log_line(event)
        if line is None:
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
            self._show_history()
            self._live = 0
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
        """PICACO sessions: fill the prompt chooser of the Response tab once (its baselines
        and OPRO have no pools)."""
        select = self.query_one("#pool-prompt", Select)
        if self.snap["method"] != "picaco" or select.display:
            return
        prompts = self.snap["session"]["method_state"]["prompts"]
        select.set_options([(safe(f"{i + 1}. {head(p, 70)}"), i) for i, p in enumerate(prompts)])
        select.value = 0
        select.display = True

    @on(Select.Changed, "#pool-prompt")
    def _pool_prompt_changed(self) -> None:
        self._render_detail()

    def _render_tree(self) -> None:
        tree_filter = self.query_one("#tree-filter", Input)
        sync_tree(self.query_one(Tree), self.snap, self.tree_nodes, self.marked,
                  tree_filter.value if tree_filter.display else "")
        if self.selected is None and self.tree_nodes:
            first = next(iter(self.tree_nodes))
            self.selected = first

    def _render_status(self) -> None:
        """The title and the status lines, fitted to the screen's width (two lines when
        narrow); the toasts are then placed above them."""
        snap, width = self.snap, self.size.width - 2
        summary = snap["summary"]
        done = sum(v for v in summary["calls"].values() if isinstance(v, int)) + self._live
        planned = sum(v for v in summary["planned_calls"].values() if isinstance(v, int))
        self.rate.observe(self.busy)
        eta = self.rate.eta(planned - done)
        self.query_one("#title", Static).update(title_text(snap, self.busy, width))
        self.query_one("#status", Static).update(status_text(snap, width, self.busy, eta,
                                                             self._live))
        self.call_after_refresh(self._place_toasts)

    def _live_status(self) -> None:
        self._status_pending = False
        if self.snap:
            self._render_status()

    def _place_toasts(self) -> None:
        """Notifications stack above the status lines (and the log), never over them."""
        try:
            rack = self.query_one("#textual-toastrack")
        except Exception:
            return
        above = self.query_one("#bottom").outer_size.height + self.query_one(Footer).outer_size.height
        rack.styles.margin = (0, 0, above, 0)

    def on_resize(self) -> None:
        # narrow: the footer keeps its room for the keys (ctrl+p is listed by ?)
        self.query_one(Footer).show_command_palette = self.size.width >= 100
        if self.snap:
            self._render_status()

    def _render_detail(self) -> None:
        try:
            self._render_detail_tabs()
        except Exception as exc:  # a node whose contents cannot be shown: say so, stay up
            self._render_failed(f"node {self.selected}", exc)

    def _render_detail_tabs(self) -> None:
        if not self.snap or self.selected not in self.snap["nodes"]:
            return
        node = self.snap["nodes"][self.selected]
        self.query_one("#detail-head", Static).update(detail_header(self.snap, node))
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

    def _finished(self) -> bool:
        """A finished search has nothing to step: say so (R retries failed nodes)."""
        if self.snap and self.snap["summary"].get("status") == "done" and not self.busy:
            failed = self.snap["summary"].get("failed_nodes") or 0
            toast(self, "search finished — nothing to step"
                  + (f"; R on the root retries its {failed} failed nodes" if failed else ""))
            return True
        return False

    def action_step(self) -> None:
        if not self._finished():
            self._engine_job(lambda: self.runner.step())

    def action_level(self) -> None:
        if not self._finished():
            self._engine_job(lambda: self.runner.run(until="level"))

    def action_run(self) -> None:
        if not self._finished():
            self._engine_job(lambda: self.runner.run())

    def action_tab(self, index: int) -> None:
        """1-6: the detail's tabs."""
        self.query_one(TabbedContent).active = TABS[index]

    def action_full_text(self) -> None:
        """z: the selected node's active tab with every text whole, scrollable."""
        node = self._node()
        if node is None:
            return
        select = self.query_one("#pool-prompt", Select)
        prompt = select.value if select.display and isinstance(select.value, int) else None
        try:
            title, body = full_view(self.snap, node, self.query_one(TabbedContent).active, prompt)
        except Exception as exc:
            self._render_failed(f"node {node['id']} in full", exc)
            return
        self.app.push_screen(FullTextScreen(title, body))

    def action_pause(self) -> None:
        if self.runner is not None:
            self.runner.pause()
            toast(self, "pausing after the step in flight")
        if self.comparing is not None:
            self._stop_compare = True
            self.comparing.pause()
            toast(self, "pausing the comparison after the batch in flight")

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen(KEYS, "Workbench keys"))

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

    # ------------------------------------------------------------------ candidates, filter

    def action_candidates(self) -> None:
        """C: every scored node ranked by reward; enter there shows the node here."""
        if not self.snap:
            toast(self, "the session is still opening", severity="warning")
            return
        self.app.push_screen(CandidatesScreen(self.snap), self.reveal_node)

    def reveal_node(self, node_id: str | None) -> None:
        """Show `node_id` in the tree (its path opened, the cursor on it) and its detail;
        a filter that hides it is cleared."""
        if not node_id or not self.snap or node_id not in self.snap["nodes"]:
            return
        if node_id not in self.tree_nodes:
            tree_filter = self.query_one("#tree-filter", Input)
            tree_filter.value, tree_filter.display = "", False
            self._render_tree()
        tree = self.query_one(SearchTree)
        tree.reveal(node_id)
        tree.focus()
        self.selected = node_id
        self._render_detail()

    def action_filter(self) -> None:
        """/: filter the tree by words, an id or a state (escape clears the filter)."""
        tree_filter = self.query_one("#tree-filter", Input)
        tree_filter.display = True
        tree_filter.focus()

    @on(Input.Changed, "#tree-filter")
    def _filter_changed(self) -> None:
        if not self.snap:
            return
        self._render_tree()
        if self.selected in self.tree_nodes:
            self.query_one(SearchTree).reveal(self.selected)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """While the `/` filter has the focus, keys are typed into it, not run here."""
        if isinstance(self.focused, FilterInput) and any(
                b.action == action for b in self.BINDINGS if isinstance(b, Binding)):
            return False
        if action in ("back", "quit"):  # q: back when opened from the browser, else quit
            return self.from_browser() == (action == "back")
        return True

    def action_diff(self) -> None:
        self.query_one(TabbedContent).active = "tab-diff"

    def action_toggle_log(self) -> None:
        log = self.query_one(RichLog)
        log.display = not log.display
        self.call_after_refresh(self._place_toasts)

    # ------------------------------------------------------------------ navigation

    def from_browser(self) -> bool:
        """Opened from the session browser (it lies below): escape and q go back to it."""
        from .browser import BrowserScreen

        stack = self.app.screen_stack
        return self in stack and any(isinstance(s, BrowserScreen)
                                     for s in stack[:stack.index(self)])

    def in_progress(self) -> str | None:
        """"run" while engine work is in flight, "comparison" while one runs, else None."""
        if self.busy:
            return "run"
        return "comparison" if self.comparing is not None else None

    def pause_all(self) -> None:
        """Pause the run and the comparison after the step / batch in flight."""
        if self.runner is not None and self.busy:
            self.runner.pause()
        if self.comparing is not None:
            self._stop_compare = True
            self.comparing.pause()

    def action_quit(self) -> None:
        """q (opened directly on one session): quit; the app asks first while a run or a
        comparison is in progress."""
        self.app.action_quit()

    def action_back(self) -> None:
        """escape / q (opened from the browser): back to it, the session given back (its
        lock released, so another process may open it). While a run or a comparison is in
        progress, ask first, pause it, and go back when the step in flight has ended."""
        if self._leaving or not self.from_browser():
            return
        if self.runner is None:
            toast(self, "the session is still opening", severity="warning")
            return
        if self._preparing:
            toast(self, "preparing a comparison; go back once it asks", severity="warning")
            return
        what = self.in_progress()
        if what is None:
            self._leave()
            return

        def done(yes: bool | None) -> None:
            if not yes:
                return
            self.pause_all()
            self._leaving = True
            toast(self, "pausing; back to the browser when the step in flight has ended")
            self._leave_timer = self.set_interval(0.1, self._leave_when_idle)
        self.app.push_screen(ConfirmScreen(
            f"A {what} is in progress. Pause it and go back to the browser? (every finished "
            f"{'step' if what == 'run' else 'batch'} is saved)", yes_variant="primary"), done)

    def _leave_when_idle(self) -> None:
        # a comparison's Results view may open on top first: back once it is closed
        if self.in_progress() is None and self.app.screen is self:
            self._leave_timer.stop()
            self._leave()

    def _leave(self) -> None:
        self._leaving = True
        runner, self.runner = self.runner, None
        if runner is not None:
            self.app.release_runner(runner)
        self.app.back_to_browser(self)

    def _cursor_on_selected(self) -> None:
        tree = self.query_one(Tree)
        node = self.tree_nodes.get(self.selected)
        if tree.cursor_line < 0 and node is not None and tree.last_line >= 0:  # lines built
            tree.move_cursor(node)

