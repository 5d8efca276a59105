"""The search tree of the workbench.

- `ICONS`, `MARK` (the node marked to compare) and `LEGEND` (what the help shows);
- `node_parts` / `node_label`: the label of one node — its icons (★ best, ◎ final,
  ✓ accepted; else its state), its id (dim), its reward, what it changes in its parent's
  text (`change_summary`, word by word) and the method's short statistics (VAPO's Q, N,
  UCT);
- `SearchTree`: a Textual `Tree` that fits each label to the pane's width when it draws it
  (wider pane, longer labels; the statistics go first when room is short);
- `FilterInput` and `filter_ids`: the `/` filter (words of the text, an id, or a status);
- `sync_tree`: brings the tree up to date with a snapshot — new nodes added under their
  parents, changed labels set, the paths to the best, final and accepted nodes and the
  beam opened once (a branch the person closes stays closed), off-path branches collapsed;
  with a filter, only the matching nodes and their ancestors.

Labels are `rich.text.Text` (model text is never read as markup).
"""
from __future__ import annotations

import difflib
import re
from functools import lru_cache

from rich.style import Style
from rich.text import Span, Text
from textual.binding import Binding
from textual.widgets import Input, Tree
from textual.widgets._tree import TOGGLE_STYLE, TreeNode

from ..text import head, number, safe, strip_escapes
from promptarbor.engine.prompts.drpo import SMALL_BULLET_START

ICONS = {"root": "◆", "beam": "●", "best": "★", "final": "◎", "expanded": "○", "pruned": "⌀",
         "failed": "✗", "accepted": "✓", "open": "·"}
MARK = "⚑"
LEGEND = (f"{ICONS['best']} best so far · {ICONS['final']} final · {ICONS['accepted']} accepted · "
          f"{ICONS['beam']} in the beam (DRPO) / on the current MCTS path (VAPO) / on the best "
          f"path · {ICONS['root']} root · "
          f"{ICONS['expanded']} scored · {ICONS['open']} not scored yet · "
          f"{ICONS['pruned']} pruned · {ICONS['failed']} failed")
# words of a `/` filter that select by state rather than by text
STATUS_WORDS = ("best", "final", "accepted", "beam", "pruned", "failed", "open", "expanded",
                "root", "human")
_SHORT = 28  # below this many cells for the text, a label drops the method's statistics


def label_suffix(snap: dict, node: dict) -> str:
    """Short per-node statistics shown after the text in the tree label (VAPO)."""
    stats = snap.get("stats", {}).get(node["id"])
    if not stats:
        return ""
    if snap["family"] == "vapo":
        u = "" if stats.get("UCT") is None else f" U{number(stats['UCT'])}"
        return f"Q{number(stats.get('Q'))} N{number(stats.get('N'), 'd')}{u}"
    return ""  # PICACO: the reward shown is TC_e (OPRO: its score)


def _summary_ids(snap: dict) -> tuple[str | None, str | None]:
    summary = snap.get("summary") or {}
    final = summary.get("final") or {}
    return (final.get("node") if isinstance(final, dict) else None), summary.get("accepted")


def node_roles(snap: dict, node: dict) -> set[str]:
    """Every state word that fits the node: root, beam (in the beam or on the best path),
    best, final, accepted, pruned, failed, open, expanded, human."""
    final, accepted = _summary_ids(snap)
    roles = {node["status"]}
    if node["kind"] == "root":
        roles.add("root")
    if node["kind"] == "human":
        roles.add("human")
    if node["id"] in snap.get("beam", ()) or node["id"] in snap.get("best_path", ()):
        roles.add("beam")
    if node["id"] == snap.get("best"):
        roles.add("best")
    if node["id"] == final:
        roles.add("final")
    if node["accepted"] or node["id"] == accepted:
        roles.add("accepted")
    return roles


