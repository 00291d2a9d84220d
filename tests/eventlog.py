"""Test support: read a topic's whole log back, decoded, to prove what was emitted."""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition

from ingest.codec import decode_record
from ingest.events import Event


@dataclass(frozen=True)
class LoggedRecord:
    """One Kafka record of the events topic, decoded."""

    partition: int
    offset: int
    key: bytes
    events: list[Event]


async def read_records(
    bootstrap: str, topic: str, *, timeout_ms: int = 10_000
) -> list[LoggedRecord]:
    """Return every record from offset 0 to the end offsets taken when called."""
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
        out: list[LoggedRecord] = []
        remaining = {tp for tp in parts if ends[tp] > 0}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=timeout_ms)
            assert batch, f"no records within {timeout_ms} ms while the log still had some"
            for tp, records in batch.items():
                for r in records:
                    if r.offset < ends[tp]:
                        out.append(
                            LoggedRecord(
                                tp.partition, r.offset, r.key or b"", decode_record(r.value or b"")
                            )
                        )
                if records[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
        return sorted(out, key=lambda r: (r.partition, r.offset))
    finally:
        await consumer.stop()


async def read_events(bootstrap: str, topic: str) -> list[Event]:
    """Return every event of the topic (partition by partition, in log order)."""
    return [e for record in await read_records(bootstrap, topic) for e in record.events]
