"""Errors the projector raises on purpose; each says whether a retry can help."""

from __future__ import annotations

from ingest.errors import RunstreamError, UnavailableError

__all__ = ["FencedError", "StoreRejectedError", "StoreUnavailableError", "UnavailableError"]


class FencedError(RunstreamError):
    """A partition's stored offset is not where this batch started: another consumer moved it.

    The batch was rolled back. Not retriable as is: drop the batch, re-read the stored offsets
    and seek there (the partition may now belong to another member of the group).
    """

    def __init__(self, topic: str, partitions: list[int]) -> None:
        super().__init__(f"offsets of {topic} partitions {partitions} moved under this batch")
        self.topic = topic
        self.partitions = partitions


class StoreUnavailableError(UnavailableError):
    """PostgreSQL cannot take the batch now (connection lost, deadlock, shutdown); retry it."""


class StoreRejectedError(RunstreamError):
    """PostgreSQL refuses the batch's data itself (a value out of range, too long to index).

    Not retriable as is: the consumer applies the batch record by record and dead-letters the
    records that are refused alone.
    """
