"""The `promptarbor` command line (DESIGN §8).

    promptarbor run [CONFIG.toml] [--store DIR] [--session ID] [--steps N] [--json]
                    [--retry-failed] [--allow-large]
    promptarbor sessions list [--store DIR] [--json]
    promptarbor sessions show ID [--store DIR] [--json]
    promptarbor export ID [--node NODE] [--format txt|md|json|messages|promptfoo|dspy|jinja]
                          [-o FILE] [--store DIR]
    promptarbor tui [SESSION] [--store DIR]     (no command: the session browser)
    --verbose (before the command): dependencies' progress bars and logs on stderr

Exit status: 0 done or paused, 1 the run failed, 2 a configuration or usage error,
3 a store problem (session locked, missing, corrupt, unwritable), 4 done with failed nodes.

Model and provider text written to the terminal or to a text export has its terminal
control sequences removed (newlines and tabs kept); JSON output escapes them instead.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import sys
import time
from pathlib import Path

from promptarbor.tui.text import strip_escapes

EXIT_FAILED, EXIT_CONFIG, EXIT_STORE, EXIT_PARTIAL = 1, 2, 3, 4  # noqa: E501 (also tui.cli_eval)
# sessions.export.FORMATS, named here so that parsing the command line imports nothing more
EXPORT_FORMATS = ("txt", "md", "json", "messages", "promptfoo", "dspy", "jinja")
_C1 = re.compile("[\x7f-\x9f\u2028\u2029]")


def store_code(exc: Exception) -> int:
    """Exit status of a store error: a malformed id is a usage error (2), the rest 3."""
    from promptarbor.sessions.store import InvalidSessionId

    return EXIT_CONFIG if isinstance(exc, InvalidSessionId) else EXIT_STORE


def clean(value: object) -> str:
    """Text for a terminal or a text file: control sequences removed, newlines kept."""
    return strip_escapes("" if value is None else str(value))


def _line(value: object) -> str:
    """One line of text for an error or a warning."""
    return " ".join(clean(value).split())


def to_json(obj) -> str:
    """JSON for stdout: exact (every string as stored), with no raw control character.

    json.dumps escapes C0 controls itself; C1 controls (8-bit CSI \x9b and friends) and the
    Unicode line separators are escaped here, which keeps the value exact."""
    text = json.dumps(obj, ensure_ascii=False)
    return _C1.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _err(message: str) -> None:
    print(f"promptarbor: {_line(message)}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="promptarbor",
        description="Search-based prompt optimization for LLM alignment, step by step.")
    parser.add_argument("--verbose", action="store_true",
                        help="show dependencies' progress bars and logs on stderr")
    parser.add_argument("--store", dest="top_store", metavar="DIR",
                        help="with no command: the session browser on this store")
    sub = parser.add_subparsers(dest="command")

    run = sub.add_parser("run", help="create a session from CONFIG and run it, or resume one")
    run.add_argument("config", nargs="?", help="TOML config (omit with --session to resume)")
    run.add_argument("--store", help="session store directory")
    run.add_argument("--session", help="session id: resume it (or the id for a new session)")
    run.add_argument("--steps", type=int, help="run this many steps, then pause (default: to the end)")
    run.add_argument("--json", action="store_true", help="print one JSON object at the end")
    run.add_argument("--retry-failed", action="store_true",
                     help="with --session: re-send the failed nodes' calls, then continue")
    run.add_argument("--allow-large", action="store_true",
                     help="accept a plan of more than 100,000 calls")

    sessions = sub.add_parser("sessions", help="list or show stored sessions")
    ssub = sessions.add_subparsers(dest="action", required=True)
    slist = ssub.add_parser("list", help="all sessions, newest first")
    slist.add_argument("--store")
    slist.add_argument("--json", action="store_true")
    sshow = ssub.add_parser("show", help="one session's summary")
    sshow.add_argument("id")
    sshow.add_argument("--store")
    sshow.add_argument("--json", action="store_true")

    tui = sub.add_parser("tui", help="open the workbench on a session (or the session browser)")
    tui.add_argument("session", nargs="?")
    tui.add_argument("--store")

    serve = sub.add_parser("serve", help="serve the workbench in a web browser")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--host", default="localhost")
    serve.add_argument("--store")

    exp = sub.add_parser("export", help="export a prompt (accepted node, else the final one)")
    exp.add_argument("id")
    exp.add_argument("--node")
    exp.add_argument("--format", default="txt", choices=EXPORT_FORMATS,
                     help="txt, md (with the evaluation), json; messages (OpenAI chat), "
                          "promptfoo (promptfooconfig.yaml), dspy (Predict state), jinja")
    exp.add_argument("-o", "--output")
    exp.add_argument("--store")

    ev = sub.add_parser("eval", help="held-out evaluation of prompts: means with CIs, "
                                     "paired differences, categories, regressions")
    ev.add_argument("--prompt", action="append", required=True, metavar="SPEC",
                    help="SESSION (its accepted node, else its final) | SESSION:NODE | "
                         "file:PATH | text:PROMPT; the first is the baseline")
    ev.add_argument("--data", help="eval set: a JSONL/JSON/CSV/Parquet file or hf:NAME[:split] "
                                   "(default: the built-in held-out set for the judge)")
    ev.add_argument("--judge", default="aspects",
                    choices=("aspects", "accuracy", "conformity", "rubric", "pairwise"))
    ev.add_argument("--rubric", help="the criterion of the rubric judge, in words")
    ev.add_argument("--values", help="conformity: a composition or value names, comma-separated "
                                     "(default: the values of the first PICACO session named)")
    ev.add_argument("--samples", type=int, default=1, help="answers per item (default 1)")
    ev.add_argument("--limit", type=int, help="a seeded sample of N items")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--query-field")
    ev.add_argument("--category-field")
    ev.add_argument("--models", metavar="CONFIG.toml",
                    help="a config whose [models] (base, judge; judge falls back to evaluator) "
                         "and [gateway] are used (default: the first session named, else the "
                         "embedded model)")
    ev.add_argument("--name", default="")
    ev.add_argument("--store")
    ev.add_argument("--max-cost", type=float, metavar="USD",
                    help="pause after the batch that reaches this cost (run again to go on)")
    ev.add_argument("--json", action="store_true")

    evs = sub.add_parser("evals", help="list or show stored evaluations")
    esub = evs.add_subparsers(dest="action", required=True)
    elist = esub.add_parser("list")
    elist.add_argument("--store")
    elist.add_argument("--json", action="store_true")
    eshow = esub.add_parser("show")
    eshow.add_argument("id")
    eshow.add_argument("--store")
    eshow.add_argument("--json", action="store_true")

    rep = sub.add_parser("report", help="a report of an evaluation (or of a session's "
                                        "held-out evaluation)")
    rep.add_argument("id")
    rep.add_argument("--format", default="md", choices=("md", "csv", "json", "html"))
    rep.add_argument("-o", "--output")
    rep.add_argument("--store")
    return parser


def _quiet_dependencies() -> None:
    """Progress bars and chatter of the model libraries stay off stderr."""
    for name, value in (("TQDM_DISABLE", "1"), ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
                        ("TRANSFORMERS_VERBOSITY", "error"), ("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1"),
                        ("TOKENIZERS_PARALLELISM", "false"), ("LITELLM_LOG", "CRITICAL")):
        os.environ.setdefault(name, value)
    import logging
    import warnings

    for name in ("LiteLLM", "litellm", "LiteLLM Router", "LiteLLM Proxy", "httpx",
                 "sentence_transformers", "transformers", "huggingface_hub", "filelock",
                 "datasets", "fsspec"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore")


def main(argv: list[str] | None = None) -> int:
    """Run a command; a closed pipe (`… | head`) ends it quietly."""
    try:
        code = _main(argv)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # stdout went away: point it at /dev/null so the interpreter's last flush is quiet too
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except OSError:
            pass
        return 0
    except KeyboardInterrupt:
        return 130


def _main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "store", None) is None and args.top_store:
        args.store = args.top_store  # `promptarbor --store DIR <command>` means DIR too
    if not args.verbose:
        _quiet_dependencies()
    if args.command == "run":
        return cmd_run(args)
    if args.command == "sessions":
        return cmd_sessions(args)
    if args.command == "export":
        return cmd_export(args)
    if args.command in ("eval", "evals", "report"):
        from promptarbor.tui import cli_eval

        return {"eval": cli_eval.cmd_eval, "evals": cli_eval.cmd_evals,
                "report": cli_eval.cmd_report}[args.command](args)
    if args.command == "tui":
        return cmd_tui(args.store, args.session)
    if args.command == "serve":
        return cmd_serve(args.host, args.port, args.store)
    return cmd_tui(args.top_store, None)  # no command: the session browser


def cmd_serve(host: str, port: int, store: str | None) -> int:
    """The workbench in a browser: textual-serve starts one app process per connection.

    Each process locks the session it opens, so two tabs never write the same session: the
    second one is told the session is open elsewhere.
    """
    import shlex

    from textual_serve.server import Server

    command = f"{shlex.quote(sys.executable)} -m promptarbor.tui.cli tui"
    if store:
        command += f" --store {shlex.quote(str(Path(store).resolve()))}"
    print(f"serving PromptArbor on http://{host}:{port}", file=sys.stderr)
    Server(command, host=host, port=port, title="PromptArbor").serve()
    return 0


def cmd_tui(store: str | None, session: str | None) -> int:
    from promptarbor.sessions.store import SessionStore, StoreError

    try:  # a bad id or a store that is a file: one line, before any screen or file
        checked = SessionStore(store)
        if session is not None:
            checked.path(session)
    except StoreError as exc:
        _err(str(exc))
        return store_code(exc)
    from promptarbor.tui.app import PromptArborApp

    PromptArborApp(store, session).run()
    return 0


# --------------------------------------------------------------------------- run

def _progress(event: dict) -> None:
    kind = event["kind"]
    p = event["payload"]
    if kind == "step_finished":
        calls = p.get("calls", {})
        roles = ["base", "optimizer", "evaluator"] + (["judge"] if calls.get("judge") else [])
        counts = ", ".join(f"{role} {calls.get(role, 0)}" for role in roles)
        print(f"step {event['step']}: {p['label']}  (calls: {counts})",
              file=sys.stderr, flush=True)
    elif kind in ("warning", "node_failed"):
        text = p.get("message") or p.get("error")
        where = f" [{event['node']}]" if event.get("node") else ""
        label = "failed" if kind == "node_failed" else "warning"
        print(f"  {label}{where}: {_line(text)[:400]}", file=sys.stderr, flush=True)


def cmd_run(args) -> int:
    from promptarbor.engine.config import ConfigError, load_config
    from promptarbor.engine.datasets import load_inputs
    from promptarbor.engine.gateway import CacheUnavailable
    from promptarbor.engine.runner import NoModelError, Runner, SessionStateError
    from promptarbor.sessions.store import SessionStore, StoreError

    if args.steps is not None and args.steps < 1:
        _err("--steps must be at least 1")
        return EXIT_CONFIG
    if not args.config and not args.session:
        _err("give a CONFIG.toml to start a session, or --session ID to resume one")
        return EXIT_CONFIG
    if args.retry_failed and (args.config or not args.session):
        _err("--retry-failed resumes a session: give --session ID and no CONFIG")
        return EXIT_CONFIG
    try:
        store = SessionStore(args.store)
        if args.session:
            store.path(args.session)  # validates the id before any file is touched
    except StoreError as exc:
        _err(str(exc))
        return store_code(exc)
    try:
        if args.config:
            cfg = load_config(args.config)
            if args.session and store.exists(args.session):
                raise ConfigError(f"session {args.session} already exists; run with "
                                  f"--session {args.session} and no CONFIG to resume it")
            inputs = load_inputs(cfg)
            runner = Runner.create(cfg, inputs, store=store, cache_dir=store.cache_dir,
                                   session_id=args.session, on_event=_progress,
                                   allow_large=args.allow_large)
        else:
            store.lock(args.session)
            session = store.load(args.session)
            runner = Runner(session, store=store, cache_dir=store.cache_dir, on_event=_progress)
    except ConfigError as exc:
        _err(str(exc))
        store.close()
        return EXIT_CONFIG
    except (StoreError, CacheUnavailable, SessionStateError) as exc:
        _err(str(exc))
        store.close()
        return store_code(exc)

    from promptarbor.engine.config import local_default_note

    note = local_default_note(runner.session["config"])
    if note:
        print(note, file=sys.stderr)
    if not args.json:
        plan = runner.session["planned_calls"]
        print(f"session {runner.session['id']} ({runner.session['method']}): planned calls "
              + ", ".join(f"{r} {n}" for r, n in plan.items()), file=sys.stderr)
    code = 0
    try:
        code = asyncio.run(_run(runner, args.steps, args.retry_failed))
    except NoModelError as exc:
        _err(str(exc))
        code = EXIT_CONFIG
    except (StoreError, CacheUnavailable) as exc:
        _err(f"{exc} (the last saved step is intact)")
        code = EXIT_STORE
    finally:
        runner.gateway.close()
        store.close()
    summary = runner.summary()
    if args.json:
        print(to_json(summary))
    else:
        _print_summary(summary)
    if code:
        return code
    if summary["status"] == "failed":
        if runner.blocked and not args.json:
            _err(f"the root {runner.blocked} could not be judged; fix the endpoint, then run "
                 f"promptarbor run --session {runner.session['id']} --retry-failed")
        return EXIT_FAILED
    if summary["status"] == "done" and (summary["failed_nodes"] or summary.get("failed_samples")):
        return EXIT_PARTIAL
    if runner.over_budget() and not runner.done:
        print(f"paused: this run's cost reached [budget] max_usd; run promptarbor run "
              f"--session {summary['session']} to go on with a new budget", file=sys.stderr)
    return 0


def pause_on_sigint(runner, unit: str = "step") -> None:
    """The first Ctrl-C pauses `runner` after the `unit` in flight; a second one cancels the
    running task at once (the last finished unit is saved)."""
    loop = asyncio.get_running_loop()
    interrupted = {"n": 0}
    task = asyncio.current_task()

    def on_sigint():
        interrupted["n"] += 1
        if interrupted["n"] == 1:
            print(f"\npausing after this {unit} (Ctrl-C again to stop now)", file=sys.stderr)
            runner.pause()
        else:
            task.cancel()

    try:
        loop.add_signal_handler(signal.SIGINT, on_sigint)
    except (NotImplementedError, RuntimeError):
        pass


async def _run(runner, steps: int | None, retry_failed: bool = False) -> int:
    """Run; the first Ctrl-C pauses after the step in flight, a second one stops at once."""
    pause_on_sigint(runner, "step")
    try:
        if retry_failed:
            failed = runner.failed_nodes()
            samples = runner.failed_samples()
            if failed or samples:
                if failed:
                    print(f"retrying {len(failed)} failed node(s): {', '.join(failed[:20])}"
                          f"{' …' if len(failed) > 20 else ''}", file=sys.stderr)
                if samples:
                    print(f"retrying {samples} failed held-out sample(s)", file=sys.stderr)
                await runner.retry_failed()
                left = runner.failed_nodes()
                if failed:
                    print(f"retry: {len(failed) - len([i for i in left if i in failed])} of "
                          f"{len(failed)} nodes recovered", file=sys.stderr)
            else:
                print("no failed node or held-out sample to retry", file=sys.stderr)
        await runner.run(steps=steps)
    except asyncio.CancelledError:
        print("stopped; the last finished step is saved", file=sys.stderr)
    return 0


def _evaluation_lines(ev: dict | None, session_id: str) -> list[str]:
    """The held-out verdict (root vs final) in a few lines: each prompt's mean with its CI,
    the paired difference with wins / ties / losses and whether it is clear."""
    ev = ev or {}
    if not ev.get("prompts"):
        return []

    def num(x, fmt=".2f"):
        return "—" if not isinstance(x, (int, float)) else format(x, fmt)

    def ci(pair, fmt=".2f"):
        return f" [{num(pair[0], fmt)}, {num(pair[1], fmt)}]" if pair and len(pair) == 2 else ""

    parts = [f"{_line(p.get('label'))} {num(p.get('mean'))}{ci(p.get('ci'))}"
             + (f" ({p['errors']} failed samples left out)" if p.get("errors") else "")
             for p in ev["prompts"]]
    lines = [f"held-out evaluation ({_line(ev.get('judge'))}, n {ev.get('n')}): " + " · ".join(parts)]
    d = ev.get("delta")
    if d and isinstance(d.get("mean"), (int, float)):
        pair = d.get("ci") if d.get("ci") and len(d["ci"]) == 2 else None
        verdict = ("better" if pair and pair[0] > 0 else
                   "worse" if pair and pair[1] < 0 else "no clear difference")
        lines.append(f"  final − root: {d['mean']:+.3f}{ci(pair, '+.3f')} "
                     f"wins {d.get('wins')} · ties {d.get('ties')} · losses {d.get('losses')}: "
                     f"{verdict}")
    lines.append(f"  report: promptarbor report {session_id} --format html -o report.html")
    return lines


def _print_summary(summary: dict) -> None:
    calls = summary["calls"]
    plan = summary["planned_calls"]
    print(f"session {summary['session']}: {summary['status']} after {summary['steps']} steps")
    print("calls: " + ", ".join(f"{r} {calls.get(r, 0)}/{plan.get(r, 0)}"
                                for r in ("base", "optimizer", "evaluator", "judge")
                                if r in calls or r in plan)
          + f"  cost ${summary['cost']:.4f}")
    for line in _evaluation_lines(summary.get("evaluation"), summary["session"]):
        print(line)
    if summary.get("parsed_first_time") is not None:
        print(f"structured answers parsed first time: {summary['parsed_first_time']:.0%}")
    if summary.get("failed_nodes"):
        print(f"failed nodes: {summary['failed_nodes']} (retry with: promptarbor run --session "
              f"{summary['session']} --retry-failed)")
        for reason, nodes in summary.get("failures", {}).items():
            shown = ", ".join(nodes[:8]) + (" …" if len(nodes) > 8 else "")
            reason = _line(reason)
            print(f"  {len(nodes)} × {reason if len(reason) < 160 else reason[:159] + '…'}  [{shown}]")
    if summary.get("failed_samples"):
        print(f"held-out samples that failed: {summary['failed_samples']} (left out of the means; "
              f"retry with: promptarbor run --session {summary['session']} --retry-failed)")
    if summary["best"]:
        print(f"best: {summary['best']['node']} reward {summary['best']['reward']:.2f}")
    if summary["final"]:
        print(f"final: {summary['final']['node']}")
        print(clean(summary["final"]["text"]))


# --------------------------------------------------------------------------- sessions

def cmd_sessions(args) -> int:
    from promptarbor.sessions.store import SessionStore, StoreError, summarize

    try:
        store = SessionStore(args.store)
        rows = store.list() if args.action == "list" else None
    except StoreError as exc:
        _err(str(exc))
        return store_code(exc)
    if args.action == "list":
        if args.json:
            print(to_json(rows))
            return 0
        if not rows:
            print(f"no sessions in {clean(store.root)}")
            return 0
        for line in _session_table(rows):
            print(line)
        return 0
    try:
        session = store.load(args.id, move_aside=False)  # a read-only command moves nothing
        info = summarize(session)
    except StoreError as exc:
        _err(str(exc))
        return store_code(exc)
    from promptarbor.sessions.export import heldout_status

    state = session.get("method_state", {})
    info["final"] = state.get("final")
    info["config"] = {"method": session["config"]["method"],
                      "models": {r: m["model"] for r, m in session["config"]["models"].items()},
                      "search": session["config"]["search"]}
    info["evaluation"] = state.get("evaluation")  # the held-out verdict, as `run --json` gives it
    if args.json:
        print(to_json(info))
        return 0
    for key in ("id", "name", "method", "status", "steps", "nodes", "failed_nodes", "accepted",
                "final", "best_reward", "cost"):
        print(f"{key:12} {_line(info[key])}")
    print(f"{'calls':12} " + ", ".join(f"{r} {n}/{info['planned_calls'].get(r, 0)}"
                                      for r, n in info["calls"].items()))
    lines = _evaluation_lines(info["evaluation"], info["id"])
    if lines:
        for line in lines:
            print(line)
    else:
        print(f"{'held-out':12} {heldout_status(session)}")
    return 0


def _fit(text: str, width: int, right: bool = False) -> str:
    """`text` on one line in exactly `width` terminal cells: cut with "…", padded."""
    from rich.cells import cell_len

    text = _line(text)[:4 * width + 1]  # a long text cut early: at most `width` cells show
    if cell_len(text) > width:
        while text and cell_len(text) > width - 1:
            text = text[:-1]
        text += "…"
    pad = " " * max(0, width - cell_len(text))
    return pad + text if right else text + pad


def _session_table(rows: list[dict]) -> list[str]:
    """`sessions list` as a table that fits the terminal (at least 80 columns, even through
    a pipe): the name takes the room left, 8 to 40 cells; a longer id or name is cut with
    "…" (`--json` has them whole)."""
    import shutil

    width = max(80, min(shutil.get_terminal_size((80, 24)).columns, 160)) - 1
    # method, status, nodes, failed nodes, best reward, cost, updated (month-day hour:minute)
    fixed = [("method", 13, False), ("status", 7, False), ("nodes", 5, True),
             ("fail", 4, True), ("best", 5, True), ("cost", 7, True), ("updated", 11, False)]
    room = width - sum(w for _, w, _ in fixed) - 8  # for the id and the name (8 separators)
    id_w = max(2, min(16, room - 8, max(len(_line(r["id"])) for r in rows)))
    name_w = max(8, min(40, room - id_w))

    def row(cells: list[str]) -> str:
        specs = [(id_w, False), (name_w, False)] + [(w, r) for _, w, r in fixed]
        return " ".join(_fit(c, w, r) for c, (w, r) in zip(cells, specs)).rstrip()

    out = [row(["id", "name"] + [h for h, _, _ in fixed])]
    for r in rows:
        if r["status"] == "corrupt":
            line = f"{_fit(r['id'], id_w)} {_fit('?', name_w)} corrupt "
            out.append(line + _fit(r.get("error"), max(10, width - len(line))).rstrip())
            continue
        best = r.get("best_reward")
        best = ("—" if best is None else f"{best:.2f}" if abs(best) < 10 else
                f"{best:.1f}" if abs(best) < 1000 else f"{best:.0f}")
        cost = r.get("cost") or 0.0
        updated = time.strftime("%m-%d %H:%M", time.localtime(r.get("updated") or 0))
        out.append(row([r["id"], r.get("name") or "", r["method"], r["status"], str(r["nodes"]),
                        str(r.get("failed_nodes", 0)), best,
                        f"{cost:.4f}" if cost < 10 else f"{cost:.2f}", updated]))
    return out


# --------------------------------------------------------------------------- export

def _export_target(output: str, store) -> Path:
    """The file `export -o` may write, or ValueError with one line."""
    target = Path(output).expanduser()
    if target.is_dir():
        raise ValueError(f"{output} is a directory; give a file name")
    parent = target.resolve().parent
    if not parent.is_dir():
        raise ValueError(f"{output}: the folder {parent} does not exist")
    resolved = target.resolve()
    for own in (store.sessions_dir, store.cache_dir):
        own = own.resolve()
        if resolved == own or own in resolved.parents:
            raise ValueError(f"{output} is inside the session store; write the export elsewhere")
    return target


def cmd_export(args) -> int:
    from promptarbor.sessions.export import JSON_FORMATS, export
    from promptarbor.sessions.store import SessionStore, StoreError

    try:
        store = SessionStore(args.store)
        target = _export_target(args.output, store) if args.output else None
        session = store.load(args.id, move_aside=False)  # export reads; it moves nothing
        text = export(session, args.node, args.format)
    except ValueError as exc:  # a bad output path
        _err(str(exc.args[0]))
        return EXIT_CONFIG
    except StoreError as exc:
        _err(str(exc))
        return store_code(exc)
    except KeyError as exc:
        _err(str(exc.args[0]))
        return EXIT_CONFIG
    # JSON keeps every string exact (JSON escapes, C1 controls included); the promptfoo YAML
    # and the Jinja template are made safe by the exporter (escapes, template literals); the
    # text formats are for people: terminal control sequences removed
    if args.format in JSON_FORMATS:
        text = _C1.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    elif args.format in ("txt", "md"):
        text = clean(text)
    if target is not None:
        try:
            target.write_text(text, encoding="utf-8")
        except OSError as exc:
            _err(f"cannot write {args.output}: {exc.strerror or exc}")
            return EXIT_CONFIG
        print(f"wrote {clean(args.output)}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
