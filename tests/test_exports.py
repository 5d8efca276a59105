"""Exports other tools load (`export --format messages|promptfoo|dspy|jinja`), the held-out
evaluation in `md` and `sessions show`, the `sessions list` table and export file names.

Sessions of DRPO (with optimized ICL examples), VAPO and PICACO are run once against the
fake server; each export is loaded back: JSON shapes, the promptfoo YAML, the Jinja template
rendered with jinja2, and DSPy's own loader where dspy is installed. Prompts and held-out
items made hostile (template code, `{{ env.X }}`, file references, control characters) come
out as literal text: no template runs, no key is written.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import re
import shutil
import subprocess
import sys

import jinja2
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import FAKE_KEY, drpo_responder, picaco_responder, vapo_responder, \
    write_config, write_tasks
from fake_llm import ESCAPE_TEXT, FakeLLMServer
from promptarbor.sessions import export as E
from promptarbor.sessions.store import SessionStore
from promptarbor.tui.cli import EXPORT_FORMATS, main


TEMPLATE_CODE = ("{{ 7*7 }} {% if true %}IF{% endif %} {# note #} #} {%raw%} {% endraw %} "
                 "{{{ x }}} {{- y -}} {{ cycler.__init__.__globals__.os }} {{ env.PA_FAKE_KEY }} end{")


def run_cli(*args) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([str(a) for a in args])
    return code, out.getvalue()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A store with a finished DRPO (ICL examples optimized, K = 2), VAPO and PICACO session."""
    root = tmp_path_factory.mktemp("exports")
    store = root / "store"
    icl = root / "icl.jsonl"
    icl.write_text("".join(json.dumps({"query": f"example {i}?", "response": f"answer {i}"}) + "\n"
                           for i in range(3)), encoding="utf-8")
    tasks = write_tasks(root / "tasks.jsonl", 24)
    runs = [
        ("drpo1", drpo_responder, dict(search={"beam_width": 1, "samples_per_state": 2, "depth": 1,
                                               "icl_k": 2},
                                       data={"icl": str(icl), "icl_optimized": False})),
        ("vapo1", vapo_responder, dict(method="vapo",
                                       search={"iterations": 1, "expand_width": 2, "depth_limit": 1,
                                               "batch_size": 3},
                                       data={"tasks": str(tasks), "train": 10, "validation": 6,
                                             "test": 6})),
        ("picaco1", picaco_responder, dict(method="picaco",
                                           search={"iterations": 1, "prompts": 3, "aligned_pool": 2,
                                                   "noise_pool": 2, "new_instructions": 2,
                                                   "p_samples": 3, "buckets": 1},
                                           values={"composition": "harmlessness"},
                                           eval={"limit": 3, "samples": 1})),
    ]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PA_FAKE_KEY", FAKE_KEY)
        for sid, responder, kw in runs:
            with FakeLLMServer(responder=responder) as srv:
                cfg = write_config(root / f"{sid}.toml", srv.base_url, name=f"{sid} name", **kw)
                code, _ = run_cli("run", cfg, "--store", store, "--session", sid, "--json")
                assert code == 0, sid
    return store


def load(store, sid: str) -> dict:
    s = SessionStore(store)
    try:
        return s.load(sid, move_aside=False)
    finally:
        s.close()


def hostile(session: dict) -> dict:
    """The session with template code and control characters in its final prompt, its ICL
    examples and its first held-out query, and a file reference as its second query."""
    s = copy.deepcopy(session)
    node = E.choose_node(s)
    node["text"] = f"{node['text']}\n{TEMPLATE_CODE}\n{ESCAPE_TEXT}"
    for pair in (s["method_state"].get("data") or {}).get("icl", []):
        pair[0] = f"{pair[0]} {TEMPLATE_CODE}"
    items = s["method_state"]["heldout"]["items"]
    items[0]["query"] = f"Explain: {TEMPLATE_CODE}"
    items[1]["query"] = "file://notes/secret.txt"
    return s


