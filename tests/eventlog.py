"""Test support: write generated logs to a topic, and read a topic's whole log back."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from ingest.codec import decode_record, encode_record
from ingest.events import Event
from projector.synthetic import Record


@dataclass(frozen=True)
class LoggedRecord:
    """One Kafka record of the events topic, decoded."""

    partition: int
    offset: int
    key: bytes
    events: list[Event]


async def produce_log(bootstrap: str, topic: str, log: Iterable[Record]) -> None:
    """Append generated records (acks=all, idempotent) and wait until all are acknowledged."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5
    )
    await producer.start()
    try:
        sent = [
            await producer.send(topic, encode_record(list(r.events)), key=r.key.encode())
            for r in log
        ]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def end_offsets(bootstrap: str, topic: str, partitions: Iterable[int]) -> dict[int, int]:
    """Return the end offset of each non-empty partition among `partitions`."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        return {tp.partition: o for tp, o in ends.items() if o > 0}
    finally:
        await consumer.stop()


async def read_raw(
    bootstrap: str, topic: str, *, timeout_ms: int = 10_000
) -> list[tuple[int, int, bytes, bytes]]:
    """Return (partition, offset, key, value) of every record up to the end offsets taken now."""
    # Without a group, a subscribing consumer is assigned every partition once metadata is in.
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        assert parts, f"topic {topic} has no partitions"
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        out: list[tuple[int, int, bytes, bytes]] = []
        remaining = {tp for tp in parts if ends[tp] > 0}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=timeout_ms)
            assert batch, f"no records within {timeout_ms} ms while the log still had some"
            for tp, records in batch.items():
                out += [
                    (tp.partition, r.offset, r.key or b"", r.value or b"")
                    for r in records
                    if r.offset < ends[tp]
                ]
                if records[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
        return sorted(out, key=lambda r: (r[0], r[1]))
    finally:
        await consumer.stop()


async def read_records(bootstrap: str, topic: str) -> list[LoggedRecord]:
    """Return every record from offset 0 to the end offsets taken when called, decoded."""
    return [
        LoggedRecord(partition, offset, key, decode_record(value))
        for partition, offset, key, value in await read_raw(bootstrap, topic)
    ]


async def read_events(bootstrap: str, topic: str) -> list[Event]:
    """Return every event of the topic (partition by partition, in log order)."""
    return [e for record in await read_records(bootstrap, topic) for e in record.events]
