"""The typed requests of MLflow's tracking write endpoints, as `ingest.requests` parses them.

Each is a frozen Struct with normalised fields (see `ingest.requests`); `Request` is any of them
and `Parser` the shape of a parse function.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeAlias

import msgspec

from ingest.entries import DatasetInputEntry, MetricEntry, ModelInputEntry, ParamEntry, TagEntry

__all__ = [
    "Body",
    "CreateExperiment",
    "CreateRun",
    "DeleteExperiment",
    "DeleteExperimentTag",
    "DeleteRun",
    "DeleteTag",
    "LogBatch",
    "LogInputs",
    "LogMetric",
    "LogParam",
    "Parser",
    "Request",
    "RestoreExperiment",
    "RestoreRun",
    "SetExperimentTag",
    "SetTag",
    "UpdateExperiment",
    "UpdateRun",
]

Body: TypeAlias = dict[str, Any]


class _Request(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Base of every request; subclasses restate frozen (for mypy) and kw_only (per class)."""


class CreateExperiment(_Request, frozen=True, kw_only=True):
    """POST experiments/create."""

    name: str
    artifact_location: str | None = None
    tags: tuple[TagEntry, ...] = ()


class UpdateExperiment(_Request, frozen=True, kw_only=True):
    """POST experiments/update (rename)."""

    experiment_id: str
    new_name: str


class DeleteExperiment(_Request, frozen=True, kw_only=True):
    """POST experiments/delete."""

    experiment_id: str


class RestoreExperiment(_Request, frozen=True, kw_only=True):
    """POST experiments/restore."""

    experiment_id: str


class SetExperimentTag(_Request, frozen=True, kw_only=True):
    """POST experiments/set-experiment-tag."""

    experiment_id: str
    tag: TagEntry


class DeleteExperimentTag(_Request, frozen=True, kw_only=True):
    """POST experiments/delete-experiment-tag."""

    experiment_id: str
    key: str


class CreateRun(_Request, frozen=True, kw_only=True):
    """POST runs/create; `run_name` None means "take the tag or generate one"."""

    experiment_id: str
    user_id: str = ""
    run_name: str | None = None
    start_time: int = 0
    tags: tuple[TagEntry, ...] = ()


class UpdateRun(_Request, frozen=True, kw_only=True):
    """POST runs/update; only the fields that are not None change."""

    run_id: str
    status: str | None = None
    end_time: int | None = None
    run_name: str | None = None


class DeleteRun(_Request, frozen=True, kw_only=True):
    """POST runs/delete."""

    run_id: str


class RestoreRun(_Request, frozen=True, kw_only=True):
    """POST runs/restore."""

    run_id: str


class LogMetric(_Request, frozen=True, kw_only=True):
    """POST runs/log-metric."""

    run_id: str
    metric: MetricEntry


class LogParam(_Request, frozen=True, kw_only=True):
    """POST runs/log-parameter."""

    run_id: str
    param: ParamEntry


class SetTag(_Request, frozen=True, kw_only=True):
    """POST runs/set-tag."""

    run_id: str
    tag: TagEntry


class DeleteTag(_Request, frozen=True, kw_only=True):
    """POST runs/delete-tag."""

    run_id: str
    key: str


class LogBatch(_Request, frozen=True, kw_only=True):
    """POST runs/log-batch; tags hold one entry per key (the last one sent wins)."""

    run_id: str
    metrics: tuple[MetricEntry, ...] = ()
    params: tuple[ParamEntry, ...] = ()
    tags: tuple[TagEntry, ...] = ()


class LogInputs(_Request, frozen=True, kw_only=True):
    """POST runs/log-inputs."""

    run_id: str
    datasets: tuple[DatasetInputEntry, ...] = ()
    models: tuple[ModelInputEntry, ...] = ()


Request: TypeAlias = (
    CreateExperiment
    | UpdateExperiment
    | DeleteExperiment
    | RestoreExperiment
    | SetExperimentTag
    | DeleteExperimentTag
    | CreateRun
    | UpdateRun
    | DeleteRun
    | RestoreRun
    | LogMetric
    | LogParam
    | SetTag
    | DeleteTag
    | LogBatch
    | LogInputs
)


class Parser(Protocol):
    """A parse function: a decoded JSON body in, a validated request out.

    Every parser takes `truncate_long_values` so the gateway can call them alike; only
    log-parameter, set-tag and log-batch have values MLflow truncates.
    """

    def __call__(self, body: Body, /, *, truncate_long_values: bool = True) -> Request:
        """Return the validated request, or raise `MlflowError`."""
        ...
