"""Property tests for engine.parsing: thousands of malformed answers.

Every public function is fed random text, JSON-ish fragments, mutations of valid answers
(truncation, insertions, deletions, wrong types, junk), huge numbers, unicode, control
characters, NUL bytes and very deep brackets. The properties:

* only ParseError ever escapes;
* whatever is returned satisfies the documented invariants.

Example counts are set per test (about 6,000 in total) so the file runs well under a
minute; ``database=None`` keeps hypothesis from writing a .hypothesis folder.
"""
import json
import math
import random
import string
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from promptarbor.engine.parsing import (
    AspectScore,
    ParseError,
    RewardSelection,
    extract_json,
    extract_tagged,
    normalize_name,
    parse_json_fields,
    parse_reward_selection,
    parse_score,
    parse_scores,
)

CATALOGUE = {
    "Helpfulness": "h", "Clarity": "c", "Factuality": "f", "Depth": "d",
    "Safety": "s", "Critical-Thinking": "ct", "Engagement": "e",
}
NAMES = list(CATALOGUE)
FIELDS = ("analysis", "thought", "new_system_prompt")
REQUIRED = ("new_system_prompt",)


def fuzz_settings(examples: int):
    """Shared hypothesis settings: no deadline, no example database."""
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                               HealthCheck.large_base_example],
    )


# --------------------------------------------------------------------------- strategies

# Pieces models (and broken models) emit; joined at random they make JSON-ish junk.
FRAGMENTS = [
    "{", "}", "[", "]", '"', "'", ":", ",", "\\", "\\\"", "\\u", "\\ud800", "//", "/*", "*/",
    "\n", "\t", "\r", "\x00", "\x1b", " ", "true", "false", "null", "True", "None", "NaN",
    "Infinity", "-", "1e999", "-1e999", "9" * 400, "0.5", "4", "7", "4/5", "3/10", "“", "”",
    "‘", "’", "```json\n", "```", "\n```\n", '"score"', '"rationale"', '"reason"',
    '"aspect"', '"name"', '"scores"', '"selected_aspects"', '"aspects_selection"',
    '"new_aspects"', '"query_analysis"', '"reasoning"', '"definition"',
    '"new_system_prompt"', '"analysis"', '"thought"', '"Clarity"', '"Depth"',
    '"critical thinking"', '"Safety"', '"Bogus"', "<START>", "<END>", "<INS>", "</INS>",
    "Here is the JSON:", "Sure!", "é", "😀", "\u200b", "\ufeff", "𝟒",
]

characters = st.characters(exclude_categories=())  # includes surrogates and controls
random_text = st.text(alphabet=characters, max_size=300)
fragment_text = st.lists(
    st.one_of(st.sampled_from(FRAGMENTS), st.text(alphabet=characters, max_size=4)),
    max_size=80,
).map("".join)
deep_text = st.builds(
    lambda prefix, core, n, suffix: prefix + core * n + suffix,
    st.sampled_from(["", "Answer: ", '{"a": ', "```json\n", '{"Clarity": ']),
    st.sampled_from(["[", "{", '{"a":', "[{", '{"a": [', '"', "'", "\\", "{'", "((", "“"]),
    st.integers(min_value=1000, max_value=5000),
    st.sampled_from(["", "}", "]", '"', " trailing prose"]),
)

scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(10 ** 30), max_value=10 ** 30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(alphabet=characters, max_size=30),
    st.sampled_from(["4", "4/5", "Score: 3", "[2]", "7", "", " ", "3/10", "x"]),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.one_of(st.sampled_from(FRAGMENTS + NAMES + list(FIELDS)),
                                  st.text(max_size=10)), children, max_size=5),
    ),
    max_leaves=25,
)


@st.composite
def selection_answers(draw):
    """Well-formed reward-selection answers (maybe with new aspects)."""
    picked = draw(st.lists(st.sampled_from(NAMES + ["Humor", "Wit", "Bogus"]),
                           min_size=0, max_size=7))
    new = draw(st.dictionaries(st.sampled_from(["Humor", "Wit", "Local Law"]),
                               st.one_of(st.text(max_size=20), scalars), max_size=2))
    answer = {
        "query_analysis": draw(st.one_of(json_values, st.just({"main_topic": "x"}))),
        "aspects_selection": {"reasoning": draw(scalars), "selected_aspects": picked},
        "new_aspects": new,
    }
    return json.dumps(answer, indent=draw(st.sampled_from([None, 2])))


