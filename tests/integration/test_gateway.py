"""The ingest gateway over raw HTTP: MLflow's shapes and errors, and exactly what reaches Kafka."""

from __future__ import annotations

import io
import math
from typing import Any

import pytest
from conftest import GatewayHarness
from eventlog import read_records

from ingest.events import (
    ExperimentCreated,
    ExperimentDeleted,
    ExperimentRenamed,
    ExperimentRestored,
    ExperimentTagDeleted,
    ExperimentTagSet,
    InputsLogged,
    MetricLogged,
    ParamLogged,
    RunDeleted,
    RunEnded,
    RunRestored,
    RunStarted,
    RunUpdated,
    TagDeleted,
    TagSet,
    partition_key,
)

pytestmark = pytest.mark.integration


async def test_default_experiment_is_created_once(gateway: GatewayHarness) -> None:
    created = [e for e in await gateway.events() if isinstance(e, ExperimentCreated)]
    assert [(e.experiment_id, e.name) for e in created] == [("0", "Default")]
    assert created[0].artifact_location == "file:///tmp/runstream-art/0"


async def test_create_experiment_then_duplicate_name(gateway: GatewayHarness) -> None:
    first = await gateway.ok(
        "experiments/create", {"name": "tune", "tags": [{"key": "team", "value": "a"}]}
    )
    assert first == {"experiment_id": "1"}
    message = await gateway.error(
        "experiments/create", {"name": "tune"}, 400, "RESOURCE_ALREADY_EXISTS"
    )
    assert message == "Experiment(name=tune) already exists."

    created = [e for e in await gateway.events() if isinstance(e, ExperimentCreated)]
    assert [e.name for e in created] == ["Default", "tune"]
    assert created[1].tags[0].key == "team"


async def test_experiment_lifecycle_events(gateway: GatewayHarness) -> None:
    exp = await gateway.experiment("life")
    run = await gateway.run(exp)
    await gateway.ok("experiments/update", {"experiment_id": exp, "new_name": "life2"})
    await gateway.ok(
        "experiments/set-experiment-tag", {"experiment_id": exp, "key": "k", "value": "v"}
    )
    await gateway.ok("experiments/delete-experiment-tag", {"experiment_id": exp, "key": "k"})
    await gateway.error(
        "experiments/delete-experiment-tag",
        {"experiment_id": exp, "key": "k"},
        404,
        "RESOURCE_DOES_NOT_EXIST",
    )
    await gateway.ok("experiments/delete", {"experiment_id": exp})
    # Deleted: its runs reject writes, it cannot be deleted twice, new runs are refused.
    await gateway.error(
        "runs/log-metric",
        {"run_id": run, "key": "m", "value": 1, "timestamp": 1},
        400,
        "INVALID_PARAMETER_VALUE",
    )
    await gateway.error(
        "experiments/delete", {"experiment_id": exp}, 404, "RESOURCE_DOES_NOT_EXIST"
    )
    await gateway.error("runs/create", {"experiment_id": exp}, 400, "INVALID_PARAMETER_VALUE")
    await gateway.error(
        "experiments/set-experiment-tag",
        {"experiment_id": exp, "key": "k", "value": "v"},
        400,
        "INVALID_PARAMETER_VALUE",
    )
    await gateway.ok("experiments/restore", {"experiment_id": exp})
    await gateway.error(
        "experiments/restore", {"experiment_id": exp}, 404, "RESOURCE_DOES_NOT_EXIST"
    )
    await gateway.ok("runs/log-metric", {"run_id": run, "key": "m", "value": 1, "timestamp": 1})

    events = await gateway.events()
    # Each key's events keep their order; nothing orders the experiment's against its runs'.
    on_experiment = [type(e) for e in events if partition_key(e) == f"experiment:{exp}"]
    assert on_experiment == [
        ExperimentCreated,
        ExperimentRenamed,
        ExperimentTagSet,
        ExperimentTagDeleted,
        ExperimentDeleted,
        ExperimentRestored,
    ]
    on_run = [type(e) for e in events if partition_key(e) == run]
    assert on_run == [RunStarted, RunDeleted, RunRestored, MetricLogged]


