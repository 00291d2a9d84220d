"""Execute a batch's ops in PostgreSQL, set-based, with the partitions' offsets in one transaction.

One transaction per batch: first the offsets compare-and-set (a fenced zombie fails here, before
writing anything, and a concurrent writer of the same partition blocks on the offset row until
the first commits), then each table's ops as one statement over ``unnest`` arrays or binary COPY
(``projector.store_entities``, ``projector.store_values``), then lineage
(``projector.store_lineage``). Round trips are per statement, never per event. Every statement
is idempotent on natural keys, so a redelivered batch changes nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from types import TracebackType

import asyncpg
import structlog

from projector.errors import FencedError, StoreRejectedError, StoreUnavailableError
from projector.ops import (
    OffsetMove,
    Ops,
)
from projector.snapshot import Snapshot, read_snapshot
from projector.store_entities import write_experiments, write_runs
from projector.store_lineage import lock_lineage, recompute_lineage
from projector.store_values import write_values

__all__ = ["NO_JIT", "PgStore"]

log = structlog.get_logger(__name__)

_SET_PATH = "SELECT set_config('search_path', $1, true)"
# A batch refreshes the documents of the runs it touched once, at its end (migration 0010): the
# documents' triggers, which refresh them after every statement for other writers, stand aside.
# So do the triggers copying a run's deletion or restoration to its params and tags (migration
# 0013): a batch copies the stages of the runs it changed in one statement per table.
_BEGIN_BATCH = (
    "SELECT set_config('search_path', $1, true), "
    "set_config('runstream.documents', 'deferred', true), "
    "set_config('runstream.run_copies', 'deferred', true)"
)
# A batch that moves offsets also wakes the query API's read-your-writes waiters (api/barrier.py
# listens) when it commits, in the same round trip; the payload is its schema.
_BEGIN_BATCH_NOTIFYING = _BEGIN_BATCH + ", pg_notify('runstream_projector', $2)"
_COPY_LIFECYCLES = [
    f"""
UPDATE {table} AS c SET lifecycle_stage = r.lifecycle_stage
FROM runs AS r
WHERE r.run_id = ANY($1::text[]) AND c.run_id = r.run_id
  AND c.lifecycle_stage IS DISTINCT FROM r.lifecycle_stage
