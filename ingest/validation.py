"""Check MLflow's rules for keys, ids, names and value lengths, raising MLflow's own messages.

Every limit and message here mirrors ``mlflow/utils/validation.py`` (3.x), because clients and
MLflow's test suites match on the text. Functions raise :class:`MlflowError` and never log:
this module is pure, the gateway decides what to record.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Iterable
from typing import Any, Final
from urllib.parse import unquote, urlparse, urlunparse

from ingest.errors import MlflowError, invalid_parameter

MAX_ENTITY_KEY_LENGTH: Final = 250
MAX_PARAM_VAL_LENGTH: Final = 6000
MAX_TAG_VAL_LENGTH: Final = 8000
MAX_EXPERIMENT_NAME_LENGTH: Final = 500
MAX_EXPERIMENT_TAG_KEY_LENGTH: Final = 250
MAX_EXPERIMENT_TAG_VAL_LENGTH: Final = 20000
MAX_ARTIFACT_LOCATION_LENGTH: Final = 2048
MAX_METRICS_PER_BATCH: Final = 1000
MAX_PARAMS_TAGS_PER_BATCH: Final = 100
MAX_ENTITIES_PER_BATCH: Final = 1000
MAX_DATASET_NAME_SIZE: Final = 500
MAX_DATASET_DIGEST_SIZE: Final = 36
MAX_DATASET_SOURCE_SIZE: Final = 65535
MAX_DATASET_SCHEMA_SIZE: Final = 1048575
MAX_DATASET_PROFILE_SIZE: Final = 16777215
MAX_INPUT_TAG_KEY_SIZE: Final = 255
MAX_INPUT_TAG_VALUE_SIZE: Final = 500
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1

RUN_NAME_TAG: Final = "mlflow.runName"

# MLflow appends this to every error its request-schema check raises (missing or mistyped field),
# but not to the store-level errors below.
API_DOCS_HINT: Final = " See the API docs for more information about request parameters."

# MLflow uses re.match with `$`, which also accepts one trailing newline ("a\n"); fullmatch does
# not, on purpose: such a key is never intended and breaks every consumer that prints keys.
_KEY_CHARS: Final = re.compile(r"[/\w.\- :]*")
_RUN_ID: Final = re.compile(r"[a-zA-Z0-9][\w\-]{0,255}")
_EXPERIMENT_ID: Final = re.compile(r"[0-9]+")
# One regex equal to "charset ok and path_not_unique() is False", which the hot path needs
# without calling posixpath.normpath: slash-separated, non-empty segments that are not "." or
# "..", and no leading "..". test_validation checks the equivalence on generated keys.
_SEGMENT: Final = r"(?!\.\.?(?:/|\Z))[\w\-. :]+"
_VALID_KEY: Final = re.compile(rf"(?!\.\.){_SEGMENT}(?:/{_SEGMENT})*")

_BAD_CHARACTERS: Final = (
    "Names may only contain alphanumerics, underscores (_), dashes (-), periods (.), spaces ( ), "
    "colon(:) and slashes (/)."
)


def invalid_value(path: str, value: Any, detail: str = "") -> str:
    """Return MLflow's "Invalid value ... for parameter ..." text."""
    shown = json.dumps(value, sort_keys=True, separators=(",", ":"))
    if detail:
        return f"Invalid value {shown} for parameter '{path}' supplied: {detail}"
    return f"Invalid value {shown} for parameter '{path}' supplied."


def missing_value(path: str) -> str:
    """Return MLflow's "Missing value for required parameter" text."""
    return f"Missing value for required parameter '{path}'."


def exceeds_maximum_length(label: str, limit: int) -> str:
    """Return MLflow's over-length text."""
    return f"'{label}' exceeds the maximum length of {limit} characters"


def bad_path_message(name: str) -> str:
    """Return MLflow's text for a key that is not a unique path."""
    return (
        "Names may be treated as files in certain cases, and must not resolve to other names"
        f" when treated as such. This name would resolve to {posixpath.normpath(name)!r}"
    )


def path_not_unique(name: str) -> bool:
    """Say whether `name` changes, or escapes, when normalised as a POSIX path."""
    norm = posixpath.normpath(name)
    return norm != name or norm == "." or norm.startswith("..") or norm.startswith("/")


def is_valid_key(key: str) -> bool:
    """Say whether `key` passes MLflow's charset and path rules (length aside)."""
    return _VALID_KEY.fullmatch(key) is not None


def check_key(key: str, path: str) -> None:
    """Raise MLflow's error if `key` breaks the charset or path rule."""
    if _VALID_KEY.fullmatch(key) is not None:
        return
    if _KEY_CHARS.fullmatch(key) is None:
        raise invalid_parameter(invalid_value(path, key, _BAD_CHARACTERS))
    if path_not_unique(key):
        raise invalid_parameter(invalid_value(path, key, bad_path_message(key)))


def check_length(value: str, label: str, limit: int) -> str:
    """Return `value`, or raise MLflow's over-length error if it is longer than `limit`."""
    if len(value) > limit:
        raise invalid_parameter(exceeds_maximum_length(label, limit))
    return value


