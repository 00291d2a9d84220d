"""Define the write operations a batch of events folds into: the contract between fold and stores.

The fold (``projector.fold``) turns events into one ``Ops`` value; a store (``projector.memory``
or ``projector.store``) executes it. Every op is idempotent on its natural key, so executing the
same ``Ops`` twice changes nothing the second time.

Run and experiment ops come in two segments around the entity's creation: ``*_before`` holds what
the batch did to the entity before its first ``RunStarted``/``ExperimentCreated`` in the batch
(all of it when the batch has none), ``*_after`` what came after. A store applies them as
before-changes -> insert-if-absent (+ the creation's tags only when the row is new) ->
after-changes, which is what applying the events one by one does whether or not the entity
already existed before the batch.

Field changes (``RunChange``, ``ExperimentChange``) apply only to rows that exist. Tags, params,
metrics and inputs are written whatever the state of their run ("orphans"): a run's events share
its partition, so they never precede its ``RunStarted`` in practice, and storing them keeps the
fold total and every write independent of what exists.
"""

from __future__ import annotations

from typing import TypeAlias

import msgspec

__all__ = [
    "DERIVED_ROOT_TAG",
    "NAN",
    "PARAM_CONFLICT",
    "PARENT_TAG",
    "RUN_NAME_TAG",
    "DatasetRow",
    "ExperimentChange",
    "LatestRow",
    "MetricRow",
    "NewExperiment",
    "NewRun",
    "OffsetMove",
    "Ops",
    "ParamCandidate",
    "RunChange",
    "TagOp",
    "point_key",
    "value_order",
]

RUN_NAME_TAG = "mlflow.runName"
PARENT_TAG = "mlflow.parentRunId"
DERIVED_ROOT_TAG = "mlflow.rootRunId"
DATA_CONTEXT_TAG = "mlflow.data.context"
PARAM_CONFLICT = "param_conflict"

ACTIVE = "active"
DELETED = "deleted"

# A metric history row in the column order of the `metrics` table (and of COPY):
# (run_id, key, step, ts, value, model_id, dataset_name, dataset_digest).
MetricRow: TypeAlias = tuple[str, str, int, int, float, str | None, str | None, str | None]
# A latest-metric candidate in the column order of `latest_metrics`: (run_id, key, value, ts, step).
LatestRow: TypeAlias = tuple[str, str, float, int, int]
# (owner id, key, value); value None deletes the tag.
TagOp: TypeAlias = tuple[str, str, str | None]
# An experiment tag op keyed by the numeric experiment id.
ExperimentTagOp: TypeAlias = tuple[int, str, str | None]


# One canonical NaN object for dict keys: keys compare by identity first, and since Python 3.10
# every distinct NaN object hashes differently, so NaN points would never deduplicate otherwise.
NAN = float("nan")


def point_key(row: MetricRow) -> tuple[str, str, int, int, float]:
    """Return the natural key of a metric row, (run, key, step, ts, value) with NaN canonical."""
    value = row[4]
    return (row[0], row[1], row[2], row[3], NAN if value != value else value)  # noqa: PLR0124


def value_order(value: float) -> tuple[int, float]:
    """Return a sort key ordering floats like PostgreSQL: NaN equals NaN and exceeds +inf."""
    if value != value:  # noqa: PLR0124 - NaN; faster than math.isnan on the hot path
        return (1, 0.0)
    return (0, value)


class NewExperiment(msgspec.Struct, frozen=True, gc=False):
    """Insert an experiment unless it exists; its tags are written only if it is new."""

    experiment_id: int
    name: str
    artifact_location: str
    at: int
    tags: tuple[tuple[str, str], ...] = ()


class ExperimentChange(msgspec.Struct, frozen=True, gc=False):
    """Change fields of an existing experiment; None leaves a field as it is."""

    experiment_id: int
    name: str | None = None
    lifecycle_stage: str | None = None
    last_update_time: int | None = None


