"""Google Gemini (``generateContent``): OpenAI Chat Completions in, Gemini out, and back.

The mapping decisions (and why) are in ``docs/gemini.md``; this module follows them. Everything a
Gemini request cannot express is refused with a 400 naming the parameter, never dropped.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec
from msgspec import UNSET, UnsetType

from gateway.dialects.chat import ChatCall
from gateway.errors import GatewayError, InvalidRequest, UnsupportedParameter, UpstreamError, upstream_error
from gateway.notes import Notes
from gateway.providers.base import ResponseContext, Target, lowered_max_tokens, reasoning_unsupported
from gateway.providers.common import ChunkWriter, completion_of, dumps, parse_arguments, parse_data_url
from gateway.sse import SSEEvent
from gateway.upstream import UpstreamRequest
from gateway.wire.openai import (
    Annotation,
    ChatRequest,
    Choice,
    CompletionTokensDetails,
    ContentPart,
    Delta,
    DeltaFunction,
    DeltaToolCall,
    Message,
    PromptTokensDetails,
    ResponseFunctionCall,
    ResponseMessage,
    ResponseToolCall,
    UrlCitation,
    Usage,
    WebSearchOptions,
)

# The ``format`` of the ``reasoning_details`` entries that carry Gemini's thoughtSignatures (the name
# OpenRouter uses for the same thing, so clients that already handle it need nothing new).
SIGNATURE_FORMAT = "google-gemini-v1"
SIGNATURE_TYPE = "reasoning.encrypted"

# --------------------------------------------------------------------------------------- wire types


class _Wire(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True):
    """Gemini's REST JSON is lowerCamelCase; unknown response fields are ignored."""


class Blob(_Wire):
    mime_type: str
    data: str


class FileData(_Wire):
    mime_type: str
    file_uri: str


class FunctionCall(_Wire):
    name: str = ""
    args: dict[str, Any] | UnsetType = UNSET
    id: str | UnsetType = UNSET


class FunctionResponse(_Wire):
    name: str
    response: dict[str, Any]
    id: str | UnsetType = UNSET


class Part(_Wire):
    text: str | UnsetType = UNSET
    thought: bool | UnsetType = UNSET
    thought_signature: str | UnsetType = UNSET
    inline_data: Blob | UnsetType = UNSET
    file_data: FileData | UnsetType = UNSET
    function_call: FunctionCall | UnsetType = UNSET
    function_response: FunctionResponse | UnsetType = UNSET


class Content(_Wire):
    role: str | UnsetType = UNSET
    parts: list[Part] = []


class FunctionDeclaration(_Wire):
    name: str
    description: str | UnsetType = UNSET
    parameters_json_schema: dict[str, Any] | UnsetType = UNSET


class GoogleSearch(_Wire):
    """Grounding with Google Search (it takes no options through the Gemini API)."""


class Tool(_Wire):
    function_declarations: list[FunctionDeclaration] | UnsetType = UNSET
    google_search: GoogleSearch | UnsetType = UNSET


class FunctionCallingConfig(_Wire):
    mode: str
    allowed_function_names: list[str] | UnsetType = UNSET


class ToolConfig(_Wire):
    function_calling_config: FunctionCallingConfig


class ThinkingConfig(_Wire):
    include_thoughts: bool | UnsetType = UNSET
    thinking_budget: int | UnsetType = UNSET
    thinking_level: str | UnsetType = UNSET


class GenerationConfig(_Wire):
    max_output_tokens: int | UnsetType = UNSET
    temperature: float | UnsetType = UNSET
    top_p: float | UnsetType = UNSET
    stop_sequences: list[str] | UnsetType = UNSET
    candidate_count: int | UnsetType = UNSET
    seed: int | UnsetType = UNSET
    presence_penalty: float | UnsetType = UNSET
    frequency_penalty: float | UnsetType = UNSET
    response_mime_type: str | UnsetType = UNSET
    response_json_schema: dict[str, Any] | UnsetType = UNSET
    response_modalities: list[str] | UnsetType = UNSET
    thinking_config: ThinkingConfig | UnsetType = UNSET


class GenerateContentRequest(_Wire):
    contents: list[Content]
    system_instruction: Content | UnsetType = UNSET
    tools: list[Tool] | UnsetType = UNSET
    tool_config: ToolConfig | UnsetType = UNSET
    generation_config: GenerationConfig | UnsetType = UNSET


class WebSource(_Wire):
    uri: str = ""
    title: str = ""


class GroundingChunk(_Wire):
    web: WebSource | None = None


class Segment(_Wire):
    # UTF-8 byte offsets into the candidate's text, end exclusive; proto3 JSON leaves out a 0 start.
    start_index: int = 0
    end_index: int = 0


class GroundingSupport(_Wire):
    segment: Segment | None = None
    grounding_chunk_indices: list[int] = []


class GroundingMetadata(_Wire):
    web_search_queries: list[str] = []
    grounding_chunks: list[GroundingChunk] = []
    grounding_supports: list[GroundingSupport] = []


class Candidate(_Wire):
    content: Content | None = None
    finish_reason: str | None = None
    index: int | None = None  # gemini-2.0 leaves it out: the candidate's position then
    grounding_metadata: GroundingMetadata | None = None


class UsageMetadata(_Wire):
    prompt_token_count: int = 0
    candidates_token_count: int = 0
    thoughts_token_count: int = 0
    tool_use_prompt_token_count: int = 0
    cached_content_token_count: int = 0
    total_token_count: int = 0


