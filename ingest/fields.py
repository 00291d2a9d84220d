"""Read typed fields out of a decoded JSON request body, as a table of `Field`s declares them.

The reader mirrors the two stages of MLflow's handlers: first every field is checked for presence
and JSON type (errors end with MLflow's "See the API docs" hint), then each field's own rule runs
(key charset, id shape, length), which is the order MLflow's handler and store check them in.
Coercers return `BAD` instead of raising, so a valid request never pays for an exception.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final, NamedTuple

from ingest.errors import MlflowError, invalid_parameter
from ingest.validation import API_DOCS_HINT, INT64_MAX, INT64_MIN, invalid_value, missing_value

Check = Callable[[Any, str], Any]


class _Bad:
    __slots__ = ()

    def __repr__(self) -> str:
        return "BAD"


BAD: Final = _Bad()

RUN_STATUSES: Final = ("RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED")
_STATUS_BY_NUMBER: Final = dict(enumerate(RUN_STATUSES, start=1))
_STATUS_NAMES: Final = frozenset(RUN_STATUSES)
SPECIAL_DOUBLES: Final = {
    "NaN": float("nan"),
    "Infinity": float("inf"),
    "-Infinity": -float("inf"),
}
_INT_TEXT: Final = re.compile(r"[+-]?[0-9]{1,40}")
_FLOAT_TEXT: Final = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


class Field(NamedTuple):
    """One request field: its JSON name, how to read it and the rule its value must pass."""

    name: str
    coerce: Callable[[Any], Any]
    required: bool = False
    default: Any = None
    check: Check | None = None
    # The name the rule reports when MLflow's store names the field differently ("key" -> "name").
    label: str = ""
    # A second JSON name read when the first is absent (`run_uuid` for `run_id`).
    fallback: str = ""


def as_string(raw: Any) -> Any:
    """Return `raw` if it is a string, else BAD."""
    return raw if type(raw) is str else BAD


def as_optional_string(raw: Any) -> Any:
    """Return `raw` if it is a non-empty string, None if empty, else BAD."""
    if type(raw) is str:
        return raw or None
    return BAD


def as_list(raw: Any) -> Any:
    """Return `raw` if it is a JSON array, else BAD."""
    return raw if type(raw) is list else BAD


def as_object(raw: Any) -> Any:
    """Return `raw` if it is a JSON object, else BAD."""
    return raw if type(raw) is dict else BAD


def as_int64(raw: Any) -> Any:
    """Return an int64 from a JSON integer, integral number or numeric string, else BAD."""
    # Protobuf's JSON mapping, which MLflow's server uses, accepts all three; bool never.
    kind = type(raw)
    if kind is int:
        number = raw
    elif (kind is float and raw.is_integer()) or (kind is str and _INT_TEXT.fullmatch(raw)):
        number = int(raw)
    elif kind is str and _FLOAT_TEXT.fullmatch(raw) and float(raw).is_integer():
        number = int(float(raw))
    else:
        return BAD
    return number if INT64_MIN <= number <= INT64_MAX else BAD


def as_double(raw: Any) -> Any:
    """Return a float from a JSON number, "NaN"/"Infinity"/"-Infinity" or a numeric string."""
    kind = type(raw)
    if kind is float:
        return raw
    if kind is int:
        try:
            return float(raw)
        except OverflowError:
            return BAD
    if kind is str:
        special = SPECIAL_DOUBLES.get(raw)
        if special is not None:
            return special
        try:
            return float(raw)
        except ValueError:
            return BAD
    return BAD


def as_run_status(raw: Any) -> Any:
    """Return a RunStatus name from a name or number; None for an unknown name, else BAD."""
    kind = type(raw)
    if kind is int:
        return _STATUS_BY_NUMBER.get(raw, BAD)
    if kind is not str:
        return BAD
    if raw in _STATUS_NAMES:
        return raw
    # MLflow's server silently ignores a status string it cannot parse (protobuf's parse fails,
    # the schema check only wants a string), numeric strings included; clients do not rely on it.
    if _INT_TEXT.fullmatch(raw.strip()):
        return _STATUS_BY_NUMBER.get(int(raw))
    return None


def type_error(path: str, raw: Any) -> MlflowError:
    """Return MLflow's error for a field of the wrong JSON type."""
    hint = f" Hint: Value was of type '{type(raw).__name__}'."
    return invalid_parameter(invalid_value(path, raw, hint) + API_DOCS_HINT)


def missing_error(path: str) -> MlflowError:
    """Return MLflow's error for a required field that is absent, null or empty."""
    return invalid_parameter(missing_value(path) + API_DOCS_HINT)


def read(body: dict[str, Any], fields: Sequence[Field], prefix: str = "") -> list[Any]:
    """Return the fields' values in table order; raise MLflow's error for the first fault."""
    values: list[Any] = []
    # Fields are unpacked as plain tuples: attribute access by name costs more on this path.
    for name, coerce, required, default, _check, _label, fallback in fields:
        raw = body.get(name)
        if raw is None and fallback:
            raw = body.get(fallback)
        # MLflow treats null as absent everywhere, and "" as absent for required fields.
        if raw is None or (required and raw == ""):
            if required:
                raise missing_error(prefix + name)
            values.append(default)
            continue
        value = coerce(raw)
        if value is BAD:
            raise type_error(prefix + name, raw)
        values.append(value)
    for index, (name, _coerce, _required, _default, check, label, _fallback) in enumerate(fields):
        if check is not None and values[index] is not None:
            values[index] = check(values[index], prefix + (label or name))
    return values


def read_each(entries: list[Any] | None, fields: Sequence[Field], path: str) -> Iterator[list[Any]]:
    """Yield `read` of every object in a JSON array field, with indexed error paths."""
    for index, entry in enumerate(entries or ()):
        entry_path = f"{path}[{index}]"
        if type(entry) is not dict:
            raise type_error(entry_path, entry)
        yield read(entry, fields, entry_path + ".")
