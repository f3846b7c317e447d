"""Today's agent clients, installed from the registries at pinned versions and run with their default
settings against a real `gateway serve` whose upstreams are scripted fakes (tests/scripted_fakes.py).

Each test asserts what the user gets: the file the agent wrote, the object parsed to its schema, the tool
called with its arguments, the final text. The npm clients are installed once per run into a cache
folder outside the checkout; when npm or its registry is unreachable the tests skip saying so, except in
CI (`CI=true`), where a client that cannot be installed fails the run.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from pydantic import BaseModel

from tests.conftest import UPSTREAM_KEY, RunningGateway, python_client, serve_gateway
from tests.fakes import FakeUpstream, fixture_bytes, sse_reply
from tests.scripted_fakes import ANTHROPIC_SIGNATURE, GEMINI_SIGNATURE, Script, scripted

ROOT = Path(__file__).resolve().parent.parent

# The gateway the README's examples assume, replaced in its Claude Code lines by the test gateway.
README_BASE = "http://127.0.0.1:8080"
README_KEY = "sk-proxy-..."

MESSAGES_TARGETS = ["openai/gpt-4o", "google/gemini-2.5-flash", "anthropic/claude-sonnet-4-5"]


# ------------------------------------------------------------------------ the gateway and its fakes

@dataclass
class Scripted:
    gateway: RunningGateway
    fake: FakeUpstream

    def play(self, script: Script) -> None:
        self.fake.reset()
        self.fake.default = scripted(script)

    def sent(self, suffix: str) -> list[dict[str, Any]]:
        return [r.json() for r in self.fake.received if r.method == "POST" and suffix in r.path]


@pytest.fixture(scope="module")
def scripted_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scripted]:
    """A gateway whose `openai`, `anthropic` and `google` providers are one scripted fake (by path)."""
    fake = FakeUpstream().start()
    root = tmp_path_factory.mktemp("real-clients")
    providers = "".join(f"""
[providers.{name}]
type = "{kind}"
base_url = "{fake.base}{path}"
api_key = "{UPSTREAM_KEY}"
""" for name, kind, path in (("openai", "openai", "/v1"), ("anthropic", "anthropic", ""), ("google", "gemini", "")))
    config = f'[server]\ndata_dir = "{root / "data"}"\n\n[routing]\nretries = 0\n{providers}'
    try:
        with serve_gateway(root, config) as gw:
            yield Scripted(gw, fake)
    finally:
        fake.stop()


# -------------------------------------------------------------------------------------- Claude Code

def readme_claude_lines() -> dict[str, list[str]]:
    """The README's Claude Code command lines, by base-URL path ("" = /v1/messages, "/anthropic" = native)."""
    lines: dict[str, list[str]] = {}
    for match in re.finditer(r"^ANTHROPIC_BASE_URL=(\S+) ANTHROPIC_API_KEY=(\S+) claude\b(.*)$",
                             (ROOT / "README.md").read_text(), re.M):
        url, key, args = match.groups()
        assert url.startswith(README_BASE) and key == README_KEY, match.group(0)
        lines[url.removeprefix(README_BASE)] = shlex.split(args)
    return lines


def test_readme_claude_code_lines() -> None:
    """The lines the Claude Code tests below run are the README's, word for word."""
    assert readme_claude_lines() == {"": ["--model", "openai/gpt-4o"], "/anthropic": []}


def claude(clients: Path, sc: Scripted, route: str, model: str | None, prompt: str, *extra: str,
           cwd: Path) -> dict[str, Any]:
    """Run the README's Claude Code line for `route` (with `model` in place of its --model), in print mode."""
    args = readme_claude_lines()[route]
    if model is not None:
        args[args.index("--model") + 1] = model
    home = cwd / ".home"
    home.mkdir(exist_ok=True)
    env = {
        "PATH": os.environ["PATH"], "HOME": str(home), "LANG": "C.UTF-8", "TERM": "dumb",
        "ANTHROPIC_BASE_URL": sc.gateway.base + route, "ANTHROPIC_API_KEY": sc.gateway.key,
        # Its own side calls to the internet (telemetry, error reports, updates): no network here. These
        # change nothing it sends to the model API.
        "DISABLE_TELEMETRY": "1", "DISABLE_ERROR_REPORTING": "1", "DISABLE_AUTOUPDATER": "1",
        "DISABLE_BUG_COMMAND": "1",
    }
    # --dangerously-skip-permissions refuses to run as root (CI), and in print mode the default mode
    # denies Write: acceptEdits lets it write files in the working directory.
    argv = [str(clients / "node_modules/.bin/claude"), *args, "-p", prompt, "--output-format", "json",
            "--permission-mode", "acceptEdits", *extra]
    try:
        # ~2 s on a quiet machine; a longer run is Claude Code retrying errors with backoff.
        proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired as timeout:
        pytest.fail(f"Claude Code still retrying after 60 s; gateway log:\n{sc.gateway.logs()[-3000:]}\n{timeout}")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, f"rc={proc.returncode}\nstdout={proc.stdout[-2000:]}\nstderr={proc.stderr[-2000:]}"
    result: dict[str, Any] = json.loads(lines[-1])
    assert proc.returncode == 0 and not result.get("is_error"), result
    return result


