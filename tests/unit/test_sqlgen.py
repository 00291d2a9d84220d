"""Compiling searches to SQL: user text only ever in args, pagination, limits, view types."""

from __future__ import annotations

import base64
import contextlib
import json
import math
import re
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.search_fields import lifecycle_stages
from api.sqlgen import (
    SearchPlan,
    compile_experiment_search,
    compile_run_search,
)
from api.tokens import (
    HistoryPage,
    decode_history_token,
    decode_page_token,
    encode_history_token,
    encode_page_token,
)
from ingest.errors import MlflowError

# The only quoted text compiled SQL may hold; everything else a user wrote must be an argument.
_FIXED_LITERALS = ("'NaN'::float8", "ESCAPE ''", 'COLLATE "C"')


# An order no index serves: the search finds every run passing the filter, then sorts them
BY_NAME = ["attributes.run_name"]


def runs(
    filter_string: str = "",
    order_by: list[str] | None = None,
    page_token: str | None = None,
    max_results: int | None = 100,
    view: object = "ACTIVE_ONLY",
) -> SearchPlan:
    return compile_run_search(["1"], filter_string, view, max_results, order_by, page_token)


def experiments(
    filter_string: str = "",
    order_by: list[str] | None = None,
    page_token: str | None = None,
    max_results: int | None = 100,
    view: object = "ACTIVE_ONLY",
) -> SearchPlan:
    return compile_experiment_search(filter_string, view, max_results, order_by, page_token)


def flat_args(plan: SearchPlan) -> list[object]:
    out: list[object] = []
    for arg in plan.args:
        out.extend(arg if isinstance(arg, list) else [arg])
    return out


def assert_sql_is_clean(plan: SearchPlan) -> None:
    """Check the SQL holds no quote, comment or statement break other than our own literals;
    so must the walk along a metric, where the search has one."""
    sql = plan.sql
    for literal in _FIXED_LITERALS:
        sql = sql.replace(literal, "")
    for forbidden in ("'", '"', "`", ";", "--", "/*", "\\"):
        assert forbidden not in sql, (forbidden, plan.sql)
    numbers = sorted({int(n) for n in re.findall(r"\$(\d+)::", plan.sql)})
    assert numbers == list(range(1, len(plan.args) + 1))
    if plan.walk is not None:
        assert_sql_is_clean(plan.walk)


def rejects(call: object, message: str) -> None:
    with pytest.raises(MlflowError, match=re.escape(message)) as info:
        call()  # type: ignore[operator]
    assert info.value.http_status == 400


# --- shape of the compiled query -------------------------------------------------------------


def test_default_run_search() -> None:
    plan = compile_run_search(["1"], "", "ACTIVE_ONLY", 10, [], None)
    assert plan.sql.startswith("SELECT r.run_id\nFROM runs AS r\nWHERE r.experiment_id = $1")
    assert 'ORDER BY r.start_time DESC, r.run_id COLLATE "C" ASC' in plan.sql
    assert plan.args == [1, ["active"], 11, 0]
    assert (plan.limit, plan.offset) == (10, 0)
    assert_sql_is_clean(plan)


def test_every_run_predicate_kind_compiles_clean() -> None:
    plan = runs(
        "metrics.acc > 0.5 AND params.lr = '0.1' AND tags.t IS NULL AND params.p IS NOT NULL "
        "AND attributes.run_name LIKE 'a%' AND run_id IN ('a', 'b') AND run_id NOT IN ('c') "
        "AND datasets.context = 'train' AND datasets.name IN ('d') AND end_time != 5 "
        "AND start_time > 1.5 AND created <= 99999999999999999999 AND status ILIKE 'fin%' "
        "AND user_id != 'u' AND artifact_uri = 'x'",
        order_by=["metrics.acc DESC", "params.lr", "tags.t DESC", "end_time", "run_name"],
    )
    assert_sql_is_clean(plan)
    assert "NOT EXISTS (SELECT 1 FROM tags AS k" in plan.sql
    assert "r.run_id = ANY($" in plan.sql
    assert "NOT (r.run_id = ANY($" in plan.sql
    assert "::numeric" in plan.sql  # a start_time beyond bigint compares without overflow


