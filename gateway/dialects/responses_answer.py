"""The common chat answer as a Responses answer: a chat.completion as a Response object, chat chunks as the
Responses event stream. The request side, and the usage example, are in ``responses.py``."""

from __future__ import annotations

import json
import time
from typing import Any, Literal, NamedTuple

import msgspec
from msgspec import UNSET, UnsetType

from gateway.dialects.answers import (
    ChunkReader,
    FrameError,
    Said,
    SaidAnnotation,
    SaidCall,
    decode_completion,
    read_usage,
)
from gateway.dialects.responses import ResponsesCall, seal
from gateway.dialects.responses_wire import (
    CustomToolCallOut,
    FunctionCallOut,
    ImageGenerationCallOut,
    IncompleteDetails,
    InputTokensDetails,
    MessageOut,
    OutputItem,
    OutputText,
    OutputTokensDetails,
    ReasoningOut,
    Refusal,
    Response,
    ResponseError,
    ResponseUsage,
    SearchAction,
    SummaryText,
    WebSearchCallOut,
)
from gateway.errors import GatewayError, UpstreamError
from gateway.sse import encode_event
from gateway.wire.openai import CompletionTokensDetails, PromptTokensDetails, Usage, encoder

# ----------------------------------------------------------------------------------------- the answer


class Answer(NamedTuple):
    body: bytes  # the Response object for the client
    stored_output: list[bytes]  # its output items as stored: encrypted_content always kept


def _item_id(prefix: str, resp_id: str, index: int) -> str:
    # Output item ids come from their response's: unique across responses, so item_reference finds them.
    return f"{prefix}_{resp_id.removeprefix('resp_')}_{index}"


def _shell(call: ResponsesCall, *, resp_id: str, model: str, created_at: int,
           gateway: dict[str, Any] | None) -> Response:
    """The Response object before any output: the request's settings echoed back, as OpenAI does."""
    req = call.request
    text: dict[str, Any] = {"format": {"type": "text"}}
    if isinstance(req.text, msgspec.Struct):
        if not isinstance(req.text.format, UnsetType):
            text["format"] = msgspec.to_builtins(req.text.format)
        if isinstance(req.text.verbosity, str):
            text["verbosity"] = req.text.verbosity
    reasoning = req.reasoning
    return Response(
        id=resp_id, created_at=created_at, status="in_progress", model=model, output=[],
        instructions=req.instructions if isinstance(req.instructions, str) else None,
        max_output_tokens=req.max_output_tokens if isinstance(req.max_output_tokens, int) else None,
        parallel_tool_calls=req.parallel_tool_calls is not False,
        previous_response_id=req.previous_response_id if isinstance(req.previous_response_id, str) else None,
        reasoning={"effort": reasoning.effort or None, "summary": reasoning.summary or reasoning.generate_summary
                   or None} if isinstance(reasoning, msgspec.Struct) else None,
        service_tier=req.service_tier if isinstance(req.service_tier, str) else None,
        store=call.store,
        temperature=req.temperature if isinstance(req.temperature, float | int) else None,
        text=text,
        tool_choice=req.tool_choice if isinstance(req.tool_choice, str | dict) else "auto",
        tools=req.tools if isinstance(req.tools, list) else [],
        top_p=req.top_p if isinstance(req.top_p, float | int) else None,
        truncation=req.truncation if isinstance(req.truncation, str) else "disabled",
        user=req.user if isinstance(req.user, str) else None,
        metadata=req.metadata if isinstance(req.metadata, dict) else {},
        gateway=gateway if gateway else UNSET,
    )


def _status(finish_reason: str | None) -> tuple[Literal["completed", "incomplete"], IncompleteDetails | None]:
    if finish_reason == "length":
        return "incomplete", IncompleteDetails(reason="max_output_tokens")
    if finish_reason == "content_filter":
        return "incomplete", IncompleteDetails(reason="content_filter")
    return "completed", None


