"""Provider kinds: the registry mapping a config ``type`` to its adapter module."""

from __future__ import annotations

from gateway.providers import anthropic, gemini, openai
from gateway.providers.base import Adapter

KINDS: dict[str, Adapter] = {
    "openai": openai,
    "anthropic": anthropic,
    "gemini": gemini,
}


def adapter_for(kind: str) -> Adapter:
    return KINDS[kind]
