"""Anthropic Messages API (``POST /v1/messages``) behind the OpenAI chat format.

``build_request`` turns an OpenAI chat request into a Messages request, refusing with a 400 naming the
parameter whatever Anthropic cannot express; ``parse_response`` and the stream translator turn a
``Message`` or its event stream back into a ``chat.completion`` or its chunks; ``parse_error`` maps the
``{"type": "error", "error": {...}}`` body. Every decision is in docs/anthropic.md.

Thinking travels as ``reasoning`` / ``reasoning_content`` (text) and ``reasoning_details`` (one entry per
thinking block, with the signature Anthropic needs to see again), so clients can send it back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, NoReturn, TypeVar

import msgspec
from msgspec import UNSET, UnsetType

from gateway.dialects.chat import DOMAINS_HINT, ChatCall
from gateway.errors import (
    GatewayError,
    InvalidRequest,
    UnsupportedParameter,
    UpstreamError,
    UpstreamUnreachable,
    upstream_error,
)
from gateway.notes import Notes
from gateway.providers.base import ResponseContext, Target, lowered_max_tokens, reasoning_unsupported
from gateway.providers.common import ChunkWriter, completion, dumps, parse_arguments, parse_data_url
from gateway.sse import SSEEvent
from gateway.upstream import UpstreamRequest
from gateway.wire.openai import (
    Annotation,
    ChatRequest,
    CompletionTokensDetails,
    ContentPart,
    Delta,
    DeltaFunction,
    DeltaToolCall,
    Message,
    NamedToolChoice,
    PromptTokensDetails,
    ResponseFunctionCall,
    ResponseMessage,
    ResponseToolCall,
    UrlCitation,
    Usage,
    UserLocation,
    WebSearchOptions,
)

# Anthropic has no default for max_tokens (omitting it is a 400), OpenAI does; 4096 is what LiteLLM,
# one-api and pydantic-ai send. The routing work will take it from the model catalog instead.
DEFAULT_MAX_TOKENS = 4096
ANTHROPIC_VERSION = "2023-06-01"
# reasoning_effort -> thinking.budget_tokens (Anthropic's minimum is 1024; LiteLLM uses the same table).
THINKING_BUDGETS: dict[str, int] = {"low": 1024, "medium": 2048, "high": 4096}
# The ``format`` of our reasoning_details entries: only entries of this format are replayed to Anthropic.
REASONING_FORMAT = "anthropic-claude-v1"
# The tool that carries ``response_format: json_object`` (Anthropic has no schema-less JSON mode). Its
# name is reserved: a response's tool_use of this name is the JSON answer, not a tool call.
JSON_TOOL = "gateway_json_response"
IMAGE_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
# The web search server tool's version (GA: no beta header).
WEB_SEARCH_TOOL: Literal["web_search_20250305"] = "web_search_20250305"
WEB_SEARCH_NAME = "web_search"

_T = TypeVar("_T")
_HEADERS = {"content-type": "application/json", "anthropic-version": ANTHROPIC_VERSION}
# context_management is behind this beta (docs.anthropic.com, "Context editing").
CONTEXT_MANAGEMENT_BETA = "context-management-2025-06-27"
# System turns inside ``messages`` (Claude Code sends one by default and declares this beta).
MID_CONVERSATION_SYSTEM_BETA = "mid-conversation-system-2026-04-07"

# ------------------------------------------------------------------------------- wire types: request


class _Block(msgspec.Struct, tag_field="type", kw_only=True):
    """A request content block; the subclass's tag is its ``type``."""


class Base64Source(msgspec.Struct, tag_field="type", tag="base64", kw_only=True):
    media_type: str
    data: str


class URLSource(msgspec.Struct, tag_field="type", tag="url", kw_only=True):
    url: str


class TextBlock(_Block, tag="text"):
    text: str


class ImageBlock(_Block, tag="image"):
    source: Base64Source | URLSource


class DocumentBlock(_Block, tag="document"):
    source: Base64Source


class ToolUseBlock(_Block, tag="tool_use"):
    id: str
    name: str
    input: dict[str, Any]


class ToolResultBlock(_Block, tag="tool_result"):
    tool_use_id: str
    content: str | list[TextBlock | ImageBlock | DocumentBlock] | UnsetType = UNSET


class ThinkingBlock(_Block, tag="thinking"):
    thinking: str
    signature: str


class RedactedThinkingBlock(_Block, tag="redacted_thinking"):
    data: str


UserBlock = TextBlock | ImageBlock | DocumentBlock
RequestBlock = (
    TextBlock | ImageBlock | DocumentBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock | RedactedThinkingBlock
)


class MessageParam(msgspec.Struct, kw_only=True):
    role: Literal["user", "assistant", "system"]  # "system" only with MID_CONVERSATION_SYSTEM_BETA
    content: list[RequestBlock]


class ToolParam(msgspec.Struct, kw_only=True):
    name: str
    description: str | UnsetType = UNSET
    input_schema: dict[str, Any]
    strict: bool | UnsetType = UNSET
    eager_input_streaming: bool | UnsetType = UNSET


class SearchLocation(msgspec.Struct, kw_only=True):
    type: Literal["approximate"] = "approximate"
    city: str | UnsetType = UNSET
    region: str | UnsetType = UNSET
    country: str | UnsetType = UNSET
    timezone: str | UnsetType = UNSET


class WebSearchToolParam(msgspec.Struct, kw_only=True):
    """Anthropic's web search server tool: Anthropic runs the searches and bills each one."""

    type: Literal["web_search_20250305"] = WEB_SEARCH_TOOL
    name: Literal["web_search"] = "web_search"
    allowed_domains: list[str] | UnsetType = UNSET
    user_location: SearchLocation | UnsetType = UNSET
    max_uses: int | UnsetType = UNSET