def node_icons(snap: dict, node: dict, roles: set[str] | None = None) -> str:
    """✓ ◎ ★ for the accepted, final and best node (together when one node is several),
    with ✗ / ⌀ when it failed or is pruned; otherwise one icon of its state."""
    roles = node_roles(snap, node) if roles is None else roles
    icons = "".join(ICONS[r] for r in ("accepted", "final", "best") if r in roles)
    if "failed" in roles:
        icons += ICONS["failed"]
    elif "pruned" in roles:
        icons += ICONS["pruned"]
    if icons:
        return icons
    for role in ("root", "beam"):
        if role in roles:
            return ICONS[role]
    return ICONS["open"] if node["reward"] is None else ICONS["expanded"]


_TOKEN = re.compile(r"\w+|[^\w\s]")
_EDGE = " \t\n-*•+,.;:"  # list markers and punctuation trimmed from a fragment's ends


def _fragment(text: str, tokens: list, i: int, j: int) -> str:
    """The original text of tokens i..j-1 in one line, list markers and stray punctuation
    trimmed from its ends (kept when that is all it holds)."""
    raw = " ".join(text[tokens[i].start():tokens[j - 1].end()].split())
    return raw.strip(_EDGE) or raw


@lru_cache(maxsize=8192)
def change_summary(old: str, new: str) -> str:
    """What `new` changes in `old`, word by word (punctuation apart), in one line, the
    largest change first: `+ added words`, `− removed words`, `old → new` for a short
    replacement, `~ new words` for a longer one, joined by ` · `. A text that keeps less
    than a third of the parent's words: `rewritten: <its text>`."""
    if old and new.startswith(old) and not (old[-1].isalnum() and new[len(old):][:1].isalnum()):
        added = " ".join(new[len(old):].split())  # the common case: text added at the end
        if added:
            added = added.strip(_EDGE) or added
            if added.startswith(SMALL_BULLET_START) and len(added) > len(SMALL_BULLET_START):
                # the embedded optimizer's bullets all start so: show what differs
                added = "…" + added[len(SMALL_BULLET_START):]
            return "+ " + added
    ta, tb = list(_TOKEN.finditer(old)), list(_TOKEN.finditer(new))
    a, b = [t.group() for t in ta], [t.group() for t in tb]
    if a == b:
        return "= same text as the parent" + ("" if old == new else " (spacing differs)")
    # the common start and end first: the matcher compares only what lies between
    shorter, head_n, tail_n = min(len(a), len(b)), 0, 0
    while head_n < shorter and a[head_n] == b[head_n]:
        head_n += 1
    while tail_n < shorter - head_n and a[-1 - tail_n] == b[-1 - tail_n]:
        tail_n += 1
    mid_a, mid_b = a[head_n:len(a) - tail_n], b[head_n:len(b) - tail_n]
    if mid_a and mid_b:
        matcher = difflib.SequenceMatcher(None, mid_a, mid_b, autojunk=False)
        inner = sum(block.size for block in matcher.get_matching_blocks())
        opcodes = [(tag, i1 + head_n, i2 + head_n, j1 + head_n, j2 + head_n)
                   for tag, i1, i2, j1, j2 in matcher.get_opcodes()]
    else:
        inner = 0
        opcodes = [("insert" if mid_b else "delete", head_n, len(a) - tail_n, head_n,
                    len(b) - tail_n)]
    if a and b and (head_n + tail_n + inner) * 3 < len(a):
        return "rewritten: " + " ".join(new.split())
    pieces = []
    for tag, i1, i2, j1, j2 in opcodes:
        if tag == "insert":
            pieces.append((j2 - j1, "+ " + _fragment(new, tb, j1, j2)))
        elif tag == "delete":
            pieces.append((i2 - i1, "− " + _fragment(old, ta, i1, i2)))
        elif tag == "replace":
            if i2 - i1 <= 3 and j2 - j1 <= 6:
                pieces.append((j2 - j1, _fragment(old, ta, i1, i2) + " → "
                               + _fragment(new, tb, j1, j2)))
            else:
                pieces.append((j2 - j1, "~ " + _fragment(new, tb, j1, j2)))
    pieces.sort(key=lambda p: -p[0])  # stable: equal sizes keep the text's order
    return " · ".join(text for _, text in pieces)


