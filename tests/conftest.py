"""Shared fixtures: the repo on sys.path, a fake OpenAI-compatible server answering like
a base model, an optimizer and an evaluator would, and config files pointing at it."""
from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
for p in (str(ROOT), str(TESTS)):
    if p not in sys.path:
        sys.path.insert(0, p)

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from fake_llm import FakeLLMServer  # noqa: E402

SHARED = ROOT.parent / "shared"
FAKE_KEY = "sk-test-never-store-this-7f3a9c"


def _h(*parts) -> int:
    return int(hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:8], 16)


def _between(text: str, start: str, end: str = "\n>>>") -> str:
    i = text.find(start)
    if i < 0:
        return ""
    i += len(start)
    j = text.find(end, i)
    return text[i:j if j >= 0 else None]


def eval_judge(last: str) -> str | None:
    """Answers of the held-out evaluation's judges (engine/prompts/evaluation.py), or None.

    Scores depend on the answer's text, so a prompt whose answers change gets other scores;
    answers holding "Tip" or "Guard" or "kind" lines score higher (longer prompts help)."""
    if "Rate the answer on each aspect" in last:
        keys = re.findall(r'"([A-Za-z-]+)"', last.split("Its keys are exactly", 1)[1].split(";")[0])
        answer = _between(last, "Answer:\n<<<\n")
        bonus = min(2, answer.count("Tip") + answer.count("Guard") + answer.count("kind"))
        return json.dumps({k: {"rationale": f"{k} judged", "score": min(5, 1 + bonus + _h(answer, k) % 3)}
                           for k in keys})
    if "against one criterion set by the person" in last:
        answer = _between(last, "Answer:\n<<<\n")
        return json.dumps({"rationale": "meets it in part", "score": 1 + _h(answer) % 5})
    if "Some values matter more for one request" in last:
        return json.dumps({"reason": "related", "score": 2 + _h(last) % 4})
    if "Two AI assistants answered the same user message" in last:
        a, b = _between(last, "Answer A:\n<<<\n"), _between(last, "Answer B:\n<<<\n")
        if len(a) == len(b):
            return json.dumps({"reasoning": "equal", "winner": "tie"})
        return json.dumps({"reasoning": "longer is fuller", "winner": "A" if len(a) > len(b) else "B"})
    return None


def drpo_responder(request: dict, index: int) -> str:
    """Deterministic answers keyed on what the meta-prompt asks for."""
    messages = request.get("messages", [])
    last = messages[-1]["content"] if messages else ""
    judged = eval_judge(last)
    if judged is not None:
        return judged
    salt = f"{request.get('seed')}:{index}"
    if '"selected_aspects"' in last:
        query = _between(last, "User query:\n<<<\n")
        pool = ["Helpfulness", "Clarity", "Factuality", "Depth", "Engagement", "Safety",
                "Limitations", "Empathy"]
        asked = re.search(r"between (\d+) and (\d+) aspects", last)
        k = (int(asked.group(1)) if asked else 2) + _h(query) % 3  # 2-4 (ICL critic: 3-5)
        start = _h(query, "s") % len(pool)
        chosen = [pool[(start + i) % len(pool)] for i in range(k)]
        return json.dumps({"query_analysis": {"main_topic": query[:30], "user_intent": "learn",
                                              "ambiguities": "none", "response_format": "prose",
                                              "challenges": "none"},
                           "aspects_selection": {"reasoning": f"chosen for {query[:20]}",
                                                 "selected_aspects": chosen}})
    if '"new_system_prompt"' in last:
        current = _between(last, "Current system prompt:\n<<<\n")
        bullet = f"- Tip {_h(current, salt) % 1000}: be clear and honest."
        return "Here you go:\n```json\n" + json.dumps({
            "analysis": "clarity was weak", "thought": "add a bullet",
            "new_system_prompt": f"{current}\n{bullet}"}) + "\n```"
    if '"new_response"' in last:
        current = _between(last, "Current example answer:\n<<<\n")
        return json.dumps({"analysis": "a", "thought": "t",
                           "new_response": f"{current} (improved {_h(current, salt) % 100})"})
    if "Aspects to rate:" in last:
        block = last.split("Aspects to rate:\n", 1)[1].split("\n\n", 1)[0]
        aspects = re.findall(r"^- ([^:]+):", block, flags=re.M)
        answer = _between(last, "Answer to rate:\n<<<\n")
        return json.dumps({a: {"rationale": f"{a} looks fine", "score": 1 + _h(answer, a) % 5}
                           for a in aspects})
    # the base model answering a user query under some system prompt
    system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
    tips = " (Tip)" * min(2, system.count("Tip"))  # a richer prompt, a richer answer
    return f"Answer {_h(system, last) % 10000} to: {last[:60]}{tips}"


