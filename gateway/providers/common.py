"""Pieces every translating adapter shares: OpenAI chunk and completion builders, data URLs, JSON args.

Translators build their output with ``ChunkWriter`` so the OpenAI stream rules hold in one place: one
id and ``created`` for the whole stream, the role on the first delta, exactly one finish chunk, the
usage chunk (``choices: []``) only when the client asked for it, then ``[DONE]``.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import msgspec

from gateway.errors import InvalidRequest
from gateway.providers.base import ResponseContext
from gateway.sse import DONE, encode_data
from gateway.wire.openai import (
    ChatCompletion,
    ChatCompletionChunk,
    Choice,
    ChunkChoice,
    Delta,
    ResponseMessage,
    Usage,
    encoder,
)


class ChunkWriter:
    __slots__ = ("_role_sent", "ctx", "finished")

    def __init__(self, ctx: ResponseContext) -> None:
        self.ctx = ctx
        self._role_sent: set[int] = set()  # choice indexes whose role delta went out
        self.finished = False

    def _chunk(self, choices: list[ChunkChoice], usage: Usage | None = None,
               metadata: dict[str, Any] | None = None) -> bytes:
        chunk = ChatCompletionChunk(id=self.ctx.completion_id, created=self.ctx.created,
                                    model=self.ctx.public_model, choices=choices)
        if usage is not None:
            chunk.usage = usage
        if metadata is not None:
            chunk.metadata = metadata
        return encode_data(encoder.encode(chunk))

    def delta(self, delta: Delta, index: int = 0) -> bytes:
        """A delta for choice ``index`` (``n`` > 1 streams several choices; each gets its role first)."""
        if index not in self._role_sent:
            self._role_sent.add(index)
            delta.role = "assistant"
        return self._chunk([ChunkChoice(index=index, delta=delta)])

    def finish(self, reason: str, index: int = 0) -> bytes:
        """The one chunk that carries ``finish_reason`` (a role-only delta comes first if none was sent)."""
        self.finished = True
        out = b"" if index in self._role_sent else self.delta(Delta(content=""), index)
        # The routing metadata rides on the finish chunk and on the usage chunk, so it is on the final
        # chunk whether or not the client asked for usage.
        return out + self._chunk([ChunkChoice(index=index, delta=Delta(), finish_reason=reason)],
                                 metadata=self.ctx.metadata)

    def usage(self, usage: Usage) -> bytes:
        return self._chunk([], usage=self.ctx.priced(usage), metadata=self.ctx.metadata)

    def done(self, usage: Usage | None) -> bytes:
        """After every choice's finish chunk: the usage chunk if ``include_usage`` was set, then ``[DONE]``."""
        out = self.usage(usage) if self.ctx.include_usage and usage is not None else b""
        return out + DONE

    def end(self, reason: str, usage: Usage | None) -> bytes:
        """Finish chunk, the usage chunk when ``stream_options.include_usage`` was set, then ``[DONE]``."""
        return self.finish(reason) + self.done(usage)


def completion(ctx: ResponseContext, message: ResponseMessage, finish_reason: str | None,
               usage: Usage | None) -> bytes:
    return completion_of(ctx, [Choice(index=0, message=message, finish_reason=finish_reason)], usage)


def completion_of(ctx: ResponseContext, choices: list[Choice], usage: Usage | None) -> bytes:
    """A ``chat.completion`` with several choices (``n`` > 1)."""
    body = ChatCompletion(id=ctx.completion_id, created=ctx.created, model=ctx.public_model, choices=choices)
    if usage is not None:
        body.usage = ctx.priced(usage)
    if ctx.metadata is not None:
        body.metadata = ctx.metadata
    return encoder.encode(body)


def parse_data_url(url: str, param: str) -> tuple[str, str]:
    """``data:image/png;base64,AAAA`` -> (media type, base64 data); anything else is a 400 naming ``param``."""
    header, sep, data = url.partition(",")
    if not sep or not header.startswith("data:") or not header.endswith(";base64"):
        raise InvalidRequest("Image data URLs must look like 'data:<media type>;base64,<data>'.", param=param)
    media_type = header[len("data:"):-len(";base64")] or "application/octet-stream"
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("The image data URL does not hold valid base64.", param=param) from None
    return media_type, data


def parse_arguments(arguments: str, param: str) -> dict[str, Any]:
    """Tool-call ``arguments`` (a JSON string in OpenAI's format) -> the object other providers want."""
    if not arguments.strip():
        return {}
    try:
        value = json.loads(arguments)
    except ValueError:
        raise InvalidRequest("Tool call arguments must be a JSON object encoded as a string.", param=param) from None
    if not isinstance(value, dict):
        raise InvalidRequest("Tool call arguments must encode a JSON object.", param=param)
    return value


def dumps(value: Any) -> str:
    """Compact JSON text, as OpenAI sends tool-call arguments."""
    return msgspec.json.encode(value).decode()
