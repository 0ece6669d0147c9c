"""The local server's error answers: every 4xx/5xx body carries `detail`.

Handlers raise `HttpError` (a string detail) or `ValidationFailed` (422, a list of FastAPI-style
`{"type", "loc", "msg", "input"}` items, each an `Issue`); the app's error middleware turns both
into JSON. Both classes live in `runner.errors` and are re-exported here for the server.
Echoed input is made safe first (`safe_input`): long strings are cut, NUL and other control
characters are spelled out, so an error body never carries a client's 5,000-character payload
or a raw NUL back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from runner.errors import HttpError, ValidationFailed

__all__ = [
    "MAX_ECHO_CHARS",
    "HttpError",
    "Issue",
    "ValidationFailed",
    "safe_input",
]

# An echoed input is cut to this many characters (plus a marker saying how long it was).
MAX_ECHO_CHARS: Final = 200
_MAX_ECHO_ITEMS: Final = 20

Loc = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Issue:
    """One item of a 422 `detail` list: what is wrong (`type`, `msg`) where (`loc`) with what."""

    type: str
    loc: Loc
    msg: str
    input: object = None

    def to_json(self) -> dict[str, object]:
        """The documented shape, with the input made safe to echo."""
        return {
            "type": self.type,
            "loc": list(self.loc),
            "msg": self.msg,
            "input": safe_input(self.input),
        }


def safe_input(value: object, *, depth: int = 0) -> object:
    """`value` cut down for echoing: strings to MAX_ECHO_CHARS, containers to a few items.

    Control characters (NUL first of all) become `\\xNN` escapes so that the JSON body and any
    log line that shows it stay plain text.
    """
    if isinstance(value, str):
        return _safe_str(value)
    if isinstance(value, bool | int | float) or value is None:
        return value
    if depth >= 3:
        return "…"
    if isinstance(value, Mapping):
        items = list(value.items())[:_MAX_ECHO_ITEMS]
        return {_safe_str(str(k)): safe_input(v, depth=depth + 1) for k, v in items}
    if isinstance(value, list | tuple):
        return [safe_input(v, depth=depth + 1) for v in value[:_MAX_ECHO_ITEMS]]
    return _safe_str(repr(value))


def _safe_str(text: str) -> str:
    cut = text[:MAX_ECHO_CHARS]
    cleaned = "".join(c if c.isprintable() or c == " " else f"\\x{ord(c):02x}" for c in cut)
    if len(text) > MAX_ECHO_CHARS:
        cleaned += f"… ({len(text)} characters)"
    return cleaned
