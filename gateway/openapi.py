"""The gateway's client-facing API as an OpenAPI 3.1 document, served at ``GET /openapi.json``.

Built by hand rather than by Litestar: ``/v1/chat/completions`` is plain ASGI (see ``routes/asgi.py``) and
the Litestar handlers read raw bodies, so neither would describe what a client sends. The request schemas
come from the msgspec Structs the routes decode with, and the numeric ranges from ``gateway/door.py``,
so the document cannot drift from what the door enforces. Native routes are described by their
generation endpoints (the ones a key reaches by default); everything else under them is the provider's.
"""

from __future__ import annotations

import functools
from typing import Any

import msgspec

from gateway import __version__
from gateway.dialects.embeddings import MAX_DIMENSIONS
from gateway.dialects.messages import MessagesIn
from gateway.door import CHAT_RANGES, MAX_MODEL_NAME, MESSAGES_RANGES, Range
from gateway.errors import ErrorEnvelope
from gateway.providers.anthropic import ErrorBody
from gateway.wire.openai import ChatCompletion, ChatRequest, ModelList

_REF = "#/components/schemas/{name}"
_JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(name=name)}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {_JSON: {"schema": schema}}}


def _answer(description: str, schema: dict[str, Any], *, stream: bool = False) -> dict[str, Any]:
    content: dict[str, Any] = {_JSON: {"schema": schema}}
    if stream:
        content["text/event-stream"] = {"schema": {"type": "string"}}
    return {"description": description, "content": content}


def _errors(schema: dict[str, Any]) -> dict[str, Any]:
    return {"4XX": _answer("The request was refused; the body says why.", schema),
            "5XX": _answer("An upstream or gateway failure.", schema)}


def _operation(summary: str, body: dict[str, Any] | None, ok: dict[str, Any], errors: dict[str, Any],
               *, public: bool = False) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "responses": {"200": ok, **errors}}
    if body is not None:
        operation["requestBody"] = _body(body)
    if public:
        operation["security"] = []
    return operation


def _constrain(schema: dict[str, Any], components: dict[str, Any], ranges: dict[str, Range]) -> None:
    """Write each door range into the property it governs (``thinking.budget_tokens`` follows the $ref)."""
    for name, rule in ranges.items():
        *parents, leaf = name.split(".")
        target = schema
        for parent in parents:
            member = target["properties"][parent]
            ref = member.get("$ref") or next(s["$ref"] for s in member["anyOf"] if "$ref" in s)
            target = components[ref.rsplit("/", 1)[1]]
        prop = target["properties"][leaf]
        kind = "integer" if rule.integer else "number"
        low, high = (int(rule.low), int(rule.high)) if rule.integer else (rule.low, rule.high)
        bounded = {"type": kind, "minimum": low, "maximum": high}
        choices = prop.get("anyOf")
        if choices is None:
            target["properties"][leaf] = {**prop, **bounded}
        else:
            prop["anyOf"] = [bounded if choice.get("type") == kind else choice for choice in choices]


