"""The query API's experiment endpoints over HTTP: MLflow's shapes, defaults, limits and errors."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator

import asyncpg
import pytest
from query_harness import AJAX, QueryHarness, add_experiment, add_run, query_api

from services.config import Settings

pytestmark = pytest.mark.integration

HINT = " See the API docs for more information about request parameters."


@pytest.fixture
async def api(
    stack: Settings, topic: str, read_db: asyncpg.Connection
) -> AsyncIterator[QueryHarness]:
    await add_experiment(read_db, 0, "Default", created=10)
    await add_experiment(read_db, 1, "tune", created=20, updated=25, tags={"team": "a", "b": "2"})
    await add_experiment(read_db, 2, "old", stage="deleted", created=30)
    await add_experiment(read_db, 3, "zero-times", created=0)
    async with query_api(stack, topic, read_db) as harness:
        yield harness


async def test_get_experiment_shape(api: QueryHarness) -> None:
    body = await api.get("experiments/get", {"experiment_id": "1"})
    assert body == {
        "experiment": {
            "experiment_id": "1",
            "name": "tune",
            "artifact_location": "file:///art/1",
            "lifecycle_stage": "active",
            "workspace": "default",
            "last_update_time": 25,
            "creation_time": 20,
            "tags": [{"key": "b", "value": "2"}, {"key": "team", "value": "a"}],
        }
    }


async def test_get_experiment_omits_what_mlflow_leaves_unset(api: QueryHarness) -> None:
    # no tags -> no `tags`; zero times are unset in MLflow's proto, hence omitted
    body = await api.get("experiments/get", {"experiment_id": "3"})
    assert body == {
        "experiment": {
            "experiment_id": "3",
            "name": "zero-times",
            "artifact_location": "file:///art/3",
            "lifecycle_stage": "active",
            "workspace": "default",
        }
    }


async def test_get_experiment_returns_deleted_ones_and_serves_the_ajax_prefix(
    api: QueryHarness,
) -> None:
    body = await api.get("experiments/get", {"experiment_id": "2"}, prefix=AJAX)
    assert body["experiment"]["lifecycle_stage"] == "deleted"


async def test_get_experiment_errors(api: QueryHarness) -> None:
    message = await api.error(
        "GET", "experiments/get", 404, "RESOURCE_DOES_NOT_EXIST", params={"experiment_id": "9"}
    )
    assert message == "No Experiment with id=9 exists"
    message = await api.error(
        "GET", "experiments/get", 400, "INVALID_PARAMETER_VALUE", params={"experiment_id": "x"}
    )
    assert message == "Invalid experiment ID 'x'. Experiment ID must be a valid integer."
    message = await api.error("GET", "experiments/get", 400, "INVALID_PARAMETER_VALUE")
    assert message == "Missing value for required parameter 'experiment_id'." + HINT
    # beyond bigint nothing can exist: a 404, never a database error
    await api.error(
        "GET",
        "experiments/get",
        404,
        "RESOURCE_DOES_NOT_EXIST",
        params={"experiment_id": str(2**70)},
    )


async def test_get_by_name_finds_deleted_experiments_and_404s_unknown_names(
    api: QueryHarness,
) -> None:
    body = await api.get("experiments/get-by-name", {"experiment_name": "old"})
    assert body["experiment"]["experiment_id"] == "2"
    assert body["experiment"]["lifecycle_stage"] == "deleted"
    message = await api.error(
        "GET",
        "experiments/get-by-name",
        404,
        "RESOURCE_DOES_NOT_EXIST",
        params={"experiment_name": "nope"},
    )
    assert message == "Could not find experiment with name 'nope'"
    await api.error("GET", "experiments/get-by-name", 400, "INVALID_PARAMETER_VALUE")


async def test_search_experiments_post_default_order_and_view_types(api: QueryHarness) -> None:
    body = await api.post("experiments/search", {"max_results": 1000})
    # creation_time DESC, experiment_id ASC; deleted ones hidden by default
    assert [e["experiment_id"] for e in body["experiments"]] == ["1", "0", "3"]
    assert "next_page_token" not in body
    body = await api.post("experiments/search", {"max_results": 10, "view_type": "DELETED_ONLY"})
    assert [e["name"] for e in body["experiments"]] == ["old"]
    body = await api.post("experiments/search", {"max_results": 10, "view_type": 3})
    assert len(body["experiments"]) == 4


async def test_search_experiments_get_with_the_clients_query_string(api: QueryHarness) -> None:
    params = [
        ("max_results", "10"),
        ("view_type", "ALL"),
        ("filter", "name != 'x'"),
        ("order_by", "name ASC"),
        ("order_by", "experiment_id DESC"),
    ]
    body = await api.get("experiments/search", params)
    assert [e["name"] for e in body["experiments"]] == ["Default", "old", "tune", "zero-times"]
    body = await api.get("experiments/search", {"max_results": "5", "view_type": "2"})
    assert [e["name"] for e in body["experiments"]] == ["old"]


async def test_search_experiments_filters_by_tag(api: QueryHarness) -> None:
    body = await api.post(
        "experiments/search", {"max_results": 10, "filter": "tags.team = 'a'"}, prefix=AJAX
    )
    assert [e["name"] for e in body["experiments"]] == ["tune"]
    empty = await api.post("experiments/search", {"max_results": 10, "filter": "name = 'zz'"})
    assert empty == {}


async def test_search_experiments_pages_with_tokens(api: QueryHarness) -> None:
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        body = await api.post(
            "experiments/search",
            {"max_results": 1, "view_type": "ALL", **({"page_token": token} if token else {})},
        )
        seen += [e["experiment_id"] for e in body["experiments"]]
        pages += 1
        token = body.get("next_page_token")
        if token is None:
            break
        assert json.loads(base64.b64decode(token)) == {"offset": pages}
    # an exactly full last page carries no token
    assert (seen, pages) == (["2", "1", "0", "3"], 4)


async def test_search_experiments_limits_and_bad_input(api: QueryHarness) -> None:
    for body in ({}, {"max_results": 0}):
        message = await api.error(
            "POST", "experiments/search", 400, "INVALID_PARAMETER_VALUE", body=body
        )
        assert "max_results" in message
    message = await api.error(
        "POST", "experiments/search", 400, "INVALID_PARAMETER_VALUE", body={"max_results": 50001}
    )
    assert message.startswith("Invalid value 50001 for parameter 'max_results' supplied")
    message = await api.error(
        "GET",
        "experiments/search",
        400,
        "INVALID_PARAMETER_VALUE",
        params={"max_results": "ten"},
    )
    assert message == (
        "Invalid value \"ten\" for parameter 'max_results' supplied:  "
        "Hint: Value was of type 'str'." + HINT
    )
    await api.error(
        "POST",
        "experiments/search",
        400,
        "INVALID_PARAMETER_VALUE",
        body={"max_results": 5, "page_token": "garbage!"},
    )
    await api.error(
        "POST",
        "experiments/search",
        400,
        "INVALID_PARAMETER_VALUE",
        body={"max_results": 5, "filter": "name = 'a' OR name = 'b'"},
    )
    # an unknown view type is not an error: MLflow ignores it, so the default view applies
    status, payload = await api.call(
        "POST", "experiments/search", body={"max_results": 50, "view_type": "all"}
    )
    assert status == 200
    assert {e["lifecycle_stage"] for e in payload["experiments"]} == {"active"}


async def test_post_needs_a_json_content_type(api: QueryHarness) -> None:
    resp = await api.client.post("/api/2.0/mlflow/experiments/search", data=b'{"max_results": 1}')
    payload = await resp.json()
    assert (resp.status, payload["error_code"]) == (400, "INVALID_PARAMETER_VALUE")
    assert payload["message"].startswith("Bad Request. Content-Type")


async def test_unknown_and_write_routes_are_not_served_here(api: QueryHarness) -> None:
    await api.error("GET", "experiments/nope", 404, "ENDPOINT_NOT_FOUND")
    # runs/search is POST only, as in MLflow
    status, payload = await api.call("GET", "runs/search")
    assert status == 405
    assert payload["error_code"] == "ENDPOINT_NOT_FOUND"


async def _dataset_input(
    db: asyncpg.Connection, run_id: str, name: str, digest: str, context: str | None
) -> None:
    await db.execute(
        "INSERT INTO run_dataset_inputs (run_id, name, digest, source_type, source, context) "
        "VALUES ($1, $2, $3, 'local', 's3://x', $4)",
        *(run_id, name, digest, context),
    )


async def test_search_datasets_lists_each_dataset_and_context_once(api: QueryHarness) -> None:
    await add_run(api.db, "r1", experiment_id=1)
    await add_run(api.db, "r2", experiment_id=1, stage="deleted")  # its inputs count too
    await add_run(api.db, "r3", experiment_id=2)
    await add_run(api.db, "r4", experiment_id=3)
    await _dataset_input(api.db, "r1", "mnist", "d1", "train")
    await _dataset_input(api.db, "r1", "cifar", "d2", None)
    await _dataset_input(api.db, "r2", "mnist", "d1", "train")  # the same again: once
    await _dataset_input(api.db, "r2", "mnist", "d9", "eval")
    await _dataset_input(api.db, "r3", "mnist", "d1", "train")  # another experiment's
    await _dataset_input(api.db, "r4", "imagenet", "d4", "train")  # not asked for
    status, body = await api.call(
        "POST", "experiments/search-datasets", prefix=AJAX, body={"experiment_ids": ["1", "2"]}
    )
    assert status == 200
    assert body == {
        "dataset_summaries": [
            {"experiment_id": "1", "name": "cifar", "digest": "d2"},
            {"experiment_id": "1", "name": "mnist", "digest": "d1", "context": "train"},
            {"experiment_id": "1", "name": "mnist", "digest": "d9", "context": "eval"},
            {"experiment_id": "2", "name": "mnist", "digest": "d1", "context": "train"},
        ]
    }
    for ids in (["0"], ["99999999999999999999", "-99999999999999999999"]):
        status, body = await api.call(
            "POST", "experiments/search-datasets", prefix=AJAX, body={"experiment_ids": ids}
        )
        assert (status, body) == (200, {})


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        ([], "SearchDatasets request must specify at least one experiment_id."),
        ([str(i) for i in range(21)], "cannot specify more than 20 experiment_ids. Received 21"),
        (["x"], "Invalid experiment ID 'x'"),
    ],
)
async def test_search_datasets_refuses_bad_experiment_ids(
    api: QueryHarness, ids: list[str], message: str
) -> None:
    status, body = await api.call(
        "POST", "experiments/search-datasets", prefix=AJAX, body={"experiment_ids": ids}
    )
    assert (status, body["error_code"]) == (400, "INVALID_PARAMETER_VALUE")
    assert message in body["message"]


async def test_search_datasets_is_served_as_mlflow_serves_it(api: QueryHarness) -> None:
    """Only by POST and only under the ajax prefix: MLflow's UI is its one caller."""
    status, _ = await api.call(
        "POST", "experiments/search-datasets", body={"experiment_ids": ["1"]}
    )
    assert status == 404
    status, _ = await api.call("GET", "experiments/search-datasets", prefix=AJAX)
    assert status == 405
