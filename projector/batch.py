"""Turn fetched Kafka records into a batch to fold: decoded, checked, grouped by partition.

No I/O here. Records below a partition's expected offset were folded already and are skipped;
records that cannot be decoded, are too large, or hold what the tables cannot store become
``DeadLetter``s (their offsets still move past them, once the dead letter is acked).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition

from ingest.codec import decode_record
from ingest.errors import DecodeError
from ingest.events import Event
from projector.deadletter import DeadLetter
from projector.ops import OffsetMove, Ops
from projector.validation import validate_events

__all__ = ["Batch", "PartBatch", "collect", "decode"]


@dataclass(slots=True)
class PartBatch:
    """The records of one partition in a batch, and their events (None: dead-lettered)."""

    tp: TopicPartition
    expected: int | None  # the stored next offset this batch starts from (None: no row yet)
    records: list[Any] = field(default_factory=list)
    events: list[list[Event] | None] = field(default_factory=list)

    @property
    def next_offset(self) -> int:
        """Return the offset after this part's last record."""
        return int(self.records[-1].offset) + 1


@dataclass(slots=True)
class Batch:
    """A fetched batch, folded, with the offset moves that commit it."""

    parts: list[PartBatch]
    letters: list[DeadLetter]
    ops: Ops
    moves: list[OffsetMove]

    @property
    def records(self) -> int:
        """Return how many records the batch covers."""
        return sum(len(p.records) for p in self.parts)


def decode(record: Any, max_record_bytes: int) -> tuple[list[Event] | None, str | None]:
    """Return a record's events, or None and why it must go to the dead-letter topic."""
    value: bytes | None = record.value
    if value is None:
        return None, "record has no value"
    if len(value) > max_record_bytes:
        return None, f"record of {len(value)} bytes exceeds {max_record_bytes}"
    try:
        events = decode_record(value)
    except DecodeError as exc:
        return None, str(exc)
    problem = validate_events(events)
    return (None, problem) if problem is not None else (events, None)


def collect(
    fetched: Mapping[TopicPartition, list[Any]],
    topic: str,
    expected: Mapping[int, int | None],
    max_record_bytes: int,
) -> tuple[list[PartBatch], list[DeadLetter]]:
    """Group the records of held partitions (``expected``: partition -> start) into parts."""
    parts: list[PartBatch] = []
    letters: list[DeadLetter] = []
    for tp, records in fetched.items():
        if tp.topic != topic or tp.partition not in expected:
            continue  # not held (any more): revoked while the records were in flight
        start = expected[tp.partition]
        part = PartBatch(tp, start)
        for record in records:
            if record.offset < (start or 0):
                continue  # already folded: redelivery changes nothing
            events, problem = decode(record, max_record_bytes)
            if problem is not None:
                letters.append(
                    DeadLetter(
                        topic, tp.partition, record.offset, record.key, record.value, problem
                    )
                )
            part.records.append(record)
            part.events.append(events)
        if part.records:
            parts.append(part)
    return parts, letters
