"""Unit tests for ingest.requests' log-batch: limits, entry paths, dedup, truncation, fast path.

Error texts are MLflow 3.17's, recorded by driving its server in-process; the cases port
test_log_batch_validation (tests/tracking/test_rest_tracking.py) and tests/utils/test_validation.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from unit.request_support import RUN, error, missing, parse, wrong_type

from ingest.entries import MetricEntry, ParamEntry, TagEntry
from ingest.request_types import LogBatch

# --- runs: log-batch ----------------------------------------------------------------------------


def test_log_batch() -> None:
    body = {
        "run_id": RUN,
        "metrics": [{"key": "metric", "value": 123.456, "timestamp": 789, "step": 3}],
        "params": [{"key": "param", "value": "value"}, {"key": "empty", "value": ""}],
        "tags": [{"key": "taggity", "value": "do-dah"}],
    }
    assert parse("runs/log-batch", body) == LogBatch(
        run_id=RUN,
        metrics=(MetricEntry("metric", 123.456, 789, 3),),
        params=(ParamEntry("param", "value"), ParamEntry("empty", "")),
        tags=(TagEntry("taggity", "do-dah"),),
    )
    assert parse("runs/log-batch", {"run_id": RUN}) == LogBatch(run_id=RUN)
    empty = {"run_id": RUN, "metrics": [], "params": None, "tags": []}
    assert parse("runs/log-batch", empty) == LogBatch(run_id=RUN)


@pytest.mark.parametrize("field", ["metrics", "params", "tags"])
def test_log_batch_lists_must_be_lists(field: str) -> None:
    assert error("runs/log-batch", {"run_id": RUN, field: "foo"}) == wrong_type(
        field, '"foo"', "str"
    )
    assert error("runs/log-batch", {"run_id": RUN, field: [5]}) == wrong_type(
        f"{field}[0]", "5", "int"
    )


def test_log_batch_entries_need_their_required_fields() -> None:
    path = "runs/log-batch"
    no_ts = {"run_id": RUN, "metrics": [{"key": "mae", "value": 2.5}]}
    assert error(path, no_ts) == missing("metrics[0].timestamp")
    no_key = {"run_id": RUN, "metrics": [{"value": 1, "timestamp": 0}]}
    assert error(path, no_key) == missing("metrics[0].key")
    no_value = {"run_id": RUN, "metrics": [{"key": "m", "timestamp": 0}]}
    assert error(path, no_value) == missing("metrics[0].value")
    assert error(path, {"run_id": RUN, "params": [{"value": "v"}]}) == missing("params[0].key")
    assert error(path, {"run_id": RUN, "tags": [{"key": ""}]}) == missing("tags[0].key")
    stepless = {"run_id": RUN, "metrics": [{"key": "mae", "value": 2.5, "timestamp": 123456789}]}
    assert parse(path, stepless).metrics == (MetricEntry("mae", 2.5, 123456789, 0),)


def test_log_batch_reports_entry_paths() -> None:
    path = "runs/log-batch"
    good = {"key": "m", "value": 1, "timestamp": 0}

    def metrics(*entries: dict[str, Any]) -> dict[str, Any]:
        return {"run_id": RUN, "metrics": [good, *entries]}

    assert error(path, metrics({**good, "key": "a$b"})).startswith(
        "Invalid value \"a$b\" for parameter 'metrics[1].name' supplied: Names may only contain"
    )
    assert error(path, metrics({**good, "key": ["m"]})) == wrong_type(
        "metrics[1].key", '["m"]', "list"
    )
    assert error(path, metrics({**good, "key": {"k": 1}})) == wrong_type(
        "metrics[1].key", '{"k":1}', "dict"
    )
    assert error(path, metrics({**good, "value": True})) == wrong_type(
        "metrics[1].value", "true", "bool"
    )
    assert error(path, metrics({**good, "value": "abc"})) == wrong_type(
        "metrics[1].value", '"abc"', "str"
    )
    assert error(path, metrics({**good, "step": "x"})) == wrong_type(
        "metrics[1].step", '"x"', "str"
    )
    assert error(path, metrics({**good, "timestamp": -5})) == (
        "Invalid value -5 for parameter 'metrics[1].timestamp' supplied: metric 'm' "
        "(value=1.0). Timestamp must be a nonnegative long (64-bit integer) "
    )
    assert error(path, metrics({**good, "key": "x" * 251})) == (
        "'Metric name' exceeds the maximum length of 250 characters"
    )
    params = {"run_id": RUN, "params": [{"key": "a/", "value": "v"}]}
    assert error(path, params).startswith(
        "Invalid value \"a/\" for parameter 'params[0].key' supplied: Names may be treated"
    )
    params = {"run_id": RUN, "params": [{"key": "p", "value": 5}]}
    assert error(path, params) == wrong_type("params[0].value", "5", "int")
    params = {"run_id": RUN, "params": [{"key": "x" * 251}]}
    assert error(path, params) == "'Param key' exceeds the maximum length of 250 characters"
    tags = {"run_id": RUN, "tags": [{"key": "//", "value": "v"}]}
    assert error(path, tags).endswith("This name would resolve to '//'")
    tags = {"run_id": RUN, "tags": [{"key": "x" * 251}]}
    assert error(path, tags) == "'tags[0].key' exceeds the maximum length of 250 characters"


def test_log_batch_rejects_the_whole_batch_for_its_last_bad_entry() -> None:
    entries = [{"key": f"m{i}", "value": i, "timestamp": i} for i in range(999)]
    entries.append({"key": "bad key!", "value": 1, "timestamp": 0})
    assert "metrics[999].name" in error("runs/log-batch", {"run_id": RUN, "metrics": entries})


@pytest.mark.parametrize(
    ("counts", "message"),
    [
        ((1001, 0, 0), "at most 1000 metrics. Got 1001 metrics."),
        ((0, 101, 0), "at most 100 params. Got 101 params."),
        ((0, 0, 101), "at most 100 tags. Got 101 tags."),
        ((950, 51, 0), "at most 1000 metrics, params, and tags. Got 1001 metrics, params, and"),
    ],
)
def test_log_batch_limits(counts: tuple[int, int, int], message: str) -> None:
    n_metrics, n_params, n_tags = counts
    body = {
        "run_id": RUN,
        "metrics": [{"key": "m", "value": 1, "timestamp": 0}] * n_metrics,
        "params": [{"key": f"p{i}", "value": "1"} for i in range(n_params)],
        "tags": [{"key": f"t{i}", "value": "1"} for i in range(n_tags)],
    }
    assert f"A batch logging request can contain {message}" in error("runs/log-batch", body)


def test_log_batch_at_the_limits_is_accepted() -> None:
    body = {
        "run_id": RUN,
        "metrics": [{"key": "m", "value": 1, "timestamp": i} for i in range(800)],
        "params": [{"key": f"p{i}", "value": "1"} for i in range(100)],
        "tags": [{"key": f"t{i}", "value": "1"} for i in range(100)],
    }
    batch = parse("runs/log-batch", body)
    assert (len(batch.metrics), len(batch.params), len(batch.tags)) == (800, 100, 100)


def test_log_batch_rejects_duplicate_param_keys_even_with_equal_values() -> None:
    params = [{"key": "q", "value": "1"}, {"key": "q", "value": "1"}, {"key": "r"}, {"key": "r"}]
    assert error("runs/log-batch", {"run_id": RUN, "params": params}) == (
        "Duplicate parameter keys have been submitted: ['q', 'r']. Please ensure the request "
        "contains only one param value per param key."
    )


def test_log_batch_keeps_the_last_value_of_a_repeated_tag() -> None:
    tags = [{"key": "t", "value": "a"}, {"key": "u", "value": "x"}, {"key": "t", "value": "b"}]
    batch = parse("runs/log-batch", {"run_id": RUN, "tags": tags})
    assert batch.tags == (TagEntry("t", "b"), TagEntry("u", "x"))


def test_log_batch_truncates_long_values_unless_switched_off() -> None:
    body = {
        "run_id": RUN,
        "params": [{"key": "p", "value": "v" * 6001}],
        "tags": [{"key": "t", "value": "v" * 8001}],
    }
    batch = parse("runs/log-batch", body)
    assert batch.params[0].value == "v" * 6000
    assert batch.tags[0].value == "v" * 8000
    assert error("runs/log-batch", body, truncate_long_values=False) == (
        "'Param value' exceeds the maximum length of 6000 characters"
    )
    del body["params"]
    assert error("runs/log-batch", body, truncate_long_values=False) == (
        "'tags[0].value' exceeds the maximum length of 8000 characters"
    )


def test_log_batch_accepts_every_shape_log_metric_accepts() -> None:
    odd = [
        {"key": "a", "value": "NaN", "timestamp": 1},
        {"key": "b", "value": "Infinity", "timestamp": "2", "step": "-3"},
        {"key": "c", "value": 1, "timestamp": 3.0, "model_id": "m-1", "dataset_name": ""},
        {"key": "d/e", "value": "2.5", "timestamp": 4, "step": None},
    ]
    batch = parse("runs/log-batch", {"run_id": RUN, "metrics": odd})
    singles = [parse("runs/log-metric", {"run_id": RUN, **entry}).metric for entry in odd]
    assert repr(batch.metrics) == repr(tuple(singles))  # repr: NaN != NaN


metric_dicts = st.fixed_dictionaries(
    {
        "key": st.sampled_from(["loss", "train/acc", "a b", ".x", "é", "a:b"]),
        "value": st.one_of(
            st.floats(allow_nan=False),
            st.integers(-(2**53), 2**53),
            st.sampled_from(["Infinity", "-Infinity", "1.5"]),
        ),
        "timestamp": st.one_of(st.integers(0, 2**63 - 1), st.integers(0, 10**6).map(str)),
    },
    optional={
        "step": st.integers(-(2**63), 2**63 - 1),
        "model_id": st.sampled_from(["", "m-1"]),
        "dataset_name": st.sampled_from(["", "ds"]),
        "dataset_digest": st.sampled_from(["", "abc"]),
    },
)


@given(st.lists(metric_dicts, max_size=20))
def test_log_batch_fast_path_agrees_with_log_metric(entries: list[dict[str, Any]]) -> None:
    batch = parse("runs/log-batch", {"run_id": RUN, "metrics": entries})
    singles = tuple(parse("runs/log-metric", {"run_id": RUN, **e}).metric for e in entries)
    assert batch.metrics == singles
