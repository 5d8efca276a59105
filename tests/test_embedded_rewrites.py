"""The embedded model's DRPO rewrites one bullet at a time, and what goes with it: fixed starts
of any text in its grammar, arrays of distinct catalogue names, short notes, the threads it
computes with; the checks on a new bullet; the small meta-prompt and bullet schema; the method
asking for a bullet and adding it; and an evaluation running small batches together.

Only the tests taking the `model` fixture run the real embedded model (a few short calls)."""
import asyncio
import json
import os
import re
from itertools import combinations

import pytest

from conftest import _h, drpo_responder, write_config
from fake_llm import FakeLLMServer
from promptarbor.engine import local_model as L
from promptarbor.engine.config import load_config, validate_config
from promptarbor.engine.datasets import load_inputs
from promptarbor.engine.evaluation import BATCH, EvalRunner, Evaluation, text_prompt
from promptarbor.engine.evalsets import load_eval_set
from promptarbor.engine.local_model import (NOTE_CHARS, NOTE_KEYS, UnsupportedSchema,
                                            _literal_prefix, default_threads, schema_to_gbnf)
from promptarbor.engine.methods.drpo import DRPO
from promptarbor.engine.parsing import ParseError, topic_words, usable_bullet
from promptarbor.engine.prompts import drpo as P
from promptarbor.engine.runner import Runner
from promptarbor.engine.schemas import json_schema
from promptarbor.engine.tree import Tree
from promptarbor.sessions.store import SessionStore

FIXED = P.SMALL_BULLET_START
PLAIN = "You are a helpful assistant."


# ----------------------------------------------------------------------------- a tiny GBNF reader

_TOKEN = re.compile(r'\s*(?:("(?:[^"\\]|\\.)*")|([A-Za-z0-9-]+)(\{\d+,\d+\})?|(\{\d+,\d+\})|([()|?*+]))')


def _tokens(body: str) -> list[tuple[str, str]]:
    """A rule body as (kind, value) tokens: lit (decoded), ref, rep ("m,n" after a ref or a
    group), op. Character classes are not read: the rules checked here have none."""
    out, pos, body = [], 0, body.strip()
    while pos < len(body):
        m = _TOKEN.match(body, pos)
        if not m or m.end() == pos:
            raise AssertionError(f"cannot read the grammar at {body[pos:pos + 30]!r}")
        lit, ref, ref_rep, rep, op = m.groups()
        if lit is not None:
            out.append(("lit", json.loads(lit)))
        elif ref is not None:
            out.append(("ref", ref))
            if ref_rep:
                out.append(("rep", ref_rep[1:-1]))
        elif rep is not None:
            out.append(("rep", rep[1:-1]))
        else:
            out.append(("op", op))
        pos = m.end()
    return out


def _rules(grammar: str) -> dict[str, str]:
    rules = {}
    for line in grammar.splitlines():
        if "::=" in line:
            name, body = line.split("::=", 1)
            rules[name.strip()] = body.strip()
    return rules


def language(grammar: str, start: str) -> set[str]:
    """Every string rule `start` derives, with `space` read as nothing (a finite grammar
    only: no `*`, `+` nor character class on the way)."""
    rules = _rules(grammar)
    memo: dict[str, set[str]] = {"space": {""}}

    def of_rule(name: str) -> set[str]:
        if name not in memo:
            toks = _tokens(rules[name])
            value, end = alternation(toks, 0)
            assert end == len(toks), (name, toks[end:])
            memo[name] = value
        return memo[name]

    def alternation(toks, i):
        result, i = sequence(toks, i)
        while i < len(toks) and toks[i] == ("op", "|"):
            more, i = sequence(toks, i + 1)
            result = result | more
        return result, i

    def sequence(toks, i):
        result = {""}
        while i < len(toks) and toks[i] not in (("op", "|"), ("op", ")")):
            kind, value = toks[i]
            if kind == "lit":
                part, i = {value}, i + 1
            elif kind == "ref":
                part, i = of_rule(value), i + 1
            elif toks[i] == ("op", "("):
                part, i = alternation(toks, i + 1)
                assert toks[i] == ("op", ")")
                i += 1
            else:
                raise AssertionError(f"unexpected {toks[i]}")
            if i < len(toks) and toks[i] == ("op", "?"):
                part, i = part | {""}, i + 1
            elif i < len(toks) and toks[i][0] == "rep":
                lo, hi = map(int, toks[i][1].split(","))
                reps, layer = set(), {""}
                for n in range(hi + 1):
                    if n >= lo:
                        reps |= layer
                    layer = {a + b for a in layer for b in part}
                part, i = reps, i + 1
            elif i < len(toks) and toks[i][1] in ("*", "+"):
                raise AssertionError("an unbounded repetition has no finite language")
            result = {a + b for a in result for b in part}
        return result, i

    return of_rule(start)