class NewRun(msgspec.Struct, frozen=True, gc=False):
    """Insert a run unless it exists; its tags are written only if it is new."""

    run_id: str
    experiment_id: int
    run_name: str
    user_id: str
    status: str
    start_time: int
    artifact_uri: str
    parent_run_id: str | None
    tags: tuple[tuple[str, str], ...] = ()


class RunChange(msgspec.Struct, frozen=True, gc=False):
    """Change fields of an existing run; None leaves a field as it is (parent: see parent_set)."""

    run_id: str
    status: str | None = None
    end_time: int | None = None
    run_name: str | None = None
    lifecycle_stage: str | None = None
    # parent_run_id may be set to NULL (the mlflow.parentRunId tag was deleted), so it has a flag.
    parent_set: bool = False
    parent_run_id: str | None = None


class ParamCandidate(msgspec.Struct, frozen=True, gc=False):
    """A distinct value logged for a param in this batch, with the first event that logged it."""

    run_id: str
    key: str
    value: str
    event_id: str
    at: int


class DatasetRow(msgspec.Struct, frozen=True, gc=False):
    """A dataset input of a run (first write per (run, name, digest) wins)."""

    run_id: str
    name: str
    digest: str
    source_type: str
    source: str
    schema: str | None
    profile: str | None
    context: str | None
    tags: tuple[tuple[str, str], ...]


class Ops(msgspec.Struct, frozen=True, gc=False):
    """Everything one batch of events writes, collapsed, in the order a store applies it."""

    experiment_changes_before: tuple[ExperimentChange, ...] = ()
    new_experiments: tuple[NewExperiment, ...] = ()
    experiment_tags_before: tuple[ExperimentTagOp, ...] = ()
    experiment_tags_after: tuple[ExperimentTagOp, ...] = ()
    experiment_changes_after: tuple[ExperimentChange, ...] = ()
    run_changes_before: tuple[RunChange, ...] = ()
    new_runs: tuple[NewRun, ...] = ()
    tags_before: tuple[TagOp, ...] = ()
    tags_after: tuple[TagOp, ...] = ()
    run_changes_after: tuple[RunChange, ...] = ()
    # The first value per (run, key) in the batch; inserted unless the param exists.
    params: tuple[ParamCandidate, ...] = ()
    # Every distinct (run, key, value) of the batch; those differing from the stored value are
    # recorded as rejections (first value wins, MLflow's param immutability).
    param_values: tuple[ParamCandidate, ...] = ()
    # Distinct points (first row per (run, key, step, ts, value) wins), in log order.
    metrics: list[MetricRow] = msgspec.field(default_factory=list)
    # One candidate per (run, key): the batch's max by (step, ts, value).
    latest: tuple[LatestRow, ...] = ()
    # Per (run, key) the batch's min by the same order: when it is above the stored latest, no
    # point of the group can be stored already (the store's fast path).
    earliest: tuple[LatestRow, ...] = ()
    datasets: tuple[DatasetRow, ...] = ()
    model_inputs: tuple[tuple[str, str], ...] = ()
    # Runs whose existence or parent link may have changed: lineage is recomputed from them.
    lineage: tuple[str, ...] = ()
    # Ids of the last-writer-wins events this batch applied (recorded so copies are skipped).
    applied: tuple[str, ...] = ()
    events: int = 0

    def is_empty(self) -> bool:
        """Return True when executing these ops writes nothing."""
        return not (
            self.experiment_changes_before
            or self.new_experiments
            or self.experiment_tags_before
            or self.experiment_tags_after
            or self.experiment_changes_after
            or self.run_changes_before
            or self.new_runs
            or self.tags_before
            or self.tags_after
            or self.run_changes_after
            or self.params
            or self.metrics
            or self.latest
            or self.datasets
            or self.model_inputs
            or self.lineage
            or self.applied
        )


class OffsetMove(msgspec.Struct, frozen=True, gc=False):
    """Move a partition's stored next offset from ``expected`` (None: no row yet) to ``next``."""

    topic: str
    partition: int
    expected: int | None
    next_offset: int
