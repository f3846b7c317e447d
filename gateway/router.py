"""From the model name a client sends to the provider and upstream model that serve it.

``provider/model`` picks that provider (the model part may itself contain slashes, as OpenRouter's
``meta-llama/llama-3.3-70b`` does); a plain name picks the first provider that declares it.
"""

from __future__ import annotations

from gateway.config import Provider
from gateway.errors import ModelNotFound, NoProviders
from gateway.providers.base import Target

NO_PROVIDER_HINT = (
    "No provider is configured: set OPENAI_API_KEY, ANTHROPIC_API_KEY or GEMINI_API_KEY, "
    "or add a [providers.NAME] table to config.toml (see config.example.toml)."
)


def resolve(model: str, providers: dict[str, Provider]) -> Target:
    if not providers:
        raise NoProviders(NO_PROVIDER_HINT)
    name, sep, upstream_model = model.partition("/")
    if sep and name in providers:
        provider = providers[name]
        if not upstream_model:
            raise ModelNotFound(f"The model '{model}' names no model after '{name}/'.", param="model")
        if provider.models is not None and upstream_model not in provider.models:
            listed = ", ".join(f"{name}/{m}" for m in provider.models) or "none"
            raise ModelNotFound(
                f"The model '{model}' does not exist: provider '{name}' serves {listed}.", param="model"
            )
        return Target(provider=provider, model=upstream_model, public_model=model)
    for provider in providers.values():
        if provider.models is not None and model in provider.models:
            return Target(provider=provider, model=model, public_model=f"{provider.name}/{model}")
    if sep:
        message = (f"The model '{model}' does not exist: there is no provider '{name}'. "
                   f"Configured providers: {', '.join(sorted(providers))}.")
    else:
        message = (f"The model '{model}' does not exist: name it as 'provider/model'; "
                   f"configured providers: {', '.join(sorted(providers))}.")
    raise ModelNotFound(message, param="model")
