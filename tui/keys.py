"""The key tables the help screens show: the workbench's (`KEYS`, with the tree's icons),
the session browser's and the Results view's. Each is a list of (key, what it does); the
keys themselves are bound on each screen, and the command palette's lists are in
`tui.commands`.
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

RESULTS_KEYS = [
    ("1 / 2", "the Summary / Items tab"),
    ("w", "items that got worse (than the baseline, for the compared prompt)"),
    ("b", "items that got better"), ("a", "all items"),
    ("s", "focus the other answer (left: baseline, right: compared prompt)"),
    ("[ / ]", "previous / next sample of the item (k > 1)"),
    ("p", "compare the next prompt with the baseline (3 prompts or more)"),
    ("z / enter", "the focused answer's full text"),
    ("?", "help"), ("escape / q", "back"),
]
