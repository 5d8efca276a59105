"""The Textual workbench's app (`PromptArborApp`): its screens (the session browser first,
or a session's workbench), the themes and the saved theme setting, the command palette's
hookup, and the engine side every screen calls: opening a session's runner on the
`EngineThread`, the workbench's snapshots, creating and renaming sessions, the comparison
evaluations (their own thread), the Results views and exports; navigation between the
screens (a workbench opened from the browser goes back to it and gives its session back) and
quitting (ctrl+q anywhere; asks first while a run or a comparison is in progress).

Engine work runs on `EngineThread` (its own event loop); the screens only render snapshots
and send the person's commands. Model, provider, data-file and session text is always shown
through `tui.text.safe` (plain Text, escapes stripped), never as markup; notifications go
through `tui.text.toast` (markup off, escapes stripped). The screens are in `tui.screens`,
the widgets and drawings in `tui.widgets`, the palette's commands in `tui.commands`.
"""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

from textual.app import App
from textual.binding import Binding
from textual.screen import Screen

from promptarbor.themes import DEFAULT_THEME, THEMES

from promptarbor.engine.config import family

from .commands import screen_commands
from .engine_thread import EngineThread
from .screens.browser import BrowserScreen
from .screens.modals import ConfirmScreen, HelpScreen
from .screens.results import ResultsScreen
from .screens.workbench import WorkbenchScreen
from .settings import settings_path
from .text import one_line, toast