CLAUDE_TARGETS = [pytest.param("", m, id=m) for m in MESSAGES_TARGETS] + [pytest.param("/anthropic", None, id="native")]


@pytest.mark.parametrize(("route", "model"), CLAUDE_TARGETS)
def test_claude_code_plain_answer(npm_clients: Path, scripted_gateway: Scripted, tmp_path: Path,
                                  route: str, model: str | None) -> None:
    scripted_gateway.play(Script(text="Paris is the capital of France."))
    result = claude(npm_clients, scripted_gateway, route, model, "What is the capital of France?", cwd=tmp_path)
    assert result["result"] == "Paris is the capital of France."


@pytest.mark.parametrize(("route", "model"), CLAUDE_TARGETS)
def test_claude_code_writes_a_file(npm_clients: Path, scripted_gateway: Scripted, tmp_path: Path,
                                   route: str, model: str | None) -> None:
    """Turn 1 the model calls Claude Code's Write tool; the file appears; turn 2 the final text."""
    target = tmp_path / "tool_out.txt"
    scripted_gateway.play(Script(tool="Write", args={"file_path": str(target), "content": "written via gateway\n"},
                                 text="I wrote tool_out.txt."))
    result = claude(npm_clients, scripted_gateway, route, model,
                    "Write the words 'written via gateway' into tool_out.txt.", cwd=tmp_path)
    assert target.read_text() == "written via gateway\n"
    assert result["result"] == "I wrote tool_out.txt."
    assert result["num_turns"] == 2
    # Claude Code asks for thinking by default; the signed thinking must come back intact in turn 2.
    if model is None or model.startswith("anthropic/"):
        turn2 = [b for b in scripted_gateway.sent("/v1/messages") if b.get("tools")][-1]
        echoed = [block for m in turn2["messages"] if m["role"] == "assistant" and isinstance(m["content"], list)
                  for block in m["content"] if block["type"] == "thinking"]
        assert [b["signature"] for b in echoed] == [ANTHROPIC_SIGNATURE]
    elif model.startswith("google/"):
        first, turn2 = scripted_gateway.sent(":streamGenerateContent")[-2:]
        if first["generationConfig"].get("thinkingConfig", {}).get("includeThoughts"):
            calls = [part for c in turn2["contents"] for part in c["parts"] if "functionCall" in part]
            assert [part.get("thoughtSignature") for part in calls] == [GEMINI_SIGNATURE]


@pytest.mark.parametrize(("route", "model"), CLAUDE_TARGETS)
def test_claude_code_runs_bash(npm_clients: Path, scripted_gateway: Scripted, tmp_path: Path,
                               route: str, model: str | None) -> None:
    """The same round trip through the Bash tool, allowed the way a root user (CI) must: --allowedTools."""
    target = tmp_path / "bash_out.txt"
    scripted_gateway.play(Script(tool="Bash", args={"command": f"printf 'via bash' > {target}",
                                                    "description": "Write bash_out.txt"}, text="Ran it."))
    result = claude(npm_clients, scripted_gateway, route, model, "Write 'via bash' into bash_out.txt with a shell.",
                    "--allowedTools", "Bash", cwd=tmp_path)
    assert target.read_text() == "via bash"
    assert result["result"] == "Ran it."


@pytest.mark.parametrize(("route", "model"), CLAUDE_TARGETS)
def test_claude_code_thinking(npm_clients: Path, scripted_gateway: Scripted, tmp_path: Path,
                              route: str, model: str | None) -> None:
    scripted_gateway.play(Script(text="Hello, after some thought."))
    result = claude(npm_clients, scripted_gateway, route, model, "Think about it, then say hello.",
                    "--settings", '{"alwaysThinkingEnabled": true}', cwd=tmp_path)
    assert result["result"] == "Hello, after some thought."
    if model == "openai/gpt-4o":
        # gpt-4o has no reasoning and writes at most 16,384 tokens (catalog): neither may reach OpenAI.
        for body in scripted_gateway.sent("/chat/completions"):
            assert "reasoning_effort" not in body, body.keys()
            assert body.get("max_completion_tokens", body.get("max_tokens", 0)) <= 16384
    elif model is None or model.startswith("anthropic/"):
        # An Anthropic target keeps the thinking the client asked for, and gets its signed block back.
        main = [b for b in scripted_gateway.sent("/v1/messages") if b.get("tools")]
        assert main and all(b["thinking"]["type"] in ("adaptive", "enabled") for b in main)


