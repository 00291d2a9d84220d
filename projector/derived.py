"""What the read models derive from their own rows, recomputed from those rows and compared.

Derived data is a function of other rows, like an index, so it is not part of the state a replay
compares (`projector.snapshot`): a run's params, tags and inputs as the API's JSON (migration
0010); the experiment, start time and stage that latest values, params and tags copy of their
run (0012, 0013); a metric history's point counts per block and its extent (0008, 0011).
Triggers and the projector keep them, whoever writes. `derived_mismatches` recomputes each from
its rows in one snapshot, for `runstream verify` and the tests.
"""

from __future__ import annotations

import asyncpg

from projector.store import quote_schema

__all__ = [
    "BLOCK_MISCOUNTS",
    "DERIVED_CHECKS",
    "RUN_COPIES",
    "copies_differing",
    "derived_mismatches",
]

# The documents as the API's Structs would shape them from the rows: lists in byte order of
# their keys; empty lists, empty schema or profile and empty dataset tags left out (built by
# concatenating objects, never by stripping nulls: that would reach into the values). Compared
# as JSON values (arrays in order), so formatting does not count.
_DOCUMENTS = """
WITH expected AS (
    SELECT r.run_id, r.data_doc, r.inputs_doc,
        coalesce((SELECT jsonb_build_object('params', jsonb_agg(
                             jsonb_build_object('key', p.key, 'value', p.value)
                             ORDER BY p.key COLLATE "C"))
                  FROM params AS p WHERE p.run_id = r.run_id HAVING count(*) > 0), '{}')
        || coalesce((SELECT jsonb_build_object('tags', jsonb_agg(
                                jsonb_build_object('key', t.key, 'value', t.value)
                                ORDER BY t.key COLLATE "C"))
                     FROM tags AS t WHERE t.run_id = r.run_id HAVING count(*) > 0), '{}')
        AS data,
        coalesce((SELECT jsonb_build_object('dataset_inputs', jsonb_agg(
                             jsonb_build_object('dataset',
                                 jsonb_build_object('name', d.name, 'digest', d.digest,
                                                    'source_type', d.source_type,
                                                    'source', d.source)
                                 || CASE WHEN d.schema <> ''
                                         THEN jsonb_build_object('schema', d.schema)
                                         ELSE '{}' END
                                 || CASE WHEN d.profile <> ''
                                         THEN jsonb_build_object('profile', d.profile)
                                         ELSE '{}' END)
                             || CASE WHEN jsonb_array_length(d.tags) > 0
                                     THEN jsonb_build_object('tags', d.tags) ELSE '{}' END
                             ORDER BY d.name COLLATE "C", d.digest COLLATE "C"))
                  FROM run_dataset_inputs AS d WHERE d.run_id = r.run_id HAVING count(*) > 0),
                 '{}')
        || coalesce((SELECT jsonb_build_object('model_inputs', jsonb_agg(
                                jsonb_build_object('model_id', m.model_id)
                                ORDER BY m.model_id COLLATE "C"))
                     FROM run_model_inputs AS m WHERE m.run_id = r.run_id HAVING count(*) > 0),
                    '{}')
        AS inputs
    FROM runs AS r
)
SELECT run_id, data_doc AS stored_data, data::text AS expected_data,
       inputs_doc AS stored_inputs, inputs::text AS expected_inputs
FROM expected
WHERE pg_temp.runstream_jsonb('{' || data_doc || '}') IS DISTINCT FROM data
   OR pg_temp.runstream_jsonb(inputs_doc) IS DISTINCT FROM inputs
"""
# A document that is not JSON is a difference to report, not an error that ends the check (a
# session's own function: PostgreSQL 15 has no pg_input_is_valid).
_LENIENT_JSONB = """
CREATE OR REPLACE FUNCTION pg_temp.runstream_jsonb(doc text) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RETURN doc::jsonb;
EXCEPTION WHEN invalid_text_representation THEN
    RETURN NULL;
END
$$
"""

# What rows carry of their run for searches, by table.
RUN_COPIES = {
    "latest_metrics": ("experiment_id",),
    "params": ("experiment_id", "start_time", "lifecycle_stage"),
    "tags": ("experiment_id", "start_time", "lifecycle_stage"),
}


