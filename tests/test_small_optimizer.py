"""The embedded model as DRPO's optimizer: its system-prompt rewrites start by addressing the
assistant (a fixed start in its grammar), run to a minimum length, and must be a usable
instruction once repeated sentences are dropped."""
import pytest

from promptarbor.engine.local_model import schema_to_gbnf
from promptarbor.engine.parsing import ParseError, usable_instruction
from promptarbor.engine.prompts import drpo as P
from promptarbor.engine.schemas import json_schema

GOOD = ("You are a careful assistant. Answer the question asked, say when you are unsure, "
        "refuse requests that could hurt someone and explain why in one sentence.")


def test_a_usable_instruction_passes_and_a_repeat_is_cut():
    assert usable_instruction(GOOD) == GOOD
    assert usable_instruction(GOOD + " " + GOOD) == GOOD
    assert usable_instruction(GOOD + " " + GOOD[:60]) == GOOD


@pytest.mark.parametrize("text", [
    "The new system prompt is designed to improve the user's experience. " * 4,   # one sentence
    "The new,",
    "The current prompt is not better than the previous one, and the current prompt is not "
    "better than the previous prompt, so it should be changed to be a better prompt overall.",
    "You are a new system prompt that is designed to improve the experience of every user who "
    "asks a question and wants a helpful answer from the assistant.",
])
def test_what_the_small_model_wrote_before_is_refused(text):
    with pytest.raises(ParseError):
        usable_instruction(text)


def test_the_grammar_fixes_the_start_and_the_least_length():
    schema = json_schema(P.transition_model("new_system_prompt", prefix=P.SMALL_PROMPT_START,
                                            min_length=P.SMALL_PROMPT_CHARS))
    field = schema["properties"]["new_system_prompt"]
    assert field["minLength"] == P.SMALL_PROMPT_CHARS and field["pattern"].startswith("^You")
    grammar = schema_to_gbnf(schema)
    rest = P.SMALL_PROMPT_CHARS - len(P.SMALL_PROMPT_START)
    assert f'"\\"" "You are " char{{{rest},' in grammar
    # other providers' schema is unchanged: no fixed start
    plain = json_schema(P.transition_model("new_system_prompt"))["properties"]["new_system_prompt"]
    assert "pattern" not in plain and "minLength" not in plain


def test_a_loop_inside_one_sentence_is_cut_back_to_the_last_full_sentence():
    looped = ("You are a helpful assistant. You can improve it by adding bullet points, using "
              "a specific list of bullet points, and using a concise list of bullet points for "
              "every answer you give to a user. You can improve it by adding bullet points, "
              "using a specific list of")
    assert usable_instruction(looped).endswith("every answer you give to a user.")
    stuck = ("You are a helpful assistant. The user should not use the current answer as a "
             "replacement, and it is important to remember that the user should not use the "
             "current answer as a replacement, and it is important to remember that")
    with pytest.raises(ParseError, match="words"):
        usable_instruction(stuck)
