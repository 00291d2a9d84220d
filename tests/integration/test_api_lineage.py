"""Runstream's lineage views over HTTP: ancestors, children, subtree, best children; cycle-safe."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from query_harness import LINEAGE, QueryHarness, add_points, add_run, query_api

from services.config import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
async def api(
    stack: Settings, topic: str, read_db: asyncpg.Connection
) -> AsyncIterator[QueryHarness]:
    db = read_db
    # root -> c1 -> g1 -> gg1, and c2, c3 (deleted), c4 (NaN) under root
    await add_run(db, "root", start=1)
    await add_run(db, "c1", start=10, parent="root", root="root", depth=1, params={"lr": "0.1"})
    await add_run(db, "c2", start=20, parent="root", root="root", depth=1, params={"lr": "0.2"})
    await add_run(db, "c3", start=30, parent="root", root="root", depth=1, stage="deleted")
    await add_run(db, "c4", start=40, parent="root", root="root", depth=1)
    await add_run(db, "g1", start=11, parent="c1", root="root", depth=2)
    await add_run(db, "gg1", start=12, parent="g1", root="root", depth=3, status="FINISHED", end=99)
    await add_points(db, "c1", "acc", [(0, 1, 0.5), (5, 2, 0.8)])
    await add_points(db, "c1", "loss", [(5, 2, 0.3)])
    await add_points(db, "c2", "acc", [(3, 1, 0.9)])
    await add_points(db, "c2", "loss", [(3, 1, 0.5)])
    await add_points(db, "c3", "acc", [(0, 1, 0.99)])
    await add_points(db, "c4", "acc", [(0, 1, math.nan)])
    # the cycle x <-> y as the projector resolves it (smallest id is the root), with a tail t
    await add_run(db, "x", parent="y", root="x", depth=0)
    await add_run(db, "y", parent="x", root="x", depth=1)
    await add_run(db, "t", parent="y", root="x", depth=2)
    # a child whose parent never arrived is its own root
    await add_run(db, "orphan", parent="missing", depth=0)
    async with query_api(stack, topic, read_db) as harness:
        yield harness


async def view(api: QueryHarness, run_id: str, kind: str, **params: Any) -> Any:
    return await api.get(f"runs/{run_id}/{kind}", params, prefix=LINEAGE)


def ids(body: dict[str, Any]) -> list[tuple[str, int]]:
    return [(r["run_id"], r["distance"]) for r in body["runs"]]


async def test_ancestors_nearest_first_with_the_node_shape(api: QueryHarness) -> None:
    body = await view(api, "gg1", "ancestors")
    assert body["run"] == {
        "run_id": "gg1",
        "run_name": "name-gg1",
        "experiment_id": "0",
        "status": "FINISHED",
        "lifecycle_stage": "active",
        "start_time": 12,
        "end_time": 99,
        "parent_run_id": "g1",
        "root_run_id": "root",
        "depth": 3,
        "distance": 0,
    }
    assert ids(body) == [("g1", 1), ("c1", 2), ("root", 3)]
    assert body["truncated"] is False
    assert body["runs"][2] == {
        "run_id": "root",
        "run_name": "name-root",
        "experiment_id": "0",
        "status": "RUNNING",
        "lifecycle_stage": "active",
        "start_time": 1,
        "root_run_id": "root",
        "depth": 0,
        "distance": 3,
    }
    bounded = await view(api, "gg1", "ancestors", max_depth="2")
    assert (ids(bounded), bounded["truncated"]) == ([("g1", 1), ("c1", 2)], True)


async def test_roots_have_no_ancestors(api: QueryHarness) -> None:
    for run_id in ("root", "orphan", "x"):
        body = await view(api, run_id, "ancestors")
        assert (body["runs"], body["truncated"]) == ([], False)


async def test_children_by_start_time_including_deleted_ones(api: QueryHarness) -> None:
    body = await view(api, "root", "children")
    assert ids(body) == [("c1", 1), ("c2", 1), ("c3", 1), ("c4", 1)]
    assert body["runs"][2]["lifecycle_stage"] == "deleted"
    bounded = await view(api, "root", "children", max_results="2")
    assert (ids(bounded), bounded["truncated"]) == ([("c1", 1), ("c2", 1)], True)
    assert (await view(api, "gg1", "children"))["runs"] == []


async def test_subtree_level_by_level_with_bounds(api: QueryHarness) -> None:
    body = await view(api, "root", "subtree")
    assert ids(body) == [("c1", 1), ("c2", 1), ("c3", 1), ("c4", 1), ("g1", 2), ("gg1", 3)]
    assert body["truncated"] is False
    shallow = await view(api, "root", "subtree", max_depth="2")
    assert (ids(shallow)[-1], shallow["truncated"]) == (("g1", 2), True)
    few = await view(api, "root", "subtree", max_results="3")
    assert (ids(few), few["truncated"]) == ([("c1", 1), ("c2", 1), ("c3", 1)], True)
    assert (await view(api, "c1", "subtree"))["runs"][1]["run_id"] == "gg1"


async def test_a_resolved_cycle_reads_as_the_projector_decided(api: QueryHarness) -> None:
    assert ids(await view(api, "y", "ancestors")) == [("x", 1)]
    assert ids(await view(api, "t", "ancestors")) == [("y", 1), ("x", 2)]
    assert ids(await view(api, "x", "subtree")) == [("y", 1), ("t", 2)]
    # x's link to y is the one the cycle rule ignores: x is not y's child
    assert ids(await view(api, "y", "children")) == [("t", 1)]


async def test_an_unresolved_cycle_terminates(api: QueryHarness) -> None:
    # links p <-> q with depths a projector mid-batch could leave: walks must still stop
    await add_run(api.db, "p", parent="q", root="p", depth=1)
    await add_run(api.db, "q", parent="p", root="p", depth=1)
    assert ids(await view(api, "p", "ancestors")) == [("q", 1)]
    assert ids(await view(api, "p", "subtree")) == [("q", 1)]
    assert ids(await view(api, "q", "children")) == [("p", 1)]


async def test_best_children_per_metric_and_mode(api: QueryHarness) -> None:
    params = [("metric", "acc"), ("metric", "loss"), ("metric", "none")]
    body = await api.get("runs/root/best-children", params, prefix=LINEAGE)
    assert body == {
        "run_id": "root",
        "children": 3,  # c3 is deleted
        "best": [
            {
                "metric": "acc",
                "mode": "max",
                "run_id": "c2",
                "run_name": "name-c2",
                "value": 0.9,
                "step": 3,
                "timestamp": 1,
                "params": [{"key": "lr", "value": "0.2"}],
            },
            {
                "metric": "acc",
                "mode": "min",
                "run_id": "c1",
                "run_name": "name-c1",
                "value": 0.8,
                "step": 5,
                "timestamp": 2,
                "params": [{"key": "lr", "value": "0.1"}],
            },
            {
                "metric": "loss",
                "mode": "max",
                "run_id": "c2",
                "run_name": "name-c2",
                "value": 0.5,
                "step": 3,
                "timestamp": 1,
                "params": [{"key": "lr", "value": "0.2"}],
            },
            {
                "metric": "loss",
                "mode": "min",
                "run_id": "c1",
                "run_name": "name-c1",
                "value": 0.3,
                "step": 5,
                "timestamp": 2,
                "params": [{"key": "lr", "value": "0.1"}],
            },
            {"metric": "none", "mode": "max"},
            {"metric": "none", "mode": "min"},
        ],
    }


async def test_best_children_mode_and_view_type(api: QueryHarness) -> None:
    body = await view(api, "root", "best-children", metric="acc", mode="max", run_view_type="ALL")
    assert (body["children"], [(b["mode"], b["run_id"]) for b in body["best"]]) == (
        4,
        [("max", "c3")],
    )
    body = await view(api, "gg1", "best-children", metric="acc", mode="min")
    assert body == {"run_id": "gg1", "children": 0, "best": [{"metric": "acc", "mode": "min"}]}


async def test_lineage_errors(api: QueryHarness) -> None:
    for kind in ("ancestors", "children", "subtree"):
        message = await api.error(
            "GET", f"runs/nope/{kind}", 404, "RESOURCE_DOES_NOT_EXIST", prefix=LINEAGE
        )
        assert message == "Run with id=nope not found"
    await api.error(
        "GET",
        "runs/nope/best-children",
        404,
        "RESOURCE_DOES_NOT_EXIST",
        params={"metric": "acc"},
        prefix=LINEAGE,
    )
    bad = [
        ("ancestors", {"max_depth": "0"}),
        ("ancestors", {"max_depth": "1001"}),
        ("subtree", {"max_results": "x"}),
        ("best-children", {}),
        ("best-children", {"metric": "acc", "mode": "best"}),
        ("best-children", {"metric": "acc", "run_view_type": "SOME"}),
    ]
    for kind, params in bad:
        await api.error(
            "GET",
            f"runs/root/{kind}",
            400,
            "INVALID_PARAMETER_VALUE",
            params=params,
            prefix=LINEAGE,
        )
