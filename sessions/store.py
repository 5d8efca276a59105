"""Session store: one TinyDB file per session, written atomically after every step.

Layout of a store directory:

    sessions/<id>.json   TinyDB file: tables "session" (one document: config, status,
                         counters, method state), "nodes", "events", "calls"
    sessions/<id>.lock   held by the one process that may write the session
    sessions/<id>.json.corrupt-YYYYmmdd-HHMMSS[-N]
                         a file that could not be read, moved aside (never overwritten)
    cache/               the gateway's response cache (shared by all sessions)

Everything that comes from the disk is treated as hostile:

* a session id is checked before any file is opened or created from it (no separators,
  no "..", no absolute paths, 1-64 characters);
* a session file is read as bytes, decoded as UTF-8, parsed as JSON and its shape checked
  against everything the engine, CLI and TUI rely on; anything else is `CorruptSession`;
* a corrupt file is moved aside only when the caller asks (`load(..., move_aside=True)`,
  done by the one process that holds the session's lock), under a name chosen atomically
  that never replaces an earlier copy; `list()` never moves anything;
* trouble with the file system (read-only, full, permission denied, the store path is a
  file) is `StoreUnavailable`, one line, and a failed save leaves the previous file intact.

A save builds the TinyDB document itself (the same layout TinyDB writes: table -> doc id ->
document), writes it to a temporary file, fsyncs it and renames it over the old one.
"""
from __future__ import annotations

import errno
import json
import math
import os
import re
import stat
import tempfile
import time
from contextlib import suppress
from pathlib import Path

from filelock import FileLock, Timeout
from tinydb.storages import Storage

SCHEMA_VERSION = 1
# version -> function upgrading a loaded session from that version to the next one
MIGRATIONS: dict[int, callable] = {}
# 1-64 characters: letters, digits, "_", "-", "."; starting with a letter or digit; no ".."
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
NODE_ID_PATTERN = re.compile(r"n[0-9]{1,18}")
TABLES = ("session", "nodes", "events", "calls")


class StoreError(Exception):
    """A problem with the store, described for a person in one line (control characters
    and undecodable bytes, say from a file or store name, are shown escaped)."""

    def __init__(self, message: str = ""):
        super().__init__(_printable(str(message)))


class InvalidSessionId(StoreError):
    """A session id that could name a file outside the store (or no file at all)."""


class StoreUnavailable(StoreError):
    """The file system refused: read-only, full, permission denied, the store is a file."""


class SessionLocked(StoreError):
    pass


class SessionNotFound(StoreError):
    pass


class UnsupportedSchema(StoreError):
    """Written by a newer PromptArbor: left alone, never moved aside."""


class CorruptSession(StoreError):
    """A session file that cannot be read as a session.

    `path` is where the file was, `aside` where it is now (None: it was left in place)."""

    def __init__(self, message: str, *, path: Path | None = None, aside: Path | None = None):
        super().__init__(message)
        self.path = path
        self.aside = aside


def default_store_dir() -> Path:
    env = os.environ.get("PROMPTARBOR_HOME")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("promptarbor", appauthor=False))


def check_session_id(session_id) -> str:
    """The id itself when it can safely name a file in the store, else InvalidSessionId."""
    if (not isinstance(session_id, str) or not ID_PATTERN.fullmatch(session_id)
            or ".." in session_id):
        raise InvalidSessionId(
            f"not a valid session id: {_short(session_id)} (use 1-64 letters, digits, '_', '-' "
            f"or '.', starting with a letter or digit)")
    return session_id


# --------------------------------------------------------------------------- small helpers

def _short(value, limit: int = 60) -> str:
    """repr() cut to `limit` characters: always one line, whatever the value holds."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _printable(text: str) -> str:
    """Text that prints on one line: control characters, line separators and lone
    surrogates (undecodable bytes of a file name) escaped."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _one_line(text) -> str:
    return " ".join(str(text).split())


