"""Opaque page tokens: MLflow's base64 JSON `{"offset": n}`, plus the last point for history.

Searches page by offset as MLflow does. Metric history pages resume after the last point they
returned (keyset), so the millionth point costs what the first does; its tokens still carry the
offset, and MLflow's offset-only tokens stay valid.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from api.grammar import INT64_MAX, INT64_MIN
from ingest.errors import invalid_parameter

__all__ = [
    "HistoryPage",
    "decode_history_token",
    "decode_page_token",
    "encode_history_token",
    "encode_page_token",
]

# Far past any real result set, and small enough that OFFSET plus a page never overflows bigint.
_MAX_OFFSET = 2**53
_MAX_TOKEN_CHARS = 512


def encode_page_token(offset: int) -> str:
    """Return the opaque token for a page starting at `offset` (MLflow's own format)."""
    return base64.b64encode(json.dumps({"offset": offset}).encode()).decode()


def _token_fields(token: str) -> tuple[int, dict[str, object]]:
    """Return the offset a non-empty page token encodes and the rest of its fields."""
    if not isinstance(token, str) or len(token) > _MAX_TOKEN_CHARS:
        raise invalid_parameter("Invalid page token, could not base64-decode")
    try:
        decoded = base64.b64decode(token, validate=True)
    except (binascii.Error, ValueError):
        raise invalid_parameter("Invalid page token, could not base64-decode") from None
    try:
        parsed = json.loads(decoded)
    except (ValueError, RecursionError):
        raise invalid_parameter(f"Invalid page token, decoded value={decoded!r}") from None
    offset = parsed.get("offset") if isinstance(parsed, dict) else None
    if isinstance(offset, str) and offset.isascii() and offset.isdigit() and len(offset) < 20:
        offset = int(offset)  # MLflow accepts a stringified offset too
    if type(offset) is not int or not 0 < offset <= _MAX_OFFSET:
        raise invalid_parameter(f"Invalid page token, parsed value={parsed!r}"[:300])
    return offset, parsed


def decode_page_token(token: str | None) -> int:
    """Return the offset a page token encodes; no token means the first page."""
    return _token_fields(token)[0] if token else 0


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """Where a page of metric history starts: after a point, or (old tokens) at an offset."""

    offset: int = 0
    after: tuple[int, int, float] | None = None  # (timestamp, step, value) of the last point


def encode_history_token(offset: int, after: tuple[int, int, float]) -> str:
    """Return the opaque token of the history page that follows the point `after`."""
    # MLflow's {"offset": n} plus the last point: the next page resumes from the point through
    # the history index instead of skipping `offset` points; NaN and infinities are JSON
    # extensions that json.loads reads back exactly, as it does every float's repr
    fields = {"offset": offset, "after": list(after)}
    return base64.b64encode(json.dumps(fields).encode()).decode()


def decode_history_token(token: str | None) -> HistoryPage:
    """Return where a history page starts; MLflow's offset-only tokens stay valid."""
    if not token:
        return HistoryPage()
    offset, parsed = _token_fields(token)
    after = parsed.get("after")
    if after is None:
        return HistoryPage(offset=offset)
    # The encoder writes the value as a Python float's repr, which json.loads reads as a float
    if (
        isinstance(after, list)
        and len(after) == 3  # timestamp, step, value
        and all(type(n) is int and INT64_MIN <= n <= INT64_MAX for n in after[:2])
        and type(after[2]) is float
    ):
        return HistoryPage(offset=offset, after=(after[0], after[1], after[2]))
    raise invalid_parameter(f"Invalid page token, parsed value={parsed!r}"[:300])
