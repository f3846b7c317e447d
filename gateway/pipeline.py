"""Runs one chat call: resolve the target, send it upstream, translate the answer back.

Returns either a finished body or a stream of OpenAI SSE frames. A failure before the first byte is a
``GatewayError`` the route renders; a failure after it ends the client stream with an error event
(``data: {"error": {...}}``, no ``[DONE]``), which the OpenAI SDK raises as ``APIError``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import msgspec

from gateway.chat import ChatCall
from gateway.config import Provider
from gateway.errors import GatewayError
from gateway.providers import adapter_for
from gateway.providers.base import ResponseContext, StreamTranslator, Target
from gateway.router import resolve
from gateway.sse import SSEParser, encode_data
from gateway.upstream import Upstream, UpstreamResponse
from gateway.wire.openai import Usage

log = logging.getLogger("gateway.pipeline")


class ChatResult(msgspec.Struct, kw_only=True):
    target: Target
    headers: dict[str, str]
    body: bytes | None = None
    usage: Usage | None = None
    chunks: AsyncIterator[bytes] | None = None


def routing_headers(target: Target, attempts: int) -> dict[str, str]:
    return {
        "x-gateway-provider": target.provider.name,
        "x-gateway-model": target.model,
        "x-gateway-attempts": str(attempts),
    }


async def run_chat(
    call: ChatCall, *, providers: dict[str, Provider], upstream: Upstream, request_id: str
) -> ChatResult:
    target = resolve(call.request.model, providers)
    adapter = adapter_for(target.provider.kind)
    ctx = ResponseContext(request_id=request_id, public_model=target.public_model,
                          include_usage=call.include_usage)
    upstream_request = adapter.build_request(call, target)
    response = await upstream.send(upstream_request)
    headers = routing_headers(target, attempts=1)
    if response.status >= 400:
        body = await response.read()
        error = adapter.parse_error(response.status, body, response.headers, target.provider.name)
        error.headers.update(headers)
        raise error
    if not call.stream:
        body, usage = adapter.parse_response(await response.read(), ctx)
        return ChatResult(target=target, headers=headers, body=body, usage=usage)
    translator = adapter.stream_translator(ctx)
    return ChatResult(target=target, headers=headers,
                      chunks=_relay(response, translator, target, request_id))


async def _relay(
    response: UpstreamResponse, translator: StreamTranslator, target: Target, request_id: str
) -> AsyncIterator[bytes]:
    parser = SSEParser()
    try:
        async for chunk in response.iter_chunks():
            out = [frame for event in parser.feed(chunk) for frame in translator.feed(event)]
            if out:
                yield b"".join(out) if len(out) > 1 else out[0]
        tail = [frame for event in parser.close() for frame in translator.feed(event)]
        tail.extend(translator.close())
        if tail:
            yield b"".join(tail)
    except GatewayError as exc:
        # Headers and some chunks are already with the client: the only honest report left is an
        # error event in the stream itself.
        log.warning("stream from %s failed mid-way (request %s): %s", target.provider.name, request_id,
                    exc.message)
        yield encode_data(exc.body())
    finally:
        response.close()