def responseread_usage(usage: Usage | None) -> ResponseUsage | None:
    """Chat usage as Responses usage; the counts mean the same (input includes cached tokens)."""
    if usage is None:
        return None
    prompt = usage.prompt_tokens_details
    completion = usage.completion_tokens_details
    reasoning = completion.reasoning_tokens if isinstance(completion, CompletionTokensDetails) else 0
    if not reasoning and isinstance(usage.reasoning_tokens, int):
        reasoning = usage.reasoning_tokens
    return ResponseUsage(
        input_tokens=usage.prompt_tokens,
        input_tokens_details=InputTokensDetails(
            cached_tokens=prompt.cached_tokens if isinstance(prompt, PromptTokensDetails) else 0,
            cache_write_tokens=prompt.cache_write_tokens
            if isinstance(prompt, PromptTokensDetails) and isinstance(prompt.cache_write_tokens, int) else 0),
        output_tokens=usage.completion_tokens,
        output_tokens_details=OutputTokensDetails(reasoning_tokens=reasoning),
        total_tokens=usage.total_tokens,
        cost_usd_total=usage.cost_usd_total, cost_usd_input=usage.cost_usd_input,
        cost_usd_cached_input=usage.cost_usd_cached_input, cost_usd_output=usage.cost_usd_output)


def _call_item(call: ResponsesCall, item_id: str, call_id: str, flat: str, arguments: str,
               status: Literal["in_progress", "completed", "incomplete"]) -> FunctionCallOut | CustomToolCallOut:
    """The model's tool call as the client offered the tool: a namespaced function or a custom tool.
    ``item_id`` is the one ``_call_item_id`` gives."""
    origin = call.tools.get(flat)
    if origin is None:
        return FunctionCallOut(id=item_id, call_id=call_id, name=flat, arguments=arguments, status=status)
    namespace = origin.namespace if origin.namespace is not None else UNSET
    if origin.kind == "function":
        return FunctionCallOut(id=item_id, call_id=call_id, name=origin.name, arguments=arguments,
                               status=status, namespace=namespace)
    return CustomToolCallOut(id=item_id, call_id=call_id, name=origin.name,
                             input=_custom_input(arguments), status=status, namespace=namespace)


def _call_item_id(call: ResponsesCall, resp_id: str, index: int, flat: str) -> str:
    origin = call.tools.get(flat)
    return _item_id("ctc" if origin is not None and origin.kind == "custom" else "fc", resp_id, index)


def _custom_input(arguments: str) -> str:
    """A custom tool's text from the one-string function it was offered as; arguments that are not that
    object are given as they came (the client's tool then says what is wrong with them)."""
    try:
        value = json.loads(arguments) if arguments else {}
    except ValueError:
        return arguments
    text = value.get("input") if isinstance(value, dict) else None
    return text if isinstance(text, str) else arguments


def _reasoning_item(call: ResponsesCall, item_id: str, text: str, details: list[dict[str, Any]],
                    *, stored: bool = False) -> ReasoningOut:
    summary = [SummaryText(text=text)] if call.summary and text else []
    sealed = seal(details) if details and (stored or call.include_encrypted) else None
    return ReasoningOut(id=item_id, summary=summary, encrypted_content=sealed)


def _url_citations(annotations: list[SaidAnnotation] | None) -> list[dict[str, Any]]:
    """Chat's url_citation annotations as the Responses output_text's (the same members, one level up)."""
    return [{"type": "url_citation", "start_index": cite.start_index, "end_index": cite.end_index,
             "url": cite.url, "title": cite.title or ""}
            for annotation in annotations or () if annotation.type == "url_citation"
            and (cite := annotation.url_citation) is not None]


def _search_item(item_id: str, query: str, status: Literal["in_progress", "completed"]) -> WebSearchCallOut:
    return WebSearchCallOut(id=item_id, status=status, action=SearchAction(query=query))


