"""MLflow's own tracking server and `runstream serve`, side by side, for differential tests."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest
from processes import free_port, runstream_process, wait_healthy

from ingest.topics import delete_topics, ensure_topics
from services.config import Settings
from services.migrations import load, migrate, quote_schema


def past_this_millisecond() -> None:
    """Wait until the clock leaves the current millisecond. A server on this machine then
    stamps the next request later than all it has answered, so two experiments created one
    after the other never tie on creation time (a tie is broken by id, and an order by
    creation time DESC would differ between a server that tied and one that did not)."""
    now = time.time_ns() // 1_000_000
    while time.time_ns() // 1_000_000 == now:  # at most a millisecond
        pass


@asynccontextmanager
async def mlflow_server(root: Path) -> AsyncIterator[str]:
    """Run MLflow's tracking server on SQLite under `root`; yield its URL; stop its group."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--default-artifact-root",
        (root / "artifacts").as_uri(),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,  # its workers share its process group
    )
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_healthy(url, proc, 120)
        yield url
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()


@asynccontextmanager
async def runstream_server(stack: Settings, root: Path) -> AsyncIterator[str]:
    """Run `runstream serve` on its own topic and schemas; yield its URL; drop them after."""
    topic = f"test.events_{uuid.uuid4().hex[:12]}"
    schemas = {
        "RUNSTREAM_REGISTRY_SCHEMA": ("ingest", f"t_ingest_{uuid.uuid4().hex[:12]}"),
        "RUNSTREAM_READ_SCHEMA": ("projector", f"t_projector_{uuid.uuid4().hex[:12]}"),
    }
    await ensure_topics(stack.kafka_bootstrap, topic, 6, f"{topic}.dead-letter")
    conn = await asyncpg.connect(stack.database_url)
    try:
        for package, schema in schemas.values():
            await migrate(conn, schema, load(package))
        env = {
            "RUNSTREAM_TOPIC": topic,
            "RUNSTREAM_DEAD_LETTER_TOPIC": f"{topic}.dead-letter",
            "RUNSTREAM_CONSUMER_GROUP": f"test-differential-{uuid.uuid4().hex[:12]}",
            "RUNSTREAM_ARTIFACT_ROOT": root.as_uri(),
            **{variable: schema for variable, (_, schema) in schemas.items()},
        }
        async with runstream_process("serve", env) as url:
            yield url
    finally:
        for _, schema in schemas.values():
            await conn.execute(f"DROP SCHEMA IF EXISTS {quote_schema(schema)} CASCADE")
        await conn.close()
        await delete_topics(stack.kafka_bootstrap, [topic, f"{topic}.dead-letter"])


@asynccontextmanager
async def side_by_side(stack: Settings, root: Path) -> AsyncIterator[tuple[str, str]]:
    """Run both servers with folders under `root`; yield (MLflow's URL, Runstream's URL).
    Meanwhile the mlflow client does not retry: a failing request fails the test now, not
    after minutes of retries."""
    (root / "mlflow").mkdir()
    (root / "runstream").mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        patch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
        async with (
            mlflow_server(root / "mlflow") as theirs,
            runstream_server(stack, root / "runstream") as ours,
        ):
            yield theirs, ours
