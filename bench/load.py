"""Load generators speaking MLflow's REST API over plain HTTP, the same for every peer."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgspec

API = "/api/2.0/mlflow"
_JSON = {"Content-Type": "application/json"}
# The generator shares the machine with the servers: encode cheaply so it measures them.
_encode = msgspec.json.Encoder().encode


@dataclass
class Tally:
    """Latencies and outcomes of the requests of one workload."""

    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    points: int = 0

    def percentile(self, q: float) -> float:
        """Return the q-quantile latency in milliseconds (0 when nothing was measured)."""
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Client:
    """A pooled HTTP client that records each request's latency and outcome."""

    def __init__(self, base_url: str, session: aiohttp.ClientSession, tally: Tally) -> None:
        self.base = base_url + API
        self.session = session
        self.tally = tally

    async def post(self, path: str, body: dict[str, Any], *, points: int = 0) -> dict[str, Any]:
        """POST JSON; count points only when the server accepted them."""
        start = time.perf_counter()
        try:
            async with self.session.post(
                f"{self.base}/{path}", data=_encode(body), headers=_JSON
            ) as resp:
                text = await resp.text()
                status = resp.status
        except aiohttp.ClientError as exc:
            self.tally.errors[type(exc).__name__] += 1
            return {}
        self.tally.latencies.append(time.perf_counter() - start)
        if status != 200:
            self.tally.errors[f"{path} {status} {text[:80]}"] += 1
            return {}
        self.tally.points += points
        parsed: dict[str, Any] = json.loads(text) if text else {}
        return parsed


def session(writers: int) -> aiohttp.ClientSession:
    """Return a client session allowing `writers` concurrent connections."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=writers, limit_per_host=writers),
        timeout=aiohttp.ClientTimeout(total=120),
    )


async def _setup_runs(client: Client, name: str, parents: int, children: int) -> list[str]:
    """Create an experiment, parent runs and child runs; return the child run ids."""
    created = await client.post("experiments/create", {"name": name})
    exp = created.get("experiment_id", "0")
    parent_ids = []
    for p in range(parents):
        run = await client.post(
            "runs/create",
            {
                "experiment_id": exp,
                "run_name": f"parent-{p}",
                "start_time": int(time.time() * 1000),
            },
        )
        parent_ids.append(run["run"]["info"]["run_id"])
    child_ids = []
    for c in range(children):
        run = await client.post(
            "runs/create",
            {
                "experiment_id": exp,
                "run_name": f"child-{c}",
                "start_time": int(time.time() * 1000),
                "tags": [{"key": "mlflow.parentRunId", "value": parent_ids[c % parents]}],
            },
        )
        child_ids.append(run["run"]["info"]["run_id"])
    return child_ids


async def tuning_swarm(
    base_url: str,
    *,
    parents: int = 4,
    children: int = 64,
    writers: int = 32,
    steps: int = 200,
    metrics: int = 4,
    batch: int = 100,
) -> dict[str, Any]:
    """W1: children log params, tags and steps x metrics through log-batch, then end."""
    tally = Tally()
    async with session(writers) as http:
        setup = Client(base_url, http, Tally())
        run_ids = await _setup_runs(setup, f"w1-{time.time_ns()}", parents, children)
        client = Client(base_url, http, tally)
        queue: asyncio.Queue[str] = asyncio.Queue()
        for run_id in run_ids:
            queue.put_nowait(run_id)

        async def child(run_id: str) -> None:
            await client.post(
                "runs/log-batch",
                {
                    "run_id": run_id,
                    "params": [{"key": f"p{i}", "value": str(i)} for i in range(10)],
                    "tags": [{"key": "trial", "value": run_id[:8]}],
                },
            )
            points = [(s, m) for s in range(steps) for m in range(metrics)]
            now = int(time.time() * 1000)
            for i in range(0, len(points), batch):
                chunk = points[i : i + batch]
                await client.post(
                    "runs/log-batch",
                    {
                        "run_id": run_id,
                        "metrics": [
                            {
                                "key": f"m{m}",
                                "value": s * 0.001 + m,
                                "timestamp": now + s,
                                "step": s,
                            }
                            for s, m in chunk
                        ],
                    },
                    points=len(chunk),
                )
            await client.post(
                "runs/update",
                {"run_id": run_id, "status": "FINISHED", "end_time": int(time.time() * 1000)},
            )

        async def worker() -> None:
            while not queue.empty():
                await child(queue.get_nowait())

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(writers)))
        elapsed = time.perf_counter() - start
    return {
        "points": tally.points,
        "seconds": round(elapsed, 3),
        "points_per_s": round(tally.points / elapsed, 1),
        "p50_ms": round(tally.percentile(0.5), 1),
        "p99_ms": round(tally.percentile(0.99), 1),
        "errors": sum(tally.errors.values()),
        "error_kinds": dict(tally.errors.most_common(3)),
    }


async def per_point(
    base_url: str, *, writers: int, seconds: float, runs: int = 64
) -> dict[str, Any]:
    """W2: one metric per request (what mlflow.log_metric in a loop does) for `seconds`."""
    tally = Tally()
    async with session(writers) as http:
        setup = Client(base_url, http, Tally())
        run_ids = await _setup_runs(setup, f"w2-{time.time_ns()}", 4, runs)
        client = Client(base_url, http, tally)
        stop_at = time.perf_counter() + seconds

        async def worker(n: int) -> None:
            run_id = run_ids[n % len(run_ids)]
            step = 0
            while time.perf_counter() < stop_at:
                await client.post(
                    "runs/log-metric",
                    {
                        "run_id": run_id,
                        "key": "loss",
                        "value": 1.0 / (step + 1),
                        "timestamp": int(time.time() * 1000),
                        "step": step,
                    },
                    points=1,
                )
                step += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker(n) for n in range(writers)))
        elapsed = time.perf_counter() - start
    return {
        "writers": writers,
        "requests": len(tally.latencies) + sum(tally.errors.values()),
        "accepted": tally.points,
        "requests_per_s": round(tally.points / elapsed, 1),
        "p50_ms": round(tally.percentile(0.5), 1),
        "p99_ms": round(tally.percentile(0.99), 1),
        "errors": sum(tally.errors.values()),
        "error_kinds": dict(tally.errors.most_common(3)),
    }