class PromptFeedback(_Wire):
    block_reason: str | None = None


class GoogleError(_Wire):
    code: int = 0
    message: str = ""
    status: str = ""
    details: list[dict[str, Any]] = []


class GenerateContentResponse(_Wire):
    candidates: list[Candidate] = []
    prompt_feedback: PromptFeedback | None = None
    usage_metadata: UsageMetadata | None = None
    error: GoogleError | None = None  # a stream may end with an error record instead of a candidate


class ErrorEnvelope(_Wire):
    error: GoogleError | None = None


_encoder = msgspec.json.Encoder()
_response_decoder = msgspec.json.Decoder(GenerateContentResponse)
_error_decoder = msgspec.json.Decoder(ErrorEnvelope)
_JSON = {"content-type": "application/json"}

# ------------------------------------------------------------------------------------------ request


def build_request(call: ChatCall, target: Target) -> UpstreamRequest:
    req = call.request
    _refuse_unsupported(call)
    notes = Notes()
    call.ignore_hints(notes)  # Gemini takes none of them
    system, contents = _contents(req.messages)
    body = GenerateContentRequest(contents=contents)
    if system:
        body.system_instruction = Content(parts=system)
    tools = _tools(call, notes)
    offered = [Tool(function_declarations=tools)] if tools else []
    if _google_search(call, notes):
        offered.append(Tool(google_search=GoogleSearch()))  # a Tool entry of its own, beside the functions
    if offered:
        body.tools = offered
    tool_config = _tool_config(req, tools)
    if tool_config is not None:
        body.tool_config = ToolConfig(function_calling_config=tool_config)
    if _is_set(req.user):
        notes.ignore(call.client_path("user"))  # Gemini has no end-user id; OpenAI's serves abuse monitoring
    if req.parallel_tool_calls is False and tools and (tool_config is None or tool_config.mode != "NONE"):
        # Gemini has no switch to forbid parallel calls, and clients send false by default (Codex CLI, with
        # tool_choice auto): the translator keeps the answer's first call, its signature with it, and leaves
        # the rest out (ResponseContext.one_tool_call). The headers go before the answer, so this is said
        # whenever calls may come, not only when one was left out.
        notes.adjust(call.client_path("parallel_tool_calls"), "first call only")
    config = _generation_config(call, target, notes)
    if config != GenerationConfig():
        body.generation_config = config
    method = "streamGenerateContent?alt=sse" if call.stream else "generateContent"
    return UpstreamRequest(
        provider=target.provider,
        url=f"{target.provider.base_url}/v1beta/models/{target.model}:{method}",
        body=_encoder.encode(body),
        headers=_JSON,
        notes=notes or None,
    )


def _unsupported(param: str, why: str) -> UnsupportedParameter:
    return UnsupportedParameter(f"Unsupported parameter: '{param}' {why}", param=param)


def _is_set(value: object) -> bool:
    return value is not UNSET and value is not None


def _refuse_unsupported(call: ChatCall) -> None:
    """Top-level members Gemini has no equivalent for: a 400 naming the first one."""
    unknown = call.unknown_fields()
    if unknown:
        raise _unsupported(unknown[0], "is not supported by Gemini models.")
    req = call.request
    if req.logprobs:
        raise _unsupported("logprobs", "is not supported by Gemini models through this gateway.")
    if _is_set(req.top_logprobs):
        raise _unsupported("top_logprobs", "is not supported by Gemini models through this gateway.")
    if req.logit_bias:
        raise _unsupported("logit_bias", "has no Gemini equivalent.")
    if req.store:
        raise _unsupported("store", "cannot be true: Gemini does not store completions.")
    if req.metadata:
        raise _unsupported("metadata", "is only meaningful for stored completions, which Gemini does "
                                       "not have.")
    if _is_set(req.service_tier) and req.service_tier not in ("auto", "default"):
        raise _unsupported("service_tier", "only accepts 'auto' or 'default' for Gemini models.")


# -------------------------------------------------------------------------------------- messages


class _Turns:
    """Gemini ``contents``: consecutive turns of one role merged, as Gemini wants roles to alternate."""

    def __init__(self) -> None:
        self.contents: list[Content] = []

    def add(self, role: str, parts: list[Part]) -> None:
        last = self.contents[-1] if self.contents else None
        if last is not None and last.role == role:
            last.parts.extend(parts)
        else:
            self.contents.append(Content(role=role, parts=parts))


def _contents(messages: list[Message]) -> tuple[list[Part], list[Content]]:
    """(systemInstruction parts, contents). System and developer messages go to systemInstruction in
    order, wherever they stand; tool results become functionResponse parts of a user turn."""
    system: list[Part] = []
    turns = _Turns()
    tool_names: dict[str, str] = {}  # tool_call_id -> function name, from earlier assistant turns
    for i, message in enumerate(messages):
        param = f"messages[{i}]"
        if message.role == "function":
            raise UnsupportedParameter(f"Unsupported value: '{param}.role' does not support 'function' "
                                       "(deprecated) with Gemini models; use 'tool'.",
                                       param=f"{param}.role", code="unsupported_value")
        if message.role != "tool" and _is_set(message.name):
            raise _unsupported(f"{param}.name", "is not supported: Gemini has no participant names.")
        if message.role in ("system", "developer"):
            system.extend(Part(text=text) for text in _texts(message.content, param, ("text",)))
        elif message.role == "user":
            turns.add("user", _user_parts(message.content, param) or [Part(text="")])
        elif message.role == "assistant":
            turns.add("model", _model_parts(message, param, tool_names))
        else:
            turns.add("user", [_function_response(message, param, tool_names)])
    if not turns.contents:
        raise InvalidRequest("'messages' must contain at least one user or assistant message for Gemini "
                             "models.", param="messages")
    return system, turns.contents


