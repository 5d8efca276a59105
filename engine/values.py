"""Values and compositions for PICACO (seeds/PICACO.txt §3, App. C-D; DESIGN §6).

Definitions, seed instructions and demonstrations are written by us. The composition
names and which values each holds follow the paper.
"""
from __future__ import annotations

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
