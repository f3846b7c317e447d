"""OpenAI Chat Completions wire types: the gateway's common language.

Fields a client did not send stay ``UNSET`` so adapters can tell "absent" from "null". Request
Structs ignore unknown keys (the OpenAI-compatible path forwards them untouched; translating
adapters refuse them by name using ``unknown_fields``).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from msgspec import UNSET, Raw, UnsetType

# ------------------------------------------------------------------------------------------- requests


class ImageURL(msgspec.Struct, kw_only=True):
    url: str
    detail: str | UnsetType = UNSET


class InputAudio(msgspec.Struct, kw_only=True):
    data: str
    format: str


class FileData(msgspec.Struct, kw_only=True):
    filename: str | UnsetType = UNSET
    file_data: str | UnsetType = UNSET
    file_id: str | UnsetType = UNSET


class ContentPart(msgspec.Struct, kw_only=True):
    # One Struct for every part type rather than a tagged union, so a part type this gateway does not
    # know yet still reaches an OpenAI-compatible upstream (translating adapters refuse it by name).
    type: str
    text: str | UnsetType = UNSET
    image_url: ImageURL | UnsetType = UNSET
    input_audio: InputAudio | UnsetType = UNSET
    file: FileData | UnsetType = UNSET
    refusal: str | UnsetType = UNSET


class FunctionCall(msgspec.Struct, kw_only=True):
    name: str
    arguments: str


class ToolCall(msgspec.Struct, kw_only=True):
    id: str
    type: str = "function"
    function: FunctionCall


Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class Message(msgspec.Struct, kw_only=True):
    role: Role
    content: str | list[ContentPart] | UnsetType | None = UNSET
    name: str | UnsetType = UNSET
    tool_calls: list[ToolCall] | UnsetType | None = UNSET
    tool_call_id: str | UnsetType = UNSET
    refusal: str | UnsetType | None = UNSET
    # Reasoning echoed back by clients (the gateway returns it under these names; see docs/translation.md).
    reasoning: str | UnsetType | None = UNSET
    reasoning_content: str | UnsetType | None = UNSET
    reasoning_details: list[dict[str, Any]] | UnsetType | None = UNSET


class FunctionDef(msgspec.Struct, kw_only=True):
    name: str
    description: str | UnsetType = UNSET
    parameters: dict[str, Any] | UnsetType = UNSET
    strict: bool | UnsetType | None = UNSET


class Tool(msgspec.Struct, kw_only=True):
    type: str
    function: FunctionDef


class NamedFunction(msgspec.Struct, kw_only=True):
    name: str


class NamedToolChoice(msgspec.Struct, kw_only=True):
    type: str
    function: NamedFunction


class JsonSchemaFormat(msgspec.Struct, kw_only=True):
    name: str
    description: str | UnsetType = UNSET
    schema: dict[str, Any] | UnsetType = UNSET
    strict: bool | UnsetType | None = UNSET


class ResponseFormat(msgspec.Struct, kw_only=True):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | UnsetType = UNSET


class ApproximateLocation(msgspec.Struct, kw_only=True, omit_defaults=True):
    city: str | UnsetType = UNSET
    country: str | UnsetType = UNSET
    region: str | UnsetType = UNSET
    timezone: str | UnsetType = UNSET


class UserLocation(msgspec.Struct, kw_only=True):
    type: Literal["approximate"] = "approximate"
    approximate: ApproximateLocation


class WebSearchOptions(msgspec.Struct, kw_only=True, omit_defaults=True):
    """OpenAI's chat ``web_search_options``: the model may search the web (the gateway's common form of web
    search; each adapter offers its provider's search tool, see docs/responses.md)."""

    search_context_size: Literal["low", "medium", "high"] | UnsetType = UNSET
    user_location: UserLocation | UnsetType | None = UNSET


class StreamOptions(msgspec.Struct, kw_only=True):
    include_usage: bool | UnsetType | None = UNSET
    include_obfuscation: bool | UnsetType | None = UNSET


class ChatRequest(msgspec.Struct, kw_only=True):
    model: str = "auto"  # omitted: the gateway picks (see router.py)
    messages: list[Message]
    stream: bool | UnsetType | None = UNSET
    stream_options: StreamOptions | UnsetType | None = UNSET
    max_tokens: int | UnsetType | None = UNSET
    max_completion_tokens: int | UnsetType | None = UNSET
    temperature: float | UnsetType | None = UNSET
    top_p: float | UnsetType | None = UNSET
    n: int | UnsetType | None = UNSET
    stop: str | list[str] | UnsetType | None = UNSET
    seed: int | UnsetType | None = UNSET
    user: str | UnsetType | None = UNSET
    presence_penalty: float | UnsetType | None = UNSET
    frequency_penalty: float | UnsetType | None = UNSET
    logit_bias: dict[str, float] | UnsetType | None = UNSET
    logprobs: bool | UnsetType | None = UNSET
    top_logprobs: int | UnsetType | None = UNSET
    tools: list[Tool] | UnsetType | None = UNSET
    tool_choice: str | NamedToolChoice | UnsetType | None = UNSET
    parallel_tool_calls: bool | UnsetType | None = UNSET
    response_format: ResponseFormat | UnsetType | None = UNSET
    reasoning_effort: str | UnsetType | None = UNSET
    modalities: list[str] | UnsetType | None = UNSET
    metadata: dict[str, Any] | UnsetType | None = UNSET
    service_tier: str | UnsetType | None = UNSET
    store: bool | UnsetType | None = UNSET
    web_search_options: WebSearchOptions | UnsetType | None = UNSET
    # The gateway's own request fields: used for routing and accounting, never sent upstream.
    project_id: str | UnsetType | None = UNSET
    min_reasoning_level: Literal["none", "low", "medium", "high"] | UnsetType | None = UNSET


