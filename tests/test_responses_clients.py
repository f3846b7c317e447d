"""Real Responses API clients against a real `gateway serve` on ``/v1``: the OpenAI Agents SDK, LangChain's
``ChatOpenAI(use_responses_api=True)``, AI SDK 6's default ``openai(...)`` provider and the Codex CLI, each
running one function-tool round trip to completion with the model routed to an Anthropic fake, to an
OpenAI-compatible chat-only fake and to a Gemini fake (none speaks Responses: every turn is translated).

The fakes are scripted like the capture server of tests/fixtures/clients/: while the conversation has tools
and no tool result, they call a tool (Codex's shell, else the first one) with arguments built from its
schema; once a result is back, they answer text that quotes it, so each client's final answer proves the
result travelled both ways, and each turn must leave its usage record. The Gemini fake answers as Gemini
2.5+ does, with the turn's thought signature on its first functionCall part, which must come back on the
next turn (in the client's `encrypted_content` for Codex, from the gateway's store for clients that leave
`store` true). Versions are pinned as captured: the Python clients in pyproject's test extra, the npm ones
in tests/clients/package.json (installed once into a cache folder outside the checkout; skipped, saying
why, only when the npm registry cannot be reached and never when CI=true).
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import gateway_env, python_client, run_cli, wait_ready
from tests.fakes import FakeUpstream, Received, Reply, free_port, json_reply
from tests.scripted_fakes import GEMINI_SIGNATURE

# The translated targets: an Anthropic model, a model at an OpenAI-compatible server that speaks only Chat
# Completions (its provider is not api.openai.com, so `responses` defaults to false), and a Gemini model.
MODELS = ["anthropic/claude-haiku-4-5", "chat/gpt-4o-mini", "google/gemini-2.5-flash"]
TOOL_RESULT_MARK = "Sunny in"  # what every function tool of these tests answers
CODEX_WROTE = "codex-ran-this"
SECOND_CALL_FILE = "second_call.txt"  # what the call Gemini adds for Codex would write, were it not left out

CONFIG = """
[server]
data_dir = "{data}"

[routing]
retries = 0

[providers.anthropic]
type = "anthropic"
base_url = "{base}/anthropic"
api_key = "upstream-anthropic"

[providers.chat]
type = "openai"
base_url = "{base}/chat/v1"
api_key = "upstream-chat"

[providers.google]
type = "gemini"
base_url = "{base}/google"
api_key = "upstream-google"

# The Agents SDK's default model, routed to the Anthropic fake: `Runner.run` with no model set works as is.
[[models]]
name = "gpt-5.6-luna"
provider = "anthropic"
upstream_name = "claude-haiku-4-5"

# Codex's default model, routed to the Gemini fake: its profile sends parallel_tool_calls false.
[[models]]
name = "gpt-6.1-sol"
provider = "google"
upstream_name = "gemini-2.5-flash"
"""


# ------------------------------------------------------------------------------------ scripted fakes


# Codex's shell: `exec_command` in its classic profile; in the default model's profile, `exec` (a custom tool
# of the `functions` namespace, offered flat as `functions__exec` with one string `input`) whose JavaScript
# calls the same tool (tests/fixtures/clients/codex/, /tmp/notes/captures.md).
CODEX_EXEC = "functions__exec"


def _shell(cmd: str, name: str, workdir: str) -> dict[str, Any]:
    if name == CODEX_EXEC:
        return {"input": f"const r = await tools.exec_command({json.dumps({'cmd': cmd, 'workdir': workdir})}); "
                         "text(r);"}
    return {"cmd": cmd, "workdir": workdir, "yield_time_ms": 2000}


def _arguments(name: str, schema: dict[str, Any], workdir: str) -> dict[str, Any]:
    if name in ("exec_command", CODEX_EXEC):  # write a file the test can look for
        return _shell(f"echo {CODEX_WROTE} > tool_out.txt && cat tool_out.txt", name, workdir)
    values: dict[str, Any] = {}
    for prop, spec in (schema.get("properties") or {}).items():
        kind = spec.get("type")
        values[prop] = 1 if kind in ("integer", "number") else True if kind == "boolean" else "Paris"
    return values


def _pick(tools: list[tuple[str, dict[str, Any]]]) -> tuple[str, dict[str, Any]]:
    return next((t for t in tools if t[0] in ("exec_command", CODEX_EXEC)), tools[0])


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(_text_of(part.get("text") or part.get("content")) for part in content
                        if isinstance(part, dict))
    return ""


def _strings(value: Any) -> list[str]:
    """Every string in a JSON value: the text of a Gemini functionResponse, whatever object wraps it."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    return [s for item in value for s in _strings(item)] if isinstance(value, list) else []


