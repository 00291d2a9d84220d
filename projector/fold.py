"""Fold a batch of events into set-based write operations: pure, no I/O.

``Folder.add`` takes events in log order (per partition; partitions may interleave freely, since
no two partitions share a run or an experiment) and ``Folder.ops`` returns one collapsed ``Ops``:
1000 ``MetricLogged`` of a run become one list of points, repeated tag writes of a key keep the
last, field updates of a run merge in order. The semantics are MLflow's:

* ``ExperimentCreated`` inserts (creation_time = last_update_time = ``at``); a re-delivered create
  changes nothing, its tags included. Rename, tag set/delete, delete and restore set
  last_update_time = ``at``. Deleting an experiment does not itself touch its runs (the gateway
  emits ``RunDeleted``/``RunRestored`` per run, on the run's partition).
* ``RunStarted`` inserts the run (lifecycle 'active', its tags, and the tag mlflow.runName =
  run_name); a duplicate changes nothing. ``RunUpdated`` changes only the fields it carries (a
  run_name also sets the mlflow.runName tag); a ``TagSet`` of mlflow.runName also renames the run
  and one of mlflow.parentRunId re-links it (``TagDeleted`` of it unlinks; deleting
  mlflow.runName leaves run_name). ``RunEnded`` sets status and end_time.
* mlflow.rootRunId is derived by the store from the lineage; user writes of it are ignored.
* Params: the first value per (run, key) wins; a later different value is kept out and recorded
  as a rejection by the store (it can only tell against the stored value).
* Metrics: one history row per distinct (run, key, step, ts, value), NaN equal to NaN; the latest
  per (run, key) is the max by (step, ts, value) with NaN above every number (PostgreSQL's order).
* Inputs: dataset inputs keyed (run, name, digest), first wins, context = the input tag
  mlflow.data.context; model inputs are a set.
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from dataclasses import dataclass

from ingest.events import (
    Event,
    ExperimentCreated,
    ExperimentDeleted,
    ExperimentRenamed,
    ExperimentRestored,
    ExperimentTagDeleted,
    ExperimentTagSet,
    InputsLogged,
    MetricLogged,
    ParamLogged,
    RunDeleted,
    RunEnded,
    RunRestored,
    RunStarted,
    RunUpdated,
    TagDeleted,
    TagSet,
)
from projector.ops import (
    ACTIVE,
    DATA_CONTEXT_TAG,
    DELETED,
    DERIVED_ROOT_TAG,
    NAN,
    PARENT_TAG,
    RUN_NAME_TAG,
    DatasetRow,
    ExperimentChange,
    LatestRow,
    MetricRow,
    NewExperiment,
    NewRun,
    Ops,
    ParamCandidate,
    RunChange,
)

__all__ = ["LAST_WRITER_WINS", "Folder", "fold", "last_writer_wins_ids"]

# Events whose effect a later event of the same entity can overwrite: re-applying a re-produced
# copy after that would undo the newer write, so these are applied once per event_id. Every other
# event is idempotent by its natural key wherever it is re-applied.
LAST_WRITER_WINS: tuple[type, ...] = (
    TagSet,
    TagDeleted,
    RunUpdated,
    RunEnded,
    RunDeleted,
    RunRestored,
    ExperimentRenamed,
    ExperimentDeleted,
    ExperimentRestored,
    ExperimentTagSet,
    ExperimentTagDeleted,
)


def last_writer_wins_ids(events: Iterable[Event]) -> list[str]:
    """Return the event ids a store must check before folding ``events`` (see ``Folder``)."""
    # Metric points are nearly every event and never last-writer-wins: skip them by exact type
    # first (one identity test) instead of walking the whole tuple of classes for each.
    return [
        e.event_id
        for e in events
        if type(e) is not MetricLogged and isinstance(e, LAST_WRITER_WINS)
    ]


# One canonical NaN object: dict keys compare by identity first, and since Python 3.10 every
# distinct NaN object hashes differently, so NaN points would never deduplicate otherwise.
_NAN = float("nan")


@dataclass(slots=True)
class _RunFields:
    status: str | None = None
    end_time: int | None = None
    run_name: str | None = None
    lifecycle_stage: str | None = None
    parent_set: bool = False
    parent_run_id: str | None = None


@dataclass(slots=True)
class _ExperimentFields:
    name: str | None = None
    lifecycle_stage: str | None = None
    last_update_time: int | None = None


class Folder:
    """Accumulate events of one batch; ``ops()`` returns the collapsed writes.

    ``applied`` holds the ids among ``last_writer_wins_ids(events)`` that the store has applied
    already (a re-produced copy): those events are skipped, as are repeats within the batch.
    """

    def __init__(self, applied: Container[str] = frozenset()) -> None:
        self._skip = applied
        self._applied: dict[str, None] = {}
        self._events = 0
        self._new_experiments: dict[int, NewExperiment] = {}
        self._exp_before: dict[int, _ExperimentFields] = {}
        self._exp_after: dict[int, _ExperimentFields] = {}
        self._exp_tags_before: dict[tuple[int, str], str | None] = {}
        self._exp_tags_after: dict[tuple[int, str], str | None] = {}
        self._new_runs: dict[str, NewRun] = {}
        self._runs_before: dict[str, _RunFields] = {}
        self._runs_after: dict[str, _RunFields] = {}
        self._tags_before: dict[tuple[str, str], str | None] = {}
        self._tags_after: dict[tuple[str, str], str | None] = {}
        self._params: dict[tuple[str, str], ParamCandidate] = {}
        self._param_values: dict[tuple[str, str, str], ParamCandidate] = {}
        self._points: dict[tuple[str, str, int, int, float], MetricRow] = {}
        # (run, key) -> (step, ts, is_nan, value): the batch's max and min by MLflow's rule.
        self._latest: dict[tuple[str, str], tuple[int, int, bool, float]] = {}
        self._earliest: dict[tuple[str, str], tuple[int, int, bool, float]] = {}
        self._datasets: dict[tuple[str, str, str], DatasetRow] = {}
        self._models: dict[tuple[str, str], None] = {}
        self._lineage: dict[str, None] = {}

    # --- the hot path ---------------------------------------------------------------------------

    def add(self, events: Iterable[Event]) -> None:
        """Fold events, in log order, into this batch."""
        points = self._points
        latest = self._latest
        earliest = self._earliest
        count = 0
        for event in events:
            count += 1
            if type(event) is MetricLogged:
                value = event.value
                nan = value != value  # noqa: PLR0124 - NaN test, cheaper than a call
                run_id = event.run_id
                key = event.key
                step = event.step
                ts = event.timestamp
                point = (run_id, key, step, ts, NAN if nan else value)
                if point not in points:
                    points[point] = (
                        run_id,
                        key,
                        step,
                        ts,
                        value,
                        event.model_id,
                        event.dataset_name,
                        event.dataset_digest,
                    )
                    slot = (run_id, key)
                    best = latest.get(slot)
                    if best is None:
                        latest[slot] = earliest[slot] = (step, ts, nan, value)
                    # A later step decides alone: the common case costs no call.
                    elif step > best[0] or (step == best[0] and _later(step, ts, nan, value, best)):
                        latest[slot] = (step, ts, nan, value)
                    elif _earlier(step, ts, nan, value, earliest[slot]):
                        earliest[slot] = (step, ts, nan, value)
            else:
                self._add_other(event)
        self._events += count

    def _add_other(self, event: Event) -> None:
        if isinstance(event, LAST_WRITER_WINS):
            event_id = event.event_id
            if event_id in self._skip or event_id in self._applied:
                return
            self._applied[event_id] = None
        match event:
            case ParamLogged(run_id=run_id, key=key, value=value):
                candidate = ParamCandidate(run_id, key, value, event.event_id, event.at)
                self._params.setdefault((run_id, key), candidate)
                self._param_values.setdefault((run_id, key, value), candidate)
            case TagSet(run_id=run_id, key=key, value=value):
                self._run_tag(run_id, key, value)
            case TagDeleted(run_id=run_id, key=key):
                self._run_tag(run_id, key, None)
            case RunUpdated(run_id=run_id):
                fields = self._run_fields(run_id)
                if event.status is not None:
                    fields.status = event.status
                if event.end_time is not None:
                    fields.end_time = event.end_time
                if event.run_name is not None:
                    fields.run_name = event.run_name
                    self._tags(run_id)[(run_id, RUN_NAME_TAG)] = event.run_name
            case RunEnded(run_id=run_id):
                fields = self._run_fields(run_id)
                fields.status = event.status
                fields.end_time = event.end_time
            case RunDeleted(run_id=run_id):
                self._run_fields(run_id).lifecycle_stage = DELETED
            case RunRestored(run_id=run_id):
                self._run_fields(run_id).lifecycle_stage = ACTIVE
            case RunStarted():
                self._run_started(event)
            case InputsLogged():
                self._inputs(event)
            case ExperimentCreated():
                self._experiment_created(event)
            case ExperimentRenamed():
                self._experiment_fields(event.experiment_id, event.at).name = event.name
            case ExperimentDeleted():
                self._experiment_fields(event.experiment_id, event.at).lifecycle_stage = DELETED
            case ExperimentRestored():
                self._experiment_fields(event.experiment_id, event.at).lifecycle_stage = ACTIVE
            case ExperimentTagSet():
                self._experiment_tag(event.experiment_id, event.key, event.value, event.at)
            case ExperimentTagDeleted():
                self._experiment_tag(event.experiment_id, event.key, None, event.at)
            case MetricLogged():  # pragma: no cover - handled on the hot path above
                self.add((event,))

    # --- runs -----------------------------------------------------------------------------------

    def _run_fields(self, run_id: str) -> _RunFields:
        segment = self._runs_after if run_id in self._new_runs else self._runs_before
        fields = segment.get(run_id)
        if fields is None:
            fields = segment[run_id] = _RunFields()
        return fields

    def _tags(self, run_id: str) -> dict[tuple[str, str], str | None]:
        return self._tags_after if run_id in self._new_runs else self._tags_before

    def _run_tag(self, run_id: str, key: str, value: str | None) -> None:
        if key == DERIVED_ROOT_TAG:
            return  # derived from the lineage; the derived value wins
        self._tags(run_id)[(run_id, key)] = value
        if key == RUN_NAME_TAG:
            if value is not None:  # deleting the tag leaves run_name (MLflow)
                self._run_fields(run_id).run_name = value
        elif key == PARENT_TAG:
            fields = self._run_fields(run_id)
            fields.parent_set = True
            fields.parent_run_id = value or None
            self._lineage[run_id] = None

    def _run_started(self, event: RunStarted) -> None:
        run_id = event.run_id
        if run_id in self._new_runs:
            return  # a duplicate within the batch: the first insert already happened
        tags = {t.key: t.value for t in event.tags if t.key != DERIVED_ROOT_TAG}
        tags[RUN_NAME_TAG] = event.run_name
        self._new_runs[run_id] = NewRun(
            run_id=run_id,
            experiment_id=int(event.experiment_id),
            run_name=event.run_name,
            user_id=event.user_id,
            status=event.status,
            start_time=event.start_time,
            artifact_uri=event.artifact_uri,
            parent_run_id=event.parent_run_id or None,
            tags=tuple(tags.items()),
        )
        self._lineage[run_id] = None

    def _inputs(self, event: InputsLogged) -> None:
        run_id = event.run_id
        for ds in event.datasets:
            tags = tuple((t.key, t.value) for t in ds.tags)
            context = None
            for key, value in tags:
                if key == DATA_CONTEXT_TAG:
                    context = value
            row = DatasetRow(
                run_id,
                ds.name,
                ds.digest,
                ds.source_type,
                ds.source,
                ds.schema,
                ds.profile,
                context,
                tags,
            )
            self._datasets.setdefault((run_id, ds.name, ds.digest), row)
        for model_id in event.model_ids:
            self._models[(run_id, model_id)] = None

    # --- experiments ----------------------------------------------------------------------------

    def _experiment_created(self, event: ExperimentCreated) -> None:
        experiment_id = int(event.experiment_id)
        if experiment_id in self._new_experiments:
            return
        tags = {t.key: t.value for t in event.tags}
        self._new_experiments[experiment_id] = NewExperiment(
            experiment_id=experiment_id,
            name=event.name,
            artifact_location=event.artifact_location,
            at=event.at,
            tags=tuple(tags.items()),
        )

    def _experiment_fields(self, raw_id: str, at: int) -> _ExperimentFields:
        experiment_id = int(raw_id)
        new = experiment_id in self._new_experiments
        segment = self._exp_after if new else self._exp_before
        fields = segment.get(experiment_id)
        if fields is None:
            fields = segment[experiment_id] = _ExperimentFields()
        fields.last_update_time = at
        return fields

    def _experiment_tag(self, raw_id: str, key: str, value: str | None, at: int) -> None:
        experiment_id = int(raw_id)
        self._experiment_fields(raw_id, at)
        if experiment_id in self._new_experiments:
            self._exp_tags_after[(experiment_id, key)] = value
        else:
            self._exp_tags_before[(experiment_id, key)] = value

    # --- the result -----------------------------------------------------------------------------

    def ops(self) -> Ops:
        """Return the batch's writes, collapsed."""
        return Ops(
            experiment_changes_before=_experiment_changes(self._exp_before),
            new_experiments=tuple(self._new_experiments.values()),
            experiment_tags_before=tuple((e, k, v) for (e, k), v in self._exp_tags_before.items()),
            experiment_tags_after=tuple((e, k, v) for (e, k), v in self._exp_tags_after.items()),
            experiment_changes_after=_experiment_changes(self._exp_after),
            run_changes_before=_run_changes(self._runs_before),
            new_runs=tuple(self._new_runs.values()),
            tags_before=tuple((r, k, v) for (r, k), v in self._tags_before.items()),
            tags_after=tuple((r, k, v) for (r, k), v in self._tags_after.items()),
            run_changes_after=_run_changes(self._runs_after),
            params=tuple(self._params.values()),
            param_values=tuple(self._param_values.values()),
            metrics=list(self._points.values()),
            latest=tuple(
                _latest_row(run_id, key, best) for (run_id, key), best in self._latest.items()
            ),
            earliest=tuple(
                _latest_row(run_id, key, low) for (run_id, key), low in self._earliest.items()
            ),
            datasets=tuple(self._datasets.values()),
            model_inputs=tuple(self._models),
            lineage=tuple(self._lineage),
            applied=tuple(self._applied),
            events=self._events,
        )


