"""The Textual workbench: session browser and the live search tree of one session; the
Results view of a held-out verdict (tui.results), marking and comparing two nodes.

Engine work runs on `EngineThread` (its own event loop); this module only renders
snapshots and sends the person's commands. Model, provider, data-file and session text is
always shown through `tui.text.safe` (plain Text, escapes stripped), never as markup;
notifications go through `toast` (markup off, escapes stripped).
"""
from __future__ import annotations

import asyncio
import difflib
import json
import time
from pathlib import Path

from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widgets import (Button, Checkbox, DataTable, Footer, Input, Label, RichLog, Select,
                             Sparkline, Static, TabbedContent, TabPane, TextArea, Tree)

from promptarbor.themes import DEFAULT_THEME, THEMES

from promptarbor.engine.config import family

from . import views
from .engine_thread import EngineThread
from .results import ResultsScreen
from .text import head, number, one_line, safe, strip_escapes

KEYS = [
    ("space", "one step"), ("L", "one level / iteration"), ("r", "run to the end"),
    ("p", "pause after the step in flight"), ("x", "prune / unprune the selected node"),
    ("c", "edit the selected node's critique"), ("g", "regenerate a child from the critique"),
    ("n", "new hand-written prompt under the selected node"), ("a", "accept the selected node"),
    ("o", "export the selected node (markdown file)"), ("d", "diff with the parent"),
    ("R", "retry the selected failed node (on a root: every failed node)"),
    ("l", "show / hide the log"),
    ("v", "results of the session's held-out evaluation (root vs final)"),
    ("m", "mark / unmark the selected node (⚑) to compare it"),
    ("V", "compare the marked node with the selected one on the held-out set"),
    ("?", "help"), ("ctrl+p", "command palette"),
    ("q", "quit (the session is saved either way)"),
]

BROWSER_KEYS = [
    ("enter", "open the session in the workbench / the evaluation's results"),
    ("e", "move between the sessions and the evaluations"),
    ("v", "results of the session's held-out evaluation (root vs final)"),
    ("n", "new session"), ("r", "rename the session"), ("d", "delete the session"),
    ("o", "export the session's prompt (markdown file)"), ("?", "help"),
    ("ctrl+p", "command palette"), ("q", "quit"),
]

# key, what it does, the workbench action: also offered in the command palette
WORKBENCH_COMMANDS = [
    ("space", "one step", "step"), ("L", "one level / iteration", "level"),
    ("r", "run to the end", "run"), ("p", "pause after the step in flight", "pause"),
    ("x", "prune / unprune the selected node", "prune"),
    ("c", "edit the selected node's critique", "critique"),
    ("g", "regenerate a child from the critique", "regenerate"),
    ("n", "new hand-written prompt under the selected node", "new_prompt"),
    ("a", "accept the selected node", "accept"), ("o", "export the selected node", "export"),
    ("d", "diff with the parent", "diff"), ("l", "show / hide the log", "toggle_log"),
    ("R", "retry failed nodes (the selected one; on a root: every one)", "retry"),
    ("v", "results of the held-out evaluation", "results"),
    ("m", "mark / unmark the selected node", "mark"),
    ("V", "compare the marked node with the selected one", "compare"),
]

# the Results screen's commands in the palette: key, what it does, action (with arguments)
RESULTS_COMMANDS = [
    ("w", "items that got worse", "filter", ("worse",)),
    ("b", "items that got better", "filter", ("better",)),
    ("a", "all items", "filter", ("all",)), ("s", "focus the other answer", "side", ()),
    ("z", "full text of the focused answer", "full", ()), ("escape", "back", "close", ()),
]

ICONS = {"root": "◆", "beam": "●", "best": "★", "expanded": "○", "pruned": "⌀",
         "failed": "✗", "accepted": "✓", "open": "·"}
MARK = "⚑"


def settings_path(store_root: Path) -> Path:
    return Path(store_root) / "settings.json"


TOAST_CHARS = 600


def toast(target, message: object, *, severity: str = "information",
          timeout: float | None = None) -> None:
    """A notification whose text is shown literally: terminal escapes removed, markup off
    (Textual 8 parses a notification's message as content markup by default), cut to a
    readable length. `target`: the app or any widget / screen."""
    text = strip_escapes("" if message is None else str(message)).strip()
    if len(text) > TOAST_CHARS:
        text = text[: TOAST_CHARS - 1] + "…"
    target.notify(text or "(no message)", severity=severity, timeout=timeout, markup=False)


