"""The session browser (`BrowserScreen`), the app's first screen: the store's sessions and
evaluations in two tables (a file that cannot be read is a "corrupt" row with its error),
and the keys that open, create, rename, delete and export a session or open an
evaluation's results.

The tables follow the store: read again every `REFRESH_SECONDS` while the browser is shown
(off the UI thread, and only when a file changed), when it comes back on screen and when
the terminal gets the focus back; the cursor stays on its session. The columns fit the
screen's width: the name (and an evaluation's prompts) is cut with "…" first, then the date
is shortened, then dropped, so the status stays visible at 80 columns. The best reward is
shown on its method's own scale (`reward_text`).
"""
from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING

from rich.cells import cell_len
from rich.text import Text
from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from promptarbor.engine.config import DRPO_METHODS, VAPO_METHODS

from ..keys import BROWSER_KEYS
from ..text import number, one_line, safe, strip_escapes, toast
from .modals import ConfirmScreen, EditScreen, HelpScreen
from .wizard import NewSessionScreen
from .workbench import WorkbenchScreen

if TYPE_CHECKING:
    from ..app import PromptArborApp

REFRESH_SECONDS = 3.0  # how often the shown browser looks at the store for changes

# a reward's scale per method: DRPO the mean 1-5 aspect score, VAPO / PromptAgent a share in
# [0, 1] (accuracy, or the judge's 1-5 mapped to [0, 1]), PICACO its TC_e (no fixed range),
# OPRO and the fixed baselines the mean value conformity in percent
SCALES = "/5 DRPO · % VAPO, OPRO · TC PICACO (? explains)"  # fits 80 columns
SCALES_LONG = ("best, on each method's scale: /5 DRPO's mean aspect score (1-5) of the best system "
               "prompt (the workbench's ★; ICL example versions are judged on their example "
               "and left out) · % VAPO's and "
               "PromptAgent's accuracy (free-form: the judge's 1-5 mapped to 0-100%) · % OPRO's "
               "and the baselines' (Q, Q+IF, Q+IF+CoT, URIAL) value conformity · TC PICACO's "
               "TC_e (no fixed range). The list is read again every few seconds, when you come "
               "back to it and when the terminal gets the focus back.")


