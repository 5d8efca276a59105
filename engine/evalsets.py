"""Eval sets for held-out evaluation (`promptarbor eval`).

`load_eval_set(source, judge=...)` reads an eval set and returns its items in one shape,
whatever the source:

* a data file: JSONL, a JSON list, CSV (through `engine.datasets`' hardened readers) or
  Parquet (through pyarrow); a .txt file is one query per line;
* `hf:owner/name[:split]`: a Hugging Face dataset through `datasets.load_dataset`; the split
  defaults to "test", else "train". Offline (`HF_HUB_OFFLINE=1`, or no network) it is read
  from the local datasets cache (`HF_DATASETS_CACHE`, else `$HF_HOME/datasets`, else
  ~/.cache/huggingface/datasets), where any earlier `load_dataset("owner/name")` with network
  access left it. `hf:DIR[:split]` (or just DIR) reads a folder written by
  `Dataset.save_to_disk` / `DatasetDict.save_to_disk`;
* None (or ""): the built-in held-out set for the judge: `heldout_aspects.jsonl` (aspects,
  rubric, pairwise: 40 regular requests and 20 safety ones), `heldout_values.jsonl`
  (conformity: 40 value-evoking prompts), `moral_mc.jsonl` (accuracy: multiple choice).
  `builtin:NAME` names one of them explicitly (the "source" a result reports).

Fields, matched case-insensitively: the query is the named `query_field`, else the first of
query, instruction, prompt, question, input; the categories come from the named
`category_field`, else the first of category, dataset, type, domain (a string, a number or a
list of strings; in CSV a JSON list). A reference text (answer, output, reference, response)
is kept for free-form judges. The accuracy judge needs multiple-choice items (options or
choices: a list, in CSV a JSON list or choices separated by "|"; answer: a letter, an
option's text or a 0-based index), validated as `engine.tasks.load_tasks` does.

Every problem is a `ConfigError` with a one-line message naming the source (and the item).
The heavy libraries (`datasets`, `pyarrow`) are imported only when a source needs them.
"""
from __future__ import annotations

import math
import os
import random
import re
from importlib import resources
from pathlib import Path
from typing import Any

from .config import ConfigError
from .datasets import (MAX_FILE_BYTES, MAX_RECORDS, check_text, describe, json_items,
                       parse_json, read_records, short, show_path)

JUDGES = ("aspects", "rubric", "pairwise", "accuracy", "conformity")
QUERY_NAMES = ("query", "instruction", "prompt", "question", "input")
CATEGORY_NAMES = ("category", "dataset", "type", "domain")
REFERENCE_NAMES = ("answer", "output", "reference", "response")
OPTION_NAMES = ("options", "choices")
ANSWER_NAMES = ("answer", "answerkey", "answer_key")
PARQUET_SUFFIXES = (".parquet", ".pq")

BUILTIN_SETS = {"heldout_aspects": "heldout_aspects.jsonl",
                "heldout_values": "heldout_values.jsonl",
                "moral_mc": "moral_mc.jsonl"}
BUILTIN_FOR_JUDGE = {"aspects": "heldout_aspects", "rubric": "heldout_aspects",
                     "pairwise": "heldout_aspects", "conformity": "heldout_values",
                     "accuracy": "moral_mc"}

# owner/name as the hub spells it (or a bare legacy name), and a split name
_HF_NAME = re.compile(r"[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?")
_SPLIT = re.compile(r"[A-Za-z0-9][\w.-]{0,63}")
_SAVED_MARKERS = ("dataset_dict.json", "state.json")  # what save_to_disk writes


# ----------------------------------------------------------------------------- the API

