"""Example-based tests for engine.parsing: realistic (and messy) LLM answers."""
import json
import math
import time

import pytest

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
    "Helpfulness": "Answers what was asked.",
    "Clarity": "Easy to follow.",
    "Factuality": "True statements only.",
    "Depth": "Goes deep enough.",
    "Safety": "No help with harm.",
    "Critical-Thinking": "Examines assumptions.",
    "Engagement": "Warm and natural.",
}


# --------------------------------------------------------------------------- extract_json

@pytest.mark.parametrize("text, expected", [
    ('{"a": 1}', {"a": 1}),
    ('Here you go:\n```json\n{"a": 1, "b": "x"}\n```\nHope that helps!', {"a": 1, "b": "x"}),
    ('```\n{"a": 2}\n```', {"a": 2}),
    ('```JSON {"a": 3}```', {"a": 3}),
    ('Sure. The answer is {"a": [1, 2, {"b": null}]} as requested.', {"a": [1, 2, {"b": None}]}),
    ("{'a': 'single', 'b': True, 'c': None, 'd': False}",
     {"a": "single", "b": True, "c": None, "d": False}),
    ("{'a': true, 'b': null}", {"a": True, "b": None}),
    ('{"a": 1, "b": [1, 2,],}', {"a": 1, "b": [1, 2]}),
    ('{“a”: “smart”, “b”: 2}', {"a": "smart", "b": 2}),
    ('{“a”: “it\'s fine”}', {"a": "it's fine"}),
    ('{"a": "line one\nline two\ttabbed"}', {"a": "line one\nline two\ttabbed"}),
    ('{"a": {"b": 1, "c": "cut off here', {"a": {"b": 1, "c": "cut off here"}}),
    ('{"a": {"b": 1}', {"a": {"b": 1}}),
    # json-repair fills a value cut off after its key with "" (the old hand-written
    # recovery dropped the item); a required field is then still "missing or empty"
    ('{"a": 1, "b": ', {"a": 1, "b": ""}),
    ('{"a": 1, "b": {"c": 2, "d"', {"a": 1, "b": {"c": 2}}),
    ('{\n  // the answer\n  "a": 1, // trailing note\n  "url": "http://x.org/y"\n}',
     {"a": 1, "url": "http://x.org/y"}),
    ('{"a": "braces } and { inside", "b": "quote \\" and \\\\"}',
     {"a": "braces } and { inside", "b": 'quote " and \\'}),
    ('He said "hi {there" and then: {"a": 1}', {"a": 1}),
    ('{not json} and then {"a": 1}', {"a": 1}),
    ('{"a": "He said “hi”"}', {"a": "He said “hi”"}),
    ('[1, 2] {"a": 1}', {"a": 1}),
    ('{"a": "\\u00e9t\\u00e9"}', {"a": "été"}),
])
def test_extract_json_repairs(text, expected):
    assert extract_json(text) == expected


def test_extract_json_prefers_object_with_required_keys():
    text = 'Format example: {"score": 0}. My answer: {"Clarity": 4, "Depth": 2}'
    assert extract_json(text) == {"score": 0}
    assert extract_json(text, required_keys=["Clarity"]) == {"Clarity": 4, "Depth": 2}


def test_extract_json_falls_back_to_first_parsed_object():
    assert extract_json('{"a": 1} {"b": 2}', required_keys=["zzz"]) == {"a": 1}


def test_extract_json_fenced_block_before_prose_objects():
    text = 'Use {"like": "this"} shape.\n```json\n{"real": 1}\n```'
    assert extract_json(text, required_keys=["real"]) == {"real": 1}


@pytest.mark.parametrize("text, reason", [
    ("", "no JSON object found"),
    ("no braces at all", "no JSON object found"),
    ("[1, 2, 3]", "no JSON object found"),
    ("{not json at all}", "no valid JSON object found"),
    ("{not json} [nor this]", "no valid JSON object found"),
])
def test_extract_json_failures(text, reason):
    with pytest.raises(ParseError, match=reason):
        extract_json(text)