def _texts(content: str | list[ContentPart] | UnsetType | None, param: str,
           kinds: tuple[str, ...]) -> list[str]:
    """The text of a message that may only hold text (``kinds`` are the accepted part types)."""
    if content is UNSET or content is None:
        return []
    if isinstance(content, str):
        return [content]
    texts = []
    for j, part in enumerate(content):
        value = part.text if part.type == "text" else part.refusal
        if part.type not in kinds or not isinstance(value, str):
            raise _unsupported(f"{param}.content[{j}]", f"of type '{part.type}' is not supported in "
                                                       "this message for Gemini models.")
        texts.append(value)
    return texts


def _user_parts(content: str | list[ContentPart] | UnsetType | None, param: str) -> list[Part]:
    if content is UNSET or content is None:
        return []
    if isinstance(content, str):
        return [Part(text=content)]
    return [_user_part(part, f"{param}.content[{j}]") for j, part in enumerate(content)]


def _user_part(part: ContentPart, param: str) -> Part:
    if part.type == "text" and part.text is not UNSET:
        return Part(text=part.text)
    if part.type == "image_url" and part.image_url is not UNSET:
        # ``detail`` only trades resolution for cost; Gemini picks its own resolution (documented).
        return _media_part(part.image_url.url, f"{param}.image_url.url")
    if part.type == "input_audio" and part.input_audio is not UNSET:
        audio = part.input_audio
        if audio.format not in ("wav", "mp3"):
            raise _unsupported(f"{param}.input_audio.format", "must be 'wav' or 'mp3'.")
        return Part(inline_data=Blob(mime_type=f"audio/{audio.format}", data=audio.data))
    if part.type == "file" and part.file is not UNSET and isinstance(part.file.file_data, str):
        mime_type, data = parse_data_url(part.file.file_data, f"{param}.file.file_data")
        return Part(inline_data=Blob(mime_type=mime_type, data=data))
    raise _unsupported(param, f"(a '{part.type}' part in this form) is not supported for Gemini models.")


# Gemini's fileData needs a mimeType and this adapter never downloads (it is pure), so the type comes
# from the URL's extension; anything else is refused rather than guessed.
_MIME_BY_EXTENSION = {
    "png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "webp": "image/webp",
    "gif": "image/gif", "heic": "image/heic", "heif": "image/heif", "pdf": "application/pdf",
}


def _media_part(url: str, param: str) -> Part:
    if url.startswith("data:"):
        mime_type, data = parse_data_url(url, param)
        return Part(inline_data=Blob(mime_type=mime_type, data=data))
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("https", "http", "gs"):
        raise InvalidRequest("Image URLs must be https://, http://, gs:// or data: URLs.", param=param)
    path = rest.split("?", 1)[0].split("#", 1)[0]
    extension = path.rsplit(".", 1)[-1].lower() if "." in path.rsplit("/", 1)[-1] else ""
    guessed = _MIME_BY_EXTENSION.get(extension)
    if guessed is None:
        raise InvalidRequest("Gemini needs the media type of a linked image and it cannot be told from "
                             f"this URL's extension (known: {', '.join(sorted(_MIME_BY_EXTENSION))}); "
                             "send the image as a data: URL instead.", param=param)
    return Part(file_data=FileData(mime_type=guessed, file_uri=url))


def _model_parts(message: Message, param: str, tool_names: dict[str, str]) -> list[Part]:
    """An assistant message as a model turn: text, functionCall parts, thoughtSignatures put back.

    Echoed ``reasoning``/``reasoning_content`` text is not sent: Gemini keeps its reasoning context in
    the signatures, and thought summaries are output only."""
    parts = [Part(text=text) for text in _texts(message.content, param, ("text", "refusal"))]
    if isinstance(message.refusal, str) and message.refusal:
        parts.append(Part(text=message.refusal))
    calls: dict[str, Part] = {}
    for k, call in enumerate(message.tool_calls or ()):
        where = f"{param}.tool_calls[{k}]"
        if call.type != "function":
            raise _unsupported(f"{where}.type", f"'{call.type}' is not supported for Gemini models.")
        args = parse_arguments(call.function.arguments, f"{where}.function.arguments")
        part = Part(function_call=FunctionCall(name=call.function.name, args=args, id=call.id))
        calls[call.id] = part
        tool_names[call.id] = call.function.name
    text_parts = list(parts)
    parts.extend(calls.values())
    for sig, call_id, where in _signatures(message.reasoning_details, param):
        if call_id is not None:
            if call_id not in calls:
                raise InvalidRequest(f"'{where}.id' names no tool call of this message.", param=f"{where}.id")
            calls[call_id].thought_signature = sig
            continue
        unsigned = next((p for p in text_parts if p.thought_signature is UNSET), None)
        if unsigned is not None:
            unsigned.thought_signature = sig
        else:  # the form Gemini itself uses for a signature that trails a turn: an empty text part
            parts.append(Part(text="", thought_signature=sig))
    return parts or [Part(text="")]


