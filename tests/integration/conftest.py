"""Fixtures for integration tests: an in-process ingest gateway on a per-test topic and schema."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer
from eventlog import read_events

from ingest.events import Event
from services.config import Settings
from services.runtime import new_app, start_gateway


@dataclass
class GatewayHarness:
    """An HTTP client on a running gateway, plus what it emits to."""

    client: TestClient[Any, Any]
    settings: Settings

    async def post(
        self, path: str, body: dict[str, Any], prefix: str = "/api/2.0/mlflow"
    ) -> ClientResponse:
        """POST a JSON body to an MLflow endpoint."""
        # A stream, so multi-megabyte bodies do not trip aiohttp's large-bytes warning.
        data = io.BytesIO(json.dumps(body).encode())
        return await self.client.post(
            f"{prefix}/{path}", data=data, headers={"Content-Type": "application/json"}
        )

    async def ok(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST and return the JSON answer, asserting a 200."""
        resp = await self.post(path, body)
        payload: dict[str, Any] = await resp.json()
        assert resp.status == 200, payload
        return payload

    async def error(self, path: str, body: dict[str, Any], status: int, code: str) -> str:
        """POST, assert MLflow's error status and code, and return the message."""
        resp = await self.post(path, body)
        payload = await resp.json()
        assert (resp.status, payload.get("error_code")) == (status, code), payload
        return str(payload["message"])

    async def events(self) -> list[Event]:
        """Return everything emitted to the topic so far."""
        return await read_events(self.settings.kafka_bootstrap, self.settings.topic)

    async def experiment(self, name: str = "exp") -> str:
        """Create an experiment and return its id."""
        return str((await self.ok("experiments/create", {"name": name}))["experiment_id"])

    async def run(self, experiment_id: str, **fields: Any) -> str:
        """Create a run and return its id."""
        body = {"experiment_id": experiment_id, "start_time": 1, **fields}
        return str((await self.ok("runs/create", body))["run"]["info"]["run_id"])


def gateway_settings(stack: Settings, topic: str, registry_schema: str) -> Settings:
    """Return settings that point a gateway at a test's own topic and registry schema."""
    return replace(
        stack,
        topic=topic,
        dead_letter_topic=f"{topic}.dead-letter",
        registry_schema=registry_schema,
        artifact_root="file:///tmp/runstream-art",
    )


@pytest.fixture
async def gateway(
    stack: Settings, topic: str, schema_factory: Any
) -> AsyncIterator[GatewayHarness]:
    """Run an ingest gateway in this process on the test's topic and a fresh registry."""
    settings = gateway_settings(stack, topic, await schema_factory("ingest"))
    async with AsyncExitStack() as resources:
        app = new_app()
        (await start_gateway(settings, resources)).add_routes(app)
        client: TestClient[Any, Any] = TestClient(TestServer(app))
        await client.start_server()
        resources.push_async_callback(client.close)
        yield GatewayHarness(client, settings)
