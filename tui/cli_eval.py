"""`promptarbor eval`, `evals list|show` and `report` (DESIGN §8, §10).

    promptarbor eval --prompt SPEC [--prompt SPEC ...] [--data FILE|hf:NAME] [--judge J]
                     [--rubric TEXT] [--values NAMES] [--samples K] [--limit N]
                     [--query-field F] [--category-field F] [--models CONFIG.toml]
                     [--store DIR] [--max-cost USD] [--json]
    promptarbor evals list|show ID [--json]
    promptarbor report ID [--format md|csv|json|html] [-o FILE]

An evaluation's id is a hash of what it measures (prompts, items, judge, samples, seed,
models): running the same command again finds it, finishes it if it was interrupted, and
sends again only the samples that failed; every answer already paid for comes from the cache.
"""
from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from promptarbor.tui.cli import (EXIT_CONFIG, EXIT_PARTIAL, EXIT_STORE, _err, _export_target, _line, clean,
                     pause_on_sigint, store_code, to_json)


def _label(spec: str, taken: set[str]) -> str:
    """A short one-line name for a prompt (its spec), distinct from the others."""
    one = " ".join(spec.split())
    label = one if len(one) <= 28 else one[:27] + "…"
    base, n = label, 2
    while label in taken:
        label, n = f"{base} #{n}", n + 1
    taken.add(label)
    return label


def _prompts(specs: list[str], store) -> tuple[list[dict], list[dict]]:
    """Prompt specs -> prompts, and the sessions they came from (ValueError: one line)."""
    from promptarbor.engine.datasets import read_text
    from promptarbor.engine.evaluation import session_prompt, text_prompt

    prompts, sessions, taken = [], [], set()
    for i, spec in enumerate(specs, 1):
        # texts and files are named by their place and first words: "#2 You are a careful…"
        shown = spec.split(":", 1)[1] if spec.startswith(("text:", "file:")) else spec
        label = _label(f"#{i} {shown}" if spec.startswith(("text:", "file:")) else spec, taken)
        if spec.startswith("text:"):
            text = spec[len("text:"):]
            if not text.strip():
                raise ValueError("--prompt text: is empty")
            prompts.append(text_prompt(text, label, spec=spec))
        elif spec.startswith("file:"):
            text = read_text(spec[len("file:"):]).strip()
            if not text:
                raise ValueError(f"--prompt {spec}: the file is empty")
            prompts.append(text_prompt(text, label, spec=spec))
        else:
            session_id, _, node = spec.partition(":")
            session = store.load(session_id, move_aside=False)
            sessions.append(session)
            prompts.append(session_prompt(session, node or None, label))
    return prompts, sessions


def _models(args, sessions: list[dict]) -> tuple[dict, dict]:
    """Roles base and judge (and gateway settings): --models, else the first session."""
    from promptarbor.engine.config import load_config, validate_config

    if args.models:
        cfg = load_config(args.models)
    elif sessions:
        cfg = sessions[0]["config"]
        if "judge" not in cfg["models"]:  # a session made before the judge role
            cfg = {**cfg, "models": {**cfg["models"], "judge": dict(cfg["models"]["evaluator"])}}
    else:
        cfg = validate_config({})
    return {r: dict(cfg["models"][r]) for r in ("base", "judge")}, dict(cfg["gateway"])


def _values(args, sessions: list[dict]) -> tuple[list[dict] | None, str | None]:
    if args.judge != "conformity":
        return None, None
    from promptarbor.engine.config import ConfigError
    from promptarbor.engine.values import COMPOSITIONS, HH_COMPOSITIONS, builtin

    if args.values:
        names = [n.strip() for n in args.values.split(",") if n.strip()]
        if len(names) == 1 and names[0] in COMPOSITIONS:
            names = list(COMPOSITIONS[names[0]])
        table = builtin()["values"]
        unknown = [n for n in names if n not in table]
        if unknown:
            raise ConfigError(f"--values: unknown value {unknown[0]!r}; built in: "
                              f"{', '.join(sorted(table))} (or a composition: "
                              f"{', '.join(COMPOSITIONS)})")
        hh = {v for c in HH_COMPOSITIONS for v in COMPOSITIONS[c]}
        kind = "hh" if all(n in hh for n in names) else "schwartz"
        return [{"name": n, "definition": table[n]["definition"]} for n in names], kind
    for session in sessions:
        state = session.get("method_state") or {}
        if state.get("values"):
            return state["values"], state.get("kind", "hh")
    raise ConfigError("--judge conformity needs --values (a composition or value names) or "
                      "a PICACO session among the prompts")


