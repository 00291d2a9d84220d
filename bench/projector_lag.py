"""Measure how far the read models trail the log (prints figures; asserts nothing).

    .venv/bin/python -m bench.projector_lag                     # both figures, default sizes
    .venv/bin/python -m bench.projector_lag --only catchup --catchup-events 200000

Two figures, one JSON line each:

* ``catch-up`` (W4-like): a metric-heavy backlog of ``--catchup-events`` events (2,000,000 by
  default) is produced to a fresh topic in chunks, then one projector folds it in burst mode
  into a fresh schema. Reports events/s end to end (group join included) and steady state.
* ``lag under W1``: ``runstream serve`` processes (bench/peers.py) on a fresh topic and schemas,
  driven by ``--rounds`` W1 tuning swarms back to back; meanwhile a probe logs one metric under
  a fresh key through log-batch, and from the 200 of that write polls ``metrics/get-history``
  with ``X-Runstream-Consistency: eventual`` until the point is there. The lag of a probe is the
  time from the write's 200 to the first poll answer that holds it, so it includes one read's
  latency and up to one poll interval. Probes rotate over runs on every partition.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
import uuid
from typing import Any

import aiohttp
import asyncpg

from bench.dataset import produce
from bench.load import tuning_swarm
from bench.peers import runstream_gateway
from ingest.topics import delete_topics, ensure_topics
from projector.consumer import Projector
from projector.synthetic import metric_log
from services import logging as rs_logging
from services.config import Settings
from services.migrations import load, migrate, quote_schema

API = "/api/2.0/mlflow"
EVENTUAL = {"X-Runstream-Consistency": "eventual"}


def emit(record: dict[str, Any]) -> None:
    """Print one figure as a JSON line."""
    print(json.dumps(record, sort_keys=True), flush=True)


def quantile(values: list[float], q: float) -> float:
    """Return the q-quantile of values (nearest rank), 0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --- catch-up -----------------------------------------------------------------------------------