def _signatures(details: list[dict[str, Any]] | UnsetType | None,
                param: str) -> Iterable[tuple[str, str | None, str]]:
    """(signature, tool call id or None, param) for the Gemini entries of ``reasoning_details``.

    Entries of other formats (another provider's reasoning) cannot be read by Gemini and are skipped."""
    for k, entry in enumerate(details or ()):
        if entry.get("type") != SIGNATURE_TYPE or entry.get("format") != SIGNATURE_FORMAT:
            continue
        where = f"{param}.reasoning_details[{k}]"
        data, call_id = entry.get("data"), entry.get("id")
        if not isinstance(data, str) or not (call_id is None or isinstance(call_id, str)):
            raise InvalidRequest(f"'{where}' must have a string 'data' and a string or null 'id'.",
                                 param=where)
        yield data, call_id, where


def _function_response(message: Message, param: str, tool_names: dict[str, str]) -> Part:
    if not isinstance(message.tool_call_id, str):
        raise InvalidRequest(f"Missing required parameter: '{param}.tool_call_id'.",
                             param=f"{param}.tool_call_id", code="missing_required_parameter")
    name = tool_names.get(message.tool_call_id)
    if name is None:
        # Gemini's functionResponse needs the function's name, which OpenAI tool messages do not carry.
        raise InvalidRequest(f"'{param}.tool_call_id' ({message.tool_call_id!r}) answers no tool call of an "
                             "earlier assistant message.", param=f"{param}.tool_call_id")
    if _is_set(message.name) and message.name != name:
        raise InvalidRequest(f"'{param}.name' ({message.name!r}) differs from the function the tool call "
                             f"named ({name!r}).", param=f"{param}.name")
    text = "".join(_texts(message.content, param, ("text",)))
    return Part(function_response=FunctionResponse(name=name, response=_result_object(text),
                                                   id=message.tool_call_id))


def _result_object(text: str) -> dict[str, Any]:
    """Gemini's ``response`` must be an object: a JSON object result goes as is, anything else under
    ``output``, the key Google documents for a function's output."""
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    return value if isinstance(value, dict) else {"output": text}


# ------------------------------------------------------------------------------------------- tools


def _tools(call: ChatCall, notes: Notes) -> list[FunctionDeclaration]:
    declarations = []
    for i, tool in enumerate(call.request.tools or ()):
        param = f"tools[{i}]"
        if tool.type != "function":
            raise _unsupported(f"{param}.type", f"'{tool.type}' is not supported for Gemini models.")
        fn = tool.function
        declaration = FunctionDeclaration(name=fn.name, description=fn.description)
        if fn.parameters is not UNSET:
            declaration.parameters_json_schema = _schema_object(
                fn.parameters, call.client_path(f"{param}.function.parameters"), notes)
        declarations.append(declaration)
    return declarations


def _google_search(call: ChatCall, notes: Notes) -> bool:
    """``web_search_options`` asks for Google Search grounding. Gemini's search takes no options: the
    context size and the user's location are hints left out and reported."""
    options = call.request.web_search_options
    if not isinstance(options, WebSearchOptions):
        return False
    for name in ("search_context_size", "user_location"):
        if _is_set(getattr(options, name)):
            notes.ignore(call.client_path(f"web_search_options.{name}"))
    return True


def _tool_config(req: ChatRequest, tools: list[FunctionDeclaration]) -> FunctionCallingConfig | None:
    choice = req.tool_choice
    # OpenAI's strict function calling is Gemini's VALIDATED mode: schema adherence, call optional.
    strict = any(tool.function.strict for tool in req.tools or ())
    if isinstance(choice, UnsetType) or choice is None:
        return FunctionCallingConfig(mode="VALIDATED") if tools and strict else None
    if isinstance(choice, str):
        mode = {"auto": "VALIDATED" if strict else "AUTO", "none": "NONE", "required": "ANY"}.get(choice)
        if mode is None:
            raise UnsupportedParameter(f"Unsupported value: 'tool_choice' does not support {choice!r}.",
                                       param="tool_choice", code="unsupported_value")
        if mode == "ANY" and not tools:
            raise InvalidRequest("'tool_choice' is 'required' but no tools were given.", param="tool_choice")
        return FunctionCallingConfig(mode=mode) if tools else None
    if choice.type != "function":
        raise _unsupported("tool_choice.type", f"'{choice.type}' is not supported for Gemini models.")
    name = choice.function.name
    if name not in {tool.name for tool in tools}:
        raise InvalidRequest(f"'tool_choice.function.name' ({name!r}) names no tool of this request.",
                             param="tool_choice.function.name")
    return FunctionCallingConfig(mode="ANY", allowed_function_names=[name])


# JSON Schema as Gemini's ``parametersJsonSchema`` / ``responseJsonSchema`` take it (ai.google.dev, "Function
# calling" and "Structured output"). Keywords outside this set Gemini ignores or refuses, so each is rewritten
# to the nearest form it takes, and noted (docs/gemini.md): a client's tool list never fails a whole request.
_SCHEMA_KEYWORDS = frozenset({
    "$id", "$defs", "$ref", "$anchor", "type", "format", "title", "description", "enum", "items",
    "prefixItems", "minItems", "maxItems", "minimum", "maximum", "anyOf", "oneOf", "properties",
    "additionalProperties", "required", "propertyOrdering",
})
# Annotations: they constrain nothing, so leaving them out changes no valid answer (still reported).
_SCHEMA_ANNOTATIONS = frozenset({
    "$schema", "$comment", "examples", "default", "deprecated", "readOnly", "writeOnly", "discriminator",
})
_SUBSCHEMA_MAPS = frozenset({"properties", "$defs"})
_SUBSCHEMA_LISTS = frozenset({"prefixItems", "anyOf", "oneOf"})
_SUBSCHEMAS = frozenset({"items", "additionalProperties"})
# exclusive bound -> (the inclusive keyword Gemini takes, how the description states the exact bound)
_EXCLUSIVE_BOUNDS = {"exclusiveMinimum": ("minimum", "greater than"), "exclusiveMaximum": ("maximum", "less than")}


