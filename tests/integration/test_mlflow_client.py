"""The unmodified mlflow client against `runstream serve`: gateway, projector and query API.

Each test gets its own server process, topic and schemas. The client is blocking, so each
scenario runs in a worker thread. The client reads right after it writes (create then get, end
then get, log then search): these pass only if the read-your-writes barrier holds. The
behaviours are those MLflow's own `tests/tracking/test_rest_tracking.py` checks for tracking,
with the 3.x sampling rule for bulk-interval history.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import mlflow
import pytest
import requests
from mlflow import MlflowClient
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag, ViewType
from mlflow.exceptions import MlflowException
from mlflow.store.tracking.rest_store import RestStore
from processes import runstream_process

from services.config import Settings

pytestmark = pytest.mark.integration

PARENT = "mlflow.parentRunId"
ROOT = "mlflow.rootRunId"


@pytest.fixture
async def tracking_uri(
    stack: Settings,
    topic: str,
    schema_factory: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[str]:
    """Run `runstream serve` on fresh state; yield its URL."""
    env = {
        "RUNSTREAM_TOPIC": topic,
        "RUNSTREAM_DEAD_LETTER_TOPIC": f"{topic}.dead-letter",
        "RUNSTREAM_REGISTRY_SCHEMA": await schema_factory("ingest"),
        "RUNSTREAM_READ_SCHEMA": await schema_factory("projector"),
        "RUNSTREAM_CONSUMER_GROUP": f"test-mlflow-{uuid.uuid4().hex[:12]}",
        "RUNSTREAM_ARTIFACT_ROOT": tmp_path.as_uri(),
    }
    # A failing request must fail the test now, not after the client's two minutes of retries
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
    async with runstream_process("serve", env) as url:
        yield url
    # set_experiment exports the active experiment to the environment; do not leak it
    os.environ.pop("MLFLOW_EXPERIMENT_ID", None)


async def in_thread(scenario: Callable[[str], None], url: str) -> None:
    """Run a blocking mlflow scenario against `url` in a worker thread."""
    await asyncio.to_thread(scenario, url)


def client_for(url: str) -> MlflowClient:
    mlflow.set_tracking_uri(url)
    return MlflowClient(url)


# --- the fluent API: experiments, nested and threaded runs, logging, search --------------------


def tuning(url: str) -> None:
    client = client_for(url)
    experiment = mlflow.set_experiment("tuning")  # get-by-name 404, create, get
    assert mlflow.set_experiment("tuning").experiment_id == experiment.experiment_id
    with mlflow.start_run(run_name="sweep") as parent:
        parent_id = parent.info.run_id
        mlflow.log_params({"search": "grid", "trials": 4})
        mlflow.set_tag("stage", "tune")
        with mlflow.start_run(run_name="trial-0", nested=True) as first:
            mlflow.log_param("lr", 0.1)
            mlflow.log_metrics({"acc": 0.55, "loss": 0.9})

        def trial(i: int) -> str:
            # a thread has no active run: it names its parent, which the client reads first
            with mlflow.start_run(run_name=f"trial-{i}", parent_run_id=parent_id) as run:
                mlflow.log_param("lr", 10.0**-i)
                for step, acc in enumerate((0.5, 0.6 + i / 100)):
                    mlflow.log_metric("acc", acc, step=step)
                mlflow.log_metric("loss", 1.0 / i)
                return str(run.info.run_id)

        with ThreadPoolExecutor(3) as pool:
            threaded = list(pool.map(trial, (1, 2, 3)))
        mlflow.log_metric("best_acc", 0.63)

    sweep = client.get_run(parent_id)
    assert sweep.info.status == "FINISHED"
    assert sweep.info.end_time is not None
    assert sweep.data.params == {"search": "grid", "trials": "4"}
    assert sweep.data.tags["stage"] == "tune"
    assert sweep.data.tags[ROOT] == parent_id
    assert PARENT not in sweep.data.tags

    children = mlflow.search_runs(
        filter_string=f"tags.{PARENT} = '{parent_id}'",
        order_by=["metrics.acc DESC"],
        output_format="list",
    )
    assert [r.info.run_name for r in children] == ["trial-3", "trial-2", "trial-1", "trial-0"]
    assert {r.info.run_id for r in children} == {first.info.run_id, *threaded}
    assert all(r.data.tags[ROOT] == parent_id for r in children)
    assert children[0].data.metrics == {"acc": 0.63, "loss": 1 / 3}
    roots = client.search_runs([experiment.experiment_id], filter_string=f"tags.{PARENT} IS NULL")
    assert [r.info.run_id for r in roots] == [parent_id]
    lr_filtered = client.search_runs(
        [experiment.experiment_id],
        filter_string="params.lr = '0.1' and metrics.acc > 0.6",
    )
    assert [r.info.run_name for r in lr_filtered] == ["trial-1"]
    by_name = mlflow.search_runs(
        experiment_names=["tuning"], filter_string="attributes.run_name LIKE 'trial-%'"
    )
    assert len(by_name) == 4  # a pandas DataFrame

    # Runstream's own view answers "which child was best" for the parent
    best = requests.get(
        f"{url}/api/runstream/runs/{parent_id}/best-children",
        params={"metric": "acc", "mode": "max"},
        timeout=30,
    ).json()
    assert (best["children"], best["best"][0]["run_name"]) == (4, "trial-3")
    assert best["best"][0]["params"] == [{"key": "lr", "value": "0.001"}]


async def test_fluent_tuning_with_nested_and_threaded_children(tracking_uri: str) -> None:
    await in_thread(tuning, tracking_uri)


def metric_history(url: str) -> None:
    client = client_for(url)
    mlflow.set_experiment("history")
    with mlflow.start_run() as run:
        for step in (5, -3, 2, 0, -1):  # out of order and negative
            mlflow.log_metric("m", step * 1.5, step=step, timestamp=100 + abs(step))
        mlflow.log_metric("m", math.nan, step=9, timestamp=50)
        mlflow.log_metric("m", math.inf, step=7, timestamp=200)
        mlflow.log_metric("m", -math.inf, step=8, timestamp=200)
    history = client.get_metric_history(run.info.run_id, "m")
    # MLflow's order: timestamp, step, value
    assert [(m.timestamp, m.step) for m in history] == [
        (50, 9),
        (100, 0),
        (101, -1),
        (102, 2),
        (103, -3),
        (105, 5),
        (200, 7),
        (200, 8),
    ]
    assert math.isnan(history[0].value)
    assert history[-2].value == math.inf
    assert history[-1].value == -math.inf
    latest = client.get_run(run.info.run_id).data.metrics["m"]
    assert math.isnan(latest)  # step 9 is the highest step: MLflow's latest value
    assert client.get_metric_history(run.info.run_id, "absent") == []
    assert client.get_metric_history("0" * 32, "m") == []

    # paged through the store API the client uses: tokens until the end
    paged = client._tracking_client.store.get_metric_history(run.info.run_id, "m", max_results=3)
    assert len(paged) == 3
    assert paged.token is not None


async def test_metric_history_out_of_order_negative_and_non_finite(tracking_uri: str) -> None:
    await in_thread(metric_history, tracking_uri)


def metric_history_paged(url: str) -> None:
    client = client_for(url)
    run_id = client.create_run(client.create_experiment("paged")).info.run_id
    # Ties on the timestamp, equal steps, negative steps, NaN and infinities: every page must
    # resume exactly after the last point of the one before, in (timestamp, step, value) order.
    points = [
        Metric("m", value, timestamp, step)
        for timestamp in (5, 7, 7, 9)
        for step in (-2, 0, 0, 3)
        for value in (0.5, math.nan, -math.inf, 1.5)
    ]
    client.log_batch(run_id, metrics=points)
    expected = sorted(
        {(m.timestamp, m.step, "nan" if math.isnan(m.value) else m.value) for m in points},
        key=lambda p: (p[0], p[1], math.inf if p[2] == "nan" else p[2], p[2] == "nan"),
    )
    history = client.get_metric_history(run_id, "m")
    got = [(m.timestamp, m.step, "nan" if math.isnan(m.value) else m.value) for m in history]
    assert got == expected


async def test_the_client_walks_every_page_of_a_metric_history(
    tracking_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The unmodified client pages by 25,000; a page size of 7 makes it walk six pages.
    monkeypatch.setattr(
        "mlflow.tracking._tracking_service.client.GET_METRIC_HISTORY_MAX_RESULTS", 7
    )
    pages: list[str | None] = []
    fetch = RestStore.get_metric_history

    def counted(self: RestStore, *args: Any, **kwargs: Any) -> Any:
        pages.append(kwargs.get("page_token"))
        return fetch(self, *args, **kwargs)

    monkeypatch.setattr(RestStore, "get_metric_history", counted)
    await in_thread(metric_history_paged, tracking_uri)
    assert len(pages) == 6  # 36 distinct points (repeated ones fold into one), 7 a page
    assert pages[0] is None
    assert all(pages[1:])


def lineage_three_levels(url: str) -> None:
    client = client_for(url)
    experiment_id = client.create_experiment("lineage")
    root = client.create_run(experiment_id, run_name="root")
    root_id = root.info.run_id
    middle = client.create_run(experiment_id, tags={PARENT: root_id}, run_name="middle")
    leaf = client.create_run(experiment_id, tags={PARENT: middle.info.run_id}, run_name="leaf")
    fetched = client.get_run(leaf.info.run_id)
    assert fetched.info.user_id == "unknown"
    assert fetched.data.tags[PARENT] == middle.info.run_id
    assert fetched.data.tags[ROOT] == root_id
    family = client.search_runs(
        [experiment_id], filter_string=f"tags.{ROOT} = '{root_id}'", order_by=["start_time ASC"]
    )
    assert [r.info.run_name for r in family] == ["root", "middle", "leaf"]

    up = requests.get(f"{url}/api/runstream/runs/{leaf.info.run_id}/ancestors", timeout=30)
    assert [(r["run_name"], r["distance"]) for r in up.json()["runs"]] == [
        ("middle", 1),
        ("root", 2),
    ]
    down = requests.get(f"{url}/api/runstream/runs/{root_id}/subtree", timeout=30).json()
    assert [(r["run_name"], r["depth"]) for r in down["runs"]] == [("middle", 1), ("leaf", 2)]


async def test_client_created_runs_three_levels_deep(tracking_uri: str) -> None:
    await in_thread(lineage_three_levels, tracking_uri)


def delete_restore(url: str) -> None:
    client = client_for(url)
    experiment_id = client.create_experiment("Deleterious")
    run_id = client.create_run(experiment_id).info.run_id
    other = client.create_run(experiment_id).info.run_id
    client.delete_run(run_id)
    assert client.get_run(run_id).info.lifecycle_stage == "deleted"
    assert [r.info.run_id for r in client.search_runs([experiment_id])] == [other]
    deleted = client.search_runs([experiment_id], run_view_type=ViewType.DELETED_ONLY)
    assert [r.info.run_id for r in deleted] == [run_id]
    client.restore_run(run_id)
    assert len(client.search_runs([experiment_id])) == 2

    assert client.get_experiment(experiment_id).lifecycle_stage == "active"
    client.delete_experiment(experiment_id)
    assert client.get_experiment(experiment_id).lifecycle_stage == "deleted"
    assert client.get_experiment_by_name("Deleterious").lifecycle_stage == "deleted"
    assert client.get_run(other).info.lifecycle_stage == "deleted"
    assert {e.name for e in client.search_experiments()} == {"Default"}
    assert {e.name for e in client.search_experiments(view_type=ViewType.DELETED_ONLY)} == {
        "Deleterious"
    }
    client.restore_experiment(experiment_id)
    assert client.get_experiment(experiment_id).lifecycle_stage == "active"
    assert len(client.search_runs([experiment_id])) == 2


async def test_delete_and_restore_runs_and_experiments(tracking_uri: str) -> None:
    await in_thread(delete_restore, tracking_uri)


# --- ports of MLflow's test_rest_tracking.py ----------------------------------------------------


def create_get_search_experiment(url: str) -> None:
    client = client_for(url)
    experiment_id = client.create_experiment(
        "My Experiment", artifact_location="file:///tmp/my_location", tags={"key1": "val1"}
    )
    experiment = client.get_experiment(experiment_id)
    assert experiment.name == "My Experiment"
    assert experiment.artifact_location == "file:///tmp/my_location"
    assert experiment.tags == {"key1": "val1"}
    assert {e.name for e in client.search_experiments()} == {"My Experiment", "Default"}
    client.delete_experiment(experiment_id)
    assert {e.name for e in client.search_experiments(view_type=ViewType.ALL)} == {
        "My Experiment",
        "Default",
    }
    page = client.search_experiments(max_results=1)
    assert ([e.name for e in page], page.token) == (["Default"], None)
    first = client.search_experiments(max_results=1, view_type=ViewType.ALL)
    second = client.search_experiments(
        max_results=1, view_type=ViewType.ALL, page_token=first.token
    )
    assert {e.name for e in [*first, *second]} == {"Default", "My Experiment"}
    assert client.get_experiment_by_name("idontexist") is None


async def test_create_get_search_experiment(tracking_uri: str) -> None:
    await in_thread(create_get_search_experiment, tracking_uri)


def search_experiments(url: str) -> None:
    client = client_for(url)
    assert client.search_experiments()[0].name == "Default"
    ids = []
    for name, tags in [("a", {"key": "value"}), ("ab", {"key": "vaLue"}), ("Abc", None)]:
        time.sleep(0.002)  # distinct creation times make the default order deterministic
        ids.append(client.create_experiment(name, tags=tags))
    names = lambda found: [e.name for e in found]  # noqa: E731
    assert names(client.search_experiments(filter_string="attribute.name = 'a'")) == ["a"]
    assert names(client.search_experiments(filter_string="attribute.name != 'a'")) == [
        "Abc",
        "ab",
        "Default",
    ]
    assert names(client.search_experiments(filter_string="name LIKE 'a%'")) == ["ab", "a"]
    assert names(client.search_experiments(filter_string="tag.key = 'value'")) == ["a"]
    assert names(client.search_experiments(filter_string="tag.key != 'value'")) == ["ab"]
    assert names(client.search_experiments(filter_string="tag.key ILIKE '%alu%'")) == ["ab", "a"]
    assert names(client.search_experiments(order_by=["name DESC"])) == [
        "ab",
        "a",
        "Default",
        "Abc",
    ]
    page = client.search_experiments(max_results=2)
    assert names(page) == ["Abc", "ab"]
    assert names(client.search_experiments(page_token=page.token)) == ["a", "Default"]
    client.delete_experiment(ids[1])
    assert names(client.search_experiments(view_type=ViewType.ACTIVE_ONLY)) == [
        "Abc",
        "a",
        "Default",
    ]
    assert names(client.search_experiments(view_type=ViewType.DELETED_ONLY)) == ["ab"]
    assert names(client.search_experiments(view_type=ViewType.ALL)) == [
        "Abc",
        "ab",
        "a",
        "Default",
    ]


async def test_search_experiments(tracking_uri: str) -> None:
    await in_thread(search_experiments, tracking_uri)


def create_run_all_args(url: str) -> None:
    client = client_for(url)
    experiment_id = client.create_experiment("Run A Lot")
    tags = {
        "mlflow.user": "username",
        "mlflow.source.type": "LOCAL",
        "mlflow.source.name": "Hello",
        "mlflow.project.entryPoint": "entry",
        "mlflow.source.git.commit": "abc",
        PARENT: "7",
        "my": "tag",
        "other": "tag",
    }
    created = client.create_run(experiment_id, start_time=456, run_name="my name", tags=tags)
    run_id = created.info.run_id
    fetched = client.get_run(run_id)
    for run in (created, fetched):
        assert run.info.run_id == run_id
        assert run.info.experiment_id == experiment_id
        assert run.info.user_id == "username"
        assert run.info.start_time == 456
        assert run.info.run_name == "my name"
        assert tags.items() <= run.data.tags.items()
    # the parent "7" never existed: the run is its own root
    assert fetched.data.tags[ROOT] == run_id
    assert [r.info for r in client.search_runs([experiment_id])] == [fetched.info]


async def test_create_run_all_args(tracking_uri: str) -> None:
    await in_thread(create_run_all_args, tracking_uri)


def log_metrics_params_tags(url: str) -> None:
    client = client_for(url)
    run_id = client.create_run(client.create_experiment("Oh My")).info.run_id
    client.log_metric(run_id, key="metric", value=123.456, timestamp=789, step=2)
    client.log_metric(run_id, key="nan_metric", value=math.nan)
    client.log_metric(run_id, key="inf_metric", value=math.inf)
    client.log_metric(run_id, key="-inf_metric", value=-math.inf)
    client.log_metric(run_id, key="stepless-metric", value=987.654, timestamp=321)
    client.log_param(run_id, "param", "value")
    client.log_param(run_id, "empty", "")
    client.set_tag(run_id, "taggity", "do-dah")
    client.set_tag(run_id, "empty_tag", "")
    run = client.get_run(run_id)
    assert run.data.metrics["metric"] == 123.456
    assert math.isnan(run.data.metrics["nan_metric"])
    assert run.data.metrics["inf_metric"] >= 1.7976931348623157e308
    assert run.data.metrics["-inf_metric"] <= -1.7976931348623157e308
    assert run.data.metrics["stepless-metric"] == 987.654
    assert run.data.params == {"param": "value", "empty": ""}
    assert run.data.tags["taggity"] == "do-dah"
    assert run.data.tags["empty_tag"] == ""
    [point] = client.get_metric_history(run_id, "metric")
    assert (point.key, point.value, point.timestamp, point.step) == ("metric", 123.456, 789, 2)
    [stepless] = client.get_metric_history(run_id, "stepless-metric")
    assert (stepless.timestamp, stepless.step) == (321, 0)

    client.delete_tag(run_id, "taggity")
    assert "taggity" not in client.get_run(run_id).data.tags
    with pytest.raises(MlflowException, match="No tag with name: fakeTag"):
        client.delete_tag(run_id, "fakeTag")

    client.log_batch(
        run_id,
        metrics=[Metric("batch", 1.5, 789, 3)],
        params=[Param("bp", "v")],
        tags=[RunTag("bt", "t")],
    )
    run = client.get_run(run_id)
    assert (run.data.metrics["batch"], run.data.params["bp"], run.data.tags["bt"]) == (
        1.5,
        "v",
        "t",
    )


async def test_log_metrics_params_tags_and_batches(tracking_uri: str) -> None:
    await in_thread(log_metrics_params_tags, tracking_uri)


def terminate_and_rename(url: str) -> None:
    client = client_for(url)
    experiment_id = client.create_experiment("Terminator")
    run_id = client.create_run(experiment_id).info.run_id
    assert client.get_run(run_id).info.status == "RUNNING"
    assert client.get_run(run_id).info.end_time is None
    client.set_terminated(run_id, "FAILED")
    info = client.get_run(run_id).info
    assert info.status == "FAILED"
    assert info.end_time <= int(time.time() * 1000)
    client.update_run(run_id, name="name_abc")
    info = client.get_run(run_id).info
    assert (info.run_name, info.status) == ("name_abc", "FAILED")
    assert client.search_runs([experiment_id], "attributes.run_name = 'name_abc'")[0].info == info


async def test_set_terminated_and_rename(tracking_uri: str) -> None:
    await in_thread(terminate_and_rename, tracking_uri)


def search_pagination_and_validation(url: str) -> None:
    client = client_for(url)
    experiment_id = client.create_experiment("search_pagination")
    runs = sorted(client.create_run(experiment_id, start_time=1).info.run_id for _ in range(10))
    result = client.search_runs([experiment_id], max_results=4)
    assert [r.info.run_id for r in result] == runs[0:4]
    result = client.search_runs([experiment_id], max_results=4, page_token=result.token)
    assert [r.info.run_id for r in result] == runs[4:8]
    result = client.search_runs([experiment_id], max_results=4, page_token=result.token)
    assert ([r.info.run_id for r in result], result.token) == (runs[8:], None)
    with pytest.raises(
        MlflowException, match=r"Invalid value 123456789 for parameter 'max_results' supplied"
    ):
        client.search_runs([experiment_id], max_results=123456789)
    with pytest.raises(MlflowException, match="INVALID_PARAMETER_VALUE"):
        client.search_runs([experiment_id], filter_string="metrics.a = 'text'")


async def test_search_pagination_and_validation(tracking_uri: str) -> None:
    await in_thread(search_pagination_and_validation, tracking_uri)


def log_inputs(url: str) -> None:
    client = client_for(url)
    experiment_id = client.create_experiment("log inputs test")
    run_id = client.create_run(experiment_id).info.run_id
    dataset = Dataset(name="name1", digest="digest1", source_type="source_type1", source="src")
    client.log_inputs(
        run_id,
        [DatasetInput(dataset=dataset, tags=[InputTag(key="mlflow.data.context", value="train")])],
    )
    [found] = client.get_run(run_id).inputs.dataset_inputs
    assert (found.dataset.name, found.dataset.digest, found.dataset.source) == (
        "name1",
        "digest1",
        "src",
    )
    assert [(t.key, t.value) for t in found.tags] == [("mlflow.data.context", "train")]
    matched = client.search_runs([experiment_id], "datasets.context = 'train'")
    assert [r.info.run_id for r in matched] == [run_id]


async def test_log_inputs(tracking_uri: str) -> None:
    await in_thread(log_inputs, tracking_uri)


def bulk_histories(url: str) -> None:
    client = client_for(url)
    experiment_id = client.create_experiment("get metric history bulk")
    first, second = (client.create_run(experiment_id).info.run_id for _ in range(2))
    history = [
        {"key": "metricA", "timestamp": 1, "step": 2, "value": 10.0},
        {"key": "metricA", "timestamp": 1, "step": 3, "value": 11.0},
        {"key": "metricA", "timestamp": 1, "step": 3, "value": 12.0},
        {"key": "metricA", "timestamp": 2, "step": 3, "value": 12.0},
    ]
    for point in history:
        client.log_metric(first, **point)
        client.log_metric(second, **{**point, "value": point["value"] + 1.0})
    bulk = f"{url}/ajax-api/2.0/mlflow/metrics/get-history-bulk"
    found = requests.get(bulk, params={"run_id": [first], "metric_key": "metricA"}, timeout=30)
    assert found.json()["metrics"] == [{**p, "run_id": first} for p in history]
    both = requests.get(
        bulk, params={"run_id": [second, first], "metric_key": "metricA"}, timeout=30
    ).json()["metrics"]
    expected = [{**p, "run_id": first} for p in history] + [
        {**p, "run_id": second, "value": p["value"] + 1.0} for p in history
    ]
    assert both == sorted(expected, key=lambda p: p["run_id"])
    limited = requests.get(
        bulk, params={"run_id": [first], "metric_key": "metricA", "max_results": 2}, timeout=30
    )
    assert limited.json()["metrics"] == [{**p, "run_id": first} for p in history[:2]]

    interval = f"{url}/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval"
    third = client.create_run(experiment_id).info.run_id
    client.log_batch(third, metrics=[Metric("loss", 10.0, 1, i) for i in range(10)])
    sampled = requests.get(
        interval, params={"run_ids": [third], "metric_key": "loss", "max_results": 5}, timeout=30
    ).json()["metrics"]
    assert [p["step"] for p in sampled] == [0, 2, 4, 6, 9]
    windowed = requests.get(
        interval,
        params={
            "run_ids": [third],
            "metric_key": "loss",
            "start_step": 0,
            "end_step": 4,
            "max_results": 5,
        },
        timeout=30,
    ).json()["metrics"]
    assert [p["step"] for p in windowed] == [0, 1, 2, 3, 4]
    bad = requests.get(interval, params={"run_ids": [third], "metric_key": ""}, timeout=30)
    assert bad.status_code == 400
    assert "Missing value for required parameter 'metric_key'" in bad.json()["message"]


async def test_bulk_metric_histories(tracking_uri: str) -> None:
    await in_thread(bulk_histories, tracking_uri)
