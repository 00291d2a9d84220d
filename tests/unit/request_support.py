"""Shared helpers of the request-parsing tests: parse a body, expect MLflow's error texts."""

from __future__ import annotations

from typing import Any

import pytest

from ingest.errors import HTTP_STATUS, MlflowError
from ingest.requests import PARSERS

RUN = "0123456789abcdef0123456789abcdef"
DOCS = " See the API docs for more information about request parameters."


def parse(path: str, body: Any, **kwargs: bool) -> Any:
    """Parse a body with the endpoint's parser."""
    return PARSERS[path](body, **kwargs)


def error(path: str, body: Any, code: str = "INVALID_PARAMETER_VALUE", **kwargs: bool) -> str:
    """Parse a body that must fail; check its code and status, return its message."""
    with pytest.raises(MlflowError) as info:
        parse(path, body, **kwargs)
    assert info.value.error_code == code
    assert info.value.http_status == HTTP_STATUS[code] == 400
    return info.value.message


def missing(name: str) -> str:
    """Return MLflow's message for a missing required parameter."""
    return f"Missing value for required parameter '{name}'.{DOCS}"


def wrong_type(name: str, shown: str, kind: str) -> str:
    """Return MLflow's message for a value of the wrong JSON type."""
    # MLflow's hint starts with a space after "supplied:", hence the double space.
    hint = f" Hint: Value was of type '{kind}'."
    return f"Invalid value {shown} for parameter '{name}' supplied: {hint}{DOCS}"