def fold(events: Iterable[Event], applied: Container[str] = frozenset()) -> Ops:
    """Return the collapsed writes of one batch of events (in log order per partition)."""
    folder = Folder(applied)
    folder.add(events)
    return folder.ops()


def _later(step: int, ts: int, nan: bool, value: float, best: tuple[int, int, bool, float]) -> bool:
    """Return True if (step, ts, value) is strictly after ``best`` in MLflow's latest order."""
    b_step, b_ts, b_nan, b_value = best
    if step != b_step:
        return step > b_step
    if ts != b_ts:
        return ts > b_ts
    if nan or b_nan:
        return nan and not b_nan  # NaN is above every number and equal to NaN
    return value > b_value


def _earlier(
    step: int, ts: int, nan: bool, value: float, low: tuple[int, int, bool, float]
) -> bool:
    """Return True if (step, ts, value) is strictly before ``low`` in MLflow's latest order."""
    l_step, l_ts, l_nan, l_value = low
    if step != l_step:
        return step < l_step
    if ts != l_ts:
        return ts < l_ts
    if nan or l_nan:
        return l_nan and not nan
    return value < l_value


def _latest_row(run_id: str, key: str, best: tuple[int, int, bool, float]) -> LatestRow:
    step, ts, _, value = best
    return (run_id, key, value, ts, step)


def _run_changes(segment: dict[str, _RunFields]) -> tuple[RunChange, ...]:
    return tuple(
        RunChange(
            run_id,
            status=f.status,
            end_time=f.end_time,
            run_name=f.run_name,
            lifecycle_stage=f.lifecycle_stage,
            parent_set=f.parent_set,
            parent_run_id=f.parent_run_id,
        )
        for run_id, f in segment.items()
    )


def _experiment_changes(segment: dict[int, _ExperimentFields]) -> tuple[ExperimentChange, ...]:
    return tuple(
        ExperimentChange(
            experiment_id,
            name=f.name,
            lifecycle_stage=f.lifecycle_stage,
            last_update_time=f.last_update_time,
        )
        for experiment_id, f in segment.items()
    )