def document() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(
        [ChatRequest, MessagesIn, ChatCompletion, ModelList, ErrorEnvelope, ErrorBody], ref_template=_REF)
    _constrain(components["ChatRequest"], components, CHAT_RANGES)
    _constrain(components["MessagesIn"], components, MESSAGES_RANGES)
    model = {"type": "string", "minLength": 1, "maxLength": MAX_MODEL_NAME, "pattern": "^[\\x21-\\x7e]+$"}
    components["ChatRequest"]["properties"]["model"] = {**model, "default": "auto"}
    components["MessagesIn"]["properties"]["model"] = model
    openai_errors = _errors(_ref("ErrorEnvelope"))
    anthropic_errors = _errors(_ref("ErrorBody"))
    google_error = {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["code", "message", "status"],
        "properties": {"code": {"type": "integer"}, "message": {"type": "string"}, "status": {"type": "string"}}}}}
    chat = _operation("Create a chat completion, routed to any configured provider.", _ref("ChatRequest"),
                      _answer("The completion, or its chunks as server-sent events.", _ref("ChatCompletion"),
                              stream=True), openai_errors)
    message = _operation("Create a message in Anthropic's Messages format, routed to any configured provider.",
                         {"allOf": [_ref("MessagesIn")], "required": ["model", "max_tokens", "messages"]},
                         _answer("The message, or its events.", {"type": "object"}, stream=True), anthropic_errors)
    count = _operation("Estimate a Messages request's input tokens (nothing is sent upstream).", _ref("MessagesIn"),
                       _answer("The estimate.", {"type": "object", "required": ["input_tokens"],
                                                 "properties": {"input_tokens": {"type": "integer"}}}),
                       anthropic_errors)
    native_anthropic = {"type": "object", "required": ["model", "max_tokens", "messages"], "properties": {
        "model": model, "max_tokens": {"type": "integer"}, "messages": {"type": "array", "items": {"type": "object"}},
        "stream": {"type": "boolean"}}}
    native_gemini = {"type": "object", "required": ["contents"], "properties": {
        "contents": {"type": "array", "items": {"type": "object"}},
        "generationConfig": {"type": "object", "properties": {"maxOutputTokens": {"type": "integer"},
                                                               "candidateCount": {"type": "integer"}}}}}
    health = _answer("The gateway's state.", {"type": "object"})
    paths = {
        "/v1/chat/completions": {"post": chat},
        "/v1/models": {"get": _operation("The models this gateway serves.", None,
                                         _answer("The model list.", _ref("ModelList")), openai_errors)},
        "/v1/usage": {"get": _operation("The calling key's spend, remaining budget and limits.", None,
                                        _answer("The key's usage.", {"type": "object"}), openai_errors)},
        "/v1/messages": {"post": message},
        "/v1/responses": {"post": _operation(
            "Create a response in OpenAI's Responses format, routed to any configured provider.",
            {"type": "object", "required": ["input"], "properties": {"model": {**model, "default": "auto"},
                                                                    "input": {}, "stream": {"type": "boolean"},
                                                                    "store": {"type": "boolean"}}},
            _answer("The Response object, or its events.", {"type": "object"}, stream=True), openai_errors)},
        "/v1/responses/{response_id}": {
            "get": _operation("One of the calling key's stored responses.", None,
                              _answer("The Response object.", {"type": "object"}), openai_errors),
            "delete": _operation("Delete one of the calling key's stored responses.", None,
                                 _answer("The deletion.", {"type": "object"}), openai_errors),
            "parameters": [{"name": "response_id", "in": "path", "required": True, "schema": {"type": "string"}}]},
        "/v1/responses/{response_id}/input_items": {
            "get": _operation("A stored response's input items, paged by 'after', 'limit' and 'order'.", None,
                              _answer("The list.", {"type": "object"}), openai_errors),
            "parameters": [{"name": "response_id", "in": "path", "required": True, "schema": {"type": "string"}}]},
        "/v1/embeddings": {"post": _operation(
            "Create embeddings for any embedding model (docs/embeddings.md).",
            {"type": "object", "required": ["input"], "properties": {
                "model": {**model, "default": "auto"}, "input": {},
                "encoding_format": {"enum": ["float", "base64"]},
                "dimensions": {"type": "integer", "minimum": 1, "maximum": MAX_DIMENSIONS},
                "user": {"type": "string"}}},
            _answer("The embeddings.", {"type": "object"}), openai_errors)},
        "/v1/models/{model_id}": {
            "get": _operation("One entry of the model list.", None, _answer("The model.", {"type": "object"}),
                              openai_errors),
            "parameters": [{"name": "model_id", "in": "path", "required": True, "schema": {"type": "string"}}]},
        "/v1/messages/count_tokens": {"post": count},
        "/openai/v1/chat/completions": {"post": _operation(
            "OpenAI's own chat completions, passed through.", _ref("ChatRequest"),
            _answer("OpenAI's answer.", {"type": "object"}, stream=True), openai_errors)},
        "/anthropic/v1/messages": {"post": _operation(
            "Anthropic's own Messages API, passed through.", native_anthropic,
            _answer("Anthropic's answer.", {"type": "object"}, stream=True), anthropic_errors)},
        "/gemini/v1beta/models/{model}:generateContent": {"post": {
            **_operation("Google's own generateContent, passed through.", native_gemini,
                         _answer("Google's answer.", {"type": "object"}), _errors(google_error)),
            "parameters": [{"name": "model", "in": "path", "required": True, "schema": model}]}},
        "/healthz": {"get": _operation("Liveness.", None, health, {}, public=True)},
        "/readyz": {"get": _operation("Readiness.", None, health, {"503": health}, public=True)},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "gateway", "version": __version__,
                 "description": "A self-hosted LLM gateway. Send the gateway key as 'Authorization: Bearer' "
                                "(Anthropic routes also take 'x-api-key', Google's 'x-goog-api-key')."},
        "paths": paths,
        "components": {"schemas": components,
                       "securitySchemes": {"gatewayKey": {"type": "http", "scheme": "bearer"}}},
        "security": [{"gatewayKey": []}],
    }


@functools.cache
def document_bytes() -> bytes:
    """The document, encoded once per process: it depends on the code alone, never on the config."""
    return msgspec.json.encode(document())
