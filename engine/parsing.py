"""Robust parsing of untrusted LLM answers.

Every answer a model gives to a meta-prompt is treated as untrusted text. The functions
here find the JSON (or tagged text) in it, repair the usual mistakes models make, check
the result, and either return clean Python values or raise :class:`ParseError` with a
short reason a person can read. No other exception ever escapes a public function.

Public API
----------
``ParseError``               the single exception type (a ``ValueError``).
``extract_json``             find a JSON object in free text.
``parse_score``              read one score such as ``4``, ``"4/5"`` or ``"Score: 4"``.
``normalize_name``           compare aspect names ignoring case and separators.
``parse_reward_selection``   read the reward-selection answer (aspects to judge on).
``parse_scores``             read the scoring answer (one score per aspect).
``parse_json_fields``        read named string fields (transition answers).
``extract_tagged``           text between markers such as ``<START>`` and ``<END>``.

How JSON is found
-----------------
1. Candidate containers are found by one linear bracket scan that knows about string
   literals and escapes. Fenced blocks (```json ... ```) are looked at first.
2. Each candidate is parsed with increasingly lenient attempts: plain JSON (raw control
   characters allowed), then without ``//`` comments and trailing commas, then as a
   Python literal (single quotes, True/False/None). A candidate that never closes (a
   truncated answer) gets its missing quotes and brackets added; if that still fails,
   its incomplete last item is dropped.
3. If the text contains typographic quotes (“ ”), the whole search is repeated once with
   them replaced by plain quotes.
The number of candidates and the work spent on repairs are bounded, so even a 200 KB
answer full of brackets is handled quickly.
"""
from __future__ import annotations

import ast
import json
import math
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, NamedTuple, Optional, Sequence

__all__ = [
    "ParseError",
    "extract_json",
    "parse_score",
    "normalize_name",
    "RewardSelection",
    "parse_reward_selection",
    "AspectScore",
    "parse_scores",
    "parse_json_fields",
    "extract_tagged",
]

# Limits that keep the work per answer bounded.
MAX_CANDIDATES = 20          # containers tried per pass over the text
MAX_FENCES = 10              # fenced blocks looked at before the whole text
MAX_RESCANS = 3              # rescans after a "{" that never closes
MAX_TRUNCATION_CUTS = 3      # incomplete trailing items dropped from a truncated object
REPAIR_BUDGET = 300_000      # characters of slow (pure Python) repair work per answer
MAX_SEARCH_NODES = 200       # nested dicts visited when looking for a key


class ParseError(ValueError):
    """The answer could not be understood. ``str(error)`` is a short reason."""


_FAIL = object()     # "this parse attempt did not work"
_MISSING = object()  # "no such key"


# --------------------------------------------------------------------------- small helpers

def _require_text(value: Any, what: str = "answer") -> str:
    """Return ``value`` if it is a str, else raise ParseError."""
    if not isinstance(value, str):
        raise ParseError(f"{what} must be text, got {type(value).__name__}")
    return value


def _short(value: Any, limit: int = 40) -> str:
    """A repr of ``value`` cut to ``limit`` characters, for error messages."""
    try:
        text = repr(value)
    except Exception:  # e.g. ints too long to print
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fmt_number(number: float) -> str:
    """``5.0`` -> ``"5"``, ``4.5`` -> ``"4.5"``."""
    if isinstance(number, float) and number.is_integer():
        return str(int(number))
    return str(number)


def _dump(value: Any) -> str:
    """Any parsed value as compact JSON text; never raises."""
    try:
        return json.dumps(value, ensure_ascii=False, skipkeys=True, default=str)
    except Exception:
        try:
            return str(value)
        except Exception:
            return ""


