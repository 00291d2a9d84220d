"""The Kafka producer: a write is acknowledged only once every event of it is in the log."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError

from ingest.codec import encode_record
from ingest.errors import MlflowError, UnavailableError
from ingest.events import Event, partition_key
from ingest.topics import MAX_RECORD_BYTES

log = structlog.get_logger(__name__)


def group_by_key(events: Sequence[Event]) -> dict[str, list[Event]]:
    """Split events into per-partition-key lists, each keeping the events' order."""
    groups: dict[str, list[Event]] = {}
    for event in events:
        groups.setdefault(partition_key(event), []).append(event)
    return groups


class EventProducer:
    """Emit events to the topic with acks=all and idempotence; one record per run per call."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        linger_ms: int = 0,
        max_batch_size: int = 1024 * 1024,
        compression: str | None = "lz4",
        delivery_timeout_s: float = 15.0,
    ) -> None:
        self.topic = topic
        self._delivery_timeout_s = delivery_timeout_s
        self._config: dict[str, Any] = {
            "bootstrap_servers": bootstrap,
            "acks": "all",
            "enable_idempotence": True,
            "linger_ms": linger_ms,
            "max_batch_size": max_batch_size,
            "max_request_size": MAX_RECORD_BYTES,
            "compression_type": compression,
            "request_timeout_ms": int(delivery_timeout_s * 1000),
        }
        self._producer: AIOKafkaProducer | None = None
        self._stopped = False

    async def start(self, timeout_s: float = 30.0) -> None:
        """Connect to the broker; raise UnavailableError if it does not answer in time."""
        if self._producer is not None:
            return
        producer = AIOKafkaProducer(**self._config)
        try:
            async with asyncio.timeout(timeout_s):
                await producer.start()
        except (KafkaError, TimeoutError, OSError) as exc:
            await producer.stop()
            raise UnavailableError(f"Kafka is unavailable: {exc!r}") from exc
        self._producer = producer
        log.info("producer_started", topic=self.topic)

    async def stop(self) -> None:
        """Flush what is in flight and disconnect; safe to call twice."""
        producer, self._producer = self._producer, None
        if producer is not None and not self._stopped:
            self._stopped = True
            await producer.stop()
            log.info("producer_stopped", topic=self.topic)

    async def __aenter__(self) -> EventProducer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def emit(self, events: Sequence[Event]) -> None:
        """Append the events (grouped into one record per run) and wait for the broker's acks.

        Raises UnavailableError when Kafka cannot acknowledge them in time; the caller then
        answers 503 and the client retries (every event is idempotent where it lands).
        """
        if not events:
            return
        producer = self._producer
        if producer is None:
            raise UnavailableError("the producer is not running")
        try:
            async with asyncio.timeout(self._delivery_timeout_s):
                futures = [
                    await producer.send(self.topic, encode_record(group), key=key.encode())
                    for key, group in group_by_key(events).items()
                ]
                await asyncio.gather(*futures)
        except MessageSizeTooLargeError as exc:
            # Retrying cannot help: the request itself is too big for one record.
            raise MlflowError(
                "INVALID_PARAMETER_VALUE",
                f"The request is too large for the event log (limit {MAX_RECORD_BYTES} bytes).",
            ) from exc
        except (KafkaError, TimeoutError, OSError) as exc:
            log.warning("emit_failed", error=repr(exc), events=len(events))
            raise UnavailableError(f"Kafka did not acknowledge the write: {exc!r}") from exc
