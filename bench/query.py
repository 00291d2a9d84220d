"""W5 search, W6 long history and the seed scenario, Runstream against MLflow's server, same run.

    .venv/bin/python -m bench.query                      # full size (100k runs, a 1M-point metric)
    .venv/bin/python -m bench.query --runs 5000 --long-points 50000 --many 5 --many-points 5000

Both peers are started side by side (Runstream `serve`, MLflow's server on PostgreSQL) and loaded
in bulk with the same data (bench/dataset.py); W6 is in bench/history.py. Prints one JSON line
per figure, then ratios (MLflow's latency over Runstream's: above 1 means Runstream is faster).
Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from bench import dataset
from bench.history import mlflow_api_pids, token_check, w6
from bench.peers import mlflow_server, runstream_gateway
from bench.timing import EVENTUAL, Peer, emit, measure, steal_ms, wait_quiet
from projector.logread import end_offsets
from services.config import Settings

# --- W5 search ------------------------------------------------------------------------------


def _ids(page: dict[str, Any]) -> list[str]:
    return [r["info"]["run_id"] for r in page.get("runs", [])]


async def deep_tokens(peer: Peer, pages: int) -> list[tuple[int, str]]:
    """Walk `pages` pages of 100 in each experiment; return the next page's token per experiment."""
    tokens = []
    async with aiohttp.ClientSession() as http:
        for exp in dataset.W5_EXPERIMENTS:
            token = None
            for _ in range(pages):
                body: dict[str, Any] = {"experiment_ids": [str(exp)], "max_results": 100}
                if token:
                    body["page_token"] = token
                token = (await peer.search(http, body)).get("next_page_token")
            if token:
                tokens.append((exp, token))
    return tokens


MIX = "analyst_mix"


