"""W6 long history: paged, windowed and sampled metric history, and the API's peak memory."""

from __future__ import annotations

import argparse
import random
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from api.tokens import encode_page_token
from bench import dataset
from bench.timing import Call, Peer, emit, measure


async def full_history(peer: Peer, http: aiohttp.ClientSession, run_id: str) -> int:
    """Page through a metric's history as MlflowClient.get_metric_history does; return points."""
    points, token = 0, None
    while True:
        params = {"run_id": run_id, "metric_key": dataset.HISTORY_KEY, "max_results": "25000"}
        if token:
            params["page_token"] = token
        page = await peer.get(http, "metrics/get-history", params)
        points += len(page.get("metrics", []))
        token = page.get("next_page_token")
        if not token:
            return points


def w6_kinds(peer: Peer, data: dataset.HistoryData) -> dict[str, tuple[Call, int]]:
    """Return each W6 kind's call and its request budget weight."""
    rng = random.Random(7)
    interval = "metrics/get-history-bulk-interval"

    async def full(http: aiohttp.ClientSession, i: int) -> None:
        got = await full_history(peer, http, data.long_run)
        if got != data.long_points:
            raise RuntimeError(f"full history returned {got} of {data.long_points} points")

    async def window(http: aiohttp.ClientSession, i: int) -> None:
        start = rng.randrange(max(1, data.long_points - 1000))
        params = {
            "run_ids": data.long_run,
            "metric_key": dataset.HISTORY_KEY,
            "start_step": str(start),
            "end_step": str(start + 999),
            "max_results": "1000",
        }
        await peer.fetch(http, interval, params=params)

    async def sampled(http: aiohttp.ClientSession, i: int) -> None:
        params = {"run_ids": data.long_run, "metric_key": dataset.HISTORY_KEY}
        await peer.fetch(http, interval, params=params)

    async def sampled_320(http: aiohttp.ClientSession, i: int) -> None:
        params = {"run_ids": data.long_run, "metric_key": dataset.HISTORY_KEY, "max_results": "320"}
        await peer.fetch(http, interval, params=params)

    async def many_sampled(http: aiohttp.ClientSession, i: int) -> None:
        params = [("run_ids", r) for r in data.many_runs] + [("metric_key", dataset.HISTORY_KEY)]
        await peer.fetch(http, interval, params=params)

    async def many_full(http: aiohttp.ClientSession, i: int) -> None:
        await full_history(peer, http, data.many_runs[i % len(data.many_runs)])

    kinds: dict[str, tuple[Call, int]] = {
        "full_history_long": (full, 0),
        "step_window_long": (window, 1),
        "sampled_long": (sampled, 1),  # the default: 2,500 points
        "sampled_long_320": (sampled_320, 1),  # a chart's worth
    }
    if data.many_runs:
        kinds["sampled_many_runs"] = (many_sampled, 1)
        kinds["full_history_many"] = (many_full, 0)
    return kinds


def mlflow_api_pids(pgid: int) -> list[int]:
    """Return the processes of MLflow's server group that serve HTTP: uvicorn and its workers.

    The group also holds the server's job runner and its huey consumers, which answer no
    request; they are left out.
    """
    api = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        pgrp = int(stat.rsplit(")", 1)[1].split()[2])
        if pgrp == pgid and ("uvicorn" in cmdline or "spawn_main" in cmdline):
            api.append(int(entry.name))
    return api


def reset_peak(pids: list[int]) -> None:
    """Reset each process's peak RSS (VmHWM) to its current RSS (`5` > clear_refs)."""
    for pid in pids:
        Path(f"/proc/{pid}/clear_refs").write_text("5")


def peak_rss_mb(pids: list[int]) -> dict[str, float]:
    peaks = []
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peaks.append(int(line.split()[1]) / 1024)
    return {
        "peak_rss_mb_max_process": round(max(peaks), 1),
        "peak_rss_mb_sum": round(sum(peaks), 1),
    }


async def w6(
    peers: list[Peer],
    pids: dict[str, list[int]],
    data: dataset.HistoryData,
    args: argparse.Namespace,
) -> list[dict[str, Any]]:
    figures = []
    for peer in peers:
        reset_peak(pids[peer.name])
        for kind, (call, weight) in w6_kinds(peer, data).items():
            requests = args.requests if weight else args.full_requests
            fig = await measure(call, 1, requests, args.seconds, warm=bool(weight))
            fig = {"workload": "W6", "kind": kind, "clients": 1, "peer": peer.name, **fig}
            emit(fig)
            figures.append(fig)
        fig = {
            "workload": "W6",
            "kind": "api_memory",
            "peer": peer.name,
            **peak_rss_mb(pids[peer.name]),
        }
        fig["processes"] = len(pids[peer.name])
        emit(fig)
        figures.append(fig)
    return figures


async def offset_history(peer: Peer, http: aiohttp.ClientSession, run_id: str) -> int:
    """Page through a metric's history with MLflow's offset-only tokens; return points."""
    points, offset = 0, 0
    while True:
        params = {"run_id": run_id, "metric_key": dataset.HISTORY_KEY, "max_results": "25000"}
        if offset:
            params["page_token"] = encode_page_token(offset)
        page = await peer.get(http, "metrics/get-history", params)
        got = len(page.get("metrics", []))
        points, offset = points + got, offset + got
        if not page.get("next_page_token"):
            return points


async def token_check(
    peer: Peer, dsn: str, schema: str, data: dataset.HistoryData, args: argparse.Namespace
) -> None:
    """Full paged history resumed by Runstream's tokens (keyset) and by offset-only tokens."""
    conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    try:
        after_last_page = await conn.fetch(
            "EXPLAIN (ANALYZE, BUFFERS OFF) SELECT key, value, ts, step FROM metrics "
            "WHERE run_id = $1 AND key = $2 AND (ts, step, value) > ($3, $4, $5) "
            "ORDER BY ts, step, value LIMIT 25001",
            data.long_run,
            dataset.HISTORY_KEY,
            *_point_before_last_page(data),
        )
        at_last_offset = await conn.fetch(
            "EXPLAIN (ANALYZE, BUFFERS OFF) SELECT key, value, ts, step FROM metrics "
            "WHERE run_id = $1 AND key = $2 ORDER BY ts, step, value LIMIT 25001 OFFSET $3",
            data.long_run,
            dataset.HISTORY_KEY,
            max(0, data.long_points - 25000),
        )
    finally:
        await conn.close()

    async def by_offset(http: aiohttp.ClientSession, i: int) -> None:
        got = await offset_history(peer, http, data.long_run)
        if got != data.long_points:
            raise RuntimeError(f"offset history returned {got} of {data.long_points} points")

    kinds = {"keyset_tokens": (w6_kinds(peer, data)["full_history_long"][0], after_last_page)}
    kinds["offset_tokens"] = (by_offset, at_last_offset)
    for label, (call, plan) in kinds.items():
        fig = await measure(call, 1, args.full_requests, args.seconds, warm=False)
        lines = [r[0] for r in plan]
        emit(
            {
                "workload": "W6",
                "kind": "full_history_long",
                "peer": peer.name,
                "pages": label,
                **fig,
                "last_page_plan": lines[0].strip()[:100],
                "last_page_sql": lines[-1].strip(),
            }
        )


def _point_before_last_page(data: dataset.HistoryData) -> tuple[int, int, float]:
    """Return (timestamp, step, value) of the point the last 25,000-point page resumes after."""
    step = max(0, data.long_points - 25001)
    value, ts = dataset.point(0, step)
    return ts, step, value
