"""The Results view (DESIGN §10): one verdict of a held-out evaluation, on its own screen.

`ResultsScreen(verdict)` shows what `engine.evaluation.Evaluation.result()` returns (plus the
stored evaluation's or session's facts) in two tabs: Summary (the header facts, the prompts
table, the paired differences, the per-category table and plot, the worst regressions, the
prompts' texts) and Items (all items or those that got worse / better for the compared
prompt, with the selected item's answers side by side; `z` or enter opens the focused
answer's full text on a `FullTextScreen`). The drawing is in `tui.widgets.verdict`.
"""
from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, RichLog, Static, TabbedContent, TabPane

from ..keys import RESULTS_KEYS
from ..text import head, safe, toast
from ..widgets.plots import TIE
from ..widgets.verdict import (SECTIONS, _categories, _label, _num, _result, _samples,
                               filter_items, full_text, header, item_delta, item_detail, items_of,
                               pairwise, prompt_label, prompts_of, sections, wide_enough)
from .modals import HelpScreen


class FullTextScreen(Screen):
    """One answer in full, scrollable (a log widget: a long answer is wrapped once, then
    scrolls without being drawn again); escape (or q, z) goes back."""

    BINDINGS = [Binding("escape,q,z", "close", "back")]

    def __init__(self, title: Text, body: Text):
        super().__init__()
        self.title_text = title
        self.body = body

    def compose(self) -> ComposeResult:
        yield Static(self.title_text, id="ft-title")
        yield RichLog(id="ft-body", wrap=True, markup=False, highlight=False, auto_scroll=False,
                      min_width=20)  # drawn to the width shown (default 78: cut at 80)
        yield Footer()

    def on_mount(self) -> None:
        log = self.query_one("#ft-body", RichLog)
        log.write(self.body, scroll_end=False)
        log.focus()

    def action_close(self) -> None:
        self.dismiss(None)