def w5_kinds(data: dataset.SearchData, tokens: list[tuple[int, str]], root: bool) -> dict[str, Any]:
    """Return each query kind's request body for request number i."""
    exps = [str(e) for e in dataset.W5_EXPERIMENTS]

    def param_metric(i: int) -> dict[str, Any]:
        opt = dataset.OPTIMIZERS[i % 3]
        return {
            "experiment_ids": [exps[i % len(exps)]],
            "filter": f"params.optimizer = '{opt}' and metrics.accuracy > 0.9",
            "order_by": ["metrics.loss ASC"],
            "max_results": 100,
        }

    def params_metric(i: int) -> dict[str, Any]:
        # beyond BENCHMARKS.md's mix: the best runs of one configuration (two param equalities)
        opt, lr = dataset.OPTIMIZERS[i % 3], dataset.LRS[i % len(dataset.LRS)]
        return {
            "experiment_ids": [exps[i % len(exps)]],
            "filter": f"params.optimizer = '{opt}' and params.lr = '{lr}'",
            "order_by": ["metrics.loss ASC"],
            "max_results": 100,
        }

    def tag_all(i: int) -> dict[str, Any]:
        return {
            "experiment_ids": exps,
            "filter": f"tags.team = '{dataset.TEAMS[i % len(dataset.TEAMS)]}'",
            "max_results": 100,
        }

    def deep_page(i: int) -> dict[str, Any]:
        exp, token = tokens[i % len(tokens)]
        return {"experiment_ids": [str(exp)], "max_results": 100, "page_token": token}

    def lineage(runs: list[tuple[int, str]], tag: str) -> Callable[[int], dict[str, Any]]:
        def body(i: int) -> dict[str, Any]:
            exp, run_id = runs[(i * 7919) % len(runs)]
            return {"experiment_ids": [str(exp)], "filter": f"tags.{tag} = '{run_id}'"}

        return body

    kinds = {
        "param_metric": param_metric,
        "params_metric": params_metric,
        "tag_all_experiments": tag_all,
        "deep_page": deep_page,
        "parent_lineage": lineage(data.mids, "mlflow.parentRunId"),
    }
    if root:
        kinds["root_lineage"] = lineage(data.roots, "mlflow.rootRunId")
    # BENCHMARKS.md's mix itself, each kind it names in turn (the lineage filter: parentRunId,
    # which both peers have): what 8 analysts searching at once ask, where each kind above is
    # timed alone, the costliest one saturating the machine by itself.
    mixed = [param_metric, tag_all, deep_page, kinds["parent_lineage"]]
    kinds[MIX] = lambda i: mixed[i % len(mixed)](i // len(mixed))
    return kinds


async def w5(
    peers: list[Peer], data: dataset.SearchData, args: argparse.Namespace
) -> list[dict[str, Any]]:
    figures = []
    tokens = {p.name: await deep_tokens(p, args.deep_pages) for p in peers}
    kinds = {p.name: w5_kinds(data, tokens[p.name], p.name != "mlflow") for p in peers}
    # Do the peers answer the same? (the first body of each kind; ordered kinds compare order)
    async with aiohttp.ClientSession() as http:
        for kind in kinds["mlflow"]:
            if kind == MIX:  # its bodies are the other kinds'
                continue
            answers = [_ids(await p.search(http, kinds[p.name][kind](1))) for p in peers]
            same = all(a == answers[0] for a in answers)
            if kind not in {"param_metric", "params_metric"} and not same:
                same = all(set(a) == set(answers[0]) for a in answers)
            emit({"workload": "W5", "check": kind, "rows": len(answers[0]), "same_answer": same})
    for clients in (1, 8):
        for peer in peers:
            for kind, body in kinds[peer.name].items():

                async def call(
                    http: aiohttp.ClientSession, i: int, body: Any = body, peer: Peer = peer
                ) -> None:
                    await peer.fetch(http, "runs/search", body=body(i))

                requests = args.requests * (1 if clients == 1 else 2)
                fig = await measure(call, clients, requests, args.seconds)
                fig = {"workload": "W5", "kind": kind, "clients": clients, "peer": peer.name, **fig}
                emit(fig)
                figures.append(fig)
    return figures


# --- Seed scenario ----------------------------------------------------------------------------

TUTORIAL = r"""
import json, os, random, time
import mlflow
rng = random.Random(1)
started, cpu = time.perf_counter(), time.process_time()
exp = mlflow.set_experiment("tuning-tutorial-" + os.environ["BENCH_TAG"])
ok = True
for p in range(3):
    with mlflow.start_run(run_name=f"parent-{p}") as parent:
        for c in range(25):
            with mlflow.start_run(run_name=f"child-{p}-{c}", nested=True):
                lr, depth = rng.choice([0.1, 0.01, 0.001]), rng.randint(2, 8)
                mlflow.log_params({"lr": lr, "depth": depth, "n_estimators": 100})
                for step in range(10):
                    mlflow.log_metric("loss", 1.0 / (step + 1) + rng.random() / 10, step=step)
                    mlflow.log_metric("accuracy", rng.random(), step=step)
        best = mlflow.search_runs(
            experiment_ids=[exp.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
            order_by=["metrics.accuracy DESC"],
            max_results=1,
        )
        ok = ok and len(best) == 1
        mlflow.log_metric("best_accuracy", float(best["metrics.accuracy"].iloc[0]))
print(json.dumps({
    "wall_s": time.perf_counter() - started,
    "client_cpu_s": time.process_time() - cpu,
    "found_best": ok,
}))
"""


def seed_scenario(name: str, url: str) -> dict[str, Any]:
    """Run the tutorial with the unmodified mlflow client in a subprocess; time it inside.

    First waits for a quiet machine: MLflow's server goes on importing in its workers after it
    answers, and that CPU would count against whichever peer runs first."""
    settled = wait_quiet()
    env = {**os.environ, "MLFLOW_TRACKING_URI": url, "BENCH_TAG": f"{name}-{time.time_ns()}"}
    with tempfile.TemporaryDirectory() as cwd:
        try:
            done = subprocess.run(  # noqa: S603 - our own interpreter and script
                [sys.executable, "-c", TUTORIAL],
                check=False,
                env=env,
                cwd=cwd,
                capture_output=True,
                text=True,
                timeout=900,
            )
        except subprocess.TimeoutExpired:
            return {"workload": "seed", "peer": name, "error": "no end within 900 s"}
    if done.returncode != 0:
        return {"workload": "seed", "peer": name, "error": done.stderr[-400:]}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        "workload": "seed",
        "peer": name,
        "settled_s": settled,
        "wall_s": round(result["wall_s"], 2),
        # The client's own CPU time: no server can make the tutorial faster than this
        "client_cpu_s": round(result["client_cpu_s"], 2),
        "found_best": result["found_best"],
    }


def seed_scenarios(runstream_url: str, mlflow_url: str, repeats: int) -> None:
    """Run the tutorial `repeats` times per peer, the peers taking turns (and turns about who
    goes first), and emit the ratio of the median walls: one run of about 10 s is at the mercy
    of this machine's stolen time. A failed run ends the scenario with a ratio line saying so."""
    peers = [("runstream_strong", runstream_url), ("mlflow", mlflow_url)]
    walls: dict[str, list[float]] = {name: [] for name, _ in peers}
    client_cpu: dict[str, list[float]] = {name: [] for name, _ in peers}
    for turn in range(repeats):
        for name, url in peers if turn % 2 == 0 else peers[::-1]:
            stolen = steal_ms()
            fig = seed_scenario(name, url)
            emit({**fig, "turn": turn + 1, "steal_ms": steal_ms() - stolen})
            if "wall_s" not in fig or not fig["found_best"]:  # no answer, or a wrong one
                emit({"ratio": "seed wall mlflow/runstream", "error": f"{name} run failed"})
                return
            walls[name].append(fig["wall_s"])
            client_cpu[name].append(fig["client_cpu_s"])
    ours, theirs = statistics.median(walls["runstream_strong"]), statistics.median(walls["mlflow"])
    emit(
        {
            "ratio": "seed wall mlflow/runstream",
            "runstream_median_s": ours,
            "mlflow_median_s": theirs,
            "x": round(theirs / ours, 1),
            # what a server answering in no time at all would reach
            "ceiling_x": round(theirs / statistics.median(client_cpu["runstream_strong"]), 1),
        }
    )


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


# --- Orchestration ----------------------------------------------------------------------------