def test_garbage_with_a_json_looking_tail_is_repaired_but_has_no_wanted_keys():
    # json-repair reads the cut-off `{"broken": tru` as {"broken": "tru"} (the old
    # hand-written recovery gave up); what the callers ask for is still not there
    text = "}{{not json at all]] <<%$#@!>> ```{\"broken\": tru"
    assert extract_json(text) == {"broken": "tru"}
    with pytest.raises(ParseError, match="missing aspects: Clarity"):
        parse_scores(text, ["Clarity"])
    with pytest.raises(ParseError, match="required field: new_system_prompt"):
        parse_json_fields(text, FIELDS, REQUIRED)


@pytest.mark.parametrize("value", [None, 42, b'{"a": 1}', ["{}"], {"a": 1}])
def test_extract_json_rejects_non_text(value):
    with pytest.raises(ParseError, match="must be text"):
        extract_json(value)


def test_parse_error_is_a_value_error():
    assert issubclass(ParseError, ValueError)


def test_extract_json_large_input_is_fast():
    text = "noise { [ ' \" " * 8000 + '{"a": 1}' + " trailing } ] " * 8000
    start = time.perf_counter()
    try:
        extract_json(text)
    except ParseError:
        pass
    assert time.perf_counter() - start < 1.0


# --------------------------------------------------------------------------- parse_score

@pytest.mark.parametrize("value, expected", [
    (4, 4.0), (4.5, 4.5), (1, 1.0), (5, 5.0), ("4", 4.0), (" 4 ", 4.0), ("4/5", 4.0),
    ("4 / 5", 4.0), ("4.5", 4.5), ("Score: 4", 4.0), ("score=3", 3.0), ("4 out of 5", 4.0),
    ("[4]", 4.0), ("**4**", 4.0), ("4.", 4.0), ([3], 3.0), ("Rating: 2/5", 2.0),
])
def test_parse_score_accepts(value, expected):
    assert parse_score(value) == expected


@pytest.mark.parametrize("value, reason", [
    (True, "must be a number"),
    (False, "must be a number"),
    ([True], "must be a number"),
    ([[4]], "must be a number"),
    (math.nan, "not a number"),
    (math.inf, "out of range"),
    (-math.inf, "out of range"),
    ("", "empty"),
    ("   ", "empty"),
    ("7", "out of range 1-5: 7"),
    (0, "out of range 1-5: 0"),
    (5.5, "out of range"),
    ("3/10", "scale of 10"),
    ("8 out of 10", "scale of 10"),
    ("abc", "not a number"),
    ("4 stars and 3", "not a number"),
    ("nan", "not a number"),
    (None, "must be a number"),
    ({"score": 4}, "must be a number"),
    ([1, 2], "must be a number"),
    (10 ** 400, "out of range"),
    ("9" * 500, "out of range"),
])
def test_parse_score_rejects(value, reason):
    with pytest.raises(ParseError, match=reason):
        parse_score(value)


def test_parse_score_custom_range():
    assert parse_score("9/10", lo=0, hi=10) == 9.0
    assert parse_score(0, lo=0, hi=10) == 0.0
    with pytest.raises(ParseError, match="out of range 0-10: 11"):
        parse_score(11, lo=0, hi=10)


# --------------------------------------------------------------------------- normalize_name

@pytest.mark.parametrize("a, b", [
    ("critical thinking", "Critical-Thinking"),
    ("critical_thinking", "Critical-Thinking"),
    ("  Critical   Thinking ", "critical-thinking"),
    ("**Clarity**", "clarity"),
    ("Clarity:", "CLARITY"),
    ("Critical — Thinking", "critical thinking"),
])
def test_normalize_name_equivalences(a, b):
    assert normalize_name(a) == normalize_name(b)


