"""Metric history over HTTP: paged history, the legacy bulk form and MLflow 3.x sampling."""

from __future__ import annotations

import math
import random
from collections.abc import AsyncIterator

import asyncpg
import pytest
from query_harness import AJAX, QueryHarness, add_points, add_run, block_miscounts, query_api

from api.sampling import sample_indices
from api.tokens import decode_history_token, encode_page_token
from services.config import Settings

pytestmark = pytest.mark.integration

HINT = " See the API docs for more information about request parameters."
# (step, timestamp, value), logged in this order: steps out of order, negative, NaN and infinities
POINTS = [
    (3, 50, 20.0),
    (0, 100, 1000.0),
    (-3, 900, math.nan),
    (3, 40, 100.0),
    (3, 50, 10.0),
    (7, 60, math.inf),
    (-1, 60, -math.inf),
]
# MLflow's history order: timestamp, then step, then value
ORDERED = [
    {"key": "m", "value": 100.0, "timestamp": 40, "step": 3},
    {"key": "m", "value": 10.0, "timestamp": 50, "step": 3},
    {"key": "m", "value": 20.0, "timestamp": 50, "step": 3},
    {"key": "m", "value": "-Infinity", "timestamp": 60, "step": -1},
    {"key": "m", "value": "Infinity", "timestamp": 60, "step": 7},
    {"key": "m", "value": 1000.0, "timestamp": 100, "step": 0},
    {"key": "m", "value": "NaN", "timestamp": 900, "step": -3},
]


@pytest.fixture
async def api(
    stack: Settings, topic: str, read_db: asyncpg.Connection
) -> AsyncIterator[QueryHarness]:
    await add_run(read_db, "r1")
    await add_points(read_db, "r1", "m", POINTS)
    async with query_api(stack, topic, read_db) as harness:
        yield harness


def _history(run_id: str = "r1", **extra: str) -> dict[str, str]:
    # what MlflowClient.get_metric_history sends
    return {"run_id": run_id, "run_uuid": run_id, "metric_key": "m", **extra}


async def test_history_is_ordered_by_timestamp_step_value(api: QueryHarness) -> None:
    assert await api.get("metrics/get-history", _history()) == {"metrics": ORDERED}


async def test_history_pages_follow_mlflow_tokens(api: QueryHarness) -> None:
    collected: list[dict[str, object]] = []
    params = _history(max_results="3")
    pages = 0
    while True:
        body = await api.get("metrics/get-history", params)
        collected += body["metrics"]
        pages += 1
        if "next_page_token" not in body:
            break
        params = _history(max_results="3", page_token=body["next_page_token"])
    assert (collected, pages) == (ORDERED, 3)
    # exactly full: no token on the last page
    body = await api.get("metrics/get-history", _history(max_results="7"))
    assert body == {"metrics": ORDERED}


async def test_history_pages_resume_after_the_last_point(api: QueryHarness) -> None:
    first = await api.get("metrics/get-history", _history(max_results="4"))
    assert first["metrics"] == ORDERED[:4]
    # a point logged before the resume point, after the page was read, does not shift the next
    # page (an offset would repeat ORDERED[3]); one logged after it is part of the history
    await add_points(api.db, "r1", "m", [(0, 10, 5.0), (9, 950, 1.0)])
    params = _history(max_results="10", page_token=first["next_page_token"])
    rest = await api.get("metrics/get-history", params)
    assert rest == {
        "metrics": [*ORDERED[4:], {"key": "m", "value": 1.0, "timestamp": 950, "step": 9}]
    }


async def test_history_still_reads_mlflow_offset_tokens(api: QueryHarness) -> None:
    params = _history(max_results="3", page_token=encode_page_token(3))
    body = await api.get("metrics/get-history", params)
    assert body["metrics"] == ORDERED[3:6]
    assert decode_history_token(body["next_page_token"]).offset == 6
    params = _history(max_results="3", page_token=body["next_page_token"])
    assert await api.get("metrics/get-history", params) == {"metrics": ORDERED[6:]}


