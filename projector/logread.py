"""Read positions and ranges of the event log without joining a group.

``end_offsets`` and ``offsets_at`` tell how far to fold (the log now, or as of a moment);
``fold_range`` folds every record below given offsets into the in-memory reference store, the
oracle ``runstream verify`` compares PostgreSQL with.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from ingest.events import Event
from projector.batch import decode
from projector.errors import UnavailableError
from projector.memory import MemoryStore

__all__ = ["end_offsets", "fold_range", "offsets_at", "start_offsets"]

_FOLD_CHUNK = 20_000  # events folded at a time: bounds the fold's working set, not the result


@asynccontextmanager
async def _reader(
    bootstrap: str, topic: str, timeout_s: float
) -> AsyncIterator[tuple[AIOKafkaConsumer, list[TopicPartition]]]:
    # Subscribed without a group: every partition is assigned as soon as the metadata is in.
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=int(timeout_s * 1000),
        fetch_max_bytes=32 * 1024 * 1024,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    try:
        async with asyncio.timeout(timeout_s):
            await consumer.start()
            await consumer.topics()  # loads the cluster's metadata, this topic's included
            numbers = consumer.partitions_for_topic(topic)
        if not numbers:
            raise UnavailableError(f"topic {topic} does not exist on {bootstrap}")
        yield consumer, [TopicPartition(topic, p) for p in sorted(numbers)]
    except (KafkaError, TimeoutError, OSError) as exc:
        raise UnavailableError(f"cannot read {topic} on {bootstrap}: {exc!r}") from exc
    finally:
        await consumer.stop()


async def end_offsets(bootstrap: str, topic: str, *, timeout_s: float = 10.0) -> dict[int, int]:
    """Return every partition's end offset now."""
    async with _reader(bootstrap, topic, timeout_s) as (consumer, parts):
        ends = await consumer.end_offsets(parts)
    return {tp.partition: offset for tp, offset in ends.items()}


async def start_offsets(bootstrap: str, topic: str, *, timeout_s: float = 10.0) -> dict[int, int]:
    """Return every partition's first offset still in the log (0 unless records were deleted)."""
    async with _reader(bootstrap, topic, timeout_s) as (consumer, parts):
        starts = await consumer.beginning_offsets(parts)
    return {tp.partition: offset for tp, offset in starts.items()}


async def offsets_at(
    bootstrap: str, topic: str, moment_ms: int, *, timeout_s: float = 10.0
) -> dict[int, int]:
    """Return, per partition, the offset after the last record appended at or before the moment."""
    async with _reader(bootstrap, topic, timeout_s) as (consumer, parts):
        # The first record stamped after the moment; none: every record so far is at or before.
        found = await consumer.offsets_for_times(dict.fromkeys(parts, moment_ms + 1))
        ends = await consumer.end_offsets(parts)
    return {
        tp.partition: (hit.offset if hit is not None else ends[tp]) for tp, hit in found.items()
    }


async def fold_range(
    bootstrap: str,
    topic: str,
    offsets: Mapping[int, int],
    *,
    max_record_bytes: int,
    on_progress: Callable[[int, int], Any] | None = None,
    timeout_s: float = 30.0,
) -> MemoryStore:
    """Fold every record below ``offsets`` (partition -> next offset) into a ``MemoryStore``.

    Records the projector dead-letters are skipped as it skips them. Partitions are read one
    after the other: the fold does not depend on the order across runs, only within one.
    """
    store = MemoryStore()
    total = sum(offsets.values())
    done = 0
    async with _reader(bootstrap, topic, timeout_s) as (consumer, parts):
        wanted = [tp for tp in parts if offsets.get(tp.partition, 0) > 0]
        starts = await consumer.beginning_offsets(wanted) if wanted else {}
        cut = {tp.partition: start for tp, start in starts.items() if start > 0}
        if cut:
            raise UnavailableError(
                f"{topic} no longer starts at offset 0 (partition: first offset {cut}): records "
                "were deleted, so the log cannot be folded from the start; the topic needs "
                "infinite retention"
            )
        for tp in wanted:
            end = offsets[tp.partition]
            consumer.seek(tp, 0)
            others = [o for o in parts if o != tp]
            if others:
                consumer.pause(*others)
            consumer.resume(tp)
            pending: list[Event] = []
            position = 0
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout_s
            while position < end:
                fetched = await consumer.getmany(tp, timeout_ms=1000, max_records=5000)
                if not fetched.get(tp):
                    if loop.time() > deadline:
                        raise UnavailableError(
                            f"{topic}[{tp.partition}] gave nothing past offset {position} "
                            f"within {timeout_s} s; expected records up to {end}"
                        )
                    continue
                deadline = loop.time() + timeout_s
                for record in fetched[tp]:
                    if record.offset >= end:
                        position = end
                        break
                    position = record.offset + 1
                    events, _ = decode(record, max_record_bytes)
                    if events is not None:
                        pending.extend(events)
                    done += 1
                if len(pending) >= _FOLD_CHUNK or position >= end:
                    store.fold_log(pending)
                    pending = []
                if on_progress is not None:
                    on_progress(done, total)
    return store