class ToolChoice(msgspec.Struct, kw_only=True):
    type: Literal["auto", "any", "tool", "none"]
    name: str | UnsetType = UNSET
    disable_parallel_tool_use: bool | UnsetType = UNSET


class ThinkingConfig(msgspec.Struct, kw_only=True):
    type: Literal["enabled"] = "enabled"
    budget_tokens: int


class JsonOutputFormat(msgspec.Struct, kw_only=True):
    type: Literal["json_schema"] = "json_schema"
    schema: dict[str, Any]


class OutputConfig(msgspec.Struct, kw_only=True):
    format: JsonOutputFormat


class RequestMetadata(msgspec.Struct, kw_only=True):
    user_id: str


class MessagesRequest(msgspec.Struct, kw_only=True):
    model: str
    max_tokens: int
    messages: list[MessageParam]
    system: list[TextBlock] | UnsetType = UNSET
    stop_sequences: list[str] | UnsetType = UNSET
    stream: bool | UnsetType = UNSET
    temperature: float | UnsetType = UNSET
    top_p: float | UnsetType = UNSET
    tools: list[ToolParam | WebSearchToolParam] | UnsetType = UNSET
    tool_choice: ToolChoice | UnsetType = UNSET
    thinking: ThinkingConfig | UnsetType = UNSET
    output_config: OutputConfig | UnsetType = UNSET
    metadata: RequestMetadata | UnsetType = UNSET
    service_tier: Literal["auto", "standard_only"] | UnsetType = UNSET
    context_management: dict[str, Any] | UnsetType = UNSET


# ------------------------------------------------------------------------ wire types: response, stream
# One Struct per shape with every member optional rather than tagged unions: Anthropic adds block, delta
# and event types over time, and an unknown one must decode (and be ignored), not fail the response.


class OutputTokensDetails(msgspec.Struct, kw_only=True):
    thinking_tokens: int | None = None


class MessageUsage(msgspec.Struct, kw_only=True):
    # All optional: message_delta repeats only some of them (always output_tokens, newer API the rest).
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    output_tokens_details: OutputTokensDetails | None = None


class Citation(msgspec.Struct, kw_only=True):
    type: str = ""
    url: str | None = None
    title: str | None = None


class ResponseBlock(msgspec.Struct, kw_only=True):
    type: str
    text: str = ""
    id: str = ""
    name: str = ""
    input: dict[str, Any] = msgspec.field(default_factory=dict)
    thinking: str = ""
    signature: str = ""
    data: str = ""
    citations: list[Citation] | None = None


class MessageResponse(msgspec.Struct, kw_only=True):
    content: list[ResponseBlock] = msgspec.field(default_factory=list)
    stop_reason: str | None = None
    usage: MessageUsage = msgspec.field(default_factory=MessageUsage)


class StreamDelta(msgspec.Struct, kw_only=True):
    type: str = ""  # absent on message_delta's delta
    text: str = ""
    partial_json: str = ""
    thinking: str = ""
    signature: str = ""
    stop_reason: str | None = None
    citation: Citation | None = None  # citations_delta: one more citation of the open text block


class ErrorDetail(msgspec.Struct, kw_only=True):
    type: str = "api_error"
    message: str = ""


class StreamEvent(msgspec.Struct, kw_only=True):
    type: str
    message: MessageResponse | None = None
    index: int = 0
    content_block: ResponseBlock | None = None
    delta: StreamDelta | None = None
    usage: MessageUsage | None = None
    error: ErrorDetail | None = None


class ErrorResponse(msgspec.Struct, kw_only=True):
    error: ErrorDetail | None = None


