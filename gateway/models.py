"""The /v1/models listing: every routable model and group, with the catalog facts about each, and the
lookup of one entry (``GET /v1/models/{id}``), which answers exactly what the listing holds for that id."""

from __future__ import annotations

import msgspec

from gateway.catalog import Capabilities, Pricing
from gateway.router import AUTO, Deployment, Group, RouteTable


class ModelInfo(msgspec.Struct, kw_only=True):
    id: str
    object: str = "model"
    created: int = 0
    owned_by: str
    context_window: int | None = None
    max_output_tokens: int | None = None
    dimensions: int | None = None  # embedding models: the default vector length
    capabilities: Capabilities | None = None
    pricing: Pricing | None = None
    providers: list[str]
    targets: list[str] | None = None  # groups only
    strategy: str | None = None  # groups only


class ModelListing(msgspec.Struct, kw_only=True):
    object: str = "list"
    data: list[ModelInfo]


def _info(model_id: str, deployment: Deployment, providers: list[str]) -> ModelInfo:
    entry = deployment.entry
    return ModelInfo(
        id=model_id, owned_by=deployment.provider.name, providers=providers,
        context_window=entry.context_window if entry else None,
        max_output_tokens=entry.max_output_tokens if entry else None,
        dimensions=entry.dimensions if entry else None,
        capabilities=deployment.capabilities if entry else None,
        pricing=entry.pricing if entry else None,
    )


def _group_info(group: Group) -> ModelInfo:
    return ModelInfo(id=group.name, owned_by="gateway", providers=sorted({d.provider.name for d in group.members}),
                     targets=[d.key for d in group.members], strategy=group.strategy)


def model_list(table: RouteTable) -> ModelListing:
    data: list[ModelInfo] = []
    for name, deployments in sorted(table.by_name.items()):
        data.append(_info(name, deployments[0], [d.provider.name for d in deployments]))
    for key, deployment in sorted(table.deployments.items()):
        data.append(_info(key, deployment, [deployment.provider.name]))
    groups: list[Group] = list(table.groups.values())
    if table.auto.members:
        groups.append(table.auto)
    # ``auto`` first, then the groups by name (a tuple: a bool key alone would be compared with a str).
    data.extend(_group_info(g) for g in sorted(groups, key=lambda g: (g.name != AUTO, g.name)))
    return ModelListing(data=data)


def model_entry(table: RouteTable, model_id: str) -> ModelInfo | None:
    """The listing's entry for ``model_id`` (the first, as a client scanning the list would find it)."""
    served = table.by_name.get(model_id)
    if served:
        return _info(model_id, served[0], [d.provider.name for d in served])
    deployment = table.deployments.get(model_id)
    if deployment is not None:
        return _info(model_id, deployment, [deployment.provider.name])
    group = table.auto if model_id == AUTO and table.auto.members else table.groups.get(model_id)
    return _group_info(group) if group is not None else None
