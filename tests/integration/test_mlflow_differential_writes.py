"""Bad input on the write endpoints, proven differentially: MLflow's own tracking server and
`runstream serve` get the same raw request against the same fresh state, must answer it alike
and must leave the same state behind.

Each server starts once for the module; each case builds its own experiment and seeded run on
both (names are per case, so cases never see each other's writes). An answer is compared by its
HTTP status and MLflow error code (messages may differ); the state by a normalised read-back of
the case's experiments and every run in them, metric histories included, with what a server
chooses itself (ids, artifact URIs under its own root, Runstream's derived `mlflow.rootRunId`,
MLFLOW_API.md §10.8) left out. Runstream's reads wait for its projector, so no sleeps.
The requests are in `differential_writes_cases.py`.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from differential_servers import side_by_side
from differential_writes_cases import CASES, SEED, T0, WriteCase
from mlflow.utils.rest_utils import MlflowHostCreds, http_request

from services.config import Settings

pytestmark = pytest.mark.integration

API = "/api/2.0/mlflow"
DERIVED_TAGS = frozenset({"mlflow.rootRunId"})  # Runstream's own, MLFLOW_API.md §10.8
# MLflow's SQL store keeps +/-Infinity as +/-DBL_MAX; Runstream keeps them natively (§10.6).
DBL_MAX = 1.7976931348623157e308
HISTORIES = 20  # metric histories read back per run


@dataclass(frozen=True)
class Server:
    """A server's URL and the folder under which it chooses artifact locations itself."""

    url: str
    root: Path


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


@dataclass(frozen=True)
class Outcome:
    """The answer to the request and the state it left behind (also as text, ids replaced)."""

    answer: Answer
    state: dict[str, Any]
    normalised: str


# --- talking to one server ----------------------------------------------------------------------


