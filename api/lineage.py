"""Runstream's lineage views: a run's ancestors, children, subtree, and its best children.

Links are `runs.parent_run_id`, followed the way the projector's lineage rule follows them
(`projector/lineage.py`): a run with depth 0 is a root, so its link (to a missing run, or the
link the cycle rule ignores) is not followed up, and a run is a child of its parent only when
its depth is above 0. Every walk is a recursive CTE bounded in depth, with PostgreSQL's CYCLE
clause as a second guard, so a cycle the projector has not resolved yet cannot loop. Views
show runs of every lifecycle stage (a deleted parent still holds its tree together); best-children
ranks only the children a view type selects (active ones by default).
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from api.schemas import BestChild, KeyValue, LineageNode, wire_double

__all__ = ["MODES", "ancestors", "best_children", "children", "node", "subtree"]

MODES = ("max", "min")

_NODE_COLUMNS = """r.run_id, r.run_name, r.experiment_id, r.status, r.lifecycle_stage,
       r.start_time, r.end_time, r.parent_run_id, r.root_run_id, r.depth"""
_NODE = f"SELECT {_NODE_COLUMNS}, 0 AS distance FROM runs AS r WHERE r.run_id = $1"
# $2 bounds the walk; one row more than the bound tells the caller it was cut short.
_ANCESTORS = f"""
WITH RECURSIVE up (run_id, parent_run_id, depth, distance) AS (
    SELECT run_id, parent_run_id, depth, 0 FROM runs WHERE run_id = $1
  UNION ALL
    SELECT p.run_id, p.parent_run_id, p.depth, up.distance + 1
    FROM up JOIN runs AS p ON p.run_id = up.parent_run_id
    WHERE up.depth > 0 AND up.distance <= $2
) CYCLE run_id SET on_cycle USING path
SELECT {_NODE_COLUMNS}, up.distance
FROM up JOIN runs AS r ON r.run_id = up.run_id
WHERE up.distance > 0 AND NOT up.on_cycle
ORDER BY up.distance
"""
_CHILDREN = f"""
SELECT {_NODE_COLUMNS}, 1 AS distance FROM runs AS r
WHERE r.parent_run_id = $1 AND r.depth > 0
ORDER BY r.start_time, r.run_id
LIMIT $2::bigint
"""
_SUBTREE = f"""
WITH RECURSIVE down (run_id, distance) AS (
    SELECT run_id, 0 FROM runs WHERE run_id = $1
  UNION ALL
    SELECT c.run_id, down.distance + 1
    FROM down JOIN runs AS c ON c.parent_run_id = down.run_id
    WHERE c.depth > 0 AND down.distance < $2
) CYCLE run_id SET on_cycle USING path
SELECT {_NODE_COLUMNS}, down.distance
FROM down JOIN runs AS r ON r.run_id = down.run_id
WHERE down.distance > 0 AND NOT down.on_cycle
ORDER BY down.distance, r.start_time, r.run_id
LIMIT $3::bigint
"""
_CHILD_COUNT = """
SELECT count(*) FROM runs
WHERE parent_run_id = $1 AND depth > 0 AND lifecycle_stage = ANY($2::text[])
"""
# Per metric, the child with the highest and with the lowest latest value; NaN never wins,
# ties go to the earlier child.
_BEST = """
WITH kids AS (
    SELECT run_id, run_name, start_time FROM runs
    WHERE parent_run_id = $1 AND depth > 0 AND lifecycle_stage = ANY($3::text[])
), scored AS (
    SELECT m.key, m.value, m.step, m.ts, k.run_id, k.run_name, k.start_time
    FROM latest_metrics AS m JOIN kids AS k ON k.run_id = m.run_id
    WHERE m.key = ANY($2::text[]) AND m.value <> 'NaN'::float8
)
(SELECT DISTINCT ON (key) 'max' AS mode, key, value, step, ts, run_id, run_name FROM scored
 ORDER BY key, value DESC, start_time, run_id)
UNION ALL
(SELECT DISTINCT ON (key) 'min' AS mode, key, value, step, ts, run_id, run_name FROM scored
 ORDER BY key, value ASC, start_time, run_id)
"""
_PARAMS = "SELECT run_id, key, value FROM params WHERE run_id = ANY($1::text[]) ORDER BY key"


def _node(row: asyncpg.Record) -> LineageNode:
    return LineageNode(
        run_id=row["run_id"],
        run_name=row["run_name"],
        experiment_id=str(row["experiment_id"]),
        status=row["status"],
        lifecycle_stage=row["lifecycle_stage"],
        start_time=row["start_time"],
        end_time=row["end_time"] or None,
        parent_run_id=row["parent_run_id"],
        root_run_id=row["root_run_id"],
        depth=row["depth"],
        distance=row["distance"],
    )


def _bounded(rows: Sequence[asyncpg.Record], bound: int) -> tuple[list[LineageNode], bool]:
    return [_node(row) for row in rows[:bound]], len(rows) > bound


async def node(conn: asyncpg.Connection, run_id: str) -> LineageNode | None:
    """Return a run as a lineage node (distance 0), or None when it does not exist."""
    row = await conn.fetchrow(_NODE, run_id)
    return None if row is None else _node(row)


async def ancestors(
    conn: asyncpg.Connection, run_id: str, max_depth: int
) -> tuple[list[LineageNode], bool]:
    """Return the run's parent, grandparent, ... up to its root, at most `max_depth` of them."""
    return _bounded(await conn.fetch(_ANCESTORS, run_id, max_depth), max_depth)


async def children(
    conn: asyncpg.Connection, run_id: str, max_results: int
) -> tuple[list[LineageNode], bool]:
    """Return the run's direct children by start time, at most `max_results` of them."""
    return _bounded(await conn.fetch(_CHILDREN, run_id, max_results + 1), max_results)


async def subtree(
    conn: asyncpg.Connection, run_id: str, max_depth: int, max_results: int
) -> tuple[list[LineageNode], bool]:
    """Return the run's descendants level by level, down `max_depth` levels, at most
    `max_results` of them; truncated when either bound cut something off."""
    rows = await conn.fetch(_SUBTREE, run_id, max_depth + 1, max_results + 1)
    deeper = any(row["distance"] > max_depth for row in rows)
    kept = [row for row in rows if row["distance"] <= max_depth]
    found, cut = _bounded(kept, max_results)
    return found, cut or deeper


async def best_children(
    conn: asyncpg.Connection,
    run_id: str,
    metrics: Sequence[str],
    modes: Sequence[str],
    stages: Sequence[str],
) -> tuple[int, list[BestChild]]:
    """Return how many children qualify, and the best of them per metric and mode."""
    count = await conn.fetchval(_CHILD_COUNT, run_id, list(stages))
    rows = await conn.fetch(_BEST, run_id, list(metrics), list(stages))
    winners = {(row["key"], row["mode"]): row for row in rows}
    params: dict[str, list[KeyValue]] = {}
    for owner, key, value in await conn.fetch(_PARAMS, list({r["run_id"] for r in rows})):
        params.setdefault(owner, []).append(KeyValue(key, value))
    best: list[BestChild] = []
    for metric in metrics:
        for mode in modes:
            row = winners.get((metric, mode))
            if row is None:
                best.append(BestChild(metric=metric, mode=mode))
                continue
            best.append(
                BestChild(
                    metric=metric,
                    mode=mode,
                    run_id=row["run_id"],
                    run_name=row["run_name"],
                    value=wire_double(row["value"]),
                    step=row["step"],
                    timestamp=row["ts"],
                    params=params.get(row["run_id"], []),
                )
            )
    return int(count), best
