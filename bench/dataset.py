"""Bulk-load the same W5/W6 data into both peers, bypassing their HTTP APIs.

Runstream gets the events on its topic (`encode_record`, keyed by `partition_key`), folded by the
projector of the serve processes; MLflow gets the equivalent rows COPYed into its own tables
(created by its server) in its database. Everything is reproducible from a seed.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer

from ingest.codec import encode_record
from ingest.events import (
    Event,
    ExperimentCreated,
    MetricLogged,
    ParamLogged,
    RunEnded,
    RunStarted,
    Tag,
    partition_key,
)

BASE_MS = 1_700_000_000_000
FAMILY = 25  # a root, 4 children, 5 grandchildren under each child
OPTIMIZERS = ("adam", "sgd", "rmsprop")
LRS = ("0.1", "0.03", "0.01", "0.003", "0.001")
BATCHES = ("16", "32", "64", "128")
TEAMS = ("vision", "nlp", "speech", "rl", "tabular", "graph", "recsys", "infra")
W5_EXPERIMENTS = (1001, 1002, 1003, 1004)
W6_EXPERIMENT = 1100
HISTORY_KEY = "loss"


@dataclass(slots=True)
class RunSpec:
    """One run of the generated data, as both peers store it."""

    run_id: str
    experiment_id: int
    name: str
    start: int
    parent: str | None
    params: tuple[tuple[str, str], ...]
    tags: tuple[tuple[str, str], ...]
    metrics: tuple[tuple[str, float], ...]  # latest (and only) point of each, at step 99


@dataclass
class SearchData:
    """The W5 runs and the lineage handles the queries pick from."""

    runs: list[RunSpec]
    roots: list[tuple[int, str]] = field(default_factory=list)  # (experiment, run id)
    mids: list[tuple[int, str]] = field(default_factory=list)  # runs with 5 children


@dataclass
class HistoryData:
    """The W6 runs: one long metric, plus `many` runs of `many_points` points."""

    long_run: str
    long_points: int
    many_runs: list[str]
    many_points: int


def _rid(rng: random.Random) -> str:
    return f"{rng.getrandbits(128):032x}"


def search_data(seed: int, n: int) -> SearchData:
    """Return n runs in families of 25 (root, children, grandchildren) over the W5 experiments."""
    rng = random.Random(seed)
    data = SearchData(runs=[])
    root = mid = ""
    for i in range(n):
        pos = i % FAMILY
        exp = W5_EXPERIMENTS[(i // FAMILY) % len(W5_EXPERIMENTS)]
        run_id = _rid(rng)
        if pos == 0:
            parent, root = None, run_id
            data.roots.append((exp, run_id))
        elif pos % 6 == 1:  # positions 1, 7, 13, 19: the children, each then 5 grandchildren
            parent, mid = root, run_id
            data.mids.append((exp, run_id))
        else:
            parent = mid
        name = f"run-{i}"
        tags = [("mlflow.runName", name), ("mlflow.user", "bench"), ("team", rng.choice(TEAMS))]
        if parent is not None:
            tags.append(("mlflow.parentRunId", parent))
        params = (
            ("lr", rng.choice(LRS)),
            ("optimizer", rng.choice(OPTIMIZERS)),
            ("batch_size", rng.choice(BATCHES)),
            ("seed", str(i)),
        )
        metrics = (
            ("loss", round(rng.random(), 6)),
            ("accuracy", round(rng.random(), 6)),
            ("f1", round(rng.random(), 6)),
        )
        data.runs.append(
            RunSpec(run_id, exp, name, BASE_MS + i * 1000, parent, params, tuple(tags), metrics)
        )
    return data


def history_data(seed: int, long_points: int, many: int, many_points: int) -> HistoryData:
    """Return the W6 run ids (the points are a function of run and step)."""
    rng = random.Random(seed + 1)
    return HistoryData(_rid(rng), long_points, [_rid(rng) for _ in range(many)], many_points)


def point(run: int, step: int) -> tuple[float, int]:
    """Return the (value, timestamp) of a W6 point; timestamps rise with steps."""
    return 1.0 / (1 + step * 0.001) + ((step * 7919 + run) % 1000) / 1e5, BASE_MS + step * 10


def _eid() -> str:
    return os.urandom(16).hex()


# --- Runstream: events on the topic --------------------------------------------------------


def _experiment_events(exp: int) -> list[Event]:
    return [
        ExperimentCreated(
            event_id=_eid(),
            at=BASE_MS,
            experiment_id=str(exp),
            name=f"bench-{exp}",
            artifact_location=f"file:///bench/{exp}",
        )
    ]


def _run_events(spec: RunSpec) -> list[Event]:
    rid, at = spec.run_id, spec.start
    events: list[Event] = [
        RunStarted(
            event_id=_eid(),
            at=at,
            run_id=rid,
            experiment_id=str(spec.experiment_id),
            run_name=spec.name,
            user_id="bench",
            start_time=at,
            artifact_uri=f"file:///bench/{spec.experiment_id}/{rid}",
            tags=tuple(Tag(key=k, value=v) for k, v in spec.tags),
            parent_run_id=spec.parent,
        )
    ]
    events += [
        ParamLogged(event_id=_eid(), at=at, run_id=rid, key=k, value=v) for k, v in spec.params
    ]
    events += [
        MetricLogged(
            event_id=_eid(), at=at, run_id=rid, key=k, value=v, timestamp=at + 50_000, step=99
        )
        for k, v in spec.metrics
    ]
    events.append(
        RunEnded(event_id=_eid(), at=at, run_id=rid, status="FINISHED", end_time=at + 60_000)
    )
    return events


def _history_run_records(
    run_id: str, index: int, points: int, per_record: int = 1000
) -> Iterator[list[Event]]:
    yield [
        RunStarted(
            event_id=_eid(),
            at=BASE_MS,
            run_id=run_id,
            experiment_id=str(W6_EXPERIMENT),
            run_name=f"history-{index}",
            user_id="bench",
            start_time=BASE_MS,
            artifact_uri=f"file:///bench/{W6_EXPERIMENT}/{run_id}",
            tags=(Tag(key="mlflow.runName", value=f"history-{index}"),),
        )
    ]
    for first in range(0, points, per_record):
        events: list[Event] = []
        for step in range(first, min(points, first + per_record)):
            value, ts = point(index, step)
            events.append(
                MetricLogged(
                    event_id=_eid(),
                    at=ts,
                    run_id=run_id,
                    key=HISTORY_KEY,
                    value=value,
                    timestamp=ts,
                    step=step,
                )
            )
        yield events


def runstream_records(
    search: SearchData | None, history: HistoryData | None
) -> Iterator[list[Event]]:
    """Yield the records (lists of events sharing a key) that build the data."""
    if search is not None:
        for exp in W5_EXPERIMENTS:
            yield _experiment_events(exp)
        for spec in search.runs:
            yield _run_events(spec)
    if history is not None:
        yield _experiment_events(W6_EXPERIMENT)
        yield from _history_run_records(history.long_run, 0, history.long_points)
        for i, run_id in enumerate(history.many_runs, start=1):
            yield from _history_run_records(run_id, i, history.many_points)


async def produce(bootstrap: str, topic: str, records: Iterator[list[Event]]) -> int:
    """Produce the records; return how many events were sent."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=20,
        max_batch_size=1024 * 1024,
        max_request_size=8 * 1024 * 1024,
        compression_type="lz4",
    )
    await producer.start()
    events = 0
    try:
        pending = []
        for record in records:
            events += len(record)
            key = partition_key(record[0]).encode()
            pending.append(await producer.send(topic, encode_record(record), key=key))
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return events