def vapo_responder(request: dict, index: int) -> str:
    """Base model, optimizer and judge for VAPO / PromptAgent tests.

    Task questions carry their gold letter as "[#B]". The base model answers correctly more
    often the more "Guard" lines its system prompt holds (always, for a question marked
    "[always]"), in varied formats ("Answer: B", "(B)", the option's text; for a question
    in Chinese: "答案：B", "答案是B。", "我选B", "（B）", "B选项更好"), so rewrites really
    change the accuracy. The optimizer reads English or Chinese meta-prompts.
    """
    messages = request.get("messages", [])
    last = messages[-1]["content"] if messages else ""
    judged = eval_judge(last)
    if judged is not None:
        return judged
    salt = f"{request.get('seed')}:{index}"
    if "put each new system prompt between <START> and <END>" in last \
            or "放在 <START> 和 <END> 之间" in last:
        current = _between(last, "The current system prompt is:\n<<<\n") \
            or _between(last, "当前的系统提示词是：\n<<<\n")
        kind = "guard" if "no mistake" in last or "没有出错" in last else "fix"
        return (f"Thinking about it.\n<START>{current}\n- Guard {_h(current, last, salt) % 1000} "
                f"({kind}): weigh fairness and harm.<END>")
    if "The current system prompt is:" in last or "当前的系统提示词是：" in last:  # feedback
        style = "valuecot" if "Prompt attack" in last or "提示攻击" in last else "basis"
        errors = last.count("[Example ") + last.count("[例子 ")
        return f"{style} feedback on {errors} errors: be careful with sensitive topics."
    if last.startswith("You judge answers"):
        answer = _between(last, "Answer to judge:\n<<<\n")
        guards = answer.count("G")
        return json.dumps({"reasoning": "fine", "score": min(5, 1 + guards + _h(answer) % 2)})
    system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
    guards = system.count("Guard")
    gold = re.search(r"\[#([A-Z])\]", last)
    if not gold:  # free-form
        return "G" * guards + f" answer {_h(system, last) % 100}"
    letter = gold.group(1)
    correct = "[always]" in last or _h(system, last) % 4 < 1 + guards
    choice = letter if correct else ("B" if letter == "A" else "A")
    if re.search(r"[\u4e00-\u9fff]", last.split("\n", 1)[0]):  # a question in Chinese
        return ["答案：{}", "答案是{}。", "我选{}", "（{}）", "{}选项更好"][_h(last) % 5].format(choice)
    style = _h(last) % 3
    if style == 0:
        return f"Let me think. Answer: {choice}"
    if style == 1:
        return f"({choice})"
    options = re.findall(r"^\(([A-Z])\) (.+)$", last, flags=re.M)
    text = dict(options).get(choice, choice)
    return f"I would say: {text}."


def picaco_responder(request: dict, index: int) -> str:
    """Target model, optimizer and judge for PICACO and its baselines.

    Answers vary with the sample (choice index and seed) and echo how many "kind" words the
    instruction holds; the judge scores every requested aspect higher the kinder the answer.
    Under PICACO's response template (the "# Query:" framing) an instruction that asks for no
    kindness still gets a kind answer (two "kind"s) now and then, so the aligned pool's best
    answers are kind and an instruction asking for kindness reproduces them (Eq. 4 then
    prefers it to the seed).
    """
    messages = request.get("messages", [])
    last = messages[-1]["content"] if messages else ""
    judged = eval_judge(last)
    if judged is not None:
        return judged
    salt = f"{request.get('seed')}:{index}"
    if "between <INS> and </INS>" in last:
        return f"Sure.\n<INS>Be kind, fair and careful. Be kind with detail {_h(last, salt) % 997}.</INS>"
    if last.startswith("You are a fair and careful judge"):
        block = last.split("## Aspects (1 = not at all, 5 = fully)\n", 1)[1].split("\n\n", 1)[0]
        keys = re.findall(r"^- ([^:]+):", block, flags=re.M)
        answer = last.split("## Answer:\n", 1)[1].split("\n\n## Aspects", 1)[0]
        kind = min(3, answer.count("kind"))
        return json.dumps({k: {"reason": f"{k} ok", "score": min(5, 1 + kind + _h(answer, k) % 2)}
                           for k in keys})
    if "explain what the following values mean" in last:
        return "These values are about caring for others and keeping traditions."
    system = " ".join(m["content"] for m in messages if m["role"] == "system")
    kind = system.count("kind") + system.count("Kind")
    if kind == 0 and '"# Query:"' in system:
        kind = 2 * (_h("kinder", system, last, salt) % 2)
    return f"Reply {_h(system, last, salt) % 10000}: " + "kind " * min(kind, 3) + last[-40:]


