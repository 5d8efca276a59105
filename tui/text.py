"""Model text for the screen: plain `rich.text.Text`, never markup, no terminal escapes."""
from __future__ import annotations

import re

from rich.text import Text

# CSI / OSC / other ESC sequences, and C0/C1 controls except tab and newline
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"          # CSI ... final byte
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC ... BEL or ST
    r"|\x1b[PX^_][^\x1b]*(?:\x1b\\)?"   # DCS, SOS, PM, APC
    r"|\x1b[@-Z\\-_]"                   # two-byte sequences
    r"|[\x00-\x08\x0b-\x1f\x7f-\x9f]"   # remaining controls
)


def strip_escapes(value: str) -> str:
    return _ESCAPES.sub("", value)


def safe(value: object, style: str = "") -> Text:
    """Text shown exactly as written: brackets stay brackets, escapes are removed."""
    return Text(strip_escapes("" if value is None else str(value)), style=style)


def head(value: str, width: int = 48) -> str:
    """First line of a text, cut to `width` characters."""
    line = strip_escapes(value or "").strip().splitlines()[0] if (value or "").strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"
