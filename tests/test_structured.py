"""Structured answers: one pydantic model per answer gives the JSON schema sent as
response_format and checks the parsed answer; which models get a response_format; parse
retries that change the sample; a provider that refuses response_format."""
import asyncio
import json

import pytest

from fake_llm import FakeLLMServer, _error_body, _Response
from promptarbor.engine import schemas as S
from promptarbor.engine.config import ConfigError, validate_config
from promptarbor.engine.gateway import CallFailed, Gateway, retry_temperature
from promptarbor.engine.parsing import (ParseError, parse_answer, parse_reward_selection,
                                        parse_scores)
from promptarbor.engine.prompts import drpo as P
from promptarbor.engine.prompts import picaco as PP

ASPECTS = ["Clarity", "Critical-Thinking"]


def selection_answer(names, **extra):
    return json.dumps({"query_analysis": {"main_topic": "tax"},
                       "aspects_selection": {"reasoning": "why", "selected_aspects": names},
                       **extra})


# ----------------------------------------------------------------------------- the models

def test_every_schema_is_self_contained_and_asks_for_every_key():
    models = [P.selection_model(), P.selection_model(P.ICL_SELECTION_RANGE),
              P.scores_model(ASPECTS), P.transition_model("new_system_prompt"),
              P.transition_model("new_response"), PP.judge_model(["Benevolence", "Relevance"]),
              S.VapoJudge, S.Rewrite, S.Instruction, S.Rubric, S.Relevance, S.Pairwise]
    for model in models:
        schema = S.json_schema(model)
        text = json.dumps(schema)
        assert "$ref" not in text and "$defs" not in text and '"title"' not in text

        def walk(node):
            if node.get("type") == "object":
                assert node["required"] == list(node["properties"]), node
                for sub in node["properties"].values():
                    walk(sub)
            elif node.get("type") == "array":
                walk(node["items"])
            elif node.get("type") == "string" and "enum" not in node:
                assert node["maxLength"] > 0  # a small model cannot ramble past max_tokens
        walk(schema)


def test_every_schema_becomes_a_grammar_for_the_embedded_model():
    gbnf = pytest.importorskip("promptarbor.engine.local_model").__dict__.get("schema_to_gbnf")
    if gbnf is None:
        pytest.skip("the embedded model builds its grammar elsewhere")
    for model in (P.selection_model(), P.scores_model(ASPECTS), P.transition_model("new_response"),
                  PP.judge_model(["Benevolence"]), S.VapoJudge, S.Rewrite, S.Instruction,
                  S.Rubric, S.Relevance, S.Pairwise):
        assert "root ::=" in gbnf(S.json_schema(model))


def test_selection_schema_is_the_catalogue_2_to_5_distinct():
    items = P.selection_schema()["properties"]["aspects_selection"]["properties"]["selected_aspects"]
    assert items["items"] == {"type": "string", "enum": list(P.ASPECTS)}
    assert (items["minItems"], items["maxItems"], items["uniqueItems"]) == (2, 5, True)
    icl = P.selection_schema(P.ICL_SELECTION_RANGE)["properties"]["aspects_selection"]
    assert (icl["properties"]["selected_aspects"]["minItems"],
            icl["properties"]["selected_aspects"]["maxItems"]) == P.ICL_SELECTION_RANGE


def test_selection_model_checks_names_count_and_repeats():
    model = P.selection_model()
    ok = S.validate(model, json.loads(selection_answer(["Clarity", "Depth"])))
    assert ok.aspects_selection.selected_aspects == ["Clarity", "Depth"]
    bad = {"repeated": (["Clarity", "clarity"], "selected twice"),
           "unknown": (["Clarity", "Humor"], "unknown aspect 'Humor'"),
           "too few": (["Clarity"], "at least 2"),
           "too many": (["Clarity", "Depth", "Safety", "Empathy", "Creativity", "Factuality"],
                        "at most 5")}
    for names, reason in bad.values():
        with pytest.raises(ParseError, match=reason):
            S.validate(model, json.loads(selection_answer(names)))
    # a new aspect is accepted when the answer defines it (the schema never asks for one)
    new = json.loads(selection_answer(["Clarity", "Humor"], new_aspects={"Humor": "Is funny."}))
    assert S.validate(model, new).new_aspects == {"Humor": "Is funny."}
    assert "new_aspects" not in P.selection_schema()["properties"]


