"""Compiled searches run against the real read models in PostgreSQL, with MLflow's semantics."""

from __future__ import annotations

import math
from unittest import mock

import asyncpg
import pytest

from api import queries, sqlgen
from api.memberships import Statistics, choose_memberships
from api.sqlgen import SearchPlan, compile_experiment_search, compile_run_search
from api.tokens import encode_page_token

pytestmark = pytest.mark.integration

NAN = math.nan

# run_id, experiment, run_name column, start, end, status, lifecycle
RUNS = [
    ("run-a", 1, "alpha", 100, None, "FINISHED", "active"),
    ("run-b", 1, "beta", 200, None, "RUNNING", "active"),
    ("run-c", 1, "gamma", 200, 250, "FAILED", "active"),
    ("run-d", 1, "delta", 50, 60, "FINISHED", "active"),
    ("run-e", 1, "eps", 300, None, "FINISHED", "deleted"),
    ("run-f", 2, "phi", 400, None, "FINISHED", "active"),
]
METRICS = [  # latest values; run-c has no acc, run-d no loss
    ("run-a", "acc", 0.9),
    ("run-a", "loss", NAN),
    ("run-b", "acc", 0.5),
    ("run-b", "loss", 1.0),
    ("run-c", "loss", 2.0),
    ("run-d", "acc", NAN),
    ("run-e", "acc", 0.99),
    ("run-f", "acc", 0.7),
]
PARAMS = [
    ("run-a", "lr", "0.1"),
    ("run-a", "path", "C:\\dir"),
    ("run-a", "pattern", "50%_x"),
    ("run-b", "lr", "0.01"),
    ("run-b", "pattern", "50ab"),
    ("run-d", "lr", "0.1"),
    ("run-d", "pattern", "5%"),
    ("run-c", "long", "v" * 300 + "1"),  # longer than the 200-character index prefix
]
TAGS = [
    # the mlflow.runName tag is what `attributes.run_name` matches; run-b's differs from its column
    ("run-a", "mlflow.runName", "alpha"),
    ("run-b", "mlflow.runName", "beta-tag"),
    ("run-d", "mlflow.runName", "delta"),
    ("run-a", "mlflow.rootRunId", "run-a"),
    ("run-b", "mlflow.rootRunId", "run-a"),
    ("run-b", "mlflow.parentRunId", "run-a"),
    ("run-c", "mlflow.rootRunId", "run-c"),
    ("run-d", "mlflow.rootRunId", "run-d"),
    ("run-a", "team", "x"),
    ("run-b", "team", "y"),
    ("run-d", "team", "X"),
]
DATASETS = [  # run_id, name, digest, context
    ("run-a", "ds1", "d1", "train"),
    ("run-a", "ds2", "d2", "eval"),
    ("run-b", "ds2", "d2", None),
]
EXPERIMENTS = [  # id, name, lifecycle, creation_time, last_update_time
    (1, "alpha-exp", "active", 10, 15),
    (2, "Beta-exp", "active", 20, 40),
    (3, "gamma", "deleted", 30, 30),
    (4, "delta", "active", 20, 20),
]
EXPERIMENT_TAGS = [(1, "team", "a"), (2, "team", "b"), (4, "team", "a")]


@pytest.fixture
async def db(read_db: asyncpg.Connection) -> asyncpg.Connection:
    """Return the read models filled with the runs and experiments above."""
    await read_db.executemany(
        "INSERT INTO runs (run_id, experiment_id, run_name, user_id, status, start_time, "
        "end_time, artifact_uri, lifecycle_stage, root_run_id) "
        "VALUES ($1, $2, $3, 'u', $6, $4, $5, 'file:///a', $7, $1)",
        RUNS,
    )
    await read_db.executemany(
        "INSERT INTO latest_metrics (run_id, key, value, ts, step) VALUES ($1, $2, $3, 0, 0)",
        METRICS,
    )
    await read_db.executemany("INSERT INTO params VALUES ($1, $2, $3)", PARAMS)
    await read_db.executemany("INSERT INTO tags VALUES ($1, $2, $3)", TAGS)
    await read_db.executemany(
        "INSERT INTO run_dataset_inputs (run_id, name, digest, source_type, source, context) "
        "VALUES ($1, $2, $3, 'local', 's', $4)",
        DATASETS,
    )
    await read_db.executemany(
        "INSERT INTO experiments VALUES ($1, $2, 'file:///x', $3, $4, $5)", EXPERIMENTS
    )
    await read_db.executemany("INSERT INTO experiment_tags VALUES ($1, $2, $3)", EXPERIMENT_TAGS)
    return read_db