def tool_results(path: str, body: dict[str, Any]) -> list[str]:
    """The tool results a request to the fake carries, in the dialect of its path."""
    if path.endswith("/chat/completions"):
        return [_text_of(m.get("content")) for m in body["messages"] if m.get("role") == "tool"]
    if path.endswith("/v1/messages"):
        return [_text_of(block.get("content")) for m in body["messages"] if isinstance(m.get("content"), list)
                for block in m["content"] if block.get("type") == "tool_result"]
    return [" ".join(_strings(part["functionResponse"].get("response"))) for c in body.get("contents") or []
            for part in c.get("parts") or [] if "functionResponse" in part]


def upstream_path(model: str | None, stream: bool) -> str:
    """Where the gateway sends a turn for ``model`` (None: the Agents SDK's default, routed to Anthropic)."""
    provider, _, name = (model or "anthropic/").partition("/")
    if provider == "chat":
        return "/chat/v1/chat/completions"
    if provider == "google":
        return f"/google/v1beta/models/{name}:{'streamGenerateContent' if stream else 'generateContent'}"
    return "/anthropic/v1/messages"


def _sse(events: list[tuple[str | None, Any]]) -> Reply:
    frames = []
    for name, data in events:
        payload = data if isinstance(data, str) else json.dumps(data)
        frames.append((f"event: {name}\n" if name else "").encode() + f"data: {payload}\n\n".encode())
    return Reply(chunks=frames, headers={"content-type": "text/event-stream"})


