"""OpenAI embeddings (``POST /v1/embeddings``): the request checked at the door, and the answer's shape.

Embeddings are not a chat call: there is no common form to translate through. An OpenAI-compatible
target gets the client's bytes with only ``model`` rewritten (``gateway/providers/embeddings.py``); a
Gemini target gets ``batchEmbedContents`` (``gateway/providers/gemini_embeddings.py``); a provider kind
without an embeddings API refuses with a 400 naming the model.

``input`` takes OpenAI's four forms: a string, a list of strings, one token array, or a list of token
arrays. msgspec cannot tell list types apart inside one union, so the member is decoded as it came and
checked here, once, for every route and target.
"""

from __future__ import annotations

import base64
import struct
from typing import Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

from gateway.dialects.chat import validation_error
from gateway.door import MAX_TOKENS, check_int, check_model_name, decode_raw_object
from gateway.errors import InvalidRequest
from gateway.notes import Notes
from gateway.wire.openai import GATEWAY_FIELDS, RawObject, Usage, encoder

# OpenAI's own limits: at most 2048 inputs a request; token ids are non-negative 32-bit integers.
MAX_INPUTS = 2048
MAX_TOKEN_ID = 2**31 - 1
# Longer than any embedding model's vector (3072 for the largest in the catalog), well inside int range.
MAX_DIMENSIONS = 65536
EMBEDDINGS_FIELDS = frozenset({"model", "input", "encoding_format", "dimensions", "user", *GATEWAY_FIELDS})
CHARS_PER_TOKEN = 4  # the rough rule the chat estimate uses, for text inputs

Input = str | list[int]  # one input after checking: text, or a token array


class EmbeddingsRequest(msgspec.Struct, kw_only=True):
    model: str = "auto"  # omitted: the gateway picks an embedding model (see router.py)
    input: object = UNSET
    encoding_format: Literal["float", "base64"] | UnsetType | None = UNSET
    dimensions: int | UnsetType | None = UNSET
    user: str | UnsetType | None = UNSET
    project_id: str | UnsetType | None = UNSET


_request_decoder = msgspec.json.Decoder(EmbeddingsRequest)