def test_run_name_matches_the_run_name_tag() -> None:
    plan = runs("attributes.run_name LIKE 'my-%'")
    assert "FROM tags AS k" in plan.sql
    assert "r.run_name" not in plan.sql
    assert plan.args[2:4] == ["mlflow.runName", "my-%"]
    walked = runs("attributes.run_name = 'my-run'")  # newest first: along the tag's index
    assert "FROM tags AS eq\n" in walked.sql
    assert "r.run_name" not in walked.sql
    assert walked.driver is not None
    assert (walked.driver.key, walked.driver.value) == ("mlflow.runName", "my-run")


def test_param_and_tag_equality_use_the_prefix_index() -> None:
    long = "v" * 200
    plan = runs(f"params.p = '{long}' AND tags.t = '{long}x' AND params.q != 'x'", BY_NAME)
    assert "k.value_prefix = left($4::text, 200) AND k.value = $4::text)" in plan.sql
    assert "k.value_prefix = left($6::text, 200) AND k.value = $6::text)" in plan.sql
    assert "k.value_prefix = left($8" not in plan.sql
    assert plan.args[3::2][:2] == [long, long + "x"]


def test_a_value_shorter_than_the_prefix_is_decided_by_the_prefix_alone() -> None:
    # a second, redundant test on the whole value made the planner square the selectivity
    sql = runs(f"params.p = '{'v' * 199}' AND tags.t = 'w'", BY_NAME).sql
    assert "AND k.value_prefix = left($4::text, 200))" in sql
    assert "AND k.value_prefix = left($6::text, 200))" in sql
    assert "k.value = $" not in sql


def test_several_experiments_are_merged_from_per_experiment_pages() -> None:
    token = encode_page_token(20)
    plan = compile_run_search(["2", "1", "2"], "tags.t = 'w'", None, 10, ["metrics.m DESC"], token)
    assert plan.args[0] == [2, 1]
    assert "FROM unnest($1::bigint[]) AS x(experiment_id)\nCROSS JOIN LATERAL" in plan.sql
    assert "WHERE r.experiment_id = x.experiment_id\n" in plan.sql
    # each experiment contributes at most the rows up to the end of the page, plus one
    assert plan.args[-3:] == [20 + 10 + 1, 10 + 1, 20]
    inner_order = plan.sql.split("ORDER BY ")[1].split("\n")[0]
    outer_order = plan.sql.split("ORDER BY ")[2].split("\n")[0]
    assert inner_order == (
        "CASE WHEN o1.value IS NULL THEN 2 WHEN o1.value = 'NaN'::float8 THEN 1 ELSE 0 END, "
        'o1.value DESC, r.start_time DESC, r.run_id COLLATE "C" ASC'
    )
    assert outer_order == 's.s0, s.s1 DESC, s.s2 DESC, s.s3 COLLATE "C" ASC'


def test_run_name_order_uses_the_column() -> None:
    assert 'r.run_name COLLATE "C" ASC' in runs(order_by=["attributes.run_name"]).sql


@pytest.mark.parametrize("op", ["=", "<", "<=", ">", ">="])
def test_nan_metrics_never_match_value_comparisons(op: str) -> None:
    assert "k.value <> 'NaN'::float8" in runs(f"metrics.m {op} 1").sql


def test_nan_metrics_match_not_equal() -> None:
    sql = runs("metrics.m != 1").sql
    assert "k.value <> $4::float8" in sql
    assert "'NaN'" not in sql.split("WHERE", 1)[1].split("ORDER BY")[0]


