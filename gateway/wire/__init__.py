"""Wire formats, and reading msgspec's validation messages back into a key path."""

from __future__ import annotations

import re

# msgspec says "Expected `str`, got `int` - at `$.messages[0].content`": the message, then the path.
_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<field>[^`]+)`")
_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]+)`")


class Problem:
    """One msgspec validation message, split: what is wrong, and at which dotted key path."""

    __slots__ = ("message", "missing", "path", "unknown")

    def __init__(self, text: str, prefix: str = "") -> None:
        match = _AT.match(text)
        self.message, at = (match.group("msg"), match.group("path") or "") if match else (text, "")
        self.path = ".".join(part for part in (prefix, at.lstrip(".")) if part)
        unknown, missing = _UNKNOWN.match(self.message), _MISSING.match(self.message)
        # The member that is unknown or missing, with the path of the object that holds it.
        self.unknown = self._join(unknown.group("field")) if unknown else None
        self.missing = self._join(missing.group("field")) if missing else None

    def _join(self, field: str) -> str:
        return f"{self.path}.{field}" if self.path else field