def reward_text(method: object, value: object) -> str:
    """A session's reward with its method's unit: `3.67/5`, `40%`, `59.0%`, `-30.02 TC`."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return number(value)
    try:
        if method in DRPO_METHODS:
            return f"{value:.2f}/5"
        if method in VAPO_METHODS:
            percent = value * 100
            return f"{percent:.0f}%" if abs(percent - round(percent)) < 0.05 else f"{percent:.1f}%"
        if method == "picaco":
            return f"{value:.2f} TC"
        if method in ("opro", "q", "q-if", "q-if-cot", "urial"):
            return f"{value:.1f}%"
    except (ValueError, OverflowError):
        pass
    return number(value)


def _when(updated, short: bool = False) -> str:
    try:
        return time.strftime("%m-%d %H:%M" if short else "%Y-%m-%d %H:%M",
                             time.localtime(updated))
    except (TypeError, ValueError, OverflowError, OSError):
        return "?"


def _cut(text: str, width: int) -> str:
    """`text` in at most `width` cells, cut with "…"."""
    if cell_len(text) <= width:
        return text
    out = ""
    for char in text:
        if cell_len(out + char) > width - 1:
            break
        out += char
    return out + "…"


# (key, header); the flexible columns give up width first, then "updated" is shortened,
# then dropped
SESSION_COLUMNS = (("id", "id"), ("name", "name"), ("method", "method"), ("status", "status"),
                   ("steps", "steps"), ("best", "best"), ("cost", "cost"),
                   ("updated", "last change"))
EVAL_COLUMNS = (("id", "id"), ("name", "name"), ("judge", "judge"), ("nk", "n × k"),
                ("prompts", "prompts"), ("status", "status"), ("cost", "cost"),
                ("updated", "last change"))
FLEXIBLE = {"name": (16, 40), "prompts": (16, 50)}  # key -> (least, most) cells
ID_CELLS = 20
NUMBERS = {"steps", "best", "cost", "nk"}  # right-aligned
STATUS_STYLE = {"corrupt": "red", "running": "yellow", "done": "green", "failed": "red"}


def fit_columns(columns, rows: list[dict], width: int, padding: int = 1):
    """The columns shown in `width` cells and each one's width: [(key, header, width)].
    `rows` map column keys to plain strings ("updated" to a time stamp)."""
    def natural(key, header, short=False):
        if key == "updated":
            return max(cell_len(header), 11 if short else 16)
        cells = [cell_len(str(r.get(key, ""))) for r in rows]
        return max([cell_len(header)] + cells)

    def least(key, header, last=False):  # a flexible column's narrowest (content if shorter)
        return max(cell_len(header), min(8 if last else FLEXIBLE[key][0], natural(key, header)))

    for short, keep_date in ((False, True), (True, True), (True, False)):
        shown = [(k, h) for k, h in columns if keep_date or k != "updated"]
        fixed = {k: natural(k, h, short) for k, h in shown if k not in FLEXIBLE}
        free = width - 2 * padding * len(shown) - sum(fixed.values())
        flex = [(k, h) for k, h in shown if k in FLEXIBLE]
        if free >= sum(least(k, h) for k, h in flex) or not keep_date:
            widths = dict(fixed)
            left = free
            for i, (k, h) in enumerate(flex):
                share = left // (len(flex) - i)
                widths[k] = max(least(k, h, not keep_date),
                                min(FLEXIBLE[k][1], natural(k, h), share))
                left -= widths[k]
            return [(k, h, widths[k]) for k, h in shown], short
    raise AssertionError("unreachable")


class BrowserScreen(Screen):
    # the footer at 80 columns: help and quit in view (o is in the help)
    BINDINGS = [Binding("enter", "open", "open"), Binding("n", "new", "new"),
                Binding("r", "rename", "rename"), Binding("d", "delete", "delete"),
                Binding("o", "export", "export", show=False), Binding("e", "switch", "evals"),
                Binding("v", "results", "results"),
                Binding("question_mark", "help", "help"),
                Binding("q", "app.quit", "quit")]

    def compose(self) -> ComposeResult:
        title = Text("PromptArbor · sessions", style="bold")
        title.append(f"   best: {SCALES}", style="dim")  # in full: `?`
        yield Static(title, id="title")
        yield DataTable(id="sessions", cursor_type="row", zebra_stripes=True)
        yield Static(Text("evaluations (e: move here · enter: results)", style="bold"),
                     id="evals-title")
        yield DataTable(id="evals", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, dict] = {}  # row key (session id) -> the store's summary
        self.eval_rows: dict[str, dict] = {}  # row key (evaluation id) -> its summary
        self._generation = 0             # a read older than the last reload is dropped
        self._signature: tuple | None = None  # the store's files when last read
        self._refreshing = False
        self._last_error: str | None = None
        self._layouts: dict[str, tuple] = {}  # table id -> (columns, short date) shown
        self._left: str | None = None  # the session whose workbench was opened last

    def on_mount(self) -> None:
        table = self.query_one("#sessions", DataTable)
        self.reload()
        table.focus()
        self.set_interval(REFRESH_SECONDS, self._tick)

    def on_screen_resume(self) -> None:
        if self.is_mounted:
            self.reload()
            self._back_on_left()

    def _back_on_left(self) -> None:
        """Back from a workbench: the cursor on the session just left (its order in the
        list may have changed while it was open)."""
        left, self._left = self._left, None
        table = self.query_one("#sessions", DataTable)
        if left in self.rows and left in table.rows:
            table.move_cursor(row=list(table.rows).index(left), animate=False)

    def on_resize(self, event: events.Resize) -> None:
        if self.is_mounted:
            self._show_sessions()
            self._show_evals()

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen(BROWSER_KEYS, "Browser keys", note=SCALES_LONG))

    # ------------------------------------------------------------------ reading the store

    def _store_signature(self) -> tuple:
        """The store's session and evaluation files (name, time, size): unchanged, nothing
        needs reading again."""
        out = []
        for folder in (self.app.store.sessions_dir, getattr(self.app.evals, "dir", None)):
            if folder is None:
                continue
            try:
                with os.scandir(folder) as entries:
                    for entry in entries:
                        if entry.name.endswith(".json"):
                            info = entry.stat(follow_symlinks=False)
                            out.append((entry.path, info.st_mtime_ns, info.st_size))
            except OSError as exc:
                out.append((str(folder), type(exc).__name__, 0))
        return tuple(sorted(out))

    def _read(self) -> tuple:
        """(sessions, evaluations, signature): each a list of summaries or the exception
        met listing them."""
        signature = self._store_signature()
        results = []
        for source in (self.app.store, self.app.evals):
            try:
                results.append(source.list())
            except Exception as exc:  # the store folder itself cannot be read
                results.append(exc)
        return results[0], results[1], signature

    def reload(self) -> None:
        """List the store's sessions and evaluations now; a file that cannot be read is a
        "corrupt" row with its error (nothing is moved or rewritten), and no row can stop the
        others from showing."""
        self._generation += 1
        self._apply(*self._read(), quiet=False)

    def refresh_from_store(self) -> None:
        """Read the store again off the UI thread, if a file changed since the last read."""
        if self._refreshing or not self.is_mounted:
            return
        self._refreshing = True
        self.run_worker(self._refresh(self._generation), group="browser-refresh",
                        exit_on_error=False)

    async def _refresh(self, generation: int) -> None:
        try:
            signature = await asyncio.to_thread(self._store_signature)
            if signature == self._signature:
                return
            read = await asyncio.to_thread(self._read)
            if generation == self._generation and self.is_mounted:
                self._apply(*read, quiet=True)
        finally:
            self._refreshing = False

    def _tick(self) -> None:
        if self.app.screen is self:  # not under a workbench or a dialog
            self.refresh_from_store()

    def _apply(self, sessions, evals, signature, quiet: bool) -> None:
        self._signature = signature
        errors = []
        if isinstance(sessions, Exception):
            errors.append(f"cannot list the sessions: {sessions}")
            sessions = []
        if isinstance(evals, Exception):
            errors.append(f"cannot list the evaluations: {evals}")
            evals = None  # keep what is shown
        error = "; ".join(errors) or None
        if error and not (quiet and error == self._last_error):
            toast(self, error, severity="error", timeout=10)
        self._last_error = error
        self.rows = self._checked(sessions, self._session_row)
        self._show_sessions()
        if evals is not None:
            self.eval_rows = self._checked(evals, self._eval_row)
            self._show_evals()

    @staticmethod
    def _checked(rows: list, shape) -> dict[str, dict]:
        """Summaries by id (the first of each id); one of an unexpected shape becomes a
        "corrupt" row saying so."""
        out: dict[str, dict] = {}
        for row in rows:
            if not isinstance(row, dict):
                continue
            key = strip_escapes(str(row.get("id", "")))
            if not key or key in out:
                continue
            try:
                shape(row)
            except Exception as exc:  # a summary of an unexpected shape
                row = {"id": key, "status": "corrupt", "updated": row.get("updated"),
                       "error": f"unreadable summary ({type(exc).__name__}: {exc})"}
            out[key] = row
        return out

    # ------------------------------------------------------------------ the tables

    @staticmethod
    def _session_row(row: dict) -> dict:
        """One session's cells as (plain text, style) per column key ("updated": the time)."""
        if row.get("status") == "corrupt":
            return {"id": (row.get("id"), ""), "name": (one_line(row.get("error"), 300), "red"),
                    "method": ("?", ""), "status": ("corrupt", "red"), "steps": ("", ""),
                    "best": ("", ""), "cost": ("", ""), "updated": row.get("updated")}
        status = str(row["status"])
        return {"id": (row["id"], ""), "name": (one_line(row.get("name"), 200), ""),
                "method": (row["method"], ""), "status": (status, STATUS_STYLE.get(status, "")),
                "steps": (number(row["steps"], "d"), ""),
                "best": (reward_text(row["method"], row.get("best_reward")), ""),
                "cost": ("$" + number(row.get("cost", 0), ".4f"), ""),
                "updated": row.get("updated")}

    @staticmethod
    def _eval_row(row: dict) -> dict:
        """An evaluation's cells; a file that cannot be read shows its error."""
        if row.get("status") == "corrupt":
            return {"id": (row.get("id"), ""), "name": (one_line(row.get("error"), 300), "red"),
                    "judge": ("?", ""), "nk": ("", ""), "prompts": ("", ""),
                    "status": ("corrupt", "red"), "cost": ("", ""), "updated": row.get("updated")}
        prompts = row.get("prompts")
        prompts = " vs ".join(one_line(p, 20) for p in prompts) if isinstance(prompts, list) \
            else one_line(prompts, 40)
        status = str(row.get("status") or "?")
        return {"id": (row["id"], ""), "name": (one_line(row.get("name"), 200), ""),
                "judge": (row["judge"], ""),
                "nk": (f"{number(row.get('n'), 'd')} × {number(row.get('samples'), 'd')}", ""),
                "prompts": (one_line(prompts, 200), ""),
                "status": (status, STATUS_STYLE.get(status, "")),
                "cost": ("$" + number(row.get("cost", 0), ".4f"), ""),
                "updated": row.get("updated")}

    def _show_sessions(self) -> None:
        self._fill("#sessions", SESSION_COLUMNS, self.rows, self._session_row)

    def _show_evals(self) -> None:
        self._fill("#evals", EVAL_COLUMNS, self.eval_rows, self._eval_row)

    def _fill(self, selector: str, columns, rows: dict[str, dict], shape) -> None:
        """Show `rows` in the table: the columns fitted to the width, the cursor kept on its
        row; when the layout and the rows' order are unchanged only changed cells are
        redrawn."""
        table = self.query_one(selector, DataTable)
        cells = {}
        for key, row in rows.items():
            shaped = shape(row)
            plain = {k: v if k == "updated" else (strip_escapes(str(v[0] or "")), v[1])
                     for k, v in shaped.items()}
            plain["id"] = (_cut(plain["id"][0], ID_CELLS), plain["id"][1])
            cells[key] = plain
        width = self.app.size.width - 2  # the vertical scrollbar
        layout, short = fit_columns(columns, [{k: (v if k == "updated" else v[0])
                                               for k, v in c.items()} for c in cells.values()],
                                    width, table.cell_padding)

        def texts(c: dict) -> list[Text]:
            out = []
            for k, _, w in layout:
                if k == "updated":
                    out.append(safe(_when(c["updated"], short)))
                else:
                    text, style = c[k]
                    cell = safe(_cut(text, w) if k in FLEXIBLE else text, style=style)
                    if k in NUMBERS:
                        cell.justify = "right"
                    out.append(cell)
            return out

        shown = (tuple(layout), short)
        current = None
        if table.row_count:
            try:
                current = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
            except Exception:
                current = None
        if self._layouts.get(selector) == shown and list(table.rows) == list(cells):
            for key, c in cells.items():  # the same rows in the same order: changed cells only
                for (k, _, _), text in zip(layout, texts(c)):
                    if table.get_cell(key, k) != text:
                        table.update_cell(key, k, text)
            return
        table.clear(columns=self._layouts.get(selector, (None,))[0] != shown[0])
        if not table.columns:
            for k, header, w in layout:
                table.add_column(Text(header, justify="right" if k in NUMBERS else "left"),
                                 width=w, key=k)
        self._layouts[selector] = shown
        for key, c in cells.items():
            table.add_row(*texts(c), key=key)
        if current in cells:
            table.move_cursor(row=list(cells).index(current), animate=False)

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
            self._left = session_id
            self.app.push_screen(WorkbenchScreen(session_id))

    @on(DataTable.RowSelected, "#sessions")
    def _row_selected(self) -> None:
        self.action_open()

    @on(DataTable.RowSelected, "#evals")
    def _eval_selected(self) -> None:
        self.open_eval()

    def _described(self, session_id: str) -> str:
        """A session as a person knows it: its name (if any) and its id."""
        row = self.rows.get(session_id, {})
        if row.get("status") == "corrupt":
            return f"{session_id} (a file that cannot be read)"
        name = one_line(row.get("name"), 80)
        return f"“{name}” ({session_id})" if name else f"{session_id} (no name)"

    def action_delete(self) -> None:
        session_id = self._selected()
        if not session_id:
            return
        described = self._described(session_id)

        def done(yes: bool | None) -> None:
            if yes:
                try:
                    self.app.store.delete(session_id)
                    toast(self, f"deleted session {described}")
                except Exception as exc:  # locked by another process, etc.
                    toast(self, exc, severity="error")
                self.reload()
        question = Text("Delete session ")
        question.append_text(safe(described, style="bold"))
        question.append("? This cannot be undone.")
        self.app.push_screen(ConfirmScreen(question), done)

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
        self._left = session_id
        app.push_screen(WorkbenchScreen(session_id))

    def action_rename(self) -> None:
        session_id = self._selected()
        if not session_id or self._corrupt(session_id, "rename"):
            return

        current = one_line(self.rows.get(session_id, {}).get("name"), 200)

        def done(name: str | None) -> None:
            if name is None:
                return
            name = one_line(name, 200)
            if name == current:
                toast(self, f"the name of {session_id} is unchanged")
                return
            try:
                self.app.rename_session(session_id, name)
                toast(self, f"renamed {session_id} to “{name}”" if name
                      else f"removed the name of {session_id}")
            except Exception as exc:
                toast(self, exc, severity="error")
            self.reload()  # the cursor stays on this session
        self.app.push_screen(EditScreen(f"Name of session {session_id}", current), done)
