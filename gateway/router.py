"""From the model a client names to an ordered list of targets that can serve it.

Names: ``provider/model`` picks that provider (the model part may hold slashes, as OpenRouter's
``meta-llama/llama-3.3-70b-instruct`` does); a plain name picks every configured provider that serves
it; a group name (``[routes.NAME]``) its targets; ``auto`` (also when ``model`` is omitted) the targets
of ``[routes.auto]``, else every model named in config, else each configured provider's default models
(``default = true`` in the catalog): never a model nobody named or chose as a default. Then the
candidates that cannot serve the request (tools, JSON output, images, context window, reasoning level)
are filtered out, and the rest ordered by the group's strategy and by health: open circuits are skipped
while others exist. ``plan`` is pure apart from the round-robin counters and the random source it was
given; time comes in as an argument.
"""

from __future__ import annotations

import fnmatch
import itertools
import random
from collections.abc import Callable
from urllib.parse import urlsplit

import msgspec

from gateway.catalog import (
    REASONING_ORDER,
    Capabilities,
    CatalogEntry,
    CatalogFile,
    Pricing,
)
from gateway.config import Config, ModelConfig, Provider, RouteConfig
from gateway.dialects.chat import ChatCall
from gateway.dialects.embeddings import EmbeddingsCall
from gateway.errors import InvalidRequest, ModelNotFound, NoProviders, PermissionDenied
from gateway.health import HealthBook
from gateway.providers.base import Target

AUTO = "auto"
NO_PROVIDER_HINT = (
    "No provider is configured: set OPENAI_API_KEY, ANTHROPIC_API_KEY or GEMINI_API_KEY, "
    "or add a [providers.NAME] table to config.toml (see config.example.toml)."
)
UNKNOWN_CAPABILITIES = Capabilities(tools=True, json=True, vision=True, reasoning="high")
# Images count as a flat number of prompt tokens in the estimate (OpenAI bills 85-1,105 per image).
IMAGE_TOKENS = 800


class Deployment(msgspec.Struct, frozen=True, kw_only=True):
    """One model at one provider."""

    provider: Provider
    name: str  # as the client names it after "provider/"
    upstream: str  # as the provider names it
    entry: CatalogEntry | None  # None: not in any catalog (treated as capable, price unknown)

    @property
    def key(self) -> str:
        return f"{self.provider.name}/{self.name}"

    @property
    def capabilities(self) -> Capabilities:
        return self.entry.capabilities if self.entry else UNKNOWN_CAPABILITIES

    def target(self) -> Target:
        return Target(provider=self.provider, model=self.upstream, public_model=self.key,
                      max_output_tokens=self.entry.max_output_tokens if self.entry else None,
                      reasoning=self.entry.capabilities.reasoning if self.entry else None)