def _to_text(value: Any) -> str:
    """A parsed JSON value as text: lists become lines, dicts become JSON, None is ""."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return "\n".join(item if isinstance(item, str) else _dump(item) for item in value)
    return _dump(value)


# --------------------------------------------------------------------------- names

_SEPARATORS = re.compile(r"[\s_\-\u2010-\u2015]+")
_DECORATION = " *`\"'“”‘’.:"


def normalize_name(name: str) -> str:
    """Canonical form of an aspect or key name for comparisons.

    Lower-cases, treats runs of spaces, underscores and hyphens as one space, and strips
    surrounding whitespace and markdown decoration (``*``, backticks, quotes, ``.``/``:``),
    so ``"critical thinking"``, ``"Critical-Thinking"`` and ``"**critical_thinking**"``
    are all ``"critical thinking"``.
    """
    _require_text(name, "name")
    return _SEPARATORS.sub(" ", name.lower()).strip(_DECORATION)


def _lookup(mapping: Mapping, *names: str) -> Any:
    """Value of the first key matching one of ``names`` (already normalized), else _MISSING.

    ``names`` are tried in order; non-str keys are ignored.
    """
    by_name: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(key, str):
            by_name.setdefault(normalize_name(key), value)
    for name in names:
        if name in by_name:
            return by_name[name]
    return _MISSING


def _find_key(obj: Any, *names: str, max_depth: int = 3) -> Any:
    """Breadth-first search through nested dicts for a key matching ``names``."""
    level = [obj]
    visited = 0
    for _ in range(max_depth + 1):
        next_level = []
        for node in level:
            if not isinstance(node, dict):
                continue
            visited += 1
            if visited > MAX_SEARCH_NODES:
                return _MISSING
            value = _lookup(node, *names)
            if value is not _MISSING:
                return value
            next_level.extend(v for v in node.values() if isinstance(v, dict))
        level = next_level
    return _MISSING


# --------------------------------------------------------------------------- bracket scan

_CLOSER = {"{": "}", "[": "]"}
_OPENER_RE = re.compile(r"[{\[]")
# Tokens that matter inside a container. A double-quoted string may be cut off by the end
# of the text (group "q" then missing; group "bs" is a dangling backslash).
_STRING = r'"(?:[^"\\]|\\.)*(?:(?P<q>")|(?P<bs>\\)?\Z)'
_SINGLE = r"'(?:[^'\\\n]|\\.)*'"
_TOKEN_RE = re.compile(rf"{_STRING}|{_SINGLE}|[{{}}\[\]]", re.S)
_REPAIR_TOKEN_RE = re.compile(rf"{_STRING}|{_SINGLE}|[{{}}\[\],]", re.S)


MAX_DEPTH = 500  # deeper nesting cannot be parsed anyway (json's recursion limit)


class _Scan(NamedTuple):
    """Result of :func:`_scan_containers`.

    ``containers`` holds plain tuples ``(depth, start, end, opener)`` sorted outermost
    first, then by position: ``depth`` counts the enclosing containers, ``end`` is None
    for a container never closed (a truncated answer), ``opener`` is "{" or "[".
    """
    containers: list[tuple[int, int, Optional[int], str]]
    closers: str       # closes every container left open, innermost first
    open_string: str   # closes a string left open at the end ("" if none)
    text_end: int      # where truncated containers end (drops a dangling backslash)

    def suffix(self, depth: int) -> str:
        """The text that closes the truncated container at ``depth`` and all inside it."""
        return self.open_string + self.closers[: len(self.closers) - depth]


def _scan_containers(text: str, pos: int = 0) -> _Scan:
    """Find ``{...}`` and ``[...]`` regions from ``pos`` in one linear pass.

    String literals are respected inside containers; outside any container quotes are
    ignored (they belong to prose). A mismatched closing bracket, or nesting deeper than
    MAX_DEPTH, abandons the open containers.
    """
    stack: list[tuple[str, int]] = []
    found: list[tuple[int, int, Optional[int], str]] = []
    cut_string = ""
    while not stack:
        opening = _OPENER_RE.search(text, pos)
        if opening is None:
            break
        stack.append((opening.group(), opening.start()))
        pos, cut_string = _scan_inside(text, opening.end(), stack, found)
    # A string cut off by the end of the text needs a closing quote; a dangling
    # backslash is dropped first, or it would escape that quote.
    text_end = len(text) - 1 if cut_string == "\\" else len(text)
    open_string = '"' if cut_string else ""
    # Whatever is still open ran into the end of the text.
    for depth, (opener, start) in enumerate(stack):
        found.append((depth, start, None, opener))
    found.sort()
    closers = "".join(_CLOSER[opener] for opener, _ in reversed(stack))
    return _Scan(found, closers, open_string, text_end)


def _scan_inside(text: str, pos: int, stack: list, found: list) -> tuple[int, str]:
    """Read tokens from ``pos`` until ``stack`` is empty again or the text ends.

    Records closed containers in ``found``. Returns (position reached, cut_string) where
    cut_string tells how a string cut off by the end of the text ends: "" (no such
    string), '"' (it just stops) or "\\" (it stops with a dangling backslash).
    """
    for match in _TOKEN_RE.finditer(text, pos):
        first = match.group()[0]
        if first == "{" or first == "[":
            stack.append((first, match.start()))
            if len(stack) > MAX_DEPTH:
                stack.clear()
                return match.end(), ""
        elif first == "}" or first == "]":
            opener, start = stack.pop()
            if _CLOSER[opener] != first:
                stack.clear()
                return match.end(), ""
            found.append((len(stack), start, match.end(), opener))
            if not stack:
                return match.end(), ""
        elif first == '"' and match.group("q") is None:
            return len(text), "\\" if match.group("bs") else '"'
    return len(text), ""


def _truncation_state(text: str) -> tuple[Optional[str], Optional[int]]:
    """For a cut-off container: (suffix that closes it, position of its last comma).

    The suffix is None if the brackets do not match.
    """
    stack: list[str] = []
    last_comma = None
    open_string = ""
    for match in _REPAIR_TOKEN_RE.finditer(text):
        token = match.group()
        first = token[0]
        if first in "{[":
            stack.append(first)
            if len(stack) > MAX_DEPTH:
                return None, None
        elif first in "}]":
            if not stack or _CLOSER[stack.pop()] != first:
                return None, None
        elif first == ",":
            last_comma = match.start()
        elif first == '"' and match.group("q") is None:
            open_string = '"'
    closers = "".join(_CLOSER[opener] for opener in reversed(stack))
    return open_string + closers, last_comma


# --------------------------------------------------------------------------- lenient loads

_COMMENT_RE = re.compile(
    rf'(?P<keep>"(?:[^"\\]|\\.)*(?:"|\Z)|{_SINGLE})|//[^\n]*|/\*.*?(?:\*/|\Z)', re.S
)
_TRAILING_COMMA_RE = re.compile(
    rf'(?P<keep>"(?:[^"\\]|\\.)*(?:"|\Z)|{_SINGLE})|,(?=\s*[}}\]])', re.S
)
_PYTHON_RE = re.compile(
    r'''(?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')|\b(?P<word>true|false|null)\b''', re.S
)
_PY_WORDS = {"true": "True", "false": "False", "null": "None"}
_RAW_CONTROL = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_PYTHONIZE_HINTS = ("true", "false", "null", *_RAW_CONTROL)


def _keep_strings(match: re.Match) -> str:
    """Regex callback: keep string literals, drop everything else that matched."""
    return match.group("keep") or ""


def _clean_json(text: str) -> str:
    """Remove ``//`` and ``/* */`` comments and trailing commas outside strings."""
    if "//" in text or "/*" in text:
        text = _COMMENT_RE.sub(_keep_strings, text)
    if "," in text:
        text = _TRAILING_COMMA_RE.sub(_keep_strings, text)
    return text


