"""Read a read request's fields from a GET query string or a POST JSON body, as MLflow does.

MLflow's handlers turn a query string into protobuf JSON first (a repeated field takes every
value of its key, a scalar the first, a bool must be `true` or `false`), then check each field
against a schema; the messages below are that schema's ("Missing value for required parameter",
"Invalid value ... Hint: Value was of type ..."). `run_id` falls back to `run_uuid`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import msgspec
from aiohttp import web
from multidict import MultiMapping

from api.grammar import INT64_MAX, INT64_MIN, shown
from ingest.errors import MlflowError, invalid_parameter

__all__ = ["API_DOCS_HINT", "Fields", "read_body"]

API_DOCS_HINT = " See the API docs for more information about request parameters."
_INT_TEXT = re.compile(r"[+-]?[0-9]{1,20}")
_decode = msgspec.json.Decoder().decode


def invalid_type(name: str, raw: Any) -> MlflowError:
    """Return MLflow's error for a field whose value has the wrong type."""
    text = shown(json.dumps(raw, sort_keys=True, separators=(",", ":")))
    hint = f" Hint: Value was of type '{type(raw).__name__}'."
    return invalid_parameter(
        f"Invalid value {text} for parameter '{name}' supplied: {hint}{API_DOCS_HINT}"
    )


def missing(name: str) -> MlflowError:
    """Return MLflow's error for a required field that is absent or empty."""
    return invalid_parameter(f"Missing value for required parameter '{name}'.{API_DOCS_HINT}")


async def read_body(request: web.Request) -> dict[str, Any]:
    """Return a POST request's JSON object, refusing what MLflow's server refuses."""
    if request.headers.get("Content-Type") is None:
        raise invalid_parameter("Bad Request. Content-Type header is missing.")
    if request.content_type != "application/json":
        raise invalid_parameter("Bad Request. Content-Type must be one of ['application/json'].")
    raw = await request.read()
    try:
        body = _decode(raw) if raw.strip() else {}
    except msgspec.DecodeError as exc:
        raise MlflowError("BAD_REQUEST", f"Malformed JSON body: {exc}") from None
    if not isinstance(body, dict):
        raise MlflowError("BAD_REQUEST", "The request body must be a JSON object.")
    return body


def _int64(raw: Any) -> int | None:
    """Return an int64 from what protobuf's JSON parser accepts for one, else None."""
    kind = type(raw)
    if kind is int:
        number = raw
    elif (kind is float and raw.is_integer()) or (kind is str and _INT_TEXT.fullmatch(raw.strip())):
        number = int(raw)
    else:
        return None
    return number if INT64_MIN <= number <= INT64_MAX else None


class Fields:
    """The fields of one request, from a query string (GET) or a decoded JSON body (POST)."""

    def __init__(
        self, body: Mapping[str, Any] | None = None, query: MultiMapping[str] | None = None
    ) -> None:
        self._body: Mapping[str, Any] = body or {}
        self._query = query

    @classmethod
    def of_query(cls, query: MultiMapping[str]) -> Fields:
        """Read fields from a query string."""
        return cls(query=query)

    @classmethod
    def of_body(cls, body: Mapping[str, Any]) -> Fields:
        """Read fields from a decoded JSON body."""
        return cls(body=body)

    def raw(self, name: str) -> Any:
        """Return a scalar field as sent: a string from a query, any JSON value from a body."""
        if self._query is not None:
            return self._query.get(name)
        return self._body.get(name)

    def text(self, name: str, *, required: bool = False, fallback: str = "") -> str | None:
        """Return a string field; None when absent (or empty and not required)."""
        raw = self.raw(name)
        if (raw is None or raw == "") and fallback:
            # MLflow reads `run_id or run_uuid`: an empty run_id falls back too
            alternative = self.raw(fallback)
            raw = raw if alternative is None else alternative
        if raw is None or raw == "":
            if required:
                raise missing(name)
            return None if raw is None else ""
        if type(raw) is not str:
            raise invalid_type(name, raw)
        return raw

    def integer(self, name: str) -> int | None:
        """Return an int64 field; None when absent."""
        raw = self.raw(name)
        if raw is None:
            return None
        number = _int64(raw)
        if number is None or type(raw) is bool:
            raise invalid_type(name, raw)
        return number

    def boolean(self, name: str) -> bool | None:
        """Return a bool field (`true`/`false` in a query string); None when absent."""
        raw = self.raw(name)
        if raw is None:
            return None
        if self._query is not None:
            if raw.lower() not in {"true", "false"}:
                raise invalid_parameter(
                    f"Invalid boolean value: {shown(raw)}, must be 'true' or 'false'."
                )
            return bool(raw.lower() == "true")
        if type(raw) is not bool:
            raise invalid_type(name, raw)
        return bool(raw)

    def enum(self, name: str) -> str | int | None:
        """Return an enum field as its name or number, unchecked; None when absent."""
        raw = self.raw(name)
        if isinstance(raw, str) and _INT_TEXT.fullmatch(raw.strip()):
            return int(raw)
        if raw is None or isinstance(raw, str | int):
            return raw
        raise invalid_type(name, raw)

    def texts(self, name: str, *, required: bool = False) -> list[str]:
        """Return a repeated string field (every value of a query key); [] when absent."""
        if self._query is not None:
            values: Any = self._query.getall(name, [])
        else:
            values = self._body.get(name)
        if values is None or (required and not values and self._query is not None):
            if required:
                raise missing(name)
            return []
        if type(values) is not list or any(type(v) is not str for v in values):
            raise invalid_type(name, values)
        return list(values)
