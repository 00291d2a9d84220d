"""Write a batch's experiments, runs and their tags: one statement per table and kind of change.

A batch's changes come in the fold's order (`projector.ops`): those before its new rows, the
new rows (each with its first tags, kept only for a row this batch created), then those after.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from projector.ops import ExperimentChange, Ops, RunChange
from projector.store_values import columns as _columns

__all__ = ["write_experiments", "write_runs"]

_EXPERIMENT_CHANGES = """
UPDATE experiments AS e SET
    name = COALESCE(c.name, e.name),
    lifecycle_stage = COALESCE(c.lifecycle_stage, e.lifecycle_stage),
    last_update_time = COALESCE(c.last_update_time, e.last_update_time)
FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[])
    AS c(experiment_id, name, lifecycle_stage, last_update_time)
WHERE e.experiment_id = c.experiment_id
"""

_NEW_EXPERIMENTS = """
INSERT INTO experiments
    (experiment_id, name, artifact_location, lifecycle_stage, creation_time, last_update_time)
SELECT n.experiment_id, n.name, n.artifact_location, 'active', n.at, n.at
FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[])
    AS n(experiment_id, name, artifact_location, at)
ON CONFLICT (experiment_id) DO NOTHING
RETURNING experiment_id
"""

_EXPERIMENT_TAGS_SET = """
INSERT INTO experiment_tags (experiment_id, key, value)
SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[])
ON CONFLICT (experiment_id, key) DO UPDATE SET value = EXCLUDED.value
"""

_EXPERIMENT_TAGS_DELETE = """
DELETE FROM experiment_tags AS t
USING unnest($1::bigint[], $2::text[]) AS d(experiment_id, key)
WHERE t.experiment_id = d.experiment_id AND t.key = d.key
"""

_RUN_CHANGES = """
UPDATE runs AS r SET
    status = COALESCE(c.status, r.status),
    end_time = COALESCE(c.end_time, r.end_time),
    run_name = COALESCE(c.run_name, r.run_name),
    lifecycle_stage = COALESCE(c.lifecycle_stage, r.lifecycle_stage),
    parent_run_id = CASE WHEN c.parent_set THEN c.parent_run_id ELSE r.parent_run_id END
FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::bool[], $7::text[])
    AS c(run_id, status, end_time, run_name, lifecycle_stage, parent_set, parent_run_id)
WHERE r.run_id = c.run_id
"""

_NEW_RUNS = """
INSERT INTO runs (run_id, experiment_id, run_name, user_id, status, start_time, end_time,
                  artifact_uri, lifecycle_stage, parent_run_id, root_run_id, depth)
SELECT n.run_id, n.experiment_id, n.run_name, n.user_id, n.status, n.start_time, NULL,
       n.artifact_uri, 'active', n.parent_run_id, n.run_id, 0
FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::bigint[],
            $7::text[], $8::text[])
    AS n(run_id, experiment_id, run_name, user_id, status, start_time, artifact_uri,
         parent_run_id)
ON CONFLICT (run_id) DO NOTHING
RETURNING run_id
"""

# Each row carries its run's experiment, start time and lifecycle stage (migration 0013), read
# from the run on every write; a tag stored before its run gets them when the run arrives.
_TAGS_SET = """
INSERT INTO tags AS t (run_id, key, value, experiment_id, start_time, lifecycle_stage)
SELECT d.run_id, d.key, d.value, r.experiment_id, r.start_time, r.lifecycle_stage
FROM unnest($1::text[], $2::text[], $3::text[]) AS d(run_id, key, value)
LEFT JOIN runs AS r ON r.run_id = d.run_id
ON CONFLICT (run_id, key) DO UPDATE
    SET value = EXCLUDED.value,
        experiment_id = coalesce(EXCLUDED.experiment_id, t.experiment_id),
        start_time = coalesce(EXCLUDED.start_time, t.start_time),
        lifecycle_stage = coalesce(EXCLUDED.lifecycle_stage, t.lifecycle_stage)
