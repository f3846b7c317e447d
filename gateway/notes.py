"""What the gateway left out of a request or lowered in it, reported back to the client.

The rule (docs/security.md, "Honest, not brittle"): a hint that cannot make a correct answer wrong may be
left out when the target cannot take it, and a limit beyond the target's maximum may be lowered, but only
when the answer says so. A dialect notes what it leaves out whatever the target (``ChatCall.notes``); an
adapter notes what this target cannot take (``UpstreamRequest.notes``). The pipeline reports both for the
attempt that answered, as ``x-gateway-ignored-params`` / ``x-gateway-adjusted`` headers and as
``metadata.ignored_params`` / ``metadata.adjusted``.
"""

from __future__ import annotations

from typing import Any

from gateway.door import MAX_HEADER_VALUE, header_value

IGNORED_HEADER = "x-gateway-ignored-params"
ADJUSTED_HEADER = "x-gateway-adjusted"


class Notes:
    """Ignored members as JSON paths (``tools[0].eager_input_streaming``), in the order met, and adjusted
    limits as name → the value sent (``max_tokens`` → ``16384``)."""

    __slots__ = ("adjusted", "ignored")

    def __init__(self) -> None:
        self.ignored: list[str] = []
        self.adjusted: dict[str, str] = {}

    def __bool__(self) -> bool:
        return bool(self.ignored or self.adjusted)

    def ignore(self, path: str) -> None:
        if path not in self.ignored:
            self.ignored.append(path)

    def adjust(self, name: str, value: object) -> None:
        self.adjusted[name] = str(value)

    def merged(self, other: Notes | None) -> Notes:
        """These notes and ``other``'s (a target's), without changing either."""
        out = Notes()
        for notes in (self, other):
            if notes is not None:
                for path in notes.ignored:
                    out.ignore(path)
                out.adjusted.update(notes.adjusted)
        return out

    def headers(self) -> dict[str, str]:
        out = {}
        if self.ignored:
            out[IGNORED_HEADER] = _listed(self.ignored)
        if self.adjusted:
            out[ADJUSTED_HEADER] = _listed([f"{k}={v}" for k, v in self.adjusted.items()])
        return out

    def metadata(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.ignored:
            out["ignored_params"] = list(self.ignored)
        if self.adjusted:
            out["adjusted"] = dict(self.adjusted)
        return out


def _listed(items: list[str]) -> str:
    """``items`` as one header value within the header limit: whole items only, then how many more there
    are (a client tool list can have dozens of rewritten schema keywords; the metadata lists them all)."""
    kept: list[str] = []
    size = 0
    for n, item in enumerate(items):
        more = f"+{len(items) - n} more"
        if size + len(item) + 2 + len(more) + 2 > MAX_HEADER_VALUE:
            return header_value(", ".join([*kept, more]))
        kept.append(item)
        size += len(item) + 2
    return header_value(", ".join(kept))
