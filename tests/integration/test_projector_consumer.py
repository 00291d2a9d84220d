"""The projector on the real broker and database: burst catch-up equals the in-memory reference,
redelivery and rewinds change nothing, a group shares the work, poison goes to the dead-letter
topic, a zombie's batch is fenced, and stopping is graceful."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import asyncpg
import msgspec
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from ingest.codec import encode_record
from ingest.events import MetricLogged
from projector.consumer import Projector
from projector.errors import StoreUnavailableError
from projector.memory import MemoryStore
from projector.ops import OffsetMove, Ops
from projector.service import run_projector
from projector.snapshot import Snapshot, read_snapshot, state_hash
from projector.stats import render_prometheus
from projector.store import PgStore
from projector.synthetic import Record, metric_log, mixed_log
from services.config import Settings

pytestmark = pytest.mark.integration

Raw = tuple[bytes, bytes | None]  # (key, value) as produced


def encoded(log: Sequence[Record]) -> list[Raw]:
    return [(r.key.encode(), encode_record(list(r.events))) for r in log]


def reference(log: Sequence[Record]) -> Snapshot:
    """The in-memory reference fold of the whole log, in production order."""
    return MemoryStore().fold_log([e for r in log for e in r.events]).snapshot_now()


async def produce(bootstrap: str, topic: str, records: Sequence[Raw]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_request_size=4 * 1024 * 1024,
    )
    await producer.start()
    try:
        sent = [await producer.send(topic, value, key=key) for key, value in records]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(6)]
        ends = await consumer.end_offsets(tps)
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()


async def read_dead_letters(bootstrap: str, topic: str) -> list[Any]:
    tp = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        consumer.seek(tp, 0)
        out: list[Any] = []
        while len(out) < end:
            batch = await consumer.getmany(tp, timeout_ms=10_000)
            assert batch, "the dead-letter topic stopped short of its end offset"
            out += batch[tp]
        return out
    finally:
        await consumer.stop()


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 30.0) -> None:
    """Wait until ``check()`` holds, polling; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


@pytest.fixture
async def schema(schema_factory: Any) -> str:
    return str(await schema_factory("projector"))


@pytest.fixture
async def db(stack: Settings) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(stack.database_url)
    yield conn
    await conn.close()


def projector(
    stack: Settings, topic: str, schema: str, group: str | None = None, **options: Any
) -> Projector:
    return Projector(
        bootstrap=stack.kafka_bootstrap,
        topic=topic,
        group_id=group or f"g.{topic}",
        dead_letter_topic=f"{topic}.dead-letter",
        dsn=stack.database_url,
        schema=schema,
        **options,
    )


async def stored_offsets(db: asyncpg.Connection, schema: str, topic: str) -> dict[int, int]:
    rows = await db.fetch(
        f'SELECT partition, next_offset FROM "{schema}".projector_offsets WHERE topic = $1', topic
    )
    return {r["partition"]: r["next_offset"] for r in rows}


async def burst(stack: Settings, topic: str, schema: str, **options: Any) -> Projector:
    async with projector(stack, topic, schema, **options) as p:
        await asyncio.wait_for(p.run(burst=True), 120)
    return p


def at_end(ends: dict[int, int]) -> dict[int, int]:
    return {p: o for p, o in ends.items() if o > 0}


@pytest.mark.parametrize("seed", [0, 1, 2])
async def test_burst_equals_the_reference(
    stack: Settings, topic: str, schema: str, db: asyncpg.Connection, seed: int
) -> None:
    log = mixed_log(seed, runs=25) + metric_log(
        seed, runs=3, records_per_run=4, events_per_record=250
    )
    await produce(stack.kafka_bootstrap, topic, encoded(log))
    p = await burst(stack, topic, schema, max_records=50 if seed == 1 else 2000)
    assert await read_snapshot(db, schema) == reference(log)
    ends = await end_offsets(stack.kafka_bootstrap, topic)
    assert await stored_offsets(db, schema, topic) == at_end(ends)
    assert p.stats.events == sum(len(r.events) for r in log)
    assert p.stats.records == len(log)
    assert set(p.stats.lag().values()) <= {0}
    text = render_prometheus(p.stats)
    assert f'runstream_projector_events_total{{topic="{topic}"}} {p.stats.events}' in text
    assert "runstream_projector_lag{" in text


