"""gateway/notes.py: what was left out or lowered, as the client reads it."""

from __future__ import annotations

from gateway.notes import ADJUSTED_HEADER, IGNORED_HEADER, Notes


def test_notes_merge_without_changing_either_side_and_report_in_order() -> None:
    call, target = Notes(), Notes()
    call.ignore("context_management")
    call.ignore("context_management")
    target.ignore("tools[0].eager_input_streaming")
    target.adjust("max_tokens", 16384)
    merged = call.merged(target)
    assert merged.ignored == ["context_management", "tools[0].eager_input_streaming"]
    assert merged.headers() == {IGNORED_HEADER: "context_management, tools[0].eager_input_streaming",
                                ADJUSTED_HEADER: "max_tokens=16384"}
    assert merged.metadata() == {"ignored_params": ["context_management", "tools[0].eager_input_streaming"],
                                 "adjusted": {"max_tokens": "16384"}}
    assert call.ignored == ["context_management"] and not call.adjusted
    assert not Notes() and Notes().headers() == {} and Notes().metadata() == {}
    assert call.merged(None).ignored == ["context_management"]


def test_a_path_that_cannot_go_in_a_header_is_encoded() -> None:
    notes = Notes()
    notes.ignore("tools[0].名前\r\nx: y")
    value = notes.headers()[IGNORED_HEADER]
    assert value.isascii() and "\r" not in value and "\n" not in value
