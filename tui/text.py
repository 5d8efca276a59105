"""Model text for the screen: plain `rich.text.Text`, never markup, no terminal escapes.

Anything that came from a model, a provider, a data file or a session file is shown
through these helpers:

- `safe(value)`: a `rich.text.Text` (never parsed as markup) with every terminal control
  sequence and control character removed (newlines and tabs kept);
- `plain_markup(value)`: the same text as Textual content markup that shows literally
  (for the few APIs that take markup strings); `App.notify` is called with `markup=False`
  instead where possible (see `toast`);
- `toast(target, message)`: a notification shown literally (escapes removed, markup off).
"""
from __future__ import annotations

import re

from rich.text import Text

# Terminal control sequences, 7-bit (ESC ...) and 8-bit (C1) forms, then every remaining
# C0/C1 control character except tab and newline. String sequences (OSC, DCS, SOS, PM,
# APC) run to their terminator (BEL or ST, 7- or 8-bit) or, unterminated, to the next
# ESC / C1 introducer, newline or the end.
_ST = r"(?:\x07|\x1b\\|\x9c)"
_ESCAPES = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"                  # CSI ... final byte (7/8-bit)
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])"            # OSC, DCS, SOS, PM, APC
    r"[^\x07\x1b\x9c\x90\x98\x9b\x9d\x9e\x9f\n]*" + _ST + r"?"
    r"|\x1b[ -/]*[0-~]"                                     # nF / Fp / Fe / Fs escapes
    r"|\x1b"                                                # a lone ESC
    r"|[\x00-\x08\x0b-\x1f\x7f-\x9f]"                       # remaining C0/C1 controls, DEL
    r"|[\u202a-\u202e\u2066-\u2069]"                        # bidi overrides (text reordering)
)


def strip_escapes(value: str) -> str:
    """`value` without terminal sequences or control characters; newlines and tabs kept
    (a CR LF pair becomes a newline)."""
    return _ESCAPES.sub("", value.replace("\r\n", "\n"))


def safe(value: object, style: str = "") -> Text:
    """Text shown exactly as written: brackets stay brackets, escapes are removed."""
    return Text(strip_escapes("" if value is None else str(value)), style=style)


def plain_markup(value: object) -> str:
    """`value` as Textual content markup that renders literally (escapes removed, every
    `[` escaped), for APIs taking markup strings such as `notify(..., markup=True)`."""
    return strip_escapes("" if value is None else str(value)).replace("[", "\\[")


def one_line(value: object, width: int = 200) -> str:
    """A message cut to its first non-empty line and `width` characters, escapes removed."""
    text = strip_escapes("" if value is None else str(value)).strip()
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return line if len(line) <= width else line[: width - 1] + "…"


def head(value: str, width: int = 48) -> str:
    """First line of a text, cut to `width` characters."""
    text = strip_escapes("" if value is None else str(value)).strip()
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= width else line[: width - 1] + "…"


def number(value: object, spec: str = ".2f", missing: str = "—") -> str:
    """A number formatted with `spec`; anything else (a string from a hostile or damaged
    file) shown as plain text instead of raising."""
    if value is None:
        return missing
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return format(value, spec)
        except (ValueError, TypeError):
            pass
    return strip_escapes(str(value))


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
