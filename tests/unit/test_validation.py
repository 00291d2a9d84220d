"""Unit tests for ingest.validation: MLflow's key, id, name and length rules and their messages.

Cases come from mlflow/mlflow tests/utils/test_validation.py and from MLflow 3.17's server,
which was driven in-process to record the exact texts.
"""

from __future__ import annotations

import itertools
import posixpath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.errors import HTTP_STATUS, MlflowError
from ingest.validation import (
    INT64_MAX,
    MAX_ENTITY_KEY_LENGTH,
    check_artifact_location,
    check_batch_limits,
    check_experiment_name,
    check_key,
    check_length,
    check_metric_timestamp,
    check_param_keys_unique,
    check_run_id,
    check_run_name_matches_tag,
    invalid_value,
    is_valid_key,
    limit_length,
    missing_experiment_id,
    normalize_experiment_id,
    path_not_unique,
)

BAD_CHARS = (
    "Names may only contain alphanumerics, underscores (_), dashes (-), periods (.), spaces ( ), "
    "colon(:) and slashes (/)."
)
# MLflow's own lists, plus the examples of MLFLOW_API.md section 5 and a few edge cases.
GOOD_KEYS = [
    "a",
    "Ab-5_",
    "a/b/c",
    "a.b.c",
    ".a",
    "b.",
    "a..a/._./o_O/.e.",
    "a b/c d",
    "a:b",
    "a/..b",
    "é/名前",  # MLflow's \w is Unicode
    "x" * MAX_ENTITY_KEY_LENGTH,
]
BAD_PATH_KEYS = [
    "",
    ".",
    "/",
    "..",
    "//",
    "a//b",
    "a/./b",
    "/a",
    "a/",
    "./",
    "/./",
    "..a",
    "a/../b",
]
BAD_CHAR_KEYS = ["\\", "a$b", "*****", "a\tb", "a\n"]


def assert_invalid(err: MlflowError, message: str | None = None) -> None:
    assert err.error_code == "INVALID_PARAMETER_VALUE"
    assert err.http_status == 400 == HTTP_STATUS["INVALID_PARAMETER_VALUE"]
    if message is not None:
        assert err.message == message


def old_rule(key: str) -> bool:
    # MLflow's rule, restated literally: charset matches and normpath leaves the key alone.
    return (
        all(ch.isalnum() or ch in "_/.- :" for ch in key)
        and not path_not_unique(key)
        and "\n" not in key
    )


@pytest.mark.parametrize("key", GOOD_KEYS)
def test_good_keys_pass(key: str) -> None:
    assert is_valid_key(key)
    check_key(key, "key")


@pytest.mark.parametrize("key", BAD_PATH_KEYS)
def test_keys_that_are_not_unique_paths_fail_with_mlflows_message(key: str) -> None:
    assert not is_valid_key(key)
    with pytest.raises(MlflowError) as info:
        check_key(key, "key")
    resolved = posixpath.normpath(key)
    assert_invalid(
        info.value,
        invalid_value(
            "key",
            key,
            "Names may be treated as files in certain cases, and must not resolve to other "
            f"names when treated as such. This name would resolve to {resolved!r}",
        ),
    )


@pytest.mark.parametrize("key", BAD_CHAR_KEYS)
def test_keys_with_bad_characters_fail_with_mlflows_message(key: str) -> None:
    assert not is_valid_key(key)
    with pytest.raises(MlflowError) as info:
        check_key(key, "metrics[3].name")
    assert_invalid(info.value, invalid_value("metrics[3].name", key, BAD_CHARS))


def test_exact_messages_for_sample_keys() -> None:
    with pytest.raises(MlflowError) as info:
        check_key("a$b", "key")
    assert info.value.message == (
        "Invalid value \"a$b\" for parameter 'key' supplied: Names may only contain "
        "alphanumerics, underscores (_), dashes (-), periods (.), spaces ( ), colon(:) and "
        "slashes (/)."
    )
    with pytest.raises(MlflowError) as info:
        check_key("a/", "params[0].key")
    assert info.value.message == (
        "Invalid value \"a/\" for parameter 'params[0].key' supplied: Names may be treated as "
        "files in certain cases, and must not resolve to other names when treated as such. "
        "This name would resolve to 'a'"
    )
    with pytest.raises(MlflowError) as info:
        check_key("\\", "key")
    assert info.value.message.startswith('Invalid value "\\\\" for parameter')


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("a", False),
        ("a/b/c", False),
        ("a.b/c", False),
        (".a", False),
        ("./a", True),
        ("a/b/../c", True),
        (".", True),
        ("../a/b", True),
        ("/a/b/c", True),
    ],
)
def test_path_not_unique(path: str, expected: bool) -> None:
    assert path_not_unique(path) is expected