def node_text(snap: dict, node: dict) -> str:
    """The text part of a label: a root's first line, else what the node changes in its
    parent (DRPO's ICL phase: which example, then the change in its answer)."""
    icl = node["meta"].get("phase") == "icl"
    example = node["meta"].get("example", 0)
    prefix = ""
    if icl:
        prefix = f"ICL {example + 1 if isinstance(example, int) else strip_escapes(str(example))}: "
    if not node["text"]:
        if node["status"] == "failed":
            error = head(node.get("error") or "", 120)
            return prefix + (f"(failed: {error})" if error else "(failed)")
        return prefix + "(writing…)"
    parent = snap["nodes"].get(node["parent"]) if node["parent"] else None
    if parent is None:
        if icl:
            return prefix + head(node["meta"].get("query", ""), 300)
        return head(node["text"], 300)
    if not parent.get("text"):
        return prefix + head(node["text"], 300)
    return prefix + change_summary(parent["text"], node["text"])


def node_parts(snap: dict, node: dict, marked: str | None = None) -> tuple[Text, Text, Text]:
    """A label in three parts: head (mark, icons, id, reward), body (the text part) and
    tail (the method's statistics, dim)."""
    roles = node_roles(snap, node)
    mark = f"{MARK} " if node["id"] == marked else ""
    icons = node_icons(snap, node, roles)
    node_id = strip_escapes(str(node["id"]))
    reward = "—" if node["reward"] is None else number(node["reward"])
    start = len(mark) + len(icons) + 1
    spans = [Span(start, start + len(node_id), "dim")]
    if mark:
        spans.append(Span(0, len(mark), "bold yellow"))
    label = Text(f"{mark}{icons} {node_id} {reward} ", spans=spans)
    body = safe(" ".join(node_text(snap, node).split()))
    suffix = label_suffix(snap, node)
    tail = Text(suffix, style="dim") if suffix else Text()
    style = "dim" if "pruned" in roles else "bold" if "best" in roles or "final" in roles else ""
    if style:
        label.stylize(style)
        body.stylize(style)
    return label, body, tail


def fit_label(parts: tuple[Text, Text, Text], width: int | None) -> Text:
    """The label in `width` cells (None: whole): the text is cut with `…`; the statistics
    are kept only while the text still gets a fair share of the room."""
    if width is None:  # the parts as they are, not copied
        out = Text()
        out.append_text(parts[0])
        out.append_text(parts[1])
        if parts[2].plain:
            out.append("  ")
            out.append_text(parts[2])
        return out
    label, body, tail = (p.copy() for p in parts)
    width = max(1, width)
    if label.cell_len >= width:
        label.truncate(width, overflow="ellipsis")
        return label
    room = width - label.cell_len
    if tail.plain and room - tail.cell_len - 2 >= min(body.cell_len, _SHORT):
        body.truncate(room - tail.cell_len - 2, overflow="ellipsis")
        out = label + body
        out.append("  ")
        out.append_text(tail)
        return out
    body.truncate(room, overflow="ellipsis")
    return label + body


def node_label(snap: dict, node: dict, marked: str | None = None,
               width: int | None = None) -> Text:
    return fit_label(node_parts(snap, node, marked), width)


# ----------------------------------------------------------------------------- the widget