# ----------------------------------------------------------------------------- modals

class ConfirmScreen(ModalScreen[bool]):
    BINDINGS = [Binding("escape", "dismiss(False)", "cancel"), Binding("y", "dismiss(True)", "yes")]

    def __init__(self, question: str | Text, yes_variant: str = "error"):
        super().__init__()
        self.question = question
        self.yes_variant = yes_variant

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="dialog"):  # scrolls when a long question meets a small screen
            yield Label(self.question if isinstance(self.question, Text) else safe(self.question),
                        id="question")
            with Horizontal(id="buttons"):
                yield Button("Yes (y)", id="yes", variant=self.yes_variant)
                yield Button("No (esc)", id="no")

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class EditScreen(ModalScreen[str | None]):
    """A text editor in a dialog: ctrl+s saves, escape cancels."""

    BINDINGS = [Binding("ctrl+s", "save", "save"), Binding("escape", "cancel", "cancel")]

    def __init__(self, title: str, text: str = ""):
        super().__init__()
        self.title_text = title
        self.text = strip_escapes(text or "")  # model text: no terminal escapes in the editor

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(safe(self.title_text + "   (ctrl+s save · esc cancel)"))
            yield TextArea(self.text, id="editor", soft_wrap=True)

    def on_mount(self) -> None:
        self.query_one(TextArea).focus()

    def action_save(self) -> None:
        self.dismiss(self.query_one(TextArea).text)

    def action_cancel(self) -> None:
        self.dismiss(None)


class HelpScreen(ModalScreen[None]):
    """The keys of one screen (by default the workbench's, with its icons)."""

    BINDINGS = [Binding("escape,q,question_mark", "dismiss(None)", "close")]

    def __init__(self, keys: list[tuple[str, str]] | None = None, title: str = "PromptArbor keys"):
        super().__init__()
        self.keys = KEYS if keys is None else keys
        self.title_text = title

    def compose(self) -> ComposeResult:
        table = Table(title=safe(self.title_text), expand=True)
        table.add_column("key")
        table.add_column("what it does")
        for key, text in self.keys:
            table.add_row(safe(key), safe(text))
        with VerticalScroll(id="dialog"):
            yield Static(table)
            if self.keys is KEYS:
                yield Static(Text("Icons: ◆ root · ● in the beam (DRPO) / on the current MCTS path (VAPO) · "
                                  "★ best so far · ○ expanded · · not scored yet · ⌀ pruned · ✗ failed · "
                                  f"✓ accepted · {MARK} marked (V compares it with the selected node)"))


