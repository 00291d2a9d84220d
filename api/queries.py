"""Read MLflow's entities out of the read models, set-based: a constant number of queries a page.

A page of runs costs two queries whatever its size, both over `ANY($1::text[])`: the runs with
their documents (params, tags and inputs as JSON, migration 0010), and their latest metrics.
Callers run a request's queries in one read-only REPEATABLE READ transaction, so a response never
mixes two projector batches.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import asyncpg

from api.schemas import (
    DatasetSummary,
    Experiment,
    KeyValue,
    Metric,
    MetricWithRunId,
    Run,
    RunInfo,
    RunOutputs,
    run_data,
    run_inputs,
    wire_double,
)
from api.sqlgen import SearchPlan
from api.tokens import HistoryPage, encode_history_token

__all__ = [
    "DEFAULT_WORKSPACE",
    "MAX_DATASET_SUMMARIES",
    "dataset_summaries",
    "experiment_by_name",
    "experiments",
    "metric_history",
    "metric_history_bulk",
    "runs",
    "search_ids",
]

DEFAULT_WORKSPACE = "default"  # MLflow 3.x's workspace when none are configured
MAX_DATASET_SUMMARIES = 1000  # MLflow's cap on SearchDatasets

_EXPERIMENT_COLUMNS = (
    "experiment_id, name, artifact_location, lifecycle_stage, creation_time, last_update_time"
)
_EXPERIMENTS = f"""
SELECT {_EXPERIMENT_COLUMNS} FROM experiments WHERE experiment_id = ANY($1::bigint[])
"""
# Names are unique in the registry; the order only makes a broken invariant deterministic.
_EXPERIMENT_BY_NAME = f"""
SELECT {_EXPERIMENT_COLUMNS} FROM experiments WHERE name = $1 ORDER BY experiment_id LIMIT 1
"""
# MLflow gives its summaries in no particular order; these come sorted, so pages are stable.
_DATASET_SUMMARIES = """
SELECT r.experiment_id, d.name, d.digest, d.context
FROM run_dataset_inputs AS d JOIN runs AS r ON r.run_id = d.run_id
WHERE r.experiment_id = ANY($1::bigint[])
GROUP BY 1, 2, 3, 4
ORDER BY r.experiment_id, d.name COLLATE "C", d.digest COLLATE "C",
         d.context COLLATE "C" NULLS FIRST
LIMIT $2
"""
_EXPERIMENT_TAGS = """
SELECT experiment_id, key, value FROM experiment_tags
WHERE experiment_id = ANY($1::bigint[]) ORDER BY experiment_id, key
"""
# A run's params, tags and inputs come as the JSON documents PostgreSQL keeps (migration 0010).
_RUNS = """
SELECT run_id, experiment_id, run_name, user_id, status, start_time, end_time, artifact_uri,
       lifecycle_stage, data_doc, inputs_doc
