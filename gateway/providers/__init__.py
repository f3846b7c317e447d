"""Provider kinds: the registry mapping a config ``type`` to its adapter module."""

from __future__ import annotations

from gateway.errors import InvalidRequest
from gateway.providers import anthropic, gemini, gemini_embeddings, openai, openai_embeddings
from gateway.providers.base import Adapter, Embedder

KINDS: dict[str, Adapter] = {
    "openai": openai,
    "anthropic": anthropic,
    "gemini": gemini,
}


def adapter_for(kind: str) -> Adapter:
    return KINDS[kind]


# The kinds with an embeddings API (Anthropic has none).
EMBEDDERS: dict[str, Embedder] = {
    "openai": openai_embeddings,
    "gemini": gemini_embeddings,
}


def embedder_for(kind: str, model: str) -> Embedder:
    """The embeddings side of ``kind``, or a 400 naming ``model`` (provider/model) when it has none."""
    embedder = EMBEDDERS.get(kind)
    if embedder is None:
        raise InvalidRequest(f"The model '{model}' cannot create embeddings: {kind} providers have no embeddings "
                             f"API. Use an embedding model (e.g. openai/text-embedding-3-small).", param="model",
                             code="capability_unmet")
    return embedder
