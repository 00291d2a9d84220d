"""Versions of the read models: schemas named after the live one, and the swap between them.

The live schema keeps its name (``runstream_read``) forever; that name is the pointer every
reader and the live projector resolve on each statement. Beside it live:

- ``<live>__next``: a rebuild in progress (``runstream replay``), resumable from its own offsets;
- ``<live>__prev``: the version the last swap replaced, kept for ``runstream replay --rollback``;
- ``<live>__asof_<epoch ms>``: a frozen, read-only fold of the log up to a moment.

A swap renames schemas inside one transaction that first takes a SHARE lock on the live
``projector_offsets``. Every projector transaction starts with the offsets compare-and-set, so
the lock waits for a live batch in flight to commit and holds the next one at its first
statement; readers (ACCESS SHARE) are not blocked. A projector statement that waited re-resolves
the name once the lock is granted, so after the commit it writes to the promoted schema, whose
offsets equal the ones it expects. Renaming a schema invalidates PostgreSQL's cached plans, so
the readers' prepared statements follow too.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import structlog

from projector.store import quote_schema

__all__ = [
    "Version",
    "analyze",
    "as_of_schema",
    "build_indexes",
    "counts_metric_blocks",
    "defer_block_counts",
    "defer_indexes",
    "describe",
    "description",
    "drop",
    "exists",
    "frozen_live",
    "has_metrics_key",
    "list_versions",
    "next_schema",
    "prev_schema",
    "promote",
    "retired_schema",
    "stored_offsets",
]

log = structlog.get_logger(__name__)

NEXT_SUFFIX = "__next"
PREV_SUFFIX = "__prev"
AS_OF_INFIX = "__asof_"
_SWAPPING_SUFFIX = "__swapping"
RETIRED_SUFFIX = "__retired"

_EXISTS = "SELECT to_regnamespace($1) IS NOT NULL"
_LIST = """
SELECT nspname AS name, obj_description(oid, 'pg_namespace') AS comment
FROM pg_namespace
WHERE nspname = $1 OR left(nspname, length($1) + 2) = $1 || '__'
ORDER BY nspname
"""
_HAS_OFFSETS = "SELECT to_regclass($1) IS NOT NULL"
_OFFSETS = "SELECT partition, next_offset FROM {schema}.projector_offsets WHERE topic = $1"
_LOCK_TIMEOUT = "SELECT set_config('lock_timeout', $1, true)"
_FREEZE = "LOCK TABLE {schema}.projector_offsets IN SHARE MODE"
_RENAME = "ALTER SCHEMA {old} RENAME TO {new}"
_DROP = "DROP SCHEMA IF EXISTS {schema} CASCADE"
_COMMENT = "COMMENT ON SCHEMA {schema} IS {text}"
_DESCRIPTION = "SELECT obj_description(to_regnamespace($1), 'pg_namespace')"
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
_EXCLUSIVE = "LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"


def _checked(schema: str) -> str:
    quote_schema(schema)  # raises on a name that is not a plain identifier of 63 bytes or less
    return schema


def next_schema(live: str) -> str:
    """Return the name of the rebuild in progress."""
    return _checked(live + NEXT_SUFFIX)


def prev_schema(live: str) -> str:
    """Return the name of the version kept for rollback."""
    return _checked(live + PREV_SUFFIX)


def retired_schema(live: str) -> str:
    """Return where the version before last waits, from a swap's commit, to be dropped."""
    return _checked(live + RETIRED_SUFFIX)


def as_of_schema(live: str, moment_ms: int) -> str:
    """Return the name of the frozen fold of the log up to ``moment_ms`` (epoch milliseconds)."""
    if moment_ms < 0:
        raise ValueError("a moment before 1970 holds no events")
    return _checked(f"{live}{AS_OF_INFIX}{moment_ms}")


@dataclass(frozen=True)
class Version:
    """One schema of the read models, what it is for, and how far it has folded the log."""

    schema: str
    role: str  # live | next | prev | as_of | other
    offsets: dict[int, int]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def records(self) -> int:
        """Return how many records of the log this version has folded."""
        return sum(self.offsets.values())


async def exists(conn: asyncpg.Connection, schema: str) -> bool:
    """Return True if the schema exists."""
    return bool(await conn.fetchval(_EXISTS, quote_schema(schema)))


