"""Embeddings at OpenAI and every OpenAI-compatible server: the same dialect as the client, so the body goes
upstream with only ``model`` rewritten, and the answer comes back with only ``model`` (the client's name),
the ``cost_usd_*`` fields of ``usage`` and the routing ``metadata`` changed. The vectors are never decoded.
"""

from __future__ import annotations

import msgspec

from gateway.dialects.embeddings import EmbeddingsCall
from gateway.errors import UpstreamError
from gateway.providers.base import ResponseContext, Target
from gateway.providers.openai import COST_FIELDS
from gateway.upstream import UpstreamRequest
from gateway.wire.openai import Usage, encoder, raw_object_decoder

_JSON = {"content-type": "application/json"}


class _EmbeddingsUsage(msgspec.Struct):
    # Embeddings count input only: OpenAI's usage here has no completion_tokens.
    prompt_tokens: int
    total_tokens: int | None = None


_usage_decoder = msgspec.json.Decoder(_EmbeddingsUsage | None)


def build_request(call: EmbeddingsCall, target: Target) -> UpstreamRequest:
    return UpstreamRequest(provider=target.provider, url=f"{target.provider.base_url}/embeddings",
                           body=call.body_with_model(target.model), headers=_JSON)


def parse_response(call: EmbeddingsCall, body: bytes, ctx: ResponseContext) -> tuple[bytes, Usage | None]:
    try:
        raw = raw_object_decoder.decode(body)
    except msgspec.DecodeError:
        raise UpstreamError(f"[{ctx.provider}] answered with a body that is not a JSON object.", status=502,
                            error_type="upstream_error", code="invalid_upstream_response",
                            provider=ctx.provider) from None
    if "model" in raw:
        raw["model"] = msgspec.Raw(encoder.encode(ctx.public_model))
    usage: Usage | None = None
    usage_raw = raw.get("usage")
    if usage_raw is not None:
        try:
            counted = _usage_decoder.decode(usage_raw)
        except msgspec.ValidationError:
            counted = None  # an odd usage shape from a compatible server: relayed as sent, charged as estimated
        if counted is not None:
            usage = Usage(prompt_tokens=counted.prompt_tokens, completion_tokens=0,
                          total_tokens=counted.total_tokens or counted.prompt_tokens)
            members = raw_object_decoder.decode(usage_raw)
            priced = ctx.priced(usage)
            for name in COST_FIELDS:
                members[name] = msgspec.Raw(encoder.encode(getattr(priced, name)))
            raw["usage"] = msgspec.Raw(encoder.encode(members))
    if ctx.metadata is not None:
        raw["metadata"] = msgspec.Raw(encoder.encode(ctx.metadata))
    return encoder.encode(raw), usage
