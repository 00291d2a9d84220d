"""Parse and validate the bodies of MLflow's tracking write endpoints into typed requests.

Each `parse_*` function takes the decoded JSON body and returns a frozen Struct whose fields are
normalised (run_id read from `run_id` or `run_uuid`, int64 and doubles coerced, enums as names,
"" for absent strings where MLflow stores "") or raises `MlflowError` with MLflow's code and text.
A parse function validates the whole request before returning, so a rejected batch yields
nothing. `PARSERS` maps each endpoint's path suffix to its function.
"""

from __future__ import annotations

from typing import Any, Final

from ingest import entries
from ingest.entries import ParamEntry, TagEntry
from ingest.errors import does_not_exist, invalid_parameter
from ingest.fields import (
    Field,
    as_int64,
    as_list,
    as_optional_string,
    as_run_status,
    as_string,
    read,
    type_error,
)
from ingest.request_types import (
    Body,
    CreateExperiment,
    CreateRun,
    DeleteExperiment,
    DeleteExperimentTag,
    DeleteRun,
    DeleteTag,
    LogBatch,
    LogInputs,
    LogMetric,
    LogParam,
    Parser,
    RestoreExperiment,
    RestoreRun,
    SetExperimentTag,
    SetTag,
    UpdateExperiment,
    UpdateRun,
)
from ingest.validation import (
    RUN_NAME_TAG,
    check_artifact_location,
    check_batch_limits,
    check_experiment_name,
    check_run_id,
    check_run_name_matches_tag,
    invalid_value,
    missing_experiment_id,
    normalize_experiment_id,
)

# --- field tables -----------------------------------------------------------------------------


# A check takes (value, path); these two report fixed texts, so they drop the path.
def _experiment_id(value: str, _path: str) -> str:
    return normalize_experiment_id(value)


def _experiment_name(value: str, _path: str) -> str:
    return check_experiment_name(value)


# MLflow's handlers for update, log-metric, log-parameter and set-tag read `run_id or run_uuid`;
# the others read run_id alone (see `_read_run_id_alone`).
_RUN_ID: Final = Field("run_id", as_string, required=True, check=check_run_id, fallback="run_uuid")
_RUN_ID_ALONE: Final = Field("run_id", as_string, required=True, check=check_run_id)
_EXPERIMENT_ID: Final = Field("experiment_id", as_string, required=True, check=_experiment_id)
_KEY: Final = Field("key", as_string, required=True)

_CREATE_EXPERIMENT: Final = (
    Field("name", as_string, required=True, check=_experiment_name),
    Field("artifact_location", as_optional_string, check=check_artifact_location),
    Field("tags", as_list),
)
_UPDATE_EXPERIMENT: Final = (
    _EXPERIMENT_ID,
    Field("new_name", as_string, required=True, check=_experiment_name),
)
_EXPERIMENT_ONLY: Final = (_EXPERIMENT_ID,)
_SET_EXPERIMENT_TAG: Final = (
    _EXPERIMENT_ID,
    entries.EXPERIMENT_TAG_FIELDS[0]._replace(required=True),
    entries.EXPERIMENT_TAG_FIELDS[1],
)
_DELETE_EXPERIMENT_TAG: Final = (_EXPERIMENT_ID, _KEY)
_CREATE_RUN: Final = (
    # Optional in the table: MLflow answers BAD_REQUEST, not the schema's 400, when it is missing.
    Field("experiment_id", as_optional_string, check=_experiment_id),
    Field("user_id", as_string, default=""),
    Field("run_name", as_optional_string),
    Field("start_time", as_int64, default=0),
    Field("tags", as_list),
)
_UPDATE_RUN: Final = (
    _RUN_ID,
    Field("status", as_run_status),
    Field("end_time", as_int64),
    # MLflow leaves the name alone when run_name is "", so "" reads as "not given".
    Field("run_name", as_optional_string),
)
_RUN_ONLY: Final = (_RUN_ID_ALONE,)
_LOG_METRIC: Final = (_RUN_ID, *entries.METRIC_FIELDS)
# Indexed by truncate_long_values, like the entry tables they extend.
_LOG_PARAM: Final = {flag: (_RUN_ID, *fields) for flag, fields in entries.PARAM_FIELDS.items()}
_SET_TAG: Final = {flag: (_RUN_ID, *fields) for flag, fields in entries.RUN_TAG_FIELDS.items()}
_DELETE_TAG: Final = (_RUN_ID_ALONE, _KEY)
_LOG_BATCH: Final = (
    _RUN_ID_ALONE,
    Field("metrics", as_list),
    Field("params", as_list),
    Field("tags", as_list),
)
_LOG_INPUTS: Final = (_RUN_ID_ALONE, Field("datasets", as_list), Field("models", as_list))


