"""DRPO meta-prompts (paper App. E), in our own words.

The structure, fields and constraints follow the paper: the reward-selection prompt asks
for a query analysis (topic, intent, ambiguities, format, challenges) and 2-5 aspects; the
scoring prompt rates each selected aspect 1-5 with a rationale; the transition prompts see
the current state, the query, the output, its evaluation and (for system prompts) the
former prompts on the path, and answer with analysis / thought / the new state.
"""
from __future__ import annotations


# Aspect names are fixed by the paper; the definitions are ours.
ASPECTS: dict[str, str] = {
    "Helpfulness": "Answers what was actually asked and gives the user something they can use.",
    "Clarity": "Is organised and easy to follow; ideas come in a sensible order, in plain words.",
    "Factuality": "Says only what is true, does not invent facts or sources, and flags uncertainty.",
    "Depth": "Goes as far into the subject as the question deserves, with reasons and detail.",
    "Engagement": "Reads like a thoughtful person talking, warm and natural rather than mechanical.",
    "Conciseness": "Uses no more words than needed; no padding, repetition or needless detours.",
    "Safety": "Gives no help with harm, treats risky topics responsibly and stays ethical.",
    "Compliance": "Follows the user's instructions and requested format unless that would be unsafe.",
    "Limitations": "Admits what an AI assistant cannot do or know here (no live data, no browsing, "
                   "no physical actions, knowledge cut-off) when that matters.",
    "Critical-Thinking": "Examines the question's assumptions instead of taking them for granted.",
    "Creativity": "Brings fresh, original ideas or angles when the task invites them.",
    "Interactivity": "Invites the user in where useful: asks a clarifying question or suggests next steps.",
    "Empathy": "Notices how the user may feel and responds with care and respect.",
    "Sensitivity": "Respects cultures and differences; avoids stereotypes and careless generalizations.",
}

# Template placeholders a weak model may echo back instead of an answer (rejected).
PLACEHOLDERS = {"<the full text of your new system prompt>", "the full text of your new system prompt",
                "<the full text of your improved answer>", "the full text of your improved answer",
                "...", ""}

# Static rewarding (paper App. A.2): always the same aspects, no selection call.
STATIC_ASPECTS = ["Helpfulness", "Clarity", "Factuality", "Depth", "Engagement", "Safety"]


def reward_selection(query: str) -> str:
    catalogue = "\n".join(f"- {name}: {text}" for name, text in ASPECTS.items())
    return f"""You are an impartial reviewer. Before any answer is written, decide which qualities matter most for a good answer to the user query below.

Pick between 2 and 5 aspects from this list. If something essential is missing from the list, you may add a new aspect, but then you must define it under "new_aspects".

Aspects:
{catalogue}

User query:
<<<
{query}
>>>

First think about the query:
1. its main topic;
2. what the user is trying to achieve;
3. anything ambiguous, uncertain, missing or wrong in it;
4. what kind of answer or format would serve the user best;
5. what makes it hard or limited to answer well.
Then choose the aspects and explain why.

Reply with one JSON object and nothing else. Fill in this shape, replacing each <...> with your own text:
{{
  "query_analysis": {{
    "main_topic": <the main topic>,
    "user_intent": <what the user wants>,
    "ambiguities": <what is unclear, missing or wrong>,
    "response_format": <the best kind of answer>,
    "challenges": <what makes it hard>
  }},
  "aspects_selection": {{
    "reasoning": <why these aspects fit your analysis>,
    "selected_aspects": [<2 to 5 different aspect names from the list>]
  }},
  "new_aspects": {{<only for names not in the list: "Name": "definition">}}
}}"""


def scoring(query: str, output: str, aspects: list[str], reasoning: str,
            definitions: dict[str, str] | None = None) -> str:
    definitions = {**ASPECTS, **(definitions or {})}
    aspect_list = "\n".join(f"- {a}: {definitions.get(a, '(as the name says)')}" for a in aspects)
    template = "{\n" + ",\n".join(
        f'  "{a}": {{"rationale": <your reasons for the {a} score>, "score": <1 to 5>}}'
        for a in aspects) + "\n}"
    return f"""You are an impartial judge. Rate how good the answer below is for the user query, on each of the listed aspects separately.

User query:
<<<
{query}
>>>

Answer to rate:
<<<
{output}
>>>

Aspects to rate:
{aspect_list}

Why these aspects were chosen for this query:
{reasoning or "(no reason given)"}

Scale for every aspect (how far you agree that the answer does well on it):
1 = strongly disagree, 2 = disagree, 3 = neutral, 4 = agree, 5 = strongly agree.

Reply with one JSON object and nothing else, with one entry per aspect, a short rationale and a whole-number score. Fill in this shape, replacing each <...>:
{template}"""


def format_evaluation(scores: dict) -> str:
    """Scores with rationales as the feedback text the optimizer reads (and the person edits)."""
    lines = []
    for aspect, item in scores.items():
        lines.append(f"{aspect}: {item['score']:g}/5 - {item['rationale']}")
    return "\n".join(lines)