def test_metric_order_puts_nan_after_numbers_and_missing_last() -> None:
    sql = runs(order_by=["metrics.m DESC"]).sql
    assert "LEFT JOIN latest_metrics AS o1 ON o1.run_id = r.run_id AND o1.key = $" in sql
    assert (
        "CASE WHEN o1.value IS NULL THEN 2 WHEN o1.value = 'NaN'::float8 THEN 1 ELSE 0 END, "
        "o1.value DESC" in sql
    )


def test_like_and_ilike_pass_the_pattern_as_is() -> None:
    plan = runs("params.p LIKE '50\\%_x' AND tags.t ILIKE '%A_'")
    assert "LIKE $4::text ESCAPE ''" in plan.sql
    assert "ILIKE $6::text ESCAPE ''" in plan.sql
    assert plan.args[3] == "50\\%_x"
    assert plan.args[5] == "%A_"


def test_a_trailing_backslash_stays_in_the_value() -> None:
    # MLflow's quoting regex reads `\'` as an escaped quote only while a later quote closes
    plan = runs("params.path = 'C:\\'")
    assert plan.args[2] == "C:\\"


def test_start_time_order_is_not_repeated() -> None:
    sql = runs(order_by=["start_time ASC"]).sql
    assert 'ORDER BY r.start_time ASC, r.run_id COLLATE "C" ASC' in sql


def test_experiment_search() -> None:
    plan = experiments(
        "name LIKE 'x%' AND tags.t = 'v' AND experiment_id IN ('1', '2') AND "
        "experiment_id != '3' AND creation_time > 5 AND tags.z IS NOT NULL",
        order_by=["name"],
        page_token=encode_page_token(10),
        view="ALL",
    )
    assert_sql_is_clean(plan)
    assert plan.sql.startswith("SELECT e.experiment_id\nFROM experiments AS e\n")
    assert 'ORDER BY e.name COLLATE "C" ASC, e.experiment_id DESC' in plan.sql
    assert plan.args[0] == ["active", "deleted"]
    assert [1, 2] in plan.args
    assert plan.args[-2:] == [101, 10]


def test_experiment_default_order() -> None:
    sql = experiments().sql
    assert "ORDER BY e.creation_time DESC, e.experiment_id ASC" in sql


# --- user text never reaches the SQL ---------------------------------------------------------

HOSTILE = [
    "x'; DROP TABLE runs; --",
    "x`y",
    'q"q',
    "a -- b",
    "a /* b */ c",
    "$1 OR 1=1",
    "$$ $tag$",
    "naïve ☃ 𝄞 \u2028",
    "50%_\\ x",
    "\\' OR 1=1",
    "x" * 10_000,
]


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_keys_and_values_only_travel_as_args(hostile: str) -> None:
    # Keys: backticks quote anything but a backtick, double quotes anything but a double quote.
    key = f"`{hostile}`" if "`" not in hostile else f'"{hostile}"'
    value = f"'{hostile}'" if "'" not in hostile else f'"{hostile}"'
    if "`" in hostile and '"' in hostile:
        # No MLflow quoting holds both backticks and double quotes: such a key is a 400.
        with pytest.raises(MlflowError):
            runs(f"params.{key} = {value}", [])
        return
    filters = [
        f"params.{key} = {value}",
        f"tags.{key} LIKE {value}",
        f"metrics.{key} > 1",
        f"run_id IN ({value}, 'b')",
        f"datasets.digest = {value}",
        f"attributes.run_name ILIKE {value}",
    ]
    plan = runs(" AND ".join(filters), order_by=[f"params.{key} DESC", f"metrics.{key}"])
    assert_sql_is_clean(plan)
    assert hostile not in plan.sql
    assert hostile in flat_args(plan)

    plan = experiments(f"tags.{key} = {value} AND name LIKE {value}")
    assert_sql_is_clean(plan)
    assert hostile in flat_args(plan)