async def fetch(db: asyncpg.Connection, plan: SearchPlan) -> tuple[list[str], str | None]:
    """Return a page by the general query, after checking that a search sorted by a metric
    walks to the same runs: the page's runs with a number for the metric, in its order."""
    rows = [str(row[0]) for row in await db.fetch(plan.sql, *plan.args)]
    if plan.walk is not None:
        key = plan.walk.args[1]
        numbers = {
            row[0]
            for row in await db.fetch(
                "SELECT run_id FROM latest_metrics WHERE key = $1 AND value <> 'NaN'", key
            )
        }
        walked = [str(row[0]) for row in await db.fetch(plan.walk.sql, *plan.walk.args)]
        expected = [run for run in rows if run in numbers]
        if "SELECT count(*)" in plan.walk.sql and sqlgen._WALK_SHARE > 0:
            # a metric comparison too few runs meet stops the walk before it starts
            assert walked in ([], expected)
        else:
            assert walked == expected
    return plan.page(rows)


async def runs(
    db: asyncpg.Connection,
    filter_string: str = "",
    order_by: list[str] | None = None,
    view: str = "ACTIVE_ONLY",
    experiment_ids: tuple[str, ...] = ("1",),
) -> list[str]:
    """Return the ids a search finds, after checking that testing every param and tag equality
    as a membership (what `memberships.choose_memberships` may choose; in a metric walk, each
    choice it may make) finds the same ones, and that one walking an equality's runs
    (`sqlgen._driver`) finds what walking every run does."""
    request = (list(experiment_ids), filter_string, view, 1000, order_by, None)
    plan = compile_run_search(*request)
    ids, token = await fetch(db, plan)
    assert token is None
    if plan.memberships:
        members = compile_run_search(*request, [m.index for m in plan.memberships])
        assert "IS TRUE" in members.sql
        assert await fetch(db, members) == (ids, None)
    offered = plan.walk.memberships if plan.walk is not None else ()
    for looked_up in offered:  # a metric walk's sets, but for one equality looked up instead
        chosen = compile_run_search(*request, [m.index for m in offered if m != looked_up])
        assert chosen.walk is not None
        assert chosen.walk.sql != plan.walk.sql  # type: ignore[union-attr]
        assert await fetch(db, chosen) == (ids, None)
    if plan.driver is not None:
        with mock.patch.object(sqlgen, "_driver", return_value=None):
            every_run = compile_run_search(*request)
        assert "FROM runs AS r\n" in every_run.sql
        assert await fetch(db, every_run) == (ids, None)
    return ids


async def test_default_order_is_start_time_desc_then_run_id(db: asyncpg.Connection) -> None:
    assert await runs(db) == ["run-b", "run-c", "run-a", "run-d"]
    assert await runs(db, experiment_ids=("1", "2")) == [
        "run-f", "run-b", "run-c", "run-a", "run-d"
    ]  # fmt: skip
    assert await runs(db, experiment_ids=()) == []


async def test_view_types(db: asyncpg.Connection) -> None:
    assert await runs(db, view="DELETED_ONLY") == ["run-e"]
    assert await runs(db, view="ALL") == ["run-e", "run-b", "run-c", "run-a", "run-d"]


METRIC_FILTERS = [
    ("metrics.acc > 0.6", ["run-a"]),  # NaN is above every number in PostgreSQL, not here
    ("metrics.acc >= 0.5", ["run-b", "run-a"]),
    ("metrics.acc <= 1", ["run-b", "run-a"]),
    ("metrics.acc = 0.5", ["run-b"]),
    ("metrics.acc != 0.5", ["run-a", "run-d"]),  # NaN matches `!=`; run-c has no acc
    ("metrics.loss > -1e999", ["run-b", "run-c"]),
    ("metrics.loss < 1e999", ["run-b", "run-c"]),
    ("metrics.acc > 0.6 AND metrics.loss != 5", ["run-a"]),
]