def test_fast_key_regex_equals_mlflows_rule_on_every_short_key() -> None:
    alphabet = "a./ $"
    for length in range(6):
        for chars in itertools.product(alphabet, repeat=length):
            key = "".join(chars)
            assert is_valid_key(key) is old_rule(key), key


@given(st.text(alphabet=st.sampled_from(list("ab./ :-_$\\\né")), max_size=12))
def test_fast_key_regex_equals_mlflows_rule_on_generated_keys(key: str) -> None:
    assert is_valid_key(key) is old_rule(key)


@pytest.mark.parametrize(
    "run_id",
    [
        "a" * 32,
        "f0" * 16,
        "abcdef0123456789" * 2,
        "a" * 33,
        "a" * 31,
        "a" * 256,
        "A" * 32,
        "g" * 32,
        "a_" * 32,
        "abcdefghijklmnopqrstuvqxyz",
        "not-a-real-run",
    ],
)
def test_good_run_ids(run_id: str) -> None:
    assert check_run_id(run_id) == run_id


@pytest.mark.parametrize("run_id", ["a/bc" * 8, "", "a" * 400, "*" * 5, "_a", "a\n", "a b"])
def test_bad_run_ids(run_id: str) -> None:
    with pytest.raises(MlflowError) as info:
        check_run_id(run_id)
    assert_invalid(info.value, invalid_value("run_id", run_id))


def test_bad_run_id_message_is_mlflows() -> None:
    with pytest.raises(MlflowError) as info:
        check_run_id("bad/id")
    assert info.value.message == "Invalid value \"bad/id\" for parameter 'run_id' supplied."


def test_length_limits() -> None:
    assert check_length("x" * 250, "Param key", 250) == "x" * 250
    with pytest.raises(MlflowError) as info:
        check_length("x" * 251, "Param key", 250)
    assert_invalid(info.value, "'Param key' exceeds the maximum length of 250 characters")


def test_limit_length_truncates_or_rejects() -> None:
    assert limit_length("x" * 6001, "Param value", 6000, truncate=True) == "x" * 6000
    assert limit_length("x" * 6000, "Param value", 6000, truncate=False) == "x" * 6000
    with pytest.raises(MlflowError) as info:
        limit_length("x" * 6001, "Param value", 6000, truncate=False)
    assert_invalid(info.value, "'Param value' exceeds the maximum length of 6000 characters")


@pytest.mark.parametrize(("given", "expected"), [("0", "0"), ("7", "7"), ("007", "7")])
def test_experiment_ids_are_normalised(given: str, expected: str) -> None:
    assert normalize_experiment_id(given) == expected


def test_largest_experiment_id_is_int64_max() -> None:
    assert normalize_experiment_id(str(INT64_MAX)) == str(INT64_MAX)


@pytest.mark.parametrize("given", ["abc", "", "-1", "1.5", " 1", "9" * 19, "1" * 5000, "٣"])
def test_bad_experiment_ids(given: str) -> None:
    with pytest.raises(MlflowError) as info:
        normalize_experiment_id(given)
    assert_invalid(
        info.value, f"Invalid experiment ID '{given}'. Experiment ID must be a valid integer."
    )


def test_experiment_names() -> None:
    assert check_experiment_name("validstring") == "validstring"
    assert check_experiment_name("n" * 500) == "n" * 500
    with pytest.raises(MlflowError) as info:
        check_experiment_name("n" * 501)
    assert_invalid(info.value, "'name' exceeds the maximum length of 500 characters")


@pytest.mark.parametrize("name", ["", " ", "\t\n"])
def test_blank_experiment_names_are_rejected(name: str) -> None:
    with pytest.raises(MlflowError) as info:
        check_experiment_name(name)
    assert_invalid(info.value, f"Invalid experiment name: '{name}'")