async def test_redelivery_and_rewound_offsets_change_nothing(
    stack: Settings, topic: str, schema: str, db: asyncpg.Connection
) -> None:
    log = mixed_log(11, runs=30, duplicate_share=0.0)
    await produce(stack.kafka_bootstrap, topic, encoded(log))
    await burst(stack, topic, schema)
    single = await read_snapshot(db, schema)
    assert single == reference(log)
    # Re-produce a third of the records under the same event ids, then rewind stored offsets.
    again = log[::3]
    await produce(stack.kafka_bootstrap, topic, encoded(again))
    await db.execute(f'UPDATE "{schema}".projector_offsets SET next_offset = next_offset / 2')
    p = await burst(stack, topic, schema, group=f"g2.{topic}")
    assert p.stats.events > sum(len(r.events) for r in again)  # the rewound range was re-read
    assert state_hash(await read_snapshot(db, schema)) == state_hash(single)
    assert await stored_offsets(db, schema, topic) == at_end(
        await end_offsets(stack.kafka_bootstrap, topic)
    )


async def test_two_consumers_in_one_group(
    stack: Settings, topic: str, schema: str, db: asyncpg.Connection
) -> None:
    log = mixed_log(5, runs=40) + metric_log(5, runs=6, records_per_run=20, events_per_record=50)
    await produce(stack.kafka_bootstrap, topic, encoded(log))
    group = f"shared.{topic}"
    # Small batches so the second member joins while there is still work to share.
    first = projector(stack, topic, schema, group, max_records=5, client_id="first")
    second = projector(stack, topic, schema, group, max_records=5, client_id="second")
    async with first, second:
        await asyncio.wait_for(asyncio.gather(first.run(burst=True), second.run(burst=True)), 120)
    assert await read_snapshot(db, schema) == reference(log)
    # Every record was committed exactly once across the group, and both did some of it.
    assert first.stats.events > 0
    assert second.stats.events > 0
    assert first.stats.events + second.stats.events == sum(len(r.events) for r in log)
    assert await stored_offsets(db, schema, topic) == at_end(
        await end_offsets(stack.kafka_bootstrap, topic)
    )


async def test_poison_records_go_to_the_dead_letter_topic(
    stack: Settings, topic: str, schema: str, db: asyncpg.Connection
) -> None:
    good = mixed_log(3, runs=10)
    unknown_type = b"\x01" + msgspec.msgpack.encode(
        [{"type": "run_teleported", "event_id": "x", "at": 1, "run_id": "r"}]
    )
    oversized = metric_log(4, runs=1, records_per_run=1, events_per_record=400)
    nul = MetricLogged(event_id="n", at=1, run_id="bad\x00run", key="m", value=1.0, timestamp=1)
    poison: list[tuple[Raw, str]] = [
        ((b"r-garbage", b"\x01\xff\xfe\x00garbage"), "malformed v1 record"),
        ((b"r-version", b"\x07\x90"), "unknown record format version"),
        ((b"r-empty", b""), "empty record value"),
        ((b"r-tomb", None), "record has no value"),
        ((b"r-unknown", unknown_type), "malformed v1 record"),
        ((b"r-nul", encode_record([nul])), "NUL"),
        ((oversized[1].key.encode(), encode_record(list(oversized[1].events))), "exceeds 16384"),
    ]
    expected_errors = {key: error for (key, _), error in poison}
    mixed: list[Raw] = []
    for i, raw in enumerate(encoded(good)):
        mixed.append(raw)
        if i % 9 == 4 and poison:
            mixed.append(poison.pop(0)[0])
    mixed += [raw for raw, _ in poison]
    await produce(stack.kafka_bootstrap, topic, mixed)
    p = await burst(stack, topic, schema, max_record_bytes=16384, max_records=7)
    assert await read_snapshot(db, schema) == reference(good)
    assert await stored_offsets(db, schema, topic) == at_end(
        await end_offsets(stack.kafka_bootstrap, topic)
    )
    letters = await read_dead_letters(stack.kafka_bootstrap, f"{topic}.dead-letter")
    assert p.stats.dead_letters == len(letters) == 7
    sent = dict(mixed)
    for letter in letters:
        headers = dict(letter.headers)
        assert headers["original_topic"] == topic.encode()
        assert expected_errors[letter.key] in headers["error"].decode()
        assert letter.value == sent[letter.key]  # raw bytes (None for the tombstone)
        # The headers point at the original record.
        tp = TopicPartition(topic, int(headers["original_partition"]))
        original = await _record_at(stack.kafka_bootstrap, tp, int(headers["original_offset"]))
        assert original.key == letter.key


async def _record_at(bootstrap: str, tp: TopicPartition, offset: int) -> Any:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        consumer.assign([tp])
        consumer.seek(tp, offset)
        batch = await consumer.getmany(tp, timeout_ms=10_000, max_records=1)
        return batch[tp][0]
    finally:
        await consumer.stop()