def test_parse_reward_selection_checks_with_the_model_it_is_given():
    strict = S.selection(tuple(P.ASPECTS), 3, 3)
    with pytest.raises(ParseError, match="at least 3"):
        # the domain rules pass it (2 usable aspects, bounds 2-5); the model does not
        parse_reward_selection(selection_answer(["Clarity", "Depth"]), P.ASPECTS, model=strict)
    assert parse_reward_selection(selection_answer(["clarity", "depth"]), P.ASPECTS,
                                  model=P.selection_model()).aspects == ["Clarity", "Depth"]


def test_scores_model_reads_score_forms_and_rejects_bad_ones():
    model = P.scores_model(ASPECTS)
    assert S.json_schema(model)["properties"]["Clarity"]["properties"]["score"] == \
        {"type": "integer", "enum": [1, 2, 3, 4, 5]}
    good = {"Clarity": {"rationale": "clear", "score": "4/5"}, "Critical-Thinking": {"score": 2}}
    checked = S.validate(model, good)
    assert [(e.score, e.rationale) for e in (checked.k0, checked.k1)] == [(4.0, "clear"), (2.0, "")]
    for answer, reason in [
        ({"Clarity": {"score": 7}, "Critical-Thinking": {"score": 2}},
         "score for Clarity out of range 1-5: 7"),
        ({"Clarity": {"score": "3/10"}, "Critical-Thinking": {"score": 2}},
         "score for Clarity is on a scale of 10"),
        ({"Clarity": {"score": 4}}, "Critical-Thinking: missing"),
        ({"Clarity": {"rationale": "x"}, "Critical-Thinking": {"score": 2}},
         "score for Clarity missing"),
    ]:
        with pytest.raises(ParseError, match=reason):
            S.validate(model, answer)


def test_parse_scores_with_a_model_for_other_or_repeated_names_never_crashes():
    text = '{"depth": 3, "Clarity": {"score": "4/5", "reason": "ok"}}'
    for model in (P.scores_model(["Depth", "depth", "Clarity"]), P.scores_model(["Safety"])):
        scores = parse_scores(text, ["Depth", "Clarity"], model=model)
        assert {a: (v.score, v.rationale) for a, v in scores.items()} == \
            {"Depth": (3.0, ""), "Clarity": (4.0, "ok")}


def test_picaco_judge_model_asks_for_reason_and_reads_rationale_too():
    model = PP.judge_model(["Benevolence"])
    entry = S.json_schema(model)["properties"]["Benevolence"]
    assert list(entry["properties"]) == ["reason", "score"]
    scores = parse_scores('{"Benevolence": {"reason": "kind", "score": "5"}}', ["Benevolence"],
                          model=model)
    assert (scores["Benevolence"].score, scores["Benevolence"].rationale) == (5.0, "kind")


@pytest.mark.parametrize("model, text, expected", [
    (S.VapoJudge, '{"reasoning": "fine", "score": "4/5"}', {"reasoning": "fine", "score": 4.0}),
    (S.VapoJudge, 'Verdict: {"Score": 3}', {"reasoning": "", "score": 3.0}),
    (S.Rubric, '{"reason": "meets it", "score": 2}', {"rationale": "meets it", "score": 2.0}),
    (S.Relevance, "```json\n{'reason': 'related', 'score': 5,}\n```",
     {"reason": "related", "score": 5.0}),
    (S.Pairwise, '{"reasoning": "fuller", "winner": "b."}', {"reasoning": "fuller", "winner": "B"}),
    (S.Pairwise, '{"reasoning": "same", "winner": "Tie"}', {"reasoning": "same", "winner": "tie"}),
    (S.Rewrite, '{"new_prompt": "You are careful and kind."}',
     {"new_prompt": "You are careful and kind."}),
    (P.transition_model("new_system_prompt"),
     '{"analysis": ["a", "b"], "new_system_prompt": "You are \\"Arbor\\", a',  # cut off
     {"analysis": "a\nb", "thought": "", "new_system_prompt": 'You are "Arbor", a'}),
])
def test_parse_answer_good(model, text, expected):
    assert parse_answer(text, model).model_dump(by_alias=True) == expected