def _os_reason(exc: OSError) -> str:
    reason = exc.strerror or str(exc) or type(exc).__name__
    code = errno.errorcode.get(exc.errno) if isinstance(exc.errno, int) else None
    return _one_line(f"{reason} ({code})" if code and code not in str(reason) else reason)


def _kind(value) -> str:
    from promptarbor.engine.datasets import describe  # what kind of JSON value, for a message

    return describe(value)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_time(value) -> bool:
    """A number `time.localtime` (used to print it) accepts."""
    if not _is_number(value) or not math.isfinite(value):
        return False
    try:
        time.localtime(value)
    except (OverflowError, OSError, ValueError):
        return False
    return True


# --------------------------------------------------------------------------- reading / writing

def _read_file(path: Path) -> tuple[bytes, os.stat_result]:
    """The bytes of a regular file. OSError as raised (FileNotFoundError: missing);
    CorruptSession for a directory, FIFO, device... (O_NONBLOCK: a FIFO never blocks)."""
    flags = (os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
             | getattr(os, "O_BINARY", 0))
    fd = os.open(path, flags)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise CorruptSession("not a regular file")
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks), info


def _parse(data: bytes) -> dict:
    """A TinyDB document (a JSON object) from the bytes of a file, else CorruptSession."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorruptSession(f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                             f"{exc.start})") from None
    if not text.strip():
        raise CorruptSession("empty file")
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CorruptSession(f"not valid JSON ({exc.msg} at line {exc.lineno} column "
                             f"{exc.colno})") from None
    except (ValueError, RecursionError) as exc:  # too many digits, nested too deep
        raise CorruptSession(f"not valid JSON ({_one_line(exc) or type(exc).__name__})") from None
    if not isinstance(raw, dict):
        raise CorruptSession(f"not a TinyDB database (the top level is {_kind(raw)})")
    return raw


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data`: temporary file, fsync, rename. On any failure the
    temporary file is removed and `path` is untouched; the OSError propagates."""
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def _encode(data) -> bytes:
    # ensure_ascii: a lone surrogate (which a provider's JSON may carry) stays an escape
    # instead of making the UTF-8 encoding fail; it reads back exactly.
    return json.dumps(data, ensure_ascii=True).encode("ascii")


