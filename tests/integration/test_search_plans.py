"""Searches over enough runs that PostgreSQL's choice of plan decides their cost.

Each test loads a few experiments of runs, ANALYZEs them as autovacuum would, and reads the
plan PostgreSQL chose (EXPLAIN ANALYZE) for what the plan must not do, besides checking the
answer against the general query's.
"""

from __future__ import annotations

import json
import random
from typing import Any

import asyncpg
import pytest

from api.memberships import Statistics, choose_memberships, walk_pays
from api.sqlgen import SearchPlan, compile_run_search

pytestmark = pytest.mark.integration

EXPERIMENTS = (5, 6, 7, 8)
RUNS_EACH = 5_000


async def load_tuning_runs(db: asyncpg.Connection) -> None:
    """Runs with an optimizer (one of 3), a learning rate (one of 5) and a loss, per experiment."""
    rng = random.Random(7)
    runs, params, values = [], [], []
    for experiment in EXPERIMENTS:
        for i in range(RUNS_EACH):
            run_id = f"r{experiment}-{i}"
            runs.append((run_id, experiment, run_id, "u", "FINISHED", i, "file:///a", "active"))
            params.append((run_id, "optimizer", ("adam", "sgd", "rmsprop")[i % 3]))
            params.append((run_id, "lr", ("0.1", "0.03", "0.01", "0.003", "0.001")[i % 5]))
            values.append((run_id, "loss", rng.random(), 0, 0))
    # COPY fires the tables' row triggers, which copy each run's experiment into its rows
    await db.copy_records_to_table(
        "runs",
        records=[(*run, run[0]) for run in runs],
        columns=[
            "run_id", "experiment_id", "run_name", "user_id", "status", "start_time",
            "artifact_uri", "lifecycle_stage", "root_run_id",
        ],
    )  # fmt: skip
    await db.copy_records_to_table("params", records=params, columns=["run_id", "key", "value"])
    await db.copy_records_to_table(
        "latest_metrics", records=values, columns=["run_id", "key", "value", "ts", "step"]
    )
    for table in ("runs", "params", "latest_metrics"):
        await db.execute(f"ANALYZE {table}")


def nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Return a plan node and every node under it."""
    return [plan, *(n for child in plan.get("Plans", []) for n in nodes(child))]


async def explained(db: asyncpg.Connection, plan: SearchPlan) -> list[dict[str, Any]]:
    """Run the plan's query under EXPLAIN ANALYZE as a search does; return every plan node."""
    async with db.transaction():
        await db.execute("SET LOCAL plan_cache_mode = force_custom_plan")
        raw = await db.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {plan.sql}", *plan.args)
    return nodes(json.loads(raw)[0]["Plan"])


async def test_two_param_equalities_sorted_by_a_metric_walk_its_values(
    read_db: asyncpg.Connection,
) -> None:
    # adam with lr 0.001 is a fifteenth of each experiment: a page of 100 is found among the
    # first ~1,500 values of loss. Had the planner taken the experiment's two tests (on the
    # value and on its run) as independent, it would expect a quarter of those matches, read
    # every value of the experiment and sort them all.
    await load_tuning_runs(read_db)
    request = (["6"], "params.optimizer = 'adam' AND params.lr = '0.001'", None, 100)
    plan = compile_run_search(*request, ["metrics.loss ASC"], None)
    assert plan.walk is not None
    walked = await explained(read_db, plan.walk)
    values = [n for n in walked if n.get("Index Name") == "latest_metrics_experiment_order"]
    assert len(values) == 1
    assert values[0]["Actual Rows"] < RUNS_EACH / 2
    assert not [n for n in walked if n["Node Type"] == "Sort"]

    found = [r[0] for r in await read_db.fetch(plan.walk.sql, *plan.walk.args)]
    general = [r[0] for r in await read_db.fetch(plan.sql, *plan.args)]
    assert len(found) == 101
    assert found == general


async def test_the_statistics_steer_a_walk_without_changing_its_answer(
    read_db: asyncpg.Connection,
) -> None:
    await load_tuning_runs(read_db)
    stats = await Statistics.read(read_db)
    assert set(stats.experiments) == set(EXPERIMENTS)
    assert stats.experiment_runs(6) == pytest.approx(RUNS_EACH, rel=0.1)
    asked = (["6"], "params.optimizer = 'adam' AND params.lr = '0.001'", None, 100)
    plan = compile_run_search(*asked, ["metrics.loss ASC"], None)
    assert plan.walk is not None
    # 5,000 runs an experiment: adam's set (1,700) costs less than its ~300 lookups
    assert choose_memberships(stats, plan, 1) == set()
    assert walk_pays(stats, plan.walk)
    # looked up instead, the commonest value still leaves PostgreSQL walking the values
    looked_up = compile_run_search(*asked, ["metrics.loss ASC"], None, [1]).walk
    assert looked_up is not None
    assert "EXISTS (SELECT 1 FROM params" in looked_up.sql
    walked = await explained(read_db, looked_up)
    values = [n for n in walked if n.get("Index Name") == "latest_metrics_experiment_order"]
    assert values[0]["Actual Rows"] < RUNS_EACH / 2
    assert not [n for n in walked if n["Node Type"] == "Sort"]
    found = [r[0] for r in await read_db.fetch(looked_up.sql, *looked_up.args)]
    assert found == [r[0] for r in await read_db.fetch(plan.sql, *plan.args)]
    # two rates no run has both of, with adam: ~70 runs expected, under two pages, so the walk
    # gives way
    never = compile_run_search(
        ["6"],
        "params.lr = '0.1' AND params.lr = '0.001' AND params.optimizer = 'adam'",
        None,
        100,
        ["metrics.loss"],
        None,
    )
    assert never.walk is not None
    assert not walk_pays(stats, never.walk)
