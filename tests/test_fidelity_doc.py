"""docs/fidelity.md is generated from the tests' ``fidelity`` markers, so it cannot claim what no test proves.

Regenerate with ``UPDATE_DOCS=1 python -m pytest tests/test_fidelity_doc.py``.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

TESTS = Path(__file__).resolve().parent
DOC = TESTS.parent / "docs" / "fidelity.md"
PROVIDERS = ("anthropic", "gemini")
MODES = ("non-stream", "stream")
# Rows in reading order; a marker with a feature not listed here fails the test.
FEATURES = {
    "text": "Text answers",
    "system": "System and developer messages",
    "multi-turn": "Multi-turn history, same-role turns merged",
    "tools": "Tool definitions and tool calls",
    "parallel-tools": "Parallel tool calls (indexes, ids, names, arguments)",
    "tool-results": "Tool results sent back (`role: tool`)",
    "tool-choice": "`tool_choice` auto / none / required / named",
    "vision-data-url": "Images as `data:` URLs",
    "vision-https-url": "Images as https URLs",
    "json-object": "`response_format: json_object`",
    "json-schema": "`response_format: json_schema`",
    "reasoning": "Reasoning (`reasoning_effort`, reasoning text returned)",
    "reasoning-signature": "Thinking signatures survive a round trip",
    "image-output": "Image output (`message.images`)",
    "web-search": "Web search (`web_search_options`; citations as `message.annotations`)",
    "usage": "Usage (prompt, completion, total)",
    "cached-tokens": "Cached prompt tokens",
    "include-usage": "`stream_options.include_usage` final chunk",
    "stop": "`stop` sequences",
    "n": "`n` > 1 (several choices)",
    "finish-reason": "`finish_reason` mapping",
    "upstream-errors": "Provider errors → OpenAI envelope and status",
    "mid-stream-error": "Error mid-stream → error event, no `[DONE]`",
}


def collect() -> set[tuple[str, str, str]]:
    found: set[tuple[str, str, str]] = set()
    for path in sorted(TESTS.glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                for deco in node.decorator_list:
                    if (isinstance(deco, ast.Call) and isinstance(deco.func, ast.Attribute)
                            and deco.func.attr == "fidelity"):
                        feature, provider, mode = (ast.literal_eval(arg) for arg in deco.args)
                        found.add((feature, provider, mode))
    return found


def render(found: set[tuple[str, str, str]]) -> str:
    header = "| feature | " + " | ".join(f"{p} {m}" for p in PROVIDERS for m in MODES) + " |"
    lines = [
        "# Translation fidelity",
        "",
        "What the unified endpoint (`/v1/chat/completions`) preserves when the target is an Anthropic or a",
        "Gemini model, for a client of the OpenAI SDK. A ✅ means a test replays a recorded or spec-exact",
        "provider answer and asserts the OpenAI-format result field by field (the test carries",
        "`@pytest.mark.fidelity(feature, provider, mode)`); a — means no test claims it (not offered by that",
        "provider, or refused with a 400 naming the parameter, as `docs/anthropic.md` and `docs/gemini.md`",
        "explain). OpenAI-compatible providers get the client's body byte for byte, so every row holds there.",
        "Request-side rows (system messages, tool choice, images, `stop`, `json_schema`) are built by the same",
        "code whether or not the client streams; a — in a stream column there only means no streamed test",
        "asserts it again.",
        "",
        "This page is generated from the tests: `UPDATE_DOCS=1 python -m pytest tests/test_fidelity_doc.py`.",
        "",
        header,
        "|---|" + "---|" * (len(PROVIDERS) * len(MODES)),
    ]
    for feature, title in FEATURES.items():
        cells = ["✅" if (feature, p, m) in found else "—" for p in PROVIDERS for m in MODES]
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def test_markers_use_known_features_and_providers() -> None:
    found = collect()
    assert found, "no fidelity markers found"
    assert {f for f, _, _ in found} <= set(FEATURES)
    assert {p for _, p, _ in found} <= set(PROVIDERS)
    assert {m for _, _, m in found} <= set(MODES)


def test_fidelity_doc_matches_the_tests() -> None:
    text = render(collect())
    if os.environ.get("UPDATE_DOCS"):
        DOC.write_text(text)
    assert DOC.read_text() == text, "docs/fidelity.md is stale: regenerate it (see the module docstring)"
