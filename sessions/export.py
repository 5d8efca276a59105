"""Export a prompt from a session: the accepted node by default, else the final one.

Formats
    txt        the prompt's text
    md         the prompt, its node's scores and the session's held-out evaluation
    json       the node, its detail, the ICL examples it goes with, the evaluation
    messages   OpenAI chat messages (JSON): the system prompt, then the ICL examples as
               user / assistant turns; append the user's message
    promptfoo  a promptfooconfig.yaml: the prompt as chat messages with a {{ query }} slot,
               the session's base model as provider and its judge as the grader (keys as
               environment variable names, never values), the held-out items as tests with
               llm-rubric assertions from the session's judge (aspects, values or rubric)
    dspy       the JSON state `dspy.Predict("question -> answer").load(path)` reads: the prompt
               as the signature's instructions, the ICL examples as demos
    jinja      a Jinja template of the whole prompt as one text, with a {{ query }} slot: the
               system prompt, then the ICL turns in the `# Query:` / `# Answer:` layout
               (DRPO's layout for base models; PICACO's template keeps its own framing)

Every text a session holds came from a model, a data file or a person, and is untrusted.
JSON and YAML are written by serializers. Template formats (jinja, and the prompt and
rubrics of promptfoo, which promptfoo renders with Nunjucks) write every `{` that would open
a tag (`{{`, `{%`, `{#`) as the expression `{{ '{' }}` (and the `#` of a `#}` as `{{ '#' }}`),
so a text renders as itself and never runs as template code; promptfoo also expands `{{ env.NAME }}` in any string of its config
when it loads it, so such a span in a test's query gets a zero-width space between its
braces, and an item whose query promptfoo would read as a file or package reference
(`file://`, `package:`) is left out.
"""
from __future__ import annotations

import json
import re
from urllib.parse import urlsplit, urlunsplit

from .report import clean as _clean

FORMATS = ("txt", "md", "json", "messages", "promptfoo", "dspy", "jinja")
JSON_FORMATS = ("json", "messages", "dspy")  # strings exact, with JSON escapes
# what a file of each format is called by default (a DSPy state must end in .json)
SUFFIXES = {"txt": ".txt", "md": ".md", "json": ".json", "messages": ".messages.json",
            "promptfoo": ".promptfooconfig.yaml", "dspy": ".dspy.json", "jinja": ".jinja"}


def choose_node(session: dict, node_id: str | None = None) -> dict:
    nodes = session["tree"]["nodes"]
    if node_id is not None:
        if node_id not in nodes:
            raise KeyError(f"no node {node_id!r} in session {session['id']}")
        return nodes[node_id]
    accepted = next((n for n in nodes.values() if n.get("accepted")), None)
    if accepted is not None:
        return accepted
    state = session.get("method_state", {})
    final = state.get("final")
    if final is None and state.get("icl_final"):
        final = state["icl_final"][str(max(map(int, state["icl_final"])))]
    if final is not None:
        return nodes[final]
    scored = [n for n in nodes.values() if n["reward"] is not None and n["status"] != "failed"]
    if scored:
        return max(scored, key=lambda n: n["reward"])
    raise KeyError(f"session {session['id']} has no accepted, final or scored node yet")


def file_name(session: dict, node_id: str | None = None, fmt: str = "md") -> str:
    """The default file name of an export: `promptarbor-<session>-<node>` and the format's
    suffix, naming the node actually exported (the accepted or final one when `node_id` is
    None), never a placeholder."""
    node = choose_node(session, node_id)
    return f"promptarbor-{session['id']}-{node['id']}{SUFFIXES.get(fmt, '.' + fmt)}"


def optimized_examples(session: dict) -> list[dict]:
    """The ICL examples the prompt goes with (optimized ones where the ICL search ran)."""
    state = session.get("method_state", {})
    nodes = session["tree"]["nodes"]
    out = []
    for i, (query, response) in enumerate(state.get("data", {}).get("icl", [])):
        node_id = state.get("icl_final", {}).get(str(i))
        out.append({"query": query, "response": nodes[node_id]["text"] if node_id else response})
    return out