@pytest.mark.parametrize(("route", "model"), CLAUDE_TARGETS)
def test_claude_code_json_schema(npm_clients: Path, scripted_gateway: Scripted, tmp_path: Path,
                                 route: str, model: str | None) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
              "required": ["city", "country"], "additionalProperties": False}
    scripted_gateway.play(Script(tool="StructuredOutput", values={"city": "Paris", "country": "France"}))
    result = claude(npm_clients, scripted_gateway, route, model, "Give me the capital of France.",
                    "--json-schema", json.dumps(schema), cwd=tmp_path)
    answer = result.get("structured_output") or json.loads(result["result"])
    assert answer == {"city": "Paris", "country": "France"}


# ------------------------------------------------------------------------- the captured requests, replayed

def captured(name: str, seq: int) -> tuple[dict[str, str], dict[str, Any]]:
    exchange = json.loads(fixture_bytes(f"clients/{name}.json"))["exchanges"][seq - 1]
    headers = {k: v for k, v in exchange["headers"] if k.lower().startswith(("anthropic-", "x-app", "user-agent"))}
    return headers, exchange["body"]


def test_claude_code_request_reports_what_gpt_4o_cannot_take(scripted_gateway: Scripted) -> None:
    """Claude Code's main-loop request, as captured: every hint left out is named, the limit lowered is said."""
    scripted_gateway.play(Script(text="ok"))
    headers, body = captured("claude-code/tool-write-accept-edits", 3)
    body["model"] = "openai/gpt-4o"
    answer = httpx.post(f"{scripted_gateway.gateway.base}/v1/messages?beta=true", json=body, timeout=30,
                        headers={**headers, "x-api-key": scripted_gateway.gateway.key})
    assert answer.status_code == 200, answer.text
    ignored = answer.headers.get("x-gateway-ignored-params", "")
    assert "context_management" in ignored and "thinking" in ignored, ignored
    assert "max_tokens=16384" in answer.headers.get("x-gateway-adjusted", "")
    (upstream,) = scripted_gateway.sent("/chat/completions")
    assert upstream["max_completion_tokens"] == 16384 and "reasoning_effort" not in upstream
    assert [m["role"] for m in upstream["messages"]].count("system") >= 2  # the mid-conversation system entry kept
    events = [json.loads(line[6:]) for line in answer.text.splitlines() if line.startswith("data: ")]
    usage = events[0]["message"]["usage"]
    assert isinstance(usage["cache_creation_input_tokens"], int) and isinstance(usage["cache_read_input_tokens"], int)


# ------------------------------------------------------------------------------------------- AI SDK

