"""Seed queries and ICL examples: built-in sets (ours) or files named in the config.

Accepted files:
* seed queries: JSONL with "query" (or "instruction"/"prompt"/"question") per line (a line may
  also be a JSON string), a JSON list of such objects or strings (or an object whose values
  are), a .txt file with one query per line, or a CSV file with a query column;
* ICL examples: JSONL/JSON list with "query" and "response" (or "answer"/"output"), a JSON
  object mapping query -> response, or a CSV file with query and response columns. A response
  wrapped in <START>...<END> is unwrapped.

Every data file goes through `read_text` (UTF-8, an optional BOM, no NUL bytes) and, by its
suffix, `read_records`. Every problem is a `ConfigError` with a one-line message naming the
file (and, for JSONL and CSV, the line).
"""
from __future__ import annotations

import codecs
import csv
import io
import json
import math
from importlib import resources
from pathlib import Path
from typing import Any

from .config import ConfigError

QUERY_FIELDS = ("query", "instruction", "prompt", "question")
RESPONSE_FIELDS = ("response", "answer", "output")


# ----------------------------------------------------------------------------- reading

def show_path(path: Any) -> str:
    """A path as it is printed in a message: one line, control characters escaped."""
    text = str(path)
    if all(c.isprintable() for c in text):
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def describe(value: Any) -> str:
    """What kind of JSON value this is, for a message: "a string", "a list", ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def short(text: str, limit: int = 40) -> str:
    """A string quoted for a message: repr (so one line), cut to about `limit` characters."""
    if len(text) > limit:
        return repr(text[:limit]) + "…"
    return repr(text)


# Upper bounds on a data file: far above any search's needs, low enough that a session's
# set-up (which keeps the data in the session) stays within a second.
MAX_FILE_BYTES = 256 * 2 ** 20
MAX_RECORDS = 100_000


def _check_count(name: str, count: int) -> None:
    if count > MAX_RECORDS:
        raise ConfigError(f"{name}: {count:,} records; at most {MAX_RECORDS:,} are accepted")


def read_text(path: str | Path) -> str:
    """A data file's text: UTF-8 with an optional BOM (stripped); anything else is a ConfigError."""
    p = Path(path)
    name = show_path(p)
    try:
        if p.is_file() and p.stat().st_size > MAX_FILE_BYTES:
            raise ConfigError(f"{name}: the file is larger than {MAX_FILE_BYTES // 2 ** 20} MiB")
        data = p.read_bytes()
    except IsADirectoryError:
        raise ConfigError(f"{name}: is a directory, not a data file") from None
    except FileNotFoundError:
        raise ConfigError(f"{name}: file not found") from None
    except PermissionError:
        raise ConfigError(f"{name}: cannot read the file (permission denied)") from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"{name}: cannot read the file ({show_path(reason)})") from None
    except ValueError:  # e.g. a NUL byte in the path
        raise ConfigError(f"{name}: not a valid file path") from None
    except MemoryError:
        raise ConfigError(f"{name}: the file is too large to read") from None
    start = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    bad = None
    try:
        text = data[start:].decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = start + exc.start
    nul = data.find(b"\x00")
    if nul != -1 and (bad is None or nul < bad):
        bad = nul
    if bad is not None:
        hint = "; it looks like UTF-16: save it as UTF-8" if _utf16(data) else ""
        raise ConfigError(f"{name}: not UTF-8 text (byte 0x{data[bad]:02x} at offset {bad}){hint}")
    return text


def _utf16(data: bytes) -> bool:
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return True
    head = data[:64]
    if len(head) < 4:
        return False
    odd, even = head[1::2], head[0::2]
    return (not odd.strip(b"\x00") and even.strip(b"\x00") != b"") or \
        (not even.strip(b"\x00") and odd.strip(b"\x00") != b"")


class _BadNumber(ValueError):
    pass


def _constant(name: str):
    raise _BadNumber(f"{name} is not allowed")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _BadNumber(f"the number {text[:20]} is out of range")
    return value


def _int(text: str) -> int:
    if len(text.lstrip("-")) > 1000:
        raise _BadNumber("a number has more than 1000 digits")
    return int(text)