def test_normalize_name_value_and_type():
    assert normalize_name("Critical-Thinking") == "critical thinking"
    assert normalize_name("Depth") != normalize_name("Clarity")
    with pytest.raises(ParseError):
        normalize_name(None)


# --------------------------------------------------------------------------- reward selection

WELL_FORMED_SELECTION = json.dumps({
    "query_analysis": {"main_topic": "tax", "user_intent": "file taxes"},
    "aspects_selection": {"reasoning": "Needs accuracy and clarity.",
                          "selected_aspects": ["Factuality", "Clarity", "Safety"]},
    "new_aspects": {},
})


def test_reward_selection_well_formed():
    result = parse_reward_selection(WELL_FORMED_SELECTION, CATALOGUE)
    assert result == RewardSelection(
        analysis={"main_topic": "tax", "user_intent": "file taxes"},
        reasoning="Needs accuracy and clarity.",
        aspects=["Factuality", "Clarity", "Safety"],
        new_aspects={},
        warnings=[],
    )


@pytest.mark.parametrize("text, aspects", [
    # canonical spelling restored via normalize_name
    ('{"aspects_selection": {"reasoning": "r", "selected_aspects": '
     '["clarity", "critical thinking", "SAFETY"]}}', ["Clarity", "Critical-Thinking", "Safety"]),
    # top-level selected_aspects
    ('{"reasoning": "r", "selected_aspects": ["Depth", "Clarity"]}', ["Depth", "Clarity"]),
    # comma-separated string
    ('{"aspects_selection": {"selected_aspects": "Depth, Clarity; Safety"}}',
     ["Depth", "Clarity", "Safety"]),
    # dict items
    ('{"aspects_selection": {"selected_aspects": [{"name": "Depth"}, {"aspect": "Safety"}]}}',
     ["Depth", "Safety"]),
    # "Name: reason" strings, bullets and markdown
    ('{"aspects_selection": {"selected_aspects": ["Safety: the query is risky", '
     '"1. **Depth** - needs detail", "Clarity (plain words)"]}}', ["Safety", "Depth", "Clarity"]),
    # duplicates removed, order kept
    ('{"aspects_selection": {"selected_aspects": ["Depth", "depth", "Clarity", "Depth"]}}',
     ["Depth", "Clarity"]),
    # {name: reason} mapping
    ('{"aspects_selection": {"selected_aspects": {"Depth": "why", "Clarity": "why"}}}',
     ["Depth", "Clarity"]),
    # aspects_selection given directly as a list
    ('{"aspects_selection": ["Depth", "Safety"]}', ["Depth", "Safety"]),
    # Python-style dict in a fence with prose around
    ("Let me think.\n```python\n{'aspects_selection': {'reasoning': 'r', "
     "'selected_aspects': ['Depth', 'Clarity',]}}\n```\nDone.", ["Depth", "Clarity"]),
    # truncated answer
    ('{"query_analysis": {"main_topic": "x"}, "aspects_selection": {"reasoning": "r", '
     '"selected_aspects": ["Depth", "Clarity", "Saf', ["Depth", "Clarity"]),
])
def test_reward_selection_lenient_shapes(text, aspects):
    assert parse_reward_selection(text, CATALOGUE).aspects == aspects


def test_reward_selection_new_aspects_dict():
    text = json.dumps({
        "query_analysis": {},
        "aspects_selection": {"reasoning": "r", "selected_aspects": ["Clarity", "Humor", "Wit"]},
        "new_aspects": {"humor": "Is funny where it fits."},
    })
    result = parse_reward_selection(text, CATALOGUE)
    assert result.aspects == ["Clarity", "Humor"]
    assert result.new_aspects == {"Humor": "Is funny where it fits."}
    assert any("Wit" in w for w in result.warnings)