def _object(body: Any) -> dict[str, Any]:
    if type(body) is not dict:
        raise type_error("body", body)
    return body


def _read_run_id_alone(body: Any, fields: tuple[Field, ...], *, looked_up: bool) -> list[Any]:
    """Read a request whose MLflow handler reads `run_id` alone. MLflow's schema check still
    takes a `run_uuid` for a missing `run_id` (and checks every field); the handler then works
    on run "" and fails: not found where it looks the run up, else a bad run_id."""
    values = _object(body)
    fallback = values.get("run_uuid")
    if values.get("run_id") is None and fallback is not None:
        read({**values, "run_id": fallback}, fields)  # the schema check, with run_uuid
        if looked_up:
            raise does_not_exist("Run with id= not found")
        raise invalid_parameter(invalid_value("run_id", ""))
    return read(values, fields)


# --- experiments --------------------------------------------------------------------------------


def parse_create_experiment(body: Body, *, truncate_long_values: bool = True) -> CreateExperiment:
    """Parse experiments/create: name (non-blank, <=500), artifact_location, tags."""
    name, location, tags = read(_object(body), _CREATE_EXPERIMENT)
    return CreateExperiment(
        name=name, artifact_location=location, tags=entries.experiment_tags(tags)
    )


def parse_update_experiment(body: Body, *, truncate_long_values: bool = True) -> UpdateExperiment:
    """Parse experiments/update: experiment_id and new_name."""
    experiment_id, new_name = read(_object(body), _UPDATE_EXPERIMENT)
    return UpdateExperiment(experiment_id=experiment_id, new_name=new_name)


def parse_delete_experiment(body: Body, *, truncate_long_values: bool = True) -> DeleteExperiment:
    """Parse experiments/delete: experiment_id."""
    (experiment_id,) = read(_object(body), _EXPERIMENT_ONLY)
    return DeleteExperiment(experiment_id=experiment_id)


def parse_restore_experiment(body: Body, *, truncate_long_values: bool = True) -> RestoreExperiment:
    """Parse experiments/restore: experiment_id."""
    (experiment_id,) = read(_object(body), _EXPERIMENT_ONLY)
    return RestoreExperiment(experiment_id=experiment_id)


def parse_set_experiment_tag(body: Body, *, truncate_long_values: bool = True) -> SetExperimentTag:
    """Parse experiments/set-experiment-tag; values over 20000 characters are never truncated."""
    experiment_id, key, value = read(_object(body), _SET_EXPERIMENT_TAG)
    return SetExperimentTag(experiment_id=experiment_id, tag=TagEntry(key, value))


def parse_delete_experiment_tag(
    body: Body, *, truncate_long_values: bool = True
) -> DeleteExperimentTag:
    """Parse experiments/delete-experiment-tag; the key is not checked (MLflow answers 404)."""
    experiment_id, key = read(_object(body), _DELETE_EXPERIMENT_TAG)
    return DeleteExperimentTag(experiment_id=experiment_id, key=key)


# --- runs ---------------------------------------------------------------------------------------


def parse_create_run(body: Body, *, truncate_long_values: bool = True) -> CreateRun:
    """Parse runs/create; its tags are taken as sent, unvalidated, as MLflow's server does."""
    experiment_id, user_id, run_name, start_time, raw_tags = read(_object(body), _CREATE_RUN)
    if experiment_id is None:
        raise missing_experiment_id()
    tags = entries.unchecked_tags(raw_tags)
    name_tag = next((tag.value for tag in tags if tag.key == RUN_NAME_TAG), None)
    check_run_name_matches_tag(run_name, name_tag)
    return CreateRun(
        experiment_id=experiment_id,
        user_id=user_id,
        run_name=run_name,
        start_time=start_time,
        tags=tags,
    )


