"""Fold-equivalence of the reference with itself: one batch, any split into batches, one event
per batch, and any interleaving of partitions all give the same state."""

from __future__ import annotations

import itertools
import random

from hypothesis import given, settings
from hypothesis import strategies as st

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
from projector.memory import MemoryStore
from projector.snapshot import Snapshot
from projector.synthetic import mixed_log

RUNS = ["a", "b", "c"]
EXPS = ["0", "1"]
KEYS = ["k", "mlflow.runName", "mlflow.parentRunId", "mlflow.rootRunId"]

meta = {"event_id": st.sampled_from([f"e{i}" for i in range(40)]), "at": st.integers(0, 50)}
run = st.sampled_from(RUNS)
exp = st.sampled_from(EXPS)
text = st.sampled_from(["", "x", "y", "a", "b"])
key = st.sampled_from(KEYS)
floats = st.sampled_from([0.0, -0.0, 1.0, float("nan"), float("inf"), float("-inf")])
tags = st.lists(st.builds(Tag, key=key, value=text), max_size=2).map(tuple)

run_events = st.one_of(
    st.builds(
        RunStarted,
        **meta,
        run_id=run,
        experiment_id=exp,
        run_name=text,
        user_id=text,
        start_time=st.integers(0, 9),
        artifact_uri=text,
        status=text,
        tags=tags,
        parent_run_id=st.one_of(st.none(), run),
    ),
    st.builds(ParamLogged, **meta, run_id=run, key=key, value=text),
    st.builds(
        MetricLogged,
        **meta,
        run_id=run,
        key=key,
        value=floats,
        timestamp=st.integers(0, 2),
        step=st.integers(-1, 1),
        model_id=st.one_of(st.none(), text),
    ),
    st.builds(TagSet, **meta, run_id=run, key=key, value=st.one_of(text, run)),
    st.builds(TagDeleted, **meta, run_id=run, key=key),
    st.builds(
        RunUpdated,
        **meta,
        run_id=run,
        status=st.one_of(st.none(), text),
        end_time=st.one_of(st.none(), st.integers(0, 9)),
        run_name=st.one_of(st.none(), text),
    ),
    st.builds(RunEnded, **meta, run_id=run, status=text, end_time=st.integers(0, 9)),
    st.builds(RunDeleted, **meta, run_id=run),
    st.builds(RunRestored, **meta, run_id=run),
    st.builds(
        InputsLogged,
        **meta,
        run_id=run,
        datasets=st.lists(
            st.builds(
                DatasetInput, name=text, digest=text, source_type=text, source=text, tags=tags
            ),
            max_size=2,
        ).map(tuple),
        model_ids=st.lists(text, max_size=2).map(tuple),
    ),
)
experiment_events = st.one_of(
    st.builds(
        ExperimentCreated, **meta, experiment_id=exp, name=text, artifact_location=text, tags=tags
    ),
    st.builds(ExperimentRenamed, **meta, experiment_id=exp, name=text),
    st.builds(ExperimentDeleted, **meta, experiment_id=exp),
    st.builds(ExperimentRestored, **meta, experiment_id=exp),
    st.builds(ExperimentTagSet, **meta, experiment_id=exp, key=key, value=text),
    st.builds(ExperimentTagDeleted, **meta, experiment_id=exp, key=key),
)
# A pool of distinct events; a log draws from it with repetition, so a repeated event is a
# re-produced copy (same id, same content), as duplicate delivery makes them.
pools = st.lists(
    st.one_of(run_events, experiment_events),
    min_size=1,
    max_size=25,
    unique_by=lambda e: e.event_id,
)


@st.composite
def logs(draw: st.DrawFn) -> list[Event]:
    pool = draw(pools)
    return draw(st.lists(st.sampled_from(pool), max_size=40))


def fold_batches(events: list[Event], cuts: list[int]) -> Snapshot:
    store = MemoryStore()
    bounds = [0, *sorted(cuts), len(events)]
    for lo, hi in itertools.pairwise(bounds):
        store.fold_log(events[lo:hi])
    return store.snapshot_now()


@settings(max_examples=400)
@given(events=logs(), data=st.data())
def test_one_batch_equals_any_split(events: list[Event], data: st.DataObject) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(events)), max_size=6))
    whole = fold_batches(events, [])
    assert fold_batches(events, cuts) == whole
    assert fold_batches(events, list(range(len(events)))) == whole


@settings(max_examples=200)
@given(events=logs(), data=st.data())
def test_partitions_may_interleave_in_any_order(events: list[Event], data: st.DataObject) -> None:
    queues: dict[str, list[Event]] = {}
    for event in events:
        queues.setdefault(partition_key(event), []).append(event)
    order: list[Event] = []
    while queues:
        k = data.draw(st.sampled_from(sorted(queues)))
        order.append(queues[k].pop(0))
        if not queues[k]:
            del queues[k]
    cuts = data.draw(st.lists(st.integers(0, len(order)), max_size=4))
    assert fold_batches(order, cuts) == fold_batches(events, [])


def test_synthetic_logs_fold_the_same_however_delivered() -> None:
    for seed in range(5):
        log = mixed_log(seed, runs=15)
        events = [e for r in log for e in r.events]
        whole = fold_batches(events, [])
        rng = random.Random(seed)
        by_key: dict[str, list[Event]] = {}
        for record in log:
            by_key.setdefault(record.key, []).extend(record.events)
        shuffled: list[Event] = []
        while by_key:
            k = rng.choice(sorted(by_key))
            shuffled.append(by_key[k].pop(0))
            if not by_key[k]:
                del by_key[k]
        cuts = [rng.randrange(len(events) + 1) for _ in range(20)]
        assert fold_batches(shuffled, cuts) == whole
        # And the duplicates the log holds changed nothing compared with a single delivery.
        single = mixed_log(seed, runs=15, duplicate_share=0.0)
        assert fold_batches([e for r in single for e in r.events], []) == whole
