"""Write a batch's params, metrics, latest metrics and inputs: one statement per table.

Metric points take a fast path: ``latest_metrics`` holds the max of every stored point of a
(run, key), so when the batch's smallest point of a group is above it, none of the group's points
can be stored yet and they are copied straight into ``metrics`` (binary COPY, about half the cost
of staging). The other groups - only after redelivery or rewinds - go through a temporary staging
table and ``INSERT ... ON CONFLICT DO NOTHING``. A savepoint makes the fast path safe even if
``latest_metrics`` was edited by hand: a unique violation reroutes the batch to the slow path.

A batch of a few points (metrics trickling in from a sequential client, one request per point)
skips all that: the check, the savepoint and COPY cost four more round trips than the one
``INSERT ... ON CONFLICT DO NOTHING`` that stores the same points (about 0.8 ms of a one-point
batch's transaction).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
import structlog

from projector.ops import PARAM_CONFLICT, Ops
from projector.snapshot import dataset_input_row

__all__ = ["columns", "write_values"]

log = structlog.get_logger(__name__)

# Each row carries its run's experiment, start time and lifecycle stage (migration 0013).
_PARAMS = """
INSERT INTO params (run_id, key, value, experiment_id, start_time, lifecycle_stage)
SELECT p.run_id, p.key, p.value, r.experiment_id, r.start_time, r.lifecycle_stage
FROM unnest($1::text[], $2::text[], $3::text[]) AS p(run_id, key, value)
LEFT JOIN runs AS r ON r.run_id = p.run_id
ON CONFLICT (run_id, key) DO NOTHING
"""

_REJECTIONS = """
INSERT INTO projector_rejections (reason, run_id, key, value, event_id, at)
SELECT $6, c.run_id, c.key, c.value, c.event_id, c.at
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[])
    AS c(run_id, key, value, event_id, at)
JOIN params AS p ON p.run_id = c.run_id AND p.key = c.key
WHERE p.value <> c.value
ON CONFLICT (reason, run_id, key, md5(value)) DO NOTHING
"""

_METRICS_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS projector_metrics_stage (
    run_id text, key text, step bigint, ts bigint, value double precision,
    model_id text, dataset_name text, dataset_digest text
) ON COMMIT DELETE ROWS
"""

# Both paths that may meet stored points insert the same columns (MetricRow's order) this way.
_INSERT_METRICS = """
INSERT INTO metrics (run_id, key, step, ts, value, model_id, dataset_name, dataset_digest)
SELECT * FROM {source}
ON CONFLICT DO NOTHING
"""
_METRICS = _INSERT_METRICS.format(source="pg_temp.projector_metrics_stage")
_FEW_METRICS = _INSERT_METRICS.format(
    source="unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::float8[], "
    "$6::text[], $7::text[], $8::text[])"
)
# Up to this many points a batch takes one INSERT. Measured on one-transaction batches here, it
# was faster than the fast path up to 128 points; COPY's cheaper rows win from about 256.
FEW_METRICS = 64

# The (run, key) groups of the batch that may hold points stored already: those whose smallest
# new point is not above the stored latest (latest_metrics is the max of every stored point).
_STALE_GROUPS = """
SELECT e.run_id, e.key
FROM unnest($1::text[], $2::text[], $3::float8[], $4::bigint[], $5::bigint[])
    AS e(run_id, key, value, ts, step)
JOIN latest_metrics AS l ON l.run_id = e.run_id AND l.key = e.key
WHERE (e.step, e.ts, e.value) <= (l.step, l.ts, l.value)
"""

# Each row carries its run's experiment (migration 0012); runs are written earlier in the batch.
_LATEST = """
INSERT INTO latest_metrics AS l (run_id, key, value, ts, step, experiment_id)
SELECT e.run_id, e.key, e.value, e.ts, e.step, r.experiment_id
FROM unnest($1::text[], $2::text[], $3::float8[], $4::bigint[], $5::bigint[])
    AS e(run_id, key, value, ts, step)
LEFT JOIN runs AS r ON r.run_id = e.run_id
ON CONFLICT (run_id, key) DO UPDATE
    SET value = EXCLUDED.value, ts = EXCLUDED.ts, step = EXCLUDED.step,
        experiment_id = coalesce(l.experiment_id, EXCLUDED.experiment_id)
    -- float8 comparison is NaN-aware: NaN = NaN and NaN > every number (MLflow's max)
    WHERE (EXCLUDED.step, EXCLUDED.ts, EXCLUDED.value) > (l.step, l.ts, l.value)
"""

_DATASETS = """
INSERT INTO run_dataset_inputs
    (run_id, name, digest, source_type, source, schema, profile, context, tags)
SELECT d.run_id, d.name, d.digest, d.source_type, d.source, d.schema, d.profile, d.context,
       d.tags::jsonb
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::text[], $9::text[])
    AS d(run_id, name, digest, source_type, source, schema, profile, context, tags)
ON CONFLICT (run_id, name, digest) DO NOTHING
"""

_MODEL_INPUTS = """
INSERT INTO run_model_inputs (run_id, model_id)
SELECT * FROM unnest($1::text[], $2::text[])
ON CONFLICT (run_id, model_id) DO NOTHING
"""


async def write_values(conn: asyncpg.Connection, ops: Ops, schema: str) -> None:
    """Write the params, metric points, latest metrics and inputs of a batch."""
    if ops.params:
        await conn.execute(_PARAMS, *columns([(p.run_id, p.key, p.value) for p in ops.params], 3))
        await conn.execute(
            _REJECTIONS,
            *columns([(p.run_id, p.key, p.value, p.event_id, p.at) for p in ops.param_values], 5),
            PARAM_CONFLICT,
        )
    if ops.metrics:
        await _metrics(conn, ops, schema)
    if ops.latest:
        await conn.execute(_LATEST, *columns(ops.latest, 5))
    if ops.datasets:
        rows = [dataset_input_row(d) for d in ops.datasets]
        await conn.execute(_DATASETS, *columns(rows, 9))
    if ops.model_inputs:
        await conn.execute(_MODEL_INPUTS, *columns(ops.model_inputs, 2))


async def _metrics(conn: asyncpg.Connection, ops: Ops, schema: str) -> None:
    if len(ops.metrics) <= FEW_METRICS:
        await conn.execute(_FEW_METRICS, *columns(ops.metrics, 8))
        return
    # Before latest_metrics is updated: the stored latest bounds every stored point.
    stale = {
        (r["run_id"], r["key"]) for r in await conn.fetch(_STALE_GROUPS, *columns(ops.earliest, 5))
    }
    if stale:
        fresh = [row for row in ops.metrics if (row[0], row[1]) not in stale]
        maybe = [row for row in ops.metrics if (row[0], row[1]) in stale]
    else:
        fresh, maybe = ops.metrics, []
    if fresh:
        try:
            async with conn.transaction():  # a savepoint
                await conn.copy_records_to_table("metrics", records=fresh, schema_name=schema)
        except asyncpg.exceptions.UniqueViolationError:
            # Only if latest_metrics was changed by hand: the slow path takes every point.
            log.warning("metrics_fast_path_conflict", rows=len(fresh))
            maybe = ops.metrics
    if maybe:
        await conn.execute(_METRICS_STAGE)
        await conn.copy_records_to_table(
            "projector_metrics_stage", records=maybe, schema_name="pg_temp"
        )
        await conn.execute(_METRICS)


def columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """Transpose rows into one list per column (the arrays ``unnest`` reads)."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(column) for column in zip(*rows, strict=True)]