# ----------------------------------------------------------------------------- formats

def test_the_cli_offers_every_format():
    assert EXPORT_FORMATS == E.FORMATS
    assert set(E.SUFFIXES) == set(E.FORMATS) and E.SUFFIXES["dspy"].endswith(".json")


def test_messages_are_the_system_prompt_then_the_icl_turns(store):
    drpo = load(store, "drpo1")
    node = E.choose_node(drpo)
    messages = json.loads(E.export(drpo, None, "messages"))
    assert messages[0] == {"role": "system", "content": node["text"]}
    examples = E.optimized_examples(drpo)
    assert len(examples) == 3 and len(messages) == 1 + 2 * len(examples)
    for i, ex in enumerate(examples):
        assert messages[1 + 2 * i] == {"role": "user", "content": ex["query"]}
        assert messages[2 + 2 * i] == {"role": "assistant", "content": ex["response"]}
    assert any("(improved" in m["content"] for m in messages[2::2])  # optimized, not the seeds

    vapo = load(store, "vapo1")
    assert json.loads(E.export(vapo, None, "messages")) == [
        {"role": "system", "content": E.choose_node(vapo)["text"]}]
    picaco = load(store, "picaco1")
    (system,) = json.loads(E.export(picaco, None, "messages"))
    # PICACO's template: framing, the instruction and its demonstrations in the system turn
    assert system["role"] == "system" and E.choose_node(picaco)["text"] in system["content"]
    assert "# Query:" in system["content"] and "# Answer:" in system["content"]


def test_dspy_state_has_the_shape_predict_save_writes(store):
    drpo = load(store, "drpo1")
    state = json.loads(E.export(drpo, None, "dspy"))
    assert list(state) == ["traces", "train", "demos", "signature", "lm", "metadata"]
    assert state["signature"] == {
        "instructions": E.choose_node(drpo)["text"],
        "fields": [{"prefix": "Question:", "description": "${question}"},
                   {"prefix": "Answer:", "description": "${answer}"}]}
    assert state["demos"] == [{"question": e["query"], "answer": e["response"]}
                              for e in E.optimized_examples(drpo)]
    assert state["lm"] is None and state["metadata"]["dependency_versions"] == {}


def test_dspy_loads_an_exported_program(store, tmp_path):
    dspy = pytest.importorskip("dspy")
    for sid in ("drpo1", "vapo1", "picaco1"):
        session = load(store, sid)
        path = tmp_path / f"{sid}.json"
        path.write_text(E.export(hostile(session), None, "dspy"), encoding="utf-8")
        saved = json.loads(path.read_text(encoding="utf-8"))
        program = dspy.Predict("question -> answer")
        program.load(str(path))
        assert program.signature.instructions == saved["signature"]["instructions"]
        assert TEMPLATE_CODE in program.signature.instructions
        assert [dict(d) for d in program.demos] == saved["demos"]


def test_jinja_template_renders_the_prompt_with_the_query(store):
    from promptarbor.engine.prompts.drpo import plain_messages

    drpo = load(store, "drpo1")
    template = E.export(drpo, None, "jinja")
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    rendered = env.from_string(template).render(query="How do I boil an egg?")
    pairs = [(e["query"], e["response"]) for e in E.optimized_examples(drpo)]
    assert rendered == plain_messages(E.choose_node(drpo)["text"], pairs,
                                      "How do I boil an egg?")[0]["content"]
    picaco = load(store, "picaco1")
    rendered = env.from_string(E.export(picaco, None, "jinja")).render(query="Q?")
    assert rendered.endswith("# Query:\nQ?\n\n# Answer:")


