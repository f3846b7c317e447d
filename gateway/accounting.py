"""One request's accounting: admission before it goes upstream, settlement and its usage record after.

The unified, native and Messages routes all go through ``open_meter`` and ``Meter.finish``, so every
request (stream or not, success or error, finished or abandoned by its client) settles its rate and
budget holds exactly once and leaves exactly one usage record.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Literal

import msgspec

from gateway import metrics
from gateway.catalog import Pricing
from gateway.errors import GatewayError
from gateway.governance import Governor, Hold, Principal
from gateway.logs import access
from gateway.router import Deployment
from gateway.store import RequestRecord
from gateway.usage import UsageRecorder, cost, counts, worst_case_cost
from gateway.wire.openai import Usage

# With neither max_tokens nor a catalog output limit, a reservation assumes this many output tokens.
DEFAULT_OUTPUT_RESERVE = 4096
# nginx's "client closed request": the client left before the gateway could answer.
CLIENT_CLOSED = 499
# Bodies kept with [logging] store_bodies are cut here (and say so): a 100 MB answer must not reach the DB.
STORED_BODY_LIMIT = 1024 * 1024
Mode = Literal["unified", "native", "messages", "embeddings", "responses"]


def worst_cost(deployments: list[Deployment], prompt_tokens: int, max_tokens: int | None,
               choices: int = 1) -> float | None:
    """The most any candidate could cost (``choices`` answers of up to ``max_tokens`` each); None if one of
    them has no known price."""
    worst = 0.0
    for deployment in deployments:
        entry = deployment.entry
        # A limit that is not positive limits nothing: reserve as if none was sent, never less than nothing.
        given = max_tokens if max_tokens is not None and max_tokens > 0 else None
        output = given or (entry.max_output_tokens if entry else None) or DEFAULT_OUTPUT_RESERVE
        amount = worst_case_cost(prompt_tokens, output * max(choices, 1), entry.pricing if entry else None)
        if amount is None:
            return None
        worst = max(worst, amount)
    return worst


class Meter:
    __slots__ = ("admission", "catalog_version", "mode", "principal", "recorder", "request_body", "request_id",
                 "requested_model", "started", "stream", "ttft_ms")

    def __init__(self, *, admission: Hold, recorder: UsageRecorder, principal: Principal, request_id: str,
                 mode: Mode, stream: bool, requested_model: str | None, catalog_version: str,
                 request_body: bytes | None = None) -> None:
        self.admission = admission
        self.recorder = recorder
        self.principal = principal
        self.request_id = request_id
        self.mode = mode
        self.stream = stream
        self.requested_model = requested_model
        self.catalog_version = catalog_version
        # Set only with [logging] store_bodies on (and the request not streamed): then the bodies are kept.
        self.request_body = request_body
        self.started = time.perf_counter()
        self.ttft_ms: float | None = None

    @property
    def headers(self) -> dict[str, str]:
        return self.admission.headers

    def first_byte(self) -> None:
        if self.ttft_ms is None:
            self.ttft_ms = (time.perf_counter() - self.started) * 1000

    def finish(self, *, status: int, provider: str | None, model: str | None, pricing: Pricing | None,
               usage: Usage | None, attempts: int, error_type: str | None = None, routing: bytes | None = None,
               response_body: bytes | None = None, estimated: bool = False) -> None:
        """Settle the holds and queue the record; a second call does nothing. ``estimated``: the usage
        is the gateway's estimate (the provider reported none), and the record says so."""
        if self.admission.settled:
            return
        priced = cost(usage, pricing) if usage is not None else None
        tokens = usage.prompt_tokens + usage.completion_tokens if usage is not None else None
        # A request that produced no usage (refused upstream, failed before an answer) cost nothing.
        self.admission.settle(tokens if usage is not None else 0, priced.total if priced else 0.0)
        record = RequestRecord(
            ts=time.time(), request_id=self.request_id, key_id=self.principal.key_id, key_name=self.principal.name,
            project=self.admission.project, mode=self.mode, stream=self.stream,
            requested_model=self.requested_model, provider=provider, model=model, attempts=attempts,
            status=status, error_type=error_type,
            latency_ms=round((time.perf_counter() - self.started) * 1000, 3),
            ttft_ms=round(self.ttft_ms, 3) if self.ttft_ms is not None else None,
            price_version=self.catalog_version if pricing is not None else None,
            routing=routing.decode() if routing else None,
            request_body=stored_body(self.request_body) if self.request_body is not None else None,
            response_body=stored_body(response_body)
            if self.request_body is not None and response_body is not None else None,
            estimated=estimated and usage is not None,
            **counts(usage),
        )
        if priced is not None:
            record.cost_input = priced.input
            record.cost_cached_input = priced.cached_input
            record.cost_cache_write = priced.cache_write
            record.cost_output = priced.output
            record.cost_total = priced.total
        observe(record)
        self.recorder.record(record)


    def abandon(self, exc: BaseException, *, attempts: int = 0, routing: bytes | None = None) -> None:
        """Settle a request that ended by an exception before anything settled it: nothing is charged,
        and the record says how it ended (a GatewayError's status, 499 for a client that left, else 500)."""
        if isinstance(exc, GatewayError):
            status, error_type = exc.status_code, exc.error_type
        elif isinstance(exc, asyncio.CancelledError):
            status, error_type = CLIENT_CLOSED, "client_disconnected"
        else:
            status, error_type = 500, "internal_error"
        self.finish(status=status, provider=None, model=None, pricing=None, usage=None, attempts=attempts,
                    error_type=error_type, routing=routing)