class AtomicJSONStorage(Storage):
    """TinyDB storage: whole-file JSON, replaced atomically (temp file, fsync, rename).

    Reading checks the file as `SessionStore.load` does (CorruptSession, never a
    UnicodeDecodeError); the store itself does not go through TinyDB."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def read(self):
        try:
            data, _ = _read_file(self.path)
        except FileNotFoundError:
            return None
        if not data.strip():
            return None
        try:
            return _parse(data)
        except CorruptSession as exc:
            raise CorruptSession(f"{self.path}: {exc}", path=self.path) from None

    def write(self, data) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(self.path, _encode(data))

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------- shape of a session

def _assemble(raw: dict, session_id: str) -> dict:
    """The in-memory session from a TinyDB document, checked; CorruptSession (one line)
    for anything the engine, the CLI or the TUI could trip on, UnsupportedSchema for a
    session written by a newer PromptArbor."""

    def table(name: str) -> list[dict]:
        if name not in raw:
            if name == "session":
                raise CorruptSession("no 'session' table")
            return []
        items = raw[name]
        if not isinstance(items, dict):
            raise CorruptSession(f"table {name!r} is {_kind(items)}, not a table")
        keyed = []
        for key, doc in items.items():
            try:
                doc_id = int(key)
            except ValueError:
                raise CorruptSession(f"table {name!r}: document id {_short(key)} is not a "
                                     f"number") from None
            if not isinstance(doc, dict):
                raise CorruptSession(f"table {name!r}: document {_short(key)} is {_kind(doc)}, "
                                     f"not an object")
            keyed.append((doc_id, doc))
        keyed.sort(key=lambda item: item[0])
        return [doc for _, doc in keyed]

    heads = table("session")
    if len(heads) != 1:
        raise CorruptSession(f"expected one session document, found {len(heads)}")
    session = dict(heads[0])
    version = session.get("schema", 0)
    if not _is_int(version):
        raise CorruptSession(f"schema version {_short(version)} is not a whole number")
    if version > SCHEMA_VERSION:
        raise UnsupportedSchema(f"session {session_id} was written by a newer PromptArbor "
                                f"(schema {version}); upgrade to open it")
    while version < SCHEMA_VERSION:
        if version not in MIGRATIONS:
            raise CorruptSession(f"no migration from schema {version}")
        try:
            session = MIGRATIONS[version](session)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            raise CorruptSession(f"upgrading from schema {version} failed "
                                 f"({type(exc).__name__}: {_short(str(exc), 80)})") from None
        if not isinstance(session, dict):
            raise CorruptSession(f"upgrading from schema {version} did not give a session")
        version += 1

    meta = session.pop("tree_meta", None)
    if not isinstance(meta, dict):
        raise CorruptSession(f"'tree_meta' is {_kind(meta)}, not an object")
    nodes_list = table("nodes")
    nodes: dict[str, dict] = {}
    for node in nodes_list:
        node_id = node.get("id")
        if not isinstance(node_id, str) or not NODE_ID_PATTERN.fullmatch(node_id):
            raise CorruptSession(f"a node has the id {_short(node_id)} (expected n<number>)")
        if node_id in nodes:
            raise CorruptSession(f"two nodes have the id {node_id}")
        nodes[node_id] = node
    session["tree"] = {"nodes": nodes, "roots": meta.get("roots"), "next_id": meta.get("next_id")}
    session["events"] = table("events")
    session["call_log"] = table("calls")
    session["schema"] = SCHEMA_VERSION
    check_session(session, session_id)
    return session


def _need(where: str, container: dict, key: str, test, what: str):
    if key not in container:
        raise CorruptSession(f"{where}: {key!r} is missing")
    value = container[key]
    if not test(value):
        raise CorruptSession(f"{where}: {key!r} is {_kind(value)}, not {what}")
    return value


def _str(v) -> bool:
    return isinstance(v, str)


def _dict(v) -> bool:
    return isinstance(v, dict)


def _list(v) -> bool:
    return isinstance(v, list)


def _opt_str(v) -> bool:
    return v is None or isinstance(v, str)


def _count(v) -> bool:
    return _is_int(v) and v >= 0


def check_session(session: dict, session_id: str | None = None) -> None:
    """Raise CorruptSession (one line) unless `session` (the in-memory form: "tree",
    "events", "call_log") has the shape the engine, the CLI and the TUI rely on."""
    if not isinstance(session, dict):
        raise CorruptSession(f"the session is {_kind(session)}, not an object")
    where = "session"
    sid = _need(where, session, "id", _str, "text")
    if session_id is not None and sid != session_id:
        raise CorruptSession(f"the file is {session_id}.json but holds session {_short(sid)}")
    _need(where, session, "name", _str, "text")
    _need(where, session, "method", _str, "text")
    _need(where, session, "status", _str, "text")
    _need(where, session, "steps", _count, "a whole number >= 0")
    for key in ("created", "updated"):
        _need(where, session, key, _is_time, "a time (seconds since 1970)")

    config = _need(where, session, "config", _dict, "an object")
    _need("config", config, "method", _str, "text")
    _need("config", config, "random_seed", _is_int, "a whole number")
    models = _need("config", config, "models", _dict, "an object")
    for role, model in models.items():
        if not isinstance(model, dict):
            raise CorruptSession(f"config: model {_short(role)} is {_kind(model)}, not an object")
        _need(f"config.models.{_short(role, 30)}", model, "model", _opt_str, "text")
    for key in ("search", "data", "gateway"):
        _need("config", config, key, _dict, "an object")

    planned = _need(where, session, "planned_calls", _dict, "an object")
    for role, count in planned.items():
        if not _is_number(count):
            raise CorruptSession(f"planned_calls: {_short(role)} is {_kind(count)}, not a number")
    gateway = _need(where, session, "gateway", _dict, "an object")
    usage = gateway.get("usage", {})
    if not isinstance(usage, dict):
        raise CorruptSession(f"gateway: 'usage' is {_kind(usage)}, not an object")
    for role, counters in usage.items():
        if not isinstance(counters, dict):
            raise CorruptSession(f"gateway usage {_short(role)} is {_kind(counters)}, "
                                 f"not an object")
        for key, value in counters.items():
            if not _is_number(value):
                raise CorruptSession(f"gateway usage {_short(role)}: {_short(key)} is "
                                     f"{_kind(value)}, not a number")
    if "next_id" in gateway and not _count(gateway["next_id"]):
        raise CorruptSession(f"gateway: 'next_id' is {_kind(gateway['next_id'])}, "
                             f"not a whole number >= 0")
    state = _need(where, session, "method_state", _dict, "an object")

    tree = _need(where, session, "tree", _dict, "an object")
    nodes = _need("tree", tree, "nodes", _dict, "an object")
    roots = _need("tree", tree, "roots", _list, "a list")
    next_id = _need("tree", tree, "next_id", _count, "a whole number >= 0")
    _check_nodes(nodes, roots, next_id)

    for key in ("events", "call_log"):
        items = _need(where, session, key, _list, "a list")
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise CorruptSession(f"{key}[{i}] is {_kind(item)}, not an object")

    final = state.get("final")
    if final is not None and (not isinstance(final, str) or final not in nodes):
        raise CorruptSession(f"the final node {_short(final)} is not in the tree")
    icl_final = state.get("icl_final")
    if icl_final is not None:
        if not isinstance(icl_final, dict):
            raise CorruptSession(f"method_state: 'icl_final' is {_kind(icl_final)}, "
                                 f"not an object")
        for key, node_id in icl_final.items():
            if not isinstance(key, str) or not key.isdecimal() or len(key) > 9:
                raise CorruptSession(f"method_state: 'icl_final' key {_short(key)} is not an "
                                     f"example number")
            if node_id is not None and (not isinstance(node_id, str) or node_id not in nodes):
                raise CorruptSession(f"the final node {_short(node_id)} of ICL example {key} "
                                     f"is not in the tree")
    accepted = session.get("accepted")
    if accepted is not None and (not isinstance(accepted, str) or accepted not in nodes):
        raise CorruptSession(f"the accepted node {_short(accepted)} is not in the tree")


def _check_nodes(nodes: dict, roots: list, next_id: int) -> None:
    for key, node in nodes.items():
        if not isinstance(node, dict):
            raise CorruptSession(f"node {_short(key)} is {_kind(node)}, not an object")
        if node.get("id") != key or not NODE_ID_PATTERN.fullmatch(key):
            raise CorruptSession(f"node {_short(key)} has the id {_short(node.get('id'))}")
        where = f"node {key}"
        _need(where, node, "parent", _opt_str, "a node id or null")
        children = _need(where, node, "children", _list, "a list")
        for child in children:
            if not isinstance(child, str):
                raise CorruptSession(f"{where}: a child is {_kind(child)}, not a node id")
        if len(set(children)) != len(children):
            raise CorruptSession(f"{where}: a child is listed twice")
        for field in ("kind", "text", "status"):
            _need(where, node, field, _str, "text")
        _need(where, node, "reward", lambda v: v is None or _is_number(v), "a number or null")
        detail = _need(where, node, "detail", _dict, "an object")
        _need(where, node, "meta", _dict, "an object")
        calls = _need(where, node, "calls", _list, "a list")
        if not all(isinstance(c, str) for c in calls):
            raise CorruptSession(f"{where}: 'calls' holds something other than call ids")
        _need(where, node, "accepted", lambda v: isinstance(v, bool), "true or false")
        _need(where, node, "depth", _count, "a whole number >= 0")
        _need(where, node, "cost", _is_number, "a number")
        _need(where, node, "created_step", _is_int, "a whole number")
        for field in ("error", "critique"):
            if field in node and not _opt_str(node[field]):
                raise CorruptSession(f"{where}: {field!r} is {_kind(node[field])}, "
                                     f"not text or null")
        scores = detail.get("scores")
        if scores is not None:
            if not isinstance(scores, dict):
                raise CorruptSession(f"{where}: the scores are {_kind(scores)}, not an object")
            for aspect, item in scores.items():
                if not isinstance(item, dict) or "rationale" not in item \
                        or not _is_number(item.get("score")):
                    raise CorruptSession(f"{where}: the score of {_short(aspect, 30)} is "
                                         f"malformed")
        if int(key[1:]) >= next_id:
            raise CorruptSession(f"{where}: the id is not below the tree's next id {next_id} "
                                 f"(a new node would replace it)")

    # links: parent <-> children agree, roots are exactly the parentless nodes, no cycles
    for key, node in nodes.items():
        parent = node["parent"]
        if parent is not None:
            if parent not in nodes:
                raise CorruptSession(f"node {key}: its parent {_short(parent)} is not in the tree")
            if key not in nodes[parent]["children"]:
                raise CorruptSession(f"node {key}: its parent {parent} does not list it as a child")
    for key, node in nodes.items():
        for child in node["children"]:
            if child not in nodes:
                raise CorruptSession(f"node {key}: its child {_short(child)} is not in the tree")
            if nodes[child]["parent"] != key:
                raise CorruptSession(f"node {key}: its child {child} has another parent")
    for root in roots:
        if not isinstance(root, str) or root not in nodes:
            raise CorruptSession(f"the root {_short(root)} is not in the tree")
        if nodes[root]["parent"] is not None:
            raise CorruptSession(f"the root {root} has a parent")
    if len(set(roots)) != len(roots):
        raise CorruptSession("a root is listed twice")
    orphans = [k for k, n in nodes.items() if n["parent"] is None and k not in roots]
    if orphans:
        raise CorruptSession(f"node {orphans[0]} has no parent and is not a root")
    seen = 0
    stack = list(roots)
    while stack:  # every node has one parent, so this visits each reachable node once
        seen += 1
        stack.extend(nodes[stack.pop()]["children"])
        if seen > len(nodes):
            break
    if seen != len(nodes):
        raise CorruptSession("the tree has a cycle (some nodes cannot be reached from a root)")


# --------------------------------------------------------------------------- the store

class SessionStore:
    """Sessions in `root/sessions`. The constructor raises StoreUnavailable when `root`
    (or a folder on its way) is a file; every method raises only StoreError subclasses."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root).expanduser() if root else default_store_dir()
        self.sessions_dir = self.root / "sessions"
        self.cache_dir = self.root / "cache"
        self._locks: dict[str, FileLock] = {}
        self._check_root()

    # ------------------------------------------------------------------ paths

    def _check_root(self) -> None:
        """StoreUnavailable when the store path, one of its parents, `sessions` or `cache`
        exists but is not a folder (or cannot be looked at)."""
        def problem(path: Path, reason: str) -> StoreUnavailable:
            return StoreUnavailable(f"cannot use {self.root} as the session store: {reason}")

        for path in (self.sessions_dir, self.cache_dir):
            try:
                if not stat.S_ISDIR(os.stat(path).st_mode):
                    raise problem(path, f"{path} is a file, not a folder")
            except (FileNotFoundError, NotADirectoryError):
                pass
            except ValueError as exc:
                raise problem(path, _one_line(exc)) from None
            except OSError as exc:
                raise problem(path, f"{path}: {_os_reason(exc)}") from None
        for path in (self.root, *self.root.parents):
            try:
                mode = os.stat(path).st_mode
            except (FileNotFoundError, NotADirectoryError):
                continue  # look further up
            except ValueError as exc:  # a NUL in the path
                raise problem(path, _one_line(exc)) from None
            except OSError as exc:
                raise problem(path, f"{path}: {_os_reason(exc)}") from None
            if not stat.S_ISDIR(mode):
                raise problem(path, f"{path} is a file, not a folder")
            return  # the folders above an existing folder are folders

    def _unavailable(self, exc: OSError, doing: str) -> StoreUnavailable:
        """The one-line error for an OSError met while `doing` something."""
        try:
            self._check_root()
        except StoreUnavailable as root_problem:
            return root_problem
        return StoreUnavailable(f"{doing}: {_os_reason(exc)}")

    def path(self, session_id: str) -> Path:
        return self.sessions_dir / f"{check_session_id(session_id)}.json"

    def lock_path(self, session_id: str) -> Path:
        return self.sessions_dir / f"{check_session_id(session_id)}.lock"

    def exists(self, session_id: str) -> bool:
        path = self.path(session_id)
        try:
            os.stat(path)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise self._unavailable(exc, f"cannot look for session {session_id} in "
                                         f"{self.sessions_dir}") from None
        return True

    def _make_dirs(self) -> None:
        try:
            self.sessions_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._unavailable(exc, f"cannot create {self.sessions_dir}") from None

    # ------------------------------------------------------------------ locking

    def lock(self, session_id: str) -> bool:
        """Become the one writer of this session, or raise SessionLocked.

        Returns False when this store already held the lock (nothing changed)."""
        lock_path = self.lock_path(session_id)
        if session_id in self._locks:
            return False
        self._make_dirs()
        # not thread-local: the engine thread may take a lock the UI thread releases
        lock = FileLock(str(lock_path), thread_local=False)
        try:
            lock.acquire(timeout=0)
        except Timeout:  # a TimeoutError, so an OSError: before the OSError clause
            raise SessionLocked(f"session {session_id} is open in another PromptArbor process; "
                                f"close it there first") from None
        except OSError as exc:
            raise self._unavailable(exc, f"cannot lock session {session_id}: cannot create "
                                         f"{lock_path}") from None
        self._locks[session_id] = lock
        return True

    def unlock(self, session_id: str) -> None:
        """Give the session's lock back. A lock taken for a session that was never saved
        (an unknown id asked for) leaves no lock file behind."""
        check_session_id(session_id)
        lock = self._locks.pop(session_id, None)
        if lock is not None:
            try:
                lock.release()
            except OSError as exc:
                raise self._unavailable(exc, f"cannot unlock session {session_id}") from None
            if not self.path(session_id).exists():
                with suppress(OSError):
                    self.lock_path(session_id).unlink(missing_ok=True)

    def close(self) -> None:
        """Release every lock this store holds (best effort: never raises)."""
        for session_id in list(self._locks):
            with suppress(StoreError):
                self.unlock(session_id)

    # ------------------------------------------------------------------ save / load

    def save(self, session: dict) -> None:
        """Write the whole session atomically (taking its lock first if needed). On any
        failure the file on disk is the previous version and no temporary file is left."""
        session_id = session.get("id") if isinstance(session, dict) else None
        path = self.path(session_id)
        try:  # never write what `load` would refuse
            check_session(session)
        except CorruptSession as exc:
            raise StoreError(f"cannot save session {session_id}: {exc}; the saved copy is "
                             f"unchanged") from None
        if session_id not in self._locks:
            self.lock(session_id)
        head = {k: v for k, v in session.items() if k not in ("tree", "events", "call_log")}
        head["schema"] = SCHEMA_VERSION
        tree = session["tree"]
        head["tree_meta"] = {"roots": tree["roots"], "next_id": tree["next_id"]}
        # the layout TinyDB writes: table -> document id (from 1) -> document
        document = {name: {str(i): doc for i, doc in enumerate(docs, 1)}
                    for name, docs in (("session", [head]),
                                       ("nodes", list(tree["nodes"].values())),
                                       ("events", session["events"]),
                                       ("calls", session["call_log"]))}
        try:
            data = _encode(document)
        except (TypeError, ValueError, RecursionError) as exc:
            raise StoreError(f"cannot save session {session_id}: not JSON data "
                             f"({_short(str(exc), 80)}); the saved copy is unchanged") from None
        self._make_dirs()
        try:
            _write_atomic(path, data)
        except OSError as exc:
            raise self._unavailable(exc, f"cannot save session {session_id} to {path} (the "
                                         f"saved copy is unchanged)") from None

    def load(self, session_id: str, move_aside: bool = True) -> dict:
        """The session, checked. A file that cannot be read as a session raises
        CorruptSession; with `move_aside` (only for the process holding the session's lock)
        the file is first renamed to `<id>.json.corrupt-<time>[-N]`, never replacing an
        earlier copy; without it the file is left where it is."""
        path = self.path(session_id)
        info = None
        try:
            data, info = _read_file(path)
            session = _assemble(_parse(data), session_id)
        except FileNotFoundError:
            self._check_root()
            raise SessionNotFound(f"no session {session_id!r} in {self.sessions_dir}") from None
        except CorruptSession as exc:
            raise self._corrupt(session_id, path, str(exc), move_aside, info) from None
        except OSError as exc:
            raise self._unavailable(exc, f"cannot read session {session_id} ({path})") from None
        return session

    def _corrupt(self, session_id: str, path: Path, reason: str, move_aside: bool,
                 info: os.stat_result | None) -> CorruptSession:
        what = f"session {session_id} could not be read ({reason})"
        if not move_aside:
            return CorruptSession(f"{what}; the file was left in place: {path}", path=path)
        try:
            aside = self._move_aside(path, info)
        except OSError as exc:
            return CorruptSession(f"{what}; it could not be moved aside ({_os_reason(exc)}), "
                                  f"so the file was left in place: {path}", path=path)
        if session_id in self._locks:  # the session is gone: so is its lock file
            with suppress(StoreError, OSError):
                self.unlock(session_id)
                self.lock_path(session_id).unlink(missing_ok=True)
        return CorruptSession(f"{what}; the file was kept aside as {aside} and nothing was "
                              f"overwritten", path=path, aside=aside)

    def _move_aside(self, path: Path, info: os.stat_result | None) -> Path:
        """Rename `path` to a name no other file has, chosen atomically (a hard link, or an
        O_EXCL placeholder where links are not supported). Raises OSError."""
        base = f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}"
        for n in range(1, 10_000):
            aside = path.with_name(base if n == 1 else f"{base}-{n}")
            try:
                os.link(path, aside, follow_symlinks=False)
            except FileExistsError:
                continue
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK,
                                     errno.ENOSYS, errno.EXDEV, errno.EACCES):
                    raise
                if self._reserve(aside):
                    try:
                        os.replace(path, aside)
                    except OSError:
                        with suppress(OSError):
                            os.unlink(aside)
                        raise
                    return aside
                continue
            if info is not None:  # drop the old name only if it is still the file we read
                try:
                    now = os.stat(aside)
                    same = (now.st_dev, now.st_ino) == (info.st_dev, info.st_ino)
                except OSError:
                    same = False
                if not same:
                    with suppress(OSError):
                        os.unlink(aside)
                    raise OSError(errno.EAGAIN, "the file changed while it was being read")
            try:
                os.unlink(path)
            except OSError:
                with suppress(OSError):
                    os.unlink(aside)
                raise
            return aside
        raise OSError(errno.EEXIST, "too many earlier copies kept aside")

    @staticmethod
    def _reserve(path: Path) -> bool:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            return False
        os.close(fd)
        return True

    # ------------------------------------------------------------------ listing

    def list(self) -> list[dict]:
        """One summary per session file, newest first. Never moves a file; a file that
        cannot be read is listed as {"id", "status": "corrupt", "error", "updated"}.
        Raises StoreUnavailable only when the sessions folder itself cannot be read."""
        try:
            entries = sorted(os.scandir(self.sessions_dir), key=lambda e: e.name)
        except FileNotFoundError:
            self._check_root()
            return []
        except OSError as exc:
            raise self._unavailable(exc, f"cannot list {self.sessions_dir}") from None
        out = []
        for entry in entries:
            if not entry.name.endswith(".json"):
                continue
            session_id = entry.name[:-len(".json")]
            try:
                check_session_id(session_id)
                data, _ = _read_file(Path(entry.path))
                row = summarize(_assemble(_parse(data), session_id))
            except InvalidSessionId:
                session_id = _printable(session_id)
                error = f"not a session file: {_short(entry.name)} is not a valid session id"
            except StoreError as exc:
                error = str(exc)
            except OSError as exc:
                error = f"cannot read it: {_os_reason(exc)}"
            except (KeyError, TypeError, ValueError, AttributeError) as exc:  # belt and braces
                error = f"malformed ({type(exc).__name__})"
            else:
                out.append(row)
                continue
            updated = 0.0
            with suppress(OSError):
                updated = entry.stat(follow_symlinks=False).st_mtime
            out.append({"id": session_id, "status": "corrupt", "error": error,
                        "updated": updated})
        out.sort(key=lambda s: s.get("updated") or 0, reverse=True)
        return out

    def delete(self, session_id: str) -> None:
        path = self.path(session_id)
        if session_id in self._locks:
            raise SessionLocked(f"session {session_id} is open here; close it before deleting it")
        self.lock(session_id)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise self._unavailable(exc, f"cannot delete session {session_id}") from None
        finally:
            with suppress(StoreError):
                self.unlock(session_id)
            with suppress(OSError):
                self.lock_path(session_id).unlink(missing_ok=True)


