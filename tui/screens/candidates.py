"""The Candidates view (`C` in the workbench): every scored node of the session ranked by
reward, one row each — rank, id, level, reward (on the method's scale), what it was judged
on (DRPO: the level's query; VAPO: the validation split and the batch it was written from;
PICACO and its baselines: the prompts and, for PICACO, the pools' iteration), its state
(best, final, accepted, beam, pruned, failed) and the start of its prompt. Failed nodes
without a score follow, unranked. DRPO's ICL-example versions are judged on an example, not
as a system prompt: they follow the ranked system prompts in their own group, marked "ICL".
Typing a node's id (`n100`, or just `100`) moves the cursor to it (what is typed shows in
the header; backspace edits it; escape clears it, then goes back). `enter` closes the view
and shows that node in the workbench's tree; `escape` goes back.

The columns are sized to the screen when it opens and on resize: at 80 columns the state is
shown by its icons and the texts are short; wider screens give the texts the room.
"""
from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from ..keys import CANDIDATES_KEYS
from ..text import head, number, safe
from ..widgets.search_tree import ICONS, node_icons, node_roles, node_text
from .modals import HelpScreen

STATES = ("final", "best", "accepted", "beam", "pruned", "failed", "human")


def reward_scale(snap: dict) -> tuple[str, str, str]:
    """The reward column's header, a short and a long sentence on what it is, per method."""
    method, fam = snap.get("method", ""), snap.get("family", "")
    if fam == "drpo":
        return ("R 1–5", "R: mean aspect score 1–5, each level judged on its own query",
                "R = mean of the judged aspects' scores, 1–5; each level is judged on its own "
                "query, so rewards of different levels are not on one footing")
    if fam == "vapo":
        state = (snap.get("session") or {}).get("method_state") or {}
        if state.get("task_type") == "multiple-choice":
            return ("acc 0–1", "accuracy on the validation split, 0–1",
                    "accuracy on the validation split, 0–1 (an unreadable answer counts as wrong)")
        return ("judge 0–1", "the judge's score on the validation split, 0–1",
                "the judge's score on the validation split, 1–5 scaled to 0–1")
    if method == "picaco":
        return ("TC_e", "TC_e (Eq. 4) on the pools of its iteration t",
                "TC_e (Eq. 4) on the pools of its iteration t; values from other pools are not "
                "on one footing")
    if method == "opro":
        return ("score %", "OPRO's score: mean conformity, in percent",
                "OPRO's score: the mean conformity of its answers on the prompts, in percent")
    return ("conf %", "mean conformity of its answers, in percent",
            "the mean conformity of its answers on the prompts, in percent")


def level_of(node: dict) -> str:
    level = node["meta"].get("level")
    if not isinstance(level, int) or isinstance(level, bool):
        level = node.get("depth")
    return number(level, "d", "")


def judged_on(snap: dict, node: dict) -> str:
    """What the node's reward was measured on, in one line."""
    detail = node.get("detail") or {}
    fam = snap.get("family")
    if fam == "vapo":
        results = detail.get("validation")
        parts = []
        if isinstance(results, list) and results:
            ok = sum(1 for r in results if isinstance(r, dict) and r.get("correct"))
            parts.append(f"val {ok}/{len(results)} right")
        action = detail.get("action") if isinstance(detail.get("action"), dict) else {}
        batch = action.get("batch")
        if isinstance(batch, list) and batch:
            parts.append(f"batch of {len(batch)}")
        elif action.get("from"):
            parts.append(f"from {action['from']}")
        return " · ".join(parts) or str(detail.get("query") or "")
    if fam == "picaco":
        text = str(detail.get("query") or "")
        t = detail.get("pe_iteration")
        if snap.get("method") == "picaco" and t is not None:
            text += f" · pools t{number(t, 'd')}"
        return text
    query = detail.get("query") or node["meta"].get("query") or ""
    return str(query)


def state_words(snap: dict, node: dict) -> list[str]:
    roles = node_roles(snap, node)
    return [s for s in STATES if s in roles]