async def test_rename_to_a_taken_name_and_unknown_experiment(gateway: GatewayHarness) -> None:
    a = await gateway.experiment("a")
    await gateway.experiment("b")
    await gateway.error(
        "experiments/update", {"experiment_id": a, "new_name": "b"}, 400, "BAD_REQUEST"
    )
    await gateway.error(
        "experiments/update",
        {"experiment_id": "999", "new_name": "c"},
        404,
        "RESOURCE_DOES_NOT_EXIST",
    )
    await gateway.error(
        "experiments/delete", {"experiment_id": "nope"}, 400, "INVALID_PARAMETER_VALUE"
    )


async def test_create_run_answers_a_full_run(gateway: GatewayHarness) -> None:
    exp = await gateway.experiment()
    body = await gateway.ok(
        "runs/create",
        {
            "experiment_id": exp,
            "user_id": "ann",
            "start_time": 1700000000000,
            "tags": [{"key": "mlflow.parentRunId", "value": "p" * 32}],
        },
    )
    info = body["run"]["info"]
    assert info["run_id"] == info["run_uuid"]
    assert len(info["run_id"]) == 32
    assert info["status"] == "RUNNING"
    assert info["lifecycle_stage"] == "active"
    assert info["user_id"] == "ann"
    assert info["start_time"] == 1700000000000
    assert "end_time" not in info
    assert info["artifact_uri"] == f"file:///tmp/runstream-art/{exp}/{info['run_id']}/artifacts"
    tags = {t["key"]: t["value"] for t in body["run"]["data"]["tags"]}
    # The server names an unnamed run and records the name as the mlflow.runName tag.
    assert tags["mlflow.runName"] == info["run_name"]
    assert info["run_name"].count("-") == 2
    assert body["run"]["inputs"] == {}

    started = [e for e in await gateway.events() if isinstance(e, RunStarted)]
    assert len(started) == 1
    assert started[0].parent_run_id == "p" * 32
    assert started[0].run_name == info["run_name"]


async def test_create_run_errors(gateway: GatewayHarness) -> None:
    await gateway.error("runs/create", {"experiment_id": "42"}, 404, "RESOURCE_DOES_NOT_EXIST")
    await gateway.error(
        "runs/create",
        {"experiment_id": "0", "run_name": "a", "tags": [{"key": "mlflow.runName", "value": "b"}]},
        400,
        "INVALID_PARAMETER_VALUE",
    )
    assert not [e for e in await gateway.events() if isinstance(e, RunStarted)]


async def test_log_batch_is_one_record_in_mlflow_order(gateway: GatewayHarness) -> None:
    run = await gateway.run(await gateway.experiment())
    await gateway.ok(
        "runs/log-batch",
        {
            "run_id": run,
            "metrics": [
                {"key": "loss", "value": "NaN", "timestamp": 5, "step": -1},
                {"key": "loss", "value": "Infinity", "timestamp": 6, "step": 2},
                {"key": "acc", "value": 0.5, "timestamp": 7},
            ],
            "params": [{"key": "lr", "value": "0.1"}],
            "tags": [{"key": "t", "value": "1"}, {"key": "t", "value": "2"}],
        },
    )
    records = await read_records(gateway.settings.kafka_bootstrap, gateway.settings.topic)
    mine = [r for r in records if r.key == run.encode()]
    # The run's partition holds its creation, then the whole batch as one record.
    assert len(mine) == 2
    batch = mine[-1].events
    assert [type(e) for e in batch] == [
        ParamLogged,
        MetricLogged,
        MetricLogged,
        MetricLogged,
        TagSet,
    ]
    metrics = [e for e in batch if isinstance(e, MetricLogged)]
    assert math.isnan(metrics[0].value)
    assert metrics[0].step == -1
    assert metrics[1].value == math.inf
    assert metrics[2].step == 0
    assert [(e.key, e.value) for e in batch if isinstance(e, TagSet)] == [("t", "2")]


async def test_a_rejected_batch_emits_nothing(gateway: GatewayHarness) -> None:
    run = await gateway.run(await gateway.experiment())
    before = len(await gateway.events())
    await gateway.error(
        "runs/log-batch",
        {
            "run_id": run,
            "metrics": [
                {"key": "ok", "value": 1, "timestamp": 1},
                {"key": "bad$key", "value": 1, "timestamp": 1},
            ],
        },
        400,
        "INVALID_PARAMETER_VALUE",
    )
    await gateway.error(
        "runs/log-batch",
        {
            "run_id": run,
            "params": [{"key": "a", "value": "1"}, {"key": "a", "value": "2"}],
        },
        400,
        "INVALID_PARAMETER_VALUE",
    )
    await gateway.error(
        "runs/log-batch",
        {
            "run_id": run,
            "metrics": [{"key": "m", "value": 1, "timestamp": 1}] * 1001,
        },
        400,
        "INVALID_PARAMETER_VALUE",
    )
    assert len(await gateway.events()) == before