def summarize(session: dict) -> dict:
    """What `sessions list` and `sessions show` print for a session."""
    nodes = session["tree"]["nodes"]
    usage = session.get("gateway", {}).get("usage", {})
    usable = [n for n in nodes.values()
              if n["reward"] is not None and n["status"] not in ("failed", "pruned")]
    # DRPO's ICL stage judges an example, not the system prompt: with a system-prompt phase
    # the best is a system prompt (the ★ node of the workbench, the engine's best_node)
    phases = (session.get("method_state") or {}).get("phases")
    if isinstance(phases, list) and "prompt" in phases:
        usable = [n for n in usable if (n.get("meta") or {}).get("phase") == "prompt"]
    rewards = [n["reward"] for n in usable]
    accepted = next((n["id"] for n in nodes.values() if n.get("accepted")), None)
    return {
        "id": session["id"], "name": session.get("name", ""), "method": session["method"],
        "status": session["status"], "steps": session["steps"], "nodes": len(nodes),
        "accepted": accepted,
        "failed_nodes": sum(1 for n in nodes.values() if n.get("status") == "failed"),
        "calls": {role: usage.get(role, {}).get("calls", 0)
                  for role in ("base", "optimizer", "evaluator", "judge")
                  if role in usage or role != "judge"},
        "planned_calls": session.get("planned_calls", {}),
        "cost": round(sum(u.get("cost", 0.0) for u in usage.values()), 6),
        "best_reward": max(rewards) if rewards else None,
        "created": session.get("created"), "updated": session.get("updated"),
    }
