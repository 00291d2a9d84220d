"""Two gateway processes racing: name uniqueness and param immutability still hold."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import aiohttp
import pytest
from eventlog import read_events
from processes import runstream_process

from ingest.events import ExperimentCreated, ParamLogged
from services.config import Settings

pytestmark = pytest.mark.integration


async def _post(
    session: aiohttp.ClientSession, url: str, path: str, body: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    async with session.post(f"{url}/api/2.0/mlflow/{path}", json=body) as resp:
        return resp.status, await resp.json()


async def test_two_gateways_decide_races_once(
    stack: Settings, topic: str, schema_factory: Any
) -> None:
    env = {
        "RUNSTREAM_TOPIC": topic,
        "RUNSTREAM_DEAD_LETTER_TOPIC": f"{topic}.dead-letter",
        "RUNSTREAM_REGISTRY_SCHEMA": await schema_factory("ingest"),
    }
    async with (
        runstream_process("ingest", env) as a,
        runstream_process("ingest", env) as b,
        aiohttp.ClientSession() as session,
    ):
        urls = [a, b] * 10
        created = await asyncio.gather(
            *(_post(session, url, "experiments/create", {"name": "sweep"}) for url in urls)
        )
        statuses = Counter((status, body.get("error_code")) for status, body in created)
        assert statuses == {(200, None): 1, (400, "RESOURCE_ALREADY_EXISTS"): 19}

        exp = next(body["experiment_id"] for status, body in created if status == 200)
        _, run = await _post(session, a, "runs/create", {"experiment_id": exp})
        run_id = run["run"]["info"]["run_id"]
        logged = await asyncio.gather(
            *(
                _post(
                    session,
                    url,
                    "runs/log-parameter",
                    {"run_id": run_id, "key": "lr", "value": str(i)},
                )
                for i, url in enumerate(urls)
            )
        )
        winners = [i for i, (status, _) in enumerate(logged) if status == 200]
        assert len(winners) == 1
        assert all(
            body.get("error_code") == "INVALID_PARAMETER_VALUE"
            for status, body in logged
            if status != 200
        )

    events = await read_events(stack.kafka_bootstrap, topic)
    assert [e.name for e in events if isinstance(e, ExperimentCreated)].count("sweep") == 1
    assert [e.value for e in events if isinstance(e, ParamLogged)] == [str(winners[0])]