class ReasoningDetail(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One ``reasoning_details`` entry (OpenRouter's shape): a thinking block, or a redacted one."""

    type: str  # "reasoning.text" (thinking) | "reasoning.encrypted" (redacted_thinking)
    text: str | None = None
    signature: str | None = None
    data: str | None = None
    format: str | None = None
    # The entry's position in the message's list. Streamed, it is what lets a client put the chunks' list
    # back together (the openai SDK's stream helper refuses list deltas without it).
    index: int | None = None


_response_decoder = msgspec.json.Decoder(MessageResponse)
_event_decoder = msgspec.json.Decoder(StreamEvent)
_error_decoder = msgspec.json.Decoder(ErrorResponse)
_encoder = msgspec.json.Encoder()

# ------------------------------------------------------------------------------------------ requests


def _given(value: object) -> bool:
    """Sent with a value: neither left out (UNSET) nor an explicit null."""
    return value is not None and value is not UNSET


def _refuse(param: str, why: str) -> NoReturn:
    raise UnsupportedParameter(f"'{param}' is not supported for Anthropic models: {why}", param=param)


def _required(value: _T | UnsetType, param: str) -> _T:
    if isinstance(value, UnsetType):
        raise InvalidRequest(f"Missing required parameter: '{param}'.", param=param,
                             code="missing_required_parameter")
    return value


def build_request(call: ChatCall, target: Target) -> UpstreamRequest:
    req = call.request
    _refuse_unsupported(call)
    notes = Notes()
    system_turns = MID_CONVERSATION_SYSTEM_BETA in call.betas
    system, messages = _convert_messages(req.messages, system_turns=system_turns)
    budget = None if reasoning_unsupported(call, target, notes) else _thinking_budget(req.reasoning_effort)
    tools: list[ToolParam | WebSearchToolParam] = list(_tools(req))
    search = _web_search(call, notes)
    if search is not None:
        tools.append(search)  # last, so tools[i] still names the client's i-th function
    lowered = lowered_max_tokens(call, target, notes)
    body = MessagesRequest(
        model=target.model,
        max_tokens=lowered or _max_tokens(req, budget, target.max_output_tokens),
        messages=messages,
        system=system or UNSET,
        stop_sequences=_stop_sequences(req.stop),
        stream=True if call.stream else UNSET,
        temperature=_temperature(req.temperature),
        top_p=UNSET if req.top_p is None else req.top_p,
        tools=tools or UNSET,
        tool_choice=_tool_choice(req, has_tools=search is not None or bool(tools)),
        thinking=UNSET if budget is None else ThinkingConfig(budget_tokens=budget),
        metadata=RequestMetadata(user_id=req.user) if req.user else UNSET,
        service_tier=_service_tier(req.service_tier),
    )
    _apply_response_format(req, body)
    taken = _take_hints(call, body)
    call.ignore_hints(notes, taken)
    betas = [beta for beta, used in ((CONTEXT_MANAGEMENT_BETA, "context_management" in taken),
                                     (MID_CONVERSATION_SYSTEM_BETA, any(m.role == "system" for m in messages)))
             if used]
    headers = {**_HEADERS, "anthropic-beta": ",".join(betas)} if betas else _HEADERS
    return UpstreamRequest(provider=target.provider, url=f"{target.provider.base_url}/v1/messages",
                           body=_encoder.encode(body), headers=headers, notes=notes or None)


def _take_hints(call: ChatCall, body: MessagesRequest) -> set[str]:
    """The Messages hints this request can carry, set on ``body``; their paths."""
    taken: set[str] = set()
    for i, tool in enumerate(body.tools or ()):
        value = call.hints.get(f"tools[{i}].eager_input_streaming")
        if isinstance(value, bool) and isinstance(tool, ToolParam):
            tool.eager_input_streaming = value
            taken.add(f"tools[{i}].eager_input_streaming")
    management = call.hints.get("context_management")
    if isinstance(management, dict) and (body.thinking or not _clears_thinking(management)):
        body.context_management = management
        taken.add("context_management")
    search = next((tool for tool in body.tools or () if isinstance(tool, WebSearchToolParam)), None)
    for path, value in call.hints.items():
        if search is not None and path.endswith(DOMAINS_HINT) and isinstance(value, list):
            search.allowed_domains = [str(domain) for domain in value]
            taken.add(path)
        elif search is not None and path == "max_tool_calls" and isinstance(value, int):
            search.max_uses = value  # the Responses cap on built-in tool calls; a search is the only one here
            taken.add(path)
    return taken


def _clears_thinking(management: dict[str, Any]) -> bool:
    # A clear_thinking edit is a 400 when thinking is off; with no thinking sent there is nothing to clear.
    edits = management.get("edits")
    return isinstance(edits, list) and any(isinstance(e, dict) and str(e.get("type", "")).startswith("clear_thinking")
                                           for e in edits)


def _refuse_unsupported(call: ChatCall) -> None:
    """Parameters with no Anthropic counterpart: refused when set to anything but OpenAI's no-op default."""
    unknown = call.unknown_fields()
    if unknown:
        names = ", ".join(f"'{name}'" for name in unknown)
        raise UnsupportedParameter(f"Unsupported parameter(s) for Anthropic models: {names}.", param=unknown[0])
    req = call.request
    if req.n not in (UNSET, None, 1):
        _refuse("n", "Anthropic returns exactly one choice per request; send n requests instead.")
    if _given(req.seed):
        _refuse("seed", "Anthropic has no seeded sampling, so the answer could not be reproducible.")
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(req, name) not in (UNSET, None, 0):
            _refuse(name, "Anthropic has no repetition penalties.")
    if req.logit_bias:
        _refuse("logit_bias", "Anthropic cannot bias tokens.")
    if req.logprobs:
        _refuse("logprobs", "Anthropic does not return log probabilities.")
    if req.top_logprobs:
        _refuse("top_logprobs", "Anthropic does not return log probabilities.")
    if req.modalities and set(req.modalities) != {"text"}:
        _refuse("modalities", "Anthropic models answer in text only.")
    if req.store:
        _refuse("store", "Anthropic does not store completions.")
    if req.metadata:
        _refuse("metadata", "Anthropic's metadata holds only a user id (send 'user' for that).")


# ---------------------------------------------------------------------------------------- messages


class _Turns:
    """The Anthropic turns being built: consecutive messages of one role merge into one turn, which puts
    every tool result of a parallel call (and any user text after them) into a single user turn."""

    __slots__ = ("turns",)

    def __init__(self) -> None:
        self.turns: list[MessageParam] = []

    def add(self, role: Literal["user", "assistant", "system"], blocks: list[RequestBlock]) -> None:
        if not blocks:
            return
        if self.turns and self.turns[-1].role == role:
            self.turns[-1].content.extend(blocks)
        else:
            self.turns.append(MessageParam(role=role, content=blocks))


def _convert_messages(messages: list[Message], *, system_turns: bool = False) -> tuple[list[TextBlock],
                                                                                      list[MessageParam]]:
    """The top-level system blocks and the turns. ``system_turns``: the client declared Anthropic's
    mid-conversation system beta, so a system message after the first turn stays where it stands."""
    system: list[TextBlock] = []
    turns = _Turns()
    for i, message in enumerate(messages):
        path = f"messages[{i}]"
        if _given(message.name):
            _refuse(f"{path}.name", "Anthropic messages carry no participant name.")
        match message.role:
            case "system" | "developer" if system_turns and turns.turns:
                turns.add("system", list(_text_blocks(message.content, path)))
            case "system" | "developer":
                # Without the beta Anthropic takes instructions only at the top level; all of them go there,
                # in order, after the top-level ones.
                system.extend(_text_blocks(message.content, path))
            case "user":
                turns.add("user", list(_user_blocks(message.content, path)))
            case "assistant":
                turns.add("assistant", _assistant_blocks(message, path))
            case "tool":
                turns.add("user", [_tool_result(message, path)])
            case _:
                _refuse(f"{path}.role", f"the '{message.role}' role is deprecated; use 'tool' messages.")
    return system, turns.turns


def _text(text: str) -> list[TextBlock]:
    # Anthropic rejects empty text blocks; an empty string carries nothing, so it becomes no block.
    return [TextBlock(text=text)] if text else []



def _text_blocks(content: str | list[ContentPart] | UnsetType | None, path: str, *,
                 refusal: bool = False) -> list[TextBlock]:
    """Text-only content (system, developer, assistant). An assistant's ``refusal`` part is what it said."""
    if isinstance(content, str):
        return _text(content)
    blocks: list[TextBlock] = []
    for j, part in enumerate(content or ()):
        part_path = f"{path}.content[{j}]"
        if part.type == "text":
            blocks += _text(_required(part.text, f"{part_path}.text"))
        elif part.type == "refusal" and refusal:
            blocks += _text(_required(part.refusal, f"{part_path}.refusal"))
        else:
            _refuse(f"{part_path}.type", f"this message can only hold text, not '{part.type}'.")
    return blocks


def _user_blocks(content: str | list[ContentPart] | UnsetType | None, path: str) -> list[UserBlock]:
    if isinstance(content, str):
        return list(_text(content))
    blocks: list[UserBlock] = []
    for j, part in enumerate(content or ()):
        part_path = f"{path}.content[{j}]"
        match part.type:
            case "text":
                blocks += _text(_required(part.text, f"{part_path}.text"))
            case "image_url":
                blocks.append(_image(_required(part.image_url, f"{part_path}.image_url").url, part_path))
            case "file":
                blocks.append(_document(_required(part.file, f"{part_path}.file").file_data, part_path))
            case _:
                _refuse(f"{part_path}.type",
                        f"Anthropic models take text, images and PDF files, not '{part.type}'.")
    return blocks


def _image(url: str, path: str) -> ImageBlock:
    # ``detail`` has no Anthropic counterpart (Claude sizes images itself): reported by ChatCall.ignore_hints.
    param = f"{path}.image_url.url"
    if url.startswith(("https://", "http://")):
        return ImageBlock(source=URLSource(url=url))
    media_type, data = parse_data_url(url, param)
    if media_type not in IMAGE_MEDIA_TYPES:
        raise InvalidRequest(f"Anthropic accepts JPEG, PNG, GIF and WebP images, not '{media_type}'.",
                             param=param, code="unsupported_value")
    return ImageBlock(source=Base64Source(media_type=media_type, data=data))


def _document(file_data: str | UnsetType, path: str) -> DocumentBlock:
    if isinstance(file_data, UnsetType):
        _refuse(f"{path}.file.file_id", "uploaded file ids are OpenAI's; send the file inline as 'file_data'.")
    param = f"{path}.file.file_data"
    media_type, data = parse_data_url(file_data, param)
    if media_type != "application/pdf":
        raise InvalidRequest(f"Anthropic accepts PDF files inline, not '{media_type}'.", param=param,
                             code="unsupported_value")
    return DocumentBlock(source=Base64Source(media_type=media_type, data=data))


def _assistant_blocks(message: Message, path: str) -> list[RequestBlock]:
    # Thinking first: Anthropic wants a turn's thinking blocks back, unchanged, before its text and tool use.
    blocks: list[RequestBlock] = list(_replayed_thinking(message.reasoning_details, path))
    blocks += _text_blocks(message.content, path, refusal=True)
    if message.refusal:
        blocks += _text(message.refusal)
    for k, call in enumerate(message.tool_calls or ()):
        call_path = f"{path}.tool_calls[{k}]"
        if call.type != "function":
            _refuse(f"{call_path}.type", f"Anthropic has function tools only, not '{call.type}'.")
        arguments = parse_arguments(call.function.arguments, f"{call_path}.function.arguments")
        blocks.append(ToolUseBlock(id=call.id, name=call.function.name, input=arguments))
    return blocks


def _replayed_thinking(details: list[dict[str, Any]] | UnsetType | None,
                       path: str) -> list[ThinkingBlock | RedactedThinkingBlock]:
    """``reasoning_details`` a client sent back -> the thinking blocks they came from.

    ``reasoning`` / ``reasoning_content`` are not used: without its signature Anthropic refuses thinking
    text. Entries of another ``format`` (another provider's reasoning) cannot be verified by Anthropic
    and are left out, as Anthropic itself ignores thinking from earlier turns.
    """
    blocks: list[ThinkingBlock | RedactedThinkingBlock] = []
    for j, raw in enumerate(details or ()):
        param = f"{path}.reasoning_details[{j}]"
        try:
            detail = msgspec.convert(raw, ReasoningDetail)
        except msgspec.ValidationError as exc:
            raise InvalidRequest(f"Invalid reasoning_details entry: {exc}.", param=param) from None
        if detail.format != REASONING_FORMAT:
            continue
        if detail.type == "reasoning.text" and detail.signature:
            blocks.append(ThinkingBlock(thinking=detail.text or "", signature=detail.signature))
        elif detail.type == "reasoning.encrypted" and detail.data:
            blocks.append(RedactedThinkingBlock(data=detail.data))
        else:
            raise InvalidRequest("An Anthropic reasoning_details entry must be 'reasoning.text' with its "
                                 "'signature' or 'reasoning.encrypted' with its 'data', as the gateway "
                                 "returned it.", param=param)
    return blocks


def _tool_result(message: Message, path: str) -> ToolResultBlock:
    tool_use_id = _required(message.tool_call_id, f"{path}.tool_call_id")
    if isinstance(message.content, str):
        # An empty result is sent without content: Anthropic rejects empty text.
        return ToolResultBlock(tool_use_id=tool_use_id, content=message.content or UNSET)
    return ToolResultBlock(tool_use_id=tool_use_id, content=_user_blocks(message.content, path) or UNSET)


# ----------------------------------------------------------------------------------- tools, options


def _tools(req: ChatRequest) -> list[ToolParam]:
    tools: list[ToolParam] = []
    for i, tool in enumerate(req.tools or ()):
        if tool.type != "function":
            _refuse(f"tools[{i}].type", f"Anthropic has function tools only, not '{tool.type}'.")
        fn = tool.function
        if fn.name == JSON_TOOL:
            raise InvalidRequest(f"The tool name '{JSON_TOOL}' is reserved by the gateway.",
                                 param=f"tools[{i}].function.name")
        # Anthropic requires an object schema; OpenAI lets a function without parameters omit it.
        schema = fn.parameters if isinstance(fn.parameters, dict) else {"type": "object", "properties": {}}
        tools.append(ToolParam(name=fn.name, description=fn.description, input_schema=schema,
                               strict=fn.strict if isinstance(fn.strict, bool) else UNSET))
    return tools


def _web_search(call: ChatCall, notes: Notes) -> WebSearchToolParam | None:
    """``web_search_options`` as Anthropic's web search tool. Anthropic sizes the context it reads itself:
    ``search_context_size`` is a hint left out and reported."""
    options = call.request.web_search_options
    if not isinstance(options, WebSearchOptions):
        return None
    if isinstance(options.search_context_size, str):
        notes.ignore(call.client_path("web_search_options.search_context_size"))
    tool = WebSearchToolParam()
    location = options.user_location
    if isinstance(location, UserLocation):
        where = location.approximate
        tool.user_location = SearchLocation(city=where.city, region=where.region, country=where.country,
                                            timezone=where.timezone)
    return tool


TOOL_CHOICE_TYPES: dict[str, Literal["auto", "any", "none"]] = {"auto": "auto", "required": "any", "none": "none"}


def _tool_choice(req: ChatRequest, *, has_tools: bool) -> ToolChoice | UnsetType:
    choice = req.tool_choice
    if not has_tools:
        if choice in (UNSET, None, "auto", "none"):
            return UNSET  # the same as no tools at all
        raise InvalidRequest("'tool_choice' needs 'tools' to choose from.", param="tool_choice")
    if isinstance(choice, NamedToolChoice):
        if choice.type != "function":
            _refuse("tool_choice.type", f"Anthropic has function tools only, not '{choice.type}'.")
        result = ToolChoice(type="tool", name=choice.function.name)
    elif choice is UNSET or choice is None:
        result = ToolChoice(type="auto")
    elif choice in TOOL_CHOICE_TYPES:
        result = ToolChoice(type=TOOL_CHOICE_TYPES[choice])
    else:
        raise InvalidRequest(f"Invalid value for 'tool_choice': '{choice}'.", param="tool_choice",
                             code="invalid_value")
    # OpenAI's switch lives on the request, Anthropic's on tool_choice (meaningless for "none").
    if req.parallel_tool_calls is False and result.type != "none":
        result.disable_parallel_tool_use = True
    return result


def _thinking_budget(effort: str | UnsetType | None) -> int | None:
    if effort is UNSET or effort is None or effort == "none":
        return None
    if effort not in THINKING_BUDGETS:
        raise InvalidRequest(f"Anthropic models support reasoning_effort 'none', 'low', 'medium' and 'high', "
                             f"not '{effort}'.", param="reasoning_effort", code="unsupported_value")
    return THINKING_BUDGETS[effort]


def _max_tokens(req: ChatRequest, budget: int | None, catalog_max: int | None) -> int:
    """Anthropic's max_tokens, like OpenAI's max_completion_tokens, counts thinking and answer together."""
    param, value = "max_completion_tokens", req.max_completion_tokens
    if not _given(value):
        param, value = "max_tokens", req.max_tokens
    if value is UNSET or value is None:
        # No limit asked for: the model's whole output room when the catalog knows it (as OpenAI
        # behaves), else the default room for the answer plus the thinking budget on top.
        if catalog_max is not None and catalog_max > (budget or 0):
            return catalog_max
        return DEFAULT_MAX_TOKENS + (budget or 0)
    if budget is not None and value <= budget:
        raise InvalidRequest(f"'{param}' is {value}, but reasoning_effort '{req.reasoning_effort}' gives "
                             f"Anthropic a thinking budget of {budget} tokens, which must be less than "
                             f"'{param}'. Raise '{param}' or lower reasoning_effort.", param=param)
    return value


def _temperature(value: float | UnsetType | None) -> float | UnsetType:
    if value is UNSET or value is None:
        return UNSET
    if not 0 <= value <= 1:
        raise InvalidRequest(f"Anthropic models accept a temperature from 0 to 1, not {value:g}.",
                             param="temperature", code="unsupported_value")
    return value


def _stop_sequences(stop: str | list[str] | UnsetType | None) -> list[str] | UnsetType:
    if isinstance(stop, str):
        return [stop]
    return stop or UNSET


SERVICE_TIERS: dict[str, Literal["auto", "standard_only"]] = {"auto": "auto", "default": "standard_only"}


def _service_tier(tier: str | UnsetType | None) -> Literal["auto", "standard_only"] | UnsetType:
    if tier is UNSET or tier is None:
        return UNSET
    if tier not in SERVICE_TIERS:
        _refuse("service_tier", f"Anthropic offers 'auto' and 'default' (standard only), not '{tier}'.")
    return SERVICE_TIERS[tier]


def _apply_response_format(req: ChatRequest, body: MessagesRequest) -> None:
    fmt = req.response_format
    if fmt is UNSET or fmt is None or fmt.type == "text":
        return
    if fmt.type == "json_schema":
        # Native structured outputs: the answer is a text block holding JSON that matches the schema,
        # which streams as text and composes with tools and thinking.
        spec = _required(fmt.json_schema, "response_format.json_schema")
        schema = _required(spec.schema, "response_format.json_schema.schema")
        body.output_config = OutputConfig(format=JsonOutputFormat(schema=schema))
        return
    # json_object: Anthropic has no schema-less JSON mode, so one forced tool taking any object carries
    # the answer. Forcing a tool rules out the client's own tools and thinking (Anthropic forbids forced
    # tool use while thinking): those combinations are refused rather than quietly changed.
    if body.tools:
        _refuse("response_format", "json_object cannot be combined with tools here; use json_schema.")
    if body.thinking:
        _refuse("response_format", "json_object cannot be combined with reasoning_effort here; use json_schema.")
    body.tools = [ToolParam(name=JSON_TOOL, description="Give your complete answer as a JSON object.",
                            input_schema={"type": "object"})]
    body.tool_choice = ToolChoice(type="tool", name=JSON_TOOL)


# ----------------------------------------------------------------------------------------- responses

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    # The answer is unfinished in both: "length" tells the client so, where "stop" would claim it complete.
    "pause_turn": "length",
    "model_context_window_exceeded": "length",
}


def _finish_reason(stop_reason: str | None, json_answer: bool) -> str:
    if json_answer and stop_reason == "tool_use":
        return "stop"  # the forced JSON tool is the answer, not a call for the client to make
    return FINISH_REASONS.get(stop_reason or "", "stop")


def usage_of(usage: MessageUsage, thought: bool) -> Usage:
    """OpenAI counts cached prompt tokens inside prompt_tokens; Anthropic's input_tokens excludes them."""
    cache_read = usage.cache_read_input_tokens or 0
    cache_write = usage.cache_creation_input_tokens or 0
    prompt = (usage.input_tokens or 0) + cache_read + cache_write
    completion_tokens = usage.output_tokens or 0
    result = Usage(prompt_tokens=prompt, completion_tokens=completion_tokens,
                   total_tokens=prompt + completion_tokens,
                   prompt_tokens_details=PromptTokensDetails(cached_tokens=cache_read,
                                                             cache_write_tokens=cache_write))
    details = usage.output_tokens_details
    # output_tokens includes thinking. Its share is known when Anthropic reports it, or is 0 when the model
    # did not think; otherwise it is unknown and left out rather than guessed.
    reasoning = details.thinking_tokens if details and details.thinking_tokens is not None else None
    if reasoning is None and not thought:
        reasoning = 0
    if reasoning is not None:
        result.completion_tokens_details = CompletionTokensDetails(reasoning_tokens=reasoning)
        result.reasoning_tokens = reasoning
    return result


def merge_usage(current: MessageUsage, update: MessageUsage) -> MessageUsage:
    """message_delta's usage is cumulative and, in newer API versions, repeats (possibly corrected)
    input counts: every member it carries replaces the one from message_start."""
    merged = {name: getattr(update, name) if getattr(update, name) is not None
              else getattr(current, name) for name in MessageUsage.__struct_fields__}
    return MessageUsage(**merged)


def thinking_detail(text: str, signature: str, index: int | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = msgspec.to_builtins(ReasoningDetail(
        type="reasoning.text", text=text, signature=signature or None, format=REASONING_FORMAT, index=index))
    return entry


def redacted_detail(data: str, index: int | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = msgspec.to_builtins(ReasoningDetail(
        type="reasoning.encrypted", data=data, format=REASONING_FORMAT, index=index))
    return entry


# Where a text block's web citations point; other citation kinds (documents) are not asked for by the gateway.
WEB_CITATION = "web_search_result_location"


def annotations_of(citations: list[Citation], start: int, end: int) -> list[Annotation]:
    """A text block's web citations as url_citation annotations over the block's span of the message's
    text (Anthropic cites whole blocks: the block is the text the source supports)."""
    return [Annotation(url_citation=UrlCitation(start_index=start, end_index=end, url=cite.url,
                                                title=cite.title or ""))
            for cite in citations if cite.type == WEB_CITATION and cite.url]


def search_query(search_input: dict[str, Any]) -> list[str]:
    """The query of a web_search server_tool_use, as a list of none or one."""
    query = search_input.get("query")
    return [query] if isinstance(query, str) else []


def parse_response(body: bytes, ctx: ResponseContext) -> tuple[bytes, Usage | None]:
    try:
        reply = _response_decoder.decode(body)
    except msgspec.DecodeError:
        raise UpstreamError(f"[{ctx.provider}] answered with a body that is not a Messages response.",
                            status=502, error_type="upstream_error", code="invalid_upstream_response",
                            provider=ctx.provider) from None
    texts: list[str] = []
    thoughts: list[str] = []
    details: list[dict[str, Any]] = []
    tool_calls: list[ResponseToolCall] = []
    annotations: list[Annotation] = []
    queries: list[str] = []
    size = 0  # the characters of text so far: where the next block's annotations start
    json_answer = False
    for block in reply.content:
        match block.type:
            case "text":
                texts.append(block.text)
                annotations += annotations_of(block.citations or [], size, size + len(block.text))
                size += len(block.text)
            case "server_tool_use" if block.name == WEB_SEARCH_NAME:
                queries += search_query(block.input)
            case "tool_use" if block.name == JSON_TOOL:
                texts.append(dumps(block.input))
                size += len(texts[-1])
                json_answer = True
            case "tool_use":
                tool_calls.append(ResponseToolCall(
                    id=block.id, function=ResponseFunctionCall(name=block.name, arguments=dumps(block.input))))
            case "thinking":
                thoughts.append(block.thinking)
                details.append(thinking_detail(block.thinking, block.signature, len(details)))
            case "redacted_thinking":
                details.append(redacted_detail(block.data, len(details)))
    message = ResponseMessage(content="".join(texts) if texts else None)
    if tool_calls:
        message.tool_calls = tool_calls
    if thoughts:
        message.reasoning = message.reasoning_content = "".join(thoughts)
    if details:
        message.reasoning_details = details
    if annotations:
        message.annotations = annotations
    if queries:
        message.web_search_queries = queries
    usage = usage_of(reply.usage, thought=bool(details))
    return completion(ctx, message, _finish_reason(reply.stop_reason, json_answer), usage), usage


# -------------------------------------------------------------------------------------------- streams

_HANDLED_EVENTS = frozenset({"message_start", "content_block_start", "content_block_delta", "content_block_stop",
                             "message_delta", "message_stop", "error"})

# A mid-stream ``error`` event has no HTTP status of its own: the status Anthropic gives that type.
STATUS_BY_ERROR_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}

_BlockKind = Literal["text", "tool", "json", "thinking", "redacted", "search", "other"]


class _OpenBlock:
    """What the translator remembers about one content block between its start and stop events."""

    __slots__ = ("citations", "data", "has_arguments", "kind", "signature", "start", "thinking", "tool_index")

    def __init__(self, kind: _BlockKind, *, tool_index: int = -1, data: str = "", start: int = 0) -> None:
        self.kind: _BlockKind = kind
        self.tool_index = tool_index  # OpenAI's index: the position among tool calls, not Anthropic's block index
        self.has_arguments = False
        self.thinking: list[str] = []
        self.signature = ""
        self.data = data  # redacted thinking's data; a web search's input JSON as it streams
        self.start = start  # a text block's first character in the message's text
        self.citations: list[Citation] = []


class AnthropicStreamTranslator:
    """Messages stream events in, OpenAI chunks out: a state machine over the event types."""

    __slots__ = ("_annotations", "_blocks", "_chars", "_details", "_done", "_json_answer", "_provider",
                 "_stop_reason", "_thought", "_tools", "_upstream_usage", "usage", "writer")

    def __init__(self, ctx: ResponseContext) -> None:
        self.writer = ChunkWriter(ctx)
        self._details = 0  # reasoning_details entries sent: the next one's index
        self.usage: Usage | None = None
        self._provider = ctx.provider
        self._upstream_usage = MessageUsage()
        self._blocks: dict[int, _OpenBlock] = {}
        self._tools = 0
        self._chars = 0  # characters of text streamed: where a cited block's annotation starts and ends
        self._annotations = 0  # annotations sent: the next one's index
        self._stop_reason: str | None = None
        self._json_answer = False
        self._thought = False
        self._done = False

    def feed(self, event: SSEEvent) -> list[bytes]:
        # The event name equals the JSON type: pings and event types newer than this code are skipped
        # without decoding (Anthropic's versioning policy says clients must ignore unknown events).
        if self._done or (event.event is not None and event.event not in _HANDLED_EVENTS):
            return []
        try:
            ev = _event_decoder.decode(event.data)
        except msgspec.DecodeError:
            raise UpstreamError(f"[{self._provider}] sent a stream event that is not valid JSON.",
                                status=502, error_type="upstream_error", code="invalid_upstream_response",
                                provider=self._provider) from None
        match ev.type:
            case "message_start" if ev.message is not None:
                self._set_usage(ev.message.usage)
                return [self.writer.delta(Delta(content=""))]  # the role chunk, as OpenAI sends first
            case "content_block_start" if ev.content_block is not None:
                return self._start_block(ev.index, ev.content_block)
            case "content_block_delta" if ev.delta is not None:
                return self._block_delta(ev.index, ev.delta)
            case "content_block_stop":
                return self._stop_block(ev.index)
            case "message_delta":
                if ev.delta is not None and ev.delta.stop_reason is not None:
                    self._stop_reason = ev.delta.stop_reason
                if ev.usage is not None:
                    self._set_usage(ev.usage)
                return []
            case "message_stop":
                self._done = True
                reason = _finish_reason(self._stop_reason, self._json_answer)
                return [self.writer.end(reason, self.usage)]
            case "error":
                detail = ev.error or ErrorDetail()
                raise upstream_error(self._provider, STATUS_BY_ERROR_TYPE.get(detail.type, 500),
                                     detail.message or detail.type, error_type=detail.type)
        return []

    def close(self) -> list[bytes]:
        if not self._done:
            raise UpstreamUnreachable(f"provider '{self._provider}' ended the stream before 'message_stop'",
                                      provider=self._provider)
        return []

    def _set_usage(self, update: MessageUsage) -> None:
        self._upstream_usage = merge_usage(self._upstream_usage, update)
        self.usage = usage_of(self._upstream_usage, self._thought)

    def _start_block(self, index: int, block: ResponseBlock) -> list[bytes]:
        match block.type:
            case "text":
                text = self._blocks[index] = _OpenBlock("text", start=self._chars)
                text.citations += block.citations or ()
                return self._text(block.text)
            case "server_tool_use" if block.name == WEB_SEARCH_NAME:
                # Its input streams as input_json_delta, as a tool_use's does (``{}`` at the start).
                self._blocks[index] = _OpenBlock("search", data=dumps(block.input) if block.input else "")
                return []
            case "tool_use" if block.name == JSON_TOOL:
                self._json_answer = True
                self._blocks[index] = _OpenBlock("json")
                return []
            case "tool_use":
                tool_index, self._tools = self._tools, self._tools + 1
                self._blocks[index] = _OpenBlock("tool", tool_index=tool_index)
                call = DeltaToolCall(index=tool_index, id=block.id, type="function",
                                     function=DeltaFunction(name=block.name, arguments=""))
                return [self.writer.delta(Delta(tool_calls=[call]))]
            case "thinking":
                self._thought = True
                thinking = self._blocks[index] = _OpenBlock("thinking")
                thinking.signature = block.signature  # "" in practice: it follows as a signature_delta
                return self._thinking(thinking, block.thinking)
            case "redacted_thinking":
                self._thought = True
                self._blocks[index] = _OpenBlock("redacted", data=block.data)
                return []
        self._blocks[index] = _OpenBlock("other")
        return []

    def _block_delta(self, index: int, delta: StreamDelta) -> list[bytes]:
        block = self._blocks.get(index)
        if block is None:
            return []
        match delta.type, block.kind:
            case "text_delta", "text":
                return self._text(delta.text)
            case "input_json_delta", "tool" | "json":
                return self._arguments(block, delta.partial_json)
            case "input_json_delta", "search":
                block.data += delta.partial_json
            case "citations_delta", "text" if delta.citation is not None:
                block.citations.append(delta.citation)
            case "thinking_delta", "thinking":
                return self._thinking(block, delta.thinking)
            case "signature_delta", "thinking":
                block.signature += delta.signature
        return []

    def _stop_block(self, index: int) -> list[bytes]:
        block = self._blocks.pop(index, None)
        if block is None:
            return []
        if block.kind in ("tool", "json") and not block.has_arguments:
            # A call without arguments streams only "" fragments; "{}" keeps the arguments valid JSON.
            return self._arguments(block, "{}")
        if block.kind == "text":
            # Citations stream before the text they support: the span is known once the block ends.
            annotations = annotations_of(block.citations, block.start, self._chars)
            for annotation in annotations:
                annotation.index, self._annotations = self._annotations, self._annotations + 1
            return [self.writer.delta(Delta(annotations=annotations))] if annotations else []
        if block.kind == "search":
            queries = search_query(_search_input(block.data))
            return [self.writer.delta(Delta(web_search_queries=queries))] if queries else []
        # The whole entry, text and signature, once the block is complete: concatenating every chunk's
        # reasoning_details gives exactly the non-stream message's list, ready to be sent back.
        if block.kind == "thinking":
            detail = thinking_detail("".join(block.thinking), block.signature, self._details)
        elif block.kind == "redacted":
            detail = redacted_detail(block.data, self._details)
        else:
            return []
        self._details += 1
        return [self.writer.delta(Delta(reasoning_details=[detail]))]

    def _text(self, text: str) -> list[bytes]:
        self._chars += len(text)
        return [self.writer.delta(Delta(content=text))] if text else []

    def _arguments(self, block: _OpenBlock, fragment: str) -> list[bytes]:
        if not fragment:
            return []
        block.has_arguments = True
        if block.kind == "json":
            return self._text(fragment)
        call = DeltaToolCall(index=block.tool_index, function=DeltaFunction(arguments=fragment))
        return [self.writer.delta(Delta(tool_calls=[call]))]

    def _thinking(self, block: _OpenBlock, text: str) -> list[bytes]:
        if not text:
            return []
        block.thinking.append(text)
        return [self.writer.delta(Delta(reasoning=text, reasoning_content=text))]


def _search_input(data: str) -> dict[str, Any]:
    # Only the query is read from it, to name the search to the client: an input that is not a JSON object
    # (a provider fault) leaves the search unnamed rather than failing an answer that is otherwise whole.
    try:
        value = msgspec.json.decode(data) if data else {}
    except msgspec.DecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def stream_translator(ctx: ResponseContext) -> AnthropicStreamTranslator:
    return AnthropicStreamTranslator(ctx)


# --------------------------------------------------------------------------------------------- errors


def parse_error(status: int, body: bytes, headers: Mapping[str, str], provider: str) -> GatewayError:
    retry_after = headers.get("retry-after")
    try:
        detail = _error_decoder.decode(body).error
    except msgspec.DecodeError:
        detail = None
    if detail is None:
        text = body.decode("utf-8", "replace").strip()[:500] or f"HTTP {status} with an empty body"
        return upstream_error(provider, status, text, retry_after=retry_after)
    return upstream_error(provider, status, detail.message or f"HTTP {status}", error_type=detail.type,
                          retry_after=retry_after)


class ErrorBody(msgspec.Struct, tag_field="type", tag="error", kw_only=True):
    """Anthropic's error body, ``{"type": "error", "error": {"type", "message"}}``, for routes that answer
    in Anthropic's shape (``/v1/messages``, ``/anthropic/*``)."""

    error: ErrorDetail


# The type Anthropic's API answers each status with: the inverse of the table above, plus the gateway's
# 503 for an overloaded provider (Anthropic's 529, see ``upstream_error``).
ERROR_TYPES_BY_STATUS = {status: kind for kind, status in STATUS_BY_ERROR_TYPE.items()} | {503: "overloaded_error"}


def error_type_for_status(status: int) -> str:
    return ERROR_TYPES_BY_STATUS.get(status, "api_error" if status >= 500 else "invalid_request_error")


def error_body(error: GatewayError) -> bytes:
    """A gateway error in Anthropic's shape, so Anthropic SDKs raise their usual exception for it; the HTTP
    status stays ``error.status_code`` (and ``error.headers``, retry-after included, go with it)."""
    detail = ErrorDetail(type=error_type_for_status(error.status_code), message=error.message)
    return _encoder.encode(ErrorBody(error=detail))