def _estimate_line(runner) -> str:
    from promptarbor.engine.evaluation import estimate_cost

    est = estimate_cost(runner.evaluation, runner.doc["models"])
    calls = est["calls"]
    priced = all(est["priced"].values())
    cost = f"about ${est['total']:.4f}" if priced else (
        f"about ${est['total']:.4f} (no price known for "
        f"{', '.join(r for r, ok in est['priced'].items() if not ok)})")
    return (f"evaluation {runner.doc['id']}: {len(runner.evaluation.prompts)} prompts × "
            f"{len(runner.evaluation.items)} items × {runner.evaluation.k} samples; planned "
            f"calls base {calls['base']}, judge {calls['judge']}; "
            f"≈{est['tokens']['base']['in'] + est['tokens']['judge']['in']:,} tokens in, "
            f"{cost}")


async def _drive(runner, max_cost):
    pause_on_sigint(runner, "batch")
    try:
        return await runner.run(max_cost=max_cost)
    except asyncio.CancelledError:
        print("stopped; the last finished batch is saved", file=sys.stderr)
        return "paused"


def cmd_eval(args) -> int:
    from promptarbor.engine.config import ConfigError
    from promptarbor.engine.evalsets import load_eval_set
    from promptarbor.engine.evaluation import EvalRunner, prompt_tokens, spec_id
    from promptarbor.engine.gateway import CacheUnavailable
    from promptarbor.sessions.evals import EvalStore
    from promptarbor.sessions.store import SessionStore, StoreError

    if args.samples < 1 or args.samples > 20:
        _err("--samples must be between 1 and 20")
        return EXIT_CONFIG
    if args.limit is not None and args.limit < 1:
        _err("--limit must be at least 1")
        return EXIT_CONFIG
    if args.max_cost is not None and args.max_cost < 0:
        _err("--max-cost must be at least 0")
        return EXIT_CONFIG
    if args.judge == "pairwise" and len(args.prompt) < 2:
        _err("--judge pairwise compares prompts: give at least two --prompt")
        return EXIT_CONFIG
    if args.judge == "rubric" and not (args.rubric or "").strip():
        _err("--judge rubric needs --rubric TEXT: the criterion, in words")
        return EXIT_CONFIG
    try:
        store = SessionStore(args.store)
        evals = EvalStore(store)
        prompts, sessions = _prompts(args.prompt, store)
        models, settings = _models(args, sessions)
        values, kind = _values(args, sessions)
        found = load_eval_set(args.data, judge=args.judge, query_field=args.query_field,
                              category_field=args.category_field, limit=args.limit,
                              seed=args.seed)
        if not found["items"]:
            raise ConfigError("the eval set has no items")
        prompt_tokens(prompts, models["base"]["model"])
        spec = {"judge": args.judge, "samples": args.samples, "seed": args.seed,
                "rubric": args.rubric, "values": values, "kind": kind,
                "safety_category": "safety", "prompts": prompts, "items": found["items"],
                "models": {r: models[r]["model"] for r in ("base", "judge")},
                "data": {"source": found["source"], "n_total": found["n_total"],
                         "limit": args.limit, "category_field": found.get("category_field"),
                         "query_field": found.get("query_field")}}
        eval_id = spec_id(spec)
        evals.lock(eval_id)
        if evals.exists(eval_id):
            runner = EvalRunner(evals.load(eval_id), store=evals, cache_dir=store.cache_dir)
            print(f"evaluation {eval_id} exists: resuming it (answers already paid for come "
                  f"from the cache)", file=sys.stderr)
        else:
            runner = EvalRunner.create(spec, models, settings, name=args.name, store=evals,
                                       cache_dir=store.cache_dir)
    except (ConfigError, ValueError) as exc:
        _err(str(exc))
        return EXIT_CONFIG
    except (StoreError, CacheUnavailable) as exc:
        _err(str(exc))
        return store_code(exc)
    print(_estimate_line(runner), file=sys.stderr)  # before the first call
    sent_before = sum(u.requests for u in runner.gateway.usage.values())
    try:
        reason = asyncio.run(_drive(runner, args.max_cost))
    except (StoreError, CacheUnavailable) as exc:
        _err(f"{exc} (the last finished batch is saved)")
        return store_code(exc)
    finally:
        runner.gateway.close()
        evals.close()
        store.close()
    if reason == "budget":
        print(f"paused: the cost reached ${runner.cost():.4f} (--max-cost {args.max_cost}); "
              f"run the same command again to go on", file=sys.stderr)
    sent = sum(u.requests for u in runner.gateway.usage.values()) - sent_before
    print(f"requests sent by this command: {sent} (every other answer came from the cache "
          f"or an earlier run)", file=sys.stderr)
    verdict = runner.verdict()
    failed = sum(p["errors"] for p in verdict["prompts"])
    if args.json:
        print(to_json({k: v for k, v in verdict.items() if k != "items"}))
    else:
        _print_verdict(verdict)
    if verdict["status"] == "done" and failed:
        return EXIT_PARTIAL
    return 0


