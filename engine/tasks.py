"""Tasks for VAPO / PromptAgent: loading, seeded splits, and answer extraction.

A task file is JSONL (one object per line), a JSON list, or CSV (with a header row), with
the fields
    question  the text given to the base model
    options   optional list of choices (CSV: a JSON list, or choices separated by " | ")
    answer    the gold answer: a letter ("A", "(B)"), the text of one option, or (JSON only)
              a 0-based option index
Multiple-choice tasks need options and an answer; free-form tasks need only a question.
"""
from __future__ import annotations

import random
import re
from importlib import resources
from pathlib import Path

from .config import ConfigError

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# The paper's Ethics split (VAPO-ValueCoT App. A.3): train 200, validation 50, test 150.
PAPER_SPLIT = (200, 50, 150)


def builtin_tasks_path() -> Path:
    return Path(str(resources.files("engine.data").joinpath("moral_mc.jsonl")))


def _records(path: Path) -> list[tuple[str, dict]]:
    """Task records as ("file:line" or "file: item N", record); CSV options are parsed here
    (a JSON list, or choices separated by "|")."""
    from .datasets import describe, json_items, parse_json, read_records, show_path

    kind, data = read_records(path)
    if kind == "json":
        return json_items(path, data, "a list of task items (objects with question, options, "
                                      "answer)")
    if path.suffix.lower() != ".csv":
        return data
    if data and "question" not in data[0][1] and "query" not in data[0][1]:
        raise ConfigError(f"{show_path(path)}: the CSV header has no question column "
                          f"(columns: {', '.join(repr(c) for c in list(data[0][1])[:8])})")
    for where, row in data:
        raw = (row.get("options") or "").strip()
        if raw.startswith("["):
            options = parse_json(raw, f"{where}: options")
            if not isinstance(options, list):
                raise ConfigError(f"{where}: options must be a JSON list or choices separated "
                                  f"by \"|\", got {describe(options)}")
            row["options"] = options
        elif raw:
            row["options"] = [o.strip() for o in raw.split("|") if o.strip()]
        else:
            row["options"] = None
        if not (row.get("answer") or "").strip():
            row["answer"] = None
    return data


def gold_letter(answer, options: list[str]) -> str | None:
    """A gold answer (letter, "(B)", "Answer: B" or an option's text) as a letter, or None."""
    if answer is None:
        return None
    if isinstance(answer, int) and not isinstance(answer, bool) and 0 <= answer < len(options):
        return LETTERS[answer]
    text = str(answer).strip()
    for i, option in enumerate(options):
        if text.lower() == str(option).strip().lower():
            return LETTERS[i]
    letter = extract_choice(text, [])
    if letter is not None and LETTERS.index(letter) < len(options):
        return letter
    return None


def _options(value, where: str) -> list[str]:
    """A record's options: a non-empty list of strings (numbers are written as text)."""
    from .datasets import check_text, describe

    if value is None:
        return []
    if not isinstance(value, list) or not value:
        got = "an empty list" if value == [] else describe(value)
        raise ConfigError(f"{where}: options must be a non-empty list, got {got}")
    if len(value) > len(LETTERS):
        raise ConfigError(f"{where}: more than {len(LETTERS)} options")
    options = []
    for n, option in enumerate(value, 1):
        if isinstance(option, (int, float)) and not isinstance(option, bool):
            option = str(option)
        if not isinstance(option, str):
            raise ConfigError(f"{where}: option {n} must be a string, got {describe(option)}")
        option = check_text(option, where, f"option {n}").strip()
        if not option:
            raise ConfigError(f"{where}: option {n} is empty")
        options.append(option)
    return options


def load_tasks(path: str | None, task_type: str) -> list[dict]:
    """Task items as {"id", "question", "options", "answer"} (answer: a letter or None)."""
    from .datasets import check_text, describe, short, show_path, text_field

    p = Path(path) if path else builtin_tasks_path()
    items = []
    for i, (where, record) in enumerate(_records(p)):
        if not isinstance(record, dict):
            raise ConfigError(f"{where}: expected an object with question, options and answer, "
                              f"got {describe(record)}")
        question = text_field(record, ("question", "query"), where, "question")
        options = _options(record.get("options"), where)
        raw = record.get("answer")
        if isinstance(raw, str):
            raw = check_text(raw, where, "answer")
            if not raw.strip():
                raw = None
        elif raw is not None and (isinstance(raw, bool) or not isinstance(raw, (int, float))):
            raise ConfigError(f"{where}: answer must be a letter, an option's text or an "
                              f"option index, got {describe(raw)}")
        answer = gold_letter(raw, options) if options else None
        if task_type == "multiple-choice":
            if not options:
                raise ConfigError(f"{where}: no options (a multiple-choice task needs them)")
            if raw is None:
                raise ConfigError(f"{where}: no answer (a multiple-choice task needs one)")
            if answer is None:
                shown = short(raw) if isinstance(raw, str) else str(raw)
                raise ConfigError(f"{where}: answer {shown} is not a letter or one of its options")
        items.append({"id": i, "question": question, "options": options, "answer": answer,
                      "reference": (None if options or raw is None else str(raw).strip())})
    if not items:
        raise ConfigError(f"{show_path(p)}: no task items")
    return items


