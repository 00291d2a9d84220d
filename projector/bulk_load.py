"""A rebuild's bulk load: the indexes, the metric points' key and the block counts it defers.

`runstream replay` folds the whole log into a fresh version (``projector.versions``). Maintaining
every secondary index, the metric points' primary key and the per-block point counts row by row
would cost more than the rows themselves, so the rebuild drops them first (`defer_indexes`),
recording in the version's description how to build them again, and builds them once, in bulk,
at the end (`build_indexes`), as pg_restore does; then `analyze` gives the planner its numbers
before the version serves reads. Each step is safe to run again after an interruption.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import asyncpg
import structlog

from projector.store import quote_schema
from projector.versions import describe, description

__all__ = [
    "analyze",
    "build_indexes",
    "counts_metric_blocks",
    "defer_block_counts",
    "defer_indexes",
    "has_metrics_key",
    "quote_identifier",
]

log = structlog.get_logger(__name__)

# Indexes no constraint or ON CONFLICT needs: a rebuild drops them and builds them once at the
# end, in bulk, instead of maintaining them row by row (what pg_restore does too). Partial ones
# stay: they hold the few rows the projector looks for while it writes (migration 0013).
_SECONDARY_INDEXES = """
SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS definition
FROM pg_index AS i
JOIN pg_class AS t ON t.oid = i.indrelid
JOIN pg_namespace AS n ON n.oid = t.relnamespace
WHERE n.nspname = $1 AND NOT i.indisunique AND NOT i.indisprimary AND i.indpred IS NULL
ORDER BY 1
"""
_DROP_INDEX = "DROP INDEX {name}"
# The metric points' primary key costs more than all the rest of a point's insert (a btree on two
# texts and three numbers). A rebuild can go without it: a point above its series' stored latest
# is copied without a check (it cannot be stored yet), and the few others are inserted with
# ON CONFLICT DO NOTHING, which without the key lets exact duplicates in; those are deleted once,
# at the end, if adding the key back finds any.
_METRICS_KEY = """
SELECT con.conname AS name, pg_get_constraintdef(con.oid) AS definition
FROM pg_constraint AS con
JOIN pg_class AS t ON t.oid = con.conrelid
JOIN pg_namespace AS n ON n.oid = t.relnamespace
WHERE n.nspname = $1 AND t.relname = 'metrics' AND con.contype = 'p'
"""
_ONE_WORKER = "SELECT set_config('max_parallel_maintenance_workers', '1', false)"
_DROP_KEY = "ALTER TABLE {schema}.metrics DROP CONSTRAINT {name}"
_HOLD_METRICS = "LOCK TABLE {schema}.metrics IN SHARE MODE"
_UNIQUE_INDEX = "CREATE UNIQUE INDEX IF NOT EXISTS {name} ON {schema}.metrics {columns}"
_KEY_USING_INDEX = (
    "ALTER TABLE {schema}.metrics ADD CONSTRAINT {name} PRIMARY KEY USING INDEX {name}"
)
_DEDUPLICATE_METRICS = """
DELETE FROM {schema}.metrics AS a
USING {schema}.metrics AS b
WHERE a.run_id = b.run_id AND a.key = b.key AND a.step = b.step AND a.ts = b.ts
  AND a.value = b.value AND a.ctid > b.ctid