score_values = st.one_of(st.integers(1, 5), st.floats(1, 5),
                         st.sampled_from(["4", "2/5", "Score: 3", "[5]", "1 out of 5"]), scalars)


@st.composite
def score_answers(draw, aspects=None):
    """Scoring answers in several shapes for ``aspects`` (random ones if None)."""
    if aspects is None:
        aspects = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=5, unique=True))
    aspects = [draw(st.sampled_from([a, a.lower(), a.replace("-", " ")])) for a in aspects]
    entries = {a: {"rationale": draw(st.one_of(st.text(max_size=20), scalars)),
                   "score": draw(score_values)} for a in aspects}
    shape = draw(st.sampled_from(["dict", "list", "wrapped", "bare"]))
    if shape == "list":
        answer = [{"aspect": a, **v} for a, v in entries.items()]
    elif shape == "wrapped":
        answer = {"scores": entries}
    elif shape == "bare":
        answer = {a: v["score"] for a, v in entries.items()}
    else:
        answer = entries
    return json.dumps(answer)


@st.composite
def field_answers(draw):
    """Transition answers with random field values (some of the wrong type)."""
    names = draw(st.lists(st.sampled_from(FIELDS), unique=True))
    if draw(st.integers(0, 3)) and "new_system_prompt" not in names:
        names.append("new_system_prompt")  # usually present, so successes get tested too
    answer = {name: draw(st.one_of(st.text(alphabet=characters, max_size=40), json_values))
              for name in names}
    return json.dumps(answer, ensure_ascii=draw(st.booleans()))


@st.composite
def mutated(draw, base):
    """Apply a few random edits to an answer drawn from ``base``."""
    text = draw(base)
    for _ in range(draw(st.integers(0, 4))):
        i = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["truncate", "insert", "delete", "wrap", "duplicate"]))
        if op == "truncate":
            text = text[:i]
        elif op == "insert":
            piece = draw(st.one_of(st.sampled_from(FRAGMENTS), st.text(alphabet=characters,
                                                                           max_size=3)))
            text = text[:i] + piece + text[i:]
        elif op == "delete":
            text = text[:i] + text[i + draw(st.integers(1, 5)):]
        elif op == "wrap":
            text = draw(st.sampled_from(["```json\n{}\n```", "Sure! {} Thanks.", "{}\n```",
                                         "// note\n{}", "[{}]", "{{{}"])).replace("{}", text, 1)
        else:
            text = text[:i] + text
    return text


