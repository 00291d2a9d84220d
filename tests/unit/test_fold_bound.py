"""A replay's bound: records at or past it are not folded, and their partition waits there."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition

from projector.bound import FoldBound

TOPIC = "t"


@dataclass
class Record:
    offset: int


@dataclass
class Consumer:
    calls: list[tuple[str, int, int | None]] = field(default_factory=list)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.calls.append(("seek", tp.partition, offset))

    def pause(self, tp: TopicPartition) -> None:
        self.calls.append(("pause", tp.partition, None))

    def resume(self, tp: TopicPartition) -> None:
        self.calls.append(("resume", tp.partition, None))


def fetched(**offsets: list[int]) -> dict[TopicPartition, list[Any]]:
    return {TopicPartition(TOPIC, int(p[1:])): [Record(o) for o in os] for p, os in offsets.items()}


def offsets(cut: dict[TopicPartition, list[Any]]) -> dict[int, list[int]]:
    return {tp.partition: [r.offset for r in records] for tp, records in cut.items()}


def test_without_a_bound_every_record_is_folded() -> None:
    consumer, bound = Consumer(), FoldBound(TOPIC)
    batch = fetched(p0=[5, 6], p1=[0])
    assert bound.cut(consumer, batch, {0: 5, 1: 0}) is batch
    assert consumer.calls == []


def test_records_at_or_past_the_bound_wait_there_until_it_moves() -> None:
    consumer, bound = Consumer(), FoldBound(TOPIC)
    bound.limits = {0: 7, 2: 3}  # partition 1 has no bound entry: 0, nothing of it is folded
    batch = fetched(p0=[5, 6, 7, 8], p1=[0, 1], p2=[1, 2])
    cut = bound.cut(consumer, batch, {0: 5, 1: 0, 2: 1})
    assert offsets(cut) == {0: [5, 6], 2: [1, 2]}
    assert consumer.calls == [
        ("seek", 0, 7),
        ("pause", 0, None),
        ("seek", 1, 0),
        ("pause", 1, None),
    ]

    consumer.calls.clear()
    bound.release(consumer)
    assert consumer.calls == []  # the bound has not moved
    bound.limits = {0: 10, 1: 0}
    bound.release(consumer)
    assert consumer.calls == [("resume", 0, None)]
    bound.limits = None  # lifted: every partition goes on
    bound.release(consumer)
    assert consumer.calls == [("resume", 0, None), ("resume", 1, None)]


def test_a_partition_folded_past_the_bound_resumes_where_folding_stopped() -> None:
    consumer, bound = Consumer(), FoldBound(TOPIC)
    bound.limits = {0: 3}
    assert offsets(bound.cut(consumer, fetched(p0=[9]), {0: 9})) == {}
    assert consumer.calls == [("seek", 0, 9), ("pause", 0, None)]