def _pythonize(match: re.Match) -> str:
    """Regex callback: JSON words to Python, raw newlines in strings to escapes."""
    if match.group("word"):
        return _PY_WORDS[match.group("word")]
    string = match.group("str")
    for raw, escaped in _RAW_CONTROL.items():
        string = string.replace(raw, escaped)
    return string


class _Attempts:
    """Book-keeping for one search: the first error seen and the repair budget.

    Plain ``json.loads`` is fast and always tried; the repairs (cleaning, Python
    literals, re-scanning truncated objects) spend from a budget of characters, so a
    huge answer full of near-JSON cannot make parsing slow.
    """

    def __init__(self) -> None:
        self.tried = 0
        self.first_error: Optional[str] = None
        self.budget = REPAIR_BUDGET

    def note(self, error: Exception) -> None:
        if self.first_error is None:
            self.first_error = str(error)[:120]

    def spend(self, amount: int) -> bool:
        """Use ``amount`` of the repair budget; False (and nothing used) if too little is left."""
        if amount > self.budget:
            return False
        self.budget -= amount
        return True


def _loads_lenient(text: str, attempts: _Attempts) -> Any:
    """Parse ``text`` as JSON, then as cleaned JSON, then as a Python literal."""
    try:
        return json.loads(text, strict=False)
    except Exception as error:  # JSONDecodeError, RecursionError, huge ints, ...
        attempts.note(error)
    if not attempts.spend(len(text)):  # the repairs below are slower: keep them bounded
        return _FAIL
    cleaned = _clean_json(text)
    if cleaned != text:
        try:
            return json.loads(cleaned, strict=False)
        except Exception:
            pass
    if any(part in cleaned for part in _PYTHONIZE_HINTS):
        cleaned = _PYTHON_RE.sub(_pythonize, cleaned)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escapes such as "\d"
            return ast.literal_eval(cleaned)
    except Exception:  # SyntaxError, ValueError, RecursionError, MemoryError, ...
        return _FAIL


def _parse_truncated(text: str, suffix: str, attempts: _Attempts) -> Any:
    """Parse a container that was cut off: close it, or drop its incomplete last item."""
    value = _loads_lenient(text + suffix, attempts)
    if value is not _FAIL:
        return value
    if not attempts.spend(len(text)):
        return _FAIL
    _, comma = _truncation_state(text)
    for _ in range(MAX_TRUNCATION_CUTS):
        if comma is None:
            break
        text = text[:comma]
        if not attempts.spend(len(text)):
            break
        suffix, comma = _truncation_state(text)
        if suffix is None:
            break
        value = _loads_lenient(text + suffix, attempts)
        if value is not _FAIL:
            return value
    return _FAIL


# --------------------------------------------------------------------------- candidates

_FENCE_RE = re.compile(r"```[A-Za-z0-9_+-]*[ \t]*\n?(.*?)(?:```|\Z)", re.S)
_SMART_DOUBLE = {ord("“"): '"', ord("”"): '"', ord("„"): '"', ord("‟"): '"'}


