"""kill -9 mid-batch (RELIABILITY.md scenario 1): the projector as a real process, SIGKILLed at
random points over several seeds and restarted, ends with the reference hash and its offsets at
the log end; SIGTERM finishes gracefully."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from eventlog import end_offsets, produce_log
from query_harness import document_mismatches

from projector.memory import MemoryStore
from projector.snapshot import read_snapshot, state_hash
from projector.synthetic import metric_log, mixed_log
from services.config import Settings

pytestmark = pytest.mark.integration


class Runner:
    """Start `python -m projector` processes for one topic and schema; kill what is left."""

    def __init__(self, stack: Settings, topic: str, schema: str) -> None:
        self.stack, self.topic, self.schema = stack, topic, schema
        self.procs: list[asyncio.subprocess.Process] = []
        self.starts = 0

    async def start(self, *extra: str, max_records: int = 3) -> asyncio.subprocess.Process:
        self.starts += 1
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "projector",
            "--bootstrap",
            self.stack.kafka_bootstrap,
            "--topic",
            self.topic,
            # A fresh group per start: offsets live in PostgreSQL, and a new group is assigned
            # at once instead of waiting out the killed member's session.
            "--group",
            f"kill.{self.topic}.{self.starts}",
            "--dead-letter-topic",
            f"{self.topic}.dead-letter",
            "--dsn",
            self.stack.database_url,
            "--schema",
            self.schema,
            "--max-records",
            str(max_records),
            "--log-level",
            "warning",
            *extra,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
        )
        self.procs.append(proc)
        return proc

    async def close(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                proc.kill()
            await proc.communicate()


@pytest.fixture
async def runner(stack: Settings, topic: str, schema_factory: Any) -> AsyncIterator[Runner]:
    r = Runner(stack, topic, await schema_factory("projector"))
    yield r
    await r.close()


async def _progress(db: asyncpg.Connection, schema: str, topic: str) -> int:
    value = await db.fetchval(
        f'SELECT coalesce(sum(next_offset), 0) FROM "{schema}".projector_offsets WHERE topic = $1',
        topic,
    )
    return int(value)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_sigkill_at_random_points_then_restart(
    stack: Settings, runner: Runner, seed: int
) -> None:
    rng = random.Random(seed)
    log = mixed_log(seed, runs=30) + metric_log(
        seed, runs=4, records_per_run=30, events_per_record=100
    )
    await produce_log(stack.kafka_bootstrap, runner.topic, log)
    total = len(log)
    db = await asyncpg.connect(stack.database_url)
    try:
        for _ in range(4):
            # Kill once the stored offsets pass a random point of the log (or at a random
            # moment right after start, possibly mid-join or mid-batch).
            done = await _progress(db, runner.schema, runner.topic)
            target = min(total, done + rng.randrange(total // 8))
            proc = await runner.start()
            deadline = time.monotonic() + 60
            while await _progress(db, runner.schema, runner.topic) < target:
                assert proc.returncode is None, (await proc.communicate())[1][-2000:]
                assert time.monotonic() < deadline, "the projector made no progress"
                await asyncio.sleep(rng.uniform(0.0, 0.05))  # polling, at random points
            proc.send_signal(signal.SIGKILL)
            await proc.communicate()
            assert proc.returncode == -signal.SIGKILL
        assert await _progress(db, runner.schema, runner.topic) < total  # killed mid-log
        proc = await runner.start("--burst", max_records=500)
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, err[-3000:]
        reference = MemoryStore().fold_log([e for r in log for e in r.events]).snapshot_now()
        snapshot = await read_snapshot(db, runner.schema)
        assert snapshot == reference
        assert state_hash(snapshot) == state_hash(reference)
        await db.execute(f'SET search_path TO "{runner.schema}"')
        assert await document_mismatches(db) == []
        await db.execute("RESET search_path")
        rows = await db.fetch(
            f'SELECT partition, next_offset FROM "{runner.schema}".projector_offsets'
        )
        assert {r["partition"]: r["next_offset"] for r in rows} == await end_offsets(
            stack.kafka_bootstrap, runner.topic, range(6)
        )
        assert json.loads(out)["dead_letters"] == 0
    finally:
        await db.close()


async def test_sigterm_finishes_gracefully(stack: Settings, runner: Runner) -> None:
    log = mixed_log(9, runs=10)
    await produce_log(stack.kafka_bootstrap, runner.topic, log)
    proc = await runner.start(max_records=2000)
    db = await asyncpg.connect(stack.database_url)
    try:
        deadline = time.monotonic() + 60
        while await _progress(db, runner.schema, runner.topic) < len(log):
            assert proc.returncode is None
            assert time.monotonic() < deadline, "the projector did not catch up"
            await asyncio.sleep(0.05)  # polling a condition, with a deadline
    finally:
        await db.close()
    proc.send_signal(signal.SIGTERM)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0
    assert json.loads(out)["events"] == sum(len(r.events) for r in log)