def _schema_object(schema: dict[str, Any], param: str, notes: Notes) -> dict[str, Any]:
    result = _schema(schema, param, notes)
    assert isinstance(result, dict)
    return result


def _schema(node: Any, param: str, notes: Notes) -> Any:
    if isinstance(node, bool):
        return node
    if not isinstance(node, dict):
        raise InvalidRequest(f"'{param}' must be a JSON Schema (an object or a boolean).", param=param)
    out: dict[str, Any] = {}
    said: list[str] = []  # constraints Gemini cannot enforce, stated in the description for the model
    for key, value in node.items():
        where = f"{param}.{key}"
        if key in _SCHEMA_ANNOTATIONS:
            notes.ignore(where)
        elif key == "const" and "enum" not in node and _is_enum_value(value):
            out["enum"] = [value]  # const is an enum of one; Gemini knows enum but not const
        elif key in _EXCLUSIVE_BOUNDS:
            _exclusive_bound(node, key, value, out, said, where, notes)
        elif key not in _SCHEMA_KEYWORDS or (key == "enum" and not _is_enum(value)):
            said.append(f"{key}: {dumps(value)}")
            notes.ignore(where)
        elif key in _SUBSCHEMA_MAPS:
            if not isinstance(value, dict):
                raise InvalidRequest(f"'{where}' must be an object of schemas.", param=where)
            out[key] = {name: _schema(sub, f"{where}.{name}", notes) for name, sub in value.items()}
        elif key in _SUBSCHEMA_LISTS:
            if not isinstance(value, list):
                raise InvalidRequest(f"'{where}' must be an array of schemas.", param=where)
            out[key] = [_schema(sub, f"{where}[{i}]", notes) for i, sub in enumerate(value)]
        elif key in _SUBSCHEMAS:
            out[key] = _schema(value, where, notes)
        elif key not in out:  # an exclusive bound may have set minimum/maximum already, tighter
            out[key] = value
    if said:
        description = out.get("description")
        text = f"({'; '.join(said)})"
        out["description"] = f"{description} {text}" if isinstance(description, str) and description else text
    return out


def _exclusive_bound(node: dict[str, Any], key: str, value: Any, out: dict[str, Any], said: list[str],
                     where: str, notes: Notes) -> None:
    """``exclusiveMinimum: 0`` -> ``minimum: 0`` plus "greater than 0" in the description: the nearest bound
    Gemini enforces, and the exact one in words."""
    inclusive, words = _EXCLUSIVE_BOUNDS[key]
    if isinstance(value, bool):  # draft 4: a flag on minimum/maximum
        bound = node.get(inclusive)
        if value and isinstance(bound, int | float):
            said.append(f"{words} {bound:g}")
        notes.ignore(where)
        return
    if not isinstance(value, int | float):
        raise InvalidRequest(f"'{where}' must be a number.", param=where)
    current = node.get(inclusive)
    tighter = max if inclusive == "minimum" else min
    out[inclusive] = tighter(value, current) if isinstance(current, int | float) else value
    said.append(f"{words} {value:g}")
    notes.adjust(where, f"{inclusive} {out[inclusive]:g}")


def _is_enum_value(value: Any) -> bool:
    # Gemini enums hold strings and numbers only.
    return isinstance(value, str) or (isinstance(value, int | float) and not isinstance(value, bool))


def _is_enum(value: Any) -> bool:
    return isinstance(value, list) and all(_is_enum_value(item) for item in value)


# ------------------------------------------------------------------------------- generation config


def _generation_config(call: ChatCall, target: Target, notes: Notes) -> GenerationConfig:
    req = call.request
    config = GenerationConfig()
    max_tokens = req.max_completion_tokens if _is_set(req.max_completion_tokens) else req.max_tokens
    if isinstance(max_tokens, int):
        config.max_output_tokens = lowered_max_tokens(call, target, notes) or max_tokens
    if isinstance(req.temperature, float | int):
        config.temperature = req.temperature
    if isinstance(req.top_p, float | int):
        config.top_p = req.top_p
    if isinstance(req.stop, str):
        config.stop_sequences = [req.stop]
    elif isinstance(req.stop, list):
        if len(req.stop) > 5:
            raise InvalidRequest("'stop' may hold at most 5 sequences for Gemini models.", param="stop")
        config.stop_sequences = req.stop
    if isinstance(req.n, int):
        config.candidate_count = req.n
    if isinstance(req.seed, int):
        config.seed = req.seed
    if isinstance(req.presence_penalty, float | int):
        config.presence_penalty = req.presence_penalty
    if isinstance(req.frequency_penalty, float | int):
        config.frequency_penalty = req.frequency_penalty
    _response_format(call, config, notes)
    if isinstance(req.modalities, list):
        config.response_modalities = [_modality(m, f"modalities[{i}]") for i, m in enumerate(req.modalities)]
    if isinstance(req.reasoning_effort, str) and not reasoning_unsupported(call, target, notes):
        config.thinking_config = _thinking(req.reasoning_effort, target.model)
    return config