def _send(
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


def _ok(server: Server, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST a set-up request and return its JSON, which must be a 200."""
    status, answer = _send(server, "POST", endpoint, body=body)
    assert status == 200, f"set-up {endpoint} {body} failed on {server.url}: {status} {answer}"
    assert isinstance(answer, dict)
    return answer


def _fill(value: Any, names: dict[str, str]) -> Any:
    """Replace the `{run}`-style placeholders in every string of a JSON value."""
    if isinstance(value, str):
        for placeholder, actual in names.items():
            value = value.replace(placeholder, actual)
        return value
    if isinstance(value, list):
        return [_fill(item, names) for item in value]
    if isinstance(value, dict):
        return {key: _fill(item, names) for key, item in value.items()}
    return value


def _answer(status: int, body: Any) -> Answer:
    if isinstance(body, dict):
        code = None if status == 200 else str(body.get("error_code"))
        return Answer(status, code, str(body.get("message", "")))
    return Answer(status, "<not JSON>", str(body)[:300])


def _set_up(server: Server, case: WriteCase, index: int) -> dict[str, str]:
    """Create the case's experiment and seeded run (and its second experiment); return names."""
    name = f"case-{index:03d}"
    experiment_id = str(_ok(server, "experiments/create", {"name": name})["experiment_id"])
    run = _ok(
        server,
        "runs/create",
        {"experiment_id": experiment_id, "run_name": "seeded", "start_time": T0},
    )
    run_id = run["run"]["info"]["run_id"]
    _ok(server, "runs/log-batch", {"run_id": run_id, **SEED})
    names = {"{run}": run_id, "{exp}": experiment_id, "{name}": name}
    if case.other is not None:
        other = f"{name}-other"
        other_id = str(_ok(server, "experiments/create", {"name": other})["experiment_id"])
        if case.other == "deleted":
            _ok(server, "experiments/delete", {"experiment_id": other_id})
        names |= {"{other}": other, "{other_id}": other_id}
    if case.deleted_run:
        _ok(server, "runs/delete", {"run_id": run_id})
    if case.deleted_experiment:
        _ok(server, "experiments/delete", {"experiment_id": experiment_id})
    return names


# --- reading the state back, normalised ---------------------------------------------------------


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


def _experiment(server: Server, experiment_id: str) -> dict[str, Any]:
    status, body = _send(server, "GET", "experiments/get", params={"experiment_id": experiment_id})
    if status != 200:
        return {"read": _answer(status, body)}
    experiment = body["experiment"]
    return {
        "name": experiment["name"],
        "lifecycle_stage": experiment["lifecycle_stage"],
        "artifact_location": _location(server, experiment.get("artifact_location")),
        "tags": _pairs(experiment.get("tags")),
    }


def _history(server: Server, run_id: str, key: str) -> list[tuple[Any, ...]]:
    params = {"run_id": run_id, "metric_key": key}
    status, body = _send(server, "GET", "metrics/get-history", params=params)
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


def _runs(server: Server, experiment_id: str) -> list[dict[str, Any]]:
    body = {"experiment_ids": [experiment_id], "run_view_type": "ALL", "max_results": 100}
    status, answer = _send(server, "POST", "runs/search", body=body)
    assert status == 200, f"runs/search {body} on {server.url}: {status} {answer}"
    runs = [_run(server, run) for run in answer.get("runs", ())]
    return sorted(runs, key=repr)


def _by_name(server: Server, name: Any) -> Any:
    """Return the experiment a name resolves to, or the read's error."""
    if not isinstance(name, str) or not name:
        return None
    status, body = _send(server, "GET", "experiments/get-by-name", params={"experiment_name": name})
    if status != 200:
        return _answer(status, body)
    experiment_id = body["experiment"]["experiment_id"]
    return {**_experiment(server, experiment_id), "runs": _runs(server, experiment_id)}


def _state(server: Server, case: WriteCase, names: dict[str, str], body: Any) -> dict[str, Any]:
    """Read back everything the case's request could have changed."""
    state: dict[str, Any] = {
        "experiment": _experiment(server, names["{exp}"]),
        "runs": _runs(server, names["{exp}"]),
    }
    if "{other_id}" in names:
        state["other"] = _experiment(server, names["{other_id}"])
    if case.endpoint == "experiments/create" and isinstance(body, dict):
        state["named"] = _by_name(server, body.get("name"))
    if case.endpoint == "experiments/update" and isinstance(body, dict):
        state["renamed_to"] = _by_name(server, body.get("new_name"))
    return state


def play(server: Server, case: WriteCase, index: int) -> Outcome:
    """Set up the case's state, send its request, and read the state back."""
    names = _set_up(server, case, index)
    body = _fill(case.body, names)
    raw = None if case.raw is None else _fill(case.raw.decode(), names).encode()
    status, answer = _send(
        server, "POST", case.endpoint, body=body, raw=raw, content_type=case.content_type
    )
    state = _state(server, case, names, body)
    # The run's own id could only show up in a tag value that names it; it differs per server.
    return Outcome(_answer(status, answer), state, repr(state).replace(names["{run}"], "{run}"))


def mismatch(case: WriteCase, theirs: Outcome, ours: Outcome) -> str:
    """Describe a difference: the request, both answers, and the state that differs."""
    lines = [
        f"request: POST {case.endpoint} {str(case.raw or case.body)[:300]}",
        f"  MLflow:    {theirs.answer}",
        f"  Runstream: {ours.answer}",
    ]
    mine, other = ours.state, theirs.state
    for part in sorted(set(mine) | set(other)):
        if repr(mine.get(part)) != repr(other.get(part)):
            lines.append(f"  state {part}, MLflow:    {str(other.get(part))[:1500]}")
            lines.append(f"  state {part}, Runstream: {str(mine.get(part))[:1500]}")
    return "\n".join(lines)


# --- the two servers, once for the module -------------------------------------------------------


@pytest.fixture(scope="module")
async def servers(
    stack: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Server, Server]]:
    """Start both servers and yield (MLflow, Runstream)."""
    root = tmp_path_factory.mktemp("differential-writes")
    async with side_by_side(stack, root) as (theirs, ours):
        yield Server(theirs, root / "mlflow"), Server(ours, root / "runstream")


@pytest.mark.parametrize(
    ("index", "case"), list(enumerate(CASES)), ids=[str(case) for case in CASES]
)
async def test_bad_write_answers_and_changes_like_mlflow(
    servers: tuple[Server, Server], index: int, case: WriteCase
) -> None:
    theirs, ours = await asyncio.gather(
        *(asyncio.to_thread(play, server, case, index) for server in servers)
    )
    same = (ours.answer, ours.normalised) == (theirs.answer, theirs.normalised)
    assert same, mismatch(case, theirs, ours)
