"""Synthetic event logs, reproducible from a seed, for the projector's tests and benchmarks.

A log is a list of records in production order; each record is the events of one partition key
(a run, or ``experiment:<id>``), as the gateway and the emitter write them. The logs exercise
every fold rule: duplicate creates, tags of mlflow.runName / mlflow.parentRunId /
mlflow.rootRunId, parents that arrive late or never, cycles, NaN/inf metrics and duplicate
points, param conflicts (as only the direct emitter can produce), inputs, lifecycle changes, and
whole records delivered twice.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ingest.events import (
    DatasetInput,
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
    Tag,
    TagDeleted,
    TagSet,
    partition_key,
)
from projector.ops import DATA_CONTEXT_TAG, DERIVED_ROOT_TAG, PARENT_TAG, RUN_NAME_TAG

__all__ = ["Record", "metric_log", "mixed_log"]

_SPECIAL = (float("nan"), float("inf"), float("-inf"), -0.0, 0.0)


@dataclass(frozen=True, slots=True)
class Record:
    """One Kafka record: its key and its events (all sharing that key)."""

    key: str
    events: tuple[Event, ...]


class _Ids:
    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self.at = 1_700_000_000_000

    def event(self) -> tuple[str, int]:
        self.at += self._rng.randint(0, 5)
        return f"{self._rng.getrandbits(128):032x}", self.at


def _record(events: list[Event]) -> Record:
    return Record(partition_key(events[0]), tuple(events))


def mixed_log(
    seed: int,
    *,
    experiments: int = 3,
    runs: int = 12,
    metric_records: int = 3,
    metrics_per_record: int = 20,
    duplicate_share: float = 0.1,
) -> list[Record]:
    """Return a log touching every fold rule, runs interleaved in a seed-determined order."""
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets
    ids = _Ids(rng)
    out: list[Record] = []
    exp_ids = [str(i) for i in range(experiments)]
    for exp in exp_ids:
        out.append(_record(_experiment_events(rng, ids, exp)))
    run_ids = [f"r{seed % 1000:03d}{i:03d}{rng.getrandbits(24):06x}" for i in range(runs)]
    queues: list[list[Record]] = []
    for index, run_id in enumerate(run_ids):
        parent = _pick_parent(rng, run_ids, index)
        queue = _run_records(
            rng,
            ids,
            run_id=run_id,
            exp=rng.choice(exp_ids),
            parent=parent,
            run_ids=run_ids,
            metric_records=metric_records,
            metrics_per_record=metrics_per_record,
        )
        queues.append(queue)
    # Interleave runs (each run's records keep their order) and experiment updates.
    tail = [_record(_experiment_updates(rng, ids, exp)) for exp in exp_ids]
    queues.append(tail)
    while any(queues):
        queue = rng.choice([q for q in queues if q])
        out.append(queue.pop(0))
    # Redeliver a share of records after the fact (same events, same ids), in per-key order.
    twice = [r for r in out if rng.random() < duplicate_share]
    out.extend(twice)
    return out


def metric_log(
    seed: int, *, runs: int = 10, records_per_run: int = 20, events_per_record: int = 500
) -> list[Record]:
    """Return a metric-heavy log: per run a RunStarted, then records of MetricLogged events."""
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets
    ids = _Ids(rng)
    out: list[Record] = []
    for r in range(runs):
        run_id = f"m{seed % 1000:03d}{r:05d}{rng.getrandbits(32):08x}"
        event_id, at = ids.event()
        out.append(
            _record(
                [
                    RunStarted(
                        event_id=event_id,
                        at=at,
                        run_id=run_id,
                        experiment_id="0",
                        run_name=run_id,
                        user_id="bench",
                        start_time=at,
                        artifact_uri=f"file:///a/{run_id}",
                    )
                ]
            )
        )
        step = 0
        for _ in range(records_per_run):
            events: list[Event] = []
            for i in range(events_per_record):
                event_id, at = ids.event()
                events.append(
                    MetricLogged(
                        event_id=event_id,
                        at=at,
                        run_id=run_id,
                        key=f"loss{i % 8}",
                        value=rng.random(),
                        timestamp=at,
                        step=step,
                    )
                )
                step += i % 8 == 7
            out.append(_record(events))
    return out


def _experiment_events(rng: random.Random, ids: _Ids, exp: str) -> list[Event]:
    event_id, at = ids.event()
    created = ExperimentCreated(
        event_id=event_id,
        at=at,
        experiment_id=exp,
        name=f"exp-{exp}",
        artifact_location=f"file:///art/{exp}",
        tags=tuple(Tag(key=f"t{i}", value=f"v{i}") for i in range(rng.randint(0, 2))),
    )
    events: list[Event] = [created]
    if rng.random() < 0.5:
        events.append(created)  # a re-delivered create changes nothing
    return events


def _experiment_updates(rng: random.Random, ids: _Ids, exp: str) -> list[Event]:
    events: list[Event] = []
    for _ in range(rng.randint(1, 4)):
        event_id, at = ids.event()
        kind = rng.randrange(5)
        if kind == 0:
            events.append(
                ExperimentRenamed(
                    event_id=event_id, at=at, experiment_id=exp, name=f"exp-{exp}-{at % 97}"
                )
            )
        elif kind == 1:
            events.append(
                ExperimentTagSet(
                    event_id=event_id,
                    at=at,
                    experiment_id=exp,
                    key=f"t{rng.randrange(3)}",
                    value=str(at),
                )
            )
        elif kind == 2:
            events.append(
                ExperimentTagDeleted(
                    event_id=event_id, at=at, experiment_id=exp, key=f"t{rng.randrange(3)}"
                )
            )
        elif kind == 3:
            events.append(ExperimentDeleted(event_id=event_id, at=at, experiment_id=exp))
        else:
            events.append(ExperimentRestored(event_id=event_id, at=at, experiment_id=exp))
    return events


def _pick_parent(rng: random.Random, run_ids: list[str], index: int) -> str | None:
    roll = rng.random()
    if roll < 0.35:
        return None
    if roll < 0.65 and index > 0:
        return run_ids[rng.randrange(index)]  # an earlier run
    if roll < 0.85:
        return rng.choice(run_ids)  # any run: later (arrives after), itself, or forming cycles
    return f"missing-{rng.getrandbits(16):04x}"  # never arrives


def _run_records(
    rng: random.Random,
    ids: _Ids,
    *,
    run_id: str,
    exp: str,
    parent: str | None,
    run_ids: list[str],
    metric_records: int,
    metrics_per_record: int,
) -> list[Record]:
    def meta() -> dict[str, Any]:
        event_id, at = ids.event()
        return {"event_id": event_id, "at": at, "run_id": run_id}

    tags = [Tag(key="mlflow.user", value="u"), Tag(key=RUN_NAME_TAG, value=f"name-{run_id}")]
    if parent is not None:
        tags.append(Tag(key=PARENT_TAG, value=parent))
    if rng.random() < 0.2:
        tags.append(Tag(key=DERIVED_ROOT_TAG, value="user-says-so"))
    started = RunStarted(
        **meta(),
        experiment_id=exp,
        run_name=f"name-{run_id}",
        user_id="u",
        start_time=ids.at,
        artifact_uri=f"file:///art/{exp}/{run_id}",
        tags=tuple(tags),
        parent_run_id=parent,
    )
    records = [_record([started])]
    step = 0
    for _ in range(metric_records):
        events: list[Event] = []
        for _ in range(metrics_per_record):
            value = rng.choice(_SPECIAL) if rng.random() < 0.1 else round(rng.uniform(-5, 5), 2)
            step += rng.choice((0, 1, 1, -1))
            events.append(
                MetricLogged(
                    **meta(),
                    key=f"m{rng.randrange(3)}",
                    value=value,
                    timestamp=ids.at - rng.randrange(3),
                    step=step,
                    model_id=rng.choice((None, None, "m-1")),
                )
            )
        if rng.random() < 0.3:
            events.append(events[rng.randrange(len(events))])  # the same point again
        records.append(_record(events))
    params: list[Event] = [
        ParamLogged(**meta(), key=f"p{i}", value=str(rng.randrange(3))) for i in range(4)
    ]
    params.append(ParamLogged(**meta(), key="p0", value=str(rng.randrange(3))))  # maybe a conflict
    records.append(_record(params))
    records.append(_record(_run_changes(rng, meta, run_ids)))
    datasets = tuple(
        DatasetInput(
            name=f"ds{i}",
            digest=f"d{rng.randrange(2)}",
            source_type="local",
            source="/data",
            schema=rng.choice((None, '{"a": 1}')),
            tags=(Tag(key=DATA_CONTEXT_TAG, value=rng.choice(("train", "eval"))),),
        )
        for i in range(rng.randint(0, 2))
    )
    records.append(_record([InputsLogged(**meta(), datasets=datasets, model_ids=("m-1",))]))
    return records


def _run_changes(
    rng: random.Random, meta: Callable[[], dict[str, Any]], run_ids: list[str]
) -> list[Event]:
    events: list[Event] = []
    for _ in range(rng.randint(2, 7)):
        fields = meta()  # fresh event_id/at, the run's id
        kind = rng.randrange(9)
        if kind == 0:
            events.append(TagSet(**fields, key=f"k{rng.randrange(3)}", value=str(rng.random())))
        elif kind == 1:
            events.append(TagDeleted(**fields, key=f"k{rng.randrange(3)}"))
        elif kind == 2:
            events.append(TagSet(**fields, key=RUN_NAME_TAG, value=f"renamed-{rng.randrange(9)}"))
        elif kind == 3:
            events.append(TagSet(**fields, key=PARENT_TAG, value=rng.choice(run_ids)))
        elif kind == 4:
            events.append(TagDeleted(**fields, key=PARENT_TAG))
        elif kind == 5:
            events.append(
                RunUpdated(
                    **fields,
                    status=rng.choice((None, "RUNNING", "SCHEDULED")),
                    run_name=rng.choice((None, f"upd-{rng.randrange(9)}")),
                )
            )
        elif kind == 6:
            events.append(RunEnded(**fields, status="FINISHED", end_time=fields["at"]))
        elif kind == 7:
            events.append(RunDeleted(**fields))
        else:
            events.append(RunRestored(**fields))
    return events