"""

_TAGS_DELETE = """
DELETE FROM tags AS t
USING unnest($1::text[], $2::text[]) AS d(run_id, key)
WHERE t.run_id = d.run_id AND t.key = d.key
"""


async def write_experiments(conn: asyncpg.Connection, ops: Ops) -> None:
    """Write a batch's new experiments, their changes and their tags, in the fold's order."""
    await _experiment_changes(conn, ops.experiment_changes_before)
    if ops.new_experiments:
        rows = await conn.fetch(
            _NEW_EXPERIMENTS,
            *_columns(
                [(e.experiment_id, e.name, e.artifact_location, e.at) for e in ops.new_experiments],
                4,
            ),
        )
        created = {r["experiment_id"] for r in rows}
        await _tag_ops(
            conn, ops.experiment_tags_before, _EXPERIMENT_TAGS_SET, _EXPERIMENT_TAGS_DELETE
        )
        fresh = [
            (e.experiment_id, k, v)
            for e in ops.new_experiments
            if e.experiment_id in created
            for k, v in e.tags
        ]
        await _tag_ops(conn, fresh, _EXPERIMENT_TAGS_SET, _EXPERIMENT_TAGS_DELETE)
    else:
        await _tag_ops(
            conn, ops.experiment_tags_before, _EXPERIMENT_TAGS_SET, _EXPERIMENT_TAGS_DELETE
        )
    await _tag_ops(conn, ops.experiment_tags_after, _EXPERIMENT_TAGS_SET, _EXPERIMENT_TAGS_DELETE)
    await _experiment_changes(conn, ops.experiment_changes_after)


async def write_runs(conn: asyncpg.Connection, ops: Ops) -> None:
    """Write a batch's new runs, their changes and their tags, in the fold's order."""
    await _run_changes(conn, ops.run_changes_before)
    created: set[str] = set()
    if ops.new_runs:
        rows = await conn.fetch(
            _NEW_RUNS,
            *_columns(
                [
                    (
                        r.run_id,
                        r.experiment_id,
                        r.run_name,
                        r.user_id,
                        r.status,
                        r.start_time,
                        r.artifact_uri,
                        r.parent_run_id,
                    )
                    for r in ops.new_runs
                ],
                8,
            ),
        )
        created = {r["run_id"] for r in rows}
    await _tag_ops(conn, ops.tags_before, _TAGS_SET, _TAGS_DELETE)
    if created:
        fresh = [(r.run_id, k, v) for r in ops.new_runs if r.run_id in created for k, v in r.tags]
        await _tag_ops(conn, fresh, _TAGS_SET, _TAGS_DELETE)
    await _tag_ops(conn, ops.tags_after, _TAGS_SET, _TAGS_DELETE)
    await _run_changes(conn, ops.run_changes_after)


async def _experiment_changes(
    conn: asyncpg.Connection, changes: Sequence[ExperimentChange]
) -> None:
    if changes:
        rows = [(c.experiment_id, c.name, c.lifecycle_stage, c.last_update_time) for c in changes]
        await conn.execute(_EXPERIMENT_CHANGES, *_columns(rows, 4))


async def _run_changes(conn: asyncpg.Connection, changes: Sequence[RunChange]) -> None:
    if changes:
        rows = [
            (
                c.run_id,
                c.status,
                c.end_time,
                c.run_name,
                c.lifecycle_stage,
                c.parent_set,
                c.parent_run_id,
            )
            for c in changes
        ]
        await conn.execute(_RUN_CHANGES, *_columns(rows, 7))


async def _tag_ops(
    conn: asyncpg.Connection,
    ops: Sequence[tuple[Any, str, str | None]],
    upsert: str,
    delete: str,
) -> None:
    # Keys are unique within one op list (the fold keeps the last write per key), so upserts
    # and deletes of one list commute.
    sets = [op for op in ops if op[2] is not None]
    deletes = [(owner, key) for owner, key, value in ops if value is None]
    if sets:
        await conn.execute(upsert, *_columns(sets, 3))
    if deletes:
        await conn.execute(delete, *_columns(deletes, 2))
