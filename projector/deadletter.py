"""Send records the projector cannot fold to the dead-letter topic, raw, with their origin."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from types import TracebackType

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError

from projector.errors import UnavailableError

__all__ = ["DeadLetter", "DeadLetterProducer"]

log = structlog.get_logger(__name__)

HEADER_TOPIC = "original_topic"
HEADER_PARTITION = "original_partition"
HEADER_OFFSET = "original_offset"
HEADER_ERROR = "error"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One poison record and why it was refused."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    error: str

    def headers(self, error: str | None = None) -> list[tuple[str, bytes]]:
        """Return the Kafka headers that say where the record came from and what was wrong."""
        return [
            (HEADER_TOPIC, self.topic.encode()),
            (HEADER_PARTITION, str(self.partition).encode()),
            (HEADER_OFFSET, str(self.offset).encode()),
            (HEADER_ERROR, (error or self.error)[:4000].encode()),
        ]


class DeadLetterProducer:
    """An idempotent acks=all producer to the dead-letter topic; ``send`` returns once acked."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        max_request_size: int = 16 * 1024 * 1024,
        timeout_s: float = 30.0,
    ) -> None:
        self.topic = topic
        self._timeout_s = timeout_s
        self._bootstrap = bootstrap
        self._max_request_size = max_request_size
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        """Connect; safe to call twice."""
        if self._producer is not None:
            return
        producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            acks="all",
            enable_idempotence=True,
            max_request_size=self._max_request_size,
            request_timeout_ms=int(self._timeout_s * 1000),
        )
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        self._producer = producer

    async def stop(self) -> None:
        """Flush and disconnect; safe to call twice."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def __aenter__(self) -> DeadLetterProducer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def send(self, letters: list[DeadLetter]) -> None:
        """Append the records to the dead-letter topic and wait until the broker acked all."""
        producer = self._producer
        if producer is None:
            raise UnavailableError("the dead-letter producer is not running")
        try:
            async with asyncio.timeout(self._timeout_s):
                for letter in letters:
                    await self._send_one(producer, letter)
        except (KafkaError, TimeoutError, OSError) as exc:
            raise UnavailableError(f"dead-letter topic did not ack: {exc!r}") from exc

    async def _send_one(self, producer: AIOKafkaProducer, letter: DeadLetter) -> None:
        try:
            await producer.send_and_wait(
                self.topic, letter.value, key=letter.key, headers=letter.headers()
            )
        except MessageSizeTooLargeError:
            # Keep where it came from and why, without the value the topic cannot hold.
            error = f"{letter.error} (value of {len(letter.value or b'')} bytes left out)"
            await producer.send_and_wait(
                self.topic, b"", key=letter.key, headers=letter.headers(error)
            )
        log.warning(
            "record_dead_lettered",
            partition=letter.partition,
            offset=letter.offset,
            error=letter.error[:300],
        )