class ResultsScreen(Screen):
    """One verdict: the Summary and Items tabs (see the module's docstring)."""

    BINDINGS = [
        Binding("escape,q", "close", "back"),
        Binding("1", "tab('summary')", "summary", show=False),
        Binding("2", "tab('items')", "items", show=False),
        Binding("w", "filter('worse')", "worse"),
        Binding("b", "filter('better')", "better"),
        Binding("a", "filter('all')", "all"),
        Binding("s", "side", "side"),
        Binding("left_square_bracket", "sample(-1)", "sample −", show=False),
        Binding("right_square_bracket", "sample(1)", "sample +", show=False),
        Binding("p", "next_prompt", "prompt", show=False),
        Binding("z", "full", "full text"),
        Binding("question_mark", "help", "help"),
    ]
    FILTERS = {"worse": "got worse", "better": "got better", "all": "all"}

    def __init__(self, verdict: dict, kind: str = "evaluation"):
        super().__init__()
        self.verdict = verdict if isinstance(verdict, dict) else {}
        self.kind = kind
        n_prompts = len(prompts_of(self.verdict))
        self.compare = n_prompts - 1 if n_prompts > 1 else 0
        self.which = "all"
        self.shown: list[int] = []   # item indexes in the table's order
        self.current: int | None = None
        self.sample = 0
        self.side = 1 if n_prompts > 1 else 0
        self._width = 0

    def compose(self) -> ComposeResult:
        yield Static(id="r-title")
        with TabbedContent(id="r-tabs", initial="r-tab-summary"):
            with TabPane("Summary", id="r-tab-summary"):
                with VerticalScroll(id="r-summary-scroll"):
                    for name in SECTIONS:
                        yield Static(id=f"r-{name}", classes="r-section")
            with TabPane("Items", id="r-tab-items"):
                yield Static(id="r-filter")
                yield DataTable(id="r-items", cursor_type="row", zebra_stripes=True)
                yield VerticalScroll(Static(id="r-detail"), id="r-detail-scroll")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#r-title", Static).update(self._safely(lambda: header(self.verdict, self.kind),
                                                                "the header"))
        self._render_summary()
        self._fill_items()
        self.query_one("#r-summary-scroll").focus()

    def on_resize(self) -> None:
        if self._layout(self.size.width) != self._layout(self._width):
            self._render_summary()

    def _layout(self, width: int) -> tuple[bool, bool]:
        return wide_enough(self.verdict, width - 4), width - 4 >= 110

    # ------------------------------------------------------------------ rendering

    def _safely(self, build, what: str):
        """A part of the view; a verdict too damaged to draw says so instead of raising."""
        try:
            return build()
        except Exception as exc:
            return safe(f"cannot show {what}: {type(exc).__name__}: {exc}", style="red")

    def _render_summary(self) -> None:
        self._width = self.size.width or 120
        parts = sections(self.verdict, self._width - 4, self.compare)
        self.parts = parts
        for name in SECTIONS:
            widget = self.query_one(f"#r-{name}", Static)
            part = parts.get(name)
            widget.display = part is not None
            if part is not None:
                widget.update(part)

    def _fill_items(self) -> None:
        table = self.query_one("#r-items", DataTable)
        table.clear(columns=True)
        verdict = self.verdict
        base, other = prompt_label(verdict, 0), prompt_label(verdict, self.compare)
        table.add_column("item")
        table.add_column("category")
        table.add_column(safe(_label(base, 12)))
        if self.compare:
            table.add_column(safe(_label(other, 12)))
            table.add_column("win−½" if pairwise(verdict) else "Δ")
        table.add_column("query")
        items = items_of(verdict)
        try:
            self.shown = filter_items(verdict, self.compare, self.which)
        except Exception:
            self.shown = list(range(len(items)))
        for row, i in enumerate(self.shown):
            item = items[i]
            d = item_delta(verdict, item, self.compare) if self.compare else None
            cells = [safe(_label(item.get("item"), 10)), safe(_label(_categories(item), 14)),
                     safe(_num(_result(item, 0).get("score")))]
            if self.compare:
                cells += [safe(_num(_result(item, self.compare).get("score"))),
                          safe(_num(d, "+.2f"), style="green" if d is not None and d > TIE
                               else "red" if d is not None and d < -TIE else "")]
            cells.append(safe(head(item.get("query"), 60)))
            table.add_row(*cells, key=str(row))
        shown = len(self.shown)
        line = Text()
        line.append_text(safe(f"Items {self.FILTERS[self.which]}: {shown} of {len(items)}"
                              + (f"  ·  Δ = {other} − {base}" if self.compare else ""),
                              style="bold"))
        line.append("\nw worse · b better · a all · s other answer · [ ] sample · z/enter full text"
                    + (" · p next prompt" if len(prompts_of(verdict)) > 2 else ""), style="dim")
        self.query_one("#r-filter", Static).update(line)
        self.current = self.shown[0] if self.shown else None
        self.sample = 0
        self._render_detail()

    def _render_detail(self) -> None:
        detail = self.query_one("#r-detail", Static)
        items = items_of(self.verdict)
        if self.current is None or self.current >= len(items):
            empty = {"worse": "no item got worse", "better": "no item got better",
                     "all": "no item in this verdict"}[self.which]
            self.detail = Text(empty, style="dim")
        else:
            item = items[self.current]
            self.detail = self._safely(lambda: item_detail(self.verdict, item, self.compare,
                                                           self.sample, self.side), "the item")
        detail.update(self.detail)

    @on(DataTable.RowHighlighted, "#r-items")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        try:
            row = int(event.row_key.value)
        except (TypeError, ValueError):
            return
        if 0 <= row < len(self.shown) and self.current != self.shown[row]:
            self.current = self.shown[row]
            self.sample = 0
            self._render_detail()

    @on(DataTable.RowSelected, "#r-items")
    def _selected(self) -> None:
        self.action_full()

    # ------------------------------------------------------------------ actions

    def action_close(self) -> None:
        self.dismiss(None)

    def action_tab(self, which: str) -> None:
        tabs = self.query_one(TabbedContent)
        tabs.active = f"r-tab-{which}"
        (self.query_one("#r-items") if which == "items" else
         self.query_one("#r-summary-scroll")).focus()

    def action_filter(self, which: str) -> None:
        self.which = which
        self._fill_items()
        self.action_tab("items")

    def action_side(self) -> None:
        if self.compare:
            self.side = 1 - self.side
            self._render_detail()

    def action_sample(self, step: int) -> None:
        if self.current is None:
            return
        item = items_of(self.verdict)[self.current]
        k = max(len(_samples(item, 0)), len(_samples(item, self.compare)), 1)
        self.sample = (self.sample + step) % k
        self._render_detail()

    def action_next_prompt(self) -> None:
        n = len(prompts_of(self.verdict))
        if n <= 2:
            return
        self.compare = self.compare % (n - 1) + 1
        self._render_summary()
        self._fill_items()

    def action_full(self) -> None:
        if self.current is None:
            toast(self, "no item selected", severity="warning")
            return
        item = items_of(self.verdict)[self.current]
        index = self.compare if self.side == 1 else 0
        title = safe(f"Full text · item {_label(item.get('item'), 30)} · "
                     f"{_label(prompt_label(self.verdict, index), 40)}   (esc back)", style="bold")
        body = self._safely(lambda: full_text(self.verdict, item, index, self.sample), "the answer")
        self.app.push_screen(FullTextScreen(title, body))

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen(RESULTS_KEYS, "Results keys"))