async def open_meter(governor: Governor, recorder: UsageRecorder, principal: Principal, *, project: str | None,
                     tokens: int, worst_cost_usd: float | None, request_id: str, mode: Mode, stream: bool,
                     requested_model: str | None, catalog_version: str, request_body: bytes | None = None) -> Meter:
    admission = await governor.reserve(principal, project, tokens, worst_cost_usd)
    return Meter(admission=admission, recorder=recorder, principal=principal, request_id=request_id, mode=mode,
                 stream=stream, requested_model=requested_model, catalog_version=catalog_version,
                 request_body=request_body)


def stored_body(body: bytes) -> str:
    """A body as [logging] store_bodies keeps it: whole, or its first STORED_BODY_LIMIT bytes and a marker."""
    if len(body) <= STORED_BODY_LIMIT:
        return body.decode(errors="replace")
    return (body[:STORED_BODY_LIMIT].decode(errors="ignore")
            + f"\n[truncated by the gateway: {len(body) - STORED_BODY_LIMIT} more bytes not stored]")


class _AnswerMessage(msgspec.Struct):
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: msgspec.Raw | None = None


class _AnswerChoice(msgspec.Struct):
    message: _AnswerMessage | None = None


class _Answer(msgspec.Struct):
    choices: list[_AnswerChoice] = []


_answer_decoder = msgspec.json.Decoder(_Answer)
CHARS_PER_TOKEN = 4  # the same rough rule the prompt estimate uses


def estimate_answer_usage(body: bytes, prompt_tokens: int, max_tokens: int | None) -> Usage:
    """What an answer without a usage member is charged: the prompt estimate, and its text at about four
    characters a token, never more than the client allowed (so never more than was reserved for it)."""
    try:
        choices = _answer_decoder.decode(body).choices
        chars = sum(len(m.content or "") + len(m.reasoning_content or "") + len(m.tool_calls or b"")
                    for c in choices if (m := c.message) is not None)
    except msgspec.DecodeError:
        chars = len(body)
    return estimate_usage(prompt_tokens, -(-chars // CHARS_PER_TOKEN), limit=max_tokens)


def estimate_usage(prompt_tokens: int, completion_tokens: int, *, limit: int | None = None) -> Usage:
    """What a stream cut short by its client is charged: the prompt estimate and what was streamed; never
    more output than the client's positive ``limit`` (what its reservation was made for)."""
    if limit is not None and limit > 0:
        completion_tokens = min(completion_tokens, limit)
    return Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                 total_tokens=prompt_tokens + completion_tokens)


def encode_routing(trail: Sequence[msgspec.Struct]) -> bytes:
    return msgspec.json.encode(trail)


def record_refusal(governor: Governor, recorder: UsageRecorder, principal: Principal, error: GatewayError, *,
                   request_id: str, mode: Mode, project: str | None, provider: str | None = None,
                   model: str | None = None) -> None:
    """A request refused before it went upstream still leaves a record (the admin counts its errors), and
    its answer still carries the key's rate-limit headers."""
    error.headers.update(governor.headers(principal, time.time()))
    record = RequestRecord(
        ts=time.time(), request_id=request_id, key_id=principal.key_id, key_name=principal.name,
        project=principal.project or project, mode=mode, stream=False,
        requested_model=f"{provider}/{model}" if provider and model else None, provider=provider, model=model,
        attempts=0, status=error.status_code, error_type=error.error_type)
    observe(record)
    recorder.record(record)


def observe(record: RequestRecord) -> None:
    """Every request's one record, as it is queued: its metrics and trace attributes, its JSON access line."""
    metrics.request_done(record)
    access.note(record)
