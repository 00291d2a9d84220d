"""Execute a batch's ops in PostgreSQL, set-based, with the partitions' offsets in one transaction.

One transaction per batch: first the offsets compare-and-set (a fenced zombie fails here, before
writing anything, and a concurrent writer of the same partition blocks on the offset row until
the first commits), then each table's ops as one statement over ``unnest`` arrays or binary COPY
(``projector.store_values``), then lineage (``projector.store_lineage``). Round trips are per
statement, never per event. Every statement is idempotent on natural keys, so a redelivered batch
changes nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any

import asyncpg
import structlog

from projector.errors import FencedError, StoreRejectedError, StoreUnavailableError
from projector.ops import (
    ExperimentChange,
    OffsetMove,
    Ops,
    RunChange,
)
from projector.snapshot import Snapshot, read_snapshot
from projector.store_lineage import lock_lineage, recompute_lineage
from projector.store_values import columns as _columns
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
        await self._experiments(conn, ops)
        await self._runs(conn, ops)
        if staged:  # after the batch's tags; its params, written next, read the runs' stages
            for statement in _COPY_LIFECYCLES:
                await conn.execute(statement, staged)
        await write_values(conn, ops, self.schema)
        documents = _document_runs(ops)
        if ops.lineage:
            documents.update(await recompute_lineage(conn, ops.lineage))
        if documents:
            await conn.execute(_REFRESH_DOCUMENTS, list(documents))

    async def _experiments(self, conn: asyncpg.Connection, ops: Ops) -> None:
        await _experiment_changes(conn, ops.experiment_changes_before)
        if ops.new_experiments:
            rows = await conn.fetch(
                _NEW_EXPERIMENTS,
                *_columns(
                    [
                        (e.experiment_id, e.name, e.artifact_location, e.at)
                        for e in ops.new_experiments
                    ],
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
        await _tag_ops(
            conn, ops.experiment_tags_after, _EXPERIMENT_TAGS_SET, _EXPERIMENT_TAGS_DELETE
        )
        await _experiment_changes(conn, ops.experiment_changes_after)

    async def _runs(self, conn: asyncpg.Connection, ops: Ops) -> None:
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
            fresh = [
                (r.run_id, k, v) for r in ops.new_runs if r.run_id in created for k, v in r.tags
            ]
            await _tag_ops(conn, fresh, _TAGS_SET, _TAGS_DELETE)
        await _tag_ops(conn, ops.tags_after, _TAGS_SET, _TAGS_DELETE)
        await _run_changes(conn, ops.run_changes_after)


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
