"""The emitter's checks: logging calls validated with the gateway's own rules, in the caller.

Metrics become `MetricLogged` events for the emitter's buffer; params and tags become checked
log-batch entries for the gateway. Everything here is pure, so the blocking emitter runs it in
the caller's thread and a bad call raises `MlflowError` before anything is buffered or sent.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from ingest import entries
from ingest.codec import new_event_id
from ingest.conventions import now_ms
from ingest.entries import MetricEntry, ParamEntry, TagEntry
from ingest.errors import MlflowError, invalid_parameter
from ingest.events import MetricLogged
from ingest.fields import Field, as_string, read
from ingest.requests import parse_log_metric, parse_log_param, parse_set_tag
from ingest.validation import check_run_id

__all__ = ["MAX_RECORD_BYTES", "EventBuilder", "checked_run_id", "estimated_size"]

# A record the broker refuses as too large is refused on every retry, which would wedge the
# flusher for good: a flush stops adding a run's events before its record could pass half of
# Kafka's default message.max.bytes (1 MiB), so it fits even a topic made without our override.
# Sizes are msgpack estimates, before compression.
MAX_RECORD_BYTES: Final = 512 * 1024
_EVENT_OVERHEAD: Final = 200

_RUN_ID: Final = (Field("run_id", as_string, required=True, check=check_run_id),)
# JSON's own types reach MLflow's parser unchanged, so bool, None and strings get the gateway's
# exact answer; other number types are made plain here (see _real).
_JSON_SCALARS: Final = frozenset({type(None), bool, int, float, str})


def _unsupported(path: str, value: Any, wanted: str) -> MlflowError:
    return invalid_parameter(
        f"Invalid value of type '{type(value).__name__}' for parameter '{path}' supplied: "
        f"expected {wanted}."
    )


def _real(value: Any, path: str) -> Any:
    """Return `value` as MLflow's parser reads it; numpy, torch or Decimal numbers become floats."""
    # msgspec checks no types when an event is built, so a value that is not exactly a float
    # would be encoded as is and rejected by every consumer: a permanent poison record.
    if type(value) in _JSON_SCALARS:
        return value
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        raise _unsupported(path, value, "a real number") from None


def _integer(value: Any, path: str) -> Any:
    """Return `value` as MLflow's parser reads it; integer-like types become plain ints."""
    if type(value) in _JSON_SCALARS:
        return value
    if isinstance(value, float):
        return float(value)
    try:
        return operator.index(value)
    except TypeError:
        raise _unsupported(path, value, "an integer") from None


def checked_run_id(run_id: Any, name: str = "run_id") -> str:
    """Return `run_id`, or raise MLflow's error (naming the parameter `name`) if it is not one."""
    fields = _RUN_ID if name == "run_id" else (_RUN_ID[0]._replace(name=name),)
    value: str = read({name: run_id}, fields)[0]
    return value


def _metric_event(run_id: str, m: MetricEntry, at: int) -> MetricLogged:
    return MetricLogged(
        event_id=new_event_id(),
        at=at,
        run_id=run_id,
        key=m.key,
        value=m.value,
        timestamp=m.timestamp,
        step=m.step,
    )


def estimated_size(event: MetricLogged) -> int:
    """Return about how many bytes the event takes in a record."""
    return _EVENT_OVERHEAD + len(event.run_id) + len(event.key.encode())


@dataclass(frozen=True, slots=True)
class EventBuilder:
    """Check logging calls with the gateway's rules: metric events, param and tag entries."""

    truncate_long_values: bool = True

    def metric(
        self, run_id: Any, key: Any, value: Any, step: Any, timestamp: Any
    ) -> list[MetricLogged]:
        """Return the event of one metric point (timestamp None: now)."""
        at = now_ms()
        req = parse_log_metric(
            {
                "run_id": run_id,
                "key": key,
                "value": _real(value, "value"),
                "timestamp": at if timestamp is None else _integer(timestamp, "timestamp"),
                "step": _integer(step, "step"),
            }
        )
        return [_metric_event(req.run_id, req.metric, at)]

    def metrics(
        self, run_id: Any, metrics: Mapping[str, Any], step: Any, timestamp: Any
    ) -> list[MetricLogged]:
        """Return the events of several metrics at one step, checked as log-batch checks them."""
        run = checked_run_id(run_id)
        at = now_ms()
        stamp = at if timestamp is None else _integer(timestamp, "timestamp")
        step = _integer(step, "step")
        points = entries.metrics(
            [
                {
                    "key": key,
                    "value": _real(value, f"metrics[{index}].value"),
                    "timestamp": stamp,
                    "step": step,
                }
                for index, (key, value) in enumerate(metrics.items())
            ]
        )
        return [_metric_event(run, m, at) for m in points]

    def param(self, run_id: Any, key: Any, value: Any) -> tuple[str, list[ParamEntry]]:
        """Return the run and its checked param (the value as str, as MLflow's client sends it)."""
        req = parse_log_param(
            {"run_id": run_id, "key": key, "value": str(value)},
            truncate_long_values=self.truncate_long_values,
        )
        return req.run_id, [req.param]

    def params(self, run_id: Any, params: Mapping[str, Any]) -> tuple[str, list[ParamEntry]]:
        """Return the run and its params, checked as log-batch checks them."""
        run = checked_run_id(run_id)
        checked = entries.params(
            [{"key": key, "value": str(value)} for key, value in params.items()],
            self.truncate_long_values,
        )
        return run, list(checked)

    def tag(self, run_id: Any, key: Any, value: Any) -> tuple[str, TagEntry]:
        """Return the run and its checked tag (the value as str)."""
        req = parse_set_tag(
            {"run_id": run_id, "key": key, "value": str(value)},
            truncate_long_values=self.truncate_long_values,
        )
        return req.run_id, req.tag