def _candidates(text: str, want_lists: bool,
                seen: set[tuple[str, bool]]) -> Iterator[tuple[str, Optional[str]]]:
    """Yield (candidate text, closing suffix or None) in preference order.

    Candidates already in ``seen`` are skipped (and new ones added to it).

    Fenced blocks come first, then the whole text; inside each, outer containers before
    nested ones, earlier before later. A container that runs to the end of the text may
    just be a stray "{" in prose that swallowed the real answer, so the text after its
    opening bracket is scanned again (at most MAX_RESCANS times).
    """
    sources = [m.group(1) for _, m in zip(range(MAX_FENCES), _FENCE_RE.finditer(text))]
    sources.append(text)
    for source in sources:
        pos = 0
        for _ in range(MAX_RESCANS + 1):
            scan = _scan_containers(source, pos)
            for depth, start, end, opener in scan.containers:
                if opener == "[" and not want_lists:
                    continue
                truncated = end is None
                candidate = source[start:scan.text_end if truncated else end]
                if (candidate, truncated) in seen:
                    continue
                seen.add((candidate, truncated))
                yield candidate, (scan.suffix(depth) if truncated else None)
            if not scan.closers:   # nothing ran into the end of the text
                break
            pos = min(start for depth, start, end, _ in scan.containers
                      if end is None and depth == 0) + 1


def _iter_parsed(text: str, attempts: _Attempts, want_lists: bool = False) -> Iterator[Any]:
    """Yield every dict (and list, if ``want_lists``) that can be parsed out of ``text``."""
    passes = [text]
    if any(ch in text for ch in "“”„‟"):
        passes.append(text.translate(_SMART_DOUBLE))
    seen: set[tuple[str, bool]] = set()
    for source in passes:
        tried = 0
        for candidate, suffix in _candidates(source, want_lists, seen):
            if tried >= MAX_CANDIDATES:
                break
            tried += 1
            attempts.tried += 1
            if suffix is None:
                value = _loads_lenient(candidate, attempts)
            else:
                value = _parse_truncated(candidate, suffix, attempts)
            if isinstance(value, dict) or (want_lists and isinstance(value, list)):
                yield value


def _no_json_error(attempts: _Attempts) -> ParseError:
    """The error for an answer in which nothing could be parsed."""
    if attempts.tried == 0:
        return ParseError("no JSON object found")
    detail = f" ({attempts.first_error})" if attempts.first_error else ""
    return ParseError(f"no valid JSON object found{detail}")


def _has_keys(obj: dict, keys: Sequence[str]) -> bool:
    """True if every key in ``keys`` (normalized) is a key of ``obj``."""
    present = {normalize_name(k) for k in obj if isinstance(k, str)}
    return all(k in present for k in keys)


def extract_json(text: str, required_keys: Iterable[str] = ()) -> dict:
    """Find a JSON object in model text and return it as a dict.

    Prefers the first object that has all ``required_keys`` (compared with
    :func:`normalize_name`), else returns the first object that parses.
    Raises ParseError if there is none.
    """
    _require_text(text)
    keys = [normalize_name(str(k)) for k in required_keys]
    attempts = _Attempts()
    first = None
    for value in _iter_parsed(text, attempts):
        if _has_keys(value, keys):
            return value
        if first is None:
            first = value
    if first is not None:
        return first
    raise _no_json_error(attempts)


# --------------------------------------------------------------------------- scores

_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)"
_SCORE_RE = re.compile(
    rf"(?P<num>{_NUMBER})(?:\s*(?:/|out\s+of|of)\s*(?P<den>{_NUMBER}))?", re.I
)
_SCORE_PREFIX_RE = re.compile(r"^(?:score|rating|grade)\s*[:=]?\s*", re.I)
_SCORE_WRAPPING = " \t\r\n[]()*`\"'"


def _score_problem(value: Any, lo: float, hi: float) -> tuple[float, str]:
    """Read a score. Returns (score, "") or (nan, reason the score is unusable)."""
    bad = math.nan
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]                      # [4] -> 4 (one level only)
        if isinstance(value, (list, tuple)):
            return bad, f"must be a number, got {type(value).__name__}"
    if isinstance(value, bool):
        return bad, f"must be a number, got {value}"
    if isinstance(value, int):
        if not lo <= value <= hi:
            return bad, f"out of range {_fmt_number(lo)}-{_fmt_number(hi)}: {_short(value)}"
        return float(value), ""
    if isinstance(value, float):
        number = value
    elif isinstance(value, str):
        number, reason = _score_from_string(value, hi)
        if reason:
            return bad, reason
    else:
        return bad, f"must be a number, got {type(value).__name__}"
    if math.isnan(number):
        return bad, "is not a number: nan"
    if not lo <= number <= hi:
        return bad, f"out of range {_fmt_number(lo)}-{_fmt_number(hi)}: {_fmt_number(number)}"
    return float(number), ""