class NewSessionScreen(ModalScreen[dict | None]):
    """The new-session wizard: method, models, hyper-parameters, data, and the planned calls.

    Each method family has its own group of fields (the papers' defaults filled in); only
    the chosen method's group is shown and read.
    """

    BINDINGS = [Binding("escape", "dismiss(None)", "cancel"), Binding("ctrl+s", "create", "create")]
    # (key, label, default, input type) per family; the defaults are the papers'
    NUMBERS = {
        "drpo": (("beam_width", "W beam width", 2, "integer"),
                 ("samples_per_state", "M samples per state", 3, "integer"),
                 ("depth", "D depth", 20, "integer"), ("icl_k", "K ICL examples", 2, "integer")),
        "vapo": (("iterations", "iterations", 10, "integer"),
                 ("expand_width", "expand width", 3, "integer"),
                 ("depth_limit", "depth limit", 5, "integer"),
                 ("batch_size", "batch size", 5, "integer"),
                 ("exploration", "w exploration", 2.5, "number")),
        "picaco": (("iterations", "T iterations", 10, "integer"),
                   ("prompts", "N prompts", 50, "integer"),
                   ("aligned_pool", "M1 aligned pool", 10, "integer"),
                   ("noise_pool", "M2 noise pool", 15, "integer"),
                   ("p_samples", "n samples for p_e", 10, "integer")),
    }
    # (key, placeholder) of the data files per family
    FILES = {
        "drpo": (("seed", "seed queries file (.jsonl/.json/.txt)"),
                 ("icl", "ICL examples file (.jsonl/.json)")),
        "vapo": (("tasks", "task file (.jsonl/.json/.csv: question, options, answer)"),),
        "picaco": (("prompts", "prompts file (.jsonl: query)"),
                   ("demonstrations", "demonstrations file (.jsonl: query, response)")),
    }

    def compose(self) -> ComposeResult:
        from promptarbor.engine.config import METHODS
        from promptarbor.engine.values import COMPOSITIONS

        with VerticalScroll(id="dialog"):
            yield Label(Text("New session   (ctrl+s create · esc cancel)", style="bold"))
            yield Input(placeholder="name (optional)", id="name")
            yield Select([(m, m) for m in METHODS], value="drpo", allow_blank=False, id="method")
            yield Label("Models (litellm strings; empty = the embedded local/smollm2)")
            for role in ("default", "base", "optimizer", "evaluator"):
                yield Input(placeholder=f"{role} model", id=f"model-{role}")
            for fam, numbers in self.NUMBERS.items():
                with Vertical(id=f"group-{fam}", classes="group"):
                    yield Label("Search (the paper's defaults)")
                    with Horizontal(classes="numbers"):
                        for key, label, value, kind in numbers:
                            yield Input(str(value), placeholder=label, id=f"num-{fam}-{key}",
                                        type=kind, tooltip=label)
                    if fam == "drpo":
                        yield Checkbox("ICL examples already optimized (skip ICL optimization)",
                                       id="icl-opt")
                    if fam == "vapo":
                        yield Select([("ValueCoT meta-prompts", "valuecot"),
                                      ("basis meta-prompts (PromptAgent)", "basis")],
                                     value="valuecot", allow_blank=False, id="meta-prompts")
                        yield Select([("multiple choice (accuracy)", "multiple-choice"),
                                      ("free-form (judge score)", "free-form")],
                                     value="multiple-choice", allow_blank=False, id="task-type")
                    if fam == "picaco":
                        yield Select([(name, name) for name in COMPOSITIONS],
                                     value="harmlessness", allow_blank=False, id="composition")
                    yield Label("Data (empty = built-in sets)")
                    for key, placeholder in self.FILES[fam]:
                        yield Input(placeholder=placeholder, id=f"data-{fam}-{key}")
            yield Static(id="preview")
            yield Static(id="plan")
            with Horizontal(id="buttons"):
                yield Button("Create (ctrl+s)", id="create", variant="primary")
                yield Button("Cancel (esc)", id="cancel")

    def on_mount(self) -> None:
        self.show_group()
        self.update_plan()

    @property
    def family(self) -> str:
        from promptarbor.engine.config import family

        return family(str(self.query_one("#method", Select).value))

    def show_group(self) -> None:
        for fam in self.NUMBERS:
            self.query_one(f"#group-{fam}").display = fam == self.family

    def raw_config(self) -> dict:
        fam = self.family
        raw: dict = {"method": self.query_one("#method", Select).value,
                     "name": self.query_one("#name", Input).value.strip(),
                     "models": {}, "search": {}, "data": {}}
        for role in ("default", "base", "optimizer", "evaluator"):
            value = self.query_one(f"#model-{role}", Input).value.strip()
            if value:
                raw["models"][role] = {"model": value}
        for key, _, _, kind in self.NUMBERS[fam]:
            value = self.query_one(f"#num-{fam}-{key}", Input).value.strip()
            try:
                raw["search"][key] = int(value) if kind == "integer" else float(value)
            except ValueError:
                raw["search"][key] = value  # validation reports it
        if fam == "drpo":
            raw["data"]["icl_optimized"] = self.query_one("#icl-opt", Checkbox).value
        if fam == "vapo":
            if raw["method"] == "vapo":
                raw["search"]["meta_prompts"] = self.query_one("#meta-prompts", Select).value
            raw["data"]["task_type"] = self.query_one("#task-type", Select).value
        if fam == "picaco":
            raw["values"] = {"composition": self.query_one("#composition", Select).value}
        for key, _ in self.FILES[fam]:
            value = self.query_one(f"#data-{fam}-{key}", Input).value.strip()
            if value:
                raw["data"][key] = value
        return raw

    def build(self):
        """(config, inputs) or raise ConfigError."""
        from promptarbor.engine.config import validate_config
        from promptarbor.engine.datasets import load_inputs

        cfg = validate_config(self.raw_config(), base_dir=Path.cwd())
        return cfg, load_inputs(cfg)

    def on_input_changed(self) -> None:
        self.update_plan()

    def on_select_changed(self) -> None:
        self.show_group()
        self.update_plan()

    def on_checkbox_changed(self) -> None:
        self.update_plan()

    def preview(self, inputs: dict) -> Text:
        """The first rows of the data the session will use."""
        def rows(title: str, texts: list[str], total: int) -> Text:
            out = Text(f"{title}: ", style="bold")
            out.append_text(safe(" · ".join(head(t, 50) for t in texts[:3])))
            out.append(f"  ({total} in all)\n")
            return out
        out = Text()
        if "seed" in inputs:
            out.append_text(rows("First seed queries", inputs["seed"], len(inputs["seed"])))
            out.append_text(rows("First ICL examples", [q for q, _ in inputs["icl"]],
                                 len(inputs["icl"])))
        if "tasks" in inputs:
            out.append_text(rows("First task items", [t["question"] for t in inputs["tasks"]],
                                 len(inputs["tasks"])))
        if "prompts" in inputs:
            out.append_text(rows("First prompts", inputs["prompts"], len(inputs["prompts"])))
            out.append_text(rows("Values", [v["name"] for v in inputs["values"]],
                                 len(inputs["values"])))
        out.rstrip()
        return out

    def update_plan(self) -> None:
        from promptarbor.engine.config import ConfigError
        from promptarbor.engine.runner import plan_calls

        try:
            cfg, inputs = self.build()
        except ConfigError as exc:
            self.query_one("#plan", Static).update(safe(f"✗ {exc}", style="red"))
            return
        except Exception as exc:  # a data file the readers did not expect: shown, not raised
            self.query_one("#plan", Static).update(
                safe(f"✗ {type(exc).__name__}: {exc}", style="red"))
            return
        self.query_one("#preview", Static).update(self.preview(inputs))
        plan = plan_calls(cfg, inputs)
        bound = " at most" if self.family == "vapo" else ""
        self.query_one("#plan", Static).update(Text(
            f"Planned calls{bound}: " + ", ".join(f"{r} {n}" for r, n in plan.items())
            + f"  (total {sum(plan.values())})", style="bold"))

    def action_create(self) -> None:
        from promptarbor.engine.config import ConfigError

        try:
            cfg, inputs = self.build()
        except ConfigError as exc:
            toast(self, exc, severity="error")
            return
        except Exception as exc:
            toast(self, f"{type(exc).__name__}: {exc}", severity="error")
            return
        self.dismiss({"config": cfg, "inputs": inputs})

    @on(Button.Pressed, "#create")
    def _create(self) -> None:
        self.action_create()

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.dismiss(None)