async def wait_projected(
    dsn: str, schema: str, topic: str, ends: dict[int, int], deadline_s: float
) -> float:
    """Wait until projector_offsets reach `ends`; return the seconds waited."""
    started = time.monotonic()
    conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    try:
        while True:
            rows = await conn.fetch(
                "SELECT partition, next_offset FROM projector_offsets WHERE topic = $1", topic
            )
            done = {r["partition"]: r["next_offset"] for r in rows}
            if all(done.get(p, 0) >= end for p, end in ends.items()):
                await conn.execute("ANALYZE")
                return time.monotonic() - started
            if time.monotonic() - started > deadline_s:
                raise RuntimeError(f"projector not caught up after {deadline_s}s: {done} < {ends}")
            await asyncio.sleep(0.5)
    finally:
        await conn.close()


# --- MLflow: rows COPYed into its own schema -----------------------------------------------


async def _copy(
    conn: asyncpg.Connection, table: str, columns: list[str], rows: list[tuple[Any, ...]]
) -> None:
    if rows:
        await conn.copy_records_to_table(table, records=rows, columns=columns)


_RUN_COLS = [
    "run_uuid", "name", "source_type", "source_name", "entry_point_name", "user_id", "status",
    "start_time", "end_time", "source_version", "lifecycle_stage", "artifact_uri", "experiment_id",
]  # fmt: skip
_METRIC_COLS = ["key", "value", "timestamp", "step", "is_nan", "run_uuid"]
_EXP_COLS = [
    "experiment_id", "name", "artifact_location", "lifecycle_stage", "creation_time",
    "last_update_time",
]  # fmt: skip