def write_tasks(path: Path, n: int = 24, free_form: bool = False, chinese: bool = False,
                always=(), neutral: bool = False) -> Path:
    """A task file whose questions carry their gold letter (see vapo_responder); `chinese`:
    questions and options in Chinese; items whose index is in `always` are answered right
    whatever the prompt; `neutral`: wording that names no value."""
    lines = []
    for i in range(n):
        letter = "AB"[_h("gold", i) % 2]
        mark = " [always]" if i in always else ""
        if free_form:
            question = f"自由问题 {i}：说谎是善意的吗？" if chinese else f"Free question {i}: is it kind to lie?"
            lines.append(json.dumps({"question": question + mark}, ensure_ascii=False))
        elif chinese:
            lines.append(json.dumps({"question": f"案例 {i}：这样做公平吗？[#{letter}]{mark}",
                                     "options": ["公平", "不公平"], "answer": letter},
                                    ensure_ascii=False))
        elif neutral:
            lines.append(json.dumps({"question": f"Item {i}: which letter? [#{letter}]{mark}",
                                     "options": ["First", "Second"], "answer": letter}))
        else:
            lines.append(json.dumps({"question": f"Case {i}: is this fair? [#{letter}]{mark}",
                                     "options": ["Fair choice", "Unfair choice"],
                                     "answer": letter}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def picaco_server():
    with FakeLLMServer(responder=picaco_responder) as server:
        yield server


@pytest.fixture
def vapo_server():
    with FakeLLMServer(responder=vapo_responder) as server:
        yield server


@pytest.fixture
def fake_server():
    with FakeLLMServer(responder=drpo_responder) as server:
        yield server


@pytest.fixture
def fake_key(monkeypatch):
    monkeypatch.setenv("PA_FAKE_KEY", FAKE_KEY)
    return FAKE_KEY


def write_config(path: Path, base_url: str, method: str = "drpo", search: dict | None = None,
                 data: dict | None = None, gateway: dict | None = None, name: str = "",
                 values: dict | None = None, eval: dict | None = None) -> Path:
    """A TOML config whose three roles are served by the fake server."""
    if method in ("drpo", "drpo-icl", "greedy", "monte-carlo", "static-reward"):
        search = {"beam_width": 2, "samples_per_state": 2, "depth": 2, "icl_k": 0,
                  "icl_depth": 1, **(search or {})}
        data = {"icl_optimized": True, **(data or {})}
    search, data = search or {}, data or {}
    gateway = {"retries": 3, "backoff": 0.01, "max_backoff": 0.05, "timeout": 5.0,
               **(gateway or {})}

    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        return str(v)

    lines = [f'method = "{method}"', f'name = "{name}"', ""]
    for role in ("base", "optimizer", "evaluator"):
        lines += [f"[models.{role}]", f'model = "openai/fake-{role}"', f'api_base = "{base_url}"',
                  'api_key_env = "PA_FAKE_KEY"', ""]
    sections = [("search", search), ("data", data), ("gateway", gateway)]
    if values is not None:
        sections.append(("values", values))
    # a small held-out evaluation keeps end-to-end tests quick (its own tests size it)
    sections.append(("eval", {"limit": 3} if eval is None else eval))
    for section, table in sections:
        lines.append(f"[{section}]")
        lines += [f"{k} = {value(v)}" for k, v in table.items() if v is not None]
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