# ----------------------------------------------------------------------------- browser

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


# ----------------------------------------------------------------------------- workbench

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

    def _roles(self, node: dict) -> set[str]:
        snap = self.snap
        roles = set()
        if node["kind"] == "root":
            roles.add("root")
        if node["id"] in snap["beam"]:
            roles.add("beam")
        if node["id"] == snap["best"]:
            roles.add("best")
        return roles

    def _label(self, node: dict) -> Text:
        roles = self._roles(node)
        if node["accepted"]:
            icon = ICONS["accepted"]
        elif node["status"] == "failed":
            icon = ICONS["failed"]
        elif node["status"] == "pruned":
            icon = ICONS["pruned"]
        elif "best" in roles:
            icon = ICONS["best"]
        elif "root" in roles:
            icon = ICONS["root"]
        elif "beam" in roles:
            icon = ICONS["beam"]
        elif node["reward"] is None:
            icon = ICONS["open"]
        else:
            icon = ICONS["expanded"]
        reward = "  —  " if node["reward"] is None else number(node["reward"])
        text = node["text"] if node["text"] else ("(failed)" if node["status"] == "failed"
                                                  else "(writing…)")
        if node["meta"].get("phase") == "icl" and node["kind"] == "root":
            text = f"ICL {node['meta'].get('example', 0) + 1}: {node['meta'].get('query', '')}"
        parent = self.snap["nodes"].get(node["parent"]) if node["parent"] else None
        if parent is not None and node["text"]:
            # siblings share most of their text: show the first line this one adds
            old_lines = set(parent["text"].splitlines())
            added = [ln for ln in node["text"].splitlines() if ln.strip() and ln not in old_lines]
            if added:
                text = "+ " + added[0].strip()
        label = Text()
        if node["id"] == self.marked:
            label.append(f"{MARK} ", style="bold yellow")
        label.append(f"{icon} {reward} {views.label_suffix(self.snap, node)}")
        label.append_text(safe(head(text, 40)))
        if node["status"] == "pruned":
            label.stylize("dim")
        elif "best" in roles:
            label.stylize("bold")
        return label

    def _render_tree(self) -> None:
        tree = self.query_one(Tree)
        nodes = self.snap["nodes"]
        on_path = set(self.snap["best_path"]) | set(self.snap["beam"])
        for node_id in sorted(nodes, key=lambda i: int(i[1:])):  # parents before children
            node = nodes[node_id]
            label = self._label(node)
            if node_id in self.tree_nodes:
                tree_node = self.tree_nodes[node_id]
                if tree_node.label != label:
                    tree_node.set_label(label)
                continue
            parent = self.tree_nodes.get(node["parent"]) if node["parent"] else tree.root
            if parent is None:
                continue
            parent.allow_expand = True
            tree_node = parent.add(label, data=node_id, expand=node_id in on_path or
                                   node["parent"] is None, allow_expand=bool(node["children"]))
            self.tree_nodes[node_id] = tree_node
        for node_id in on_path:  # keep the live path open; off-path branches stay collapsed
            tree_node = self.tree_nodes.get(node_id)
            while tree_node is not None and tree_node is not tree.root:
                tree_node.expand()
                tree_node = tree_node.parent
        if self.selected is None and self.tree_nodes:
            first = next(iter(self.tree_nodes))
            self.selected = first

    def _render_status(self) -> None:
        snap = self.snap
        s = snap["summary"]
        calls, plan = s["calls"], s["planned_calls"]
        done_calls, planned = sum(calls.values()), sum(plan.values())
        state = "running" if self.busy else s["status"]
        usage = snap["usage"]
        roles = " · ".join(f"{r[:4]} {calls.get(r, 0)} ({usage.get(r, {}).get('tokens_in', 0)}→"
                           f"{usage.get(r, {}).get('tokens_out', 0)} tok"
                           f" ${usage.get(r, {}).get('cost', 0.0):.3f})"
                           for r in ("base", "optimizer", "evaluator"))
        title = safe(f"PromptArbor ─ session {snap['id']} {one_line(snap['name'], 60)} ─ "
                     f"{snap['method']} ─ base: {snap['models']['base']} ─ ● {state}")
        self.query_one("#title", Static).update(title)
        line = safe(f"{snap['next']}   steps {s['steps']}   calls {done_calls}/{planned}   "
                    f"{roles}   ${number(s['cost'], '.4f')}")
        ev = s.get("evaluation")
        if ev and (ev.get("final") is not None or ev.get("root") is not None):
            line.append_text(safe(f"   evaluation ({ev['metric']}): root {number(ev.get('root'))}"
                                  f" → final {number(ev.get('final'))}", style="bold"))
        self.query_one("#status", Static).update(line)
        spark = self.query_one(Sparkline)
        spark.data = list(snap["best_per_level"]) or [0.0]

    def _render_detail(self) -> None:
        try:
            self._render_detail_tabs()
        except Exception as exc:  # a node whose contents cannot be shown: say so, stay up
            self._render_failed(f"node {self.selected}", exc)

    def _render_detail_tabs(self) -> None:
        if not self.snap or self.selected not in self.snap["nodes"]:
            return
        node = self.snap["nodes"][self.selected]
        detail = node.get("detail", {})
        header = safe(f"{node['id']} · {node['kind']} · {node['status']}"
                      f"{' · accepted' if node['accepted'] else ''}\n\n", style="bold")
        prompt = header.copy()
        prompt.append_text(safe(node["text"]))
        if node.get("error"):
            prompt.append_text(safe(f"\n\nerror: {node['error']}", style="red"))
        self.query_one("#prompt", Static).update(prompt)

        select = self.query_one("#pool-prompt", Select)
        prompt = select.value if select.display and isinstance(select.value, int) else None
        self.query_one("#response", Static).update(views.response_view(self.snap, node, prompt))
        self.query_one("#reward", Static).update(views.reward_view(self.snap, node))

        critique = Text("Critique (c to edit, g to regenerate from it)\n\n", style="bold")
        critique.append_text(safe(node.get("critique") or "—"))
        self.query_one("#critique", Static).update(critique)

        self.query_one("#diff", Static).update(self._diff(node))

        calls = Table(expand=True)
        for col in ("call", "role", "purpose", "tokens", "cost", "latency", "error"):
            calls.add_column(col)
        for record in self.snap["calls"].get(node["id"], []):
            calls.add_row(safe(record["id"]), safe(record["role"]), safe(record["purpose"]),
                          safe(f"{record['tokens_in']}→{record['tokens_out']}"),
                          safe("$" + number(record["cost"], ".5f")),
                          safe("cached" if record["cached"] else number(record["latency"]) + "s"),
                          safe(record.get("error") or ""))
        self.query_one("#calls", Static).update(calls)

    def _diff(self, node: dict) -> Text:
        parent = self.snap["nodes"].get(node["parent"]) if node["parent"] else None
        if parent is None:
            return Text("a root has no parent")
        out = Text()
        for line in difflib.unified_diff(parent["text"].splitlines(), node["text"].splitlines(),
                                         parent["id"], node["id"], lineterm=""):
            style = "green" if line.startswith("+") else "red" if line.startswith("-") else ""
            out.append_text(safe(line + "\n", style=style))
        return out if out.plain else Text("no difference from the parent")

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
        ev = runner.evaluation
        totals = runner.gateway.totals()["calls"]
        done_calls = sum(totals.values()) if calls is None else calls
        planned = sum((runner.doc.get("planned_calls") or {}).values())
        status.update(safe(
            f"comparing {ev.prompts[0].get('label')} with {ev.prompts[-1].get('label')}: "
            f"evaluation {runner.doc['id']} · batch {ev.state['cursor']}/{len(ev.batches())} · "
            f"calls {done_calls}/{planned} · ${runner.cost():.4f}  (p pauses)", style="bold"))
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