def aisdk(clients: Path, sc: Scripted, route: str, scenario: str, model: str) -> dict[str, Any]:
    proc = subprocess.run(["node", str(clients / "aisdk.mjs"), route, scenario, f"{sc.gateway.base}/v1",
                           sc.gateway.key, model], capture_output=True, text=True, timeout=120,
                          env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")})
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert proc.returncode == 0 and lines, f"rc={proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    result: dict[str, Any] = json.loads(lines[-1])
    return result


AISDK_CASES = [pytest.param(route, model, id=f"{route}-{model}")
               for route in ("messages", "chat") for model in MESSAGES_TARGETS]


@pytest.mark.parametrize(("route", "model"), AISDK_CASES)
def test_aisdk_stream_text_with_tools(npm_clients: Path, scripted_gateway: Scripted, route: str, model: str) -> None:
    scripted_gateway.play(Script(tool="weather", args={"city": "Paris"}, text="It is 21 degrees in Paris."))
    out = aisdk(npm_clients, scripted_gateway, route, "streamText", model)
    assert out["errors"] == []
    assert out["toolCalls"] == [{"name": "weather", "input": {"city": "Paris"}}]
    assert out["executed"] == ["Paris"]
    assert out["text"] == "It is 21 degrees in Paris."
    assert out["steps"] == 2 and out["finishReason"] == "stop"


@pytest.mark.parametrize(("route", "model"), AISDK_CASES)
def test_aisdk_stream_object(npm_clients: Path, scripted_gateway: Scripted, route: str, model: str) -> None:
    recipe = {"name": "Pancakes", "ingredients": ["flour", "milk", "eggs"], "minutes": 20}
    scripted_gateway.play(Script(values=recipe))
    out = aisdk(npm_clients, scripted_gateway, route, "streamObject", model)
    assert out == {"object": recipe, "errors": []}


# ----------------------------------------------------------------------------------------- LangChain

class Recipe(BaseModel):
    name: str
    ingredients: list[str]
    minutes: int


def test_langchain_openai_structured_output_function_calling_on_gemini(scripted_gateway: Scripted) -> None:
    """`parallel_tool_calls: false` with one named function is satisfiable on Gemini: it must be honoured."""
    chat_openai = python_client("langchain_openai").ChatOpenAI
    recipe: dict[str, Any] = {"name": "Pancakes", "ingredients": ["flour", "milk"], "minutes": 20}
    scripted_gateway.play(Script(values=recipe))
    model = chat_openai(model="google/gemini-2.5-flash", base_url=f"{scripted_gateway.gateway.base}/v1",
                        api_key=scripted_gateway.gateway.key, max_retries=0)
    answer = model.with_structured_output(Recipe, method="function_calling").invoke("A recipe for pancakes.")
    assert answer == Recipe(**recipe)
    (sent,) = scripted_gateway.sent(":generateContent")
    assert sent["toolConfig"]["functionCallingConfig"]["mode"] == "ANY"


@pytest.mark.parametrize("model", MESSAGES_TARGETS)
def test_langchain_anthropic_tool_round_trip(scripted_gateway: Scripted, model: str) -> None:
    chat_anthropic = python_client("langchain_anthropic").ChatAnthropic
    messages = python_client("langchain_core.messages")
    scripted_gateway.play(Script(tool="weather", args={"city": "Paris"}, text="It is 21 degrees in Paris."))

    def weather(city: str) -> str:
        """Current weather in a city."""
        return "21 degrees"

    llm = chat_anthropic(model=model, base_url=scripted_gateway.gateway.base, api_key=scripted_gateway.gateway.key,
                         max_retries=0).bind_tools([weather])
    history: list[Any] = [messages.HumanMessage("What is the weather in Paris?")]
    first = llm.invoke(history)
    assert [(c["name"], c["args"]) for c in first.tool_calls] == [("weather", {"city": "Paris"})]
    history += [first, messages.ToolMessage("21 degrees", tool_call_id=first.tool_calls[0]["id"])]
    final = "".join(chunk.text for chunk in llm.stream(history))
    assert final == "It is 21 degrees in Paris."


# --------------------------------------------------- the openai SDK's stream helper on recorded streams

def sse_events(raw: bytes) -> list[dict[str, Any]]:
    return [json.loads(line[5:]) for line in raw.decode().splitlines() if line.startswith("data:")]


def anthropic_expected(raw: bytes) -> tuple[str, list[tuple[str, str]]]:
    """The text and tool calls (name, raw argument JSON) a recorded Anthropic stream carries."""
    text, tools = "", []
    for event in sse_events(raw):
        if event["type"] == "content_block_start" and event["content_block"]["type"] == "tool_use":
            tools.append([event["content_block"]["name"], ""])
        elif event["type"] == "content_block_delta" and event["delta"]["type"] == "text_delta":
            text += event["delta"]["text"]
        elif event["type"] == "content_block_delta" and event["delta"]["type"] == "input_json_delta":
            tools[-1][1] += event["delta"]["partial_json"]
    return text, [(name, args) for name, args in tools]


def two_thinking_blocks(raw: bytes) -> bytes:
    """The recorded thinking stream as interleaved thinking returns it: thinking, redacted, thinking, text."""
    events = sse_events(raw)
    thinking = [e for e in events if e.get("index") == 0]
    rest = [e for e in events if e.get("index", 0) != 0 or e["type"] not in
            ("content_block_start", "content_block_delta", "content_block_stop")]
    redacted = [{"type": "content_block_start", "index": 1,
                 "content_block": {"type": "redacted_thinking", "data": "RW5jcnlwdGVkIHRoaW5raW5n"}},
                {"type": "content_block_stop", "index": 1}]
    out = [rest[0], *thinking, *redacted, *[{**e, "index": 2} for e in thinking]]
    out += [{**e, "index": e["index"] + 2} if "index" in e else e for e in rest[1:]]
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in out)


