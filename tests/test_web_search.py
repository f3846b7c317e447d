"""Web search, translated: the Responses API's ``web_search`` tool and chat's ``web_search_options`` become
Anthropic's web search tool and Gemini's Google Search grounding, and their answers' searches and citations
come back as ``web_search_call`` items and ``url_citation`` annotations (docs/responses.md, "Web search").

The official openai SDK drives the real app in-process against loopback fakes that answer in the shapes
Anthropic's and Google's documentation give for a search (non-ASCII text before each citation, so a
byte offset taken for a character index shows). Each test also checks what reached the fake."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pydantic
import pytest
from openai.types import responses as sdk
from openai.types.chat import ChatCompletionMessage
from openai.types.chat.completion_create_params import WebSearchOptions

from gateway.providers import gemini
from gateway.providers.base import ResponseContext
from gateway.sse import SSEEvent, SSEParser
from tests.fakes import FIXTURES, FakeUpstream, Reply, json_reply
from tests.inprocess import Harness, gateway_for
from tests.test_responses_translation import EVENTS

CLAUDE = "anthropic/claude-sonnet-4-5"
GEMINI = "google/gemini-2.5-flash"
PROVIDERS = """
[providers.anthropic]
type = "anthropic"
base_url = "{base}/an"
api_key = "upstream-anthropic"

