"""Test support: run `runstream` roles as real subprocesses and wait until they answer."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp


def free_port() -> int:
    """Return a TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
