"""Values and compositions for PICACO (seeds/PICACO.txt §3, App. A, C; DESIGN §6).

The composition names and which values each holds follow the paper. Definitions, seed
sentences and the 8 demonstrations per composition are ours (engine/data/values.json).
"""
from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from pathlib import Path

COMPOSITIONS: dict[str, list[str]] = {
    "helpfulness": ["Coherence", "Complexity", "Verbosity", "Helpfulness"],
    "harmlessness": ["Non-Toxicity", "Fairness", "Information Safety", "Responsible Uses"],
    "hh-balance": ["Coherence", "Complexity", "Verbosity", "Helpfulness",
                   "Non-Toxicity", "Fairness", "Information Safety", "Responsible Uses"],
    "confucianism": ["Benevolence", "Conformity", "Tradition", "Security"],
    "modern-liberalism": ["Universalism", "Self-direction", "Hedonism", "Stimulation"],
    "schwartz": ["Self-direction", "Stimulation", "Hedonism", "Achievement", "Power",
                 "Security", "Conformity", "Tradition", "Benevolence", "Universalism"],
}
# HH compositions: S = the demonstrations, seed = the values' sentences, beta = 5.
# The others (Schwartz values, custom values): S = the target model's own elaboration of the
# values, seed = "reflect the values of ...", beta = 0.5, conformity weighted by relevance.
HH_COMPOSITIONS = ("helpfulness", "harmlessness", "hh-balance")


@lru_cache(maxsize=1)
def builtin() -> dict:
    path = Path(str(resources.files("promptarbor.engine.data").joinpath("values.json")))
    return json.loads(path.read_text(encoding="utf-8"))


def join_names(names: list[str]) -> str:
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + f", and {names[-1]}"


def seed_instruction(values: list[dict], kind: str) -> str:
    """e^0: HH — the values' seed sentences in a row; otherwise one sentence naming them."""
    if kind == "hh" and all(v.get("seed") for v in values):
        return " ".join(v["seed"] for v in values)
    return ("You should always provide responses that reflect the values of "
            f"{join_names([v['name'] for v in values])}.")


def composition_values(cfg: dict) -> list[dict]:
    spec = cfg["values"]
    if spec["custom"]:
        return [dict(v) for v in spec["custom"]]
    table = builtin()["values"]
    return [{"name": name, **table[name]} for name in COMPOSITIONS[spec["composition"]]]


def load_prompts(path: str | None, limit: int | None = None) -> list[str]:
    """PICACO's prompts: a seed-query file (JSONL / JSON / .txt / CSV), or the built-in set."""
    from .datasets import load_seed_queries

    return load_seed_queries(path, limit, what="prompts")


def load_demonstrations(path: str) -> list[dict]:
    """PICACO's demonstrations from a file: {"query", "response"} records, as ICL examples."""
    from .datasets import load_icl_examples

    return [{"query": q, "response": r}
            for q, r in load_icl_examples(path, what="demonstrations")]


def load_picaco_inputs(cfg: dict) -> dict:
    """Prompts (first N), values with definitions, demonstrations, and the seed instruction."""
    from .config import ConfigError

    data, search = cfg["data"], cfg["search"]
    prompts = load_prompts(data["prompts"], search["prompts"])
    values = composition_values(cfg)
    kind = cfg["values"]["kind"]
    if data["demonstrations"]:
        demos = load_demonstrations(data["demonstrations"])
    elif cfg["values"]["composition"] in builtin()["demonstrations"]:
        demos = [dict(d) for d in builtin()["demonstrations"][cfg["values"]["composition"]]]
    else:
        demos = []  # custom values without a file: the templates show no demonstrations
    if not prompts:
        raise ConfigError("no prompts")
    return {"prompts": prompts, "values": values, "demonstrations": demos,
            "composition": cfg["values"]["composition"], "kind": kind,
            "seed_instruction": search["seed_instruction"] or seed_instruction(values, kind)}
