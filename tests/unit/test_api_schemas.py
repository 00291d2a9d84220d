"""The query API's JSON shapes: protobuf-JSON conventions MLflow's client parses."""

from __future__ import annotations

import json
import math

import pytest
from google.protobuf.json_format import ParseDict
from mlflow.entities import Experiment as MlflowExperiment
from mlflow.entities import Run as MlflowRun
from mlflow.protos.service_pb2 import GetExperiment, GetRun, SearchRuns

from api.schemas import (
    Experiment,
    ExperimentResponse,
    KeyValue,
    Metric,
    MetricHistoryResponse,
    Run,
    RunInfo,
    RunOutputs,
    RunResponse,
    SearchRunsResponse,
    encode,
    run_data,
    run_inputs,
    wire_double,
)
from api.tokens import encode_page_token


def info(**changes: object) -> RunInfo:
    fields: dict[str, object] = {
        "run_id": "r",
        "run_uuid": "r",
        "run_name": "n",
        "experiment_id": "0",
        "user_id": "u",
        "status": "RUNNING",
        "start_time": 5,
        "artifact_uri": "file:///a",
        "lifecycle_stage": "active",
    }
    return RunInfo(**{**fields, **changes})  # type: ignore[arg-type]


def bare_run(**changes: object) -> Run:
    # a run without params or tags has an empty data document; without inputs, `{}`
    return Run(
        info=info(**changes), data=run_data([], ""), inputs=run_inputs("{}"), outputs=RunOutputs()
    )


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        (1.5, 1.5),
        (0.0, 0.0),
        (-2.0, -2.0),
        (math.nan, "NaN"),
        (math.inf, "Infinity"),
        (-math.inf, "-Infinity"),
    ],
)
def test_doubles_json_cannot_hold_travel_as_strings(value: float, wire: object) -> None:
    assert wire_double(value) == wire


def test_a_bare_run_has_empty_objects_not_missing_ones() -> None:
    assert json.loads(encode(RunResponse(bare_run()))) == {
        "run": {
            "info": {
                "run_id": "r",
                "run_uuid": "r",
                "run_name": "n",
                "experiment_id": "0",
                "user_id": "u",
                "status": "RUNNING",
                "start_time": 5,
                "artifact_uri": "file:///a",
                "lifecycle_stage": "active",
            },
            "data": {},
            "inputs": {},
            "outputs": {},
        }
    }


def test_int64_values_are_json_numbers_and_end_time_appears_once_set() -> None:
    body = json.loads(encode(bare_run(end_time=2**62, start_time=2**62 - 1)))
    assert body["info"]["end_time"] == 2**62
    assert isinstance(body["info"]["start_time"], int)


def test_empty_pages_are_empty_objects() -> None:
    assert encode(SearchRunsResponse()) == b"{}"
    assert encode(MetricHistoryResponse()) == b"{}"


def test_mlflows_own_parser_reads_a_full_run() -> None:
    # the documents as migration 0010 writes them (jsonb renders a dataset's tags with spaces)
    data = '"params":[{"key":"lr","value":"0.1"}],"tags":[{"key":"mlflow.runName","value":"n"}]'
    inputs = (
        '{"dataset_inputs":[{"dataset":{"name":"d","digest":"x","source_type":"local",'
        '"source":"s","profile":"p"},"tags":[{"key": "mlflow.data.context", "value": "train"}]}],'
        '"model_inputs":[{"model_id":"m-1"}]}'
    )
    metrics = [Metric("acc", wire_double(math.nan), 1, -3), Metric("m", 0.5, 2, 7)]
    run = Run(
        info=info(end_time=9, status="FINISHED"),
        data=run_data(metrics, data),
        inputs=run_inputs(inputs),
        outputs=RunOutputs(),
    )
    proto = ParseDict(json.loads(encode(RunResponse(run))), GetRun.Response())
    parsed = MlflowRun.from_proto(proto.run)
    assert parsed.info.end_time == 9
    assert parsed.info.status == "FINISHED"
    assert math.isnan(parsed.data.metrics["acc"])
    assert parsed.data.params == {"lr": "0.1"}
    assert parsed.data.tags == {"mlflow.runName": "n"}
    assert parsed.inputs.dataset_inputs[0].tags[0].value == "train"
    assert parsed.inputs.dataset_inputs[0].dataset.profile == "p"
    assert parsed.inputs.dataset_inputs[0].dataset.schema is None
    assert parsed.inputs.model_inputs[0].model_id == "m-1"
    # an unset end_time is None to the client, not 0
    bare = ParseDict(json.loads(encode(RunResponse(bare_run()))), GetRun.Response())
    assert MlflowRun.from_proto(bare.run).info.end_time is None
    token = encode_page_token(1)
    page = ParseDict(json.loads(encode(SearchRunsResponse([run], token))), SearchRuns.Response())
    assert page.next_page_token == token


def test_mlflows_own_parser_reads_an_experiment() -> None:
    experiment = Experiment(
        experiment_id="3",
        name="e",
        artifact_location="file:///x",
        lifecycle_stage="deleted",
        workspace="default",
        last_update_time=2,
        creation_time=1,
        tags=[KeyValue("a", "b")],
    )
    proto = ParseDict(json.loads(encode(ExperimentResponse(experiment))), GetExperiment.Response())
    parsed = MlflowExperiment.from_proto(proto.experiment)
    assert (parsed.experiment_id, parsed.lifecycle_stage, parsed.tags, parsed.workspace) == (
        "3",
        "deleted",
        {"a": "b"},
        "default",
    )
    assert json.loads(encode(Experiment("0", "D", "a", "active", "default"))) == {
        "experiment_id": "0",
        "name": "D",
        "artifact_location": "a",
        "lifecycle_stage": "active",
        "workspace": "default",
    }


@pytest.mark.parametrize(
    ("metrics", "document", "expected"),
    [
        ([], None, {}),
        ([], "", {}),
        ([], '"tags":[{"key":"a","value":"b"}]', {"tags": [{"key": "a", "value": "b"}]}),
        (
            [Metric("m", 1.0, 2, 3)],
            "",
            {"metrics": [{"key": "m", "value": 1.0, "timestamp": 2, "step": 3}]},
        ),
        (
            [Metric("m", 1.0, 2, 3)],
            '"params":[{"key":"p","value":""}]',
            {
                "metrics": [{"key": "m", "value": 1.0, "timestamp": 2, "step": 3}],
                "params": [{"key": "p", "value": ""}],
            },
        ),
    ],
)
def test_run_data_splices_metrics_before_the_document(
    metrics: list[Metric], document: str | None, expected: dict[str, object]
) -> None:
    assert json.loads(bytes(run_data(metrics, document))) == expected