valid_answers = st.one_of(selection_answers(), score_answers(), field_answers())
answers = st.one_of(
    random_text,
    fragment_text,
    mutated(valid_answers),
    mutated(fragment_text),
    json_values.map(lambda v: json.dumps(v)),
    deep_text,
)
non_text = st.one_of(st.none(), st.integers(), st.floats(), st.binary(max_size=20),
                     st.lists(st.text(max_size=5), max_size=3),
                     st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


# --------------------------------------------------------------------------- properties

@fuzz_settings(700)
@given(answers,
       st.lists(st.sampled_from(["a", "score", "Clarity", "selected_aspects"]), max_size=2))
def test_extract_json_only_raises_parse_error(text, keys):
    try:
        result = extract_json(text, keys)
    except ParseError as error:
        assert str(error)
        return
    assert isinstance(result, dict)


@fuzz_settings(150)
@given(non_text)
def test_every_function_rejects_non_text(value):
    calls = [
        lambda: extract_json(value),
        lambda: parse_reward_selection(value, CATALOGUE),
        lambda: parse_scores(value, ["Clarity"]),
        lambda: parse_json_fields(value, FIELDS, REQUIRED),
        lambda: extract_tagged(value, "<START>", "<END>"),
        lambda: normalize_name(value),
    ]
    for call in calls:
        with pytest.raises(ParseError):
            call()


SCORE_FORMATS = ["{}", " {} ", "{}/5", "{} / 5", "Score: {}", "{} out of 5", "[{}]", "{}/10",
                 "**{}**", "{}.", "{}/{}", "rating={}", "{} points"]
score_like = st.one_of(
    st.integers(-2, 12), st.floats(-1, 12), st.integers(), st.floats(),
    st.builds(lambda fmt, a, b: fmt.format(a, b), st.sampled_from(SCORE_FORMATS),
              st.one_of(st.integers(-2, 12), st.floats(0, 12), st.sampled_from(["nan", "inf", ""])),
              st.integers(-9, 99)),
)


@fuzz_settings(900)
@given(st.one_of(score_like, score_like, scalars, json_values, random_text, fragment_text),
       st.sampled_from([(1, 5), (0, 10), (1, 1)]))
def test_parse_score_in_range_or_parse_error(value, bounds):
    lo, hi = bounds
    try:
        score = parse_score(value, lo=lo, hi=hi)
    except ParseError as error:
        assert str(error).startswith("score ")
        return
    assert isinstance(score, float)
    assert math.isfinite(score) and lo <= score <= hi
    assert not isinstance(value, bool)


@fuzz_settings(500)
@given(st.text(alphabet=characters, max_size=60))
def test_normalize_name_properties(name):
    norm = normalize_name(name)
    assert isinstance(norm, str)
    assert normalize_name(norm) == norm
    assert norm == norm.strip()
    assert normalize_name(name.replace(" ", "_")) == normalize_name(name.replace(" ", "-"))


@fuzz_settings(800)
@given(st.one_of(selection_answers(), mutated(selection_answers()), answers),
       st.sampled_from([(2, 5), (1, 3), (3, 3)]))
def test_reward_selection_invariants(text, limits):
    lo, hi = limits
    try:
        result = parse_reward_selection(text, CATALOGUE, min_aspects=lo, max_aspects=hi)
    except ParseError as error:
        assert str(error)
        return
    assert isinstance(result, RewardSelection)
    assert lo <= len(result.aspects) <= hi
    assert isinstance(result.analysis, dict)
    assert isinstance(result.reasoning, str)
    assert all(isinstance(w, str) for w in result.warnings)
    norms = [normalize_name(a) for a in result.aspects]
    assert len(set(norms)) == len(norms), "aspects must be unique"
    for aspect in result.aspects:
        assert aspect in CATALOGUE or aspect in result.new_aspects
    assert set(result.new_aspects) <= set(result.aspects)
    assert all(isinstance(d, str) and d.strip() for d in result.new_aspects.values())


@fuzz_settings(800)
@given(st.data(), st.lists(st.sampled_from(NAMES), min_size=1, max_size=4, unique=True))
def test_parse_scores_invariants(data, aspects):
    text = data.draw(st.one_of(score_answers(aspects), mutated(score_answers(aspects)), answers))
    try:
        result = parse_scores(text, aspects)
    except ParseError as error:
        assert str(error)
        return
    assert list(result) == aspects
    for value in result.values():
        assert isinstance(value, AspectScore)
        assert math.isfinite(value.score) and 1 <= value.score <= 5
        assert isinstance(value.rationale, str)


@fuzz_settings(800)
@given(st.one_of(field_answers(), mutated(field_answers()), answers))
def test_parse_json_fields_invariants(text):
    try:
        result = parse_json_fields(text, FIELDS, REQUIRED)
    except ParseError as error:
        assert str(error)
        return
    assert list(result) == list(FIELDS)
    assert all(isinstance(v, str) for v in result.values())
    assert result["new_system_prompt"].strip()


@fuzz_settings(500)
@given(st.one_of(answers, st.builds(lambda a, b, c, d: f"{a}<START>{b}<END>{c}<INS>{d}</INS>",
                                    fragment_text, random_text, fragment_text, random_text),
                 mutated(st.just("<START>new prompt<END> and <INS>instruction</INS>"))),
       st.sampled_from([("<START>", "<END>"), ("<INS>", "</INS>")]), st.booleans())
def test_extract_tagged_invariants(text, markers, last):
    start, end = markers
    try:
        result = extract_tagged(text, start, end, last=last)
    except ParseError as error:
        assert str(error)
        return
    assert isinstance(result, str)
    assert result and result == result.strip()


# --------------------------------------------------------------------------- valid answers survive

@fuzz_settings(300)
@given(st.lists(st.sampled_from(NAMES), min_size=2, max_size=5, unique=True),
       st.sampled_from(["{}", "```json\n{}\n```", "Here you go:\n{}\nHope it helps.", "{}  \n"]))
def test_valid_selection_round_trips(names, wrapper):
    answer = json.dumps({"query_analysis": {"main_topic": "t"},
                         "aspects_selection": {"reasoning": "why", "selected_aspects": names},
                         "new_aspects": {}})
    result = parse_reward_selection(wrapper.replace("{}", answer, 1), CATALOGUE)
    assert result.aspects == names
    assert result.warnings == []


@fuzz_settings(300)
@given(st.dictionaries(st.sampled_from(NAMES),
                       st.tuples(st.integers(1, 5), st.text(alphabet=characters, max_size=40)),
                       min_size=1),
       st.sampled_from(["{}", "```json\n{}\n```", "Scores:\n{}\nDone."]))
def test_valid_scores_round_trip(table, wrapper):
    answer = json.dumps({a: {"rationale": r, "score": s} for a, (s, r) in table.items()})
    result = parse_scores(wrapper.replace("{}", answer, 1), list(table))
    assert {a: (v.score, v.rationale) for a, v in result.items()} == \
        {a: (float(s), r.strip()) for a, (s, r) in table.items()}


@fuzz_settings(300)
@given(st.text(alphabet=characters, min_size=1, max_size=200).filter(lambda s: s.strip()),
       st.integers(0, 200))
def test_truncated_field_answer_keeps_the_prompt_start(prompt, cut):
    full = json.dumps({"analysis": "a", "thought": "t", "new_system_prompt": prompt})
    head = full[: len(full) - 2 - min(cut, len(json.dumps(prompt)) - 2)]  # cut inside the prompt
    try:
        result = parse_json_fields(head, FIELDS, REQUIRED)
    except ParseError:
        return  # e.g. cut right after the opening quote: nothing left of the prompt
    # What is left is the start of the prompt (the last character may be half of a
    # surrogate pair cut in two).
    assert prompt.strip().startswith(result["new_system_prompt"][:-1])


# --------------------------------------------------------------------------- speed on huge answers

def _huge_answer(kind: str, size: int = 200_000) -> str:
    """A 200 KB answer of the given kind, reproducible."""
    rng = random.Random(kind)
    if kind == "printable":
        return "".join(rng.choice(string.printable) for _ in range(size))
    if kind == "fragments":
        parts, total = [], 0
        while total < size:
            parts.append(rng.choice(FRAGMENTS[:-3]))
            total += len(parts[-1])
        return "".join(parts)[:size]
    if kind == "buried":
        junk = "".join(rng.choice(string.ascii_letters + " {[\"'") for _ in range(size // 2))
        return junk + json.dumps({"Clarity": {"score": 4, "rationale": "ok"}}) + junk
    if kind == "unclosed":
        return '{"a": [' + '"x", ' * (size // 5)
    return "{" * size


@pytest.mark.parametrize("kind", ["printable", "fragments", "buried", "unclosed", "braces"])
def test_200kb_answer_is_handled_quickly(kind):
    text = _huge_answer(kind)
    calls = [
        lambda: extract_json(text, ["zzz"]),
        lambda: parse_reward_selection(text, CATALOGUE),
        lambda: parse_scores(text, ["Clarity", "Depth"]),
        lambda: parse_json_fields(text, FIELDS, REQUIRED),
        lambda: extract_tagged(text, "<START>", "<END>"),
    ]
    for call in calls:
        start = time.perf_counter()
        try:
            call()
        except ParseError:
            pass
        assert time.perf_counter() - start < 1.0
