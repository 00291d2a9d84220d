"""The blocking Runstream emitter: an `AsyncEmitter` on a private event loop in a daemon thread.

Metric calls are checked in the caller's thread and staged under a lock, which also keeps the
buffer bound, so a full buffer blocks the caller, not the loop; the call that stages into an
empty list schedules one `call_soon_threadsafe` hand-off of everything staged by the time it
runs (one wake-up of the loop per burst of calls, not per call). Everything else (runs, params,
tags, the first metric of a run the emitter does not know yet) is a coroutine of the
`AsyncEmitter` run to completion with `run_coroutine_threadsafe`, so `log_param` blocks until
the gateway answered and raises its error, as `mlflow.log_param` does. `close` is registered
with `atexit` while the emitter runs, so a script that forgets it still flushes.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import os
import threading
import time
from collections.abc import Coroutine, Mapping
from types import TracebackType
from typing import Any, SupportsFloat, SupportsIndex, TypeVar

import structlog

from ingest.emitter import AsyncEmitter, EmitterStats, HttpTransport, Producer
from ingest.errors import BufferFullError, EmitterClosedError
from ingest.events import MetricLogged

__all__ = ["Emitter"]

log = structlog.get_logger(__name__)

T = TypeVar("T")


class Emitter:
    """Log to Runstream from blocking code; the same API as `AsyncEmitter`, thread-safe.

    When the buffer holds `max_buffered` events a logging call blocks up to `block_timeout_s`,
    then raises `BufferFullError` having buffered nothing.
    """

    def __init__(
        self,
        tracking_uri: str,
        bootstrap: str,
        topic: str,
        *,
        max_buffered: int = 100_000,
        max_batch: int = 5000,
        linger_ms: float = 50,
        block_timeout_s: float = 30.0,
        truncate_long_values: bool = True,
        flush_timeout_s: float = 30.0,
        request_timeout_s: float = 30.0,
        delivery_timeout_s: float = 15.0,
        retry_backoff_s: float = 0.1,
        max_retry_backoff_s: float = 5.0,
        producer: Producer | None = None,
        http: HttpTransport | None = None,
    ) -> None:
        self._async = AsyncEmitter(
            tracking_uri,
            bootstrap,
            topic,
            max_buffered=max_buffered,
            max_batch=max_batch,
            linger_ms=linger_ms,
            truncate_long_values=truncate_long_values,
            flush_timeout_s=flush_timeout_s,
            request_timeout_s=request_timeout_s,
            delivery_timeout_s=delivery_timeout_s,
            retry_backoff_s=retry_backoff_s,
            max_retry_backoff_s=max_retry_backoff_s,
            producer=producer,
            http=http,
        )
        self._async.add_ack_listener(self._acked)
        self._builder = self._async.builder
        self._max_buffered = max_buffered
        self._block_timeout_s = block_timeout_s
        # Events staged or handed to the loop and not yet acknowledged; guarded by _cond.
        self._cond = threading.Condition()
        self._outstanding = 0
        self._staged: list[MetricLogged] = []
        self._running = False
        self._closed = False
        # Whether coroutines may still be handed to the loop; guarded by _cond.
        self._loop_open = False
        self._final_stats: EmitterStats | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lifecycle = threading.Lock()
        # A forked child (a data-loader worker) has a copy of this object but not its loop
        # thread: handing it work would block for good, so it may only refuse.
        self._pid = os.getpid()

    # --- lifetime -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the loop thread, connect to Kafka and register close() with atexit."""
        with self._lifecycle:
            if self._running:
                return
            if self._closed:
                raise EmitterClosedError("a closed emitter cannot be started again")
            self._pid = os.getpid()
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=self._run_loop, args=(loop,), name="runstream-emitter", daemon=True
            )
            thread.start()
            self._loop, self._thread = loop, thread
            with self._cond:
                self._loop_open = True
            try:
                self._call(self._async.start())
            except BaseException:
                self._stop_loop()
                raise
            with self._cond:
                self._running = True
            atexit.register(self.close)

    def close(self, timeout_s: float | None = None) -> None:
        """Flush (within `timeout_s`, default flush_timeout_s), stop the loop thread; idempotent.

        Raises FlushTimeoutError, after stopping, if events were left unsent.
        """
        if os.getpid() != self._pid:
            return  # the parent process owns the loop thread and the connections
        with self._lifecycle:
            with self._cond:
                if self._closed:
                    return
                self._closed = True
                was_running, self._running = self._running, False
                # Wake callers blocked on a full buffer: they raise EmitterClosedError.
                self._cond.notify_all()
            atexit.unregister(self.close)
            if not was_running:
                return
            try:
                self._call(self._async.close(timeout_s))
            finally:
                self._final_stats = self._async.stats
                self._stop_loop()

    def _run_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            # As asyncio.run ends: a call that raced close() is cancelled, not left hanging.
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    def _stop_loop(self) -> None:
        with self._cond:
            self._loop_open = False
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()

    def __enter__(self) -> Emitter:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def stats(self) -> EmitterStats:
        """Return the counters as of now (as of close, once closed)."""
        if self._final_stats is not None:
            return self._final_stats
        with self._cond:
            idle = not self._loop_open
        if idle:  # not started: nothing runs that could change them
            return self._async.stats
        return self._call(self._stats())

    async def _stats(self) -> EmitterStats:
        return self._async.stats

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        with self._cond:
            if not self._loop_open or self._loop is None or os.getpid() != self._pid:
                coro.close()
                raise EmitterClosedError("the emitter is not running in this process")
            future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise EmitterClosedError("the emitter closed during the call") from None

    # --- runs -----------------------------------------------------------------------------------

    def start_run(
        self,
        experiment_id: str | int,
        run_name: str | None = None,
        *,
        parent_run_id: str | None = None,
        tags: Mapping[str, Any] | None = None,
        user_id: str | None = None,
    ) -> str:
        """Create a run through the gateway and return its id."""
        return self._call(
            self._async.start_run(
                experiment_id, run_name, parent_run_id=parent_run_id, tags=tags, user_id=user_id
            )
        )

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        """Flush, then end the run through the gateway with a terminal status."""
        self._call(self._async.end_run(run_id, status))

    # --- logging --------------------------------------------------------------------------------

    def log_metric(
        self,
        run_id: str,
        key: str,
        value: SupportsFloat,
        step: SupportsIndex = 0,
        timestamp: SupportsIndex | None = None,
    ) -> None:
        """Buffer one metric point (timestamp in ms, default now); NaN and inf are valid."""
        self._check_running()
        self._put(self._builder.metric(run_id, key, value, step, timestamp))

    def log_metrics(
        self,
        run_id: str,
        metrics: Mapping[str, SupportsFloat],
        step: SupportsIndex = 0,
        timestamp: SupportsIndex | None = None,
    ) -> None:
        """Buffer several metrics at one step and timestamp."""
        self._check_running()
        self._put(self._builder.metrics(run_id, metrics, step, timestamp))

    def log_param(self, run_id: str, key: str, value: Any) -> None:
        """Log one param; raises MLflow's error if the run already has another value for it."""
        self._check_running()
        self._call(self._async.log_param(run_id, key, value))

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Log several params, in requests of at most 100."""
        self._check_running()
        self._call(self._async.log_params(run_id, params))

    def set_tag(self, run_id: str, key: str, value: Any) -> None:
        """Set one run tag (mlflow.runName also renames the run)."""
        self._check_running()
        self._call(self._async.set_tag(run_id, key, value))

    def flush(self, timeout_s: float | None = None) -> None:
        """Wait until every metric buffered before this call is acknowledged by Kafka.

        Raises FlushTimeoutError when `timeout_s` passes first; the events stay buffered.
        """
        with self._cond:
            idle = not self._loop_open and not self._outstanding
        if idle:  # not started, or closed with everything sent
            return
        self._call(self._async.flush(timeout_s))

    def _check_running(self) -> None:
        if not (self._running and self._async.running) or os.getpid() != self._pid:
            raise EmitterClosedError("the emitter is not running in this process")

    def _put(self, events: list[MetricLogged]) -> None:
        n = len(events)
        if not n:
            return
        run_id = events[0].run_id
        # A set lookup from this thread: atomic under the GIL, and a stale "no" costs only one
        # more check through the gateway.
        if not self._async.knows_run(run_id):
            self._call(self._async.require_run(run_id))
        deadline = time.monotonic() + self._block_timeout_s
        with self._cond:
            # A call larger than the whole bound is taken into an empty buffer, or it never could.
            while self._outstanding and self._outstanding + n > self._max_buffered:
                self._check_running()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BufferFullError(
                        f"{self._outstanding} events buffered (max {self._max_buffered}) for "
                        f"{self._block_timeout_s} s; {n} more not buffered"
                    )
                self._cond.wait(remaining)
            self._check_running()
            self._outstanding += n
            self._staged += events
            if len(self._staged) == n:
                loop = self._loop
                if loop is None:  # unreachable while running; keeps the type checker informed
                    raise EmitterClosedError("the emitter is not running")
                # Every staged event is handed over by a callback scheduled before anything this
                # caller schedules next (a flush, close), since callbacks run in order.
                loop.call_soon_threadsafe(self._hand_over)

    def _hand_over(self) -> None:
        with self._cond:
            staged, self._staged = self._staged, []
        self._async.put_nowait(staged)

    def _acked(self, n: int) -> None:
        with self._cond:
            self._outstanding -= n
            self._cond.notify_all()
