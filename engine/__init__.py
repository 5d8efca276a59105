"""PromptArbor's engine: gateway, tree, methods, runner. Pure Python, no UI imports.

Heavy libraries (litellm, torch, sentence-transformers) are imported lazily, where
they are first needed, so that importing the engine stays fast.
"""
import os

# litellm fetches its price table over the network at import unless told not to.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

__version__ = "0.1.0"
