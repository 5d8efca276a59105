"""Robust parsing of untrusted LLM answers.

Every answer a model gives to a meta-prompt is treated as untrusted text. The functions
here find the JSON (or tagged text) in it, repair the usual mistakes models make, apply
the domain rules (aspect names, score forms), check the result against the answer's model
(engine.schemas), and either return clean Python values or raise :class:`ParseError` with
a short reason a person can read. No other exception ever escapes a public function.

Public API
----------
``ParseError``               the single exception type (a ``ValueError``).
``extract_json``             find a JSON object in free text.
``parse_score``              read one score such as ``4``, ``"4/5"`` or ``"Score: 4"``.
``normalize_name``           compare aspect names ignoring case and separators.
``parse_reward_selection``   read the reward-selection answer (aspects to judge on).
``parse_scores``             read the scoring answer (one score per aspect).
``parse_json_fields``        read named string fields.
``parse_answer``             read an answer with fixed keys and check it with its model.
``extract_tagged``           text between markers such as ``<START>`` and ``<END>``.

How JSON is found
-----------------
1. Candidate containers are found by one linear bracket scan that knows about string
   literals and escapes; fenced blocks (```json ... ```) are looked at first. A container
   that never closes (a truncated answer) runs to the end of the text, and the text after
   its opening bracket is scanned again (it may be a stray "{" in prose).
2. A candidate is read by ``json.loads``. If that fails and the candidate starts the way
   JSON does (a quote or a closing bracket after "{"), ``json_repair`` repairs it: single
   quotes, Python literals, comments, trailing commas, unescaped quotes inside strings,
   typographic quotes, and the quotes and brackets a cut-off answer is missing.
3. The work is bounded: at most MAX_CANDIDATES candidates per answer, REPAIR_BUDGET
   characters handed to the (pure Python) repair and no repair of a candidate nested
   deeper than MAX_REPAIR_NESTING (its recursion is slow there), so even a 200 KB answer
   full of brackets is handled quickly. A longer or deeper broken candidate is not
   repaired.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence

import json_repair

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
    "parse_answer",
    "extract_tagged",
]

# Limits that keep the work per answer bounded.
MAX_CANDIDATES = 20          # containers tried per answer
MAX_FENCES = 10              # fenced blocks looked at before the whole text
MAX_RESCANS = 3              # rescans after a "{" that never closes
REPAIR_BUDGET = 24_000       # characters handed to json_repair per answer
MAX_REPAIR_NESTING = 40      # brackets open at once (strings not told apart) for a repair
MAX_SEARCH_NODES = 200       # nested dicts visited when looking for a key


class ParseError(ValueError):
    """The answer could not be understood. ``str(error)`` is a short reason."""


_FAIL = object()     # "this candidate did not parse"
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


# --------------------------------------------------------------------------- finding JSON

_CLOSER = {"{": "}", "[": "]"}
_OPENER_RE = re.compile(r"[{\[]")
# Tokens that matter inside a container: strings (a double-quoted one may run to the end
# of a cut-off text) and brackets.
_STRING = r'"(?:[^"\\]|\\.)*(?:(?P<q>")|\\?\Z)'
_SINGLE = r"'(?:[^'\\\n]|\\.)*'"
_TOKEN_RE = re.compile(rf"{_STRING}|{_SINGLE}|[{{}}\[\]]", re.S)

MAX_DEPTH = 500  # deeper nesting cannot be parsed anyway (json's recursion limit)


def _scan_containers(text: str, pos: int = 0) -> tuple[list[tuple[int, int, Optional[int], str]], str]:
    """Find ``{...}`` and ``[...]`` regions from ``pos`` in one linear pass.

    Returns (containers, closing): plain tuples ``(depth, start, end, opener)`` sorted
    outermost first, then by position (``end`` is None for a container that runs into the
    end of the text), and the text that would close what is still open at the end (a
    quote for a cut-off string, then the brackets, innermost first; "" if nothing is).
    String literals are respected inside containers; outside any container quotes are
    ignored (they belong to prose). A mismatched closing bracket, or nesting deeper than
    MAX_DEPTH, abandons the open ones.
    """
    stack: list[tuple[str, int]] = []
    found: list[tuple[int, int, Optional[int], str]] = []
    cut_string = False
    while not stack:
        opening = _OPENER_RE.search(text, pos)
        if opening is None:
            break
        stack.append((opening.group(), opening.start()))
        pos, cut_string = _scan_inside(text, opening.end(), stack, found)
    for depth, (opener, start) in enumerate(stack):  # still open at the end of the text
        found.append((depth, start, None, opener))
    found.sort(key=lambda c: (c[0], c[1]))
    closing = "".join(_CLOSER[opener] for opener, _ in reversed(stack))
    return found, ('"' if cut_string and stack else "") + closing


def _scan_inside(text: str, pos: int, stack: list, found: list) -> tuple[int, bool]:
    """Read tokens from ``pos`` until ``stack`` is empty again or the text ends; records
    closed containers in ``found``. Returns (position reached, whether a string was cut
    off by the end of the text)."""
    for match in _TOKEN_RE.finditer(text, pos):
        first = match.group()[0]
        if first == "{" or first == "[":
            stack.append((first, match.start()))
            if len(stack) > MAX_DEPTH:
                stack.clear()
                return match.end(), False
        elif first == "}" or first == "]":
            opener, start = stack.pop()
            if _CLOSER[opener] != first:
                stack.clear()
                return match.end(), False
            found.append((len(stack), start, match.end(), opener))
            if not stack:
                return match.end(), False
        elif first == '"' and match.group("q") is None:
            return len(text), True
    return len(text), False


_FENCE_RE = re.compile(r"```[A-Za-z0-9_+-]*[ \t]*\n?(.*?)(?:```|\Z)", re.S)


def _candidates(text: str, want_lists: bool) -> Iterator[tuple[str, Optional[str]]]:
    """(candidate container, the text that closes it if it was cut off, else None) in
    preference order, each candidate once.

    Fenced blocks come first, then the whole text; inside each, outer containers before
    nested ones, earlier before later. A container that runs to the end of the text may
    just be a stray "{" in prose that swallowed the real answer, so the text after its
    opening bracket is scanned again (at most MAX_RESCANS times).
    """
    seen: set[str] = set()
    sources = [m.group(1) for _, m in zip(range(MAX_FENCES), _FENCE_RE.finditer(text))]
    sources.append(text)
    for source in sources:
        pos = 0
        for _ in range(MAX_RESCANS + 1):
            containers, closing = _scan_containers(source, pos)
            for depth, start, end, opener in containers:
                if opener == "[" and not want_lists:
                    continue
                candidate = source[start:end]  # end None: to the end of the text
                if candidate not in seen:
                    seen.add(candidate)
                    # a cut-off container is closed by the string quote (if the cut fell
                    # in one) and the brackets of its own depth and deeper
                    yield candidate, None if end is not None else closing[:len(closing) - depth]
            if not closing:
                break
            pos = min(start for depth, start, end, _ in containers
                      if end is None and depth == 0) + 1


class _Attempts:
    """Book-keeping for one answer: candidates tried, the first error, the repair budget."""

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


# JSON starts so: prose in braces ("{not json}", "{there" ...) is not repaired into an object.
_JSONISH_START = re.compile(r"""\{\s*(?:["'“‘}]|//|/\*|\Z)|\[\s*(?:["'“‘\[\]{\d.+-]|\Z)""")
# A cut-off escape at the very end (an odd run of backslashes, maybe "\u" and < 4 digits).
_CUT_ESCAPE = re.compile(r"(\\+)(u[0-9a-fA-F]{0,3})?\Z")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _trim_cut_escape(text: str) -> str:
    match = _CUT_ESCAPE.search(text)
    if match and len(match.group(1)) % 2:
        return text[:match.start()] + match.group(1)[:-1]
    return text


def _join_surrogates(value: Any) -> Any:
    """Escaped surrogate pairs (\\ud83d\\ude00) that the repair left as two characters,
    joined into one (lone ones are kept), in every string of a parsed value."""
    if isinstance(value, str):
        if _SURROGATE.search(value):
            return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
        return value
    if isinstance(value, list):
        return [_join_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {_join_surrogates(k): _join_surrogates(v) for k, v in value.items()}
    return value


_BRACKETS_RE = re.compile(r"[{\[(]|[}\])]")


def _nesting(text: str) -> int:
    """The most brackets of any kind open at once, quotes ignored: an upper bound of what
    json_repair would nest (its recursion makes deep nesting very slow)."""
    depth = deepest = 0
    for match in _BRACKETS_RE.finditer(text):
        if match.group() in "{[(":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_REPAIR_NESTING:
                    break
        elif depth:
            depth -= 1
    return deepest


def _repair(text: str, attempts: _Attempts) -> Any:
    """json_repair's reading of ``text`` (bounded by the budget and nesting), else _FAIL."""
    text = _trim_cut_escape(text)
    if len(text) > attempts.budget or _nesting(text) > MAX_REPAIR_NESTING \
            or not attempts.spend(len(text)):
        return _FAIL
    try:
        return _join_surrogates(json_repair.loads(text))
    except Exception:  # RecursionError on deep nesting, ValueError, ...
        return _FAIL


def _load(candidate: str, closing: Optional[str], attempts: _Attempts) -> Any:
    """A candidate container as a dict or list (matching its opening bracket), else _FAIL.

    A cut-off candidate is first closed as it stands (exact, and the common case: an
    answer cut inside its last string); json_repair is the fallback."""
    try:
        return json.loads(candidate, strict=False)  # raw control characters allowed
    except Exception as error:  # JSONDecodeError, RecursionError, huge ints, ...
        attempts.note(error)
    if closing is not None:
        try:
            return json.loads(_trim_cut_escape(candidate) + closing, strict=False)
        except Exception:
            pass
    if not _JSONISH_START.match(candidate):
        return _FAIL
    value = _repair(candidate, attempts)
    kind = dict if candidate[0] == "{" else list
    return value if isinstance(value, kind) else _FAIL


# A quoted key and a colon: the members of an object whose braces are missing.
_MEMBER_RE = re.compile(r'["“][^"\n]{1,80}["”]\s*:')


def _iter_parsed(text: str, attempts: _Attempts, want_lists: bool = False) -> Iterator[Any]:
    """Yield every dict (and list, if ``want_lists``) that can be parsed out of ``text``."""
    for candidate, closing in _candidates(text, want_lists):
        if attempts.tried >= MAX_CANDIDATES:
            return
        attempts.tried += 1
        value = _load(candidate, closing, attempts)
        if isinstance(value, dict) or (want_lists and isinstance(value, list)):
            yield value
    if attempts.tried == 0 and _MEMBER_RE.search(text):
        # '"key": "value", ...' without braces (a model that dropped them)
        value = _repair("{" + text + "}", attempts)
        if isinstance(value, dict):
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
                           min_aspects: int = 2, max_aspects: int = 5,
                           model: Any = None) -> RewardSelection:
    """Read the reward-selection answer.

    Expected shape (leniently)::

        {"query_analysis": {...},
         "aspects_selection": {"reasoning": "...", "selected_aspects": ["Clarity", ...]},
         "new_aspects": {"Name": "definition"}}

    Names are mapped to the catalogue's spelling; a name outside the catalogue is kept only
    if ``new_aspects`` defines it. Too many aspects are cut to ``max_aspects`` (with a
    warning); fewer than ``min_aspects`` raises ParseError. The result is checked with
    ``model`` (by default ``engine.schemas.selection`` of the catalogue and bounds).
    """
    from . import schemas

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
    result = RewardSelection(
        analysis=_analysis_of(data, notes),
        reasoning=_reasoning_of(data, notes),
        aspects=aspects,
        new_aspects=new_aspects,
        warnings=notes,
    )
    if model is None:
        model = schemas.selection(tuple(catalogue), min_aspects, max_aspects)
    schemas.validate(model, {"query_analysis": result.analysis,
                             "aspects_selection": {"reasoning": result.reasoning,
                                                   "selected_aspects": result.aspects},
                             "new_aspects": result.new_aspects})
    return result


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


def _entry(raw: Any) -> dict:
    """A raw score entry in the model's shape: {"score": ..., "rationale": ...}; a bare
    score is a score without rationale, a dict's score and reason keys are found by name."""
    if not isinstance(raw, dict):
        return {"score": raw, "rationale": ""}
    entry = {}
    value = _lookup(raw, *_SCORE_KEYS)
    if value is not _MISSING:
        entry["score"] = value
    reason = _lookup(raw, *_RATIONALE_KEYS)
    entry["rationale"] = "" if reason is _MISSING else reason
    return entry


def parse_scores(text: str, aspects: Sequence[str], lo: float = 1, hi: float = 5,
                 model: Any = None) -> dict[str, AspectScore]:
    """Read the scoring answer: one AspectScore per requested aspect, in the given order.

    Expected ``{"<Aspect>": {"rationale": str, "score": 1-5}, ...}``; also accepts bare
    scores, ``"reason"`` instead of ``"rationale"``, a list of ``{"aspect", "score"}``
    entries and wrappers such as ``{"scores": {...}}``. Names match via
    :func:`normalize_name`. The entries are checked with ``model`` (by default
    ``engine.schemas.scores`` of the aspects and range). Missing aspects or invalid scores
    raise ParseError.
    """
    from . import schemas

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
    keys = {} if model is None else {normalize_name(f.alias or name): (name, f.alias or name)
                                     for name, f in model.model_fields.items()}
    if set(keys) != set(wanted) or len(keys) != len(model.model_fields):
        # no model, or one for other aspects (or names twice): the aspects' and range's own
        model = schemas.scores(tuple(wanted.values()), lo, hi)
        keys = {normalize_name(f.alias): (name, f.alias) for name, f in model.model_fields.items()}
    checked = schemas.validate(model, {key: _entry(best[norm]) for norm, (_, key) in keys.items()})
    entries = {norm: getattr(checked, name) for norm, (name, _) in keys.items()}
    return {aspect: AspectScore(score=entries[norm].score, rationale=entries[norm].rationale)
            for norm, aspect in wanted.items()}


# --------------------------------------------------------------------------- named fields

def _field_values(obj: dict, names: Sequence[str]) -> dict[str, str]:
    """The named fields of a parsed object as stripped text ("" when absent)."""
    values = {}
    for name in names:
        value = _field(obj, name)
        values[name] = "" if value is _MISSING else _to_text(value).strip()
    return values


def _field(obj: dict, name: str, synonyms: Sequence[str] = ()) -> Any:
    """A field's raw value: the key as written, else one that matches it (or a synonym)
    ignoring case and separators, in the object or a wrapper one or two levels down."""
    value = obj.get(name, _MISSING)
    if value is _MISSING:
        value = _find_key(obj, normalize_name(name), *synonyms, max_depth=2)
    return value


def parse_json_fields(text: str, fields: Sequence[str],
                      required: Sequence[str]) -> dict[str, str]:
    """Read named fields of a JSON answer as text.

    Returns every name in ``fields`` (and ``required``): strings as given (stripped),
    lists as newline-joined items, dicts as JSON, absent ones as "". A required field that
    is missing or blank raises ParseError.
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
    if first is None:
        raise _no_json_error(attempts)
    blank = [name for name in required if not first.get(name)]
    raise ParseError(f"missing or empty required field{'s' if len(blank) > 1 else ''}: "
                     f"{', '.join(blank)}")


# Keys that stand for one another in an answer with fixed keys (a domain rule: judges
# write "reason" for "rationale", "rating" for "score").
_SYNONYMS = {**{k: _RATIONALE_KEYS for k in _RATIONALE_KEYS},
             **{k: _SCORE_KEYS for k in _SCORE_KEYS}}


def parse_answer(text: str, model: Any) -> Any:
    """Read an answer with fixed keys and check it with its pydantic ``model``
    (engine.schemas): the first JSON object in the text that passes, as a model instance.

    Keys match ignoring case and separators, also inside a wrapper object, and the usual
    synonyms count ("reason" for "rationale", "rating" for "score"). The error names what
    the object that came closest lacked.
    """
    from . import schemas

    _require_text(text)
    keys = [f.alias or name for name, f in model.model_fields.items()]
    attempts = _Attempts()
    closest: tuple[int, Optional[ParseError]] = (-1, None)
    for value in _iter_parsed(text, attempts):
        data = {}
        for key in keys:
            found = _field(value, key, [normalize_name(s) for s in _SYNONYMS.get(key, ())])
            if found is not _MISSING:
                data[key] = found
        try:
            return schemas.validate(model, data)
        except ParseError as error:
            if len(data) > closest[0]:
                closest = (len(data), error)
    if closest[1] is None:
        raise _no_json_error(attempts)
    raise closest[1]


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



LOOP_WORDS = 6   # a run of this many words seen before marks the start of a loop


def _cut_loop(text: str, start: int = 0) -> str:
    """The text up to where it starts repeating itself (a run of LOOP_WORDS words seen
    before), ended at the last full sentence before that point when there is one. Repeats
    are looked for from word `start` on (the words before it count as seen)."""
    words = text.split()
    seen: set[tuple[str, ...]] = set()
    for i in range(len(words) - LOOP_WORDS + 1):
        gram = tuple(w.lower().strip(",.;:!?") for w in words[i:i + LOOP_WORDS])
        if gram in seen and i >= start:
            head = " ".join(words[:i])
            end = max(head.rfind(". "), head.rfind("! "), head.rfind("? "))
            if head.endswith((".", "!", "?")):
                return head
            return head[:end + 1] if end > 0 else head
        seen.add(gram)
    return text


def usable_instruction(text: str, min_words: int = 20) -> str:
    """A rewritten system prompt held to a usable minimum: where it starts looping (a small
    model repeats itself) it is cut back to the last full sentence, and what is left must
    have `min_words` words and instruct the assistant rather than talk about prompts.
    Raises ParseError otherwise."""
    cleaned = _cut_loop(" ".join(str(text).split())).strip()
    words = len(cleaned.split())
    if words < min_words:
        raise ParseError(f"the new system prompt has {words} words before it loops or ends; "
                         f"at least {min_words} are needed")
    if re.search(r"(?i)\b(the|this|a|new|current|previous|system|old)\s+(system\s+)?prompt\b",
                 cleaned):
        raise ParseError("the new system prompt talks about prompts instead of instructing "
                         "the assistant")
    return cleaned


# Words of a query that say nothing of its topic (DRPO's rule 3 check below).
COMMON_WORDS = frozenset("""should would could before after because between without within
through during something anything everything someone anyone everyone people answer answers
question questions please really always never other others thing things about which where
there their these those while being having making another little better still""".split())


def topic_words(query: str) -> set[str]:
    """The query's words of 6 letters or more that are not common ones: a new bullet that
    uses one speaks of this query's topic (DRPO's rule 3: the prompt must stay general)."""
    return {w for w in re.findall(r"[a-z]{6,}", query.lower()) if w not in COMMON_WORDS}


def usable_bullet(kept: str, bullet: str, fixed: str = "", min_words: int = 20,
                  bullet_words: int = 6, query: str = "") -> str:
    """The system prompt `kept` (ending with a bullet's mark) with one new bullet, held to a
    usable minimum (the embedded model's rewrites: it writes the bullet, whose first words,
    `fixed`, its grammar sets). The bullet is its first line, cut back where it repeats itself
    or the prompt; what the model wrote after `fixed` must have `bullet_words` words and the
    whole prompt `min_words`; and it must instruct the assistant rather than talk about prompts
    or name the topic of `query`. Returns the new prompt; raises ParseError."""
    line = str(bullet).split("\n", 1)[0]
    if not line.startswith(fixed):
        raise ParseError(f"the new bullet does not start with {fixed!r}")
    # the loop check runs over the prompt kept and what the model wrote, without the fixed
    # words (every bullet starts with them; they are no sign of copying)
    head = " ".join(kept.split())
    whole = _cut_loop(" ".join((head + " " + line[len(fixed):]).split()), len(head.split()))
    written = whole[len(head):].strip() if whole.startswith(head) else ""
    if not written.endswith((".", "!", "?")):   # cut off: back to its last full sentence
        end = max(written.rfind(". "), written.rfind("! "), written.rfind("? "))
        written = written[:end + 1] if end > 0 else written.rstrip(" ,;:-") + "."
    words = len(re.findall(r"[A-Za-z][A-Za-z'-]+", written))
    least = max(bullet_words, min_words - len(re.findall(r"[A-Za-z][A-Za-z'-]+", head + " " + fixed)))
    if words < least:
        raise ParseError(f"the new bullet has {words} words before it repeats itself or the "
                         f"prompt, or ends; at least {least} are needed")
    text = fixed + written
    if re.search(r"(?i)\b(the|this|a|new|current|previous|system|old|your)\s+(system\s+)?prompt\b",
                 text):
        raise ParseError("the new bullet talks about prompts instead of instructing the "
                         "assistant")
    if re.search(r"(?i)\b(scores?|scored|judges?|aspects?|bullets?)\b", text):
        raise ParseError("the new bullet talks about the evaluation instead of instructing "
                         "the assistant")
    named = sorted(topic_words(query) & {w.lower() for w in re.findall(r"[A-Za-z]+", text)})
    if named:
        raise ParseError(f"the new bullet names this query's topic ({', '.join(named[:3])}); "
                         f"it must hold for any query")
    return kept + text
