"""Define the metric, param, tag and input entries that requests carry, and read lists of them.

The entry Structs are what the event-building code consumes, for single and batch endpoints
alike. `metrics` is the ingest hot path (log-batch carries up to 1000 metrics): entries of the
common shape are checked inline, and a key already seen in the request is not checked again;
anything unusual falls through to the generic table reader, which reports MLflow's exact error.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from ingest.conventions import renames_to_nothing
from ingest.fields import (
    SPECIAL_DOUBLES,
    Check,
    Field,
    as_double,
    as_int64,
    as_list,
    as_object,
    as_optional_string,
    as_string,
    read,
    read_each,
    type_error,
)
from ingest.validation import (
    INT64_MAX,
    INT64_MIN,
    MAX_DATASET_DIGEST_SIZE,
    MAX_DATASET_NAME_SIZE,
    MAX_DATASET_PROFILE_SIZE,
    MAX_DATASET_SCHEMA_SIZE,
    MAX_DATASET_SOURCE_SIZE,
    MAX_ENTITY_KEY_LENGTH,
    MAX_EXPERIMENT_TAG_KEY_LENGTH,
    MAX_EXPERIMENT_TAG_VAL_LENGTH,
    MAX_INPUT_TAG_KEY_SIZE,
    MAX_INPUT_TAG_VALUE_SIZE,
    MAX_PARAM_VAL_LENGTH,
    MAX_TAG_VAL_LENGTH,
    check_key,
    check_length,
    check_metric_timestamp,
    check_param_keys_unique,
    is_valid_key,
    limit_length,
)


class MetricEntry(msgspec.Struct, frozen=True, gc=False):
    """One metric point; NaN and +/-inf are valid values."""

    key: str
    value: float
    timestamp: int
    step: int = 0
    model_id: str | None = None
    dataset_name: str | None = None
    dataset_digest: str | None = None


class ParamEntry(msgspec.Struct, frozen=True, gc=False):
    """One param; its value is already cut to MLflow's limit when truncation is on."""

    key: str
    value: str


class TagEntry(msgspec.Struct, frozen=True, gc=False):
    """One tag of a run, an experiment or a dataset input."""

    key: str
    value: str


class DatasetInputEntry(msgspec.Struct, frozen=True, gc=False):
    """One dataset a run consumed, with its input tags (e.g. mlflow.data.context)."""

    name: str
    digest: str
    source_type: str
    source: str
    schema: str | None = None
    profile: str | None = None
    tags: tuple[TagEntry, ...] = ()


class ModelInputEntry(msgspec.Struct, frozen=True, gc=False):
    """One logged model a run consumed."""

    model_id: str


def _key_rule(
    *, path: str = "", length_label: str = "", limit: int = MAX_ENTITY_KEY_LENGTH
) -> Check:
    # MLflow names the field differently per endpoint and per check ("name" for a metric's
    # charset error, "Metric name" for its length error): empty arguments mean "the field's path".
    def check(key: str, field_path: str) -> str:
        check_key(key, path or field_path)
        return check_length(key, length_label or path or field_path, limit)

    return check


def _value_rule(limit: int, *, label: str = "", truncate: bool = False) -> Check:
    def check(value: str, field_path: str) -> str:
        return limit_length(value, label or field_path, limit, truncate=truncate)

    return check


def _size_rule(label: str, limit: int) -> Check:
    def check(value: str, _field_path: str) -> str:
        return check_length(value, label, limit)

    return check


METRIC_FIELDS: Final = (
    Field(
        "key", as_string, required=True, check=_key_rule(length_label="Metric name"), label="name"
    ),
    Field("value", as_double, required=True),
    Field("timestamp", as_int64, required=True),
    Field("step", as_int64, default=0),
    Field("model_id", as_optional_string),
    Field("dataset_name", as_optional_string),
    Field("dataset_digest", as_optional_string),
)
# Indexed by truncate_long_values.
PARAM_FIELDS: Final = {
    flag: (
        Field("key", as_string, required=True, check=_key_rule(length_label="Param key")),
        Field(
            "value",
            as_string,
            default="",
            check=_value_rule(MAX_PARAM_VAL_LENGTH, label="Param value", truncate=flag),
        ),
    )
    for flag in (False, True)
}
RUN_TAG_FIELDS: Final = {
    flag: (
        Field("key", as_string, required=True, check=_key_rule()),
        Field("value", as_string, default="", check=_value_rule(MAX_TAG_VAL_LENGTH, truncate=flag)),
    )
    for flag in (False, True)
}
# Experiment tags report bare 'key'/'value' even inside experiments/create's tag list.
EXPERIMENT_TAG_FIELDS: Final = (
    Field(
        "key",
        as_string,
        default="",
        check=_key_rule(path="key", limit=MAX_EXPERIMENT_TAG_KEY_LENGTH),
    ),
    Field(
        "value",
        as_string,
        default="",
        check=_value_rule(MAX_EXPERIMENT_TAG_VAL_LENGTH, label="value"),
    ),
)
_UNCHECKED_TAG: Final = (Field("key", as_string, default=""), Field("value", as_string, default=""))
_DATASET_INPUT: Final = (Field("tags", as_list), Field("dataset", as_object))
_DATASET: Final = (
    Field("name", as_string, default="", check=_size_rule("name", MAX_DATASET_NAME_SIZE)),
    Field("digest", as_string, default="", check=_size_rule("digest", MAX_DATASET_DIGEST_SIZE)),
    Field("source_type", as_string, default=""),
    Field("source", as_string, default="", check=_size_rule("source", MAX_DATASET_SOURCE_SIZE)),
    Field("schema", as_string, check=_size_rule("schema", MAX_DATASET_SCHEMA_SIZE)),
    Field("profile", as_string, check=_size_rule("profile", MAX_DATASET_PROFILE_SIZE)),
)
_INPUT_TAG: Final = (
    Field("key", as_string, default="", check=_size_rule("key", MAX_INPUT_TAG_KEY_SIZE)),
    Field("value", as_string, default="", check=_size_rule("value", MAX_INPUT_TAG_VALUE_SIZE)),
)
_MODEL_INPUT: Final = (Field("model_id", as_string, default=""),)


