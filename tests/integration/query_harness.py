"""Test support: the query API in this process over a test's read-model schema and topic.

Tests write read-model rows directly (as the projector would) and read them back over HTTP.
Every SQL statement the API runs is recorded, so tests can count queries per request.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient, TestServer

from api.barrier import ReadBarrier
from api.routes import CONSISTENCY_HEADER, QueryApi
from projector.derived import BLOCK_MISCOUNTS, RUN_COPIES, copies_differing
from services.config import Settings
from services.runtime import new_app, open_pool

MLFLOW = "/api/2.0/mlflow"
AJAX = "/ajax-api/2.0/mlflow"
LINEAGE = "/api/runstream"
PARTITIONS = 6  # the `topic` fixture's


@dataclass
class QueryHarness:
    """An HTTP client on the query API, the read models it serves, and what it ran."""

    client: TestClient[Any, Any]
    db: asyncpg.Connection
    barrier: ReadBarrier
    topic: str
    queries: list[str] = field(default_factory=list)
    # each answer's X-Runstream-Consistency header (None when it has none)
    consistency: list[str | None] = field(default_factory=list)

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: Any = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        prefix: str = MLFLOW,
    ) -> tuple[int, Any]:
        """Send a request; return the status and the decoded JSON body."""
        resp = await self.client.request(
            method, f"{prefix}/{path}", params=params, json=body, headers=headers
        )
        self.consistency.append(resp.headers.get(CONSISTENCY_HEADER))
        return resp.status, await resp.json()

    async def get(self, path: str, params: Any = None, **kwargs: Any) -> Any:
        """GET and return the JSON answer, asserting a 200."""
        status, payload = await self.call("GET", path, params=params, **kwargs)
        assert status == 200, payload
        return payload

    async def post(self, path: str, body: Any, **kwargs: Any) -> Any:
        """POST a JSON body and return the JSON answer, asserting a 200."""
        status, payload = await self.call("POST", path, body=body, **kwargs)
        assert status == 200, payload
        return payload

    async def error(self, method: str, path: str, status: int, code: str, **kwargs: Any) -> str:
        """Send a request, assert MLflow's error status and code, and return the message."""
        got, payload = await self.call(method, path, **kwargs)
        assert (got, payload.get("error_code")) == (status, code), payload
        return str(payload["message"])


@asynccontextmanager
async def query_api(
    settings: Settings, topic: str, db: asyncpg.Connection, **barrier_options: Any
) -> AsyncIterator[QueryHarness]:
    """Run the query API on `db`'s schema with a barrier on `topic`; close all after."""
    schema = await db.fetchval("SELECT current_schema()")
    ran: list[str] = []

    async def record_queries(conn: asyncpg.Connection) -> None:
        conn.add_query_logger(lambda logged: ran.append(logged.query))

    async with AsyncExitStack() as stack:
        # the services' own pool: its session settings, and no reset round trip on release
        pool = await open_pool(settings.database_url, schema, max_size=8, init=record_queries)
        stack.push_async_callback(pool.close)
        barrier = ReadBarrier(pool, settings.kafka_bootstrap, topic, PARTITIONS, **barrier_options)
        await stack.enter_async_context(barrier)
        app = new_app()
        QueryApi(pool, barrier, schema=schema).add_routes(app)
        client: TestClient[Any, Any] = TestClient(TestServer(app))
        await client.start_server()
        stack.push_async_callback(client.close)
        yield QueryHarness(client, db, barrier, topic, ran)


# --- read-model rows, written as the projector writes them -----------------------------------


async def add_experiment(
    db: asyncpg.Connection,
    experiment_id: int,
    name: str,
    *,
    stage: str = "active",
    created: int = 1000,
    updated: int | None = None,
    tags: Mapping[str, str] | None = None,
) -> None:
    """Insert an experiment and its tags."""
    await db.execute(
        "INSERT INTO experiments VALUES ($1, $2, $3, $4, $5, $6)",
        experiment_id,
        name,
        f"file:///art/{experiment_id}",
        stage,
        created,
        created if updated is None else updated,
    )
    await db.executemany(
        "INSERT INTO experiment_tags VALUES ($1, $2, $3)",
        [(experiment_id, k, v) for k, v in (tags or {}).items()],
    )


async def add_run(
    db: asyncpg.Connection,
    run_id: str,
    *,
    experiment_id: int = 0,
    name: str | None = None,
    status: str = "RUNNING",
    start: int = 1000,
    end: int | None = None,
    stage: str = "active",
    parent: str | None = None,
    root: str | None = None,
    depth: int = 0,
    params: Mapping[str, str] | None = None,
    tags: Mapping[str, str] | None = None,
) -> None:
    """Insert a run with its mlflow.runName and mlflow.rootRunId tags, params and tags."""
    name = name or f"name-{run_id}"
    root = root or run_id
    await db.execute(
        "INSERT INTO runs VALUES ($1, $2, $3, 'alice', $4, $5, $6, $7, $8, $9, $10, $11)",
        run_id,
        experiment_id,
        name,
        status,
        start,
        end,
        f"file:///art/{experiment_id}/{run_id}/artifacts",
        stage,
        parent,
        root,
        depth,
    )
    all_tags = {"mlflow.runName": name, "mlflow.rootRunId": root, **(tags or {})}
    if parent is not None:
        all_tags.setdefault("mlflow.parentRunId", parent)
    await db.executemany(
        "INSERT INTO tags VALUES ($1, $2, $3)", [(run_id, k, v) for k, v in all_tags.items()]
    )
    await db.executemany(
        "INSERT INTO params VALUES ($1, $2, $3)",
        [(run_id, k, v) for k, v in (params or {}).items()],
    )


