"""Every structured answer a meta-prompt asks for, described once as a pydantic model.

One model gives both sides of a structured answer:

* its JSON schema (`json_schema`), sent as `response_format` to every model that decodes
  under one and turned into the embedded model's grammar. The schema is what a model should
  write: every key present, strings with a length limit (so a small model cannot ramble past
  max_tokens), scores as the integers 1-5, aspect names from the catalogue;
* the check of a parsed answer (`validate`), which is as lenient as the parsers: a score
  may be written "4/5" or 4.5, a list where text is expected becomes lines, a missing
  rationale is "". A failed check is a `ParseError` with a short reason (the gateway then
  asks again), never a crash.

Models with fixed keys are classes here; answers whose keys depend on the call (the aspects
being scored, the values being judged, the catalogue a selection picks from) come from
cached factories built with `pydantic.create_model`.
"""
import re
from functools import lru_cache
from typing import Annotated, Any, Iterable

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field,
                      ValidationError, WithJsonSchema, create_model, model_validator)
from pydantic.json_schema import SkipJsonSchema

from .parsing import ParseError, _score_problem, _to_text, normalize_name

__all__ = [
    "Answer", "json_schema", "response_format", "validate", "reason_of",
    "selection", "scores", "judge", "transition",
    "VapoJudge", "Rewrite", "Instruction", "Rubric", "Relevance", "Pairwise",
]


class Answer(BaseModel):
    """Base of every structured answer: extra keys are ignored, and in the JSON schema every
    key is required (fields with a default are lenient only when an answer is checked)."""
    model_config = ConfigDict(extra="ignore", populate_by_name=True,
                              json_schema_serialization_defaults_required=True)


# ---------------------------------------------------------------------------- field types

def _text_value(value: Any) -> str:
    return _to_text(value).strip()


def _not_blank(value: str) -> str:
    if not value:
        raise ValueError("is empty")
    return value


def Text(limit: int) -> Any:
    """Free text: any JSON value is read as text; the schema caps its length at `limit`."""
    return Annotated[str, BeforeValidator(_text_value),
                     WithJsonSchema({"type": "string", "maxLength": limit})]


def RequiredText(limit: int, min_length: int = 0) -> Any:
    """Text that must not be blank (the new prompt of a rewrite, say)."""
    schema: dict = {"type": "string", "maxLength": limit}
    if min_length:
        schema["minLength"] = min_length
    return Annotated[str, BeforeValidator(_text_value), AfterValidator(_not_blank),
                     WithJsonSchema(schema)]


@lru_cache(maxsize=16)
def Score(lo: int = 1, hi: int = 5) -> Any:
    """A score in [lo, hi]. The schema asks for an integer; a check also reads the forms
    models write ("4", "4/5", "Score: 4", [4], 4.5) by the domain rule in engine.parsing."""
    def check(value: Any) -> float:
        number, problem = _score_problem(value, lo, hi)
        if problem:
            raise ValueError(problem)
        return number
    return Annotated[float, BeforeValidator(check),
                     WithJsonSchema({"type": "integer", "enum": list(range(lo, hi + 1))})]


# ---------------------------------------------------------------------------- DRPO

ANALYSIS_KEYS = ("main_topic", "user_intent", "ambiguities", "response_format", "challenges")


class QueryAnalysis(Answer):
    model_config = ConfigDict(extra="allow")
    main_topic: Text(120) = ""
    user_intent: Text(120) = ""
    ambiguities: Text(120) = ""
    response_format: Text(120) = ""
    challenges: Text(120) = ""


def _catalogue_name(names: tuple[str, ...]) -> Any:
    return Annotated[str, WithJsonSchema({"type": "string", "enum": list(names)})]