async def test_history_of_unknown_run_or_key_is_empty(api: QueryHarness) -> None:
    assert await api.get("metrics/get-history", _history("nope")) == {}
    assert await api.get("metrics/get-history", {"run_id": "r1", "metric_key": "zz"}) == {}


async def test_history_carries_the_points_dataset_and_model(api: QueryHarness) -> None:
    await api.db.execute(
        "INSERT INTO metrics VALUES ('r1', 'ds', 0, 1, 0.5, 'm-1', 'train', 'abc')"
    )
    body = await api.get("metrics/get-history", {"run_uuid": "r1", "metric_key": "ds"})
    assert body == {
        "metrics": [
            {
                "key": "ds",
                "value": 0.5,
                "timestamp": 1,
                "step": 0,
                "dataset_name": "train",
                "dataset_digest": "abc",
                "model_id": "m-1",
            }
        ]
    }


async def test_history_errors(api: QueryHarness) -> None:
    message = await api.error(
        "GET",
        "metrics/get-history",
        400,
        "INVALID_PARAMETER_VALUE",
        params=_history(max_results="0"),
    )
    assert message == (
        "Invalid value 0 for parameter 'max_results' supplied. It must be a positive integer."
    )
    await api.error(
        "GET",
        "metrics/get-history",
        400,
        "INVALID_PARAMETER_VALUE",
        params=_history(max_results="x"),
    )
    await api.error(
        "GET",
        "metrics/get-history",
        400,
        "INVALID_PARAMETER_VALUE",
        params={**_history(), "page_token": "not a token"},
    )
    message = await api.error(
        "GET", "metrics/get-history", 400, "INVALID_PARAMETER_VALUE", params={"run_id": "r1"}
    )
    assert message == "Missing value for required parameter 'metric_key'." + HINT


async def test_bulk_history_sorts_by_run_then_time(api: QueryHarness) -> None:
    await add_run(api.db, "a0")
    await add_points(api.db, "a0", "m", [(1, 5, 1.0), (0, 9, 2.0)])
    params = [("run_id", "r1"), ("run_id", "a0"), ("metric_key", "m")]
    body = await api.get("metrics/get-history-bulk", params, prefix=AJAX)
    assert [(p["run_id"], p["timestamp"]) for p in body["metrics"]] == [
        ("a0", 5),
        ("a0", 9),
        *(("r1", p["timestamp"]) for p in ORDERED),
    ]
    body = await api.get("metrics/get-history-bulk", [*params, ("max_results", "3")], prefix=AJAX)
    assert len(body["metrics"]) == 3
    none = await api.get("metrics/get-history-bulk", {"run_id": "x", "metric_key": "m"})
    assert none == {"metrics": []}


async def test_bulk_history_errors(api: QueryHarness) -> None:
    message = await api.error(
        "GET",
        "metrics/get-history-bulk",
        400,
        "INVALID_PARAMETER_VALUE",
        params={"metric_key": "m"},
    )
    assert message == "GetMetricHistoryBulk request must specify at least one run_id."
    message = await api.error(
        "GET", "metrics/get-history-bulk", 400, "INVALID_PARAMETER_VALUE", params={"run_id": "r1"}
    )
    assert message == "GetMetricHistoryBulk request must specify a metric_key."
    too_many = [("run_id", f"r{i}") for i in range(101)] + [("metric_key", "m")]
    await api.error(
        "GET", "metrics/get-history-bulk", 400, "INVALID_PARAMETER_VALUE", params=too_many
    )


async def _steps(api: QueryHarness, run_id: str, count: int) -> None:
    await add_run(api.db, run_id)
    await add_points(api.db, run_id, "loss", [(s, 1000 + s, float(s)) for s in range(count)])


def _interval(*run_ids: str, **extra: str) -> list[tuple[str, str]]:
    return [("run_ids", r) for r in run_ids] + [("metric_key", "loss"), *extra.items()]


