"""The `promptarbor` command line, run as a real process against the fake server."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import FAKE_KEY, ROOT, write_config


def cli(*args, env_extra=None, timeout=180, check=False):
    env = {**os.environ, "PA_FAKE_KEY": FAKE_KEY, **(env_extra or {})}
    proc = subprocess.run([sys.executable, "-m", "promptarbor.tui.cli", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


SEARCH = {"beam_width": 2, "samples_per_state": 2, "depth": 3}


def test_run_json_to_the_end(tmp_path, fake_server):
    cfg = write_config(tmp_path / "c.toml", fake_server.base_url, search=SEARCH, name="demo")
    proc = cli("run", cfg, "--store", tmp_path / "s", "--json", check=True)
    out = json.loads(proc.stdout)
    assert set(out) >= {"session", "status", "steps", "calls", "planned_calls", "best", "final"}
    assert out["status"] == "done"
    assert out["calls"] == out["planned_calls"]
    assert out["best"]["reward"] is not None and out["final"]["text"]
    assert fake_server.answered == sum(out["planned_calls"].values())

    show = json.loads(cli("sessions", "show", out["session"], "--store", tmp_path / "s", "--json",
                          check=True).stdout)
    for key in ("id", "name", "method", "status", "steps", "nodes", "accepted", "calls", "cost"):
        assert key in show
    assert show["accepted"] is None and show["steps"] == out["steps"] and show["name"] == "demo"
    listing = json.loads(cli("sessions", "list", "--store", tmp_path / "s", "--json",
                             check=True).stdout)
    assert [s["id"] for s in listing] == [out["session"]]

    text = cli("export", out["session"], "--store", tmp_path / "s", check=True).stdout
    assert text.strip() == out["final"]["text"].strip()
    md = cli("export", out["session"], "--store", tmp_path / "s", "--format", "md",
             check=True).stdout
    assert md.startswith("# demo") and "| aspect | score | rationale |" in md
    target = tmp_path / "p.json"
    cli("export", out["session"], "--store", tmp_path / "s", "--format", "json", "-o", target,
        "--node", out["best"]["node"], check=True)
    assert json.loads(target.read_text())["node"] == out["best"]["node"]


def test_resume_after_pause_pays_no_call_twice(tmp_path, fake_server):
    cfg = write_config(tmp_path / "c.toml", fake_server.base_url, search=SEARCH)
    first = json.loads(cli("run", cfg, "--store", tmp_path / "s", "--steps", 3, "--json",
                           check=True).stdout)
    assert first["status"] == "paused" and first["steps"] == 3
    paid_before = fake_server.answered
    assert paid_before == sum(first["calls"].values())
    second = json.loads(cli("run", "--session", first["session"], "--store", tmp_path / "s",
                            "--json", check=True).stdout)
    assert second["status"] == "done"
    assert second["calls"] == second["planned_calls"]
    assert fake_server.answered == sum(second["planned_calls"].values())  # zero repeats
    # a third run on a finished session does nothing
    third = json.loads(cli("run", "--session", first["session"], "--store", tmp_path / "s",
                           "--json", check=True).stdout)
    assert third["steps"] == second["steps"]
    assert fake_server.answered == sum(second["planned_calls"].values())


def test_killed_mid_step_resumes_without_repeating_answered_calls(tmp_path, fake_server):
    cfg = write_config(tmp_path / "c.toml", fake_server.base_url, search=SEARCH)
    env = {**os.environ, "PA_FAKE_KEY": FAKE_KEY}
    # 1 selection + root answer + root score + 1 selection + 2 rewrites + 1 of the level's answers
    fake_server.hang_after(7)
    proc = subprocess.Popen([sys.executable, "-m", "promptarbor.tui.cli", "run", str(cfg), "--store",
                             str(tmp_path / "s"), "--json"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while fake_server.blocked == 0 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert fake_server.blocked > 0, proc.stderr.read() if proc.poll() is not None else "no hang"
    # let the client store the answers it has received; the step stays in flight, waiting
    # on the hung calls, when the process is killed
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    answered_before_kill = fake_server.answered
    assert answered_before_kill == 7
    fake_server.release()
    time.sleep(0.3)
    fake_server.reset_stats()

    session_id = json.loads(cli("sessions", "list", "--store", tmp_path / "s", "--json",
                                check=True).stdout)[0]["id"]
    out = json.loads(cli("run", "--session", session_id, "--store", tmp_path / "s", "--json",
                         check=True).stdout)
    assert out["status"] == "done"
    assert out["calls"] == out["planned_calls"]
    # every answer the killed process got came from the cache: the server saw only the rest
    assert answered_before_kill + fake_server.answered == sum(out["planned_calls"].values())


def test_second_writer_is_refused(tmp_path, fake_server):
    from promptarbor.sessions.store import SessionStore

    cfg = write_config(tmp_path / "c.toml", fake_server.base_url, search=SEARCH)
    out = json.loads(cli("run", cfg, "--store", tmp_path / "s", "--steps", 1, "--json",
                         check=True).stdout)
    holder = SessionStore(tmp_path / "s")
    holder.lock(out["session"])
    try:
        proc = cli("run", "--session", out["session"], "--store", tmp_path / "s")
        assert proc.returncode == 3
        assert "open in another PromptArbor process" in proc.stderr
    finally:
        holder.close()


@pytest.mark.parametrize("body,needle", [
    ('method = "nope"', "unknown method 'nope'"),
    ('method = "drpo"\n[search]\nbeam_width = 0', "search.beam_width must be at least 1"),
    ('method = "drpo"\n[search]\ndepth = "deep"', "search.depth must be a whole number"),
    ('method = "drpo"\n[data]\nseed = "missing.jsonl"', "data.seed: file not found"),
    ('method = "drpo"\n[serch]\ndepth = 2', "unknown key 'serch'"),
    ('method = "drpo"\n[models.base\n', "not valid TOML"),
    ('method = "drpo"\n[models.base]\nmodel = ""', "[models.base] model must be a non-empty string"),
    ('method = "drpo"\n[models.base]\nmodel = "x"\nextra = { api_key = "sk-1" }', "put secrets in an environment variable"),
])
def test_config_errors_exit_2_with_one_line(tmp_path, body, needle):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(body)
    proc = cli("run", cfg, "--store", tmp_path / "s", timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert not (tmp_path / "s" / "sessions").exists() or not list((tmp_path / "s" / "sessions").glob("*.json"))


def test_missing_config_file_and_missing_session(tmp_path):
    proc = cli("run", tmp_path / "none.toml", "--store", tmp_path / "s", timeout=60)
    assert proc.returncode == 2 and "config file not found" in proc.stderr
    proc = cli("sessions", "show", "abc", "--store", tmp_path / "s", timeout=60)
    assert proc.returncode == 3 and "no session 'abc'" in proc.stderr


def test_the_top_level_store_applies_to_every_command(tmp_path, fake_server):
    cfg = write_config(tmp_path / "c.toml", fake_server.base_url, search=SEARCH, name="top")
    out = json.loads(cli("--store", tmp_path / "s", "run", cfg, "--json", check=True).stdout)
    listing = json.loads(cli("--store", tmp_path / "s", "sessions", "list", "--json",
                             check=True).stdout)
    assert [s["id"] for s in listing] == [out["session"]]
    assert not (ROOT / "s").exists()


def test_the_progress_line_counts_the_judge_when_it_has_calls(capsys):
    """A step of the held-out verdict names the judge's calls; a search step without them
    keeps to the three roles."""
    from promptarbor.tui.cli import _progress

    _progress({"kind": "step_finished", "step": 5, "node": None,
               "payload": {"label": "held-out evaluation",
                           "calls": {"base": 15, "optimizer": 6, "evaluator": 10, "judge": 8}}})
    _progress({"kind": "step_finished", "step": 1, "node": None,
               "payload": {"label": "level 1", "calls": {"base": 1, "optimizer": 0,
                                                         "evaluator": 1, "judge": 0}}})
    first, second = capsys.readouterr().err.splitlines()
    assert first.endswith("(calls: base 15, optimizer 6, evaluator 10, judge 8)")
    assert second.endswith("(calls: base 1, optimizer 0, evaluator 1)")


def test_an_unknown_session_leaves_no_lock_file(tmp_path):
    """`run --session` with an id the store does not hold: one line, exit 3, and no
    <id>.lock left behind (the lock was taken to load it)."""
    proc = cli("run", "--session", "zzz3", "--store", tmp_path / "s", timeout=60)
    assert proc.returncode == 3 and "no session 'zzz3'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not list((tmp_path / "s").rglob("*.lock"))
