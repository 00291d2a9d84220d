"""One contract for both stores: every fold rule, executed by the in-memory reference here and by
PostgreSQL in tests/integration/test_projector_store.py (``TestPgStoreContract``).

``StoreContract`` is abstract (no ``Test`` prefix): a subclass provides the ``store`` fixture.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import pytest

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
)
from projector.errors import FencedError
from projector.fold import fold, last_writer_wins_ids
from projector.lineage import lineage
from projector.memory import MemoryStore
from projector.ops import OffsetMove, Ops
from projector.snapshot import Snapshot

ROOT = "mlflow.rootRunId"
INF = float("inf")
NAN = float("nan")


class Store(Protocol):
    """What the contract needs of a store."""

    async def apply(self, ops: Ops, offsets: Iterable[OffsetMove] = ()) -> None: ...

    async def load_offsets(
        self, topic: str, partitions: Iterable[int]
    ) -> dict[int, int | None]: ...

    async def applied_ids(self, event_ids: Iterable[str]) -> set[str]: ...

    async def snapshot(self) -> Snapshot: ...


async def fold_into(
    store: Store, events: Sequence[Event], offsets: Iterable[OffsetMove] = ()
) -> None:
    """Fold one batch the way the consumer does: skip copies of applied last-writer-wins events."""
    applied = await store.applied_ids(last_writer_wins_ids(events))
    await store.apply(fold(events, applied), offsets)


class Log:
    """Build events tersely: unique event ids, increasing `at` unless given."""

    def __init__(self) -> None:
        self.n = 0
        self.now = 1000

    def meta(self, at: int | None) -> dict[str, Any]:
        self.n += 1
        self.now += 1
        return {"event_id": f"e{self.n:06d}", "at": self.now if at is None else at}

    def exp(
        self,
        exp: str = "1",
        name: str = "e",
        *,
        at: int | None = None,
        tags: dict[str, str] | None = None,
    ) -> ExperimentCreated:
        return ExperimentCreated(
            **self.meta(at),
            experiment_id=exp,
            name=name,
            artifact_location=f"file:///{exp}",
            tags=tuple(Tag(key=k, value=v) for k, v in (tags or {}).items()),
        )

    def rename(self, exp: str, name: str, at: int | None = None) -> ExperimentRenamed:
        return ExperimentRenamed(**self.meta(at), experiment_id=exp, name=name)

    def exp_tag(self, exp: str, key: str, value: str, at: int | None = None) -> ExperimentTagSet:
        return ExperimentTagSet(**self.meta(at), experiment_id=exp, key=key, value=value)

    def exp_untag(self, exp: str, key: str, at: int | None = None) -> ExperimentTagDeleted:
        return ExperimentTagDeleted(**self.meta(at), experiment_id=exp, key=key)

    def exp_delete(self, exp: str, at: int | None = None) -> ExperimentDeleted:
        return ExperimentDeleted(**self.meta(at), experiment_id=exp)

    def exp_restore(self, exp: str, at: int | None = None) -> ExperimentRestored:
        return ExperimentRestored(**self.meta(at), experiment_id=exp)

    def start(
        self,
        run: str,
        exp: str = "1",
        *,
        parent: str | None = None,
        name: str | None = None,
        tags: dict[str, str] | None = None,
        status: str = "RUNNING",
    ) -> RunStarted:
        return RunStarted(
            **self.meta(None),
            run_id=run,
            experiment_id=exp,
            run_name=name or f"name-{run}",
            user_id="u",
            start_time=7,
            artifact_uri=f"file:///a/{run}",
            status=status,
            tags=tuple(Tag(key=k, value=v) for k, v in (tags or {}).items()),
            parent_run_id=parent,
        )

    def metric(
        self,
        run: str,
        key: str,
        value: float,
        ts: int = 0,
        step: int = 0,
        *,
        model_id: str | None = None,
    ) -> MetricLogged:
        return MetricLogged(
            **self.meta(None),
            run_id=run,
            key=key,
            value=value,
            timestamp=ts,
            step=step,
            model_id=model_id,
        )

    def param(self, run: str, key: str, value: str) -> ParamLogged:
        return ParamLogged(**self.meta(None), run_id=run, key=key, value=value)

    def tag(self, run: str, key: str, value: str) -> TagSet:
        return TagSet(**self.meta(None), run_id=run, key=key, value=value)

    def untag(self, run: str, key: str) -> TagDeleted:
        return TagDeleted(**self.meta(None), run_id=run, key=key)

    def update(self, run: str, **fields: Any) -> RunUpdated:
        return RunUpdated(**self.meta(None), run_id=run, **fields)

    def end(self, run: str, status: str = "FINISHED", end_time: int = 99) -> RunEnded:
        return RunEnded(**self.meta(None), run_id=run, status=status, end_time=end_time)

    def delete(self, run: str) -> RunDeleted:
        return RunDeleted(**self.meta(None), run_id=run)

    def restore(self, run: str) -> RunRestored:
        return RunRestored(**self.meta(None), run_id=run)

    def inputs(self, run: str, *datasets: DatasetInput, models: Sequence[str] = ()) -> InputsLogged:
        return InputsLogged(
            **self.meta(None), run_id=run, datasets=datasets, model_ids=tuple(models)
        )


def dataset(name: str, digest: str = "d", context: str | None = None, **kw: Any) -> DatasetInput:
    tags = (Tag(key="mlflow.data.context", value=context),) if context else ()
    return DatasetInput(name=name, digest=digest, source_type="local", source="/x", tags=tags, **kw)


def table(snap: Snapshot, name: str) -> list[tuple[Any, ...]]:
    return snap[name]


def run_row(snap: Snapshot, run: str) -> dict[str, Any]:
    cols = (
        "run_id",
        "experiment_id",
        "run_name",
        "user_id",
        "status",
        "start_time",
        "end_time",
        "artifact_uri",
        "lifecycle_stage",
        "parent_run_id",
        "root_run_id",
        "depth",
    )
    rows = [dict(zip(cols, r, strict=True)) for r in snap["runs"] if r[0] == run]
    assert len(rows) == 1, f"run {run} has {len(rows)} rows"
    return rows[0]


def exp_row(snap: Snapshot, exp: int) -> dict[str, Any]:
    cols = (
        "experiment_id",
        "name",
        "artifact_location",
        "lifecycle_stage",
        "creation_time",
        "last_update_time",
    )
    rows = [dict(zip(cols, r, strict=True)) for r in snap["experiments"] if r[0] == exp]
    assert len(rows) == 1
    return rows[0]


def tags_of(snap: Snapshot, run: str) -> dict[str, str]:
    return {k: v for r, k, v in snap["tags"] if r == run}


class StoreContract:
    """The rules every store must execute identically; subclasses give a `store` fixture."""

    async def fold_in(
        self, store: Store, events: Sequence[Event], *, split: bool = False
    ) -> Snapshot:
        """Apply events in one batch, or one batch per event, and return the snapshot."""
        if split:
            for event in events:
                await fold_into(store, [event])
        else:
            await fold_into(store, events)
        return await store.snapshot()

    # --- experiments ----------------------------------------------------------------------

    @pytest.mark.parametrize("split", [False, True])
    async def test_experiment_created_and_redelivered(self, store: Store, split: bool) -> None:
        log = Log()
        created = log.exp("1", "first", at=50, tags={"a": "1", "b": "2"})
        events = [
            created,
            log.exp_untag("1", "a", at=60),
            log.rename("1", "second", at=70),
            created,
        ]
        snap = await self.fold_in(store, events, split=split)
        assert exp_row(snap, 1) == {
            "experiment_id": 1,
            "name": "second",
            "artifact_location": "file:///1",
            "lifecycle_stage": "active",
            "creation_time": 50,
            "last_update_time": 70,
        }
        assert table(snap, "experiment_tags") == [(1, "b", "2")]

    async def test_experiment_updates_set_last_update_time(self, store: Store) -> None:
        log = Log()
        await store.apply(fold([log.exp("3", at=10), log.exp("4", at=10)]))
        steps: list[tuple[Event, str, int]] = [
            (log.exp_tag("3", "k", "v", at=20), "active", 20),
            (log.exp_delete("3", at=30), "deleted", 30),
            (log.exp_untag("3", "k", at=40), "deleted", 40),
            (log.exp_restore("3", at=50), "active", 50),
        ]
        for event, stage, at in steps:
            snap = await self.fold_in(store, [event])
            row = exp_row(snap, 3)
            assert (row["lifecycle_stage"], row["last_update_time"]) == (stage, at)
            assert exp_row(snap, 4)["last_update_time"] == 10

    async def test_experiment_deletion_does_not_touch_runs(self, store: Store) -> None:
        log = Log()
        snap = await self.fold_in(store, [log.exp("1"), log.start("r"), log.exp_delete("1")])
        assert run_row(snap, "r")["lifecycle_stage"] == "active"
        assert exp_row(snap, 1)["lifecycle_stage"] == "deleted"

    # --- runs -------------------------------------------------------------------------------

    async def test_run_started_inserts(self, store: Store) -> None:
        log = Log()
        start = log.start(
            "r1", "5", name="nice", tags={"mlflow.user": "u", "x": "y"}, status="SCHEDULED"
        )
        snap = await self.fold_in(store, [start])
        assert run_row(snap, "r1") == {
            "run_id": "r1",
            "experiment_id": 5,
            "run_name": "nice",
            "user_id": "u",
            "status": "SCHEDULED",
            "start_time": 7,
            "end_time": None,
            "artifact_uri": "file:///a/r1",
            "lifecycle_stage": "active",
            "parent_run_id": None,
            "root_run_id": "r1",
            "depth": 0,
        }
        assert tags_of(snap, "r1") == {
            "mlflow.user": "u",
            "x": "y",
            "mlflow.runName": "nice",
            ROOT: "r1",
        }

    @pytest.mark.parametrize("split", [False, True])
    async def test_duplicate_run_started_changes_nothing(self, store: Store, split: bool) -> None:
        log = Log()
        start = log.start("r", tags={"a": "1"})
        events = [start, log.end("r"), log.untag("r", "a"), log.tag("r", "b", "2"), start]
        snap = await self.fold_in(store, events, split=split)
        row = run_row(snap, "r")
        assert (row["status"], row["end_time"]) == ("FINISHED", 99)
        assert tags_of(snap, "r") == {"b": "2", "mlflow.runName": "name-r", ROOT: "r"}

    @pytest.mark.parametrize("split", [False, True])
    async def test_run_updated_changes_only_given_fields(self, store: Store, split: bool) -> None:
        log = Log()
        events = [
            log.start("r"),
            log.update("r", status="FAILED"),
            log.update("r", end_time=123),
            log.update("r", run_name="renamed"),
            log.update("r"),
        ]
        snap = await self.fold_in(store, events, split=split)
        row = run_row(snap, "r")
        assert (row["status"], row["end_time"], row["run_name"]) == ("FAILED", 123, "renamed")
        assert tags_of(snap, "r")["mlflow.runName"] == "renamed"

    @pytest.mark.parametrize("split", [False, True])
    async def test_run_name_tag_and_run_name_stay_in_sync(self, store: Store, split: bool) -> None:
        log = Log()
        events = [
            log.start("r", name="a"),
            log.tag("r", "mlflow.runName", "b"),
            log.untag("r", "mlflow.runName"),
        ]
        snap = await self.fold_in(store, events, split=split)
        assert run_row(snap, "r")["run_name"] == "b"  # deleting the tag leaves run_name
        assert "mlflow.runName" not in tags_of(snap, "r")

    async def test_run_ended_and_lifecycle(self, store: Store) -> None:
        log = Log()
        snap = await self.fold_in(
            store, [log.start("r"), log.end("r", "KILLED", 55), log.delete("r")]
        )
        row = run_row(snap, "r")
        assert (row["status"], row["end_time"], row["lifecycle_stage"]) == ("KILLED", 55, "deleted")
        snap = await self.fold_in(store, [log.restore("r")])
        assert run_row(snap, "r")["lifecycle_stage"] == "active"

    @pytest.mark.parametrize("split", [False, True])
    async def test_events_before_run_started_do_not_crash(self, store: Store, split: bool) -> None:
        log = Log()
        events = [
            log.end("ghost"),
            log.tag("ghost", "k", "early"),
            log.param("ghost", "p", "1"),
            log.metric("ghost", "m", 1.0),
            log.delete("ghost"),
            log.start("ghost", tags={"k": "start"}),
            log.tag("ghost", "j", "late"),
        ]
        snap = await self.fold_in(store, events, split=split)
        row = run_row(snap, "ghost")
        # Field changes before the run exists have nothing to change; its rows are kept.
        assert (row["status"], row["lifecycle_stage"]) == ("RUNNING", "active")
        assert tags_of(snap, "ghost")["k"] == "start"
        assert tags_of(snap, "ghost")["j"] == "late"
        assert table(snap, "params") == [("ghost", "p", "1")]
        assert len(table(snap, "metrics")) == 1

    async def test_user_root_run_id_tag_is_ignored(self, store: Store) -> None:
        log = Log()
        events = [
            log.start("r", tags={ROOT: "fake"}),
            log.tag("r", ROOT, "fake2"),
            log.untag("r", ROOT),
        ]
        snap = await self.fold_in(store, events)
        assert tags_of(snap, "r")[ROOT] == "r"

    # --- params -----------------------------------------------------------------------------

    @pytest.mark.parametrize("split", [False, True])
    async def test_param_first_value_wins(self, store: Store, split: bool) -> None:
        log = Log()
        events = [
            log.start("r"),
            log.param("r", "lr", "0.1"),
            log.param("r", "lr", "0.1"),
            log.param("r", "lr", "0.2"),
            log.param("r", "lr", "0.2"),
            log.param("r", "lr", "0.3"),
        ]
        snap = await self.fold_in(store, events, split=split)
        assert table(snap, "params") == [("r", "lr", "0.1")]
        # Each distinct refused value once, with the first event that carried it.
        assert table(snap, "projector_rejections") == [
            ("param_conflict", "r", "lr", "0.2", events[3].event_id, events[3].at),
            ("param_conflict", "r", "lr", "0.3", events[5].event_id, events[5].at),
        ]

    async def test_param_conflict_across_batches(self, store: Store) -> None:
        log = Log()
        await store.apply(fold([log.start("r"), log.param("r", "k", "a")]))
        snap = await self.fold_in(store, [log.param("r", "k", "b"), log.param("r", "k", "a")])
        assert table(snap, "params") == [("r", "k", "a")]
        assert [r[3] for r in table(snap, "projector_rejections")] == ["b"]

    async def test_long_param_and_tag_values(self, store: Store) -> None:
        # MLflow allows 6000-character params and 8000-character tags; random text does not
        # compress, so a (key, value) btree entry would not fit.
        rng = random.Random(7)
        long_a = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(6000))
        long_b = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(8000))
        log = Log()
        snap = await self.fold_in(
            store,
            [
                log.start("r"),
                log.param("r", "p", long_a),
                log.param("r", "p", long_b),
                log.tag("r", "t", long_b),
            ],
        )
        assert table(snap, "params") == [("r", "p", long_a)]
        assert tags_of(snap, "r")["t"] == long_b
        assert len(table(snap, "projector_rejections")) == 1

    # --- metrics ----------------------------------------------------------------------------

    @pytest.mark.parametrize("split", [False, True])
    async def test_metric_history_keeps_distinct_points(self, store: Store, split: bool) -> None:
        log = Log()
        events = [
            log.start("r"),
            log.metric("r", "m", NAN, 1, 1, model_id="first"),
            log.metric("r", "m", NAN, 1, 1, model_id="second"),
            log.metric("r", "m", INF, 1, 1),
            log.metric("r", "m", -INF, 1, 1),
            log.metric("r", "m", 0.0, 1, 1),
            log.metric("r", "m", -0.0, 1, 1),
            log.metric("r", "m", 0.5, 1, 1),
            log.metric("r", "m", 0.5, 1, 1),
            log.metric("r", "m", 0.5, 2, 1),
        ]
        snap = await self.fold_in(store, events, split=split)
        assert table(snap, "metrics") == sorted(
            [
                ("r", "m", 1, 1, "NaN", "first", None, None),
                ("r", "m", 1, 1, "Infinity", None, None, None),
                ("r", "m", 1, 1, "-Infinity", None, None, None),
                ("r", "m", 1, 1, "0.0", None, None, None),
                ("r", "m", 1, 1, "0.5", None, None, None),
                ("r", "m", 1, 2, "0.5", None, None, None),
            ],
            key=json.dumps,
        )

    @pytest.mark.parametrize("split", [False, True])
    async def test_latest_metric_is_mlflows_max(self, store: Store, split: bool) -> None:
        log = Log()
        # MLFLOW_API.md section 5's example: (step, ts, value) -> latest 20.
        points = [(0, 100, 1000.0), (3, 40, 100.0), (3, 50, 10.0), (3, 50, 20.0), (-3, 900, 900.0)]
        events: list[Event] = [log.start("r")]
        events += [log.metric("r", "m", v, ts, step) for step, ts, v in points]
        snap = await self.fold_in(store, events, split=split)
        assert table(snap, "latest_metrics") == [("r", "m", "20.0", 50, 3)]

    @pytest.mark.parametrize("split", [False, True])
    async def test_latest_metric_nan_is_above_infinity(self, store: Store, split: bool) -> None:
        log = Log()
        events = [
            log.start("r"),
            log.metric("r", "a", INF, 5, 2),
            log.metric("r", "a", NAN, 5, 2),
            log.metric("r", "a", 3.0, 5, 2),
            log.metric("r", "b", 1.0, 5, 2),
            log.metric("r", "b", INF, 5, 2),
            log.metric("r", "b", -INF, 6, 1),
        ]
        snap = await self.fold_in(store, events, split=split)
        assert table(snap, "latest_metrics") == [
            ("r", "a", "NaN", 5, 2),
            ("r", "b", "Infinity", 5, 2),
        ]

    # --- inputs -----------------------------------------------------------------------------

    async def test_inputs(self, store: Store) -> None:
        log = Log()
        events = [
            log.start("r"),
            log.inputs(
                "r",
                dataset("train", "d1", "training", schema='{"a":1}'),
                dataset("eval", "d2"),
                models=("m-1", "m-2"),
            ),
            log.inputs(
                "r", dataset("train", "d1", "other"), dataset("train", "d3", "x"), models=("m-1",)
            ),
        ]
        snap = await self.fold_in(store, events)
        assert [(r[1], r[2], r[5], r[7]) for r in table(snap, "run_dataset_inputs")] == [
            ("eval", "d2", None, None),
            ("train", "d1", '{"a":1}', "training"),
            ("train", "d3", None, "x"),
        ]
        tags = [r[8] for r in table(snap, "run_dataset_inputs") if r[2] == "d1"]
        assert tags == ['[{"key":"mlflow.data.context","value":"training"}]']
        assert table(snap, "run_model_inputs") == [("r", "m-1"), ("r", "m-2")]

    # --- lineage ----------------------------------------------------------------------------

    async def test_child_before_parent(self, store: Store) -> None:
        log = Log()
        snap = await self.fold_in(store, [log.start("c", parent="p")])
        assert (run_row(snap, "c")["root_run_id"], run_row(snap, "c")["depth"]) == ("c", 0)
        snap = await self.fold_in(store, [log.start("g", parent="never")])
        snap = await self.fold_in(store, [log.start("p", parent="g")])
        for run, root, depth in [("g", "g", 0), ("p", "g", 1), ("c", "g", 2)]:
            row = run_row(snap, run)
            assert (row["root_run_id"], row["depth"]) == (root, depth)
            assert tags_of(snap, run)[ROOT] == root
        assert run_row(snap, "g")["parent_run_id"] == "never"

    async def test_parent_tag_moves_a_subtree(self, store: Store) -> None:
        log = Log()
        await store.apply(
            fold(
                [
                    log.start("a"),
                    log.start("b"),
                    log.start("c", parent="a"),
                    log.start("d", parent="c"),
                ]
            )
        )
        snap = await self.fold_in(store, [log.tag("c", "mlflow.parentRunId", "b")])
        assert [run_row(snap, r)["root_run_id"] for r in "abcd"] == ["a", "b", "b", "b"]
        snap = await self.fold_in(store, [log.untag("c", "mlflow.parentRunId")])
        assert [run_row(snap, r)["root_run_id"] for r in "abcd"] == ["a", "b", "c", "c"]
        assert [run_row(snap, r)["depth"] for r in "abcd"] == [0, 0, 0, 1]
        assert run_row(snap, "c")["parent_run_id"] is None

    @pytest.mark.parametrize("split", [False, True])
    async def test_cycles_take_the_smallest_run_as_root(self, store: Store, split: bool) -> None:
        log = Log()
        events = [
            log.start("b", parent="a"),
            log.start("t", parent="b"),
            log.start("a"),
            log.tag("a", "mlflow.parentRunId", "c"),
            log.start("c", parent="b"),
            log.start("s", parent="s"),
            log.start("x", parent="Y"),
            log.start("Y", parent="x"),
        ]
        snap = await self.fold_in(store, events, split=split)
        got = {r[0]: (r[9], r[10], r[11]) for r in table(snap, "runs")}
        assert got == {
            "a": ("c", "a", 0),
            "b": ("a", "a", 1),
            "c": ("b", "a", 2),
            "t": ("b", "a", 2),
            "s": ("s", "s", 0),
            # smallest by code point ("C" collation), whatever the database's collation
            "Y": ("x", "Y", 0),
            "x": ("Y", "Y", 1),
        }
        assert {r: tags_of(snap, r)[ROOT] for r in got} == {r: v[1] for r, v in got.items()}
        assert got == {
            r: (p, *lineage({k: v[0] for k, v in got.items()})[r]) for r, (p, _, _) in got.items()
        }

    # --- offsets ----------------------------------------------------------------------------

    async def test_offsets_compare_and_set(self, store: Store) -> None:
        log = Log()
        assert await store.load_offsets("t", [0, 1]) == {0: None, 1: None}
        await store.apply(fold([log.start("a")]), [OffsetMove("t", 0, None, 5)])
        await store.apply(
            fold([log.start("b")]), [OffsetMove("t", 0, 5, 9), OffsetMove("t", 1, None, 3)]
        )
        assert await store.load_offsets("t", [0, 1, 2]) == {0: 9, 1: 3, 2: None}
        before = await store.snapshot()
        cases = [
            [OffsetMove("t", 0, 5, 12)],  # a zombie still believing in 5
            [OffsetMove("t", 1, 3, 4), OffsetMove("t", 0, None, 12)],  # row exists already
        ]
        for moves in cases:
            with pytest.raises(FencedError) as caught:
                await store.apply(fold([log.start("zombie"), log.metric("a", "m", 1.0)]), moves)
            assert caught.value.partitions == [0]
            assert await store.snapshot() == before
            assert await store.load_offsets("t", [0, 1]) == {0: 9, 1: 3}

    @pytest.mark.parametrize("split", [False, True])
    async def test_reproduced_events_change_nothing(self, store: Store, split: bool) -> None:
        log = Log()
        first: list[Event] = [
            log.exp("1", tags={"a": "0"}),
            log.exp_tag("1", "a", "1"),
            log.rename("1", "old"),
            log.exp_delete("1"),
            log.start("r"),
            log.tag("r", "k", "old"),
            log.tag("r", "mlflow.runName", "old"),
            log.update("r", status="FAILED"),
            log.end("r", end_time=5),
            log.delete("r"),
            log.param("r", "p", "1"),
            log.param("r", "p", "2"),
            log.metric("r", "m", 1.0, step=9),
            log.tag("r", "mlflow.parentRunId", "x"),
        ]
        newer: list[Event] = [
            log.exp_untag("1", "a"),
            log.rename("1", "new"),
            log.exp_restore("1"),
            log.untag("r", "k"),
            log.tag("r", "mlflow.runName", "new"),
            log.update("r", status="RUNNING", end_time=6),
            log.restore("r"),
            log.metric("r", "m", 2.0, step=10),
            log.untag("r", "mlflow.parentRunId"),
        ]
        once = await self.fold_in(store, first + newer, split=split)
        # The same events again, under the same ids, after the newer writes: nothing changes.
        again = await self.fold_in(store, first + first[::-1], split=split)
        assert again == once

    async def test_same_batch_twice_changes_nothing(self, store: Store) -> None:
        log = Log()
        ops = fold(
            [
                log.exp("1", tags={"a": "b"}),
                log.start("r", parent="x"),
                log.metric("r", "m", 1.0),
                log.param("r", "p", "1"),
                log.tag("r", "t", "v"),
                log.param("r", "p", "2"),
                log.inputs("r", dataset("d"), models=("m",)),
                log.end("r"),
            ]
        )
        await store.apply(ops)
        once = await store.snapshot()
        await store.apply(ops)
        assert await store.snapshot() == once


class TestMemoryStoreContract(StoreContract):
    """The contract against the in-memory reference."""

    @pytest.fixture
    def store(self) -> MemoryStore:
        return MemoryStore()