"""
# The per-block point counts (migration 0008) are kept by a trigger on metrics, which a rebuild
# switches off with the indexes: without the key, duplicates would be counted that the key's
# build then deletes. They are counted once, from the deduplicated points, at the end.
_BLOCKS_TRIGGER = "metric_blocks_count"
_BLOCKS_OFF = "ALTER TABLE {schema}.metrics DISABLE TRIGGER " + _BLOCKS_TRIGGER
_BLOCKS_ON = "ALTER TABLE {schema}.metrics ENABLE TRIGGER " + _BLOCKS_TRIGGER
_BLOCKS_ENABLED = """
SELECT tg.tgenabled <> 'D' AS enabled
FROM pg_trigger AS tg
JOIN pg_class AS t ON t.oid = tg.tgrelid
JOIN pg_namespace AS n ON n.oid = t.relnamespace
WHERE n.nspname = $1 AND t.relname = 'metrics' AND tg.tgname = $2
"""
# SHARE ROW EXCLUSIVE: the replay's inserts wait until the trigger counts them again; it does
# not conflict with the ACCESS SHARE a waiting insert may already hold.
_HOLD_METRICS_WRITES = "LOCK TABLE {schema}.metrics IN SHARE ROW EXCLUSIVE MODE"
_CLEAR_BLOCKS = "TRUNCATE {schema}.metric_blocks, {schema}.metric_levels, {schema}.metric_series"
# Defined by migration 0008 in each schema, beside the trigger it stands in for.
_RECOUNT_BLOCKS = "SELECT {schema}.recount_metric_blocks($1)"
_TABLES = """
SELECT c.relname FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relkind = 'r' ORDER BY 1
"""
_ANALYZE = "ANALYZE {schema}.{table}"


async def defer_indexes(
    conn: asyncpg.Connection, schema: str, info: Mapping[str, Any]
) -> dict[str, Any]:
    """Drop the schema's secondary indexes and the metric points' key, and record how to build
    them again in the schema's description, in one transaction; return the description.

    One transaction: a crash either leaves everything in place or leaves it all recorded for
    ``build_indexes``, never dropped and forgotten.
    """
    quoted = quote_schema(schema)
    async with conn.transaction():
        rows = await conn.fetch(_SECONDARY_INDEXES, schema)
        for row in rows:
            await conn.execute(_DROP_INDEX.format(name=row["name"]))
        key = await conn.fetchrow(_METRICS_KEY, schema)
        metrics_key = None
        if key is not None:
            await conn.execute(_DROP_KEY.format(schema=quoted, name=quote_identifier(key["name"])))
            columns = key["definition"].removeprefix("PRIMARY KEY ")
            metrics_key = {"name": key["name"], "columns": columns}
        blocks = await counts_metric_blocks(conn, schema)
        if blocks:
            await conn.execute(_BLOCKS_OFF.format(schema=quoted))
            await conn.execute(_CLEAR_BLOCKS.format(schema=quoted))
        deferred = {
            "indexes": [row["definition"] for row in rows],
            "metrics_key": metrics_key,
            "metric_blocks": blocks,
        }
        described = {**info, "deferred": deferred}
        await describe(conn, schema, described)
    return described


async def defer_block_counts(conn: asyncpg.Connection, schema: str) -> dict[str, Any]:
    """Bring a rebuild deferred before the block counts existed (migration 0008 applied to it
    since) in line: their trigger off and their counts recorded as deferred, so that
    ``build_indexes`` counts them once from the deduplicated points. Return the description."""
    async with conn.transaction():
        info = await description(conn, schema)
        deferred = info.get("deferred")
        if not isinstance(deferred, dict) or "metric_blocks" in deferred:
            return info
        blocks = await counts_metric_blocks(conn, schema)
        if blocks:
            quoted = quote_schema(schema)
            await conn.execute(_BLOCKS_OFF.format(schema=quoted))
            await conn.execute(_CLEAR_BLOCKS.format(schema=quoted))
        info = {**info, "deferred": {**deferred, "metric_blocks": blocks}}
        await describe(conn, schema, info)
    return info


async def build_indexes(pool: asyncpg.Pool, schema: str, deferred: Mapping[str, Any]) -> None:
    """Build what ``defer_indexes`` dropped; safe to run again after an interruption.

    The metric key and the indexes build in two sessions at once, one parallel worker each.
    """
    statements = [str(s) for s in deferred.get("indexes", [])]
    for statement in statements:
        if not statement.startswith("CREATE INDEX "):
            raise ValueError(f"not a deferred index: {statement[:100]!r}")
    await asyncio.gather(
        _build_metrics_key(pool, schema, deferred.get("metrics_key")),
        _build_indexes(pool, statements),
    )
    if deferred.get("metric_blocks"):
        await _count_metric_blocks(pool, schema)


async def has_metrics_key(conn: asyncpg.Connection, schema: str) -> bool:
    """Return True if the version's metric points have their primary key."""
    return await conn.fetchrow(_METRICS_KEY, schema) is not None


async def _build_indexes(pool: asyncpg.Pool, statements: list[str]) -> None:
    async with pool.acquire() as conn:
        await conn.execute(_ONE_WORKER)
        for statement in statements:
            await conn.execute(statement.replace("CREATE INDEX ", "CREATE INDEX IF NOT EXISTS ", 1))


async def _build_metrics_key(
    pool: asyncpg.Pool, schema: str, key: Mapping[str, str] | None
) -> None:
    if key is None:
        return
    quoted, name = quote_schema(schema), quote_identifier(key["name"])
    if not key["columns"].startswith("(") or not key["columns"].endswith(")"):
        raise ValueError(f"not a column list: {key['columns'][:100]!r}")
    create = _UNIQUE_INDEX.format(name=name, schema=quoted, columns=key["columns"])
    async with pool.acquire() as conn:
        await conn.execute(_ONE_WORKER)
        async with conn.transaction():
            # SHARE: the replay's inserts wait (no duplicate can slip in between the delete and
            # the build), the other session's CREATE INDEX does not.
            await conn.execute(_HOLD_METRICS.format(schema=quoted))
            if await has_metrics_key(conn, schema):
                return  # built before an interruption
            try:
                async with conn.transaction():  # a savepoint
                    await conn.execute(create)
            except asyncpg.UniqueViolationError:
                deleted = await conn.execute(_DEDUPLICATE_METRICS.format(schema=quoted))
                log.info("duplicate_points_deleted", schema=schema, status=deleted)
                await conn.execute(create)
        # In a transaction of its own: the replay's projector may hold ACCESS SHARE on metrics
        # (its COPY reads the columns first) while it waits behind the SHARE above, so taking
        # ACCESS EXCLUSIVE there deadlocks. From now on the unique index keeps duplicates out.
        await conn.execute(_KEY_USING_INDEX.format(schema=quoted, name=name))


async def counts_metric_blocks(conn: asyncpg.Connection, schema: str) -> bool:
    """Return True if the version keeps its per-block point counts (sampled histories read them)."""
    return bool(await conn.fetchval(_BLOCKS_ENABLED, schema, _BLOCKS_TRIGGER))


async def _count_metric_blocks(pool: asyncpg.Pool, schema: str) -> None:
    """Count the points per block from scratch and switch the counting trigger back on."""
    quoted = quote_schema(schema)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(_HOLD_METRICS_WRITES.format(schema=quoted))
        if await counts_metric_blocks(conn, schema):
            return  # counted before an interruption
        await conn.execute(_RECOUNT_BLOCKS.format(schema=quoted), schema)
        await conn.execute(_BLOCKS_ON.format(schema=quoted))


async def analyze(conn: asyncpg.Connection, schema: str) -> None:
    """Gather the planner's statistics of every table of a version, before it serves reads."""
    quoted = quote_schema(schema)
    for row in await conn.fetch(_TABLES, schema):
        await conn.execute(_ANALYZE.format(schema=quoted, table=quote_identifier(row["relname"])))


def quote_identifier(name: str) -> str:
    """Return a catalog-given identifier quoted for DDL."""
    return '"' + name.replace('"', '""') + '"'
