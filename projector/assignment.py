"""Which partitions this group member holds, and where each one's stored offset stands.

Kafka assigns partitions; PostgreSQL says where to resume: on assignment the stored next offsets
are read and the consumer seeks there (offset 0 when absent). A partition whose offsets cannot be
read yet is paused and retried. One lock orders rebalance steps with batch commits, so a revoked
partition is never written after the revocation finished here (and if a stale batch races it
anyway, the offsets compare-and-set fences it).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError

from projector.errors import UnavailableError
from projector.ops import OffsetMove
from projector.stats import PartitionStats, ProjectorStats
from projector.store import PgStore

__all__ = ["Assignment"]

log = structlog.get_logger(__name__)


class Assignment(ConsumerRebalanceListener):  # type: ignore[misc]
    """The held partitions and their stored offsets; the consumer's rebalance listener."""

    def __init__(self, topic: str, stats: ProjectorStats) -> None:
        self.topic = topic
        self.stats = stats
        self.lock = asyncio.Lock()  # one batch commit or one rebalance step at a time
        self.assigned_once = asyncio.Event()
        # Set while a revocation waits for the lock: a batch stuck in backoff gives up.
        self.revoking = asyncio.Event()
        self._held: dict[int, PartitionStats] = {}
        self._pending: set[TopicPartition] = set()  # assigned, offsets not read yet (paused)
        self._consumer: AIOKafkaConsumer | None = None
        self._store: PgStore | None = None

    def attach(self, consumer: AIOKafkaConsumer, store: PgStore) -> None:
        """Give the consumer to seek and the store to read offsets from."""
        self._consumer, self._store = consumer, store

    # --- what is held -----------------------------------------------------------------------------

    def expected(self) -> dict[int, int | None]:
        """Return held partition -> its stored next offset (None: no row yet)."""
        return {p: state.next_offset for p, state in self._held.items()}

    def holds(self, partitions: Iterable[int]) -> bool:
        """Return True if every one of these partitions is held."""
        return all(p in self._held for p in partitions)

    def advance(self, moves: Iterable[OffsetMove]) -> None:
        """Record offsets just committed."""
        for move in moves:
            state = self._held.get(move.partition)
            if state is not None:
                state.next_offset = move.next_offset

    def observe_highwater(self) -> None:
        """Copy the broker's high watermarks into the stats (for lag)."""
        if self._consumer is None:
            return
        for partition, state in self._held.items():
            high = self._consumer.highwater(TopicPartition(self.topic, partition))
            if high is not None:
                state.highwater = high

    @property
    def has_pending(self) -> bool:
        """Return True while some assigned partitions wait for their offsets."""
        return bool(self._pending)

    # --- rebalance callbacks (aiokafka awaits them; the consumer waits meanwhile) -----------------

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """Stop holding the revoked partitions, after the batch being committed (if any)."""
        self.revoking.set()
        try:
            async with self.lock:
                for tp in revoked:
                    if tp.topic == self.topic:
                        self._held.pop(tp.partition, None)
                        self.stats.partitions.pop(tp.partition, None)
                    self._pending.discard(tp)
        finally:
            self.revoking.clear()
        log.info("partitions_revoked", partitions=sorted(tp.partition for tp in revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        """Hold the assigned partitions from their stored offsets."""
        self.stats.rebalances += 1
        mine = [tp for tp in assigned if tp.topic == self.topic]
        async with self.lock:
            await self.load_locked(mine)
        self.assigned_once.set()
        log.info("partitions_assigned", partitions=sorted(tp.partition for tp in mine))

    # --- seeking to stored offsets ----------------------------------------------------------------

    async def load_locked(self, tps: list[TopicPartition]) -> None:
        """Seek to the stored offsets (hold the lock); unreadable partitions wait, paused."""
        consumer, store = self._consumer, self._store
        if consumer is None or store is None or not tps:
            return
        try:
            stored = await store.load_offsets(self.topic, [tp.partition for tp in tps])
        except UnavailableError as exc:
            log.warning("offsets_unavailable", error=str(exc)[:300])
            for tp in tps:
                self._held.pop(tp.partition, None)
                self._pending.add(tp)
            with contextlib.suppress(IllegalStateError):
                consumer.pause(*tps)
            return
        for tp in tps:
            offset = stored[tp.partition]
            try:
                consumer.seek(tp, offset or 0)
            except IllegalStateError:
                self._held.pop(tp.partition, None)  # no longer assigned
                continue
            state = PartitionStats(next_offset=offset)
            self._held[tp.partition] = state
            self.stats.partitions[tp.partition] = state
            self._pending.discard(tp)
            with contextlib.suppress(IllegalStateError):
                consumer.resume(tp)
            log.debug("partition_seek", partition=tp.partition, offset=offset or 0)

    async def resync(self) -> None:
        """Seek every held partition back to its stored offset (fetched records were dropped)."""
        async with self.lock:
            await self.load_locked([TopicPartition(self.topic, p) for p in self._held])

    async def load_pending(self) -> None:
        """Retry reading the offsets of partitions that wait for them."""
        async with self.lock:
            if self._consumer is None:
                return
            assigned = self._consumer.assignment()
            await self.load_locked([tp for tp in self._pending if tp in assigned])
            self._pending &= assigned