def _array_schema(choices, lo, hi):
    return {"type": "object", "properties": {"a": {
        "type": "array", "uniqueItems": True, "minItems": lo, "maxItems": hi,
        "items": {"type": "string", "enum": choices}}}}


# ----------------------------------------------------------------------------- 1. the grammar


def test_the_grammar_reader_reads_a_plain_array_rule():
    """The reader itself: an array whose items may repeat derives the repeats (so the test
    below that finds none finds it because the grammar forbids them)."""
    schema = {"type": "object", "properties": {"a": {
        "type": "array", "minItems": 1, "maxItems": 2,
        "items": {"type": "string", "enum": ["X", "Y"]}}}}
    found = language(schema_to_gbnf(schema), "root-0")
    assert found == {'["X"]', '["Y"]', '["X","X"]', '["X","Y"]', '["Y","X"]', '["Y","Y"]'}


@pytest.mark.parametrize("choices, lo, hi", [
    (["X", "Y", "Z", "W"], 2, 3),
    (["X", "Y", "Z"], 1, 3),
    (["A", "B", "C", "D", "E"], 2, 5),
    (["X", "Y"], 2, 5),                  # more items allowed than there are choices
    (["X", "Y", "Z", "W"], 1, 1),
])
def test_distinct_choices_are_the_ordered_subsets_of_the_allowed_sizes(choices, lo, hi):
    """uniqueItems on an enum: the items come in the enum's order, so none repeats, and the
    array has minItems..maxItems of them (no more than there are choices)."""
    grammar = schema_to_gbnf(_array_schema(choices, lo, hi))
    expected = {"[" + ",".join(json.dumps(c) for c in subset) + "]"
                for size in range(lo, min(hi, len(choices)) + 1)
                for subset in combinations(choices, size)}
    assert language(grammar, "root-0") == expected
    assert language(grammar, "root") == {'{"a":' + a + "}" for a in expected}


def test_more_distinct_items_than_choices_is_unsupported():
    with pytest.raises(UnsupportedSchema):
        schema_to_gbnf(_array_schema(["X", "Y"], 3, 4))


def test_the_selection_schema_gets_distinct_catalogue_names():
    schema = P.selection_schema()
    names = schema["properties"]["aspects_selection"]["properties"]["selected_aspects"]["items"]["enum"]
    rules = _rules(schema_to_gbnf(schema))
    # one rule per (name, position); a name's rule leads only to names after it
    array = next(k for k, v in rules.items() if v.startswith('"[" space ('))
    for i, name in enumerate(names):
        for k in range(1, P.SELECTION_RANGE[1] + 1):
            body = rules.get(f"{array}-{i}-{k}")
            if body is None:
                continue
            assert _tokens(body)[0] == ("lit", json.dumps(name))
            later = {int(m) for m in re.findall(rf"{re.escape(array)}-(\d+)-{k + 1}\b", body)}
            assert all(j > i for j in later), (name, k, later)


@pytest.mark.parametrize("text", [
    'a\n"b', "When you answer, ", "caf\u00e9 \u00abquoted\u00bb \u4e2d\u6587", "[x] (y) {z} *",
    "back\\slash\tand tab", "a.b?c+d$ ^e|f",
])
def test_any_escaped_text_is_a_literal_prefix(text):
    assert _literal_prefix("^" + re.escape(text)) == text


@pytest.mark.parametrize("pattern", [
    "^[a-z]+", "^abc.*", "abc", "When", "^", "", "^a\\d", "^ab$", "^a|b", "^(ab)", None, 3,
])
def test_a_real_regex_is_not_a_literal_prefix(pattern):
    assert _literal_prefix(pattern) == ""


def _string_rule(schema_field: dict) -> list[tuple[str, str]]:
    grammar = schema_to_gbnf({"type": "object", "properties": {"x": schema_field}})
    return _tokens(_rules(grammar)["root-0"])


@pytest.mark.parametrize("text", ['a\n"b', "caf\u00e9 \u00ab1\u00bb", "back\\slash"])
def test_a_fixed_start_stands_json_escaped_in_the_grammar(text):
    """The literal in the grammar is the prefix as it stands inside a JSON string, and the
    free characters after it are the length limits less that literal's length."""
    toks = _string_rule({"type": "string", "minLength": 40, "maxLength": 90,
                         "pattern": "^" + re.escape(text)})
    assert toks[0] == ("lit", '"') and toks[-2:] == [("lit", '"'), ("ref", "space")]
    kind, lit = toks[1]
    assert kind == "lit" and json.loads('"' + lit + '"') == text
    assert toks[2:4] == [("ref", "char"), ("rep", f"{40 - len(lit)},{90 - len(lit)}")]


def test_newline_and_quote_in_a_fixed_start_are_escaped_characters():
    toks = _string_rule({"type": "string", "maxLength": 50, "pattern": "^" + re.escape('a\n"b')})
    assert list(toks[1][1]) == ["a", "\\", "n", "\\", '"', "b"]
    assert toks[2:4] == [("ref", "char"), ("rep", "0,44")]