class Group(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    strategy: str
    members: tuple[Deployment, ...]
    weights: tuple[float, ...] | None = None


class Requirements(msgspec.Struct, frozen=True, kw_only=True):
    tools: bool = False
    json: bool = False
    vision: bool = False
    reasoning: str = "none"
    prompt_tokens: int = 0  # estimated
    max_tokens: int | None = None  # what the client allows for the answer, if it said
    choices: int = 1  # n: each choice may use max_tokens, so reservations count each
    embedding: bool = False  # an embeddings request: only embedding models serve it, and only it

    @property
    def tokens(self) -> int:
        """Estimated prompt tokens plus the requested output tokens: what TPM limits count up front."""
        return self.prompt_tokens + (self.max_tokens or 0) * self.choices

    @classmethod
    def of(cls, call: ChatCall, min_reasoning: str | None) -> Requirements:
        req = call.request
        fmt = req.response_format
        output = req.max_completion_tokens or req.max_tokens
        return cls(
            tools=bool(req.tools),
            json=bool(fmt) and fmt.type in ("json_object", "json_schema"),  # type: ignore[union-attr]
            vision=any(p.type == "image_url" for m in req.messages if isinstance(m.content, list) for p in m.content),
            reasoning=min_reasoning or "none",
            prompt_tokens=estimate_prompt_tokens(call),
            max_tokens=output if isinstance(output, int) else None,
            choices=req.n if isinstance(req.n, int) and req.n > 1 else 1,
        )

    @classmethod
    def embeddings(cls, call: EmbeddingsCall) -> Requirements:
        return cls(embedding=True, prompt_tokens=call.prompt_tokens())


class Plan(msgspec.Struct, kw_only=True):
    requested_model: str
    requested_provider: str | None
    strategy: str
    deployments: list[Deployment]
    needs: Requirements


def estimate_prompt_tokens(call: ChatCall) -> int:
    """About four bytes a token over the body, with images counted flat instead of by their base64 size."""
    size = len(call.body)
    images = 0
    for message in call.request.messages:
        if isinstance(message.content, list):
            for part in message.content:
                if part.type == "image_url" and part.image_url:
                    size -= len(part.image_url.url)
                    images += 1
    return max(size, 0) // 4 + images * IMAGE_TOKENS


def _host(url: str) -> str:
    return urlsplit(url).hostname or ""


class RouteTable:
    """Everything routable under one config, built once per (re)load."""

    def __init__(self, config: Config, catalog: CatalogFile) -> None:
        self.config = config
        self.catalog = catalog
        self.deployments: dict[str, Deployment] = {}
        declared: list[Deployment] = []
        for provider in config.providers.values():
            for deployment in self._provider_deployments(provider, catalog):
                self.deployments[deployment.key] = deployment
                if provider.models is not None:
                    declared.append(deployment)
        for model in config.models:
            deployment = self._configured(model, catalog)
            self.deployments[deployment.key] = deployment
            declared.append(deployment)
        self.by_name: dict[str, list[Deployment]] = {}
        for deployment in self.deployments.values():
            self.by_name.setdefault(deployment.name, []).append(deployment)
        self.groups = {name: self._group(name, route) for name, route in config.routes.items() if name != AUTO}
        # ``auto`` has two pools: chat models for chat (and the dialects built on it), embedding models for
        # embeddings. A model the catalog does not know is never taken for an embedding model.
        self.auto = self._auto(declared, embedding=False)
        self.auto_embeddings = self._auto(declared, embedding=True)

    @staticmethod
    def _entries_for(provider: Provider, catalog: CatalogFile) -> list[CatalogEntry]:
        host = _host(provider.base_url)
        return [e for e in catalog.models
                if e.kind == provider.kind and (e.provider == provider.name or (e.host is not None and e.host == host))]

    def _provider_deployments(self, provider: Provider, catalog: CatalogFile) -> list[Deployment]:
        entries = self._entries_for(provider, catalog)
        if provider.models is None:
            return [Deployment(provider=provider, name=e.name, upstream=e.name, entry=e) for e in entries]
        by_name = {e.name: e for e in entries}
        anywhere = {e.name: e for e in catalog.models if e.kind == provider.kind}
        return [Deployment(provider=provider, name=m, upstream=m, entry=by_name.get(m) or anywhere.get(m))
                for m in provider.models]

    def _configured(self, model: ModelConfig, catalog: CatalogFile) -> Deployment:
        provider = self.config.providers[model.provider]
        upstream = model.upstream_name or model.name
        base = next((e for e in self._entries_for(provider, catalog) if e.name == upstream), None)
        base = base or next((e for e in catalog.models if e.name == upstream and e.kind == provider.kind), None)
        return Deployment(provider=provider, name=model.name, upstream=upstream,
                          entry=apply_overrides(base, model, provider))

    def _group(self, name: str, route: RouteConfig) -> Group:
        members = tuple(self.lookup(target) for target in route.targets)
        weights = tuple(route.weights) if route.weights else None
        return Group(name=name, strategy=route.strategy, members=members, weights=weights)

    def _auto(self, declared: list[Deployment], *, embedding: bool) -> Group:
        route = self.config.routes.get(AUTO)
        if route is not None:
            return self._auto_from_patterns(route, embedding)
        # The models named in config; when config names none, each provider's catalog defaults (cheap,
        # capable ones), never the whole catalog: that would spread requests over o1 and o3-pro.
        pool = [d for d in declared if is_embedding(d) is embedding] or [
            d for d in self.deployments.values() if d.entry is not None and d.entry.default
            and is_embedding(d) is embedding]
        return Group(name=AUTO, strategy="round-robin", members=_unique(pool))

    def _auto_from_patterns(self, route: RouteConfig, embedding: bool) -> Group:
        members: list[Deployment] = []
        for pattern in route.targets:
            if any(ch in pattern for ch in "*?["):
                members.extend(d for key, d in self.deployments.items() if fnmatch.fnmatchcase(key, pattern))
            else:
                members.append(self.lookup(pattern))
        return Group(name=AUTO, strategy=route.strategy if route.strategy != "fallback" else "round-robin",
                     members=_unique([d for d in members if is_embedding(d) is embedding]))

    def lookup(self, model: str) -> Deployment:
        """``provider/model`` -> its deployment; a model no catalog knows gets an unpriced one."""
        found = self.deployments.get(model)
        if found is not None:
            return found
        name, _, upstream = model.partition("/")
        provider = self.config.providers[name]
        return Deployment(provider=provider, name=upstream, upstream=upstream, entry=None)

    def resolve(self, model: str, embedding: bool = False) -> tuple[Group, str | None]:
        """The candidates for a model name, and the provider the client named (if any); ``embedding``
        picks the embedding models' ``auto``."""
        providers = self.config.providers
        if not providers:
            raise NoProviders(NO_PROVIDER_HINT)
        if model == AUTO:
            auto = self.auto_embeddings if embedding else self.auto
            if not auto.members:
                kind = "embedding model" if embedding else "model"
                raise ModelNotFound(f"'auto' has no {kind}s to choose from: no configured provider has a default "
                                    f"{kind} in the built-in catalog. Declare models in config (providers.NAME.models "
                                    "or [[models]]) or list them in [routes.auto] targets.", param="model")
            return auto, None
        group = self.groups.get(model)
        if group is not None:
            return group, None
        name, sep, upstream = model.partition("/")
        if sep and name in providers:
            provider = providers[name]
            if not upstream:
                raise ModelNotFound(f"The model '{model}' names no model after '{name}/'.", param="model")
            if model not in self.deployments and provider.models is not None:
                listed = ", ".join(d.key for d in self.deployments.values() if d.provider is provider) or "none"
                raise ModelNotFound(f"The model '{model}' does not exist: provider '{name}' serves {listed}.",
                                    param="model")
            return Group(name=model, strategy="fallback", members=(self.lookup(model),)), name
        served = self.by_name.get(model)
        if served:
            return Group(name=model, strategy="fallback", members=tuple(served)), None
        if sep:
            message = (f"The model '{model}' does not exist: there is no provider '{name}'. "
                       f"Configured providers: {', '.join(sorted(providers))}.")
        else:
            message = (f"The model '{model}' does not exist: no configured provider serves it. Name it as "
                       f"'provider/model' (providers: {', '.join(sorted(providers))}) or use a group.")
        raise ModelNotFound(message, param="model")


def auto_pool(table: RouteTable) -> list[str]:
    """What ``auto`` reaches, as ``provider/model``: the start-up banner shows it."""
    return [d.key for d in table.auto.members]


def is_embedding(deployment: Deployment) -> bool:
    """A model the catalog (or config) marks as an embedding model."""
    return deployment.entry is not None and deployment.entry.capabilities.embedding


def _unique(deployments: list[Deployment]) -> tuple[Deployment, ...]:
    return tuple({d.key: d for d in deployments}.values())


def apply_overrides(base: CatalogEntry | None, model: ModelConfig, provider: Provider) -> CatalogEntry:
    # Without a catalog entry, what config does not state is unknown, so treated as capable.
    entry = base or CatalogEntry(name=model.upstream_name or model.name, provider=provider.name, kind=provider.kind,
                                 capabilities=UNKNOWN_CAPABILITIES)
    caps = entry.capabilities
    if model.capabilities is not None:
        caps = msgspec.structs.replace(caps, **_set_fields(model.capabilities))
    pricing = entry.pricing
    if model.pricing is not None:
        pricing = msgspec.structs.replace(pricing, **_set_fields(model.pricing))
    if base is None and model.pricing is None:
        pricing = Pricing()
    return msgspec.structs.replace(
        entry,
        context_window=model.context_window if model.context_window is not None else entry.context_window,
        max_output_tokens=model.max_output_tokens if model.max_output_tokens is not None else entry.max_output_tokens,
        capabilities=caps,
        pricing=pricing,
    )


def _set_fields(struct: msgspec.Struct) -> dict[str, object]:
    return {f: getattr(struct, f) for f in struct.__struct_fields__ if getattr(struct, f) is not None}


# ------------------------------------------------------------------------------------------ filtering

_UNMET = {
    "tools": ("tools", "tool calling"),
    "json": ("response_format", "JSON output"),
    "vision": ("messages", "image input"),
    "reasoning": ("min_reasoning_level", "the requested reasoning level"),
    "context": ("max_tokens", "a context window this large"),
    "embedding": ("model", "embeddings (it needs an embedding model)"),
    "chat": ("model", "chat (embedding models only create embeddings)"),
}


def unmet(deployment: Deployment, needs: Requirements) -> str | None:
    """The first requirement this deployment fails, or None."""
    caps = deployment.capabilities
    # A model the catalog does not know may be either kind: the client named it, and its provider decides.
    if deployment.entry is not None and caps.embedding is not needs.embedding:
        return "embedding" if needs.embedding else "chat"
    if needs.embedding:
        return None  # the rest is about chat; an embedding model's input limit applies to each input alone
    if needs.tools and not caps.tools:
        return "tools"
    if needs.json and not caps.json:
        return "json"
    if needs.vision and not caps.vision:
        return "vision"
    if REASONING_ORDER[caps.reasoning] < REASONING_ORDER[needs.reasoning]:
        return "reasoning"
    window = deployment.entry.context_window if deployment.entry else None
    if window is not None and needs.tokens > window:
        return "context"
    return None


def capable(group: Group, needs: Requirements) -> list[Deployment]:
    kept, first_miss = [], None
    for deployment in group.members:
        miss = unmet(deployment, needs)
        if miss is None:
            kept.append(deployment)
        elif first_miss is None:
            first_miss = miss
    if not kept:
        assert first_miss is not None
        param, what = _UNMET[first_miss]
        names = ", ".join(d.key for d in group.members)
        extra = f" (about {needs.tokens} tokens requested)" if first_miss == "context" else ""
        raise InvalidRequest(f"No model for '{group.name}' supports {what}{extra}; candidates: {names}.",
                             param=param, code="capability_unmet")
    return kept


# -------------------------------------------------------------------------------------------- ordering


class Router:
    def __init__(self, health: HealthBook, *, rng: random.Random | None = None) -> None:
        self.health = health
        self.rng = rng or random.Random()
        self._counters: dict[str, itertools.count[int]] = {}

    def plan(self, table: RouteTable, model: str, needs: Requirements, now: float,
             allow: Callable[[str], bool] | None = None) -> Plan:
        group, provider = table.resolve(model, needs.embedding)
        if allow is not None and not allow(model):
            # The key may not use the name it sent, but may use some of what it stands for.
            kept = [i for i, d in enumerate(group.members) if allow(d.key)]
            weights = tuple(group.weights[i] for i in kept) if group.weights else None
            group = msgspec.structs.replace(group, members=tuple(group.members[i] for i in kept), weights=weights)
            if not group.members:
                raise PermissionDenied(f"This key is not allowed to use the model '{model}'.", param="model")
        candidates = capable(group, needs)
        ordered = self._order(group, candidates)
        healthy = [d for d in ordered if self.health.available(d.key, d.provider.name, now)]
        # Open circuits are skipped while others exist; when all are open, try them anyway rather than
        # refuse without asking (the cooldown may just not have passed).
        return Plan(requested_model=model, requested_provider=provider, strategy=group.strategy,
                    deployments=healthy or ordered, needs=needs)

    def _order(self, group: Group, candidates: list[Deployment]) -> list[Deployment]:
        if len(candidates) < 2:
            return candidates
        if group.strategy == "round-robin":
            start = next(self._counters.setdefault(group.name, itertools.count())) % len(candidates)
            return candidates[start:] + candidates[:start]
        if group.strategy == "weighted":
            weights = group.weights or (1.0,) * len(group.members)
            weight = {d.key: w for d, w in zip(group.members, weights, strict=True)}
            # Efraimidis-Spirakis: a weighted random order without replacement.
            return sorted(candidates, key=lambda d: self.rng.random() ** (1.0 / weight[d.key]), reverse=True)
        if group.strategy == "lowest-latency":
            return sorted(candidates, key=lambda d: self._latency(d))
        return candidates

    def _latency(self, deployment: Deployment) -> float:
        circuit = self.health.circuits.get(deployment.key)
        # Untried targets sort first so every target gets measured.
        return circuit.latency_ewma_ms if circuit and circuit.latency_ewma_ms is not None else 0.0