def test_a_prompt_cannot_inject_template_code_into_the_jinja_export(store):
    session = hostile(load(store, "drpo1"))
    template = E.export(session, None, "jinja")
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)  # any other name would raise
    rendered = env.from_string(template).render(query="{{ 6*6 }}")
    assert rendered.count(TEMPLATE_CODE) == 1 + 3  # the prompt and each example, as written
    assert "49" not in rendered and "{{ 6*6 }}" in rendered
    assert "\x1b" not in template and "\x9b" not in template  # control sequences removed first
    # every tag the template opens is one of the escapes or the query slot
    tags = re.findall(r"\{\{.*?\}\}|\{%.*?%\}|\{#", template)
    assert set(tags) <= {"{{ '{' }}", "{{ '#' }}", "{{ query }}"}


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("{}%#- x'\"\\\n")) | st.characters(), max_size=40))
def test_template_literal_renders_as_itself(text):
    source = E.template_literal(text)
    # (Jinja itself writes every line break as "\n")
    assert jinja2.Environment(keep_trailing_newline=True).from_string(source).render() == \
        re.sub(r"\r\n?", "\n", text)
    assert "#}" not in source.replace("{{ '#' }}", "")  # Nunjucks refuses a stray `#}`
    assert set(re.findall(r"\{\{.*?\}\}|\{%|\{#", source)) <= {"{{ '{' }}", "{{ '#' }}"}


# ----------------------------------------------------------------------------- promptfoo

def test_promptfoo_config_loads_with_the_expected_keys(store, monkeypatch):
    monkeypatch.setenv("PA_FAKE_KEY", FAKE_KEY)
    for sid in ("drpo1", "vapo1", "picaco1"):
        session = load(store, sid)
        text = E.export(session, None, "promptfoo")
        assert FAKE_KEY not in text
        config = yaml.safe_load(text)
        assert list(config) == ["description", "prompts", "providers", "defaultTest", "tests"]
        (prompt,) = config["prompts"]
        messages = json.loads(prompt["raw"])
        assert messages[-1]["role"] == "user" and "{{ query }}" in messages[-1]["content"]
        assert messages[0] == {"role": "system", "content": E.conversation(
            session, E.choose_node(session))["system"]}
        (provider,) = config["providers"]
        models = session["config"]["models"]
        assert provider["id"] == "openai:chat:" + models["base"]["model"].split("/", 1)[1]
        assert provider["config"]["apiBaseUrl"] == models["base"]["api_base"]
        assert provider["config"]["apiKeyEnvar"] == "PA_FAKE_KEY"
        grader = config["defaultTest"]["options"]["provider"]
        assert grader["id"] == "openai:chat:" + models["judge"]["model"].split("/", 1)[1]
        items = session["method_state"]["heldout"]["items"]
        assert len(config["tests"]) == len(items)
        for test in config["tests"]:
            assert set(test["vars"]) == {"query"} and test["assert"]
            assert {a["type"] for a in test["assert"]} == {"llm-rubric"}
        metrics = {a["metric"] for t in config["tests"] for a in t["assert"]}
        if sid == "drpo1":
            assert metrics <= {"Helpfulness", "Clarity", "Factuality", "Depth", "Engagement",
                               "Safety"} and "Helpfulness" in metrics
            assert len(messages) == 2 + 2 * 3  # system, three ICL turns, the query
        elif sid == "vapo1":  # the question is asked with its options; the rubric names the gold one
            assert metrics == {"accuracy"}
            assert all("(A)" in t["vars"]["query"] for t in config["tests"])
            assert all(re.search(r"option \([AB]\)", t["assert"][0]["value"]) for t in config["tests"])
        else:
            assert metrics == {v["name"] for v in session["method_state"]["values"]}
            assert "# Query:\n{{ query }}\n\n# Answer:" == messages[-1]["content"]