async def catchup(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """Produce a backlog of about `--catchup-events` events, then fold it in burst mode."""
    tag = uuid.uuid4().hex[:8]
    topic, schema = f"bench.events.{tag}", f"bench_catchup_{tag}"
    await ensure_topics(settings.kafka_bootstrap, topic, args.partitions, f"{topic}.dead-letter")
    conn = await asyncpg.connect(settings.database_url)
    try:
        await migrate(conn, schema, load("projector"))
        # In chunks of 4 runs, so the generated log never sits in memory whole.
        per_run = args.records_per_run * args.events_per_record
        chunks = max(1, round(args.catchup_events / (4 * per_run)))
        total, started = 0, time.monotonic()
        for seed in range(chunks):
            log = metric_log(
                seed,
                runs=4,
                records_per_run=args.records_per_run,
                events_per_record=args.events_per_record,
            )
            total += sum(len(r.events) for r in log)
            await produce(settings.kafka_bootstrap, topic, (list(r.events) for r in log))
        produce_s = time.monotonic() - started
        projector = Projector(
            bootstrap=settings.kafka_bootstrap,
            topic=topic,
            group_id=f"bench.{topic}",
            dead_letter_topic=f"{topic}.dead-letter",
            dsn=settings.database_url,
            schema=schema,
            max_records=args.max_records,
        )
        async with projector:
            began = time.monotonic()
            await projector.run(burst=True)
            wall = time.monotonic() - began
        stats = projector.stats
        steady = stats.steady_events_per_second()
        return {
            "figure": "catch-up",
            "events": total,
            "folded": stats.events,
            "records": stats.records,
            "batches": stats.batches,
            "produce_s": round(produce_s, 1),
            "catchup_s": round(wall, 1),
            "events_per_s_wall": round(total / wall),
            "events_per_s_steady": round(steady) if steady else None,
            "max_records": args.max_records,
        }
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {quote_schema(schema)} CASCADE")
        await conn.close()
        await delete_topics(settings.kafka_bootstrap, [topic, f"{topic}.dead-letter"])


# --- end-to-end lag under load ------------------------------------------------------------------


class Probe:
    """Write one metric point under a fresh key, then poll until the read model has it."""

    def __init__(self, base_url: str, http: aiohttp.ClientSession) -> None:
        self.base = base_url + API
        self.http = http
        self.lags: list[float] = []
        self.lost = 0  # acknowledged but not visible within the deadline
        self.write_errors = 0
        self.polls = 0

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        async with self.http.post(f"{self.base}/{path}", json=body) as resp:
            return resp.status, await resp.json(content_type=None)

    async def setup(self, runs: int) -> list[str]:
        """Create an experiment and `runs` probe runs (spread over the partitions by run id)."""
        status, created = await self.post("experiments/create", {"name": f"lag-{uuid.uuid4()}"})
        assert status == 200, created
        run_ids = []
        for n in range(runs):
            body = {
                "experiment_id": created["experiment_id"],
                "run_name": f"probe-{n}",
                "start_time": int(time.time() * 1000),
            }
            status, run = await self.post("runs/create", body)
            assert status == 200, run
            run_ids.append(run["run"]["info"]["run_id"])
        return run_ids

    async def once(self, run_id: str, n: int, poll_s: float, deadline_s: float) -> None:
        key = f"lag{n}"
        point = {"key": key, "value": float(n), "timestamp": int(time.time() * 1000), "step": n}
        try:
            status, _ = await self.post("runs/log-batch", {"run_id": run_id, "metrics": [point]})
        except aiohttp.ClientError:
            status = 0
        acked = time.perf_counter()
        if status != 200:
            self.write_errors += 1
            return
        query = {"run_id": run_id, "metric_key": key}
        while time.perf_counter() - acked < deadline_s:
            self.polls += 1
            with contextlib.suppress(aiohttp.ClientError):
                async with self.http.get(
                    f"{self.base}/metrics/get-history", params=query, headers=EVENTUAL
                ) as resp:
                    found = (await resp.json(content_type=None)).get("metrics")
                if found:
                    self.lags.append(time.perf_counter() - acked)
                    return
            await asyncio.sleep(poll_s)  # the poll interval, part of the measured resolution
        self.lost += 1


async def lag_under_load(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """Run W1 against `runstream serve` while probes measure write-to-visible lag."""
    async with (
        runstream_gateway(settings, workers=args.workers, role="serve") as url,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http,
    ):
        probe = Probe(url, http)
        run_ids = await probe.setup(args.probe_runs)
        # An idle baseline first: what the lag is with nothing else going on.
        for n in range(args.idle_probes):
            await probe.once(run_ids[n % len(run_ids)], n, args.poll_s, args.deadline_s)
        idle = list(probe.lags)
        probe.lags.clear()

        async def load() -> list[dict[str, Any]]:
            rounds = []
            for _ in range(args.rounds):
                rounds.append(
                    await tuning_swarm(
                        url,
                        parents=args.parents,
                        children=args.children,
                        writers=args.writers,
                        steps=args.steps,
                    )
                )
            return rounds

        began = time.perf_counter()
        swarm = asyncio.create_task(load())
        n = args.idle_probes
        while not swarm.done():
            await probe.once(run_ids[n % len(run_ids)], n, args.poll_s, args.deadline_s)
            n += 1
            await asyncio.sleep(args.probe_gap_s)  # pacing between probes, not a wait
        rounds = await swarm
        loaded_s = time.perf_counter() - began
    points = sum(r["points"] for r in rounds)
    lags_ms = [1000 * lag for lag in probe.lags]
    return {
        "figure": "lag under W1",
        "workers": args.workers,
        "probes": len(lags_ms),
        "lag_p50_ms": round(quantile(lags_ms, 0.5), 1),
        "lag_p99_ms": round(quantile(lags_ms, 0.99), 1),
        "lag_max_ms": round(max(lags_ms, default=0.0), 1),
        "idle_lag_p50_ms": round(1000 * quantile(idle, 0.5), 1),
        "idle_lag_max_ms": round(1000 * max(idle, default=0.0), 1),
        "lost_probes": probe.lost,
        "probe_write_errors": probe.write_errors,
        "poll_ms": round(1000 * args.poll_s, 1),
        "w1_rounds": len(rounds),
        "w1_points": points,
        "w1_seconds": round(loaded_s, 1),
        "w1_points_per_s": round(points / loaded_s),
        "w1_round_points_per_s": [r["points_per_s"] for r in rounds],
        "w1_round_p99_ms": [r["p99_ms"] for r in rounds],
        "w1_errors": sum(r["errors"] for r in rounds),
    }


async def main() -> None:
    """Parse the sizes and print the figures asked for."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", choices=["catchup", "lag"])
    parser.add_argument("--catchup-events", type=int, default=2_000_000)
    parser.add_argument("--records-per-run", type=int, default=500)
    parser.add_argument("--events-per-record", type=int, default=100, help="a log-batch's 100")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--max-records", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2, help="`runstream serve` processes")
    parser.add_argument("--parents", type=int, default=4)
    parser.add_argument("--children", type=int, default=64)
    parser.add_argument("--writers", type=int, default=32)
    parser.add_argument("--steps", type=int, default=200, help="W1 steps per child (x4 metrics)")
    parser.add_argument("--rounds", type=int, default=5, help="W1 swarms back to back")
    parser.add_argument("--probe-runs", type=int, default=12)
    parser.add_argument("--idle-probes", type=int, default=20)
    parser.add_argument("--poll-s", type=float, default=0.005)
    parser.add_argument("--probe-gap-s", type=float, default=0.02)
    parser.add_argument("--deadline-s", type=float, default=60.0)
    args = parser.parse_args()
    settings = Settings.from_env()
    rs_logging.configure("warning", "json")
    if args.only != "lag":
        emit(await catchup(settings, args))
    if args.only != "catchup":
        emit(await lag_under_load(settings, args))


if __name__ == "__main__":
    asyncio.run(main())