class SearchTree(Tree):
    """A `Tree` whose labels are cut to the pane's width when drawn (not when made): a wider
    pane shows more of each label, a resize re-fits them."""

    DEFAULT_CSS = "SearchTree { overflow-x: hidden; }"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.parts: dict[str, tuple[Text, Text, Text]] = {}  # node id -> label parts
        self.opened: set[str] = set()     # nodes whose path sync_tree has opened once
        self.filter_query = ""            # the `/` filter shown (empty: the whole tree)
        self.shown: set[str] | None = None  # the nodes a filter shows
        self.signatures: dict[str, tuple] = {}  # node id -> what its label was made of

    def label_room(self, node: TreeNode) -> int:
        """Cells the label of `node` may take: the pane's width (a vertical scroll bar's
        room kept) less the guides and the expand icon."""
        region = self.scrollable_content_region.width
        if not self.show_vertical_scrollbar:
            region -= self.styles.scrollbar_size_vertical
        depth, current = 0, node.parent
        while current is not None and current is not self.root:
            depth += 1
            current = current.parent
        guides = (depth + (1 if self.show_root else 0)) * self.guide_depth
        toggle = len(self.ICON_NODE) if node.allow_expand else 0
        return region - guides - toggle

    def render_label(self, node: TreeNode, base_style: Style, style: Style) -> Text:
        parts = self.parts.get(node.data) if node.data is not None else None
        if parts is None or self.size.width <= 0:
            return super().render_label(node, base_style, style)
        label = fit_label(parts, self.label_room(node))
        label.stylize(style)
        if node.allow_expand:
            prefix = (self.ICON_NODE_EXPANDED if node.is_expanded else self.ICON_NODE,
                      base_style + TOGGLE_STYLE)
        else:
            prefix = ("", base_style)
        return Text.assemble(prefix, label)

    def on_resize(self) -> None:
        self._invalidate()  # labels are fitted to the width: measure them again

    def reveal(self, node_id: str) -> TreeNode | None:
        """Open the path down to `node_id` and put the cursor on it (once the tree has been
        laid out again). None when the node is not in the tree (filtered out)."""
        tree_node = self.node_of(node_id)
        if tree_node is None:
            return None
        current = tree_node.parent
        while current is not None and current is not self.root:
            current.expand()
            current = current.parent
        self.call_after_refresh(self._cursor_to, tree_node)
        return tree_node

    def _cursor_to(self, tree_node: TreeNode) -> None:
        self._tree_lines  # the lines laid out with the path just opened  # noqa: B018
        if self._tree_nodes.get(tree_node.id) is tree_node:  # not cleared meanwhile
            self.move_cursor(tree_node)

    def node_of(self, node_id: str) -> TreeNode | None:
        stack = list(self.root.children)
        while stack:
            current = stack.pop()
            if current.data == node_id:
                return current
            stack.extend(current.children)
        return None


class FilterInput(Input):
    """The `/` filter above the tree: typing filters at once, enter (or down) moves to the
    tree keeping the filter, escape clears it and closes."""

    BINDINGS = [Binding("escape", "close", "clear the filter", show=True),
                Binding("down", "to_tree", "to the tree", show=False)]

    def action_close(self) -> None:
        self.value = ""
        self.display = False
        self.screen.query_one(Tree).focus()

    def action_to_tree(self) -> None:
        self.screen.query_one(Tree).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if not self.value.strip():
            self.display = False
        self.screen.query_one(Tree).focus()


def node_matches(snap: dict, node: dict, query: str) -> bool:
    """Does `node` match a `/` filter? Its words that name a state (`STATUS_WORDS`) must all
    fit the node (`failed`, `final best`…); the rest, as one phrase, must appear in its id,
    its text or its critique (case is ignored)."""
    words = query.lower().split()
    states = [w for w in words if w in STATUS_WORDS]
    phrase = " ".join(w for w in words if w not in STATUS_WORDS)
    if states and not set(states) <= node_roles(snap, node):
        return False
    if not phrase:
        return True
    if phrase == str(node["id"]).lower():
        return True
    haystack = " ".join(str(node.get(k) or "") for k in ("text", "critique", "error"))
    return phrase in " ".join(strip_escapes(haystack).lower().split())


