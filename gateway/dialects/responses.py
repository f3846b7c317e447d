"""The OpenAI Responses API in and out, any model behind: the translation for ``POST /v1/responses``.

A Responses request becomes the common ``ChatCall`` the unified pipeline runs; its chat answer (a
``chat.completion`` or its chunks, as the adapters produce them) becomes a Response object or the
Responses event stream. The wire Structs are in ``responses_wire.py``; every decision is in
docs/responses.md.

Usage (what the route does; the answer side is in ``responses_answer.py``)::

    from gateway.dialects.responses import parse_responses
    from gateway.dialects.responses_answer import ResponsesStream, response_from_completion

    call = await parse_responses(body, history)       # 400s name the member; history: ResponseHistory
    # ... run call.chat (a ChatCall) through the pipeline; call.chat.notes are the dialect's notes ...
    rid = "resp_..."                                   # the route's id for this response
    answer = response_from_completion(completion_bytes, call, resp_id=rid, model=public_model,
                                      gateway=routing_metadata)
    answer.body             # the Response object for the client
    answer.stored_output    # its output items as stored (encrypted_content always kept)

    stream = ResponsesStream(call, resp_id=rid, model=public_model, gateway=routing_metadata)
    frames = stream.start()                            # response.created, response.in_progress
    frames += stream.feed(chunk_bytes)                 # per relayed chat SSE chunk, as it arrives
    frames += stream.close()                           # upstream ended: response.completed/incomplete
    frame = stream.fail(exc)                           # mid-stream GatewayError: response.failed
    stream.stored_output, stream.response              # once stream.done

``call.input_items`` are this request's input items (each one JSON object as bytes, ids assigned, item
references resolved) and ``call.store`` says whether to keep the response; ``ResponseHistory`` is what
the route implements over the store so ``previous_response_id`` and ``item_reference`` resolve.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import os
import secrets
from typing import Any, Literal, NamedTuple, Protocol, TypeVar

import msgspec
from msgspec import UNSET, UnsetType

from gateway.dialects.chat import DOMAINS_HINT, ChatCall, validation_error
from gateway.dialects.responses_wire import (
    REQUEST_FIELDS,
    ContentIn,
    ItemIn,
    ResponsesRequest,
)
from gateway.door import MAX_TOKENS, Range, check_body, check_model_name, check_ranges
from gateway.errors import GatewayError, InvalidRequest, UnsupportedParameter
from gateway.wire.openai import (
    ApproximateLocation,
    ChatRequest,
    ContentPart,
    FileData,
    FunctionCall,
    FunctionDef,
    ImageURL,
    JsonSchemaFormat,
    Message,
    NamedFunction,
    NamedToolChoice,
    ResponseFormat,
    StreamOptions,
    Tool,
    ToolCall,
    UserLocation,
    WebSearchOptions,
    encoder,
    raw_object_decoder,
)

# --------------------------------------------------------------------------- the store, as seen from here

class ResponseHistory(Protocol):
    """Stored conversation state, scoped to the key making the request (another key's is "not found")."""

    async def conversation(self, response_id: str) -> list[bytes] | None:
        """Every item the response ``response_id`` continues from, in order: its own conversation (what its
        ``previous_response_id`` gave it), then its input items, then its stored output items; each item
        one JSON object as bytes. None when no such response is stored for this key."""

    async def item(self, item_id: str) -> bytes | None:
        """One stored input or output item by its ``id`` (JSON object bytes), or None."""


# ------------------------------------------------------------------------------------------ the request

# Each number a Responses client may send, in the range OpenAI documents.
RESPONSES_RANGES: dict[str, Range] = {
    "max_output_tokens": Range(1, MAX_TOKENS, integer=True),
    "temperature": Range(0.0, 2.0, integer=False),
    "top_p": Range(0.0, 1.0, integer=False),
    "top_logprobs": Range(0, 20, integer=True),
    "max_tool_calls": Range(1, MAX_TOKENS, integer=True),
}

INCLUDE_ENCRYPTED = "reasoning.encrypted_content"

# Top-level members that are hints about cost, caching or presentation: they cannot make a correct answer
# wrong, and no translated target takes them, so they are left out and reported.
_HINTS = ("prompt_cache_key", "prompt_cache_retention", "prompt_cache_options", "client_metadata",
          "context_management")

# OpenAI's web search tool, by every name it has had. A live search becomes chat's web_search_options,
# which the Anthropic and Gemini adapters offer as their providers' search tools. Codex sends it with
# ``external_web_access: false`` (cached results only, nothing fetched): no provider's search can promise
# that, so that one is left out and reported like the hosted tools below.
WEB_SEARCH_TOOLS = frozenset({"web_search", "web_search_preview", "web_search_2025_08_26",
                              "web_search_preview_2025_03_11"})

# Tools OpenAI runs on its own servers, that no translated target has. The model only *may* call them, so
# they are left out and reported (the clients issue's rule).
HOSTED_TOOLS = frozenset({
    "file_search", "code_interpreter", "image_generation", "computer_use", "computer_use_preview",
    "computer", "mcp", "local_shell", "shell", "apply_patch", "tool_search",
})

# Records of a hosted tool's run (or an image the model made) in an earlier turn: what the model made of
# them is in the messages around them, and a translated target has no such item, so they are left out
# and reported.
_HOSTED_CALL_RECORDS = frozenset({"web_search_call", "file_search_call", "tool_search_call",
                                  "tool_search_output", "image_generation_call"})

# Namespaced tools are offered to a translated target under one flat name (Anthropic and Gemini allow
# [A-Za-z0-9_-] only), and the model's call is given back its namespace.
NAMESPACE_SEPARATOR = "__"


class ToolOrigin(NamedTuple):
    """What a flat tool name offered upstream was in the client's request."""

    kind: Literal["function", "custom"]
    name: str
    namespace: str | None


class ResponsesCall:
    """A parsed Responses request: the chat call the pipeline runs, and what rebuilding the answer needs."""

    __slots__ = ("chat", "include_encrypted", "input_items", "request", "summary", "tools")

    def __init__(self, request: ResponsesRequest, chat: ChatCall, tools: dict[str, ToolOrigin],
                 input_items: list[bytes]) -> None:
        self.request = request
        self.chat = chat
        self.tools = tools
        self.input_items = input_items
        include = request.include or ()
        self.include_encrypted = INCLUDE_ENCRYPTED in include
        reasoning = request.reasoning if not isinstance(request.reasoning, UnsetType) else None
        self.summary = bool(reasoning and (reasoning.summary or reasoning.generate_summary))

    @property
    def model(self) -> str:
        return self.request.model

    @property
    def store(self) -> bool:
        # OpenAI keeps a response unless told not to.
        return self.request.store is not False


_T = TypeVar("_T")
_request_decoder = msgspec.json.Decoder(ResponsesRequest)
_item_decoder = msgspec.json.Decoder(ItemIn)


async def parse_responses(body: bytes, history: ResponseHistory | None = None) -> ResponsesCall:
    """The body as a Responses call, checked at the door (``gateway/door.py``); any problem is a 400 naming
    the member. ``history`` resolves ``previous_response_id`` and ``item_reference`` (None: refused)."""
    check_body(body, hint="a JSON object with 'model' and 'input'")
    try:
        request = _request_decoder.decode(body)
        raw = raw_object_decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise validation_error(str(exc)) from None
    except (msgspec.DecodeError, RecursionError) as exc:
        raise InvalidRequest(f"We could not parse the JSON body of your request: {exc}") from None
    unknown = next((name for name in raw if name not in REQUEST_FIELDS), None)
    if unknown is not None:
        raise _refuse(unknown, "is not part of the Responses API as this gateway serves it.")
    check_model_name(request.model)
    check_ranges(request, RESPONSES_RANGES)
    if isinstance(request.input, UnsetType):
        raise InvalidRequest("Missing required parameter: 'input'.", param="input",
                             code="missing_required_parameter")
    notes: list[str] = []
    _refuse_unservable(request, notes)
    items = await _resolve_references(_input_items(request.input), history)
    past = await _past_items(request.previous_response_id, history)
    tools, origins, search = _tools(request, items, notes)
    turns = _Turns(origins, notes)
    if isinstance(request.instructions, str) and request.instructions:
        turns.messages.append(Message(role="system", content=request.instructions))
    for item in past:
        turns.add(item, "previous_response_id")
    for i, item in enumerate(items):
        turns.add(item, f"input[{i}]")
    messages = turns.finish()
    if not messages:
        raise InvalidRequest("'input' must contain at least one message.", param="input", code="invalid_value")
    choice, tools = _tool_choice(request.tool_choice, tools, origins)
    chat = ChatRequest(
        model=request.model,
        messages=messages,
        max_completion_tokens=request.max_output_tokens,
        temperature=request.temperature,
        top_p=request.top_p,
        user=request.safety_identifier or request.user or UNSET,
        tools=tools or UNSET,
        tool_choice=choice,
        parallel_tool_calls=request.parallel_tool_calls,
        response_format=_response_format(request),
        reasoning_effort=request.reasoning.effort if request.reasoning else UNSET,
        service_tier=request.service_tier,
        web_search_options=search.options if search is not None else UNSET,
        project_id=request.project_id,
        min_reasoning_level=request.min_reasoning_level,
    )
    if request.stream:
        # The usage chunk gives response.completed its real counts, whoever answers.
        chat.stream, chat.stream_options = True, StreamOptions(include_usage=True)
    chat_raw = raw_object_decoder.decode(encoder.encode(chat))
    call = ChatCall(encoder.encode(chat_raw), chat_raw, chat)
    for path in notes:
        call.notes.ignore(path)
    if isinstance(request.max_tool_calls, int):
        # It caps built-in tool calls: the only one a translated target runs is a web search, which
        # Anthropic caps with its tool's max_uses; the other adapters leave it out and report it.
        call.hints["max_tool_calls"] = request.max_tool_calls
    if search is not None:
        call.names["web_search_options"] = search.path
        if search.domains is not None:
            call.hints[search.path + DOMAINS_HINT] = search.domains
    return ResponsesCall(request, call, origins, [_stored_item(item, i) for i, item in enumerate(items)])


def _refuse(param: str, why: str) -> UnsupportedParameter:
    return UnsupportedParameter(f"Unsupported parameter: '{param}' {why}", param=param)


def _refuse_unservable(request: ResponsesRequest, notes: list[str]) -> None:
    """Refuse what would change the answer and cannot be honoured; note the hints left out."""
    if request.background:
        raise _refuse("background", "is not served: the gateway answers in the request (send false or leave "
                      "it out).")
    if request.conversation:
        raise _refuse("conversation", "is not served: use 'previous_response_id' or send the history in "
                      "'input'.")
    if request.prompt:
        raise _refuse("prompt", "(stored prompt templates) is not served: send the prompt's text in "
                      "'instructions' and 'input'.")
    if request.top_logprobs:
        raise _refuse("top_logprobs", "is not translated for this API: use /v1/chat/completions with "
                      "'logprobs'.")
    for name in _HINTS:
        if getattr(request, name) not in (UNSET, None):
            notes.append(name)
    if request.truncation == "auto":
        notes.append("truncation")  # an overlong input is refused by the target instead of cut
    if isinstance(request.text, msgspec.Struct) and request.text.verbosity:
        notes.append("text.verbosity")
    if isinstance(request.reasoning, msgspec.Struct) and request.reasoning.context:
        notes.append("reasoning.context")
    if isinstance(request.stream_options, msgspec.Struct) and request.stream_options.include_obfuscation:
        notes.append("stream_options.include_obfuscation")
    for k, name in enumerate(request.include or ()):
        if name != INCLUDE_ENCRYPTED:
            # Outputs of hosted tools the gateway never runs, or logprobs it does not translate here.
            notes.append(f"include[{k}]")


def _input_items(value: str | list[ItemIn] | UnsetType) -> list[ItemIn]:
    if isinstance(value, str):
        return [ItemIn(type="message", role="user", content=value)]
    return list(value) if isinstance(value, list) else []


async def _resolve_references(items: list[ItemIn], history: ResponseHistory | None) -> list[ItemIn]:
    """``item_reference`` items replaced by the stored items they name (the AI SDK sends one in place of
    a reasoning item it got from a stored response), and stored reasoning items sent back by id alone
    given their encrypted content."""
    out: list[ItemIn] = []
    for i, item in enumerate(items):
        if item.type == "reasoning" and not item.encrypted_content and history is not None:
            out.append(await _restored_reasoning(item, history, f"input[{i}].id"))
            continue
        if item.type != "item_reference":
            out.append(item)
            continue
        param = f"input[{i}].id"
        if not isinstance(item.id, str) or not item.id:
            raise InvalidRequest("An item_reference needs the 'id' of a stored item.", param=param)
        stored = await history.item(item.id) if history is not None else None
        if stored is None:
            raise InvalidRequest(f"Item with id '{item.id[:64]}' not found: only items of responses stored "
                                 f"with this key can be referenced.", param=param, code="invalid_value")
        found = _decode_stored(stored, param)
        if found.type == "item_reference":
            raise InvalidRequest("A stored item cannot be a reference.", param=param)
        out.append(found)
    return out


async def _restored_reasoning(item: ItemIn, history: ResponseHistory, param: str) -> ItemIn:
    """A reasoning item of a stored response, sent back with its id and summary but no encrypted content:
    what the OpenAI Agents SDK and LangChain do when ``store`` is left true, as OpenAI keeps that content
    itself. The stored item has the provider's signatures (Gemini 3 refuses a function call sent back
    without its thought signature; Anthropic a tool turn without its signed thinking). An id this key has
    not stored is left as it came: its summary alone is reported as ignored, as before."""
    if not isinstance(item.id, str) or not item.id:
        return item
    stored = await history.item(item.id)
    found = _decode_stored(stored, param) if stored is not None else None
    if found is None or found.type != "reasoning" or not isinstance(found.encrypted_content, str):
        return item
    return msgspec.structs.replace(item, encrypted_content=found.encrypted_content)


async def _past_items(response_id: str | UnsetType | None, history: ResponseHistory | None) -> list[ItemIn]:
    if not isinstance(response_id, str):
        return []
    conversation = await history.conversation(response_id) if history is not None else None
    if conversation is None:
        raise InvalidRequest(f"Previous response with id '{response_id[:64]}' not found.",
                             param="previous_response_id", code="previous_response_not_found")
    return [_decode_stored(item, "previous_response_id") for item in conversation]


def _decode_stored(data: bytes, param: str) -> ItemIn:
    try:
        return _item_decoder.decode(data)
    except msgspec.DecodeError:
        # The store only holds what this module wrote: an unreadable item is the gateway's fault.
        raise GatewayError(f"A stored item for '{param}' could not be read.") from None


def _stored_item(item: ItemIn, index: int) -> bytes:
    """An input item as kept with its response (an id given to those sent without one)."""
    if not isinstance(item.id, str):
        item = msgspec.structs.replace(item, id=f"{_ITEM_PREFIX.get(item.type, 'item')}_in{index}_{_nonce()}")
    return encoder.encode(item)


_ITEM_PREFIX = {"message": "msg", "function_call": "fc", "custom_tool_call": "ctc", "reasoning": "rs",
                "function_call_output": "fco", "custom_tool_call_output": "ctco"}


class _Nonces:
    """Suffixes that keep item ids unique, without a system call for random bytes per item (one per input
    item made that the largest single cost of parsing a long Codex turn): a random prefix per process (drawn
    again in a forked worker) and a counter."""

    def __init__(self) -> None:
        self._pid = 0
        self._prefix = ""
        self._next = itertools.count(1).__next__

    def __call__(self) -> str:
        if self._pid != os.getpid():
            self._pid, self._prefix, self._next = os.getpid(), secrets.token_hex(3), itertools.count(1).__next__
        return f"{self._prefix}{self._next():06x}"


_nonce = _Nonces()


# -------------------------------------------------------------------------------------------- tools


class _WebSearch(NamedTuple):
    """The client's live web_search tool: chat's options for it, where it was, its domain filter."""

    options: WebSearchOptions
    path: str
    domains: list[str] | None


def _tools(request: ResponsesRequest, items: list[ItemIn],
           notes: list[str]) -> tuple[list[Tool], dict[str, ToolOrigin], _WebSearch | None]:
    """The request's tools, and those of Codex's ``additional_tools`` input items, as chat function tools;
    and the web search asked for."""
    tools: list[Tool] = []
    origins: dict[str, ToolOrigin] = {}
    searches: list[_WebSearch] = []
    groups: list[tuple[list[dict[str, Any]], str]] = []
    if isinstance(request.tools, list):
        groups.append((request.tools, "tools"))
    for i, item in enumerate(items):
        if item.type == "additional_tools" and isinstance(item.tools, list):
            groups.append((item.tools, f"input[{i}].tools"))
    for group, path in groups:
        for k, spec in enumerate(group):
            if isinstance(spec.get("type"), str) and spec["type"] in WEB_SEARCH_TOOLS:
                _add_web_search(spec, f"{path}[{k}]", searches, notes)
            else:
                _add_tool(spec, f"{path}[{k}]", None, tools, origins, notes)
    if len(searches) > 1:
        raise InvalidRequest("Only one web_search tool can be offered.", param=searches[1].path,
                             code="invalid_value")
    return tools, origins, searches[0] if searches else None


def _add_web_search(spec: dict[str, Any], path: str, searches: list[_WebSearch], notes: list[str]) -> None:
    if spec.get("external_web_access") is False:
        notes.append(path)  # cached results only: see WEB_SEARCH_TOOLS
        return
    size = spec.get("search_context_size")
    if size not in (None, "low", "medium", "high"):
        raise InvalidRequest(f"Invalid value for '{path}.search_context_size': low, medium or high.",
                             param=f"{path}.search_context_size", code="invalid_value")
    options = WebSearchOptions(search_context_size=size or UNSET)
    where = _member(spec, "user_location", dict, path)
    if isinstance(where, dict):
        fields = {name: _member(where, name, str, f"{path}.user_location")
                  for name in ("city", "country", "region", "timezone")}
        options.user_location = UserLocation(approximate=ApproximateLocation(**fields))
    filters = _member(spec, "filters", dict, path)
    domains = _member(filters, "allowed_domains", list, f"{path}.filters") if isinstance(filters, dict) else UNSET
    if isinstance(domains, list) and not all(isinstance(domain, str) for domain in domains):
        raise InvalidRequest(f"'{path}.filters.allowed_domains' must be a list of strings.",
                             param=f"{path}.filters.allowed_domains", code="invalid_value")
    searches.append(_WebSearch(options, path, domains if isinstance(domains, list) and domains else None))


def _add_tool(spec: dict[str, Any], path: str, namespace: str | None, tools: list[Tool],
              origins: dict[str, ToolOrigin], notes: list[str]) -> None:
    kind = spec.get("type")
    if not isinstance(kind, str):
        raise InvalidRequest("A tool needs its 'type'.", param=f"{path}.type", code="missing_required_parameter")
    if kind == "namespace" and namespace is None:
        name = _tool_name(spec, path)
        members = spec.get("tools")
        if not isinstance(members, list):
            raise InvalidRequest("A namespace tool needs its 'tools' list.", param=f"{path}.tools")
        for k, member in enumerate(members):
            _add_tool(member if isinstance(member, dict) else {}, f"{path}.tools[{k}]", name, tools, origins,
                      notes)
        return
    if kind in HOSTED_TOOLS:
        notes.append(path)
        return
    if kind not in ("function", "custom"):
        raise _refuse(f"{path}.type", f"'{kind[:40]}' is not a tool type this gateway can offer a translated model.")
    name = _tool_name(spec, path)
    flat = f"{namespace}{NAMESPACE_SEPARATOR}{name}" if namespace else name
    if flat in origins:
        raise InvalidRequest(f"Two tools are named '{flat}'.", param=f"{path}.name", code="invalid_value")
    description = _member(spec, "description", str, path)
    if kind == "function":
        parameters = _member(spec, "parameters", dict, path)
        tools.append(Tool(type="function", function=FunctionDef(
            name=flat, description=description,
            parameters=parameters if parameters is not UNSET else {"type": "object", "properties": {}},
            strict=_member(spec, "strict", bool, path))))
        origins[flat] = ToolOrigin("function", name, namespace)
        return
    tools.append(Tool(type="function", function=_custom_as_function(spec, flat, description, path, notes)))
    origins[flat] = ToolOrigin("custom", name, namespace)


def _member(spec: dict[str, Any], name: str, kind: type[_T], path: str) -> _T | UnsetType:
    """A tool's optional member, of its type; absent or null is UNSET, another type a 400 naming it."""
    value = spec.get(name)
    if value is None:
        return UNSET
    if not isinstance(value, kind):
        raise InvalidRequest(f"Invalid type for '{path}.{name}': expected {kind.__name__}.",
                             param=f"{path}.{name}", code="invalid_value")
    return value


def _tool_name(spec: dict[str, Any], path: str) -> str:
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequest("A tool needs a 'name'.", param=f"{path}.name", code="missing_required_parameter")
    return name


def _custom_as_function(spec: dict[str, Any], flat: str, description: str | UnsetType, path: str,
                        notes: list[str]) -> FunctionDef:
    """A custom tool (free-form text input) as a function taking one string, ``input``.

    A grammar (Codex's ``exec`` sends a Lark one) cannot be enforced by a translated target: it is given
    to the model as the input's description and reported as left out, so the model knows the syntax."""
    fmt = spec.get("format")
    input_doc = "The tool's input, as free-form text."
    if isinstance(fmt, dict) and fmt.get("type") == "grammar":
        input_doc = (f"The tool's input. It must follow this {fmt.get('syntax', '')} grammar:\n"
                     f"{fmt.get('definition', '')}")
        notes.append(f"{path}.format")
    elif isinstance(fmt, dict) and fmt.get("type") not in (None, "text"):
        raise _refuse(f"{path}.format.type", f"'{fmt.get('type')}' is not a custom tool format.")
    return FunctionDef(name=flat, description=description, parameters={
        "type": "object", "properties": {"input": {"type": "string", "description": input_doc}},
        "required": ["input"], "additionalProperties": False})


def _tool_choice(choice: str | dict[str, Any] | UnsetType | None, tools: list[Tool],
                 origins: dict[str, ToolOrigin]) -> tuple[str | NamedToolChoice | UnsetType, list[Tool]]:
    """Responses ``tool_choice`` as chat's, and the tools offered (``allowed_tools`` narrows them)."""
    if choice is None or isinstance(choice, UnsetType):
        return UNSET, tools
    if isinstance(choice, str):
        if choice not in ("auto", "none", "required"):
            raise InvalidRequest(f"Invalid value for 'tool_choice': '{choice[:40]}'.", param="tool_choice",
                                 code="invalid_value")
        return choice, tools
    kind = choice.get("type")
    if kind in ("function", "custom"):
        return NamedToolChoice(type="function", function=NamedFunction(
            name=_chosen(choice, origins, "tool_choice"))), tools
    if kind == "allowed_tools":
        mode = choice.get("mode", "auto")
        allowed = choice.get("tools")
        if mode not in ("auto", "required") or not isinstance(allowed, list):
            raise InvalidRequest("'allowed_tools' needs 'mode' auto or required and a 'tools' list.",
                                 param="tool_choice", code="invalid_value")
        names = {_chosen(spec, origins, f"tool_choice.tools[{k}]")
                 for k, spec in enumerate(allowed) if isinstance(spec, dict)}
        return mode, [tool for tool in tools if tool.function.name in names]
    # A hosted tool (web_search, file_search, mcp...) forced: the answer depends on running it, and neither
    # Anthropic's search nor Gemini's grounding can be made to run.
    raise _refuse("tool_choice", f"forces the '{kind}' tool, which a translated model cannot be made to run.")


def _chosen(spec: dict[str, Any], origins: dict[str, ToolOrigin], param: str) -> str:
    name, namespace = spec.get("name"), spec.get("namespace")
    if isinstance(name, str) and isinstance(namespace, str):
        name = f"{namespace}{NAMESPACE_SEPARATOR}{name}"
    if not isinstance(name, str) or name not in origins:
        raise InvalidRequest(f"'{param}' names a tool that is not in 'tools'.", param=param,
                             code="invalid_value")
    return name


def _response_format(request: ResponsesRequest) -> ResponseFormat | UnsetType:
    text = request.text
    fmt = text.format if isinstance(text, msgspec.Struct) else UNSET
    if isinstance(fmt, UnsetType) or fmt.type == "text":
        return UNSET
    if fmt.type == "json_object":
        return ResponseFormat(type="json_object")
    if fmt.type == "json_schema":
        if not isinstance(fmt.name, str) or not isinstance(fmt.schema, dict):
            raise InvalidRequest("A json_schema format needs its 'name' and 'schema'.", param="text.format",
                                 code="missing_required_parameter")
        return ResponseFormat(type="json_schema", json_schema=JsonSchemaFormat(
            name=fmt.name, schema=fmt.schema, strict=fmt.strict,
            description=fmt.description if isinstance(fmt.description, str) else UNSET))
    raise _refuse("text.format.type", f"'{fmt.type[:40]}' is not a text format (text, json_object, json_schema).")


# ------------------------------------------------------------------------------------------ the turns


class _Turns:
    """Input items as chat messages. Consecutive model-side items (reasoning, assistant messages, tool
    calls) are one assistant turn, as chat holds them: its reasoning_details, text and tool_calls."""

    def __init__(self, origins: dict[str, ToolOrigin], notes: list[str]) -> None:
        self.messages: list[Message] = []
        self._origins = origins
        self._notes = notes
        self._turn: Message | None = None
        self._turn_paths: list[str] = []

    def add(self, item: ItemIn, path: str) -> None:
        match item.type:
            case "message":
                match item.role:
                    case "assistant":
                        self._assistant_text(item, path)
                    case "user" | "system" | "developer" as role:
                        self._close()
                        self.messages.append(Message(role=role, content=_content(item.content, f"{path}.content")))
                    case role:
                        raise InvalidRequest(f"Invalid value for '{path}.role': '{str(role)[:40]}'.",
                                             param=f"{path}.role", code="invalid_value")
            case "function_call" | "custom_tool_call":
                self._tool_call(item, path)
            case "function_call_output" | "custom_tool_call_output":
                self._close()
                call_id = _required(item.call_id, f"{path}.call_id")
                output = item.output if not isinstance(item.output, UnsetType) else ""
                self.messages.append(Message(role="tool", tool_call_id=call_id,
                                             content=_content(output, f"{path}.output")))
            case "reasoning":
                self._reasoning(item, path)
            case "additional_tools":
                pass  # its tools are offered with the others (see _tools)
            case kind if kind in _HOSTED_CALL_RECORDS:
                # A stored response's own records (the searches the gateway reported) are its history, not
                # something the client sent: naming previous_response_id as ignored would say it was unused.
                if path != "previous_response_id":
                    self._notes.append(path)
            case kind:
                raise _refuse(f"{path}.type", f"'{kind[:40]}' items cannot be given to a translated model.")

    def finish(self) -> list[Message]:
        self._close()
        return self.messages

    def _open(self, path: str) -> Message:
        if self._turn is None:
            self._turn = Message(role="assistant")
            self._turn_paths = []
        self._turn_paths.append(path)
        return self._turn

    def _close(self) -> None:
        turn, self._turn = self._turn, None
        if turn is None:
            return
        if turn.content is UNSET and turn.tool_calls is UNSET and turn.refusal is UNSET:
            # Reasoning with nothing it led to: no provider takes a turn of thinking alone.
            self._notes.extend(self._turn_paths)
            return
        self.messages.append(turn)

    def _assistant_text(self, item: ItemIn, path: str) -> None:
        turn = self._open(path)
        texts: list[str] = []
        content = item.content
        if isinstance(content, str):
            texts.append(content)
        for k, part in enumerate(content if isinstance(content, list) else ()):
            if part.type in ("output_text", "input_text") and isinstance(part.text, str):
                texts.append(part.text)
            elif part.type == "refusal" and isinstance(part.refusal, str):
                turn.refusal = (turn.refusal or "") + part.refusal
            else:
                raise _refuse(f"{path}.content[{k}].type", f"'{part.type[:40]}' is not an assistant content part.")
        if texts:
            turn.content = (turn.content if isinstance(turn.content, str) else "") + "".join(texts)

    def _tool_call(self, item: ItemIn, path: str) -> None:
        call_id = _required(item.call_id, f"{path}.call_id")
        name = _required(item.name, f"{path}.name")
        if isinstance(item.namespace, str) and item.namespace:
            name = f"{item.namespace}{NAMESPACE_SEPARATOR}{name}"
        elif name not in self._origins:
            # A call echoed without its namespace: the one offered tool of that name, so the target sees
            # the call it made.
            matches = [flat for flat, origin in self._origins.items() if origin.name == name]
            name = matches[0] if len(matches) == 1 else name
        if item.type == "custom_tool_call":
            arguments = encoder.encode({"input": item.input if isinstance(item.input, str) else ""}).decode()
        else:
            arguments = item.arguments if isinstance(item.arguments, str) else ""
        turn = self._open(path)
        calls = turn.tool_calls if isinstance(turn.tool_calls, list) else []
        calls.append(ToolCall(id=call_id, function=FunctionCall(name=name, arguments=arguments)))
        turn.tool_calls = calls

    def _reasoning(self, item: ItemIn, path: str) -> None:
        sealed = item.encrypted_content
        if isinstance(sealed, str) and sealed:
            turn = self._open(path)
            details = turn.reasoning_details if isinstance(turn.reasoning_details, list) else []
            turn.reasoning_details = details + unseal(sealed, f"{path}.encrypted_content")
        elif item.summary:
            # Thinking text without the provider's signature: no translated target accepts it back
            # (Anthropic refuses unsigned thinking), so it is left out, and said.
            self._notes.append(f"{path}.summary")


def _required(value: str | UnsetType, param: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"Missing required parameter: '{param}'.", param=param,
                             code="missing_required_parameter")
    return value


def _content(content: str | list[ContentIn] | UnsetType | None, path: str) -> str | list[ContentPart]:
    """Input content as chat content: text stays a string when it is all text."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRequest(f"Missing required parameter: '{path}'.", param=path,
                             code="missing_required_parameter")
    parts = [_part(part, f"{path}[{k}]") for k, part in enumerate(content)]
    if all(part.type == "text" for part in parts):
        return "".join(part.text for part in parts if isinstance(part.text, str))
    return parts


def _part(part: ContentIn, path: str) -> ContentPart:
    match part.type:
        case "input_text" | "output_text" | "text":
            return ContentPart(type="text", text=_required(part.text, f"{path}.text"))
        case "input_image":
            if not isinstance(part.image_url, str):
                raise _refuse(f"{path}.file_id", "(an uploaded file) cannot be read by the gateway: send "
                              "'image_url' as a URL or a data: URL.")
            detail = part.detail if isinstance(part.detail, str) else UNSET
            return ContentPart(type="image_url", image_url=ImageURL(url=part.image_url, detail=detail))
        case "input_file":
            if isinstance(part.file_url, str):
                raise _refuse(f"{path}.file_url", "is not translated: send the file inline as 'file_data'.")
            return ContentPart(type="file", file=FileData(
                filename=part.filename if isinstance(part.filename, str) else UNSET,
                file_data=part.file_data if isinstance(part.file_data, str) else UNSET,
                file_id=part.file_id if isinstance(part.file_id, str) else UNSET))
        case kind:
            raise _refuse(f"{path}.type", f"'{kind[:40]}' is not an input content part this gateway translates.")


# ------------------------------------------------------------------------------- encrypted reasoning
# A provider's reasoning state (Anthropic's thinking signatures and redacted thinking, Gemini's thought
# signatures) rides in ``encrypted_content`` as the adapters' own ``reasoning_details`` entries:
# "gw1." + base64url(JSON {"v": 1, "details": [...]}). It is sealed, not encrypted: the provider checks
# its own signatures, so a changed entry is refused upstream. The prefix names the version; a new shape
# gets "gw2." and this module keeps reading the old one.

SEAL_PREFIX = "gw1."


class _Sealed(msgspec.Struct):
    v: Literal[1]
    details: list[dict[str, Any]]


_sealed_decoder = msgspec.json.Decoder(_Sealed)


def seal(details: list[dict[str, Any]]) -> str:
    return SEAL_PREFIX + base64.urlsafe_b64encode(encoder.encode(_Sealed(v=1, details=details))).decode()


def unseal(data: str, param: str) -> list[dict[str, Any]]:
    """The reasoning_details ``seal`` made; anything else (another server's encrypted content, a changed
    string) is a 400 naming the item."""
    if data.startswith(SEAL_PREFIX):
        try:
            return _sealed_decoder.decode(base64.urlsafe_b64decode(data.removeprefix(SEAL_PREFIX))).details
        except (binascii.Error, ValueError, msgspec.DecodeError):
            pass
    raise InvalidRequest("This encrypted_content was not made by this gateway, or was changed: send reasoning "
                         "items back exactly as the gateway returned them.", param=param,
                         code="invalid_encrypted_content")