def _score_from_string(text: str, hi: float) -> tuple[float, str]:
    """Read "4", "4/5", "4 out of 5", "Score: 4", "[4]" ... Returns (number, problem)."""
    cleaned = text.strip(_SCORE_WRAPPING)
    cleaned = _SCORE_PREFIX_RE.sub("", cleaned).strip(_SCORE_WRAPPING).rstrip(".").strip()
    if not cleaned:
        return math.nan, "is empty"
    match = _SCORE_RE.fullmatch(cleaned)
    if match is None:
        return math.nan, f"is not a number: {_short(text)}"
    number = float(match.group("num"))
    if match.group("den") is not None:
        denominator = float(match.group("den"))
        if denominator != hi:
            return math.nan, (f"is on a scale of {_fmt_number(denominator)}, "
                              f"expected /{_fmt_number(hi)}: {_short(text)}")
    return number, ""


def parse_score(value: Any, lo: float = 1, hi: float = 5) -> float:
    """A score as a float in [lo, hi].

    Accepts numbers and strings such as ``"4"``, ``"4/5"``, ``"4 out of 5"``, ``"4.5"``,
    ``"Score: 4"`` and ``"[4]"``. A fraction must use ``hi`` as its denominator.
    Rejects bools, NaN, infinities, empty strings and values out of range.
    """
    number, problem = _score_problem(value, lo, hi)
    if problem:
        raise ParseError(f"score {problem}")
    return number


# --------------------------------------------------------------------------- reward selection

@dataclass
class RewardSelection:
    """The parsed reward-selection answer."""
    analysis: dict                 # the model's query analysis ({} if none)
    reasoning: str                 # why these aspects ("" if none)
    aspects: list[str]             # catalogue spelling, or the new aspect's name
    new_aspects: dict[str, str] = field(default_factory=dict)  # selected new aspect -> definition
    warnings: list[str] = field(default_factory=list)         # what was repaired or dropped


_NAME_KEYS = ("name", "aspect", "title", "aspect name")
_DEFINITION_KEYS = ("definition", "description", "meaning", "explanation")
_BULLET_RE = re.compile(r"^\s*(?:[-*•]+|\d+[.)])\s+")
_NAME_END_RE = re.compile(r":|\(| [-–—] ")


def _name_from_text(text: str) -> str:
    """ "1. **Safety**: because ..." -> "Safety" (bullet and explanation removed)."""
    text = _BULLET_RE.sub("", text)
    text = _NAME_END_RE.split(text, maxsplit=1)[0]
    return text.strip(_DECORATION + "\t\r\n")


def _selected_names(raw: Any, notes: list[str]) -> list[str]:
    """Aspect names from a list, a comma-separated string or a {name: reason} dict."""
    if isinstance(raw, str):
        items: list[Any] = re.split(r"[,;\n]", raw)
    elif isinstance(raw, dict):
        items = [k for k in raw if isinstance(k, str)]
    elif isinstance(raw, (list, tuple)):
        items = list(raw)
    else:
        raise ParseError(f"selected_aspects must be a list, got {type(raw).__name__}")
    names = []
    for item in items:
        if isinstance(item, dict):
            name = _lookup(item, *_NAME_KEYS)
            if name is _MISSING and len(item) == 1:
                name = next(iter(item))          # [{"Clarity": "why"}]
            item = name
        if isinstance(item, str):
            name = _name_from_text(item)
            if name:
                names.append(name)
        else:
            notes.append(f"ignored a selected aspect that is not a name: {_short(item)}")
    return names


def _new_aspect_definitions(raw: Any, notes: list[str]) -> dict[str, str]:
    """New aspects as {normalized name: definition} from a dict, list or lines of text."""
    pairs: list[tuple[Any, Any]] = []
    if isinstance(raw, dict):
        pairs = list(raw.items())
    elif isinstance(raw, (list, tuple)):
        for item in raw:
            if isinstance(item, dict):
                pairs.append((_lookup(item, *_NAME_KEYS), _lookup(item, *_DEFINITION_KEYS)))
            elif isinstance(item, str) and ":" in item:
                pairs.append(tuple(item.split(":", 1)))
    elif isinstance(raw, str):
        pairs = [tuple(line.split(":", 1)) for line in raw.splitlines() if ":" in line]
    elif raw is not None and raw is not _MISSING:
        notes.append(f"ignored new_aspects of type {type(raw).__name__}")
    definitions = {}
    for name, definition in pairs:
        if isinstance(definition, dict):
            definition = _lookup(definition, *_DEFINITION_KEYS)
        if not isinstance(name, str) or not normalize_name(name):
            continue
        if not isinstance(definition, str) or not definition.strip():
            notes.append(f"new aspect {_short(name)} has no definition")
            continue
        definitions.setdefault(normalize_name(name), definition.strip())
    return definitions