class PromptArborApp(App):
    CSS_PATH = "app.tcss"
    TITLE = "PromptArbor"
    SCREENS = {"help": HelpScreen}
    BINDINGS = [Binding("ctrl+c", "quit", "quit", show=False, priority=True),
                Binding("ctrl+q", "quit", "quit", show=False, priority=True)]

    def __init__(self, store_dir: str | Path | None = None, session_id: str | None = None):
        super().__init__()
        from promptarbor.sessions.store import SessionStore

        from promptarbor.sessions.evals import EvalStore

        self.store = SessionStore(store_dir)
        self.evals = EvalStore(self.store)
        self.start_session = session_id
        self.engine = EngineThread()
        self._eval_thread: EngineThread | None = None  # evaluations: their own loop, on demand
        self._eval_runners: list = []
        self._runners: list = []
        self._asking_quit = False
        for theme in THEMES:
            self.register_theme(theme)
        self.theme = self._saved_theme()

    def _saved_theme(self) -> str:
        try:
            name = json.loads(settings_path(self.store.root).read_text()).get("theme")
        except (OSError, ValueError):
            name = None
        return name if name in self.available_themes else DEFAULT_THEME

    def watch_theme(self, theme: str) -> None:
        try:
            path = settings_path(self.store.root)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"theme": theme}))
        except OSError:
            pass

    def get_system_commands(self, screen: Screen):
        yield from super().get_system_commands(screen)
        # the help of the screen the palette was opened on (not of the palette itself)
        yield from screen_commands(screen, lambda: self._show_help(screen))

    def _show_help(self, screen: Screen | None = None) -> None:
        """The key table of `screen` (by default the current one): its own `action_help`,
        else the keys its bindings describe; the app-wide keys come below either way."""
        screen = screen or self.screen
        show = getattr(screen, "action_help", None)
        if callable(show):
            show()
            return
        keys = []
        for binding in getattr(screen, "BINDINGS", []):
            if isinstance(binding, Binding) and binding.description:
                keys.append((binding.key_display or binding.key.replace(",", " / "),
                             binding.description))
        name = type(screen).__name__.removesuffix("Screen") or "screen"
        self.push_screen(HelpScreen(keys, f"{name} keys"))

    def on_mount(self) -> None:
        if self.start_session:  # `promptarbor tui ID`: the workbench alone; q quits
            self.push_screen(WorkbenchScreen(self.start_session))
        else:
            self.push_screen(BrowserScreen())

    def on_app_focus(self) -> None:
        """The terminal got the focus back: the browser shows the store as it is now."""
        if isinstance(self.screen, BrowserScreen):
            self.screen.refresh_from_store()

    # ------------------------------------------------------------------ navigation

    def action_quit(self) -> None:
        """ctrl+q anywhere (and q where it quits): leave the app. While a run or a comparison
        is in progress, ask first; pressed again while asking, quit at once. Every finished
        step is saved either way."""
        working = [s for s in self.screen_stack
                   if isinstance(s, WorkbenchScreen) and s.in_progress()]
        if not working or self._asking_quit:
            for screen in working:
                screen.pause_all()
            self.exit()
            return
        what = working[-1].in_progress()
        question = ("A run is in progress. Pause it and quit? (every finished step is saved)"
                    if what == "run" else
                    "A comparison is in progress. Pause it and quit? (every finished batch is "
                    "saved; V on the same nodes resumes it)")

        def done(yes: bool | None) -> None:
            self._asking_quit = False
            if yes:
                for screen in working:
                    screen.pause_all()
                self.exit()
        self._asking_quit = True
        self.push_screen(ConfirmScreen(question), done)

    def back_to_browser(self, screen: Screen) -> None:
        """Close `screen` (the current one) and show the browser: the one below it, or a
        new one when the screen was opened directly (`promptarbor tui ID`)."""
        stack = self.screen_stack
        below = stack[:stack.index(screen)] if screen in stack else []
        if any(isinstance(s, BrowserScreen) for s in below):
            if self.screen is screen:
                self.pop_screen()
        elif self.screen is screen:
            self.switch_screen(BrowserScreen())
        else:
            self.push_screen(BrowserScreen())

    def release_runner(self, runner) -> None:
        """A workbench closed without quitting: its runner paused, its cache closed and its
        session's lock given back, on the engine thread after the work already sent there
        (so opening the session again, sent later, finds it free)."""
        if runner in self._runners:
            self._runners.remove(runner)
        session_id = runner.session["id"]

        async def release() -> None:
            for close in (runner.pause, runner.gateway.close,
                          lambda: self.store.unlock(session_id)):
                try:
                    close()
                except Exception:
                    pass
        asyncio.run_coroutine_threadsafe(release(), self.engine.loop)

    # ------------------------------------------------------------------ engine side

    async def open_runner(self, session_id: str, on_event):
        """(engine thread) lock and load a session, build its runner. A file that cannot be
        read is reported and left where it is (opening it is no reason to move it); the lock
        is given back when the session cannot be opened."""
        from promptarbor.engine.runner import Runner

        took = self.store.lock(session_id)
        try:
            session = self.store.load(session_id, move_aside=False)
            runner = Runner(session, store=self.store, cache_dir=self.store.cache_dir,
                            on_event=on_event)
        except BaseException:
            if took:
                try:
                    self.store.unlock(session_id)
                except Exception:
                    pass
            raise
        self._runners.append(runner)
        return runner

    async def view_of(self, runner) -> dict:
        """(engine thread) a consistent snapshot of what the workbench shows."""
        session = runner.snapshot()
        method = runner.method
        nodes = session["tree"]["nodes"]
        best = method.best_node(runner.ctx)
        view = method.view(runner.ctx)
        best_path = [n["id"] for n in runner.tree.path(best)] if best else []
        calls: dict[str, list] = {}
        for record in session["call_log"]:
            if record.get("node"):
                calls.setdefault(record["node"], []).append(record)
        return {
            "id": session["id"], "name": session.get("name", ""), "method": session["method"],
            "models": {r: m["model"] for r, m in session["config"]["models"].items()},
            "nodes": nodes, "summary": runner.summary(), "usage": session["gateway"]["usage"],
            "family": family(session["method"]), "stats": view.get("stats", {}),
            "next": method.describe_next(), "beam": view["beam"], "best": best,
            "best_path": best_path, "best_per_level": view["per_level"], "calls": calls,
            "session": session,
        }

    async def create_session(self, spec: dict) -> str:
        """(engine thread) a new session from the wizard's config; not run yet."""
        from promptarbor.engine.runner import Runner

        runner = Runner.create(spec["config"], spec["inputs"], store=self.store,
                               cache_dir=self.store.cache_dir)
        session_id = runner.session["id"]
        runner.gateway.close()
        self.store.unlock(session_id)  # the workbench takes the lock when it opens it
        return session_id

    def rename_session(self, session_id: str, name: str) -> None:
        if not self.store.lock(session_id):
            raise RuntimeError(f"session {session_id} is open in the workbench; rename it there")
        try:
            session = self.store.load(session_id, move_aside=False)
            session["name"] = name
            self.store.save(session)
        finally:
            self.store.unlock(session_id)

    # ------------------------------------------------------------------ evaluations

    def eval_thread(self) -> EngineThread:
        """The thread evaluations run on (its own event loop), started on first use."""
        if self._eval_thread is None:
            self._eval_thread = EngineThread()
        return self._eval_thread

    async def prepare_compare(self, session: dict, baseline: str, other: str):
        """(evaluation thread) the runner of `baseline` vs `other` on the session's held-out
        set: the stored evaluation with that spec if there is one (it resumes from the
        cache), else a new one; with its cost estimate. (runner, estimate, existed)."""
        from promptarbor.engine.evaluation import EvalRunner, compare_spec, estimate_cost, spec_id

        spec, models, settings = compare_spec(session, baseline, other)
        eval_id = spec_id(spec)
        self.evals.lock(eval_id)  # SessionLocked: another process is running it
        try:
            existed = self.evals.exists(eval_id)
            if existed:
                runner = EvalRunner(self.evals.load(eval_id), store=self.evals,
                                    cache_dir=self.store.cache_dir)
            else:
                name = f"{session['id']} {one_line(session.get('name'), 40)}".strip()
                runner = EvalRunner.create(spec, models, settings,
                                           name=f"{name}: {baseline} vs {other}",
                                           store=self.evals, cache_dir=self.store.cache_dir)
            self._eval_runners.append(runner)
            estimate = estimate_cost(runner.evaluation, runner.doc["models"])
        except BaseException:
            self._unlock_eval(eval_id)
            raise
        return runner, estimate, existed

    async def verdict_of(self, runner) -> dict:
        """(evaluation thread) the full verdict of an evaluation runner."""
        return runner.verdict()

    def _unlock_eval(self, eval_id: str) -> None:
        unlock = getattr(self.evals, "unlock", None)
        if unlock is not None:
            try:
                unlock(eval_id)
            except Exception:
                pass
            return
        lock = self.evals._locks.pop(eval_id, None)  # EvalStore has no unlock (yet)
        if lock is not None:
            try:
                lock.release()
            except OSError:
                pass

    def release_eval(self, runner) -> None:
        """An evaluation runner is finished with: its cache closed, its lock given back."""
        try:
            runner.pause()
            runner.gateway.close()
        except Exception:
            pass
        if runner in self._eval_runners:
            self._eval_runners.remove(runner)
        self._unlock_eval(runner.doc["id"])

    def open_session_results(self, session_id: str) -> None:
        """The Results view of a stored session's held-out evaluation (read only)."""
        def verdict() -> dict:
            from promptarbor.engine.evaluation import session_verdict

            return session_verdict(self.store.load(session_id, move_aside=False))

        async def open_it() -> None:
            try:
                result = await asyncio.to_thread(verdict)
            except Exception as exc:  # not run yet (ValueError), unreadable (StoreError)
                toast(self, exc, severity="warning" if isinstance(exc, ValueError) else "error",
                      timeout=8)
                return
            self.push_screen(ResultsScreen(result, kind="session"))
        self.run_worker(open_it(), group="results", exclusive=True, exit_on_error=False)

    def open_eval_results(self, eval_id: str) -> None:
        """The Results view of a stored evaluation (its verdict; no call is made)."""
        self.run_worker(self._open_eval_results(eval_id), group="results", exclusive=True,
                        exit_on_error=False)

    async def _open_eval_results(self, eval_id: str) -> None:
        def verdict() -> dict:
            from promptarbor.engine.evaluation import EvalRunner

            runner = EvalRunner(self.evals.load(eval_id))  # no cache: nothing is sent
            try:
                return runner.verdict()
            finally:
                runner.gateway.close()
        try:
            result = await asyncio.to_thread(verdict)
        except Exception as exc:  # StoreError (corrupt, missing), a damaged document
            toast(self, f"cannot open evaluation {eval_id}: {exc}", severity="error", timeout=10)
            return
        self.push_screen(ResultsScreen(result, kind="evaluation"))

    def export_session(self, session_id: str, node_id: str | None, session: dict | None = None):
        from promptarbor.sessions.export import export, file_name

        try:
            # read-only: a corrupt file is reported, never moved aside
            session = session or self.store.load(session_id, move_aside=False)
            text = export(session, node_id, "md")
            # named after the node actually exported (accepted, final or best so far)
            target = Path.cwd() / file_name(session, node_id, "md")
            target.write_text(text, encoding="utf-8")
            toast(self, f"exported to {target}")
        except Exception as exc:
            toast(self, exc.args[0] if isinstance(exc, KeyError) and exc.args else exc,
                  severity="error")

    def on_unmount(self) -> None:
        for runner in self._runners:
            try:
                runner.pause()
                runner.gateway.close()
            except Exception:
                pass
        for runner in list(self._eval_runners):
            try:
                runner.pause()
            except Exception:
                pass
        if self._eval_thread is not None:
            self._eval_thread.stop()
        for runner in list(self._eval_runners):
            self.release_eval(runner)
        self.evals.close()
        self.store.close()
        self.engine.stop()
