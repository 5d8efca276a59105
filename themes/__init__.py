"""PromptArbor's Textual themes: a dark and a light one of our own."""
from __future__ import annotations

from textual.theme import Theme

ARBOR_DARK = Theme(
    name="arbor-dark",
    primary="#7fb685",      # leaf green
    secondary="#d4a373",    # bark
    accent="#e9c46a",       # best-so-far gold
    warning="#f4a261",
    error="#e76f51",
    success="#8ac926",
    foreground="#e6e1d6",
    background="#1b1e1a",
    surface="#242822",
    panel="#2d332b",
    dark=True,
)

ARBOR_LIGHT = Theme(
    name="arbor-light",
    primary="#2d6a4f",
    secondary="#8d5b2e",
    accent="#b5838d",
    warning="#c76b1c",
    error="#b23a48",
    success="#40916c",
    foreground="#1f2421",
    background="#f7f5ef",
    surface="#efece3",
    panel="#e3dfd3",
    dark=False,
)

THEMES = [ARBOR_DARK, ARBOR_LIGHT]
DEFAULT_THEME = ARBOR_DARK.name
