"""Unit tests for ingest.requests: rules shared by every endpoint, experiments and run lifecycle.

Error texts are MLflow 3.17's, recorded by driving its server in-process, and the cases port
tests/tracking/test_rest_tracking.py (*_validation tests) and tests/utils/test_validation.py.
Logging endpoints are in test_requests_logging.py, log-batch in test_requests_batch.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from unit.request_support import RUN, error, missing, parse, wrong_type

from ingest.entries import TagEntry
from ingest.errors import MlflowError
from ingest.request_types import (
    CreateExperiment,
    CreateRun,
    DeleteExperiment,
    DeleteExperimentTag,
    DeleteRun,
    RestoreExperiment,
    RestoreRun,
    SetExperimentTag,
    UpdateExperiment,
    UpdateRun,
)
from ingest.requests import PARSERS

RUN_ENDPOINTS = [path for path in PARSERS if path.startswith("runs/") and path != "runs/create"]
EXPERIMENT_ENDPOINTS = [
    path for path in PARSERS if path.startswith("experiments/") and path != "experiments/create"
]
# The smallest valid body of each endpoint, without its id.
MINIMAL: dict[str, dict[str, Any]] = {
    "experiments/update": {"new_name": "n"},
    "experiments/delete": {},
    "experiments/restore": {},
    "experiments/set-experiment-tag": {"key": "k"},
    "experiments/delete-experiment-tag": {"key": "k"},
    "runs/update": {},
    "runs/delete": {},
    "runs/restore": {},
    "runs/log-metric": {"key": "m", "value": 1.0, "timestamp": 0},
    "runs/log-parameter": {"key": "p"},
    "runs/set-tag": {"key": "t"},
    "runs/delete-tag": {"key": "t"},
    "runs/log-batch": {},
    "runs/log-inputs": {},
}


# --- common to every endpoint -------------------------------------------------------------------


def test_parsers_cover_every_write_endpoint() -> None:
    assert set(PARSERS) == {
        "experiments/create",
        "experiments/update",
        "experiments/delete",
        "experiments/restore",
        "experiments/set-experiment-tag",
        "experiments/delete-experiment-tag",
        "runs/create",
        "runs/update",
        "runs/delete",
        "runs/restore",
        "runs/log-metric",
        "runs/log-parameter",
        "runs/set-tag",
        "runs/delete-tag",
        "runs/log-batch",
        "runs/log-inputs",
    }


@pytest.mark.parametrize("path", list(PARSERS))
@pytest.mark.parametrize("body", [[], "x", None, 5])
def test_a_body_that_is_not_an_object_is_rejected(path: str, body: Any) -> None:
    assert "for parameter 'body' supplied" in error(path, body)


@pytest.mark.parametrize("path", RUN_ENDPOINTS)
def test_run_endpoints_need_a_run_id(path: str) -> None:
    assert error(path, MINIMAL[path]) == missing("run_id")
    assert error(path, {**MINIMAL[path], "run_id": ""}) == missing("run_id")
    assert error(path, {**MINIMAL[path], "run_id": None}) == missing("run_id")


@pytest.mark.parametrize("path", RUN_ENDPOINTS)
def test_run_endpoints_reject_a_run_id_of_the_wrong_type(path: str) -> None:
    assert error(path, {**MINIMAL[path], "run_id": 31}) == wrong_type("run_id", "31", "int")


@pytest.mark.parametrize("path", RUN_ENDPOINTS)
def test_run_endpoints_reject_a_malformed_run_id(path: str) -> None:
    message = error(path, {**MINIMAL[path], "run_id": "bad/id"})
    assert message == "Invalid value \"bad/id\" for parameter 'run_id' supplied."


# MLflow's handlers that read `run_id or run_uuid`; the others read run_id alone.
RUN_UUID_READ = ["runs/update", "runs/log-metric", "runs/log-parameter", "runs/set-tag"]


def test_the_run_uuid_endpoints_are_run_endpoints() -> None:
    assert set(RUN_UUID_READ) < set(RUN_ENDPOINTS)


@pytest.mark.parametrize("path", RUN_UUID_READ)
def test_run_endpoints_fall_back_to_run_uuid(path: str) -> None:
    assert parse(path, {**MINIMAL[path], "run_uuid": RUN}).run_id == RUN
    assert parse(path, {**MINIMAL[path], "run_id": RUN, "run_uuid": "other"}).run_id == RUN


@pytest.mark.parametrize(
    ("path", "code", "message"),
    [
        ("runs/delete", "RESOURCE_DOES_NOT_EXIST", "Run with id= not found"),
        ("runs/restore", "RESOURCE_DOES_NOT_EXIST", "Run with id= not found"),
        ("runs/delete-tag", "RESOURCE_DOES_NOT_EXIST", "Run with id= not found"),
        (
            "runs/log-batch",
            "INVALID_PARAMETER_VALUE",
            "Invalid value \"\" for parameter 'run_id' supplied.",
        ),
        (
            "runs/log-inputs",
            "INVALID_PARAMETER_VALUE",
            "Invalid value \"\" for parameter 'run_id' supplied.",
        ),
    ],
)
def test_other_run_endpoints_fail_on_run_uuid_as_mlflow_does(
    path: str, code: str, message: str
) -> None:
    """MLflow's schema check takes run_uuid for these too, but the handler then works on run
    "": a run_uuid alone must not delete, restore or write to the run it names."""
    assert path in RUN_ENDPOINTS
    assert path not in RUN_UUID_READ
    with pytest.raises(MlflowError) as info:
        parse(path, {**MINIMAL[path], "run_uuid": RUN})
    assert (info.value.error_code, info.value.message) == (code, message)
    assert parse(path, {**MINIMAL[path], "run_id": RUN, "run_uuid": "other"}).run_id == RUN


@pytest.mark.parametrize("path", ["runs/delete-tag", "runs/log-batch"])
def test_run_uuid_in_place_of_run_id_still_meets_the_schema_check_first(path: str) -> None:
    """MLflow checks every field before its handler looks for run "": a bad field is a 400."""
    body = {**MINIMAL[path], "run_uuid": RUN}
    if path == "runs/delete-tag":
        assert error(path, {"run_uuid": RUN}) == missing("key")
    else:
        assert "for parameter 'metrics' supplied" in error(path, {**body, "metrics": 5})
    assert "for parameter 'run_id' supplied" in error(path, {**MINIMAL[path], "run_uuid": 7})


@pytest.mark.parametrize("path", RUN_ENDPOINTS)
def test_run_endpoints_ignore_unknown_fields(path: str) -> None:
    assert parse(path, {**MINIMAL[path], "run_id": RUN, "WHAT IS THIS": 1}).run_id == RUN


@pytest.mark.parametrize("path", EXPERIMENT_ENDPOINTS)
def test_experiment_endpoints_need_an_integer_experiment_id(path: str) -> None:
    body = MINIMAL[path]
    assert error(path, body) == missing("experiment_id")
    assert error(path, {**body, "experiment_id": ""}) == missing("experiment_id")
    assert error(path, {**body, "experiment_id": 5}) == wrong_type("experiment_id", "5", "int")
    assert error(path, {**body, "experiment_id": "abc"}) == (
        "Invalid experiment ID 'abc'. Experiment ID must be a valid integer."
    )
    assert parse(path, {**body, "experiment_id": "007"}).experiment_id == "7"


@pytest.mark.parametrize("path", list(PARSERS))
def test_every_parser_takes_the_truncation_switch(path: str) -> None:
    body = {**MINIMAL.get(path, {}), "run_id": RUN, "experiment_id": "1", "name": "n"}
    assert parse(path, body, truncate_long_values=False) == parse(path, body)


# --- experiments --------------------------------------------------------------------------------


def test_create_experiment() -> None:
    body = {
        "name": "My Experiment",
        "artifact_location": "my_location",
        "tags": [{"key": "key1", "value": "val1"}, {"key": "key2"}],
    }
    assert parse("experiments/create", body) == CreateExperiment(
        name="My Experiment",
        artifact_location="my_location",
        tags=(TagEntry("key1", "val1"), TagEntry("key2", "")),
    )
    assert parse("experiments/create", {"name": "e", "artifact_location": ""}) == CreateExperiment(
        name="e"
    )


def test_create_experiment_validation() -> None:
    path = "experiments/create"
    assert error(path, {"name": 123}) == wrong_type("name", "123", "int")
    assert error(path, {}) == missing("name")
    assert error(path, {"name": ""}) == missing("name")
    body = {"name": "experiment name", "artifact_location": 9.0}
    assert error(path, body) == wrong_type("artifact_location", "9.0", "float")
    assert error(path, {"name": "e", "tags": "5"}) == wrong_type("tags", '"5"', "str")
    assert error(path, {"name": "   "}) == "Invalid experiment name: '   '"
    assert error(path, {"name": "n" * 501}) == (
        "'name' exceeds the maximum length of 500 characters"
    )
    assert parse(path, {"name": "n" * 500}).name == "n" * 500
    assert error(path, {"name": "e", "artifact_location": "runs:/x"}).startswith(
        "Artifact location cannot be a runs:/ URI"
    )


def test_create_experiment_checks_tags_as_experiment_tags() -> None:
    path = "experiments/create"
    bad_key = error(path, {"name": "e", "tags": [{"key": "a$b", "value": "v"}]})
    assert bad_key.startswith("Invalid value \"a$b\" for parameter 'key' supplied: Names may only")
    assert error(path, {"name": "e", "tags": [{"value": "v"}]}).endswith(
        "This name would resolve to '.'"
    )
    long_value = {"name": "e", "tags": [{"key": "k", "value": "v" * 20001}]}
    assert error(path, long_value) == "'value' exceeds the maximum length of 20000 characters"
    assert error(path, {"name": "e", "tags": [5]}) == wrong_type("tags[0]", "5", "int")
    assert error(path, {"name": "e", "tags": [{"key": 5}]}) == wrong_type("tags[0].key", "5", "int")


def test_update_experiment() -> None:
    path = "experiments/update"
    body = {"experiment_id": "1", "new_name": "GoodName"}
    assert parse(path, body) == UpdateExperiment(experiment_id="1", new_name="GoodName")
    assert error(path, {"experiment_id": "1"}) == missing("new_name")
    assert error(path, {"experiment_id": "1", "new_name": ""}) == missing("new_name")
    assert error(path, {"experiment_id": "1", "new_name": "n" * 501}) == (
        "'name' exceeds the maximum length of 500 characters"
    )


def test_delete_and_restore_experiment() -> None:
    assert parse("experiments/delete", {"experiment_id": "0"}) == DeleteExperiment(
        experiment_id="0"
    )
    assert parse("experiments/restore", {"experiment_id": "3"}) == RestoreExperiment(
        experiment_id="3"
    )


def test_set_experiment_tag() -> None:
    path = "experiments/set-experiment-tag"
    body = {"experiment_id": "1", "key": "multiline tag", "value": "v2\nv2"}
    assert parse(path, body) == SetExperimentTag(
        experiment_id="1", tag=TagEntry("multiline tag", "v2\nv2")
    )
    assert parse(path, {"experiment_id": "1", "key": "k"}).tag == TagEntry("k", "")
    assert error(path, {"experiment_id": "1", "value": "v"}) == missing("key")
    assert error(path, {"experiment_id": "1", "key": "k", "value": 5}) == wrong_type(
        "value", "5", "int"
    )
    assert error(path, {"experiment_id": "1", "key": "a/"}).endswith(
        "This name would resolve to 'a'"
    )
    assert error(path, {"experiment_id": "1", "key": "k" * 251}) == (
        "'key' exceeds the maximum length of 250 characters"
    )


def test_experiment_tag_values_are_never_truncated() -> None:
    body = {"experiment_id": "1", "key": "k", "value": "v" * 20001}
    for truncate in (True, False):
        assert error("experiments/set-experiment-tag", body, truncate_long_values=truncate) == (
            "'value' exceeds the maximum length of 20000 characters"
        )
    body["value"] = "v" * 20000
    assert parse("experiments/set-experiment-tag", body).tag.value == "v" * 20000


def test_delete_experiment_tag_does_not_check_the_key() -> None:
    path = "experiments/delete-experiment-tag"
    body = {"experiment_id": "1", "key": "a$b"}
    assert parse(path, body) == DeleteExperimentTag(experiment_id="1", key="a$b")
    assert error(path, {"experiment_id": "1"}) == missing("key")


# --- runs: create, update, delete, restore ----------------------------------------------------


def test_create_run() -> None:
    body = {
        "experiment_id": "1",
        "user_id": "username",
        "run_name": "my name",
        "start_time": 456,
        "tags": [{"key": "mlflow.runName", "value": "my name"}, {"key": "my", "value": "tag"}],
    }
    assert parse("runs/create", body) == CreateRun(
        experiment_id="1",
        user_id="username",
        run_name="my name",
        start_time=456,
        tags=(TagEntry("mlflow.runName", "my name"), TagEntry("my", "tag")),
    )
    assert parse("runs/create", {"experiment_id": "0"}) == CreateRun(experiment_id="0")


def test_create_run_without_an_experiment_is_a_bad_request() -> None:
    for body in ({}, {"experiment_id": ""}, {"experiment_id": None}):
        assert error("runs/create", body, code="BAD_REQUEST") == missing("experiment_id")


def test_create_run_validation() -> None:
    path = "runs/create"
    assert error(path, {"experiment_id": 5}) == wrong_type("experiment_id", "5", "int")
    assert error(path, {"experiment_id": "abc"}) == (
        "Invalid experiment ID 'abc'. Experiment ID must be a valid integer."
    )
    body = {"experiment_id": "1", "start_time": "abc"}
    assert error(path, body) == wrong_type("start_time", '"abc"', "str")
    assert error(path, {"experiment_id": "1", "start_time": True}) == wrong_type(
        "start_time", "true", "bool"
    )
    assert error(path, {"experiment_id": "1", "run_name": 5}) == wrong_type("run_name", "5", "int")
    assert error(path, {"experiment_id": "1", "user_id": 5}) == wrong_type("user_id", "5", "int")
    assert error(path, {"experiment_id": "1", "tags": "x"}) == wrong_type("tags", '"x"', "str")


def test_create_run_start_time_is_an_int64_from_number_or_text() -> None:
    for sent, expected in (("123", 123), (-5, -5), (7.0, 7), ("1e3", 1000)):
        body = {"experiment_id": "1", "start_time": sent}
        assert parse("runs/create", body).start_time == expected


def test_create_run_name_must_agree_with_the_run_name_tag() -> None:
    tags = [{"key": "mlflow.runName", "value": "b"}]
    assert error("runs/create", {"experiment_id": "1", "run_name": "a", "tags": tags}) == (
        "Both 'run_name' argument and 'mlflow.runName' tag are specified, but with different "
        "values (run_name='a', mlflow.runName='b')."
    )
    created = parse("runs/create", {"experiment_id": "1", "run_name": "", "tags": tags})
    assert created.run_name is None
    assert created.tags == (TagEntry("mlflow.runName", "b"),)


def test_create_run_takes_tags_unvalidated() -> None:
    tags = [{"key": "a$b", "value": "v" * 9000}, {"value": "no key"}]
    created = parse("runs/create", {"experiment_id": "1", "tags": tags})
    assert created.tags == (TagEntry("a$b", "v" * 9000), TagEntry("", "no key"))


def test_update_run() -> None:
    path = "runs/update"
    body = {"run_id": RUN, "status": "FINISHED", "end_time": 7, "run_name": "r"}
    assert parse(path, body) == UpdateRun(run_id=RUN, status="FINISHED", end_time=7, run_name="r")
    assert parse(path, {"run_uuid": RUN}) == UpdateRun(run_id=RUN)
    assert parse(path, {"run_id": RUN, "end_time": "7"}).end_time == 7
    assert parse(path, {"run_id": RUN, "end_time": -5}).end_time == -5
    assert parse(path, {"run_id": RUN, "run_name": ""}).run_name is None


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("RUNNING", "RUNNING"),
        ("SCHEDULED", "SCHEDULED"),
        ("FINISHED", "FINISHED"),
        ("FAILED", "FAILED"),
        ("KILLED", "KILLED"),
        (1, "RUNNING"),
        (5, "KILLED"),
        ("3", "FINISHED"),
        ("BOGUS", None),
        ("finished", None),
        ("", None),
        ("99", None),
    ],
)
def test_update_run_status(status: Any, expected: str | None) -> None:
    assert parse("runs/update", {"run_id": RUN, "status": status}).status == expected


def test_update_run_validation() -> None:
    path = "runs/update"
    assert error(path, {"run_id": RUN, "status": 99}) == wrong_type("status", "99", "int")
    assert error(path, {"run_id": RUN, "status": 0}) == wrong_type("status", "0", "int")
    assert error(path, {"run_id": RUN, "status": True}) == wrong_type("status", "true", "bool")
    assert error(path, {"run_id": RUN, "status": 3.0}) == wrong_type("status", "3.0", "float")
    assert error(path, {"run_id": RUN, "end_time": "x"}) == wrong_type("end_time", '"x"', "str")
    assert error(path, {"run_id": RUN, "end_time": True}) == wrong_type("end_time", "true", "bool")
    assert error(path, {"run_id": RUN, "run_name": 5}) == wrong_type("run_name", "5", "int")


def test_delete_and_restore_run() -> None:
    assert parse("runs/delete", {"run_id": RUN}) == DeleteRun(run_id=RUN)
    assert parse("runs/restore", {"run_id": RUN}) == RestoreRun(run_id=RUN)
