"""Settings from the environment: the only module that reads it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


class ConfigError(ValueError):
    """A configuration variable holds a value Runstream cannot use."""


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in {"1", "true", "yes", "on"}:
        return True
    if raw.lower() in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything a Runstream process needs to know about where things are."""

    state_dir: Path
    cache_dir: Path
    # Local stack (used when no external broker / database is configured).
    kafka_version: str
    kafka_port: int
    kafka_controller_port: int
    kafka_heap: str
    postgres_port: int
    # External services; None means "the local stack".
    external_kafka: str | None
    external_database: str | None
    topic: str
    partitions: int
    dead_letter_topic: str
    delivery_timeout_s: float
    linger_ms: int
    consumer_group: str
    registry_schema: str
    read_schema: str
    read_wait_s: float
    http_host: str
    http_port: int
    reuse_port: bool
    artifact_root: str
    truncate_long_values: bool
    log_level: str
    log_format: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from the environment (or a given mapping, for tests)."""
        env = os.environ if env is None else env
        state_dir = Path(env.get("RUNSTREAM_STATE_DIR") or ".runstream").resolve()
        cache_default = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "runstream"
        topic = env.get("RUNSTREAM_TOPIC") or "runstream.events"
        partitions = _int(env, "RUNSTREAM_PARTITIONS", 6)
        if partitions < 1:
            raise ConfigError("RUNSTREAM_PARTITIONS must be at least 1")
        log_format = env.get("RUNSTREAM_LOG_FORMAT") or "json"
        if log_format not in {"json", "console"}:
            raise ConfigError("RUNSTREAM_LOG_FORMAT must be json or console")
        return cls(
            state_dir=state_dir,
            cache_dir=Path(env.get("RUNSTREAM_CACHE_DIR") or cache_default).resolve(),
            kafka_version=env.get("RUNSTREAM_KAFKA_VERSION") or "4.4.0",
            kafka_port=_int(env, "RUNSTREAM_KAFKA_PORT", 19092),
            kafka_controller_port=_int(env, "RUNSTREAM_KAFKA_CONTROLLER_PORT", 19093),
            kafka_heap=env.get("RUNSTREAM_KAFKA_HEAP") or "768m",
            postgres_port=_int(env, "RUNSTREAM_POSTGRES_PORT", 15432),
            external_kafka=env.get("RUNSTREAM_KAFKA_BOOTSTRAP") or None,
            external_database=env.get("RUNSTREAM_DATABASE_URL") or None,
            topic=topic,
            partitions=partitions,
            dead_letter_topic=env.get("RUNSTREAM_DEAD_LETTER_TOPIC") or f"{topic}.dead-letter",
            delivery_timeout_s=_int(env, "RUNSTREAM_DELIVERY_TIMEOUT_MS", 15000) / 1000,
            linger_ms=_int(env, "RUNSTREAM_KAFKA_LINGER_MS", 0),
            consumer_group=env.get("RUNSTREAM_CONSUMER_GROUP") or "runstream-projector",
            registry_schema=env.get("RUNSTREAM_REGISTRY_SCHEMA") or "runstream_registry",
            read_schema=env.get("RUNSTREAM_READ_SCHEMA") or "runstream_read",
            read_wait_s=_int(env, "RUNSTREAM_READ_WAIT_MS", 5000) / 1000,
            http_host=env.get("RUNSTREAM_HOST") or "127.0.0.1",
            http_port=_int(env, "RUNSTREAM_PORT", 5000),
            reuse_port=_bool(env, "RUNSTREAM_REUSE_PORT", False),
            artifact_root=env.get("RUNSTREAM_ARTIFACT_ROOT") or (state_dir / "artifacts").as_uri(),
            truncate_long_values=_bool(env, "RUNSTREAM_TRUNCATE_LONG_VALUES", True),
            log_level=(env.get("RUNSTREAM_LOG_LEVEL") or "info").lower(),
            log_format=log_format,
        )

    @property
    def kafka_bootstrap(self) -> str:
        """Return the broker address clients connect to."""
        return self.external_kafka or f"127.0.0.1:{self.kafka_port}"

    @property
    def database_url(self) -> str:
        """Return the PostgreSQL DSN clients connect to."""
        return self.external_database or (
            f"postgresql://runstream@127.0.0.1:{self.postgres_port}/runstream"
        )

    @property
    def tracking_uri(self) -> str:
        """Return the URI the mlflow client is pointed at."""
        host = "127.0.0.1" if self.http_host in {"0.0.0.0", "::"} else self.http_host  # noqa: S104
        return f"http://{host}:{self.http_port}"
