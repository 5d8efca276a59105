"""The new-session wizard (`NewSessionScreen`): method, a model per role with its endpoint
(`api_base`) and the *name* of its key variable (`api_key_env`), a "test" button per role,
the method's hyper-parameters (the papers' defaults filled in), data files, a preview of the
data, and the plan: calls per role, estimated tokens and cost, and a time estimate from the
latency the tests measured. ctrl+s gives back the validated config and inputs, escape None.

Every field is checked as you type by the engine's own validator (`validate_config`, one
field at a time, so every problem shows beside its field at once, not only the first);
numbers are read as typed (`2.5` in a whole-number field is an error, never `25`). The
wizard keeps no key value anywhere: a value that looks like a key, typed where the
variable's name belongs, is refused, and the test's answer or error is redacted by the
gateway before it is shown.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.css.query import NoMatches
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, Select, Static

from ..text import head, one_line, safe, toast

# (row, label, what the role does): "default" fills every role left empty
ROLE_ROWS = (
    ("default", "all roles", "every role whose model is left empty below"),
    ("base", "base", "the model whose prompt is optimized"),
    ("optimizer", "optimizer", "writes the new prompts"),
    ("evaluator", "evaluator", "scores the answers during the search"),
    ("judge", "judge", "the held-out evaluation at the end (empty: the evaluator's)"),
)
# (config key, id part, column title) of a role's fields
ROLE_FIELDS = (("model", "model", "model"), ("api_base", "api-base", "api_base (URL)"),
               ("api_key_env", "key-env", "api_key_env (name)"))
MODEL_HINTS = {"default": "provider/model", "judge": "as the evaluator"}

# Rough tokens per call: (the role's messages without the answer it reads, its answer),
# sized on typical runs of each method family; the evaluator and judge also read one
# answer of the base model. Answers are capped by the role's max_tokens.
PER_CALL = {
    "drpo": {"base": (60, 350), "optimizer": (600, 450), "evaluator": (450, 300),
             "judge": (350, 250)},
    "vapo": {"base": (80, 120), "optimizer": (600, 350), "evaluator": (450, 250),
             "judge": (350, 250)},
    "picaco": {"base": (850, 250), "optimizer": (1100, 300), "evaluator": (450, 250),
               "judge": (450, 250)},
}
TEST_PROMPT = [{"role": "user", "content": "Reply with one word: ok"}]
TEST_MAX_TOKENS = 16
TEST_TIMEOUT = 30.0  # seconds at most for the test call

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KEY_PREFIXES = ("sk-", "sk_", "hf_", "gsk_", "xai-", "ghp_", "pk-", "AIza", "Bearer ")
_URL = re.compile(r"https?://\S+", re.I)

# model -> (input $, output $) per token, or None when litellm's table has no price (shared
# by every wizard: the table does not change while the app runs)
_PRICES: dict[str, tuple[float, float] | None] = {}
# (model, api_base) already called by a test in this process (litellm's set-up is paid)
_WARM: set[tuple] = set()


def looks_like_key(text: str) -> bool:
    """Whether a text typed as a variable's name is more likely the key itself."""
    if text.startswith(_KEY_PREFIXES):
        return True
    if not _ENV_NAME.fullmatch(text):
        return len(text) >= 20  # long, with characters no variable name has
    # a long mixed-case name with digits is a token, not a conventional variable name
    return len(text) >= 24 and any(c.isdigit() for c in text) and not text.isupper()