async def test_params_are_immutable_and_relogging_is_a_no_op(gateway: GatewayHarness) -> None:
    run = await gateway.run(await gateway.experiment())
    await gateway.ok("runs/log-parameter", {"run_id": run, "key": "lr", "value": "0.1"})
    await gateway.ok("runs/log-parameter", {"run_id": run, "key": "lr", "value": "0.1"})
    message = await gateway.error(
        "runs/log-parameter",
        {"run_id": run, "key": "lr", "value": "0.2"},
        400,
        "INVALID_PARAMETER_VALUE",
    )
    assert message.startswith("Changing param values is not allowed. Param with key='lr'")
    await gateway.error(
        "runs/log-batch",
        {"run_id": run, "params": [{"key": "new", "value": "x"}, {"key": "lr", "value": "0.3"}]},
        400,
        "INVALID_PARAMETER_VALUE",
    )
    params = [(e.key, e.value) for e in await gateway.events() if isinstance(e, ParamLogged)]
    # The batch that clashed wrote nothing, not even its new param.
    assert params == [("lr", "0.1"), ("lr", "0.1")]


async def test_tags_runs_and_updates(gateway: GatewayHarness) -> None:
    run = await gateway.run(await gateway.experiment(), run_name="first")
    await gateway.ok("runs/set-tag", {"run_id": run, "key": "note", "value": "x"})
    await gateway.ok("runs/delete-tag", {"run_id": run, "key": "note"})
    await gateway.error(
        "runs/delete-tag", {"run_id": run, "key": "note"}, 404, "RESOURCE_DOES_NOT_EXIST"
    )
    await gateway.ok("runs/set-tag", {"run_id": run, "key": "mlflow.runName", "value": "second"})
    updated = await gateway.ok("runs/update", {"run_id": run, "status": "FINISHED", "end_time": 99})
    info = updated["run_info"]
    assert (info["status"], info["end_time"], info["run_name"]) == ("FINISHED", 99, "second")
    renamed = await gateway.ok("runs/update", {"run_id": run, "run_name": "third"})
    assert renamed["run_info"]["run_name"] == "third"
    assert renamed["run_info"]["status"] == "FINISHED"

    kinds = [type(e) for e in await gateway.events() if getattr(e, "run_id", None) == run]
    assert kinds == [RunStarted, TagSet, TagDeleted, TagSet, RunEnded, RunUpdated]


async def test_an_empty_run_name_tag_is_dropped_as_mlflow_drops_it(
    gateway: GatewayHarness,
) -> None:
    """MLflow's store renames a run by its mlflow.runName tag only to a name: an empty one
    changes nothing, neither the name nor the tag, alone or in a batch."""
    run = await gateway.run(await gateway.experiment(), run_name="kept")
    await gateway.ok("runs/set-tag", {"run_id": run, "key": "mlflow.runName", "value": ""})
    tags = [{"key": "mlflow.runName", "value": ""}, {"key": "note", "value": "x"}]
    await gateway.ok("runs/log-batch", {"run_id": run, "tags": tags})
    await gateway.ok("runs/log-batch", {"run_id": run, "tags": tags[:1]})
    # MLflow sets a batch's tags one by one: a name, then an empty one, renames to the name
    both = [{"key": "mlflow.runName", "value": "named"}, {"key": "mlflow.runName", "value": ""}]
    await gateway.ok("runs/log-batch", {"run_id": run, "tags": both})
    set_tags = [(e.key, e.value) for e in await gateway.events() if isinstance(e, TagSet)]
    assert set_tags == [("note", "x"), ("mlflow.runName", "named")]
    await gateway.ok("runs/delete", {"run_id": run})
    await gateway.error(  # still a write to a deleted run
        "runs/set-tag",
        {"run_id": run, "key": "mlflow.runName", "value": ""},
        400,
        "INVALID_PARAMETER_VALUE",
    )