def test_attribute_aliases_do_not_rename_params_tags_or_metrics() -> None:
    # Found by the property below: `params.`Run Name`` once searched the param "run_name".
    plan = runs(
        "params.`Run Name` = 'a' AND metrics.created > 1 AND tags.`run name` = 'b'",
        ["params.`Created` DESC"],
    )
    args = flat_args(plan)
    assert {"Run Name", "created", "run name", "Created"} <= set(args)
    assert "run_name" not in args
    assert "start_time" not in args


# Without quotes of their kind (and without `\`, which MLflow's quoting lets escape a quote).
_NO_QUOTES = st.text(
    st.characters(blacklist_characters="'`\\\x00", blacklist_categories=["Cs"]), min_size=1
)


@settings(max_examples=300, deadline=None)
@given(key=_NO_QUOTES, value=_NO_QUOTES)
def test_any_key_and_value_only_travel_as_args(key: str, value: str) -> None:
    plan = runs(f"params.`{key}` = '{value}' AND tags.`{key}` != '{value}'", [f"tags.`{key}`"])
    assert_sql_is_clean(plan)
    args = flat_args(plan)
    assert key in args
    assert value in args


# --- pagination (MLflow's test_pagination and test_invalid_page_tokens) ----------------------


def test_page_token_is_mlflow_format() -> None:
    assert encode_page_token(5) == "eyJvZmZzZXQiOiA1fQ=="
    assert decode_page_token("eyJvZmZzZXQiOiA1fQ==") == 5
    assert decode_page_token(base64.b64encode(b'{"offset": "7"}').decode()) == 7
    assert decode_page_token(None) == 0
    assert decode_page_token("") == 0


def _token(value: object) -> str:
    return base64.b64encode(json.dumps(value).encode()).decode()


@pytest.mark.parametrize(
    "after", [(5, -3, 0.1), (-(2**63), 2**63 - 1, -0.0), (0, 0, math.nan), (1, 1, -math.inf)]
)
def test_history_token_resumes_after_the_last_point(after: tuple[int, int, float]) -> None:
    token = encode_history_token(25_000, after)
    page = decode_history_token(token)
    assert page.offset == 25_000
    assert page.after is not None
    # the exact float comes back, NaN and the sign of zero included
    assert [struct.pack("!d", v) for v in page.after[2:]] == [struct.pack("!d", after[2])]
    assert page.after[:2] == after[:2]
    # still MLflow's shape for whoever reads only the offset
    assert decode_page_token(token) == 25_000


def test_history_accepts_mlflow_offset_tokens() -> None:
    assert decode_history_token(encode_page_token(7)) == HistoryPage(offset=7)
    assert decode_history_token(None) == HistoryPage()
    assert decode_history_token("") == HistoryPage()


@pytest.mark.parametrize(
    "after",
    [[1, 2], [1, 2, 3], [1.0, 2, 3.0], [1, True, 3.0], [2**63, 0, 1.0], "1,2,3", {"ts": 1}],
)
def test_invalid_history_tokens(after: object) -> None:
    rejects(lambda: decode_history_token(_token({"offset": 1, "after": after})), "Invalid page")


@pytest.mark.parametrize(
    "token",
    [
        _token({}),
        _token({"offset": "a"}),
        _token({"offsoot": 7}),
        _token({"offset": 0}),
        _token({"offset": -5}),
        _token({"offset": True}),
        _token({"offset": 1.5}),
        _token({"offset": 2**70}),
        _token([1]),
        _token("offset"),
        base64.b64encode(b"not json").decode(),
        base64.b64encode(b"[" * 300).decode(),
        base64.b64encode(b"\xff\xfe").decode(),
        "not base64",
        "eyJvZmZzZXQiOiA1fQ",
        "é",
        "A" * 10_000,
    ],
)
def test_invalid_page_tokens(token: str) -> None:
    rejects(lambda: decode_page_token(token), "Invalid page token")
    rejects(lambda: runs(page_token=token), "Invalid page token")


