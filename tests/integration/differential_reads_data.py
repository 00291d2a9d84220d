"""The dataset of the differential read test, written to both servers over raw REST.

Every run starts at its own time (T0 + 1000 * its index) except `no-start`, which sends none,
so run searches never fall back to the `run_id` tie-breaker, which differs between servers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp
from differential_servers import past_this_millisecond

T0 = 1_700_000_000_000
PARENT = "mlflow.parentRunId"
EXPERIMENTS: dict[str, dict[str, str]] = {
    "main": {"team": "vision", "blank": ""},
    "bare": {},
    "gone": {"team": "old"},
}
# Runs created without a start_time: the server decides it, so the comparison hides it.
SERVER_STARTED = frozenset({"no-start"})
Point = tuple[int, int, float | str]  # (step, timestamp offset, value); strings for NaN/inf


def _curve(points: int, stride: int = 1) -> list[Point]:
    return [(i * stride, i, i * 0.5) for i in range(points)]


# metric key -> points, logged in this order (out of order on purpose)
ODD_METRICS: dict[str, list[Point]] = {
    "m": [(5, 50, 1.0), (1, 10, 2.0), (-3, 90, -1.5), (3, 30, 0.25), (-1, 90, 4.0)],
    "dup": [(2, 1, 1.0), (2, 2, 3.0), (4, 5, 7.0), (4, 5, 6.0), (2, 2, 3.0)],
    "special": [(0, 0, "NaN"), (1, 1, "Infinity"), (2, 2, "-Infinity")],
    "nan_last": [(0, 0, 1.0), (1, 1, "NaN")],
    "int": [(0, 0, 3), (1, 1, -0.0), (2, 2, 1e-300)],
}
# Left out: NaN beside numbers at one (step, timestamp). MLflow's SQL store keeps NaN as 0 with
# a flag, so it ranks there as 0; Runstream keeps NaN itself (MLFLOW_API section 10.6), which
# ranks above every number, as PostgreSQL orders it: the latest value and the history's order
# differ in that tie alone.
# 3,000 and 2,501 points, one a step; 2,600 points on every third step plus duplicates
LONG_METRICS: dict[str, list[Point]] = {
    "curve": _curve(3000),
    "sparse": [*_curve(2600, 3), (30, 5000, 9.0), (30, 5001, 8.0), (7797, 9000, -1.0)],
}
LONG2_METRICS: dict[str, list[Point]] = {
    "curve": _curve(2501),
    "sparse": [(s, s, float(s)) for s in (-20, -5, 0, 9, 300, 301, 7000)],
}
DATASETS = [
    {
        "tags": [{"key": "mlflow.data.context", "value": "train"}],
        "dataset": {
            "name": "mnist",
            "digest": "d1",
            "source_type": "local",
            "source": "file:///mnist",
            "schema": '{"mlflow_colspec": []}',
            "profile": '{"rows": 10}',
        },
    },
    {
        "dataset": {
            "name": "cifar",
            "digest": "d2",
            "source_type": "http",
            "source": "https://example.com/cifar",
        },
    },
]


@dataclass(frozen=True)
class RunSpec:
    """One run as both servers get it."""

    name: str
    experiment: str = "main"
    parent: str | None = None
    user: str | None = "alice"
    params: tuple[tuple[str, str], ...] = ()
    tags: tuple[tuple[str, str], ...] = ()
    metrics: tuple[tuple[str, list[Point]], ...] = ()
    datasets: bool = False
    status: str | None = None
    deleted: bool = False
    restored: bool = False
    renamed: str | None = None


RUNS: list[RunSpec] = [
    RunSpec("empty"),
    RunSpec("no-start", user=None),
    RunSpec(
        "odd",
        params=(("lr", "0.1"), ("empty", "")),
        tags=(("note", ""), ("stage", "dev")),
        metrics=tuple(ODD_METRICS.items()),
    ),
    RunSpec("long", metrics=tuple(LONG_METRICS.items()), params=(("lr", "0.1"),)),
    RunSpec("long-2", metrics=tuple(LONG2_METRICS.items())),
    RunSpec("datasets", datasets=True, params=(("lr", "0.01"),)),
    RunSpec("parent", metrics=(("acc", [(0, 0, 0.5)]),)),
    RunSpec("child", parent="parent", metrics=(("acc", [(0, 0, 0.7)]),)),
    RunSpec("grandchild", parent="child", status="KILLED"),
    RunSpec("deleted", params=(("lr", "1"),), metrics=(("acc", [(0, 0, 0.1)]),), deleted=True),
    RunSpec("draft", renamed="final", tags=(("stage", "prod"),)),
    RunSpec("finished", status="FINISHED", metrics=(("acc", [(1, 0, 0.9)]),)),
    RunSpec("restored", deleted=True, restored=True),
    RunSpec("bare-run", experiment="bare"),
    RunSpec("gone-run", experiment="gone", params=(("lr", "0.1"),)),
]
START = {run.name: T0 + 1000 * i for i, run in enumerate(RUNS)}


@dataclass(frozen=True)
class Ids:
    """A server's base URL and the ids it gave the dataset's experiments and runs."""

    url: str
    experiments: dict[str, str]  # by short name ("main")
    runs: dict[str, str]  # by final run name


async def _ok(http: aiohttp.ClientSession, url: str, path: str, body: Any) -> Any:
    async with http.post(f"{url}/api/2.0/mlflow/{path}", json=body) as response:
        answer = await response.json()
        assert response.status == 200, (path, answer)
        return answer


def _metrics(key: str, points: list[Point], start: int) -> list[dict[str, Any]]:
    return [
        {"key": key, "value": value, "timestamp": start + ts, "step": step}
        for step, ts, value in points
    ]


async def load(http: aiohttp.ClientSession, url: str) -> Ids:
    """Write the dataset to the server at `url` over raw REST; return the ids it assigned."""
    experiments: dict[str, str] = {}
    for name, tags in EXPERIMENTS.items():
        body: dict[str, Any] = {"name": f"reads-{name}"}
        if tags:
            body["tags"] = [{"key": k, "value": v} for k, v in tags.items()]
        experiments[name] = (await _ok(http, url, "experiments/create", body))["experiment_id"]
        past_this_millisecond()
    runs: dict[str, str] = {}
    for spec in RUNS:
        body = {"experiment_id": experiments[spec.experiment], "run_name": spec.name}
        if spec.name not in SERVER_STARTED:
            body["start_time"] = START[spec.name]
        if spec.user is not None:
            body["user_id"] = spec.user
        if spec.parent is not None:
            body["tags"] = [{"key": PARENT, "value": runs[spec.parent]}]
        run_id = (await _ok(http, url, "runs/create", body))["run"]["info"]["run_id"]
        runs[spec.name] = run_id
        metrics = [
            m for key, points in spec.metrics for m in _metrics(key, points, START[spec.name])
        ]
        params = [{"key": k, "value": v} for k, v in spec.params]
        tags = [{"key": k, "value": v} for k, v in spec.tags]
        await _ok(http, url, "runs/log-batch", {"run_id": run_id, "params": params, "tags": tags})
        for i in range(0, len(metrics), 1000):  # LogBatch takes 1,000 entities at most
            batch = {"run_id": run_id, "metrics": metrics[i : i + 1000]}
            await _ok(http, url, "runs/log-batch", batch)
        if spec.datasets:
            await _ok(http, url, "runs/log-inputs", {"run_id": run_id, "datasets": DATASETS})
        if spec.renamed:
            await _ok(http, url, "runs/update", {"run_id": run_id, "run_name": spec.renamed})
            runs[spec.renamed] = runs.pop(spec.name)
        if spec.status:
            end = START[spec.name] + 500
            update = {"run_id": run_id, "status": spec.status, "end_time": end}
            await _ok(http, url, "runs/update", update)
        if spec.deleted:
            await _ok(http, url, "runs/delete", {"run_id": run_id})
        if spec.restored:
            await _ok(http, url, "runs/restore", {"run_id": run_id})
    await _ok(http, url, "experiments/delete", {"experiment_id": experiments["gone"]})
    return Ids(url, experiments, runs)