def copies_differing(table: str, columns: tuple[str, ...]) -> str:
    """Return the SQL of a table's rows whose copy of their run's columns differs."""
    stored = "ROW(" + ", ".join(f"c.{name}" for name in columns) + ")"
    expected = "ROW(" + ", ".join(f"r.{name}" for name in columns) + ")"
    return (
        f"SELECT c.run_id, c.key, {stored}::text AS stored, {expected}::text AS expected "
        f"FROM {table} AS c JOIN runs AS r USING (run_id) "
        f"WHERE {stored} IS DISTINCT FROM {expected}"
    )


# The per-block point counts a sampled history reads (0008) and the series' extents (0011),
# recounted from the points; a row is a block or level whose stored count differs from the
# recount (NULL where one side has none), or a series whose extent is wrong or missing.
BLOCK_MISCOUNTS = """
WITH finest AS (  -- one pass over the points; the coarser levels are sums of level 6's blocks
    SELECT run_id, key, step >> 6 AS block, count(*) AS points, min(step) AS lo,
           max(step) AS hi, count(*) = count(DISTINCT step) AS unique_steps
    FROM metrics GROUP BY 1, 2, 3
), recount AS (
    SELECT run_id, key, l.level, block >> (l.level - 6) AS block, sum(points)::bigint AS points
    FROM finest CROSS JOIN unnest('{6,10,14,18,22,26}'::smallint[]) AS l(level)
    GROUP BY 1, 2, 3, 4
), levels AS (
    SELECT run_id, key, level, count(*) AS blocks, sum(points)::bigint AS points FROM recount
    GROUP BY 1, 2, 3
), extents AS (
    SELECT run_id, key, min(lo) AS lo, max(hi) AS hi, bool_and(unique_steps) AS unique_steps
    FROM finest GROUP BY 1, 2
)
SELECT 'block' AS what, run_id, key, level, block,
       c.points || ' points' AS counted, b.points || ' points' AS stored
FROM recount AS c FULL JOIN metric_blocks AS b USING (run_id, key, level, block)
WHERE c.points IS DISTINCT FROM b.points
UNION ALL
SELECT 'level', run_id, key, level, NULL, format('%s blocks, %s points', c.blocks, c.points),
       format('%s blocks, %s points', b.blocks, b.points)
FROM levels AS c FULL JOIN metric_levels AS b USING (run_id, key, level)
WHERE (c.blocks, c.points) IS DISTINCT FROM (b.blocks, b.points)
UNION ALL
-- extents: exact bounds; unique_steps may say false of unique steps, never true of repeated ones
SELECT 'series', run_id, key, NULL, NULL,
       format('steps %s..%s, unique %s', e.lo, e.hi, e.unique_steps),
       format('steps %s..%s, unique %s', s.min_step, s.max_step, s.unique_steps)
FROM extents AS e FULL JOIN metric_series AS s USING (run_id, key)
WHERE e.run_id IS NULL OR s.run_id IS NULL OR (s.min_step, s.max_step) <> (e.lo, e.hi)
   OR (s.unique_steps AND NOT e.unique_steps)
"""

DERIVED_CHECKS = {
    "run documents": _DOCUMENTS,
    **{f"{t} copies of their run": copies_differing(t, c) for t, c in RUN_COPIES.items()},
    "metric blocks and extents": BLOCK_MISCOUNTS,
}


async def derived_mismatches(
    conn: asyncpg.Connection, schema: str, limit: int = 20
) -> dict[str, list[str]]:
    """Return, per derived kind that differs from its rows, up to `limit` differing rows
    (and "..." after them when there are more); an empty dict when all of it agrees."""
    found: dict[str, list[str]] = {}
    await conn.execute(_LENIENT_JSONB)
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        await conn.execute("SELECT set_config('search_path', $1, true)", quote_schema(schema))
        for name, sql in DERIVED_CHECKS.items():
            rows = await conn.fetch(f"SELECT * FROM ({sql}) AS differing LIMIT {limit + 1}")
            if rows:
                found[name] = [repr(tuple(row)) for row in rows[:limit]]
                found[name] += ["..."] if len(rows) > limit else []
    return found