def _fmt(value, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _ci(ci) -> str:
    return "" if not ci else f" [{_fmt(ci[0])}, {_fmt(ci[1])}]"


def _print_verdict(v: dict) -> None:
    print(f"evaluation {v['evaluation']} ({v['status']}): judge {v['judge']} "
          f"({clean(v['judge_model'])}), {v['n']} items × {v['samples']} samples, "
          f"{v['scale']['unit']}, source {clean(v['data'].get('source'))}")
    width = max(len(clean(p["label"])) for p in v["prompts"])
    for p in v["prompts"]:
        extra = f"  errors {p['errors']}" if p["errors"] else ""
        tokens = f"  {p['tokens']} tokens" if p.get("tokens") is not None else ""
        print(f"  {clean(p['label']):{width}}  mean {_fmt(p['mean'])}{_ci(p['ci'])}  "
              f"n {p['n']}{tokens}{extra}")
    for d in v.get("deltas") or []:
        print(f"  {clean(d['label'])} − {clean(d['baseline'])}: {_fmt(d['mean'], 3)}{_ci(d['ci'])}"
              f"  wins {d['wins']} · ties {d['ties']} · losses {d['losses']} (n {d['n']})")
    if v.get("per_category"):
        print("per category:")
        for name, c in v["per_category"].items():
            means = "  ".join(f"{clean(p['label'])} {_fmt(p['mean'])}" for p in c["prompts"])
            delta = c.get("delta") or {}
            d = f"  Δ {_fmt(delta.get('mean'), 3)}{_ci(delta.get('ci'))}" if delta else ""
            print(f"  {clean(name)[:24]:24} n {c['n']:<4} {means}{d}")
    if v.get("regressions"):
        print(f"regressions ({len(v['regressions'])}; worst first):")
        for r in v["regressions"][:5]:
            print(f"  {r['item']}: {_fmt(r['score_baseline'])} → {_fmt(r['score_prompt'])}  "
                  f"{_line(r['query'])[:70]}")
    calls = ", ".join(f"{r} {n}" for r, n in v["calls"].items())
    print(f"calls: {calls}  cost ${v['cost']:.4f}")
    print(f"report: promptarbor report {v['evaluation']} --format html -o report.html")


def cmd_evals(args) -> int:
    from promptarbor.sessions.evals import EvalStore
    from promptarbor.sessions.store import SessionStore, StoreError

    try:
        evals = EvalStore(SessionStore(args.store))
        if args.action == "list":
            rows = evals.list()
            if args.json:
                print(to_json(rows))
                return 0
            if not rows:
                print("no evaluations")
            for r in rows:
                if r["status"] == "corrupt":
                    print(f"{clean(r['id']):12} corrupt  {_line(r['error'])}")
                    continue
                print(f"{r['id']:12} {clean(r['status']):8} {r['judge']:10} n {r['n']:<5} "
                      f"k {r['samples']}  ${r['cost']:.4f}  {_line(' vs '.join(r['prompts']))[:60]}")
            return 0
        from promptarbor.engine.evaluation import EvalRunner

        runner = EvalRunner(evals.load(args.id))
    except StoreError as exc:
        _err(str(exc))
        return store_code(exc)
    verdict = runner.verdict()
    runner.gateway.close()
    if args.json:
        print(to_json({k: v for k, v in verdict.items() if k != "items"}))
    else:
        _print_verdict(verdict)
    return 0


def cmd_report(args) -> int:
    from promptarbor.sessions.evals import EvalStore
    from promptarbor.sessions.report import render
    from promptarbor.sessions.store import SessionStore, StoreError

    try:
        store = SessionStore(args.store)
        target = _export_target(args.output, store) if args.output else None
        evals = EvalStore(store)
        if evals.exists(args.id):
            from promptarbor.engine.evaluation import EvalRunner

            runner = EvalRunner(evals.load(args.id))
            verdict = runner.verdict()
            runner.gateway.close()
        elif store.exists(args.id):
            from promptarbor.engine.evaluation import session_verdict

            verdict = session_verdict(store.load(args.id, move_aside=False))
        else:
            raise ValueError(f"no evaluation or session {args.id!r} in {store.root}")
        text = render(verdict, args.format)
        if not text.endswith("\n"):
            text += "\n"
    except ValueError as exc:
        _err(str(exc))
        return EXIT_CONFIG
    except StoreError as exc:
        _err(str(exc))
        return store_code(exc)
    if target is not None:
        try:
            Path(target).write_text(text, encoding="utf-8")
        except OSError as exc:
            _err(f"cannot write {args.output}: {exc.strerror or exc}")
            return EXIT_CONFIG
        print(f"wrote {clean(args.output)}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