def filter_ids(snap: dict, query: str) -> set[str]:
    """The nodes a `/` filter shows: the matching ones and their ancestors."""
    nodes = snap["nodes"]
    shown: set[str] = set()
    for node_id, node in nodes.items():
        if node_matches(snap, node, query):
            current = node_id
            while current is not None and current not in shown and current in nodes:
                shown.add(current)
                current = nodes[current]["parent"]
    return shown


def sync_tree(tree: Tree, snap: dict, tree_nodes: dict, marked: str | None = None,
              query: str = "") -> None:
    """Bring `tree` up to date with `snap`; `tree_nodes` (node id -> tree node) is updated.

    The paths to the best, final and accepted nodes, the best path and the beam are opened
    the first time each is seen (on opening a session: all of them); a branch the person
    closes afterwards stays closed. `query`: the `/` filter (empty: every node)."""
    nodes = snap["nodes"]
    query = query.strip()
    shown = filter_ids(snap, query) if query else None
    if isinstance(tree, SearchTree):
        # another filter, or a node it showed no longer matches: draw the tree anew
        if query != tree.filter_query or (shown is not None and tree.shown is not None
                                          and not tree.shown <= shown):
            tree.clear()
            tree_nodes.clear()
            tree.opened.clear()
            tree.signatures.clear()
        tree.shown, tree.filter_query = shown, query
    parts_of = tree.parts if isinstance(tree, SearchTree) else None
    signatures = tree.signatures if isinstance(tree, SearchTree) else {}
    final, accepted = _summary_ids(snap)
    beam, best_path = set(snap.get("beam", ())), set(snap.get("best_path", ()))
    on_path = best_path | beam
    stats = snap.get("stats") or {}
    for node_id in sorted(nodes, key=lambda i: int(i[1:]) if i[1:].isdigit() else 0):
        if shown is not None and node_id not in shown:
            continue
        node = nodes[node_id]
        parent_node = nodes.get(node["parent"]) if node["parent"] else None
        # what the label is made of: unchanged, the label is not built again
        signature = (node["text"], parent_node["text"] if parent_node else None, node["reward"],
                     node["status"], node["accepted"], node.get("error"), node["kind"],
                     node_id == marked, node_id in beam, node_id in best_path,
                     node_id == snap.get("best"), node_id == final, node_id == accepted,
                     repr(stats.get(node_id)), repr(node["meta"].get("example")),
                     node["meta"].get("phase"), repr(node["meta"].get("query")))
        if node_id in tree_nodes and signatures.get(node_id) == signature:
            continue
        signatures[node_id] = signature
        parts = node_parts(snap, node, marked)
        if parts_of is not None:
            parts_of[node_id] = parts
        label = fit_label(parts, None)
        if node_id in tree_nodes:
            tree_node = tree_nodes[node_id]
            if tree_node.label != label:
                tree_node.set_label(label)
            continue
        parent = tree_nodes.get(node["parent"]) if node["parent"] else tree.root
        if parent is None:
            continue
        parent.allow_expand = True
        tree_node = parent.add(label, data=node_id, expand=shown is not None or
                               node_id in on_path or node["parent"] is None,
                               allow_expand=bool(node["children"]))
        tree_nodes[node_id] = tree_node
    if shown is not None:
        return
    opened = getattr(tree, "opened", set())
    # the beam and the best path open themselves; best, final and accepted show (their
    # ancestors open); each once, so what the person closes stays closed
    targets = [(i, True) for i in on_path] + [(i, False) for i in (snap.get("best"), final,
                                                                  accepted) if i]
    for node_id, itself in targets:
        key = f"{node_id}:{int(itself)}"
        if key in opened or node_id not in tree_nodes:
            continue
        opened.add(key)
        tree_node = tree_nodes[node_id] if itself else tree_nodes[node_id].parent
        while tree_node is not None and tree_node is not tree.root:
            tree_node.expand()
            tree_node = tree_node.parent