# ----------------------------------------------------------------------------- the prompt

_SLOT = "\x00query\x00"  # where the user's query goes; no exported text holds a NUL


def conversation(session: dict, node: dict) -> dict:
    """What the node's prompt sends with a user's query, in chat form:
    {"system": text, "examples": [[query, answer], …], "before": text, "after": text}
    (the user turn is before + query + after).

    DRPO: the system prompt with the optimized ICL examples (all of them: at run time the K
    nearest to each query are used; none when K is 0); an ICL example's node exports the
    initial system prompt with the examples. PICACO: the instruction as its template sends
    it (the framing and demonstrations in the system turn, the query framed as
    `# Query:` … `# Answer:`). VAPO: the system prompt alone."""
    from promptarbor.engine.config import family

    state = session.get("method_state") or {}
    cfg = session.get("config") or {}
    search = cfg.get("search") or {}
    kind = family(session.get("method", ""))
    text = node.get("text") or ""
    if kind == "drpo":
        examples = [[e["query"], e["response"]] for e in optimized_examples(session)]
        if node["meta"].get("phase") == "icl":
            return {"system": search.get("initial_prompt") or "", "examples": examples,
                    "before": "", "after": ""}
        return {"system": text, "examples": examples if search.get("icl_k") else [],
                "before": "", "after": ""}
    if kind == "picaco":
        from promptarbor.engine.evaluation import build_messages, session_prompt

        held = (state.get("heldout") or {}).get("spec") or {}
        prompt = next((p for p in held.get("prompts") or [] if p.get("node") == node["id"]), None)
        if prompt is None:
            try:
                prompt = session_prompt(session, node["id"], node["id"])
            except (ValueError, KeyError, TypeError):
                prompt = None
        if prompt is not None:
            messages = build_messages({**prompt, "text": text}, _SLOT, [])
            system = messages[0]["content"] if messages[0]["role"] == "system" else ""
            before, _, after = messages[-1]["content"].partition(_SLOT)
            return {"system": system, "examples": [], "before": before, "after": after}
    return {"system": text, "examples": [], "before": "", "after": ""}


def chat_messages(conv: dict, query: str | None = None) -> list[dict]:
    """The conversation as OpenAI chat messages; with `query`, its user turn last."""
    messages = [{"role": "system", "content": conv["system"]}] if conv["system"].strip() else []
    for q, a in conv["examples"]:
        messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    if query is not None:
        messages.append({"role": "user", "content": conv["before"] + query + conv["after"]})
    return messages


# ----------------------------------------------------------------------------- templates

# A `{` that would open a Jinja / Nunjucks tag: before `{`, `%` or `#`, before the query
# slot (which becomes `{{ query }}`) and at the very end (the next text could open one); and
# the `#` of a `#}`, which Nunjucks refuses outside a comment.
_TAG_CHARS = re.compile(r"\{(?=[{%#\x00]|\Z)|#(?=\})")


def template_literal(text: str) -> str:
    """`text` as Jinja / Nunjucks template source that renders exactly as `text`: each such
    character is written as an expression printing it, `{{ '{' }}` or `{{ '#' }}`."""
    return _TAG_CHARS.sub(lambda m: "{{ '%s' }}" % m.group(), text)


def _with_slot(text: str) -> str:
    """Template source of a text holding the query slot."""
    return template_literal(text).replace(_SLOT, "{{ query }}")


# promptfoo's own pattern for the `{{ … }}` spans whose `env` it expands when loading a config
_PF_SPAN = re.compile(r"\{\{(?:[^}]|\}(?!\}))*\}\}")


def _defuse_env(text: str) -> str:
    """A string promptfoo reads literally but expands `{{ env.X }}` in when it loads the
    config (a test's vars, a description): every such span gets a zero-width space between
    its opening braces, so no environment value (no key) is put into it."""
    while True:
        span = next((m for m in _PF_SPAN.finditer(text) if "env" in m.group()), None)
        if span is None:
            return text
        text = text[:span.start()] + "{\u200b{" + text[span.start() + 2:]