def _find_selection(obj: dict) -> Any:
    """The raw selected-aspects value wherever the model put it, else _MISSING."""
    value = _find_key(obj, "selected aspects")
    if value is _MISSING:
        value = _lookup(obj, "aspects selection")
        if not isinstance(value, (list, str)):
            value = _MISSING
    if value is _MISSING:
        value = _find_key(obj, "aspects", "selected")
        if not isinstance(value, (list, str, dict)):
            value = _MISSING
    return value


def _analysis_of(obj: dict, notes: list[str]) -> dict:
    """The query analysis as a dict ({} with a warning if absent or not a dict)."""
    analysis = _find_key(obj, "query analysis", "analysis", max_depth=1)
    if isinstance(analysis, dict):
        return analysis
    if isinstance(analysis, str) and analysis.strip():
        return {"summary": analysis.strip()}
    notes.append("no query_analysis given")
    return {}


def _reasoning_of(obj: dict, notes: list[str]) -> str:
    """The selection reasoning as text ("" with a warning if absent)."""
    selection = _lookup(obj, "aspects selection")
    reasoning = _MISSING
    if isinstance(selection, dict):
        reasoning = _lookup(selection, "reasoning", "reason", "rationale")
    if reasoning is _MISSING:
        reasoning = _find_key(obj, "reasoning", "reason", "rationale")
    text = _to_text(reasoning).strip() if reasoning is not _MISSING else ""
    if not text:
        notes.append("no reasoning given for the aspect selection")
    return text


def _resolve_aspects(names: list[str], catalogue: Mapping[str, str],
                     definitions: dict[str, str], notes: list[str]
                     ) -> tuple[list[str], dict[str, str], list[str]]:
    """Map names to catalogue spelling or defined new aspects; drop and dedupe the rest.

    Returns (aspects, new aspect definitions, dropped names).
    """
    by_norm = {normalize_name(name): name for name in catalogue}
    aspects: list[str] = []
    new_aspects: dict[str, str] = {}
    dropped: list[str] = []
    seen: set[str] = set()
    for name in names:
        norm = normalize_name(name)
        if not norm or norm in seen:
            continue
        if norm in by_norm:
            aspects.append(by_norm[norm])
        elif norm in definitions:
            aspects.append(name)
            new_aspects[name] = definitions[norm]
        else:
            dropped.append(name)
            notes.append(f"dropped unknown aspect {_short(name)} "
                         "(not in the catalogue and no definition given)")
            continue
        seen.add(norm)
    for norm in definitions:
        if norm not in seen and norm not in by_norm:
            notes.append(f"new aspect {_short(norm)} was defined but not selected; ignored")
    return aspects, new_aspects, dropped


def _dropped_note(dropped: list[str], limit: int = 5) -> str:
    """ " (dropped: A, B, ...)" for an error message, or "" if nothing was dropped."""
    if not dropped:
        return ""
    shown = ", ".join(name if len(name) <= 30 else name[:27] + "..." for name in dropped[:limit])
    return f" (dropped: {shown}{', ...' if len(dropped) > limit else ''})"


def parse_reward_selection(text: str, catalogue: Mapping[str, str],
                           min_aspects: int = 2, max_aspects: int = 5) -> RewardSelection:
    """Read the reward-selection answer.

    Expected shape (leniently)::

        {"query_analysis": {...},
         "aspects_selection": {"reasoning": "...", "selected_aspects": ["Clarity", ...]},
         "new_aspects": {"Name": "definition"}}

    Names are mapped to the catalogue's spelling; a name outside the catalogue is kept only
    if ``new_aspects`` defines it. Too many aspects are cut to ``max_aspects`` (with a
    warning); fewer than ``min_aspects`` raises ParseError.
    """
    _require_text(text)
    attempts = _Attempts()
    data, selection = None, _MISSING
    for value in _iter_parsed(text, attempts):
        selection = _find_selection(value)
        if selection is not _MISSING:
            data = value
            break
        if data is None:
            data = value
    if data is None:
        raise _no_json_error(attempts)
    if selection is _MISSING:
        raise ParseError("no selected_aspects found in the answer")

    notes: list[str] = []
    names = _selected_names(selection, notes)
    definitions = _new_aspect_definitions(_find_key(data, "new aspects"), notes)
    aspects, new_aspects, dropped = _resolve_aspects(names, catalogue, definitions, notes)
    if len(aspects) > max_aspects:
        notes.append(f"{len(aspects)} aspects selected; kept the first {max_aspects}")
        aspects = aspects[:max_aspects]
        new_aspects = {k: v for k, v in new_aspects.items() if k in aspects}
    if len(aspects) < min_aspects:
        raise ParseError(f"only {len(aspects)} usable aspects selected, "
                         f"need at least {min_aspects}{_dropped_note(dropped)}")
    return RewardSelection(
        analysis=_analysis_of(data, notes),
        reasoning=_reasoning_of(data, notes),
        aspects=aspects,
        new_aspects=new_aspects,
        warnings=notes,
    )


