"""The emitter on the real stack: metrics straight to Kafka, the rest through a real gateway."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable

import pytest
from conftest import GatewayHarness
from eventlog import read_records

from ingest.emitter import AsyncEmitter
from ingest.emitter_sync import Emitter
from ingest.errors import MlflowError, UnavailableError
from ingest.events import (
    Event,
    ExperimentCreated,
    MetricLogged,
    ParamLogged,
    RunDeleted,
    RunEnded,
    RunStarted,
    TagDeleted,
    TagSet,
)

pytestmark = pytest.mark.integration

EmitterFactory = Callable[..., AsyncEmitter]


def tracking_uri(gateway: GatewayHarness) -> str:
    return str(gateway.client.make_url(""))


@pytest.fixture
async def emitter_factory(gateway: GatewayHarness) -> AsyncIterator[EmitterFactory]:
    """Return a factory of emitters on the test's gateway and topic; all closed after the test."""
    made: list[AsyncEmitter] = []

    def make(**options: object) -> AsyncEmitter:
        em = AsyncEmitter(
            tracking_uri(gateway),
            gateway.settings.kafka_bootstrap,
            gateway.settings.topic,
            **options,  # type: ignore[arg-type]
        )
        made.append(em)
        return em

    yield make
    for em in made:
        await em.close()


def of_run(events: list[Event], run_id: str) -> list[Event]:
    return [e for e in events if getattr(e, "run_id", None) == run_id]


def shape(event: Event) -> tuple[str, ...]:
    match event:
        case MetricLogged():
            return ("metric", event.key, str(event.step), repr(event.value))
        case ParamLogged() | TagSet():
            return (type(event).__name__, event.key, event.value)
        case _:
            return (type(event).__name__,)


async def test_metrics_go_direct_in_order_and_params_tags_through_the_gateway(
    gateway: GatewayHarness, emitter_factory: EmitterFactory
) -> None:
    experiment = await gateway.experiment("emit")
    async with emitter_factory(max_batch=100_000, linger_ms=600_000) as em:
        parent = await em.start_run(experiment, "parent", tags={"team": "vision"}, user_id="ana")
        child = await em.start_run(experiment, parent_run_id=parent)
        await em.log_params(parent, {"lr": 0.01, "layers": 4})
        for step in range(25):
            await em.log_metric(parent, "loss", 1 / (step + 1), step=step)
            await em.log_metrics(child, {"acc": step / 25, "f1": step / 50}, step=step)
        await em.set_tag(child, "phase", "done")
        await em.log_param(child, "seed", 7)
        await em.end_run(child)
        await em.end_run(parent, "FAILED")

    records = await read_records(gateway.settings.kafka_bootstrap, gateway.settings.topic)
    events = [e for r in records for e in r.events]
    expected_metrics = {
        parent: [("metric", "loss", str(s), repr(1 / (s + 1))) for s in range(25)],
        child: [
            shape
            for s in range(25)
            for shape in (
                ("metric", "acc", str(s), repr(s / 25)),
                ("metric", "f1", str(s), repr(s / 50)),
            )
        ],
    }
    expected_texts = {
        parent: [("ParamLogged", "lr", "0.01"), ("ParamLogged", "layers", "4")],
        child: [("TagSet", "phase", "done"), ("ParamLogged", "seed", "7")],
    }
    for run_id in (parent, child):
        mine = [r for r in records if r.key == run_id.encode()]
        assert len({r.partition for r in mine}) == 1
        logged = of_run(events, run_id)
        assert isinstance(logged[0], RunStarted)
        assert isinstance(logged[-1], RunEnded)
        shapes = [shape(e) for e in logged]
        assert [s for s in shapes if s[0] == "metric"] == expected_metrics[run_id]
        assert [s for s in shapes if s[0] in {"ParamLogged", "TagSet"}] == expected_texts[run_id]
        # Direct: all of a run's metrics in one record of the emitter's only flush (end_run's),
        # which no sequence of gateway requests could make; params and tags in records of their
        # own, one per gateway request.
        metric_records = [r for r in mine if any(isinstance(e, MetricLogged) for e in r.events)]
        assert len(metric_records) == 1
        assert all(isinstance(e, MetricLogged) for e in metric_records[0].events)
    started = {e.run_id: e for e in events if isinstance(e, RunStarted)}
    assert started[child].parent_run_id == parent
    assert started[parent].parent_run_id is None
    assert started[parent].run_name == "parent"
    assert started[parent].user_id == "ana"
    assert ("team", "vision") in [(t.key, t.value) for t in started[parent].tags]
    ended = {e.run_id: e.status for e in events if isinstance(e, RunEnded)}
    assert ended == {parent: "FAILED", child: "FINISHED"}