def test_a_fixed_start_longer_than_the_limits_leaves_no_negative_counts():
    toks = _string_rule({"type": "string", "minLength": 3, "maxLength": 5,
                         "pattern": "^" + re.escape("longer than five")})
    assert toks[2:4] == [("ref", "char"), ("rep", "0,0")]


def _string_limits(grammar: str) -> list[tuple[str, str]]:
    """(property key, "m,n") of each free-text property, in grammar order."""
    return re.findall(r'"\\"(\w+)\\"" space ":" space ([\w-]+)', grammar)


def _repeat_of(grammar: str, rule: str) -> str:
    body = _rules(grammar)[rule]
    return re.search(r"char\{(\d+,\d+)\}", body).group(1)


def test_notes_of_a_judge_are_capped_to_note_chars():
    schema = P.scores_schema(["Clarity", "Depth"])
    assert schema["properties"]["Clarity"]["properties"]["rationale"]["maxLength"] > NOTE_CHARS
    grammar = schema_to_gbnf(schema)
    rationales = [rule for key, rule in _string_limits(grammar) if key == "rationale"]
    assert len(rationales) == 2
    assert all(_repeat_of(grammar, r) == f"0,{NOTE_CHARS}" for r in rationales)


def test_query_analysis_and_reasoning_are_capped_too():
    grammar = schema_to_gbnf(P.selection_schema())
    found = {key: _repeat_of(grammar, rule) for key, rule in _string_limits(grammar)
             if key in NOTE_KEYS}
    assert set(found) == {"main_topic", "user_intent", "ambiguities", "response_format",
                          "challenges", "reasoning"}
    assert set(found.values()) == {f"0,{NOTE_CHARS}"}


def test_the_rewrite_itself_is_not_capped():
    grammar = schema_to_gbnf(json_schema(P.transition_model(
        "new_system_prompt", prefix=P.SMALL_PROMPT_START, min_length=P.SMALL_PROMPT_CHARS)))
    limits = {key: _repeat_of(grammar, rule) for key, rule in _string_limits(grammar)}
    start = len(P.SMALL_PROMPT_START)
    assert limits["new_system_prompt"] == f"{P.SMALL_PROMPT_CHARS - start},{1500 - start}"
    assert limits["analysis"] == limits["thought"] == f"0,{NOTE_CHARS}"
    bullet = schema_to_gbnf(json_schema(P.small_bullet_model()))
    least, most = P.SMALL_BULLET_CHARS
    assert f"char{{{least - len(FIXED)},{most - len(FIXED)}}}" in bullet


def test_a_note_with_a_least_length_a_pattern_or_an_enum_keeps_its_limits():
    schema = {"type": "object", "properties": {
        "rationale": {"type": "string", "minLength": 150, "maxLength": 400},
        "reason": {"type": "string", "maxLength": 300, "pattern": "^" + re.escape("Because ")},
        "analysis": {"type": "string", "enum": ["a" * 150, "b"]},
        "thought": {"type": "string", "maxLength": 40},      # under the cap: as it is
        "reasoning": {"type": "string"},                     # no limit: the cap
        "summary": {"type": "string", "maxLength": 300},     # not a note
    }}
    rules = _rules(schema_to_gbnf(schema))
    assert "char{150,400}" in rules["root-0"]
    assert "char{0,292}" in rules["root-1"]
    assert json.dumps(json.dumps("a" * 150)) in rules["root-2"]
    assert "char{0,40}" in rules["root-3"]
    assert f"char{{0,{NOTE_CHARS}}}" in rules["root-4"]
    assert "char{0,300}" in rules["root-5"]


