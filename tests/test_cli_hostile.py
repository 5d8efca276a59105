"""The command line against a hostile endpoint and broken files, run as real processes:
no crash, no terminal escape on stdout or stderr, no key on disk, one line per error."""
import json
import os
import subprocess
import sys

import pytest

from conftest import FAKE_KEY, ROOT, drpo_responder, write_config
from fake_llm import FakeLLMServer, hostile_responder

ESC_BYTES = (b"\x1b", b"\xc2\x9b", b"\x07")  # ESC, 8-bit CSI (UTF-8), BEL


def cli(*args, env_extra=None, timeout=240):
    env = {**os.environ, "PA_FAKE_KEY": FAKE_KEY, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "promptarbor.tui.cli", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, timeout=timeout)


def no_escapes(proc):
    for stream in (proc.stdout, proc.stderr):
        for bad in ESC_BYTES:
            assert bad not in stream, (bad, stream[-2000:])
    assert b"Traceback" not in proc.stderr, proc.stderr.decode(errors="replace")


def one_line_error(proc, code):
    assert proc.returncode == code, proc.stderr.decode(errors="replace")
    lines = proc.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("promptarbor: "), lines
    return lines[0]


def key_nowhere(folder):
    for path in folder.rglob("*"):
        if path.is_file():
            assert FAKE_KEY.encode() not in path.read_bytes(), path


def test_hostile_endpoint_run_reports_failures_then_retry_completes(tmp_path):
    store = tmp_path / "s"
    with FakeLLMServer(responder=hostile_responder(drpo_responder)) as server:
        cfg = write_config(tmp_path / "c.toml", server.base_url,
                           search={"beam_width": 2, "samples_per_state": 2, "depth": 3},
                           gateway={"retries": 3})
        first = cli("run", cfg, "--store", store, "--steps", 1, "--json")
        no_escapes(first)
        session = json.loads(first.stdout)["session"]
        server.hostile(rate=0.3, seed=5)  # every fault of the hostile mode, at random
        server.inject("401-echo", count=1, model="fake-base")  # and one node fails for sure
        second = cli("run", "--session", session, "--store", store)
        no_escapes(second)
        assert second.returncode == 4, second.stderr.decode()
        out = second.stdout.decode()
        assert "failed nodes:" in out and "authentication failed (HTTP 401)" in out
        assert "--retry-failed" in out
        key_nowhere(tmp_path)

        for fmt in ("txt", "md"):
            exported = cli("export", session, "--store", store, "--format", fmt)
            assert exported.returncode == 0
            no_escapes(exported)
        as_json = cli("export", session, "--store", store, "--format", "json")
        no_escapes(as_json)
        json.loads(as_json.stdout)  # exact: escapes are JSON escapes
        for args in (("sessions", "list"), ("sessions", "show", session)):
            listed = cli(*args, "--store", store)
            assert listed.returncode == 0
            no_escapes(listed)

        server.hostile(None)  # the endpoint heals
        retry = cli("run", "--session", session, "--store", store, "--retry-failed", "--json")
        no_escapes(retry)
        assert retry.returncode == 0, retry.stderr.decode()
        summary = json.loads(retry.stdout)
        assert summary["status"] == "done" and summary["failed_nodes"] == 0
        assert summary["calls"] == summary["planned_calls"]
    key_nowhere(tmp_path)


def test_ids_from_the_user_are_checked_before_any_file_is_touched(tmp_path):
    victim = tmp_path / "proj"
    victim.mkdir()
    for name in ("poetry.lock", "Cargo.lock"):
        (victim / name).write_text("precious\n")
    store = tmp_path / "a" / "b" / "s"
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in victim.iterdir()}
    for args in (("run", "--session", "../../../proj/poetry"),
                 ("run", "--session", str(victim / "poetry")),
                 ("tui", "../../../proj/Cargo"),
                 ("sessions", "show", "../../../proj/poetry"),
                 ("export", "../../../proj/poetry")):
        proc = cli(*args, "--store", store)
        one_line_error(proc, 2)  # a malformed id is a usage error
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in victim.iterdir()}
    assert after == before
    assert not list(tmp_path.rglob("*.lock.lock")) and not (victim / "poetry.lock.lock").exists()


def test_export_output_and_store_paths_are_checked(tmp_path, fake_server):
    store = tmp_path / "s"
    cfg = write_config(tmp_path / "c.toml", fake_server.base_url,
                       search={"beam_width": 1, "samples_per_state": 1, "depth": 1})
    done = cli("run", cfg, "--store", store, "--json")
    assert done.returncode == 0, done.stderr.decode()
    session = json.loads(done.stdout)["session"]
    own = store / "sessions" / f"{session}.json"
    original = own.read_bytes()
    for target, needle in ((tmp_path, "is a directory"),
                           (tmp_path / "missing" / "p.txt", "does not exist"),
                           (own, "inside the session store")):
        line = one_line_error(cli("export", session, "--store", store, "-o", target), 2)
        assert needle in line
    assert own.read_bytes() == original
    a_file = tmp_path / "not-a-dir"
    a_file.write_text("x")
    for args in (("sessions", "list"), ("export", session), ("run", cfg)):
        one_line_error(cli(*args, "--store", a_file), 3)