async def test_a_changed_param_raises_the_gateways_error(
    gateway: GatewayHarness, emitter_factory: EmitterFactory
) -> None:
    experiment = await gateway.experiment()
    async with emitter_factory() as em:
        run = await em.start_run(experiment)
        await em.log_param(run, "lr", 0.1)
        await em.log_params(run, {"lr": "0.1", "batch": 32})  # the same value again is fine
        with pytest.raises(MlflowError) as info:
            await em.log_param(run, "lr", 0.2)
        with pytest.raises(MlflowError) as batch_info:
            await em.log_params(run, {"lr": 0.3})
        from_gateway = await gateway.error(
            "runs/log-parameter",
            {"run_id": run, "key": "lr", "value": "0.2"},
            400,
            "INVALID_PARAMETER_VALUE",
        )
    assert (info.value.error_code, info.value.message) == ("INVALID_PARAMETER_VALUE", from_gateway)
    assert batch_info.value.error_code == "INVALID_PARAMETER_VALUE"
    assert "Changing param values is not allowed" in batch_info.value.message
    params = [
        (e.key, e.value) for e in of_run(await gateway.events(), run) if isinstance(e, ParamLogged)
    ]
    assert set(params) == {("lr", "0.1"), ("batch", "32")}


async def test_tags_set_by_the_emitter_are_known_to_the_registry(
    gateway: GatewayHarness, emitter_factory: EmitterFactory
) -> None:
    experiment = await gateway.experiment()
    async with emitter_factory() as em:
        run = await em.start_run(experiment, "first")
        await em.set_tag(run, "phase", "train")
        await gateway.ok("runs/delete-tag", {"run_id": run, "key": "phase"})
        await em.set_tag(run, "mlflow.runName", "renamed")
        # runs/update with nothing to change answers the registry's view of the run.
        info = (await gateway.ok("runs/update", {"run_id": run}))["run_info"]
        assert info["run_name"] == "renamed"
    logged = of_run(await gateway.events(), run)
    assert [type(e) for e in logged] == [RunStarted, TagSet, TagDeleted, TagSet]


async def test_writes_to_a_deleted_run_are_refused(
    gateway: GatewayHarness, emitter_factory: EmitterFactory
) -> None:
    experiment = await gateway.experiment()
    async with emitter_factory(linger_ms=0) as em, emitter_factory(linger_ms=0) as fresh:
        run = await em.start_run(experiment)
        await em.log_metric(run, "loss", 1.0)
        await em.flush(30)
        await gateway.ok("runs/delete", {"run_id": run})
        for call in (
            lambda: em.log_param(run, "p", 1),
            lambda: em.set_tag(run, "t", "v"),
            lambda: fresh.log_metric(run, "loss", 2.0),  # an emitter that never saw the run
        ):
            with pytest.raises(MlflowError, match="must be in the 'active' state") as info:
                await call()
            assert info.value.error_code == "INVALID_PARAMETER_VALUE"
        with pytest.raises(MlflowError) as info:
            await fresh.log_metrics("0123456789abcdef0123456789abcdef", {"loss": 1.0})
        assert info.value.error_code == "RESOURCE_DOES_NOT_EXIST"
        await fresh.flush(30)
        assert fresh.stats.events_sent == 0
    assert [type(e) for e in of_run(await gateway.events(), run)] == [
        RunStarted,
        MetricLogged,
        RunDeleted,
    ]


async def test_non_finite_metrics_round_trip(
    gateway: GatewayHarness, emitter_factory: EmitterFactory
) -> None:
    experiment = await gateway.experiment()
    async with emitter_factory() as em:
        run = await em.start_run(experiment)
        await em.log_metric(run, "nan", math.nan)
        await em.log_metric(run, "nan_text", "NaN")  # type: ignore[arg-type]
        await em.log_metrics(run, {"inf": math.inf, "neg_inf": -math.inf}, step=3)
        await em.flush(30)
    values = {e.key: e.value for e in await gateway.events() if isinstance(e, MetricLogged)}
    assert math.isnan(values["nan"])
    assert math.isnan(values["nan_text"])
    assert values["inf"] == math.inf
    assert values["neg_inf"] == -math.inf


