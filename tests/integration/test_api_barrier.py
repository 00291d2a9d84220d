"""The read-your-writes barrier against a real topic, with a projector faked by projector_offsets.

Records are produced to the test's topic, so its end offsets move; the projector's progress is
whatever the test writes into projector_offsets. A read must wait until that progress covers the
ends it took when it began, on the partitions it depends on, and no longer than its deadline.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import replace
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiokafka import AIOKafkaProducer
from query_harness import (
    LINEAGE,
    MLFLOW,
    PARTITIONS,
    QueryHarness,
    add_experiment,
    add_run,
    query_api,
    set_projected,
)
from structlog.testing import capture_logs

from api.barrier import NOTIFY_CHANNEL, ReadBarrier, partition_for
from api.routes import CONSISTENCY_HEADER
from ingest.errors import UnavailableError
from services.config import Settings
from services.runtime import new_app, start_api

pytestmark = pytest.mark.integration

WAIT_S = 10.0  # how long a condition may take before the test fails


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait until `condition()` holds; fail after WAIT_S seconds."""
    try:
        async with asyncio.timeout(WAIT_S):
            while True:
                if condition():
                    return
                await asyncio.sleep(0.005)
    except TimeoutError:
        pytest.fail(f"not within {WAIT_S} s: {what}")