def split_sizes(total: int, train: int | None, validation: int | None,
                test: int | None) -> tuple[int, int, int]:
    """Sizes from the config; unset ones follow the paper's 200/50/150, scaled to the data."""
    wanted = [train, validation, test]
    if all(v is not None for v in wanted):
        sizes = wanted
    else:
        budget = total - sum(v for v in wanted if v is not None)
        free = [i for i, v in enumerate(wanted) if v is None]
        share = sum(PAPER_SPLIT[i] for i in free)
        scale = min(1.0, budget / share) if share else 0
        sizes = list(wanted)
        for i in free:
            sizes[i] = max(1, int(PAPER_SPLIT[i] * scale))
    if sum(sizes) > total:
        raise ConfigError(f"the splits need {sizes[0]} + {sizes[1]} + {sizes[2]} = {sum(sizes)} "
                          f"items but the task has {total}")
    return sizes[0], sizes[1], sizes[2]


def split_tasks(items: list[dict], sizes: tuple[int, int, int], seed: int) -> dict[str, list[int]]:
    """A seeded shuffle cut into train / validation / test (lists of item ids)."""
    ids = [item["id"] for item in items]
    random.Random(f"{seed}:split").shuffle(ids)
    a, b, c = sizes
    return {"train": ids[:a], "validation": ids[a:a + b], "test": ids[a + b:a + b + c]}


# ----------------------------------------------------------------------------- answers

_ANSWER_PATTERNS = [
    # "Answer: A", "The answer is (B)", "answer - C.", "Final answer: **D**"
    re.compile(r"(?i:answer)\s*(?i:is|:|-|=)?\s*[*_`\"']*\(?\s*([A-Z])\s*\)?(?![A-Za-z])"),
    # "Option B", "choice (C)"
    re.compile(r"(?i:option|choice)\s*\(?\s*([A-Z])\s*\)?(?![A-Za-z])"),
]
# a reply that starts with its letter: "B", "(B) ...", "B. ...", "B) ..." (not the article "A ...")
_BARE = re.compile(r"^\s*[*_`\"']*(?:\(([A-Z])\)|([A-Z])(?:[).:]|[*_`\"']*\s*$))")
_PAREN = re.compile(r"\(([A-Z])\)")


def extract_choice(text: str, options: list[str]) -> str | None:
    """The option letter a free-text answer chooses, or None when it is missing or ambiguous.

    Tried in order: an explicit "Answer: X" (the last one wins), a reply that starts with
    the letter ("B", "(B)", "B."), a single parenthesised letter "(B)", and the text of
    exactly one option (a longer option containing a shorter one, as "Not wrong" contains
    "Wrong", counts as the longer one).
    """
    if not isinstance(text, str) or not text.strip():
        return None
    n = len(options) or len(LETTERS)
    valid = set(LETTERS[:n])

    def ok(letter: str) -> str | None:
        letter = letter.upper()
        return letter if letter in valid else None

    for pattern in _ANSWER_PATTERNS:
        found = [ok(m.group(1)) for m in pattern.finditer(text)]
        found = [f for f in found if f]
        if found:
            return found[-1]
    match = _BARE.match(text)
    if match and ok(match.group(1) or match.group(2)):
        return ok(match.group(1) or match.group(2))
    letters = {ok(m.group(1)) for m in _PAREN.finditer(text)} - {None}
    if len(letters) == 1:
        return letters.pop()
    if options:
        return _option_by_text(text, options)
    return None


def _option_by_text(text: str, options: list[str]) -> str | None:
    lower = text.lower()
    spans = []  # (start, end, index) of every option mention
    for i, option in enumerate(options):
        o = option.strip().lower()
        if not o:
            continue
        for m in re.finditer(r"(?<![a-z])" + re.escape(o) + r"(?![a-z])", lower):
            spans.append((m.start(), m.end(), i))
    # drop mentions inside a longer option's mention ("wrong" inside "not wrong")
    kept = [s for s in spans
            if not any(o is not s and o[0] <= s[0] and s[1] <= o[1] and (o[1] - o[0]) > (s[1] - s[0])
                       for o in spans)]
    chosen = {i for _, _, i in kept}
    if len(chosen) == 1:
        return LETTERS[chosen.pop()]
    return None


def format_question(item: dict) -> str:
    """The user message for one item: the question, its lettered options, the answer format."""
    if not item["options"]:
        return item["question"]
    lines = [item["question"], "", "Options:"]
    lines += [f"({LETTERS[i]}) {option}" for i, option in enumerate(item["options"])]
    lines += ["", "Finish with a line of the form \"Answer: <letter>\"."]
    return "\n".join(lines)
