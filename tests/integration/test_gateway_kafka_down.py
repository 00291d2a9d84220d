"""With Kafka stopped, writes get 503 (which the mlflow client retries), never a false 200."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from dataclasses import replace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from conftest import gateway_settings
from eventlog import read_events

from deploy.local.process import port_open
from ingest.events import MetricLogged
from ingest.topics import ensure_topics
from services.cli import local_stack
from services.config import Settings
from services.runtime import new_app, start_gateway

pytestmark = pytest.mark.integration


async def _log(client: TestClient[Any, Any], run_id: str, step: int) -> int:
    resp = await client.post(
        "/api/2.0/mlflow/runs/log-metric",
        json={"run_id": run_id, "key": "loss", "value": 1.0, "timestamp": 1, "step": step},
    )
    body = await resp.json()
    if resp.status != 200:
        assert (resp.status, body["error_code"]) == (503, "TEMPORARILY_UNAVAILABLE"), body
    return resp.status


async def test_writes_get_503_while_kafka_is_down(
    stack: Settings, topic: str, schema_factory: Any
) -> None:
    assert stack.external_kafka is None, "this test stops and restarts the local broker"
    settings = replace(
        gateway_settings(stack, topic, await schema_factory("ingest")), delivery_timeout_s=3.0
    )
    node = local_stack(settings).kafka(resolve=True)
    async with AsyncExitStack() as resources:
        app = new_app()
        (await start_gateway(settings, resources)).add_routes(app)
        client: TestClient[Any, Any] = TestClient(TestServer(app))
        await client.start_server()
        resources.push_async_callback(client.close)
        resp = await client.post("/api/2.0/mlflow/runs/create", json={"experiment_id": "0"})
        run_id = (await resp.json())["run"]["info"]["run_id"]
        acknowledged = [s for s in range(5) if await _log(client, run_id, s) == 200]
        assert acknowledged == list(range(5))

        node.stop()
        try:
            down = [await _log(client, run_id, 100 + s) for s in range(3)]
            assert down == [503, 503, 503]
        finally:
            node.start()
            await ensure_topics(settings.kafka_bootstrap, topic, 6, f"{topic}.dead-letter")
        assert port_open(settings.kafka_port)

        # The producer reconnects by itself: writes succeed again once the broker is back.
        async with asyncio.timeout(60):
            while await _log(client, run_id, 200) != 200:
                pass
        acknowledged.append(200)

    logged = {
        e.step
        for e in await read_events(settings.kafka_bootstrap, topic)
        if isinstance(e, MetricLogged)
    }
    assert set(acknowledged) <= logged