def test_threads_from_the_environment_win(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setenv(L.THREADS_ENV, "3")
    assert default_threads() == 3
    monkeypatch.setenv(L.THREADS_ENV, "1")
    assert default_threads() == 1


@pytest.mark.parametrize("cores", [1, 2, 3, 6])
def test_threads_are_every_core_this_process_may_use(monkeypatch, cores):
    monkeypatch.delenv(L.THREADS_ENV, raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert default_threads() == cores
    monkeypatch.setenv(L.THREADS_ENV, "many")  # not a number: as if unset
    assert default_threads() == cores


def test_threads_without_an_affinity_are_the_cpu_count(monkeypatch):
    def refused(pid):
        raise OSError("no affinity here")
    monkeypatch.delenv(L.THREADS_ENV, raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", refused, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 5)
    assert default_threads() == 5


# ----------------------------------------------------------------------------- 1b. the real model


@pytest.fixture(scope="module")
def model():
    pytest.importorskip("xllamacpp")
    return L.LocalModel.get()


def test_the_embedded_model_picks_distinct_catalogue_names(model):
    schema = P.selection_schema()
    names = schema["properties"]["aspects_selection"]["properties"]["selected_aspects"]["items"]["enum"]
    low, high = P.SELECTION_RANGE
    messages = [{"role": "user", "content": P.reward_selection(
        "How should I plan a week of cheap vegetarian dinners for two?")}]
    for seed in (1, 2, 3):
        out = model.complete(messages, temperature=1.0, max_tokens=400, schema=schema, seed=seed)
        data = json.loads(out["text"])
        chosen = data["aspects_selection"]["selected_aspects"]
        assert low <= len(chosen) <= high, (seed, chosen)
        assert len(set(chosen)) == len(chosen) and set(chosen) <= set(names), (seed, chosen)
        assert all(len(v) <= NOTE_CHARS for v in data["query_analysis"].values())


def test_the_embedded_model_writes_a_fixed_start_holding_a_quote_and_a_newline(model):
    start = 'Note "this":\n- '
    schema = {"type": "object", "properties": {"line": {
        "type": "string", "minLength": 20, "maxLength": 40, "pattern": "^" + re.escape(start)}}}
    out = model.complete([{"role": "user", "content": "Write one short note in JSON."}],
                         max_tokens=60, schema=schema, seed=4)
    line = json.loads(out["text"])["line"]
    assert line.startswith(start) and 20 <= len(json.dumps(line)) - 2 <= 40


# ----------------------------------------------------------------------------- 2. a new bullet


KEPT = P.small_prompt_base(PLAIN)   # "You are a helpful assistant.\n\n- "
GENERIC = FIXED + "give a short direct reply first, then explain the main steps in plain words and say when you are unsure."
LONG_PROMPT = ("You are a careful assistant. Answer the question asked, say when you are unsure, "
               "refuse requests that could hurt someone and explain why in one sentence.")


def test_a_generic_bullet_is_added_to_the_prompt():
    assert KEPT == PLAIN + "\n\n- "
    assert usable_bullet(KEPT, GENERIC, FIXED, 20) == KEPT + GENERIC


def test_only_the_first_line_of_a_bullet_counts():
    assert usable_bullet(KEPT, GENERIC + "\nThe system prompt is better now.", FIXED, 20) == KEPT + GENERIC


def test_a_bullet_cut_off_ends_at_its_last_full_sentence():
    cut = (FIXED + "give a short direct reply first, then explain the main steps in plain words. "
           "Then say when you are unsure and")
    assert usable_bullet(KEPT, cut, FIXED, 20) == (
        KEPT + FIXED + "give a short direct reply first, then explain the main steps in plain words.")


def test_a_bullet_cut_off_with_no_full_sentence_gets_a_period():
    cut = FIXED + "give a short direct reply first, then explain the main steps in plain words,"
    assert usable_bullet(KEPT, cut, FIXED, 20) == (
        KEPT + FIXED + "give a short direct reply first, then explain the main steps in plain words.")


def test_a_bullet_repeating_one_kept_is_refused():
    kept = P.small_prompt_base(KEPT + GENERIC)
    assert kept.endswith("\n- ")
    copy = FIXED + "always check facts, then explain the main steps in plain words and say why it matters."
    with pytest.raises(ParseError, match="repeats"):
        usable_bullet(kept, copy, FIXED, 20)
    # five words in a row of the kept bullet are not a copy
    fresh = FIXED + "always check facts, then explain the main steps with care and say why it matters."
    assert usable_bullet(kept, fresh, FIXED, 20) == kept + fresh


def test_a_bullet_repeating_itself_is_cut_back():
    looped = (FIXED + "keep every reply short and kind. Keep every reply short and kind, "
              "and keep every reply short and kind")
    assert usable_bullet(PLAIN + " " + LONG_PROMPT + "\n\n- ", looped, FIXED, 20).endswith(
        "\n\n- " + FIXED + "keep every reply short and kind.")


@pytest.mark.parametrize("bullet, reason", [
    (FIXED + "follow the system prompt closely and give every reply in short clear steps.",
     "prompts"),
    (FIXED + "make this prompt better by asking for short clear steps in every reply you write.",
     "prompts"),
    (FIXED + "remember that your prompt asks for short clear steps in every reply you write.",
     "prompts"),
    # what the small model wrote in quickstarts: about scores, judges and bullets
    (FIXED + "there is no answer to the question of which aspect score is lowest.", "evaluation"),
    (FIXED + "the judges give you a score of two out of five for this kind of reply.",
     "evaluation"),
    (FIXED + "use the bullet that was sent and mark every other bullet with a letter.",
     "evaluation"),
])
def test_a_bullet_about_the_prompt_or_the_evaluation_is_refused(bullet, reason):
    with pytest.raises(ParseError, match=reason):
        usable_bullet(KEPT, bullet, FIXED, 20)


def test_a_bullet_naming_the_query_topic_is_refused_and_says_which_word():
    query = "How do I keep my tomato plants healthy through a dry summer?"
    assert {"tomato", "plants", "healthy", "summer"} <= topic_words(query)
    bullet = FIXED + "explain how to keep tomato seedlings strong, with clear steps for every reader who asks."
    with pytest.raises(ParseError, match="tomato"):
        usable_bullet(KEPT, bullet, FIXED, 20, query=query)
    assert usable_bullet(KEPT, GENERIC, FIXED, 20, query=query) == KEPT + GENERIC
    # the word in capitals or at a sentence's start is the same word
    with pytest.raises(ParseError, match="summer"):
        usable_bullet(KEPT, FIXED + "Summer or not, explain the main steps in plain words and say when you are unsure.",
                      FIXED, 20, query=query)


def test_topic_words_are_long_and_not_common():
    words = topic_words("Should I water my basil plants before or after sunrise? Please answer quickly.")
    assert words == {"plants", "sunrise", "quickly"}
    assert topic_words("What is it?") == set()
    # a common word of the query in a bullet is no sign of its topic
    bullet = FIXED + "think about what the person should know before anything else and say it in plain words."
    assert usable_bullet(KEPT, bullet, FIXED, 20, query="What should I do before a job interview?")


def test_the_whole_prompt_needs_the_least_words():
    """After a five-word prompt and the fixed start, a first bullet needs far more than
    `bullet_words` words: the whole prompt must have `min_words`."""
    nine = FIXED + "give short steps and then check your facts twice."
    assert len((KEPT + nine).split()) < 20
    with pytest.raises(ParseError, match="words"):
        usable_bullet(KEPT, nine, FIXED, 20, bullet_words=6)
    result = usable_bullet(KEPT, GENERIC, FIXED, 20, bullet_words=6)
    assert len(result.split()) >= 20


def test_a_bullet_after_a_long_prompt_needs_bullet_words():
    kept = LONG_PROMPT + "\n\n- "
    with pytest.raises(ParseError, match="words"):
        usable_bullet(kept, FIXED + "keep replies short.", FIXED, 20, bullet_words=6)
    seven = FIXED + "keep every reply short, plain and kind."
    assert usable_bullet(kept, seven, FIXED, 20, bullet_words=6) == kept + seven


def test_a_bullet_not_starting_with_the_fixed_words_is_refused():
    with pytest.raises(ParseError, match="start"):
        usable_bullet(KEPT, "Always " + GENERIC[len(FIXED):], FIXED, 20)
    with pytest.raises(ParseError, match="start"):
        usable_bullet(KEPT, "\n" + GENERIC, FIXED, 20)


def test_kept_bullets_that_begin_alike_do_not_block_the_next_bullet():
    """The loop check is meant for what the model writes, not for the prompt kept: two kept
    bullets both beginning "When you answer, give a ..." share six words in a row
    ("- When you answer, give a"), and a new bullet sharing nothing with them must still be
    accepted."""
    first = usable_bullet(KEPT, FIXED + "give a clear reply first, then list the main steps in plain simple words.",
                          FIXED, 20)
    second = usable_bullet(P.small_prompt_base(first),
                           FIXED + "give a short summary at the end so that readers can check what matters most.",
                           FIXED, 20)
    third = FIXED + "say plainly when you are unsure and point to where facts can be checked."
    assert usable_bullet(P.small_prompt_base(second), third, FIXED, 20) == (
        P.small_prompt_base(second) + third)


# ----------------------------------------------------------------------------- 3. prompt and schema


def _bullets(n: int) -> str:
    return PLAIN + "\n\n" + "\n".join(f"- {FIXED}rule number {i}." for i in range(n))


def test_the_base_of_a_new_bullet():
    assert P.small_prompt_base(PLAIN) == PLAIN + "\n\n- "
    assert P.small_prompt_base(PLAIN + "\n\n") == PLAIN + "\n\n- "
    assert P.small_prompt_base(_bullets(1)) == _bullets(1) + "\n- "
    assert P.small_prompt_base(_bullets(P.SMALL_MAX_BULLETS - 1)) == _bullets(P.SMALL_MAX_BULLETS - 1) + "\n- "
    assert P.small_prompt_base(_bullets(P.SMALL_MAX_BULLETS)) == ""
    assert P.small_prompt_base(_bullets(P.SMALL_MAX_BULLETS + 3)) == ""
    assert P.small_prompt_base("") == P.small_prompt_base("  \n\t") == ""
    # other bullet marks count too
    stars = PLAIN + "\n" + "\n".join(f"* rule {i}" for i in range(P.SMALL_MAX_BULLETS))
    dots = PLAIN + "\n" + "\n".join(f"\u2022 rule {i}" for i in range(P.SMALL_MAX_BULLETS))
    assert P.small_prompt_base(stars) == P.small_prompt_base(dots) == ""
    # a hyphen inside a line is no bullet
    assert P.small_prompt_base("You are a well-known, kind - and brief - assistant.").endswith(".\n\n- ")


def test_the_small_meta_prompt():
    query, answer, evaluation = "How do I sleep better?", "Go to bed early.", "Clarity: 2/5 - vague"
    text = P.small_system_prompt_transition(query, answer, evaluation)
    assert '"new_bullet"' in text and '"new_system_prompt"' not in text
    assert query in text and answer in text and evaluation in text


def test_the_small_meta_prompt_cuts_a_long_answer():
    words = [f"word{i}" for i in range(400)]
    long_answer = " ".join(words)
    assert len(long_answer) > P.SMALL_ANSWER_CHARS
    text = P.small_system_prompt_transition("q", long_answer, "e")
    shown = text.split("<<<\n", 1)[1].split("\n>>>", 1)[0]
    assert shown.endswith(" [...]") and len(shown) <= P.SMALL_ANSWER_CHARS + len(" [...]")
    kept = shown[:-len(" [...]")].split(" ")
    assert kept == words[:len(kept)]                       # cut between words
    assert len(shown) > P.SMALL_ANSWER_CHARS - 20
    exact = "x" * P.SMALL_ANSWER_CHARS                     # not over the limit: shown whole
    assert f"<<<\n{exact}\n>>>" in P.small_system_prompt_transition("q", exact, "e")


def test_the_bullet_schema():
    schema = json_schema(P.small_bullet_model())
    field = schema["properties"]["new_bullet"]
    assert field["pattern"] == "^" + re.escape(P.SMALL_BULLET_START)
    assert field["pattern"].startswith("^When")
    assert (field["minLength"], field["maxLength"]) == P.SMALL_BULLET_CHARS
    assert "new_bullet" in schema["required"]
    assert _literal_prefix(field["pattern"]) == P.SMALL_BULLET_START


# ----------------------------------------------------------------------------- 4. the method


def _method(tmp_path, optimizer_model: str | None):
    cfg = load_config(write_config(tmp_path / "c.toml", "http://127.0.0.1:9/v1",
                                   search={"beam_width": 1, "samples_per_state": 1, "depth": 1}))
    if optimizer_model:
        cfg["models"]["optimizer"]["model"] = optimizer_model
    method = DRPO(cfg)

    class Ctx:
        tree = Tree()
        step = 0
    ctx = Ctx()
    method.setup(ctx, load_inputs(cfg))
    root = ctx.tree[method.state["roots"]["prompt"]]
    root["text"] = "You are a patient tutor for curious adults."
    root["detail"] = {"query": "How do I repot an orchid without hurting its roots?",
                      "response": "Take it out and put it in a bigger pot."}
    root["critique"] = "Depth: 2/5 - too short"
    return method, ctx, root


def test_the_embedded_optimizer_is_asked_for_one_bullet(tmp_path):
    method, ctx, root = _method(tmp_path, "local/smollm2")
    assert method.phase == "prompt" and method._small_optimizer()
    text = method.transition_prompt(ctx, root)
    assert text == P.small_system_prompt_transition(root["detail"]["query"],
                                                    root["detail"]["response"], root["critique"])
    assert root["text"] not in text
    schema = json_schema(method._transition_model("new_system_prompt", root))
    assert "new_bullet" in schema["properties"] and "new_system_prompt" not in schema["properties"]


def test_the_bullet_answer_becomes_the_parent_prompt_plus_the_bullet(tmp_path):
    method, ctx, root = _method(tmp_path, "local/smollm2")
    parse = method._parser(root)
    answer = parse(json.dumps({"analysis": "depth was low", "new_bullet": GENERIC}))
    assert answer["new_system_prompt"] == root["text"] + "\n\n- " + GENERIC
    assert "new_bullet" not in answer
    # the parent's query names its topic: a bullet using it is refused
    with pytest.raises(ParseError, match="orchid"):
        parse(json.dumps({"analysis": "a", "new_bullet": FIXED + "say how to water an orchid "
                                                                 "and explain each step in plain words."}))


def test_a_full_prompt_is_rewritten_whole(tmp_path):
    method, ctx, root = _method(tmp_path, "local/smollm2")
    root["text"] = _bullets(P.SMALL_MAX_BULLETS)
    text = method.transition_prompt(ctx, root)
    assert root["text"] in text and '"new_bullet"' not in text
    schema = json_schema(method._transition_model("new_system_prompt", root))
    assert schema["properties"]["new_system_prompt"]["pattern"].startswith("^You")
    answer = method._parser(root)(json.dumps({"analysis": "a", "thought": "t",
                                              "new_system_prompt": LONG_PROMPT}))
    assert answer["new_system_prompt"] == LONG_PROMPT


def test_another_optimizer_rewrites_the_whole_prompt(tmp_path):
    method, ctx, root = _method(tmp_path, None)
    assert not method._small_optimizer()
    text = method.transition_prompt(ctx, root)
    assert root["text"] in text and '"new_bullet"' not in text
    schema = json_schema(method._transition_model("new_system_prompt", root))
    assert "pattern" not in schema["properties"]["new_system_prompt"]
    answer = method._parser(root)(json.dumps({"analysis": "a", "thought": "t",
                                              "new_system_prompt": "Be brief."}))
    assert answer["new_system_prompt"] == "Be brief."


SHORT_BULLETS = [  # short words only, so that no seed query's topic word is among them
    "give one short and clear reply at the top, then add the main steps in a list.",
    "say what you do not know, and tell the user how they can find out more.",
    "keep each part brief, use plain words, and end with a line that sums it up.",
    "ask a short question back when the need is not clear, and say why you ask.",
    "put the most vital point first and leave out side notes that add no real value.",
    "warn the user of any risk in what they want to do, and give a safe way to do it.",
    "use a calm and kind tone, and show you care about what the user needs most.",
]


def _bullet_responder(request, index):
    last = request["messages"][-1]["content"]
    if '"new_bullet"' in last:
        pick = _h(last, request.get("seed"), index) % len(SHORT_BULLETS)
        return json.dumps({"analysis": "the answer was thin", "new_bullet": FIXED + SHORT_BULLETS[pick]})
    return drpo_responder(request, index)


def test_a_run_with_the_small_optimizer_grows_the_prompt_by_bullets(tmp_path, fake_key, monkeypatch):
    """End to end against the fake endpoint, the optimizer taken for the embedded model: the
    rewrites ask for a bullet without showing the prompt, and each child is its parent's
    prompt with one more bullet."""
    monkeypatch.setattr(DRPO, "_small_optimizer", lambda self: True)
    with FakeLLMServer(responder=_bullet_responder) as server:
        cfg = load_config(write_config(tmp_path / "c.toml", server.base_url,
                                       search={"beam_width": 1, "samples_per_state": 2, "depth": 2,
                                               "skip_rewrite_above": None}))
        store = SessionStore(tmp_path / "store")
        runner = Runner.create(cfg, load_inputs(cfg), store=store, cache_dir=store.cache_dir)
        asyncio.run(runner.run())
        requests = list(server.requests)
    store.close()
    nodes = [n for n in runner.tree.nodes.values() if n["meta"].get("phase") == "prompt"]
    children = [n for n in nodes if n["parent"] is not None and not n["meta"].get("kept")]
    assert len(children) >= 3 and all(n["status"] != "failed" for n in children)
    assert max(len(P.BULLET_LINE.findall(n["text"])) for n in children) == 2
    for child in children:
        parent = runner.tree[child["parent"]]
        assert child["text"].startswith(P.small_prompt_base(parent["text"]) + FIXED)
        assert len(P.BULLET_LINE.findall(child["text"])) == len(P.BULLET_LINE.findall(parent["text"])) + 1
    asks = [r["messages"][-1]["content"] for r in requests
            if '"new_bullet"' in r["messages"][-1]["content"]]
    assert len(asks) >= len(children)  # more when a bullet was refused and asked again
    assert not any('"new_system_prompt"' in r["messages"][-1]["content"] for r in requests)
    assert all(cfg["search"]["initial_prompt"] not in a for a in asks)


# ----------------------------------------------------------------------------- 5. evaluation span


def _spec(judge, n_items, n_prompts, samples=1):
    items = load_eval_set(None, judge="pairwise" if judge == "pairwise" else "aspects",
                          limit=n_items, seed=0)["items"]
    assert len(items) == n_items
    prompts = [text_prompt(f"You are assistant {i}." + "\n- Tip: be kind." * i, f"p{i}")
               for i in range(n_prompts)]
    return {"judge": judge, "samples": samples, "seed": 0, "rubric": None, "values": None,
            "kind": None, "safety_category": "safety", "prompts": prompts, "items": items,
            "models": {"base": "b", "judge": "j"}, "data": {"source": "test"}}


@pytest.mark.parametrize("judge, n_items, n_prompts, samples, span", [
    ("aspects", 4, 2, 1, 2),     # 8 samples in all: one step
    ("aspects", 5, 2, 1, 2),     # exactly BATCH
    ("aspects", 6, 2, 1, 1),     # 12 > BATCH
    ("aspects", 8, 2, 1, 1),
    ("aspects", 4, 2, 2, 1),     # k = 2: 8 + 8
    ("aspects", 3, 3, 1, 3),
    ("aspects", 4, 3, 1, 2),
    ("aspects", 12, 2, 1, 1),    # a full batch goes alone
    ("rubric", 2, 4, 1, 4),
    ("pairwise", 3, 3, 1, 1),    # pairwise: one batch, however small
    ("pairwise", 1, 5, 1, 1),
])
def test_span_runs_small_batches_together(judge, n_items, n_prompts, samples, span):
    evaluation = Evaluation(_spec(judge, n_items, n_prompts, samples))
    assert evaluation.span() == span
    units = evaluation.batches()[:span]
    assert sum(len(chunk) for _, chunk in units) * samples <= BATCH or span == 1


def test_span_counts_from_the_cursor():
    evaluation = Evaluation(_spec("aspects", 5, 3))     # batches of 5, 5, 5
    assert evaluation.span() == 2
    evaluation.state["cursor"] = 2
    assert evaluation.span() == 1
    evaluation = Evaluation(_spec("aspects", 15, 2))    # batches of 10, 5, 10, 5
    assert [len(c) for _, c in evaluation.batches()] == [10, 5, 10, 5]
    assert [_span_at(evaluation, c) for c in range(4)] == [1, 1, 1, 1]


def _span_at(evaluation, cursor):
    evaluation.state["cursor"] = cursor
    return evaluation.span()


def test_describe_next_names_every_prompt_of_the_span():
    evaluation = Evaluation(_spec("aspects", 3, 3))
    line = evaluation.describe_next()
    assert line.startswith("batches 1-3/3: prompts ")
    assert all(repr(f"p{i}") in line for i in range(3))
    assert line.endswith("3 items × 1 sample")
    single = Evaluation(_spec("aspects", 8, 2)).describe_next()
    assert single.startswith("batch 1/2: prompt 'p0',") and "'p1'" not in single


def _runner(tmp_path, server, spec):
    cfg = validate_config({"models": {"default": {
        "model": "openai/fake-base", "api_base": server.base_url, "api_key_env": "PA_FAKE_KEY"}},
        "gateway": {"backoff": 0.01, "max_backoff": 0.05, "timeout": 5.0}})
    models = {r: cfg["models"][r] for r in ("base", "judge")}
    return EvalRunner.create(spec, models, cfg["gateway"], cache_dir=tmp_path / "cache")


def test_a_small_evaluation_finishes_in_one_step(tmp_path, fake_server, fake_key):
    runner = _runner(tmp_path, fake_server, _spec("aspects", 4, 2))
    assert "'p0', 'p1'" in runner.evaluation.describe_next()
    asyncio.run(runner.run(steps=1))
    assert runner.done and runner.doc["steps"] == 1
    results = runner.evaluation.state["results"]
    assert len(results) == 8 and not any(r.get("error") for r in results.values())
    assert {k.split("|")[0] for k in results} == {"0", "1"}
    assert runner.gateway.totals()["calls"] == {"base": 8, "judge": 8}
    assert runner.evaluation.describe_next() == "finished"
    runner.gateway.close()


def test_a_larger_evaluation_steps_one_batch_at_a_time(tmp_path, fake_server, fake_key):
    runner = _runner(tmp_path, fake_server, _spec("aspects", 8, 2))
    asyncio.run(runner.run(steps=1))
    assert not runner.done and runner.evaluation.state["cursor"] == 1
    assert {k.split("|")[0] for k in runner.evaluation.state["results"]} == {"0"}
    asyncio.run(runner.run(steps=1))
    assert runner.done and runner.doc["steps"] == 2
    runner.gateway.close()


def test_a_pairwise_evaluation_steps_one_batch_at_a_time(tmp_path, fake_server, fake_key):
    runner = _runner(tmp_path, fake_server, _spec("pairwise", 3, 3))
    assert len(runner.evaluation.batches()) == 2
    asyncio.run(runner.run(steps=1))
    assert not runner.done and runner.evaluation.state["cursor"] == 1
    asyncio.run(runner.run())
    assert runner.done and runner.doc["steps"] == 2
    assert runner.gateway.totals()["calls"] == runner.doc["planned_calls"]
    runner.gateway.close()


def test_a_refused_bullet_gets_at_least_the_small_retries(tmp_path):
    """About half the embedded model's bullets are refused: its rewrites get at least
    P.SMALL_RETRIES new samples whatever parse_retries says (more when it says more); other
    optimizers and whole-prompt rewrites keep parse_retries."""
    class Gateway:
        settings = {"parse_retries": 1}

    method, ctx, root = _method(tmp_path, "local/smollm2")
    assert method._rewrite_retries(Gateway, "new_system_prompt", root) == P.SMALL_RETRIES
    Gateway.settings = {"parse_retries": 7}
    assert method._rewrite_retries(Gateway, "new_system_prompt", root) == 7
    Gateway.settings = {"parse_retries": 1}
    full = dict(root, text="You are kind.\n" + "".join(f"- rule {i}\n" for i in range(8)))
    assert method._rewrite_retries(Gateway, "new_system_prompt", full) == 1
    (tmp_path / "other").mkdir()
    other, _, other_root = _method(tmp_path / "other", "openai/fake-optimizer")
    assert other._rewrite_retries(Gateway, "new_system_prompt", other_root) == 1
