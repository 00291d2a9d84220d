"""The local stack is real: events round-trip through Kafka, rows through PostgreSQL, and a
restart keeps both."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import uuid

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from eventlog import read_raw

from services.config import Settings
from services.migrations import load, migrate

pytestmark = pytest.mark.integration


async def _produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def _read_all(bootstrap: str, topic: str) -> list[tuple[bytes, bytes, int]]:
    """Return (key, value, partition) of every record, raw (these values are not events)."""
    return [(key, value, part) for part, _, key, value in await read_raw(bootstrap, topic)]


async def test_events_round_trip_through_the_real_broker(stack: Settings, topic: str) -> None:
    records = [(f"run-{i % 7}".encode(), f"event-{i}".encode()) for i in range(200)]
    await _produce(stack.kafka_bootstrap, topic, records)

    got = await _read_all(stack.kafka_bootstrap, topic)

    assert sorted(v for _, v, _ in got) == sorted(v for _, v in records)
    # Keyed by run: each run's events sit on one partition, in the order they were sent.
    for key in {k for k, _ in records}:
        on = {p for k, _, p in got if k == key}
        assert len(on) == 1
        assert [v for k, v, _ in got if k == key] == [v for k, v in records if k == key]


async def test_rows_round_trip_through_the_real_database(read_db: asyncpg.Connection) -> None:
    await read_db.executemany(
        "INSERT INTO metrics (run_id, key, step, ts, value) VALUES ($1, $2, $3, $4, $5)",
        [
            ("r1", "loss", 0, 10, 0.5),
            ("r1", "loss", 1, 11, math.nan),
            ("r1", "loss", 2, 12, math.inf),
            ("r1", "loss", 3, 13, -math.inf),
        ],
    )
    rows = await read_db.fetch(
        "SELECT step, value FROM metrics WHERE run_id = $1 ORDER BY step", "r1"
    )
    values = [r["value"] for r in rows]
    assert values[0] == 0.5
    assert math.isnan(values[1])
    assert values[2:] == [math.inf, -math.inf]


async def test_migrations_apply_once(stack: Settings, schema_factory: object) -> None:
    conn = await asyncpg.connect(stack.database_url)
    schema = f"t_once_{uuid.uuid4().hex[:8]}"
    try:
        first = await migrate(conn, schema, load("projector"))
        second = await migrate(conn, schema, load("projector"))
        assert first == [m.name for m in load("projector")]
        assert second == []
    finally:
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await conn.close()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ.copy(),
        check=False,
    )


async def test_down_then_up_keeps_events_and_rows(stack: Settings, topic: str) -> None:
    marker = uuid.uuid4().hex
    await _produce(stack.kafka_bootstrap, topic, [(b"run-x", marker.encode())])
    conn = await asyncpg.connect(stack.database_url)
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS public.restart_probe (marker text)")
        await conn.execute("INSERT INTO public.restart_probe VALUES ($1)", marker)
    finally:
        await conn.close()

    down = _cli("down")
    assert down.returncode == 0, down.stderr
    up = _cli("up")
    assert up.returncode == 0, up.stderr

    assert (b"run-x", marker.encode()) in [
        (k, v) for k, v, _ in await _read_all(stack.kafka_bootstrap, topic)
    ]
    conn = await asyncpg.connect(stack.database_url)
    try:
        found = await conn.fetchval(
            "SELECT count(*) FROM public.restart_probe WHERE marker = $1", marker
        )
        await conn.execute("DELETE FROM public.restart_probe WHERE marker = $1", marker)
    finally:
        await conn.close()
    assert found == 1


def test_status_reports_broker_database_and_projector_lag(stack: Settings) -> None:
    done = _cli("status")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["kafka"]["up"] is True
    assert report["postgres"]["up"] is True
    assert set(report["kafka"]["end_offsets"]) == {str(p) for p in range(stack.partitions)}
    assert set(report["projector"]["lag"]) == set(report["kafka"]["end_offsets"])


def test_status_fails_when_the_broker_is_unreachable(stack: Settings) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "status"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "RUNSTREAM_KAFKA_BOOTSTRAP": "127.0.0.1:1"},
        check=False,
    )
    assert done.returncode == 1
    assert json.loads(done.stdout)["kafka"]["up"] is False