@pytest.mark.parametrize(
    ("offset", "max_results", "rows", "page", "next_offset"),
    [
        (0, 1, 3, [0], 1),
        (0, 2, 3, [0, 1], 2),
        (0, 3, 3, [0, 1, 2], None),
        (0, 5, 3, [0, 1, 2], None),
        (1, 1, 2, [1], 2),
        (1, 2, 2, [1, 2], None),
        (2, 1, 1, [2], None),
        (3, 1, 0, [], None),
    ],
)
def test_pagination(
    offset: int, max_results: int, rows: int, page: list[int], next_offset: int | None
) -> None:
    token = encode_page_token(offset) if offset else None
    plan = runs(page_token=token, max_results=max_results)
    assert plan.args[-2:] == [max_results + 1, offset]
    # the database returns at most limit + 1 of the rows from `offset` on
    fetched = list(range(offset, offset + min(rows, max_results + 1)))
    got, next_token = plan.page(fetched)
    assert got == page
    assert (decode_page_token(next_token) if next_token else None) == next_offset


# --- limits, view types, experiment ids ------------------------------------------------------


def test_max_results() -> None:
    assert runs(max_results=None).limit == 1000
    assert runs(max_results=50_000).limit == 50_000
    rejects(lambda: runs(max_results=0), "Invalid value 0 for parameter 'max_results' supplied")
    rejects(lambda: runs(max_results=-1), "It must be a positive integer")
    rejects(lambda: runs(max_results=50_001), "Invalid value 50001 for parameter 'max_results'")
    rejects(lambda: runs(max_results=True), "It must be a positive integer")
    assert experiments(max_results=1).limit == 1
    rejects(lambda: experiments(max_results=None), "Invalid value 0 for parameter 'max_results'")
    rejects(lambda: experiments(max_results=0), "It must be a positive integer")
    rejects(lambda: experiments(max_results=50_001), "It must be at most 50000")


ACTIVE, DELETED, BOTH = ["active"], ["deleted"], ["active", "deleted"]


@pytest.mark.parametrize(
    ("view", "stages"),
    [
        (None, ACTIVE),
        ("ACTIVE_ONLY", ACTIVE),
        ("DELETED_ONLY", DELETED),
        ("ALL", BOTH),
        (1, ACTIVE),
        (2, DELETED),
        (3, BOTH),
        ("3", BOTH),  # a number in text, as a query string carries it
        (2.0, DELETED),  # MLflow's parser truncates a float
        (3.9, BOTH),
    ],
)
def test_view_types(view: object, stages: list[str]) -> None:
    assert runs(view=view).args[1] == stages
    assert experiments(view=view).args[0] == stages


@pytest.mark.parametrize(
    "view",
    ["all", "deleted_only", "ALL ", "BOTH", "", "2.0", 0, 4, -1, True, False, math.inf, ["ALL"]],
)
def test_unknown_view_type_is_active_only_as_in_mlflow(view: object) -> None:
    """MLflow's server ignores an enum value it does not know: no error, the default view
    (a lower-case "all" included, which must not reveal deleted runs)."""
    assert runs(view=view).args[1] == ACTIVE
    assert experiments(view=view).args[0] == ACTIVE


@pytest.mark.parametrize("view", ["BOTH", "", 0, 4, True])
def test_runstream_endpoints_refuse_an_unknown_view_type(view: object) -> None:
    rejects(lambda: lifecycle_stages(view, "run_view_type"), "for parameter 'run_view_type'")


def test_experiment_ids() -> None:
    plan = compile_run_search(["0", 7, " 12 "], None, None, None, None, None)
    assert plan.args[0] == [0, 7, 12]
    assert compile_run_search([], None, None, None, None, None).args[0] == []
    for bad in ("abc", "1.5", "99999999999999999999", "", "9" * 5000):
        rejects(
            lambda bad=bad: compile_run_search([bad], None, None, None, None, None),
            "Experiment ID must be a valid integer.",
        )


# --- nothing but MlflowError, whatever comes in ----------------------------------------------

