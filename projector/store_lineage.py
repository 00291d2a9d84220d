"""Recompute root_run_id, depth and the derived mlflow.rootRunId tag in SQL, incrementally.

The rule is ``projector.lineage``'s. From the runs whose existence or parent link a batch
changed, their descendants are collected into a set D; runs outside D keep correct values, since
nothing on their upward chain changed. The runs of D whose parent is missing (roots) or outside
D (stored root/depth + 1) are entry points, and root/depth flow down from them in linear time.
What is left of D sits on a cycle or below one: those runs walk up until their path repeats, and
the smallest run_id on the cycle (``COLLATE "C"``: code points, as Python compares) becomes the
root. Every recursion is cycle-safe (UNION, or a stop at a run already on the path) and bounded
by |D|.

Concurrent consumers serialise their lineage steps with a transaction-scoped advisory lock taken
before any run row is written, so the later one always sees the earlier one's runs (two
overlapping transactions would otherwise each miss the other's uncommitted parent or child).
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from projector.ops import DERIVED_ROOT_TAG

__all__ = ["lock_lineage", "recompute_lineage"]

_LINEAGE_LOCK = (
    "SELECT pg_advisory_xact_lock(hashtextextended('runstream.lineage:' || current_schema(), 0))"
)

_LINEAGE = """
WITH RECURSIVE
-- D: the runs the batch inserted or re-linked, and all their descendants (UNION: cycle-safe)
affected (run_id) AS (
    SELECT r.run_id FROM runs AS r WHERE r.run_id = ANY($1::text[])
  UNION
    SELECT c.run_id FROM runs AS c JOIN affected AS a ON c.parent_run_id = a.run_id
),
bound AS (SELECT count(*) AS n FROM affected),
-- entry points: runs of D whose parent is missing (a root) or outside D (stored values hold)
entries AS (
    SELECT a.run_id,
           CASE WHEN p.run_id IS NULL THEN a.run_id ELSE p.root_run_id END AS root_run_id,
           CASE WHEN p.run_id IS NULL THEN 0 ELSE p.depth + 1 END AS depth
    FROM affected AS a
    JOIN runs AS r ON r.run_id = a.run_id
    LEFT JOIN runs AS p ON p.run_id = r.parent_run_id
    WHERE p.run_id IS NULL OR p.run_id NOT IN (SELECT run_id FROM affected)
),
-- top-down from the entries; a run on a cycle is never below an entry, so this is a forest
down (run_id, root_run_id, depth, steps) AS (
    SELECT run_id, root_run_id, depth, 0 FROM entries
  UNION ALL
    SELECT c.run_id, d.root_run_id, d.depth + 1, d.steps + 1
    FROM down AS d JOIN runs AS c ON c.parent_run_id = d.run_id
    WHERE d.steps < (SELECT n FROM bound)
),
-- the rest of D sits on a cycle or below one (every parent exists and is in this set):
-- walk up until the path repeats; the cycle is the path from the repeated run on
looped AS (SELECT run_id FROM affected EXCEPT SELECT run_id FROM down),
walk (start_id, cur, path) AS (
    SELECT run_id, run_id, ARRAY[run_id] FROM looped
  UNION ALL
    SELECT w.start_id, r.parent_run_id, w.path || r.parent_run_id
    FROM walk AS w JOIN runs AS r ON r.run_id = w.cur
    WHERE r.parent_run_id <> ALL (w.path) AND cardinality(w.path) <= (SELECT n FROM bound)
),
ends AS (
    SELECT DISTINCT ON (start_id) start_id, cur, path
    FROM walk ORDER BY start_id, cardinality(path) DESC
),
cycled AS (
    SELECT e.start_id AS run_id, y.min_id AS root_run_id,
           array_position(e.path, y.min_id) - 1 AS depth
    FROM ends AS e
    JOIN runs AS c ON c.run_id = e.cur
    CROSS JOIN LATERAL (
        SELECT min(x COLLATE "C") AS min_id  -- the smallest run_id on the cycle is its root
        FROM unnest(e.path[array_position(e.path, c.parent_run_id):]) AS x
    ) AS y
),
resolved AS (
    SELECT run_id, root_run_id, depth FROM down
  UNION ALL
    SELECT run_id, root_run_id, depth FROM cycled
),
updated AS (
    UPDATE runs AS r SET root_run_id = s.root_run_id, depth = s.depth
    FROM resolved AS s
    WHERE r.run_id = s.run_id
      AND (r.root_run_id, r.depth) IS DISTINCT FROM (s.root_run_id, s.depth)
    RETURNING r.run_id
)
INSERT INTO tags AS t (run_id, key, value, experiment_id, start_time, lifecycle_stage)
SELECT s.run_id, $2, s.root_run_id, r.experiment_id, r.start_time, r.lifecycle_stage
FROM resolved AS s JOIN runs AS r ON r.run_id = s.run_id
ON CONFLICT (run_id, key) DO UPDATE SET value = EXCLUDED.value
    WHERE t.value IS DISTINCT FROM EXCLUDED.value
RETURNING t.run_id
"""


async def lock_lineage(conn: asyncpg.Connection) -> None:
    """Serialise lineage steps of every consumer writing this schema, until commit."""
    await conn.execute(_LINEAGE_LOCK)


# The planner cannot estimate a recursive CTE and guessed hundreds of rows for one new run, so it
# hashed the whole runs table twice: 110 ms per RunStarted on 100k runs, which every read after
# a run's creation waited for. The sets this statement walks are a batch's runs and their
# descendants, each step an index lookup (runs_pkey, runs_parent), so nested loops it is. The
# settings last until the batch's transaction ends; this statement is its last write.
_NESTED_LOOPS_ONLY = (
    "SELECT set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true)"
)


async def recompute_lineage(conn: asyncpg.Connection, run_ids: Sequence[str]) -> list[str]:
    """Recompute lineage of these runs and their descendants (after the batch's run writes);
    return the runs whose mlflow.rootRunId tag it wrote."""
    await conn.execute(_NESTED_LOOPS_ONLY)
    rows = await conn.fetch(_LINEAGE, list(run_ids), DERIVED_ROOT_TAG)
    return [row[0] for row in rows]
