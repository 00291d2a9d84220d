"""Read your writes: before a read, wait (boundedly) until the projector has passed the log's end.

A read that begins at time t must see every write acknowledged before t. Such a write is in the
topic below the end offsets taken after t, and the read models hold it once the projector's
stored offsets (`projector_offsets.next_offset`, committed with the rows) reach those ends. So a
read takes the end offsets, then waits until the projector is past them: on the run's partition
for a point read (events are keyed by run id, or `experiment:<id>`, and placed by Kafka's default
murmur2 partitioner), on every partition for a search.

Costs are shared. One long-lived consumer without a group asks the broker for end offsets, and
callers that arrive while a request is in flight join the next one (never the one in flight: it
may predate their reads), so there is at most one ListOffsets in flight, whatever the load. The
projector's offsets are read by one poller for all waiters, with a short doubling backoff, woken
early by a PostgreSQL NOTIFY when the projector sends one. The last offsets seen are kept: they
only grow, so a read whose ends they already cover needs no SQL at all. When the deadline passes
the read goes ahead with what is there, and a warning is logged: a barrier never fails a read.

A broker that does not answer would make every read wait the whole deadline. So once a read
found it gone (a refusal, or no end offsets by its deadline), the reads after it ask for the end
offsets only briefly (`probe_s`) and go ahead without the guarantee when that fails; the
broker's first answer ends this, even one that came too late for its readers. Each such read
still asks a call that starts after it began, so it sees every write acknowledged before it
whenever the broker answers it in time; a read that went ahead says so (`wait` returns False,
the API answers `eventual`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Generic, TypeVar

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2

from ingest.errors import UnavailableError

__all__ = ["NOTIFY_CHANNEL", "ReadBarrier", "partition_for"]

log = structlog.get_logger(__name__)

T = TypeVar("T")

# The projector may `SELECT pg_notify('runstream_projector', <its schema>)` in the
# transaction that moves its offsets, so waiters wake at the commit instead of the next poll.
NOTIFY_CHANNEL = "runstream_projector"
_PROJECTED = "SELECT partition, next_offset FROM projector_offsets WHERE topic = $1"


def partition_for(key: str, partitions: int) -> int:
    """Return the partition Kafka's default partitioner gives a record key (murmur2)."""
    hashed: int = murmur2(key.encode())
    return (hashed & 0x7FFFFFFF) % partitions


def _retrieve(future: asyncio.Future[Any]) -> None:
    # Every caller of a shared call may have gone (cancelled); mark its error as seen.
    if not future.cancelled():
        future.exception()