async def test_a_zombie_batch_is_fenced_and_rolled_back(
    stack: Settings, topic: str, schema: str, db: asyncpg.Connection
) -> None:
    log = mixed_log(8, runs=15) + metric_log(8, runs=2, records_per_run=5, events_per_record=100)
    await produce(stack.kafka_bootstrap, topic, encoded(log))
    p = projector(stack, topic, schema, max_records=20)
    other = await PgStore.open(stack.database_url, schema)
    fenced_moves: list[OffsetMove] = []
    async with p, other:
        store = p._running_store()
        real_apply = store.apply

        async def apply_after_the_new_owner(ops: Ops, offsets: Any = ()) -> None:
            moves = list(offsets)
            if not fenced_moves and moves and ops.metrics:
                # Another member took these partitions over and committed the same records
                # first: this consumer is now a zombie holding a stale batch.
                fenced_moves.extend(moves)
                await other.apply(ops, moves)
            await real_apply(ops, moves)

        store.apply = apply_after_the_new_owner  # type: ignore[method-assign]
        await asyncio.wait_for(p.run(burst=True), 120)
    assert fenced_moves, "the zombie scenario never ran"
    assert p.stats.fenced == 1
    assert await read_snapshot(db, schema) == reference(log)  # nothing doubled or lost
    assert await stored_offsets(db, schema, topic) == at_end(
        await end_offsets(stack.kafka_bootstrap, topic)
    )


async def test_an_abandoned_fold_loses_nothing(
    stack: Settings, topic: str, schema: str, db: asyncpg.Connection
) -> None:
    """A fold given up mid-way (a revocation arrives while the database is retried) drops its
    fetched records; the consumer must seek back to them, not skip past them."""
    log = mixed_log(13, runs=20)
    await produce(stack.kafka_bootstrap, topic, encoded(log))
    p = projector(stack, topic, schema, max_records=5, retry_backoff_s=(0.01, 0.01))
    abandoned = 0
    async with p:
        store = p._running_store()
        real_applied_ids = store.applied_ids

        async def flaky_applied_ids(event_ids: Any) -> set[str]:
            nonlocal abandoned
            if abandoned < 3 and p.stats.batches >= 2 * abandoned + 1:
                abandoned += 1
                p._held.revoking.set()  # as if a revocation waited for the lock
                asyncio.get_running_loop().call_soon(p._held.revoking.clear)
                raise StoreUnavailableError("simulated outage")
            return await real_applied_ids(event_ids)

        store.applied_ids = flaky_applied_ids  # type: ignore[method-assign]
        await asyncio.wait_for(p.run(burst=True), 120)
    assert abandoned == 3
    assert await read_snapshot(db, schema) == reference(log)
    assert p.stats.events == sum(len(r.events) for r in log)


async def test_graceful_stop_and_idempotent_lifecycle(
    stack: Settings, topic: str, schema: str, db: asyncpg.Connection
) -> None:
    log = mixed_log(21, runs=10)
    p = projector(stack, topic, schema)
    await p.stop()  # stopping what never started is fine
    p = projector(stack, topic, schema)
    await p.start()
    await p.start()
    runner = asyncio.create_task(p.run())
    await produce(stack.kafka_bootstrap, topic, encoded(log))
    total = sum(len(r.events) for r in log)

    async def caught_up() -> bool:
        return p.stats.events == total

    await eventually(caught_up)
    started = time.monotonic()
    await p.stop(timeout_s=10)
    await p.stop()
    assert time.monotonic() - started < 10
    await asyncio.wait_for(runner, 5)
    assert await read_snapshot(db, schema) == reference(log)
    with pytest.raises(RuntimeError):
        await p.start()


async def test_run_projector_until_stopped(
    stack: Settings, topic: str, schema: str, db: asyncpg.Connection
) -> None:
    log = mixed_log(31, runs=8)
    await produce(stack.kafka_bootstrap, topic, encoded(log))
    stop = asyncio.Event()
    running: list[Projector] = []
    task = asyncio.create_task(
        run_projector(
            bootstrap=stack.kafka_bootstrap,
            topic=topic,
            group_id=f"g.{topic}",
            dead_letter_topic=f"{topic}.dead-letter",
            dsn=stack.database_url,
            schema=schema,
            stop=stop,
            shutdown_s=10,
            on_started=running.append,
        )
    )
    total = sum(len(r.events) for r in log)

    async def caught_up() -> bool:
        return bool(running) and running[0].stats.events == total

    await eventually(caught_up)
    stop.set()
    stats = await asyncio.wait_for(task, 15)
    assert stats.events == total
    assert await read_snapshot(db, schema) == reference(log)