@pytest.mark.parametrize(("filter_string", "expected"), METRIC_FILTERS)
async def test_metric_filters(
    db: asyncpg.Connection, filter_string: str, expected: list[str]
) -> None:
    assert await runs(db, filter_string) == expected


FILTERS = [
    ("params.lr = '0.1'", ["run-a", "run-d"]),
    ("params.lr != '0.1'", ["run-b"]),  # only runs that have the param
    ("params.lr IS NULL", ["run-c"]),
    ("params.lr IS NOT NULL", ["run-b", "run-a", "run-d"]),
    ("params.pattern LIKE '50%'", ["run-b", "run-a"]),  # % and _ are wildcards
    ("params.pattern LIKE '5_'", ["run-d"]),
    ("params.path LIKE 'C:\\dir'", ["run-a"]),  # backslash is literal, not an escape
    ("params.path = 'C:\\dir'", ["run-a"]),
    ("params.long = '" + "v" * 300 + "1'", ["run-c"]),
    ("params.long = '" + "v" * 300 + "2'", []),
    ("tags.team = 'x'", ["run-a"]),  # case-sensitive
    ("tags.team LIKE 'x'", ["run-a"]),
    ("tags.team ILIKE 'x'", ["run-a", "run-d"]),
    ("tags.mlflow.rootRunId = 'run-a'", ["run-b", "run-a"]),
    ("tags.mlflow.parentRunId IS NULL", ["run-c", "run-a", "run-d"]),
    ("tags.\"mlflow.parentRunId\" = 'run-a'", ["run-b"]),
    ("attributes.run_name = 'beta-tag'", ["run-b"]),  # the tag, not the column
    ("attributes.run_name = 'beta'", []),
    ("`Run name` LIKE 'al%'", ["run-a"]),
    ("attributes.run_name != 'zzz'", ["run-b", "run-a", "run-d"]),  # run-c has no tag
    ("run_id IN ('run-a', 'run-d', 'nope')", ["run-a", "run-d"]),
    ("run_id NOT IN ('run-a')", ["run-b", "run-c", "run-d"]),
    ("attributes.status = 'FINISHED'", ["run-a", "run-d"]),
    ("status = 'finished'", []),
    ("status ILIKE 'fin%'", ["run-a", "run-d"]),
    ("start_time > 100", ["run-b", "run-c"]),
    ("created >= 200", ["run-b", "run-c"]),
    ("start_time > 99.5", ["run-b", "run-c", "run-a"]),
    ("start_time < 99999999999999999999", ["run-b", "run-c", "run-a", "run-d"]),
    ("end_time != 60", ["run-c"]),  # running runs have no end_time
    ("datasets.context = 'train'", ["run-a"]),
    ("datasets.name IN ('ds1', 'ds2')", ["run-b", "run-a"]),
    ("datasets.digest NOT IN ('d1')", ["run-b", "run-a"]),
    ("datasets.name = 'ds2' AND datasets.context = 'train'", ["run-a"]),
    ("params.lr = '0.1' AND tags.team = 'X' AND metrics.acc != 0", ["run-d"]),
    # newest first, the first equality's runs are walked (`sqlgen._driver`); every other kind of
    # condition applies to the walked run
    ("tags.mlflow.rootRunId = 'run-a' AND datasets.name = 'ds1'", ["run-a"]),
    ("tags.mlflow.rootRunId = 'run-a' AND datasets.context IN ('eval')", ["run-a"]),
    ("tags.mlflow.rootRunId = 'run-a' AND params.lr = '0.1'", ["run-a"]),
    ("tags.mlflow.rootRunId = 'run-a' AND tags.mlflow.parentRunId IS NULL", ["run-a"]),
    ("tags.mlflow.rootRunId = 'run-a' AND tags.mlflow.parentRunId IS NOT NULL", ["run-b"]),
    ("tags.mlflow.rootRunId = 'run-a' AND attributes.status = 'RUNNING'", ["run-b"]),
    ("tags.mlflow.rootRunId = 'run-a' AND run_id NOT IN ('run-b')", ["run-a"]),
    ("tags.mlflow.rootRunId = 'run-a' AND metrics.acc > 0.6", ["run-a"]),
    ("tags.mlflow.rootRunId = 'run-a' AND attributes.run_name LIKE 'b%'", ["run-b"]),
    ("params.lr = '0.1' AND params.lr = '0.01'", []),
    ("params.lr = '0.1' AND start_time < 100", ["run-d"]),
    ("attributes.run_name = 'alpha' AND tags.team = 'x'", ["run-a"]),
]


