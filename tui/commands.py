"""The command palette's entries: besides Textual's own system commands, "Help: keys" and
each screen's actions with their keys (the workbench's `WORKBENCH_COMMANDS`, the browser's,
the Results view's `RESULTS_COMMANDS`). `screen_commands` yields them for the screen the
palette was opened on; the app hooks it into `App.get_system_commands`.
"""
from __future__ import annotations

from textual.app import SystemCommand

from .screens.browser import BrowserScreen
from .screens.results import ResultsScreen
from .screens.workbench import WorkbenchScreen

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
    ("C", "candidates: every scored node ranked by reward", "candidates"),
    ("/", "filter the tree by words, an id or a state", "filter"),
]

# the Results screen's commands in the palette: key, what it does, action (with arguments)
RESULTS_COMMANDS = [
    ("w", "items that got worse", "filter", ("worse",)),
    ("b", "items that got better", "filter", ("better",)),
    ("a", "all items", "filter", ("all",)), ("s", "focus the other answer", "side", ()),
    ("z", "full text of the focused answer", "full", ()), ("escape", "back", "close", ()),
]


def screen_commands(screen, show_help):
    """The palette's commands for `screen` (after Textual's own): help, then its actions."""
    yield SystemCommand("Help: keys", "the key table of this screen", show_help)
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