def test_reward_selection_new_aspects_list():
    text = json.dumps({
        "aspects_selection": {"reasoning": "r", "selected_aspects": ["Depth", "Local Law"]},
        "new_aspects": [{"name": "Local Law", "definition": "Knows local regulations."}],
    })
    result = parse_reward_selection(text, CATALOGUE)
    assert result.aspects == ["Depth", "Local Law"]
    assert result.new_aspects == {"Local Law": "Knows local regulations."}


def test_reward_selection_defined_but_unselected_new_aspect_is_ignored():
    text = json.dumps({
        "aspects_selection": {"reasoning": "r", "selected_aspects": ["Depth", "Clarity"]},
        "new_aspects": {"Humor": "funny"},
    })
    result = parse_reward_selection(text, CATALOGUE)
    assert result.new_aspects == {}
    assert any("not selected" in w for w in result.warnings)


def test_reward_selection_too_many_are_cut_with_warning():
    names = ["Helpfulness", "Clarity", "Factuality", "Depth", "Safety", "Engagement"]
    text = json.dumps({"aspects_selection": {"reasoning": "r", "selected_aspects": names}})
    result = parse_reward_selection(text, CATALOGUE)
    assert result.aspects == names[:5]
    assert any("kept the first 5" in w for w in result.warnings)


def test_reward_selection_defaults_and_warnings():
    result = parse_reward_selection('{"selected_aspects": ["Depth", "Clarity"]}', CATALOGUE)
    assert result.analysis == {}
    assert result.reasoning == ""
    assert any("reasoning" in w for w in result.warnings)


@pytest.mark.parametrize("text, reason", [
    ('{"aspects_selection": {"selected_aspects": ["Depth", "Bogus"]}}',
     "only 1 usable aspects selected, need at least 2 \\(dropped: Bogus\\)"),
    ('{"aspects_selection": {"selected_aspects": []}}', "only 0 usable aspects"),
    ('{"query_analysis": {"main_topic": "x"}}', "no selected_aspects found"),
    ('{"aspects_selection": {"selected_aspects": 5}}', "selected_aspects must be a list"),
    ("I think Depth and Clarity matter.", "no JSON object found"),
])
def test_reward_selection_failures(text, reason):
    with pytest.raises(ParseError, match=reason):
        parse_reward_selection(text, CATALOGUE)


def test_reward_selection_min_max_parameters():
    text = '{"selected_aspects": ["Depth", "Clarity", "Safety"]}'
    with pytest.raises(ParseError, match="need at least 4"):
        parse_reward_selection(text, CATALOGUE, min_aspects=4)
    assert parse_reward_selection(text, CATALOGUE, max_aspects=2).aspects == ["Depth", "Clarity"]


# --------------------------------------------------------------------------- parse_scores

ASPECTS = ["Clarity", "Critical-Thinking"]


