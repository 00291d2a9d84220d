"""Valid and invalid writes in random order, proven differentially: MLflow's own tracking server
and `runstream serve` get the same sequence of requests, must answer each alike (status and
error code) and must end in the same state.

Each sequence is drawn with a fixed seed and works on an experiment of its own: three runs
(the third a child of the first) take metrics on a few keys, steps and timestamps (so points
tie, repeat and arrive out of order), params re-logged with the same or another value, tags set
and deleted (mlflow.runName among them), batches, updates, deletes and restores. This checks
what the projector folds (the latest value of a metric, a rename by tag, a status, a deleted
run's refusals) against what MLflow's store does with the same requests.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
from differential_state import Answer, Server, answer_of, both_servers, runs_state, send

from services.config import Settings

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000
SEQUENCES = 12
STEPS = 30  # requests per sequence
RUNS = 3
_VALUES = (-1.5, 0.0, 0.5, 2.0, 7.0)
_TAG_KEYS = ("t", "u", "mlflow.runName")


def _metric(pick: random.Random) -> dict[str, Any]:
    return {
        "key": pick.choice(("a", "b")),
        "value": pick.choice(_VALUES),
        "timestamp": T0 + pick.randrange(3),
        "step": pick.randrange(-1, 3),
    }


def _entry(pick: random.Random, keys: tuple[str, ...], values: tuple[str, ...]) -> dict[str, str]:
    return {"key": pick.choice(keys), "value": pick.choice(values)}


def _request(pick: random.Random) -> tuple[str, dict[str, Any]]:
    """Return one request: its endpoint and body, `{run:i}` standing for run i's id."""
    body: dict[str, Any] = {"run_id": f"{{run:{pick.randrange(RUNS)}}}"}
    kind = pick.choices(
        ("metric", "batch", "param", "tag", "untag", "update", "delete", "restore"),
        weights=(6, 5, 3, 3, 2, 2, 1, 1),
    )[0]
    if kind == "metric":
        return "runs/log-metric", {**body, **_metric(pick)}
    if kind == "batch":
        body["metrics"] = [_metric(pick) for _ in range(pick.randrange(4))]
        body["params"] = [_entry(pick, ("p", "q"), ("x", "y")) for _ in range(pick.randrange(3))]
        body["tags"] = [_entry(pick, _TAG_KEYS, ("x", "y", "")) for _ in range(pick.randrange(3))]
        return "runs/log-batch", body
    if kind == "param":
        return "runs/log-parameter", {**body, **_entry(pick, ("p", "q"), ("x", "y"))}
    if kind == "tag":
        return "runs/set-tag", {**body, **_entry(pick, _TAG_KEYS, ("x", "y", ""))}
    if kind == "untag":
        return "runs/delete-tag", {**body, "key": pick.choice(("t", "u"))}
    if kind == "update":
        if pick.random() < 0.7:
            body["status"] = pick.choice(("RUNNING", "FINISHED", "FAILED", "KILLED"))
        if pick.random() < 0.5:
            body["end_time"] = T0 + 5 + pick.randrange(3)
        if pick.random() < 0.4:
            body["run_name"] = pick.choice(("", "renamed"))
        return "runs/update", body
    return f"runs/{kind}", body


def sequence(seed: int) -> list[tuple[str, dict[str, Any]]]:
    """Return the requests of sequence `seed`, the same every time."""
    pick = random.Random(seed)
    return [_request(pick) for _ in range(STEPS)]


def _fill(value: Any, runs: list[str]) -> Any:
    if isinstance(value, str):
        for index, run_id in enumerate(runs):
            value = value.replace(f"{{run:{index}}}", run_id)
        return value
    if isinstance(value, list):
        return [_fill(item, runs) for item in value]
    if isinstance(value, dict):
        return {key: _fill(item, runs) for key, item in value.items()}
    return value


def play(server: Server, seed: int) -> tuple[list[Answer], str]:
    """Create the sequence's experiment and runs, send its requests, and read the state back:
    every answer, and the state as text with the run ids replaced by their indexes."""
    status, created = send(server, "POST", "experiments/create", body={"name": f"seq-{seed}"})
    assert status == 200, created
    experiment_id = created["experiment_id"]
    runs: list[str] = []
    for index in range(RUNS):
        tags = [{"key": "mlflow.parentRunId", "value": runs[0]}] if index == 2 else []
        body = {
            "experiment_id": experiment_id,
            "run_name": f"run-{index}",
            "start_time": T0 + index,
            "tags": tags,
        }
        status, answer = send(server, "POST", "runs/create", body=body)
        assert status == 200, answer
        runs.append(answer["run"]["info"]["run_id"])
    answers = []
    for endpoint, body in sequence(seed):
        answers.append(answer_of(*send(server, "POST", endpoint, body=_fill(body, runs))))
    state = repr(runs_state(server, experiment_id))
    for index, run_id in enumerate(runs):
        state = state.replace(run_id, f"{{run:{index}}}")
    return answers, state


@pytest.fixture(scope="module")
async def servers(
    stack: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Server, Server]]:
    """Start both servers and yield (MLflow, Runstream)."""
    async with both_servers(stack, tmp_path_factory.mktemp("differential-sequences")) as servers:
        yield servers


def test_the_sequences_reach_every_write_endpoint_they_draw_from() -> None:
    drawn = [endpoint for seed in range(SEQUENCES) for endpoint, _ in sequence(seed)]
    assert {e.removeprefix("runs/") for e in drawn} == {
        "log-metric", "log-batch", "log-parameter", "set-tag", "delete-tag", "update", "delete",
        "restore",
    }  # fmt: skip


@pytest.mark.parametrize("seed", range(SEQUENCES))
async def test_a_sequence_answers_and_ends_like_mlflow(
    servers: tuple[Server, Server], seed: int
) -> None:
    (their_answers, their_state), (our_answers, our_state) = await asyncio.gather(
        *(asyncio.to_thread(play, server, seed) for server in servers)
    )
    steps = sequence(seed)
    for index, (theirs, ours) in enumerate(zip(their_answers, our_answers, strict=True)):
        endpoint, body = steps[index]
        assert ours == theirs, (
            f"request {index}: {endpoint} {body}\n  MLflow: {theirs}\n  Runstream: {ours}"
        )
    assert our_state == their_state, f"MLflow:    {their_state}\nRunstream: {our_state}"