_WORDS = st.sampled_from(
    [
        "metrics.m",
        "params.p",
        "tags.t",
        "run_id",
        "name",
        "experiment_id",
        "created",
        " AND ",
        " IN ",
        "('1')",
        "=",
        "!=",
        ">",
        "'x'",
        "1",
        " IS NULL",
        " LIKE ",
        "`",
        ";",
        "(",
        " DESC",
    ]
)
_SOUP = st.lists(_WORDS, max_size=10).map("".join)


@settings(max_examples=400, deadline=None)
@given(
    filter_string=st.text() | _SOUP,
    order_by=st.lists(st.text(max_size=30) | _SOUP, max_size=3),
    token=st.none()
    | st.text(max_size=40)
    | st.binary(max_size=30).map(lambda b: base64.b64encode(b).decode()),
    max_results=st.integers(min_value=-5, max_value=60_000),
)
def test_compile_raises_only_mlflow_errors(
    filter_string: str, order_by: list[str], token: str | None, max_results: int
) -> None:
    with contextlib.suppress(MlflowError):
        assert_sql_is_clean(runs(filter_string, order_by, token, max_results))
    with contextlib.suppress(MlflowError):
        assert_sql_is_clean(experiments(filter_string, order_by, token, max_results))


def test_equalities_of_a_walk_in_run_order_may_become_memberships() -> None:
    plan = runs(
        "params.p = 'a' AND tags.t != 'b' AND attributes.run_name = 'n' AND metrics.m > 1", BY_NAME
    )
    assert [(m.index, m.table, m.key, m.value) for m in plan.memberships] == [
        (0, "params", "p", "a"),
        (2, "tags", "mlflow.runName", "n"),
    ]
    assert "IS TRUE" not in plan.sql  # chosen by the caller only
    members = compile_run_search(
        ["1"], "params.p = 'a' AND tags.t = 'b'", None, 10, BY_NAME, None, [1]
    )
    assert "EXISTS (SELECT 1 FROM params AS k" in members.sql
    assert "(r.run_id IN (SELECT k.run_id FROM tags AS k WHERE k.key = " in members.sql
    assert_sql_is_clean(members)
    # newest first, the first equality is walked (`_driver`) and is no membership; the rest
    # are tested on the walked row's run
    walked = compile_run_search(["1"], "params.p = 'a' AND tags.t = 'b'", None, 10, None, None, [1])
    assert [m.index for m in walked.memberships] == [1]
    assert "(eq.run_id IN (SELECT k.run_id FROM tags AS k WHERE k.key = " in walked.sql
    assert_sql_is_clean(walked)
    # sorted by a metric, the search does not walk runs in their order: no memberships
    sorted_by = compile_run_search(["1"], "params.p = 'a'", None, 10, ["metrics.m"], None)
    assert sorted_by.memberships == ()


def test_a_metric_walk_tests_two_or_more_equalities_as_memberships_of_its_experiment() -> None:
    def walk(filter_string: str) -> str:
        plan = compile_run_search(["7"], filter_string, None, 10, ["metrics.m"], None)
        assert plan.walk is not None
        assert_sql_is_clean(plan.walk)
        return plan.walk.sql

    # one equality: a lookup per walked run, as PostgreSQL plans it, in no particular experiment
    alone = walk("params.p = 'a' AND metrics.n > 1")
    assert "EXISTS (SELECT 1 FROM params AS k WHERE k.run_id = o1.run_id AND k.key = " in alone
    assert "AND k.experiment_id" not in alone.split("FROM params")[1]
    # two: each a set of the experiment's runs with the value, the run name's tag included
    both = walk("params.p = 'a' AND attributes.run_name = 'n' AND tags.t != 'b'")
    for table in ("params", "tags"):
        assert f"(o1.run_id IN (SELECT k.run_id FROM {table} AS k WHERE k.key = " in both
    assert both.count("AND k.experiment_id = $1::bigint") == 2
    assert "EXISTS (SELECT 1 FROM tags AS k" in both  # `!=` stays a lookup
    assert "r.experiment_id" not in both  # the walked value's experiment is its run's