def is_icl(snap: dict, node: dict) -> bool:
    """A DRPO ICL-example version: its reward judges an example, not the system prompt."""
    return snap.get("family") == "drpo" and (node.get("meta") or {}).get("phase") == "icl"


def candidate_rows(snap: dict) -> list[dict]:
    """The rows of the view: scored nodes by reward (highest first; ties: the earlier node),
    then DRPO's scored ICL-example versions by reward (group "icl", rank None; only when the
    session has system-prompt nodes too, as the ★ best is then a system prompt), then failed
    nodes that have no score (rank None)."""
    def order(node: dict) -> int:
        tail = str(node["id"])[1:]
        return int(tail) if tail.isdigit() else 0

    nodes = list(snap["nodes"].values())
    scored = [n for n in nodes if isinstance(n.get("reward"), (int, float))
              and not isinstance(n.get("reward"), bool)]
    scored.sort(key=lambda n: (-n["reward"], order(n)))
    icl = [n for n in scored if is_icl(snap, n)]
    if len(icl) < len(scored):  # system prompts ranked; the ICL versions on their own
        scored = [n for n in scored if n not in icl]
    else:
        icl = []
    unscored = sorted((n for n in nodes if n not in scored and n not in icl
                       and n["status"] == "failed"), key=order)
    rows = []
    for rank, node in enumerate(scored + icl + unscored, 1):
        rows.append({"rank": rank if node in scored else None, "node": node,
                     "group": "icl" if node in icl else "prompt",
                     "id": str(node["id"]), "level": level_of(node),
                     "reward": node.get("reward"), "query": judged_on(snap, node),
                     "states": state_words(snap, node), "icons": node_icons(snap, node),
                     "prompt": node_text(snap, node)})
    return rows


