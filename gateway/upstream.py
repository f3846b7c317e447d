"""The only module that talks to providers: one aiohttp session per worker, and the provider's key.

aiohttp rather than httpx: measured on this machine class, ``httpx.AsyncClient`` collapses under
concurrency (encode/httpx#3215) while aiohttp sustains several thousand requests per second per core.
Transport failures become ``UpstreamUnreachable`` (502) or ``UpstreamTimeout`` (504); the provider's
key is added to the outgoing headers here and nowhere else.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Protocol

import aiohttp
import msgspec

from gateway import tracing
from gateway.config import Provider
from gateway.errors import GatewayError, UpstreamError, UpstreamTimeout, UpstreamUnreachable
from gateway.notes import Notes

MIB = 1024 * 1024

# Hop-by-hop headers (RFC 9110 §7.6.1) and those aiohttp computes itself: never copied between legs.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "host", "content-length", "content-encoding",
})


class UpstreamRequest(msgspec.Struct, kw_only=True):
    provider: Provider
    method: str = "POST"
    url: str
    body: bytes | None = None
    headers: dict[str, str] = {}
    # What this target could not take and the adapter left out or lowered (see gateway/notes.py).
    notes: Notes | None = None


class UpstreamResponse(Protocol):
    status: int
    headers: Mapping[str, str]

    async def read(self, limit: int | None = None) -> bytes: ...
    def iter_chunks(self) -> AsyncIterator[bytes]: ...
    def close(self) -> None: ...


def auth_headers(provider: Provider) -> dict[str, str]:
    """Each provider's own auth header, filled with the gateway's key for it."""
    if not provider.api_key:
        return {}
    if provider.kind == "anthropic":
        return {"x-api-key": provider.api_key}
    if provider.kind == "gemini":
        return {"x-goog-api-key": provider.api_key}
    return {"authorization": f"Bearer {provider.api_key}"}


class _AiohttpResponse:
    __slots__ = ("_resp", "headers", "provider", "status")

    def __init__(self, resp: aiohttp.ClientResponse, provider: Provider) -> None:
        self._resp = resp
        self.status = resp.status
        self.headers: Mapping[str, str] = resp.headers
        self.provider = provider

    async def read(self, limit: int | None = None) -> bytes:
        """The whole body; more than ``limit`` bytes is a 502 (the connection is dropped, not drained)."""
        try:
            if limit is None:
                return await self._resp.read()
            declared = self._resp.content_length
            if declared is not None and declared > limit:
                raise self._too_large(limit)
            parts: list[bytes] = []
            size = 0
            async for chunk in self._resp.content.iter_any():
                size += len(chunk)
                if size > limit:
                    raise self._too_large(limit)
                parts.append(chunk)
            return b"".join(parts)
        except BaseException as exc:
            raise _transport_error(exc, self.provider) from exc
        finally:
            self._resp.release()

    def _too_large(self, limit: int) -> UpstreamError:
        self._resp.close()
        return UpstreamError(
            f"[{self.provider.name}] answered with a body larger than {limit / MIB:g} MiB "
            "(server.max_upstream_body_mb); the gateway stopped reading it.",
            status=502, error_type="upstream_error", code="invalid_upstream_response", provider=self.provider.name)

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._resp.content.iter_any():
                yield chunk
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise _transport_error(exc, self.provider) from exc
        finally:
            self._resp.release()

    def close(self) -> None:
        self._resp.close()


def _transport_error(exc: BaseException, provider: Provider) -> BaseException:
    if isinstance(exc, GatewayError | asyncio.CancelledError):
        return exc
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return UpstreamTimeout(
            f"provider '{provider.name}' did not answer within its timeout "
            f"({provider.timeout:g}s read, {provider.connect_timeout:g}s connect)",
            provider=provider.name,
        )
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ServerDisconnectedError):
        return UpstreamUnreachable(
            f"provider '{provider.name}' closed the connection mid-response", provider=provider.name
        )
    if isinstance(exc, aiohttp.ClientError | OSError):
        # The exception text names host and port only; no header or key is part of it.
        return UpstreamUnreachable(
            f"cannot reach provider '{provider.name}': {type(exc).__name__}", provider=provider.name
        )
    return exc


class Upstream:
    """Holds the session; ``send`` returns once the status line and headers have arrived."""

    def __init__(self, *, pool_size: int = 512) -> None:
        self._pool_size = pool_size
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[tuple[float, float], aiohttp.ClientTimeout] = {}

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self._pool_size, limit_per_host=self._pool_size, keepalive_timeout=60, ttl_dns_cache=300
        )
        # Cookies from one provider answer must never leak into another client's request.
        self._session = aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar(), skip_auto_headers=("User-Agent",)
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _timeout(self, provider: Provider) -> aiohttp.ClientTimeout:
        key = (provider.connect_timeout, provider.timeout)
        timeout = self._timeouts.get(key)
        if timeout is None:
            # No total limit: a long stream is fine as long as bytes keep coming within `timeout`.
            timeout = aiohttp.ClientTimeout(total=None, connect=key[0], sock_read=key[1])
            self._timeouts[key] = timeout
        return timeout

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        if self._session is None:
            raise RuntimeError("Upstream.start() was not awaited")
        provider = request.provider
        headers = {**provider.headers, **request.headers, **auth_headers(provider)}
        if tracing.tracer is not None:
            tracing.inject(headers)
        try:
            resp = await self._session.request(
                request.method, request.url, data=request.body, headers=headers,
                timeout=self._timeout(provider), allow_redirects=False,
            )
        except BaseException as exc:
            raise _transport_error(exc, provider) from exc
        return _AiohttpResponse(resp, provider)
