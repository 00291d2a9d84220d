"""The fields every search request shares, read and checked as MLflow's server reads them:
the page size, the view type (which lifecycle stages) and the experiment ids."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Sequence

from api.grammar import INT64_MAX, INT64_MIN, shown
from ingest.errors import invalid_parameter

__all__ = [
    "MAX_RESULTS_THRESHOLD",
    "RUNS_DEFAULT_MAX_RESULTS",
    "check_max_results",
    "lifecycle_stages",
    "mlflow_view_stages",
    "parse_experiment_ids",
]

RUNS_DEFAULT_MAX_RESULTS = 1000
MAX_RESULTS_THRESHOLD = 50_000

_VIEW_TYPES = {"ACTIVE_ONLY": 1, "DELETED_ONLY": 2, "ALL": 3}
_VIEW_STAGES = {1: ["active"], 2: ["deleted"], 3: ["active", "deleted"]}


def check_max_results(max_results: int | None, *, default: int | None) -> int:
    """Return the page size, or raise MLflow's message when it is missing or out of range."""
    if max_results is None and default is not None:
        return default
    if type(max_results) is not int or max_results < 1:
        raise invalid_parameter(
            f"Invalid value {shown(str(0 if max_results is None else max_results))} for parameter "
            "'max_results' supplied. It must be a positive integer"
        )
    if max_results > MAX_RESULTS_THRESHOLD:
        raise invalid_parameter(
            f"Invalid value {max_results} for parameter 'max_results' supplied. "
            f"It must be at most {MAX_RESULTS_THRESHOLD}"
        )
    return max_results


def mlflow_view_stages(raw: object) -> list[str]:
    """Return the lifecycle stages a ViewType field selects, read as MLflow's server reads it.

    A name counts only as spelled in the proto ("ALL", not "all"), a number (or a number in
    text, or a float, truncated) only if it is 1, 2 or 3; anything else is ACTIVE_ONLY, never an
    error. So a client that sends "all" expecting deleted runs gets the active ones from both
    servers. MLflow gets there less cleanly: its protobuf parser skips an unknown name, but stops
    at an unknown number and drops the request's later fields with it, and a list or object is
    a 500 in its SearchExperiments; Runstream reads every other field, and answers."""
    number: int | None = None
    if isinstance(raw, str):
        number = _VIEW_TYPES.get(raw)
        if number is None:
            with contextlib.suppress(ValueError):
                number = int(raw)
    elif isinstance(raw, int | float) and math.isfinite(raw):
        number = int(raw)
    return list(_VIEW_STAGES.get(number or 1, _VIEW_STAGES[1]))


def lifecycle_stages(view_type: str | int | None, parameter: str) -> list[str]:
    """Return the lifecycle stages a ViewType (name or number, default ACTIVE_ONLY) selects;
    Runstream's own endpoints refuse what they do not know (MLflow's take `mlflow_view_stages`)."""
    if view_type is None:
        return list(_VIEW_STAGES[1])
    number = _VIEW_TYPES.get(view_type.upper()) if isinstance(view_type, str) else view_type
    if type(number) is not int or number not in _VIEW_STAGES:
        text = json.dumps(view_type) if isinstance(view_type, str | int) else repr(view_type)
        raise invalid_parameter(
            f"Invalid value {shown(text)} for parameter '{parameter}' supplied."
        )
    return list(_VIEW_STAGES[number])


def parse_experiment_ids(raw_ids: Sequence[str | int]) -> list[int]:
    """Return the ids as numbers, or raise MLflow's message for the first that is not one."""
    if isinstance(raw_ids, str | bytes):
        raise invalid_parameter("Invalid value for parameter 'experiment_ids': expected a list.")
    ids: list[int] = []
    for raw in raw_ids:
        try:
            number = int(raw) if isinstance(raw, str | int) and not isinstance(raw, bool) else None
        except ValueError:
            number = None
        if number is None or not INT64_MIN <= number <= INT64_MAX:
            raise invalid_parameter(
                f"Invalid experiment ID '{shown(str(raw))}'. Experiment ID must be a valid integer."
            )
        ids.append(number)
    return ids