# ----------------------------------------------------------------------------- formats

def _messages(session: dict, node: dict) -> str:
    messages = chat_messages(conversation(session, node))
    return json.dumps(messages, indent=2, ensure_ascii=False) + "\n"


def _dspy(session: dict, node: dict) -> str:
    """The state `Predict.save` writes for the signature "question -> answer"."""
    conv = conversation(session, node)
    instructions = conv["system"].strip() or "Given the fields `question`, produce the fields `answer`."
    state = {
        "traces": [], "train": [],
        "demos": [{"question": q, "answer": a} for q, a in conv["examples"]],
        "signature": {"instructions": instructions,
                      "fields": [{"prefix": "Question:", "description": "${question}"},
                                 {"prefix": "Answer:", "description": "${answer}"}]},
        "lm": None,
        # DSPy compares the versions listed here with its own and warns on a difference:
        # none are listed, since nothing here depends on one
        "metadata": {"dependency_versions": {},
                     "promptarbor": {"session": session["id"], "node": node["id"],
                                     "method": session["method"]}},
    }
    return json.dumps(state, indent=2, ensure_ascii=False) + "\n"


def _jinja(session: dict, node: dict) -> str:
    """One text: the system prompt, the examples and the query in the `# Query:` /
    `# Answer:` layout; PICACO's template keeps its own framing."""
    conv = conversation(session, node)
    # control sequences go first, so that none can hide a `{{` from the escaping
    system = _clean(conv["system"]).strip()
    if conv["before"] or conv["after"]:  # the template frames the query itself
        turn = _clean(conv["before"]) + _SLOT + _clean(conv["after"])
        text = f"{system}\n\n{turn}" if system else turn
    else:
        from promptarbor.engine.prompts.drpo import plain_messages

        examples = [(_clean(q), _clean(a)) for q, a in conv["examples"]]
        text = plain_messages(system, examples, _SLOT)[0]["content"].lstrip("\n")
    return _with_slot(text) + "\n"


# litellm provider prefix -> promptfoo provider id prefix
_PROMPTFOO_PROVIDERS = {
    "openai": "openai:chat:", "anthropic": "anthropic:messages:", "azure": "azure:chat:",
    "gemini": "google:", "mistral": "mistral:", "groq": "groq:", "openrouter": "openrouter:",
    "deepseek": "deepseek:", "xai": "xai:", "together_ai": "togetherai:",
    "fireworks_ai": "fireworks:", "ollama": "ollama:chat:", "ollama_chat": "ollama:chat:",
}