@pytest.mark.parametrize("model, text, reason", [
    (S.VapoJudge, '{"reasoning": "fine"}', "score: missing"),
    (S.VapoJudge, '{"score": 9}', "out of range 1-5: 9"),
    (S.Pairwise, '{"winner": "C"}', "names no winner"),
    (S.Rewrite, '{"new_prompt": "   "}', "new_prompt: is empty"),
    (P.transition_model("new_response"), '{"analysis": "a"}', "new_response: missing"),
    (S.Rubric, "no JSON here", "no JSON object found"),
])
def test_parse_answer_bad(model, text, reason):
    with pytest.raises(ParseError, match=reason):
        parse_answer(text, model)


# ----------------------------------------------------------------------------- the gateway

def gateway(server, tmp_path, model="openai/fake", structured=None, **settings):
    role = {"model": model, "api_base": server.base_url, "api_key_env": "PA_FAKE_KEY"}
    if structured is not None:
        role["structured"] = structured
    cfg = validate_config({"models": {"default": role},
                           "gateway": {"backoff": 0.01, "max_backoff": 0.05, "timeout": 5.0,
                                       "retries": 0, **settings}})
    return Gateway(cfg["models"], cfg["gateway"], cache_dir=tmp_path / "cache")


def rubric_responder(request, index):
    return json.dumps({"rationale": "meets it", "score": 4})


def ask_rubric(gw, role="evaluator", content="rate this"):
    async def go():
        return await gw.ask(role, [{"role": "user", "content": content}],
                            lambda text: parse_answer(text, S.Rubric), purpose="eval judge",
                            schema=S.Rubric)
    return asyncio.run(go())


def sent_formats(server):
    return [r["params"].get("response_format") for r in server.requests]


def test_json_schema_goes_to_a_model_litellm_says_takes_one(tmp_path, fake_key):
    with FakeLLMServer(responder=rubric_responder) as server:
        gw = gateway(server, tmp_path, model="openai/gpt-4o")
        verdict, _ = ask_rubric(gw)
        assert verdict.score == 4.0
        [sent] = sent_formats(server)
        assert sent["type"] == "json_schema"
        assert sent["json_schema"]["name"] == "eval_judge"
        assert sent["json_schema"]["schema"] == S.json_schema(S.Rubric)
        gw.close()


def test_no_response_format_for_a_model_litellm_does_not_know(tmp_path, fake_key):
    with FakeLLMServer(responder=rubric_responder) as server:
        gw = gateway(server, tmp_path, model="openai/fake")
        ask_rubric(gw)
        assert sent_formats(server) == [None]
        assert gw.structured_mode("evaluator") is None
        gw.close()


@pytest.mark.parametrize("model, structured, expected", [
    ("openai/fake", "json_object", {"type": "json_object"}),
    ("openai/fake", "json_schema", "json_schema"),
    ("openai/gpt-4o", "off", None),
    ("openai/gpt-4o", "auto", "json_schema"),
])
def test_the_structured_setting_overrides(tmp_path, fake_key, model, structured, expected):
    with FakeLLMServer(responder=rubric_responder) as server:
        gw = gateway(server, tmp_path, model=model, structured=structured)
        ask_rubric(gw)
        [sent] = sent_formats(server)
        if isinstance(expected, str):
            assert sent["type"] == expected
        else:
            assert sent == expected
        gw.close()


def test_embedded_model_gets_the_schema_and_one_answer_per_call():
    models = {"base": {"model": "local/smollm2", "temperature": 0.0, "max_tokens": 10},
              "optimizer": {"model": "openai/gpt-4o", "temperature": 0.0, "max_tokens": 10,
                            "structured": "off"}}
    gw = Gateway(models, {"concurrency": 1, "retries": 0})
    assert gw.structured_mode("base") == "json_schema"
    assert gw.response_format("base", S.Rubric, "eval judge")["json_schema"]["schema"] == \
        S.json_schema(S.Rubric)
    assert gw.one_per_call("base") and not gw.one_per_call("optimizer")
    assert gw.response_format("optimizer", S.Rubric, "x") is None


def test_structured_setting_is_checked():
    with pytest.raises(ConfigError, match="structured must be one of auto, json_schema, "
                                          "json_object, off"):
        validate_config({"models": {"base": {"model": "openai/x", "structured": "yes"}}})
    with pytest.raises(ConfigError, match="response_format: not allowed in extra; set "
                                          "models.base.structured instead"):
        validate_config({"models": {"base": {"model": "openai/x",
                                             "extra": {"response_format": {"type": "text"}}}}})
    cfg = validate_config({"models": {"default": {"model": "openai/x", "structured": "off"}}})
    assert {r: m["structured"] for r, m in cfg["models"].items()} == \
        {"base": "off", "optimizer": "off", "evaluator": "off", "judge": "off"}


