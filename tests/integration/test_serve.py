"""`runstream serve` starts, answers /health and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import pytest
from processes import free_port, wait_healthy

from services.config import Settings

pytestmark = pytest.mark.integration


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