class EmbeddingsCall:
    """What the pipeline needs to know about one embeddings request. Never streamed."""

    __slots__ = ("body", "inputs", "notes", "raw", "request", "tokens_given")

    stream = False
    include_usage = False

    def __init__(self, body: bytes, raw: RawObject, request: EmbeddingsRequest, inputs: list[Input],
                 tokens_given: bool) -> None:
        self.body = body
        self.raw = raw
        self.request = request
        self.inputs = inputs
        self.tokens_given = tokens_given  # ``input`` came as token arrays rather than text
        self.notes = Notes()

    @property
    def base64(self) -> bool:
        return self.request.encoding_format == "base64"

    @property
    def dimensions(self) -> int | None:
        dims = self.request.dimensions
        return dims if isinstance(dims, int) else None

    def prompt_tokens(self) -> int:
        """Token arrays count exactly; text at about four characters a token."""
        return sum(len(i) if isinstance(i, list) else -(-len(i) // CHARS_PER_TOKEN) for i in self.inputs)

    def unknown_fields(self) -> list[str]:
        return [name for name in self.raw if name not in EMBEDDINGS_FIELDS]

    def body_with_model(self, model: str) -> bytes:
        """The client's body with only ``model`` changed and the gateway's own fields left out."""
        raw = {name: value for name, value in self.raw.items() if name not in GATEWAY_FIELDS}
        raw["model"] = msgspec.Raw(encoder.encode(model))
        return encoder.encode(raw)


def parse_embeddings(body: bytes) -> EmbeddingsCall:
    """The body as an embeddings call, checked at the door: any problem is a 400 naming the member."""
    raw = decode_raw_object(body, hint="a JSON object with 'model' and 'input'")
    try:
        request = _request_decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise validation_error(str(exc)) from None
    except (msgspec.DecodeError, RecursionError) as exc:
        raise InvalidRequest(f"We could not parse the JSON body of your request: {exc}") from None
    check_model_name(request.model)
    if isinstance(request.dimensions, int):
        check_int("dimensions", request.dimensions, low=1, high=MAX_DIMENSIONS)
    inputs, tokens_given = _inputs(request.input)
    return EmbeddingsCall(body, raw, request, inputs, tokens_given)


def _inputs(value: object) -> tuple[list[Input], bool]:
    """``input`` as a list of texts or token arrays, and whether they are token arrays."""
    if value is UNSET:
        raise InvalidRequest("Missing required parameter: 'input'.", param="input",
                             code="missing_required_parameter")
    if isinstance(value, str):
        return [_text(value, "input")], False
    if not isinstance(value, list) or not value:
        raise _bad_input("input", "a string, a list of strings, a token array or a list of token arrays")
    if len(value) > MAX_INPUTS:
        raise InvalidRequest(f"Invalid value for 'input': at most {MAX_INPUTS} inputs a request, not {len(value)}.",
                             param="input", code="invalid_value")
    first = value[0]
    if isinstance(first, str):
        return [_text(v, f"input[{i}]") for i, v in enumerate(value)], False
    if isinstance(first, int) and not isinstance(first, bool):
        return [_tokens(value, "input")], True
    if isinstance(first, list):
        return [_tokens(v, f"input[{i}]") for i, v in enumerate(value)], True
    raise _bad_input("input[0]", "a string, a token id or a token array")


def _text(value: object, param: str) -> str:
    if not isinstance(value, str):
        raise _bad_input(param, "a string, like the other inputs")
    if not value:
        raise _bad_input(param, "a non-empty string")
    return value


def _tokens(value: object, param: str) -> list[int]:
    if not isinstance(value, list) or not value:
        raise _bad_input(param, "a non-empty array of token ids")
    if len(value) > MAX_TOKENS:
        raise _bad_input(param, f"an array of at most {MAX_TOKENS} token ids")
    # Checked in C first (a body may hold millions of ids); the slow walk only finds the one to name.
    if not (all(type(t) is int for t in value) and min(value) >= 0 and max(value) <= MAX_TOKEN_ID):
        for i, token in enumerate(value):
            check_int(f"{param}[{i}]", token, low=0, high=MAX_TOKEN_ID)
    return value


def _bad_input(param: str, expected: str) -> InvalidRequest:
    return InvalidRequest(f"Invalid value for '{param}': expected {expected}.", param=param, code="invalid_value")


# -------------------------------------------------------------------------------------------- answers


class Embedding(msgspec.Struct, kw_only=True):
    object: str = "embedding"
    index: int
    embedding: list[float] | str  # floats, or base64 of little-endian float32 (encoding_format: base64)


class EmbeddingsUsage(msgspec.Struct, kw_only=True):
    prompt_tokens: int
    total_tokens: int
    # The same cost fields as every usage object the gateway answers with (null when the price is unknown).
    cost_usd_total: float | None = None
    cost_usd_input: float | None = None
    cost_usd_cached_input: float | None = None
    cost_usd_output: float | None = None

    @classmethod
    def of(cls, usage: Usage) -> EmbeddingsUsage:
        """``usage`` as an embeddings answer shows it (no completion tokens), its cost fields included."""
        def usd(value: float | UnsetType | None) -> float | None:
            return value if isinstance(value, float) else None

        return cls(prompt_tokens=usage.prompt_tokens, total_tokens=usage.total_tokens,
                   cost_usd_total=usd(usage.cost_usd_total), cost_usd_input=usd(usage.cost_usd_input),
                   cost_usd_cached_input=usd(usage.cost_usd_cached_input), cost_usd_output=usd(usage.cost_usd_output))


class EmbeddingsResponse(msgspec.Struct, kw_only=True):
    object: str = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingsUsage
    metadata: dict[str, Any] | None = None


def base64_floats(values: list[float]) -> str:
    """What OpenAI sends for ``encoding_format: base64``: the vector as little-endian float32, base64."""
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