def test_broken_data_files_give_one_line_and_exit_2(tmp_path):
    cases = {
        "binary.jsonl": bytes(range(256)),
        "latin1.jsonl": '{"query": "caf\xe9"}\n'.encode("latin-1"),
        "utf16.jsonl": '{"query": "hi"}\n'.encode("utf-16"),
        "scalars.jsonl": b"null\n5\n[1, 2]\n",
        "number.json": b"42",
        "string.json": b'"hello"',
        "nested.json": b"[" * 100_000,
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        cfg = tmp_path / f"{name}.toml"
        cfg.write_text(f'method = "drpo"\n[data]\nseed = "{path.name}"\n')
        line = one_line_error(cli("run", cfg, "--store", tmp_path / "s"), 2)
        assert name in line


def test_broken_session_files_are_listed_and_kept(tmp_path, fake_server):
    store = tmp_path / "s"
    cfg = write_config(tmp_path / "c.toml", fake_server.base_url,
                       search={"beam_width": 1, "samples_per_state": 1, "depth": 1})
    good = json.loads(cli("run", cfg, "--store", store, "--steps", 1, "--json").stdout)["session"]
    sessions = store / "sessions"
    (sessions / "noise.json").write_bytes(os.urandom(300) + b"\xff\xfe")
    shaped = json.loads((sessions / f"{good}.json").read_text())
    shaped["session"]["1"]["method_state"] = []
    (sessions / "shape.json").write_text(json.dumps(shaped))
    listing = cli("sessions", "list", "--store", store, "--json")
    assert listing.returncode == 0, listing.stderr.decode()
    rows = {r["id"]: r for r in json.loads(listing.stdout)}
    assert rows["noise"]["status"] == "corrupt" and rows["shape"]["status"] == "corrupt"
    assert rows[good]["status"] != "corrupt"
    text = cli("sessions", "list", "--store", store)
    assert text.returncode == 0 and b"corrupt" in text.stdout
    for bad in ("noise", "shape"):
        one_line_error(cli("sessions", "show", bad, "--store", store), 3)
        one_line_error(cli("export", bad, "--store", store), 3)
        assert (sessions / f"{bad}.json").exists()  # read-only commands move nothing
    line = one_line_error(cli("run", "--session", "noise", "--store", store), 3)
    assert "aside" in line and not (sessions / "noise.json").exists()
    assert not (sessions / "noise.lock").exists()  # no lock left for a session that is gone
    assert [p for p in sessions.iterdir() if p.name.startswith("noise.json.corrupt")]


def test_a_closed_pipe_ends_quietly(tmp_path, fake_server):
    store = tmp_path / "s"
    cfg = write_config(tmp_path / "c.toml", fake_server.base_url,
                       search={"beam_width": 1, "samples_per_state": 1, "depth": 1})
    assert cli("run", cfg, "--store", store).returncode == 0
    env = {**os.environ, "PA_FAKE_KEY": FAKE_KEY}
    for args in (("sessions", "list"), ("sessions", "list", "--json")):
        proc = subprocess.Popen([sys.executable, "-m", "promptarbor.tui.cli", *args, "--store", str(store)],
                                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        proc.stdout.close()  # the reader went away before the first line
        err = proc.stderr.read()
        proc.wait(timeout=60)
        assert b"Traceback" not in err and b"BrokenPipe" not in err, err
        assert proc.returncode == 0


def test_dependency_progress_bars_stay_off_stderr(tmp_path, fake_server):
    cfg = write_config(tmp_path / "c.toml", fake_server.base_url,
                       search={"beam_width": 1, "samples_per_state": 1, "depth": 1, "icl_k": 1})
    proc = cli("run", cfg, "--store", tmp_path / "s")  # icl_k = 1 loads the embedding model
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"Loading weights" not in proc.stderr and b"it/s]" not in proc.stderr


@pytest.mark.parametrize("allow", [False, True])
def test_a_plan_over_the_limit_needs_allow_large(tmp_path, fake_server, allow):
    cfg = write_config(tmp_path / "c.toml", fake_server.base_url,
                       search={"beam_width": 32, "samples_per_state": 32, "depth": 200})
    args = ["run", cfg, "--store", tmp_path / "s", "--steps", 1]
    if allow:
        proc = cli(*args, "--allow-large")
        assert proc.returncode == 0, proc.stderr.decode()
    else:
        line = one_line_error(cli(*args), 2)
        assert "--allow-large" in line
        assert not (tmp_path / "s" / "sessions").exists() or \
            not list((tmp_path / "s" / "sessions").glob("*.json"))


def test_a_broken_response_cache_is_a_store_error(tmp_path, fake_server):
    store = tmp_path / "s"
    cfg = write_config(tmp_path / "c.toml", fake_server.base_url,
                       search={"beam_width": 1, "samples_per_state": 1, "depth": 1})
    first = cli("run", cfg, "--store", store, "--steps", 1, "--json")
    session = json.loads(first.stdout)["session"]
    saved = (store / "sessions" / f"{session}.json").read_bytes()
    (store / "cache" / "cache.db").write_bytes(b"this is not a database" * 100)
    line = one_line_error(cli("run", "--session", session, "--store", store), 3)
    assert "cache" in line
    assert (store / "sessions" / f"{session}.json").read_bytes() == saved
