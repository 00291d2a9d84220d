"""What the query benchmarks share: a peer's read endpoints, a timed request loop, output."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

API = "/api/2.0/mlflow"
EVENTUAL = {"X-Runstream-Consistency": "eventual"}
Call = Callable[[aiohttp.ClientSession, int], Awaitable[Any]]


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return (
        round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1) if ordered else 0.0
    )


class Peer:
    """One system under test as the queries see it: a base URL and the headers of a read mode."""

    def __init__(self, name: str, url: str, headers: dict[str, str] | None = None) -> None:
        self.name, self.base, self.headers = name, url + API, headers or {}

    async def search(self, http: aiohttp.ClientSession, body: dict[str, Any]) -> dict[str, Any]:
        return _parsed(await self._read(http, "runs/search", body=body))

    async def get(self, http: aiohttp.ClientSession, path: str, params: Any) -> dict[str, Any]:
        return _parsed(await self._read(http, path, params=params))

    async def fetch(
        self, http: aiohttp.ClientSession, path: str, *, params: Any = None, body: Any = None
    ) -> int:
        """GET (or POST `body` to) a path and read the whole answer; return its size.

        For the timed loops: the load generator shares the machine with the peers, and parsing
        every answer it discards took a quarter of the CPU a search page cost (it parsed
        ~100 KB of JSON), CPU both peers' requests then waited for."""
        return len(await self._read(http, path, params=params, body=body))

    async def _read(
        self, http: aiohttp.ClientSession, path: str, *, params: Any = None, body: Any = None
    ) -> bytes:
        """GET (or POST `body` to) a path; return the answer's bytes, or raise unless 200."""
        url = f"{self.base}/{path}"
        if body is None:
            request = http.get(url, params=params, headers=self.headers)
        else:
            request = http.post(url, json=body, headers=self.headers)
        async with request as resp:
            data = await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"{path} {resp.status}: {data[:200]!r}")
            return data


def _parsed(data: bytes) -> dict[str, Any]:
    answer: dict[str, Any] = json.loads(data) if data else {}
    return answer


async def measure(
    call: Call, clients: int, requests: int, seconds: float, warm: bool = True
) -> dict[str, Any]:
    """Run `call` from `clients` concurrent clients until `requests` or `seconds` is reached."""
    latencies: list[float] = []
    errors: list[str] = []
    issued = 0
    stolen = steal_ms()
    connector = aiohttp.TCPConnector(limit=clients)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        if warm:  # warm the connection and the server's caches once
            try:
                await call(http, 0)
            except (RuntimeError, aiohttp.ClientError, TimeoutError) as exc:
                errors.append(str(exc)[:120])
        stop_at = time.perf_counter() + seconds  # after the warm-up, which may be slow

        async def client() -> None:
            nonlocal issued
            while issued < requests and time.perf_counter() < stop_at:
                issued += 1
                start = time.perf_counter()
                try:
                    await call(http, issued)
                except (RuntimeError, aiohttp.ClientError, TimeoutError) as exc:
                    errors.append(str(exc)[:120])
                    continue
                latencies.append(time.perf_counter() - start)

        await asyncio.gather(*(client() for _ in range(clients)))
    return {
        "n": len(latencies),
        "p50_ms": pct(latencies, 0.5),
        "p99_ms": pct(latencies, 0.99),
        "errors": len(errors),
        # CPU time the machine's hypervisor took from its CPUs meanwhile: it stops everything at
        # once, ~100 ms at a time on the 2-core machines here, which at 8 clients lands 8 of 400
        # requests in the same stall, more than a p99 can hide
        "steal_ms": steal_ms() - stolen,
        **({"first_error": errors[0]} if errors else {}),
    }


def _jiffies() -> list[int]:
    """Return the jiffies of all CPUs since boot by kind (Linux /proc/stat: user, nice,
    system, idle, iowait, irq, softirq, steal, ...)."""
    with open("/proc/stat", encoding="ascii") as stat:
        return [int(v) for v in stat.readline().split()[1:]]


def steal_ms() -> int:
    """Return the CPU milliseconds stolen from all CPUs since boot."""
    return _jiffies()[7] * 1000 // os.sysconf("SC_CLK_TCK")


def _cpu_times() -> tuple[int, int]:
    """Return (idle, total) jiffies of all CPUs since boot."""
    fields = _jiffies()
    return fields[3] + fields[4], sum(fields)  # idle + iowait


def wait_quiet(idle_share: float = 0.8, window_s: float = 1.0, deadline_s: float = 60.0) -> float:
    """Wait until the machine's CPUs were `idle_share` idle over a window (the servers just
    started have finished starting); return the seconds waited. Gives up at the deadline."""
    began = time.monotonic()
    while time.monotonic() - began < deadline_s:
        idle0, total0 = _cpu_times()
        time.sleep(window_s)
        idle1, total1 = _cpu_times()
        if total1 > total0 and (idle1 - idle0) / (total1 - total0) >= idle_share:
            break
    return round(time.monotonic() - began, 1)
