"""The in-memory reference store: the fold's ops applied to dicts, the oracle PostgreSQL must equal.

It executes ``Ops`` with exactly the semantics ``projector.store`` gives them in SQL (see
``projector.ops``), including the offsets compare-and-set, and recomputes lineage from scratch
with the pure rule in ``projector.lineage`` after every batch. Folding a whole log into it, in
one batch or in any split, gives the state the read models must hold.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ingest.events import Event
from projector.errors import FencedError
from projector.fold import fold, last_writer_wins_ids
from projector.lineage import lineage
from projector.ops import (
    ACTIVE,
    DERIVED_ROOT_TAG,
    PARAM_CONFLICT,
    DatasetRow,
    ExperimentChange,
    MetricRow,
    OffsetMove,
    Ops,
    RunChange,
    point_key,
    value_order,
)
from projector.snapshot import Snapshot, dataset_input_row, make_snapshot

__all__ = ["MemoryStore"]


@dataclass(slots=True)
class _Experiment:
    name: str
    artifact_location: str
    lifecycle_stage: str
    creation_time: int
    last_update_time: int


@dataclass(slots=True)
class _Run:
    experiment_id: int
    run_name: str
    user_id: str
    status: str
    start_time: int
    end_time: int | None
    artifact_uri: str
    lifecycle_stage: str
    parent_run_id: str | None
    root_run_id: str
    depth: int


class MemoryStore:
    """Read models in dicts; ``apply`` has the PostgreSQL store's semantics, offsets included."""

    def __init__(self) -> None:
        self.experiments: dict[int, _Experiment] = {}
        self.experiment_tags: dict[tuple[int, str], str] = {}
        self.runs: dict[str, _Run] = {}
        self.tags: dict[tuple[str, str], str] = {}
        self.params: dict[tuple[str, str], str] = {}
        self.rejections: dict[tuple[str, str, str, str], tuple[str, int]] = {}
        self.metrics: dict[tuple[str, str, int, int, float], MetricRow] = {}
        self.latest: dict[tuple[str, str], tuple[float, int, int]] = {}
        self.datasets: dict[tuple[str, str, str], DatasetRow] = {}
        self.model_inputs: set[tuple[str, str]] = set()
        self.offsets: dict[tuple[str, int], int] = {}
        self.applied_events: set[str] = set()

    # --- the store interface (async to share one contract test suite with PostgreSQL) -----------

    async def apply(self, ops: Ops, offsets: Iterable[OffsetMove] = ()) -> None:
        """Execute a batch's ops and move the partitions' offsets, all or nothing."""
        self.apply_now(ops, offsets)

    async def load_offsets(self, topic: str, partitions: Iterable[int]) -> dict[int, int | None]:
        """Return each partition's stored next offset (None when absent)."""
        return {p: self.offsets.get((topic, p)) for p in partitions}

    async def applied_ids(self, event_ids: Iterable[str]) -> set[str]:
        """Return which of these last-writer-wins event ids were applied already."""
        return self.applied_events.intersection(event_ids)

    async def snapshot(self) -> Snapshot:
        """Return the canonical snapshot of the state."""
        return self.snapshot_now()

    # --- synchronous forms --------------------------------------------------------------------

    def fold_log(self, events: Iterable[Event]) -> MemoryStore:
        """Fold events in one batch (no offsets), skipping copies applied before; return self."""
        batch = list(events)
        applied = self.applied_events.intersection(last_writer_wins_ids(batch))
        self.apply_now(fold(batch, applied))
        return self

    def apply_now(self, ops: Ops, offsets: Iterable[OffsetMove] = ()) -> None:
        """Execute a batch's ops and move the partitions' offsets, all or nothing."""
        moves = list(offsets)
        fenced = [
            m.partition for m in moves if self.offsets.get((m.topic, m.partition)) != m.expected
        ]
        if fenced:
            raise FencedError(moves[0].topic, sorted(fenced))
        for move in moves:
            self.offsets[(move.topic, move.partition)] = move.next_offset
        self.applied_events.update(ops.applied)
        self._experiments(ops)
        self._runs(ops)
        self._values(ops)
        if ops.lineage:
            self._relineage()

    def _experiments(self, ops: Ops) -> None:
        for change in ops.experiment_changes_before:
            self._experiment_change(change)
        new = []
        for exp in ops.new_experiments:
            if exp.experiment_id not in self.experiments:
                self.experiments[exp.experiment_id] = _Experiment(
                    exp.name, exp.artifact_location, ACTIVE, exp.at, exp.at
                )
                new.append(exp)
        _tag_ops(self.experiment_tags, ops.experiment_tags_before)
        for exp in new:
            for key, value in exp.tags:
                self.experiment_tags[(exp.experiment_id, key)] = value
        _tag_ops(self.experiment_tags, ops.experiment_tags_after)
        for change in ops.experiment_changes_after:
            self._experiment_change(change)

    def _experiment_change(self, change: ExperimentChange) -> None:
        exp = self.experiments.get(change.experiment_id)
        if exp is None:
            return
        if change.name is not None:
            exp.name = change.name
        if change.lifecycle_stage is not None:
            exp.lifecycle_stage = change.lifecycle_stage
        if change.last_update_time is not None:
            exp.last_update_time = change.last_update_time

    def _runs(self, ops: Ops) -> None:
        for change in ops.run_changes_before:
            self._run_change(change)
        new = []
        for run in ops.new_runs:
            if run.run_id not in self.runs:
                self.runs[run.run_id] = _Run(
                    experiment_id=run.experiment_id,
                    run_name=run.run_name,
                    user_id=run.user_id,
                    status=run.status,
                    start_time=run.start_time,
                    end_time=None,
                    artifact_uri=run.artifact_uri,
                    lifecycle_stage=ACTIVE,
                    parent_run_id=run.parent_run_id,
                    root_run_id=run.run_id,
                    depth=0,
                )
                new.append(run)
        _tag_ops(self.tags, ops.tags_before)
        for run in new:
            for key, value in run.tags:
                self.tags[(run.run_id, key)] = value
        _tag_ops(self.tags, ops.tags_after)
        for change in ops.run_changes_after:
            self._run_change(change)

    def _run_change(self, change: RunChange) -> None:
        run = self.runs.get(change.run_id)
        if run is None:
            return
        if change.status is not None:
            run.status = change.status
        if change.end_time is not None:
            run.end_time = change.end_time
        if change.run_name is not None:
            run.run_name = change.run_name
        if change.lifecycle_stage is not None:
            run.lifecycle_stage = change.lifecycle_stage
        if change.parent_set:
            run.parent_run_id = change.parent_run_id

    def _values(self, ops: Ops) -> None:
        for param in ops.params:
            self.params.setdefault((param.run_id, param.key), param.value)
        for cand in ops.param_values:
            stored = self.params.get((cand.run_id, cand.key))
            if stored is not None and stored != cand.value:
                natural = (PARAM_CONFLICT, cand.run_id, cand.key, cand.value)
                self.rejections.setdefault(natural, (cand.event_id, cand.at))
        for row in ops.metrics:
            self.metrics.setdefault(point_key(row), row)
        for run_id, key, value, ts, step in ops.latest:
            old = self.latest.get((run_id, key))
            if old is None or (step, ts, value_order(value)) > (
                old[2],
                old[1],
                value_order(old[0]),
            ):
                self.latest[(run_id, key)] = (value, ts, step)
        for ds in ops.datasets:
            self.datasets.setdefault((ds.run_id, ds.name, ds.digest), ds)
        self.model_inputs.update(ops.model_inputs)

    def _relineage(self) -> None:
        result = lineage({run_id: run.parent_run_id for run_id, run in self.runs.items()})
        for run_id, (root, depth) in result.items():
            run = self.runs[run_id]
            run.root_run_id = root
            run.depth = depth
            self.tags[(run_id, DERIVED_ROOT_TAG)] = root

    # --- reads --------------------------------------------------------------------------------

    def snapshot_now(self) -> Snapshot:
        """Return the canonical snapshot of the state."""
        return make_snapshot(
            {
                "experiments": [
                    (
                        i,
                        e.name,
                        e.artifact_location,
                        e.lifecycle_stage,
                        e.creation_time,
                        e.last_update_time,
                    )
                    for i, e in self.experiments.items()
                ],
                "experiment_tags": [(i, k, v) for (i, k), v in self.experiment_tags.items()],
                "runs": [
                    (
                        run_id,
                        r.experiment_id,
                        r.run_name,
                        r.user_id,
                        r.status,
                        r.start_time,
                        r.end_time,
                        r.artifact_uri,
                        r.lifecycle_stage,
                        r.parent_run_id,
                        r.root_run_id,
                        r.depth,
                    )
                    for run_id, r in self.runs.items()
                ],
                "params": [(r, k, v) for (r, k), v in self.params.items()],
                "tags": [(r, k, v) for (r, k), v in self.tags.items()],
                "latest_metrics": [
                    (r, k, value, ts, step) for (r, k), (value, ts, step) in self.latest.items()
                ],
                "metrics": list(self.metrics.values()),
                "run_dataset_inputs": [dataset_input_row(d) for d in self.datasets.values()],
                "run_model_inputs": list(self.model_inputs),
                "projector_rejections": [
                    (reason, r, k, v, event_id, at)
                    for (reason, r, k, v), (event_id, at) in self.rejections.items()
                ],
            }
        )

    def lineage_of(self) -> Mapping[str, tuple[str | None, str, int]]:
        """Return run_id -> (parent_run_id, root_run_id, depth)."""
        return {i: (r.parent_run_id, r.root_run_id, r.depth) for i, r in self.runs.items()}


def _tag_ops(
    table: dict[tuple[int, str], str] | dict[tuple[str, str], str],
    ops: Iterable[tuple[int, str, str | None]] | Iterable[tuple[str, str, str | None]],
) -> None:
    target: dict[tuple[object, str], str] = table  # type: ignore[assignment]
    for owner, key, value in ops:
        if value is None:
            target.pop((owner, key), None)
        else:
            target[(owner, key)] = value