def load_eval_set(source: str | None, *, judge: str, query_field: str | None = None,
                  category_field: str | None = None, limit: int | None = None,
                  seed: int = 0) -> dict:
    """An eval set's items (all of them, or a seeded sample of `limit` in source order).

    Returns {"source", "n_total", "items", "query_field", "category_field"}; each item is
    {"id": "i<index in the source>", "query", "categories": [str], "options": [str] | None,
    "answer": letter | None, "reference": str | None, "fields": {other scalar fields}}.
    """
    if judge not in JUDGES:
        raise ConfigError(f"unknown judge {short(str(judge))} (one of {', '.join(JUDGES)})")
    query_field = _field_name(query_field, "query_field")
    category_field = _field_name(category_field, "category_field")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                              or limit < 1):
        raise ConfigError(f"the eval limit must be a whole number of at least 1, got "
                          f"{short(str(limit))}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"the eval seed must be a whole number, got {short(str(seed))}")
    if source is not None and not isinstance(source, (str, os.PathLike)):
        raise ConfigError(f"the eval set must be a file path or hf:owner/name, got "
                          f"{describe(source)}")
    src = os.fspath(source).strip() if source is not None else ""
    if not isinstance(src, str):  # a bytes path
        raise ConfigError("the eval set must be a file path or hf:owner/name, given as text")

    if not src:
        src = "builtin:" + BUILTIN_FOR_JUDGE[judge]
    if src.startswith("builtin:"):
        key = src[len("builtin:"):]
        if key not in BUILTIN_SETS:
            raise ConfigError(f"{show_path(src)}: no such built-in eval set (one of "
                              f"{', '.join('builtin:' + k for k in BUILTIN_SETS)})")
        if key == "moral_mc" and judge == "accuracy" and not query_field and not category_field:
            return _sample(_builtin_accuracy(), src, limit, seed, "question", "category")
        name, rows, kind = _read_file(_builtin_path(BUILTIN_SETS[key]))
    elif src.startswith("hf:"):
        name, rows, kind = _read_hf(src)
    else:
        name, rows, kind = _read_file(Path(src).expanduser(), shown=src)

    items, qkey, ckey = _items(name, rows, kind, judge, query_field, category_field)
    return _sample(items, src, limit, seed, qkey, ckey)


def builtin_path(judge: str) -> Path:
    """The file of the built-in held-out set for a judge."""
    return _builtin_path(BUILTIN_SETS[BUILTIN_FOR_JUDGE[judge]])


def hf_cache_dir() -> str | None:
    """Where `hf:` sources are cached: HF_DATASETS_CACHE, else $HF_HOME/datasets, else None
    (the datasets library's default, ~/.cache/huggingface/datasets). Read at each call, so a
    variable set after `datasets` was imported still counts."""
    cache = os.environ.get("HF_DATASETS_CACHE", "").strip()
    if cache:
        return os.path.expanduser(cache)
    home = os.environ.get("HF_HOME", "").strip()
    if home:
        return os.path.join(os.path.expanduser(home), "datasets")
    return None


# ----------------------------------------------------------------------------- helpers

def _field_name(value, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{what} must be a field name, got {describe(value)}")
    value = value.strip()
    return value or None


def _builtin_path(filename: str) -> Path:
    return Path(str(resources.files("promptarbor.engine.data").joinpath(filename)))


def _sample(items: list[dict], src: str, limit: int | None, seed: int, qkey: str,
            ckey: str | None) -> dict:
    total = len(items)
    if limit is not None and limit < total:
        chosen = sorted(random.Random(f"{seed}:eval-limit").sample(range(total), limit))
        items = [items[i] for i in chosen]
    return {"source": src, "n_total": total, "items": items, "query_field": qkey,
            "category_field": ckey}


def _first_line(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0].strip() if text else type(exc).__name__
    if len(line) > limit:
        line = line[:limit] + "…"
    return show_path(line)


def _names(keys: list[str], limit: int = 20) -> str:
    if not keys:
        return "none"
    shown = ", ".join(short(k) for k in keys[:limit])
    return shown + (f", … ({len(keys)} in all)" if len(keys) > limit else "")


def _resolve(name: str, keys: list[str]) -> str | None:
    """The key matching `name`: exactly, else ignoring case (the first such key)."""
    if name in keys:
        return name
    lower = name.lower()
    return next((k for k in keys if k.lower() == lower), None)


def _get(record: dict, key: str | None):
    if key is None:
        return None
    if key in record:
        return record[key]
    lower = key.lower()
    return next((v for k, v in record.items() if isinstance(k, str) and k.lower() == lower),
                None)


def _number_text(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# ----------------------------------------------------------------------------- readers
# Each returns (name for messages, [(where, record), ...], kind): kind "csv" when every
# value is text from a CSV cell, "json" for parsed JSON, "table" for Parquet / Arrow rows.

def _read_file(path: Path, shown: str | None = None) -> tuple[str, list, str]:
    name = show_path(shown if shown is not None else path)
    if _saved_dir(path):
        return _read_saved(path, None, name)
    if path.suffix.lower() in PARQUET_SUFFIXES:
        return name, _read_parquet(path, name), "table"
    kind, data = read_records(path)
    if kind == "rows":
        rows = [(where.replace(show_path(path), name, 1), record) for where, record in data]
        return name, rows, ("csv" if path.suffix.lower() == ".csv" else "json")
    if isinstance(data, dict):
        raise ConfigError(f"{name}: expected a list of eval items (objects with a query field, "
                          f"or strings), got an object")
    rows = json_items(path, data, "a list of eval items")
    return name, [(where.replace(show_path(path), name, 1), r) for where, r in rows], "json"


def _read_parquet(path: Path, name: str) -> list[tuple[str, Any]]:
    try:
        if path.is_dir():
            raise ConfigError(f"{name}: is a directory, not a data file")
        size = path.stat().st_size
    except FileNotFoundError:
        raise ConfigError(f"{name}: file not found") from None
    except PermissionError:
        raise ConfigError(f"{name}: cannot read the file (permission denied)") from None
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read the file "
                          f"({show_path(exc.strerror or type(exc).__name__)})") from None
    except ValueError:
        raise ConfigError(f"{name}: not a valid file path") from None
    if size > MAX_FILE_BYTES:
        raise ConfigError(f"{name}: the file is larger than {MAX_FILE_BYTES // 2 ** 20} MiB")
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError(f"{name}: reading Parquet needs pyarrow "
                          f"(pip install \"datasets>=3\")") from None
    try:
        parquet = pq.ParquetFile(str(path))
        count = parquet.metadata.num_rows
        if count > MAX_RECORDS:
            raise ConfigError(f"{name}: {count:,} records; at most {MAX_RECORDS:,} are accepted")
        records = parquet.read().to_pylist()
    except ConfigError:
        raise
    except PermissionError:
        raise ConfigError(f"{name}: cannot read the file (permission denied)") from None
    except MemoryError:
        raise ConfigError(f"{name}: the file is too large to read") from None
    except Exception as exc:  # pyarrow's refusals: ArrowInvalid, OSError, ...
        raise ConfigError(f"{name}: not a readable Parquet file ({_first_line(exc)})") from None
    return [(f"{name}: row {i}", record) for i, record in enumerate(records, 1)]


def _read_hf(src: str) -> tuple[str, list, str]:
    name = show_path(src)
    spec = src[len("hf:"):].strip()
    if not spec:
        raise ConfigError(f"{name}: name a dataset: hf:owner/name or hf:owner/name:split")
    target, split = spec, None
    if not _saved_dir(Path(spec).expanduser()) and ":" in spec:
        target, split = (part.strip() for part in spec.rsplit(":", 1))
        if not _SPLIT.fullmatch(split):
            raise ConfigError(f"{name}: {short(split)} is not a split name "
                              f"(hf:owner/name:split, e.g. :test)")
    folder = Path(target).expanduser()
    if _saved_dir(folder):
        return _read_saved(folder, split, name)
    if not _HF_NAME.fullmatch(target):
        raise ConfigError(f"{name}: not a Hugging Face dataset name (hf:owner/name[:split]) "
                          f"or a folder written by save_to_disk")
    datasets = _import_datasets(name)
    cache = hf_cache_dir()
    try:
        loaded = datasets.load_dataset(target, cache_dir=cache)
    except ConnectionError:
        where = cache or "the default Hugging Face datasets cache"
        raise ConfigError(f"{name}: not in the local datasets cache ({show_path(where)}) and "
                          f"the Hugging Face Hub cannot be reached; load it once with network "
                          f"access, or set HF_DATASETS_CACHE to a cache that holds it") from None
    except MemoryError:
        raise ConfigError(f"{name}: the dataset is too large to load") from None
    except Exception as exc:  # not found, gated, several configs, a broken cache, ...
        raise ConfigError(f"{name}: cannot load the dataset ({_first_line(exc)})") from None
    return name, _dataset_rows(loaded, split, name), "table"


def _saved_dir(path: Path) -> bool:
    try:
        return path.is_dir() and any((path / m).is_file() for m in _SAVED_MARKERS)
    except (OSError, ValueError):
        return False


def _import_datasets(name: str):
    try:
        import datasets
    except ImportError:
        raise ConfigError(f"{name}: Hugging Face datasets need the datasets package "
                          f"(pip install \"datasets>=3\")") from None
    return datasets


def _read_saved(folder: Path, split: str | None, name: str) -> tuple[str, list, str]:
    datasets = _import_datasets(name)
    try:
        loaded = datasets.load_from_disk(str(folder))
    except MemoryError:
        raise ConfigError(f"{name}: the dataset is too large to load") from None
    except Exception as exc:
        raise ConfigError(f"{name}: cannot load the saved dataset ({_first_line(exc)})") from None
    return name, _dataset_rows(loaded, split, name), "table"


def _dataset_rows(loaded, split: str | None, name: str) -> list[tuple[str, Any]]:
    """The rows of the chosen split of a Dataset / DatasetDict as plain Python values
    (through Arrow, so image or audio columns are not decoded: they become dicts, which
    are not kept as fields)."""
    import datasets

    if isinstance(loaded, (datasets.DatasetDict, dict)):
        splits = [str(s) for s in loaded.keys()]
        if split is None:
            split = next((s for s in ("test", "train") if s in splits), None)
            if split is None:
                raise ConfigError(f"{name}: no test or train split (splits: {_names(splits)}); "
                                  f"name one: hf:owner/name:split")
        elif split not in splits:
            raise ConfigError(f"{name}: no split {short(split)} (splits: {_names(splits)})")
        dataset = loaded[split]
    else:
        dataset = loaded
        own = getattr(dataset, "split", None)
        if split is not None and own is not None and str(own) != split:
            raise ConfigError(f"{name}: the saved dataset is the {short(str(own))} split, "
                              f"not {short(split)}")
    count = len(dataset)
    if count > MAX_RECORDS:
        raise ConfigError(f"{name}: {count:,} records; at most {MAX_RECORDS:,} are accepted")
    if count == 0:
        return []
    try:
        records = dataset.with_format("arrow")[:].to_pylist()
    except MemoryError:
        raise ConfigError(f"{name}: the dataset is too large to load") from None
    except Exception as exc:
        raise ConfigError(f"{name}: cannot read the dataset's rows ({_first_line(exc)})") from None
    return [(f"{name}: row {i}", record) for i, record in enumerate(records, 1)]


# ----------------------------------------------------------------------------- items

def _items(name: str, rows: list, kind: str, judge: str, query_field: str | None,
           category_field: str | None) -> tuple[list[dict], str, str | None]:
    if not rows:
        raise ConfigError(f"{name}: no items")
    keys: dict[str, None] = {}
    for _, record in rows:
        if isinstance(record, dict):
            for k in record:
                if isinstance(k, str):
                    keys.setdefault(k)
    key_list = list(keys)

    if query_field:
        qkey = _resolve(query_field, key_list)
        if qkey is None:
            raise ConfigError(f"{name}: no field {short(query_field)} for the query "
                              f"(fields: {_names(key_list)})")
    else:
        qkey = next((k for k in (_resolve(n, key_list) for n in QUERY_NAMES) if k), None)
        if qkey is None:
            if key_list:
                raise ConfigError(f"{name}: no query field (looked for "
                                  f"{', '.join(QUERY_NAMES)}; fields: {_names(key_list)}); "
                                  f"name one with query_field")
            qkey = "query"  # every item is a plain string
    rest = [k for k in key_list if k != qkey]
    if category_field:
        ckey = _resolve(category_field, rest)
        if ckey is None:
            raise ConfigError(f"{name}: no field {short(category_field)} for the categories "
                              f"(fields: {_names(key_list)})")
    else:
        ckey = next((k for k in (_resolve(n, rest) for n in CATEGORY_NAMES) if k), None)
    rest = [k for k in rest if k != ckey]
    choice_names = set()
    if judge == "accuracy":  # options and answer are looked up in each record
        choice_names = {n.lower() for n in OPTION_NAMES + ANSWER_NAMES} - {qkey.lower()}
        rest = [k for k in rest if k.lower() not in choice_names]
    rkey = next((k for k in (_resolve(n, rest) for n in REFERENCE_NAMES) if k), None)
    used = {k.lower() for k in (qkey, ckey, rkey) if k} | choice_names

    items = []
    for index, (where, record) in enumerate(rows):
        if isinstance(record, str) and judge != "accuracy":
            query = check_text(record, where, "the query").strip()
            if not query:
                raise ConfigError(f"{where}: the query is empty")
            record = {}
        elif isinstance(record, dict):
            query = _query(record, qkey, where)
        else:
            raise ConfigError(f"{where}: expected an object with a {qkey} field"
                              f"{'' if judge == 'accuracy' else ' or a query string'}, "
                              f"got {describe(record)}")
        item = {"id": f"i{index}", "query": query,
                "categories": _categories(_get(record, ckey), where, ckey, kind == "csv"),
                "options": None, "answer": None,
                "reference": _reference(_get(record, rkey), where, rkey),
                "fields": _fields(record, used, where)}
        if judge == "accuracy":
            item["options"], item["answer"] = _choice(record, where, kind == "csv")
        items.append(item)
    return items, qkey, ckey


def _query(record: dict, key: str, where: str) -> str:
    value = _get(record, key)
    if value is None:
        raise ConfigError(f"{where}: no query (the {short(key)} field is missing)")
    if not isinstance(value, str):
        raise ConfigError(f"{where}: {key} must be a string, got {describe(value)}")
    value = check_text(value, where, key).strip()
    if not value:
        raise ConfigError(f"{where}: the query ({key}) is empty")
    return value


def _categories(value, where: str, key: str | None, from_csv: bool) -> list[str]:
    """A category value as a list: a string or a number is one category, a list is several;
    missing or empty is none. In CSV a cell holding a JSON list is a list."""
    if value is None:
        return []
    if isinstance(value, str):
        text = check_text(value, where, key or "category").strip()
        if not (from_csv and text.startswith("[")):
            return [text] if text else []
        value = parse_json(text, f"{where}: {key}")
        if not isinstance(value, list):
            raise ConfigError(f"{where}: {key} must be a string or a JSON list of strings, "
                              f"got {describe(value)}")
    if _is_number(value):
        return [] if isinstance(value, float) and not math.isfinite(value) else \
            [_number_text(value)]
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{where}: {key} must be a string, a number or a list of strings, "
                          f"got {describe(value)}")
    out: list[str] = []
    for n, entry in enumerate(value, 1):
        if entry is None:
            continue
        if _is_number(entry):
            if isinstance(entry, float) and not math.isfinite(entry):
                continue
            text = _number_text(entry)
        elif isinstance(entry, str):
            text = check_text(entry, where, f"{key} entry {n}").strip()
        else:
            raise ConfigError(f"{where}: {key} entry {n} must be a string, "
                              f"got {describe(entry)}")
        if text and text not in out:
            out.append(text)
    return out


def _reference(value, where: str, key: str | None) -> str | None:
    """A reference answer for free-form judges: a string or a number; anything else (a
    dataset's structured answer, say) is no reference."""
    if isinstance(value, str):
        value = check_text(value, where, key or "reference").strip()
        return value or None
    if _is_number(value) and not (isinstance(value, float) and not math.isfinite(value)):
        return _number_text(value)
    return None


def _fields(record: dict, used: set[str], where: str) -> dict:
    """The record's other scalar fields (strings, numbers, booleans, nulls), JSON-safe."""
    fields = {}
    for key, value in record.items():
        if not isinstance(key, str) or key.lower() in used:
            continue
        if isinstance(value, str):
            value = check_text(value, where, key)
        elif isinstance(value, float) and not math.isfinite(value):
            value = None
        elif not (value is None or isinstance(value, (bool, int, float))):
            continue
        fields[check_text(key, where, "a field name")] = value
    return fields


def _choice(record: dict, where: str, from_csv: bool) -> tuple[list[str], str]:
    """Options and gold letter of a multiple-choice item, checked as load_tasks does."""
    from .tasks import _options, gold_letter

    keys = [k for k in record if isinstance(k, str)]
    okey = next((k for k in (_resolve(n, keys) for n in OPTION_NAMES) if k), None)
    akey = next((k for k in (_resolve(n, keys) for n in ANSWER_NAMES) if k), None)

    raw_options = _get(record, okey)
    if from_csv and isinstance(raw_options, str):
        text = raw_options.strip()
        if text.startswith("["):
            raw_options = parse_json(text, f"{where}: {okey}")
            if not isinstance(raw_options, list):
                raise ConfigError(f"{where}: {okey} must be a JSON list or choices separated "
                                  f"by \"|\", got {describe(raw_options)}")
        else:
            raw_options = [o.strip() for o in text.split("|") if o.strip()] or None
    options = _options(raw_options, where)
    raw = _get(record, akey)
    if isinstance(raw, str):
        raw = check_text(raw, where, akey or "answer")
        if not raw.strip():
            raw = None
    elif raw is not None and not _is_number(raw):
        raise ConfigError(f"{where}: answer must be a letter, an option's text or an option "
                          f"index, got {describe(raw)}")
    if not options:
        raise ConfigError(f"{where}: no options (the accuracy judge needs multiple-choice "
                          f"items: options and answer)")
    if raw is None:
        raise ConfigError(f"{where}: no answer (the accuracy judge needs one per item)")
    answer = gold_letter(raw, options)
    if answer is None:
        shown = short(raw) if isinstance(raw, str) else str(raw)
        raise ConfigError(f"{where}: answer {shown} is not a letter or one of its options")
    return options, answer


def _builtin_accuracy() -> list[dict]:
    """The built-in multiple-choice set (engine/data/moral_mc.jsonl) read by load_tasks,
    with each item's category and other fields from its record."""
    from .tasks import builtin_tasks_path, load_tasks

    tasks = load_tasks(None, "multiple-choice")
    kind, rows = read_records(builtin_tasks_path())
    records = [r for _, r in rows] if kind == "rows" else []
    used = {"question", "query", "options", "answer", "category"}
    items = []
    for task in tasks:
        i = task["id"]
        record = records[i] if i < len(records) and isinstance(records[i], dict) else {}
        where = f"builtin:moral_mc: item {i + 1}"
        items.append({"id": f"i{i}", "query": task["question"],
                      "categories": _categories(record.get("category"), where, "category",
                                                False),
                      "options": task["options"], "answer": task["answer"],
                      "reference": None, "fields": _fields(record, used, where)})
    return items
