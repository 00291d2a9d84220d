"""Test support: run `runstream` roles as real subprocesses and wait until they answer."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp

from services.config import Settings

SchemaFactory = Callable[[str], Awaitable[str]]


# Servers under test listen at or above this port and below the kernel's ephemeral range; the
# local stack's own ports (PostgreSQL 15432, Kafka 19092-19093, the API 5000) lie below it.
FIRST_TEST_PORT = 20_000
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_HANDED_OUT: set[int] = set()  # never the same port twice in one test session


def ephemeral_ports_start() -> int:
    """Return the first port the kernel gives to outgoing connections (Linux's default 32768)."""
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def free_port() -> int:
    """Return a TCP port nobody listens on right now, for a server the test starts next.

    Not one the kernel picks (`bind(0)`): those come from its ephemeral range, from which it
    also draws the local port of every outgoing connection, so one of the test's own clients
    (of Kafka, of PostgreSQL) could take the port before the server binds it. A port below the
    range is only ever taken by an explicit bind."""
    end = max(ephemeral_ports_start(), FIRST_TEST_PORT + 1_000)
    for _ in range(100):
        port = random.randrange(FIRST_TEST_PORT, end)
        if port in _HANDED_OUT:  # its server may not have bound it yet
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:  # in use, or lingering in TIME_WAIT
                continue
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError(f"no free port in [{FIRST_TEST_PORT}, {end}) after 100 tries")


async def wait_healthy(url: str, proc: asyncio.subprocess.Process, deadline_s: float) -> str:
    """Poll url/health until it answers 200, the process dies, or the deadline passes."""
    async with aiohttp.ClientSession() as session, asyncio.timeout(deadline_s):
        while True:
            if proc.returncode is not None:
                raise AssertionError(f"server exited early with {proc.returncode}")
            try:
                async with session.get(f"{url}/health") as resp:
                    if resp.status == 200:
                        return await resp.text()
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)


@asynccontextmanager
async def runstream_process(role: str, env: dict[str, str]) -> AsyncIterator[str]:
    """Run `runstream <role>` with extra environment; yield its base URL; SIGTERM it after."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        role,
        env={**os.environ, **env, "RUNSTREAM_PORT": str(port)},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_healthy(url, proc, 60)
        yield url
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, stderr.decode()[-3000:]


MLFLOW_API = "/api/2.0/mlflow"


async def call(
    http: aiohttp.ClientSession, url: str, path: str, body: dict[str, Any]
) -> tuple[int, Any]:
    """POST `body` to an MLflow endpoint of the server at `url`; return the status and JSON."""
    async with http.post(f"{url}{MLFLOW_API}/{path}", json=body) as resp:
        return resp.status, await resp.json()


async def ok(http: aiohttp.ClientSession, url: str, path: str, body: dict[str, Any]) -> Any:
    """POST like `call`; fail the test unless the answer is a 200; return its JSON."""
    status, answer = await call(http, url, path, body)
    assert status == 200, answer
    return answer


async def isolated(
    stack: Settings, topic: str, schema_factory: SchemaFactory, tmp_path: Path, name: str
) -> tuple[dict[str, str], Settings]:
    """Return the environment of a server on the test's own topic, schemas and group, and the
    same as settings (for calling the services in-process against that server's state)."""
    env = {
        "RUNSTREAM_TOPIC": topic,
        "RUNSTREAM_DEAD_LETTER_TOPIC": f"{topic}.dead-letter",
        "RUNSTREAM_REGISTRY_SCHEMA": await schema_factory("ingest"),
        "RUNSTREAM_READ_SCHEMA": await schema_factory("projector"),
        "RUNSTREAM_CONSUMER_GROUP": f"test-{name}-{uuid.uuid4().hex[:12]}",
        "RUNSTREAM_ARTIFACT_ROOT": tmp_path.as_uri(),
    }
    settings = replace(
        stack,
        topic=topic,
        dead_letter_topic=env["RUNSTREAM_DEAD_LETTER_TOPIC"],
        registry_schema=env["RUNSTREAM_REGISTRY_SCHEMA"],
        read_schema=env["RUNSTREAM_READ_SCHEMA"],
        consumer_group=env["RUNSTREAM_CONSUMER_GROUP"],
    )
    return env, settings