def parse_json(text: str, where: str) -> Any:
    """JSON text as Python values; NaN, Infinity and huge numbers are refused."""
    try:
        return json.loads(text, parse_constant=_constant, parse_float=_float, parse_int=_int)
    except json.JSONDecodeError as exc:
        at = f" (line {exc.lineno} column {exc.colno})" if "\n" in text.rstrip() else \
            f" (column {exc.colno})"
        raise ConfigError(f"{where}: not valid JSON: {exc.msg}{at}") from None
    except _BadNumber as exc:
        raise ConfigError(f"{where}: not valid JSON: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{where}: not valid JSON: nested too deeply") from None
    except MemoryError:
        raise ConfigError(f"{where}: not valid JSON: too large to parse") from None
    except ValueError as exc:  # pragma: no cover - any other refusal by the json module
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{where}: not valid JSON: {show_path(first)}") from None


def _lines(text: str) -> list[str]:
    """Physical lines (\\n, \\r\\n or \\r); unlike str.splitlines, U+2028 etc. stay in the line."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _raise_field_limit(size: int) -> None:
    """Let the csv module read fields of `size` characters (the limit is process-wide, and
    is only ever raised)."""
    if csv.field_size_limit() >= size:
        return
    try:
        csv.field_size_limit(size)
    except OverflowError:  # beyond a C long
        csv.field_size_limit(2**31 - 1)


def read_csv(path: Path, text: str) -> list[tuple[str, dict]]:
    """CSV rows as ("file:line", {column: text}); column names are stripped and lower-cased."""
    name = show_path(path)
    _raise_field_limit(len(text) + 1)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[tuple[str, dict]] = []
    header: list[str] | None = None
    end = 0
    try:
        for row in reader:
            start, end = end + 1, reader.line_num
            if not row or not any(cell.strip() for cell in row):
                continue
            if header is None:
                header = [cell.strip().lower() for cell in row]
                continue
            where = f"{name}:{start}"
            if len(row) > len(header):
                raise ConfigError(f"{where}: the row has {len(row)} fields but the header has "
                                  f"{len(header)} (quote fields that contain commas)")
            rows.append((where, dict(zip(header, row))))
    except csv.Error as exc:
        raise ConfigError(f"{name}:{reader.line_num}: not valid CSV: "
                          f"{show_path(str(exc))}") from None
    if header is None:
        raise ConfigError(f"{name}: the CSV file has no header row")
    return rows


def read_records(path: str | Path) -> tuple[str, Any]:
    """A data file's contents by suffix.

    ("rows", [(where, value), ...]) for .txt (strings), .jsonl (one JSON value a line) and
    .csv (dicts keyed by the header); ("json", value) for .json and any other suffix. `where`
    ("file:line") starts each message about that record.
    """
    p = Path(path)
    name = show_path(p)
    text = read_text(p)
    if not text.strip():
        raise ConfigError(f"{name}: the file is empty")
    suffix = p.suffix.lower()
    if suffix == ".txt":
        rows = [(f"{name}:{i}", line.strip()) for i, line in enumerate(_lines(text), 1)
                if line.strip()]
        _check_count(name, len(rows))
        return "rows", rows
    if suffix == ".jsonl":
        rows = []
        for i, line in enumerate(_lines(text), 1):
            if line.strip():
                rows.append((f"{name}:{i}", parse_json(line, f"{name}:{i}")))
                _check_count(name, len(rows))
        return "rows", rows
    if suffix == ".csv":
        rows = read_csv(p, text)
        _check_count(name, len(rows))
        return "rows", rows
    data = parse_json(text, name)
    if isinstance(data, (list, dict)):
        _check_count(name, len(data))
    return "json", data


def json_items(path: Path, data: Any, expected: str) -> list[tuple[str, Any]]:
    """A JSON file's top-level list as (where, item) pairs; anything else is a ConfigError."""
    if not isinstance(data, list):
        raise ConfigError(f"{show_path(path)}: expected {expected}, got {describe(data)}")
    return [(f"{show_path(path)}: item {i}", item) for i, item in enumerate(data, 1)]