@lru_cache(maxsize=32)
def selection(names: tuple[str, ...], lo: int = 2, hi: int = 5) -> type[Answer]:
    """Reward selection: the query's analysis and lo..hi distinct aspects. The schema's items
    are the catalogue's names (an enum); a check also accepts a new aspect the answer defines
    in `new_aspects` (never asked for by the schema: a grammar cannot hold free keys)."""
    names = tuple(names)
    catalogue = {normalize_name(n) for n in names}

    class AspectsSelection(Answer):
        reasoning: Text(300) = ""
        selected_aspects: list[_catalogue_name(names)] = Field(
            min_length=lo, max_length=hi, json_schema_extra={"uniqueItems": True})

    class Selection(Answer):
        query_analysis: QueryAnalysis = Field(default_factory=QueryAnalysis)
        aspects_selection: AspectsSelection
        new_aspects: SkipJsonSchema[dict[str, str]] = Field(default_factory=dict)

        @model_validator(mode="after")
        def _known_and_distinct(self):
            defined = {normalize_name(k) for k in self.new_aspects}
            seen: set[str] = set()
            for name in self.aspects_selection.selected_aspects:
                norm = normalize_name(name)
                if norm in seen:
                    raise ValueError(f"aspect {name!r} is selected twice")
                if norm not in catalogue and norm not in defined:
                    raise ValueError(f"unknown aspect {name!r} (not in the catalogue and not "
                                     f"defined in new_aspects)")
                seen.add(norm)
            return self

    return Selection


def _keyed(model_name: str, keys: Iterable[str], entry: type[Answer]) -> type[Answer]:
    """A model whose keys are `keys` as written (any text), each holding an `entry`."""
    fields = {f"k{i}": (entry, Field(alias=key)) for i, key in enumerate(keys)}
    return create_model(model_name, __base__=Answer, **fields)


@lru_cache(maxsize=8)
def _entry(reason: str, reason_limit: int, lo: int, hi: int) -> type[Answer]:
    """One aspect's (or value's) verdict: a reason under the key `reason`, and a score."""
    return create_model(f"Verdict_{reason}", __base__=Answer,
                        rationale=(Text(reason_limit), Field("", alias=reason)),
                        score=(Score(lo, hi), ...))


@lru_cache(maxsize=256)
def scores(aspects: tuple[str, ...], lo: int = 1, hi: int = 5) -> type[Answer]:
    """Reward scoring: {"<Aspect>": {"rationale": str, "score": 1-5}, ...}."""
    return _keyed("Scores", aspects, _entry("rationale", 200, lo, hi))


@lru_cache(maxsize=256)
def judge(keys: tuple[str, ...]) -> type[Answer]:
    """PICACO's value conformity (and relevance): {"<Value>": {"reason": str, "score": 1-5}}."""
    return _keyed("Conformity", keys, _entry("reason", 200, 1, 5))


@lru_cache(maxsize=8)
def transition(key: str, limit: int = 1500, prefix: str = "", min_length: int = 0) -> type[Answer]:
    """A transition: analysis, thought and the new state under `key` (new_system_prompt or
    new_response), which must not be blank. `prefix` and `min_length` bound the new state
    further (the embedded model's rewrites: an instruction to the assistant, of some length);
    the prefix goes in the schema as a `^literal` pattern, which the embedded model's grammar
    turns into a fixed start."""
    field = _starting(prefix, min_length, limit) if prefix else RequiredText(limit, min_length)
    return create_model(f"Transition_{key}{'_' + str(min_length) if prefix else ''}",
                        __base__=Answer, analysis=(Text(300), ""), thought=(Text(300), ""),
                        **{key: (field, ...)})


def _starting(prefix: str, least: int, most: int) -> Any:
    """Text that starts with `prefix` (a `^literal` pattern in the schema, which the embedded
    model's grammar turns into a fixed start), `least`..`most` characters long."""
    schema = {"type": "string", "maxLength": most, "pattern": "^" + re.escape(prefix)}
    if least:
        schema["minLength"] = least
    return Annotated[str, BeforeValidator(_text_value), AfterValidator(_not_blank),
                     WithJsonSchema(schema)]


@lru_cache(maxsize=8)
def bullet(start: str, least: int, most: int) -> type[Answer]:
    """One new bullet of a system prompt (the embedded model's DRPO rewrites): a short
    analysis, and the bullet, which starts with `start`."""
    return create_model("Bullet", __base__=Answer, analysis=(Text(160), ""),
                        new_bullet=(_starting(start, least, most), ...))