async def test_close_flushes_everything(
    gateway: GatewayHarness, emitter_factory: EmitterFactory
) -> None:
    experiment = await gateway.experiment()
    # Nothing would leave the buffer before close() but for close() itself.
    em = emitter_factory(max_batch=100_000, linger_ms=600_000)
    await em.start()
    run = await em.start_run(experiment)
    for step in range(2000):
        await em.log_metric(run, "loss", step * 0.5, step=step)
    await em.close()
    assert em.stats.events_sent == 2000
    assert em.stats.events_buffered == 0
    steps = [e.step for e in of_run(await gateway.events(), run) if isinstance(e, MetricLogged)]
    assert steps == list(range(2000))


async def test_invalid_key_raises_the_gateways_error_and_emits_nothing(
    gateway: GatewayHarness, emitter_factory: EmitterFactory
) -> None:
    experiment = await gateway.experiment()
    async with emitter_factory(linger_ms=0) as em:
        run = await em.start_run(experiment)
        with pytest.raises(MlflowError) as info:
            await em.log_metric(run, "bad*key", 1.0)
        sent_to_gateway = await gateway.error(
            "runs/log-metric",
            {"run_id": run, "key": "bad*key", "value": 1.0, "timestamp": 1},
            400,
            "INVALID_PARAMETER_VALUE",
        )
        assert (info.value.error_code, info.value.message) == (
            "INVALID_PARAMETER_VALUE",
            sent_to_gateway,
        )
        with pytest.raises(MlflowError, match="resolve to"):
            await em.log_params(run, {"fine": 1, "a/../b": 2})
        with pytest.raises(MlflowError):
            await em.log_metrics(run, {"ok": 1.0, "no!": 2.0})
        await em.flush(30)
        assert em.stats.events_sent == 0
    assert [type(e) for e in of_run(await gateway.events(), run)] == [RunStarted]


async def test_run_calls_raise_the_gateways_errors(
    gateway: GatewayHarness, emitter_factory: EmitterFactory
) -> None:
    async with emitter_factory() as em:
        with pytest.raises(MlflowError) as info:
            await em.start_run("424242")
        assert info.value.error_code == "RESOURCE_DOES_NOT_EXIST"
        with pytest.raises(MlflowError) as info:
            await em.start_run("not-a-number")
        assert info.value.error_code == "INVALID_PARAMETER_VALUE"
        with pytest.raises(MlflowError) as info:
            await em.end_run("0123456789abcdef0123456789abcdef")
        assert info.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    assert not [e for e in await gateway.events() if not isinstance(e, ExperimentCreated)]


async def test_an_unreachable_tracking_server_is_retriable(gateway: GatewayHarness) -> None:
    # Port 9 (discard) has no listener here: the connection is refused at once.
    # Refused connections are retried with backoff until request_timeout_s has passed.
    em = AsyncEmitter(
        "http://127.0.0.1:9",
        gateway.settings.kafka_bootstrap,
        gateway.settings.topic,
        request_timeout_s=0.3,
        retry_backoff_s=0.01,
    )
    async with em:
        with pytest.raises(UnavailableError) as info:
            await em.start_run("0")
        assert info.value.retriable


async def test_sync_emitter_end_to_end(gateway: GatewayHarness) -> None:
    experiment = await gateway.experiment()

    # The gateway serves on this test's loop, so the blocking script runs in a worker thread.
    def script() -> tuple[str, int, MlflowError]:
        em = Emitter(
            tracking_uri(gateway),
            gateway.settings.kafka_bootstrap,
            gateway.settings.topic,
            linger_ms=10,
        )
        with em:
            run = em.start_run(experiment, "sync")
            em.log_param(run, "optimizer", "adam")
            for step in range(100):
                em.log_metric(run, "loss", 100 - step, step=step)
            try:
                em.log_param(run, "optimizer", "sgd")
            except MlflowError as exc:
                refused = exc
            else:
                raise AssertionError("a changed param was accepted")
            em.set_tag(run, "stage", "eval")
            em.end_run(run)
        return run, em.stats.events_sent, refused

    run, sent, refused = await asyncio.wait_for(asyncio.to_thread(script), 60)
    assert sent == 100  # metrics only: params and tags went through the gateway
    assert refused.error_code == "INVALID_PARAMETER_VALUE"
    logged = of_run(await gateway.events(), run)
    assert [type(e) for e in logged[:2]] == [RunStarted, ParamLogged]
    assert isinstance(logged[-1], RunEnded)
    assert sorted(type(e).__name__ for e in logged[2:-1]) == ["MetricLogged"] * 100 + ["TagSet"]
    assert [e.value for e in logged if isinstance(e, MetricLogged)] == [
        float(100 - s) for s in range(100)
    ]