def ratios(figures: list[dict[str, Any]]) -> None:
    """Emit MLflow's p50/p99 over each Runstream mode's, per workload, kind and client count."""
    index = {(f["workload"], f.get("kind"), f.get("clients"), f["peer"]): f for f in figures}
    for (workload, kind, clients, peer), fig in index.items():
        if peer != "mlflow" or "p99_ms" not in fig:
            continue
        for mode in ("runstream_strong", "runstream_eventual"):
            rs = index.get((workload, kind, clients, mode))
            if rs and rs["p50_ms"] and rs["p99_ms"]:
                emit(
                    {
                        "ratio": f"{workload} {kind} clients={clients} mlflow/{mode}",
                        "p50": round(fig["p50_ms"] / rs["p50_ms"], 1),
                        "p99": round(fig["p99_ms"] / rs["p99_ms"], 1),
                    }
                )


async def main(args: argparse.Namespace) -> None:
    settings = Settings.from_env()
    emit(
        {"conditions": {"cpus": os.cpu_count(), "loadavg_at_start": os.getloadavg(), **vars(args)}}
    )
    search = dataset.search_data(args.seed, args.runs) if args.runs else None
    history = dataset.history_data(args.seed, args.long_points, args.many, args.many_points)
    # The load generator's own full GC passes walked the 100k generated runs and stalled every
    # request in flight, whichever peer it was timing (W5 deep page p99 99 -> 72 ms with this)
    gc.collect()
    gc.freeze()
    rs_info: dict[str, Any] = {}
    ml_info: dict[str, Any] = {}
    async with (
        runstream_gateway(settings, workers=args.workers, role="serve", details=rs_info) as rs_url,
        mlflow_server(settings, workers=2, details=ml_info) as ml_url,
    ):
        figures: list[dict[str, Any]] = []
        if args.seed_scenario:
            seed_scenarios(rs_url, ml_url, args.seed_repeats)
        began = time.perf_counter()
        events = await dataset.produce(
            settings.kafka_bootstrap, rs_info["topic"], dataset.runstream_records(search, history)
        )
        produced = time.perf_counter() - began
        ends = await end_offsets(settings.kafka_bootstrap, rs_info["topic"])
        caught = await dataset.wait_projected(
            settings.database_url,
            rs_info["read_schema"],
            rs_info["topic"],
            ends,
            args.catchup_deadline,
        )
        emit(
            {
                "load": "runstream",
                "events": events,
                "produce_s": round(produced, 1),
                "projector_catchup_after_produce_s": round(caught, 1),
            }
        )
        ml_dsn = settings.database_url.rsplit("/", 1)[0] + f"/{ml_info['database']}"
        began = time.perf_counter()
        rows = await dataset.load_mlflow(ml_dsn, search, history)
        emit({"load": "mlflow", "rows": rows, "copy_s": round(time.perf_counter() - began, 1)})
        vacuumed = {
            "runstream": await dataset.settle(settings.database_url, rs_info["read_schema"]),
            "mlflow": await dataset.settle(ml_dsn),
        }
        emit(
            {"settle": "vacuum_analyze_checkpoint", **{k: round(v, 1) for k, v in vacuumed.items()}}
        )
        wait_quiet()
        peers = [
            Peer("runstream_strong", rs_url),
            Peer("runstream_eventual", rs_url, EVENTUAL),
            Peer("mlflow", ml_url),
        ]
        if search is not None:
            figures += await w5(peers, search, args)
        pids = {
            "runstream_strong": rs_info["pids"],
            "runstream_eventual": rs_info["pids"],
            "mlflow": mlflow_api_pids(ml_info["pgid"]),
        }
        figures += await w6(peers, pids, history, args)
        if args.token_check:
            await token_check(
                peers[1], settings.database_url, rs_info["read_schema"], history, args
            )
        ratios(figures)
    emit({"conditions": {"loadavg_at_end": os.getloadavg()}})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=100_000, help="W5 runs (0: skip W5)")
    parser.add_argument(
        "--long-points", type=int, default=1_000_000, help="W6 points of the long metric"
    )
    parser.add_argument(
        "--many", type=int, default=10, help="W6 extra runs (100 for the full spec)"
    )
    parser.add_argument("--many-points", type=int, default=10_000, help="W6 points per extra run")
    parser.add_argument(
        "--requests", type=int, default=200, help="requests per figure (x2 at 8 clients)"
    )
    parser.add_argument(
        "--full-requests", type=int, default=10, help="full paged histories per figure"
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="time cap per figure")
    parser.add_argument(
        "--deep-pages", type=int, default=10, help="pages of 100 walked before a deep page"
    )
    parser.add_argument("--workers", type=int, default=2, help="Runstream serve processes")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--catchup-deadline", type=float, default=900.0)
    parser.add_argument("--no-seed-scenario", dest="seed_scenario", action="store_false")
    parser.add_argument(
        "--seed-repeats", type=_at_least_one, default=3, help="seed scenario runs per peer (median)"
    )
    parser.add_argument("--no-token-check", dest="token_check", action="store_false")
    asyncio.run(main(parser.parse_args()))