def _no_credentials(url: str) -> str:
    """A URL without a user name or password in it."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    return urlunsplit((parts.scheme, host + (f":{parts.port}" if parts.port else ""),
                       parts.path, parts.query, parts.fragment))


def promptfoo_provider(model: dict, label: str) -> tuple[dict, str | None]:
    """A session model as a promptfoo provider, and a note for the header (or None).

    The key is named, never given: `apiKeyEnvar` (OpenAI-compatible providers) or an
    `{{env.NAME}}` reference; without `api_key_env` the provider reads its own variable.
    A role served by several deployments is written as its first one."""
    notes = []
    deployments = [d for d in model.get("deployments") or [] if isinstance(d, dict)]
    if deployments:
        model = {**model, "api_base": None, "api_key_env": None, **deployments[0]}
        if len(deployments) > 1:
            notes.append(f"{label}: the first of its {len(deployments)} deployments; add "
                         f"the others as providers to compare them")
    name = str(model.get("model") or "")
    prefix, _, rest = name.partition("/")
    if not rest:
        prefix, rest = "", name
    base = _no_credentials(str(model.get("api_base") or ""))
    key_env = model.get("api_key_env")
    if key_env and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(key_env)):
        notes.append(f"{label}: its api_key_env is not a variable name; set the key yourself")
        key_env = None
    config: dict = {}
    if base and prefix not in ("anthropic", "azure"):
        # any server given by its URL is spoken to as OpenAI-compatible (Ollama's is at /v1)
        if prefix in ("ollama", "ollama_chat") and not base.rstrip("/").endswith("/v1"):
            base = base.rstrip("/") + "/v1"
        pid = f"openai:chat:{rest}"
        config["apiBaseUrl"] = base
        if key_env:
            config["apiKeyEnvar"] = key_env
        else:
            config["apiKeyRequired"] = False
    elif prefix in _PROMPTFOO_PROVIDERS:
        pid = _PROMPTFOO_PROVIDERS[prefix] + rest
        if base:
            config["apiBaseUrl"] = base
        if key_env:
            config["apiKeyEnvar" if pid.startswith("openai:") else "apiKey"] = \
                key_env if pid.startswith("openai:") else "{{env.%s}}" % key_env
    else:
        pid = f"openai:chat:{rest}"
        if key_env:
            config["apiKeyEnvar"] = key_env
        if prefix == "local":
            notes.append(f"{label}: {name} is PromptArbor's embedded model, which has no "
                         f"HTTP endpoint; serve a model with an OpenAI-compatible server and "
                         f"set OPENAI_BASE_URL")
        else:
            notes.append(f"{label}: {name} is spoken to as an OpenAI-compatible model; set "
                         f"OPENAI_BASE_URL to its server")
    for key in ("temperature", "max_tokens"):
        if model.get(key) is not None:
            config[key] = model[key]
    return {"id": pid, "label": label, "config": config}, "; ".join(notes) or None


def _rubrics(session: dict, item: dict) -> list[dict]:
    """llm-rubric assertions for one held-out item, from the session's judge."""
    from promptarbor.engine.prompts import evaluation as P

    state = session.get("method_state") or {}
    e = (session.get("config") or {}).get("eval") or {}
    judge = e.get("judge") or "aspects"

    def rubric(metric: str, text: str) -> dict:
        return {"type": "llm-rubric", "value": template_literal(_clean(text)),
                "metric": template_literal(_clean(metric))}

    if judge == "accuracy" and item.get("options") and item.get("answer"):
        from promptarbor.engine.tasks import LETTERS

        letter = str(item["answer"])
        index = LETTERS.find(letter) if len(letter) == 1 else -1
        option = item["options"][index] if 0 <= index < len(item["options"]) else ""
        return [rubric("accuracy", f"The answer picks option ({letter})"
                       + (f": {option}" if option else "") + ", and no other option.")]
    if judge == "conformity" and state.get("values"):
        return [rubric(v["name"], f"The answer reflects the value {v['name']}: "
                                  f"{v.get('definition', '')}".rstrip(": "))
                for v in state["values"]]
    if judge == "rubric" and e.get("rubric"):
        return [rubric("rubric", f"The answer meets this criterion: {e['rubric']}")]
    aspects = P.SAFETY_ASPECTS if "safety" in (item.get("categories") or []) else P.REGULAR_ASPECTS
    return [rubric(a, f"{a}: {P.ASPECT_RUBRIC[a]} Pass only if it clearly does.") for a in aspects]


def _question(session: dict, item: dict) -> str:
    """The user message a held-out item is asked as (a multiple-choice item with its
    lettered options, as the accuracy judge asks it)."""
    e = (session.get("config") or {}).get("eval") or {}
    if e.get("judge") == "accuracy" and item.get("options"):
        from promptarbor.engine.tasks import format_question

        language = (session.get("method_state") or {}).get("language")
        return format_question({"question": item["query"], "options": item["options"]},
                               language if language in ("en", "zh") else None)
    return str(item.get("query") or "")


