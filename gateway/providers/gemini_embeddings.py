"""Embeddings at Google Gemini: OpenAI's ``/v1/embeddings`` in, ``batchEmbedContents`` out, and back.

- Each input becomes one request of the batch, in order, with the model named as ``models/{model}``, as the
  API requires of every request in a batch.
- ``dimensions`` becomes ``outputDimensionality``. Gemini returns vectors shortened this way without
  normalising them (Google's embeddings guide says to normalise them yourself), while OpenAI's shortened
  vectors have length 1 and clients rely on dot products being cosines: shortened vectors are normalised.
- ``encoding_format: base64`` is served here, as OpenAI serves it: little-endian float32, base64.
- Token arrays are refused with a 400 naming ``input``: Gemini takes text only, and the ids name tokens of
  the client's tokenizer (OpenAI's), which no Gemini model shares, so no decoding would be faithful.
- ``user`` (an end-user id for OpenAI's abuse monitoring) has no Gemini equivalent and cannot change a
  vector: left out and reported. Any other member the gateway does not know is refused by name.
- The Gemini API reports no token count for embeddings: usage is the gateway's estimate (about four
  characters a token), and the usage record says it is estimated.
"""

from __future__ import annotations

import math

import msgspec

from gateway.dialects.embeddings import Embedding, EmbeddingsCall, EmbeddingsResponse, EmbeddingsUsage, base64_floats
from gateway.errors import InvalidRequest, UnsupportedParameter, UpstreamError
from gateway.notes import Notes
from gateway.providers.base import ResponseContext, Target
from gateway.upstream import UpstreamRequest
from gateway.wire.openai import Usage

_JSON = {"content-type": "application/json"}


class _Part(msgspec.Struct):
    text: str


class _Content(msgspec.Struct):
    parts: list[_Part]


class _EmbedRequest(msgspec.Struct, omit_defaults=True):
    model: str
    content: _Content
    outputDimensionality: int | None = None  # Gemini spells its fields in camelCase


class _BatchRequest(msgspec.Struct):
    requests: list[_EmbedRequest]


class _ContentEmbedding(msgspec.Struct):
    values: list[float]


class _BatchResponse(msgspec.Struct):
    embeddings: list[_ContentEmbedding] = []


_encoder = msgspec.json.Encoder()
_response_decoder = msgspec.json.Decoder(_BatchResponse)


def build_request(call: EmbeddingsCall, target: Target) -> UpstreamRequest:
    unknown = call.unknown_fields()
    if unknown:
        raise UnsupportedParameter(f"Unsupported parameter: '{unknown[0]}' is not supported by Gemini embedding "
                                   f"models.", param=unknown[0])
    if call.tokens_given:
        raise InvalidRequest(f"Invalid value for 'input': '{target.public_model}' embeds text only, and token "
                             f"arrays name tokens of another tokenizer: send the text itself.", param="input",
                             code="invalid_value")
    notes = Notes()
    if isinstance(call.request.user, str):
        notes.ignore("user")
    name = f"models/{target.model}"
    content = [_Content(parts=[_Part(text=text)]) for text in call.inputs if isinstance(text, str)]
    body = _BatchRequest(requests=[_EmbedRequest(model=name, content=c, outputDimensionality=call.dimensions)
                                   for c in content])
    return UpstreamRequest(provider=target.provider,
                           url=f"{target.provider.base_url}/v1beta/models/{target.model}:batchEmbedContents",
                           body=_encoder.encode(body), headers=_JSON, notes=notes or None)


def parse_response(call: EmbeddingsCall, body: bytes, ctx: ResponseContext) -> tuple[bytes, Usage | None]:
    try:
        vectors = [e.values for e in _response_decoder.decode(body).embeddings]
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise _invalid(ctx, f"answered with a body that is not a batchEmbedContents response: {exc}") from None
    if len(vectors) != len(call.inputs):
        raise _invalid(ctx, f"answered {len(vectors)} embeddings for {len(call.inputs)} inputs.")
    if call.dimensions is not None:
        vectors = [_normalised(v) for v in vectors]
    tokens = call.prompt_tokens()
    usage = ctx.priced(Usage(prompt_tokens=tokens, completion_tokens=0, total_tokens=tokens))
    answer = EmbeddingsResponse(
        data=[Embedding(index=i, embedding=base64_floats(v) if call.base64 else v) for i, v in enumerate(vectors)],
        model=ctx.public_model,
        usage=EmbeddingsUsage.of(usage),
        metadata=ctx.metadata)
    # None: the count above is the gateway's estimate, and the record must say so.
    return _encoder.encode(answer), None


def _normalised(vector: list[float]) -> list[float]:
    norm = math.sqrt(math.fsum(x * x for x in vector))
    return [x / norm for x in vector] if norm > 0 and math.isfinite(norm) else vector


def _invalid(ctx: ResponseContext, what: str) -> UpstreamError:
    return UpstreamError(f"[{ctx.provider}] {what}", status=502, error_type="upstream_error",
                         code="invalid_upstream_response", provider=ctx.provider)
