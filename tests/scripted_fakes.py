"""Scripted fake upstreams for the real-client tests: one loopback server answering in three dialects.

A real agent (Claude Code, the AI SDK, LangChain) needs an upstream that behaves like a model for a whole
task, not one canned reply: turn 1 calls a tool the client offered, turn 2 (the tool result is in the
conversation) answers with the final text. `scripted(script)` is a `FakeUpstream.default` that does
this in whichever dialect the gateway sent:

- OpenAI chat (`POST /v1/chat/completions`),
- Anthropic Messages (`POST /v1/messages`),
- Gemini (`POST /v1beta/models/{model}:generateContent` / `:streamGenerateContent?alt=sse`).

Each stream keeps the provider's real event order and usage fields, as in the recordings under
tests/fixtures/: OpenAI's role chunk, `tool_calls` deltas with `index` and the `id`/name only on the
first, a usage chunk with `choices: []` only when `stream_options.include_usage` asked for it; Anthropic's
`message_start` with integer cache counts and `service_tier`, a `ping` after the first block start,
`input_json_delta` fragments, `message_delta` usage; Gemini's CRLF-separated `data:` records with
cumulative `usageMetadata` and whole `functionCall` parts.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from tests.fakes import Received, Reply, json_reply

ANTHROPIC_SIGNATURE = "RmFrZVNpZ25hdHVyZUZvclRlc3Rz"
GEMINI_SIGNATURE = "RmFrZUdlbWluaVNpZ25hdHVyZQ=="


@dataclass
class Script:
    """What the fake model does.

    tool: the tool it calls in turn 1 when the request offers it (a forced `tool_choice` wins); None
    answers with text straight away. args: that tool's arguments (the rest come from its schema).
    values: property name -> value used wherever a schema-built object has that property.
    """
    text: str = "All done."
    tool: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    thinking: str = "The user wants this done; one step."


@dataclass
class Turn:
    """The fake model's answer, dialect-free: optional thinking, then text or one tool call."""
    text: str | None = None
    tool: str | None = None
    arguments: dict[str, Any] | None = None
    thinking: str | None = None


# --------------------------------------------------------------------------------- schema → object

def object_for(schema: Any, values: dict[str, Any], name: str = "") -> Any:
    """A value matching a JSON schema (the subset clients send), preferring scripted values by name."""
    if name in values:
        return values[name]
    if not isinstance(schema, dict):
        return "sample"
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return object_for(schema[key][0], values, name)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object":
        # Like a model, fill what is required and leave optional members out (Claude Code's Bash has an
        # optional `run_in_background` that would detach the command).
        props = schema.get("properties", {})
        required = schema.get("required", list(props))
        return {key: object_for(sub, values, key) for key, sub in props.items() if key in required}
    if kind == "array":
        return [object_for(schema.get("items", {}), values, name)]
    if kind in ("integer", "number"):
        return schema.get("minimum", 1)
    if kind == "boolean":
        return True
    return f"sample {name}".strip()


def _decide(script: Script, tools: dict[str, Any], forced: str | None, has_result: bool,
            schema: Any, thinking: bool) -> Turn:
    thought = script.thinking if thinking else None
    name = forced or (script.tool if script.tool in tools else None)
    if name is not None and not has_result and name in tools:
        arguments = object_for(tools[name], script.values)
        if isinstance(arguments, dict) and name == script.tool:
            arguments.update(script.args)
        return Turn(tool=name, arguments=arguments, thinking=thought)
    if schema is not None:
        return Turn(text=json.dumps(object_for(schema, script.values)), thinking=thought)
    return Turn(text=script.text, thinking=thought)


def _pieces(text: str, size: int = 8) -> Iterator[str]:
    """Split a string the way providers stream it: several deltas, never one."""
    for i in range(0, len(text), size):
        yield text[i:i + size]


# --------------------------------------------------------------------------------------- OpenAI chat

