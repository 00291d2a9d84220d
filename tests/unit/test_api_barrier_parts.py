"""The barrier's parts that need no broker: Kafka's key partitioner, coalescing of shared round
trips, and what reads do while the broker does not answer (a consumer faked at its one call)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError
from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from api.barrier import ReadBarrier, _Coalesced, partition_for

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


class Broker:
    """The barrier's consumer, faked at end_offsets: it answers, refuses, or never answers."""

    def __init__(self) -> None:
        self.state = "up"
        self.asked = 0

    async def end_offsets(self, parts: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        self.asked += 1
        if self.state == "refuses":
            raise KafkaConnectionError("connection refused")
        if self.state == "silent":
            await asyncio.Event().wait()
        return dict.fromkeys(parts, 0)  # an empty topic: nothing for the projector to pass

    async def stop(self) -> None:
        pass


def finished_without_waiting(read: Coroutine[Any, Any, bool]) -> bool:
    """Run a read to its end if it never suspends; fail if it waits for anything."""
    try:
        read.send(None)
    except StopIteration as done:
        return bool(done.value)
    read.close()
    raise AssertionError("the read waited")


async def until(condition: Callable[[], bool], seconds: float = 10) -> None:
    """Poll `condition` until it holds; fail when the deadline passes first."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)  # polling a condition, with a deadline


@pytest.mark.parametrize("failure", ["refuses", "silent"])
async def test_reads_go_ahead_at_once_while_the_broker_does_not_answer(failure: str) -> None:
    broker = Broker()
    barrier = ReadBarrier(None, "unused:9092", "t", 3, deadline_s=0.2, retry_s=0.01, listen=False)  # type: ignore[arg-type]
    barrier._consumer = broker  # type: ignore[assignment]
    assert await barrier.wait()
    broker.state = failure
    with capture_logs() as logs:
        assert not await barrier.wait()  # the read that finds it gone: refused, or its deadline
        # the reads after it do not ask the broker, nor wait for anything
        assert [finished_without_waiting(barrier.wait()) for _ in range(20)] == [False] * 20
        assert barrier.unguarded_reads == 20
        await until(lambda: broker.asked >= 4)  # the reconnecting task asks again meanwhile
        assert not finished_without_waiting(barrier.wait(["run"]))
        broker.state = "up"
        await until(lambda: barrier._reconnect is None)  # it answered: reads wait again
    events = [e["event"] for e in logs]
    assert events.count("read_barrier_broker_unreachable") == 1
    assert events[-1] == "read_barrier_broker_answers"
    assert await barrier.wait(["run"])
    await barrier.stop()


async def test_stop_ends_the_reconnecting_task() -> None:
    broker = Broker()
    barrier = ReadBarrier(None, "unused:9092", "t", 3, deadline_s=0.2, retry_s=0.01, listen=False)  # type: ignore[arg-type]
    barrier._consumer = broker  # type: ignore[assignment]
    broker.state = "refuses"
    assert not await barrier.wait()
    reconnect = barrier._reconnect
    assert reconnect is not None
    await barrier.stop()
    assert reconnect.cancelled()
    assert barrier._reconnect is None
