"""The workbench's status lines: the title (session, method, base model and, always at the
right, the run state), the status under the tree and the progress line of a comparison on
the held-out set. Each returns plain `rich.text.Text` (session and model text never read as
markup).

The status shows the run state, a progress bar of calls done / planned with an ETA (from
`CallRate`, the rate of calls measured while the engine worked in this app), steps, tokens
and cost, the held-out evaluation (root or seed → final, and a final worse than its start
said so) and a sparkline of the best reward per level with its scale. It is one line when
everything fits, else two: state and progress first, then tokens, cost and the evaluation,
so nothing important is cut at 80 columns.
"""
from __future__ import annotations

import time

from rich.text import Text

from ..text import number, one_line, safe
from .plots import TIE, finite, spark_text, spark_values

ROLES = ("base", "optimizer", "evaluator", "judge")
GAP = "  "


class CallRate:
    """Calls per second, measured while the engine works in this app (every step, level or
    run since the workbench opened; a cached answer counts like any call). The workbench
    says when a job starts and ends (`observe`) and when a call is answered (`tick`). Each
    job's clock starts at its first answer, so a slow start (loading the model libraries)
    does not count against the rest of the run, and idle time never counts."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.seconds = 0.0             # finished jobs: time from first to last answer, calls
        self.calls = 0
        self._running = False
        self._first: float | None = None   # the running job: its first and last answer,
        self._last = 0.0                   # the calls answered after the first
        self._after = 0

    def observe(self, running: bool) -> None:
        if running and not self._running:
            self._first, self._after = None, 0
        elif not running and self._running and self._first is not None:
            self.seconds += self._last - self._first
            self.calls += self._after
            self._first = None
        self._running = running

    def tick(self) -> None:
        """A call of the running job was answered."""
        if not self._running:
            return
        now = self.clock()
        if self._first is None:
            self._first = now
        else:
            self._after += 1
        self._last = now

    def per_second(self) -> float | None:
        seconds, calls = self.seconds, self.calls
        if self._running and self._first is not None:
            seconds, calls = seconds + self._last - self._first, calls + self._after
        return calls / seconds if seconds > 0 and calls > 0 else None

    def eta(self, remaining: int) -> float | None:
        """Seconds for `remaining` calls at the measured rate (None: nothing measured yet)."""
        rate = self.per_second()
        return remaining / rate if rate and remaining > 0 else None


def duration(seconds: float) -> str:
    """`42s`, `3m05s`, `2h07m`."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def tokens(n: int) -> str:
    """A token count, short: 812, 7.5k, 1.2M."""
    if n < 1000:
        return str(n)
    if n < 1_000_000:
        return f"{n / 1000:.1f}k".replace(".0k", "k")
    return f"{n / 1_000_000:.1f}M".replace(".0M", "M")


def progress_bar(done: int, planned: int, width: int = 10) -> Text:
    """`▕██████░░░░▏`: calls done of planned (full when the plan is met or exceeded)."""
    share = 1.0 if planned <= 0 and done > 0 else (min(1.0, done / planned) if planned > 0 else 0.0)
    filled = int(round(share * width))
    out = Text("▕", style="dim")
    out.append("█" * filled, style="green" if share >= 1 else "cyan")
    out.append("░" * (width - filled), style="dim")
    out.append("▏", style="dim")
    return out


def _count(value) -> int:
    n = finite(value)
    return int(n) if n is not None and n > 0 else 0


def run_state(snap: dict, busy: bool = False) -> tuple[str, str]:
    """The run state as shown (text, style): running, paused, done or failed."""
    status = str(snap["summary"].get("status", ""))
    if busy:
        return "● running", "bold yellow"
    return {"done": ("✓ done", "bold green"), "failed": ("✗ failed", "bold red"),
            "paused": ("■ paused", "bold")}.get(status, (f"● {one_line(status, 20)}", "bold"))


def title_text(snap: dict, busy: bool = False, width: int = 0) -> Text:
    """`PromptArbor ─ <id> <name> ─ <method> ─ base: <model>` with the run state at the
    right edge; when narrow the left part is cut, never the state."""
    state, style = run_state(snap, busy)
    left = (f"{snap['id']} {one_line(snap['name'], 60)} ─ {snap['method']} ─ "
            f"base: {snap['models'].get('base')}")
    width = width if width > 0 else 200
    room = width - len(state) - 1
    if len("PromptArbor ─ " + left) <= room:
        left = "PromptArbor ─ " + left
    if len(left) > room:
        left = left[: max(0, room - 1)] + "…"
    out = safe(left)
    out.append(" " * max(1, width - len(left) - len(state)))
    out.append(state, style=style)
    return out


def evaluation_text(snap: dict) -> Text | None:
    """The held-out evaluation: `eval aspects: root 1.93 → final 4.4 ▲`; a final worse than
    the prompt the search started from is said so: `final 2.1 < seed 2.4 ▼`."""
    ev = snap["summary"].get("evaluation")
    if not isinstance(ev, dict):
        return None
    root, final = finite(ev.get("root")), finite(ev.get("final"))
    if root is None and final is None:
        return None
    start = "seed" if snap.get("family") == "picaco" else "root"
    metric = one_line(ev.get("metric") or ev.get("judge") or "", 20)
    out = Text("eval ", style="dim")
    if metric:
        out.append_text(safe(f"{metric}: "))
    if root is not None and final is not None and final < root - TIE:
        out.append(f"final {final:.3g} < {start} {root:.3g} ▼", style="bold red")
        return out
    out.append(f"{start} {number(root, '.3g')} → final {number(final, '.3g')}", style="bold")
    if root is not None and final is not None and final > root + TIE:
        ci = ev["delta"].get("ci") if isinstance(ev.get("delta"), dict) else None
        low = finite(ci[0]) if isinstance(ci, (list, tuple)) and ci else None
        if low is not None and low <= 0:  # the paired difference's interval holds 0
            out.append(" ≈ no clear difference", style="dim")
        else:
            out.append(" ▲", style="green")
    return out


