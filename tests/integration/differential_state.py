"""Talking to either server of a differential test over raw REST, and reading back what a
write left behind in a form both servers' answers can be compared in.

The state leaves out what a server chooses itself: ids, artifact locations under its own root,
and Runstream's derived `mlflow.rootRunId` (MLFLOW_API.md section 10.8); +-Infinity reads the
same whether stored natively or, as MLflow's SQL store keeps it, as +-DBL_MAX (section 10.6).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from differential_servers import side_by_side
from mlflow.utils.rest_utils import MlflowHostCreds, http_request

from services.config import Settings

API = "/api/2.0/mlflow"
DERIVED_TAGS = frozenset({"mlflow.rootRunId"})  # Runstream's own (MLFLOW_API.md 10.8)
DBL_MAX = 1.7976931348623157e308  # MLflow's SQL store keeps +-inf as +-DBL_MAX (10.6)
HISTORIES = 20  # metric histories read back per run


@dataclass(frozen=True)
class Server:
    """A server's URL and the folder under which it chooses artifact locations itself."""

    url: str
    root: Path


@asynccontextmanager
async def both_servers(stack: Settings, root: Path) -> AsyncIterator[tuple[Server, Server]]:
    """Run both servers with folders under `root`; yield (MLflow, Runstream)."""
    async with side_by_side(stack, root) as (theirs, ours):
        yield Server(theirs, root / "mlflow"), Server(ours, root / "runstream")


@dataclass(frozen=True)
class Answer:
    """A server's answer to the request under test; the message is shown, never compared."""

    status: int
    error_code: str | None
    message: str = field(default="", compare=False)

    def __str__(self) -> str:
        if self.status == 200:
            return "200"
        return f"{self.status} {self.error_code} {self.message[:300]!r}"


def send(
    server: Server,
    method: str,
    endpoint: str,
    *,
    body: Any = None,
    raw: bytes | None = None,
    content_type: str | None = "application/json",
    params: dict[str, Any] | None = None,
) -> tuple[int, Any]:
    """Send one request without raising; return the status and the JSON body (or the text)."""
    kwargs: dict[str, Any] = {}
    if method == "GET":
        kwargs["params"] = params
    elif raw is not None:
        kwargs["data"] = raw
    else:
        kwargs["json"] = body
    headers = {"Content-Type": content_type} if content_type and method != "GET" else None
    response = http_request(
        MlflowHostCreds(server.url),
        f"{API}/{endpoint}",
        method,
        max_retries=0,
        raise_on_status=False,
        extra_headers=headers,
        **kwargs,
    )
    try:
        return response.status_code, response.json()
    except ValueError:
        return response.status_code, response.text


def answer_of(status: int, body: Any) -> Answer:
    if isinstance(body, dict):
        code = None if status == 200 else str(body.get("error_code"))
        return Answer(status, code, str(body.get("message", "")))
    return Answer(status, "<not JSON>", str(body)[:300])


def _metric_value(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, (int, float)) and abs(value) >= DBL_MAX:
        return "Infinity" if value > 0 else "-Infinity"
    return value


def _point(metric: dict[str, Any]) -> tuple[Any, ...]:
    return (_metric_value(metric.get("value")), metric.get("timestamp"), metric.get("step", 0))


def _pairs(entries: list[dict[str, Any]] | None) -> dict[str, str]:
    pairs = ((e["key"], e.get("value", "")) for e in entries or ())
    return dict(sorted(pair for pair in pairs if pair[0] not in DERIVED_TAGS))


def _location(server: Server, location: str | None) -> str | None:
    # Where a server puts artifacts by default is its own choice (MLFLOW_API.md §10.1).
    return "<server's own>" if location and str(server.root) in location else location


def experiment_state(server: Server, experiment_id: str) -> dict[str, Any]:
    status, body = send(server, "GET", "experiments/get", params={"experiment_id": experiment_id})
    if status != 200:
        return {"read": answer_of(status, body)}
    experiment = body["experiment"]
    return {
        "name": experiment["name"],
        "lifecycle_stage": experiment["lifecycle_stage"],
        "artifact_location": _location(server, experiment.get("artifact_location")),
        "tags": _pairs(experiment.get("tags")),
    }


def _history(server: Server, run_id: str, key: str) -> list[tuple[Any, ...]]:
    params = {"run_id": run_id, "metric_key": key}
    status, body = send(server, "GET", "metrics/get-history", params=params)
    assert status == 200, f"get-history {params} on {server.url}: {status} {body}"
    return sorted((_point(m) for m in body.get("metrics", ())), key=repr)


def _run(server: Server, run: dict[str, Any]) -> dict[str, Any]:
    info, data = run["info"], run.get("data", {})
    metrics = dict(sorted((m["key"], _point(m)) for m in data.get("metrics", ())))
    return {
        "run_name": info.get("run_name"),
        "status": info.get("status"),
        "lifecycle_stage": info.get("lifecycle_stage"),
        "user_id": info.get("user_id"),
        "start_time": info.get("start_time"),
        "end_time": info.get("end_time"),
        "params": _pairs(data.get("params")),
        "tags": _pairs(data.get("tags")),
        "metrics": metrics,
        # Batches of hundreds of keys are compared by their latest values; the rest in full.
        "history": {
            key: _history(server, info["run_id"], key) for key in sorted(metrics)[:HISTORIES]
        },
    }


def runs_state(server: Server, experiment_id: str) -> list[dict[str, Any]]:
    body = {"experiment_ids": [experiment_id], "run_view_type": "ALL", "max_results": 100}
    status, answer = send(server, "POST", "runs/search", body=body)
    assert status == 200, f"runs/search {body} on {server.url}: {status} {answer}"
    runs = [_run(server, run) for run in answer.get("runs", ())]
    return sorted(runs, key=repr)


def by_name_state(server: Server, name: Any) -> Any:
    """Return the experiment a name resolves to, or the read's error."""
    if not isinstance(name, str) or not name:
        return None
    status, body = send(server, "GET", "experiments/get-by-name", params={"experiment_name": name})
    if status != 200:
        return answer_of(status, body)
    experiment_id = body["experiment"]["experiment_id"]
    return {**experiment_state(server, experiment_id), "runs": runs_state(server, experiment_id)}
