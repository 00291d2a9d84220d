"""Create the event topic and its dead-letter twin, idempotently."""

from __future__ import annotations

import asyncio

import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from ingest.errors import UnavailableError

log = structlog.get_logger(__name__)

# The topic is the system of record (ARCHITECTURE.md decision 1): nothing may age out.
# A record holds one request's events: MLflow allows a dataset profile of 16 MiB in log-inputs
# and a log-batch of ~1.4 MB, both over Kafka's 1 MiB default.
MAX_RECORD_BYTES = 17 * 1024 * 1024
SYSTEM_OF_RECORD = {
    "retention.ms": "-1",
    "retention.bytes": "-1",
    "cleanup.policy": "delete",
    "max.message.bytes": str(MAX_RECORD_BYTES),
    # The broker stamps each record when it appends it: timestamps then rise with the offsets
    # of a partition, whatever the producers' clocks, so `replay --as-of` can cut the log there.
    "message.timestamp.type": "LogAppendTime",
}


async def ensure_topics(
    bootstrap: str, topic: str, partitions: int, dead_letter_topic: str, timeout_s: float = 60.0
) -> list[str]:
    """Create the events and dead-letter topics if missing; return the names created now."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    try:
        async with asyncio.timeout(timeout_s):
            await admin.start()
            existing = set(await admin.list_topics())
            wanted = [
                NewTopic(topic, partitions, 1, topic_configs=SYSTEM_OF_RECORD),
                NewTopic(dead_letter_topic, 1, 1, topic_configs=SYSTEM_OF_RECORD),
            ]
            missing = [t for t in wanted if t.name not in existing]
            present = [t.name for t in wanted if t.name in existing]
            if present:
                # Topics made by an older version get today's settings (idempotent).
                await admin.alter_configs(
                    [
                        ConfigResource(ConfigResourceType.TOPIC, name, SYSTEM_OF_RECORD)
                        for name in present
                    ]
                )
            for new in missing:
                try:
                    await admin.create_topics([new])
                except TopicAlreadyExistsError:
                    continue  # a concurrent `up` created it first
                log.info("topic_created", topic=new.name, partitions=new.num_partitions)
            return [t.name for t in missing]
    except (KafkaError, TimeoutError, OSError) as exc:
        raise UnavailableError(f"cannot create topics on {bootstrap}: {exc!r}") from exc
    finally:
        await admin.close()


async def delete_topics(bootstrap: str, topics: list[str]) -> None:
    """Delete topics (tests and benchmarks clean up their own)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()
        await admin.delete_topics(topics)
    finally:
        await admin.close()