async def test_deleted_and_unknown_runs(gateway: GatewayHarness) -> None:
    run = await gateway.run(await gateway.experiment())
    await gateway.ok("runs/delete", {"run_id": run})
    await gateway.ok("runs/delete", {"run_id": run})  # idempotent, as MLflow's
    writes: list[tuple[str, dict[str, Any]]] = [
        ("runs/log-metric", {"key": "m", "value": 1, "timestamp": 1}),
        ("runs/log-parameter", {"key": "p", "value": "1"}),
        ("runs/set-tag", {"key": "t", "value": "1"}),
        ("runs/log-batch", {"metrics": [{"key": "m", "value": 1, "timestamp": 1}]}),
        ("runs/update", {"status": "FAILED"}),
        ("runs/log-inputs", {"datasets": []}),
    ]
    for path, body in writes:
        await gateway.error(path, {"run_id": run, **body}, 400, "INVALID_PARAMETER_VALUE")
        await gateway.error(path, {"run_id": "f" * 32, **body}, 404, "RESOURCE_DOES_NOT_EXIST")
    await gateway.ok("runs/restore", {"run_id": run})
    await gateway.ok("runs/log-metric", {"run_id": run, "key": "m", "value": 1, "timestamp": 1})
    await gateway.error("runs/delete", {"run_id": "f" * 32}, 404, "RESOURCE_DOES_NOT_EXIST")


async def test_log_inputs_emits_datasets(gateway: GatewayHarness) -> None:
    run = await gateway.run(await gateway.experiment())
    await gateway.ok(
        "runs/log-inputs",
        {
            "run_id": run,
            "datasets": [
                {
                    "tags": [{"key": "mlflow.data.context", "value": "train"}],
                    "dataset": {
                        "name": "d",
                        "digest": "abc",
                        "source_type": "local",
                        "source": "{}",
                    },
                }
            ],
        },
    )
    inputs = [e for e in await gateway.events() if isinstance(e, InputsLogged)]
    assert inputs[0].datasets[0].name == "d"
    assert inputs[0].datasets[0].tags[0].value == "train"


async def test_wire_conventions(gateway: GatewayHarness) -> None:
    # Both prefixes serve the write API; the run id may arrive as run_uuid.
    run = await gateway.run(await gateway.experiment())
    resp = await gateway.post(
        "runs/log-metric",
        {"run_uuid": run, "key": "m", "value": "1.5", "timestamp": "7"},
        prefix="/ajax-api/2.0/mlflow",
    )
    assert resp.status == 200
    assert await resp.json() == {}
    missing_type = await gateway.client.post(
        "/api/2.0/mlflow/experiments/create", data=b'{"name": "x"}'
    )
    assert missing_type.status == 400
    assert (await missing_type.json())["error_code"] == "INVALID_PARAMETER_VALUE"
    unknown = await gateway.client.post("/api/2.0/mlflow/logged-models", json={})
    assert unknown.status == 404
    assert (await unknown.json())["error_code"] == "ENDPOINT_NOT_FOUND"
    nul = await gateway.post("runs/set-tag", {"run_id": run, "key": "k", "value": "a\x00b"})
    assert (nul.status, (await nul.json())["error_code"]) == (400, "INVALID_PARAMETER_VALUE")
    escaped = await gateway.post("runs/set-tag", {"run_id": run, "key": "k", "value": "\\u0000"})
    assert escaped.status == 200  # a literal backslash-u0000 text is fine
    huge = await gateway.client.post(
        "/api/2.0/mlflow/runs/log-batch",
        data=io.BytesIO(b"{" + b" " * (18 * 1024 * 1024) + b"}"),
        headers={"Content-Type": "application/json"},
    )
    assert huge.status == 413
    metric = [e for e in await gateway.events() if isinstance(e, MetricLogged)][-1]
    assert (metric.value, metric.timestamp) == (1.5, 7)


async def test_the_largest_log_batch_mlflow_allows_fits_one_record(
    gateway: GatewayHarness,
) -> None:
    run = await gateway.run(await gateway.experiment())
    await gateway.ok(
        "runs/log-batch",
        {
            "run_id": run,
            "params": [{"key": f"p{i}", "value": "v" * 6000} for i in range(100)],
            "tags": [{"key": f"t{i}", "value": "w" * 8000} for i in range(100)],
            "metrics": [{"key": f"m{i}", "value": i, "timestamp": 1} for i in range(800)],
        },
    )
    events = [e for e in await gateway.events() if getattr(e, "run_id", None) == run]
    assert len(events) == 1 + 100 + 100 + 800