# ----------------------------------------------------------------------------- app

class PromptArborApp(App):
    CSS_PATH = "app.tcss"
    TITLE = "PromptArbor"
    SCREENS = {"help": HelpScreen}
    BINDINGS = [Binding("ctrl+c", "quit", "quit", show=False, priority=True)]

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
        yield SystemCommand("Help: keys", "the key table of this screen", self._show_help)
        if isinstance(screen, WorkbenchScreen):
            for key, text, action in WORKBENCH_COMMANDS:
                yield SystemCommand(f"{text[0].upper()}{text[1:]} ({key})", "workbench",
                                    getattr(screen, f"action_{action}"))
        elif isinstance(screen, BrowserScreen):
            yield SystemCommand("New session (n)", "browser", screen.action_new)
            yield SystemCommand("Sessions / evaluations (e)", "browser", screen.action_switch)
            yield SystemCommand("Results of the session's held-out evaluation (v)", "browser",
                                screen.action_results)
        elif isinstance(screen, ResultsScreen):
            for key, text, action, args in RESULTS_COMMANDS:
                method = getattr(screen, f"action_{action}")
                yield SystemCommand(f"{text[0].upper()}{text[1:]} ({key})", "results",
                                    (lambda m=method, a=args: m(*a)))

    def _show_help(self) -> None:
        screen = self.screen
        if isinstance(screen, (WorkbenchScreen, BrowserScreen, ResultsScreen)):
            screen.action_help()
        else:
            self.push_screen(HelpScreen())

    def on_mount(self) -> None:
        self.push_screen(BrowserScreen())
        if self.start_session:
            self.push_screen(WorkbenchScreen(self.start_session))

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
        from promptarbor.sessions.export import export

        try:
            # read-only: a corrupt file is reported, never moved aside
            session = session or self.store.load(session_id, move_aside=False)
            text = export(session, node_id, "md")
            target = Path.cwd() / f"promptarbor-{session_id}-{node_id or 'final'}.md"
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
