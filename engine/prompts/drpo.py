"""DRPO meta-prompts (paper App. E), in our own words.

The structure, fields and constraints follow the paper: the reward-selection prompt asks
for a query analysis (topic, intent, ambiguities, format, challenges) and 2-5 aspects; the
scoring prompt rates each selected aspect 1-5 with a rationale; the transition prompts see
the current state, the query, the output, its evaluation and (for system prompts) the
last former prompts on the path, and answer with analysis / thought / the new state.

The ICL phase has its own judge and rewrite, as the authors' ICL code (offline_icl_opti.py,
icl_opti_prompts.py) has them: a strict critic picks 3-6 aspects and scores harshly, always
saying why a point is lost and how to win it back; the rewrite answers every point of the
critique under fixed rules (overview then at most six points, firm and reasoned refusals,
no invented facts). The system-prompt search keeps the impartial judge. All wording here is
ours.
"""
from __future__ import annotations

import re

from .. import schemas as S


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


SELECTION_RANGE = (2, 5)      # aspects per query, system-prompt search (paper)
ICL_SELECTION_RANGE = (3, 6)  # aspects per query, ICL phase (the authors' ICL critic)

STRICT_CRITIC = ("You are a strict critic of an AI assistant's answers. Your job is to find "
                 "every weakness in an answer, even a small one, so that it can be made "
                 "excellent.")


def reward_selection(query: str) -> str:
    """Aspect selection for the system-prompt search: an impartial reviewer, 2-5 aspects."""
    return _selection(query, "You are an impartial reviewer.", SELECTION_RANGE)


def icl_reward_selection(query: str) -> str:
    """Aspect selection for the ICL phase: the strict critic, 3-6 aspects."""
    return _selection(query, STRICT_CRITIC, ICL_SELECTION_RANGE)


def _selection(query: str, role: str, bounds: tuple[int, int]) -> str:
    low, high = bounds
    catalogue = "\n".join(f"- {name}: {text}" for name, text in ASPECTS.items())
    return f"""{role} Before any answer is written, decide which qualities matter most for a good answer to the user query below.

Pick between {low} and {high} aspects from this list. If something essential is missing from the list, you may add a new aspect, but then you must define it under "new_aspects".

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
    "selected_aspects": [<{low} to {high} different aspect names from the list>]
  }},
  "new_aspects": {{<only for names not in the list: "Name": "definition">}}
}}"""


def scoring(query: str, output: str, aspects: list[str], reasoning: str,
            definitions: dict[str, str] | None = None) -> str:
    """The system-prompt search's judge: impartial, one 1-5 score per selected aspect."""
    return _scoring(query, output, aspects, reasoning, definitions, strict=False)


def icl_scoring(query: str, output: str, aspects: list[str], reasoning: str,
                definitions: dict[str, str] | None = None) -> str:
    """The ICL phase's judge: the strict critic (the authors' ICL evaluation), same scale."""
    return _scoring(query, output, aspects, reasoning, definitions, strict=True)


STRICT_RULES = """How to judge:
- Be demanding. Take points off for small faults as well as big ones, so that only a truly excellent answer gets a 5.
- Whenever you take a point off, say exactly what is wrong and what change would earn the point back.
- Judge the structure hard: an answer that is not well organised is of little use to the reader.
- Read why each aspect was chosen (below) and judge the answer in that light; where an aspect's general description does not fit this query, follow the reason it was chosen.
- On conciseness, a longer answer is fine when the extra length carries useful, interesting content."""