async def produce(settings: Settings, topic: str, keys: list[str]) -> dict[str, tuple[int, int]]:
    """Append one record per key; return each key's (partition, offset)."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        placed = {}
        for key in keys:
            meta = await producer.send_and_wait(topic, b"{}", key=key.encode())
            placed[key] = (meta.partition, meta.offset)
        return placed
    finally:
        await producer.stop()


def key_on_other_partition(partition: int) -> str:
    """Return a run id whose records go to a partition other than `partition`."""
    while True:
        key = uuid.uuid4().hex
        if partition_for(key, PARTITIONS) != partition:
            return key


@pytest.fixture
async def lagging(
    stack: Settings, topic: str, read_db: asyncpg.Connection
) -> AsyncIterator[Callable[..., Any]]:
    """Return a factory of query APIs over a topic the (fake) projector has not caught up with."""
    async with AsyncExitStack() as resources:

        async def open_api(**barrier_options: Any) -> QueryHarness:
            return await resources.enter_async_context(
                query_api(stack, topic, read_db, **barrier_options)
            )

        yield open_api


async def test_partitioner_matches_where_kafka_puts_records(stack: Settings, topic: str) -> None:
    keys = [uuid.uuid4().hex for _ in range(40)] + [f"experiment:{i}" for i in range(10)]
    placed = await produce(stack, topic, keys)
    assert {k: partition_for(k, PARTITIONS) for k in keys} == {k: p for k, (p, _) in placed.items()}


async def test_point_read_waits_for_its_own_partition_only(
    stack: Settings, topic: str, lagging: Callable[..., Awaitable[QueryHarness]]
) -> None:
    api = await lagging(deadline_s=60)
    run_id = uuid.uuid4().hex
    await add_run(api.db, run_id)
    mine = partition_for(run_id, PARTITIONS)
    other = key_on_other_partition(mine)
    await produce(stack, topic, [run_id, run_id, run_id, other])

    read = asyncio.create_task(api.get("runs/get", {"run_id": run_id}))
    await until(lambda: len(api.barrier._waiters) == 1, "the read registers as a waiter")
    await set_projected(api.db, api.topic, {mine: 2})
    polls = api.barrier.polls
    await until(lambda: api.barrier.polls >= polls + 2, "the barrier polls after the update")
    assert not read.done(), "one record of its partition is still unprojected"

    await set_projected(api.db, api.topic, {mine: 3})  # the other partition stays behind
    async with asyncio.timeout(WAIT_S):
        body = await read
    assert body["run"]["info"]["run_id"] == run_id
    assert api.consistency == ["strong"]  # the answer says it passed the barrier


async def test_experiment_read_waits_for_the_experiment_key(
    stack: Settings, topic: str, lagging: Callable[..., Awaitable[QueryHarness]]
) -> None:
    api = await lagging(deadline_s=60)
    await add_experiment(api.db, 7, "seven")
    partition = partition_for("experiment:7", PARTITIONS)
    await produce(stack, topic, ["experiment:7"])
    read = asyncio.create_task(api.get("experiments/get", {"experiment_id": "7"}))
    await until(lambda: len(api.barrier._waiters) == 1, "the read waits")
    await set_projected(api.db, api.topic, {partition: 1})
    async with asyncio.timeout(WAIT_S):
        assert (await read)["experiment"]["name"] == "seven"


async def test_search_waits_for_every_partition(
    stack: Settings, topic: str, lagging: Callable[..., Awaitable[QueryHarness]]
) -> None:
    api = await lagging(deadline_s=60)
    first = uuid.uuid4().hex
    second = key_on_other_partition(partition_for(first, PARTITIONS))
    placed = await produce(stack, topic, [first, second])
    await add_run(api.db, first)

    search = asyncio.create_task(api.post("runs/search", {"experiment_ids": ["0"]}))
    await until(lambda: len(api.barrier._waiters) == 1, "the search waits")
    await set_projected(api.db, api.topic, {placed[first][0]: 1})
    polls = api.barrier.polls
    await until(lambda: api.barrier.polls >= polls + 2, "the barrier polls after the update")
    assert not search.done(), "the other partition is still behind"
    await set_projected(api.db, api.topic, {placed[second][0]: 1})
    async with asyncio.timeout(WAIT_S):
        assert [r["info"]["run_id"] for r in (await search)["runs"]] == [first]


async def test_eventual_reads_do_not_wait(
    stack: Settings, topic: str, lagging: Callable[..., Awaitable[QueryHarness]]
) -> None:
    api = await lagging(deadline_s=600)
    run_id = uuid.uuid4().hex
    await add_run(api.db, run_id)
    await produce(stack, topic, [run_id])
    requests_before = api.barrier.end_offset_requests
    # a wait would outlast this timeout by far
    async with asyncio.timeout(WAIT_S):
        await api.get("runs/get", {"run_id": run_id}, headers={CONSISTENCY_HEADER: "eventual"})
        await api.get("runs/get", {"run_id": run_id, "consistency": "eventual"})
        await api.post("runs/search", {"experiment_ids": ["0"], "consistency": "Eventual"})
        await api.get(
            f"runs/{run_id}/children", headers={CONSISTENCY_HEADER: "eventual"}, prefix=LINEAGE
        )
    assert api.barrier.end_offset_requests == requests_before
    assert api.barrier._waiters == []
    assert api.consistency == ["eventual"] * 4


async def test_unknown_consistency_is_a_400(
    lagging: Callable[..., Awaitable[QueryHarness]],
) -> None:
    api = await lagging()
    message = await api.error(
        "GET",
        "runs/get",
        400,
        "INVALID_PARAMETER_VALUE",
        params={"run_id": "a"},
        headers={"X-Runstream-Consistency": "linearizable"},
    )
    assert "consistency" in message


async def test_past_the_deadline_a_read_answers_with_what_is_there(
    stack: Settings, topic: str, lagging: Callable[..., Awaitable[QueryHarness]]
) -> None:
    api = await lagging(deadline_s=0.3)
    run_id = uuid.uuid4().hex
    await add_run(api.db, run_id)
    await produce(stack, topic, [run_id])
    with capture_logs() as logs:
        body = await api.get("runs/get", {"run_id": run_id})
    assert body["run"]["info"]["run_id"] == run_id
    assert api.barrier.timeouts == 1
    assert api.consistency == ["eventual"]  # not what was asked for, and the answer says so
    warnings = [e for e in logs if e["event"] == "read_barrier_deadline_passed"]
    assert warnings
    assert warnings[0]["lag"] == {partition_for(run_id, PARTITIONS): 1}


async def test_concurrent_reads_share_broker_and_database_round_trips(
    stack: Settings, topic: str, lagging: Callable[..., Awaitable[QueryHarness]]
) -> None:
    api = await lagging(deadline_s=60)
    barrier = api.barrier
    before = barrier.end_offset_requests
    assert all(await asyncio.gather(*(barrier.wait() for _ in range(50))))
    assert barrier.end_offset_requests - before <= 2

    run_id = uuid.uuid4().hex
    await produce(stack, topic, [run_id])
    before, polls = barrier.end_offset_requests, barrier.polls
    waits = asyncio.gather(*(barrier.wait([run_id]) for _ in range(50)))
    await until(lambda: len(barrier._waiters) == 50, "all reads wait")
    await set_projected(api.db, api.topic, {partition_for(run_id, PARTITIONS): 1})
    async with asyncio.timeout(WAIT_S):
        assert all(await waits)
    assert barrier.end_offset_requests - before <= 2
    # one SQL read serves every waiter; a few more may happen while they were registering
    assert barrier.polls - polls < 10


async def test_a_projector_notify_wakes_waiters_before_the_next_poll(
    stack: Settings, topic: str, lagging: Callable[..., Awaitable[QueryHarness]]
) -> None:
    # polls so rare that only the notification can release the read within the test's wait
    api = await lagging(deadline_s=600, min_poll_s=600, max_poll_s=600)
    run_id = uuid.uuid4().hex
    await add_run(api.db, run_id)
    await produce(stack, topic, [run_id])
    read = asyncio.create_task(api.get("runs/get", {"run_id": run_id}))
    await until(lambda: api.barrier.polls == 1 and bool(api.barrier._waiters), "first poll")
    await set_projected(api.db, api.topic, {partition_for(run_id, PARTITIONS): 1})
    await api.db.execute("SELECT pg_notify($1, current_schema())", NOTIFY_CHANNEL)
    async with asyncio.timeout(WAIT_S):
        assert (await read)["run"]["info"]["run_id"] == run_id


async def test_barrier_start_fails_clearly_without_kafka() -> None:
    # the pool is never reached: the broker fails first
    barrier = ReadBarrier(None, "127.0.0.1:1", "nope", 1)  # type: ignore[arg-type]
    with pytest.raises(UnavailableError):
        await barrier.start(timeout_s=2)
    await barrier.stop()


async def test_runtime_composes_the_api_role(
    stack: Settings, topic: str, read_db: asyncpg.Connection
) -> None:
    schema = await read_db.fetchval("SELECT current_schema()")
    await add_experiment(read_db, 0, "Default")
    settings = replace(stack, topic=topic, read_schema=schema, read_wait_s=1.0)
    async with AsyncExitStack() as resources:
        app = new_app()
        (await start_api(settings, resources)).add_routes(app)
        client: TestClient[Any, Any] = TestClient(TestServer(app))
        await client.start_server()
        resources.push_async_callback(client.close)
        resp = await client.get(f"{MLFLOW}/experiments/get-by-name?experiment_name=Default")
        assert resp.status == 200
        assert (await resp.json())["experiment"]["experiment_id"] == "0"


async def test_a_zero_deadline_turns_the_barrier_off(
    stack: Settings, topic: str, lagging: Callable[..., Awaitable[QueryHarness]]
) -> None:
    api = await lagging(deadline_s=0)
    run_id = uuid.uuid4().hex
    await add_run(api.db, run_id)
    await produce(stack, topic, [run_id])
    with capture_logs() as logs:
        assert (await api.get("runs/get", {"run_id": run_id}))["run"]["info"]["run_id"] == run_id
    assert (api.barrier.timeouts, api.barrier.end_offset_requests, logs) == (0, 0, [])
    assert api.consistency == ["eventual"]
