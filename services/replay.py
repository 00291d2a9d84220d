"""Rebuild the read models from the log while they keep serving; swap, roll back, time travel.

``replay`` folds the topic from offset 0 into ``<live>__next`` with a projector of its own that
never folds past the live schema's offsets, so the rebuild follows the live projector. Once it
has caught up, the live projector is held still (``projector.versions.frozen_live``), the rebuild
folds up to exactly the live offsets, and the schemas are renamed in that same transaction: the
rebuild becomes live, the old live becomes ``<live>__prev``. Both then stand at the same offsets,
which is where ``verify`` (optionally inside the swap) compares them. An interrupted replay
resumes from the offsets the rebuild stored; ``rollback`` swaps ``__prev`` back the same way;
``as_of`` folds up to the offsets of a moment into a frozen schema the API can read.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog

from ingest.topics import MAX_RECORD_BYTES
from projector import bulk_load, versions
from projector.consumer import Projector
from projector.logread import end_offsets, offsets_at, start_offsets
from services.config import Settings
from services.migrations import load, migrate
from services.progress import Progress
from services.verify import verify

log = structlog.get_logger(__name__)

Offsets = dict[int, int]


class ReplayError(RuntimeError):
    """A replay, rollback or verification cannot go on; the message says why."""


@dataclass(frozen=True)
class ReplayOptions:
    """How a rebuild folds and swaps."""

    max_records: int = 5000  # per fetch: larger batches, fewer transactions
    poll_s: float = 0.2  # how often the rebuild's offsets are compared with its target
    # Under write load the live offsets never stand still: the rebuild is close enough to swap
    # once it is this many records behind; the rest is folded while the live projector is held.
    swap_lag: int = 100
    lock_timeout_s: float = 5.0  # waiting for a live batch to commit before the swap
    catch_up_s: float = 30.0  # folding the last records while the live projector is held
    swap_attempts: int = 5
    verify: bool = False  # inside the swap: both versions' state hashes, the new one's derived data


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@asynccontextmanager
async def connection(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(settings.database_url, timeout=30)
    try:
        yield conn
    finally:
        await conn.close()


_SOLE = "SELECT pg_try_advisory_lock(hashtextextended('runstream.replay:' || $1, 0))"


@asynccontextmanager
async def _sole(settings: Settings) -> AsyncIterator[None]:
    """Hold the one replay lock of the live schema (rebuild, rollback or as-of) until exit."""
    async with connection(settings) as conn:
        if not await conn.fetchval(_SOLE, settings.read_schema):
            raise ReplayError(f"another replay of {settings.read_schema} is running")
        yield  # the session lock goes with the connection


@asynccontextmanager
async def _folding(
    settings: Settings, schema: str, options: ReplayOptions
) -> AsyncIterator[tuple[Projector, asyncio.Task[None]]]:
    """Run a projector into ``schema`` (bound to nothing until told), stopped on exit."""
    projector = Projector(
        bootstrap=settings.kafka_bootstrap,
        topic=settings.topic,
        group_id=None,  # the only member (the replay lock): every partition, no join delay
        dead_letter_topic=None,
        dsn=settings.database_url,
        schema=schema,
        client_id="runstream-replay",
        max_records=options.max_records,
        max_partition_fetch_bytes=8 * 1024 * 1024,
        max_record_bytes=MAX_RECORD_BYTES,
        # Rows and offsets commit together: a commit lost in a crash is folded again.
        synchronous_commit=False,
    )
    projector.hold_at({})
    async with projector:
        task = asyncio.create_task(projector.run(), name=f"replay-{schema}")
        try:
            yield projector, task
        finally:
            await projector.stop(30.0)
            await asyncio.gather(task, return_exceptions=True)


def _fixed(offsets: Offsets) -> Callable[[], Awaitable[Offsets]]:
    async def bound() -> Offsets:
        return offsets

    return bound


async def _fold_until(
    folding: tuple[Projector, asyncio.Task[None]],
    *,
    schema: str,
    bound: Callable[[], Awaitable[Offsets]],
    progress: Progress,
    options: ReplayOptions,
    within_s: float | None = None,
    slack: int = 0,
    poll_s: float | None = None,
) -> Offsets:
    """Fold into ``schema`` until its stored offsets are within ``slack`` records of ``bound()``
    (asked again each poll). The projector's own count of what it committed is the stored
    offsets: no query per poll, which matters while the live projector is held."""
    projector, task = folding
    deadline = time.monotonic() + within_s if within_s is not None else None
    while True:
        if task.done():
            task.result()  # raises what stopped it
            raise ReplayError("the replay's projector stopped on its own")
        target = await bound()
        projector.hold_at(target)
        unheld = {p for p, end in target.items() if end > 0} - set(projector.stats.partitions)
        if projector.assigned and unheld:
            raise ReplayError(
                f"the topic gained partitions {sorted(unheld)} during the replay; run it again"
            )
        mine = {p: state.next_offset or 0 for p, state in projector.stats.partitions.items()}
        done = sum(min(mine.get(p, 0), end) for p, end in target.items())
        progress.update(done, sum(target.values()))
        if sum(target.values()) - done <= slack and (projector.assigned or slack == 0):
            return mine
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"{schema} did not reach {target} within {within_s} s")
        await asyncio.sleep(options.poll_s if poll_s is None else poll_s)


async def _swap(
    conn: asyncpg.Connection,
    settings: Settings,
    folding: tuple[Projector, asyncio.Task[None]],
    *,
    candidate: str,
    keep_as: str,
    progress: Progress,
    options: ReplayOptions,
) -> tuple[Offsets, float]:
    """Hold the live projector, fold ``candidate`` to exactly its offsets, and promote it.

    Return the offsets both versions stood at, and how long the live projector was held."""
    live, topic = settings.read_schema, settings.topic
    projector, task = folding
    for attempt in range(1, options.swap_attempts + 1):
        try:
            async with versions.frozen_live(
                conn, live, topic, lock_timeout_s=options.lock_timeout_s
            ) as held:
                started = time.monotonic()
                target = held or await end_offsets(settings.kafka_bootstrap, topic)

                await _fold_until(
                    folding,
                    schema=candidate,
                    bound=_fixed(target),
                    progress=progress,
                    options=options,
                    within_s=options.catch_up_s,
                    poll_s=0.01,  # readers' strong reads wait while the live projector is held
                )
                # Its stored offsets are the bound it may not pass: every batch of it is
                # committed and none can follow, so it is stopped after the commit, not while
                # the live projector waits.
                if options.verify:
                    compared = await verify(
                        settings, live, against=candidate, derived_of=[candidate]
                    )
                    if not compared["equal"]:
                        raise ReplayError(
                            f"{candidate} differs from {live} at the same offsets; not "
                            "swapped:\n" + "\n".join(compared["differences"])
                        )
                    if not compared["derived_agree"]:
                        raise ReplayError(
                            f"{candidate}'s derived data differ from its rows; not swapped: "
                            f"{compared['derived_differences']}"
                        )
                await versions.promote(conn, live, candidate, keep_as)
            held_s = time.monotonic() - started
            await projector.stop(30.0)
            await asyncio.gather(task, return_exceptions=True)
            log.info(
                "read_models_swapped",
                live=live,
                promoted=candidate,
                kept_as=keep_as,
                offsets=target,
                held_s=round(held_s, 3),
            )
            return target, held_s
        except (asyncpg.LockNotAvailableError, TimeoutError) as exc:
            if task.done():
                raise ReplayError(f"swap failed after its projector stopped: {exc}") from exc
            log.warning("swap_retry", attempt=attempt, error=str(exc)[:300])
    raise ReplayError(f"could not hold the live projector in {options.swap_attempts} attempts")


async def _whole_log(settings: Settings) -> None:
    """Refuse to rebuild from a log whose first records were deleted: the result would lack them."""
    starts = await start_offsets(settings.kafka_bootstrap, settings.topic)
    cut = {p: start for p, start in starts.items() if start > 0}
    if cut:
        raise ReplayError(
            f"{settings.topic} no longer starts at offset 0 (first offsets {cut}): records were "
            "deleted, so no rebuild can be complete; the topic needs infinite retention"
        )


async def _live_bound(conn: asyncpg.Connection, settings: Settings) -> Offsets:
    """Return how far a rebuild may fold now: the live offsets (the log's end if it has none)."""
    live = await versions.stored_offsets(conn, settings.read_schema, settings.topic)
    return live or await end_offsets(settings.kafka_bootstrap, settings.topic)


async def _rebuild_and_swap(
    settings: Settings, candidate: str, keep_as: str, progress: Progress, options: ReplayOptions
) -> dict[str, Any]:
    live, topic = settings.read_schema, settings.topic
    started = time.monotonic()
    async with connection(settings) as conn:
        first = sum((await versions.stored_offsets(conn, candidate, topic)).values())
        async with _folding(settings, candidate, options) as folding:

            async def follow(slack: int, within_s: float | None = None) -> None:
                await _fold_until(
                    folding,
                    schema=candidate,
                    bound=lambda: _live_bound(conn, settings),
                    progress=progress,
                    options=options,
                    slack=slack,
                    within_s=within_s,
                    poll_s=0.02 if within_s is not None else None,
                )

            await follow(options.swap_lag)
            index_s = 0.0
            deferred = (await versions.description(conn, candidate)).get("deferred")
            if deferred:
                # Built once, in bulk, now that the rows are in (again after an interruption:
                # every build is idempotent).
                began = time.monotonic()
                builders = await asyncpg.create_pool(settings.database_url, min_size=2, max_size=2)
                try:
                    await bulk_load.build_indexes(builders, candidate, deferred)
                finally:
                    await builders.close()
                index_s = time.monotonic() - began
                log.info("indexes_built", schema=candidate, seconds=round(index_s, 1))
            if not await bulk_load.has_metrics_key(conn, candidate):
                raise ReplayError(f"{candidate} has no primary key on its metric points")
            if not await bulk_load.counts_metric_blocks(conn, candidate):
                raise ReplayError(f"{candidate} does not count its metric points per block")
            # The planner's statistics, before it plans the readers' queries on this version;
            # then catch up again, so the live projector is held only for the last records.
            await bulk_load.analyze(conn, candidate)
            await follow(options.swap_lag)
            # Closer still if the live offsets stand still for a moment: the less is left, the
            # shorter the live projector is held.
            with contextlib.suppress(TimeoutError):
                await follow(0, within_s=2.0)
            offsets, held_s = await _swap(
                conn,
                settings,
                folding,
                candidate=candidate,
                keep_as=keep_as,
                progress=progress,
                options=options,
            )
        await versions.drop(conn, versions.retired_schema(live))  # the version before last
        await versions.describe(conn, keep_as, {"role": "prev", "replaced_at": _now_iso()})
        await versions.describe(conn, live, {"role": "live", "promoted_at": _now_iso()})
    progress.finish()
    elapsed = time.monotonic() - started
    folded = sum(offsets.values()) - first
    return {
        "live": live,
        "kept_as": keep_as,
        "offsets": offsets,
        "records_folded": folded,
        "events_folded": folding[0].stats.events,
        "resumed_at": first,
        "live_held_s": round(held_s, 3),
        "index_build_s": round(index_s, 1),
        "seconds": round(elapsed, 2),
        "records_per_s": round(folded / elapsed) if elapsed > 0 else None,
    }


async def replay(
    settings: Settings, options: ReplayOptions, *, restart: bool = False
) -> dict[str, Any]:
    """Rebuild the read models from offset 0 into a new version and swap it in."""
    async with _sole(settings):
        return await _replay(settings, options, restart=restart)


async def _replay(settings: Settings, options: ReplayOptions, *, restart: bool) -> dict[str, Any]:
    live = settings.read_schema
    candidate, keep_as = versions.next_schema(live), versions.prev_schema(live)
    await _whole_log(settings)
    async with connection(settings) as conn:
        if not await versions.exists(conn, live):
            raise ReplayError(f"schema {live} does not exist: run `runstream up` (or migrate)")
        if restart:
            await versions.drop(conn, candidate)
        resumed = await versions.stored_offsets(conn, candidate, settings.topic)
        await migrate(conn, candidate, load("projector"))
        if "deferred" not in await versions.description(conn, candidate):
            started = {"role": "next", "started_at": _now_iso()}
            await bulk_load.defer_indexes(conn, candidate, started)
        else:  # resumed, perhaps deferred by a release that had no block counts yet
            await bulk_load.defer_block_counts(conn, candidate)
    if resumed:
        log.info("replay_resumed", schema=candidate, offsets=resumed)
    return await _rebuild_and_swap(settings, candidate, keep_as, Progress("replay"), options)


async def rollback(settings: Settings, options: ReplayOptions) -> dict[str, Any]:
    """Swap the version kept by the last replay back in, folding what it missed first."""
    prev = versions.prev_schema(settings.read_schema)
    async with _sole(settings):
        async with connection(settings) as conn:
            if not await versions.exists(conn, prev):
                raise ReplayError(f"there is no {prev} to roll back to")
            # Kept from before an upgrade, it may lack tables the running code reads
            await migrate(conn, prev, load("projector"))
        return await _rebuild_and_swap(settings, prev, prev, Progress("rollback"), options)


async def build_as_of(settings: Settings, moment_ms: int, options: ReplayOptions) -> dict[str, Any]:
    """Fold the log as it stood at ``moment_ms`` into a frozen schema; return where it is."""
    async with _sole(settings):
        return await _build_as_of(settings, moment_ms, options)


async def _build_as_of(
    settings: Settings, moment_ms: int, options: ReplayOptions
) -> dict[str, Any]:
    schema = versions.as_of_schema(settings.read_schema, moment_ms)
    if moment_ms > time.time() * 1000:
        raise ReplayError(
            "that moment is still to come: records appended before it would be missing"
        )
    await _whole_log(settings)
    target = await offsets_at(settings.kafka_bootstrap, settings.topic, moment_ms)
    moment = datetime.fromtimestamp(moment_ms / 1000, UTC).isoformat(timespec="milliseconds")
    info = {"role": "as_of", "as_of": moment, "as_of_ms": moment_ms, "offsets": target}
    async with connection(settings) as conn:
        await migrate(conn, schema, load("projector"))
        await versions.describe(conn, schema, {**info, "complete": False})

        progress = Progress("as_of")
        async with _folding(settings, schema, options) as folding:
            await _fold_until(
                folding,
                schema=schema,
                bound=_fixed(target),
                progress=progress,
                options=options,
            )
        progress.finish()
        await versions.describe(conn, schema, {**info, "complete": True, "built_at": _now_iso()})
    return {"schema": schema, **info}


async def list_versions(settings: Settings) -> list[dict[str, Any]]:
    """Return every version of the read models and how far each has folded."""
    async with connection(settings) as conn:
        found = await versions.list_versions(conn, settings.read_schema, settings.topic)
    return [
        # What the name says wins over a description a crash left stale.
        {**v.info, "schema": v.schema, "role": v.role, "records": v.records, "offsets": v.offsets}
        for v in found
    ]


async def drop_version(settings: Settings, schema: str) -> None:
    """Drop a version that is not live."""
    if schema == settings.read_schema:
        raise ReplayError("the live schema cannot be dropped")
    async with _sole(settings), connection(settings) as conn:
        known = {
            v.schema
            for v in await versions.list_versions(conn, settings.read_schema, settings.topic)
        }
        if schema not in known:
            raise ReplayError(f"{schema} is not a version of {settings.read_schema}")
        await versions.drop(conn, schema)