@pytest.mark.parametrize(("filter_string", "expected"), FILTERS)
async def test_filters(db: asyncpg.Connection, filter_string: str, expected: list[str]) -> None:
    assert await runs(db, filter_string) == expected


@pytest.mark.parametrize("order_by", [["metrics.loss"], ["metrics.acc DESC", "params.lr"]])
@pytest.mark.parametrize(("filter_string", "expected"), METRIC_FILTERS + FILTERS)
async def test_filters_sorted_by_a_metric_find_the_same_runs(
    db: asyncpg.Connection,
    filter_string: str,
    expected: list[str],
    order_by: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # sorted by a metric, one experiment's search also walks the metric (`fetch` checks it),
    # here whatever share of runs its metric comparisons meet
    monkeypatch.setattr(sqlgen, "_WALK_SHARE", 0)
    assert sorted(await runs(db, filter_string, order_by)) == sorted(expected)


@pytest.mark.parametrize(
    ("order_by", "expected"),
    [
        # numbers, then NaN, then runs without the metric, in both directions
        (["metrics.acc DESC"], ["run-a", "run-b", "run-d", "run-c"]),
        (["metrics.acc ASC"], ["run-b", "run-a", "run-d", "run-c"]),
        (["metrics.loss"], ["run-b", "run-c", "run-a", "run-d"]),
        # missing params last both ways; ties fall back to start_time DESC
        (["params.lr ASC"], ["run-b", "run-a", "run-d", "run-c"]),
        (["params.lr DESC"], ["run-a", "run-d", "run-b", "run-c"]),
        (["end_time ASC"], ["run-d", "run-c", "run-b", "run-a"]),
        (["end_time DESC"], ["run-c", "run-d", "run-b", "run-a"]),
        (["tags.team DESC", "start_time ASC"], ["run-b", "run-a", "run-d", "run-c"]),
        (["start_time ASC"], ["run-d", "run-a", "run-b", "run-c"]),
        (["attributes.run_id DESC"], ["run-d", "run-c", "run-b", "run-a"]),
        (["run_name"], ["run-a", "run-b", "run-d", "run-c"]),  # the column: alpha beta delta gamma
    ],
)
async def test_ordering(db: asyncpg.Connection, order_by: list[str], expected: list[str]) -> None:
    assert await runs(db, order_by=order_by) == expected


@pytest.mark.parametrize(
    "order_by",
    [
        ["metrics.acc DESC"],
        ["metrics.loss"],
        ["params.lr DESC"],
        ["tags.team"],
        ["end_time DESC"],
        ["run_id DESC"],
        ["start_time ASC"],
    ],
)
@pytest.mark.parametrize("view", ["ACTIVE_ONLY", "ALL"])
async def test_runs_across_experiments_merge_in_order(
    db: asyncpg.Connection, order_by: list[str], view: str
) -> None:
    # The plain query over `experiment_id = ANY(...)` is the reference: ordering each
    # experiment's runs apart and merging them must give the same list, page by page
    single = compile_run_search(["1"], "", view, 1000, order_by, None)
    assert "r.experiment_id = $1::bigint\n" in single.sql
    reference = single.sql.replace(
        "r.experiment_id = $1::bigint\n", "r.experiment_id = ANY($1::bigint[])\n"
    )
    rows = await db.fetch(reference, [1, 2], *single.args[1:])
    expected = [row[0] for row in rows]
    assert len(expected) == (6 if view == "ALL" else 5)
    assert await runs(db, order_by=order_by, view=view, experiment_ids=("2", "1", "2")) == expected
    for offset in range(len(expected) + 1):
        token = encode_page_token(offset) if offset else None
        plan = compile_run_search(["1", "2"], "", view, 2, order_by, token)
        ids, _ = await fetch(db, plan)
        assert ids == expected[offset : offset + 2]


@pytest.mark.parametrize("experiment_ids", [["1"], ["1", "2"]])
@pytest.mark.parametrize("page_size", [1, 2, 3, 4, 5, 6])
async def test_pages_walk_the_whole_order(
    db: asyncpg.Connection, page_size: int, experiment_ids: list[str]
) -> None:
    expected = ["run-e", "run-a", "run-f", "run-b", "run-d", "run-c"]
    if experiment_ids == ["1"]:
        expected.remove("run-f")
    seen: list[str] = []
    token: str | None = None
    pages = 0
    while True:
        plan = compile_run_search(experiment_ids, "", "ALL", page_size, ["metrics.acc DESC"], token)
        ids, token = await fetch(db, plan)
        seen += ids
        pages += 1
        if token is None:
            break
        assert len(ids) == page_size
    assert seen == expected
    # an exactly full last page carries no token: 5 runs in pages of 5 is one page
    assert pages == math.ceil(len(expected) / page_size)


async def test_a_latest_value_written_without_its_experiment_gets_its_runs(
    db: asyncpg.Connection,
) -> None:
    # The fixture wrote latest values as a hand edit would, without the experiment the metric
    # walk reads (migration 0012); the projector writes it itself.
    rows = await db.fetch("SELECT DISTINCT run_id, experiment_id FROM latest_metrics")
    runs_experiment = {run[0]: run[1] for run in RUNS}
    assert {row[0]: row[1] for row in rows} == {m[0]: runs_experiment[m[0]] for m in METRICS}
    await db.execute(
        "INSERT INTO latest_metrics (run_id, key, value, ts, step, experiment_id) "
        "VALUES ('run-a', 'given', 1, 0, 0, 7), ('no-such-run', 'm', 1, 0, 0, NULL)"
    )
    found = await db.fetch(
        "SELECT run_id, experiment_id FROM latest_metrics WHERE key IN ('given', 'm') ORDER BY 1"
    )
    assert [tuple(row) for row in found] == [("no-such-run", None), ("run-a", 7)]


async def test_a_walked_equality_keeps_up_with_its_runs(db: asyncpg.Connection) -> None:
    # Params and tags carry their run's experiment, start time and stage for the walk along an
    # equality (migration 0013): given by the projector, else filled from the run, or taken when
    # a run stored after them arrives, and kept as the run is deleted and restored.
    await db.execute(
        "INSERT INTO tags (run_id, key, value) "
        "VALUES ('run-e', 'team', 'y'), ('run-g', 'team', 'y')"
    )
    await db.execute("INSERT INTO params (run_id, key, value) VALUES ('run-g', 'lr', '0.01')")
    assert await runs(db, "tags.team = 'y'", view="ALL") == ["run-e", "run-b"]
    await db.execute(
        "INSERT INTO runs (run_id, experiment_id, run_name, user_id, status, start_time, "
        "artifact_uri, lifecycle_stage, root_run_id) "
        "VALUES ('run-g', 1, 'g', 'u', 'RUNNING', 500, 'file:///a', 'active', 'run-g')"
    )
    assert await runs(db, "tags.team = 'y'") == ["run-g", "run-b"]
    assert await runs(db, "params.lr = '0.01'") == ["run-g", "run-b"]
    await db.execute("UPDATE runs SET lifecycle_stage = 'deleted' WHERE run_id = 'run-b'")
    assert await runs(db, "tags.team = 'y'") == ["run-g"]
    assert await runs(db, "params.lr = '0.01'", view="DELETED_ONLY") == ["run-b"]
    assert await runs(db, "tags.team = 'y'", view="DELETED_ONLY") == ["run-e", "run-b"]
    await db.execute("UPDATE runs SET lifecycle_stage = 'active' WHERE run_id <> 'run-a'")
    assert await runs(db, "tags.team = 'y'") == ["run-g", "run-e", "run-b"]
    assert await runs(db, "params.lr = '0.01'") == ["run-g", "run-b"]
    for table in ("params", "tags"):
        differing = await db.fetchval(
            f"SELECT count(*) FROM {table} AS c JOIN runs AS r USING (run_id) "
            "WHERE (c.experiment_id, c.start_time, c.lifecycle_stage) "
            "IS DISTINCT FROM (r.experiment_id, r.start_time, r.lifecycle_stage)"
        )
        assert differing == 0


class _Recorder:
    """A connection that records the statements run through it."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn, self.statements = conn, list[str]()

    async def fetch(self, sql: str, *args: object) -> list[asyncpg.Record]:
        self.statements.append(sql)
        return await self.conn.fetch(sql, *args)

    async def execute(self, sql: str, *args: object) -> str:
        return await self.conn.execute(sql, *args)


async def add_sorted_runs(db: asyncpg.Connection) -> None:
    """Fill experiment 5 with losses that tie, NaN, a run without one and a deleted run."""
    runs_5 = [  # run_id, start_time, loss (None: no loss), rank tag
        ("t1", 10, 1.0, "b"),
        ("t2", 20, 1.0, "b"),
        ("t3", 20, 1.0, "a"),
        ("t4", 5, -0.0, "a"),
        ("t5", 6, 0.0, "b"),
        ("t6", 30, NAN, "a"),
        ("t7", 40, None, "a"),
    ]
    await db.executemany(
        "INSERT INTO runs (run_id, experiment_id, run_name, user_id, status, start_time, "
        "artifact_uri, lifecycle_stage, root_run_id) "
        "VALUES ($1, 5, $1, 'u', 'FINISHED', $2, 'file:///a', 'active', $1)",
        [(run, start) for run, start, _, _ in runs_5] + [("t8", 50)],
    )
    await db.executemany(
        "INSERT INTO latest_metrics (run_id, key, value, ts, step) VALUES ($1, 'loss', $2, 0, 0)",
        [(run, loss) for run, _, loss, _ in runs_5 if loss is not None] + [("t8", 0.5)],
    )
    await db.executemany(
        "INSERT INTO tags (run_id, key, value) VALUES ($1, 'rank', $2)",
        [(run, rank) for run, _, _, rank in runs_5],
    )
    await db.execute("UPDATE runs SET lifecycle_stage = 'deleted' WHERE run_id = 't8'")


@pytest.mark.parametrize(
    ("order_by", "expected"),
    [
        # -0.0 = 0.0 and the three 1.0 tie: start_time DESC, then run_id, decide
        (["metrics.loss"], ["t5", "t4", "t2", "t3", "t1", "t6", "t7"]),
        (["metrics.loss DESC"], ["t2", "t3", "t1", "t5", "t4", "t6", "t7"]),
        (["metrics.loss DESC", "tags.rank"], ["t3", "t2", "t1", "t4", "t5", "t6", "t7"]),
    ],
)
@pytest.mark.parametrize("page_size", [1, 2, 3, 7])
async def test_pages_sorted_by_a_metric_walk_ties_nan_and_missing_values_in_order(
    db: asyncpg.Connection, order_by: list[str], expected: list[str], page_size: int
) -> None:
    await add_sorted_runs(db)
    recorder = _Recorder(db)
    seen: list[str] = []
    token: str | None = None
    async with db.transaction():
        while True:
            plan = compile_run_search(["5"], "", None, page_size, order_by, token)
            ids, token = await queries.search_ids(recorder, plan)  # type: ignore[arg-type]
            seen += ids
            assert plan.walk is not None
            # a page of runs with a loss is the walk's alone; one reaching NaN asks both
            walked_only = len(seen) <= 4  # the walk found this page and one run more
            assert recorder.statements[-1] == (plan.walk.sql if walked_only else plan.sql)
            if token is None:
                break
    assert seen == expected


@pytest.mark.parametrize(
    ("filter_string", "expected"),
    [
        # start times tie (t2, t3 at 20): run_id decides; t8 is deleted
        ("tags.rank = 'a'", ["t7", "t6", "t3", "t4"]),
        ("tags.rank = 'b'", ["run-b", "t2", "t1", "t5"]),
        ("tags.rank = 'b' AND metrics.loss < 1", ["t5"]),
        ("tags.rank = 'b' AND metrics.loss >= 0", ["run-b", "t2", "t1", "t5"]),
    ],
)
@pytest.mark.parametrize("page_size", [1, 2, 3])
async def test_pages_of_a_walked_equality_over_experiments(
    db: asyncpg.Connection, filter_string: str, expected: list[str], page_size: int
) -> None:
    await add_sorted_runs(db)
    await db.execute(
        "INSERT INTO tags (run_id, key, value) VALUES ('run-b', 'rank', 'b'), ('t8', 'rank', 'a')"
    )
    seen: list[str] = []
    token: str | None = None
    while True:
        plan = compile_run_search(["5", "1"], filter_string, None, page_size, None, token)
        assert plan.driver is not None
        ids, token = await fetch(db, plan)
        seen += ids
        if token is None:
            break
        assert len(ids) == page_size
    assert seen == expected


@pytest.mark.parametrize(("share", "walks"), [(20, False), (1, True)])
async def test_a_metric_comparison_few_runs_meet_skips_the_walk(
    db: asyncpg.Connection, share: int, walks: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a page of 1 needs 2 runs; `loss > 0.5` is met by 3 active ones (and t8, deleted)
    monkeypatch.setattr(sqlgen, "_WALK_SHARE", share)
    await add_sorted_runs(db)
    recorder = _Recorder(db)
    plan = compile_run_search(["5"], "metrics.loss > 0.5", None, 1, ["metrics.loss"], None)
    assert plan.walk is not None
    async with db.transaction():
        ids, token = await queries.search_ids(recorder, plan)  # type: ignore[arg-type]
        walked = await db.fetch(plan.walk.sql, *plan.walk.args)
    assert (ids, token) == (["t2"], encode_page_token(1))
    assert [row[0] for row in walked] == (["t2", "t3"] if walks else [])
    assert recorder.statements == ([plan.walk.sql] if walks else [plan.walk.sql, plan.sql])


async def experiments(
    db: asyncpg.Connection,
    filter_string: str = "",
    order_by: list[str] | None = None,
    view: str = "ACTIVE_ONLY",
) -> list[str]:
    plan = compile_experiment_search(filter_string, view, 1000, order_by, None)
    ids, token = await fetch(db, plan)
    assert token is None
    return ids


@pytest.mark.parametrize(
    ("filter_string", "order_by", "view", "expected"),
    [
        ("", None, "ACTIVE_ONLY", ["2", "4", "1"]),  # creation_time DESC, experiment_id ASC
        ("", None, "ALL", ["3", "2", "4", "1"]),
        ("", None, "DELETED_ONLY", ["3"]),
        ("", ["name"], "ACTIVE_ONLY", ["2", "1", "4"]),  # byte order: 'B' < 'a'
        ("", ["creation_time"], "ACTIVE_ONLY", ["1", "4", "2"]),  # ties: experiment_id DESC
        ("", ["last_update_time DESC"], "ALL", ["2", "3", "4", "1"]),
        ("name LIKE '%exp'", None, "ACTIVE_ONLY", ["2", "1"]),
        ("name ILIKE 'beta%'", None, "ACTIVE_ONLY", ["2"]),
        ("name != 'delta'", None, "ACTIVE_ONLY", ["2", "1"]),
        ("tags.team = 'a'", None, "ACTIVE_ONLY", ["4", "1"]),
        ("tags.team IS NULL", None, "ALL", ["3"]),
        ("experiment_id IN ('1', '4')", None, "ACTIVE_ONLY", ["4", "1"]),
        ("experiment_id != '2'", None, "ACTIVE_ONLY", ["4", "1"]),
        ("creation_time >= 20 AND tags.team != 'b'", None, "ACTIVE_ONLY", ["4"]),
    ],
)
async def test_experiment_search(
    db: asyncpg.Connection,
    filter_string: str,
    order_by: list[str] | None,
    view: str,
    expected: list[str],
) -> None:
    assert await experiments(db, filter_string, order_by, view) == expected


async def test_experiment_pages(db: asyncpg.Connection) -> None:
    plan = compile_experiment_search("", "ACTIVE_ONLY", 2, None, None)
    first, token = await fetch(db, plan)
    assert first == ["2", "4"]
    assert token is not None
    plan = compile_experiment_search("", "ACTIVE_ONLY", 2, None, token)
    assert await fetch(db, plan) == (["1"], None)
    plan = compile_experiment_search("", "ACTIVE_ONLY", 3, None, None)
    assert await fetch(db, plan) == (["2", "4", "1"], None)


async def test_memberships_are_chosen_for_a_middling_share_of_runs(
    read_db: asyncpg.Connection,
) -> None:
    # 20,000 runs in two experiments; a fifth carry team=common, ten team=rare, all user=u
    count = 20_000
    await read_db.copy_records_to_table(
        "runs",
        records=[
            (f"r{i}", 5 + i % 2, f"n{i}", "u", "FINISHED", i, "file:///a", "active", f"r{i}", 0)
            for i in range(count)
        ],
        columns=[
            "run_id", "experiment_id", "run_name", "user_id", "status", "start_time",
            "artifact_uri", "lifecycle_stage", "root_run_id", "depth",
        ],
    )  # fmt: skip
    tags = [(f"r{i}", "mlflow.user", "u") for i in range(count)]
    tags += [(f"r{i}", "team", "common" if i % 5 == 0 else f"t{i}") for i in range(count)]
    tags += [(f"r{i}", "rare", "yes") for i in range(10)]
    await read_db.copy_records_to_table("tags", records=tags, columns=["run_id", "key", "value"])
    await read_db.execute("ANALYZE runs")
    await read_db.execute("ANALYZE tags")
    everyone, team, rare = "tags.`mlflow.user` = 'u'", "tags.team = 'common'", "tags.rare = 'yes'"

    async def chosen(filter_string: str, order_by: list[str] | None, rows: int) -> dict[str, str]:
        request = (["5", "6"], filter_string, None, 100, order_by, None)
        plan = compile_run_search(*request)
        members = choose_memberships(await Statistics.read(read_db), plan, 2)
        found = await fetch(read_db, compile_run_search(*request, members))
        assert found == await fetch(read_db, plan)
        assert len(found[0]) == rows
        walks = plan.driver and plan.driver.key
        return {"walks": str(walks), **{m.key: str(m.index in members) for m in plan.memberships}}

    # Walking every run in order: 4,000 matches are cheaper put in a set than looked up along
    # the walk; the planner starts from a rare value's index; a page has every run at once.
    by_name = ["attributes.run_name"]
    assert await chosen(f"{team} AND {rare} AND {everyone}", by_name, 2) == {
        "walks": "None", "team": "True", "rare": "False", "mlflow.user": "False"
    }  # fmt: skip
    # Newest first, the first equality's own runs are walked in order (migration 0013): a page
    # of a common one is found after 500 of them, so the rest are looked up; walking every
    # run's row, a common value's set pays as before.
    assert await chosen(f"{team} AND {rare} AND {everyone}", None, 2) == {
        "walks": "team", "rare": "False", "mlflow.user": "False"
    }  # fmt: skip
    assert await chosen(f"{rare} AND {team}", None, 2) == {"walks": "rare", "team": "False"}
    assert await chosen(f"{everyone} AND {team}", None, 100) == {
        "walks": "mlflow.user", "team": "True"
    }  # fmt: skip
    # sorted by a metric, no search walks runs in order: nothing to choose from
    by_metric = compile_run_search(["5"], "tags.team = 'common'", None, 100, ["metrics.m"], None)
    assert by_metric.memberships == ()
