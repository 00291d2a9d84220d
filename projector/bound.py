"""A replay's bound: per partition, the offset the projector never folds a record at or past.

A rebuild follows the live schema's offsets and must stop exactly on them (``Projector.hold_at``).
Fetched records at or past the bound are dropped, and their partition is sought back to it and
paused until the bound moves on (or is lifted), so the next fetch starts where folding stopped.
"""

from __future__ import annotations

import contextlib
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import IllegalStateError

__all__ = ["FoldBound"]


class FoldBound:
    """The bound of one projector's topic (``limits``: partition -> offset; None: no bound)."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.limits: dict[int, int] | None = None
        self._held_back: dict[int, int] = {}  # partition -> the bound it was paused at

    def release(self, consumer: AIOKafkaConsumer) -> None:
        """Resume the partitions paused at a bound that has since moved on (or been lifted)."""
        for partition, bound in list(self._held_back.items()):
            if self.limits is None or self.limits.get(partition, 0) > bound:
                del self._held_back[partition]
                with contextlib.suppress(IllegalStateError):
                    consumer.resume(TopicPartition(self.topic, partition))

    def cut(
        self,
        consumer: AIOKafkaConsumer,
        fetched: dict[TopicPartition, list[Any]],
        expected: dict[int, int | None],
    ) -> dict[TopicPartition, list[Any]]:
        """Cut fetched records at the bound; pause the cut partitions there until it moves."""
        limits = self.limits
        if limits is None:
            return fetched
        kept: dict[TopicPartition, list[Any]] = {}
        for tp, records in fetched.items():
            bound = limits.get(tp.partition, 0)
            below = [r for r in records if r.offset < bound]
            if len(below) < len(records):
                # The next fetch starts at the bound (or past what is folded), once it moves.
                resume_at = max(bound, expected.get(tp.partition) or 0)
                with contextlib.suppress(IllegalStateError):
                    consumer.seek(tp, resume_at)
                    consumer.pause(tp)
                self._held_back[tp.partition] = bound
            if below:
                kept[tp] = below
        return kept