def test_promptfoo_export_is_safe_against_hostile_text(store, monkeypatch):
    monkeypatch.setenv("PA_FAKE_KEY", FAKE_KEY)
    session = hostile(load(store, "drpo1"))
    text = E.export(session, None, "promptfoo")
    assert FAKE_KEY not in text
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f]", text)  # escaped by the YAML writer
    config = yaml.safe_load(text)
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    messages = json.loads(config["prompts"][0]["raw"])
    node = E.choose_node(session)
    # promptfoo renders each message with Nunjucks: it gives back the prompt exactly
    assert env.from_string(messages[0]["content"]).render() == node["text"]
    assert env.from_string(messages[1]["content"]).render() == \
        session["method_state"]["data"]["icl"][0][0]
    # the file reference is left out (promptfoo would read the file) and said so
    queries = [t["vars"]["query"] for t in config["tests"]]
    assert len(queries) == len(session["method_state"]["heldout"]["items"]) - 1
    assert not any(q.startswith(("file://", "package:")) for q in queries)
    assert "left out" in text.split("\ndescription:")[0]
    # promptfoo expands {{ env.X }} in every string when it loads the file: none is left
    for q in queries:
        assert not [m for m in E._PF_SPAN.findall(q) if "env" in m]
    assert queries[0].replace("\u200b", "") == f"Explain: {TEMPLATE_CODE}"
    for test in config["tests"]:
        for a in test["assert"]:
            assert env.from_string(a["value"]).render()


def test_promptfoo_providers_name_keys_never_values(monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-secret-value")
    provider, note = E.promptfoo_provider({"model": "anthropic/claude-x", "api_key_env": "MY_KEY"},
                                          "base")
    assert provider == {"id": "anthropic:messages:claude-x", "label": "base",
                        "config": {"apiKey": "{{env.MY_KEY}}"}} and note is None
    provider, _ = E.promptfoo_provider({"model": "ollama/llama3.1",
                                        "api_base": "http://user:pw@127.0.0.1:11434",
                                        "temperature": 0.5}, "base")
    assert provider["id"] == "openai:chat:llama3.1"
    assert provider["config"] == {"apiBaseUrl": "http://127.0.0.1:11434/v1",
                                  "apiKeyRequired": False, "temperature": 0.5}
    provider, note = E.promptfoo_provider({"model": "local/smollm2"}, "judge")
    assert provider["id"] == "openai:chat:smollm2" and "OPENAI_BASE_URL" in note
    provider, _ = E.promptfoo_provider({"model": "openai/gpt-4o-mini"}, "base")
    assert provider == {"id": "openai:chat:gpt-4o-mini", "label": "base", "config": {}}
    # a role served by deployments: the first one, the others named in a note
    provider, note = E.promptfoo_provider(
        {"model": "openai/gpt-4o-mini", "api_base": None, "api_key_env": None, "deployments": [
            {"model": "openai/gpt-4o-mini", "api_base": "http://eu/v1", "api_key_env": "EU_KEY",
             "rpm": 600}, {"model": "openai/gpt-4o-mini", "api_key_env": "OPENAI_API_KEY"}]},
        "base")
    assert provider["config"] == {"apiBaseUrl": "http://eu/v1", "apiKeyEnvar": "EU_KEY"}
    assert "2 deployments" in note
    provider, note = E.promptfoo_provider({"model": "anthropic/c", "api_key_env": "A }} {{ x"},
                                          "base")
    assert provider["config"] == {} and "not a variable name" in note


def test_promptfoo_header_comments_stay_comments(store):
    session = load(store, "vapo1")
    session["config"]["models"]["base"] = {"model": "weird/m\nprompts: [evil]\u2028x: 1",
                                           "api_key_env": "PA_FAKE_KEY"}
    text = E.export(session, None, "promptfoo")
    head = text.split("\ndescription:")[0].splitlines()
    assert all(line.startswith("# ") for line in head) and "weird/m prompts: [evil] x: 1" in text
    config = yaml.safe_load(text)
    assert config["providers"][0]["id"] == "openai:chat:m\nprompts: [evil]\u2028x: 1"
    assert list(config) == ["description", "prompts", "providers", "defaultTest", "tests"]


def test_yaml_of_hostile_text_round_trips_exactly():
    data = {"a": ESCAPE_TEXT, "b": "line\u2028sep \u202eevil\x85 é 中文", "c": "x\n  y \n"}
    text = E._yaml(data, ["header"])
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e]", text)
    assert yaml.safe_load(text) == data
    assert yaml.safe_load(E._yaml({"p": "中文\nline"}, [])) == {"p": "中文\nline"}
    assert "中文" in E._yaml({"p": "中文\nline"}, [])  # readable when nothing needs escaping