@pytest.mark.parametrize("text, expected", [
    ('{"Clarity": {"rationale": "clear", "score": 4}, '
     '"Critical-Thinking": {"rationale": "shallow", "score": 2}}',
     {"Clarity": (4.0, "clear"), "Critical-Thinking": (2.0, "shallow")}),
    ('{"clarity": {"reason": "ok", "score": "4/5"}, "critical_thinking": {"score": 3}}',
     {"Clarity": (4.0, "ok"), "Critical-Thinking": (3.0, "")}),
    ('{"Clarity": 5, "Critical Thinking": "2/5", "Overall": 9}',
     {"Clarity": (5.0, ""), "Critical-Thinking": (2.0, "")}),
    ('[{"aspect": "Clarity", "score": 4, "rationale": "a"}, '
     '{"name": "critical-thinking", "score": 1, "rationale": "b"}]',
     {"Clarity": (4.0, "a"), "Critical-Thinking": (1.0, "b")}),
    ('{"scores": {"Clarity": {"score": 4}, "Critical-Thinking": {"score": 5}}}',
     {"Clarity": (4.0, ""), "Critical-Thinking": (5.0, "")}),
    ('{"evaluation": {"Clarity": {"score": 4, "rationale": "x"}, '
     '"Critical-Thinking": {"score": 3, "rationale": "y"}}}',
     {"Clarity": (4.0, "x"), "Critical-Thinking": (3.0, "y")}),
    ('Here is my evaluation:\n```json\n{\n  "Clarity": {"rationale": "Well organised.\nGood.", '
     '"score": 4,},\n  "Critical-Thinking": {"rationale": "Takes the premise", "score": 2},\n}\n```',
     {"Clarity": (4.0, "Well organised.\nGood."), "Critical-Thinking": (2.0, "Takes the premise")}),
    ("{'Clarity': {'rationale': 'ok', 'score': 4.5}, 'Critical-Thinking': {'score': '3'}}",
     {"Clarity": (4.5, "ok"), "Critical-Thinking": (3.0, "")}),
    ('{"Clarity": {"score": 4, "rationale": ["a", "b"]}, "Critical-Thinking": {"score": 1}}',
     {"Clarity": (4.0, "a\nb"), "Critical-Thinking": (1.0, "")}),
])
def test_parse_scores_shapes(text, expected):
    result = parse_scores(text, ASPECTS)
    assert list(result) == ASPECTS
    assert {k: (v.score, v.rationale) for k, v in result.items()} == expected
    assert all(isinstance(v, AspectScore) for v in result.values())


def test_parse_scores_keeps_requested_order_and_spelling():
    text = '{"critical thinking": {"score": 2}, "CLARITY": {"score": 5}}'
    assert list(parse_scores(text, ASPECTS)) == ["Clarity", "Critical-Thinking"]


def test_parse_scores_prefers_complete_candidate():
    text = ('Example: {"Clarity": {"score": 1}}\n'
            'Answer: {"Clarity": {"score": 4}, "Critical-Thinking": {"score": 5}}')
    result = parse_scores(text, ASPECTS)
    assert result["Clarity"].score == 4.0


@pytest.mark.parametrize("text, reason", [
    ('{"Clarity": {"score": 4}}', "missing aspects: Critical-Thinking"),
    ('{"Other": 3}', "missing aspects: Clarity, Critical-Thinking"),
    ('{"Clarity": {"score": 7}, "Critical-Thinking": {"score": 3}}',
     "score for Clarity out of range 1-5: 7"),
    ('{"Clarity": {"score": 4}, "Critical-Thinking": {"score": "3/10"}}',
     "score for Critical-Thinking is on a scale of 10"),
    ('{"Clarity": {"score": true}, "Critical-Thinking": {"score": 3}}',
     "score for Clarity must be"),
    ('{"Clarity": {"rationale": "no score"}, "Critical-Thinking": {"score": 3}}',
     "score for Clarity missing"),
    ("The answer is clear (4/5).", "no JSON object found"),
])
def test_parse_scores_failures(text, reason):
    with pytest.raises(ParseError, match=reason):
        parse_scores(text, ASPECTS)


def test_parse_scores_custom_range():
    result = parse_scores('{"Clarity": 9, "Critical-Thinking": "7/10"}', ASPECTS, lo=0, hi=10)
    assert [v.score for v in result.values()] == [9.0, 7.0]


# --------------------------------------------------------------------------- parse_json_fields

FIELDS = ("analysis", "thought", "new_system_prompt")
REQUIRED = ("new_system_prompt",)


