"""Evaluations in the store, kept like sessions: `evals/<id>.json`, one TinyDB-layout file
written atomically (temporary file, fsync, rename) after every batch, one writer at a time
(a lock file), and a file that cannot be read reported in one line (never overwritten;
left in place, since an evaluation is cheap to run again from the cache)."""
from __future__ import annotations

from contextlib import suppress
from pathlib import Path

from filelock import FileLock, Timeout

from .store import (CorruptSession, SessionLocked, SessionNotFound, SessionStore, StoreError,
                    _encode, _parse, _read_file, _write_atomic, check_session_id)


class EvalStore:
    """The evaluations of one session store (`root/evals`)."""

    def __init__(self, store: SessionStore):
        self.store = store
        self.dir = store.root / "evals"
        self._locks: dict[str, FileLock] = {}

    def path(self, eval_id: str) -> Path:
        return self.dir / f"{check_session_id(eval_id)}.json"

    def exists(self, eval_id: str) -> bool:
        return self.path(eval_id).exists()

    def _make_dir(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self.store._unavailable(exc, f"cannot create {self.dir}") from None

    def lock(self, eval_id: str) -> None:
        path = self.dir / f"{check_session_id(eval_id)}.lock"
        if eval_id in self._locks:
            return
        self._make_dir()
        lock = FileLock(str(path), thread_local=False)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise SessionLocked(f"evaluation {eval_id} is running in another PromptArbor "
                                f"process") from None
        except OSError as exc:
            raise self.store._unavailable(exc, f"cannot lock evaluation {eval_id}") from None
        self._locks[eval_id] = lock

    def unlock(self, eval_id: str) -> None:
        lock = self._locks.pop(check_session_id(eval_id), None)
        if lock is not None:
            with suppress(OSError):
                lock.release()

    def close(self) -> None:
        for lock in self._locks.values():
            with suppress(OSError):
                lock.release()
        self._locks.clear()

    def save_eval(self, doc: dict) -> None:
        eval_id = doc["id"]
        path = self.path(eval_id)
        self.lock(eval_id)
        try:
            data = _encode({"evaluation": {"1": doc}})
        except (TypeError, ValueError, RecursionError) as exc:
            raise StoreError(f"cannot save evaluation {eval_id}: not JSON data ({exc})") from None
        self._make_dir()
        try:
            _write_atomic(path, data)
        except OSError as exc:
            raise self.store._unavailable(exc, f"cannot save evaluation {eval_id} to {path} "
                                               f"(the saved copy is unchanged)") from None

    def load(self, eval_id: str) -> dict:
        path = self.path(eval_id)
        try:
            data, _ = _read_file(path)
            raw = _parse(data)
            doc = (raw.get("evaluation") or {}).get("1")
            check_eval(doc, eval_id)
        except FileNotFoundError:
            raise SessionNotFound(f"no evaluation {eval_id!r} in {self.dir}") from None
        except CorruptSession as exc:
            raise CorruptSession(f"evaluation {eval_id} could not be read ({exc}); the file was "
                                 f"left in place: {path}", path=path) from None
        except OSError as exc:
            raise self.store._unavailable(exc, f"cannot read evaluation {eval_id}") from None
        return doc

    def list(self) -> list[dict]:
        """One summary per evaluation, newest first; unreadable files listed as corrupt."""
        out = []
        try:
            paths = sorted(self.dir.glob("*.json")) if self.dir.is_dir() else []
        except OSError as exc:
            raise self.store._unavailable(exc, f"cannot list {self.dir}") from None
        for path in paths:
            eval_id = path.stem
            try:
                doc = self.load(eval_id)
            except StoreError as exc:
                updated = 0.0
                with suppress(OSError):
                    updated = path.stat().st_mtime
                out.append({"id": eval_id, "status": "corrupt", "error": str(exc),
                            "updated": updated})
                continue
            out.append(summarize_eval(doc))
        out.sort(key=lambda r: r.get("updated") or 0, reverse=True)
        return out


def summarize_eval(doc: dict) -> dict:
    spec = doc["spec"]
    usage = (doc.get("gateway") or {}).get("usage") or {}
    return {"id": doc["id"], "name": doc.get("name", ""), "status": doc.get("status"),
            "judge": spec["judge"], "n": len(spec["items"]), "samples": spec["samples"],
            "prompts": [p.get("label") for p in spec["prompts"]],
            "source": (spec.get("data") or {}).get("source"),
            "calls": {r: u.get("calls", 0) for r, u in usage.items() if isinstance(u, dict)},
            "planned_calls": doc.get("planned_calls", {}),
            "cost": round(sum(u.get("cost", 0.0) for u in usage.values() if isinstance(u, dict)), 6),
            "created": doc.get("created"), "updated": doc.get("updated")}


def check_eval(doc, eval_id: str) -> None:
    """CorruptSession (one line) unless `doc` has the shape an evaluation is saved in."""
    def need(ok: bool, what: str) -> None:
        if not ok:
            raise CorruptSession(f"malformed evaluation: {what}")
    need(isinstance(doc, dict), "no evaluation document")
    need(doc.get("id") == eval_id, "its id does not match the file name")
    spec, state = doc.get("spec"), doc.get("state")
    need(isinstance(spec, dict), "spec is not a table")
    need(spec.get("judge") in ("aspects", "accuracy", "conformity", "rubric", "pairwise"),
         "unknown judge")
    need(isinstance(spec.get("samples"), int) and spec["samples"] >= 1, "samples")
    need(isinstance(spec.get("prompts"), list) and spec["prompts"]
         and all(isinstance(p, dict) and isinstance(p.get("label"), str) for p in spec["prompts"]),
         "prompts")
    need(isinstance(spec.get("items"), list)
         and all(isinstance(i, dict) and isinstance(i.get("id"), str)
                 and isinstance(i.get("query"), str) for i in spec["items"]), "items")
    need(isinstance(state, dict) and isinstance(state.get("results"), dict)
         and isinstance(state.get("cursor"), int) and isinstance(state.get("done"), bool),
         "state")
    need(all(isinstance(r, dict) for r in state["results"].values()), "results")
    need(isinstance(doc.get("models"), dict) and all(
        isinstance(doc["models"].get(r), dict) and isinstance(doc["models"][r].get("model"), str)
        for r in ("base", "judge")), "models")
    need(isinstance(doc.get("gateway_settings"), dict), "gateway settings")
    need(isinstance(doc.get("call_log", []), list), "call log")
    need(isinstance(doc.get("created"), (int, float)), "created")
