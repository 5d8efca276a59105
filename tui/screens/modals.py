"""The small dialogs every screen uses: `ConfirmScreen` (a yes / no question), `EditScreen`
(a text editor: a critique, a hand-written prompt, a session's name) and `HelpScreen` (the
key table of one screen, by default the workbench's with the tree's icons, then the keys
that work on every screen).
"""
from __future__ import annotations

from rich import box
from rich.table import Table
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static, TextArea

from ..keys import APP_KEYS, KEYS
from ..text import safe, strip_escapes
from ..widgets.search_tree import LEGEND, MARK


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
        editor = self.query_one(TextArea)
        editor.focus()
        editor.move_cursor(editor.document.end)  # prefilled: type on from its end

    def action_save(self) -> None:
        self.dismiss(self.query_one(TextArea).text)

    def action_cancel(self) -> None:
        self.dismiss(None)


class HelpScreen(ModalScreen[None]):
    """The keys of one screen (by default the workbench's, with its icons), then the keys
    that work on every screen (`APP_KEYS`: the palette, quit)."""

    BINDINGS = [Binding("escape,q,question_mark", "dismiss(None)", "close")]
    # its own box: nearly the whole screen, so a long table needs little scrolling at 80×24
    DEFAULT_CSS = """
    HelpScreen #help { width: 96%; max-width: 110; height: auto; max-height: 96%;
                       border: thick $primary; background: $surface; padding: 0 1; }
    """

    def __init__(self, keys: list[tuple[str, str]] | None = None, title: str = "PromptArbor keys",
                 note: str = ""):
        super().__init__()
        self.keys = KEYS if keys is None else keys
        self.title_text = title
        self.note = note  # shown below the table

    def compose(self) -> ComposeResult:
        table = Table(title=safe(self.title_text), expand=True, box=box.SIMPLE_HEAD,
                      show_edge=False, pad_edge=False)
        table.add_column("key")
        table.add_column("what it does")
        for key, text in self.keys:
            table.add_row(safe(key), safe(text))
        shown = {key for key, _ in self.keys}
        anywhere = [(key, text) for key, text in APP_KEYS if key not in shown]
        if anywhere:
            table.add_section()
            for key, text in anywhere:
                table.add_row(safe(key), safe(text))
        with VerticalScroll(id="help"):
            yield Static(table)
            if self.note:
                yield Static(safe("\n" + self.note))
            if self.keys is KEYS:
                yield Static(Text(f"Icons: {LEGEND} · "
                                  f"{MARK} marked (V compares it with the selected node)"))
