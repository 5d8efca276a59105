"""The `promptarbor` command line (DESIGN §8).

    promptarbor run [CONFIG.toml] [--store DIR] [--session ID] [--steps N] [--json]
    promptarbor sessions list [--store DIR] [--json]
    promptarbor sessions show ID [--store DIR] [--json]
    promptarbor export ID [--node NODE] [--format txt|md|json] [-o FILE] [--store DIR]
    promptarbor tui [SESSION] [--store DIR]     (no command: the session browser)

Exit status: 0 done or paused, 1 the run failed, 2 a configuration or usage error,
3 a store problem (session locked, missing or corrupt).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from pathlib import Path

EXIT_FAILED, EXIT_CONFIG, EXIT_STORE = 1, 2, 3


def _err(message: str) -> None:
    print(f"promptarbor: {message}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="promptarbor",
        description="Search-based prompt optimization for LLM alignment, step by step.")
    sub = parser.add_subparsers(dest="command")

    run = sub.add_parser("run", help="create a session from CONFIG and run it, or resume one")
    run.add_argument("config", nargs="?", help="TOML config (omit with --session to resume)")
    run.add_argument("--store", help="session store directory")
    run.add_argument("--session", help="session id: resume it (or the id for a new session)")
    run.add_argument("--steps", type=int, help="run this many steps, then pause (default: to the end)")
    run.add_argument("--json", action="store_true", help="print one JSON object at the end")

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
    exp.add_argument("--format", default="txt", choices=("txt", "md", "json"))
    exp.add_argument("-o", "--output")
    exp.add_argument("--store")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "run":
        return cmd_run(args)
    if args.command == "sessions":
        return cmd_sessions(args)
    if args.command == "export":
        return cmd_export(args)
    if args.command == "tui":
        return cmd_tui(args.store, args.session)
    if args.command == "serve":
        return cmd_serve(args.host, args.port, args.store)
    return cmd_tui(None, None)  # no command: the session browser


def cmd_serve(host: str, port: int, store: str | None) -> int:
    """The workbench in a browser: textual-serve starts one app process per connection.

    Each process locks the session it opens, so two tabs never write the same session: the
    second one is told the session is open elsewhere.
    """
    import shlex

    from textual_serve.server import Server

    command = f"{shlex.quote(sys.executable)} -m tui.cli tui"
    if store:
        command += f" --store {shlex.quote(str(Path(store).resolve()))}"
    print(f"serving PromptArbor on http://{host}:{port}", file=sys.stderr)
    Server(command, host=host, port=port, title="PromptArbor").serve()
    return 0


def cmd_tui(store: str | None, session: str | None) -> int:
    from tui.app import PromptArborApp

    PromptArborApp(store, session).run()
    return 0


# --------------------------------------------------------------------------- run

def _progress(event: dict) -> None:
    kind = event["kind"]
    p = event["payload"]
    if kind == "step_finished":
        calls = p.get("calls", {})
        print(f"step {event['step']}: {p['label']}  (calls: base {calls.get('base', 0)}, "
              f"optimizer {calls.get('optimizer', 0)}, evaluator {calls.get('evaluator', 0)})",
              file=sys.stderr, flush=True)
    elif kind in ("warning", "node_failed"):
        text = p.get("message") or p.get("error")
        where = f" [{event['node']}]" if event.get("node") else ""
        print(f"  warning{where}: {text}", file=sys.stderr, flush=True)


def cmd_run(args) -> int:
    from engine.config import ConfigError, load_config
    from engine.datasets import load_inputs
    from engine.runner import NoModelError, Runner
    from sessions.store import SessionStore, StoreError

    if args.steps is not None and args.steps < 1:
        _err("--steps must be at least 1")
        return EXIT_CONFIG
    if not args.config and not args.session:
        _err("give a CONFIG.toml to start a session, or --session ID to resume one")
        return EXIT_CONFIG
    store = SessionStore(args.store)
    try:
        if args.config:
            cfg = load_config(args.config)
            if args.session and store.exists(args.session):
                raise ConfigError(f"session {args.session} already exists; run with "
                                  f"--session {args.session} and no CONFIG to resume it")
            inputs = load_inputs(cfg)
            if args.session:
                store.path(args.session)  # validates the id
            runner = Runner.create(cfg, inputs, store=store, cache_dir=store.cache_dir,
                                   session_id=args.session, on_event=_progress)
        else:
            store.lock(args.session)
            session = store.load(args.session)
            runner = Runner(session, store=store, cache_dir=store.cache_dir, on_event=_progress)
    except ConfigError as exc:
        _err(str(exc))
        return EXIT_CONFIG
    except StoreError as exc:
        _err(str(exc))
        return EXIT_STORE

    from engine.config import local_default_note

    note = local_default_note(runner.session["config"])
    if note:
        print(note, file=sys.stderr)
    if not args.json:
        plan = runner.session["planned_calls"]
        print(f"session {runner.session['id']} ({runner.session['method']}): planned calls "
              f"base {plan.get('base', 0)}, optimizer {plan.get('optimizer', 0)}, "
              f"evaluator {plan.get('evaluator', 0)}", file=sys.stderr)
    try:
        code = asyncio.run(_run(runner, args.steps))
    except NoModelError as exc:
        _err(str(exc))
        code = EXIT_CONFIG
    finally:
        runner.gateway.close()
        store.close()
    summary = runner.summary()
    if args.json:
        print(json.dumps(summary, ensure_ascii=False))
    else:
        _print_summary(summary)
    if code:
        return code
    return EXIT_FAILED if summary["status"] == "failed" else 0


async def _run(runner, steps: int | None) -> int:
    """Run; the first Ctrl-C pauses after the step in flight, a second one stops at once."""
    loop = asyncio.get_running_loop()
    interrupted = {"n": 0}
    task = asyncio.current_task()

    def on_sigint():
        interrupted["n"] += 1
        if interrupted["n"] == 1:
            print("\npausing after this step (Ctrl-C again to stop now)", file=sys.stderr)
            runner.pause()
        else:
            task.cancel()

    try:
        loop.add_signal_handler(signal.SIGINT, on_sigint)
    except (NotImplementedError, RuntimeError):
        pass
    try:
        await runner.run(steps=steps)
    except asyncio.CancelledError:
        print("stopped; the last finished step is saved", file=sys.stderr)
    return 0


def _print_summary(summary: dict) -> None:
    calls = summary["calls"]
    plan = summary["planned_calls"]
    print(f"session {summary['session']}: {summary['status']} after {summary['steps']} steps")
    print("calls: " + ", ".join(f"{r} {calls.get(r, 0)}/{plan.get(r, 0)}"
                                for r in ("base", "optimizer", "evaluator"))
          + f"  cost ${summary['cost']:.4f}")
    if summary.get("parsed_first_time") is not None:
        print(f"structured answers parsed first time: {summary['parsed_first_time']:.0%}")
    if summary["best"]:
        print(f"best: {summary['best']['node']} reward {summary['best']['reward']:.2f}")
    if summary["final"]:
        print(f"final: {summary['final']['node']}")
        print(summary["final"]["text"])


# --------------------------------------------------------------------------- sessions

def cmd_sessions(args) -> int:
    from sessions.store import SessionStore, StoreError, summarize

    store = SessionStore(args.store)
    if args.action == "list":
        rows = store.list()
        if args.json:
            print(json.dumps(rows, ensure_ascii=False))
            return 0
        if not rows:
            print(f"no sessions in {store.root}")
            return 0
        print(f"{'id':10} {'method':14} {'status':8} {'steps':>5} {'nodes':>5} {'best':>5} "
              f"{'cost':>8}  updated")
        for r in rows:
            if r["status"] == "corrupt":
                print(f"{r['id']:10} {'?':14} corrupt   {r['error']}")
                continue
            best = "—" if r["best_reward"] is None else f"{r['best_reward']:.2f}"
            updated = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["updated"]))
            print(f"{r['id']:10} {r['method']:14} {r['status']:8} {r['steps']:5} {r['nodes']:5} "
                  f"{best:>5} {r['cost']:8.4f}  {updated}")
        return 0
    try:
        session = store.load(args.id)
    except StoreError as exc:
        _err(str(exc))
        return EXIT_STORE
    info = summarize(session)
    state = session.get("method_state", {})
    info["final"] = state.get("final")
    info["config"] = {"method": session["config"]["method"],
                      "models": {r: m["model"] for r, m in session["config"]["models"].items()},
                      "search": session["config"]["search"]}
    if args.json:
        print(json.dumps(info, ensure_ascii=False))
        return 0
    for key in ("id", "name", "method", "status", "steps", "nodes", "accepted", "final",
                "best_reward", "cost"):
        print(f"{key:12} {info[key]}")
    print(f"{'calls':12} " + ", ".join(f"{r} {n}/{info['planned_calls'].get(r, 0)}"
                                      for r, n in info["calls"].items()))
    return 0


# --------------------------------------------------------------------------- export

def cmd_export(args) -> int:
    from sessions.export import export
    from sessions.store import SessionStore, StoreError

    store = SessionStore(args.store)
    try:
        session = store.load(args.id)
        text = export(session, args.node, args.format)
    except StoreError as exc:
        _err(str(exc))
        return EXIT_STORE
    except KeyError as exc:
        _err(str(exc.args[0]))
        return EXIT_CONFIG
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
