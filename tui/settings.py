"""Where the app keeps its own settings (the chosen theme): a small JSON file in the session
store's folder, read when the app starts and written when the theme changes.
"""
from __future__ import annotations

from pathlib import Path


def settings_path(store_root: Path) -> Path:
    return Path(store_root) / "settings.json"