# ---------------------------------------------------------------------------- VAPO, PICACO

class VapoJudge(Answer):
    """The free-form task's judge (VAPO / PromptAgent)."""
    reasoning: Text(400) = ""
    score: Score()


class Rewrite(Answer):
    """An MCTS rewrite decoded under a schema (the meta-prompt asks for <START>...<END>)."""
    new_prompt: RequiredText(1200, min_length=20)


class Instruction(Answer):
    """A PICACO refinement decoded under a schema (the meta-prompt asks for <INS>...</INS>)."""
    instruction: RequiredText(1200, min_length=20)


# ---------------------------------------------------------------------------- held-out judges

class Rubric(Answer):
    rationale: Text(300) = ""
    score: Score()


class Relevance(Answer):
    reason: Text(200) = ""
    score: Score()


def _winner(value: Any) -> str:
    word = _to_text(value).strip().strip(".").lower()
    canonical = {"a": "A", "b": "B", "tie": "tie"}.get(word)
    if canonical is None:
        raise ValueError(f"names no winner ({word[:20]!r})")
    return canonical


class Pairwise(Answer):
    reasoning: Text(300) = ""
    winner: Annotated[str, BeforeValidator(_winner),
                      WithJsonSchema({"type": "string", "enum": ["A", "B", "tie"]})]


# ---------------------------------------------------------------------------- schema, check

def json_schema(model: type[BaseModel]) -> dict:
    """The model's JSON schema, self-contained: references inlined, titles and defaults
    dropped (a grammar builder and every provider read it as is)."""
    raw = model.model_json_schema(mode="serialization", by_alias=True)
    defs = raw.pop("$defs", {})

    def clean(node: Any) -> Any:
        if isinstance(node, list):
            return [clean(item) for item in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            target = defs[node["$ref"].rsplit("/", 1)[-1]]
            return clean({**target, **{k: v for k, v in node.items() if k != "$ref"}})
        out = {}
        for key, value in node.items():
            if key in ("title", "default", "description") or (
                    key == "additionalProperties" and value is True):  # the default anyway
                continue
            if key == "properties":
                out[key] = {name: clean(sub) for name, sub in value.items()}
            elif key in ("items", "additionalProperties", "anyOf", "allOf", "oneOf"):
                out[key] = clean(value)
            else:
                out[key] = value
        return out

    return clean(raw)


_NAME_RE = re.compile(r"[^A-Za-z0-9_-]+")


def response_format(model: type[BaseModel] | dict, name: str, kind: str = "json_schema") -> dict:
    """An OpenAI-style response_format for `model` (a pydantic model or a JSON schema)."""
    if kind == "json_object":
        return {"type": "json_object"}
    schema = model if isinstance(model, dict) else json_schema(model)
    return {"type": "json_schema",
            "json_schema": {"name": _NAME_RE.sub("_", name).strip("_")[:64] or "answer",
                            "schema": schema}}


def reason_of(error: ValidationError) -> str:
    """A short reason a person can read, from a pydantic ValidationError."""
    parts = []
    for item in error.errors()[:3]:
        loc = [str(p) for p in item.get("loc", ()) if not isinstance(p, int)]
        msg = item.get("msg", "invalid")
        if item.get("type") == "missing":
            msg = "missing"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if loc and loc[-1] == "score" and len(loc) > 1:
            parts.append(f"score for {loc[-2]} {msg}")
        elif loc:
            parts.append(f"{'.'.join(loc)}: {msg}")
        else:
            parts.append(msg)
    more = len(error.errors()) - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def validate(model: type[BaseModel], data: Any) -> BaseModel:
    """Check `data` against `model`; a failure is a ParseError with a short reason."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ParseError(reason_of(exc)) from None
    except (RecursionError, MemoryError, OverflowError) as exc:  # pathological input
        raise ParseError(f"answer could not be checked ({type(exc).__name__})") from None