def response_from_completion(body: bytes, call: ResponsesCall, *, resp_id: str, model: str,
                             created_at: int | None = None, gateway: dict[str, Any] | None = None) -> Answer:
    """A non-streamed chat.completion (as the pipeline returns it) as a Response object. ``model`` is the
    name the client sees; ``gateway`` the routing report and notes (the chat answer's ``metadata``)."""
    completion = decode_completion(body)
    choice = next((c for c in completion.choices or () if c.index == 0), None)
    if choice is None or choice.message is None:
        raise UpstreamError("The model answered with no choice.", status=502, error_type="upstream_error")
    said: Said = choice.message
    response = _shell(call, resp_id=resp_id, model=model, created_at=created_at or int(time.time()),
                      gateway=gateway)
    response.status, response.incomplete_details = _status(choice.finish_reason)
    item_status: Literal["completed", "incomplete"] = response.status
    output: list[OutputItem] = []
    stored: list[OutputItem] = []
    text = said.reasoning or said.reasoning_content or ""
    details = said.reasoning_details or []
    if text or details:
        item_id = _item_id("rs", resp_id, 0)
        output.append(_reasoning_item(call, item_id, text, details))
        stored.append(_reasoning_item(call, item_id, text, details, stored=True))
    for query in said.web_search_queries or ():
        # The searches went before the answer that cites them, as OpenAI lists them.
        search = _search_item(_item_id("ws", resp_id, len(output)), query, "completed")
        output.append(search)
        stored.append(search)
    parts: list[OutputText | Refusal] = []
    if said.content:
        parts.append(OutputText(text=said.content, annotations=_url_citations(said.annotations)))
    if said.refusal:
        parts.append(Refusal(refusal=said.refusal))
    if parts:
        message = MessageOut(id=_item_id("msg", resp_id, len(output)), status=item_status, content=parts)
        output.append(message)
        stored.append(message)
    for tool_call in said.tool_calls or ():
        item = _tool_call_item(call, resp_id, len(output), tool_call)
        output.append(item)
        stored.append(item)
    for image in said.images or ():
        made = _image_item(_item_id("ig", resp_id, len(output)), image)
        output.append(made)
        stored.append(made)
    response.output = output
    response.usage = responseread_usage(read_usage(completion.usage))
    return Answer(encoder.encode(response), [encoder.encode(item) for item in stored])


# The formats OpenAI's image tool reports; another media type is given without ``output_format``.
_IMAGE_FORMATS = {"image/png": "png", "image/webp": "webp", "image/jpeg": "jpeg", "image/gif": "gif"}


def _image_item(item_id: str, image: dict[str, Any]) -> ImageGenerationCallOut:
    """An image of chat's ``images`` (a data URL, as the Gemini adapter gives it) as the item OpenAI's image
    tool answers with: its base64 in ``result``."""
    url = image.get("image_url", {}).get("url") if isinstance(image.get("image_url"), dict) else None
    header, sep, data = url.partition(",") if isinstance(url, str) else ("", "", "")
    if not sep or not header.startswith("data:") or not header.endswith(";base64"):
        raise UpstreamError("The model answered with an image that is not inline data, which a Response "
                            "cannot hold.", status=502, error_type="upstream_error")
    media_type = header.removeprefix("data:").removesuffix(";base64")
    return ImageGenerationCallOut(id=item_id, status="completed", result=data,
                                  output_format=_IMAGE_FORMATS.get(media_type, UNSET))


def _tool_call_item(call: ResponsesCall, resp_id: str, index: int,
                    tool_call: SaidCall) -> FunctionCallOut | CustomToolCallOut:
    fn = tool_call.function
    if not tool_call.id or fn is None or not fn.name:
        raise UpstreamError("The model answered with a tool call without its id and name.", status=502,
                            error_type="upstream_error")
    return _call_item(call, _call_item_id(call, resp_id, index, fn.name), tool_call.id, fn.name, fn.arguments or "",
                      "completed")


# ----------------------------------------------------------------------------------------- the stream

_Kind = Literal["reasoning", "message", "tool"]


