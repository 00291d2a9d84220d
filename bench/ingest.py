"""Benchmark the write path (BENCHMARKS.md W1 and W2): Runstream's gateway against MLflow's
server, measured in the same run on the same machine. Prints one JSON line per figure.

    .venv/bin/python -m bench.ingest                 # both peers, default sizes
    .venv/bin/python -m bench.ingest --steps 50 --w2-seconds 5   # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from bench.load import per_point, tuning_swarm
from bench.peers import mlflow_server, runstream_gateway
from services import logging as rs_logging
from services.config import Settings


def emit(record: dict[str, Any]) -> None:
    """Print one figure as a JSON line."""
    print(json.dumps(record, sort_keys=True), flush=True)


async def measure(
    name: str, peer: Callable[[], AbstractAsyncContextManager[str]], args: argparse.Namespace
) -> dict[str, dict[str, Any]]:
    """Run W1 and W2 against one peer; return figures keyed by workload."""
    figures: dict[str, dict[str, Any]] = {}
    async with peer() as url:
        w1 = await tuning_swarm(url, writers=args.writers, steps=args.steps)
        emit({"peer": name, "workload": "W1 tuning swarm", **w1})
        figures["W1"] = w1
        for writers in args.w2_writers:
            w2 = await per_point(url, writers=writers, seconds=args.w2_seconds)
            emit({"peer": name, "workload": f"W2 per-point x{writers}", **w2})
            figures[f"W2x{writers}"] = w2
    return figures


def ratio(ours: float, theirs: float) -> float | None:
    """Return ours/theirs, None when the peer managed nothing."""
    return round(ours / theirs, 1) if theirs else None


async def main() -> None:
    """Run the comparison and print figures and ratios."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=200, help="W1 steps per child (x4 metrics)")
    parser.add_argument("--writers", type=int, default=32, help="W1 concurrent writers")
    parser.add_argument("--w2-writers", type=int, nargs="+", default=[32, 64, 256])
    parser.add_argument("--w2-seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=2, help="processes per peer")
    parser.add_argument("--only", choices=["runstream", "mlflow"])
    args = parser.parse_args()
    settings = Settings.from_env()
    rs_logging.configure("warning", "json")

    def ours() -> AbstractAsyncContextManager[str]:
        return runstream_gateway(settings, workers=args.workers)

    def theirs() -> AbstractAsyncContextManager[str]:
        return mlflow_server(settings, workers=args.workers)

    results: dict[str, dict[str, dict[str, Any]]] = {}
    if args.only != "mlflow":
        results["runstream"] = await measure("runstream", ours, args)
    if args.only != "runstream":
        results["mlflow"] = await measure("mlflow", theirs, args)
    if len(results) == 2:
        rs, ml = results["runstream"], results["mlflow"]
        emit(
            {
                "ratio": "W1 points/s",
                "runstream_over_mlflow": ratio(rs["W1"]["points_per_s"], ml["W1"]["points_per_s"]),
            }
        )
        for key in rs:
            if key.startswith("W2"):
                emit(
                    {
                        "ratio": f"{key} requests/s",
                        "runstream_over_mlflow": ratio(
                            rs[key]["requests_per_s"], ml[key]["requests_per_s"]
                        ),
                    }
                )


if __name__ == "__main__":
    asyncio.run(main())