"""
    for table in ("params", "tags")
]
_REFRESH_DOCUMENTS = "SELECT refresh_run_documents(current_schema(), $1::text[])"
# Optional (synchronous_commit=False): rows and offsets commit atomically, so a commit lost in a
# database crash rolls both back together and the batch is folded again from Kafka.
_ASYNC_COMMIT = "SET LOCAL synchronous_commit = off"

_CAS = """
WITH moves AS (
    SELECT * FROM unnest($2::int[], $3::bigint[], $4::bigint[]) AS m(partition, expected, next)
), moved AS (
    UPDATE projector_offsets AS o SET next_offset = m.next
    FROM moves AS m
    WHERE o.topic = $1 AND o.partition = m.partition AND o.next_offset = m.expected
    RETURNING o.partition
), created AS (
    INSERT INTO projector_offsets (topic, partition, next_offset)
    SELECT $1, m.partition, m.next FROM moves AS m WHERE m.expected IS NULL
    ON CONFLICT (topic, partition) DO NOTHING
    RETURNING partition
)
SELECT partition FROM moved UNION ALL SELECT partition FROM created
"""

_LOAD_OFFSETS = """
SELECT partition, next_offset FROM projector_offsets WHERE topic = $1 AND partition = ANY($2::int[])
"""

_APPLIED = """
INSERT INTO projector_applied_events (event_id) SELECT unnest($1::text[])
ON CONFLICT (event_id) DO NOTHING
"""

_APPLIED_BEFORE = """
SELECT event_id FROM projector_applied_events WHERE event_id = ANY($1::text[])
"""

# PostgreSQL compiles a statement whose estimated cost passes jit_above_cost (100k by default):
# 35 ms of compiling for a lineage step that runs in under a millisecond, and as much on top of
# many searches. Every statement of ours is a short one, so sessions run without JIT.
NO_JIT = {"jit": "off"}

# Failures a fresh transaction can get past: retried here a few times, then surfaced as
# StoreUnavailableError for the consumer to retry with backoff.
# A member frozen inside its transaction (SIGSTOP, a long GC pause) would hold its offset rows
# and the lineage lock, stalling the member that took its partitions over. PostgreSQL ends
# such a session well within Kafka's session timeout; the zombie then fails, retries and is
# fenced by the offset compare-and-set. A live batch is never idle in a transaction this long.
_SESSION_SETTINGS = {"idle_in_transaction_session_timeout": "5000", **NO_JIT}

_TRANSIENT = (
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.SerializationError,
)
_UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.IdleInTransactionSessionTimeoutError,
    asyncpg.exceptions.InsufficientResourcesError,
)

# The data itself is refused: retrying the same batch cannot help.
_REFUSED = (
    asyncpg.exceptions.DataError,
    asyncpg.exceptions.IntegrityConstraintViolationError,
    asyncpg.exceptions.ProgramLimitExceededError,
)


def quote_schema(schema: str) -> str:
    """Return a schema name safe to use as a search_path value (whitelisted shape, quoted)."""
    if not (schema.isascii() and schema.replace("_", "a").isalnum()) or len(schema) > 63:
        raise ValueError(f"invalid schema name {schema!r}")
    return f'"{schema}"'


class PgStore:
    """The read models in one PostgreSQL schema; ``apply`` runs one transaction per batch."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        schema: str,
        *,
        owns_pool: bool = False,
        synchronous_commit: bool = True,
    ) -> None:
        self._pool = pool
        self._synchronous_commit = synchronous_commit
        self._path = quote_schema(schema)
        self.schema = schema
        self._owns_pool = owns_pool
        self._closed = False

    @classmethod
    async def open(
        cls, dsn: str, schema: str, *, max_size: int = 2, synchronous_commit: bool = True
    ) -> PgStore:
        """Return a store on its own small connection pool (closed by ``close``)."""
        pool = await asyncpg.create_pool(
            dsn, min_size=1, max_size=max_size, server_settings=_SESSION_SETTINGS
        )
        return cls(pool, schema, owns_pool=True, synchronous_commit=synchronous_commit)

    @property
    def pool(self) -> asyncpg.Pool:
        """Return the connection pool (for readers sharing it, and tests)."""
        return self._pool

    async def close(self) -> None:
        """Close the pool if this store opened it; safe to call twice."""
        if self._owns_pool and not self._closed:
            self._closed = True
            await self._pool.close()

    async def __aenter__(self) -> PgStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def load_offsets(self, topic: str, partitions: Iterable[int]) -> dict[int, int | None]:
        """Return each partition's stored next offset (None when no row exists)."""
        wanted = sorted(set(partitions))
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute(_SET_PATH, self._path)
                rows = await conn.fetch(_LOAD_OFFSETS, topic, wanted)
        except _UNAVAILABLE as exc:
            raise StoreUnavailableError(f"cannot read offsets: {exc!r}") from exc
        found = {r["partition"]: r["next_offset"] for r in rows}
        return {p: found.get(p) for p in wanted}

    async def applied_ids(self, event_ids: Iterable[str]) -> set[str]:
        """Return which of these last-writer-wins event ids were applied already."""
        wanted = list(event_ids)
        if not wanted:
            return set()
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute(_SET_PATH, self._path)
                rows = await conn.fetch(_APPLIED_BEFORE, wanted)
        except _UNAVAILABLE as exc:
            raise StoreUnavailableError(f"cannot read applied events: {exc!r}") from exc
        return {r["event_id"] for r in rows}

    async def snapshot(self) -> Snapshot:
        """Return the canonical snapshot of the read models."""
        async with self._pool.acquire() as conn:
            return await read_snapshot(conn, self.schema)

    async def apply(
        self, ops: Ops, offsets: Iterable[OffsetMove] = (), *, retries: int = 3
    ) -> None:
        """Execute ops and compare-and-set offsets in one transaction; FencedError if moved."""
        moves = list(offsets)
        for attempt in range(retries + 1):
            try:
                async with self._pool.acquire() as conn, conn.transaction():
                    await self._apply(conn, ops, moves)
                return
            except _TRANSIENT as exc:
                if attempt == retries:
                    raise StoreUnavailableError(f"batch kept conflicting: {exc!r}") from exc
                log.info("batch_retry", error=type(exc).__name__, attempt=attempt + 1)
                await asyncio.sleep(0.05 * (attempt + 1))  # backoff between attempts
            except _UNAVAILABLE as exc:
                raise StoreUnavailableError(f"PostgreSQL is unavailable: {exc!r}") from exc
            except _REFUSED as exc:
                raise StoreRejectedError(f"PostgreSQL refused the batch: {exc!r}") from exc

    async def _apply(self, conn: asyncpg.Connection, ops: Ops, moves: list[OffsetMove]) -> None:
        if moves:
            await conn.execute(_BEGIN_BATCH_NOTIFYING, self._path, self.schema)
        else:
            await conn.execute(_BEGIN_BATCH, self._path)
        if not self._synchronous_commit:
            await conn.execute(_ASYNC_COMMIT)
        await _compare_and_set(conn, moves)
        staged = _stages_changed(ops)
        if ops.lineage or staged:
            # Before any run row is touched, so lineage writers never wait on each other's rows;
            # a deletion or restoration waits too, so the root tags lineage writes for other
            # partitions' runs never copy a stage a concurrent batch is changing.
            await lock_lineage(conn)
        if ops.applied:
            await conn.execute(_APPLIED, list(ops.applied))
        await write_experiments(conn, ops)
        await write_runs(conn, ops)
        if staged:  # after the batch's tags; its params, written next, read the runs' stages
            for statement in _COPY_LIFECYCLES:
                await conn.execute(statement, staged)
        await write_values(conn, ops, self.schema)
        documents = _document_runs(ops)
        if ops.lineage:
            documents.update(await recompute_lineage(conn, ops.lineage))
        if documents:
            await conn.execute(_REFRESH_DOCUMENTS, list(documents))


