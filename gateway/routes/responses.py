"""The OpenAI Responses API for any model: ``POST /v1/responses`` (plain ASGI, the hot path) and the stored
responses: ``GET``/``DELETE /v1/responses/{id}``, ``GET /v1/responses/{id}/input_items``.

``POST`` runs the one request lifecycle (``routes/lifecycle.py``: admission, the pipeline with its retries
and fallback, disconnect detection, one usage record with mode "responses"); this module supplies the
dialect. A target whose server speaks the Responses API gets the client's body with only ``model``
rewritten (``providers/openai_responses.py``); every other target gets the common chat call
``gateway/dialects/responses.py`` made of it, and its answer is translated back. Errors are OpenAI's
envelope; a stream that fails once started ends with ``response.failed``.

Whoever answered, a response made with ``store`` not false is kept (``responses_store.py``) for its key, so
``previous_response_id``, ``item_reference`` and these GET routes behave the same whatever the target.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
from litestar import Request, Response, delete, get
from litestar.params import FromPath

from gateway.accounting import Mode
from gateway.dialects.responses import ResponsesCall, parse_responses
from gateway.dialects.responses_answer import ResponsesStream, response_from_completion
from gateway.errors import GatewayError, InvalidRequest, RouteNotFound
from gateway.governance import Principal
from gateway.pipeline import ChatResult
from gateway.providers.base import Adapter
from gateway.providers.openai_responses import ResponsesRelay
from gateway.responses_store import ResponseStore, item_ids, items_of
from gateway.router import Deployment, Plan
from gateway.routes.asgi import Receive, Scope, Send, header
from gateway.routes.context import gateway_state
from gateway.routes.lifecycle import PROJECT_HEADER, Parsed, serve
from gateway.state import GatewayState
from gateway.store import StoredResponse
from gateway.wire.openai import GATEWAY_FIELDS, encoder, raw_object_decoder

JSON = "application/json"


class ResponseIds:
    """Response ids unique across workers and restarts without a syscall per request: a random per-process
    prefix and a counter. Never derived from the request id, which a client may choose."""

    def __init__(self) -> None:
        self._prefix = "resp_" + secrets.token_hex(8)
        self._next = itertools.count(1).__next__

    def new(self) -> str:
        return f"{self._prefix}{self._next():010x}"


IDS = ResponseIds()


@dataclass
class Turn:
    """One Responses request on its way: what answering and storing it need."""

    call: ResponsesCall
    key_id: str
    response_id: str
    body: bytes
    past: list[bytes] | None  # the conversation previous_response_id names, for a target sent the body
    relay: ResponsesRelay | None = None

    def choose(self, deployment: Deployment) -> Adapter | None:
        """A target whose server speaks Responses is forwarded the client's body; the others are translated."""
        provider = deployment.provider
        if provider.kind != "openai" or not provider.responses:
            return None
        raw = {name: value for name, value in raw_object_decoder.decode(self.body).items()
               if name not in GATEWAY_FIELDS}
        if self.past is not None:
            # The id is the gateway's, and this target may not be the one that answered it: the target gets
            # the conversation the id stands for, as items.
            del raw["previous_response_id"]
            raw["input"] = msgspec.Raw(b"[" + b",".join([*self.past, *self.call.input_items]) + b"]")
        self.relay = ResponsesRelay(raw)
        return self.relay

    def forwarded(self, deployment: Deployment) -> bool:
        """Whether the target that answered was sent the body (``choose`` made its adapter)."""
        return self.relay is not None and deployment.provider.responses


