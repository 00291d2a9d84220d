"""The Runstream emitter: training code logs metrics straight to the events topic, in batches.

Only metrics, the hot path, bypass the gateway. Everything MLflow decides at write time goes
through the gateway's HTTP API and its write-side registry (ARCHITECTURE.md decision 3):
`start_run` and `end_run` (runs/create, runs/update), and params and tags (runs/log-batch), so
param immutability, `mlflow.runName` renaming, tag bookkeeping (delete-tag) and "no writes to a
deleted run" hold exactly as for the mlflow client.

- Every call is first checked here with the gateway's own rules (`ingest.emitter_events`): bad
  input raises `MlflowError` at once and nothing is buffered or sent.
- `log_param`, `log_params` and `set_tag` are synchronous: the call returns once the gateway
  acknowledged it, and raises its `MlflowError` (e.g. INVALID_PARAMETER_VALUE "Changing param
  values is not allowed...") as `mlflow.log_param` would. An asynchronous send could not hand
  that error to the caller, and params and tags are few. A request holds at most 100 params and
  100 tags (MLflow's limits); as with the mlflow client, a refused chunk leaves earlier ones.
- Metrics are buffered and one background task sends them through `EventProducer.emit` (one
  record per run per flush), retrying while Kafka is unavailable; a run's metrics keep their
  order. Their write-time check is the one the gateway's metric path makes, "is the run
  active?", answered once per run: a run this emitter started, or one the gateway accepted a
  write for, is known; the first metric of any other run asks the gateway (an empty log-batch)
  and raises its 404 or 400. A run deleted elsewhere after that still receives this emitter's
  metrics. Params and tags are not ordered relative to metrics buffered before them.
- Gateway calls retry 429/502/503/504 and unanswered requests with backoff until
  `request_timeout_s` has passed (`ingest.emitter_http`), as the mlflow client retries.
- `flush` waits for Kafka's acks; `end_run` flushes before ending the run, so its RunEnded
  follows every metric; `close` flushes with a deadline and raises if metrics are left.

`AsyncEmitter` serves asyncio code; `ingest.emitter_sync.Emitter` runs one on a private event
loop for blocking code.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, SupportsFloat, SupportsIndex, TypeAlias

import structlog

from ingest.conventions import PARENT_TAG, TERMINAL_STATUSES, now_ms
from ingest.emitter_buffer import MetricBuffer, Producer
from ingest.emitter_events import MAX_RECORD_BYTES, EventBuilder, checked_run_id
from ingest.emitter_http import AiohttpTransport, GatewayClient, HttpTransport
from ingest.entries import ParamEntry, TagEntry
from ingest.errors import (
    BufferFullError,
    EmitterClosedError,
    FlushTimeoutError,
    invalid_parameter,
)
from ingest.events import MetricLogged
from ingest.producer import EventProducer

__all__ = [
    "MAX_RECORD_BYTES",
    "AsyncEmitter",
    "BufferFullError",
    "EmitterClosedError",
    "EmitterStats",
    "EventBuilder",
    "FlushTimeoutError",
    "HttpTransport",
    "Logged",
    "Producer",
]

log = structlog.get_logger(__name__)

# What the buffer holds: params and tags are never buffered, they go to the gateway at once.
Logged: TypeAlias = MetricLogged


@dataclass(frozen=True, slots=True)
class EmitterStats:
    """Counters of the metric events of one emitter since it started."""

    events_sent: int
    events_buffered: int
    flushes: int
    flush_errors: int
    last_error: str | None


class _State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    FAILED = "failed"
    CLOSING = "closing"
    CLOSED = "closed"


class AsyncEmitter:
    """Log to Runstream from asyncio code: metrics batched to Kafka, the rest over the gateway.

    Use it from one event loop. `max_buffered` bounds the metric events held (buffered or in
    flight); a logging call awaits space when it is full. `flush_timeout_s` is the deadline of
    the flushes that `end_run` and `close` make; `request_timeout_s` that of one gateway call,
    retries included.
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
        truncate_long_values: bool = True,
        flush_timeout_s: float = 30.0,
        request_timeout_s: float = 30.0,
        delivery_timeout_s: float = 15.0,
        retry_backoff_s: float = 0.1,
        max_retry_backoff_s: float = 5.0,
        producer: Producer | None = None,
        http: HttpTransport | None = None,
    ) -> None:
        if max_buffered < 1 or max_batch < 1 or linger_ms < 0:
            raise ValueError("max_buffered and max_batch must be positive, linger_ms not negative")
        self._flush_timeout_s = flush_timeout_s
        self._producer: Producer = (
            EventProducer(bootstrap, topic, delivery_timeout_s=delivery_timeout_s)
            if producer is None
            else producer
        )
        self._gateway = GatewayClient(
            tracking_uri,
            AiohttpTransport() if http is None else http,
            deadline_s=request_timeout_s,
            retry_backoff_s=retry_backoff_s,
            max_retry_backoff_s=max_retry_backoff_s,
        )
        self._buffer = MetricBuffer(
            self._producer,
            max_buffered=max_buffered,
            max_batch=max_batch,
            linger_s=linger_ms / 1000,
            retry_backoff_s=retry_backoff_s,
            max_retry_backoff_s=max_retry_backoff_s,
            on_crash=self._crashed,
        )
        self.builder = EventBuilder(truncate_long_values)
        self._state = _State.NEW
        self._lifecycle = asyncio.Lock()
        # Runs the gateway has said may be written to: metrics for them need no further check.
        self._known: set[str] = set()
        # Gateway calls under way, so that close lets them finish before closing the session.
        self._calls = 0
        self._no_calls = asyncio.Event()
        self._no_calls.set()

    # --- lifetime -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect to Kafka and start the background flusher; safe to call twice."""
        async with self._lifecycle:
            if self._state is _State.RUNNING:
                return
            if self._state is not _State.NEW:
                raise EmitterClosedError("a closed emitter cannot be started again")
            await self._gateway.start()
            try:
                await self._producer.start()
            except BaseException:
                await self._gateway.stop()
                raise
            self._buffer.start()
            self._state = _State.RUNNING
            log.info("emitter_started")

    async def close(self, timeout_s: float | None = None) -> None:
        """Flush (within `timeout_s`, default flush_timeout_s), then stop; safe to call twice.

        Gateway calls under way get the same deadline to finish. Raises FlushTimeoutError,
        after stopping, if metric events were left unsent.
        """
        async with self._lifecycle:
            if self._state in {_State.NEW, _State.CLOSED}:
                self._state = _State.CLOSED
                return
            self._state = _State.CLOSING
            self._buffer.begin_close()
            timeout = self._flush_timeout_s if timeout_s is None else timeout_s
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            failure: FlushTimeoutError | EmitterClosedError | None = None
            try:
                try:
                    await self._buffer.wait_acked(self._buffer.enqueued, timeout)
                except (FlushTimeoutError, EmitterClosedError) as exc:
                    failure = exc
                if self._calls:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(max(deadline - loop.time(), 0)):
                            await self._no_calls.wait()
            finally:
                await self._stop()
            buffer = self._buffer
            unsent = buffer.enqueued - buffer.acked
            log.info("emitter_closed", events_sent=buffer.acked, events_unsent=unsent)
            if failure is not None:
                raise type(failure)(f"closed with {unsent} events unsent: {failure}") from failure

    async def _stop(self) -> None:
        try:
            await self._buffer.stop()
        finally:
            self._state = _State.CLOSED
            try:
                await self._gateway.stop()
            finally:
                await self._producer.stop()

    def _crashed(self, _exc: BaseException | None) -> None:
        if self._state is _State.RUNNING:
            self._state = _State.FAILED

    async def __aenter__(self) -> AsyncEmitter:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def running(self) -> bool:
        """Say whether logging calls are accepted now."""
        return self._state is _State.RUNNING

    @property
    def stats(self) -> EmitterStats:
        """Return the counters as of now."""
        buffer = self._buffer
        return EmitterStats(
            events_sent=buffer.acked,
            events_buffered=buffer.enqueued - buffer.acked,
            flushes=buffer.flushes,
            flush_errors=buffer.flush_errors,
            last_error=buffer.last_error,
        )

    def _check_running(self) -> None:
        if self._state is not _State.RUNNING:
            raise EmitterClosedError(f"the emitter is {self._state.value}, not running")

    @contextlib.asynccontextmanager
    async def _gateway_call(self) -> AsyncIterator[GatewayClient]:
        self._check_running()
        self._calls += 1
        self._no_calls.clear()
        try:
            yield self._gateway
        finally:
            self._calls -= 1
            if not self._calls:
                self._no_calls.set()

    # --- runs, over the gateway -----------------------------------------------------------------

    async def start_run(
        self,
        experiment_id: str | int,
        run_name: str | None = None,
        *,
        parent_run_id: str | None = None,
        tags: Mapping[str, Any] | None = None,
        user_id: str | None = None,
    ) -> str:
        """Create a run through the gateway and return its id."""
        tag_list = [{"key": key, "value": str(value)} for key, value in (tags or {}).items()]
        if parent_run_id is not None:
            parent = checked_run_id(parent_run_id, "parent_run_id")
            tag_list.append({"key": PARENT_TAG, "value": parent})
        body: dict[str, Any] = {
            "experiment_id": str(experiment_id),
            "start_time": now_ms(),
            "tags": tag_list,
        }
        if run_name is not None:
            body["run_name"] = run_name
        if user_id is not None:
            body["user_id"] = user_id
        async with self._gateway_call() as gateway:
            run_id = await gateway.create_run(body)
        self._known.add(run_id)
        log.info("emitter_run_started", run_id=run_id, experiment_id=str(experiment_id))
        return run_id

    async def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        """Flush, then end the run through the gateway with a terminal status."""
        run = checked_run_id(run_id)
        if status not in TERMINAL_STATUSES:
            raise invalid_parameter(
                f"Invalid value {status!r} for parameter 'status' supplied: "
                "a run ends FINISHED, FAILED or KILLED."
            )
        self._check_running()
        # The buffered metrics go first: RunEnded must follow them in the log, and whoever
        # reads the run after end_run must see them (read-your-writes, decision 4).
        await self.flush(self._flush_timeout_s)
        async with self._gateway_call() as gateway:
            await gateway.end_run(run, status, now_ms())
        log.info("emitter_run_ended", run_id=run, status=status)

    def knows_run(self, run_id: str) -> bool:
        """Say whether metrics for the run are buffered without asking the gateway first."""
        return run_id in self._known

    async def require_run(self, run_id: str) -> None:
        """Return once the gateway has said the run may be written to (at once if known)."""
        if run_id not in self._known:
            await self._log_batch(checked_run_id(run_id), (), ())

    async def _log_batch(
        self, run_id: str, params: Sequence[ParamEntry], tags: Sequence[TagEntry]
    ) -> None:
        async with self._gateway_call() as gateway:
            await gateway.log_batch(run_id, params, tags)
        self._known.add(run_id)

    # --- params and tags, over the gateway ------------------------------------------------------

    async def log_param(self, run_id: str, key: str, value: Any) -> None:
        """Log one param; raises MLflow's error if the run already has another value for it."""
        self._check_running()
        run, params = self.builder.param(run_id, key, value)
        await self._log_batch(run, params, ())

    async def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Log several params, in requests of at most 100."""
        self._check_running()
        run, checked = self.builder.params(run_id, params)
        if checked:
            await self._log_batch(run, checked, ())

    async def set_tag(self, run_id: str, key: str, value: Any) -> None:
        """Set one run tag (mlflow.runName also renames the run)."""
        self._check_running()
        run, tag = self.builder.tag(run_id, key, value)
        await self._log_batch(run, (), (tag,))

    # --- metrics, buffered ----------------------------------------------------------------------

    async def log_metric(
        self,
        run_id: str,
        key: str,
        value: SupportsFloat,
        step: SupportsIndex = 0,
        timestamp: SupportsIndex | None = None,
    ) -> None:
        """Buffer one metric point (timestamp in ms, default now); NaN and inf are valid."""
        self._check_running()
        await self._put(self.builder.metric(run_id, key, value, step, timestamp))

    async def log_metrics(
        self,
        run_id: str,
        metrics: Mapping[str, SupportsFloat],
        step: SupportsIndex = 0,
        timestamp: SupportsIndex | None = None,
    ) -> None:
        """Buffer several metrics at one step and timestamp."""
        self._check_running()
        await self._put(self.builder.metrics(run_id, metrics, step, timestamp))

    async def _put(self, events: list[MetricLogged]) -> None:
        if not events:
            return
        await self.require_run(events[0].run_id)
        self._check_running()
        await self._buffer.put(events)

    async def flush(self, timeout_s: float | None = None) -> None:
        """Wait until every metric buffered before this call is acknowledged by Kafka.

        Raises FlushTimeoutError when `timeout_s` passes first; the events stay buffered.
        """
        await self._buffer.wait_acked(self._buffer.enqueued, timeout_s)

    def put_nowait(self, events: list[MetricLogged]) -> None:
        """Buffer checked metric events now, whatever the bound (the sync emitter keeps its own)."""
        self._buffer.put_nowait(events)

    def add_ack_listener(self, listener: Callable[[int], None]) -> None:
        """Call `listener(n)` on the loop each time n more events are acknowledged."""
        self._buffer.add_ack_listener(listener)
