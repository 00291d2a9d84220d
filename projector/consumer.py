"""The projector process: consume the event topic in a group, fold, store with offsets, repeat.

Offsets live in PostgreSQL (``projector_offsets``), written in the transaction of the rows they
produced; Kafka's committed offsets are never used. On assignment the rebalance listener reads
the stored offsets and seeks there (offset 0 when absent). Each batch from ``getmany`` is decoded
(records that cannot be decoded or stored go raw to the dead-letter topic, acked before the
offset moves past them), folded, and applied in one transaction whose offsets compare-and-set
fences zombies: a ``FencedError`` drops the batch and re-seeks to the stored offsets.

Batches are pipelined: while PostgreSQL writes batch N, batch N+1 is fetched, decoded and folded
(from N's end offsets); it is written only once N committed, else dropped with a re-seek.

A replay runs the same loop with two differences: no dead-letter topic (the live projector sent
those records there already; a replay only counts them), and a bound (``hold_at``) that it never
folds past, so a rebuild can follow the live schema's offsets and stop exactly on them.

Stopping is arq's pattern: ``stop()`` asks the loop to finish the batch in hand, waits up to a
deadline, then cancels it; closing the clients runs under ``asyncio.shield``. In burst mode
``run`` returns once every partition has reached the end offsets taken when it started.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from functools import partial
from types import TracebackType
from typing import Any, TypeVar

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from ingest.events import Event
from projector.assignment import Assignment
from projector.batch import Batch, PartBatch, collect
from projector.bound import FoldBound
from projector.deadletter import DeadLetter, DeadLetterProducer
from projector.errors import FencedError, StoreRejectedError, UnavailableError
from projector.fold import Folder, last_writer_wins_ids
from projector.ops import OffsetMove, Ops
from projector.stats import ProjectorStats
from projector.store import PgStore

__all__ = ["Projector"]

log = structlog.get_logger(__name__)

T = TypeVar("T")

_FOLD_SLICE = 2000  # events folded between two yields to the event loop (a few ms of CPU)


class _Abandoned(Exception):
    """The batch in hand was given up (stop requested, or its partitions are being revoked)."""


class Projector:
    """Fold the event topic into the read models of one PostgreSQL schema, as a group member
    (or, with ``group_id=None``, as the only consumer, holding every partition)."""

    def __init__(
        self,
        *,
        bootstrap: str,
        topic: str,
        group_id: str | None,
        dead_letter_topic: str | None,
        schema: str,
        dsn: str | None = None,
        pool: asyncpg.Pool | None = None,
        client_id: str = "runstream-projector",
        max_records: int = 500,
        fetch_timeout_ms: int = 200,
        max_partition_fetch_bytes: int = 4 * 1024 * 1024,
        max_record_bytes: int = 8 * 1024 * 1024,
        session_timeout_ms: int = 10_000,
        heartbeat_interval_ms: int = 3_000,
        max_poll_interval_ms: int = 300_000,
        retry_backoff_s: tuple[float, float] = (0.1, 5.0),
        synchronous_commit: bool = True,
    ) -> None:
        if (dsn is None) == (pool is None):
            raise ValueError("give exactly one of dsn and pool")
        self.topic = topic
        self.group_id = group_id
        self.schema = schema
        self.stats = ProjectorStats(topic=topic)
        self._dsn = dsn
        self._pool = pool
        self._max_records = max_records
        self._fetch_timeout_ms = fetch_timeout_ms
        self._max_record_bytes = max_record_bytes
        self._backoff = retry_backoff_s
        self._synchronous_commit = synchronous_commit
        self._consumer_config: dict[str, Any] = {
            "bootstrap_servers": bootstrap,
            "group_id": group_id,
            "client_id": client_id,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "max_partition_fetch_bytes": max_partition_fetch_bytes,
            # Bounds a batch's raw bytes, hence its decoded size (two batches are in the pipeline).
            "fetch_max_bytes": max(max_partition_fetch_bytes, 16 * 1024 * 1024),
            "session_timeout_ms": session_timeout_ms,
            "heartbeat_interval_ms": heartbeat_interval_ms,
            "max_poll_interval_ms": max_poll_interval_ms,
            "rebalance_timeout_ms": max_poll_interval_ms,
        }
        self._dead = DeadLetterProducer(bootstrap, dead_letter_topic) if dead_letter_topic else None
        self._bound = FoldBound(topic)
        self._store: PgStore | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._held = Assignment(topic, self.stats)
        self._stop = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._started = False
        self._closed = False

    # --- lifetime -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the database pool, the dead-letter producer and the consumer; idempotent."""
        if self._closed:
            raise RuntimeError("a stopped projector cannot start again")
        if self._started:
            return
        self._started = True
        try:
            if self._pool is not None:
                self._store = PgStore(
                    self._pool, self.schema, synchronous_commit=self._synchronous_commit
                )
            else:
                self._store = await PgStore.open(
                    str(self._dsn), self.schema, synchronous_commit=self._synchronous_commit
                )
            if self._dead is not None:
                await self._dead.start()
            consumer = AIOKafkaConsumer(**self._consumer_config)
            self._consumer = consumer
            self._held.attach(consumer, self._store)
            consumer.subscribe([self.topic], listener=self._held)
            await consumer.start()
            if self.group_id is None:
                await self._hold_every_partition(consumer)
        except BaseException:
            await asyncio.shield(self._close())
            raise
        log.info("projector_started", topic=self.topic, group=self.group_id, schema=self.schema)

    async def _hold_every_partition(self, consumer: AIOKafkaConsumer) -> None:
        """Without a group (a replay is the only member) hold every partition at once: no join,
        no rebalance delay. Partitions added to the topic later are not picked up."""
        async with asyncio.timeout(30):
            while True:
                if consumer.assignment():
                    break
                await asyncio.sleep(0.01)  # the metadata of the subscribed topic is on its way
        await self._held.on_partitions_assigned(set(consumer.assignment()))

    async def run(self, *, burst: bool = False) -> None:
        """Consume until ``stop()`` (or, in burst mode, until the start-time end offsets)."""
        await self.start()
        if self._loop_task is not None:
            raise RuntimeError("the projector is already running")
        self._loop_task = asyncio.create_task(self._loop(burst), name="projector-loop")
        try:
            await asyncio.shield(self._loop_task)
        except asyncio.CancelledError:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            raise

    async def stop(self, timeout_s: float = 30.0) -> None:
        """Finish the batch in hand within ``timeout_s``, then cancel; close all; idempotent."""
        self._stop.set()
        task = self._loop_task
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout_s)
            except TimeoutError:
                log.warning("projector_drain_timeout", deadline_s=timeout_s)
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await asyncio.shield(self._close())

    async def __aenter__(self) -> Projector:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        consumer, self._consumer = self._consumer, None
        try:
            if consumer is not None:
                await consumer.stop()  # leaves the group: the partitions move on at once
        finally:
            try:
                if self._dead is not None:
                    await self._dead.stop()
            finally:
                if self._store is not None:
                    await self._store.close()
        log.info("projector_stopped", events=self.stats.events, batches=self.stats.batches)

    def _running_consumer(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError("the projector is not started")
        return self._consumer

    def _running_store(self) -> PgStore:
        if self._store is None:
            raise RuntimeError("the projector is not started")
        return self._store

    # --- the loop -------------------------------------------------------------------------------

    async def _loop(self, burst: bool) -> None:
        # A two-stage pipeline: while PostgreSQL writes batch N (``ahead``), this task fetches,
        # decodes and folds batch N+1, whose offsets start where N's end. N+1 is written only
        # after N committed; if N did not, N+1 is dropped and the partitions re-seek.
        consumer = self._running_consumer()
        targets = await self._burst_targets() if burst else None
        ahead: Batch | None = None
        writing: asyncio.Task[bool] | None = None
        try:
            while not self._stop.is_set():
                if self._consumer is not None:
                    self._bound.release(self._consumer)
                if self._held.has_pending and writing is None:
                    await self._held.load_pending()
                try:
                    fetched = await consumer.getmany(
                        timeout_ms=self._fetch_timeout_ms, max_records=self._max_records
                    )
                except KafkaError as exc:
                    if not exc.retriable:
                        raise
                    log.warning("fetch_retry_later", error=repr(exc))
                    await self._wait_or_stop(self._held.revoking, timeout_s=self._backoff[0])
                    continue
                try:
                    following = await self._prepare(fetched, ahead) if fetched else None
                except _Abandoned:
                    # Fetched records were dropped: seek back, or the next fetch skips them.
                    following = None
                    await self._held.resync()
                if writing is not None:
                    committed = await writing
                    writing = ahead = None
                    if not committed:
                        # Its records (and the next batch's) were fetched: seek back to them.
                        following = None
                        await self._held.resync()
                if following is not None:
                    ahead = following
                    writing = asyncio.create_task(self._commit(following), name="projector-batch")
                    continue  # fetch and fold the next batch while this one is written
                self._held.observe_highwater()
                if targets is not None and await self._drained(targets):
                    log.info("burst_done", events=self.stats.events)
                    return
            if writing is not None:
                await writing  # stopping: finish the batch in hand
                writing = None
        finally:
            if writing is not None and not writing.done():
                writing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await writing

    @property
    def assigned(self) -> bool:
        """Return True once the group has given this member its partitions."""
        return self._held.assigned_once.is_set()

    def hold_at(self, limits: dict[int, int] | None) -> None:
        """Fold no record at or past ``limits`` (partition -> offset; absent: 0); None: no bound."""
        self._bound.limits = dict(limits) if limits is not None else None

    async def _burst_targets(self) -> dict[int, int]:
        consumer = self._running_consumer()
        await self._wait_or_stop(self._held.assigned_once)
        partitions = consumer.partitions_for_topic(self.topic) or set()
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
        return {tp.partition: offset for tp, offset in ends.items()}

    async def _drained(self, targets: dict[int, int]) -> bool:
        held = self._held.expected()
        others = []
        for partition, end in targets.items():
            if end == 0:
                continue
            if partition not in held:
                others.append(partition)
            elif (held[partition] or 0) < end:
                return False
        if not others:
            return True
        try:
            stored = await self._running_store().load_offsets(self.topic, others)
        except UnavailableError:
            return False
        return all((stored[p] or 0) >= targets[p] for p in others)

    # --- one batch ------------------------------------------------------------------------------

    async def _prepare(
        self, fetched: dict[TopicPartition, list[Any]], ahead: Batch | None
    ) -> Batch | None:
        """Decode and fold fetched records that follow what is stored (or being written).

        Raises ``_Abandoned`` when given up: the fetched records are then dropped, and the
        caller must seek back to the stored offsets.
        """
        expected = self._held.expected()
        if ahead is not None:
            expected.update(
                (m.partition, m.next_offset) for m in ahead.moves if m.partition in expected
            )
        parts: list[PartBatch] = []
        letters: list[DeadLetter] = []
        cut = self._bound.cut(self._running_consumer(), fetched, expected)
        for tp, records in cut.items():
            more, poison = collect({tp: records}, self.topic, expected, self._max_record_bytes)
            parts += more
            letters += poison
            await asyncio.sleep(0)  # between partitions: the batch being written gets its I/O
        if not parts:
            return None
        # The batch being written has not committed yet: its applied ids count as applied.
        also = set(ahead.ops.applied) if ahead else set()
        ops = await self._fold([e for p in parts for e in p.events if e is not None], also)
        moves = [OffsetMove(self.topic, p.tp.partition, p.expected, p.next_offset) for p in parts]
        return Batch(parts, letters, ops, moves)

    async def _commit(self, batch: Batch) -> bool:
        """Write one batch with its offsets; return False if it was not committed."""
        async with self._held.lock:
            if not self._held.holds(m.partition for m in batch.moves):
                return False  # a partition was revoked since the batch was folded
            try:
                if batch.letters:
                    await self._dead_letter(batch.letters)
                try:
                    await self._apply(batch.ops, batch.moves)
                except FencedError as exc:
                    await self._fenced(exc)
                    return False
                except StoreRejectedError as exc:
                    log.warning("batch_refused", error=str(exc)[:300], records=batch.records)
                    return await self._one_by_one(batch.parts)
            except _Abandoned:
                log.info("batch_abandoned", stopping=self._stop.is_set())
                return False
            self._committed(batch.moves, batch.ops.events, batch.records)
            return True

    async def _fold(self, records: list[list[Event]], also_applied: set[str]) -> Ops:
        """Fold decoded records, skipping copies of last-writer-wins events applied before."""
        ids = [i for events in records for i in last_writer_wins_ids(events)]
        applied = set(also_applied)
        if ids:
            applied |= await self._retrying(partial(self._running_store().applied_ids, ids))
        folder = Folder(applied)
        since_yield = 0
        for events in records:
            folder.add(events)
            since_yield += len(events)
            if since_yield >= _FOLD_SLICE:
                since_yield = 0
                # Folding is CPU-bound and shares the loop with the batch being written: let
                # its statements and COPY data reach PostgreSQL, or the two stages take turns.
                await asyncio.sleep(0)
        return folder.ops()

    async def _apply(self, ops: Ops, moves: list[OffsetMove]) -> None:
        store = self._running_store()
        await self._retrying(lambda: store.apply(ops, moves))

    def _committed(self, moves: list[OffsetMove], events: int, records: int) -> None:
        self._held.advance(moves)
        self.stats.committed(events, records)
        log.debug(
            "batch_committed",
            events=events,
            records=records,
            offsets={m.partition: m.next_offset for m in moves},
        )

    async def _one_by_one(self, parts: list[PartBatch]) -> bool:
        """Apply a refused batch record by record; dead-letter the records refused alone."""
        for part in parts:
            expected = part.expected
            for record, events in zip(part.records, part.events, strict=True):
                offset = record.offset
                move = OffsetMove(self.topic, part.tp.partition, expected, offset + 1)
                ops = await self._fold([events], set()) if events is not None else Ops()
                try:
                    try:
                        await self._apply(ops, [move])
                    except StoreRejectedError as exc:
                        letter = DeadLetter(
                            self.topic,
                            part.tp.partition,
                            offset,
                            record.key,
                            record.value,
                            f"refused by PostgreSQL: {exc}",
                        )
                        await self._dead_letter([letter])
                        await self._apply(Ops(), [move])
                        ops = Ops()
                except FencedError as exc:
                    await self._fenced(exc)
                    return False
                self._committed([move], ops.events, 1)
                expected = offset + 1
        return True

    async def _dead_letter(self, letters: list[DeadLetter]) -> None:
        """Send poison records to the dead-letter topic (a replay has none: it only counts)."""
        if self._dead is not None:
            await self._retrying(partial(self._dead.send, letters))
        else:
            log.info("poison_records_skipped", records=[(d.partition, d.offset) for d in letters])
        self.stats.dead_letters += len(letters)

    async def _fenced(self, exc: FencedError) -> None:
        """Drop the batch; re-read the stored offsets of the fenced partitions and seek there."""
        self.stats.fenced += 1
        log.warning("batch_fenced", partitions=exc.partitions)
        await self._held.load_locked([TopicPartition(self.topic, p) for p in exc.partitions])

    async def _retrying(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run ``attempt`` until it succeeds, backing off on retriable errors."""
        delay, ceiling = self._backoff
        while True:
            try:
                return await attempt()
            except UnavailableError as exc:
                self.stats.store_retries += 1
                log.warning("batch_retry_later", error=str(exc)[:300], delay_s=delay)
            if self._stop.is_set() or self._held.revoking.is_set():
                raise _Abandoned
            await self._wait_or_stop(self._held.revoking, timeout_s=delay)
            if self._stop.is_set() or self._held.revoking.is_set():
                raise _Abandoned
            delay = min(delay * 2, ceiling)

    async def _wait_or_stop(self, event: asyncio.Event, timeout_s: float | None = None) -> None:
        waits = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(self._stop.wait())]
        try:
            await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
