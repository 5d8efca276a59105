"""Session store: one TinyDB file per session, written atomically after every step.

Layout of a store directory:

    sessions/<id>.json   TinyDB file: tables "session" (one document: config, status,
                         counters, method state), "nodes", "events", "calls"
    sessions/<id>.lock   held by the one process that may write the session
    cache/               the gateway's response cache (shared by all sessions)

TinyDB's own JSON storage rewrites the file in place, so a crash mid-write would corrupt
it. `AtomicJSONStorage` writes a temporary file, fsyncs it and renames it over the old one;
`CachingMiddleware` gathers a whole save into that one write. A file that does not parse
is moved aside (never overwritten) and reported.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
import time
from pathlib import Path

from filelock import FileLock, Timeout
from tinydb import TinyDB
from tinydb.middlewares import CachingMiddleware
from tinydb.storages import Storage

SCHEMA_VERSION = 1
# version -> function upgrading a loaded session from that version to the next one
MIGRATIONS: dict[int, callable] = {}
ID_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class StoreError(Exception):
    """A problem with the store, described for a person."""


class SessionLocked(StoreError):
    pass


class CorruptSession(StoreError):
    pass


class SessionNotFound(StoreError):
    pass


def default_store_dir() -> Path:
    env = os.environ.get("PROMPTARBOR_HOME")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("promptarbor", appauthor=False))


class AtomicJSONStorage(Storage):
    """TinyDB storage: whole-file JSON, replaced atomically (temp file, fsync, rename)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def read(self):
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        if not text.strip():
            return None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CorruptSession(f"{self.path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(data, dict):
            raise CorruptSession(f"{self.path}: not a TinyDB document")
        return data

    def write(self, data) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle, ensure_ascii=False)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        try:  # make the rename itself durable
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError:
            pass

    def close(self) -> None:
        pass


class _SaveCache(CachingMiddleware):
    WRITE_CACHE_SIZE = 10 ** 9  # flush only when told: one atomic write per save