def _response_format(call: ChatCall, config: GenerationConfig, notes: Notes) -> None:
    fmt = call.request.response_format
    if fmt is UNSET or fmt is None or fmt.type == "text":
        return
    config.response_mime_type = "application/json"
    if fmt.type == "json_schema":
        if fmt.json_schema is UNSET:
            raise InvalidRequest("Missing required parameter: 'response_format.json_schema'.",
                                 param="response_format.json_schema", code="missing_required_parameter")
        if fmt.json_schema.schema is not UNSET:
            config.response_json_schema = _schema_object(
                fmt.json_schema.schema, call.client_path("response_format.json_schema.schema"), notes)


def _modality(modality: str, param: str) -> str:
    if modality not in ("text", "image"):
        raise _unsupported(param, f"'{modality}' is not supported for Gemini models (text and image are).")
    return modality.upper()


# reasoning_effort -> Gemini 2.x thinkingBudget (tokens), as Google's own OpenAI-compatible endpoint
# maps low/medium/high; "minimal" is 512, the smallest budget every 2.5 thinking model accepts.
_BUDGETS = {"none": 0, "minimal": 512, "low": 1024, "medium": 8192, "high": 24576}
# reasoning_effort -> Gemini 3 thinkingLevel (Gemini 3 cannot switch thinking off).
_LEVELS = {"minimal": "MINIMAL", "low": "LOW", "medium": "MEDIUM", "high": "HIGH"}


def _thinking(effort: str, model: str) -> ThinkingConfig:
    if _uses_thinking_levels(model):
        level = _LEVELS.get(effort)
        if level is None:
            raise _effort_error(effort, _LEVELS)
        return ThinkingConfig(thinking_level=level, include_thoughts=True)
    budget = _BUDGETS.get(effort)
    if budget is None:
        raise _effort_error(effort, _BUDGETS)
    if budget == 0:
        return ThinkingConfig(thinking_budget=0)
    return ThinkingConfig(thinking_budget=budget, include_thoughts=True)


def _uses_thinking_levels(model: str) -> bool:
    """Gemini 3 and later take ``thinkingLevel``; 2.x take ``thinkingBudget``."""
    version = model.removeprefix("models/").removeprefix("gemini-").split("-", 1)[0]
    try:
        return float(version) >= 3
    except ValueError:
        return False


def _effort_error(effort: str, accepted: Mapping[str, object]) -> UnsupportedParameter:
    return UnsupportedParameter(
        f"Unsupported value: 'reasoning_effort' does not support {effort!r} with this Gemini model; "
        f"use one of {', '.join(accepted)}.", param="reasoning_effort", code="unsupported_value")


# ----------------------------------------------------------------------------------------- response


def _new_call_id() -> str:
    # Gemini 2.x sends no functionCall.id: the client still needs unique ids to answer each call.
    return "call_" + uuid.uuid4().hex[:24]


class _ChoiceState:
    """One candidate, part by part: the same translation for whole responses and streams."""

    __slots__ = ("cited", "finish", "one_call", "queries", "signatures", "streamed", "text", "tool_calls")

    def __init__(self, one_call: bool = False, *, streamed: bool = False) -> None:
        self.one_call = one_call  # the client forbade parallel calls: any after the first are left out
        self.streamed = streamed  # annotations carry their index in the message's list (see Annotation)
        self.tool_calls = 0
        self.signatures = 0
        self.finish: str | None = None
        self.text: list[str] = []  # the answer's text so far, which grounding segments index
        self.queries: list[str] = []  # search queries given so far
        self.cited: set[tuple[int, int, str]] = set()  # (start byte, end byte, url) given so far

    def delta(self, part: Part) -> Delta | None:
        delta = Delta()
        call_id: str | None = None
        if part.function_call is not UNSET and self.one_call and self.tool_calls:
            return None  # with its signature, which belongs to this call only
        if part.function_call is not UNSET:
            fn = part.function_call
            call_id = fn.id if isinstance(fn.id, str) and fn.id else _new_call_id()
            args = fn.args if isinstance(fn.args, dict) else {}
            delta.tool_calls = [DeltaToolCall(index=self.tool_calls, id=call_id, type="function",
                                              function=DeltaFunction(name=fn.name, arguments=dumps(args)))]
            self.tool_calls += 1
        elif part.inline_data is not UNSET:
            blob = part.inline_data
            delta.images = [{"type": "image_url",
                             "image_url": {"url": f"data:{blob.mime_type};base64,{blob.data}"}}]
        elif isinstance(part.text, str) and part.text:
            if part.thought is True:
                delta.reasoning = delta.reasoning_content = part.text
            else:
                delta.content = part.text
                self.text.append(part.text)
        if isinstance(part.thought_signature, str) and part.thought_signature:
            # Where the signature came from (a tool call, or the text) is where it must go back.
            delta.reasoning_details = [{"type": SIGNATURE_TYPE, "data": part.thought_signature,
                                        "format": SIGNATURE_FORMAT, "id": call_id, "index": self.signatures}]
            self.signatures += 1
        return None if delta == Delta() else delta

    def see(self, candidate: Candidate) -> Delta | None:
        """The candidate's finish, and its grounding (Google Search) as a delta of what is new in it."""
        if candidate.finish_reason:
            self.finish = finish_reason(candidate.finish_reason, self.tool_calls > 0)
        meta = candidate.grounding_metadata
        if meta is None:
            return None
        queries = [query for query in meta.web_search_queries if query not in self.queries]
        self.queries += queries
        annotations = self._annotations(meta)
        if not queries and not annotations:
            return None
        return Delta(annotations=annotations or UNSET, web_search_queries=queries or UNSET)

    def _annotations(self, meta: GroundingMetadata) -> list[Annotation]:
        """One url_citation per (segment, web source) not given yet. Gemini's segments are UTF-8 byte
        offsets into the answer's text; OpenAI's indices count characters, so a segment after non-ASCII
        text starts earlier in characters than in bytes."""
        text = "".join(self.text).encode()
        out: list[Annotation] = []
        for support in meta.grounding_supports:
            segment = support.segment
            if segment is None:
                continue
            for k in support.grounding_chunk_indices:
                web = meta.grounding_chunks[k].web if 0 <= k < len(meta.grounding_chunks) else None
                key = (segment.start_index, segment.end_index, web.uri if web is not None else "")
                if web is None or not web.uri or key in self.cited:
                    continue
                self.cited.add(key)
                out.append(Annotation(index=len(self.cited) - 1 if self.streamed else UNSET, url_citation=UrlCitation(
                    start_index=_characters(text, segment.start_index),
                    end_index=_characters(text, segment.end_index), url=web.uri, title=web.title)))
        return out


