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

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from projector.store import quote_schema

__all__ = [
    "Version",
    "as_of_schema",
    "describe",
    "description",
    "drop",
    "exists",
    "frozen_live",
    "list_versions",
    "next_schema",
    "prev_schema",
    "promote",
    "retired_schema",
    "stored_offsets",
]

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