@pytest.mark.parametrize("location", ["abcde", "s3://bucket/path", "file:///tmp/x?a=b"])
def test_good_artifact_locations(location: str) -> None:
    assert check_artifact_location(location) == location


@pytest.mark.parametrize(
    ("location", "message"),
    [
        (
            "runs:/blah/bleh/blergh",
            "Artifact location cannot be a runs:/ URI. Given: 'runs:/blah/bleh/blergh'",
        ),
        ("s3://bucket/path#frag", "'artifact_location' URL can't include fragments or params."),
        ("http://host/path;p", "'artifact_location' URL can't include fragments or params."),
        ("http://host/path?x=../y", "Invalid query string"),
        ("http://host/path?x=%252e%252e/y", "Invalid query string"),
    ],
)
def test_bad_artifact_locations(location: str, message: str) -> None:
    with pytest.raises(MlflowError) as info:
        check_artifact_location(location)
    assert_invalid(info.value, message)


def test_overlong_artifact_location() -> None:
    with pytest.raises(MlflowError) as info:
        check_artifact_location("s3://b/" + "x" * 2048)
    assert_invalid(info.value)
    assert "cannot be greater than 2048 characters" in info.value.message


def test_negative_metric_timestamp_message() -> None:
    check_metric_timestamp("m", 1.0, 0, "timestamp")
    with pytest.raises(MlflowError) as info:
        check_metric_timestamp("m", 1.0, -1, "timestamp")
    assert_invalid(
        info.value,
        "Invalid value -1 for parameter 'timestamp' supplied: metric 'm' (value=1.0). "
        "Timestamp must be a nonnegative long (64-bit integer) ",
    )


@pytest.mark.parametrize(
    ("counts", "entity", "limit", "got"),
    [
        ((1001, 0, 0), "metrics", 1000, 1001),
        ((0, 101, 0), "params", 100, 101),
        ((0, 0, 101), "tags", 100, 101),
        ((900, 51, 50), "metrics, params, and tags", 1000, 1001),
    ],
)
def test_batch_limits(counts: tuple[int, int, int], entity: str, limit: int, got: int) -> None:
    with pytest.raises(MlflowError) as info:
        check_batch_limits(*counts)
    assert_invalid(
        info.value,
        f"A batch logging request can contain at most {limit} {entity}. Got {got} {entity}. "
        f"Please split up {entity} across multiple requests and try again.",
    )


@pytest.mark.parametrize("counts", [(1000, 0, 0), (0, 100, 0), (0, 0, 100), (800, 100, 100)])
def test_batches_at_the_limits_pass(counts: tuple[int, int, int]) -> None:
    check_batch_limits(*counts)


def test_duplicate_param_keys() -> None:
    check_param_keys_unique(["a", "b"])
    with pytest.raises(MlflowError) as info:
        check_param_keys_unique(["q", "q", "r", "r", "q"])
    assert_invalid(
        info.value,
        "Duplicate parameter keys have been submitted: ['q', 'r', 'q']. Please ensure the "
        "request contains only one param value per param key.",
    )


def test_run_name_must_match_the_tag() -> None:
    check_run_name_matches_tag("a", "a")
    check_run_name_matches_tag(None, "b")
    check_run_name_matches_tag("a", None)
    check_run_name_matches_tag("a", "")
    with pytest.raises(MlflowError) as info:
        check_run_name_matches_tag("a", "b")
    assert_invalid(
        info.value,
        "Both 'run_name' argument and 'mlflow.runName' tag are specified, but with different "
        "values (run_name='a', mlflow.runName='b').",
    )


def test_missing_experiment_id_is_a_bad_request() -> None:
    err = missing_experiment_id()
    assert err.error_code == "BAD_REQUEST"
    assert err.http_status == 400


def test_invalid_value_formats_like_json() -> None:
    assert invalid_value("p", "x") == "Invalid value \"x\" for parameter 'p' supplied."
    assert invalid_value("p", 31) == "Invalid value 31 for parameter 'p' supplied."
    assert invalid_value("p", {"b": 1, "a": [True]}, "why") == (
        'Invalid value {"a":[true],"b":1} for parameter \'p\' supplied: why'
    )
