"""Unit tests for the emitter over a fake producer and a fake gateway: no network.

Metrics go to the fake producer (batching, the bound, retries, flush and close); runs, params
and tags go to the fake gateway, which keeps the registry rules the emitter relies on (param
immutability, deleted runs, unknown runs) and can answer with scripted failures. Nothing here
waits a fixed time for something to happen; a short wait only ever proves that something has
*not* happened yet.
"""

from __future__ import annotations

import asyncio
import atexit
import enum
import json
import math
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from decimal import Decimal
from fractions import Fraction
from typing import Any

import numpy as np
import pytest

from ingest.codec import decode_record, encode_record
from ingest.emitter import (
    MAX_RECORD_BYTES,
    AsyncEmitter,
    BufferFullError,
    EmitterClosedError,
    FlushTimeoutError,
)
from ingest.emitter_http import GatewayClient, NoAnswerError
from ingest.emitter_sync import Emitter
from ingest.entries import ParamEntry, TagEntry
from ingest.errors import MlflowError, UnavailableError, does_not_exist, invalid_parameter
from ingest.events import Event, MetricLogged
from ingest.requests import parse_log_batch, parse_log_metric, parse_log_param, parse_set_tag

RUN = "0123456789abcdef0123456789abcdef"
OTHER = "fedcba9876543210fedcba9876543210"
URI = "http://tracking.invalid"
DEADLINE_S = 10.0
# Long enough that a test passing proves linger was cut short, not waited out.
FOREVER_MS = 600_000