# --------------------------------------------------------------------------- per-aspect scores

@dataclass
class AspectScore:
    """One aspect's score and the judge's reason for it."""
    score: float
    rationale: str


_SCORE_KEYS = ("score", "rating", "value", "grade", "points")
_RATIONALE_KEYS = ("rationale", "reason", "reasoning", "explanation", "justification",
                   "comment", "feedback")
_ENTRY_NAME_KEYS = ("aspect", "name", "criterion", "dimension", "metric", "category")


def _score_table(obj: Any, wanted: Mapping[str, str], depth: int = 0) -> dict[str, Any]:
    """Raw score entries {normalized aspect: value} found in a parsed answer.

    Looks at the object's own keys, at a list of {"aspect": ..., "score": ...} entries,
    and inside wrappers such as {"scores": {...}}; returns the table matching most aspects.
    """
    table: dict[str, Any] = {}
    if isinstance(obj, dict):
        for key, value in obj.items():
            if isinstance(key, str):
                norm = normalize_name(key)
                if norm in wanted:
                    table.setdefault(norm, value)
        children = list(obj.values())
    elif isinstance(obj, list):
        for item in obj:
            if not isinstance(item, dict):
                continue
            name = _lookup(item, *_ENTRY_NAME_KEYS)
            if isinstance(name, str) and normalize_name(name) in wanted:
                table.setdefault(normalize_name(name), item)
            elif len(item) == 1:                      # [{"Clarity": {...}}, ...]
                for key, value in item.items():
                    if isinstance(key, str) and normalize_name(key) in wanted:
                        table.setdefault(normalize_name(key), value)
        children = []
    else:
        return table
    if len(table) == len(wanted) or depth >= 3:
        return table
    for child in children[:MAX_SEARCH_NODES]:
        if isinstance(child, (dict, list)):
            inner = _score_table(child, wanted, depth + 1)
            if len(inner) > len(table):
                table = inner
    return table


def _aspect_score(raw: Any, aspect: str, lo: float, hi: float) -> AspectScore:
    """An AspectScore from a raw entry: a dict with score/rationale, or a bare score."""
    rationale = ""
    value = raw
    if isinstance(raw, dict):
        value = _lookup(raw, *_SCORE_KEYS)
        if value is _MISSING:
            raise ParseError(f"score for {aspect} missing")
        reason = _lookup(raw, *_RATIONALE_KEYS)
        rationale = "" if reason is _MISSING else _to_text(reason).strip()
    number, problem = _score_problem(value, lo, hi)
    if problem:
        raise ParseError(f"score for {aspect} {problem}")
    return AspectScore(score=number, rationale=rationale)


def parse_scores(text: str, aspects: Sequence[str], lo: float = 1,
                 hi: float = 5) -> dict[str, AspectScore]:
    """Read the scoring answer: one AspectScore per requested aspect, in the given order.

    Expected ``{"<Aspect>": {"rationale": str, "score": 1-5}, ...}``; also accepts bare
    scores, ``"reason"`` instead of ``"rationale"``, a list of ``{"aspect", "score"}``
    entries and wrappers such as ``{"scores": {...}}``. Names match via
    :func:`normalize_name`. Missing aspects or invalid scores raise ParseError.
    """
    _require_text(text)
    if isinstance(aspects, str):
        aspects = [aspects]
    wanted: dict[str, str] = {}
    for aspect in aspects:
        wanted.setdefault(normalize_name(_require_text(aspect, "aspect name")), aspect)
    if not wanted:
        return {}

    attempts = _Attempts()
    best: Optional[dict[str, Any]] = None
    for value in _iter_parsed(text, attempts, want_lists=True):
        table = _score_table(value, wanted)
        if best is None or len(table) > len(best):
            best = table
        if len(best) == len(wanted):
            break
    if best is None:
        raise _no_json_error(attempts)
    missing = [aspect for norm, aspect in wanted.items() if norm not in best]
    if missing:
        raise ParseError(f"missing aspects: {', '.join(missing)}")
    return {aspect: _aspect_score(best[norm], aspect, lo, hi) for norm, aspect in wanted.items()}


# --------------------------------------------------------------------------- named fields

_INCOMPLETE_ESCAPE_RE = re.compile(r"\\(?:u[0-9a-fA-F]{0,3})?\Z")
_ESCAPE_RE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)", re.S)
_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f",
                   '"': '"', "\\": "\\", "/": "/"}


