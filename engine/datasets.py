"""Seed queries and ICL examples: built-in sets (ours) or files named in the config.

Accepted files:
* seed queries: JSONL with "query" (or "instruction"/"prompt") per line, a JSON list of such
  objects or strings, or a .txt file with one query per line;
* ICL examples: JSONL/JSON list with "query" and "response" (or "answer"), or a JSON object
  mapping query -> response. A response wrapped in <START>...<END> is unwrapped.
"""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from .config import ConfigError

QUERY_FIELDS = ("query", "instruction", "prompt", "question")
RESPONSE_FIELDS = ("response", "answer", "output")


def _read_records(path: Path):
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".txt":
        return [line.strip() for line in text.splitlines() if line.strip()]
    if path.suffix == ".jsonl":
        out = []
        for i, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ConfigError(f"{path}:{i}: not valid JSON: {exc.msg}") from None
        return out
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc.msg}") from None


def _field(record: dict, names, path, what):
    for name in names:
        value = record.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    raise ConfigError(f"{path}: a record has no {what} field ({' or '.join(names)})")


def _builtin(name: str) -> Path:
    return Path(str(resources.files("engine.data").joinpath(name)))


def load_seed_queries(path: str | None, limit: int | None = None) -> list[str]:
    p = Path(path) if path else _builtin("seed_queries.jsonl")
    records = _read_records(p)
    if isinstance(records, dict):
        records = list(records.values())
    queries = []
    for r in records:
        queries.append(r.strip() if isinstance(r, str) else _field(r, QUERY_FIELDS, p, "query"))
    queries = [q for q in queries if q]
    if not queries:
        raise ConfigError(f"{p}: no seed queries")
    return queries[:limit] if limit else queries


def _unwrap(text: str) -> str:
    text = text.strip()
    if text.startswith("<START>") and "<END>" in text:
        text = text[len("<START>"):text.rindex("<END>")]
    return text.strip()


def load_icl_examples(path: str | None) -> list[tuple[str, str]]:
    p = Path(path) if path else _builtin("icl_examples.jsonl")
    records = _read_records(p)
    pairs: list[tuple[str, str]] = []
    if isinstance(records, dict):
        pairs = [(str(q).strip(), _unwrap(str(a))) for q, a in records.items()]
    elif isinstance(records, list):
        for r in records:
            if not isinstance(r, dict):
                raise ConfigError(f"{p}: each ICL example must be an object with query and response")
            pairs.append((_field(r, QUERY_FIELDS, p, "query"),
                          _unwrap(_field(r, RESPONSE_FIELDS, p, "response"))))
    else:
        raise ConfigError(f"{p}: expected a list of examples or a query -> response object")
    if not pairs:
        raise ConfigError(f"{p}: no ICL examples")
    return pairs


def load_inputs(cfg: dict) -> dict:
    """A validated config's inputs for its method (built-in sets where no file is named)."""
    from .config import family

    kind = family(cfg["method"])
    data = cfg["data"]
    if kind == "vapo":
        from .tasks import load_tasks
        return {"tasks": load_tasks(data["tasks"], data["task_type"])}
    if kind == "picaco":
        from .values import load_picaco_inputs
        return load_picaco_inputs(cfg)
    return {"seed": load_seed_queries(data["seed"], data["seed_limit"]),
            "icl": load_icl_examples(data["icl"])}