PROMPTFOO = os.environ.get("PROMPTFOO_BIN") or shutil.which("promptfoo")


@pytest.mark.slow
@pytest.mark.skipif(not PROMPTFOO, reason="promptfoo is not installed (set PROMPTFOO_BIN)")
def test_promptfoo_runs_an_exported_config(store, tmp_path):
    """promptfoo itself runs the export against the fake server: the prompt and the ICL
    turns arrive as written, every assertion is graded by the judge, no key leaks."""
    session = hostile(load(store, "drpo1"))
    graded = []

    def responder(request, index):
        text = json.dumps(request.get("messages"))
        if "<Rubric>" in text:
            graded.append(text)
            return json.dumps({"reason": "fine", "pass": True, "score": 1.0})
        return drpo_responder(request, index)

    with FakeLLMServer(responder=responder) as srv:
        for role in session["config"]["models"].values():
            role["api_base"] = srv.base_url
        path = tmp_path / "promptfooconfig.yaml"
        path.write_text(E.export(session, None, "promptfoo"), encoding="utf-8")
        env = {**os.environ, "PA_FAKE_KEY": FAKE_KEY, "PROMPTFOO_DISABLE_TELEMETRY": "1",
               "PROMPTFOO_DISABLE_UPDATE": "1", "PROMPTFOO_CONFIG_DIR": str(tmp_path / "home")}
        proc = subprocess.run([PROMPTFOO, "eval", "-c", str(path), "--no-cache", "--no-progress-bar",
                               "-o", str(tmp_path / "out.json")], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        answers = [r["messages"] for r in srv.requests if r["model"] == "fake-base"]
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert len(answers) == len(config["tests"]) >= 2
    assert len(graded) == sum(len(t["assert"]) for t in config["tests"])
    assert answers[0][0]["content"] == E.choose_node(session)["text"]
    blob = json.dumps(answers + graded)
    assert FAKE_KEY not in blob and "49" not in blob
    out = json.loads((tmp_path / "out.json").read_text(encoding="utf-8"))
    assert out["results"]["stats"]["successes"] == len(config["tests"])


# ----------------------------------------------------------------------------- md, show, list

@pytest.mark.parametrize("sid", ["drpo1", "vapo1", "picaco1"])
def test_md_export_has_the_held_out_evaluation_for_every_method(store, sid):
    session = load(store, sid)
    ev = session["method_state"]["evaluation"]
    md = E.export(session, None, "md")
    section = md.split("## Held-out evaluation", 1)[1]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| prompt | node | mean [95% CI] | n | errors | tokens")
    assert rows[1].startswith("| root |") and rows[2].startswith("| final (this export) |")
    assert f"| {ev['prompts'][1]['node']} |" in rows[2]
    assert "final − root: **" in section and f"wins {ev['delta']['wins']}" in section
    if sid == "picaco1":  # a column per value
        assert all(v["name"] in rows[0] for v in session["method_state"]["values"])


def test_md_export_says_when_there_is_no_held_out_evaluation(store):
    session = load(store, "vapo1")
    session["method_state"].pop("evaluation")
    session["method_state"]["heldout"]["spec"] = None
    assert "None yet (not run yet: it runs when the search ends)" in E.export(session, None, "md")


def test_sessions_show_prints_the_held_out_evaluation(store):
    code, text = run_cli("sessions", "show", "picaco1", "--store", store)
    assert code == 0
    assert re.search(r"held-out evaluation \(conformity, n 3\): root [\d.]+ \[", text)
    assert "final − root:" in text and "report: promptarbor report picaco1" in text
    code, text = run_cli("sessions", "show", "vapo1", "--store", store, "--json")
    info = json.loads(text)
    assert info["evaluation"]["metric"] == "accuracy" and info["failed_nodes"] == 0


def test_sessions_list_has_name_and_failed_columns_within_80_columns(store, tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    target = tmp_path / "store"
    shutil.copytree(store, target)
    s = SessionStore(target)
    session = load(target, "drpo1")
    session["id"] = "a-very-long-session-identifier-that-goes-on-and-on"
    session["name"] = "名前 " * 20 + ESCAPE_TEXT
    next(iter(session["tree"]["nodes"].values()))["status"] = "failed"
    s.save(session)
    s.close()
    code, text = run_cli("sessions", "list", "--store", target)
    assert code == 0
    lines = text.splitlines()
    header = lines[0].split()
    assert header[:3] == ["id", "name", "method"] and "fail" in header
    from rich.cells import cell_len

    assert all(cell_len(line) <= 80 for line in lines), [cell_len(x) for x in lines]
    assert not any("\x1b" in line or "\x9b" in line for line in lines)
    row = next(line for line in lines if line.startswith("a-very"))
    assert "名前" in row and "…" in row
    assert re.search(r"drpo\s+done\s+\d+\s+1\s", row)  # one failed node
    assert re.match(r"vapo1\s+vapo1 n", next(line for line in lines if line.startswith("vapo1")))
    listing = json.loads(run_cli("sessions", "list", "--store", target, "--json")[1])
    assert {r["id"]: r["failed_nodes"] for r in listing}[session["id"]] == 1


# ----------------------------------------------------------------------------- files

def test_file_name_names_the_node_exported_never_final(tmp_path, fake_server, fake_key):
    cfg = write_config(tmp_path / "c.toml", fake_server.base_url,
                       search={"beam_width": 1, "samples_per_state": 1, "depth": 2})
    code, out = run_cli("run", cfg, "--store", tmp_path / "s", "--steps", 1, "--json")
    summary = json.loads(out)
    assert code == 0 and summary["status"] == "paused"
    session = load(tmp_path / "s", summary["session"])
    node = E.choose_node(session)  # a paused session: no final node yet
    assert session["method_state"].get("final") is None
    assert E.file_name(session, None, "md") == f"promptarbor-{session['id']}-{node['id']}.md"
    assert E.file_name(session, node["id"], "dspy").endswith(f"-{node['id']}.dspy.json")


def test_cli_writes_every_format(store, tmp_path):
    for fmt in E.FORMATS:
        target = tmp_path / E.file_name(load(store, "drpo1"), None, fmt)
        code, _ = run_cli("export", "drpo1", "--store", store, "--format", fmt, "-o", target)
        assert code == 0 and target.read_text(encoding="utf-8").strip(), fmt
    written = sorted(p.name for p in tmp_path.iterdir())
    assert len(written) == len(E.FORMATS) and not any("final" in name for name in written)


def test_json_exports_escape_c1_controls(store, tmp_path):
    target = tmp_path / "store"
    shutil.copytree(store, target)
    s = SessionStore(target)
    session = load(target, "vapo1")
    E.choose_node(session)["text"] += " \x9b31m"
    s.save(session)
    s.close()
    for fmt in ("messages", "dspy"):
        code, text = run_cli("export", "vapo1", "--store", target, "--format", fmt)
        assert code == 0 and "\x9b" not in text and "\\u009b31m" in text
        assert "\x9b31m" in json.dumps(json.loads(text), ensure_ascii=False)


def test_subprocess_export_runs_without_the_project_on_the_path(store, tmp_path):
    """`python -m promptarbor.tui.cli export --format promptfoo` as users run it."""
    out = tmp_path / "p.yaml"
    proc = subprocess.run([sys.executable, "-m", "promptarbor.tui.cli", "export", "vapo1",
                           "--store", str(store), "--format", "promptfoo", "-o", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert yaml.safe_load(out.read_text(encoding="utf-8"))["tests"]