def test_a_metric_walk_offers_its_equalities_and_tests_as_sets_those_chosen() -> None:
    asked = (["7"], "params.p = 'a' AND tags.t = 'b' AND metrics.n > 1", None, 10, ["metrics.m"])
    plan = compile_run_search(*asked, None)
    assert plan.memberships == ()  # the general query sorts: nothing to choose for it
    assert plan.walk is not None
    assert plan.walk.experiment == 7
    assert [(m.index, m.table, m.key) for m in plan.walk.memberships] == [
        (0, "params", "p"),
        (1, "tags", "t"),
    ]
    # chosen: the tag's set, and a lookup of the param for each run that passed it
    chosen = compile_run_search(*asked, None, [1]).walk
    assert chosen is not None
    assert "(o1.run_id IN (SELECT k.run_id FROM tags AS k WHERE k.key = " in chosen.sql
    assert "EXISTS (SELECT 1 FROM params AS k WHERE k.run_id = o1.run_id" in chosen.sql
    assert_sql_is_clean(chosen)
    # a lone equality is never offered
    lone = compile_run_search(["7"], "params.p = 'a'", None, 10, ["metrics.m"], None).walk
    assert lone is not None
    assert lone.memberships == ()


def test_newest_first_a_param_or_tag_equality_walks_its_own_runs() -> None:
    plan = runs("tags.team = 'nlp' AND params.lr != '1' AND attributes.status = 'FINISHED'")
    assert plan.sql.startswith(
        "SELECT eq.run_id\nFROM tags AS eq\nLEFT JOIN runs AS r ON r.run_id = eq.run_id\nWHERE "
    )
    where = plan.sql.split("\nWHERE ", 1)[1].split("\nORDER BY")[0].split("\n  AND ")
    assert where[:4] == [
        "eq.key = $4::text",
        "eq.value_prefix = left($3::text, 200)",
        "eq.experiment_id = $1::bigint",
        "eq.lifecycle_stage = ANY($2::text[])",
    ]
    assert plan.args[:4] == [1, ["active"], "nlp", "team"]
    # the rest of the filter, on the walked row's run; the run's own columns join it
    assert where[4].startswith("EXISTS (SELECT 1 FROM params AS k WHERE k.run_id = eq.run_id ")
    assert where[5] == "r.status = $7::text"
    assert 'ORDER BY eq.start_time DESC, eq.run_id COLLATE "C" ASC\n' in plan.sql
    assert "r.lifecycle_stage" not in plan.sql
    assert "r.experiment_id" not in plan.sql  # counted twice, it halved the planner's estimate
    assert plan.memberships == ()
    assert_sql_is_clean(plan)


def test_the_walked_rows_alias_is_no_predicates_alias() -> None:
    # a dataset condition's own alias once shadowed the walked rows', linking it to itself
    sql = runs("tags.t = 'a' AND datasets.name = 'd' AND params.p != 'b'").sql
    assert "FROM run_dataset_inputs AS d WHERE d.run_id = eq.run_id AND " in sql
    assert "FROM params AS k WHERE k.run_id = eq.run_id AND " in sql


def test_a_walked_value_longer_than_the_prefix_is_compared_whole() -> None:
    long = "v" * 200
    plan = runs(f"params.p = '{long}'")
    assert "AND eq.value = $3::text\n" in plan.sql
    assert "eq.value =" not in runs(f"params.p = '{long[1:]}'").sql


def test_walked_equalities_of_several_experiments_merge_per_experiment_pages() -> None:
    plan = compile_run_search(["1", "2"], "params.p = 'a'", None, 10, None, None)
    assert (
        "CROSS JOIN LATERAL (SELECT eq.run_id AS run_id, eq.start_time AS s0, eq.run_id AS s1\n"
        in (plan.sql)
    )
    assert "eq.experiment_id = x.experiment_id\n" in plan.sql
    assert plan.sql.startswith("SELECT s.run_id\n")
    assert_sql_is_clean(plan)