def limit_length(value: str, label: str, limit: int, *, truncate: bool) -> str:
    """Return `value` cut to `limit` characters when `truncate`, else as `check_length`."""
    if len(value) <= limit:
        return value
    if truncate:
        return value[:limit]
    raise invalid_parameter(exceeds_maximum_length(label, limit))


def check_run_id(run_id: str, path: str = "run_id") -> str:
    """Return `run_id`, or raise MLflow's error if it does not look like a run id."""
    if _RUN_ID.fullmatch(run_id) is None:
        raise invalid_parameter(invalid_value(path, run_id))
    return run_id


def normalize_experiment_id(experiment_id: str) -> str:
    """Return the id in canonical form ("007" -> "7"), or raise if it is not an int64."""
    digits = experiment_id.lstrip("0") or "0"
    # The length test comes first so int() never sees an absurdly long string.
    if (
        _EXPERIMENT_ID.fullmatch(experiment_id) is None
        or len(digits) > 19
        or int(digits) > INT64_MAX
    ):
        raise invalid_parameter(
            f"Invalid experiment ID '{experiment_id}'. Experiment ID must be a valid integer."
        )
    return digits


def check_experiment_name(name: str) -> str:
    """Return `name`, or raise if it is blank or longer than MLflow allows."""
    # MLflow itself only rejects "" (which the required-field check already catches);
    # Runstream also rejects whitespace-only names, as its API contract says.
    if not name.strip():
        raise invalid_parameter(f"Invalid experiment name: '{name}'")
    return check_length(name, "name", MAX_EXPERIMENT_NAME_LENGTH)


def check_artifact_location(location: str, path: str = "artifact_location") -> str:
    """Return `location`, or raise if MLflow would refuse it as an experiment's artifact root."""
    parsed = urlparse(location)
    if parsed.fragment or parsed.params:
        raise invalid_parameter(f"'{path}' URL can't include fragments or params.")
    if ".." in _fully_unquoted(parsed.query):
        raise invalid_parameter("Invalid query string")
    if location.startswith("runs:"):
        raise invalid_parameter(f"Artifact location cannot be a runs:/ URI. Given: '{location}'")
    if len(location) > MAX_ARTIFACT_LOCATION_LENGTH:
        raise invalid_parameter(
            "Invalid artifact path length. The length of the artifact path cannot be greater "
            f"than {MAX_ARTIFACT_LOCATION_LENGTH} characters. To configure this limit, please "
            "set the MLFLOW_ARTIFACT_LOCATION_MAX_LENGTH environment variable."
        )
    return location


def _fully_unquoted(text: str) -> str:
    # Percent-encoding can be nested ("%252e"); unquote until stable, as MLflow does (max 10).
    for _ in range(10):
        decoded = urlunparse(urlparse(unquote(text)))
        if decoded == text:
            break
        text = decoded
    return text


def check_metric_timestamp(key: str, value: float, timestamp: int, path: str) -> None:
    """Raise MLflow's error for a negative metric timestamp."""
    if timestamp < 0:
        raise invalid_parameter(
            invalid_value(
                path,
                timestamp,
                f"metric '{key}' (value={value}). "
                "Timestamp must be a nonnegative long (64-bit integer) ",
            )
        )


def _check_batch_limit(entity: str, limit: int, length: int) -> None:
    if length > limit:
        raise invalid_parameter(
            f"A batch logging request can contain at most {limit} {entity}. Got {length} "
            f"{entity}. Please split up {entity} across multiple requests and try again."
        )


def check_batch_limits(n_metrics: int, n_params: int, n_tags: int) -> None:
    """Raise MLflow's error when a log-batch holds more entries than it allows."""
    _check_batch_limit("metrics", MAX_METRICS_PER_BATCH, n_metrics)
    _check_batch_limit("params", MAX_PARAMS_TAGS_PER_BATCH, n_params)
    _check_batch_limit("tags", MAX_PARAMS_TAGS_PER_BATCH, n_tags)
    _check_batch_limit(
        "metrics, params, and tags", MAX_ENTITIES_PER_BATCH, n_metrics + n_params + n_tags
    )


def check_param_keys_unique(keys: Iterable[str]) -> None:
    """Raise MLflow's error when a log-batch logs one param key twice (even with one value)."""
    seen: set[str] = set()
    dupes: list[str] = []
    for key in keys:
        if key in seen:
            dupes.append(key)
        seen.add(key)
    if dupes:
        raise invalid_parameter(
            f"Duplicate parameter keys have been submitted: {dupes}. Please ensure the request "
            "contains only one param value per param key."
        )


def check_run_name_matches_tag(run_name: str | None, tag_value: str | None) -> None:
    """Raise MLflow's error when create-run's `run_name` and `mlflow.runName` tag disagree."""
    if run_name and tag_value and run_name != tag_value:
        raise invalid_parameter(
            "Both 'run_name' argument and 'mlflow.runName' tag are specified, but with different "
            f"values (run_name='{run_name}', mlflow.runName='{tag_value}')."
        )


def missing_experiment_id() -> MlflowError:
    """Return the error for create-run without an experiment (MLflow: BAD_REQUEST)."""
    # MLflow fails on a database constraint here and answers 400 BAD_REQUEST with the driver's
    # text; the code is what clients can observe, the text is ours.
    return MlflowError("BAD_REQUEST", missing_value("experiment_id") + API_DOCS_HINT)