async def test_bulk_interval_samples_like_mlflow_3(api: QueryHarness) -> None:
    await _steps(api, "ten", 10)
    await _steps(api, "three", 3)
    body = await api.get(
        "metrics/get-history-bulk-interval", _interval("ten", "three", max_results="5"), prefix=AJAX
    )
    assert [(p["run_id"], p["step"]) for p in body["metrics"]] == [
        ("ten", 0),
        ("ten", 2),
        ("ten", 4),
        ("ten", 6),
        ("ten", 9),
        ("three", 0),
        ("three", 1),
        ("three", 2),
    ]
    assert body["metrics"][0] == {
        "key": "loss",
        "value": 0.0,
        "timestamp": 1000,
        "step": 0,
        "run_id": "ten",
    }
    # runs come back in request order; one point per run keeps the last one
    body = await api.get(
        "metrics/get-history-bulk-interval", _interval("three", "ten", max_results="1")
    )
    assert [(p["run_id"], p["step"]) for p in body["metrics"]] == [("three", 2), ("ten", 9)]


async def test_bulk_interval_window_and_defaults(api: QueryHarness) -> None:
    await _steps(api, "ten", 10)
    body = await api.get(
        "metrics/get-history-bulk-interval",
        _interval("ten", start_step="3", end_step="6"),
    )
    assert [p["step"] for p in body["metrics"]] == [3, 4, 5, 6]
    body = await api.get("metrics/get-history-bulk-interval", _interval("ten", "unknown"))
    assert len(body["metrics"]) == 10  # default max_results 2500
    assert await api.get("metrics/get-history-bulk-interval", _interval("unknown")) == {}


async def test_bulk_interval_errors(api: QueryHarness) -> None:
    cases = [
        (_interval(max_results="1"), "Missing value for required parameter 'run_ids'." + HINT),
        ([("run_ids", "a")], "Missing value for required parameter 'metric_key'." + HINT),
        (_interval("a", max_results="0"), "max_results must be between 1 and 2500." + HINT),
        (_interval("a", max_results="2501"), "max_results must be between 1 and 2500." + HINT),
        (
            _interval("a", start_step="1"),
            "If either start step or end step are specified, both must be specified.",
        ),
        (
            _interval("a", start_step="5", end_step="1"),
            "end_step must be greater than start_step. Found start_step=5 and end_step=1.",
        ),
        (
            _interval(*(f"r{i}" for i in range(101))),
            "GetMetricHistoryBulkInterval request must specify at most 100 run_ids. "
            "Received 101 run_ids." + HINT,
        ),
    ]
    for params, expected in cases:
        message = await api.error(
            "GET",
            "metrics/get-history-bulk-interval",
            400,
            "INVALID_PARAMETER_VALUE",
            params=params,
        )
        assert message == expected


async def test_sql_sampling_equals_the_reference_rule(api: QueryHarness) -> None:
    rng = random.Random(7)
    for total in (1, 2, 5, 9, 10, 11, 24, 37):
        run_id = f"n{total}"
        await add_run(api.db, run_id)
        # several points per step and repeated timestamps, so the tie-breakers matter
        points = {
            (rng.randint(0, 5), rng.randint(0, 3), float(rng.randint(0, 9)))
            for _ in range(total * 3)
        }
        points_sorted = sorted(points)[:total] if len(points) >= total else sorted(points)
        await add_points(api.db, run_id, "loss", points_sorted)
        for cap in (1, 2, 3, 5, 10, 40):
            body = await api.get(
                "metrics/get-history-bulk-interval", _interval(run_id, max_results=str(cap))
            )
            got = [(p["step"], p["timestamp"], p["value"]) for p in body["metrics"]]
            expected = [points_sorted[i] for i in sample_indices(len(points_sorted), cap)]
            assert got == expected, (total, cap)