def metric_entry(values: list[Any], prefix: str) -> MetricEntry:
    """Return the entry for values read with METRIC_FIELDS, checking the timestamp sign."""
    key, value, timestamp, step, model_id, dataset_name, dataset_digest = values
    check_metric_timestamp(key, value, timestamp, prefix + "timestamp")
    return MetricEntry(key, value, timestamp, step, model_id, dataset_name, dataset_digest)


def _fresh_key_ok(key: str, known: set[str]) -> bool:
    if len(key) <= MAX_ENTITY_KEY_LENGTH and is_valid_key(key):
        known.add(key)
        return True
    return False


def _slow_metric(entry: Any, index: int) -> MetricEntry:
    prefix = f"metrics[{index}]"
    if type(entry) is not dict:
        raise type_error(prefix, entry)
    return metric_entry(read(entry, METRIC_FIELDS, prefix + "."), prefix + ".")


def _plain_double(value: Any) -> float | None:
    # The shapes clients send: a JSON number, or NaN/Infinity spelled as protobuf JSON strings.
    kind = type(value)
    if kind is int and INT64_MIN <= value <= INT64_MAX:
        return float(value)
    if kind is str:
        return SPECIAL_DOUBLES.get(value)
    return None


def metrics(entries: list[Any]) -> tuple[MetricEntry, ...]:
    """Return log-batch's metric entries, or raise MLflow's error for the first bad one."""
    out: list[MetricEntry] = []
    append = out.append
    known: set[str] = set()
    for index, entry in enumerate(entries):
        if type(entry) is dict:
            key: Any = entry.get("key")
            value: Any = entry.get("value")
            timestamp: Any = entry.get("timestamp")
            step: Any = entry.get("step", 0)
            if type(value) is not float:
                value = _plain_double(value)
            model_id: Any = entry.get("model_id")
            dataset_name: Any = entry.get("dataset_name")
            dataset_digest: Any = entry.get("dataset_digest")
            if (
                value is not None
                and type(timestamp) is int
                and 0 <= timestamp <= INT64_MAX
                and type(step) is int
                and INT64_MIN <= step <= INT64_MAX
                and type(key) is str
                and (key in known or _fresh_key_ok(key, known))
                and (model_id is None or type(model_id) is str)
                and (dataset_name is None or type(dataset_name) is str)
                and (dataset_digest is None or type(dataset_digest) is str)
            ):
                append(
                    MetricEntry(
                        key,
                        value,
                        timestamp,
                        step,
                        model_id or None,
                        dataset_name or None,
                        dataset_digest or None,
                    )
                )
                continue
        # Anything else takes the generic reader, which raises MLflow's exact error, or accepts
        # the rarer shapes (numeric strings, integral floats) protobuf's JSON mapping allows.
        append(_slow_metric(entry, index))
    return tuple(out)


def params(entries: list[Any], truncate: bool) -> tuple[ParamEntry, ...]:
    """Return log-batch's param entries; a key given twice is an error."""
    out = tuple(
        ParamEntry(*values) for values in read_each(entries, PARAM_FIELDS[truncate], "params")
    )
    check_param_keys_unique(param.key for param in out)
    return out


def run_tags(entries: list[Any], truncate: bool) -> tuple[TagEntry, ...]:
    """Return log-batch's tag entries, one per key: the last value sent wins, but an empty
    mlflow.runName counts for nothing (MLflow sets the tags one by one and skips it), so
    [runName "a", runName ""] renames the run to "a"."""
    by_key: dict[str, TagEntry] = {}
    for key, value in read_each(entries, RUN_TAG_FIELDS[truncate], "tags"):
        if not renames_to_nothing(key, value):
            by_key[key] = TagEntry(key, value)
    return tuple(by_key.values())


def experiment_tags(entries: list[Any] | None) -> tuple[TagEntry, ...]:
    """Return experiments/create's tags, checked as experiment tags."""
    return tuple(TagEntry(*values) for values in read_each(entries, EXPERIMENT_TAG_FIELDS, "tags"))


def unchecked_tags(entries: list[Any] | None) -> tuple[TagEntry, ...]:
    """Return runs/create's tags as sent: MLflow's server checks only their JSON types."""
    return tuple(TagEntry(*values) for values in read_each(entries, _UNCHECKED_TAG, "tags"))


def dataset_inputs(entries: list[Any] | None) -> tuple[DatasetInputEntry, ...]:
    """Return log-inputs' dataset inputs, checked against MLflow's size limits."""
    out: list[DatasetInputEntry] = []
    for index, (raw_tags, raw_dataset) in enumerate(read_each(entries, _DATASET_INPUT, "datasets")):
        prefix = f"datasets[{index}]."
        name, digest, source_type, source, schema, profile = read(
            raw_dataset or {}, _DATASET, prefix + "dataset."
        )
        tags = tuple(
            TagEntry(*values) for values in read_each(raw_tags, _INPUT_TAG, prefix + "tags")
        )
        out.append(DatasetInputEntry(name, digest, source_type, source, schema, profile, tags=tags))
    return tuple(out)


def model_inputs(entries: list[Any] | None) -> tuple[ModelInputEntry, ...]:
    """Return log-inputs' model inputs."""
    return tuple(ModelInputEntry(*values) for values in read_each(entries, _MODEL_INPUT, "models"))
