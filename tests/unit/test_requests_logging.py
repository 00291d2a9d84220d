"""Unit tests for ingest.requests: log-metric, log-parameter, set-tag, delete-tag, log-inputs.

Error texts are MLflow 3.17's, recorded by driving its server in-process; the cases port
tests/tracking/test_rest_tracking.py (*_validation tests). A fuzz test closes the file: no JSON
body may make any parser raise anything but a 400.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from unit.request_support import RUN, error, missing, parse, wrong_type

from ingest.entries import DatasetInputEntry, MetricEntry, ModelInputEntry, ParamEntry, TagEntry
from ingest.errors import MlflowError
from ingest.request_types import DeleteTag, LogInputs, LogMetric, LogParam, SetTag
from ingest.requests import PARSERS

# --- runs: metrics, params, tags ----------------------------------------------------------------


def test_log_metric() -> None:
    body = {
        "run_id": RUN,
        "key": "metric",
        "value": 0.5,
        "timestamp": 123456789,
        "step": 1,
        "dataset_name": "name",
        "dataset_digest": "digest",
        "model_id": "m-1",
    }
    assert parse("runs/log-metric", body) == LogMetric(
        run_id=RUN, metric=MetricEntry("metric", 0.5, 123456789, 1, "m-1", "name", "digest")
    )
    stepless = {"run_uuid": RUN, "key": "m", "value": 2, "timestamp": 0, "model_id": ""}
    assert parse("runs/log-metric", stepless).metric == MetricEntry("m", 2.0, 0, 0)


@pytest.mark.parametrize(
    ("given", "expected"),
    [("Infinity", math.inf), ("-Infinity", -math.inf), ("1.5", 1.5), (3, 3.0), (-0.25, -0.25)],
)
def test_log_metric_values(given: Any, expected: float) -> None:
    body = {"run_id": RUN, "key": "m", "value": given, "timestamp": 1}
    assert parse("runs/log-metric", body).metric.value == expected


def test_log_metric_nan() -> None:
    body = {"run_id": RUN, "key": "m", "value": "NaN", "timestamp": 1, "step": -3}
    metric = parse("runs/log-metric", body).metric
    assert math.isnan(metric.value)
    assert metric.step == -3


def test_log_metric_validation() -> None:
    path = "runs/log-metric"
    good = {"run_id": RUN, "key": "metric", "value": 41, "timestamp": 59, "step": 26}
    assert error(path, {**good, "key": 31}) == wrong_type("key", "31", "int")
    assert error(path, {**good, "step": "foo"}) == wrong_type("step", '"foo"', "str")
    assert error(path, {**good, "timestamp": "foo"}) == wrong_type("timestamp", '"foo"', "str")
    assert error(path, {**good, "key": None}) == missing("key")
    assert error(path, {k: v for k, v in good.items() if k != "key"}) == missing("key")
    assert error(path, {k: v for k, v in good.items() if k != "timestamp"}) == missing("timestamp")
    for value in (None, ""):
        assert error(path, {**good, "value": value}) == missing("value")
    assert error(path, {**good, "value": "abc"}) == wrong_type("value", '"abc"', "str")
    assert error(path, {**good, "value": True}) == wrong_type("value", "true", "bool")
    assert error(path, {**good, "timestamp": 1.5}) == wrong_type("timestamp", "1.5", "float")
    assert error(path, {**good, "timestamp": True}) == wrong_type("timestamp", "true", "bool")
    assert error(path, {**good, "timestamp": 2**63}) == wrong_type("timestamp", str(2**63), "int")
    assert error(path, {**good, "model_id": 5}) == wrong_type("model_id", "5", "int")


def test_log_metric_rules() -> None:
    path = "runs/log-metric"
    good = {"run_id": RUN, "key": "m", "value": 1, "timestamp": 0}
    assert error(path, {**good, "timestamp": -1}) == (
        "Invalid value -1 for parameter 'timestamp' supplied: metric 'm' (value=1.0). "
        "Timestamp must be a nonnegative long (64-bit integer) "
    )
    assert error(path, {**good, "key": "a$b"}).startswith(
        "Invalid value \"a$b\" for parameter 'name' supplied: Names may only contain"
    )
    assert error(path, {**good, "key": "x" * 251}) == (
        "'Metric name' exceeds the maximum length of 250 characters"
    )
    assert parse(path, {**good, "timestamp": "12"}).metric.timestamp == 12


def test_log_param() -> None:
    path = "runs/log-parameter"
    body = {"run_id": RUN, "run_uuid": RUN, "key": "param", "value": "value"}
    assert parse(path, body) == LogParam(run_id=RUN, param=ParamEntry("param", "value"))
    # MLflow stores "" for a log-parameter without a value.
    assert parse(path, {"run_id": RUN, "key": "p"}).param == ParamEntry("p", "")
    assert parse(path, {"run_id": RUN, "key": "p", "value": None}).param == ParamEntry("p", "")


def test_log_param_validation() -> None:
    path = "runs/log-parameter"
    assert error(path, {"run_id": 31, "key": "param", "value": 41}) == wrong_type(
        "run_id", "31", "int"
    )
    assert error(path, {"run_id": RUN, "key": 31, "value": 41}) == wrong_type("key", "31", "int")
    assert error(path, {"run_id": RUN, "key": "p", "value": 41}) == wrong_type("value", "41", "int")
    assert error(path, {"run_id": RUN, "key": "x" * 251}) == (
        "'Param key' exceeds the maximum length of 250 characters"
    )
    assert error(path, {"run_id": RUN, "key": "a/"}).startswith(
        "Invalid value \"a/\" for parameter 'key' supplied: Names may be treated as files"
    )


def test_long_param_values_are_truncated_unless_switched_off() -> None:
    body = {"run_id": RUN, "key": "p", "value": "v" * 6001}
    assert parse("runs/log-parameter", body).param.value == "v" * 6000
    assert error("runs/log-parameter", body, truncate_long_values=False) == (
        "'Param value' exceeds the maximum length of 6000 characters"
    )


def test_set_tag() -> None:
    path = "runs/set-tag"
    assert parse(path, {"run_uuid": RUN, "key": "key", "value": "value"}) == SetTag(
        run_id=RUN, tag=TagEntry("key", "value")
    )
    assert parse(path, {"run_id": RUN, "key": "tag_key", "value": ""}).tag == TagEntry(
        "tag_key", ""
    )
    assert parse(path, {"run_id": RUN, "key": "t"}).tag == TagEntry("t", "")


def test_set_tag_validation() -> None:
    path = "runs/set-tag"
    assert error(path, {"run_id": 31, "key": "tag", "value": 41}) == wrong_type(
        "run_id", "31", "int"
    )
    assert error(path, {"run_id": RUN, "key": "param", "value": 41}) == wrong_type(
        "value", "41", "int"
    )
    assert error(path, {"run_id": RUN, "value": "value"}) == missing("key")
    assert error(path, {"run_id": RUN, "key": "x" * 251}) == (
        "'key' exceeds the maximum length of 250 characters"
    )


def test_long_tag_values_are_truncated_unless_switched_off() -> None:
    body = {"run_id": RUN, "key": "t", "value": "v" * 8001}
    assert parse("runs/set-tag", body).tag.value == "v" * 8000
    assert error("runs/set-tag", body, truncate_long_values=False) == (
        "'value' exceeds the maximum length of 8000 characters"
    )


def test_delete_tag_does_not_check_the_key() -> None:
    assert parse("runs/delete-tag", {"run_id": RUN, "key": "a$b"}) == DeleteTag(
        run_id=RUN, key="a$b"
    )
    assert error("runs/delete-tag", {"run_id": RUN}) == missing("key")


# --- runs: log-inputs ---------------------------------------------------------------------------


def dataset(**overrides: Any) -> dict[str, Any]:
    return {"name": "d", "digest": "x", "source_type": "local", "source": "s", **overrides}


def test_log_inputs() -> None:
    body = {
        "run_id": RUN,
        "datasets": [
            {
                "tags": [{"key": "mlflow.data.context", "value": "train"}, {"key": "k"}],
                "dataset": dataset(schema="{}", profile='{"rows": 3}'),
            },
            {},
        ],
        "models": [{"model_id": "m-1"}, {}],
    }
    assert parse("runs/log-inputs", body) == LogInputs(
        run_id=RUN,
        datasets=(
            DatasetInputEntry(
                "d",
                "x",
                "local",
                "s",
                "{}",
                '{"rows": 3}',
                (TagEntry("mlflow.data.context", "train"), TagEntry("k", "")),
            ),
            DatasetInputEntry("", "", "", ""),
        ),
        models=(ModelInputEntry("m-1"), ModelInputEntry("")),
    )
    assert parse("runs/log-inputs", {"run_id": RUN}) == LogInputs(run_id=RUN)


@pytest.mark.parametrize(
    ("field", "limit"),
    [
        ("name", 500),
        ("digest", 36),
        ("source", 65535),
        ("schema", 1048575),
        ("profile", 16777215),
    ],
)
def test_log_inputs_dataset_limits(field: str, limit: int) -> None:
    at_limit = {"run_id": RUN, "datasets": [{"dataset": dataset(**{field: "x" * limit})}]}
    assert len(getattr(parse("runs/log-inputs", at_limit).datasets[0], field)) == limit
    over = {"run_id": RUN, "datasets": [{"dataset": dataset(**{field: "x" * (limit + 1)})}]}
    assert error("runs/log-inputs", over) == (
        f"'{field}' exceeds the maximum length of {limit} characters"
    )


@pytest.mark.parametrize(("field", "limit"), [("key", 255), ("value", 500)])
def test_log_inputs_input_tag_limits(field: str, limit: int) -> None:
    tag = {"key": "k", "value": "v", field: "x" * (limit + 1)}
    body = {"run_id": RUN, "datasets": [{"tags": [tag], "dataset": dataset()}]}
    assert error("runs/log-inputs", body) == (
        f"'{field}' exceeds the maximum length of {limit} characters"
    )


def test_log_inputs_validation() -> None:
    path = "runs/log-inputs"
    assert error(path, {"run_id": RUN, "datasets": "x"}) == wrong_type("datasets", '"x"', "str")
    assert error(path, {"run_id": RUN, "models": [5]}) == wrong_type("models[0]", "5", "int")
    body = {"run_id": RUN, "datasets": [{"dataset": 5}]}
    assert error(path, body) == wrong_type("datasets[0].dataset", "5", "int")
    body = {"run_id": RUN, "datasets": [{"dataset": dataset(name=5)}]}
    assert error(path, body) == wrong_type("datasets[0].dataset.name", "5", "int")
    body = {"run_id": RUN, "datasets": [{"tags": [{"key": 1}], "dataset": dataset()}]}
    assert error(path, body) == wrong_type("datasets[0].tags[0].key", "1", "int")


# --- robustness ---------------------------------------------------------------------------------

FIELD_NAMES = [
    "run_id",
    "run_uuid",
    "experiment_id",
    "name",
    "new_name",
    "artifact_location",
    "key",
    "value",
    "timestamp",
    "step",
    "status",
    "end_time",
    "start_time",
    "run_name",
    "user_id",
    "model_id",
    "dataset_name",
    "dataset_digest",
    "digest",
    "source",
    "schema",
    "dataset",
]
LIST_NAMES = ["tags", "metrics", "params", "datasets", "models"]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=6),
    st.sampled_from([RUN, "1", "NaN", "FINISHED", "mlflow.runName", "a/b", "", "-1"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=8,
)
objects = st.dictionaries(st.sampled_from(FIELD_NAMES), json_values, max_size=6)
bodies = st.dictionaries(
    st.sampled_from(FIELD_NAMES + LIST_NAMES),
    st.one_of(json_values, st.lists(objects, max_size=3)),
    max_size=8,
)


def outcome(path: str, body: Any, truncate: bool) -> tuple[int, str]:
    try:
        parse(path, body, truncate_long_values=truncate)
    except MlflowError as err:
        return err.http_status, err.error_code
    return 200, ""


# Where MLflow reads run_id alone and looks the run up, a run_uuid alone finds no run "".
LOOKED_UP = {"runs/delete", "runs/restore", "runs/delete-tag"}


@given(st.sampled_from(sorted(PARSERS)), bodies, st.booleans())
def test_any_json_body_parses_or_raises_a_400(path: str, body: Any, truncate: bool) -> None:
    allowed = {(200, ""), (400, "INVALID_PARAMETER_VALUE"), (400, "BAD_REQUEST")}
    run_uuid = body.get("run_uuid")
    if path in LOOKED_UP and body.get("run_id") is None and isinstance(run_uuid, str) and run_uuid:
        allowed.add((404, "RESOURCE_DOES_NOT_EXIST"))  # when the other fields pass
    assert outcome(path, body, truncate) in allowed
