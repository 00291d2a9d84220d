"""The query API's run endpoints over HTTP: the Run shape, search, paging, errors, query counts."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator

import asyncpg
import pytest
from query_harness import (
    AJAX,
    QueryHarness,
    add_experiment,
    add_points,
    add_run,
    document_mismatches,
    query_api,
)

from services.config import Settings

pytestmark = pytest.mark.integration

HINT = " See the API docs for more information about request parameters."


@pytest.fixture
async def api(
    stack: Settings, topic: str, read_db: asyncpg.Connection
) -> AsyncIterator[QueryHarness]:
    await add_experiment(read_db, 0, "Default")
    await add_experiment(read_db, 1, "tune")
    async with query_api(stack, topic, read_db) as harness:
        yield harness


async def _with_inputs(db: asyncpg.Connection, run_id: str) -> None:
    await db.execute(
        "INSERT INTO run_dataset_inputs VALUES ($1, 'train', 'd1', 'local', 's3://x', "
        "'{\"f\": 1}', NULL, 'training', $2::jsonb)",
        run_id,
        json.dumps([{"key": "mlflow.data.context", "value": "training"}]),
    )
    await db.execute("INSERT INTO run_model_inputs VALUES ($1, 'm-1')", run_id)


async def test_get_run_shape(api: QueryHarness) -> None:
    await add_run(
        api.db,
        "r1",
        experiment_id=1,
        name="alpha",
        status="FINISHED",
        start=100,
        end=200,
        params={"lr": "0.1", "bs": "32"},
        tags={"team": "x"},
    )
    await add_points(api.db, "r1", "acc", [(0, 10, 0.5), (1, 20, 0.75)])
    await add_points(api.db, "r1", "loss", [(0, 10, math.nan)])
    await add_points(api.db, "r1", "big", [(0, 10, math.inf)])
    await add_points(api.db, "r1", "small", [(0, 10, -math.inf)])
    await _with_inputs(api.db, "r1")
    body = await api.get("runs/get", {"run_id": "r1", "run_uuid": "r1"})
    assert body == {
        "run": {
            "info": {
                "run_id": "r1",
                "run_uuid": "r1",
                "run_name": "alpha",
                "experiment_id": "1",
                "user_id": "alice",
                "status": "FINISHED",
                "start_time": 100,
                "end_time": 200,
                "artifact_uri": "file:///art/1/r1/artifacts",
                "lifecycle_stage": "active",
            },
            "data": {
                "metrics": [
                    {"key": "acc", "value": 0.75, "timestamp": 20, "step": 1},
                    {"key": "big", "value": "Infinity", "timestamp": 10, "step": 0},
                    {"key": "loss", "value": "NaN", "timestamp": 10, "step": 0},
                    {"key": "small", "value": "-Infinity", "timestamp": 10, "step": 0},
                ],
                "params": [{"key": "bs", "value": "32"}, {"key": "lr", "value": "0.1"}],
                "tags": [
                    {"key": "mlflow.rootRunId", "value": "r1"},
                    {"key": "mlflow.runName", "value": "alpha"},
                    {"key": "team", "value": "x"},
                ],
            },
            "inputs": {
                "dataset_inputs": [
                    {
                        "dataset": {
                            "name": "train",
                            "digest": "d1",
                            "source_type": "local",
                            "source": "s3://x",
                            "schema": '{"f": 1}',
                        },
                        "tags": [{"key": "mlflow.data.context", "value": "training"}],
                    }
                ],
                "model_inputs": [{"model_id": "m-1"}],
            },
            "outputs": {},
        }
    }


async def test_documents_follow_every_write_to_the_rows_they_show(api: QueryHarness) -> None:
    # Orphans first: a param and a tag stored before their run's row (a RunStarted not folded
    # yet) show once the run exists.
    await api.db.execute("INSERT INTO params VALUES ('late', 'p', '1')")
    await api.db.execute("INSERT INTO tags VALUES ('late', 't', 'x')")
    await add_run(api.db, "late", experiment_id=1, name="late", tags={"drop": "me", 'a"b': "é"})
    await _with_inputs(api.db, "late")
    await api.db.execute("UPDATE tags SET value = 'y' WHERE run_id = 'late' AND key = 't'")
    await api.db.execute("DELETE FROM tags WHERE run_id = 'late' AND key = 'drop'")
    await api.db.execute("UPDATE params SET value = '2' WHERE run_id = 'late'")
    await api.db.execute("DELETE FROM run_model_inputs WHERE run_id = 'late'")
    assert await document_mismatches(api.db) == []
    run = (await api.get("runs/get", {"run_id": "late"}))["run"]
    assert run["data"]["params"] == [{"key": "p", "value": "2"}]
    assert {t["key"]: t["value"] for t in run["data"]["tags"]} == {
        'a"b': "é",
        "mlflow.rootRunId": "late",
        "mlflow.runName": "late",
        "t": "y",
    }
    assert "model_inputs" not in run["inputs"]
    assert run["inputs"]["dataset_inputs"][0]["dataset"]["name"] == "train"


async def test_running_run_omits_end_time_and_empty_parts(api: QueryHarness) -> None:
    await api.db.execute(
        "INSERT INTO runs VALUES ('bare', 0, 'b', '', 'RUNNING', 0, NULL, 'file:///a', "
        "'active', NULL, 'bare', 0)"
    )
    body = await api.get("runs/get", {"run_id": "bare"})
    assert body["run"]["info"] == {
        "run_id": "bare",
        "run_uuid": "bare",
        "run_name": "b",
        "experiment_id": "0",
        "user_id": "",
        "status": "RUNNING",
        "start_time": 0,
        "artifact_uri": "file:///a",
        "lifecycle_stage": "active",
    }
    assert (body["run"]["data"], body["run"]["inputs"], body["run"]["outputs"]) == ({}, {}, {})


async def test_get_run_reads_run_uuid_when_run_id_is_absent_and_returns_deleted_runs(
    api: QueryHarness,
) -> None:
    await add_run(api.db, "gone", stage="deleted")
    body = await api.get("runs/get", {"run_uuid": "gone"}, prefix=AJAX)
    assert body["run"]["info"]["lifecycle_stage"] == "deleted"


async def test_get_run_errors(api: QueryHarness) -> None:
    message = await api.error(
        "GET", "runs/get", 404, "RESOURCE_DOES_NOT_EXIST", params={"run_id": "nope"}
    )
    assert message == "Run with id=nope not found"
    message = await api.error("GET", "runs/get", 400, "INVALID_PARAMETER_VALUE")
    assert message == "Missing value for required parameter 'run_id'." + HINT


async def test_search_runs_filter_order_and_view(api: QueryHarness) -> None:
    for i, (acc, model) in enumerate([(0.9, "lr"), (0.5, "rf"), (0.7, "lr"), (0.99, "lr")]):
        await add_run(api.db, f"s{i}", experiment_id=1, start=100 + i, params={"model": model})
        await add_points(api.db, f"s{i}", "acc", [(0, 1, acc)])
    await add_run(api.db, "other", experiment_id=0, start=1, params={"model": "lr"})
    await api.db.execute("UPDATE runs SET lifecycle_stage = 'deleted' WHERE run_id = 's3'")

    body = await api.post(
        "runs/search",
        {
            "experiment_ids": ["1"],
            "filter": "params.model = 'lr' and metrics.acc > 0.6",
            "order_by": ["metrics.acc DESC"],
            "run_view_type": "ACTIVE_ONLY",
            "max_results": 1000,
        },
    )
    assert [r["info"]["run_id"] for r in body["runs"]] == ["s0", "s2"]
    assert body["runs"][0]["data"]["params"] == [{"key": "model", "value": "lr"}]
    # default order: start_time DESC; all view types; several experiments
    body = await api.post("runs/search", {"experiment_ids": ["0", "1"], "run_view_type": "ALL"})
    assert [r["info"]["run_id"] for r in body["runs"]] == ["s3", "s2", "s1", "s0", "other"]


async def test_search_runs_without_experiments_or_matches_is_empty(api: QueryHarness) -> None:
    await add_run(api.db, "x", experiment_id=1)
    assert await api.post("runs/search", {}) == {}
    assert await api.post("runs/search", {"experiment_ids": ["42"]}) == {}
    assert await api.post("runs/search", {"experiment_ids": ["1"], "filter": "tags.a = 'b'"}) == {}


async def test_search_runs_pages_until_the_last_token(api: QueryHarness) -> None:
    for i in range(7):
        await add_run(api.db, f"p{i}", experiment_id=1, start=i)
    seen: list[str] = []
    token = None
    while True:
        body = await api.post(
            "runs/search",
            {"experiment_ids": ["1"], "max_results": 3, **({"page_token": token} if token else {})},
        )
        seen += [r["info"]["run_id"] for r in body["runs"]]
        token = body.get("next_page_token")
        if token is None:
            break
    assert seen == [f"p{i}" for i in reversed(range(7))]


async def test_search_runs_errors(api: QueryHarness) -> None:
    cases = [
        ({"experiment_ids": "1"}, "Invalid value \"1\" for parameter 'experiment_ids' supplied"),
        ({"experiment_ids": ["x"]}, "Invalid experiment ID 'x'"),
        ({"experiment_ids": ["1"], "max_results": 50001}, "Invalid value 50001"),
        ({"experiment_ids": ["1"], "max_results": 0}, "Invalid value 0"),
        ({"experiment_ids": ["1"], "order_by": [1]}, "Invalid value [1] for parameter 'order_by'"),
        ({"experiment_ids": ["1"], "filter": "metrics.acc = 'x'"}, ""),
        ({"experiment_ids": ["1"], "filter": 5}, "Invalid value 5 for parameter 'filter'"),
        ({"experiment_ids": ["1"], "page_token": "%%%"}, "Invalid page token"),
        (
            {"experiment_ids": ["1"], "order_by": ["metrics.a", "metrics.a DESC"]},
            "`order_by` contains duplicate",
        ),
    ]
    for body, start in cases:
        message = await api.error("POST", "runs/search", 400, "INVALID_PARAMETER_VALUE", body=body)
        assert message.startswith(start), (body, message)


async def test_search_page_of_1000_runs_costs_a_constant_number_of_queries(
    api: QueryHarness,
) -> None:
    rows = [
        (
            f"q{i:04}",
            1,
            f"n{i}",
            "u",
            "FINISHED",
            i,
            None,
            "file:///a",
            "active",
            None,
            f"q{i:04}",
            0,
        )
        for i in range(1000)
    ]
    run_columns = [
        "run_id", "experiment_id", "run_name", "user_id", "status", "start_time", "end_time",
        "artifact_uri", "lifecycle_stage", "parent_run_id", "root_run_id", "depth",
    ]  # fmt: skip
    await api.db.copy_records_to_table("runs", records=rows, columns=run_columns)
    kv = ["run_id", "key", "value"]  # value_prefix is generated
    await api.db.copy_records_to_table(
        "params", records=[(r[0], k, "v") for r in rows for k in ("a", "b")], columns=kv
    )
    await api.db.copy_records_to_table(
        "tags", records=[(r[0], "mlflow.runName", r[2]) for r in rows], columns=kv
    )
    await api.db.copy_records_to_table(
        "latest_metrics",
        records=[(r[0], "m", float(i), i, 0) for i, r in enumerate(rows)],
        columns=["run_id", "key", "value", "ts", "step"],  # the experiment comes from the run
    )

    async def queries_for(max_results: int) -> int:
        before = len(api.queries)
        body = await api.post("runs/search", {"experiment_ids": ["1"], "max_results": max_results})
        assert len(body["runs"]) == max_results
        assert all(len(r["data"]["params"]) == 2 for r in body["runs"])
        return len(api.queries) - before

    await queries_for(1)  # a fresh connection first introspects the types it meets
    one, thousand = await queries_for(1), await queries_for(1000)
    # BEGIN with the version pin (LOCK runs) and custom plans, search, cached plans again,
    # runs with their documents, latest metrics, ROLLBACK
    assert one == thousand == 6