class CandidatesScreen(Screen):
    """Every scored node ranked by reward; dismissed with the chosen node's id (or None)."""

    BINDINGS = [
        Binding("escape,q", "back", "back"),
        Binding("backspace", "erase", "erase", show=False),
        Binding("question_mark", "help", "help"),
    ]
    DEFAULT_CSS = """
    CandidatesScreen #c-title { height: auto; max-height: 4; padding: 0 1; background: $panel; }
    CandidatesScreen #c-table { height: 1fr; }
    """

    def __init__(self, snap: dict):
        super().__init__()
        self.snap = snap
        self.rows = candidate_rows(snap)
        self._width = 0
        self.typed = ""  # type-to-jump: the id typed so far

    def compose(self) -> ComposeResult:
        yield Static(id="c-title")
        table = DataTable(id="c-table", cursor_type="row", zebra_stripes=True)
        yield table
        yield Footer()

    def on_mount(self) -> None:
        self._fill()
        self.query_one(DataTable).focus()

    def on_resize(self) -> None:
        if self.size.width != self._width:
            self._fill()

    def _title(self, wide: bool) -> Text:
        snap = self.snap
        header, short, sentence = reward_scale(snap)
        scored = sum(1 for r in self.rows if r["rank"] is not None)
        icl = sum(1 for r in self.rows if r.get("group") == "icl")
        what = "system prompt" if icl else "scored node"
        title = safe(f"Candidates · {snap.get('name') or snap.get('id')} · {snap.get('method')} · "
                     f"{scored} {what}{'s' if scored != 1 else ''} by {header}", style="bold")
        title.append_text(safe("\n" + (sentence if wide else short)))
        if icl:
            title.append_text(safe(f"; then {icl} ICL" + (" example versions, judged on their "
                                                          "example" if wide else "")))
        if self.typed:
            found = self._match(self.typed) is not None
            title.append_text(safe(f"\ngo to: {self.typed}", style="bold reverse"))
            title.append_text(safe("" if found else "  (no such node)", style="dim")
                              + safe("  backspace: edit · escape: clear", style="dim"))
            return title
        legend = " ".join(f"{ICONS[s]} {s}" for s in ("best", "final", "accepted", "beam",
                                                       "pruned", "failed"))
        title.append_text(safe(f"\n{legend} · enter: show in the tree"
                               + (" · type an id: go to it · escape: back" if wide else ""),
                               style="dim"))
        return title

    def _fill(self) -> None:
        """(Re)build the table for the screen's width; the cursor stays on its node."""
        width = self.size.width or self.app.size.width
        self._width = width
        wide = width >= 120
        table = self.query_one(DataTable)
        keep = None
        if table.row_count:
            try:
                keep = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
            except Exception:
                keep = None
        table.clear(columns=True)
        self.query_one("#c-title", Static).update(self._title(wide))
        header = reward_scale(self.snap)[0]
        id_w = max([len(r["id"]) for r in self.rows] + [2])
        reward_w = max(len(header), 6)
        states = {r["id"]: (f"{r['icons']} {', '.join(r['states'])}".strip() if wide
                            else r["icons"]) for r in self.rows}
        status_w = min(max([len(v) for v in states.values()] + [5 if wide else 2]), 26)
        fixed = 3 + id_w + 3 + reward_w + status_w
        # every column takes one cell of padding on each side; a scroll bar may take two
        flex = max(16, width - fixed - 2 * 7 - 3)
        longest = max([len(r["query"]) for r in self.rows] + [9])
        query_w = max(9, min(longest, flex * 2 // 5))  # short queries leave the prompt room
        prompt_w = max(8, flex - query_w)
        for key, label, w in (("rank", "#", 3), ("id", "id", id_w), ("level", "lvl", 3),
                              ("reward", header, reward_w),
                              ("status", "state" if wide else "st", status_w),
                              ("query", "judged on", query_w),
                              ("prompt", "prompt (change from its parent)" if wide
                               else "prompt / change", prompt_w)):
            table.add_column(safe(label), key=key, width=w)
        cursor = 0
        for i, row in enumerate(self.rows):
            reward = number(row["reward"]) if row["reward"] is not None else "—"
            rank = ("ICL" if row.get("group") == "icl" else
                    "—" if row["rank"] is None else str(row["rank"]))
            table.add_row(
                safe(rank, style="dim" if row.get("group") == "icl" else ""),
                safe(row["id"], style="bold"), safe(row["level"]),
                Text(reward, justify="right"), safe(head(states[row['id']], status_w)),
                safe(head(row["query"], query_w)), safe(head(row["prompt"], prompt_w)),
                key=row["id"])
            if row["id"] == keep:
                cursor = i
        if self.rows:
            table.move_cursor(row=cursor)

    @on(DataTable.RowSelected)
    def _chosen(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.dismiss(event.row_key.value)

    def action_back(self) -> None:
        if self.typed:  # escape first clears what is typed
            self._type("")
            return
        self.dismiss(None)

    def action_erase(self) -> None:
        if self.typed:
            self._type(self.typed[:-1])

    # ------------------------------------------------------------------ type-to-jump

    def _match(self, typed: str) -> int | None:
        """The row of the node whose id is `typed` (`100` is `n100`), else the first row
        (by id order) whose id starts with it; None when none does."""
        wanted = [typed.lower()]
        if typed[:1].isdigit():
            wanted.append("n" + typed.lower())
        ids = [r["id"].lower() for r in self.rows]
        for w in wanted:
            if w in ids:
                return ids.index(w)
        starts = [(len(i), i, k) for k, i in enumerate(ids) if any(i.startswith(w) for w in wanted)]
        return min(starts)[2] if starts else None

    def _type(self, typed: str) -> None:
        self.typed = typed[:20]
        if self.typed:
            row = self._match(self.typed)
            if row is not None:
                self.query_one(DataTable).move_cursor(row=row)
        self.query_one("#c-title", Static).update(self._title(self._width >= 120))

    def on_key(self, event) -> None:
        char = event.character
        if (char and len(char) == 1 and (char.isalnum() or char in "-_:")
                and char.isascii() and (self.typed or char not in "q")):
            event.stop()
            event.prevent_default()
            self._type(self.typed + char)
        elif event.key == "escape" and self.typed:
            event.stop()
            event.prevent_default()
            self._type("")

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen(CANDIDATES_KEYS, "Candidates keys"))