def _scoring(query: str, output: str, aspects: list[str], reasoning: str,
             definitions: dict[str, str] | None, strict: bool) -> str:
    definitions = {**ASPECTS, **(definitions or {})}
    aspect_list = "\n".join(f"- {a}: {definitions.get(a, '(as the name says)')}" for a in aspects)
    template = "{\n" + ",\n".join(
        f'  "{a}": {{"rationale": <your reasons for the {a} score>, "score": <1 to 5>}}'
        for a in aspects) + "\n}"
    if strict:
        opening = (f"{STRICT_CRITIC} Score the answer below to the user query on each of the "
                   f"listed aspects separately.\n\n{STRICT_RULES}")
    else:
        opening = ("You are an impartial judge. Rate how good the answer below is for the user "
                   "query, on each of the listed aspects separately.")
    return f"""{opening}

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
                             former: list[str], first: int = 1) -> str:
    """`former`: the last prompts on the path, oldest first, ending with the current one;
    `first`: the number of the oldest shown (the versions before it are left out)."""
    history = "\n\n".join(f"[{first + i}]\n{p}" for i, p in enumerate(former)) or "(none)"
    if first > 1:
        history = f"(versions 1 to {first - 1} are not shown)\n\n{history}"
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
    """The ICL rewrite, with the rules of the authors' ICL optimizer (in our words)."""
    return f"""You write example answers that will be shown to language models as models of a well-aligned reply. A strict critic has judged the current example answer below; write a new answer that would earn a perfect score from that critic.

User query:
<<<
{query}
>>>

Current example answer:
<<<
{response}
>>>

The strict critic's evaluation (1 = worst, 5 = best):
{evaluation}

Rules for the new answer:
1. Act on every point the critic raised, however small. Keep what the critic found right: change only what the evaluation asks you to change.
2. Write the answer itself, as the assistant speaking to the user, not advice about how an answer should look.
3. Say nothing about who built or trained you.
4. Open with a short overview that sets up what follows, then give the substance as numbered or bulleted points: no more than 6 of them.
5. Do not put headings such as "Overview", "Limitations" or "Conclusion" on the parts of the answer; let those parts flow naturally into the text.
6. If the request is harmful or has a malicious aim, refuse any direct help plainly: say that as an AI assistant you cannot help with it, explain why what is asked is illegal, dangerous or hurtful, acknowledge the person's feelings where that fits, and point to a safe, lawful alternative.
7. For depth, explain the reasoning behind what you say and add closely related details, tips or resources the user did not ask for but would value; an expert should still learn something, and a beginner should be able to follow the structure.
8. For engagement, vary how you express things; avoid a flat, mechanical tone.
9. If the answer needs to be shorter, trim the overview, not the explanations in the points.
10. State only what you are sure is true. Correct general advice is better than specific claims that may be wrong.
11. Mention real limits of an AI assistant (no live data, no browsing, no physical actions) where they matter.

Reply with one JSON object and nothing else. In "thought", say what you keep and what you change. Fill in this shape, replacing each <...> with your own text:
{{
  "analysis": <the critic's points, one by one, and what in the current answer caused each>,
  "thought": <what you keep from the current answer and what you change, point by point>,
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


# ---------------------------------------------------------------- the answers' models
# Each structured answer is one pydantic model (engine.schemas): its JSON schema goes as
# response_format to models that decode under one (and becomes the embedded model's grammar,
# string lengths capped so a small model cannot ramble past max_tokens); answers are checked
# with the same model.

def selection_model(bounds: tuple[int, int] = SELECTION_RANGE):
    """Reward selection: 2-5 (ICL: 3-6) distinct aspects from the catalogue."""
    return S.selection(tuple(ASPECTS), *bounds)


def scores_model(aspects: list[str]):
    return S.scores(tuple(aspects))


# The embedded model's system-prompt rewrites: they start by addressing the assistant and run
# to at least SMALL_PROMPT_CHARS characters (its grammar enforces both), and must hold
# USABLE_WORDS words once repeated sentences are dropped.
SMALL_PROMPT_START = "You are "
SMALL_PROMPT_CHARS = 120
USABLE_WORDS = 20


# Until the prompt has SMALL_MAX_BULLETS bullets (rule 7's most), the embedded model does not
# rewrite it whole: it writes one new bullet (rule 7 allows two) of SMALL_BULLET_CHARS
# characters, which starts with SMALL_BULLET_START (its grammar fixes those words) and is
# added to the current prompt. It is asked with the short meta-prompt below, which leaves the
# current prompt out: a 135M model shown it copied its bullets. Measured on one quickstart:
# whole new prompts, 2 usable in 19 calls (they talk about prompts); at two of its states, 8
# samples each, bullets written after the current prompt 1-4 usable (copies), bullets alone 4-6.
SMALL_MAX_BULLETS = 8
SMALL_BULLET_CHARS = (40, 300)
SMALL_BULLET_START = "When you answer, "  # so that the bullet instructs the assistant
SMALL_RETRIES = 4  # new samples for a refused bullet, at least (about half are refused)
BULLET_LINE = re.compile(r"^\s*[-*\u2022]\s", re.M)


def small_prompt_base(current: str) -> str:
    """What the embedded model's new bullet is added to: the current prompt and a bullet's
    mark; "" once the prompt has SMALL_MAX_BULLETS bullets (then it writes a whole new one)."""
    bullets = len(BULLET_LINE.findall(current))
    if bullets >= SMALL_MAX_BULLETS or not current.strip():
        return ""
    return current.rstrip() + ("\n- " if bullets else "\n\n- ")


SMALL_ANSWER_CHARS = 600  # of the judged answer, shown to the embedded optimizer


def small_system_prompt_transition(query: str, output: str, evaluation: str) -> str:
    """The embedded model's rewrite: DRPO's query, answer and evaluation, and one change asked
    for, a new bullet aimed at the weakest aspect (rules 3 and 7). The answer is shown up to
    SMALL_ANSWER_CHARS characters: the evaluation already says what is wrong with it, and a
    prompt token costs the embedded model about half what an answer token does."""
    if len(output) > SMALL_ANSWER_CHARS:
        output = output[:SMALL_ANSWER_CHARS].rsplit(" ", 1)[0] + " [...]"
    return f"""You help an AI assistant write better answers, one instruction at a time.

A user asked: {query}

The assistant answered:
<<<
{output}
>>>

A judge scored that answer on several aspects (1 = worst, 5 = best):
{evaluation}

Write one new instruction for the assistant: a general rule that would make its answers better on the aspect with the lowest score, for any user question. Do not mention this question or its topic.

Reply with one JSON object: {{"analysis": <which aspect scored lowest, and why>, "new_bullet": <the instruction>}}"""


def small_bullet_model():
    """The embedded model's new bullet: a short analysis, and the bullet with its fixed start."""
    least, most = SMALL_BULLET_CHARS
    return S.bullet(SMALL_BULLET_START, least, most)


def transition_model(key: str, limit: int = 1500, prefix: str = "", min_length: int = 0):
    return S.transition(key, limit, prefix, min_length)


def selection_schema(bounds: tuple[int, int] = SELECTION_RANGE) -> dict:
    return S.json_schema(selection_model(bounds))


def scores_schema(aspects: list[str]) -> dict:
    return S.json_schema(scores_model(aspects))


def transition_schema(key: str, limit: int = 1500) -> dict:
    return S.json_schema(transition_model(key, limit))