@pytest.mark.parametrize(
    ("order_by", "walks"),
    [
        (None, True),
        (["attributes.start_time ASC"], True),
        (["start_time DESC", "attributes.run_name"], True),
        (["attributes.end_time"], False),
        (["metrics.m"], False),
        (["params.p"], False),
    ],
)
def test_only_an_order_starting_with_start_time_walks_an_equality(
    order_by: list[str] | None, walks: bool
) -> None:
    plan = runs("params.p = 'a'", order_by)
    assert (plan.driver is not None) == walks
    assert ("FROM params AS eq" in plan.sql) == walks


def test_a_search_of_one_experiment_sorted_by_a_metric_walks_its_values() -> None:
    token = encode_page_token(30)
    plan = runs(
        "metrics.acc > 0.9 AND params.p = 'a' AND tags.t IS NULL",
        ["metrics.m DESC", "params.p"],
        token,
        max_results=10,
    )
    walk = plan.walk
    assert walk is not None
    assert_sql_is_clean(plan)
    assert (walk.limit, walk.offset) == (plan.limit, plan.offset) == (10, 30)
    assert walk.args[:2] == [1, "m"]
    assert walk.args[-2:] == [11, 30]
    assert "FROM latest_metrics AS o1\nJOIN runs AS r ON r.run_id = o1.run_id\n" in walk.sql
    # a gate first: the comparison must be met by 20 runs for each of the 41 the page needs
    gate = (
        "WHERE (SELECT count(*) FROM (SELECT FROM latest_metrics AS k WHERE k.experiment_id = "
        "$1::bigint AND k.key = $4::text AND k.value > $5::float8 AND k.value <> 'NaN'::float8 "
        "LIMIT $3::bigint) AS c) >= $3::bigint\n"
    )
    assert gate in walk.sql
    assert walk.args[2:5] == [20 * 41, "acc", 0.9]
    ungated = runs("params.p = 'a'", ["metrics.m"]).walk
    assert ungated is not None
    assert "count(*)" not in ungated.sql
    assert "\n  AND o1.experiment_id = $1::bigint\n  AND o1.key = $2::text\n" in walk.sql
    assert "AND o1.value <> 'NaN'::float8\n" in walk.sql
    # the metric comparison is a set of the experiment's runs, tested on the walked row
    assert (
        "(o1.run_id IN (SELECT k.run_id FROM latest_metrics AS k WHERE k.experiment_id = "
        "$1::bigint AND k.key = $" in walk.sql
    )
    assert "EXISTS (SELECT 1 FROM params AS k WHERE k.run_id = o1.run_id" in walk.sql
    assert "NOT EXISTS (SELECT 1 FROM tags AS k WHERE k.run_id = o1.run_id" in walk.sql
    # numbers only, so the value alone leads; the later keys sort as in the general query
    assert "LEFT JOIN params AS o2 ON o2.run_id = r.run_id" in walk.sql
    order = walk.sql.split("ORDER BY ")[1].split("\n")[0]
    assert order.startswith("o1.value DESC, (o2.value IS NULL), o2.value COLLATE")
    assert order.endswith('r.start_time DESC, r.run_id COLLATE "C" ASC')


@pytest.mark.parametrize(
    ("experiment_ids", "order_by"),
    [
        (["1", "2"], ["metrics.m"]),  # merged per experiment instead
        (["1"], None),
        (["1"], ["params.p", "metrics.m"]),
        (["1"], ["start_time"]),
    ],
)
def test_only_one_experiment_sorted_by_a_metric_first_walks(
    experiment_ids: list[str], order_by: list[str] | None
) -> None:
    assert compile_run_search(experiment_ids, "", None, 10, order_by, None).walk is None
