"""The new-session wizard (`NewSessionScreen`): method, models, the method's hyper-parameters
(the papers' defaults filled in), data files, a preview of the data and the planned calls;
ctrl+s gives back the validated config and inputs, escape gives back None.
"""
from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, Select, Static

from ..text import head, safe, toast


class NewSessionScreen(ModalScreen[dict | None]):
    """The new-session wizard: method, models, hyper-parameters, data, and the planned calls.

    Each method family has its own group of fields (the papers' defaults filled in); only
    the chosen method's group is shown and read.
    """

    BINDINGS = [Binding("escape", "dismiss(None)", "cancel"), Binding("ctrl+s", "create", "create")]
    # (key, label, default, input type) per family; the defaults are the papers'
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
    # (key, placeholder) of the data files per family
    FILES = {
        "drpo": (("seed", "seed queries file (.jsonl/.json/.txt)"),
                 ("icl", "ICL examples file (.jsonl/.json)")),
        "vapo": (("tasks", "task file (.jsonl/.json/.csv: question, options, answer)"),),
        "picaco": (("prompts", "prompts file (.jsonl: query)"),
                   ("demonstrations", "demonstrations file (.jsonl: query, response)")),
    }

    def compose(self) -> ComposeResult:
        from promptarbor.engine.config import METHODS
        from promptarbor.engine.values import COMPOSITIONS

        with VerticalScroll(id="dialog"):
            yield Label(Text("New session   (ctrl+s create · esc cancel)", style="bold"))
            yield Input(placeholder="name (optional)", id="name")
            yield Select([(m, m) for m in METHODS], value="drpo", allow_blank=False, id="method")
            yield Label("Models (litellm strings; empty = the embedded local/smollm2)")
            for role in ("default", "base", "optimizer", "evaluator"):
                yield Input(placeholder=f"{role} model", id=f"model-{role}")
            for fam, numbers in self.NUMBERS.items():
                with Vertical(id=f"group-{fam}", classes="group"):
                    yield Label("Search (the paper's defaults)")
                    with Horizontal(classes="numbers"):
                        for key, label, value, kind in numbers:
                            yield Input(str(value), placeholder=label, id=f"num-{fam}-{key}",
                                        type=kind, tooltip=label)
                    if fam == "drpo":
                        yield Checkbox("ICL examples already optimized (skip ICL optimization)",
                                       id="icl-opt")
                    if fam == "vapo":
                        yield Select([("ValueCoT meta-prompts", "valuecot"),
                                      ("basis meta-prompts (PromptAgent)", "basis")],
                                     value="valuecot", allow_blank=False, id="meta-prompts")
                        yield Select([("multiple choice (accuracy)", "multiple-choice"),
                                      ("free-form (judge score)", "free-form")],
                                     value="multiple-choice", allow_blank=False, id="task-type")
                    if fam == "picaco":
                        yield Select([(name, name) for name in COMPOSITIONS],
                                     value="harmlessness", allow_blank=False, id="composition")
                    yield Label("Data (empty = built-in sets)")
                    for key, placeholder in self.FILES[fam]:
                        yield Input(placeholder=placeholder, id=f"data-{fam}-{key}")
            yield Static(id="preview")
            yield Static(id="plan")
            with Horizontal(id="buttons"):
                yield Button("Create (ctrl+s)", id="create", variant="primary")
                yield Button("Cancel (esc)", id="cancel")

    def on_mount(self) -> None:
        self.show_group()
        self.update_plan()

    @property
    def family(self) -> str:
        from promptarbor.engine.config import family

        return family(str(self.query_one("#method", Select).value))

    def show_group(self) -> None:
        for fam in self.NUMBERS:
            self.query_one(f"#group-{fam}").display = fam == self.family

    def raw_config(self) -> dict:
        fam = self.family
        raw: dict = {"method": self.query_one("#method", Select).value,
                     "name": self.query_one("#name", Input).value.strip(),
                     "models": {}, "search": {}, "data": {}}
        for role in ("default", "base", "optimizer", "evaluator"):
            value = self.query_one(f"#model-{role}", Input).value.strip()
            if value:
                raw["models"][role] = {"model": value}
        for key, _, _, kind in self.NUMBERS[fam]:
            value = self.query_one(f"#num-{fam}-{key}", Input).value.strip()
            try:
                raw["search"][key] = int(value) if kind == "integer" else float(value)
            except ValueError:
                raw["search"][key] = value  # validation reports it
        if fam == "drpo":
            raw["data"]["icl_optimized"] = self.query_one("#icl-opt", Checkbox).value
        if fam == "vapo":
            if raw["method"] == "vapo":
                raw["search"]["meta_prompts"] = self.query_one("#meta-prompts", Select).value
            raw["data"]["task_type"] = self.query_one("#task-type", Select).value
        if fam == "picaco":
            raw["values"] = {"composition": self.query_one("#composition", Select).value}
        for key, _ in self.FILES[fam]:
            value = self.query_one(f"#data-{fam}-{key}", Input).value.strip()
            if value:
                raw["data"][key] = value
        return raw

    def build(self):
        """(config, inputs) or raise ConfigError."""
        from promptarbor.engine.config import validate_config
        from promptarbor.engine.datasets import load_inputs

        cfg = validate_config(self.raw_config(), base_dir=Path.cwd())
        return cfg, load_inputs(cfg)

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
        from promptarbor.engine.config import ConfigError
        from promptarbor.engine.runner import plan_calls

        try:
            cfg, inputs = self.build()
        except ConfigError as exc:
            self.query_one("#plan", Static).update(safe(f"✗ {exc}", style="red"))
            return
        except Exception as exc:  # a data file the readers did not expect: shown, not raised
            self.query_one("#plan", Static).update(
                safe(f"✗ {type(exc).__name__}: {exc}", style="red"))
            return
        self.query_one("#preview", Static).update(self.preview(inputs))
        plan = plan_calls(cfg, inputs)
        bound = " at most" if self.family == "vapo" else ""
        self.query_one("#plan", Static).update(Text(
            f"Planned calls{bound}: " + ", ".join(f"{r} {n}" for r, n in plan.items())
            + f"  (total {sum(plan.values())})", style="bold"))

    def action_create(self) -> None:
        from promptarbor.engine.config import ConfigError

        try:
            cfg, inputs = self.build()
        except ConfigError as exc:
            toast(self, exc, severity="error")
            return
        except Exception as exc:
            toast(self, f"{type(exc).__name__}: {exc}", severity="error")
            return
        self.dismiss({"config": cfg, "inputs": inputs})

    @on(Button.Pressed, "#create")
    def _create(self) -> None:
        self.action_create()

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.dismiss(None)
