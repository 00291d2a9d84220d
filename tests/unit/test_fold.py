"""The pure fold: what each event becomes, how a batch collapses, what validation refuses; the
snapshot normalisation and the stats renderer."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
from aiokafka import TopicPartition
from hypothesis import given
from hypothesis import strategies as st
from test_fold_contract import Log, dataset

from ingest.codec import encode_record
from ingest.events import MetricLogged, RunStarted, Tag, TagSet
from projector.batch import collect
from projector.fold import Folder, fold, last_writer_wins_ids
from projector.ops import (
    ExperimentChange,
    NewExperiment,
    NewRun,
    Ops,
    ParamCandidate,
    RunChange,
    value_order,
)
from projector.snapshot import TABLES, make_snapshot, state_hash
from projector.stats import PartitionStats, ProjectorStats, render_prometheus
from projector.validation import validate_events

NAN = float("nan")
INF = float("inf")


def test_a_thousand_metrics_collapse_to_points_and_one_latest_per_key() -> None:
    log = Log()
    events = [log.metric("r", f"k{i % 2}", float(i), ts=i, step=i // 10) for i in range(1000)]
    events += events[:100]  # the same points again
    ops = fold(events)
    assert ops.events == 1100
    assert len(ops.metrics) == 1000
    assert ops.metrics[0] == ("r", "k0", 0, 0, 0.0, None, None, None)
    assert sorted(ops.latest) == [("r", "k0", 998.0, 998, 99), ("r", "k1", 999.0, 999, 99)]
    assert ops.new_runs == ops.run_changes_before == ops.tags_before == ()


def test_nan_points_deduplicate() -> None:
    log = Log()
    ops = fold(
        [
            log.metric("r", "m", float("nan")),
            log.metric("r", "m", float("nan")),
            log.metric("r", "m", -0.0),
            log.metric("r", "m", 0.0),
        ]
    )
    assert len(ops.metrics) == 2
    assert math.isnan(ops.metrics[0][4])
    assert math.copysign(1.0, ops.metrics[1][4]) == -1.0  # the first of -0.0 and 0.0 wins


def test_tag_writes_of_a_key_keep_the_last() -> None:
    log = Log()
    ops = fold(
        [
            log.tag("r", "a", "1"),
            log.tag("r", "b", "1"),
            log.tag("r", "a", "2"),
            log.untag("r", "b"),
            log.untag("r", "c"),
            log.tag("r", "c", "3"),
        ]
    )
    assert ops.tags_before == (("r", "a", "2"), ("r", "b", None), ("r", "c", "3"))


def test_run_field_updates_merge_in_order_around_the_start() -> None:
    log = Log()
    start = log.start("r", parent="p", tags={"x": "1", "mlflow.rootRunId": "no"}, name="n")
    ops = fold(
        [
            log.update("r", status="FAILED"),
            log.tag("r", "early", "1"),
            start,
            log.update("r", status="KILLED", end_time=5),
            log.update("r", run_name="m"),
            log.end("r", "FINISHED", 9),
            log.delete("r"),
            start,
            log.tag("r", "late", "1"),
        ]
    )
    assert ops.run_changes_before == (RunChange("r", status="FAILED"),)
    assert ops.tags_before == (("r", "early", "1"),)
    assert ops.new_runs == (
        NewRun(
            "r",
            1,
            "n",
            "u",
            "RUNNING",
            7,
            "file:///a/r",
            "p",
            (("x", "1"), ("mlflow.runName", "n")),
        ),
    )
    assert ops.run_changes_after == (
        RunChange("r", status="FINISHED", end_time=9, run_name="m", lifecycle_stage="deleted"),
    )
    assert ops.tags_after == (("r", "mlflow.runName", "m"), ("r", "late", "1"))
    assert ops.lineage == ("r",)


def test_special_tags() -> None:
    log = Log()
    ops = fold(
        [
            log.tag("r", "mlflow.runName", "x"),
            log.untag("r", "mlflow.runName"),
            log.tag("r", "mlflow.parentRunId", "p"),
            log.untag("r", "mlflow.parentRunId"),
            log.tag("r", "mlflow.rootRunId", "mine"),
            log.untag("r", "mlflow.rootRunId"),
            log.tag("s", "mlflow.parentRunId", ""),
        ]
    )
    assert ops.run_changes_before == (
        RunChange("r", run_name="x", parent_set=True, parent_run_id=None),
        RunChange("s", parent_set=True, parent_run_id=None),
    )
    assert ("r", "mlflow.rootRunId", "mine") not in ops.tags_before
    assert [k for _, k, _ in ops.tags_before] == [
        "mlflow.runName",
        "mlflow.parentRunId",
        "mlflow.parentRunId",
    ]
    assert ops.lineage == ("r", "s")


def test_experiments_fold_around_their_creation() -> None:
    log = Log()
    created = log.exp("7", "n", at=10, tags={"a": "1"})
    ops = fold(
        [
            log.rename("7", "before", at=5),
            log.exp_tag("7", "t", "0", at=6),
            created,
            log.exp_tag("7", "t", "1", at=11),
            log.exp_delete("7", at=12),
            created,
            log.exp_untag("7", "a", at=13),
        ]
    )
    assert ops.experiment_changes_before == (
        ExperimentChange(7, name="before", last_update_time=6),
    )
    assert ops.new_experiments == (NewExperiment(7, "n", "file:///7", 10, (("a", "1"),)),)
    assert ops.experiment_tags_before == ((7, "t", "0"),)
    assert ops.experiment_tags_after == ((7, "t", "1"), (7, "a", None))
    assert ops.experiment_changes_after == (
        ExperimentChange(7, lifecycle_stage="deleted", last_update_time=13),
    )


def test_params_keep_the_first_value_and_every_distinct_one() -> None:
    log = Log()
    events = [
        log.param("r", "a", "1"),
        log.param("r", "a", "2"),
        log.param("r", "a", "1"),
        log.param("r", "b", "x"),
        log.param("r", "a", "2"),
    ]
    ops = fold(events)
    assert ops.params == (
        ParamCandidate("r", "a", "1", "e000001", events[0].at),
        ParamCandidate("r", "b", "x", "e000004", events[3].at),
    )
    assert [(p.key, p.value, p.event_id) for p in ops.param_values] == [
        ("a", "1", "e000001"),
        ("a", "2", "e000002"),
        ("b", "x", "e000004"),
    ]


def test_inputs() -> None:
    log = Log()
    ops = fold(
        [
            log.inputs(
                "r", dataset("d", "1", "train"), dataset("d", "1", "eval"), models=("m", "m", "n")
            )
        ]
    )
    assert [(d.name, d.context) for d in ops.datasets] == [("d", "train")]
    assert ops.model_inputs == (("r", "m"), ("r", "n"))


def test_last_writer_wins_events_apply_once_per_id() -> None:
    log = Log()
    first, second = log.tag("r", "k", "1"), log.tag("r", "k", "2")
    metric = log.metric("r", "m", 1.0)
    events = [first, second, first, metric, metric]
    assert last_writer_wins_ids(events) == [first.event_id, second.event_id, first.event_id]
    ops = fold(events)
    assert ops.tags_before == (("r", "k", "2"),)
    assert ops.applied == (first.event_id, second.event_id)
    ops = fold(events, applied={second.event_id})
    assert ops.tags_before == (("r", "k", "1"),)
    assert ops.applied == (first.event_id,)


def test_folder_accepts_records_one_by_one() -> None:
    log = Log()
    events = [log.start("r"), log.metric("r", "m", 1.0), log.tag("r", "t", "v")]
    folder = Folder()
    for event in events:
        folder.add([event])
    assert folder.ops() == fold(events)
    assert Ops().is_empty()
    assert not fold(events[:1]).is_empty()


# --- the latest-metric order ------------------------------------------------------------------

values = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([NAN, -0.0]))
points = st.lists(st.tuples(st.integers(-3, 3), st.integers(0, 3), values), min_size=1)


@given(points)
def test_latest_is_the_max_by_step_ts_value_with_nan_on_top(
    pts: list[tuple[int, int, float]],
) -> None:
    log = Log()
    ops = fold([log.metric("r", "m", v, ts=ts, step=step) for step, ts, v in pts])
    ((_, _, value, ts, step),) = ops.latest
    best = max(pts, key=lambda p: (p[0], p[1], value_order(p[2])))
    assert (step, ts, value_order(value)) == (best[0], best[1], value_order(best[2]))
    ((_, _, value, ts, step),) = ops.earliest
    low = min(pts, key=lambda p: (p[0], p[1], value_order(p[2])))
    assert (step, ts, value_order(value)) == (low[0], low[1], value_order(low[2]))


def test_value_order_is_postgresqls() -> None:
    ordered = sorted([NAN, 1.0, -INF, INF, 0.0, -1.0], key=value_order)
    assert ordered[:-1] == [-INF, -1.0, 0.0, 1.0, INF]
    assert math.isnan(ordered[-1])
    assert value_order(NAN) == value_order(float("nan"))


# --- validation -------------------------------------------------------------------------------


def test_valid_events_pass_validation() -> None:
    log = Log()
    events = [
        log.exp("0"),
        log.exp("9223372036854775807"),
        log.start("r", "12"),
        log.metric("r", "m", NAN, ts=2**63 - 1, step=-(2**63)),
        log.param("r", "p", ""),
        log.inputs("r", dataset("d", context="train"), models=("m",)),
        log.update("r", status="FAILED", end_time=3),
        log.end("r"),
    ]
    assert validate_events(events) is None


@pytest.mark.parametrize(
    ("event", "problem"),
    [
        (Log().exp("01"), "not a canonical bigint"),
        (Log().exp("-1"), "not a canonical bigint"),
        (Log().exp("9223372036854775808"), "not a canonical bigint"),
        (Log().exp("\uff11\uff12"), "not a canonical bigint"),
        (Log().exp("abc"), "not a canonical bigint"),
        (Log().start("r", "x"), "not a canonical bigint"),
        (Log().rename("1", "a\x00b"), "NUL"),
        (Log().tag("r\x00", "k", "v"), "NUL"),
        (Log().start("r", tags={"k": "v\x00"}), "NUL"),
        (Log().inputs("r", dataset("d\x00")), "NUL"),
        (Log().end("r", end_time=2**63), "outside bigint"),
        (
            MetricLogged(event_id="e", at=1, run_id="r", key="k\x00", value=1.0, timestamp=1),
            "metric field",
        ),
        (
            MetricLogged(event_id="e", at=1, run_id="r", key="k", value=1.0, timestamp=2**64 - 1),
            "metric field",
        ),
        (
            MetricLogged(
                event_id="e", at=1, run_id="r", key="k", value=1.0, timestamp=1, model_id="\x00"
            ),
            "metric field",
        ),
    ],
)
def test_validation_refuses_what_the_tables_cannot_hold(event: object, problem: str) -> None:
    found = validate_events([Log().metric("ok", "m", 1.0), event])  # type: ignore[list-item]
    assert found is not None
    assert problem in found


def test_run_started_with_parent_tag_only_from_the_field() -> None:
    started = RunStarted(
        event_id="e",
        at=1,
        run_id="r",
        experiment_id="1",
        run_name="n",
        user_id="u",
        start_time=1,
        artifact_uri="a",
        tags=(Tag(key="mlflow.parentRunId", value="p"),),
    )
    assert fold([started]).new_runs[0].parent_run_id is None  # the producer sets the field
    assert (
        fold([TagSet(event_id="f", at=1, run_id="r", key="mlflow.parentRunId", value="p")])
        .run_changes_before[0]
        .parent_run_id
        == "p"
    )


# --- snapshot and stats -----------------------------------------------------------------------


def _empty() -> dict[str, list[tuple[object, ...]]]:
    return {name: [] for name in TABLES}


def test_snapshot_normalises_and_sorts() -> None:
    a = _empty()
    a["metrics"] = [
        ("r", "m", 1, 1, -0.0, None, None, None),
        ("r", "m", 1, 1, NAN, None, None, None),
        ("q", "m", 1, 1, -INF, None, None, None),
    ]
    b = _empty()
    b["metrics"] = [
        ("q", "m", 1, 1, -INF, None, None, None),
        ("r", "m", 1, 1, 0.0, None, None, None),
        ("r", "m", 1, 1, float("nan"), None, None, None),
    ]
    assert make_snapshot(a) == make_snapshot(b)
    assert state_hash(make_snapshot(a)) == state_hash(make_snapshot(b))
    assert [r[4] for r in make_snapshot(a)["metrics"]] == ["-Infinity", "0.0", "NaN"]
    b["tags"] = [("r", "k", "v")]
    assert state_hash(make_snapshot(a)) != state_hash(make_snapshot(b))
    with pytest.raises(ValueError, match="lacks tables"):
        make_snapshot({"runs": []})


def test_stats_and_prometheus_text() -> None:
    stats = ProjectorStats(topic='t"1')
    stats.partitions[0] = PartitionStats(next_offset=90, highwater=100)
    stats.partitions[1] = PartitionStats(next_offset=None, highwater=None)
    stats.committed(500, 5, now=stats.started_at + 1)
    stats.committed(1500, 5, now=stats.started_at + 2)
    assert stats.lag() == {0: 10, 1: None}
    assert stats.events_per_second(now=stats.started_at + 3) == pytest.approx(1000.0)
    assert stats.events_per_second(now=stats.started_at + 60) == 0.0
    text = render_prometheus(stats)
    assert 'runstream_projector_events_total{topic="t\\"1"} 2000\n' in text
    assert 'runstream_projector_lag{topic="t\\"1",partition="0"} 10\n' in text
    assert 'partition="1"} 0\n' in text  # next_offset of a partition not folded yet
    assert "# TYPE runstream_projector_lag gauge" in text


# --- collecting a fetched batch ----------------------------------------------------------------


@dataclass
class FakeRecord:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def test_collect_groups_skips_and_dead_letters() -> None:
    log = Log()
    good = encode_record([log.start("r"), log.metric("r", "m", 1.0)])
    t0, t1, t2 = (TopicPartition("t", p) for p in range(3))
    fetched = {
        t0: [
            FakeRecord(0, 3, b"r", good),
            FakeRecord(0, 4, b"r", good),
            FakeRecord(0, 5, b"x", b"junk"),
            FakeRecord(0, 6, b"r", good),
        ],
        t1: [
            FakeRecord(1, 0, b"r", good),
            FakeRecord(1, 1, b"r", None),
            FakeRecord(1, 2, b"r", b"\x01" + b"x" * 1000),
        ],
        t2: [FakeRecord(2, 0, b"r", good)],  # a partition this member does not hold
        TopicPartition("other", 0): [FakeRecord(0, 9, b"r", good)],
    }
    parts, letters = collect(fetched, "t", {0: 4, 1: None}, max_record_bytes=512)
    assert [(p.tp.partition, p.expected, p.next_offset) for p in parts] == [(0, 4, 7), (1, None, 3)]
    assert [r.offset for r in parts[0].records] == [4, 5, 6]  # offset 3 was folded already
    assert [e is None for e in parts[0].events] == [False, True, False]
    assert [(d.partition, d.offset) for d in letters] == [(0, 5), (1, 1), (1, 2)]
    assert "unknown record format version" in letters[0].error
    assert letters[1].error == "record has no value"
    assert "exceeds 512" in letters[2].error
    assert letters[0].value == b"junk"
    assert dict(letters[0].headers())["original_offset"] == b"5"