def check_text(value: str, where: str, name: str) -> str:
    """`value` if it can be written as UTF-8 (no lone surrogate from a JSON \\ud800 escape)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ConfigError(f"{where}: {name} holds an unpaired surrogate "
                          f"(\\u{ord(value[exc.start]):04x})") from None
    return value


def text_field(record: dict, names, where: str, what: str) -> str:
    """The first non-empty string among `names`, stripped; a field of another type is an error."""
    for field in names:
        value = record.get(field)
        if value is None:
            continue
        if not isinstance(value, str):
            raise ConfigError(f"{where}: {field} must be a string, got {describe(value)}")
        value = check_text(value, where, field).strip()
        if value:
            return value
    raise ConfigError(f"{where}: no {what} ({' or '.join(names)} must be a non-empty string)")


def _builtin(name: str) -> Path:
    return Path(str(resources.files("promptarbor.engine.data").joinpath(name)))


# ----------------------------------------------------------------------------- loaders

def load_seed_queries(path: str | None, limit: int | None = None, *,
                      what: str = "seed queries") -> list[str]:
    """Queries from a file (or the built-in set). `what` names them in messages."""
    p = Path(path) if path else _builtin("seed_queries.jsonl")
    kind, data = read_records(p)
    expected = (f"a list of {what} (strings, or objects with a "
                f"{' / '.join(QUERY_FIELDS)} field)")
    if kind == "rows":
        items = data
    elif isinstance(data, dict):
        items = [(f"{show_path(p)}: key {short(str(k))}", v) for k, v in data.items()]
    else:
        items = json_items(p, data, expected)
    queries = []
    for where, record in items:
        if isinstance(record, str):
            query = check_text(record, where, "the query").strip()
        elif isinstance(record, dict):
            query = text_field(record, QUERY_FIELDS, where, "query")
        else:
            raise ConfigError(f"{where}: expected a query string or an object with a "
                              f"{' / '.join(QUERY_FIELDS)} field, got {describe(record)}")
        if query:
            queries.append(query)
    if not queries:
        raise ConfigError(f"{show_path(p)}: no {what}")
    return queries[:limit] if limit else queries


def _unwrap(text: str) -> str:
    text = text.strip()
    if text.startswith("<START>") and "<END>" in text:
        text = text[len("<START>"):text.rindex("<END>")]
    return text.strip()


def load_icl_examples(path: str | None, *, what: str = "ICL examples") -> list[tuple[str, str]]:
    """(query, response) pairs from a file (or the built-in set). `what` names them in messages."""
    p = Path(path) if path else _builtin("icl_examples.jsonl")
    kind, data = read_records(p)
    pairs: list[tuple[str, str]] = []
    if kind == "json" and isinstance(data, dict):
        for key, value in data.items():
            where = f"{show_path(p)}: key {short(key)}"
            query = check_text(key, where, "the query").strip()
            if not query:
                raise ConfigError(f"{where}: the query is empty")
            if not isinstance(value, str):
                raise ConfigError(f"{where}: the response must be a string, got {describe(value)}")
            response = _unwrap(check_text(value, where, "the response"))
            if not response:
                raise ConfigError(f"{where}: the response is empty")
            pairs.append((query, response))
    else:
        items = data if kind == "rows" else json_items(
            p, data, f"a list of {what} or a query -> response object")
        for where, record in items:
            if not isinstance(record, dict):
                raise ConfigError(f"{where}: expected an object with query and response, "
                                  f"got {describe(record)}")
            query = text_field(record, QUERY_FIELDS, where, "query")
            response = _unwrap(text_field(record, RESPONSE_FIELDS, where, "response"))
            if not response:
                raise ConfigError(f"{where}: the response is empty")
            pairs.append((query, response))
    if not pairs:
        raise ConfigError(f"{show_path(p)}: no {what}")
    return pairs


def load_inputs(cfg: dict) -> dict:
    """A validated config's inputs for its method (built-in sets where no file is named),
    with the held-out evaluation's items ([eval]; VAPO uses its test split instead)."""
    from .config import family

    kind = family(cfg["method"])
    data = cfg["data"]
    if kind == "vapo":
        from .tasks import load_tasks
        return {"tasks": load_tasks(data["tasks"], data["task_type"])}
    if kind == "picaco":
        from .values import load_picaco_inputs
        inputs = load_picaco_inputs(cfg)
    else:
        # seed_limit applies after DRPO's seeded shuffle (engine.methods.drpo), so a limited
        # set still mixes the file's sources
        inputs = {"seed": load_seed_queries(data["seed"]), "icl": load_icl_examples(data["icl"])}
    inputs.update(load_eval_inputs(cfg))
    return inputs


def load_eval_inputs(cfg: dict) -> dict:
    """The held-out items a session's end-of-run evaluation uses (none when [eval] is off)."""
    e = cfg.get("eval") or {}
    if not e.get("enabled") or "judge" not in cfg.get("models", {}):
        return {}
    from .evalsets import load_eval_set

    found = load_eval_set(e["data"], judge=e["judge"], query_field=e.get("query_field"),
                          category_field=e.get("category_field"), limit=e.get("limit"),
                          seed=cfg["random_seed"])
    return {"eval_items": found["items"], "eval_source": found["source"]}
