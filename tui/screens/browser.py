"""The session browser (`BrowserScreen`), the app's first screen: the store's sessions and
evaluations in two tables (a file that cannot be read is a "corrupt" row with its error),
and the keys that open, create, rename, delete and export a session or open an
evaluation's results.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from ..keys import BROWSER_KEYS
from ..text import number, one_line, safe, strip_escapes, toast
from .modals import ConfirmScreen, EditScreen, HelpScreen
from .wizard import NewSessionScreen
from .workbench import WorkbenchScreen

if TYPE_CHECKING:
    from ..app import PromptArborApp


class BrowserScreen(Screen):
    BINDINGS = [Binding("enter", "open", "open"), Binding("n", "new", "new"),
                Binding("r", "rename", "rename"), Binding("d", "delete", "delete"),
                Binding("o", "export", "export"), Binding("e", "switch", "sessions/evaluations"),
                Binding("v", "results", "results"),
                Binding("q", "app.quit", "quit"),
                Binding("question_mark", "help", "help")]

    def compose(self) -> ComposeResult:
        yield Static(Text("PromptArbor · sessions", style="bold"), id="title")
        yield DataTable(id="sessions", cursor_type="row", zebra_stripes=True)
        yield Static(Text("evaluations (e: move here · enter: results)", style="bold"),
                     id="evals-title")
        yield DataTable(id="evals", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, dict] = {}  # row key (session id) -> the store's summary
        self.eval_rows: dict[str, dict] = {}  # row key (evaluation id) -> its summary

    def on_mount(self) -> None:
        table = self.query_one("#sessions", DataTable)
        table.add_columns("id", "name", "method", "status", "steps", "best", "cost", "last change")
        evals = self.query_one("#evals", DataTable)
        evals.add_columns("id", "name", "judge", "n × k", "prompts", "status", "cost",
                          "last change")
        self.reload()
        table.focus()

    def on_screen_resume(self) -> None:
        if self.is_mounted:
            self.reload()

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen(BROWSER_KEYS, "Browser keys"))

    @staticmethod
    def _when(updated) -> str:
        try:
            return time.strftime("%Y-%m-%d %H:%M", time.localtime(updated))
        except (TypeError, ValueError, OverflowError, OSError):
            return "?"

    def _cells(self, row: dict) -> tuple:
        """The table cells of one row, all plain Text (a str cell would be read as markup)."""
        if row.get("status") == "corrupt":
            return (safe(row.get("id")), safe(one_line(row.get("error"), 70), style="red"),
                    safe("?"), safe("corrupt", style="red"), safe(""), safe(""), safe(""),
                    safe(self._when(row.get("updated"))))
        return (safe(row["id"]), safe(one_line(row.get("name"), 40)), safe(row["method"]),
                safe(row["status"]), safe(number(row["steps"], "d")),
                safe(number(row.get("best_reward"))), safe("$" + number(row.get("cost", 0), ".4f")),
                safe(self._when(row.get("updated"))))

    def _eval_cells(self, row: dict) -> tuple:
        """An evaluation's cells (plain Text); a file that cannot be read shows its error."""
        if row.get("status") == "corrupt":
            return (safe(row.get("id")), safe(one_line(row.get("error"), 70), style="red"),
                    safe("?"), safe(""), safe(""), safe("corrupt", style="red"), safe(""),
                    safe(self._when(row.get("updated"))))
        prompts = row.get("prompts")
        prompts = " vs ".join(one_line(p, 20) for p in prompts) if isinstance(prompts, list) \
            else one_line(prompts, 40)
        return (safe(row["id"]), safe(one_line(row.get("name"), 40)), safe(row["judge"]),
                safe(f"{number(row.get('n'), 'd')} × {number(row.get('samples'), 'd')}"),
                safe(one_line(prompts, 50)), safe(row.get("status") or "?"),
                safe("$" + number(row.get("cost", 0), ".4f")),
                safe(self._when(row.get("updated"))))

    def reload(self) -> None:
        """List the store's sessions and evaluations; a file that cannot be read is a
        "corrupt" row with its error (nothing is moved or rewritten), and no row can stop the
        others from showing."""
        table = self.query_one("#sessions", DataTable)
        table.clear()
        self.rows = {}
        try:
            rows = self.app.store.list()
        except Exception as exc:  # the store folder itself cannot be read
            toast(self, f"cannot list the sessions: {exc}", severity="error", timeout=10)
            rows = []
        for row in rows:
            if not isinstance(row, dict):
                continue
            key = strip_escapes(str(row.get("id", "")))
            if not key or key in self.rows:
                continue
            try:
                cells = self._cells(row)
            except Exception as exc:  # a summary of an unexpected shape
                row = {"id": key, "status": "corrupt", "updated": row.get("updated"),
                       "error": f"unreadable summary ({type(exc).__name__}: {exc})"}
                cells = self._cells(row)
            self.rows[key] = row
            table.add_row(*cells, key=key)
        self.reload_evals()

    def reload_evals(self) -> None:
        table = self.query_one("#evals", DataTable)
        table.clear()
        self.eval_rows = {}
        try:
            rows = self.app.evals.list()
        except Exception as exc:
            toast(self, f"cannot list the evaluations: {exc}", severity="error", timeout=10)
            return
        for row in rows:
            if not isinstance(row, dict):
                continue
            key = strip_escapes(str(row.get("id", "")))
            if not key or key in self.eval_rows:
                continue
            try:
                cells = self._eval_cells(row)
            except Exception as exc:
                row = {"id": key, "status": "corrupt", "updated": row.get("updated"),
                       "error": f"unreadable summary ({type(exc).__name__}: {exc})"}
                cells = self._eval_cells(row)
            self.eval_rows[key] = row
            table.add_row(*cells, key=key)

    def action_switch(self) -> None:
        """e: move between the sessions and the evaluations."""
        sessions, evals = self.query_one("#sessions", DataTable), self.query_one("#evals", DataTable)
        (sessions if evals.has_focus else evals).focus()

    def action_results(self) -> None:
        """v: the held-out verdict of the selected session (read only; no call is made)."""
        if self._on_evals():
            self.open_eval()
            return
        session_id = self._selected()
        if session_id and not self._corrupt(session_id, "open"):
            self.app.open_session_results(session_id)

    def _on_evals(self) -> bool:
        return self.query_one("#evals", DataTable).has_focus

    def _selected_eval(self) -> str | None:
        table = self.query_one("#evals", DataTable)
        if table.row_count == 0:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    def open_eval(self) -> None:
        eval_id = self._selected_eval()
        if not eval_id:
            return
        row = self.eval_rows.get(eval_id, {})
        if row.get("status") == "corrupt":
            toast(self, f"cannot open evaluation {eval_id}: {one_line(row.get('error'), 300)}",
                  severity="error", timeout=10)
            return
        self.app.open_eval_results(eval_id)

    def _selected(self) -> str | None:
        if self._on_evals():
            toast(self, "this key works on a session (e goes back to the sessions); enter opens "
                  "an evaluation's results", severity="warning")
            return None
        table = self.query_one("#sessions", DataTable)
        if table.row_count == 0:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    def _corrupt(self, session_id: str, doing: str) -> bool:
        """True (and the error shown) when the row is a file that cannot be read."""
        row = self.rows.get(session_id, {})
        if row.get("status") != "corrupt":
            return False
        toast(self, f"cannot {doing} {session_id}: {one_line(row.get('error'), 300)}",
              severity="error", timeout=10)
        return True

    def action_open(self) -> None:
        if self._on_evals():
            self.open_eval()
            return
        session_id = self._selected()
        if session_id and not self._corrupt(session_id, "open"):
            self.app.push_screen(WorkbenchScreen(session_id))

    @on(DataTable.RowSelected, "#sessions")
    def _row_selected(self) -> None:
        self.action_open()

    @on(DataTable.RowSelected, "#evals")
    def _eval_selected(self) -> None:
        self.open_eval()

    def action_delete(self) -> None:
        session_id = self._selected()
        if not session_id:
            return

        def done(yes: bool | None) -> None:
            if yes:
                try:
                    self.app.store.delete(session_id)
                    toast(self, f"deleted session {session_id}")
                except Exception as exc:  # locked by another process, etc.
                    toast(self, exc, severity="error")
                self.reload()
        self.app.push_screen(ConfirmScreen(f"Delete session {session_id}? This cannot be undone."), done)

    def action_export(self) -> None:
        session_id = self._selected()
        if session_id and not self._corrupt(session_id, "export"):
            self.app.export_session(session_id, None)

    def action_new(self) -> None:
        def done(spec: dict | None) -> None:
            if spec:
                self.create(spec)
        self.app.push_screen(NewSessionScreen(), done)

    @work(group="create", exit_on_error=False)
    async def create(self, spec: dict) -> None:
        app: PromptArborApp = self.app  # type: ignore[assignment]
        try:
            session_id = await app.engine.run(app.create_session(spec))
        except Exception as exc:
            toast(self, exc, severity="error")
            return
        self.reload()
        app.push_screen(WorkbenchScreen(session_id))

    def action_rename(self) -> None:
        session_id = self._selected()
        if not session_id or self._corrupt(session_id, "rename"):
            return

        def done(name: str | None) -> None:
            if name is None:
                return
            try:
                self.app.rename_session(session_id, one_line(name, 200))
                toast(self, f"renamed {session_id}")
            except Exception as exc:
                toast(self, exc, severity="error")
            self.reload()
        self.app.push_screen(EditScreen(f"Name of session {session_id}", ""), done)
