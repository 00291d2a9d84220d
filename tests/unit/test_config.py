"""Settings come from the environment, with defaults that run the local stack."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.config import ConfigError, Settings


def test_defaults_point_at_the_local_stack(tmp_path: Path) -> None:
    s = Settings.from_env({"RUNSTREAM_STATE_DIR": str(tmp_path)})
    assert s.kafka_bootstrap == "127.0.0.1:19092"
    assert s.database_url == "postgresql://runstream@127.0.0.1:15432/runstream"
    assert s.topic == "runstream.events"
    assert s.partitions == 6
    assert s.dead_letter_topic == "runstream.events.dead-letter"
    assert s.tracking_uri == "http://127.0.0.1:5000"
    assert s.artifact_root == (tmp_path / "artifacts").as_uri()
    assert s.truncate_long_values is True


def test_external_services_replace_the_local_ones() -> None:
    s = Settings.from_env(
        {
            "RUNSTREAM_KAFKA_BOOTSTRAP": "kafka:9092",
            "RUNSTREAM_DATABASE_URL": "postgresql://u@db/x",
            "RUNSTREAM_HOST": "0.0.0.0",
            "RUNSTREAM_PORT": "8080",
        }
    )
    assert s.kafka_bootstrap == "kafka:9092"
    assert s.database_url == "postgresql://u@db/x"
    assert s.tracking_uri == "http://127.0.0.1:8080"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RUNSTREAM_PORT", "http"),
        ("RUNSTREAM_PARTITIONS", "0"),
        ("RUNSTREAM_TRUNCATE_LONG_VALUES", "maybe"),
        ("RUNSTREAM_LOG_FORMAT", "xml"),
    ],
)
def test_bad_values_are_config_errors(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})
