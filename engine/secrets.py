"""Key values never leave the process: they are redacted from every text we store or show.

A provider's error message can echo the request's Authorization header, and a hostile
endpoint can put anything in an answer. The gateway passes every error and every answer
through `Redactor.redact` before it is recorded, cached, stored or shown.

The values redacted are those the gateway can know: the variables named by a role's
`api_key_env` or by one of its deployments' (`key_env_names`), the provider variables
litellm reads (below), and any variable whose name says it holds a key, token, secret or
password. Bearer tokens and `sk-…`-style keys are masked by shape as well, whatever their
source.
"""
from __future__ import annotations

import os
import re
from typing import Any, Iterable

MASK = "[redacted]"

# Variables litellm reads for its providers (a superset is harmless: only values are used).
PROVIDER_VARIABLES = (
    "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AZURE_API_KEY", "AZURE_OPENAI_API_KEY",
    "AZURE_AD_TOKEN", "GEMINI_API_KEY", "GOOGLE_API_KEY", "PALM_API_KEY", "VERTEXAI_API_KEY",
    "MISTRAL_API_KEY", "CODESTRAL_API_KEY", "COHERE_API_KEY", "CO_API_KEY", "GROQ_API_KEY",
    "TOGETHERAI_API_KEY", "TOGETHER_API_KEY", "DEEPSEEK_API_KEY", "OPENROUTER_API_KEY",
    "OR_API_KEY", "HUGGINGFACE_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN",
    "REPLICATE_API_KEY", "REPLICATE_API_TOKEN", "FIREWORKS_API_KEY", "FIREWORKS_AI_API_KEY",
    "PERPLEXITYAI_API_KEY", "PERPLEXITY_API_KEY", "XAI_API_KEY", "CEREBRAS_API_KEY",
    "DEEPINFRA_API_KEY", "ANYSCALE_API_KEY", "NVIDIA_NIM_API_KEY", "SAMBANOVA_API_KEY",
    "AI21_API_KEY", "NLP_CLOUD_API_KEY", "ALEPH_ALPHA_API_KEY", "VOYAGE_API_KEY",
    "DATABRICKS_API_KEY", "WATSONX_APIKEY", "WATSONX_API_KEY", "CLOUDFLARE_API_KEY",
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_BEARER_TOKEN_BEDROCK",
    "OLLAMA_API_KEY", "HOSTED_VLLM_API_KEY", "LM_STUDIO_API_KEY", "LITELLM_API_KEY",
    "LITELLM_MASTER_KEY",
)
_SECRET_NAME = re.compile(r"(API_?KEY|APIKEY|TOKEN|SECRET|PASSWORD|PASSWD|ACCESS_KEY)", re.I)
# Shapes that are keys wherever they come from: "Bearer <token>", "sk-…", "sk-ant-…".
_SHAPES = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{16,}|\bsk-[A-Za-z0-9_-]{8,}")
_MIN_LENGTH = 6  # shorter values ("1", "true") would mask ordinary words


def secret_values(extra_names: Iterable[str] = ()) -> list[str]:
    """The values to redact, longest first (so a key containing another is masked whole)."""
    names = set(PROVIDER_VARIABLES) | {n for n in extra_names if n}
    names |= {n for n in os.environ if _SECRET_NAME.search(n)}
    values = {os.environ.get(n) or "" for n in names}
    return sorted((v for v in values if len(v) >= _MIN_LENGTH), key=len, reverse=True)


def key_env_names(models: dict) -> list[str]:
    """Every key variable a gateway's roles name: each role's `api_key_env` and each of its
    deployments' (engine.deployments)."""
    names: list[str] = []
    for cfg in models.values():
        if not isinstance(cfg, dict):
            continue
        names.append(cfg.get("api_key_env"))
        for dep in cfg.get("deployments") or ():
            if isinstance(dep, dict):
                names.append(dep.get("api_key_env"))
    return list(dict.fromkeys(n for n in names if isinstance(n, str) and n))


class Redactor:
    """Masks known key values (read from the environment at each call) and key shapes."""

    def __init__(self, key_env_names: Iterable[str] = ()):
        self.names = [n for n in key_env_names if n]

    def redact(self, text: Any) -> Any:
        if not isinstance(text, str) or not text:
            return text
        for value in secret_values(self.names):
            if value in text:
                text = text.replace(value, MASK)
        return _SHAPES.sub(lambda m: (m.group(1) or "") + MASK, text)

    def redact_all(self, value: Any) -> Any:
        """Every string inside a JSON-like value, redacted (a new value; the input is kept)."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, list):
            return [self.redact_all(v) for v in value]
        if isinstance(value, dict):
            return {k: self.redact_all(v) for k, v in value.items()}
        return value


def redact(text: Any, key_env_names: Iterable[str] = ()) -> Any:
    return Redactor(key_env_names).redact(text)