def _run_row(run_id: str, exp: int, name: str, start: int) -> tuple[Any, ...]:
    return (
        run_id, name, "LOCAL", "", "", "bench", "FINISHED", start, start + 60_000, "", "active",
        f"file:///bench/{exp}/{run_id}", exp,
    )  # fmt: skip


def _exp_row(exp: int) -> tuple[Any, ...]:
    return (exp, f"bench-{exp}", f"file:///bench/{exp}", "active", BASE_MS, BASE_MS)


async def load_mlflow(dsn: str, search: SearchData | None, history: HistoryData | None) -> int:
    """COPY the data into MLflow's tables; return the rows written."""
    conn = await asyncpg.connect(dsn)
    written = 0
    try:
        if search is not None:
            await _copy(conn, "experiments", _EXP_COLS, [_exp_row(e) for e in W5_EXPERIMENTS])
            for first in range(0, len(search.runs), 10_000):
                chunk = search.runs[first : first + 10_000]
                runs = [_run_row(s.run_id, s.experiment_id, s.name, s.start) for s in chunk]
                params = [(k, v, s.run_id) for s in chunk for k, v in s.params]
                tags = [(k, v, s.run_id) for s in chunk for k, v in s.tags]
                metrics = [
                    (k, v, s.start + 50_000, 99, False, s.run_id)
                    for s in chunk
                    for k, v in s.metrics
                ]
                await _copy(conn, "runs", _RUN_COLS, runs)
                await _copy(conn, "params", ["key", "value", "run_uuid"], params)
                await _copy(conn, "tags", ["key", "value", "run_uuid"], tags)
                await _copy(conn, "latest_metrics", _METRIC_COLS, metrics)
                await _copy(conn, "metrics", _METRIC_COLS, metrics)
                written += len(runs) + len(params) + len(tags) + 2 * len(metrics)
        if history is not None:
            await _copy(conn, "experiments", _EXP_COLS, [_exp_row(W6_EXPERIMENT)])
            runs = [(history.long_run, history.long_points)]
            runs += [(r, history.many_points) for r in history.many_runs]
            for index, (run_id, points) in enumerate(runs):
                await _copy(
                    conn,
                    "runs",
                    _RUN_COLS,
                    [_run_row(run_id, W6_EXPERIMENT, f"history-{index}", BASE_MS)],
                )
                await _copy(
                    conn,
                    "tags",
                    ["key", "value", "run_uuid"],
                    [("mlflow.runName", f"history-{index}", run_id)],
                )
                for first in range(0, points, 200_000):
                    rows = []
                    for step in range(first, min(points, first + 200_000)):
                        value, ts = point(index, step)
                        rows.append((HISTORY_KEY, value, ts, step, False, run_id))
                    await _copy(conn, "metrics", _METRIC_COLS, rows)
                    written += len(rows)
                value, ts = point(index, points - 1)
                await _copy(
                    conn,
                    "latest_metrics",
                    _METRIC_COLS,
                    [(HISTORY_KEY, value, ts, points - 1, False, run_id)],
                )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return written


# --- both peers: the state a running server's autovacuum would have reached -----------------

_SCHEMA_TABLES = (
    "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables WHERE schemaname = $1"
)


async def settle(dsn: str, schema: str | None = None) -> float:
    """VACUUM and ANALYZE a peer's tables (a schema's, or the whole database's), then take a
    checkpoint; return the seconds it took.

    Run on both peers after both loads, before any query is timed. Freshly written tables have
    no visibility map, so index-only scans read the table too, and autovacuum then catches up
    in the middle of the measurements (it did in W5's 8-client runs, for either peer)."""
    started = time.monotonic()
    conn = await asyncpg.connect(dsn)
    try:
        if schema is None:
            await conn.execute("VACUUM (ANALYZE)")
        else:
            tables = [row[0] for row in await conn.fetch(_SCHEMA_TABLES, schema)]
            await conn.execute(f"VACUUM (ANALYZE) {', '.join(tables)}")
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()
    return time.monotonic() - started