def _roles(snap: dict, detail: bool = True) -> Text:
    """Calls, tokens and cost per role: `base 13 (593→259 $0.000) · opti 6 (…)`; without
    `detail`, the calls only: `base 13 · opti 6 · eval 10`."""
    s, usage = snap["summary"], snap.get("usage") or {}
    calls = s.get("calls") or {}
    parts = []
    for role in ROLES:
        if role not in calls and role not in usage:
            continue
        u = usage.get(role) or {}
        cost = finite(u.get("cost")) or 0.0
        parts.append(f"{role[:4]} {_count(calls.get(role))}" + (
            f" ({tokens(_count(u.get('tokens_in')))}→{tokens(_count(u.get('tokens_out')))}"
            f" ${cost:.3f})" if detail else ""))
    return Text(" · ".join(parts), style="dim")


def _join(parts: list[Text]) -> Text:
    out = Text()
    for part in parts:
        if out.plain:
            out.append(GAP)
        out.append_text(part)
    return out


def _fits(parts: list[Text], width: int) -> bool:
    return sum(len(p.plain) for p in parts) + len(GAP) * (len(parts) - 1) <= width


def _fill(parts: list[Text], optional: list[Text], width: int) -> list[Text]:
    """`parts`, then each optional part that still fits (a cut one last, with "…")."""
    out = list(parts)
    for part in optional:
        if _fits(out + [part], width):
            out.append(part)
    return out


def status_text(snap: dict, width: int = 0, busy: bool = False,
                eta: float | None = None, live: int = 0) -> Text:
    """The status under the tree for a pane `width` cells wide (0: wide): one line when
    everything fits, else two (see the module's docstring). `live`: calls answered since
    the snapshot was taken."""
    width = width if width > 0 else 240
    s = snap["summary"]
    done_calls = sum(_count(v) for v in (s.get("calls") or {}).values()) + max(0, live)
    planned = sum(_count(v) for v in (s.get("planned_calls") or {}).values())
    label, style = run_state(snap, busy)
    state = Text(label, style=style)

    progress = progress_bar(done_calls, planned, 20 if width >= 150 else 10)
    progress.append(f" {done_calls}/{planned} calls")
    if eta is not None and done_calls < planned:
        progress.append(f" ETA {duration(eta)}" if busy else f" ~{duration(eta)} to go",
                        style="bold" if busy else "dim")
    elif busy and done_calls < planned:
        progress.append(" ETA …", style="dim")
    steps = Text(f"steps {_count(s.get('steps'))}")

    usage = snap.get("usage") or {}
    tok_in = sum(_count((usage.get(r) or {}).get("tokens_in")) for r in usage)
    tok_out = sum(_count((usage.get(r) or {}).get("tokens_out")) for r in usage)
    money = Text(f"tok {tokens(tok_in)}→{tokens(tok_out)}  ${number(s.get('cost'), '.4f')}")
    evaluation = evaluation_text(snap)
    spark = spark_text(spark_values(snap), 12 if width >= 150 else 8)
    roles, calls = _roles(snap), _roles(snap, detail=False)
    nxt = None if str(s.get("status")) == "done" and not busy else \
        safe(f"next: {one_line(snap.get('next'), 120)}", style="dim")
    failed = _count(s.get("failed_nodes"))
    fail = Text(f"✗ {failed} failed — R retry, l log", style="bold red") if failed else None

    # the failure count is important; `next:` yields to it (shown only when room is left)
    important = ([state, progress, steps, money] + ([evaluation] if evaluation else [])
                 + ([fail] if fail else []))
    for per_role in (roles, calls):  # one line, with as much per role as fits
        whole = important + [per_role, spark] + ([nxt] if nxt else [])
        if _fits(whole, width):
            return _join(whole)
    if _fits(important + [spark], width):  # one line without the roles
        line = _fill(important + [spark], [nxt] if nxt else [], width)
        return _join(line)
    first = [state, progress, steps]
    second = [money] + ([evaluation] if evaluation else [])
    if fail:  # the failure count whole on the first line, in place of `next:`
        first, second, nxt = [state, progress, fail], [steps] + second, None
    line1 = _join(first)
    if nxt is not None:
        room = width - len(line1.plain) - len(GAP)
        if room >= 12:
            cut = nxt.copy()
            cut.truncate(room, overflow="ellipsis")
            line1 = _join(first + [cut])
    line2 = _join(_fill(second, [spark, roles if _fits(second + [spark, roles], width)
                                 else calls], width))
    for line in (line1, line2):
        line.truncate(width, overflow="ellipsis")
    return Text("\n").join([line1, line2])


def compare_text(runner, calls: int | None = None) -> Text:
    """A comparison's progress: evaluation, batch, calls done of planned, cost."""
    ev = runner.evaluation
    totals = runner.gateway.totals()["calls"]
    done_calls = sum(totals.values()) if calls is None else calls
    planned = sum((runner.doc.get("planned_calls") or {}).values())
    return safe(
        f"comparing {ev.prompts[0].get('label')} with {ev.prompts[-1].get('label')}: "
        f"evaluation {runner.doc['id']} · batch {ev.state['cursor']}/{len(ev.batches())} · "
        f"calls {done_calls}/{planned} · ${runner.cost():.4f}  (p pauses)", style="bold")
