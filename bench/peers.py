"""The systems under comparison, started side by side on this machine.

Runstream's gateway processes and MLflow's own tracking server (PostgreSQL backend store on the
same PostgreSQL server, its own database, `--workers 2`) are both reached over plain HTTP.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from ingest.topics import delete_topics, ensure_topics
from services.config import Settings
from services.migrations import load, migrate, quote_schema


def free_port() -> int:
    """Return a TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_ready(url: str, procs: list[asyncio.subprocess.Process], deadline_s: float) -> None:
    """Poll url until it answers 200; fail if a process dies or the deadline passes."""
    deadline = time.monotonic() + deadline_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if any(p.returncode is not None for p in procs):
                raise RuntimeError(f"a server process exited while starting ({url})")
            try:
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} not ready within {deadline_s}s")


async def _stop(procs: list[asyncio.subprocess.Process]) -> None:
    for proc in procs:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            await asyncio.wait_for(proc.wait(), 60)
        except TimeoutError:
            proc.kill()
            await proc.wait()


@asynccontextmanager
async def runstream_gateway(
    settings: Settings,
    workers: int = 2,
    role: str = "ingest",
    details: dict[str, Any] | None = None,
) -> AsyncIterator[str]:
    """Run `workers` Runstream processes of `role` on one port (SO_REUSEPORT), on a fresh topic
    and registry schema; yield the base URL. `details`, when given, receives the topic, the
    schemas and the process ids."""
    tag = uuid.uuid4().hex[:8]
    topic = f"bench.events.{tag}"
    registry = f"bench_registry_{tag}"
    read = f"bench_read_{tag}"
    await ensure_topics(settings.kafka_bootstrap, topic, settings.partitions, f"{topic}.dlq")
    conn = await asyncpg.connect(settings.database_url)
    try:
        await migrate(conn, registry, load("ingest"))
        await migrate(conn, read, load("projector"))
    finally:
        await conn.close()
    port = free_port()
    env = {
        **os.environ,
        "RUNSTREAM_TOPIC": topic,
        "RUNSTREAM_DEAD_LETTER_TOPIC": f"{topic}.dlq",
        "RUNSTREAM_REGISTRY_SCHEMA": registry,
        "RUNSTREAM_READ_SCHEMA": read,
        "RUNSTREAM_PORT": str(port),
        "RUNSTREAM_REUSE_PORT": "true",
        "RUNSTREAM_LOG_LEVEL": "warning",
        "RUNSTREAM_CONSUMER_GROUP": f"bench-{tag}",
    }
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.cli",
            role,
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        for _ in range(workers)
    ]
    url = f"http://127.0.0.1:{port}"
    if details is not None:
        details.update(
            topic=topic, registry_schema=registry, read_schema=read, pids=[p.pid for p in procs]
        )
    try:
        await wait_ready(f"{url}/health", procs, 60)
        yield url
    finally:
        await _stop(procs)
        await delete_topics(settings.kafka_bootstrap, [topic, f"{topic}.dlq"])
        conn = await asyncpg.connect(settings.database_url)
        try:
            for schema in (registry, read):
                await conn.execute(f"DROP SCHEMA IF EXISTS {quote_schema(schema)} CASCADE")
        finally:
            await conn.close()


@asynccontextmanager
async def mlflow_server(
    settings: Settings, workers: int = 2, details: dict[str, Any] | None = None
) -> AsyncIterator[str]:
    """Run MLflow's tracking server on a fresh PostgreSQL database; yield its base URL.
    `details`, when given, receives the database's name and the server's process group id."""
    mlflow = Path(sys.executable).with_name("mlflow")
    if not mlflow.exists() or shutil.which("mlflow", path=str(mlflow.parent)) is None:
        raise RuntimeError(
            "the mlflow package is needed: pip install -c constraints.txt -e '.[bench]'"
        )
    database = f"mlflow_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(settings.database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{database}"')
    finally:
        await admin.close()
    backend = settings.database_url.rsplit("/", 1)[0] + f"/{database}"
    backend = backend.replace("postgresql://", "postgresql+psycopg2://", 1)
    port = free_port()
    async with AsyncExitStack() as stack:
        artifacts = stack.enter_context(tempfile.TemporaryDirectory(prefix="mlflow-bench-"))
        proc = await asyncio.create_subprocess_exec(
            str(mlflow),
            "server",
            "--backend-store-uri",
            backend,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--default-artifact-root",
            Path(artifacts).as_uri(),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        if details is not None:
            details.update(database=database, pgid=proc.pid)
        try:
            await wait_ready(f"{url}/health", [proc], 180)
            yield url
        finally:
            # mlflow server runs its workers in the session it leads: stop them all.
            if proc.returncode is None:
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 60)
            except TimeoutError:
                os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
            admin = await asyncpg.connect(settings.database_url)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            finally:
                await admin.close()