FROM runs WHERE run_id = ANY($1::text[])
"""
# Each run's list comes in byte order of its keys, whatever the database's collation.
_LATEST_METRICS = """
SELECT run_id, key, value, ts, step FROM latest_metrics WHERE run_id = ANY($1::text[])
ORDER BY key COLLATE "C"
"""
# MLflow's order (timestamp, step, value), read along metrics_history_order (migration 0005);
# LIMIT NULL means every row. OFFSET only serves MLflow's offset-only page tokens.
_HISTORY = """
SELECT key, value, ts, step, dataset_name, dataset_digest, model_id FROM metrics
WHERE run_id = $1 AND key = $2
ORDER BY ts, step, value
LIMIT $3::bigint OFFSET $4::bigint
"""
# The page after a point: the row comparison is an index condition, so a page costs its own
# rows only. PostgreSQL orders NaN above every number and equal to itself, in the comparison
# as in ORDER BY, and (ts, step, value) is unique per series, so no point is skipped or repeated.
_HISTORY_AFTER = """
SELECT key, value, ts, step, dataset_name, dataset_digest, model_id FROM metrics
WHERE run_id = $1 AND key = $2 AND (ts, step, value) > ($3::bigint, $4::bigint, $5::float8)
ORDER BY ts, step, value
LIMIT $6::bigint
"""
_HISTORY_BULK = """
SELECT run_id, value, ts, step FROM metrics
WHERE run_id = ANY($1::text[]) AND key = $2
ORDER BY run_id COLLATE "C", ts, step, value
LIMIT $3::bigint
"""


_CACHED_PLANS = "SET LOCAL plan_cache_mode = auto"

_NO_OUTPUTS = RunOutputs()


def _pairs(rows: Sequence[asyncpg.Record]) -> dict[Any, list[KeyValue]]:
    """Group (owner, key, value) rows by owner."""
    grouped: dict[Any, list[KeyValue]] = defaultdict(list)
    for owner, key, value in rows:
        grouped[owner].append(KeyValue(key, value))
    return grouped


def _experiment(row: asyncpg.Record, tags: list[KeyValue]) -> Experiment:
    # MLflow leaves zero times unset (`if self.creation_time:`), so they are omitted
    return Experiment(
        experiment_id=str(row["experiment_id"]),
        name=row["name"],
        artifact_location=row["artifact_location"],
        lifecycle_stage=row["lifecycle_stage"],
        workspace=DEFAULT_WORKSPACE,
        last_update_time=row["last_update_time"] or None,
        creation_time=row["creation_time"] or None,
        tags=tags,
    )


async def experiments(conn: asyncpg.Connection, ids: Sequence[int]) -> list[Experiment]:
    """Return the experiments with these ids, in the given order, skipping unknown ids."""
    if not ids:
        return []
    rows = {row["experiment_id"]: row for row in await conn.fetch(_EXPERIMENTS, list(ids))}
    tags = _pairs(await conn.fetch(_EXPERIMENT_TAGS, list(rows)))
    return [_experiment(rows[i], tags.get(i, [])) for i in ids if i in rows]


async def dataset_summaries(
    conn: asyncpg.Connection, experiment_ids: Sequence[int]
) -> list[DatasetSummary]:
    """Return the distinct (experiment, dataset, context) of these experiments' runs, deleted
    runs included, as MLflow does; at most MAX_DATASET_SUMMARIES, in a stable order."""
    rows = await conn.fetch(_DATASET_SUMMARIES, list(experiment_ids), MAX_DATASET_SUMMARIES)
    return [
        DatasetSummary(str(row["experiment_id"]), row["name"], row["digest"], row["context"])
        for row in rows
    ]


async def experiment_by_name(conn: asyncpg.Connection, name: str) -> Experiment | None:
    """Return the experiment with this name, deleted or not, or None."""
    row = await conn.fetchrow(_EXPERIMENT_BY_NAME, name)
    if row is None:
        return None
    tags = _pairs(await conn.fetch(_EXPERIMENT_TAGS, [row["experiment_id"]]))
    return _experiment(row, tags.get(row["experiment_id"], []))


def _run_info(row: asyncpg.Record) -> RunInfo:
    return RunInfo(
        run_id=row["run_id"],
        run_uuid=row["run_id"],
        run_name=row["run_name"],
        experiment_id=str(row["experiment_id"]),
        user_id=row["user_id"],
        status=row["status"],
        start_time=row["start_time"],
        # MLflow omits a zero end_time and an empty artifact_uri (`if self.end_time:`)
        end_time=row["end_time"] or None,
        artifact_uri=row["artifact_uri"] or None,
        lifecycle_stage=row["lifecycle_stage"],
    )


async def runs(conn: asyncpg.Connection, run_ids: Sequence[str]) -> list[Run]:
    """Return the runs with these ids, in the given order, skipping unknown ids."""
    if not run_ids:
        return []
    wanted = list(dict.fromkeys(run_ids))
    infos = {row["run_id"]: row for row in await conn.fetch(_RUNS, wanted)}
    if not infos:
        return []
    metrics: dict[str, list[Metric]] = defaultdict(list)
    for run_id, key, value, ts, step in await conn.fetch(_LATEST_METRICS, list(infos)):
        metrics[run_id].append(Metric(key, wire_double(value), ts, step))
    return [
        Run(
            info=_run_info(row),
            data=run_data(metrics.get(run_id, ()), row["data_doc"]),
            inputs=run_inputs(row["inputs_doc"]),
            outputs=_NO_OUTPUTS,
        )
        for run_id in run_ids
        if (row := infos.get(run_id)) is not None
    ]


async def search_ids(conn: asyncpg.Connection, plan: SearchPlan) -> tuple[list[Any], str | None]:
    """Run a compiled search; return one page of ids and the next page's token.

    The caller's transaction plans statements for their values (`routes`): what follows the
    search fetches rows by id, for which a cached plan is as good, and planning the page's
    statements anew each time cost more than the search (1.2 ms of 2 a page). A search sorted
    by a metric tries the walk along its values first (`sqlgen._metric_walk`)."""
    rows = None if plan.walk is None else await conn.fetch(plan.walk.sql, *plan.walk.args)
    if rows is None or len(rows) <= plan.limit:  # no walk, or it did not fill the page
        rows = await conn.fetch(plan.sql, *plan.args)
    await conn.execute(_CACHED_PLANS)
    return plan.page([row[0] for row in rows])


async def metric_history(
    conn: asyncpg.Connection, run_id: str, key: str, max_results: int | None, page: HistoryPage
) -> tuple[list[Metric], str | None]:
    """Return a page of a metric's points and the next page's token."""
    limit = None if max_results is None else max_results + 1
    if page.after is None:
        rows = await conn.fetch(_HISTORY, run_id, key, limit, page.offset)
    else:
        rows = await conn.fetch(_HISTORY_AFTER, run_id, key, *page.after, limit)
    token = None
    if max_results is not None and len(rows) > max_results:
        rows = rows[:max_results]
        last = rows[-1]
        token = encode_history_token(
            page.offset + max_results, (last["ts"], last["step"], last["value"])
        )
    points = [
        Metric(
            key=row["key"],
            value=wire_double(row["value"]),
            timestamp=row["ts"],
            step=row["step"],
            dataset_name=row["dataset_name"],
            dataset_digest=row["dataset_digest"],
            model_id=row["model_id"],
        )
        for row in rows
    ]
    return points, token


async def metric_history_bulk(
    conn: asyncpg.Connection, run_ids: Sequence[str], key: str, max_results: int
) -> list[MetricWithRunId]:
    """Return the runs' points of a metric by run id, then timestamp, step, value (legacy UI)."""
    rows = await conn.fetch(_HISTORY_BULK, list(set(run_ids)), key, max_results)
    return [
        MetricWithRunId(key, wire_double(row["value"]), row["ts"], row["step"], row["run_id"])
        for row in rows
    ]
