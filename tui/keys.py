"""The key tables the help screens show: the workbench's (`KEYS`, with the tree's icons),
the session browser's and the Results view's. Each is a list of (key, what it does); the
keys themselves are bound on each screen, and the command palette's lists are in
`tui.commands`. `APP_KEYS` work on every screen: the help screen adds them below each
screen's own table.
"""
from __future__ import annotations

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
    ("1–6", "the detail's tabs: Prompt, Response, Reward, Critique, Diff, Calls"),
    ("z", "the active tab in full (every cut text whole), scrollable; escape back"),
    ("C", "candidates: every scored node ranked by reward (enter shows it in the tree)"),
    ("/", "filter the tree: words, an id, or best final accepted beam pruned failed open "
          "expanded root human (escape clears)"),
    ("?", "these keys"),
    ("escape", "back to the browser (the session is saved; a run asks first)"),
    ("q", "back to the browser; opened directly on one session: quit"),
]

BROWSER_KEYS = [
    ("enter", "open the session in the workbench / the evaluation's results"),
    ("e", "move between the sessions and the evaluations"),
    ("v", "results of the session's held-out evaluation (root vs final)"),
    ("n", "new session"), ("r", "rename the session"), ("d", "delete the session"),
    ("o", "export the session's prompt (markdown file)"), ("?", "these keys"),
    ("q", "quit"),
]

RESULTS_KEYS = [
    ("1 / 2", "the Summary / Items tab"),
    ("w", "items that got worse (than the baseline, for the compared prompt)"),
    ("b", "items that got better"), ("a", "all items"),
    ("s", "focus the other answer (left: baseline, right: compared prompt)"),
    ("[ / ]", "previous / next sample of the item (k > 1)"),
    ("p", "compare the next prompt with the baseline (3 prompts or more)"),
    ("z / enter", "the focused answer's full text"),
    ("?", "these keys"), ("escape / q", "back"),
]

# every screen: shown below each screen's own keys
APP_KEYS = [
    ("ctrl+p", "command palette (this screen's actions, the themes)"),
    ("ctrl+q", "quit PromptArbor (asks first while a run or a comparison is in progress)"),
]

CANDIDATES_KEYS = [
    ("up / down", "move through the ranked nodes (DRPO: system prompts, then ICL versions)"),
    ("n100 / 100", "type a node's id to go to it (backspace edits; escape clears)"),
    ("enter", "back to the workbench with that node shown and selected in the tree"),
    ("?", "these keys"), ("escape / q", "back to the workbench"),
]
