"""The barrier's parts that need no broker: Kafka's key partitioner, coalescing of shared round
trips, and what reads do while the broker does not answer (a consumer faked at its one call)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

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
    """The barrier's consumer, faked at end_offsets: it answers, refuses, or keeps silent until
    it is `up` again (then the calls it held answer)."""

    def __init__(self) -> None:
        self.state = "up"
        self.asked = 0
        self.ends = 0
        self.back = asyncio.Event()

    def set(self, state: str) -> None:
        self.state = state
        if state == "up":
            self.back.set()
        else:
            self.back.clear()

    async def end_offsets(self, parts: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        self.asked += 1
        if self.state == "refuses":
            raise KafkaConnectionError("connection refused")
        if self.state == "silent":
            await self.back.wait()
        return dict.fromkeys(parts, self.ends)

    async def stop(self) -> None:
        pass


class Projected:
    """The pool the barrier reads projector_offsets through, at whatever the test says."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, int]] = []

    async def fetch(self, *_: object) -> list[tuple[int, int]]:
        return self.rows


def barrier_on(broker: Broker, pool: Projected, deadline_s: float) -> ReadBarrier:
    barrier = ReadBarrier(pool, "unused:9092", "t", 3, deadline_s=deadline_s, probe_s=0.01)  # type: ignore[arg-type]
    barrier._consumer = broker  # type: ignore[assignment]
    return barrier


@pytest.mark.parametrize("failure", ["refuses", "silent"])
async def test_reads_ask_only_briefly_while_the_broker_does_not_answer(failure: str) -> None:
    broker, pool = Broker(), Projected()
    barrier = barrier_on(broker, pool, deadline_s=0.2)
    assert await barrier.wait()
    broker.set(failure)
    with capture_logs() as logs:
        assert not await barrier.wait()  # the read that finds it gone: refused, or its deadline
        # The reads after it ask (each joins a call that starts after it began) but only for
        # probe_s, not the deadline: with an hour's deadline these end well within the test's.
        barrier.deadline_s = 3600
        asked = broker.asked
        async with asyncio.timeout(10):
            assert [await barrier.wait(["run"]) for _ in range(20)] == [False] * 20
        if failure == "refuses":  # each read asked once; a silent broker still holds a call
            assert broker.asked == asked + 20
        assert barrier.unguarded_reads == 21
        # Back: the first read after it is guarded again, with the broker's new end offsets.
        broker.ends = 5
        pool.rows = [(p, 5) for p in range(3)]
        broker.set("up")
        async with asyncio.timeout(10):
            assert await barrier.wait(["run"])
    events = [e["event"] for e in logs]
    assert events.count("read_barrier_broker_unreachable") == 1
    assert events[-1] == "read_barrier_broker_answers"
    assert barrier.unguarded_reads == 21
    await barrier.stop()


async def test_a_read_after_the_broker_is_back_waits_for_the_projector() -> None:
    broker, pool = Broker(), Projected()
    barrier = barrier_on(broker, pool, deadline_s=3600)
    broker.set("refuses")
    assert not await barrier.wait()
    # Writes were acknowledged since: the projector has not folded them yet.
    broker.ends = 7
    broker.set("up")
    read = asyncio.create_task(barrier.wait(["run"]))
    await yield_until(lambda: len(barrier._waiters) == 1)
    assert not read.done()
    pool.rows = [(p, 7) for p in range(3)]
    barrier._wake.set()
    async with asyncio.timeout(10):
        assert await read
    await barrier.stop()


async def test_an_os_error_from_the_broker_is_a_lost_broker_too() -> None:
    broker, pool = Broker(), Projected()
    barrier = barrier_on(broker, pool, deadline_s=3600)

    async def unreachable(parts: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        raise OSError("network is unreachable")

    broker.end_offsets = unreachable  # type: ignore[method-assign]
    assert not await barrier.wait()
    assert barrier.unguarded_reads == 1
    del broker.end_offsets  # the class's again: the broker answers
    assert await barrier.wait()
    await barrier.stop()


async def test_an_answer_too_late_for_its_readers_still_ends_the_brief_asking() -> None:
    broker, pool = Broker(), Projected()
    barrier = barrier_on(broker, pool, deadline_s=0.05)
    broker.set("silent")
    assert not await barrier.wait()  # no end offsets by its deadline: the broker is gone
    barrier.deadline_s = 3600
    assert not await barrier.wait()  # asked briefly; its call is still out
    assert barrier._lost
    broker.set("up")  # that call is answered, though no read waits for it any more
    await yield_until(lambda: not barrier._lost)
    await barrier.stop()