class Gate:
    """A barrier the fakes wait at; opened from any thread."""

    def __init__(self, *, is_open: bool = True) -> None:
        self._open = is_open
        self._lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    async def wait(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._open:
                return
            fut: asyncio.Future[None] = loop.create_future()
            self._waiters.append((loop, fut))
        await fut

    def open(self) -> None:
        with self._lock:
            self._open = True
            waiters, self._waiters = self._waiters, []
        for loop, fut in waiters:
            if not loop.is_closed():
                loop.call_soon_threadsafe(_resolve, fut)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class FakeProducer:
    """Records each emit call's events; can fail or hold emits; thread-safe to inspect."""

    def __init__(self, *, failures: int = 0, gate: Gate | None = None) -> None:
        self.failures = failures
        self.gate = gate or Gate()
        self.calls: list[list[Event]] = []
        self.attempts = 0
        self.started = False
        self.stopped = False
        self.changed = threading.Condition()
        self.timeline: list[str] | None = None

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def emit(self, events: Sequence[Event]) -> None:
        with self.changed:
            self.attempts += 1
            self.changed.notify_all()
        await self.gate.wait()
        with self.changed:
            if self.failures:
                self.failures -= 1
                raise UnavailableError("Kafka did not acknowledge the write: down")
            self.calls.append(list(events))
            if self.timeline is not None:
                self.timeline.append(f"kafka:{len(events)}")
            self.changed.notify_all()

    @property
    def events(self) -> list[Event]:
        with self.changed:
            return [e for call in self.calls for e in call]


class FakeGateway:
    """The gateway's write endpoints the emitter calls, with the registry rules it relies on.

    `script` holds answers given instead of handling, first in first out: (status, body) or an
    exception to raise (no answer). `gate` holds every request until it opens.
    """

    def __init__(self, *runs: str) -> None:
        self.stages: dict[str, str] = dict.fromkeys(runs, "active")
        self.names: dict[str, str] = {}
        self.params: dict[str, dict[str, str]] = {}
        self.tags: dict[str, dict[str, str]] = {}
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.script: deque[tuple[int, dict[str, Any] | None] | Exception] = deque()
        self.gate = Gate()
        self.started = False
        self.stopped = False
        self.timeline: list[str] | None = None

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True
        self.gate.open()

    async def post(self, url: str, body: bytes, timeout_s: float) -> tuple[int, bytes]:
        assert timeout_s > 0
        path = url.removeprefix(f"{URI}/api/2.0/mlflow/")
        payload = json.loads(body)
        self.requests.append((path, payload))
        await self.gate.wait()
        if self.stopped:  # what aiohttp does to a request when its session closes
            raise NoAnswerError(f"{url}: connection closed", delivered=True)
        if self.script:
            scripted = self.script.popleft()
            if isinstance(scripted, Exception):
                raise scripted
            status, answer = scripted
            return status, b"" if answer is None else json.dumps(answer).encode()
        if self.timeline is not None:
            self.timeline.append(f"http:{path}")
        try:
            result = self._handle(path, payload)
        except MlflowError as exc:
            return exc.http_status, json.dumps(exc.to_json()).encode()
        return 200, json.dumps(result).encode()

    def _active(self, run_id: str) -> None:
        stage = self.stages.get(run_id)
        if stage is None:
            raise does_not_exist(f"Run with id={run_id} not found")
        if stage != "active":
            raise invalid_parameter(f"The run {run_id} must be in the 'active' state.")

    def _handle(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if path == "runs/create":
            run_id = uuid.uuid4().hex
            self.stages[run_id] = "active"
            return {"run": {"info": {"run_id": run_id}}}
        if path == "runs/update":
            self._active(body["run_id"])
            return {"run_info": {"run_id": body["run_id"], "status": body["status"]}}
        assert path == "runs/log-batch", path
        req = parse_log_batch(body)
        self._active(req.run_id)
        params = self.params.setdefault(req.run_id, {})
        for p in req.params:
            old = params.get(p.key)
            if old is not None and old != p.value:
                raise invalid_parameter(f"Changing param values is not allowed ({p.key}).")
        params.update((p.key, p.value) for p in req.params)
        for t in req.tags:
            self.tags.setdefault(req.run_id, {})[t.key] = t.value
            if t.key == "mlflow.runName":
                self.names[req.run_id] = t.value
        return {}

    def paths(self) -> list[str]:
        return [path for path, _ in self.requests]


async def eventually(predicate: Callable[[], bool]) -> None:
    """Let the loop run until `predicate()` holds, failing the test after the deadline."""
    deadline = time.monotonic() + DEADLINE_S
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.001)


@pytest.fixture
async def fake() -> AsyncIterator[FakeProducer]:
    producer = FakeProducer()
    yield producer
    producer.gate.open()  # never leave an emit waiting


@pytest.fixture
def gw() -> Iterator[FakeGateway]:
    gateway = FakeGateway(RUN, OTHER)
    yield gateway
    gateway.gate.open()


def make(producer: FakeProducer, gateway: FakeGateway, **options: Any) -> AsyncEmitter:
    options.setdefault("retry_backoff_s", 0.001)
    return AsyncEmitter(URI, "kafka.invalid:9092", "t", producer=producer, http=gateway, **options)


def metrics_of(events: Sequence[Event]) -> list[tuple[str, str, int]]:
    return [(e.run_id, e.key, e.step) for e in events if isinstance(e, MetricLogged)]


# --- batching ------------------------------------------------------------------------------------


async def test_batches_hold_at_most_max_batch_and_keep_order(
    fake: FakeProducer, gw: FakeGateway
) -> None:
    async with make(fake, gw, max_batch=5, linger_ms=FOREVER_MS) as em:
        for step in range(12):
            await em.log_metric(RUN if step % 2 else OTHER, "loss", step / 10, step=step)
        await em.flush(DEADLINE_S)
        assert [len(call) for call in fake.calls] == [5, 5, 2]
        assert [e.step for e in fake.events if isinstance(e, MetricLogged)] == list(range(12))
        assert em.stats.events_sent == 12
        assert em.stats.flushes == 3
        assert em.stats.events_buffered == 0


async def test_a_full_batch_is_sent_without_waiting_for_linger(
    fake: FakeProducer, gw: FakeGateway
) -> None:
    async with make(fake, gw, max_batch=3, linger_ms=FOREVER_MS) as em:
        await em.log_metrics(RUN, {"a": 1.0, "b": 2.0, "c": 3.0})
        await eventually(lambda: len(fake.events) == 3)


async def test_a_partial_batch_is_sent_after_linger(fake: FakeProducer, gw: FakeGateway) -> None:
    async with make(fake, gw, max_batch=1000, linger_ms=1) as em:
        await em.log_metric(RUN, "lr", 0.1)
        await eventually(lambda: len(fake.events) == 1)
        assert em.stats.events_buffered == 0


async def test_a_runs_record_stays_under_the_size_cap(fake: FakeProducer, gw: FakeGateway) -> None:
    keys = [f"{i:04d}" + "k" * 246 for i in range(4000)]
    async with make(fake, gw, max_batch=100_000, linger_ms=FOREVER_MS) as em:
        for key in keys:
            await em.log_metric(RUN, key, 1.0)
        await em.flush(DEADLINE_S)
    assert len(fake.calls) > 1
    for call in fake.calls:
        assert len(encode_record(call)) < MAX_RECORD_BYTES
    assert [e.key for e in fake.events if isinstance(e, MetricLogged)] == keys


# --- validation and coercion -------------------------------------------------------------------


def gateway_message(parse: Callable[..., object], body: dict[str, Any], **kw: bool) -> str:
    with pytest.raises(MlflowError) as info:
        parse(body, **kw)
    return info.value.message


BAD_CALLS: list[tuple[str, Callable[[AsyncEmitter], Any], str | None]] = [
    (
        "metric key charset",
        lambda em: em.log_metric(RUN, "bad*key", 1.0),
        gateway_message(
            parse_log_metric, {"run_id": RUN, "key": "bad*key", "value": 1, "timestamp": 1}
        ),
    ),
    (
        "metric value bool",
        lambda em: em.log_metric(RUN, "k", True),
        gateway_message(
            parse_log_metric, {"run_id": RUN, "key": "k", "value": True, "timestamp": 1}
        ),
    ),
    ("metric value text", lambda em: em.log_metric(RUN, "k", "abc"), None),  # type: ignore[arg-type]
    ("metric value object", lambda em: em.log_metric(RUN, "k", object()), None),  # type: ignore[arg-type]
    ("metric value array", lambda em: em.log_metric(RUN, "k", np.array([1.0, 2.0])), None),
    ("metric step fraction", lambda em: em.log_metric(RUN, "k", 1.0, step=1.5), None),  # type: ignore[arg-type]
    ("metric step bool", lambda em: em.log_metric(RUN, "k", 1.0, step=True), None),
    ("metric timestamp negative", lambda em: em.log_metric(RUN, "k", 1.0, timestamp=-1), None),
    ("metric key not str", lambda em: em.log_metric(RUN, 7, 1.0), None),  # type: ignore[arg-type]
    ("run id", lambda em: em.log_metric("no such/run", "k", 1.0), None),
    ("run id not str", lambda em: em.set_tag(None, "k", "v"), None),  # type: ignore[arg-type]
    ("metrics one bad", lambda em: em.log_metrics(RUN, {"ok": 1.0, "../up": 2.0}), None),
    ("metrics bad run id", lambda em: em.log_metrics("?", {"ok": 1.0}), None),
    (
        "param path",
        lambda em: em.log_param(RUN, "../x", "v"),
        gateway_message(parse_log_param, {"run_id": RUN, "key": "../x", "value": "v"}),
    ),
    ("params one bad", lambda em: em.log_params(RUN, {"ok": 1, "a" * 251: 2}), None),
    ("params bad run id", lambda em: em.log_params("a/b", {"ok": 1}), None),
    (
        "tag key too long",
        lambda em: em.set_tag(RUN, "k" * 251, "v"),
        gateway_message(parse_set_tag, {"run_id": RUN, "key": "k" * 251, "value": "v"}),
    ),
    ("parent run id", lambda em: em.start_run("0", parent_run_id="../p"), None),
]


@pytest.mark.parametrize(("case", "call", "message"), BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
async def test_invalid_input_raises_mlflow_error_and_sends_nothing(
    fake: FakeProducer,
    gw: FakeGateway,
    case: str,
    call: Callable[[AsyncEmitter], Any],
    message: str | None,
) -> None:
    async with make(fake, gw, linger_ms=0) as em:
        with pytest.raises(MlflowError) as info:
            await call(em)
        assert info.value.error_code == "INVALID_PARAMETER_VALUE", case
        assert not info.value.retriable
        if message is not None:  # the gateway's own text for the same input
            assert info.value.message == message
        assert em.stats.events_buffered == 0
        await em.flush(DEADLINE_S)
    assert fake.attempts == 0
    assert gw.requests == []


async def test_long_values_are_truncated_or_refused_as_the_gateway_does(
    fake: FakeProducer, gw: FakeGateway
) -> None:
    async with make(fake, gw, linger_ms=0) as em:
        await em.log_param(RUN, "p", "x" * 7000)
        await em.set_tag(RUN, "t", "y" * 9000)
    assert len(gw.params[RUN]["p"]) == 6000
    assert len(gw.tags[RUN]["t"]) == 8000

    strict = FakeGateway(RUN)
    async with make(FakeProducer(), strict, truncate_long_values=False) as em:
        with pytest.raises(MlflowError, match="exceeds the maximum length of 6000"):
            await em.log_param(RUN, "p", "x" * 7000)
        with pytest.raises(MlflowError, match="exceeds the maximum length of 6000"):
            await em.log_params(RUN, {"p": "x" * 7000})
    assert strict.requests == []


class Level(enum.IntEnum):
    HIGH = 3


class Ratio(float):
    pass


async def test_number_types_are_coerced_so_no_event_is_poison(
    fake: FakeProducer, gw: FakeGateway
) -> None:
    async with make(fake, gw, linger_ms=0) as em:
        await em.log_metric(RUN, "np64", np.float64(0.5), step=np.int64(7), timestamp=np.int32(9))
        await em.log_metric(RUN, "np32", np.float32(0.25), step=Level.HIGH)
        await em.log_metric(RUN, "int", 3, step=2.0)  # type: ignore[arg-type]
        await em.log_metric(RUN, "dec", Decimal("1.5"))
        await em.log_metric(RUN, "frac", Fraction(1, 4))
        await em.log_metric(RUN, "sub", Ratio(2.5))
        await em.log_metric(RUN, "nan", "NaN")  # type: ignore[arg-type]
        await em.log_metric(RUN, "inf", math.inf)
        await em.log_metrics(RUN, {"m1": np.float64(1.0), "m2": Level.HIGH}, step=np.int64(4))
        await em.log_param(RUN, "p", 0.001)
        await em.log_params(RUN, {"n": None, "b": True})
        await em.set_tag(RUN, "t", Level.HIGH)
        await em.flush(DEADLINE_S)
    events = fake.events
    metrics = {e.key: e for e in events if isinstance(e, MetricLogged)}
    assert len(metrics) == len(events)  # params and tags never reach Kafka from here
    for event in metrics.values():
        assert type(event.value) is float
        assert type(event.step) is int
        assert type(event.timestamp) is int
    assert (metrics["np64"].value, metrics["np64"].step, metrics["np64"].timestamp) == (0.5, 7, 9)
    assert metrics["np32"].step == 3
    assert metrics["int"].value == 3.0
    assert metrics["int"].step == 2
    assert metrics["dec"].value == 1.5
    assert metrics["frac"].value == 0.25
    assert math.isnan(metrics["nan"].value)
    assert metrics["inf"].value == math.inf
    assert metrics["m2"].value == 3.0
    assert metrics["m2"].step == 4
    assert gw.params[RUN] == {"p": "0.001", "n": "None", "b": "True"}
    assert gw.tags[RUN] == {"t": "3"}
    # What a consumer decodes is what was built: no value the codec would turn into a poison.
    decoded = decode_record(encode_record(events))
    assert [type(e) for e in decoded] == [type(e) for e in events]


async def test_default_timestamp_is_now(fake: FakeProducer, gw: FakeGateway) -> None:
    before = time.time_ns() // 1_000_000
    async with make(fake, gw, linger_ms=0) as em:
        await em.log_metric(RUN, "k", 1.0)
    (event,) = fake.events
    assert isinstance(event, MetricLogged)
    assert before <= event.timestamp == event.at <= time.time_ns() // 1_000_000


async def test_end_run_refuses_a_status_that_is_not_terminal(
    fake: FakeProducer, gw: FakeGateway
) -> None:
    async with make(fake, gw) as em:
        with pytest.raises(MlflowError) as info:
            await em.end_run(RUN, "RUNNING")
        assert info.value.error_code == "INVALID_PARAMETER_VALUE"
    assert gw.requests == []


# --- params and tags through the gateway --------------------------------------------------------


async def test_params_and_tags_are_log_batch_calls_answered_before_returning(
    fake: FakeProducer, gw: FakeGateway
) -> None:
    async with make(fake, gw, linger_ms=FOREVER_MS) as em:
        await em.log_param(RUN, "lr", 0.01)
        assert gw.params[RUN] == {"lr": "0.01"}  # on the gateway when the call returns
        await em.log_params(RUN, {"layers": 4, "opt": "adam"})
        await em.set_tag(RUN, "mlflow.runName", "renamed")
        await em.log_params(RUN, {})  # nothing to send
    assert gw.requests == [
        ("runs/log-batch", {"run_id": RUN, "params": [{"key": "lr", "value": "0.01"}]}),
        (
            "runs/log-batch",
            {
                "run_id": RUN,
                "params": [{"key": "layers", "value": "4"}, {"key": "opt", "value": "adam"}],
            },
        ),
        (
            "runs/log-batch",
            {"run_id": RUN, "tags": [{"key": "mlflow.runName", "value": "renamed"}]},
        ),
    ]
    assert gw.names == {RUN: "renamed"}
    assert fake.attempts == 0


async def test_many_params_go_in_requests_of_at_most_100(
    fake: FakeProducer, gw: FakeGateway
) -> None:
    params = {f"p{i}": i for i in range(250)}
    async with make(fake, gw) as em:
        await em.log_params(RUN, params)
    sizes = [len(body["params"]) for _, body in gw.requests]
    assert sizes == [100, 100, 50]
    assert list(gw.params[RUN]) == list(params)


async def test_gateway_client_pairs_param_and_tag_chunks(gw: FakeGateway) -> None:
    client = GatewayClient(URI, gw, deadline_s=1, retry_backoff_s=0.001, max_retry_backoff_s=0.01)
    await client.start()
    params = [ParamEntry(f"p{i}", "v") for i in range(150)]
    tags = [TagEntry(f"t{i}", "v") for i in range(120)]
    await client.log_batch(RUN, params, tags)
    await client.log_batch(OTHER)
    await client.stop()
    shapes = [(len(b.get("params", ())), len(b.get("tags", ()))) for _, b in gw.requests]
    assert shapes == [(100, 100), (50, 20), (0, 0)]


async def test_changing_a_param_raises_the_gateways_error(
    fake: FakeProducer, gw: FakeGateway
) -> None:
    async with make(fake, gw) as em:
        await em.log_param(RUN, "lr", 0.1)
        await em.log_param(RUN, "lr", "0.1")  # the same value again is fine, as in MLflow
        with pytest.raises(MlflowError, match="Changing param values") as info:
            await em.log_param(RUN, "lr", 0.2)
        assert info.value.error_code == "INVALID_PARAMETER_VALUE"
        assert not info.value.retriable
        with pytest.raises(MlflowError, match="Changing param values"):
            await em.log_params(RUN, {"other": 1, "lr": 0.3})
        assert em.running  # a refused call leaves the emitter usable
    assert gw.params[RUN] == {"lr": "0.1"}
    assert len(gw.requests) == 4  # a 400 is final: never retried


async def test_writes_to_deleted_or_unknown_runs_are_refused(
    fake: FakeProducer, gw: FakeGateway
) -> None:
    gw.stages[OTHER] = "deleted"
    unknown = "ab" * 16
    async with make(fake, gw, linger_ms=0) as em:
        calls: list[Callable[[], Awaitable[None]]] = [
            lambda: em.log_param(OTHER, "p", 1),
            lambda: em.set_tag(OTHER, "t", "v"),
            lambda: em.log_metric(OTHER, "m", 1.0),
            lambda: em.log_metrics(OTHER, {"m": 1.0}),
        ]
        for call in calls:
            with pytest.raises(MlflowError, match="must be in the 'active' state") as info:
                await call()
            assert info.value.error_code == "INVALID_PARAMETER_VALUE"
        with pytest.raises(MlflowError) as info:
            await em.log_metric(unknown, "m", 1.0)
        assert info.value.error_code == "RESOURCE_DOES_NOT_EXIST"
        assert not em.knows_run(unknown)
        assert em.stats.events_buffered == 0
        await em.flush(DEADLINE_S)
    assert fake.attempts == 0


async def test_a_run_is_checked_once_and_runs_it_started_never(
    fake: FakeProducer, gw: FakeGateway
) -> None:
    async with make(fake, gw, linger_ms=0) as em:
        started = await em.start_run("0")
        assert em.knows_run(started)
        for step in range(5):
            await em.log_metric(started, "loss", 1.0, step=step)
        assert gw.paths() == ["runs/create"]
        assert not em.knows_run(RUN)
        for step in range(5):
            await em.log_metrics(RUN, {"loss": 1.0}, step=step)
        await em.log_param(OTHER, "p", 1)  # a write the gateway accepted makes the run known
        await em.log_metric(OTHER, "loss", 1.0)
        await em.flush(DEADLINE_S)
    assert gw.requests[1:] == [
        ("runs/log-batch", {"run_id": RUN}),
        ("runs/log-batch", {"run_id": OTHER, "params": [{"key": "p", "value": "1"}]}),
    ]
    assert len(fake.events) == 11


async def test_end_run_flushes_metrics_before_ending_the_run(
    fake: FakeProducer, gw: FakeGateway
) -> None:
    timeline: list[str] = []
    fake.timeline = gw.timeline = timeline
    async with make(fake, gw, linger_ms=FOREVER_MS) as em:
        run = await em.start_run("0", "r")
        await em.log_metrics(run, {"a": 1.0, "b": 2.0})
        await em.end_run(run, "KILLED")
    assert timeline == ["http:runs/create", "kafka:2", "http:runs/update"]
    assert gw.requests[-1][1]["status"] == "KILLED"


async def test_start_run_sends_mlflows_create_body(fake: FakeProducer, gw: FakeGateway) -> None:
    async with make(fake, gw) as em:
        await em.start_run(7, "child", parent_run_id=RUN, tags={"k": 1}, user_id="ana")
    ((path, body),) = gw.requests
    assert path == "runs/create"
    assert body["experiment_id"] == "7"
    assert body["run_name"] == "child"
    assert body["user_id"] == "ana"
    assert body["tags"] == [{"key": "k", "value": "1"}, {"key": "mlflow.parentRunId", "value": RUN}]


# --- gateway failures ----------------------------------------------------------------------------


def unavailable(status: int = 503) -> tuple[int, dict[str, Any]]:
    code = "REQUEST_LIMIT_EXCEEDED" if status == 429 else "TEMPORARILY_UNAVAILABLE"
    return status, {"error_code": code, "message": "Kafka did not acknowledge the write"}


async def test_503_and_429_are_retried_until_they_pass(fake: FakeProducer, gw: FakeGateway) -> None:
    gw.script.extend([unavailable(503), unavailable(429), (502, None), (504, None)])
    async with make(fake, gw, max_retry_backoff_s=0.002) as em:
        await em.log_param(RUN, "lr", 0.1)
    assert gw.paths() == ["runs/log-batch"] * 5
    assert gw.params[RUN] == {"lr": "0.1"}


async def test_unavailability_past_the_deadline_raises_a_retriable_error(
    fake: FakeProducer, gw: FakeGateway
) -> None:
    gw.script.extend([unavailable()] * 10_000)
    async with make(fake, gw, request_timeout_s=0.05, max_retry_backoff_s=0.005) as em:
        began = time.monotonic()
        with pytest.raises(MlflowError) as info:
            await em.set_tag(RUN, "t", "v")
        assert time.monotonic() - began < DEADLINE_S
        assert info.value.error_code == "TEMPORARILY_UNAVAILABLE"
        assert info.value.retriable
        gw.script.clear()
        gw.script.extend([(503, None)] * 10_000)
        with pytest.raises(UnavailableError, match="HTTP 503"):
            await em.log_param(RUN, "p", 1)
    assert len(gw.requests) > 2
    assert RUN not in gw.tags


async def test_other_errors_are_final(fake: FakeProducer, gw: FakeGateway) -> None:
    gw.script.extend([(500, None), (404, {"error_code": "ENDPOINT_NOT_FOUND", "message": "no"})])
    async with make(fake, gw) as em:
        with pytest.raises(MlflowError) as info:
            await em.log_param(RUN, "p", 1)
        assert info.value.error_code == "INTERNAL_ERROR"
        with pytest.raises(MlflowError) as info:
            await em.start_run("0")
        assert (info.value.error_code, info.value.message) == ("ENDPOINT_NOT_FOUND", "no")
    assert len(gw.requests) == 2


async def test_no_answer_is_retried_unless_a_run_could_be_created_twice(
    fake: FakeProducer, gw: FakeGateway
) -> None:
    def lost(*, delivered: bool) -> NoAnswerError:
        return NoAnswerError("no answer", delivered=delivered)

    async with make(fake, gw) as em:
        gw.script.extend([lost(delivered=False), lost(delivered=True)])
        await em.log_param(RUN, "p", 1)  # idempotent: both retried
        assert gw.paths() == ["runs/log-batch"] * 3
        gw.script.append(lost(delivered=False))  # refused connection: nothing was created
        await em.start_run("0")
        gw.script.append(lost(delivered=True))  # maybe created: a retry could make two runs
        with pytest.raises(UnavailableError) as info:
            await em.start_run("0")
        assert info.value.retriable
    assert gw.paths()[3:] == ["runs/create"] * 3


async def test_close_lets_a_gateway_call_under_way_finish(
    fake: FakeProducer, gw: FakeGateway
) -> None:
    gw.gate = Gate(is_open=False)
    em = make(fake, gw)
    await em.start()
    logging = asyncio.create_task(em.log_param(RUN, "p", 1))
    await eventually(lambda: len(gw.requests) == 1)
    closing = asyncio.create_task(em.close())
    done, _ = await asyncio.wait({logging, closing}, timeout=0.05)
    assert not done  # close waits for the call
    assert not em.running
    with pytest.raises(EmitterClosedError):
        await em.set_tag(RUN, "t", "v")  # but takes no new one
    gw.gate.open()
    await asyncio.wait_for(logging, DEADLINE_S)
    await asyncio.wait_for(closing, DEADLINE_S)
    assert gw.params[RUN] == {"p": "1"}
    assert gw.stopped


async def test_close_stops_a_gateway_call_at_its_deadline(
    fake: FakeProducer, gw: FakeGateway
) -> None:
    gw.gate = Gate(is_open=False)
    em = make(fake, gw)
    await em.start()
    logging = asyncio.create_task(em.log_param(RUN, "p", 1))
    await eventually(lambda: len(gw.requests) == 1)
    await em.close(timeout_s=0.05)  # no metric was left: no error for close itself
    with pytest.raises(EmitterClosedError, match="closed during the call"):
        await asyncio.wait_for(logging, DEADLINE_S)
    assert RUN not in gw.params


# --- the bound ---------------------------------------------------------------------------------


async def test_an_async_caller_awaits_space(fake: FakeProducer, gw: FakeGateway) -> None:
    fake.gate = Gate(is_open=False)
    async with make(fake, gw, max_buffered=3, max_batch=2, linger_ms=0) as em:
        await em.log_metrics(RUN, {"a": 1.0, "b": 2.0, "c": 3.0})
        blocked = asyncio.create_task(em.log_metric(RUN, "d", 4.0))
        cancelled = asyncio.create_task(em.log_metric(RUN, "x", 0.0))
        done, _ = await asyncio.wait({blocked, cancelled}, timeout=0.05)
        assert not done
        assert em.stats.events_buffered == 3
        cancelled.cancel()
        fake.gate.open()
        await asyncio.wait_for(blocked, DEADLINE_S)
        await em.flush(DEADLINE_S)
        # A cancelled waiter buffered nothing and holds up nobody.
        await em.log_metric(RUN, "e", 5.0)
        await em.flush(DEADLINE_S)
    assert [e.key for e in fake.events if isinstance(e, MetricLogged)] == list("abcde")


async def test_a_call_larger_than_the_bound_fits_an_empty_buffer(
    fake: FakeProducer, gw: FakeGateway
) -> None:
    async with make(fake, gw, max_buffered=2, linger_ms=0) as em:
        await em.log_metrics(RUN, {f"m{i}": float(i) for i in range(5)})
        await em.flush(DEADLINE_S)
    assert len(fake.events) == 5


# --- Kafka failures, flush and close -------------------------------------------------------------


async def test_unavailable_kafka_is_retried_and_nothing_is_lost(
    fake: FakeProducer, gw: FakeGateway
) -> None:
    fake.failures = 1_000_000
    async with make(fake, gw, max_retry_backoff_s=0.002, linger_ms=0) as em:
        await em.log_metric(RUN, "a", 1.0)
        await em.log_metric(RUN, "b", 1.0)
        with pytest.raises(FlushTimeoutError, match="last error: UnavailableError") as info:
            await em.flush(0.05)
        assert info.value.retriable
        assert em.stats.events_buffered == 2
        assert em.stats.flush_errors >= 1
        await em.log_metric(RUN, "c", 2.0)  # still accepted while Kafka is down
        await em.set_tag(RUN, "t", "v")  # and the gateway does not depend on this buffer
        with fake.changed:
            fake.failures = 0  # Kafka is back
        await em.flush(DEADLINE_S)
        stats = em.stats
    assert [getattr(e, "key", None) for e in fake.events] == ["a", "b", "c"]
    assert len({e.event_id for e in fake.events}) == 3
    assert stats.events_sent == 3
    assert stats.events_buffered == 0
    assert stats.last_error is not None
    assert "down" in stats.last_error


async def test_flush_with_nothing_buffered_returns_at_once(
    fake: FakeProducer, gw: FakeGateway
) -> None:
    fake.gate = Gate(is_open=False)
    async with make(fake, gw) as em:
        await em.flush(0)
        await em.flush()
        fake.gate.open()


async def test_flush_waits_only_for_what_was_buffered_before_it(
    fake: FakeProducer, gw: FakeGateway
) -> None:
    async with make(fake, gw, max_batch=1, linger_ms=0) as em:
        await em.log_metric(RUN, "a", 1.0)
        flushing = asyncio.create_task(em.flush(DEADLINE_S))
        await em.log_metric(RUN, "b", 2.0)
        await flushing
        assert "a" in [getattr(e, "key", None) for e in fake.events]
        await em.flush(DEADLINE_S)


async def test_close_flushes_stops_and_is_idempotent(fake: FakeProducer, gw: FakeGateway) -> None:
    em = make(fake, gw, linger_ms=FOREVER_MS)
    await em.start()
    await em.start()
    assert fake.started
    assert gw.started
    assert em.running
    await em.log_metrics(RUN, {"a": 1.0, "b": 2.0})
    await em.close()
    assert fake.stopped
    assert gw.stopped
    assert not em.running
    assert metrics_of(fake.events) == [(RUN, "a", 0), (RUN, "b", 0)]
    await em.close()
    await em.flush()  # nothing pending: a no-op even when closed
    with pytest.raises(EmitterClosedError):
        await em.log_metric(RUN, "c", 3.0)
    with pytest.raises(EmitterClosedError):
        await em.log_param(RUN, "p", 1)
    with pytest.raises(EmitterClosedError):
        await em.start()


async def test_close_with_a_deadline_reports_what_was_not_sent(
    fake: FakeProducer, gw: FakeGateway
) -> None:
    fake.gate = Gate(is_open=False)
    em = make(fake, gw, linger_ms=0)
    await em.start()
    await em.log_metric(RUN, "a", 1.0)
    await em.log_metric(RUN, "b", 1.0)
    with pytest.raises(FlushTimeoutError, match="closed with 2 events unsent"):
        await em.close(timeout_s=0.05)
    assert fake.stopped
    assert em.stats.events_buffered == 2
    await em.close()  # already closed: no error the second time


async def test_calls_before_start_raise(fake: FakeProducer, gw: FakeGateway) -> None:
    em = make(fake, gw)
    with pytest.raises(EmitterClosedError):
        await em.log_metric(RUN, "k", 1.0)
    with pytest.raises(EmitterClosedError):
        await em.log_param(RUN, "k", 1)
    with pytest.raises(EmitterClosedError):
        await em.start_run("0")
    await em.close()
    assert not fake.started
    assert gw.requests == []


# --- the blocking emitter ------------------------------------------------------------------------


def make_sync(producer: FakeProducer, gateway: FakeGateway, **options: Any) -> Emitter:
    options.setdefault("retry_backoff_s", 0.001)
    return Emitter(URI, "kafka.invalid:9092", "t", producer=producer, http=gateway, **options)


@pytest.fixture
def sync_fake() -> Iterator[FakeProducer]:
    producer = FakeProducer()
    yield producer
    producer.gate.open()


def test_sync_emitter_is_safe_from_many_threads(sync_fake: FakeProducer, gw: FakeGateway) -> None:
    runs = [f"{i:032x}" for i in range(8)]
    gw.stages.update(dict.fromkeys(runs, "active"))
    errors: list[BaseException] = []
    start = threading.Barrier(len(runs))

    def train(em: Emitter, run_id: str) -> None:
        try:
            start.wait(DEADLINE_S)
            em.log_param(run_id, "seed", 7)
            for step in range(300):
                if step % 3:
                    em.log_metric(run_id, "loss", 1 / (step + 1), step=step)
                else:
                    em.log_metrics(run_id, {"loss": 1.0}, step=step)
        except BaseException as exc:
            errors.append(exc)

    with make_sync(sync_fake, gw, max_buffered=50, max_batch=20, linger_ms=1) as em:
        threads = [threading.Thread(target=train, args=(em, r)) for r in runs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(DEADLINE_S)
            assert not thread.is_alive()
        assert not errors
    events = sync_fake.events
    assert len(events) == 8 * 300
    assert len({e.event_id for e in events}) == len(events)
    for run_id in runs:
        assert [s for r, _, s in metrics_of(events) if r == run_id] == list(range(300))
        assert gw.params[run_id] == {"seed": "7"}
    assert gw.paths() == ["runs/log-batch"] * 8  # the params made every run known
    assert em.stats.events_sent == 2400
    assert em.stats.events_buffered == 0
    assert sync_fake.stopped


def test_sync_param_and_tag_errors_reach_the_caller(
    sync_fake: FakeProducer, gw: FakeGateway
) -> None:
    gw.stages[OTHER] = "deleted"
    with make_sync(sync_fake, gw) as em:
        em.log_param(RUN, "lr", 0.1)
        with pytest.raises(MlflowError, match="Changing param values") as info:
            em.log_param(RUN, "lr", 0.2)
        assert info.value.error_code == "INVALID_PARAMETER_VALUE"
        with pytest.raises(MlflowError, match="'active' state"):
            em.set_tag(OTHER, "t", "v")
        with pytest.raises(MlflowError, match="'active' state"):
            em.log_metric(OTHER, "m", 1.0)
        with pytest.raises(MlflowError) as info:
            em.log_metrics("cd" * 16, {"m": 1.0})
        assert info.value.error_code == "RESOURCE_DOES_NOT_EXIST"
        assert em.stats.events_buffered == 0
    assert gw.params == {RUN: {"lr": "0.1"}}
    assert sync_fake.attempts == 0


def test_sync_caller_blocks_then_raises_when_the_buffer_stays_full(
    sync_fake: FakeProducer, gw: FakeGateway
) -> None:
    sync_fake.gate = Gate(is_open=False)
    em = make_sync(sync_fake, gw, max_buffered=2, block_timeout_s=0.05, linger_ms=0)
    em.start()
    try:
        em.log_metrics(RUN, {"a": 1.0, "b": 2.0})
        began = time.monotonic()
        with pytest.raises(BufferFullError) as info:
            em.log_metric(RUN, "c", 3.0)
        assert time.monotonic() - began >= 0.05
        assert info.value.retriable
        assert em.stats.events_buffered == 2
        sync_fake.gate.open()
        em.flush(DEADLINE_S)
    finally:
        em.close()
    assert [e.key for e in sync_fake.events if isinstance(e, MetricLogged)] == ["a", "b"]


def test_sync_caller_blocks_until_there_is_space(sync_fake: FakeProducer, gw: FakeGateway) -> None:
    sync_fake.gate = Gate(is_open=False)
    outcome: list[BaseException | None] = []

    def log_one(em: Emitter) -> None:
        try:
            em.log_metric(RUN, "c", 3.0)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    with make_sync(sync_fake, gw, max_buffered=2, linger_ms=0) as em:
        em.log_metrics(RUN, {"a": 1.0, "b": 2.0})
        caller = threading.Thread(target=log_one, args=(em,))
        caller.start()
        caller.join(0.05)
        assert caller.is_alive()  # blocked on the full buffer
        sync_fake.gate.open()
        caller.join(DEADLINE_S)
        assert outcome == [None]
    assert [e.key for e in sync_fake.events if isinstance(e, MetricLogged)] == ["a", "b", "c"]


def test_sync_close_wakes_blocked_callers_and_reports_unsent(
    sync_fake: FakeProducer, gw: FakeGateway
) -> None:
    sync_fake.gate = Gate(is_open=False)
    outcome: list[BaseException] = []

    def log_one(em: Emitter) -> None:
        try:
            em.log_metric(RUN, "b", 2.0)
        except BaseException as exc:
            outcome.append(exc)

    em = make_sync(sync_fake, gw, max_buffered=1, linger_ms=0)
    em.start()
    em.log_metric(RUN, "a", 1.0)
    caller = threading.Thread(target=log_one, args=(em,))
    caller.start()
    caller.join(0.05)
    assert caller.is_alive()
    with pytest.raises(FlushTimeoutError, match="closed with 1 events unsent"):
        em.close(timeout_s=0.05)
    caller.join(DEADLINE_S)
    assert [type(e) for e in outcome] == [EmitterClosedError]
    assert em.stats.events_buffered == 1
    em.close()
    with pytest.raises(EmitterClosedError):
        em.log_metric(RUN, "c", 1.0)
    with pytest.raises(EmitterClosedError):
        em.log_param(RUN, "p", 1)


def test_sync_emitter_validates_before_sending(sync_fake: FakeProducer, gw: FakeGateway) -> None:
    with make_sync(sync_fake, gw) as em:
        with pytest.raises(MlflowError, match="Invalid value"):
            em.log_metric(RUN, "bad*key", 1.0)
        with pytest.raises(MlflowError):
            em.log_params(RUN, {"../p": 1})
        assert em.stats.events_buffered == 0
        em.flush(DEADLINE_S)
    assert sync_fake.attempts == 0
    assert gw.requests == []


def test_sync_close_is_registered_with_atexit_while_running(
    sync_fake: FakeProducer, gw: FakeGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    registered: list[Callable[[], None]] = []
    monkeypatch.setattr(atexit, "register", registered.append)
    monkeypatch.setattr(atexit, "unregister", registered.remove)
    em = make_sync(sync_fake, gw, linger_ms=FOREVER_MS)
    em.start()
    assert registered == [em.close]
    em.log_metric(RUN, "k", 1.0)
    registered[0]()  # what the interpreter does at exit for a script that forgot close()
    assert registered == []
    assert len(sync_fake.events) == 1
    assert sync_fake.stopped
    em.close()
    em.flush()


def test_sync_loop_thread_ends_on_close(sync_fake: FakeProducer, gw: FakeGateway) -> None:
    before = set(threading.enumerate())
    with make_sync(sync_fake, gw) as em:
        em.log_metric(OTHER, "k", 1.0)
        em.set_tag(OTHER, "k", "v")
        assert len(set(threading.enumerate()) - before) >= 1
    assert set(threading.enumerate()) - before == set()
    assert len(sync_fake.events) == 1
    assert gw.tags == {OTHER: {"k": "v"}}


def test_a_forked_child_refuses_work_and_leaves_close_to_the_parent(
    sync_fake: FakeProducer, gw: FakeGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    em = make_sync(sync_fake, gw, linger_ms=FOREVER_MS)
    em.start()
    em.log_metric(RUN, "parent", 1.0)
    parent_pid = os.getpid()
    with monkeypatch.context() as child:
        child.setattr(os, "getpid", lambda: parent_pid + 1)
        with pytest.raises(EmitterClosedError, match="not running in this process"):
            em.log_metric(RUN, "child", 1.0)
        with pytest.raises(EmitterClosedError):
            em.log_param(RUN, "p", 1)
        with pytest.raises(EmitterClosedError):
            em.flush(DEADLINE_S)
        em.close()  # what the child's atexit does: nothing
    em.close()
    assert [e.key for e in sync_fake.events if isinstance(e, MetricLogged)] == ["parent"]
