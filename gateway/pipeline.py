"""Runs one chat call through its plan: retries, fallback, health, and the hand-off to the client.

For each target in the plan: build the provider request, send it, and on a retryable failure (429, 500,
502, 503, 504, 529, connect errors, timeouts) retry with exponential backoff and jitter, honouring
``retry-after`` up to ``routing.retry_after_max_s``; then fall back to the next target. Client errors
(400-class except 408/429) are returned at once: another provider would refuse them too.

Fallback happens only before the first byte reaches the client: once a stream has started, a failure
ends it with an error event (``data: {"error": {...}}``, no ``[DONE]``), which the OpenAI SDK raises as
``APIError``. Every answer, success or not, carries the routing trail (headers and ``metadata``).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from gateway import metrics, tracing
from gateway.accounting import Meter, encode_routing, estimate_answer_usage, estimate_usage
from gateway.catalog import Pricing
from gateway.config import RoutingConfig
from gateway.dialects.chat import ChatCall
from gateway.dialects.embeddings import EmbeddingsCall
from gateway.door import header_value
from gateway.errors import GatewayError, RateLimited, UpstreamTimeout, UpstreamUnreachable
from gateway.governance import Governor
from gateway.health import HealthBook, key_rejected
from gateway.notes import Notes
from gateway.providers import adapter_for, embedder_for
from gateway.providers.base import Adapter, ResponseContext, StreamTranslator
from gateway.router import Deployment, Plan, Requirements, Router, RouteTable
from gateway.sse import SSEParser, encode_data
from gateway.upstream import Upstream, UpstreamResponse
from gateway.wire.openai import Usage

log = logging.getLogger("gateway.pipeline")

# Which adapter serves a target, when some targets take the client's own dialect (a Responses request to a
# server that speaks Responses is forwarded, not translated); None means the provider's adapter. What the
# dialect's translation left out (the call's notes) does not apply to a target that gets the client's body.
AdapterChoice = Callable[[Deployment], Adapter | None]

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504, 529})
# A provider answering these about one target says nothing about the next one: fall back.
FALLBACK_STATUS = RETRYABLE_STATUS | {401, 403, 404}


class Attempt(msgspec.Struct, kw_only=True):
    provider: str
    model: str
    status_code: int | None
    error_type: str | None
    succeeded: bool
    latency_ms: float


class Relay:
    """The client's side of a streamed answer. Iterate it for the frames; closing it (at the end, when the
    client left, or before it was ever iterated) closes the upstream response and settles the request.
    Settling is idempotent, so the generator's own ``finally`` and ``aclose`` may both reach it."""

    __slots__ = ("_frames", "_settle")

    def __init__(self, frames: AsyncGenerator[bytes, None], settle: Callable[[], None]) -> None:
        self._frames = frames
        self._settle = settle

    def __aiter__(self) -> Relay:
        return self

    async def __anext__(self) -> bytes:
        return await self._frames.__anext__()

    async def aclose(self) -> None:
        try:
            await self._frames.aclose()
        finally:
            # An async generator closed before its first step never runs its ``finally``.
            self._settle()


class ChatResult(msgspec.Struct, kw_only=True):
    deployment: Deployment
    headers: dict[str, str]
    metadata: dict[str, Any]
    body: bytes | None = None
    usage: Usage | None = None
    chunks: Relay | None = None


@dataclass
class _StreamOutcome:
    """What a stream's settlement needs to know: frames relayed, and how it ended."""

    frames: int = 0
    status: int = 200
    error_type: str | None = None


