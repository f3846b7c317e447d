"""OpenAI Responses API wire types: the request as clients send it, and the Response object and stream
events the gateway answers with.

Inbound Structs accept members they do not model (``id``, ``status``, ``phase`` on items: records of an
earlier answer, not model input); the top level is checked by name in ``responses.py``, where every
member is translated, reported as ignored or refused. Outbound Structs follow openai-python's
``types/responses`` shapes; the tests validate them with the SDK's own models.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

# ------------------------------------------------------------------------------------------- request


class ContentIn(msgspec.Struct, kw_only=True):
    """One content part of an input message (input_text, input_image, input_file, output_text, refusal)."""

    type: str
    text: str | UnsetType = UNSET
    refusal: str | UnsetType = UNSET
    image_url: str | UnsetType | None = UNSET
    file_id: str | UnsetType | None = UNSET
    detail: str | UnsetType | None = UNSET
    file_data: str | UnsetType | None = UNSET
    file_url: str | UnsetType | None = UNSET
    filename: str | UnsetType | None = UNSET


class SummaryIn(msgspec.Struct, kw_only=True):
    type: str = "summary_text"
    text: str = ""


class ItemIn(msgspec.Struct, kw_only=True):
    """One input item. A single Struct rather than a tagged union: ``type`` is optional for messages
    (the Agents SDK sends ``{role, content}``), and an item type this gateway does not translate must
    reach ``responses.py`` to be refused by name rather than fail as a decode error."""

    type: str = "message"
    id: str | UnsetType | None = UNSET
    # message
    role: str | UnsetType = UNSET
    content: str | list[ContentIn] | UnsetType | None = UNSET
    # function_call, custom_tool_call, and their outputs
    call_id: str | UnsetType = UNSET
    name: str | UnsetType = UNSET
    namespace: str | UnsetType | None = UNSET
    arguments: str | UnsetType = UNSET
    input: str | UnsetType = UNSET
    output: str | list[ContentIn] | UnsetType = UNSET
    # reasoning
    summary: list[SummaryIn] | UnsetType = UNSET
    encrypted_content: str | UnsetType | None = UNSET
    # additional_tools (Codex's default profile sends its tools as an input item)
    tools: list[dict[str, Any]] | UnsetType = UNSET


class FormatIn(msgspec.Struct, kw_only=True):
    type: str
    name: str | UnsetType = UNSET
    description: str | UnsetType | None = UNSET
    schema: dict[str, Any] | UnsetType = UNSET
    strict: bool | UnsetType | None = UNSET


class TextIn(msgspec.Struct, kw_only=True):
    format: FormatIn | UnsetType = UNSET
    verbosity: str | UnsetType | None = UNSET


class ReasoningIn(msgspec.Struct, kw_only=True):
    effort: str | UnsetType | None = UNSET
    summary: str | UnsetType | None = UNSET
    generate_summary: str | UnsetType | None = UNSET  # the older name of ``summary``
    context: str | UnsetType | None = UNSET


class StreamOptionsIn(msgspec.Struct, kw_only=True):
    include_obfuscation: bool | UnsetType | None = UNSET


class ResponsesRequest(msgspec.Struct, kw_only=True):
    model: str = "auto"  # omitted: the gateway picks, as for chat
    input: str | list[ItemIn] | UnsetType = UNSET
    instructions: str | UnsetType | None = UNSET
    tools: list[dict[str, Any]] | UnsetType | None = UNSET
    tool_choice: str | dict[str, Any] | UnsetType | None = UNSET
    parallel_tool_calls: bool | UnsetType | None = UNSET
    text: TextIn | UnsetType | None = UNSET
    reasoning: ReasoningIn | UnsetType | None = UNSET
    max_output_tokens: int | UnsetType | None = UNSET
    temperature: float | UnsetType | None = UNSET
    top_p: float | UnsetType | None = UNSET
    top_logprobs: int | UnsetType | None = UNSET
    metadata: dict[str, str] | UnsetType | None = UNSET
    store: bool | UnsetType | None = UNSET
    stream: bool | UnsetType | None = UNSET
    stream_options: StreamOptionsIn | UnsetType | None = UNSET
    include: list[str] | UnsetType | None = UNSET
    previous_response_id: str | UnsetType | None = UNSET
    prompt_cache_key: str | UnsetType | None = UNSET
    prompt_cache_retention: str | UnsetType | None = UNSET
    prompt_cache_options: dict[str, Any] | UnsetType | None = UNSET
    safety_identifier: str | UnsetType | None = UNSET
    user: str | UnsetType | None = UNSET
    truncation: Literal["auto", "disabled"] | UnsetType | None = UNSET
    service_tier: str | UnsetType | None = UNSET
    background: bool | UnsetType | None = UNSET
    max_tool_calls: int | UnsetType | None = UNSET
    client_metadata: dict[str, Any] | UnsetType | None = UNSET  # Codex's, not OpenAI's
    context_management: list[dict[str, Any]] | UnsetType | None = UNSET
    conversation: str | dict[str, Any] | UnsetType | None = UNSET
    prompt: dict[str, Any] | UnsetType | None = UNSET
    # The gateway's own request fields, as on chat: routing and accounting, never sent upstream.
    project_id: str | UnsetType | None = UNSET
    min_reasoning_level: Literal["none", "low", "medium", "high"] | UnsetType | None = UNSET


REQUEST_FIELDS = frozenset(ResponsesRequest.__struct_fields__)

# ------------------------------------------------------------------------------------------ response


class OutputText(msgspec.Struct, tag_field="type", tag="output_text", kw_only=True):
    text: str
    annotations: list[Any] = msgspec.field(default_factory=list)
    logprobs: list[Any] = msgspec.field(default_factory=list)


class Refusal(msgspec.Struct, tag_field="type", tag="refusal", kw_only=True):
    refusal: str


Part = OutputText | Refusal
Status = Literal["in_progress", "completed", "incomplete"]


class MessageOut(msgspec.Struct, tag_field="type", tag="message", kw_only=True):
    id: str
    status: Status
    role: str = "assistant"
    content: list[Part]


class FunctionCallOut(msgspec.Struct, tag_field="type", tag="function_call", kw_only=True, omit_defaults=True):
    id: str
    call_id: str
    name: str
    arguments: str
    status: Status
    namespace: str | UnsetType = UNSET


class CustomToolCallOut(msgspec.Struct, tag_field="type", tag="custom_tool_call", kw_only=True,
                        omit_defaults=True):
    id: str
    call_id: str
    name: str
    input: str
    status: Status
    namespace: str | UnsetType = UNSET


class SummaryText(msgspec.Struct, tag_field="type", tag="summary_text", kw_only=True):
    text: str


class ReasoningOut(msgspec.Struct, tag_field="type", tag="reasoning", kw_only=True):
    id: str
    summary: list[SummaryText]
    encrypted_content: str | None = None
    status: Status | UnsetType = UNSET


class ImageGenerationCallOut(msgspec.Struct, tag_field="type", tag="image_generation_call", kw_only=True,
                             omit_defaults=True):
    """An image the model made (Gemini's image output), in the shape OpenAI gives its image tool's."""

    id: str
    status: Literal["in_progress", "completed", "generating", "failed"]
    result: str | None = None
    output_format: str | UnsetType = UNSET


class SearchAction(msgspec.Struct, tag_field="type", tag="search", kw_only=True, omit_defaults=True):
    query: str | UnsetType = UNSET


class WebSearchCallOut(msgspec.Struct, tag_field="type", tag="web_search_call", kw_only=True):
    """A web search the upstream ran (Anthropic's web search tool, Gemini's Google Search grounding)."""

    id: str
    status: Literal["in_progress", "searching", "completed", "failed", "incomplete"]
    action: SearchAction


OutputItem = (MessageOut | FunctionCallOut | CustomToolCallOut | ReasoningOut | ImageGenerationCallOut
              | WebSearchCallOut)


class InputTokensDetails(msgspec.Struct, kw_only=True):
    cached_tokens: int = 0
    cache_write_tokens: int = 0


class OutputTokensDetails(msgspec.Struct, kw_only=True):
    reasoning_tokens: int = 0


class ResponseUsage(msgspec.Struct, kw_only=True, omit_defaults=True):
    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails
    total_tokens: int
    # The gateway's cost of the request in USD (as on chat); null when the price is unknown.
    cost_usd_total: float | UnsetType | None = UNSET
    cost_usd_input: float | UnsetType | None = UNSET
    cost_usd_cached_input: float | UnsetType | None = UNSET
    cost_usd_output: float | UnsetType | None = UNSET


class IncompleteDetails(msgspec.Struct, kw_only=True):
    reason: str


class ResponseError(msgspec.Struct, kw_only=True):
    code: str
    message: str


class Response(msgspec.Struct, kw_only=True):
    id: str
    object: str = "response"
    created_at: int
    status: Literal["in_progress", "completed", "incomplete", "failed"]
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    model: str
    output: list[OutputItem]
    parallel_tool_calls: bool = True
    previous_response_id: str | None = None
    reasoning: dict[str, Any] | None = None
    service_tier: str | None = None
    store: bool = True
    temperature: float | None = None
    text: dict[str, Any]
    tool_choice: Any = "auto"
    tools: list[Any] = msgspec.field(default_factory=list)
    top_p: float | None = None
    truncation: str = "disabled"
    usage: ResponseUsage | None = None
    user: str | None = None
    metadata: dict[str, str] = msgspec.field(default_factory=dict)
    # The gateway's routing report and notes (what chat carries in its ``metadata``): the Responses
    # ``metadata`` member is the client's own string map, so the gateway's goes beside it.
    gateway: dict[str, Any] | UnsetType = UNSET