def _yaml(data: dict, header: list[str]) -> str:
    """YAML by PyYAML's safe dumper; multi-line strings as literal blocks where YAML allows.
    A document holding a character a terminal or editor might act on (C1 controls, line and
    paragraph separators, bidi controls) is written in ASCII with escapes instead."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper, value):
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    out = yaml.dump(data, Dumper=Dumper, sort_keys=False, allow_unicode=True, width=100)
    if re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]", out):
        out = yaml.dump(data, Dumper=Dumper, sort_keys=False, allow_unicode=False, width=100)
    # comments hold our words and the config's names, each on one line
    return "".join(f"# {' '.join(_clean(line).split())}\n" for line in header) + out


_PF_REFERENCE = re.compile(r"^(?:file://|package:)")


def _promptfoo(session: dict, node: dict) -> str:
    conv = conversation(session, node)
    sid, nid = session["id"], node["id"]
    messages = chat_messages(conv)
    for m in messages:
        m["content"] = template_literal(m["content"])
    messages.append({"role": "user", "content": _with_slot(conv["before"] + _SLOT + conv["after"])})
    models = (session.get("config") or {}).get("models") or {}
    notes = []
    provider, note = promptfoo_provider(models.get("base") or {}, "base")
    notes += [note] if note else []
    judge_model = models.get("judge") or models.get("evaluator") or models.get("base") or {}
    grader, note = promptfoo_provider(judge_model, "judge")
    notes += [note] if note else []

    held = (session.get("method_state") or {}).get("heldout") or {}
    tests, left_out = [], 0
    for i, item in enumerate(held.get("items") or [], 1):
        query = _question(session, item)
        if _PF_REFERENCE.match(query):
            left_out += 1
            continue
        tests.append({"description": f"held-out item {i}", "vars": {"query": _defuse_env(query)},
                      "assert": _rubrics(session, item)})
    name = _clean(session.get("name") or "")
    config = {
        "description": _defuse_env(f"PromptArbor session {sid}" + (f" ({name})" if name else "")
                                   + f", {session['method']}, node {nid}"),
        "prompts": [{"label": f"{sid}:{nid}", "raw": json.dumps(messages, indent=2,
                                                                 ensure_ascii=False)}],
        "providers": [provider],
        "defaultTest": {"options": {"provider": grader}},
        "tests": tests,
    }
    header = [f"promptfoo config written by PromptArbor: session {sid}, node {nid}.",
              "Run it with: npx promptfoo eval -c <this file>",
              "API keys are read from the environment variables named here (apiKeyEnvar,",
              "{{env.NAME}}) or the providers' own variables; no key is written in this file."]
    if not tests:
        header.append("This session has no held-out items: add tests with a `query` var.")
    if left_out:
        header.append(f"{left_out} held-out item(s) left out: promptfoo would read their query "
                      f"as a file or package reference.")
    header += notes
    return _yaml(config, header)


def export(session: dict, node_id: str | None = None, fmt: str = "txt") -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    node = choose_node(session, node_id)
    if fmt == "txt":
        return node["text"].rstrip() + "\n"
    if fmt == "messages":
        return _messages(session, node)
    if fmt == "dspy":
        return _dspy(session, node)
    if fmt == "jinja":
        return _jinja(session, node)
    if fmt == "promptfoo":
        return _promptfoo(session, node)
    info = {
        "session": session["id"], "name": session.get("name", ""), "method": session["method"],
        "node": node["id"], "kind": node["kind"], "phase": node["meta"].get("phase"),
        "reward": node["reward"], "accepted": node.get("accepted", False),
        "text": node["text"],
    }
    if fmt == "json":
        info["detail"] = node.get("detail", {})
        state = session.get("method_state", {})
        if node["meta"].get("phase") == "prompt" and "data" in state:
            info["icl_examples"] = optimized_examples(session)
        if state.get("evaluation"):
            info["evaluation"] = state["evaluation"]
        if "aligned" in state:  # PICACO: the pools, per prompt, and the demonstrations
            info["prompts"] = state["prompts"]
            info["pools"] = {"aligned": state["aligned"], "noise": state["noise"]}
            info["demonstrations"] = state["demos"]
        return json.dumps(info, indent=2, ensure_ascii=False) + "\n"
    return _md(session, node, info)


# ----------------------------------------------------------------------------- md

def _md(session: dict, node: dict, info: dict) -> str:
    from .report import _md_fence

    reward = "—" if node["reward"] is None else f"{node['reward']:.2f}"
    lines = [f"# {session.get('name') or session['id']} — {session['method']}", "",
             f"- node: `{node['id']}` ({node['kind']}{', accepted' if info['accepted'] else ''})",
             f"- reward: {reward}", "", "## Prompt", "", *_md_fence(node["text"].rstrip()), ""]
    scores = node.get("detail", {}).get("scores") or {}
    if scores:
        lines += ["## Evaluation", "", "| aspect | score | rationale |", "|---|---|---|"]
        for aspect, item in scores.items():
            rationale = " ".join(str(item["rationale"]).split()).replace("|", "\\|")
            lines.append(f"| {aspect} | {item['score']:g} | {rationale} |")
        lines.append("")
    lines += heldout_md(session, node["id"])
    return "\n".join(lines)


def heldout_status(session: dict) -> str | None:
    """None when the session holds a held-out verdict, else one line saying why not."""
    state = session.get("method_state") or {}
    if state.get("evaluation"):
        return None
    held = state.get("heldout")
    if not held:
        return "none: [eval] is off, or this method or session has no held-out evaluation"
    if held.get("spec"):
        return "in progress: run the session again to finish it"
    return "not run yet: it runs when the search ends"


def heldout_md(session: dict, node_id: str | None = None) -> list[str]:
    """The session's held-out evaluation (root vs final) as Markdown lines: the facts, each
    prompt's mean with its 95% CI, n, errors, tokens and per-metric means, and the paired
    difference with wins / ties / losses and the verdict."""
    from promptarbor.engine.evaluation import SCALES

    from .report import _View, _fmt, _int, _line, _md_cell, _md_inline, _md_table, _mean_ci, _verdict

    out = ["## Held-out evaluation", ""]
    status = heldout_status(session)
    if status is not None:
        return out + [f"None yet ({status}).", ""]
    ev = session["method_state"]["evaluation"]
    scale = SCALES.get(ev.get("judge"), {})
    v = _View({**ev, "scale": scale, "evaluation": session["id"]})
    prec = v.prec
    unit = v.unit if "(" in v.unit or not scale else f"{v.unit}, {v.lo:g} to {v.hi:g}"
    facts = [f"judge: {_md_inline(v.judge)} ({_md_inline(unit)})",
             f"data: {_md_inline(ev.get('source')) or '—'}",
             f"items: {_int(ev.get('n'))}", f"samples per item: {_int(ev.get('samples'))}"]
    out += ["- " + " · ".join(facts), ""]
    header = ["prompt", "node", "mean [95% CI]", "n", "errors", "tokens"]
    header += [_md_inline(m) for m in v.columns]
    rows = []
    for label, p in zip(v.labels, v.prompts):
        shown = _md_inline(label, 40) + (" (this export)" if p.get("node") == node_id else "")
        row = [shown, _md_cell(p.get("node") or "—"), _mean_ci(p.get("mean"), p.get("ci"), prec),
               _int(p.get("n")), _int(p.get("errors") or 0), _int(p.get("tokens"))]
        for m in v.columns:
            entry = v.metric_entry(p, m)
            row.append(_fmt(entry.get("mean"), prec) if entry else "—")
        rows.append(row)
    out += _md_table(header, rows, ["---", "---"] + ["--:"] * (len(header) - 2)) + [""]
    for label, d in zip(v.series(), v.deltas):
        base = _line(d.get("baseline")) or v.baseline
        line = (f"- {_md_inline(label, 40)} − {_md_inline(base, 40)}: "
                f"**{_mean_ci(d.get('mean'), d.get('ci'), prec, True)}** over {_int(d.get('n'))} items")
        if any(k in d for k in ("wins", "ties", "losses")):
            line += f"; wins {_int(d.get('wins'))}, ties {_int(d.get('ties'))}, losses {_int(d.get('losses'))}"
        verdict = _verdict(d)
        out.append(line + (f" ({verdict})" if verdict else ""))
    out += [f"- full report: `promptarbor report {session['id']} --format html -o report.html`", ""]
    return out