class ResponsesDialect:
    """Responses in and out; ``gateway/dialects/responses.py`` translates for targets that need it."""

    mode: Mode = "responses"
    missing_project = f"send 'project_id' in the body or the '{PROJECT_HEADER.decode()}' header"

    def __init__(self, responses: ResponseStore, *, forwards: bool) -> None:
        self.responses = responses
        self.forwards = forwards  # some provider serves Responses itself: a target may be sent the body

    def principal(self, state: GatewayState, scope: Scope) -> Principal:
        return state.keys.authenticate(header(scope, b"authorization"))

    async def parse(self, body: bytes, scope: Scope, principal: Principal) -> Parsed:
        history = self.responses.history(principal.key_id)
        call = await parse_responses(body, history)
        previous = call.request.previous_response_id
        # Resolved already by parse_responses (a miss is its 400), so read again from this worker's cache; only
        # a target that is sent the body needs the conversation as items.
        past = await history.conversation(previous) if self.forwards and isinstance(previous, str) else None
        turn = Turn(call=call, key_id=principal.key_id, response_id=IDS.new(), body=body, past=past)
        project = call.request.project_id
        return Parsed(call=call.chat, requested_model=call.model, body=body, detail=turn, choose=turn.choose,
                      project=project if isinstance(project, str) else header(scope, PROJECT_HEADER))

    def error(self, exc: GatewayError, rid: str) -> tuple[bytes, dict[str, str]]:
        return exc.body(), exc.headers

    def answer(self, parsed: Parsed, plan: Plan, result: ChatResult, rid: str) -> tuple[bytes, dict[str, str]]:
        assert result.body is not None
        turn: Turn = parsed.detail
        if turn.forwarded(result.deployment):
            self._keep_forwarded(turn, result.deployment, result.body)
            return result.body, result.headers
        answer = response_from_completion(result.body, turn.call, resp_id=turn.response_id,
                                          model=result.deployment.key, gateway=result.metadata)
        self._keep(turn, result.deployment, turn.response_id, answer.body, answer.stored_output)
        return answer.body, result.headers

    def stream(self, parsed: Parsed, plan: Plan, result: ChatResult,
               rid: str) -> tuple[AsyncIterator[bytes], dict[str, str]]:
        assert result.chunks is not None
        turn: Turn = parsed.detail
        if turn.forwarded(result.deployment):
            return self._relayed(turn, result), result.headers
        stream = ResponsesStream(turn.call, resp_id=turn.response_id, model=result.deployment.key,
                                 gateway=result.metadata)
        return self._translated(turn, result, stream), result.headers

    async def _relayed(self, turn: Turn, result: ChatResult) -> AsyncIterator[bytes]:
        """The upstream's own events; the pipeline's relay frames a failure as ``response.failed``."""
        assert result.chunks is not None and turn.relay is not None
        async for frame in result.chunks:
            yield frame
        if turn.relay.final is not None:
            self._keep_forwarded(turn, result.deployment, turn.relay.final)

    async def _translated(self, turn: Turn, result: ChatResult, stream: ResponsesStream) -> AsyncIterator[bytes]:
        """Chat chunks in, Responses events out, per chunk; closing the chunks (and settling) is the
        lifecycle's job."""
        assert result.chunks is not None
        try:
            yield b"".join(stream.start())
            async for data in result.chunks:
                frames = stream.feed(data)
                if frames:
                    yield b"".join(frames)
            frames = stream.close()
            if frames:
                yield b"".join(frames)
        except GatewayError as exc:  # the model's stream could not be translated: the client hears why
            yield stream.fail(exc)
            return
        if stream.done and stream.response.status != "failed":
            self._keep(turn, result.deployment, turn.response_id, encoder.encode(stream.response),
                       stream.stored_output)

    def _keep_forwarded(self, turn: Turn, deployment: Deployment, response: bytes) -> None:
        """A forwarded answer is stored under the upstream's own id, with the upstream's output items."""
        if not turn.call.store:
            return
        try:
            found = _output_decoder.decode(response)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return  # relayed as it came; nothing readable to keep
        self._keep(turn, deployment, found.id or turn.response_id, response, [bytes(i) for i in found.output])

    def _keep(self, turn: Turn, deployment: Deployment, response_id: str, response: bytes,
              output: list[bytes]) -> None:
        """Store the finished response (unless the client said ``store: false``); the write is behind."""
        if not turn.call.store:
            return
        previous = turn.call.request.previous_response_id
        self.responses.put(StoredResponse(
            id=response_id, key_id=turn.key_id, created_at=time.time(),
            model=f"{deployment.provider.name}/{deployment.upstream}",
            previous_response_id=previous if isinstance(previous, str) else None, response=response,
            input_items=_array(turn.call.input_items), output_items=_array(output),
            item_ids=item_ids(turn.call.input_items) + item_ids(output)))