def _characters(text: bytes, offset: int) -> int:
    """The character index of UTF-8 byte ``offset`` in ``text`` (an offset past the end counts to the end)."""
    return len(text[:max(offset, 0)].decode("utf-8", "ignore"))


# Gemini finishReason -> OpenAI finish_reason (table and reasons in docs/gemini.md).
_FINISH = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    **dict.fromkeys(("SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "LANGUAGE",
                     "OTHER", "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION",
                     "IMAGE_OTHER", "NO_IMAGE"), "content_filter"),
}


def finish_reason(reason: str, has_tool_calls: bool) -> str:
    # Gemini says STOP for a turn that ends in function calls; OpenAI clients loop on "tool_calls".
    if has_tool_calls and reason in ("STOP", "FINISH_REASON_UNSPECIFIED"):
        return "tool_calls"
    return _FINISH.get(reason, "stop")


def usage_of(meta: UsageMetadata) -> Usage:
    prompt = meta.prompt_token_count + meta.tool_use_prompt_token_count
    # candidatesTokenCount leaves thoughts out; OpenAI's completion_tokens count reasoning in.
    completion = meta.candidates_token_count + meta.thoughts_token_count
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=meta.total_token_count or prompt + completion,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=meta.cached_content_token_count),
        completion_tokens_details=CompletionTokensDetails(reasoning_tokens=meta.thoughts_token_count),
        reasoning_tokens=meta.thoughts_token_count,
    )


def _decode(body: bytes, provider: str) -> GenerateContentResponse:
    try:
        record = _response_decoder.decode(body)
    except msgspec.DecodeError:
        raise UpstreamError(f"[{provider}] sent a response that is not a GenerateContentResponse.",
                            status=502, error_type="upstream_error", code="invalid_upstream_response",
                            provider=provider) from None
    if record.error is not None:
        raise _gateway_error(record.error.code or 500, record.error, {}, provider)
    return record


def _blocked(record: GenerateContentResponse) -> bool:
    return not record.candidates and record.prompt_feedback is not None \
        and bool(record.prompt_feedback.block_reason)


def _message(deltas: list[Delta]) -> ResponseMessage:
    """Fold one candidate's part deltas into the non-stream message."""
    message = ResponseMessage(content="".join(d.content for d in deltas if isinstance(d.content, str)) or None)
    reasoning = "".join(d.reasoning for d in deltas if isinstance(d.reasoning, str))
    if reasoning:
        message.reasoning = message.reasoning_content = reasoning
    calls = [_whole_call(call) for d in deltas for call in d.tool_calls or ()]
    if calls:
        message.tool_calls = calls
    details = [entry for d in deltas for entry in d.reasoning_details or ()]
    if details:
        message.reasoning_details = details
    images = [image for d in deltas for image in d.images or ()]
    if images:
        message.images = images
    annotations = [entry for d in deltas for entry in d.annotations or ()]
    if annotations:
        message.annotations = annotations
    queries = [query for d in deltas for query in d.web_search_queries or ()]
    if queries:
        message.web_search_queries = queries
    return message


def _whole_call(call: DeltaToolCall) -> ResponseToolCall:
    # Each Gemini functionCall is whole, so its one delta has id, name and all the arguments.
    assert isinstance(call.id, str) and isinstance(call.function, DeltaFunction)
    return ResponseToolCall(id=call.id, function=ResponseFunctionCall(name=str(call.function.name),
                                                                      arguments=str(call.function.arguments)))


