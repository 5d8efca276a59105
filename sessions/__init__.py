"""Sessions: the TinyDB store (save after every step, resume, lock) and export."""
from .store import (CorruptSession, SessionLocked, SessionNotFound, SessionStore, StoreError,
                    default_store_dir, summarize)

__all__ = ["CorruptSession", "SessionLocked", "SessionNotFound", "SessionStore", "StoreError",
           "default_store_dir", "summarize"]