# ----------------------------------------------------------------------------- parse retries

def test_retry_temperature_rises_and_is_never_lowered():
    assert [retry_temperature(0.0, a) for a in range(5)] == [0.0, 0.3, 0.6, 0.9, 1.0]
    assert retry_temperature(0.2, 1) == 0.5
    assert retry_temperature(1.3, 2) == 1.3


def hot_only(request, index):
    """Unparseable at temperature 0 (as a greedy model repeats itself), fine when hotter."""
    if not request.get("temperature"):
        return "I think the answer is fine, four out of five."
    return rubric_responder(request, index)


def test_a_parse_retry_changes_seed_and_temperature(tmp_path, fake_key):
    with FakeLLMServer(responder=hot_only) as server:
        gw = gateway(server, tmp_path, parse_retries=2)
        verdict, record = ask_rubric(gw)
        assert verdict.score == 4.0 and record["attempt"] == 1
        first, retry = [r["params"] for r in server.requests]
        assert first["temperature"] == 0 and retry["temperature"] == pytest.approx(0.3)
        assert first["seed"] != retry["seed"]
        assert gw.usage["evaluator"].parse_retries == 1
        gw.close()
        # a repeated run replays both attempts from the cache
        gw = gateway(server, tmp_path, parse_retries=2)
        assert ask_rubric(gw)[0].score == 4.0
        assert server.count() == 2 and gw.usage["evaluator"].cached == 2
        gw.close()


def test_a_failed_check_is_a_parse_failure_not_a_crash(tmp_path, fake_key):
    with FakeLLMServer(responder=lambda request, index: '{"score": 11}') as server:
        gw = gateway(server, tmp_path, parse_retries=1)

        async def go():  # a caller that checks with pydantic itself
            return await gw.ask("judge", [{"role": "user", "content": "x"}],
                                S.Rubric.model_validate_json, purpose="eval judge",
                                schema=S.Rubric)
        with pytest.raises(CallFailed, match="did not parse after 2 tries .*out of range 1-5: 11"):
            asyncio.run(go())
        gw.close()


# ----------------------------------------------------------------------------- a provider's 400

class RefusesResponseFormat(FakeLLMServer):
    """An OpenAI-compatible server that answers 400 to any request with a response_format."""

    def _respond(self, body, parsed_ok, rec, auth=""):
        if parsed_ok and "response_format" in body:
            rec["fault"] = "400-response-format"
            message = "response_format is not supported by this server"
            return _Response(400, json.dumps(_error_body(
                message, "invalid_request_error", "unsupported_parameter",
                "response_format")).encode("utf-8"))
        return super()._respond(body, parsed_ok, rec, auth)


def test_a_400_on_response_format_degrades_for_the_rest_of_the_run(tmp_path, fake_key):
    with RefusesResponseFormat(responder=rubric_responder) as server:
        gw = gateway(server, tmp_path, model="openai/gpt-4o")
        verdict, record = ask_rubric(gw, content="first")
        assert verdict.score == 4.0 and record["error"] is None
        assert [r["status"] for r in server.requests] == [400, 200]
        assert sent_formats(server)[1] is None
        assert gw.structured_mode("evaluator") is None
        assert not gw._fatal and gw.usage["evaluator"].errors == 0
        # later calls, other roles on the same model included, go without one at once
        ask_rubric(gw, content="second")
        ask_rubric(gw, role="base", content="third")
        assert [r["status"] for r in server.requests] == [400, 200, 200, 200]
        gw.close()


def test_a_400_for_another_reason_still_fails_the_role(tmp_path, fake_key):
    with FakeLLMServer(responder=rubric_responder) as server:
        server.inject("400-markup", count=2)  # refused with and without response_format
        gw = gateway(server, tmp_path, model="openai/gpt-4o")
        with pytest.raises(CallFailed, match=r"bad request \(HTTP 400\)"):
            ask_rubric(gw)
        assert server.count() == 2
        assert "evaluator" in gw._fatal and not gw.format_refused
        assert gw.structured_mode("evaluator") == "json_schema"
        gw.close()