async def stored_offsets(conn: asyncpg.Connection, schema: str, topic: str) -> dict[int, int]:
    """Return the schema's stored next offset per partition (empty when it has none)."""
    quoted = quote_schema(schema)
    if not await conn.fetchval(_HAS_OFFSETS, f"{quoted}.projector_offsets"):
        return {}
    rows = await conn.fetch(_OFFSETS.format(schema=quoted), topic)
    return {row["partition"]: row["next_offset"] for row in rows}


async def drop(conn: asyncpg.Connection, schema: str) -> None:
    """Drop a version and everything in it."""
    await conn.execute(_DROP.format(schema=quote_schema(schema)))


async def describe(conn: asyncpg.Connection, schema: str, info: Mapping[str, Any]) -> None:
    """Record what a version is (JSON in the schema's comment)."""
    text = json.dumps(dict(info), sort_keys=True)
    literal = "'" + text.replace("'", "''") + "'"  # COMMENT takes no bind parameters
    await conn.execute(_COMMENT.format(schema=quote_schema(schema), text=literal))


async def description(conn: asyncpg.Connection, schema: str) -> dict[str, Any]:
    """Return what ``describe`` recorded about a version (empty if nothing)."""
    text = await conn.fetchval(_DESCRIPTION, quote_schema(schema))
    try:
        info = json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {"comment": text}
    return info if isinstance(info, dict) else {"comment": text}


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


def _role(live: str, schema: str) -> str:
    if schema == live:
        return "live"
    suffix = schema[len(live) :]
    if suffix == NEXT_SUFFIX:
        return "next"
    if suffix == PREV_SUFFIX:
        return "prev"
    if suffix.startswith(AS_OF_INFIX) and suffix[len(AS_OF_INFIX) :].isdigit():
        return "as_of"
    return "other"


async def list_versions(conn: asyncpg.Connection, live: str, topic: str) -> list[Version]:
    """Return the live schema and every version named after it."""
    found = []
    for row in await conn.fetch(_LIST, live):
        try:
            info = json.loads(row["comment"]) if row["comment"] else {}
        except json.JSONDecodeError:
            info = {"comment": row["comment"]}
        schema = row["name"]
        offsets = await stored_offsets(conn, schema, topic)
        found.append(Version(schema, _role(live, schema), offsets, info))
    return found


@asynccontextmanager
async def frozen_live(
    conn: asyncpg.Connection, live: str, topic: str, *, lock_timeout_s: float
) -> AsyncIterator[dict[int, int]]:
    """Hold the live projector still (its offsets locked) in a transaction; yield its offsets.

    The transaction commits when the block ends, so a ``promote`` inside it is atomic. Raises
    ``asyncpg.LockNotAvailableError`` if a live batch does not commit within the timeout.
    """
    async with conn.transaction():
        await conn.execute(_LOCK_TIMEOUT, f"{int(lock_timeout_s * 1000)}ms")
        await conn.execute(_FREEZE.format(schema=quote_schema(live)))
        yield await stored_offsets(conn, live, topic)


async def promote(conn: asyncpg.Connection, live: str, candidate: str, keep_as: str) -> None:
    """Make ``candidate`` the live schema and keep the replaced one as ``keep_as``.

    Call inside ``frozen_live``. ``keep_as`` may be the candidate's own name (a rollback swaps
    the two); otherwise a version already kept there moves to ``retired_schema(live)`` in the
    same transaction, to be dropped after the commit: a swap that fails keeps it.
    """
    # Readers pin a version by locking its runs table before their snapshot (api/routes.py):
    # waiting for that lock lets the reads in flight finish on the old version and holds new ones
    # until the commit, so no read sees tables of both. Only that table: a lock on every table
    # would also wait for autovacuum on the big ones (a second, until it is cancelled).
    await conn.execute(_EXCLUSIVE.format(table=f"{quote_schema(live)}.runs"))
    retired = retired_schema(live)
    if keep_as != candidate and await exists(conn, keep_as):
        await conn.execute(_DROP.format(schema=quote_schema(retired)))
        await conn.execute(_RENAME.format(old=quote_schema(keep_as), new=quote_schema(retired)))
    swapping = quote_schema(live + _SWAPPING_SUFFIX)
    await conn.execute(_RENAME.format(old=quote_schema(live), new=swapping))
    await conn.execute(_RENAME.format(old=quote_schema(candidate), new=quote_schema(live)))
    await conn.execute(_RENAME.format(old=swapping, new=quote_schema(keep_as)))