def parse_update_run(body: Body, *, truncate_long_values: bool = True) -> UpdateRun:
    """Parse runs/update; an unknown status name is ignored, as MLflow's server does."""
    run_id, status, end_time, run_name = read(_object(body), _UPDATE_RUN)
    return UpdateRun(run_id=run_id, status=status, end_time=end_time, run_name=run_name)


def parse_delete_run(body: Body, *, truncate_long_values: bool = True) -> DeleteRun:
    """Parse runs/delete: run_id."""
    (run_id,) = _read_run_id_alone(body, _RUN_ONLY, looked_up=True)
    return DeleteRun(run_id=run_id)


def parse_restore_run(body: Body, *, truncate_long_values: bool = True) -> RestoreRun:
    """Parse runs/restore: run_id."""
    (run_id,) = _read_run_id_alone(body, _RUN_ONLY, looked_up=True)
    return RestoreRun(run_id=run_id)


def parse_log_metric(body: Body, *, truncate_long_values: bool = True) -> LogMetric:
    """Parse runs/log-metric: key, value, timestamp (>=0), step (default 0), model/dataset ids."""
    run_id, *values = read(_object(body), _LOG_METRIC)
    return LogMetric(run_id=run_id, metric=entries.metric_entry(values, ""))


def parse_log_param(body: Body, *, truncate_long_values: bool = True) -> LogParam:
    """Parse runs/log-parameter; a missing value means "" and long values are truncated."""
    run_id, key, value = read(_object(body), _LOG_PARAM[truncate_long_values])
    return LogParam(run_id=run_id, param=ParamEntry(key, value))


def parse_set_tag(body: Body, *, truncate_long_values: bool = True) -> SetTag:
    """Parse runs/set-tag; a missing value means "" and long values are truncated."""
    run_id, key, value = read(_object(body), _SET_TAG[truncate_long_values])
    return SetTag(run_id=run_id, tag=TagEntry(key, value))


def parse_delete_tag(body: Body, *, truncate_long_values: bool = True) -> DeleteTag:
    """Parse runs/delete-tag; the key is not checked (MLflow answers 404 for a bad one)."""
    run_id, key = _read_run_id_alone(body, _DELETE_TAG, looked_up=True)
    return DeleteTag(run_id=run_id, key=key)


def parse_log_batch(body: Body, *, truncate_long_values: bool = True) -> LogBatch:
    """Parse runs/log-batch; every entry is validated before anything is returned."""
    run_id, raw_metrics, raw_params, raw_tags = _read_run_id_alone(
        body, _LOG_BATCH, looked_up=False
    )
    raw_metrics, raw_params, raw_tags = raw_metrics or [], raw_params or [], raw_tags or []
    # Limits first: they are cheap, and an oversized batch should not cost a full validation.
    check_batch_limits(len(raw_metrics), len(raw_params), len(raw_tags))
    return LogBatch(
        run_id=run_id,
        metrics=entries.metrics(raw_metrics),
        params=entries.params(raw_params, truncate_long_values),
        tags=entries.run_tags(raw_tags, truncate_long_values),
    )


def parse_log_inputs(body: Body, *, truncate_long_values: bool = True) -> LogInputs:
    """Parse runs/log-inputs: dataset inputs (with MLflow's size limits) and model inputs."""
    run_id, raw_datasets, raw_models = _read_run_id_alone(body, _LOG_INPUTS, looked_up=False)
    return LogInputs(
        run_id=run_id,
        datasets=entries.dataset_inputs(raw_datasets),
        models=entries.model_inputs(raw_models),
    )


PARSERS: Final[dict[str, Parser]] = {
    "experiments/create": parse_create_experiment,
    "experiments/update": parse_update_experiment,
    "experiments/delete": parse_delete_experiment,
    "experiments/restore": parse_restore_experiment,
    "experiments/set-experiment-tag": parse_set_experiment_tag,
    "experiments/delete-experiment-tag": parse_delete_experiment_tag,
    "runs/create": parse_create_run,
    "runs/update": parse_update_run,
    "runs/delete": parse_delete_run,
    "runs/restore": parse_restore_run,
    "runs/log-metric": parse_log_metric,
    "runs/log-parameter": parse_log_param,
    "runs/set-tag": parse_set_tag,
    "runs/delete-tag": parse_delete_tag,
    "runs/log-batch": parse_log_batch,
    "runs/log-inputs": parse_log_inputs,
}