class ResponsesStream(ChunkReader):
    """Chat chunks, as the pipeline relays them, in; the Responses event family out, one upstream chunk at
    a time, each event numbered by ``sequence_number``.

    One output item is open at a time: a delta of another kind (reasoning, text, a new tool call) closes
    it first, with its ``.done`` events. Reasoning entries that arrive while no reasoning item is open
    (Gemini's signatures ride on tool calls; Anthropic's redacted thinking comes whole) are kept for one
    reasoning item at the end. The finish waits for the usage chunk or ``[DONE]``, so the last event
    carries the real counts. A custom tool's input is given whole when its call ends: it arrives as the
    JSON arguments of the function it was offered as, and only the complete object says what its text is.
    """

    def __init__(self, call: ResponsesCall, *, resp_id: str, model: str, created_at: int | None = None,
                 gateway: dict[str, Any] | None = None) -> None:
        super().__init__()
        self._call = call
        self._response = _shell(call, resp_id=resp_id, model=model, created_at=created_at or int(time.time()),
                                gateway=gateway)
        self._seq = 0
        self._items: list[tuple[OutputItem, OutputItem]] = []  # (client's, stored) per finished item
        self._open: _Kind | None = None
        self._item_id = ""
        self._text = ""  # the open item's text: reasoning summary, output_text/refusal part, tool arguments
        self._details: list[dict[str, Any]] = []  # the open reasoning item's entries
        self._loose: list[dict[str, Any]] = []
        self._parts: list[OutputText | Refusal] = []  # the open message's finished parts
        self._annotations: list[dict[str, Any]] = []  # the open output_text part's
        # Chat's annotations index the whole answer's text; a Response's, their output_text part's. A search
        # streamed between two texts splits the answer into two messages, so the open part's first
        # character in the answer is what turns one into the other.
        self._chars = 0
        self._part_start = 0
        self._part: Literal["text", "refusal"] | None = None
        self._tool_index = -1
        self._tool_id = ""
        self._tool_name = ""
        self._tools_seen: set[int] = set()

    @property
    def response(self) -> Response:
        """The Response as far as it has gone (complete once ``done``)."""
        return self._response

    @property
    def stored_output(self) -> list[bytes]:
        return [encoder.encode(stored) for _, stored in self._items]

    def start(self) -> list[bytes]:
        return [self._event("response.created", response=self._response),
                self._event("response.in_progress", response=self._response)]

    def fail(self, exc: GatewayError) -> bytes:
        """A failure after the stream began (the pipeline cannot fall back any more): response.failed."""
        return self._failed("rate_limit_exceeded" if exc.status_code == 429 else "server_error", exc.message)

    # -- frames

    def _error(self, error: FrameError) -> list[bytes]:
        code = "rate_limit_exceeded" if error.type == "rate_limit_error" else "server_error"
        return [self._failed(code, error.message)]

    def _cut(self, message: str) -> list[bytes]:
        return [self._failed("server_error", message)]

    def _said(self, said: Said) -> list[bytes]:
        out: list[bytes] = []
        reasoning = said.reasoning or said.reasoning_content  # the adapters set both to the same text
        if reasoning:
            out += self._reasoning_text(reasoning)
        if said.reasoning_details:
            (self._details if self._open == "reasoning" else self._loose).extend(said.reasoning_details)
        if said.content:
            out += self._message_text("text", said.content)
        if said.refusal:
            out += self._message_text("refusal", said.refusal)
        for annotation in _url_citations(said.annotations):
            out += self._annotation(annotation)
        for query in said.web_search_queries or ():
            out += self._search(query)
        for tool_call in said.tool_calls or ():
            out += self._tool_call(tool_call)
        for image in said.images or ():
            out += self._image(image)
        return out

    def _image(self, image: dict[str, Any]) -> list[bytes]:
        """An image arrives whole: its item is added and done at once."""
        out = self._close_item()
        index = len(self._items)
        item = _image_item(self._next_id("ig"), image)
        self._items.append((item, item))
        return [*out, self._event("response.output_item.added", output_index=index, item=item),
                self._event("response.output_item.done", output_index=index, item=item)]

    def _annotation(self, annotation: dict[str, Any]) -> list[bytes]:
        """A citation of the text streamed so far: it belongs to the open output_text part (opened if a
        citation comes first)."""
        out = self._message_text("text", "") if self._part != "text" else []
        shift = self._part_start
        annotation = {**annotation, "start_index": max(annotation["start_index"] - shift, 0),
                      "end_index": max(annotation["end_index"] - shift, 0)}
        out.append(self._event("response.output_text.annotation.added", **self._where(),
                               annotation_index=len(self._annotations), annotation=annotation))
        self._annotations.append(annotation)
        return out

    def _search(self, query: str) -> list[bytes]:
        """A search the upstream ran arrives whole (its query once known): its item goes through every
        state at once."""
        out = self._close_item()
        index = len(self._items)
        item_id = self._next_id("ws")
        done = _search_item(item_id, query, "completed")
        self._items.append((done, done))
        out.append(self._event("response.output_item.added", output_index=index,
                               item=_search_item(item_id, query, "in_progress")))
        for state in ("in_progress", "searching", "completed"):
            out.append(self._event(f"response.web_search_call.{state}", item_id=item_id, output_index=index))
        return [*out, self._event("response.output_item.done", output_index=index, item=done)]

    def _reasoning_text(self, text: str) -> list[bytes]:
        out: list[bytes] = []
        if self._open != "reasoning":
            out += self._open_item("reasoning", ReasoningOut(id=self._next_id("rs"), summary=[]))
            if self._call.summary:
                out.append(self._event("response.reasoning_summary_part.added", item_id=self._item_id,
                                       output_index=len(self._items), summary_index=0,
                                       part={"type": "summary_text", "text": ""}))
        self._text += text
        if self._call.summary:
            out.append(self._event("response.reasoning_summary_text.delta", item_id=self._item_id,
                                   output_index=len(self._items), summary_index=0, delta=text))
        return out

    def _message_text(self, part: Literal["text", "refusal"], text: str) -> list[bytes]:
        out: list[bytes] = []
        if self._open != "message":
            out += self._open_item("message", MessageOut(id=self._next_id("msg"), status="in_progress", content=[]))
        if self._part != part:
            out += self._close_part()
            self._part = part
            self._part_start = self._chars
            empty = {"type": "output_text", "text": "", "annotations": [], "logprobs": []} if part == "text" \
                else {"type": "refusal", "refusal": ""}
            out.append(self._event("response.content_part.added", **self._where(), part=empty))
        self._text += text
        if part == "text":
            self._chars += len(text)
            out.append(self._event("response.output_text.delta", **self._where(), delta=text, logprobs=[]))
        else:
            out.append(self._event("response.refusal.delta", **self._where(), delta=text))
        return out

    def _tool_call(self, tool_call: SaidCall) -> list[bytes]:
        out: list[bytes] = []
        fn = tool_call.function
        arguments = fn.arguments if fn is not None and fn.arguments else ""
        if self._open != "tool" or tool_call.index != self._tool_index:
            if tool_call.index in self._tools_seen:
                raise UpstreamError("The model streamed arguments for a tool call after the next one had started.",
                                    status=502, error_type="upstream_error")
            if not tool_call.id or fn is None or not fn.name:
                raise UpstreamError("The model started a tool call without its id and name.", status=502,
                                    error_type="upstream_error")
            out += self._close_item()  # before the new call's id and name replace the open one's
            self._tool_index, self._tool_id, self._tool_name = tool_call.index, tool_call.id, fn.name
            self._tools_seen.add(tool_call.index)
            item_id = _call_item_id(self._call, self._response.id, len(self._items), fn.name)
            out += self._open_item("tool", _call_item(self._call, item_id, tool_call.id, fn.name, "", "in_progress"))
        self._text += arguments
        if arguments and self._is_function():
            out.append(self._event("response.function_call_arguments.delta", item_id=self._item_id,
                                   output_index=len(self._items), delta=arguments))
        return out

    def _is_function(self) -> bool:
        origin = self._call.tools.get(self._tool_name)
        return origin is None or origin.kind == "function"

    # -- items

    def _where(self) -> dict[str, Any]:
        return {"item_id": self._item_id, "output_index": len(self._items), "content_index": len(self._parts)}

    def _next_id(self, prefix: str) -> str:
        return _item_id(prefix, self._response.id, len(self._items))

    def _open_item(self, kind: _Kind, item: OutputItem) -> list[bytes]:
        """``item`` as added (its id already the one it keeps); the open item, if any, closes first."""
        out = self._close_item()
        self._open, self._text, self._item_id = kind, "", item.id
        return [*out, self._event("response.output_item.added", output_index=len(self._items), item=item)]

    def _close_part(self) -> list[bytes]:
        if self._part is None:
            return []
        where, text = self._where(), self._text
        self._text = ""
        part: OutputText | Refusal
        if self._part == "text":
            part = OutputText(text=text, annotations=self._annotations)
            self._annotations = []
            done = self._event("response.output_text.done", **where, text=text, logprobs=[])
        else:
            part = Refusal(refusal=text)
            done = self._event("response.refusal.done", **where, refusal=text)
        self._parts.append(part)
        self._part = None
        return [done, self._event("response.content_part.done", **where, part=part)]

    def _close_item(self, *, cut: bool = False) -> list[bytes]:
        """The open item's closing events; ``cut``: the stream failed, so it is incomplete."""
        kind = self._open
        if kind is None:
            return []
        out: list[bytes] = []
        index = len(self._items)
        status: Literal["completed", "incomplete"] = "incomplete" if cut else _status(self._finish)[0]
        item: OutputItem
        stored: OutputItem
        if kind == "reasoning":
            if self._call.summary and self._text:
                out.append(self._event("response.reasoning_summary_text.done", item_id=self._item_id,
                                       output_index=index, summary_index=0, text=self._text))
                out.append(self._event("response.reasoning_summary_part.done", item_id=self._item_id,
                                       output_index=index, summary_index=0,
                                       part={"type": "summary_text", "text": self._text}))
            item = _reasoning_item(self._call, self._item_id, self._text, self._details)
            stored = _reasoning_item(self._call, self._item_id, self._text, self._details, stored=True)
            self._details = []
        elif kind == "message":
            out += self._close_part()
            item = stored = MessageOut(id=self._item_id, status=status, content=self._parts)
            self._parts = []
        else:
            item = stored = _call_item(self._call, self._item_id, self._tool_id, self._tool_name, self._text,
                                       "incomplete" if cut else "completed")
            if isinstance(item, CustomToolCallOut):
                out.append(self._event("response.custom_tool_call_input.delta", item_id=self._item_id,
                                       output_index=index, delta=item.input))
                out.append(self._event("response.custom_tool_call_input.done", item_id=self._item_id,
                                       output_index=index, input=item.input))
            else:
                out.append(self._event("response.function_call_arguments.done", item_id=self._item_id,
                                       output_index=index, arguments=self._text))
        self._open, self._text = None, ""
        self._items.append((item, stored))
        return [*out, self._event("response.output_item.done", output_index=index, item=item)]

    def _end(self) -> list[bytes]:
        out = self._close_item()
        if self._loose:
            self._details, self._loose = self._loose, []
            out += self._open_item("reasoning", ReasoningOut(id=self._next_id("rs"), summary=[]))
            out += self._close_item()
        self.done = True
        response = self._response
        response.status, response.incomplete_details = _status(self._finish)
        response.output = [item for item, _ in self._items]
        response.usage = responseread_usage(self._usage)
        name = "response.completed" if response.status == "completed" else "response.incomplete"
        return [*out, self._event(name, response=response)]

    def _failed(self, code: str, message: str) -> bytes:
        """The open item closed as incomplete, then response.failed: one chunk, so the route can yield it
        as it does any frame."""
        closing = self._close_item(cut=True)
        self.done = True
        response = self._response
        response.status = "failed"
        response.error = ResponseError(code=code, message=message)
        response.output = [item for item, _ in self._items]
        response.usage = responseread_usage(self._usage)
        return b"".join([*closing, self._event("response.failed", response=response)])

    def _event(self, kind: str, **members: Any) -> bytes:
        members["type"] = kind
        members["sequence_number"] = self._seq
        self._seq += 1
        return encode_event(kind, encoder.encode(members))
