"""Anthropic Messages in and out, any model behind: the translation for ``POST /v1/messages``.

A Messages request becomes the OpenAI ``ChatCall`` the unified pipeline runs (routing, fallback, budgets
and usage records included); its OpenAI answer, a ``chat.completion`` or its chunks, becomes a Messages
``Message`` or its event stream. This is the Anthropic adapter read the other way round: its wire Structs
and mapping tables (``providers/anthropic.py``) are used here, inverted where needed, never copied. Every
decision is in docs/messages.md.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

from gateway.dialects.answers import (
    ChunkReader,
    FrameError,
    Said,
    SaidCall,
    SaidFunction,
    decode_completion,
    read_usage,
)
from gateway.dialects.chat import ChatCall, validation_error
from gateway.door import MESSAGES_RANGES, check_body, check_model_name, check_ranges
from gateway.errors import GatewayError, InvalidRequest, UnsupportedParameter, UpstreamError
from gateway.notes import Notes
from gateway.providers.anthropic import (
    FINISH_REASONS,
    REASONING_FORMAT,
    SERVICE_TIERS,
    STATUS_BY_ERROR_TYPE,
    THINKING_BUDGETS,
    TOOL_CHOICE_TYPES,
    Base64Source,
    DocumentBlock,
    ErrorBody,
    ErrorDetail,
    ImageBlock,
    JsonOutputFormat,
    MessageUsage,
    OutputTokensDetails,
    ReasoningDetail,
    RedactedThinkingBlock,
    TextBlock,
    ThinkingBlock,
    ToolChoice,
    ToolParam,
    ToolUseBlock,
    URLSource,
    error_type_for_status,
    redacted_detail,
    thinking_detail,
)
from gateway.providers.common import dumps, parse_data_url
from gateway.sse import encode_event
from gateway.wire.openai import (
    ChatRequest,
    CompletionTokensDetails,
    ContentPart,
    FileData,
    FunctionCall,
    FunctionDef,
    ImageURL,
    JsonSchemaFormat,
    Message,
    NamedFunction,
    NamedToolChoice,
    PromptTokensDetails,
    ResponseFormat,
    StreamOptions,
    Tool,
    ToolCall,
    Usage,
    encoder,
    raw_object_decoder,
)

# ------------------------------------------------------------------------- wire types: the request
# The adapter's request Structs describe what the gateway sends Anthropic; a client may send a little more
# (cache hints, citations, is_error...). Each inbound type is the adapter's, plus those members, with
# unknown members refused: a field this code does not translate is a 400 naming it, never ignored.


class CacheControl(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    type: Literal["ephemeral"]
    ttl: Literal["5m", "1h"] | UnsetType = UNSET


Cache = CacheControl | UnsetType | None


class TextIn(TextBlock, forbid_unknown_fields=True):
    cache_control: Cache = UNSET
    citations: list[Any] | UnsetType | None = UNSET


class ImageIn(ImageBlock, forbid_unknown_fields=True):
    cache_control: Cache = UNSET


class DocumentIn(DocumentBlock, forbid_unknown_fields=True):
    cache_control: Cache = UNSET
    title: str | UnsetType | None = UNSET
    context: str | UnsetType | None = UNSET
    citations: dict[str, Any] | UnsetType | None = UNSET


class ToolUseIn(ToolUseBlock, forbid_unknown_fields=True):
    cache_control: Cache = UNSET


class ToolResultIn(msgspec.Struct, tag_field="type", tag="tool_result", forbid_unknown_fields=True, kw_only=True):
    # Not a subclass of the adapter's ToolResultBlock: its content holds the inbound block types.
    tool_use_id: str
    content: str | list[TextIn | ImageIn | DocumentIn] | UnsetType = UNSET
    is_error: bool | UnsetType = UNSET
    cache_control: Cache = UNSET


class ThinkingIn(ThinkingBlock, forbid_unknown_fields=True):
    pass


class RedactedThinkingIn(RedactedThinkingBlock, forbid_unknown_fields=True):
    pass


BlockIn = TextIn | ImageIn | DocumentIn | ToolUseIn | ToolResultIn | ThinkingIn | RedactedThinkingIn
UserPartIn = TextIn | ImageIn | DocumentIn


class MessageIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    # "system": an instruction in the middle of the conversation (the mid-conversation-system beta, which
    # Claude Code uses by default); text only.
    role: Literal["user", "assistant", "system"]
    content: str | list[BlockIn]


class ToolIn(ToolParam, forbid_unknown_fields=True):
    type: Literal["custom"] | UnsetType | None = UNSET
    cache_control: Cache = UNSET
    # Hints (docs/messages.md), with eager_input_streaming (ToolParam's): load the definition on demand.
    defer_loading: bool | UnsetType = UNSET


class ToolChoiceIn(ToolChoice, forbid_unknown_fields=True):
    pass


class ThinkingConfigIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    type: Literal["enabled", "adaptive", "disabled"]
    budget_tokens: int | UnsetType = UNSET
    display: Literal["summarized", "omitted"] | UnsetType | None = UNSET


class OutputConfigIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    effort: str | UnsetType | None = UNSET
    format: JsonOutputFormat | UnsetType | None = UNSET


class MetadataIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    user_id: str | UnsetType | None = UNSET


class MessagesIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    model: str
    max_tokens: int | UnsetType = UNSET  # required by create, absent from count_tokens
    messages: list[MessageIn]
    system: str | list[TextIn] | UnsetType = UNSET
    stop_sequences: list[str] | UnsetType = UNSET
    stream: bool | UnsetType = UNSET
    temperature: float | UnsetType = UNSET
    top_p: float | UnsetType = UNSET
    top_k: int | UnsetType = UNSET
    # Decoded per tool: a server tool (web_search...) has members of its own and must be refused by its type.
    tools: list[dict[str, Any]] | UnsetType = UNSET
    tool_choice: ToolChoiceIn | UnsetType = UNSET
    thinking: ThinkingConfigIn | UnsetType = UNSET
    output_config: OutputConfigIn | UnsetType = UNSET
    metadata: MetadataIn | UnsetType = UNSET
    service_tier: Literal["auto", "standard_only"] | UnsetType = UNSET
    cache_control: Cache = UNSET
    # A hint: what Anthropic may clear from a long context (e.g. old thinking blocks); see docs/messages.md.
    context_management: dict[str, Any] | UnsetType | None = UNSET
    # Hints about how fast the answer comes and what Anthropic logs about it: the answer is the same
    # without them, and no target is reached with Anthropic's own request body, so they are reported.
    speed: str | UnsetType | None = UNSET
    diagnostics: dict[str, Any] | UnsetType | None = UNSET


_request_decoder = msgspec.json.Decoder(MessagesIn)

# ------------------------------------------------------------------------ wire types: the answer


OutBlock = ThinkingBlock | RedactedThinkingBlock | TextBlock | ToolUseBlock | ImageBlock


class MessageOut(msgspec.Struct, kw_only=True):
    id: str
    type: str = "message"
    role: str = "assistant"
    model: str
    content: list[OutBlock]
    stop_reason: str | None
    stop_sequence: None = None
    usage: MessageUsage


class _Delta(msgspec.Struct, tag_field="type"):
    pass


class TextDelta(_Delta, tag="text_delta"):
    text: str


class ThinkingDelta(_Delta, tag="thinking_delta"):
    thinking: str


class SignatureDelta(_Delta, tag="signature_delta"):
    signature: str


class InputJsonDelta(_Delta, tag="input_json_delta"):
    partial_json: str


class StopInfo(msgspec.Struct, kw_only=True):
    stop_reason: str
    stop_sequence: None = None


class _Event(msgspec.Struct, tag_field="type", kw_only=True):
    pass


class MessageStart(_Event, tag="message_start"):
    message: MessageOut


class ContentBlockStart(_Event, tag="content_block_start"):
    index: int
    content_block: OutBlock


class ContentBlockDelta(_Event, tag="content_block_delta"):
    index: int
    delta: TextDelta | ThinkingDelta | SignatureDelta | InputJsonDelta


class ContentBlockStop(_Event, tag="content_block_stop"):
    index: int


class MessageDelta(_Event, tag="message_delta"):
    delta: StopInfo
    usage: MessageUsage


class MessageStop(_Event, tag="message_stop"):
    pass



# ------------------------------------------------------------------------------------ the request


def parse_request(body: bytes, *, count_only: bool = False) -> MessagesIn:
    """The client's body as typed Messages Structs, checked at the door (``gateway/door.py``); any problem
    is a 400 naming the member."""
    check_body(body, hint="a JSON object with 'model', 'max_tokens' and 'messages'")
    try:
        request = _request_decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise validation_error(str(exc)) from None
    except (msgspec.DecodeError, RecursionError) as exc:
        raise InvalidRequest(f"We could not parse the JSON body of your request: {exc}") from None
    if not count_only and isinstance(request.max_tokens, UnsetType):
        raise InvalidRequest("Missing required parameter: 'max_tokens'.", param="max_tokens",
                             code="missing_required_parameter")
    if not request.messages:
        raise InvalidRequest("'messages' must contain at least one message.", param="messages",
                             code="invalid_value")
    check_model_name(request.model)
    check_ranges(request, MESSAGES_RANGES)
    return request


def to_chat_call(req: MessagesIn) -> ChatCall:
    """The Messages request as the OpenAI chat call the pipeline runs."""
    tools, hints = _tools(req.tools)
    choice, parallel = _tool_choice(req.tool_choice)
    metadata = req.metadata
    notes = Notes()
    effort, effort_path = _reasoning_effort(req.thinking, req.output_config, notes)
    chat = ChatRequest(
        model=req.model,
        messages=_system(req.system) + _turns(req.messages),
        max_completion_tokens=req.max_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        stop=req.stop_sequences or UNSET,
        user=metadata.user_id if isinstance(metadata, MetadataIn) and metadata.user_id else UNSET,
        tools=tools or UNSET,
        tool_choice=choice,
        parallel_tool_calls=parallel,
        reasoning_effort=effort,
        response_format=_response_format(req.output_config),
        service_tier=_SERVICE_TIERS_BACK[req.service_tier] if isinstance(req.service_tier, str) else UNSET,
    )
    if req.stream:
        # The usage chunk gives message_delta its real counts, whoever answers.
        chat.stream, chat.stream_options = True, StreamOptions(include_usage=True)
    raw = raw_object_decoder.decode(encoder.encode(chat))
    if not isinstance(req.top_k, UnsetType):
        # OpenAI's format has no top_k. It goes on as an extra member, so each target decides honestly: the
        # translating adapters refuse it by name, an OpenAI-compatible server takes it or answers its own 400.
        raw["top_k"] = msgspec.Raw(encoder.encode(req.top_k))
    call = ChatCall(encoder.encode(raw), raw, chat)
    for path in _cache_controls(req):
        # No OpenAI-format member carries it, so no target gets it from here; caching is the provider's
        # own (OpenAI and Gemini cache long prompts automatically).
        notes.ignore(path)
    for name, value in (("speed", req.speed), ("diagnostics", req.diagnostics)):
        if not isinstance(value, UnsetType) and value is not None:
            notes.ignore(name)
    call.notes = notes
    if req.context_management:
        hints["context_management"] = req.context_management
    call.hints = hints
    call.names = {"max_completion_tokens": "max_tokens", "reasoning_effort": effort_path,
                  "parallel_tool_calls": "tool_choice.disable_parallel_tool_use", "stop": "stop_sequences",
                  "user": "metadata.user_id", "response_format": "output_config.format"}
    call.names.update({f"tools[{i}].function.parameters": f"tools[{i}].input_schema" for i in range(len(tools))})
    return call


def _cache_controls(req: MessagesIn) -> list[str]:
    """The JSON path of every ``cache_control`` the client set."""
    paths = ["cache_control"] if req.cache_control else []
    if isinstance(req.system, list):
        paths += [f"system[{i}].cache_control" for i, block in enumerate(req.system) if block.cache_control]
    for i, message in enumerate(req.messages):
        for j, block in enumerate(message.content if isinstance(message.content, list) else ()):
            where = f"messages[{i}].content[{j}]"
            if getattr(block, "cache_control", None):
                paths.append(f"{where}.cache_control")
            if isinstance(block, ToolResultIn) and isinstance(block.content, list):
                paths += [f"{where}.content[{k}].cache_control" for k, part in enumerate(block.content)
                          if part.cache_control]
    paths += [f"tools[{i}].cache_control" for i, tool in enumerate(req.tools or ()) if tool.get("cache_control")]
    return paths


def _refuse(param: str, why: str) -> UnsupportedParameter:
    return UnsupportedParameter(f"Unsupported parameter: '{param}' {why}", param=param)


def _system(system: str | list[TextIn] | UnsetType) -> list[Message]:
    if isinstance(system, str):
        return [Message(role="system", content=system)] if system else []
    if not system:
        return []
    return [Message(role="system", content=[_text_part(block, f"system[{i}]") for i, block in enumerate(system)])]


def _turns(messages: list[MessageIn]) -> list[Message]:
    out: list[Message] = []
    for i, message in enumerate(messages):
        path = f"messages[{i}]"
        if message.role == "user":
            out += _user_turn(message.content, path)
        elif message.role == "system":
            # OpenAI's format takes a system message anywhere, so it stays where the client put it; the
            # Anthropic adapter moves it to the top-level system (docs/messages.md).
            out.append(_system_turn(message.content, path))
        else:
            out.append(_assistant_turn(message.content, path))
    return out


def _system_turn(content: str | list[BlockIn], path: str) -> Message:
    if isinstance(content, str):
        return Message(role="system", content=content)
    parts: list[ContentPart] = []
    for j, block in enumerate(content):
        if not isinstance(block, TextIn):
            raise InvalidRequest(f"A system message holds text only, not a '{_tag(block)}' block.",
                                 param=f"{path}.content[{j}].type", code="invalid_value")
        parts.append(_text_part(block, f"{path}.content[{j}]"))
    return Message(role="system", content=_content(parts))


def _user_turn(content: str | list[BlockIn], path: str) -> list[Message]:
    """One user turn: its tool results as ``tool`` messages first (they answer the assistant turn before,
    which OpenAI wants them right after; Anthropic too requires them first), then the rest as one message."""
    if isinstance(content, str):
        return [Message(role="user", content=content)]
    results: list[Message] = []
    parts: list[ContentPart] = []
    for j, block in enumerate(content):
        where = f"{path}.content[{j}]"
        if isinstance(block, ToolResultIn):
            results.append(_tool_result(block, where))
        elif isinstance(block, TextIn | ImageIn | DocumentIn):
            parts.append(_user_part(block, where))
        else:
            raise InvalidRequest(f"A user turn cannot hold a '{_tag(block)}' block; it belongs to assistant turns.",
                                 param=f"{where}.type", code="invalid_value")
    return results + ([Message(role="user", content=_content(parts))] if parts else [])


def _content(parts: list[ContentPart]) -> str | list[ContentPart]:
    # One text block travels as a plain string, the form every OpenAI-compatible server accepts.
    if len(parts) == 1 and parts[0].type == "text" and isinstance(parts[0].text, str):
        return parts[0].text
    return parts


def _user_part(block: UserPartIn, where: str) -> ContentPart:
    if isinstance(block, TextIn):
        return _text_part(block, where)
    if isinstance(block, ImageIn):
        source = block.source
        url = source.url if isinstance(source, URLSource) else f"data:{source.media_type};base64,{source.data}"
        return ContentPart(type="image_url", image_url=ImageURL(url=url))
    return _document_part(block, where)


def _text_part(block: TextIn, where: str) -> ContentPart:
    if block.citations:
        raise _refuse(f"{where}.citations", "cannot be carried: citations point into Anthropic's own document "
                                            "blocks and no other provider reads them.")
    return ContentPart(type="text", text=block.text)


def _document_part(block: DocumentIn, where: str) -> ContentPart:
    for name in ("context", "citations"):
        if getattr(block, name):
            raise _refuse(f"{where}.{name}", "has no counterpart in OpenAI file parts.")
    source = block.source
    if source.media_type != "application/pdf":
        raise InvalidRequest(f"Document blocks carry PDF files here, not '{source.media_type}'.",
                             param=f"{where}.source.media_type", code="unsupported_value")
    title = block.title if isinstance(block.title, str) else UNSET
    data_url = f"data:application/pdf;base64,{source.data}"
    return ContentPart(type="file", file=FileData(filename=title, file_data=data_url))


TOOL_ERROR_PREFIX = "Error: "


def _tool_result(block: ToolResultIn, where: str) -> Message:
    parts: list[ContentPart] = []
    if isinstance(block.content, str):
        parts = [ContentPart(type="text", text=block.content)]
    elif isinstance(block.content, list):
        parts = [_user_part(part, f"{where}.content[{k}]") for k, part in enumerate(block.content)]
    if block.is_error is True:
        # OpenAI's tool message has no error flag: the error travels in the text, marked as one.
        if parts and parts[0].type == "text" and isinstance(parts[0].text, str):
            parts[0] = ContentPart(type="text", text=f"{TOOL_ERROR_PREFIX}{parts[0].text}")
        else:
            parts.insert(0, ContentPart(type="text", text=TOOL_ERROR_PREFIX.rstrip()))
    content = _content(parts) if parts else ""
    return Message(role="tool", tool_call_id=block.tool_use_id, content=content)


def _assistant_turn(content: str | list[BlockIn], path: str) -> Message:
    if isinstance(content, str):
        return Message(role="assistant", content=content)
    texts: list[ContentPart] = []
    calls: list[ToolCall] = []
    details: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        where = f"{path}.content[{j}]"
        match block:
            case TextIn():
                texts.append(_text_part(block, where))
            case ToolUseIn():
                arguments = dumps(block.input)
                calls.append(ToolCall(id=block.id, function=FunctionCall(name=block.name, arguments=arguments)))
            case ThinkingIn():
                # The signed block goes back exactly as the Anthropic adapter handed it out, so an Anthropic
                # target gets it verbatim. Unsigned thinking (another provider's reasoning text) has no input
                # member in OpenAI's format and no provider takes it back; it is not sent.
                if block.signature:
                    details.append(thinking_detail(block.thinking, block.signature))
            case RedactedThinkingIn():
                details.append(_unwrap(block.data, f"{where}.data") or redacted_detail(block.data))
            case _:
                raise InvalidRequest(f"An assistant turn cannot hold a '{_tag(block)}' block.",
                                     param=f"{where}.type", code="invalid_value")
    message = Message(role="assistant", content=_content(texts) if texts else None)
    if calls:
        message.tool_calls = calls
    if details:
        message.reasoning_details = details
    return message


def _tag(block: msgspec.Struct) -> str:
    return str(block.__struct_config__.tag)


def _tools(tools: list[dict[str, Any]] | UnsetType) -> tuple[list[Tool], dict[str, Any]]:
    """The client tools as OpenAI function tools, and their hints by JSON path."""
    out: list[Tool] = []
    hints: dict[str, Any] = {}
    for i, raw in enumerate(tools or ()):
        kind = raw.get("type")
        if kind not in (None, "custom"):
            raise _refuse(f"tools[{i}].type", f"'{kind}' is one of Anthropic's server tools, which Anthropic runs "
                                              "itself; no other provider can. Define it as a client tool (name, "
                                              "description, input_schema) and run it yourself.")
        try:
            tool = msgspec.convert(raw, ToolIn)
        except msgspec.ValidationError as exc:
            raise validation_error(str(exc), f"tools[{i}]") from None
        strict = tool.strict if isinstance(tool.strict, bool) else UNSET
        out.append(Tool(type="function", function=FunctionDef(name=tool.name, description=tool.description,
                                                              parameters=tool.input_schema, strict=strict)))
        for name in ("eager_input_streaming", "defer_loading"):
            value = getattr(tool, name)
            if isinstance(value, bool):
                hints[f"tools[{i}].{name}"] = value
    return out, hints


# Anthropic tool_choice type -> OpenAI's: the inverse of the adapter's table.
_TOOL_CHOICES_BACK = {anthropic: openai for openai, anthropic in TOOL_CHOICE_TYPES.items()}
_SERVICE_TIERS_BACK = {anthropic: openai for openai, anthropic in SERVICE_TIERS.items()}


def _tool_choice(choice: ToolChoiceIn | UnsetType) -> tuple[str | NamedToolChoice | UnsetType, bool | UnsetType]:
    """(tool_choice, parallel_tool_calls)."""
    if isinstance(choice, UnsetType):
        return UNSET, UNSET
    if choice.type == "tool":
        if not isinstance(choice.name, str):
            raise InvalidRequest("Missing required parameter: 'tool_choice.name'.", param="tool_choice.name",
                                 code="missing_required_parameter")
        result: str | NamedToolChoice = NamedToolChoice(type="function", function=NamedFunction(name=choice.name))
    elif isinstance(choice.name, str):
        raise InvalidRequest(f"'tool_choice.name' is only for type 'tool', not '{choice.type}'.",
                             param="tool_choice.name", code="invalid_value")
    else:
        result = _TOOL_CHOICES_BACK[choice.type]
    # Anthropic's switch lives on tool_choice, OpenAI's on the request; with "none" it means nothing.
    parallel: bool | UnsetType = False if choice.disable_parallel_tool_use is True and choice.type != "none" else UNSET
    return result, parallel


# thinking.budget_tokens -> reasoning_effort: the largest effort whose budget fits in the client's, so the
# thinking never outgrows what the client allowed (an Anthropic target gets budget_tokens back exactly for
# 1024, 2048 and 4096, and budget < max_tokens still holds).
_EFFORTS_BY_BUDGET = sorted(THINKING_BUDGETS.items(), key=lambda item: item[1])


def effort_for_budget(budget: int) -> str:
    fitting = [effort for effort, tokens in _EFFORTS_BY_BUDGET if tokens <= budget]
    if not fitting:
        smallest = _EFFORTS_BY_BUDGET[0][1]
        raise InvalidRequest(f"'thinking.budget_tokens' must be at least {smallest}, not {budget}.",
                             param="thinking.budget_tokens", code="invalid_value")
    return fitting[-1]


def _reasoning_effort(thinking: ThinkingConfigIn | UnsetType, output: OutputConfigIn | UnsetType,
                      notes: Notes) -> tuple[str | UnsetType, str]:
    """(reasoning_effort, the client's member it came from)."""
    effort = output.effort if isinstance(output, OutputConfigIn) and isinstance(output.effort, str) else None
    if isinstance(thinking, UnsetType):
        return effort or UNSET, "output_config.effort"
    if thinking.display == "omitted":
        raise _refuse("thinking.display", "'omitted' cannot be honoured: other providers return their reasoning "
                                          "text or nothing, never a signature without it.")
    if thinking.type == "disabled":
        if effort:
            # Without thinking, Anthropic's effort only tunes how thoroughly the model writes; OpenAI's
            # counterpart, reasoning_effort, would turn reasoning on. A hint, then: left out, reported.
            notes.ignore("output_config.effort")
        # Not "none": plain models (gpt-4o...) refuse reasoning_effort outright. See docs/messages.md.
        return UNSET, "thinking"
    if thinking.type == "adaptive":
        # The OpenAI format has no "the model decides"; medium is OpenAI's own default effort.
        return effort or "medium", "thinking, output_config.effort" if effort else "thinking"
    if isinstance(thinking.budget_tokens, UnsetType):
        raise InvalidRequest("Missing required parameter: 'thinking.budget_tokens'.", param="thinking.budget_tokens",
                             code="missing_required_parameter")
    if effort:
        raise _refuse("output_config.effort", "cannot be combined with thinking.budget_tokens: both set the "
                                              "reasoning effort; send one.")
    return effort_for_budget(thinking.budget_tokens), "thinking.budget_tokens"


def _response_format(output: OutputConfigIn | UnsetType) -> ResponseFormat | UnsetType:
    if not isinstance(output, OutputConfigIn) or not isinstance(output.format, JsonOutputFormat):
        return UNSET
    # Anthropic always enforces the schema, hence strict; OpenAI requires a name, which only labels it.
    return ResponseFormat(type="json_schema", json_schema=JsonSchemaFormat(name="response", schema=output.format.schema,
                                                                           strict=True))


# -------------------------------------------------------------------------------------- the answer

# OpenAI finish_reason -> Anthropic stop_reason: the inverse of the adapter's table, the first Anthropic
# reason of each (end_turn, max_tokens, tool_use, refusal) winning.
STOP_REASONS = {finish: stop for stop, finish in reversed(FINISH_REASONS.items())}

# reasoning_details entries of another provider (Gemini's thought signatures...) ride in redacted_thinking
# blocks, which Anthropic clients send back untouched: this prefix marks the gateway's own.
FOREIGN_REASONING_PREFIX = "gateway.reasoning_details:"


def message_id(request_id: str) -> str:
    return "msg_" + request_id.removeprefix("req_")


def stop_reason(finish_reason: str | None, refused: bool) -> str:
    return "refusal" if refused else STOP_REASONS.get(finish_reason or "", "end_turn")


def anthropic_usage(usage: Usage | None, prompt_estimate: int) -> MessageUsage:
    """OpenAI counts cached and cache-written tokens inside prompt_tokens; Anthropic's input_tokens does not.
    With no count from the provider, the input is the gateway's estimate and the output 0."""
    if usage is None:
        return MessageUsage(input_tokens=prompt_estimate, output_tokens=0)
    prompt = usage.prompt_tokens_details if isinstance(usage.prompt_tokens_details, PromptTokensDetails) else None
    cached = prompt.cached_tokens if prompt else 0
    written = prompt.cache_write_tokens if prompt and isinstance(prompt.cache_write_tokens, int) else 0
    result = MessageUsage(input_tokens=max(usage.prompt_tokens - cached - written, 0),
                          output_tokens=usage.completion_tokens, cache_read_input_tokens=cached,
                          cache_creation_input_tokens=written)
    completion = usage.completion_tokens_details
    if isinstance(completion, CompletionTokensDetails):
        result.output_tokens_details = OutputTokensDetails(thinking_tokens=completion.reasoning_tokens)
    return result


def _wrap(entry: dict[str, Any]) -> str:
    return FOREIGN_REASONING_PREFIX + base64.urlsafe_b64encode(encoder.encode(entry)).decode()


def _unwrap(data: str, param: str) -> dict[str, Any] | None:
    """The reasoning_details entry a gateway redacted_thinking block carries; None for Anthropic's own."""
    if not data.startswith(FOREIGN_REASONING_PREFIX):
        return None
    try:
        entry = json.loads(base64.urlsafe_b64decode(data.removeprefix(FOREIGN_REASONING_PREFIX)))
    except (binascii.Error, ValueError):
        entry = None
    if not isinstance(entry, dict):
        raise InvalidRequest("This redacted_thinking block was changed: send it back exactly as the gateway "
                             "returned it.", param=param, code="invalid_value")
    return entry


def _reasoning_block(entry: dict[str, Any]) -> ThinkingBlock | RedactedThinkingBlock | None:
    """An entry of the Anthropic adapter's as the block it came from; None for another provider's."""
    try:
        detail = msgspec.convert(entry, ReasoningDetail)
    except msgspec.ValidationError:
        return None
    if detail.format != REASONING_FORMAT:
        return None
    if detail.type == "reasoning.text":
        return ThinkingBlock(thinking=detail.text or "", signature=detail.signature or "")
    if detail.type == "reasoning.encrypted" and detail.data:
        return RedactedThinkingBlock(data=detail.data)
    return None


def _tool_input(arguments: str | None) -> dict[str, Any]:
    try:
        value = json.loads(arguments) if arguments and arguments.strip() else {}
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise UpstreamError("The model answered with tool-call arguments that are not a JSON object, which a "
                            "tool_use block cannot hold.", status=502, error_type="upstream_error")
    return value


def _tool_use(call: SaidCall) -> ToolUseBlock:
    fn = call.function or SaidFunction()
    if not call.id or not fn.name:
        raise UpstreamError("The model answered with a tool call without its id and name.", status=502,
                            error_type="upstream_error")
    return ToolUseBlock(id=call.id, name=fn.name, input=_tool_input(fn.arguments))


def _image_block(image: dict[str, Any]) -> ImageBlock:
    """An image the model made (Gemini image output), in the shape of Anthropic's image blocks."""
    url = str((image.get("image_url") or {}).get("url", ""))
    if not url.startswith("data:"):
        return ImageBlock(source=URLSource(url=url))
    media_type, data = parse_data_url(url, "images")
    return ImageBlock(source=Base64Source(media_type=media_type, data=data))


def message_from_completion(body: bytes, *, msg_id: str, model: str, prompt_estimate: int) -> bytes:
    """A non-streamed chat.completion as a Messages ``Message``; ``model`` is the name the client sent."""
    completion = decode_completion(body)
    choice = next((c for c in completion.choices or () if c.index == 0), None)
    if choice is None or choice.message is None:
        raise UpstreamError("The model answered with no choice.", status=502, error_type="upstream_error")
    said = choice.message
    blocks: list[OutBlock] = []
    own: list[OutBlock] = []
    foreign: list[OutBlock] = []
    for entry in said.reasoning_details or ():
        block = _reasoning_block(entry)
        if block is None:
            foreign.append(RedactedThinkingBlock(data=_wrap(entry)))
        else:
            own.append(block)
    reasoning = said.reasoning or said.reasoning_content
    if reasoning and not any(isinstance(block, ThinkingBlock) for block in own):
        blocks.append(ThinkingBlock(thinking=reasoning, signature=""))  # reasoning text with no signature
    blocks += own
    blocks += [TextBlock(text=text) for text in (said.content, said.refusal) if text]
    blocks += [_tool_use(call) for call in said.tool_calls or ()]
    blocks += [_image_block(image) for image in said.images or ()]
    message = MessageOut(id=msg_id, model=model, content=blocks + foreign,
                         stop_reason=stop_reason(choice.finish_reason, bool(said.refusal)),
                         usage=anthropic_usage(read_usage(completion.usage), prompt_estimate))
    return encoder.encode(message)


def event(ev: _Event) -> bytes:
    return encode_event(str(ev.__struct_config__.tag), encoder.encode(ev))


def error_event(error_type: str, message: str) -> bytes:
    return encode_event("error", encoder.encode(ErrorBody(error=ErrorDetail(type=error_type, message=message))))


_Kind = Literal["text", "thinking", "tool"]


class MessagesStream(ChunkReader):
    """OpenAI chunks, as the pipeline relays them, in; Messages events out.

    Blocks open and close in order with increasing indexes: a delta of another kind (text, thinking, a new
    tool call) closes the open block first. The finish waits for the usage chunk or ``[DONE]``, so
    message_delta carries the real counts."""

    def __init__(self, *, msg_id: str, model: str, prompt_estimate: int) -> None:
        super().__init__()
        self._id = msg_id
        self._model = model
        self._estimate = prompt_estimate
        self._index = -1  # the last block started
        self._is_open = False
        self._open: _Kind | None = None  # the open block's kind, if deltas may continue it
        self._tool = -1  # OpenAI's index of the open tool call
        self._tools_seen: set[int] = set()
        self._foreign: list[dict[str, Any]] = []
        self._refused = False

    def start(self) -> bytes:
        message = MessageOut(id=self._id, model=self._model, content=[], stop_reason=None,
                             usage=MessageUsage(input_tokens=self._estimate, output_tokens=0,
                                                cache_creation_input_tokens=0, cache_read_input_tokens=0))
        return event(MessageStart(message=message))

    def fail(self, exc: GatewayError) -> bytes:
        self.done = True
        return error_event(error_type_for_status(exc.status_code), exc.message)

    def _error(self, error: FrameError) -> list[bytes]:
        self.done = True
        # The pipeline's frame carries the gateway's error type: Anthropic's when it has that type.
        kind = error.type or "api_error"
        return [error_event(kind if kind in STATUS_BY_ERROR_TYPE else "api_error", error.message)]

    def _cut(self, message: str) -> list[bytes]:
        self.done = True
        return [error_event("api_error", message)]

    def _said(self, said: Said) -> list[bytes]:
        out: list[bytes] = []
        reasoning = said.reasoning or said.reasoning_content  # the adapters set both to the same text
        if reasoning:
            out += self._thinking(reasoning)
        for entry in said.reasoning_details or ():
            out += self._reasoning_entry(entry)
        for text in (said.content, said.refusal):
            if text:
                out += self._text(text)
        self._refused = self._refused or bool(said.refusal)
        for call in said.tool_calls or ():
            out += self._tool_call(call)
        for image in said.images or ():
            out += self._whole(_image_block(image))
        return out

    def _thinking(self, text: str) -> list[bytes]:
        out = [] if self._open == "thinking" else self._start("thinking", ThinkingBlock(thinking="", signature=""))
        return [*out, self._delta(ThinkingDelta(thinking=text))]

    def _text(self, text: str) -> list[bytes]:
        out = [] if self._open == "text" else self._start("text", TextBlock(text=""))
        return [*out, self._delta(TextDelta(text=text))]

    def _reasoning_entry(self, entry: dict[str, Any]) -> list[bytes]:
        block = _reasoning_block(entry)
        if block is None:
            self._foreign.append(entry)  # sent with the last blocks, as in the non-stream answer
            return []
        if isinstance(block, RedactedThinkingBlock):
            return self._whole(block)
        # The adapter sends a thinking block's entry, signature included, at the block's end: its text has
        # streamed already, unless nothing was open to hold it.
        out: list[bytes] = []
        if self._open != "thinking":
            out += self._start("thinking", ThinkingBlock(thinking="", signature=""))
            if block.thinking:
                out.append(self._delta(ThinkingDelta(thinking=block.thinking)))
        if block.signature:
            out.append(self._delta(SignatureDelta(signature=block.signature)))
        return out + self._stop()

    def _tool_call(self, call: SaidCall) -> list[bytes]:
        out: list[bytes] = []
        fn = call.function or SaidFunction()
        if self._open != "tool" or call.index != self._tool:
            if call.index in self._tools_seen:
                raise UpstreamError("The model streamed arguments for a tool call after the next one had started.",
                                    status=502, error_type="upstream_error")
            if not call.id or not fn.name:
                raise UpstreamError("The model started a tool call without its id and name.", status=502,
                                    error_type="upstream_error")
            out += self._start("tool", ToolUseBlock(id=call.id, name=fn.name, input={}))
            self._tool = call.index
            self._tools_seen.add(call.index)
        if fn.arguments:
            out.append(self._delta(InputJsonDelta(partial_json=fn.arguments)))
        return out

    def _start(self, kind: _Kind | None, block: OutBlock) -> list[bytes]:
        out = self._stop()
        self._index += 1
        self._is_open, self._open = True, kind
        return [*out, event(ContentBlockStart(index=self._index, content_block=block))]

    def _delta(self, delta: TextDelta | ThinkingDelta | SignatureDelta | InputJsonDelta) -> bytes:
        return event(ContentBlockDelta(index=self._index, delta=delta))

    def _stop(self) -> list[bytes]:
        if not self._is_open:
            return []
        self._is_open, self._open = False, None
        return [event(ContentBlockStop(index=self._index))]

    def _whole(self, block: OutBlock) -> list[bytes]:
        """A block that arrives complete: started and stopped at once."""
        return self._start(None, block) + self._stop()

    def _end(self) -> list[bytes]:
        out = self._stop()
        for entry in self._foreign:
            out += self._whole(RedactedThinkingBlock(data=_wrap(entry)))
        self.done = True
        delta = MessageDelta(delta=StopInfo(stop_reason=stop_reason(self._finish, self._refused)),
                             usage=anthropic_usage(self._usage, self._estimate))
        return [*out, event(delta), event(MessageStop())]
