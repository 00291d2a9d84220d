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
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from differential_state import (
    Answer,
    Server,
    answer_of,
    both_servers,
    by_name_state,
    experiment_state,
    runs_state,
    send,
)
from differential_writes_cases import CASES, SEED, T0, WriteCase

from services.config import Settings

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Outcome:
    """The answer to the request and the state it left behind (also as text, ids replaced)."""

    answer: Answer
    state: dict[str, Any]
    normalised: str


# --- setting a case up ----------------------------------------------------------------------------


def _ok(server: Server, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST a set-up request and return its JSON, which must be a 200."""
    status, answer = send(server, "POST", endpoint, body=body)
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


# --- playing a case on one server -----------------------------------------------------------------


def _state(server: Server, case: WriteCase, names: dict[str, str], body: Any) -> dict[str, Any]:
    """Read back everything the case's request could have changed."""
    state: dict[str, Any] = {
        "experiment": experiment_state(server, names["{exp}"]),
        "runs": runs_state(server, names["{exp}"]),
    }
    if "{other_id}" in names:
        state["other"] = experiment_state(server, names["{other_id}"])
    if case.endpoint == "experiments/create" and isinstance(body, dict):
        state["named"] = by_name_state(server, body.get("name"))
    if case.endpoint == "experiments/update" and isinstance(body, dict):
        state["renamed_to"] = by_name_state(server, body.get("new_name"))
    return state


def play(server: Server, case: WriteCase, index: int) -> Outcome:
    """Set up the case's state, send its request, and read the state back."""
    names = _set_up(server, case, index)
    body = _fill(case.body, names)
    raw = None if case.raw is None else _fill(case.raw.decode(), names).encode()
    status, answer = send(
        server, "POST", case.endpoint, body=body, raw=raw, content_type=case.content_type
    )
    state = _state(server, case, names, body)
    # The run's own id could only show up in a tag value that names it; it differs per server.
    return Outcome(answer_of(status, answer), state, repr(state).replace(names["{run}"], "{run}"))


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


# --- the two servers, once for the module ---------------------------------------------------------


@pytest.fixture(scope="module")
async def servers(
    stack: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Server, Server]]:
    """Start both servers and yield (MLflow, Runstream)."""
    async with both_servers(stack, tmp_path_factory.mktemp("differential-writes")) as servers:
        yield servers


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
