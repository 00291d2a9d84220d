"""The local stack: Apache Kafka and PostgreSQL started as plain processes, no Docker."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from deploy.local.kafka import KafkaNode, resolve_jars
from deploy.local.postgres import PostgresCluster


@dataclass(frozen=True, kw_only=True)
class LocalStack:
    """Which local dependencies to run, and where their state lives."""

    state_dir: Path
    cache_dir: Path
    kafka_version: str
    kafka_port: int
    kafka_controller_port: int
    kafka_heap: str
    postgres_port: int
    with_kafka: bool = True
    with_postgres: bool = True

    def kafka(self, *, resolve: bool = False) -> KafkaNode:
        """Return the Kafka node; resolve its jars (a Maven download on first use) to start it."""
        return KafkaNode(
            home=self.state_dir / "kafka",
            port=self.kafka_port,
            controller_port=self.kafka_controller_port,
            heap=self.kafka_heap,
            libs=resolve_jars(self.kafka_version, self.cache_dir) if resolve else None,
        )

    def postgres(self) -> PostgresCluster:
        """Return the PostgreSQL cluster."""
        return PostgresCluster(home=self.state_dir, port=self.postgres_port)

    def up(self) -> dict[str, str]:
        """Start what is not running; return each part's state ('started' or 'running')."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        states: dict[str, str] = {}
        if self.with_postgres:
            states["postgres"] = "started" if self.postgres().start() else "running"
        if self.with_kafka:
            states["kafka"] = "started" if self.kafka(resolve=True).start() else "running"
        return states

    def down(self) -> dict[str, str]:
        """Stop what runs; return each part's state ('stopped' or 'not running')."""
        states: dict[str, str] = {}
        if self.with_kafka:
            states["kafka"] = "stopped" if self.kafka().stop() else "not running"
        if self.with_postgres:
            states["postgres"] = "stopped" if self.postgres().stop() else "not running"
        return states

    def status(self) -> dict[str, bool]:
        """Return whether each local part is running."""
        states: dict[str, bool] = {}
        if self.with_kafka:
            states["kafka"] = self.kafka().running()
        if self.with_postgres:
            states["postgres"] = self.postgres().running()
        return states