def system_prompt_transition(current: str, query: str, output: str, evaluation: str,
                             former: list[str]) -> str:
    history = "\n\n".join(f"[{i + 1}]\n{p}" for i, p in enumerate(former)) or "(none)"
    return f"""You are improving the system prompt of an AI assistant so that its answers to all kinds of user queries become better on several quality aspects.

Current system prompt:
<<<
{current}
>>>

With this system prompt, the assistant was asked:
<<<
{query}
>>>

It answered:
<<<
{output}
>>>

A judge evaluated that answer (1 = worst, 5 = best):
{evaluation}

Earlier versions of the system prompt, oldest first, ending with the current one (each one grew out of the one before):
{history}

Write a new system prompt. Rules:
1. It must be better than the current one: use the evaluation to fix weak aspects while keeping strong ones, and aim for balanced quality across aspects.
2. You may edit the current prompt, add new instructions, or start again.
3. It must be general, useful for any user query. Never mention this particular query or its topic.
4. Shape: start with general instructions (who the assistant is, what it does well, being helpful and ethical); these may be long and cover many aspects. Then a list of bullet points with specific, compact instructions.
5. The bullets must state the assistant's limits: no internet or real-time data, no physical actions, decline harmful or malicious requests, and prefer saying it cannot help over giving an off-topic answer.
6. Include bullets with tips that make answers engaging and human rather than robotic, and tips drawn from the evaluation above (what to do more, what to avoid).
7. Add at most 2 new bullets compared with the current prompt. Keep at most 8 bullets in total; merge or reword bullets instead of dropping ones that matter in general.

Reply with one JSON object and nothing else. Fill in this shape, replacing each <...> with your own text:
{{
  "analysis": <what the evaluation and the current prompt show needs to improve>,
  "thought": <how you will change the prompt>,
  "new_system_prompt": <the full text of your new system prompt>
}}"""


def icl_response_transition(query: str, response: str, evaluation: str) -> str:
    return f"""You are improving an example answer that will be shown to language models as a model of a well-aligned reply.

User query:
<<<
{query}
>>>

Current example answer:
<<<
{response}
>>>

A judge evaluated this answer (1 = worst, 5 = best):
{evaluation}

Write an improved answer to the same query. Fix what the evaluation criticises and keep what it praises. If the query asks for something harmful, the answer should decline kindly, say briefly why, and offer a safe, useful alternative. Otherwise answer helpfully, accurately and with appropriate depth, in a natural tone, and mention real limitations of an AI assistant where they matter.

Reply with one JSON object and nothing else. Fill in this shape, replacing each <...> with your own text:
{{
  "analysis": <what the evaluation shows needs to improve>,
  "thought": <how you will improve the answer>,
  "new_response": <the full text of your improved answer>
}}"""


# ---------------------------------------------------------------- how the base model is asked

def chat_messages(system_prompt: str, examples: list[tuple[str, str]], query: str) -> list[dict]:
    """System prompt + ICL pairs as earlier turns + the query (chat models)."""
    messages = [{"role": "system", "content": system_prompt}]
    for q, a in examples:
        messages.append({"role": "user", "content": q})
        messages.append({"role": "assistant", "content": a})
    messages.append({"role": "user", "content": query})
    return messages


PLAIN_STOP = ["# Query:"]


def plain_messages(system_prompt: str, examples: list[tuple[str, str]], query: str) -> list[dict]:
    """One text in the `# Query:` / `# Answer:` layout for base (non-chat) models."""
    parts = [system_prompt.strip(), ""]
    for q, a in examples:
        parts += ["# Query:", f"```{q}```", "", "# Answer:", f"```{a}```", ""]
    parts += ["# Query:", f"```{query}```", "", "# Answer:", "```"]
    return [{"role": "user", "content": "\n".join(parts)}]


# ---------------------------------------------------------------- JSON schemas of the answers
# Given to providers that decode under a schema (the embedded model builds a grammar from
# them). String lengths are capped so a small model cannot ramble past max_tokens.

def _text(limit: int) -> dict:
    return {"type": "string", "maxLength": limit}


def selection_schema() -> dict:
    analysis_keys = ("main_topic", "user_intent", "ambiguities", "response_format", "challenges")
    return {
        "type": "object",
        "properties": {
            "query_analysis": {"type": "object",
                               "properties": {k: _text(120) for k in analysis_keys},
                               "required": list(analysis_keys)},
            "aspects_selection": {
                "type": "object",
                "properties": {
                    "reasoning": _text(300),
                    "selected_aspects": {"type": "array", "minItems": 2, "maxItems": 5,
                                         "items": {"type": "string", "enum": list(ASPECTS)}},
                },
                "required": ["reasoning", "selected_aspects"],
            },
        },
        "required": ["query_analysis", "aspects_selection"],
    }


def scores_schema(aspects: list[str]) -> dict:
    item = {"type": "object",
            "properties": {"rationale": _text(200), "score": {"type": "integer", "enum": [1, 2, 3, 4, 5]}},
            "required": ["rationale", "score"]}
    return {"type": "object", "properties": {a: item for a in aspects}, "required": list(aspects)}


def transition_schema(key: str, limit: int = 1500) -> dict:
    return {"type": "object",
            "properties": {"analysis": _text(300), "thought": _text(300), key: _text(limit)},
            "required": ["analysis", "thought", key]}