ANTHROPIC_STREAMS = ["sdk-stream-basic_response.txt", "sdk-stream-tool_use_response.txt",
                     "sdk-stream-refusal_response.txt", "sdk-stream-incomplete_partial_json_response.txt",
                     "pydantic-ai-thinking-stream.sse", "two-thinking-blocks"]


def final_completion(gateway: RunningGateway, model: str, **extra: Any) -> Any:
    with gateway.client().chat.completions.stream(
            model=model, messages=[{"role": "user", "content": "Hello"}], **extra) as stream:
        try:
            return stream.get_final_completion()
        except (openai.LengthFinishReasonError, openai.ContentFilterFinishReasonError) as stop:
            # The helper raises on these finish reasons by design; what it assembled rides on the error.
            return stop.completion


@pytest.mark.parametrize("name", ANTHROPIC_STREAMS)
def test_openai_stream_helper_on_anthropic_streams(gateway: RunningGateway, fake: FakeUpstream, name: str) -> None:
    raw = (two_thinking_blocks(fixture_bytes("anthropic/pydantic-ai-thinking-stream.sse"))
           if name == "two-thinking-blocks" else fixture_bytes(f"anthropic/{name}"))
    fake.reply(sse_reply(raw))
    completion = final_completion(gateway, "anthropic/claude-sonnet-4-5")
    text, tools = anthropic_expected(raw)
    stop_reason = next(e["delta"]["stop_reason"] for e in sse_events(raw) if e["type"] == "message_delta")
    finish = {"end_turn": "stop", "tool_use": "tool_calls", "max_tokens": "length", "refusal": "content_filter"}
    assert completion.choices[0].finish_reason == finish[stop_reason]
    message = completion.choices[0].message
    assert (message.content or "") == text
    assert [(c.function.name, c.function.arguments) for c in message.tool_calls or []] == tools


@pytest.mark.parametrize("model", MESSAGES_TARGETS)
def test_unified_stream_has_no_usage_member_unless_asked(scripted_gateway: Scripted, model: str) -> None:
    """OpenAI omits `usage` from chunks when the client did not ask for it; a null breaks strict clients."""
    scripted_gateway.play(Script(text="Hello there."))

    def chunks(**extra: Any) -> list[dict[str, Any]]:
        with httpx.stream("POST", f"{scripted_gateway.gateway.base}/v1/chat/completions", timeout=30,
                          headers={"authorization": f"Bearer {scripted_gateway.gateway.key}"},
                          json={"model": model, "stream": True, "messages": [{"role": "user", "content": "Hi"}],
                                **extra}) as answer:
            return [json.loads(line[6:]) for line in answer.iter_lines()
                    if line.startswith("data: ") and line != "data: [DONE]"]

    plain = chunks()
    assert plain and all("usage" not in chunk for chunk in plain), plain
    asked = chunks(stream_options={"include_usage": True})
    assert asked[-1]["usage"]["completion_tokens"] > 0


GEMINI_STREAMS = ["pydantic-ai-stream-with-thoughts.sse", "pydantic-ai-stream-tool-call-turn1.sse",
                  "synthetic-stream-two-candidates.sse"]


@pytest.mark.parametrize("name", GEMINI_STREAMS)
def test_openai_stream_helper_on_gemini_streams(gateway: RunningGateway, fake: FakeUpstream, name: str) -> None:
    raw = fixture_bytes(f"gemini/{name}")
    fake.reply(sse_reply(raw, split=b"\r\n\r\n"))
    records = sse_events(raw)
    candidates = max(len(r["candidates"]) for r in records)
    completion = final_completion(gateway, "google/gemini-2.5-flash", **({"n": candidates} if candidates > 1 else {}))
    for index, choice in enumerate(sorted(completion.choices, key=lambda c: c.index)):
        parts = [p for r in records for c in r["candidates"] if c.get("index", 0) == index
                 for p in c["content"]["parts"]]
        text = "".join(p["text"] for p in parts if "text" in p and not p.get("thought"))
        assert (choice.message.content or "") == text
        calls = [(p["functionCall"]["name"], p["functionCall"]["args"]) for p in parts if "functionCall" in p]
        assert [(c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls or []] == calls
    assert len(completion.choices) == candidates


def test_openai_stream_helper_on_gemini_error_record(gateway: RunningGateway, fake: FakeUpstream) -> None:
    fake.reply(sse_reply(fixture_bytes("gemini/synthetic-stream-error-record.sse"), split=b"\r\n\r\n"))
    with pytest.raises(openai.APIError) as err:
        final_completion(gateway, "google/gemini-2.5-flash")
    assert "Internal error encountered." in err.value.message
