"""The emitter's metric buffer: bounded, drained to Kafka in batches by one background task.

The task sends one batch at a time through `Producer.emit` (one record per run per batch) and
retries it with backoff until Kafka acknowledges it, before anything newer, so a run's metrics
keep their order. Callers wait for space, or for acks (`wait_acked`), on futures the task
resolves; nothing buffered is dropped in silence.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

import structlog

from ingest.emitter_events import MAX_RECORD_BYTES, estimated_size
from ingest.errors import EmitterClosedError, FlushTimeoutError
from ingest.events import Event, MetricLogged

__all__ = ["MetricBuffer", "Producer"]

log = structlog.get_logger(__name__)


class Producer(Protocol):
    """What the emitter needs of `EventProducer` (tests pass a fake)."""

    async def start(self) -> None:
        """Connect."""

    async def stop(self) -> None:
        """Disconnect; safe to call twice."""

    async def emit(self, events: Sequence[Event]) -> None:
        """Append the events and wait for the acks; raise UnavailableError if not acked."""


class MetricBuffer:
    """Hold up to `max_buffered` metric events (buffered or in flight) and send them in batches.

    `on_crash` hears of the background task ending other than by `stop`: a bug, after which
    every waiter has been failed with EmitterClosedError.
    """

    def __init__(
        self,
        producer: Producer,
        *,
        max_buffered: int,
        max_batch: int,
        linger_s: float,
        retry_backoff_s: float,
        max_retry_backoff_s: float,
        on_crash: Callable[[BaseException | None], None],
    ) -> None:
        self._producer = producer
        self._max_buffered = max_buffered
        self._max_batch = max_batch
        self._linger_s = linger_s
        self._retry_backoff_s = retry_backoff_s
        self._max_retry_backoff_s = max_retry_backoff_s
        self._on_crash = on_crash
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._buffer: deque[MetricLogged] = deque()
        self._inflight: list[MetricLogged] = []
        # Events ever buffered and ever acknowledged: the buffer is FIFO, so a flush is done
        # when the acknowledged count reaches the buffered count taken when it was called.
        self.enqueued = 0
        self.acked = 0
        self.flushes = 0
        self.flush_errors = 0
        self.last_error: str | None = None
        self._not_empty = asyncio.Event()
        self._ready = asyncio.Event()
        self._space_waiters: deque[tuple[list[MetricLogged], asyncio.Future[None]]] = deque()
        self._flush_waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        self._ack_listeners: list[Callable[[int], None]] = []

    def start(self) -> None:
        """Start the background task."""
        if self._task is None:
            self._task = asyncio.create_task(self._flush_loop(), name="runstream-emitter")
            self._task.add_done_callback(self._task_done)

    def begin_close(self) -> None:
        """Send what is buffered without lingering; callers waiting for space are refused."""
        self._closing = True
        self._fail_space_waiters()
        self._ready.set()

    async def stop(self) -> None:
        """Cancel the background task; waiters for acks that did not come are failed."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task})
        closed = EmitterClosedError("the emitter closed before these events were acknowledged")
        self._fail_flush_waiters(closed)
        self._fail_space_waiters()

    def add_ack_listener(self, listener: Callable[[int], None]) -> None:
        """Call `listener(n)` on the loop each time n more events are acknowledged."""
        self._ack_listeners.append(listener)

    # --- in ------------------------------------------------------------------------------------

    def _held(self) -> int:
        return len(self._buffer) + len(self._inflight)

    async def put(self, events: list[MetricLogged]) -> None:
        """Buffer the events, awaiting space while the buffer is full."""
        if not events:
            return
        self._admit_space_waiters()  # drops cancelled waiters that would hold up this call
        held = self._held()
        # One call larger than the whole bound is taken into an empty buffer, or it never could.
        if not self._space_waiters and (not held or held + len(events) <= self._max_buffered):
            self.put_nowait(events)
            return
        fut = asyncio.get_running_loop().create_future()
        self._space_waiters.append((events, fut))
        await fut

    def put_nowait(self, events: list[MetricLogged]) -> None:
        """Buffer the events now, whatever the bound."""
        was_empty = not self._buffer
        self._buffer.extend(events)
        self.enqueued += len(events)
        if was_empty:
            self._not_empty.set()
        if len(self._buffer) >= self._max_batch:
            self._ready.set()

    def _admit_space_waiters(self) -> None:
        while self._space_waiters:
            events, fut = self._space_waiters[0]
            if fut.done():  # the caller was cancelled
                self._space_waiters.popleft()
                continue
            held = self._held()
            if held and held + len(events) > self._max_buffered:
                return
            self._space_waiters.popleft()
            self.put_nowait(events)
            fut.set_result(None)

    def _fail_space_waiters(self) -> None:
        while self._space_waiters:
            _events, fut = self._space_waiters.popleft()
            if not fut.done():
                fut.set_exception(EmitterClosedError("the emitter closed; nothing was buffered"))

    # --- acks ----------------------------------------------------------------------------------

    async def wait_acked(self, target: int, timeout_s: float | None) -> None:
        """Return once `target` events were ever acknowledged; FlushTimeoutError after timeout."""
        if self.acked >= target:
            return
        if self._task is None or self._task.done():
            raise EmitterClosedError("the emitter is not running")
        fut = asyncio.get_running_loop().create_future()
        waiter = (target, fut)
        self._flush_waiters.append(waiter)
        self._ready.set()
        try:
            async with asyncio.timeout(timeout_s):
                await fut
        except TimeoutError:
            last = f"; last error: {self.last_error}" if self.last_error else ""
            raise FlushTimeoutError(
                f"{target - self.acked} events not acknowledged within {timeout_s} s{last}"
            ) from None
        finally:
            if not fut.done() or fut.cancelled():
                with contextlib.suppress(ValueError):
                    self._flush_waiters.remove(waiter)

    def _fail_flush_waiters(self, error: Exception) -> None:
        for _target, fut in self._flush_waiters:
            if not fut.done():
                fut.set_exception(error)
        self._flush_waiters.clear()

    # --- the background task -------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        while True:
            if not self._inflight:
                if not self._buffer:
                    self._not_empty.clear()
                    await self._not_empty.wait()
                    continue
                if len(self._buffer) < self._max_batch and not self._urgent():
                    await self._linger()
                self._inflight = self._take_batch()
            await self._send_inflight()

    def _urgent(self) -> bool:
        return bool(self._flush_waiters) or self._closing

    async def _linger(self) -> None:
        if self._linger_s <= 0:
            return
        self._ready.clear()
        try:
            async with asyncio.timeout(self._linger_s):
                await self._ready.wait()
        except TimeoutError:
            pass

    def _take_batch(self) -> list[MetricLogged]:
        batch: list[MetricLogged] = []
        run_bytes: dict[str, int] = {}
        buffer = self._buffer
        while buffer and len(batch) < self._max_batch:
            event = buffer[0]
            size = estimated_size(event)
            used = run_bytes.get(event.run_id, 0)
            if used and used + size > MAX_RECORD_BYTES:
                break
            run_bytes[event.run_id] = used + size
            batch.append(buffer.popleft())
        return batch

    async def _send_inflight(self) -> None:
        # The same batch is retried until it is acknowledged, before anything newer is sent, so
        # a run's events keep their order; a retry after a partial failure re-sends records that
        # did land, which is harmless because every event is idempotent where it lands.
        attempt = 0
        while True:
            try:
                await self._producer.emit(self._inflight)
                break
            except Exception as exc:
                self.flush_errors += 1
                self.last_error = repr(exc)
                delay = min(self._max_retry_backoff_s, self._retry_backoff_s * 2**attempt)
                attempt += 1
                log.warning(
                    "emitter_flush_failed",
                    error=repr(exc),
                    events=len(self._inflight),
                    attempt=attempt,
                    retry_in_s=delay,
                )
                await asyncio.sleep(delay)
        sent, self._inflight = len(self._inflight), []
        self.acked += sent
        self.flushes += 1
        if attempt:
            log.info("emitter_flush_recovered", events=sent, attempts=attempt + 1)
        while self._flush_waiters and self._flush_waiters[0][0] <= self.acked:
            _target, fut = self._flush_waiters.popleft()
            if not fut.done():
                fut.set_result(None)
        self._admit_space_waiters()
        for listener in self._ack_listeners:
            listener(sent)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        # The loop only ends by cancellation; anything else is a bug, and waiting callers must
        # hear of it instead of waiting for acks that will never come.
        log.error("emitter_flusher_crashed", error=repr(exc))
        self._fail_flush_waiters(EmitterClosedError(f"the emitter's flusher crashed: {exc!r}"))
        self._fail_space_waiters()
        self._on_crash(exc)
