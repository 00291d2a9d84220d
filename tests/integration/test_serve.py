"""`runstream serve` starts, answers /health and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys

import aiohttp
import pytest

from services.config import Settings

pytestmark = pytest.mark.integration


def free_port() -> int:
    """Return a TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_healthy(url: str, proc: asyncio.subprocess.Process, deadline_s: float) -> str:
    """Poll url/health until it answers 200, the process dies, or the deadline passes."""
    async with aiohttp.ClientSession() as session:
        async with asyncio.timeout(deadline_s):
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


async def test_serve_answers_health_and_stops_on_sigterm(stack: Settings) -> None:
    port = free_port()
    env = {**os.environ, "RUNSTREAM_PORT": str(port)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        "serve",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert await wait_healthy(f"http://127.0.0.1:{port}", proc, 60) == "OK"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, stderr.decode()[-2000:]
    assert b'"event": "stopped"' in stderr
