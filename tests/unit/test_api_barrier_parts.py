"""The barrier's pure parts: Kafka's key partitioner, and coalescing of shared round trips."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given
from hypothesis import strategies as st

from api.barrier import _Coalesced, partition_for

# org.apache.kafka.common.utils.UtilsTest#testMurmur2: the Java client's signed hashes.
JAVA_MURMUR2 = {
    "21": -973932308,
    "foobar": -790332482,
    "a-little-bit-long-string": -985981536,
    "a-little-bit-longer-string": -1486304829,
    "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    "abc": 479470107,
}


@pytest.mark.parametrize("partitions", [1, 3, 6, 7, 64])
def test_partition_is_javas_positive_murmur2_modulo(partitions: int) -> None:
    for key, signed in JAVA_MURMUR2.items():
        assert partition_for(key, partitions) == (signed & 0x7FFFFFFF) % partitions


@given(st.text(max_size=80), st.integers(min_value=1, max_value=100))
def test_partition_equals_aiokafkas_default_partitioner(key: str, partitions: int) -> None:
    every = list(range(partitions))
    assert partition_for(key, partitions) == DefaultPartitioner()(key.encode(), every, every)


async def yield_until(condition: Callable[[], bool]) -> None:
    """Let other tasks run until `condition()` holds (no timed sleeps); fail after 5 s."""
    async with asyncio.timeout(5):
        while True:
            if condition():
                return
            await asyncio.sleep(0)


async def test_callers_arriving_during_a_call_share_the_next_one() -> None:
    started: list[int] = []
    release = [asyncio.Event(), asyncio.Event()]

    async def fetch() -> int:
        started.append(len(started))
        await release[len(started) - 1].wait()
        return len(started)

    shared = _Coalesced(fetch)
    arrived = 0

    async def caller() -> int:
        nonlocal arrived
        arrived += 1
        return await shared()  # joins synchronously, before this task yields

    first = asyncio.create_task(caller())
    await yield_until(lambda: started == [0])
    # these arrive while call 1 is in flight: they must not take its (possibly stale) answer
    later = [asyncio.create_task(caller()) for _ in range(5)]
    await yield_until(lambda: arrived == 6)
    release[0].set()
    assert await first == 1
    release[1].set()
    assert await asyncio.gather(*later) == [2] * 5
    assert shared.calls == 2
    await shared.close()


async def test_an_error_reaches_every_caller_and_the_next_call_is_fresh() -> None:
    outcomes = iter([RuntimeError("broker down"), 7])

    async def fetch() -> int:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    shared = _Coalesced(fetch)
    results = await asyncio.gather(shared(), shared(), return_exceptions=True)
    assert [str(r) for r in results] == ["broker down", "broker down"]
    assert await shared() == 7
    await shared.close()


async def test_a_cancelled_caller_does_not_cancel_the_shared_call() -> None:
    gate = asyncio.Event()

    async def fetch() -> str:
        await gate.wait()
        return "ends"

    shared = _Coalesced(fetch)
    impatient = asyncio.create_task(shared())
    patient = asyncio.create_task(shared())
    await yield_until(lambda: shared.calls == 1)
    impatient.cancel()
    gate.set()
    assert await patient == "ends"
    with pytest.raises(asyncio.CancelledError):
        await impatient
    await shared.close()


async def test_close_cancels_the_call_in_flight() -> None:
    async def fetch() -> None:
        await asyncio.Event().wait()

    shared = _Coalesced(fetch)
    caller = asyncio.create_task(shared())
    await yield_until(lambda: shared.calls == 1)
    await shared.close()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await shared.close()  # idempotent