def parse_response(body: bytes, ctx: ResponseContext) -> tuple[bytes, Usage | None]:
    provider = ctx.provider
    record = _decode(body, provider)
    usage = usage_of(record.usage_metadata) if record.usage_metadata is not None else None
    if _blocked(record):
        # The prompt itself was blocked: no candidates at all.
        choices = [Choice(index=0, message=ResponseMessage(), finish_reason="content_filter")]
        return completion_of(ctx, choices, usage), usage
    if not record.candidates:
        raise UpstreamError(f"[{provider}] answered with no candidates and no block reason.", status=502,
                            error_type="upstream_error", code="invalid_upstream_response", provider=provider)
    choices = []
    for position, candidate in enumerate(record.candidates):
        state = _ChoiceState(ctx.one_tool_call)
        parts = candidate.content.parts if candidate.content is not None else []
        deltas = [d for part in parts if (d := state.delta(part)) is not None]
        grounding = state.see(candidate)
        if grounding is not None:
            deltas.append(grounding)
        index = candidate.index if candidate.index is not None else position
        choices.append(Choice(index=index, message=_message(deltas), finish_reason=state.finish or "stop"))
    return completion_of(ctx, choices, usage), usage


class GeminiStream:
    """Gemini stream records (whole GenerateContentResponses holding only the new parts, cumulative
    usage, no ``[DONE]``) in, OpenAI chunks out. Finish chunks wait for the end of the body, so the
    usage that goes with them is the last one Gemini sent."""

    __slots__ = ("_blocked", "_choices", "_one_call", "_provider", "_writer", "usage")

    def __init__(self, ctx: ResponseContext) -> None:
        self._writer = ChunkWriter(ctx)
        self._one_call = ctx.one_tool_call
        self._provider = ctx.provider
        self._choices: dict[int, _ChoiceState] = {}
        self._blocked = False
        self.usage: Usage | None = None

    def feed(self, event: SSEEvent) -> list[bytes]:
        record = _decode(event.data, self._provider)
        if record.usage_metadata is not None:
            self.usage = usage_of(record.usage_metadata)
        self._blocked = self._blocked or _blocked(record)
        frames = []
        for position, candidate in enumerate(record.candidates):
            index = candidate.index if candidate.index is not None else position
            state = self._choices.setdefault(index, _ChoiceState(self._one_call, streamed=True))
            for part in candidate.content.parts if candidate.content is not None else ():
                delta = state.delta(part)
                if delta is not None:
                    frames.append(self._writer.delta(delta, index))
            grounding = state.see(candidate)
            if grounding is not None:
                frames.append(self._writer.delta(grounding, index))
        return frames

    def close(self) -> list[bytes]:
        if self._blocked and not self._choices:
            return [self._writer.finish("content_filter"), self._writer.done(self.usage)]
        if not self._choices or any(state.finish is None for state in self._choices.values()):
            # Gemini always ends a completed candidate with a finishReason; a body that ends without
            # one was cut short (a proxy, a crash), so the client must not take it as complete.
            raise UpstreamError(f"[{self._provider}] the stream ended before Gemini finished its answer.",
                                status=502, error_type="upstream_error", code="upstream_stream_truncated",
                                provider=self._provider)
        frames = [self._writer.finish(state.finish, index)
                  for index, state in sorted(self._choices.items()) if state.finish is not None]
        frames.append(self._writer.done(self.usage))
        return frames


def stream_translator(ctx: ResponseContext) -> GeminiStream:
    return GeminiStream(ctx)


# ------------------------------------------------------------------------------------------- errors

# Google's canonical status -> OpenAI error type and code (the HTTP status is kept; 401/403 become 502
# in ``upstream_error`` because they are about the gateway's key, not the client's).
_ERROR_KINDS: dict[str, tuple[str, str]] = {
    "INVALID_ARGUMENT": ("invalid_request_error", "invalid_request"),
    "FAILED_PRECONDITION": ("invalid_request_error", "failed_precondition"),
    "OUT_OF_RANGE": ("invalid_request_error", "invalid_request"),
    "NOT_FOUND": ("invalid_request_error", "not_found"),
    "RESOURCE_EXHAUSTED": ("rate_limit_error", "rate_limit_exceeded"),
    "INTERNAL": ("api_error", "internal_error"),
    "UNAVAILABLE": ("overloaded_error", "upstream_overloaded"),
    "DEADLINE_EXCEEDED": ("timeout_error", "upstream_timeout"),
}


def parse_error(status: int, body: bytes, headers: Mapping[str, str], provider: str) -> GatewayError:
    try:
        error = _error_decoder.decode(body).error
    except msgspec.DecodeError:
        error = None
    if error is None:
        text = body.decode("utf-8", "replace").strip()[:500] or f"HTTP {status} with an empty body"
        return upstream_error(provider, status, text, retry_after=headers.get("retry-after"))
    return _gateway_error(status, error, headers, provider)


def _gateway_error(status: int, error: GoogleError, headers: Mapping[str, str], provider: str) -> GatewayError:
    if any(detail.get("reason") == "API_KEY_INVALID" for detail in error.details):
        status = 401  # Gemini answers a bad key with 400 INVALID_ARGUMENT: it is the gateway's key.
    error_type, code = _ERROR_KINDS.get(error.status, (None, error.status.lower() or None))
    return upstream_error(provider, status, error.message or f"HTTP {status}", error_type=error_type,
                          code=code, retry_after=headers.get("retry-after") or _retry_delay(error))


def _retry_delay(error: GoogleError) -> str | None:
    """Gemini puts the back-off in a RetryInfo detail (``"retryDelay": "34.4s"``), not a header."""
    for detail in error.details:
        delay = detail.get("retryDelay")
        if str(detail.get("@type", "")).endswith("google.rpc.RetryInfo") and isinstance(delay, str):
            try:
                return str(math.ceil(float(delay.removesuffix("s"))))
            except ValueError:
                return None
    return None
