"""One request lifecycle, shared by the routes that speak a dialect (chat, Messages, embeddings…).

Read the body within its size bound, authenticate, parse, admit (rate limits and the budget reservation),
run the plan, then answer or relay the stream while listening for the client leaving; a ``finally``
makes sure the reservation is settled and exactly one usage record written whatever way the request
ends: success, upstream error, a body the adapter cannot read, an exception, or a client that left.
A route supplies only its ``Dialect``: where its key is, how its body parses, and its answer, stream
and error shapes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from gateway import tracing
from gateway.accounting import Meter, Mode, open_meter, record_refusal, worst_cost
from gateway.dialects.chat import ChatCall
from gateway.dialects.embeddings import EmbeddingsCall
from gateway.errors import GatewayError, InvalidRequest
from gateway.governance import Principal
from gateway.pipeline import AdapterChoice, ChatResult
from gateway.router import Plan
from gateway.routes.asgi import ClientGone, Receive, Scope, Send, header, read_body, relay, respond
from gateway.state import GatewayState

PROJECT_HEADER = b"x-gateway-project-id"


@dataclass
class Parsed:
    """A request body as its dialect understood it."""

    call: ChatCall | EmbeddingsCall
    requested_model: str | None
    project: str | None  # the project the request names, if any
    body: bytes
    detail: Any = None  # the dialect's own view of the request, for its answers
    choose: AdapterChoice | None = None  # targets that take the client's dialect as is (see pipeline.py)


class Dialect(Protocol):
    mode: Mode
    missing_project: str  # how to name a project, said when [routing] require_project refuses

    def principal(self, state: GatewayState, scope: Scope) -> Principal: ...

    async def parse(self, body: bytes, scope: Scope, principal: Principal) -> Parsed:
        """The body as the call to run. Async for the one dialect that may have to read earlier turns
        (Responses' previous_response_id); the others never await."""

    def error(self, exc: GatewayError, rid: str) -> tuple[bytes, dict[str, str]]: ...

    def answer(self, parsed: Parsed, plan: Plan, result: ChatResult, rid: str) -> tuple[bytes, dict[str, str]]: ...

    def stream(self, parsed: Parsed, plan: Plan, result: ChatResult, rid: str) -> tuple[AsyncIterator[bytes],
                                                                                         dict[str, str]]: ...


async def serve(dialect: Dialect, state: GatewayState, scope: Scope, receive: Receive, send: Send,
                rid: str) -> None:
    async def fail(exc: GatewayError) -> None:
        body, headers = dialect.error(exc, rid)
        await respond(send, exc.status_code, body, headers)

    try:
        principal = dialect.principal(state, scope)
    except GatewayError as exc:
        await fail(exc)
        return
    runtime = state.runtime  # read once: a reload mid-request does not change this request's config
    meter: Meter | None = None
    try:
        try:
            parsed = await dialect.parse(
                await read_body(receive, int(runtime.config.server.max_body_mb * 1024 * 1024)), scope, principal)
            if tracing.capture_content and isinstance(parsed.call, ChatCall):
                tracing.prompt(parsed.call, dialect.mode)
            project = state.governor.project_for(principal, parsed.project)
            if runtime.config.routing.require_project and not project:
                raise InvalidRequest(f"This gateway requires a project: {dialect.missing_project}.",
                                     param="project_id", code="missing_required_parameter")
            plan = state.pipeline.plan(parsed.call, runtime.table, principal.allows)
            needs = plan.needs
            stream = parsed.call.stream
            meter = await open_meter(
                state.governor, state.usage, principal, project=project, tokens=needs.tokens,
                worst_cost_usd=worst_cost(plan.deployments, needs.prompt_tokens, needs.max_tokens, needs.choices),
                request_id=rid, mode=dialect.mode, stream=stream, requested_model=parsed.requested_model,
                catalog_version=state.catalog.version,
                request_body=parsed.body if runtime.config.logging.store_bodies and not stream else None)
        except ClientGone:
            return
        except GatewayError as exc:
            record_refusal(state.governor, state.usage, principal, exc, request_id=rid, mode=dialect.mode,
                           project=header(scope, PROJECT_HEADER))
            await fail(exc)
            return
        try:
            result = await state.pipeline.run(parsed.call, plan, runtime.table, request_id=rid, meter=meter,
                                              choose=parsed.choose)
        except GatewayError as exc:
            await fail(exc)
            return
        if result.chunks is None:
            try:
                body, headers = dialect.answer(parsed, plan, result, rid)
            except GatewayError as exc:  # the answer could not be put in the dialect's shape (settled already)
                await fail(exc)
                return
            await respond(send, 200, body, headers)
            return
        frames, headers = dialect.stream(parsed, plan, result, rid)
        await relay(send, receive, frames, headers, result.chunks)
    except BaseException as exc:
        if meter is not None:
            # Settled already on every expected path (a second settle does nothing); this catches what
            # no one expected (a bug, a cancellation), so no reservation outlives its request.
            meter.abandon(exc)
        raise