def backoff_delay(attempt: int, retry_after: float | None, cfg: RoutingConfig, rng: random.Random) -> float | None:
    """Seconds to wait before the next try of the same target; None means stop trying it.

    ``retry-after`` wins when the provider sent one and it is within the cap; beyond the cap the
    target is left for the next one. Otherwise exponential backoff with "equal jitter": half the
    ceiling fixed, half random, so concurrent clients spread out without ever retrying at once.
    """
    if retry_after is not None:
        return retry_after if retry_after <= cfg.retry_after_max_s else None
    ceiling = min(cfg.backoff_max_ms, cfg.backoff_initial_ms * float(2**attempt)) / 1000
    return ceiling / 2 + rng.random() * ceiling / 2


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """``retry-after-ms`` (OpenAI), ``retry-after`` in seconds or as an HTTP date."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(float(millis) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - (now if now is not None else time.time()), 0.0)


@dataclass
class _Run:
    """One request on its way through its plan."""

    call: ChatCall | EmbeddingsCall
    plan: Plan
    request_id: str
    meter: Meter | None
    choose: AdapterChoice | None = None
    attempts: list[Attempt] = field(default_factory=list)


class Pipeline:
    def __init__(
        self,
        upstream: Upstream,
        health: HealthBook,
        *,
        governor: Governor | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.upstream = upstream
        self.health = health
        self.governor = governor
        self.clock = clock
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.router = Router(health, rng=self.rng)

    def plan(self, call: ChatCall | EmbeddingsCall, table: RouteTable,
             allow: Callable[[str], bool] | None = None) -> Plan:
        if isinstance(call, EmbeddingsCall):
            needs = Requirements.embeddings(call)
        else:
            min_reasoning = call.request.min_reasoning_level or None
            needs = Requirements.of(call, min_reasoning if isinstance(min_reasoning, str) else None)
        return self.router.plan(table, call.request.model, needs, self.clock(), allow)

    async def run(self, call: ChatCall | EmbeddingsCall, plan: Plan, table: RouteTable, *, request_id: str,
                  meter: Meter | None = None, choose: AdapterChoice | None = None) -> ChatResult:
        """The answer, or a GatewayError. Whatever way this returns, the meter is settled or handed to
        the stream's ``Relay``: an exception of any kind (a bug, a cancellation when the client left)
        settles it here with nothing charged and one record."""
        run = _Run(call=call, plan=plan, request_id=request_id, meter=meter, choose=choose)
        try:
            return await self._run(run, table)
        except BaseException as exc:
            if meter is not None:
                meter.abandon(exc, attempts=len(run.attempts), routing=encode_routing(run.attempts))
            raise

    async def _run(self, run: _Run, table: RouteTable) -> ChatResult:
        call, plan = run.call, run.plan
        self.health.follow(table)
        cfg = table.config.routing
        body_limit = int(table.config.server.max_upstream_body_mb * 1024 * 1024)
        last_error: GatewayError | None = None
        for deployment in plan.deployments:
            forwarded = run.choose(deployment) if run.choose is not None else None
            adapter = forwarded or adapter_for(deployment.provider.kind)
            dialect_notes = Notes() if forwarded is not None else run.call.notes
            try:
                target = deployment.target()
                request = (embedder_for(deployment.provider.kind, deployment.key).build_request(call, target)
                           if isinstance(call, EmbeddingsCall) else adapter.build_request(call, target))
                self._provider_limit(deployment, plan)
            except GatewayError as exc:  # this target cannot take the request: try the next one
                run.attempts.append(self._attempt(deployment, exc.status_code, exc.error_type, False, 0.0))
                last_error = exc
                continue
            for try_number in range(cfg.retries + 1):
                circuit = self.health.circuit(deployment.key)
                circuit.acquire(self.clock())
                metrics.tried(deployment, try_number, len(run.attempts))
                started = self.clock()
                try:
                    response = await self.upstream.send(request)
                    # A non-streamed body is read inside the attempt, so a cut or a timeout while
                    # reading it is retried like any other transport failure.
                    body = await response.read(body_limit) if response.status >= 400 or not call.stream else b""
                except GatewayError as exc:  # transport failure, or a body over server.max_upstream_body_mb
                    last_error = exc
                    self._failed(deployment, run.attempts, started, None, exc)
                    if try_number < cfg.retries and isinstance(exc, UpstreamUnreachable | UpstreamTimeout):
                        await self.sleep(backoff_delay(try_number, None, cfg, self.rng) or 0.0)
                        continue
                    break
                if response.status < 400:
                    latency = (self.clock() - started) * 1000
                    run.attempts.append(self._attempt(deployment, response.status, None, True, latency))
                    try:
                        result = self._success(run, deployment, adapter, response, body,
                                               dialect_notes.merged(request.notes))
                    except GatewayError as exc:
                        # A 200 the adapter cannot read (not JSON, not the provider's format): this
                        # target failed, and the next one may still answer.
                        response.close()
                        run.attempts.pop()
                        last_error = exc
                        # Recorded with the 502 it becomes, so it counts against the target's health.
                        self._failed(deployment, run.attempts, started, exc.status_code, exc)
                        break
                    circuit.record(self.clock(), True, latency)
                    return result
                error = adapter.parse_error(response.status, body, response.headers, deployment.provider.name)
                last_error = error
                self._failed(deployment, run.attempts, started, response.status, error)
                if key_rejected(response.status, body, deployment.upstream) and self.health.key_refused(
                        deployment.provider.name, deployment.key, run.request_id, self.clock(), error.message):
                    log.error("provider '%s' rejected the gateway's key (HTTP %d): marking it unhealthy; "
                              "check providers.%s.api_key", deployment.provider.name, response.status,
                              deployment.provider.name)
                if response.status not in FALLBACK_STATUS:
                    raise self._failure(run, error, deployment)
                if response.status not in RETRYABLE_STATUS or try_number == cfg.retries:
                    break
                delay = backoff_delay(try_number, parse_retry_after(response.headers), cfg, self.rng)
                if delay is None:
                    break
                await self.sleep(delay)
        assert last_error is not None
        raise self._failure(run, last_error, plan.deployments[-1])

    # ------------------------------------------------------------------------------------- helpers

    def _provider_limit(self, deployment: Deployment, plan: Plan) -> None:
        if self.governor is None:
            return
        wait = self.governor.provider_admit(deployment.provider.name, plan.needs.tokens)
        if wait:
            raise RateLimited(f"The gateway's rate limit for provider '{deployment.provider.name}' is reached.",
                              headers={"retry-after": str(max(1, round(wait + 0.5)))} if wait != math.inf else {},
                              provider=deployment.provider.name)

    def _attempt(self, deployment: Deployment, status: int | None, error_type: str | None, ok: bool,
                 latency_ms: float) -> Attempt:
        metrics.attempt(deployment.provider, deployment.upstream, status, error_type, ok, latency_ms)
        return Attempt(provider=deployment.provider.name, model=deployment.upstream, status_code=status,
                       error_type=error_type, succeeded=ok, latency_ms=round(latency_ms, 2))

    def _failed(self, deployment: Deployment, attempts: list[Attempt], started: float, status: int | None,
                exc: GatewayError) -> None:
        latency = (self.clock() - started) * 1000
        attempts.append(self._attempt(deployment, status, exc.error_type, False, latency))
        # A client error says nothing about the target's health; everything else counts against it.
        counts = status is None or status in RETRYABLE_STATUS or status >= 500
        circuit = self.health.circuit(deployment.key)
        if counts:
            circuit.record(self.clock(), False, error=exc.message)
        elif circuit.probe_in_flight:
            circuit.record(self.clock(), True)

    def metadata(self, run: _Run, deployment: Deployment, succeeded: bool,
                 notes: Notes | None = None) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "request_id": run.request_id,
            "requested_model": run.plan.requested_model,
            "requested_provider": run.plan.requested_provider,
            "used_model": deployment.upstream if succeeded else None,
            "used_provider": deployment.provider.name if succeeded else None,
            "routing": [msgspec.to_builtins(a) for a in run.attempts],
        }
        if succeeded:
            meta["capabilities"] = msgspec.to_builtins(deployment.capabilities)
        if notes:
            meta.update(notes.metadata())
        return meta

    def _headers(self, run: _Run, deployment: Deployment, succeeded: bool,
                 notes: Notes | None = None) -> dict[str, str]:
        # Names from the config and the client's reasoning_effort: encoded so a header never raises.
        headers = {
            "x-gateway-provider": header_value(deployment.provider.name),
            "x-gateway-model": header_value(deployment.upstream),
            "x-gateway-attempts": str(len(run.attempts)),
        }
        effort = run.call.request.reasoning_effort if isinstance(run.call, ChatCall) else None
        if succeeded and isinstance(effort, str) and deployment.capabilities.reasoning != "none":
            headers["x-gateway-reasoning-effort"] = header_value(effort)
        if notes:
            headers.update(notes.headers())
        if run.meter is not None:
            headers.update(run.meter.headers)
        return headers

    def _failure(self, run: _Run, exc: GatewayError, deployment: Deployment) -> GatewayError:
        exc.headers.update(self._headers(run, deployment, succeeded=False))
        exc.metadata = self.metadata(run, deployment, succeeded=False)
        if run.meter is not None:
            run.meter.finish(status=exc.status_code, provider=None, model=None, pricing=None, usage=None,
                             attempts=len(run.attempts), error_type=exc.error_type,
                             routing=encode_routing(run.attempts))
        return exc

    def _success(self, run: _Run, deployment: Deployment, adapter: Adapter, response: UpstreamResponse,
                 body: bytes, notes: Notes) -> ChatResult:
        meta = self.metadata(run, deployment, succeeded=True, notes=notes)
        pricing = deployment.entry.pricing if deployment.entry else None
        ctx = ResponseContext(request_id=run.request_id, provider=deployment.provider.name,
                              public_model=deployment.key, include_usage=run.call.include_usage, metadata=meta,
                              report_cost=True, pricing=pricing,
                              one_tool_call=isinstance(run.call, ChatCall)
                              and run.call.request.parallel_tool_calls is False)
        result = ChatResult(deployment=deployment, headers=self._headers(run, deployment, succeeded=True, notes=notes),
                            metadata=meta)
        if run.call.stream:
            result.chunks = self._stream(run, response, adapter.stream_translator(ctx), deployment, pricing)
            return result
        if isinstance(run.call, EmbeddingsCall):
            embedder = embedder_for(deployment.provider.kind, deployment.key)
            result.body, result.usage = embedder.parse_response(run.call, body, ctx)
        else:
            result.body, result.usage = adapter.parse_response(body, ctx)
            if tracing.capture_content:
                tracing.completion(result.body)
        if run.meter is not None:
            run.meter.first_byte()
            # No usage in the answer (some compatible servers): charge an estimate rather than nothing.
            usage = result.usage or estimate_answer_usage(result.body, run.plan.needs.prompt_tokens,
                                                          run.plan.needs.max_tokens)
            run.meter.finish(status=200, provider=deployment.provider.name, model=deployment.upstream,
                             pricing=pricing, usage=usage, attempts=len(run.attempts),
                             routing=encode_routing(run.attempts), response_body=result.body,
                             estimated=result.usage is None)
        return result

    def _stream(self, run: _Run, response: UpstreamResponse, translator: StreamTranslator,
                deployment: Deployment, pricing: Pricing | None) -> Relay:
        outcome = _StreamOutcome()

        def settle() -> None:
            response.close()
            if run.meter is not None:
                # A client that went away mid-stream lands here too: charge what was streamed, about one
                # token a frame, when the provider's own count never came.
                usage = translator.usage or estimate_usage(run.plan.needs.prompt_tokens, outcome.frames,
                                                           limit=run.plan.needs.max_tokens)
                run.meter.finish(status=outcome.status, provider=deployment.provider.name, model=deployment.upstream,
                                 pricing=pricing, usage=usage, attempts=len(run.attempts),
                                 error_type=outcome.error_type, routing=encode_routing(run.attempts),
                                 estimated=translator.usage is None)

        frames = self._frames(run, response, translator, deployment, outcome, settle)
        return Relay(tracing.tap(frames) if tracing.capture_content else frames, settle)

    async def _frames(self, run: _Run, response: UpstreamResponse, translator: StreamTranslator,
                      deployment: Deployment, outcome: _StreamOutcome,
                      settle: Callable[[], None]) -> AsyncGenerator[bytes, None]:
        parser = SSEParser()
        meter = run.meter
        # Frames translated from one network read go out together; kept outside the try so that an
        # event that fails after others in the same read does not lose the ones before it.
        pending: list[bytes] = []
        try:
            async for chunk in response.iter_chunks():
                for event in parser.feed(chunk):
                    pending.extend(translator.feed(event))
                if pending:
                    if meter is not None and not outcome.frames:
                        meter.first_byte()
                    outcome.frames += len(pending)
                    yield pending[0] if len(pending) == 1 else b"".join(pending)
                    pending.clear()
            for event in parser.close():
                pending.extend(translator.feed(event))
            pending.extend(translator.close())
            if pending:
                yield b"".join(pending)
        except GatewayError as exc:
            # Headers and some chunks are already with the client: the only honest report left is an
            # error event in the stream itself.
            log.warning("stream from %s failed mid-way (request %s): %s", deployment.provider.name, run.request_id,
                        exc.message)
            self.health.circuit(deployment.key).record(self.clock(), False, error=exc.message)
            outcome.status, outcome.error_type = exc.status_code, exc.error_type
            yield b"".join(pending) + _error_frame(translator, exc)
        except Exception as exc:
            # A bug of ours while translating: logged with its traceback; the client's stream still ends
            # with an error event, and the record says it failed.
            log.error("stream from %s failed inside the gateway (request %s)", deployment.provider.name,
                      run.request_id, exc_info=exc)
            outcome.status, outcome.error_type = 500, "internal_error"
            yield b"".join(pending) + _error_frame(
                translator, GatewayError("The gateway hit an internal error; it has been logged."))
        finally:
            settle()


def _error_frame(translator: StreamTranslator, exc: GatewayError) -> bytes:
    """How a failure ends the client's stream: an OpenAI error event, unless the translator relays the
    client's own dialect (a Responses stream forwarded as is) and frames failures itself (``fail``)."""
    fail: Callable[[GatewayError], bytes] | None = getattr(translator, "fail", None)
    return fail(exc) if fail is not None else encode_data(exc.body())