async def create_response(state: GatewayState, scope: Scope, receive: Receive, send: Send, rid: str) -> None:
    """POST /v1/responses, as plain ASGI (see routes/asgi.py for why)."""
    forwards = any(p.responses for p in state.runtime.config.providers.values())
    await serve(ResponsesDialect(state.responses, forwards=forwards), state, scope, receive, send, rid)


# ----------------------------------------------------------------------------------- stored responses


@get("/v1/responses/{response_id:str}")
async def retrieve_response(request: Request[Any, Any, Any], response_id: FromPath[str]) -> Response[bytes]:
    if request.query_params.get("stream") in ("true", "1"):
        raise InvalidRequest("Replaying a stored response as a stream is not served: leave 'stream' out.",
                             param="stream")
    row = await _stored(request, response_id)
    return Response(row.response, media_type=JSON)


@delete("/v1/responses/{response_id:str}", status_code=200)
async def delete_response(request: Request[Any, Any, Any], response_id: FromPath[str]) -> Response[bytes]:
    state = gateway_state(request)
    principal = state.keys.authenticate(request.headers.get("authorization"))
    if not await state.responses.delete(response_id, principal.key_id):
        raise _not_found(response_id)
    return Response(encoder.encode({"id": response_id, "object": "response", "deleted": True}), media_type=JSON)


class _Page(msgspec.Struct, forbid_unknown_fields=True):
    after: str | None = None
    limit: int = 20
    order: Literal["asc", "desc"] = "desc"


@get("/v1/responses/{response_id:str}/input_items")
async def list_input_items(request: Request[Any, Any, Any], response_id: FromPath[str]) -> Response[bytes]:
    """This response's own input items (not the earlier turns it continued), OpenAI's list shape and paging."""
    page = _page(request)
    row = await _stored(request, response_id)
    items = [(item, _item_id(item)) for item in items_of(row.input_items)]
    if page.order == "desc":
        items.reverse()
    if page.after is not None:
        position = next((i for i, (_, item_id) in enumerate(items) if item_id == page.after), None)
        if position is None:
            raise InvalidRequest(f"No input item with id '{page.after[:64]}' in this response.", param="after")
        items = items[position + 1:]
    shown = items[:page.limit]
    body = b"".join([b'{"object":"list","data":[', b",".join(item for item, _ in shown), b'],"first_id":',
                     encoder.encode(shown[0][1] if shown else None), b',"last_id":',
                     encoder.encode(shown[-1][1] if shown else None), b',"has_more":',
                     b"true" if len(items) > page.limit else b"false", b"}"])
    return Response(body, media_type=JSON)


def _page(request: Request[Any, Any, Any]) -> _Page:
    params = {name: request.query_params.get(name) for name in ("after", "limit", "order")
              if request.query_params.get(name) is not None}
    try:
        page = msgspec.convert(params, _Page, strict=False)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"Invalid query parameter: {exc}.") from None
    if not 1 <= page.limit <= 100:
        raise InvalidRequest("'limit' must be between 1 and 100.", param="limit")
    return page


async def _stored(request: Request[Any, Any, Any], response_id: str) -> StoredResponse:
    state = gateway_state(request)
    principal = state.keys.authenticate(request.headers.get("authorization"))
    row = await state.responses.get(response_id, principal.key_id)
    if row is None:
        raise _not_found(response_id)
    return row


def _not_found(response_id: str) -> RouteNotFound:
    # Another key's response is "not found" too: whether an id exists is not the caller's business.
    return RouteNotFound(f"Response with id '{response_id[:64]}' not found.", param="response_id")


class _Output(msgspec.Struct):
    id: str | None = None
    output: list[msgspec.Raw] = []


_output_decoder = msgspec.json.Decoder(_Output)


def _item_id(item: bytes) -> str | None:
    ids = item_ids([item])
    return ids[0] if ids else None


def _array(items: list[bytes]) -> bytes:
    return b"[" + b",".join(items) + b"]"