def _chat(body: dict[str, Any], workdir: str) -> Reply:
    """OpenAI Chat Completions, the only API of the `chat` provider."""
    tools = [(t["function"]["name"], t["function"].get("parameters") or {}) for t in body.get("tools") or []
             if t.get("type") == "function"]
    results = tool_results("/chat/completions", body)
    model = body["model"]
    usage = {"prompt_tokens": 21, "completion_tokens": 9, "total_tokens": 30}
    if tools and not results:
        name, schema = _pick(tools)
        call = {"id": "call_scripted_1", "type": "function",
                "function": {"name": name, "arguments": json.dumps(_arguments(name, schema, workdir))}}
        message: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [call]}
        finish = "tool_calls"
    else:
        message = {"role": "assistant", "content": f"Done. The tool said: {' | '.join(results).strip()}"}
        finish = "stop"
    if not body.get("stream"):
        return json_reply({"id": "chatcmpl-scripted", "object": "chat.completion", "created": 1, "model": model,
                           "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage})
    base = {"id": "chatcmpl-scripted", "object": "chat.completion.chunk", "created": 1, "model": model}
    chunks: list[tuple[str | None, Any]] = [
        (None, {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})]
    if finish == "tool_calls":
        call = message["tool_calls"][0]
        arguments = call["function"]["arguments"]
        chunks.append((None, {**base, "choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "id": call["id"], "type": "function",
             "function": {"name": call["function"]["name"], "arguments": arguments[:10]}}]}}]}))
        chunks.append((None, {**base, "choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": arguments[10:]}}]}}]}))
    else:
        text = message["content"]
        for piece in (text[: len(text) // 2], text[len(text) // 2:]):
            chunks.append((None, {**base, "choices": [{"index": 0, "delta": {"content": piece}}]}))
    chunks.append((None, {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}))
    chunks.append((None, {**base, "choices": [], "usage": usage}))
    chunks.append((None, "[DONE]"))
    return _sse(chunks)


def _messages(body: dict[str, Any], workdir: str) -> Reply:
    """Anthropic Messages."""
    tools = [(t["name"], t.get("input_schema") or {}) for t in body.get("tools") or [] if "input_schema" in t]
    results = tool_results("/v1/messages", body)
    usage = {"input_tokens": 21, "output_tokens": 9}
    if tools and not results:
        name, schema = _pick(tools)
        content: list[dict[str, Any]] = [{"type": "tool_use", "id": "toolu_scripted_1", "name": name,
                                          "input": _arguments(name, schema, workdir)}]
        stop = "tool_use"
    else:
        content = [{"type": "text", "text": f"Done. The tool said: {' | '.join(results).strip()}"}]
        stop = "end_turn"
    message = {"id": "msg_scripted", "type": "message", "role": "assistant", "model": body["model"],
               "content": content, "stop_reason": stop, "stop_sequence": None, "usage": usage}
    if not body.get("stream"):
        return json_reply(message)
    events: list[tuple[str | None, Any]] = [
        ("message_start", {"type": "message_start", "message": {**message, "content": [], "stop_reason": None,
                                                                "usage": {"input_tokens": 21, "output_tokens": 1}}})]
    block = content[0]
    if block["type"] == "tool_use":
        events.append(("content_block_start", {"type": "content_block_start", "index": 0,
                                               "content_block": {**block, "input": {}}}))
        events.append(("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {
            "type": "input_json_delta", "partial_json": json.dumps(block["input"])}}))
    else:
        events.append(("content_block_start", {"type": "content_block_start", "index": 0,
                                               "content_block": {"type": "text", "text": ""}}))
        events.append(("content_block_delta", {"type": "content_block_delta", "index": 0,
                                               "delta": {"type": "text_delta", "text": block["text"]}}))
    events.append(("content_block_stop", {"type": "content_block_stop", "index": 0}))
    events.append(("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                                      "usage": {"output_tokens": 9}}))
    events.append(("message_stop", {"type": "message_stop"}))
    return _sse(events)


def _gemini(body: dict[str, Any], path: str, workdir: str) -> Reply:
    """Gemini's generateContent / streamGenerateContent?alt=sse, shaped as recorded (tests/fixtures/gemini/)."""
    tools = [(d["name"], d.get("parametersJsonSchema") or d.get("parameters") or {})
             for t in body.get("tools") or [] for d in t.get("functionDeclarations") or []]
    results = tool_results(path, body)
    model = path.rsplit("/", 1)[-1].split(":")[0]
    usage = {"promptTokenCount": 21, "candidatesTokenCount": 9, "thoughtsTokenCount": 4, "totalTokenCount": 34}
    if tools and not results:
        name, schema = _pick(tools)
        # Gemini 2.5+ thinks before it calls, and puts the turn's signature on the first functionCall part
        # (pydantic-ai-parallel-functionCalls-multiturn.json), with no thought text unless asked for.
        parts: list[dict[str, Any]] = [{"functionCall": {"name": name, "args": _arguments(name, schema, workdir)},
                                        "thoughtSignature": GEMINI_SIGNATURE}]
        if name in ("exec_command", CODEX_EXEC):
            # A second call in the same turn, as Gemini makes them: Codex runs both when it allows parallel
            # calls, and when it does not (parallel_tool_calls false, which Gemini cannot be told) the
            # gateway must keep the first only.
            parts.append({"functionCall": {"name": name,
                                           "args": _shell(f"echo 2 > {SECOND_CALL_FILE}", name, workdir)}})
    else:
        text = f"Done. The tool said: {' | '.join(results).strip()}"
        parts = [{"text": text[: len(text) // 2]}, {"text": text[len(text) // 2:]}]
    if ":streamGenerateContent" not in path:
        return json_reply({"candidates": [{"content": {"parts": parts, "role": "model"}, "finishReason": "STOP",
                                           "index": 0}], "usageMetadata": usage, "modelVersion": model})
    frames = []
    for i, part in enumerate(parts, 1):
        candidate: dict[str, Any] = {"content": {"parts": [part], "role": "model"}, "index": 0}
        if i == len(parts):
            candidate["finishReason"] = "STOP"
        record = {"candidates": [candidate], "usageMetadata": usage, "modelVersion": model}
        frames.append(f"data: {json.dumps(record)}\r\n\r\n".encode())  # Gemini's SSE ends lines with CRLF
    return Reply(chunks=frames, headers={"content-type": "text/event-stream"})


class Scripted:
    def __init__(self, workdir: Path) -> None:
        self.workdir = str(workdir)

    def __call__(self, received: Received) -> Reply:
        if received.path.endswith("/chat/completions"):
            return _chat(received.json(), self.workdir)
        if received.path.endswith("/v1/messages"):
            return _messages(received.json(), self.workdir)
        if ":generateContent" in received.path or ":streamGenerateContent" in received.path:
            return _gemini(received.json(), received.path, self.workdir)
        return json_reply({"error": {"message": f"the scripted fake has no {received.path}"}}, status=404)


# ------------------------------------------------------------------------------------------ fixtures


class Served:
    def __init__(self, base: str, key: str, data_dir: Path) -> None:
        self.base, self.key, self.data_dir = base, key, data_dir

    @property
    def v1(self) -> str:
        return f"{self.base}/v1"

    def records(self, since: float, count: int) -> list[tuple[Any, ...]]:
        """(mode, status, provider, stream) of the usage rows written since ``since``, once there are
        ``count`` of them (the writer puts them down behind the answer)."""
        deadline = time.monotonic() + 15
        while True:
            with sqlite3.connect(self.data_dir / "gateway.db") as db:
                rows = db.execute("SELECT mode, status, provider, stream FROM requests WHERE ts >= ? ORDER BY id",
                                  (since,)).fetchall()
            if len(rows) >= count or time.monotonic() > deadline:
                return rows
            time.sleep(0.05)


def check_round_trip(fake: FakeUpstream, served: Served, since: float, model: str | None, stream: bool,
                     mark: str, gemini_calls: int = 1) -> None:
    """Two turns reached the model's provider: the second carried the tool result (``mark`` in it) and, for
    Gemini, the ``gemini_calls`` calls of the first turn with its thought signature on the first of them.
    Each turn has its usage record."""
    expected = upstream_path(model, stream)
    assert [r.path for r in fake.received] == [expected, expected]
    second = fake.received[1].json()
    assert any(mark in result for result in tool_results(expected, second)), second
    if expected.startswith("/google/"):
        calls = [part for c in second["contents"] if c["role"] == "model" for part in c["parts"]
                 if "functionCall" in part]
        assert len(calls) == gemini_calls and calls[0].get("thoughtSignature") == GEMINI_SIGNATURE, calls
        assert len(tool_results(expected, second)) == gemini_calls
    provider = expected.split("/")[1]
    assert served.records(since, 2) == [("responses", 200, provider, int(stream))] * 2


@pytest.fixture(scope="module")
def served(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("responses-clients")
    config = root / "config.toml"
    config.write_text(CONFIG.format(data=root / "data", base=fake.base))
    created = run_cli("keys", "create", "--name", "clients", "--config", str(config))
    assert created.returncode == 0, created.stderr
    port = free_port()
    with (root / "gateway.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT, env=gateway_env())
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc)
        yield Served(base, created.stdout.strip(), root / "data")
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def workdir(fake: FakeUpstream, tmp_path: Path) -> Path:
    fake.default = Scripted(tmp_path)
    return tmp_path


# --------------------------------------------------------------------------------------- the clients


@pytest.mark.parametrize("model", [None, *MODELS], ids=["default-model", *MODELS])
def test_agents_sdk_runner_with_a_function_tool(served: Served, workdir: Path, fake: FakeUpstream,
                                                model: str | None) -> None:
    python_client("agents")
    import openai
    from agents import (
        Agent,
        OpenAIResponsesModel,
        Runner,
        function_tool,
        set_default_openai_client,
        set_tracing_disabled,
    )

    # The SDK exports traces to api.openai.com, which tests never reach.
    set_tracing_disabled(True)

    @function_tool
    def get_weather(city: str) -> str:
        """Get the weather for a city."""
        return f"{TOOL_RESULT_MARK} {city}, 21 C"

    async def run() -> str:
        client = openai.AsyncOpenAI(base_url=served.v1, api_key=served.key, max_retries=0)
        set_default_openai_client(client, use_for_tracing=False)
        # A gateway name with a slash goes in a Responses model of its own: given as a string, the SDK would
        # read "anthropic/" as a prefix naming one of its own providers.
        options: dict[str, Any] = {"model": OpenAIResponsesModel(model, client)} if model else {}
        agent = Agent(name="helper", instructions="You are helpful.", tools=[get_weather], **options)
        result = await Runner.run(agent, "What is the weather in Paris?")
        return str(result.final_output)

    since = time.time()
    answer = asyncio.run(run())
    assert f"{TOOL_RESULT_MARK} Paris, 21 C" in answer
    check_round_trip(fake, served, since, model, False, f"{TOOL_RESULT_MARK} Paris, 21 C")


@pytest.mark.parametrize("model", MODELS)
def test_langchain_chat_openai_with_the_responses_api(served: Served, workdir: Path, fake: FakeUpstream,
                                                      model: str) -> None:
    python_client("langchain_openai")
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def get_weather(city: str) -> str:
        """Get the weather for a city."""
        return f"{TOOL_RESULT_MARK} {city}, 21 C"

    llm = ChatOpenAI(model=model, base_url=served.v1, api_key=served.key,  # type: ignore[arg-type]
                     use_responses_api=True, max_retries=0).bind_tools([get_weather])
    history: list[Any] = [HumanMessage("What is the weather in Paris?")]
    since = time.time()
    first = llm.invoke(history)
    (call,) = first.tool_calls  # type: ignore[attr-defined]
    assert call["name"] == "get_weather" and call["args"] == {"city": "Paris"}
    history += [first, ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"])]
    final = llm.invoke(history)
    assert f"{TOOL_RESULT_MARK} Paris, 21 C" in final.text()
    check_round_trip(fake, served, since, model, False, f"{TOOL_RESULT_MARK} Paris, 21 C")


@pytest.mark.parametrize("mode", ["generate", "stream"])
@pytest.mark.parametrize("model", MODELS)
def test_ai_sdk_default_openai_provider(served: Served, workdir: Path, npm_clients: Path, fake: FakeUpstream,
                                        model: str, mode: str) -> None:
    script = npm_clients / "aisdk_responses.mjs"
    since = time.time()
    run = subprocess.run(["node", str(script), mode], capture_output=True, text=True, timeout=120, cwd=npm_clients,
                         env={**gateway_env(), "GATEWAY_BASE": served.v1, "GATEWAY_KEY": served.key, "MODEL": model})
    assert run.returncode == 0, run.stderr[-3000:]
    answer = json.loads(run.stdout.strip().splitlines()[-1])
    assert f"{TOOL_RESULT_MARK} Paris, 21 C" in answer["text"], answer
    assert answer["steps"] == 2 and answer["finishReason"] == "stop", answer
    assert not answer.get("errors"), answer
    check_round_trip(fake, served, since, model, mode == "stream", f"{TOOL_RESULT_MARK} Paris, 21 C")


@pytest.mark.parametrize("model", [None, *MODELS], ids=["default-model-on-gemini", *MODELS])
def test_codex_exec_runs_a_command_through_the_gateway(served: Served, workdir: Path, npm_clients: Path,
                                                       fake: FakeUpstream, model: str | None) -> None:
    """Codex's default model has its own profile (tools as `additional_tools`, the shell as a custom `exec`
    tool, parallel_tool_calls false), routed here to Gemini; `-m` gives the classic one (parallel calls
    allowed)."""
    home = workdir / "home"
    codex_home = home / ".codex"
    codex_home.mkdir(parents=True)
    # What the README tells Codex users to write: a model provider at the gateway, speaking Responses.
    (codex_home / "config.toml").write_text(
        'model_provider = "gateway"\n\n'
        "[model_providers.gateway]\n"
        'name = "gateway"\n'
        f'base_url = "{served.v1}"\n'
        'env_key = "GATEWAY_API_KEY"\n'
        'wire_api = "responses"\n')
    project = workdir / "project"
    project.mkdir()
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "CODEX_HOME": str(codex_home), "LANG": "C.UTF-8",
           "TERM": "dumb", "TMPDIR": str(workdir), "GATEWAY_API_KEY": served.key}
    fake.default = Scripted(project)
    since = time.time()
    run = subprocess.run(
        [str(npm_clients / "node_modules" / ".bin" / "codex"), "exec", "--skip-git-repo-check", "-s", "workspace-write",
         *(["-m", model] if model else []),
         "Run a shell command that writes a word into tool_out.txt, then tell me what it printed."],
        cwd=project, env=env, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
    assert run.returncode == 0, f"{run.stdout[-2000:]}\n{run.stderr[-4000:]}"
    assert (project / "tool_out.txt").read_text() == f"{CODEX_WROTE}\n"
    assert CODEX_WROTE in run.stdout  # the final answer quotes the command's output, sent back by Codex
    # The Gemini fake's second call ran only where Codex allows parallel calls; with its default model's
    # parallel_tool_calls false the gateway left it out (and no other fake makes one).
    parallel = model == "google/gemini-2.5-flash"
    assert (project / SECOND_CALL_FILE).exists() is parallel
    # The command's output reached the model as the tool result (and Gemini's signature came back).
    check_round_trip(fake, served, since, model or "google/gemini-2.5-flash", True, CODEX_WROTE,
                     gemini_calls=2 if parallel else 1)