async def test_sampling_of_consecutive_steps_by_step_equals_the_reference_rule(
    api: QueryHarness,
) -> None:
    # A point at every step: logged in order, the series is known to be consecutive and its
    # kept points are read by step; logged out of order, or with a gap, or with a step logged
    # twice, it is not, and the block counts find them. Either way the rule's points come back.
    steps = range(-2000, 14000)

    def point(step: int) -> tuple[int, int, float]:
        return step, 1000 + step // 7, float((step * 7919) % 13)

    series = {
        "in_order": [[point(s) for s in steps[i : i + 4000]] for i in range(0, len(steps), 4000)],
        "reversed": [[point(s) for s in steps[i : i + 4000]] for i in range(12000, -1, -4000)],
        "gap": [[point(s) for s in steps if s != 5000]],
        "twice": [[point(s) for s in steps], [(7, 0, 0.5)]],
    }
    for run_id, batches in series.items():
        await add_run(api.db, run_id)
        for batch in batches:
            await add_points(api.db, run_id, "loss", batch)
    assert await block_miscounts(api.db) == []
    known = dict(
        await api.db.fetch(
            "SELECT run_id, unique_steps FROM metric_series WHERE run_id = ANY($1)", list(series)
        )
    )
    assert known == {"in_order": True, "reversed": False, "gap": True, "twice": False}
    windows = [None, (-10, 10), (100, 5000), (-5000, -1990), (13990, 10**12), (20000, 30000)]
    for run_id, batches in series.items():
        ordered = sorted(p for batch in batches for p in batch)
        for window in windows:
            lo, hi = window or (-(10**18), 10**18)
            inside = [p for p in ordered if lo <= p[0] <= hi]
            for cap in (1, 7, 320, 2500):
                extra = {"max_results": str(cap)}
                if window is not None:
                    extra |= {"start_step": str(lo), "end_step": str(hi)}
                body = await api.get(
                    "metrics/get-history-bulk-interval", _interval(run_id, **extra)
                )
                got = [(p["step"], p["timestamp"], p["value"]) for p in body.get("metrics", [])]
                expected = [inside[i] for i in sample_indices(len(inside), cap)]
                assert got == expected, (run_id, window, cap)


async def test_block_counted_sampling_equals_the_reference_rule(api: QueryHarness) -> None:
    # Series above the size read whole, so the block counts find the points: steps repeated
    # (ties broken by timestamp and value) and negative, and steps 100,000 apart.
    rng = random.Random(11)
    series = {
        "dense": [
            (rng.randint(-3000, 9000), rng.randint(0, 5), float(rng.randint(0, 3)))
            for _ in range(15000)
        ],
        "sparse": [(i * 100_000 - 250_000_000, i, 0.5) for i in range(5000)],
    }
    for run_id, points in series.items():
        await add_run(api.db, run_id)
        # in overlapping batches: a point inserted twice is stored and counted once
        for first in range(0, len(points), 4000):
            await add_points(api.db, run_id, "loss", points[max(0, first - 500) : first + 4000])
    assert await block_miscounts(api.db) == []
    windows = [None, (-10, 10), (100, 5000), (-3000, -2990), (-250_000_000, 0), (9001, 10**12)]
    for run_id, points in series.items():
        ordered = sorted(set(points))
        for window in windows:
            inside = (
                ordered
                if window is None
                else [p for p in ordered if window[0] <= p[0] <= window[1]]
            )
            for cap in (1, 7, 320, 2500):
                extra = {"max_results": str(cap)}
                if window is not None:
                    extra |= {"start_step": str(window[0]), "end_step": str(window[1])}
                body = await api.get(
                    "metrics/get-history-bulk-interval", _interval(run_id, **extra)
                )
                got = [(p["step"], p["timestamp"], p["value"]) for p in body.get("metrics", [])]
                assert got == [inside[i] for i in sample_indices(len(inside), cap)], (
                    run_id,
                    window,
                    cap,
                )