def _stages_changed(ops: Ops) -> list[str]:
    """Return the runs whose lifecycle stage the ops may change."""
    changes = (*ops.run_changes_before, *ops.run_changes_after)
    return list({c.run_id for c in changes if c.lifecycle_stage is not None})


def _document_runs(ops: Ops) -> set[str]:
    """Return the runs whose params, tags or inputs the ops may change (lineage's tags aside)."""
    runs = {r.run_id for r in ops.new_runs}
    runs.update(owner for owner, _, _ in ops.tags_before)
    runs.update(owner for owner, _, _ in ops.tags_after)
    runs.update(p.run_id for p in ops.params)
    runs.update(d.run_id for d in ops.datasets)
    runs.update(run_id for run_id, _ in ops.model_inputs)
    return runs


async def _compare_and_set(conn: asyncpg.Connection, moves: list[OffsetMove]) -> None:
    by_topic: dict[str, list[OffsetMove]] = {}
    for move in moves:
        by_topic.setdefault(move.topic, []).append(move)
    for topic, group in by_topic.items():
        rows = await conn.fetch(
            _CAS,
            topic,
            [m.partition for m in group],
            [m.expected for m in group],
            [m.next_offset for m in group],
        )
        moved = {r["partition"] for r in rows}
        fenced = sorted(m.partition for m in group if m.partition not in moved)
        if fenced:
            # Raising inside the transaction block rolls it back: nothing of the batch stays.
            raise FencedError(topic, fenced)