def _latest_key(point: tuple[int, int, float]) -> tuple[int, int, float]:
    step, ts, value = point
    # MLflow's rule: max by (step, timestamp, value); PostgreSQL ranks NaN above every number
    return step, ts, math.inf if math.isnan(value) else value


async def add_points(
    db: asyncpg.Connection, run_id: str, key: str, points: Iterable[tuple[int, int, float]]
) -> None:
    """Insert (step, timestamp, value) points of a metric and update its latest value."""
    points = list(points)
    # One statement, as the projector's batches are: the block-counting trigger sees them at once
    await db.execute(
        "INSERT INTO metrics (run_id, key, step, ts, value) "
        "SELECT $1, $2, s, t, v FROM unnest($3::bigint[], $4::bigint[], $5::float8[]) "
        "AS p(s, t, v) ON CONFLICT DO NOTHING",
        run_id,
        key,
        [p[0] for p in points],
        [p[1] for p in points],
        [p[2] for p in points],
    )
    step, ts, value = max(points, key=_latest_key)
    await db.execute(
        "INSERT INTO latest_metrics VALUES ($1, $2, $3, $4, $5) ON CONFLICT (run_id, key) "
        "DO UPDATE SET value = EXCLUDED.value, ts = EXCLUDED.ts, step = EXCLUDED.step",
        run_id,
        key,
        value,
        ts,
        step,
    )


async def set_projected(db: asyncpg.Connection, topic: str, offsets: Mapping[int, int]) -> None:
    """Store the projector's next offsets for some partitions of `topic`."""
    await db.executemany(
        "INSERT INTO projector_offsets VALUES ($1, $2, $3) ON CONFLICT (topic, partition) "
        "DO UPDATE SET next_offset = EXCLUDED.next_offset",
        [(topic, p, o) for p, o in offsets.items()],
    )


async def block_miscounts(db: asyncpg.Connection) -> list[asyncpg.Record]:
    """Return the stored block and level counts that differ from a recount of the points."""
    return list(await db.fetch(BLOCK_MISCOUNTS))


# --- the run documents (migration 0010), checked against the rows they are made of -----------

_DOCUMENT_ROWS = {
    "runs": "SELECT run_id, data_doc, inputs_doc FROM runs",
    "params": "SELECT run_id, key, value FROM params",
    "tags": "SELECT run_id, key, value FROM tags",
    "datasets": "SELECT run_id, name, digest, source_type, source, schema, profile, "
    "tags::text AS tags FROM run_dataset_inputs",
    "models": "SELECT run_id, model_id FROM run_model_inputs",
}
# What rows carry of their run for searches (migrations 0012, 0013): the rows that differ.
_DOCUMENT_ROWS |= {f"{t}_copies": copies_differing(t, c) for t, c in RUN_COPIES.items()}


def _expected_documents(rows: Mapping[str, list[asyncpg.Record]]) -> dict[str, tuple[Any, Any]]:
    """Build each run's (data, inputs) objects from its rows, as the API's Structs shaped them
    before the documents existed: lists in byte order of their keys, empty ones left out."""

    def pairs(table: str, run_id: str) -> list[dict[str, str]]:
        found = sorted((r["key"], r["value"]) for r in rows[table] if r["run_id"] == run_id)
        return [{"key": k, "value": v} for k, v in found]

    expected = {}
    for run in rows["runs"]:
        run_id = run["run_id"]
        data = {name: pairs(name, run_id) for name in ("params", "tags")}
        datasets = []
        for d in sorted(
            (d for d in rows["datasets"] if d["run_id"] == run_id),
            key=lambda d: (d["name"].encode(), d["digest"].encode()),
        ):
            dataset = {k: d[k] for k in ("name", "digest", "source_type", "source")}
            dataset |= {k: d[k] for k in ("schema", "profile") if d[k]}
            tags = json.loads(d["tags"])
            datasets.append({"dataset": dataset, **({"tags": tags} if tags else {})})
        models = sorted(m["model_id"] for m in rows["models"] if m["run_id"] == run_id)
        inputs = {"dataset_inputs": datasets, "model_inputs": [{"model_id": m} for m in models]}
        expected[run_id] = (
            {k: v for k, v in data.items() if v},
            {k: v for k, v in inputs.items() if v},
        )
    return expected


async def document_mismatches(db: asyncpg.Connection) -> list[tuple[str, Any, Any]]:
    """Return (run id, stored, expected) for every run whose documents differ from its rows,
    and for every latest value, param and tag whose copy of its run's columns differs."""
    async with db.transaction(isolation="repeatable_read", readonly=True):
        rows = {name: list(await db.fetch(sql)) for name, sql in _DOCUMENT_ROWS.items()}
    expected = _expected_documents(rows)
    wrong = []
    for run in rows["runs"]:
        data, inputs = run["data_doc"], run["inputs_doc"]
        stored = (
            None if data is None else json.loads("{" + data + "}"),
            None if inputs is None else json.loads(inputs),
        )
        if stored != expected[run["run_id"]]:
            wrong.append((run["run_id"], stored, expected[run["run_id"]]))
    for table in RUN_COPIES:
        for row in rows[table + "_copies"]:
            wrong.append((row["run_id"], (table, row["key"], row["stored"]), row["expected"]))
    return wrong
