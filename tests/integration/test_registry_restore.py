"""`runstream restore-registry` after the registry is lost: the gateway decides as it did before.

A serve process takes writes; it is stopped, its registry schema dropped (the lost database),
restored from the read models, and a new serve process must give MLflow's answers that depend on
the registry: taken names, immutable params, deleted runs, missing tags, fresh experiment ids.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from processes import call, isolated, ok, runstream_process

from projector import versions
from projector.logread import end_offsets
from projector.store import quote_schema
from services.config import Settings
from services.registry_restore import RestoreError, restore_registry

pytestmark = pytest.mark.integration

WAIT_S = 60.0


@dataclass
class Setup:
    settings: Settings
    env: dict[str, str]


@pytest.fixture
async def setup(stack: Settings, topic: str, schema_factory: Any, tmp_path: Path) -> Setup:
    env, settings = await isolated(stack, topic, schema_factory, tmp_path, "restore")
    return Setup(settings, env)


async def drained(settings: Settings) -> None:
    """Wait until the projector has folded the whole log."""
    async with asyncio.timeout(WAIT_S):
        while True:
            ends = await end_offsets(settings.kafka_bootstrap, settings.topic)
            conn = await asyncpg.connect(settings.database_url)
            try:
                mine = await versions.stored_offsets(conn, settings.read_schema, settings.topic)
            finally:
                await conn.close()
            if all(mine.get(p, 0) >= end for p, end in ends.items()):
                return
            await asyncio.sleep(0.05)


async def drop_registry(settings: Settings) -> None:
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute(f"DROP SCHEMA {quote_schema(settings.registry_schema)} CASCADE")
    finally:
        await conn.close()


async def test_a_restored_registry_decides_as_the_lost_one_did(setup: Setup) -> None:
    settings = setup.settings
    name = f"restore-{uuid.uuid4()}"
    async with aiohttp.ClientSession() as http:
        async with runstream_process("serve", setup.env) as url:
            exp = (await ok(http, url, "experiments/create", {"name": name}))["experiment_id"]
            gone = (await ok(http, url, "experiments/create", {"name": f"{name}-gone"}))[
                "experiment_id"
            ]
            await ok(http, url, "experiments/delete", {"experiment_id": gone})
            run = (await ok(http, url, "runs/create", {"experiment_id": exp}))["run"]["info"]
            dead = (await ok(http, url, "runs/create", {"experiment_id": exp}))["run"]["info"]
            await ok(
                http,
                url,
                "runs/log-batch",
                {
                    "run_id": run["run_id"],
                    "params": [{"key": "lr", "value": "0.1"}],
                    "tags": [{"key": "team", "value": "nlp"}],
                },
            )
            await ok(http, url, "runs/delete", {"run_id": dead["run_id"]})
            await drained(settings)
        await drop_registry(settings)  # the lost database

        restored = await restore_registry(settings)

        assert restored["restored"]["experiments"] >= 3  # Default, the live one, the deleted one
        assert restored["restored"]["runs"] == 2
        assert restored["restored"]["params"] == 1
        async with runstream_process("serve", setup.env) as url:
            status, answer = await call(http, url, "experiments/create", {"name": name})
            assert (status, answer["error_code"]) == (400, "RESOURCE_ALREADY_EXISTS")
            status, answer = await call(http, url, "experiments/create", {"name": f"{name}-gone"})
            assert (status, answer["error_code"]) == (400, "RESOURCE_ALREADY_EXISTS")
            param = {"run_id": run["run_id"], "key": "lr"}
            status, answer = await call(http, url, "runs/log-parameter", {**param, "value": "9"})
            assert (status, answer["error_code"]) == (400, "INVALID_PARAMETER_VALUE")
            await ok(http, url, "runs/log-parameter", {**param, "value": "0.1"})
            status, answer = await call(
                http, url, "runs/set-tag", {"run_id": dead["run_id"], "key": "k", "value": "v"}
            )
            assert (status, answer["error_code"]) == (400, "INVALID_PARAMETER_VALUE")
            status, answer = await call(
                http, url, "runs/delete-tag", {"run_id": run["run_id"], "key": "missing"}
            )
            assert (status, answer["error_code"]) == (404, "RESOURCE_DOES_NOT_EXIST")
            await ok(http, url, "runs/delete-tag", {"run_id": run["run_id"], "key": "team"})
            fresh = (await ok(http, url, "experiments/create", {"name": f"{name}-new"}))[
                "experiment_id"
            ]
            assert int(fresh) > max(int(exp), int(gone))


async def test_restoring_over_a_registry_in_use_or_ahead_of_the_projector_is_refused(
    setup: Setup,
) -> None:
    settings = setup.settings
    async with aiohttp.ClientSession() as http, runstream_process("serve", setup.env) as url:
        await ok(http, url, "experiments/create", {"name": f"in-use-{uuid.uuid4()}"})
        await drained(settings)
    with pytest.raises(RestoreError, match="already holds"):
        await restore_registry(settings)

    # A record the projector has not folded (it is stopped): the registry would miss it.
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic, b"\x01\x90", key=b"unfolded")
    finally:
        await producer.stop()
    with pytest.raises(RestoreError, match="1 records behind the log"):
        await restore_registry(settings, replace=True)