GATEWAY_FIELDS = frozenset({"project_id", "min_reasoning_level"})
# Top-level OpenAI members that cannot make a correct answer wrong (prompt caching, abuse monitoring): an
# OpenAI-compatible server gets them as sent; a translating adapter with no counterpart leaves them out and
# reports them (gateway/notes.py) rather than refusing the request.
HINT_FIELDS = frozenset({"prompt_cache_key", "prompt_cache_retention", "safety_identifier"})


CHAT_REQUEST_FIELDS = frozenset(ChatRequest.__struct_fields__)

# -------------------------------------------------------------------------------------------- responses


class ResponseFunctionCall(msgspec.Struct, kw_only=True):
    name: str
    arguments: str


class ResponseToolCall(msgspec.Struct, kw_only=True):
    id: str
    type: str = "function"
    function: ResponseFunctionCall


class UrlCitation(msgspec.Struct, kw_only=True):
    # Character (code point) offsets into the message's content, end exclusive.
    start_index: int
    end_index: int
    url: str
    title: str


class Annotation(msgspec.Struct, kw_only=True):
    type: Literal["url_citation"] = "url_citation"
    url_citation: UrlCitation
    # Streamed only: the entry's position in the message's list, which the openai SDK's stream helper needs
    # to put a list that arrives over several chunks back together (as for reasoning_details).
    index: int | UnsetType = UNSET


class ResponseMessage(msgspec.Struct, kw_only=True):
    role: str = "assistant"
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[ResponseToolCall] | UnsetType = UNSET
    reasoning: str | UnsetType = UNSET
    reasoning_content: str | UnsetType = UNSET
    reasoning_details: list[dict[str, Any]] | UnsetType = UNSET
    images: list[dict[str, Any]] | UnsetType = UNSET
    annotations: list[Annotation] | UnsetType = UNSET
    # The gateway's: the queries of the web searches the upstream ran (Anthropic's server_tool_use, Gemini's
    # webSearchQueries), one per search, so the Responses dialect can report each as a web_search_call.
    web_search_queries: list[str] | UnsetType = UNSET


class Choice(msgspec.Struct, kw_only=True):
    index: int
    message: ResponseMessage
    finish_reason: str | None
    logprobs: None = None


class PromptTokensDetails(msgspec.Struct, kw_only=True):
    cached_tokens: int = 0
    cache_write_tokens: int | UnsetType = UNSET


class CompletionTokensDetails(msgspec.Struct, kw_only=True):
    reasoning_tokens: int = 0


class Usage(msgspec.Struct, kw_only=True):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    # null from some OpenAI-compatible servers (vLLM), so None is accepted too.
    prompt_tokens_details: PromptTokensDetails | UnsetType | None = UNSET
    completion_tokens_details: CompletionTokensDetails | UnsetType | None = UNSET
    reasoning_tokens: int | UnsetType = UNSET
    # The gateway's cost of the request in USD, from the catalog's prices; null when the price is unknown.
    cost_usd_total: float | UnsetType | None = UNSET
    cost_usd_input: float | UnsetType | None = UNSET
    cost_usd_cached_input: float | UnsetType | None = UNSET
    cost_usd_output: float | UnsetType | None = UNSET


class ChatCompletion(msgspec.Struct, kw_only=True):
    id: str
    object: str = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage | UnsetType = UNSET
    system_fingerprint: str | UnsetType = UNSET
    metadata: dict[str, Any] | UnsetType = UNSET


class DeltaFunction(msgspec.Struct, kw_only=True, omit_defaults=True):
    name: str | UnsetType = UNSET
    arguments: str | UnsetType = UNSET


class DeltaToolCall(msgspec.Struct, kw_only=True, omit_defaults=True):
    index: int
    id: str | UnsetType = UNSET
    type: str | UnsetType = UNSET
    function: DeltaFunction | UnsetType = UNSET


class Delta(msgspec.Struct, kw_only=True, omit_defaults=True):
    role: str | UnsetType = UNSET
    content: str | UnsetType | None = UNSET
    refusal: str | UnsetType | None = UNSET
    tool_calls: list[DeltaToolCall] | UnsetType = UNSET
    reasoning: str | UnsetType = UNSET
    reasoning_content: str | UnsetType = UNSET
    reasoning_details: list[dict[str, Any]] | UnsetType = UNSET
    images: list[dict[str, Any]] | UnsetType = UNSET
    annotations: list[Annotation] | UnsetType = UNSET
    web_search_queries: list[str] | UnsetType = UNSET


class ChunkChoice(msgspec.Struct, kw_only=True):
    index: int
    delta: Delta
    finish_reason: str | None = None
    logprobs: None = None


class ChatCompletionChunk(msgspec.Struct, kw_only=True):
    id: str
    object: str = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | UnsetType | None = UNSET
    metadata: dict[str, Any] | UnsetType = UNSET


# ----------------------------------------------------------------------------------------------- models


class ModelCard(msgspec.Struct, kw_only=True):
    id: str
    object: str = "model"
    created: int = 0
    owned_by: str


class ModelList(msgspec.Struct, kw_only=True):
    object: str = "list"
    data: list[ModelCard]


# ------------------------------------------------------------------------------------------ decoding

RawObject = dict[str, Raw]
raw_object_decoder = msgspec.json.Decoder(RawObject)
chat_request_decoder = msgspec.json.Decoder(ChatRequest)
encoder = msgspec.json.Encoder()