def _openai(script: Script, body: dict[str, Any]) -> Reply:
    tools = {t["function"]["name"]: t["function"].get("parameters", {})
             for t in body.get("tools", []) if t.get("type") == "function"}
    choice = body.get("tool_choice")
    forced = None
    if isinstance(choice, dict):
        forced = choice.get("function", {}).get("name")
    elif choice == "required" and len(tools) == 1:
        forced = next(iter(tools))
    has_result = any(m.get("role") == "tool" for m in body.get("messages", []))
    fmt = body.get("response_format") or {}
    schema = fmt.get("json_schema", {}).get("schema") if fmt.get("type") == "json_schema" else None
    turn = _decide(script, tools, forced, has_result, schema, thinking=False)
    model = body.get("model", "gpt-4o")
    cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    call_id = f"call_{uuid.uuid4().hex[:24]}"
    finish = "tool_calls" if turn.tool else "stop"
    usage = {"prompt_tokens": 120, "completion_tokens": 18, "total_tokens": 138,
             "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
             "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                           "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}
    arguments = json.dumps(turn.arguments) if turn.tool else ""
    if not body.get("stream"):
        message: dict[str, Any] = {"role": "assistant", "content": turn.text, "refusal": None, "annotations": []}
        if turn.tool:
            message["tool_calls"] = [{"id": call_id, "type": "function",
                                      "function": {"name": turn.tool, "arguments": arguments}}]
        return json_reply({"id": cid, "object": "chat.completion", "created": 1764100000, "model": model,
                           "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
                           "usage": usage, "service_tier": "default", "system_fingerprint": "fp_fake"})

    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        out = {"id": cid, "object": "chat.completion.chunk", "created": 1764100000, "model": model,
               "service_tier": "default", "system_fingerprint": "fp_fake",
               "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}
        if include_usage:
            out["usage"] = None  # OpenAI: with include_usage, every chunk but the last carries "usage": null
        return out

    events: list[dict[str, Any]] = []
    if turn.tool:
        events.append(chunk({"role": "assistant", "content": None, "tool_calls": [
            {"index": 0, "id": call_id, "type": "function", "function": {"name": turn.tool, "arguments": ""}}],
            "refusal": None}))
        events += [chunk({"tool_calls": [{"index": 0, "function": {"arguments": p}}]}) for p in _pieces(arguments)]
    else:
        events.append(chunk({"role": "assistant", "content": "", "refusal": None}))
        events += [chunk({"content": p}) for p in _pieces(turn.text or "")]
    events.append(chunk({}, finish))
    if include_usage:
        last = chunk({})
        last["choices"] = []
        last["usage"] = usage
        events.append(last)
    raw = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
    return _sse(raw, b"\n\n")


# ------------------------------------------------------------------------------------------- Anthropic

def _anthropic(script: Script, body: dict[str, Any]) -> Reply:
    tools = {t["name"]: t.get("input_schema", {}) for t in body.get("tools", []) if "input_schema" in t}
    choice = body.get("tool_choice") or {}
    forced = choice.get("name") if choice.get("type") == "tool" else None
    if choice.get("type") == "any" and len(tools) == 1:
        forced = next(iter(tools))
    has_result = any(isinstance(m.get("content"), list) and any(b.get("type") == "tool_result" for b in m["content"])
                     for m in body.get("messages", []))
    fmt = (body.get("output_config") or {}).get("format") or {}
    schema = fmt.get("schema") if fmt.get("type") == "json_schema" else None
    thinking = (body.get("thinking") or {}).get("type") in ("enabled", "adaptive")
    turn = _decide(script, tools, forced, has_result, schema, thinking)
    model = body.get("model", "claude-sonnet-4-5")
    msg_id = f"msg_{uuid.uuid4().hex[:24]}"
    tool_id = f"toolu_{uuid.uuid4().hex[:24]}"
    signature = ANTHROPIC_SIGNATURE
    stop = "tool_use" if turn.tool else "end_turn"
    blocks: list[dict[str, Any]] = []
    if turn.thinking:
        blocks.append({"type": "thinking", "thinking": turn.thinking, "signature": signature})
    if turn.tool:
        blocks.append({"type": "tool_use", "id": tool_id, "name": turn.tool, "input": turn.arguments})
    else:
        blocks.append({"type": "text", "text": turn.text})
    usage = {"input_tokens": 377, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
             "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
             "output_tokens": 42, "service_tier": "standard"}
    if not body.get("stream"):
        return json_reply({"id": msg_id, "type": "message", "role": "assistant", "model": model, "content": blocks,
                           "stop_reason": stop, "stop_sequence": None, "usage": usage})
    events: list[tuple[str, dict[str, Any]]] = [("message_start", {"type": "message_start", "message": {
        "id": msg_id, "type": "message", "role": "assistant", "model": model, "content": [], "stop_reason": None,
        "stop_sequence": None, "usage": {**usage, "output_tokens": 1}}})]
    for index, block in enumerate(blocks):
        kind = block["type"]
        start = {"type": kind, "thinking": "", "signature": ""} if kind == "thinking" else (
            {**block, "input": {}} if kind == "tool_use" else {"type": "text", "text": ""})
        events.append(("content_block_start", {"type": "content_block_start", "index": index, "content_block": start}))
        if index == 0:
            events.append(("ping", {"type": "ping"}))
        if kind == "thinking":
            deltas = [{"type": "thinking_delta", "thinking": p} for p in _pieces(block["thinking"])]
            deltas.append({"type": "signature_delta", "signature": signature})
        elif kind == "tool_use":
            deltas = [{"type": "input_json_delta", "partial_json": ""}]
            deltas += [{"type": "input_json_delta", "partial_json": p} for p in _pieces(json.dumps(block["input"]))]
        else:
            deltas = [{"type": "text_delta", "text": p} for p in _pieces(block["text"])]
        events += [("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})
                   for d in deltas]
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                                     "usage": {"input_tokens": 377, "cache_creation_input_tokens": 0,
                                               "cache_read_input_tokens": 0, "output_tokens": 42}}))
    events.append(("message_stop", {"type": "message_stop"}))
    raw = b"".join(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in events)
    return _sse(raw, b"\n\n")