class _Coalesced(Generic[T]):
    """Share calls of `fetch`: a caller joins the next call to start, never one in flight."""

    def __init__(self, fetch: Callable[[], Awaitable[T]]) -> None:
        self._fetch = fetch
        self._next: asyncio.Future[T] | None = None
        self._task: asyncio.Task[None] | None = None
        self.calls = 0

    async def __call__(self) -> T:
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
            self._next.add_done_callback(_retrieve)
        future = self._next
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        # shielded: one caller's timeout must not cancel the call the others share
        return await asyncio.shield(future)

    async def _run(self) -> None:
        while self._next is not None:
            future, self._next = self._next, None
            self.calls += 1
            try:
                result = await self._fetch()
            except asyncio.CancelledError:
                future.cancel()
                raise
            except Exception as exc:  # handed to every caller of this call
                future.set_exception(exc)
            else:
                future.set_result(result)

    async def close(self) -> None:
        """Cancel the call in flight and the callers waiting for the next one."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._next is not None:
            self._next.cancel()
            self._next = None


class _Waiter:
    __slots__ = ("future", "targets")

    def __init__(self, targets: Mapping[int, int], future: asyncio.Future[None]) -> None:
        self.targets = targets
        self.future = future


class ReadBarrier:
    """Wait until the read models reflect the topic's end offsets, within a deadline."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        bootstrap: str,
        topic: str,
        partitions: int,
        *,
        deadline_s: float = 5.0,
        min_poll_s: float = 0.002,
        max_poll_s: float = 0.05,
        probe_s: float = 0.25,
        listen: bool = True,
    ) -> None:
        if partitions < 1:
            raise ValueError("partitions must be at least 1")
        self._pool = pool
        self._bootstrap = bootstrap
        self.topic = topic
        self.partitions = partitions
        self.deadline_s = deadline_s
        self._min_poll_s = min_poll_s
        self._max_poll_s = max_poll_s
        self._probe_s = probe_s
        self._listen = listen
        self._consumer: AIOKafkaConsumer | None = None
        self._end_offsets = _Coalesced(self._fetch_end_offsets)
        self._projected: dict[int, int] = {}
        self._waiters: list[_Waiter] = []
        self._poller: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._listener: asyncpg.Connection | None = None
        self._lost = False  # a read found the broker gone, and no call has been answered since
        self.polls = 0
        self.timeouts = 0
        self.unguarded_reads = 0  # reads that went ahead because the broker did not answer

    # --- lifetime -------------------------------------------------------------------------

    async def start(self, timeout_s: float = 30.0) -> None:
        """Connect to the broker and learn the topic's partitions; UnavailableError if not."""
        if self._consumer is not None:
            return
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            enable_auto_commit=False,
            client_id="runstream-api-barrier",
            retry_backoff_ms=20,
        )
        try:
            async with asyncio.timeout(timeout_s):
                await consumer.start()
                # Partition 0 always exists; asking for it loads the topic's metadata
                await consumer.end_offsets([TopicPartition(self.topic, 0)])
        except (KafkaError, TimeoutError, OSError) as exc:
            await consumer.stop()
            raise UnavailableError(
                f"the read barrier cannot reach topic {self.topic!r} on {self._bootstrap}: {exc!r}"
            ) from exc
        self._consumer = consumer
        known = consumer.partitions_for_topic(self.topic)
        if known and len(known) != self.partitions:
            # The producers place keys by the topic's real partition count; so must we
            log.warning(
                "read_barrier_partitions_mismatch",
                topic=self.topic,
                configured=self.partitions,
                actual=len(known),
            )
            self.partitions = len(known)
        if self._listen:
            await self._start_listening()
        log.info("read_barrier_started", topic=self.topic, partitions=self.partitions)

    async def stop(self) -> None:
        """Stop polling, listening and the consumer; safe to call twice."""
        poller, self._poller = self._poller, None
        if poller is not None:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
        for waiter in self._waiters:
            waiter.future.cancel()
        self._waiters.clear()
        await self._end_offsets.close()
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                    await listener.remove_listener(NOTIFY_CHANNEL, self._on_notify)
            finally:
                await self._pool.release(listener)
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()

    async def __aenter__(self) -> ReadBarrier:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # --- the barrier ----------------------------------------------------------------------

    @property
    def end_offset_requests(self) -> int:
        """Return how many ListOffsets round trips the barrier has made."""
        return self._end_offsets.calls

    def partition_of(self, key: str) -> int:
        """Return the partition of a record key (a run id, or `experiment:<id>`)."""
        return partition_for(key, self.partitions)

    async def wait(self, keys: Iterable[str] | None = None) -> bool:
        """Wait until the read models hold every write acknowledged before this call.

        `keys` are the record keys the read depends on; None means the whole topic. Returns
        False (after logging a warning) when the deadline passed or Kafka could not answer,
        and at once when the deadline is 0: the read is then eventually consistent.
        """
        if self.deadline_s <= 0:
            return False
        started = asyncio.get_running_loop().time()
        asking = min(self._probe_s, self.deadline_s) if self._lost else self.deadline_s
        try:
            async with asyncio.timeout_at(started + asking):
                ends = await self._end_offsets()
        except (KafkaError, OSError, TimeoutError) as exc:
            self.unguarded_reads += 1
            if not self._lost:
                self._lost = True
                log.warning("read_barrier_broker_unreachable", topic=self.topic, error=repr(exc))
            return False
        wanted = ends if keys is None else {self.partition_of(k) for k in keys}
        targets = {p: ends[p] for p in wanted if ends.get(p, 0) > 0}
        try:
            async with asyncio.timeout_at(started + self.deadline_s):
                await self._projected_past(targets)
        except TimeoutError:
            self.timeouts += 1
            log.warning(
                "read_barrier_deadline_passed",
                topic=self.topic,
                deadline_s=self.deadline_s,
                lag={p: end - self._projected.get(p, 0) for p, end in targets.items()},
            )
            return False
        return True

    def _covered(self, targets: Mapping[int, int]) -> bool:
        projected = self._projected
        return all(projected.get(p, 0) >= end for p, end in targets.items())

    async def _projected_past(self, targets: Mapping[int, int]) -> None:
        if self._covered(targets):
            return
        waiter = _Waiter(targets, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll())
        self._wake.set()  # read now: the offsets seen last may predate these ends
        try:
            await waiter.future
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    # --- Kafka and PostgreSQL -------------------------------------------------------------

    async def _fetch_end_offsets(self) -> dict[int, int]:
        consumer = self._consumer
        if consumer is None:
            raise KafkaError("the read barrier is not started")
        parts = [TopicPartition(self.topic, p) for p in range(self.partitions)]
        # Bounded like a read: a call hung on a dead broker must not hold up the calls after it
        async with asyncio.timeout(self.deadline_s):
            offsets = await consumer.end_offsets(parts)
        if self._lost:  # any answer, even one its readers stopped waiting for
            self._lost = False
            log.info("read_barrier_broker_answers", topic=self.topic)
        return {tp.partition: offset for tp, offset in offsets.items()}

    async def _poll(self) -> None:
        """Read the projector's offsets for all waiters until none is left."""
        delay = self._min_poll_s
        while self._waiters:
            self._wake.clear()
            self.polls += 1
            try:
                rows = await self._pool.fetch(_PROJECTED, self.topic)
            except (asyncpg.PostgresError, OSError) as exc:
                log.warning("read_barrier_poll_failed", error=repr(exc))
            else:
                if self._record(rows):
                    delay = self._min_poll_s
                self._release()
            if not self._waiters:
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            delay = min(delay * 2, self._max_poll_s)

    def _record(self, rows: Iterable[asyncpg.Record]) -> bool:
        """Keep the highest offset seen per partition; return whether any grew."""
        grew = False
        for partition, offset in rows:
            if offset > self._projected.get(partition, 0):
                self._projected[partition] = offset
                grew = True
        return grew

    def _release(self) -> None:
        waiting: list[_Waiter] = []
        for waiter in self._waiters:
            if waiter.future.done():
                continue
            if self._covered(waiter.targets):
                waiter.future.set_result(None)
            else:
                waiting.append(waiter)
        self._waiters = waiting

    async def _start_listening(self) -> None:
        try:
            conn: asyncpg.Connection = await self._pool.acquire()
        except (asyncpg.PostgresError, OSError) as exc:
            log.warning("read_barrier_listen_failed", error=repr(exc))
            return
        try:
            await conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
        except (asyncpg.PostgresError, OSError) as exc:
            await self._pool.release(conn)
            log.warning("read_barrier_listen_failed", error=repr(exc))
            return
        self._listener = conn

    def _on_notify(self, *_: object) -> None:
        if self._waiters:
            self._wake.set()