def _json_unescape(raw: str) -> str:
    """Decode the escapes of a JSON string body, tolerating broken or cut-off ones.

    Unknown escapes such as ``\\d`` are kept as written.
    """
    for body in (raw, _INCOMPLETE_ESCAPE_RE.sub("", raw)):
        try:
            return json.loads(f'"{body}"', strict=False)
        except Exception:
            pass

    def replace(match: re.Match) -> str:
        code = match.group(1)
        if len(code) == 5:
            return chr(int(code[1:], 16))
        return _SIMPLE_ESCAPES.get(code, "\\" + code)

    return _ESCAPE_RE.sub(replace, _INCOMPLETE_ESCAPE_RE.sub("", raw))


# A quote ends the value only if a comma and the next key, a closing bracket or the end
# of the text follow; other quotes are taken as unescaped quotes inside the value.
_FIELD_VALUE = (r'\s*:\s*["“]((?:[^"\\]|\\.|"(?!\s*(?:,\s*["“][^"\n]*["”]\s*:|[}\]]|\Z)))*)'
                r'(?:"|\\?\Z)')


def _regex_fields(text: str, names: Sequence[str]) -> dict[str, str]:
    """Last resort: pull ``"field": "value"`` strings out of text that is not valid JSON.

    The value may contain escaped (or even unescaped) quotes and may run to the end of a
    truncated text.
    """
    found = {}
    for name in names:
        pattern = r'["“]' + re.escape(name) + r'["”]' + _FIELD_VALUE
        match = re.search(pattern, text, re.S)
        if match:
            found[name] = _json_unescape(match.group(1)).strip()
    return found


def _field_values(obj: dict, names: Sequence[str]) -> dict[str, str]:
    """The named fields of a parsed object as stripped text ("" when absent)."""
    values = {}
    for name in names:
        value = obj.get(name, _MISSING)
        if value is _MISSING:
            value = _find_key(obj, normalize_name(name), max_depth=2)
        values[name] = "" if value is _MISSING else _to_text(value).strip()
    return values


def parse_json_fields(text: str, fields: Sequence[str],
                      required: Sequence[str]) -> dict[str, str]:
    """Read named fields of a JSON answer as text, e.g. for transition answers.

    Returns every name in ``fields`` (and ``required``): strings as given (stripped),
    lists as newline-joined items, dicts as JSON, absent ones as "". A required field that
    is missing or blank raises ParseError. If no JSON object fits, ``"field": "..."``
    strings are pulled out of the text directly (this survives truncated answers).
    """
    _require_text(text)
    fields = [fields] if isinstance(fields, str) else list(fields)
    required = [required] if isinstance(required, str) else list(required)
    names = list(dict.fromkeys([*fields, *required]))
    for name in names:
        _require_text(name, "field name")

    attempts = _Attempts()
    first: Optional[dict[str, str]] = None
    for value in _iter_parsed(text, attempts):
        values = _field_values(value, names)
        if all(values[name] for name in required):
            return values
        if first is None:
            first = values
    fallback = _regex_fields(text, names)
    if all(fallback.get(name) for name in required):
        return {name: fallback.get(name, "") for name in names}
    if first is None and not fallback:
        raise _no_json_error(attempts)
    source = first if first is not None else fallback
    blank = [name for name in required if not source.get(name)]
    raise ParseError(f"missing or empty required field{'s' if len(blank) > 1 else ''}: "
                     f"{', '.join(blank)}")


# --------------------------------------------------------------------------- tagged text

def _tagged_segments(text: str, start: re.Pattern, end: re.Pattern) -> list[str]:
    """All texts between start and end markers; a start without an end runs to the end."""
    segments = []
    pos = 0
    while True:
        opening = start.search(text, pos)
        if opening is None:
            return segments
        closing = end.search(text, opening.end())
        if closing is None:
            segments.append(text[opening.end():])
            return segments
        # With "<S> a <S> b <E>", the pair is the start closest to the end.
        inner_start = opening.end()
        for again in start.finditer(text, opening.end(), closing.start()):
            inner_start = again.end()
        segments.append(text[inner_start:closing.start()])
        pos = closing.end()


def extract_tagged(text: str, start: str, end: str, *, last: bool = True) -> str:
    """The stripped text between ``start`` and ``end`` markers, e.g. <START> ... <END>.

    With several pairs the last non-empty one is returned (the first if ``last=False``).
    A missing end marker means "to the end of the text". Markers are matched exactly,
    or ignoring case if they do not occur exactly. A missing start marker or an empty
    result raises ParseError.
    """
    _require_text(text)
    if not _require_text(start, "start marker") or not _require_text(end, "end marker"):
        raise ParseError("markers must not be empty")
    for flags in (0, re.I):
        start_re = re.compile(re.escape(start), flags)
        if start_re.search(text):
            break
    else:
        raise ParseError(f"start marker {start} not found")
    end_re = re.compile(re.escape(end), flags)
    segments = [s.strip() for s in _tagged_segments(text, start_re, end_re)]
    segments = [s for s in segments if s]
    if not segments:
        raise ParseError(f"nothing between {start} and {end}")
    return segments[-1] if last else segments[0]