def short_error(error: str, width: int = 300) -> str:
    """A provider's error in one readable line: litellm's repeated class-name prefixes
    dropped, the status kept ("HTTP 401 authentication failed: …")."""
    text = one_line(" ".join(str(error).split()), 2000)
    status = re.search(r"\b(\w[\w ]*) \(HTTP (\d{3})\)", text)
    parts = [p for p in re.split(r"(?:litellm\.)?\b\w*(?:Error|Exception)\b(?::| -) ?", text)
             if p.strip()]
    core = parts[-1].strip() if parts else text
    if status and status.group(2) not in core:
        core = f"HTTP {status.group(2)} {status.group(1).strip()}: {core}"
    return one_line(core or text, width)


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{max(seconds, 0.1):.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    if seconds < 3600:
        minutes, rest = divmod(int(round(seconds)), 60)
        return f"{minutes} min {rest} s" if minutes < 10 and rest else f"{minutes} min"
    return f"{seconds / 3600:.1f} h"


def tokens(n: float) -> str:
    if n >= 1e6:
        return f"{n / 1e6:.1f} M"
    if n >= 1e3:
        return f"{n / 1e3:.0f}k"
    return f"{n:.0f}"


async def tiny_call(models: dict, settings: dict, role: str,
                    warm_up: bool = False) -> tuple[str | None, float, str]:
    """(engine thread) one small call through the gateway: (error, latency s, answer).

    `warm_up`: the process has not called this endpoint yet, so the first call also pays
    litellm's one-time set-up (seconds); a second tiny call then gives the latency."""
    from promptarbor.engine.gateway import Gateway

    gateway = Gateway(models, settings)
    try:
        result = await gateway.call(role, TEST_PROMPT, purpose="endpoint test")
        if warm_up and not result.error:
            again = await gateway.call(role, TEST_PROMPT, purpose="endpoint test", sample=1)
            if not again.error:
                result = again
    finally:
        gateway.close()
    return result.error, float(result.record.get("latency") or 0.0), result.text


async def look_up_prices(models: list[str]) -> dict[str, tuple[float, float] | None]:
    """(engine thread) each model's price per token from litellm's table, as the cost
    estimates of evaluations read it; None where the table has none."""
    from promptarbor.engine.gateway import _litellm

    try:
        table = _litellm().model_cost
    except Exception:
        table = {}
    out: dict[str, tuple[float, float] | None] = {}
    for model in models:
        entry = table.get(model) or table.get(model.split("/", 1)[-1]) or {}
        price_in, price_out = entry.get("input_cost_per_token"), entry.get("output_cost_per_token")
        out[model] = None if price_in is None else (float(price_in), float(price_out or 0.0))
    return out


class NewSessionScreen(ModalScreen[dict | None]):
    """The new-session wizard: method, models and endpoints, hyper-parameters, data, plan.

    Each method family has its own group of fields (the papers' defaults filled in); only
    the chosen method's group is shown and read.
    """

    BINDINGS = [Binding("escape", "cancel", "cancel"),
                Binding("ctrl+s", "create", "create")]
    # (key, label, default, "integer" | "number") per family; the defaults are the papers'
    NUMBERS = {
        "drpo": (("beam_width", "W beam width", 2, "integer"),
                 ("samples_per_state", "M samples per state", 3, "integer"),
                 ("depth", "D depth", 20, "integer"), ("icl_k", "K ICL examples", 2, "integer")),
        "vapo": (("iterations", "iterations", 10, "integer"),
                 ("expand_width", "expand width", 3, "integer"),
                 ("depth_limit", "depth limit", 5, "integer"),
                 ("batch_size", "batch size", 5, "integer"),
                 ("exploration", "w exploration", 2.5, "number")),
        "picaco": (("iterations", "T iterations", 10, "integer"),
                   ("prompts", "N prompts", 50, "integer"),
                   ("aligned_pool", "M1 aligned pool", 10, "integer"),
                   ("noise_pool", "M2 noise pool", 15, "integer"),
                   ("p_samples", "n samples for p_e", 10, "integer")),
    }
    # (key, label, what the file holds) of the data files per family
    FILES = {
        "drpo": (("seed", "seed queries", ".jsonl / .json / .txt: query"),
                 ("icl", "ICL examples", ".jsonl / .json: query, response")),
        "vapo": (("tasks", "task file", ".jsonl / .json / .csv: question, options, answer"),),
        "picaco": (("prompts", "prompts", ".jsonl: query"),
                   ("demonstrations", "demonstrations", ".jsonl: query, response")),
    }

    def __init__(self) -> None:
        super().__init__()
        self.errors: dict[str, str] = {}    # field id -> its problem (beside the field)
        self.warnings: dict[str, str] = {}  # field id -> a note that does not block
        self.problems: list[str] = []       # every problem, one line each (the summary)
        self.latency: dict[tuple, float] = {}  # (model, api_base) -> seconds, from tests
        self._built: tuple[dict, dict] | None = None
        self._plan: dict[str, int] | None = None
        self._pricing: set[str] = set()

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        from promptarbor.engine.config import METHODS
        from promptarbor.engine.values import COMPOSITIONS

        with Vertical(id="wizard"):
            title = Text("New session", style="bold")
            title.append("   ctrl+s create · esc cancel · tab next field", style="dim")
            yield Static(title, id="wizard-title")
            with VerticalScroll(id="wizard-form"):
                with Horizontal(classes="w-row"):
                    yield Label("name", classes="w-label")
                    yield Input(placeholder="optional", id="name", compact=True)
                with Horizontal(classes="w-row"):
                    yield Label("method", classes="w-label")
                    yield Select([(m, m) for m in METHODS], value="drpo", allow_blank=False,
                                 id="method", compact=True)
                yield Static("Models", classes="w-section")
                yield Static("model: a litellm string (all empty: the embedded "
                             "local/smollm2) · api_base: the server's URL · api_key_env: the "
                             "variable's name, never the key", classes="w-hint")
                with Horizontal(classes="w-role-head"):
                    yield Label("role", classes="w-role")
                    for _, _, title_ in ROLE_FIELDS:
                        yield Label(title_, classes="w-col")
                    yield Label("", classes="w-test")
                for role, label, what in ROLE_ROWS:
                    with Horizontal(classes="w-role-row"):
                        role_label = Label(label, classes="w-role")
                        role_label.tooltip = what
                        yield role_label
                        yield Input(placeholder=MODEL_HINTS.get(role, "as all roles"),
                                    id=f"model-{role}", compact=True, classes="w-col")
                        yield Input(placeholder="http://host/v1", id=f"api-base-{role}",
                                    compact=True, classes="w-col")
                        yield Input(placeholder="VARIABLE_NAME", id=f"key-env-{role}",
                                    compact=True, classes="w-col")
                        yield Button("test", id=f"test-{role}", compact=True, classes="w-test",
                                     tooltip=f"one tiny call to the {label} endpoint")
                    with Horizontal(classes="w-role-errors", id=f"errs-{role}"):
                        for _, part, _ in ROLE_FIELDS:  # each under its field
                            yield Static(id=f"err-{part}-{role}", classes="w-col")
                    yield Static(id=f"result-{role}", classes="w-result")
                for fam, numbers in self.NUMBERS.items():
                    with Vertical(id=f"group-{fam}", classes="group"):
                        yield Static("Search (the paper's defaults)", classes="w-section")
                        for key, label, value, _ in numbers:
                            with Horizontal(classes="w-row"):
                                yield Label(label, classes="w-num-label")
                                yield Input(str(value), id=f"num-{fam}-{key}", compact=True,
                                            classes="w-num", tooltip=f"search.{key}")
                                yield Static(id=f"err-num-{fam}-{key}", classes="w-beside")
                        if fam == "drpo":
                            yield Checkbox("ICL examples already optimized (skip ICL "
                                           "optimization)", id="icl-opt", compact=True)
                        if fam == "vapo":
                            with Horizontal(classes="w-row"):
                                yield Label("meta-prompts", classes="w-num-label")
                                yield Select([("ValueCoT meta-prompts", "valuecot"),
                                              ("basis meta-prompts (PromptAgent)", "basis")],
                                             value="valuecot", allow_blank=False,
                                             id="meta-prompts", compact=True)
                            with Horizontal(classes="w-row"):
                                yield Label("task type", classes="w-num-label")
                                yield Select([("multiple choice (accuracy)", "multiple-choice"),
                                              ("free-form (judge score)", "free-form")],
                                             value="multiple-choice", allow_blank=False,
                                             id="task-type", compact=True)
                        if fam == "picaco":
                            with Horizontal(classes="w-row"):
                                yield Label("composition", classes="w-num-label")
                                yield Select([(name, name) for name in COMPOSITIONS],
                                             value="harmlessness", allow_blank=False,
                                             id="composition", compact=True)
                        yield Static("Data (empty: the built-in sets)", classes="w-section")
                        for key, label, holds in self.FILES[fam]:
                            with Horizontal(classes="w-row"):
                                yield Label(label, classes="w-num-label")
                                yield Input(placeholder=holds, id=f"data-{fam}-{key}",
                                            compact=True, classes="w-file")
                            yield Static(id=f"err-data-{fam}-{key}", classes="w-below")
                yield Static(id="preview")
            yield Static(id="plan")
            with Horizontal(id="wizard-buttons"):
                yield Button("Create (ctrl+s)", id="create", variant="primary", compact=True)
                yield Button("Cancel (esc)", id="cancel", compact=True)

    def on_mount(self) -> None:
        for field in self.query(Input):  # a steady cursor (and the same picture each time)
            field.cursor_blink = False
        for role, _, _ in ROLE_ROWS:
            self.query_one(f"#errs-{role}").display = False
            self.query_one(f"#result-{role}").display = False
        self.show_group()
        self.update_plan()
        self.query_one("#name", Input).focus()
        self._initial = self._form()

    def _form(self) -> dict:
        """What the form holds now: every field's value by its id."""
        values = {}
        for widget in self.query("Input, Select, Checkbox"):
            if widget.id:
                values[widget.id] = widget.value
        return values

    def action_cancel(self) -> None:
        """Cancel; a form changed from how it opened is dropped only once the person says so."""
        if self._form() == getattr(self, "_initial", None):
            self.dismiss(None)
            return
        from .modals import ConfirmScreen

        def decided(drop: bool | None) -> None:
            if drop:
                self.dismiss(None)

        self.app.push_screen(ConfirmScreen("Drop this new session? What you filled in is lost."),
                             decided)

    def on_resize(self) -> None:
        self._fit()

    def _fit(self) -> None:
        """The form takes what the title, the plan and the buttons leave of the screen's
        height: its fields scroll, the plan and the buttons stay in view."""
        try:
            form, plan = self.query_one("#wizard-form"), self.query_one("#plan")
        except NoMatches:
            return
        # the wizard's border, title and buttons, and the plan's fixed height
        form.styles.max_height = max(3, self.size.height - 4 - plan.styles.height.value)

    @property
    def family(self) -> str:
        from promptarbor.engine.config import family

        return family(str(self.query_one("#method", Select).value))

    def show_group(self) -> None:
        for fam in self.NUMBERS:
            self.query_one(f"#group-{fam}").display = fam == self.family

    # ------------------------------------------------------------------ reading the form

    def _value(self, selector: str) -> str:
        return self.query_one(selector, Input).value.strip()

    def models_raw(self) -> dict:
        """The [models] tables as typed: only the fields that are filled in."""
        models: dict = {}
        for role, _, _ in ROLE_ROWS:
            table = {key: self._value(f"#{part}-{role}") for key, part, _ in ROLE_FIELDS}
            table = {k: v for k, v in table.items() if v}
            if table:
                models[role] = table
        return models

    @staticmethod
    def parse_number(text: str, kind: str):
        """A number as typed: an int for a whole-number field when it is one, else a float
        (the validator then says it must be whole), else the text itself (it says why)."""
        text = text.strip()
        try:
            return int(text) if kind == "integer" else float(text)
        except ValueError:
            try:
                return float(text)
            except ValueError:
                return text

    def _search_raw(self) -> dict:
        fam = self.family
        return {key: self.parse_number(self._value(f"#num-{fam}-{key}"), kind)
                for key, _, _, kind in self.NUMBERS[fam]}

    def _settings_raw(self) -> tuple[dict, dict, dict | None]:
        """(search choices, data choices without files, values) of the chosen method."""
        fam = self.family
        method = self.query_one("#method", Select).value
        search, data, values = {}, {}, None
        if fam == "drpo":
            data["icl_optimized"] = self.query_one("#icl-opt", Checkbox).value
        if fam == "vapo":
            if method == "vapo":
                search["meta_prompts"] = self.query_one("#meta-prompts", Select).value
            data["task_type"] = self.query_one("#task-type", Select).value
        if fam == "picaco":
            values = {"composition": self.query_one("#composition", Select).value}
        return search, data, values

    def raw_config(self) -> dict:
        fam = self.family
        search, data, values = self._settings_raw()
        raw: dict = {"method": self.query_one("#method", Select).value,
                     "name": self._value("#name"), "models": self.models_raw(),
                     "search": {**self._search_raw(), **search}, "data": dict(data)}
        if values is not None:
            raw["values"] = values
        for key, _, _ in self.FILES[fam]:
            value = self._value(f"#data-{fam}-{key}")
            if value:
                raw["data"][key] = value
        return raw

    def build(self):
        """(config, inputs) or raise ConfigError."""
        from promptarbor.engine.config import validate_config
        from promptarbor.engine.datasets import load_inputs

        cfg = validate_config(self.raw_config(), base_dir=Path.cwd())
        return cfg, load_inputs(cfg)

    # ------------------------------------------------------------------ checking

    @staticmethod
    def _problem(raw: dict) -> str | None:
        """The validator's message for a config, None when it is valid."""
        from promptarbor.engine.config import ConfigError, validate_config

        try:
            validate_config(raw, base_dir=Path.cwd())
        except ConfigError as exc:
            return str(exc)
        return None

    def _effective_models(self) -> dict | None:
        """Each role's settings as the session will have them (None: [models] is invalid)."""
        from promptarbor.engine.config import ConfigError, validate_config

        try:
            return validate_config({"method": self.query_one("#method", Select).value,
                                    "models": self.models_raw()})["models"]
        except ConfigError:
            return None

    def check_fields(self) -> None:
        """Every field checked on its own, so that every problem is known (and shown beside
        its field), not only the first the whole config would raise."""
        from promptarbor.engine.config import LOCAL_MODEL, ConfigError, validate_config
        from promptarbor.engine.datasets import load_inputs

        errors: dict[str, str] = {}
        warnings: dict[str, str] = {}
        method = self.query_one("#method", Select).value
        fam = self.family
        models = self.models_raw()
        for role, table in models.items():
            problem = self._problem({"method": method, "models": {role: table}})
            if problem:
                errors[f"model-{role}"] = problem
            base = table.get("api_base")
            if base and not _URL.fullmatch(base):
                errors[f"api-base-{role}"] = "must start with http:// or https://"
            name = table.get("api_key_env")
            if name and looks_like_key(name):
                errors[f"key-env-{role}"] = "looks like a key: give the variable's name"
            elif name and not _ENV_NAME.fullmatch(name):
                errors[f"key-env-{role}"] = "a variable's name: letters, digits and _"
            elif name and not os.environ.get(name):
                warnings[f"key-env-{role}"] = "not set in this environment"
        effective = self._effective_models() or {}
        for role, cfg in effective.items():
            if cfg.get("model") != LOCAL_MODEL or not cfg.get("api_base"):
                continue
            # the row that gave this role its api_base (the judge inherits the evaluator's,
            # PICACO's optimizer the base model's)
            rows = [role, {"judge": "evaluator", "optimizer": "base"}.get(role), "default"]
            row = next((r for r in rows if models.get(r, {}).get("api_base")), "default")
            if f"model-{row}" not in errors:
                errors[f"model-{row}"] = "needs a model for its api_base (openai/NAME)"
        default = models.get("default", {})
        for role, table in models.items():  # a provider that needs a key, and none named
            named = table.get("api_key_env") or default.get("api_key_env")
            if table.get("model", "").startswith("openai/") and not named \
                    and not os.environ.get("OPENAI_API_KEY") \
                    and f"key-env-{role}" not in errors:
                warnings[f"key-env-{role}"] = ("openai/ needs a key variable (any value "
                                               "if the server takes none)")
        for key, value in self._search_raw().items():
            field = f"num-{fam}-{key}"
            if value == "":
                errors[field] = "give a number"
                continue
            problem = self._problem({"method": method, "search": {key: value}})
            if problem:
                errors[field] = problem
        _, data, values = self._settings_raw()
        extra = {"values": values} if values is not None else {}
        for key, _, _ in self.FILES[fam]:
            path = self._value(f"#data-{fam}-{key}")
            if not path:
                continue
            raw = {"method": method, "data": {**data, key: path}, **extra}
            problem = self._problem(raw)
            if problem is None:
                try:
                    load_inputs(validate_config(raw, base_dir=Path.cwd()))
                except ConfigError as exc:
                    problem = str(exc)
                except Exception as exc:  # a file the readers did not expect: shown
                    problem = f"data.{key}: {type(exc).__name__}: {exc}"
            if problem:
                errors[f"data-{fam}-{key}"] = problem
        self.errors, self.warnings = errors, warnings

    def field_name(self, field: str) -> str:
        """How the summary names a field: "base api_base", "W beam width", "seed queries"."""
        for role, label, _ in ROLE_ROWS:
            for key, part, _ in ROLE_FIELDS:
                if field == f"{part}-{role}":
                    return f"{label} {key}"
        for fam, numbers in self.NUMBERS.items():
            for key, label, _, _ in numbers:
                if field == f"num-{fam}-{key}":
                    return label
            for key, label, _ in self.FILES[fam]:
                if field == f"data-{fam}-{key}":
                    return f"{label} file"
        return field

    def _show_field_notes(self) -> None:
        """Each field's problem (red) or note (yellow) beside it; its input marked."""
        fields = [f"{part}-{role}" for role, _, _ in ROLE_ROWS for _, part, _ in ROLE_FIELDS]
        fam = self.family
        fields += [f"num-{fam}-{key}" for key, _, _, _ in self.NUMBERS[fam]]
        fields += [f"data-{fam}-{key}" for key, _, _ in self.FILES[fam]]
        for field in fields:
            message = self.errors.get(field) or self.warnings.get(field) or ""
            note = self.query_one(f"#err-{field}", Static)
            if message:
                # beside the field its dotted name is clear from the place: drop it
                message = re.sub(r"^(?:search|data)\.\w+:? ", "", message)
                note.update(safe(("✗ " if field in self.errors else "! ") + message))
            else:
                note.update("")
            note.set_class(field in self.errors, "w-error")
            note.set_class(field not in self.errors and bool(message), "w-warn")
            if not field.startswith(("model-", "api-base-", "key-env-")):  # columns stay
                note.display = bool(message)
            self.query_one(f"#{field}", Input).set_class(field in self.errors, "-invalid")
        for role, _, _ in ROLE_ROWS:
            self.query_one(f"#errs-{role}").display = any(
                f"{part}-{role}" in self.errors or f"{part}-{role}" in self.warnings
                for _, part, _ in ROLE_FIELDS)

    # ------------------------------------------------------------------ the plan

    def on_input_changed(self) -> None:
        self.update_plan()

    def on_select_changed(self) -> None:
        self.show_group()
        self.update_plan()

    def on_checkbox_changed(self) -> None:
        self.update_plan()

    def preview(self, inputs: dict) -> Text:
        """The first rows of the data the session will use."""
        def rows(title: str, texts: list[str], total: int) -> Text:
            out = Text(f"{title}: ", style="bold")
            out.append_text(safe(" · ".join(head(t, 50) for t in texts[:3])))
            out.append(f"  ({total} in all)\n")
            return out
        out = Text()
        if "seed" in inputs:
            out.append_text(rows("First seed queries", inputs["seed"], len(inputs["seed"])))
            out.append_text(rows("First ICL examples", [q for q, _ in inputs["icl"]],
                                 len(inputs["icl"])))
        if "tasks" in inputs:
            out.append_text(rows("First task items", [t["question"] for t in inputs["tasks"]],
                                 len(inputs["tasks"])))
        if "prompts" in inputs:
            out.append_text(rows("First prompts", inputs["prompts"], len(inputs["prompts"])))
            out.append_text(rows("Values", [v["name"] for v in inputs["values"]],
                                 len(inputs["values"])))
        out.rstrip()
        return out

    def update_plan(self) -> None:
        """Check every field, then show the problems, or the plan with its estimates."""
        from promptarbor.engine.config import ConfigError, check_plan
        from promptarbor.engine.runner import plan_calls

        self._built, self._plan = None, None
        self.check_fields()
        self._show_field_notes()
        problems = [message if message.startswith(("search.", "data.", "[models"))
                    else f"{self.field_name(field)}: {message}"
                    for field, message in self.errors.items()]
        if not problems:
            try:
                cfg, inputs = self.build()
                plan = plan_calls(cfg, inputs)
                check_plan(plan, allow_large=False)
                self._built, self._plan = (cfg, inputs), plan
            except ConfigError as exc:
                problems.append(str(exc))
            except Exception as exc:  # a data file the readers did not expect: shown
                problems.append(f"{type(exc).__name__}: {exc}")
        self.problems = problems
        if problems:
            out = Text(f"✗ {len(problems)} problem{'s' if len(problems) > 1 else ''}"
                       f"{', marked beside the fields' if self.errors else ''}:", style="bold red")
            for problem in problems[:3]:
                out.append("\n  ")
                out.append_text(safe(one_line(problem, 300), style="red"))
            if len(problems) > 3:
                out.append(f"\n  … and {len(problems) - 3} more", style="red")
            self.query_one("#plan", Static).update(out)
            return
        self.query_one("#preview", Static).update(self.preview(self._built[1]))
        self.show_estimate()

    def show_estimate(self) -> None:
        """Planned calls, tokens and cost, and the time the measured latency gives."""
        from promptarbor.engine.local_model import is_embedded

        if self._built is None or self._plan is None:
            return
        cfg, plan = self._built[0], self._plan
        bound = " at most" if self.family == "vapo" else ""
        out = Text(f"Planned calls{bound}: " + ", ".join(f"{r} {n}" for r, n in plan.items())
                   + f" = {sum(plan.values())}", style="bold")
        sizes = PER_CALL[self.family]
        total_in = total_out = 0.0
        cost, unknown, missing = 0.0, [], []
        for role, calls in plan.items():
            if not calls or role not in cfg["models"]:
                continue
            settings = cfg["models"][role]
            read, answer = sizes.get(role, sizes["evaluator"])
            answer = min(answer, settings.get("max_tokens") or answer)
            base_answer = min(sizes["base"][1], cfg["models"]["base"].get("max_tokens") or 1e9)
            t_in = calls * (read + (base_answer if role in ("evaluator", "judge") else 0))
            t_out = calls * answer
            total_in, total_out = total_in + t_in, total_out + t_out
            model = settings["model"]
            price = (0.0, 0.0) if is_embedded(model) else _PRICES.get(model, "?")
            if price == "?":
                missing.append(model)
            elif price is None:
                unknown.append((role, model))
            else:
                cost += t_in * price[0] + t_out * price[1]
        out.append(f"\nTokens ≈ {tokens(total_in + total_out)} (in {tokens(total_in)}, "
                   f"out {tokens(total_out)}) · ")
        if missing:
            out.append("cost: looking up prices…", style="dim")
            self._look_up(missing)
        elif unknown:
            models = ", ".join(dict.fromkeys(m for _, m in unknown))
            out.append_text(safe(f"cost unknown (no price known for {models})", style="yellow"))
            if cost:
                out.append(f"; the priced roles ≈ ${cost:.2f}")
        elif all(is_embedded(cfg["models"][r]["model"]) for r, n in plan.items() if n):
            out.append("cost $0 (the embedded model runs here)")
        else:
            out.append(f"cost ≈ ${cost:.2f}" if cost >= 0.01 else f"cost ≈ ${cost:.4f}")
        out.append("\n")
        out.append_text(self._time_line(cfg, plan))
        self.query_one("#plan", Static).update(out)

    def _time_line(self, cfg: dict, plan: dict) -> Text:
        """planned calls × measured latency ÷ calls in flight, summed over the roles."""
        seconds, measured, untested = 0.0, {}, []
        for role, calls in plan.items():
            if not calls or role not in cfg["models"]:
                continue
            settings = cfg["models"][role]
            latency = self.latency.get((settings["model"], settings.get("api_base")))
            if latency is None:
                untested.append(role)
            else:
                seconds += calls * latency
                measured.setdefault(f"{latency * 1000:.0f} ms", []).append(role)
        if not measured:
            return Text("Time: press test beside a role to measure its endpoint's latency",
                        style="dim")
        flight = cfg["gateway"]["concurrency"]
        line = Text(f"Time ≥ {duration(seconds / flight)}", style="bold")
        line.append(" (" + "; ".join(f"{', '.join(roles)} {ms} a call"
                                     for ms, roles in measured.items())
                    + f"; {flight} at a time; long answers take longer)")
        if untested:
            line.append(f" · not measured: {', '.join(untested)}", style="yellow")
        return line

    def _look_up(self, models: list[str]) -> None:
        wanted = [m for m in dict.fromkeys(models) if m not in self._pricing]
        if not wanted:
            return
        self._pricing.update(wanted)
        self.run_worker(self._prices(wanted), group="prices", exit_on_error=False)

    async def _prices(self, models: list[str]) -> None:
        try:
            found = await self._on_engine(look_up_prices(models))
        except Exception:
            found = {m: None for m in models}
        _PRICES.update(found)
        self._pricing.difference_update(models)
        if self.is_attached:
            self.show_estimate()

    async def _on_engine(self, coro):
        """Run engine work on the app's engine thread (a thread of its own without one)."""
        engine = getattr(self.app, "engine", None)
        if engine is not None:
            return await engine.run(coro)
        import asyncio

        return await asyncio.to_thread(asyncio.run, coro)

    # ------------------------------------------------------------------ testing a role

    @on(Button.Pressed, ".w-test")
    def _test_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.test_role(str(event.button.id).removeprefix("test-"))

    def test_role(self, row: str) -> None:
        """One tiny call to the row's endpoint, in a worker; the result in one line."""
        from promptarbor.engine.config import GATEWAY_DEFAULTS

        result = self.query_one(f"#result-{row}", Static)
        result.display = True
        self.update_plan()
        bad = [f for _, part, _ in ROLE_FIELDS if (f := f"{part}-{row}") in self.errors]
        effective = self._effective_models()
        if bad or effective is None:
            result.update(Text("✗ fix this row's fields first", style="red"))
            return
        role = "base" if row == "default" else row
        if row == "default":  # what a role left empty gets
            from promptarbor.engine.config import validate_config

            table = self.models_raw().get("default", {})
            settings = dict(validate_config({"models": {"default": table}})["models"]["base"])
        else:
            settings = dict(effective[role])
        settings.update(max_tokens=TEST_MAX_TOKENS, temperature=0.0,
                        timeout=min(settings.get("timeout") or TEST_TIMEOUT, TEST_TIMEOUT))
        gateway = {**GATEWAY_DEFAULTS, "retries": 0, "cache": False, "timeout": TEST_TIMEOUT}
        result.update(safe(f"… testing {settings['model']}"
                           + (f" at {settings['api_base']}" if settings.get("api_base") else ""),
                           style="dim"))
        result.tooltip = None
        self.run_worker(self._test(row, role, settings, gateway), group=f"test-{row}",
                        exclusive=True, exit_on_error=False)

    async def _test(self, row: str, role: str, settings: dict, gateway: dict) -> None:
        endpoint = (settings["model"], settings.get("api_base"))
        try:
            error, latency, _ = await self._on_engine(
                tiny_call({role: settings}, gateway, role, warm_up=endpoint not in _WARM))
        except Exception as exc:  # the gateway itself refused (a bad setting): shown
            error, latency = f"{type(exc).__name__}: {exc}", 0.0
        try:
            result = self.query_one(f"#result-{row}", Static)
        except NoMatches:  # the wizard was closed meanwhile
            return
        model = settings["model"]
        if error:
            from promptarbor.engine.secrets import Redactor

            error = Redactor([settings.get("api_key_env")]).redact(error)  # the gateway did too
            line = short_error(error)
            if "credentials" in line.lower() and not settings.get("api_key_env"):
                line += " (set api_key_env)"
            result.update(safe(f"✗ {line}", style="red"))
            result.tooltip = safe(one_line(error, 2000))
            return
        _WARM.add(endpoint)
        self.latency[endpoint] = latency
        result.update(safe(f"✓ ok · {latency * 1000:.0f} ms · {model.split('/', 1)[-1]}",
                           style="green"))
        self.show_estimate()

    # ------------------------------------------------------------------ creating

    def action_create(self) -> None:
        self.update_plan()
        if self.problems or self._built is None:
            first = next(iter(self.errors), None)
            toast(self, self.problems[0] if self.problems else "the config is not valid",
                  severity="error")
            if first:
                field = self.query_one(f"#{first}", Input)
                field.focus()
                field.scroll_visible()
            return
        cfg, inputs = self._built
        self.dismiss({"config": cfg, "inputs": inputs})

    @on(Button.Pressed, "#create")
    def _create(self) -> None:
        self.action_create()

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.action_cancel()