# ---------------------------------------------------------------------------------------------- Gemini

def _gemini(script: Script, body: dict[str, Any], path: str) -> Reply:
    tools = {d["name"]: d.get("parametersJsonSchema") or d.get("parameters") or {}
             for t in body.get("tools", []) for d in t.get("functionDeclarations", [])}
    calling = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
    allowed = calling.get("allowedFunctionNames") or []
    forced = None
    if calling.get("mode") == "ANY":
        names = allowed or list(tools)
        forced = names[0] if len(names) == 1 else None
    has_result = any("functionResponse" in part for c in body.get("contents", []) for part in c.get("parts", []))
    config = body.get("generationConfig") or {}
    schema = config.get("responseJsonSchema") or config.get("responseSchema")
    thinking = bool((config.get("thinkingConfig") or {}).get("includeThoughts"))
    turn = _decide(script, tools, forced, has_result, schema, thinking)
    model = path.rsplit("/", 1)[-1].split(":")[0]
    signature = GEMINI_SIGNATURE
    parts: list[dict[str, Any]] = []
    if turn.thinking:
        parts.append({"text": turn.thinking, "thought": True})
    if turn.tool:
        # Gemini 2.5 puts the thought signature on the first functionCall part of a thinking turn.
        call: dict[str, Any] = {"functionCall": {"name": turn.tool, "args": turn.arguments}}
        if turn.thinking:
            call["thoughtSignature"] = signature
        parts.append(call)
    else:
        parts += [{"text": p} for p in _pieces(turn.text or "", 16)]

    def usage(out: int) -> dict[str, Any]:
        meta: dict[str, Any] = {"promptTokenCount": 52, "candidatesTokenCount": out, "totalTokenCount": 52 + out,
                                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 52}]}
        if turn.thinking:
            meta["thoughtsTokenCount"] = 12
            meta["totalTokenCount"] += 12
        return meta

    response_id = uuid.uuid4().hex[:22]
    if ":streamGenerateContent" not in path:
        return json_reply({"candidates": [{"content": {"parts": parts, "role": "model"}, "finishReason": "STOP",
                                           "index": 0}],
                           "usageMetadata": usage(len(parts) * 4), "modelVersion": model, "responseId": response_id})
    records = []
    for i, part in enumerate(parts, 1):
        candidate: dict[str, Any] = {"content": {"parts": [part], "role": "model"}, "index": 0}
        if i == len(parts):
            candidate["finishReason"] = "STOP"
        records.append({"candidates": [candidate], "usageMetadata": usage(i * 4), "modelVersion": model,
                        "responseId": response_id})
    # Gemini's SSE uses CRLF line ends (as in tests/fixtures/gemini/*.sse).
    raw = b"".join(b"data: " + json.dumps(r).encode() + b"\r\n\r\n" for r in records)
    return _sse(raw, b"\r\n\r\n")


def _sse(raw: bytes, split: bytes) -> Reply:
    pieces = [p + split for p in raw.split(split) if p.strip()]
    return Reply(chunks=pieces, headers={"content-type": "text/event-stream"})


def scripted(script: Script) -> Callable[[Received], Reply]:
    """A `FakeUpstream.default` playing `script` in the dialect of each request's path."""
    def answer(received: Received) -> Reply:
        if received.method == "GET" and received.path.endswith("/models"):
            return json_reply({"object": "list", "data": []})
        if received.method != "POST" or not received.body:
            return json_reply({"error": {"message": "not found", "type": "not_found"}}, status=404)
        body = received.json()
        if received.path.endswith("/chat/completions"):
            return _openai(script, body)
        if received.path.endswith("/messages"):
            return _anthropic(script, body)
        if ":generateContent" in received.path or ":streamGenerateContent" in received.path:
            return _gemini(script, body, received.path)
        return json_reply({"error": {"message": f"no route {received.path}", "type": "not_found"}}, status=404)
    return answer
