"""The common answer read back: the chat completions and chunk frames the pipeline yields, for a dialect
that answers in another format (Messages, Responses). Each dialect's stream translator is a ``ChunkReader``
that says what a delta, an error frame, the end and a cut stream become in its own events."""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.errors import UpstreamError
from gateway.sse import SSEParser
from gateway.wire.openai import Usage

# What the pipeline hands back, read leniently: OpenAI-compatible servers pass through untranslated and
# some of them send nulls or extras where OpenAI does not; a member this code does not read is ignored.


class SaidFunction(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class SaidCall(msgspec.Struct):
    index: int = 0
    id: str | None = None
    function: SaidFunction | None = None


class SaidCitation(msgspec.Struct):
    start_index: int = 0
    end_index: int = 0
    url: str = ""
    title: str | None = None


class SaidAnnotation(msgspec.Struct):
    type: str = ""
    url_citation: SaidCitation | None = None


class Said(msgspec.Struct):
    """What a message, or a stream delta, carries."""

    content: str | None = None
    refusal: str | None = None
    reasoning: str | None = None
    reasoning_content: str | None = None
    reasoning_details: list[dict[str, Any]] | None = None
    tool_calls: list[SaidCall] | None = None
    images: list[dict[str, Any]] | None = None
    annotations: list[SaidAnnotation] | None = None
    web_search_queries: list[str] | None = None


class Choice(msgspec.Struct):
    index: int = 0
    message: Said | None = None
    delta: Said | None = None
    finish_reason: str | None = None


class FrameError(msgspec.Struct):
    message: str = ""
    type: str | None = None


class Completion(msgspec.Struct):
    """A chat.completion, a stream chunk, or an error frame."""

    choices: list[Choice] | None = None
    usage: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)  # msgspec.Raw takes no union
    error: FrameError | None = None


_completion_decoder = msgspec.json.Decoder(Completion)
_usage_decoder = msgspec.json.Decoder(Usage)


def read_usage(raw: msgspec.Raw) -> Usage | None:
    if not raw:
        return None
    try:
        return _usage_decoder.decode(raw)
    except msgspec.ValidationError:
        return None  # an odd usage shape from an OpenAI-compatible server: not counted, as in the adapter


def decode_completion(data: bytes) -> Completion:
    try:
        return _completion_decoder.decode(data)
    except msgspec.DecodeError:
        raise UpstreamError("The model's answer could not be read as an OpenAI chat completion.", status=502,
                            error_type="upstream_error") from None


class ChunkReader:
    """Chat chunk frames (the SSE the pipeline relays) in, a dialect's events out. The finish waits for the
    usage chunk or ``[DONE]``, so the last event carries the real counts; once ``done``, nothing more is
    read."""

    def __init__(self) -> None:
        self._parser = SSEParser()
        self._finish: str | None = None
        self._usage: Usage | None = None
        self.done = False

    def feed(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        for sse in self._parser.feed(data):
            if not self.done:
                out += self._frame(sse.data)
        return out

    def close(self) -> list[bytes]:
        """The relayed stream ended."""
        out: list[bytes] = []
        for sse in self._parser.close():
            if not self.done:
                out += self._frame(sse.data)
        if self.done:
            return out
        if self._finish is not None:  # a server that sends no [DONE]
            return out + self._end()
        return out + self._cut("The model's stream ended before its answer was finished.")

    def _frame(self, data: bytes) -> list[bytes]:
        if data == b"[DONE]":
            return self._end()
        frame = decode_completion(data)
        if frame.error is not None:
            return self._error(frame.error)
        usage = read_usage(frame.usage)
        if usage is not None:
            self._usage = usage
        out: list[bytes] = []
        for choice in frame.choices or ():
            if choice.index != 0:
                continue
            if choice.delta is not None:
                out += self._said(choice.delta)
            if choice.finish_reason:
                self._finish = choice.finish_reason
        return out

    def _said(self, said: Said) -> list[bytes]:
        raise NotImplementedError

    def _error(self, error: FrameError) -> list[bytes]:
        """An error frame (the pipeline's, after the stream began): the dialect's failure event; sets done."""
        raise NotImplementedError

    def _cut(self, message: str) -> list[bytes]:
        """The stream ended before its answer was finished: the dialect's failure event; sets done."""
        raise NotImplementedError

    def _end(self) -> list[bytes]:
        raise NotImplementedError
