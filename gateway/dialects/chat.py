"""A client's chat request, parsed once: the typed view adapters translate, and the raw top level.

The raw top level (``dict[str, msgspec.Raw]``) lets the OpenAI-compatible path forward the body with
only ``model`` rewritten: every other member, known or not, goes upstream as the client's own bytes.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import msgspec

from gateway.door import check_chat_request, decode_raw_object
from gateway.errors import InvalidRequest, UnsupportedParameter
from gateway.notes import Notes
from gateway.wire import Problem
from gateway.wire.openai import (
    CHAT_REQUEST_FIELDS,
    GATEWAY_FIELDS,
    HINT_FIELDS,
    ChatRequest,
    ImageURL,
    RawObject,
    chat_request_decoder,
    encoder,
)

# The hint a Responses web_search tool's ``filters.allowed_domains`` travels as (``tools[i]`` + this):
# chat's ``web_search_options`` has no domain filter, Anthropic's search tool has one.
DOMAINS_HINT = ".filters.allowed_domains"


class ChatCall:
    """What the pipeline needs to know about one chat request."""

    __slots__ = ("betas", "body", "hints", "names", "notes", "raw", "request")

    def __init__(self, body: bytes, raw: RawObject, request: ChatRequest) -> None:
        self.body = body
        self.raw = raw
        self.request = request
        # What the client's dialect leaves out whatever the target (see gateway/notes.py).
        self.notes = Notes()
        # Members of the client's dialect that only some targets understand and that cannot make a correct
        # answer wrong, by the client's JSON path (``context_management``, ``tools[0].eager_input_streaming``):
        # an adapter forwards those its provider takes and notes the rest as ignored.
        self.hints: dict[str, Any] = {}
        # The client's name for a member of this call where its dialect names it otherwise (Messages'
        # ``max_tokens`` is ``max_completion_tokens`` here), so notes speak the client's language.
        self.names: dict[str, str] = {}
        # Anthropic betas the client declared (its ``anthropic-beta`` header, Messages dialect): an Anthropic
        # target may use those its adapter knows.
        self.betas: frozenset[str] = frozenset()

    @property
    def stream(self) -> bool:
        return bool(self.request.stream)

    @property
    def include_usage(self) -> bool:
        opts = self.request.stream_options
        return bool(opts and opts.include_usage)

    def client_path(self, path: str) -> str:
        """``path`` (a member of this call) as the client named it: the longest renamed prefix is replaced."""
        for prefix in sorted(self.names, key=len, reverse=True):
            if path == prefix or path.startswith((prefix + ".", prefix + "[")):
                return self.names[prefix] + path[len(prefix):]
        return path

    def ignore_hints(self, notes: Notes, taken: Collection[str] = ()) -> None:
        """Note every hint but those in ``taken`` as left out (for a translating adapter's
        ``UpstreamRequest.notes``): the dialect's, and OpenAI's top-level ones (``hint_fields``)."""
        for path in [*self.hint_fields(), *self.hints, *self._image_details()]:
            if path not in taken:
                notes.ignore(path)

    def _image_details(self) -> list[str]:
        # ``detail`` sets the resolution (and cost) OpenAI reads an image at; Anthropic and Gemini size
        # images themselves, so it is a hint the translating adapters cannot carry.
        return [f"messages[{i}].content[{j}].image_url.detail"
                for i, message in enumerate(self.request.messages) if isinstance(message.content, list)
                for j, part in enumerate(message.content)
                if isinstance(part.image_url, ImageURL) and isinstance(part.image_url.detail, str)]

    def unknown_fields(self) -> list[str]:
        """Top-level members this gateway does not model (forwarded as-is to OpenAI-compatible servers),
        but for the hints a translating adapter leaves out (``hint_fields``)."""
        return [name for name in self.raw if name not in CHAT_REQUEST_FIELDS and name not in HINT_FIELDS]

    def hint_fields(self) -> list[str]:
        """Top-level OpenAI hints sent (``HINT_FIELDS``): a translating adapter notes them as ignored."""
        return [name for name in self.raw if name in HINT_FIELDS]

    def body_with_model(self, model: str, omit: Collection[str] = (), **replace: object) -> bytes:
        """The client's body with only ``model`` (and ``replace``, less ``omit``) changed; every other member
        is re-emitted byte for byte, and the gateway's own fields are left out."""
        raw = {name: value for name, value in self.raw.items() if name not in GATEWAY_FIELDS and name not in omit}
        raw["model"] = msgspec.Raw(encoder.encode(model))
        for name, value in replace.items():
            raw[name] = msgspec.Raw(encoder.encode(value))
        return encoder.encode(raw)


def parse_chat(body: bytes) -> ChatCall:
    """The body as a chat call, checked at the door (see ``gateway/door.py``): any problem is a 400."""
    raw = decode_raw_object(body, hint="a JSON object with 'model' and 'messages'")
    try:
        request = chat_request_decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise validation_error(str(exc)) from None
    except (msgspec.DecodeError, RecursionError) as exc:
        raise InvalidRequest(f"We could not parse the JSON body of your request: {exc}") from None
    if not request.messages:
        raise InvalidRequest("'messages' must contain at least one message.", param="messages")
    check_chat_request(request)
    return ChatCall(body, raw, request)


def validation_error(text: str, prefix: str = "") -> InvalidRequest:
    """Turn msgspec's "Expected `str`, got `int` - at `$.messages[0].content`" into a 400 with ``param``;
    ``prefix`` roots a path found inside one member."""
    problem = Problem(text, prefix)
    if problem.missing:
        return InvalidRequest(f"Missing required parameter: '{problem.missing}'.", param=problem.missing,
                              code="missing_required_parameter")
    if problem.unknown:
        return UnsupportedParameter(f"Unsupported parameter: '{problem.unknown}' is not part of this API.",
                                    param=problem.unknown)
    param = problem.path or None
    message = problem.message
    return InvalidRequest(f"Invalid value for '{param}': {message}." if param else f"Invalid request: {message}.",
                          param=param, code="invalid_value")