@pytest.mark.parametrize("text, expected", [
    ('{"analysis": "a", "thought": "t", "new_system_prompt": "You are helpful."}',
     {"analysis": "a", "thought": "t", "new_system_prompt": "You are helpful."}),
    ('{"new_system_prompt": "P"}', {"analysis": "", "thought": "", "new_system_prompt": "P"}),
    ('{"analysis": ["x", "y"], "thought": {"k": 1}, "new_system_prompt": "P", "extra": 1}',
     {"analysis": "x\ny", "thought": '{"k": 1}', "new_system_prompt": "P"}),
    ('{"analysis": 3, "thought": null, "new_system_prompt": "P"}',
     {"analysis": "3", "thought": "", "new_system_prompt": "P"}),
    ('{"analysis": "a", "new_system_prompt": "You are an assistant.\n- Be kind\n- Be brief"}',
     {"analysis": "a", "thought": "",
      "new_system_prompt": "You are an assistant.\n- Be kind\n- Be brief"}),
    # Python-style invalid escape in JSON
    ('{"new_system_prompt": "Match \\d+ digits and don\\\'t panic"}',
     {"analysis": "", "thought": "", "new_system_prompt": "Match \\d+ digits and don't panic"}),
    # regex fallback: unescaped inner quotes
    ('{"analysis": "a", "new_system_prompt": "Say "hello" first", "thought": "t"}',
     {"analysis": "a", "thought": "t", "new_system_prompt": 'Say "hello" first'}),
    # truncated inside the final string
    ('```json\n{"analysis": "long", "thought": "t", "new_system_prompt": "You are \\"Arbor\\", a',
     {"analysis": "long", "thought": "t", "new_system_prompt": 'You are "Arbor", a'}),
    # nested wrapper
    ('{"response": {"new_system_prompt": "P"}}',
     {"analysis": "", "thought": "", "new_system_prompt": "P"}),
    # key spelled differently
    ('{"New System Prompt": "P"}', {"analysis": "", "thought": "", "new_system_prompt": "P"}),
])
def test_parse_json_fields(text, expected):
    assert parse_json_fields(text, FIELDS, REQUIRED) == expected


@pytest.mark.parametrize("text, reason", [
    ('{"analysis": "a", "thought": "t"}', "missing or empty required field: new_system_prompt"),
    ('{"analysis": "a", "new_system_prompt": "   "}', "required field: new_system_prompt"),
    ('{"new_system_prompt": null}', "required field: new_system_prompt"),
    ("I would change the prompt to be nicer.", "no JSON object found"),
    ('"analysis": "only a"', "required field: new_system_prompt"),
])
def test_parse_json_fields_failures(text, reason):
    with pytest.raises(ParseError, match=reason):
        parse_json_fields(text, FIELDS, REQUIRED)


def test_parse_json_fields_required_not_in_fields():
    assert parse_json_fields('{"x": "1", "y": "2"}', ["x"], ["y"]) == {"x": "1", "y": "2"}


# --------------------------------------------------------------------------- extract_tagged

@pytest.mark.parametrize("text, start, end, last, expected", [
    ("<START>\nNew prompt\n<END>", "<START>", "<END>", True, "New prompt"),
    ("x <START>one<END> y <START>two<END> z", "<START>", "<END>", True, "two"),
    ("x <START>one<END> y <START>two<END> z", "<START>", "<END>", False, "one"),
    ("Improved: <INS> Be concise. </INS>", "<INS>", "</INS>", True, "Be concise."),
    ("<INS>runs to the end", "<INS>", "</INS>", True, "runs to the end"),
    ("Put it between <START> and <END>.\n<START>real<END>", "<START>", "<END>", True, "real"),
    ("<START>a<START>b<END>", "<START>", "<END>", True, "b"),
    ("<start>lower case<end>", "<START>", "<END>", True, "lower case"),
    ("<START>good<END> then <START>  <END>", "<START>", "<END>", True, "good"),
])
def test_extract_tagged(text, start, end, last, expected):
    assert extract_tagged(text, start, end, last=last) == expected


@pytest.mark.parametrize("text, reason", [
    ("no markers", "start marker <START> not found"),
    ("<START>   <END>", "nothing between"),
    ("text <END>", "not found"),
    (None, "must be text"),
])
def test_extract_tagged_failures(text, reason):
    with pytest.raises(ParseError, match=reason):
        extract_tagged(text, "<START>", "<END>")
