"""PromptArbor's faces: the command line (tui.cli) and, later, the Textual workbench."""
