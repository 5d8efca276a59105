"""Sessions: the TinyDB store (save after every step, resume, lock) and export."""
from .store import (CorruptSession, InvalidSessionId, SessionLocked, SessionNotFound, SessionStore,
                    StoreError, StoreUnavailable, UnsupportedSchema, check_session,
                    check_session_id, default_store_dir, summarize)

__all__ = ["CorruptSession", "InvalidSessionId", "SessionLocked", "SessionNotFound",
           "SessionStore", "StoreError", "StoreUnavailable", "UnsupportedSchema", "check_session",
           "check_session_id", "default_store_dir", "summarize"]