[providers.google]
type = "gemini"
base_url = "{base}/gg"
api_key = "upstream-google"
"""
WEATHER = {"type": "function", "name": "get_weather", "description": "Weather for a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
SEARCH_TOOL = {"type": "web_search", "search_context_size": "high", "filters": {"allowed_domains": ["wikipedia.org"]},
               "user_location": {"type": "approximate", "city": "Berlin", "country": "DE"}}
ResponseModel = pydantic.TypeAdapter(sdk.Response)


@pytest.fixture
async def h(fake: FakeUpstream, tmp_path: Path) -> AsyncIterator[Harness]:
    async with gateway_for(fake, tmp_path, extra=PROVIDERS.format(base=fake.base)) as harness:
        yield harness


def sse(events: list[tuple[str | None, dict[str, Any]]], sep: bytes = b"\n\n") -> Reply:
    chunks = [(f"event: {name}\n" if name else "").encode() + b"data: " + json.dumps(data).encode() + sep
              for name, data in events]
    return Reply(chunks=chunks, headers={"content-type": "text/event-stream"})


# ------------------------------------------------------------------------------- Anthropic's answers
# From Anthropic's web search tool documentation: a search, its results, then text blocks citing them.

CLAUDE_INTRO = "Ich suche kurz nach — Claude Shannons Geburtstag. "
CLAUDE_LEAD = "Laut den Ergebnissen: "
CLAUDE_CITED = "Claude Shannon wurde am 30. April 1916 in Petoskey, Michigan, geboren."
CLAUDE_TEXT = CLAUDE_INTRO + CLAUDE_LEAD + CLAUDE_CITED
SHANNON_URL = "https://en.wikipedia.org/wiki/Claude_Shannon"
QUERY = "claude shannon birth date"
CITATION = {"type": "web_search_result_location", "url": SHANNON_URL, "title": "Claude Shannon - Wikipedia",
            "encrypted_index": "Eo8BCioIAhgBIiQyYjQ0OWJmZi1lNm",
            "cited_text": "Claude Elwood Shannon (April 30, 1916 – February 24, 2001) was an American mathematician"}
SEARCH_RESULT = {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_01WYG3ziw53XMcoyKL4XcZmE",
                 "content": [{"type": "web_search_result", "url": SHANNON_URL, "title": "Claude Shannon - Wikipedia",
                              "encrypted_content": "EqgfCioIARgBIiQ3YTAwMjY1Mi1mZjM5", "page_age": "April 30, 2025"}]}
CLAUDE_MESSAGE = {
    "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
    "content": [
        {"type": "text", "text": CLAUDE_INTRO, "citations": None},
        {"type": "server_tool_use", "id": "srvtoolu_01WYG3ziw53XMcoyKL4XcZmE", "name": "web_search",
         "input": {"query": QUERY}},
        SEARCH_RESULT,
        {"type": "text", "text": CLAUDE_LEAD, "citations": None},
        {"type": "text", "text": CLAUDE_CITED, "citations": [CITATION]},
    ],
    "stop_reason": "end_turn", "stop_sequence": None,
    "usage": {"input_tokens": 6039, "output_tokens": 931, "server_tool_use": {"web_search_requests": 1}},
}


def claude_stream() -> Reply:
    """The same answer streamed: the search's input as input_json_delta, citations as citations_delta."""
    def block(index: int, start: dict[str, Any], *deltas: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        return [("content_block_start", {"type": "content_block_start", "index": index, "content_block": start}),
                *[("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d}) for d in deltas],
                ("content_block_stop", {"type": "content_block_stop", "index": index})]
    text = {"type": "text_delta"}
    message = {**CLAUDE_MESSAGE, "content": [], "stop_reason": None,
               "usage": {"input_tokens": 6039, "output_tokens": 1}}
    return sse([
        ("message_start", {"type": "message_start", "message": message}),
        *block(0, {"type": "text", "text": ""}, {**text, "text": CLAUDE_INTRO[:20]},
               {**text, "text": CLAUDE_INTRO[20:]}),
        *block(1, {"type": "server_tool_use", "id": "srvtoolu_01WYG3ziw53XMcoyKL4XcZmE", "name": "web_search",
                   "input": {}},
               {"type": "input_json_delta", "partial_json": '{"query": "claude sh'},
               {"type": "input_json_delta", "partial_json": 'annon birth date"}'}),
        *block(2, SEARCH_RESULT),
        *block(3, {"type": "text", "text": ""}, {**text, "text": CLAUDE_LEAD}),
        *block(4, {"type": "text", "text": "", "citations": []}, {"type": "citations_delta", "citation": CITATION},
               {**text, "text": CLAUDE_CITED[:30]}, {**text, "text": CLAUDE_CITED[30:]}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                           "usage": {"output_tokens": 931, "server_tool_use": {"web_search_requests": 1}}}),
        ("message_stop", {"type": "message_stop"}),
    ])


CLAUDE_ANNOTATION = {"type": "url_citation", "start_index": len(CLAUDE_INTRO + CLAUDE_LEAD),
                     "end_index": len(CLAUDE_TEXT), "url": SHANNON_URL, "title": "Claude Shannon - Wikipedia"}

# --------------------------------------------------------------------------------- Gemini's answers
# From Google's "Grounding with Google Search" documentation: groundingMetadata with the queries, the web
# sources, and supports whose segments are UTF-8 byte offsets into the answer's text.

GEMINI_FIRST = "Spanien gewann die EM 2024 – im Finale 2:1 gegen England."
GEMINI_SECOND = "Es ist Spaniens vierter Titel – ein Rekord."
GEMINI_TEXT = f"{GEMINI_FIRST} {GEMINI_SECOND}"
SECOND_BYTE = GEMINI_TEXT.encode().index(GEMINI_SECOND.encode())
ALJAZEERA = "https://vertexaisearch.cloud.google.com/grounding-api-redirect/AbF9wXE1"
UEFA = "https://vertexaisearch.cloud.google.com/grounding-api-redirect/AbF9wXE2"
QUERIES = ["EM 2024 Sieger", "wer gewann die EM 2024"]
GROUNDING = {
    "webSearchQueries": QUERIES,
    "searchEntryPoint": {"renderedContent": "<!-- HTML and CSS for the search widget -->"},
    "groundingChunks": [{"web": {"uri": ALJAZEERA, "title": "aljazeera.com"}},
                        {"web": {"uri": UEFA, "title": "uefa.com"}}],
    "groundingSupports": [
        # proto3 JSON leaves out a startIndex of 0
        {"segment": {"endIndex": len(GEMINI_FIRST.encode()), "text": GEMINI_FIRST}, "groundingChunkIndices": [0]},
        {"segment": {"startIndex": SECOND_BYTE, "endIndex": SECOND_BYTE + len(GEMINI_SECOND.encode()),
                     "text": GEMINI_SECOND}, "groundingChunkIndices": [0, 1]},
    ],
}
GEMINI_USAGE = {"promptTokenCount": 12, "candidatesTokenCount": 30, "totalTokenCount": 42}
GEMINI_ANSWER = {"candidates": [{"content": {"role": "model", "parts": [{"text": GEMINI_TEXT}]}, "finishReason": "STOP",
                                 "index": 0, "groundingMetadata": GROUNDING}],
                 "usageMetadata": GEMINI_USAGE, "modelVersion": "gemini-2.5-flash"}


def gemini_stream() -> Reply:
    """Streamed, the grounding comes with the last piece of text and the finishReason."""
    first = {"candidates": [{"content": {"role": "model", "parts": [{"text": GEMINI_FIRST + " "}]}, "index": 0}],
             "usageMetadata": {"promptTokenCount": 12, "totalTokenCount": 12}}
    last = {"candidates": [{"content": {"role": "model", "parts": [{"text": GEMINI_SECOND}]}, "finishReason": "STOP",
                            "index": 0, "groundingMetadata": GROUNDING}], "usageMetadata": GEMINI_USAGE}
    return sse([(None, first), (None, last)], sep=b"\r\n\r\n")


SECOND_CHAR = GEMINI_TEXT.index(GEMINI_SECOND)
GEMINI_ANNOTATIONS = [
    {"type": "url_citation", "start_index": 0, "end_index": len(GEMINI_FIRST), "url": ALJAZEERA,
     "title": "aljazeera.com"},
    {"type": "url_citation", "start_index": SECOND_CHAR, "end_index": len(GEMINI_TEXT), "url": ALJAZEERA,
     "title": "aljazeera.com"},
    {"type": "url_citation", "start_index": SECOND_CHAR, "end_index": len(GEMINI_TEXT), "url": UEFA,
     "title": "uefa.com"},
]


def test_the_fixtures_put_non_ascii_text_before_each_citation() -> None:
    # Otherwise a byte offset and a character index would agree and the tests below prove nothing.
    assert SECOND_BYTE != SECOND_CHAR
    assert len(CLAUDE_INTRO.encode()) != len(CLAUDE_INTRO)


# ----------------------------------------------------------------------------------- Responses API


def ignored(raw: Any) -> list[str]:
    return [p.strip() for p in raw.headers.get("x-gateway-ignored-params", "").split(",") if p.strip()]


async def test_responses_web_search_on_anthropic(fake: FakeUpstream, h: Harness) -> None:
    fake.reply(json_reply(CLAUDE_MESSAGE))
    raw = await h.client.responses.with_raw_response.create(model=CLAUDE, input="When was Claude Shannon born?",
                                                            tools=[SEARCH_TOOL], max_tool_calls=3)  # type: ignore[list-item]
    response = raw.parse()
    sent = fake.last.json()
    assert sent["tools"] == [{"type": "web_search_20250305", "name": "web_search", "allowed_domains": ["wikipedia.org"],
                              "user_location": {"type": "approximate", "city": "Berlin", "country": "DE"},
                              "max_uses": 3}]
    assert ignored(raw) == ["tools[0].search_context_size"]  # Anthropic sizes what it reads itself
    ResponseModel.validate_python(json.loads(raw.http_response.text))
    search, message = response.output
    assert isinstance(search, sdk.ResponseFunctionWebSearch)
    assert search.status == "completed" and search.action.type == "search" and search.action.query == QUERY
    assert isinstance(message, sdk.ResponseOutputMessage)
    text = message.content[0]
    assert isinstance(text, sdk.ResponseOutputText)
    assert text.text == CLAUDE_TEXT
    assert [a.model_dump() for a in text.annotations] == [CLAUDE_ANNOTATION]
    assert text.text[len(CLAUDE_INTRO + CLAUDE_LEAD):] == CLAUDE_CITED


async def test_continuing_from_a_response_with_searches_reports_nothing(fake: FakeUpstream, h: Harness) -> None:
    fake.reply(json_reply(CLAUDE_MESSAGE), json_reply(CLAUDE_MESSAGE))
    first = await h.client.responses.create(model=CLAUDE, input="When was Claude Shannon born?",
                                            tools=[{"type": "web_search"}])
    assert first.output[0].type == "web_search_call"
    raw = await h.client.responses.with_raw_response.create(model=CLAUDE, input="And where?",
                                                            previous_response_id=first.id)
    # The stored web_search_call is the gateway's own record of the first answer, not something left out.
    assert ignored(raw) == []
    turns = fake.last.json()["messages"]
    assert [turn["role"] for turn in turns] == ["user", "assistant", "user"]
    assert turns[1]["content"] == [{"type": "text", "text": CLAUDE_TEXT}]


async def responses_stream(h: Harness, **body: Any) -> list[dict[str, Any]]:
    """The stream the SDK reads, each event also checked against the SDK's own model for its type."""
    events = []
    stream = await h.client.responses.create(stream=True, **body)
    async for event in stream:
        data = event.model_dump(mode="json", exclude_unset=True)
        EVENTS[data["type"]].model_validate(data)
        events.append(data)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    return events


def check_search_events(events: list[dict[str, Any]], queries: list[str]) -> None:
    """Each search: its item added, in_progress, searching, completed, then done, with the same id."""
    for query in queries:
        added = next(e for e in events if e["type"] == "response.output_item.added"
                     and e["item"]["type"] == "web_search_call" and e["item"]["action"]["query"] == query)
        item_id = added["item"]["id"]
        kinds = [e["type"] for e in events if e.get("item_id") == item_id or e.get("item", {}).get("id") == item_id]
        assert kinds == ["response.output_item.added", "response.web_search_call.in_progress",
                         "response.web_search_call.searching", "response.web_search_call.completed",
                         "response.output_item.done"]


async def test_responses_stream_web_search_on_anthropic(fake: FakeUpstream, h: Harness) -> None:
    fake.reply(claude_stream())
    events = await responses_stream(h, model=CLAUDE, input="When was Claude Shannon born?",
                                    tools=[{"type": "web_search"}])
    assert fake.last.json()["tools"] == [{"type": "web_search_20250305", "name": "web_search"}]
    check_search_events(events, [QUERY])
    done = events[-1]["response"]
    assert done["status"] == "completed"
    ResponseModel.validate_python(done)
    # Streamed in the order it happened: the text before the search, the search, the text after it.
    assert [item["type"] for item in done["output"]] == ["message", "web_search_call", "message"]
    assert done["output"][0]["content"][0]["text"] == CLAUDE_INTRO
    cited = done["output"][2]["content"][0]
    assert cited["text"] == CLAUDE_LEAD + CLAUDE_CITED
    # Chat's annotation indexes the whole answer; this one, the text of the message after the search.
    annotation = {**CLAUDE_ANNOTATION, "start_index": len(CLAUDE_LEAD), "end_index": len(CLAUDE_LEAD + CLAUDE_CITED)}
    assert cited["annotations"] == [annotation]
    added = [e for e in events if e["type"] == "response.output_text.annotation.added"]
    assert [(e["annotation"], e["annotation_index"], e["output_index"]) for e in added] == [(annotation, 0, 2)]


async def test_responses_web_search_on_gemini(fake: FakeUpstream, h: Harness) -> None:
    fake.reply(json_reply(GEMINI_ANSWER))
    raw = await h.client.responses.with_raw_response.create(model=GEMINI, input="Wer hat die EM 2024 gewonnen?",
                                                            tools=[WEATHER, SEARCH_TOOL],  # type: ignore[list-item]
                                                            max_tool_calls=3)
    response = raw.parse()
    sent = fake.last.json()
    assert [list(tool) for tool in sent["tools"]] == [["functionDeclarations"], ["googleSearch"]]
    assert sent["tools"][1] == {"googleSearch": {}}
    # Google Search takes no options.
    assert set(ignored(raw)) == {"tools[1].search_context_size", "tools[1].user_location",
                                 "tools[1].filters.allowed_domains", "max_tool_calls"}
    ResponseModel.validate_python(json.loads(raw.http_response.text))
    *searches, message = response.output
    assert [(s.type, s.status, s.action.query) for s in searches] == [  # type: ignore[union-attr]
        ("web_search_call", "completed", query) for query in QUERIES]
    assert isinstance(message, sdk.ResponseOutputMessage)
    text = message.content[0]
    assert isinstance(text, sdk.ResponseOutputText)
    assert text.text == GEMINI_TEXT
    assert [a.model_dump() for a in text.annotations] == GEMINI_ANNOTATIONS
    assert text.text[SECOND_CHAR:len(GEMINI_TEXT)] == GEMINI_SECOND


async def test_responses_stream_web_search_on_gemini(fake: FakeUpstream, h: Harness) -> None:
    fake.reply(gemini_stream())
    events = await responses_stream(h, model=GEMINI, input="Wer hat die EM 2024 gewonnen?",
                                    tools=[{"type": "web_search_preview"}])
    assert fake.last.json()["tools"] == [{"googleSearch": {}}]
    assert [e["annotation"] for e in events if e["type"] == "response.output_text.annotation.added"] \
        == GEMINI_ANNOTATIONS
    check_search_events(events, QUERIES)
    done = events[-1]["response"]
    ResponseModel.validate_python(done)
    # Gemini reports its grounding with the last text: the citations join the open message, then the
    # searches follow it.
    assert [item["type"] for item in done["output"]] == ["message", "web_search_call", "web_search_call"]
    assert done["output"][0]["content"][0]["annotations"] == GEMINI_ANNOTATIONS


async def test_codex_offline_web_search_is_still_reported_ignored(fake: FakeUpstream, h: Harness) -> None:
    exchanges = json.loads((FIXTURES / "clients/codex/model-gpt-4.1.json").read_text())["exchanges"]
    body = next(e["body"] for e in exchanges if e["path"].endswith("/responses"))
    web = next(k for k, tool in enumerate(body["tools"]) if tool["type"] == "web_search")
    assert body["tools"][web] == {"type": "web_search", "external_web_access": False}
    for model, answer in ((CLAUDE, claude_stream()), (GEMINI, gemini_stream())):
        fake.reply(answer)
        async with h.http.stream("POST", "/v1/responses", json={**body, "model": model},
                                 headers={"authorization": f"Bearer {h.key}"}) as raw:
            assert raw.status_code == 200
            assert f"tools[{web}]" in ignored(raw)
            assert b"response.completed" in await raw.aread()
        sent = fake.last.json()
        # Cached results only: no provider's live search is offered in its place.
        assert "web_search" not in json.dumps(sent["tools"]) and "googleSearch" not in json.dumps(sent["tools"])


async def test_responses_web_search_on_an_openai_compatible_chat_server(fake: FakeUpstream, h: Harness) -> None:
    fake.reply(json_reply({
        "id": "c", "object": "chat.completion", "created": 1, "model": "m", "choices": [{
            "index": 0, "finish_reason": "stop", "message": {
                "role": "assistant", "content": "Sí: Paris.",
                "annotations": [{"type": "url_citation", "url_citation": {
                    "start_index": 4, "end_index": 10, "url": "https://fr.example", "title": "Paris"}}]}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}))
    raw = await h.client.responses.with_raw_response.create(model="a/m", input="Capital of France?",
                                                            tools=[SEARCH_TOOL])  # type: ignore[list-item]
    assert fake.last.json()["web_search_options"] == {
        "search_context_size": "high",
        "user_location": {"type": "approximate", "approximate": {"city": "Berlin", "country": "DE"}}}
    assert ignored(raw) == ["tools[0].filters.allowed_domains"]  # chat's web_search_options has no filter
    message = raw.parse().output[0]
    assert isinstance(message, sdk.ResponseOutputMessage)
    assert message.content[0].model_dump()["annotations"] == [
        {"type": "url_citation", "start_index": 4, "end_index": 10, "url": "https://fr.example", "title": "Paris"}]


async def test_bad_web_search_tools_are_400s(h: Harness) -> None:
    for tools, param in (
        ([{"type": "web_search", "search_context_size": "huge"}], "tools[0].search_context_size"),
        ([{"type": "web_search", "filters": {"allowed_domains": [1]}}], "tools[0].filters.allowed_domains"),
        ([{"type": "web_search"}, {"type": "web_search_preview"}], "tools[1]"),
    ):
        with pytest.raises(openai.BadRequestError) as caught:
            await h.client.responses.create(model=CLAUDE, input="hi", tools=tools)  # type: ignore[arg-type]
        assert caught.value.body["param"] == param  # type: ignore[index]


# --------------------------------------------------------------------------------- Chat Completions

CHAT_OPTIONS: WebSearchOptions = {"search_context_size": "low",
                "user_location": {"type": "approximate",
                                  "approximate": {"city": "Berlin", "timezone": "Europe/Berlin"}}}


@pytest.mark.fidelity("web-search", "anthropic", "non-stream")
async def test_chat_web_search_options_on_anthropic(fake: FakeUpstream, h: Harness) -> None:
    fake.reply(json_reply(CLAUDE_MESSAGE))
    raw = await h.client.chat.completions.with_raw_response.create(
        model=CLAUDE, messages=[{"role": "user", "content": "When was Claude Shannon born?"}],
        web_search_options=CHAT_OPTIONS)
    assert fake.last.json()["tools"] == [{"type": "web_search_20250305", "name": "web_search", "user_location": {
        "type": "approximate", "city": "Berlin", "timezone": "Europe/Berlin"}}]
    assert ignored(raw) == ["web_search_options.search_context_size"]
    # The SDK's own type for the message (the gateway's routing metadata is not OpenAI's string map).
    message = ChatCompletionMessage.model_validate(json.loads(raw.http_response.text)["choices"][0]["message"])
    assert message.content == CLAUDE_TEXT
    assert [a.model_dump() for a in message.annotations or ()] == [{"type": "url_citation", "url_citation": {
        k: v for k, v in CLAUDE_ANNOTATION.items() if k != "type"}}]


@pytest.mark.fidelity("web-search", "anthropic", "stream")
async def test_chat_stream_web_search_options_on_anthropic(fake: FakeUpstream, h: Harness) -> None:
    fake.reply(claude_stream())
    stream = await h.client.chat.completions.create(
        model=CLAUDE, messages=[{"role": "user", "content": "When was Claude Shannon born?"}],
        web_search_options={}, stream=True)
    text, annotations = "", []
    async for chunk in stream:
        for choice in chunk.choices:
            text += choice.delta.content or ""
            annotations += (choice.delta.model_extra or {}).get("annotations", [])
    assert text == CLAUDE_TEXT
    # Streamed, each entry has its place in the message's list (what the SDK's stream helper merges by).
    assert annotations == [{"type": "url_citation", "index": 0, "url_citation": {
        k: v for k, v in CLAUDE_ANNOTATION.items() if k != "type"}}]


@pytest.mark.fidelity("web-search", "gemini", "stream")
async def test_chat_stream_web_search_options_on_gemini(fake: FakeUpstream, h: Harness) -> None:
    fake.reply(gemini_stream())
    raw = await h.client.chat.completions.with_raw_response.create(
        model=GEMINI, messages=[{"role": "user", "content": "Wer hat die EM 2024 gewonnen?"}],
        web_search_options=CHAT_OPTIONS, stream=True)
    assert fake.last.json()["tools"] == [{"googleSearch": {}}]
    assert ignored(raw) == ["web_search_options.search_context_size", "web_search_options.user_location"]
    text, annotations, queries = "", [], []
    parser = SSEParser()
    for event in parser.feed(await raw.http_response.aread()) + parser.close():
        if event.data == b"[DONE]":
            continue
        for choice in json.loads(event.data)["choices"]:
            text += choice["delta"].get("content") or ""
            annotations += choice["delta"].get("annotations", [])
            queries += choice["delta"].get("web_search_queries", [])
    assert text == GEMINI_TEXT
    assert annotations == [{"type": "url_citation", "index": k, "url_citation": {
        name: value for name, value in a.items() if name != "type"}} for k, a in enumerate(GEMINI_ANNOTATIONS)]
    assert queries == QUERIES


@pytest.mark.fidelity("web-search", "gemini", "non-stream")
async def test_chat_web_search_options_on_gemini(fake: FakeUpstream, h: Harness) -> None:
    fake.reply(json_reply(GEMINI_ANSWER))
    completion = await h.client.chat.completions.create(
        model=GEMINI, messages=[{"role": "user", "content": "Wer hat die EM 2024 gewonnen?"}], web_search_options={})
    message = completion.choices[0].message
    assert message.content == GEMINI_TEXT
    assert [a.url_citation.model_dump() | {"type": a.type} for a in message.annotations or ()] == GEMINI_ANNOTATIONS


async def test_chat_web_search_options_are_forwarded_to_openai_compatible_servers(fake: FakeUpstream,
                                                                                 h: Harness) -> None:
    await h.client.chat.completions.create(model="a/m", messages=[{"role": "user", "content": "hi"}],
                                           web_search_options=CHAT_OPTIONS)
    assert fake.last.json()["web_search_options"] == CHAT_OPTIONS


def test_gemini_grounding_repeated_in_a_later_record_is_not_sent_twice() -> None:
    translator = gemini.stream_translator(ResponseContext(request_id="req_1", provider="google", public_model=GEMINI))
    records = [{"candidates": [{"content": {"role": "model", "parts": [{"text": GEMINI_TEXT}]}, "index": 0,
                                "groundingMetadata": GROUNDING}]},
               {"candidates": [{"content": {"role": "model", "parts": []}, "finishReason": "STOP", "index": 0,
                                "groundingMetadata": GROUNDING}], "usageMetadata": GEMINI_USAGE}]
    frames = [frame for record in records for frame in translator.feed(SSEEvent(data=json.dumps(record).encode()))]
    frames += translator.close()
    deltas = [choice["delta"] for event in SSEParser().feed(b"".join(frames)) if event.data != b"[DONE]"
              for choice in json.loads(event.data)["choices"]]
    assert [a["url_citation"]["url"] for d in deltas for a in d.get("annotations", [])] == [ALJAZEERA, ALJAZEERA, UEFA]
    assert [q for d in deltas for q in d.get("web_search_queries", [])] == QUERIES


async def test_the_sdk_stream_helper_puts_annotations_from_several_chunks_together(fake: FakeUpstream,
                                                                                  h: Harness) -> None:
    """Gemini grounding the first sentence in one record and both in the next: two chunks of annotations,
    which ``chat.completions.stream`` accumulates only when each entry has its ``index``."""
    first_only = {**GROUNDING, "groundingSupports": GROUNDING["groundingSupports"][:1]}  # type: ignore[index]
    fake.reply(sse([
        (None, {"candidates": [{"content": {"role": "model", "parts": [{"text": GEMINI_FIRST + " "}]}, "index": 0,
                                "groundingMetadata": first_only}]}),
        (None, {"candidates": [{"content": {"role": "model", "parts": [{"text": GEMINI_SECOND}]}, "index": 0,
                                "finishReason": "STOP", "groundingMetadata": GROUNDING}],
                "usageMetadata": GEMINI_USAGE}),
    ], sep=b"\r\n\r\n"))
    async with h.client.chat.completions.stream(
            model=GEMINI, messages=[{"role": "user", "content": "Wer hat die EM 2024 gewonnen?"}],
            web_search_options={}) as stream:
        completion = await stream.get_final_completion()
    message = completion.choices[0].message
    assert message.content == GEMINI_TEXT
    assert [a.url_citation.model_dump() | {"type": a.type} for a in message.annotations or ()] == GEMINI_ANNOTATIONS