class SessionStore:
    def __init__(self, root: str | Path | None = None):
        self.root = Path(root).expanduser() if root else default_store_dir()
        self.sessions_dir = self.root / "sessions"
        self.cache_dir = self.root / "cache"
        self._locks: dict[str, FileLock] = {}

    # ------------------------------------------------------------------ paths

    def path(self, session_id: str) -> Path:
        if not ID_PATTERN.match(session_id):
            raise StoreError(f"not a valid session id: {session_id!r}")
        return self.sessions_dir / f"{session_id}.json"

    def exists(self, session_id: str) -> bool:
        return self.path(session_id).exists()

    # ------------------------------------------------------------------ locking

    def lock(self, session_id: str) -> bool:
        """Become the one writer of this session, or raise SessionLocked.

        Returns False when this store already held the lock (nothing changed)."""
        if session_id in self._locks:
            return False
        self.sessions_dir.mkdir(parents=True, exist_ok=True)
        # not thread-local: the engine thread may take a lock the UI thread releases
        lock = FileLock(str(self.sessions_dir / f"{session_id}.lock"), thread_local=False)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise SessionLocked(f"session {session_id} is open in another PromptArbor process; "
                                f"close it there first") from None
        self._locks[session_id] = lock
        return True

    def unlock(self, session_id: str) -> None:
        lock = self._locks.pop(session_id, None)
        if lock is not None:
            lock.release()

    def close(self) -> None:
        for session_id in list(self._locks):
            self.unlock(session_id)

    # ------------------------------------------------------------------ save / load

    def save(self, session: dict) -> None:
        session_id = session["id"]
        if session_id not in self._locks:
            self.lock(session_id)
        head = {k: v for k, v in session.items() if k not in ("tree", "events", "call_log")}
        head["schema"] = SCHEMA_VERSION
        tree = session["tree"]
        head["tree_meta"] = {"roots": tree["roots"], "next_id": tree["next_id"]}
        db = TinyDB(self.path(session_id), storage=_SaveCache(AtomicJSONStorage))
        try:
            for name, docs in (("session", [head]), ("nodes", list(tree["nodes"].values())),
                               ("events", session["events"]), ("calls", session["call_log"])):
                table = db.table(name)
                table.truncate()
                if docs:
                    table.insert_multiple(docs)
            db.storage.flush()
        finally:
            db.close()

    def load(self, session_id: str) -> dict:
        path = self.path(session_id)
        if not path.exists():
            raise SessionNotFound(f"no session {session_id!r} in {self.sessions_dir}")
        try:
            raw = AtomicJSONStorage(path).read()
            if raw is None:
                raise CorruptSession(f"{path}: empty file")
            session = self._assemble(raw, path)
        except CorruptSession as exc:
            aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
            os.replace(path, aside)
            raise CorruptSession(f"session {session_id} could not be read ({exc}); the file was "
                                 f"kept aside as {aside.name} and nothing was overwritten") from None
        return session

    def _assemble(self, raw: dict, path: Path) -> dict:
        def docs(table):
            items = raw.get(table, {})
            if not isinstance(items, dict):
                raise CorruptSession(f"{path}: table {table!r} is malformed")
            return [items[k] for k in sorted(items, key=lambda k: int(k))]
        try:
            heads = docs("session")
            if len(heads) != 1:
                raise CorruptSession(f"{path}: expected one session document")
            session = dict(heads[0])
            version = session.get("schema", 0)
            if version > SCHEMA_VERSION:
                raise StoreError(f"{path}: written by a newer PromptArbor (schema {version}); "
                                 f"upgrade to open it")
            while version < SCHEMA_VERSION:
                if version not in MIGRATIONS:
                    raise CorruptSession(f"{path}: no migration from schema {version}")
                session = MIGRATIONS[version](session)
                version += 1
            meta = session.pop("tree_meta")
            nodes = docs("nodes")
            session["tree"] = {"nodes": {n["id"]: n for n in nodes}, "roots": meta["roots"],
                               "next_id": meta["next_id"]}
            session["events"] = docs("events")
            session["call_log"] = docs("calls")
            session["schema"] = SCHEMA_VERSION
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CorruptSession(f"{path}: malformed session ({type(exc).__name__}: {exc})") from None
        return session

    # ------------------------------------------------------------------ listing

    def list(self) -> list[dict]:
        """One summary per session file, newest first; unreadable files are reported."""
        out = []
        if not self.sessions_dir.exists():
            return out
        for path in self.sessions_dir.glob("*.json"):
            session_id = path.stem
            try:
                raw = AtomicJSONStorage(path).read()
                session = self._assemble(raw or {}, path)
            except StoreError as exc:
                out.append({"id": session_id, "status": "corrupt", "error": str(exc),
                            "updated": path.stat().st_mtime})
                continue
            out.append(summarize(session))
        out.sort(key=lambda s: s.get("updated", 0), reverse=True)
        return out

    def delete(self, session_id: str) -> None:
        self.lock(session_id)
        try:
            self.path(session_id).unlink(missing_ok=True)
        finally:
            self.unlock(session_id)
            (self.sessions_dir / f"{session_id}.lock").unlink(missing_ok=True)


def summarize(session: dict) -> dict:
    """What `sessions list` and `sessions show` print for a session."""
    nodes = session["tree"]["nodes"]
    usage = session.get("gateway", {}).get("usage", {})
    rewards = [n["reward"] for n in nodes.values()
               if n["reward"] is not None and n["status"] not in ("failed", "pruned")]
    accepted = next((n["id"] for n in nodes.values() if n.get("accepted")), None)
    return {
        "id": session["id"], "name": session.get("name", ""), "method": session["method"],
        "status": session["status"], "steps": session["steps"], "nodes": len(nodes),
        "accepted": accepted,
        "calls": {role: usage.get(role, {}).get("calls", 0) for role in ("base", "optimizer", "evaluator")},
        "planned_calls": session.get("planned_calls", {}),
        "cost": round(sum(u.get("cost", 0.0) for u in usage.values()), 6),
        "best_reward": max(rewards) if rewards else None,
        "created": session.get("created"), "updated": session.get("updated"),
    }
