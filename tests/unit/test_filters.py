"""The MLflow filter and order_by grammar: cases ported from MLflow's test_search_utils.py."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.filters import (
    MAX_PREDICATES,
    InList,
    IsNull,
    NumberCompare,
    Predicate,
    TextCompare,
    parse_experiment_filter,
    parse_run_filter,
)
from api.ordering import OrderKey, parse_experiment_order_by, parse_run_order_by
from ingest.errors import MlflowError


def num(entity: str, key: str, op: str, value: float) -> Predicate:
    return NumberCompare(entity=entity, key=key, op=op, value=value)  # type: ignore[arg-type]


def text(entity: str, key: str, op: str, value: str) -> Predicate:
    return TextCompare(entity=entity, key=key, op=op, value=value)  # type: ignore[arg-type]


def rejects(parse: Callable[[Any], object], argument: object, message: str) -> None:
    with pytest.raises(MlflowError, match=re.escape(message)) as info:
        parse(argument)
    assert info.value.error_code == "INVALID_PARAMETER_VALUE"
    assert info.value.http_status == 400


# --- runs: valid filters (MLflow's test_filter and test_correct_quote_trimming) ---------------

PORTED: list[tuple[str, list[Predicate]]] = [
    ("metric.acc >= 0.94", [num("metric", "acc", ">=", 0.94)]),
    ("metric.acc>=100", [num("metric", "acc", ">=", 100.0)]),
    ("params.m!='tf'", [text("parameter", "m", "!=", "tf")]),
    ('params."m"!="tf"', [text("parameter", "m", "!=", "tf")]),
    ('metric."legit name" >= 0.243', [num("metric", "legit name", ">=", 0.243)]),
    ("metrics.XYZ = 3", [num("metric", "XYZ", "=", 3.0)]),
    ('params."cat dog" = "pets"', [text("parameter", "cat dog", "=", "pets")]),
    ('metrics."X-Y-Z" = 3', [num("metric", "X-Y-Z", "=", 3.0)]),
    ('metrics."X//Y#$$@&Z" = 3', [num("metric", "X//Y#$$@&Z", "=", 3.0)]),
    ("params.model = 'LinearRegression'", [text("parameter", "model", "=", "LinearRegression")]),
    (
        "metrics.rmse < 1 and params.model_class = 'LR'",
        [num("metric", "rmse", "<", 1.0), text("parameter", "model_class", "=", "LR")],
    ),
    ("", []),
    ("`metric`.a >= 0.1", [num("metric", "a", ">=", 0.1)]),
    ("tags.version = 'commit-hash'", [text("tag", "version", "=", "commit-hash")]),
    ("`tags`.source_name = 'a notebook'", [text("tag", "source_name", "=", "a notebook")]),
    ('metrics."accuracy.2.0" > 5', [num("metric", "accuracy.2.0", ">", 5.0)]),
    ("metrics.`spacey name` > 5", [num("metric", "spacey name", ">", 5.0)]),
    ('params."p.a.r.a.m" != "a"', [text("parameter", "p.a.r.a.m", "!=", "a")]),
    ('tags."t.a.g" = "a"', [text("tag", "t.a.g", "=", "a")]),
    ("attribute.artifact_uri = '1/23/4'", [text("attribute", "artifact_uri", "=", "1/23/4")]),
    ("attribute.start_time >= 1234", [num("attribute", "start_time", ">=", 1234)]),
    ("run.status = 'RUNNING'", [text("attribute", "status", "=", "RUNNING")]),
    ("dataset.name = 'my_dataset'", [text("dataset", "name", "=", "my_dataset")]),
    ("tags.version IS NULL", [IsNull(entity="tag", key="version", negated=False)]),
    ("tags.version IS NOT NULL", [IsNull(entity="tag", key="version", negated=True)]),
    ("params.lr IS NULL", [IsNull(entity="parameter", key="lr", negated=False)]),
    ("params.lr IS NOT NULL", [IsNull(entity="parameter", key="lr", negated=True)]),
    (
        "tags.a IS NULL AND params.b = 'val'",
        [IsNull(entity="tag", key="a", negated=False), text("parameter", "b", "=", "val")],
    ),
    ("params.m = 'LR'", [text("parameter", "m", "=", "LR")]),
    ('params.m = "LR"', [text("parameter", "m", "=", "LR")]),
    ('params.m = "L\'Hosp"', [text("parameter", "m", "=", "L'Hosp")]),
]

# Every identifier spelling MLflow accepts, and what each resolves to.
SPELLINGS: list[tuple[str, list[Predicate]]] = [
    *[(f"{t}.a = 1", [num("metric", "a", "=", 1.0)]) for t in ("metric", "metrics")],
    *[
        (f"{t}.a = 'x'", [text("parameter", "a", "=", "x")])
        for t in ("param", "params", "parameter", "parameters", "`params`")
    ],
    *[(f"{t}.a = 'x'", [text("tag", "a", "=", "x")]) for t in ("tag", "tags", "`tag`")],
    *[
        (f"{t}.status = 'x'", [text("attribute", "status", "=", "x")])
        for t in ("attribute", "attributes", "attr", "run", "`attr`")
    ],
    *[
        (f"{t}.digest = 'x'", [text("dataset", "digest", "=", "x")])
        for t in ("dataset", "datasets")
    ],
    ("status = 'x'", [text("attribute", "status", "=", "x")]),
    ("user_id = 'x'", [text("attribute", "user_id", "=", "x")]),
    ("created > 5", [num("attribute", "start_time", ">", 5)]),
    ("attributes.Created <= -5", [num("attribute", "start_time", "<=", -5)]),
    ("end_time != 1.5", [num("attribute", "end_time", "!=", 1.5)]),
    ("`Run name` LIKE 'a%'", [text("attribute", "run_name", "LIKE", "a%")]),
    ("\"Run Name\" ILIKE 'a%'", [text("attribute", "run_name", "ILIKE", "a%")]),
    ("attributes.`run name` = 'a'", [text("attribute", "run_name", "=", "a")]),
    ("attributes.run_name != 'a'", [text("attribute", "run_name", "!=", "a")]),
    ("tags.mlflow.rootRunId = 'r1'", [text("tag", "mlflow.rootRunId", "=", "r1")]),
    ("tags.\"mlflow.parentRunId\" = 'p'", [text("tag", "mlflow.parentRunId", "=", "p")]),
    ("tags.'quoted' = 'x'", [text("tag", "quoted", "=", "x")]),
    ("tags.a.b.c = 'x'", [text("tag", "a.b.c", "=", "x")]),
    ("metrics.1e5 = 1", [num("metric", "1e5", "=", 1.0)]),
    ("params.AND = 'x'", [text("parameter", "AND", "=", "x")]),
    (
        "params.a like 'x%' and params.b ilike 'Y%'",
        [
            text("parameter", "a", "LIKE", "x%"),
            text("parameter", "b", "ILIKE", "Y%"),
        ],
    ),
    ("params.a = 'it''s'", [text("parameter", "a", "=", "it''s")]),  # MLflow unescapes nothing
    ("params.a = ''", [text("parameter", "a", "=", "")]),
    ("metrics.a > -1.5e-3", [num("metric", "a", ">", -1.5e-3)]),
    ("metrics.a>-1", [num("metric", "a", ">", -1.0)]),
    (
        "metrics.a < .5 AND metrics.b > 5.",
        [num("metric", "a", "<", 0.5), num("metric", "b", ">", 5.0)],
    ),
    ("metrics.a > 1e999", [num("metric", "a", ">", float("inf"))]),
    ("start_time = 99999999999999999999", [num("attribute", "start_time", "=", 10**20 - 1)]),
    (
        "run_id IN ('a', \"b\",)",
        [InList(entity="attribute", key="run_id", negated=False, values=("a", "b"))],
    ),
    (
        "run_id not in ('a')",
        [InList(entity="attribute", key="run_id", negated=True, values=("a",))],
    ),
    (
        "datasets.context IN ('train')",
        [InList(entity="dataset", key="context", negated=False, values=("train",))],
    ),
    (
        "dataset.name NOT IN ('a', 'b')",
        [InList(entity="dataset", key="name", negated=True, values=("a", "b"))],
    ),
    ("params.a is not null", [IsNull(entity="parameter", key="a", negated=True)]),
    # MLflow ignores stray ANDs; so do we
    ("metrics.a = 1 AND", [num("metric", "a", "=", 1.0)]),
    (
        "AND metrics.a = 1 AND AND metrics.b = 2",
        [num("metric", "a", "=", 1.0), num("metric", "b", "=", 2.0)],
    ),
    ("  \n\t", []),
]


@pytest.mark.parametrize(("filter_string", "expected"), PORTED + SPELLINGS)
def test_run_filter_parses(filter_string: str, expected: list[Predicate]) -> None:
    assert list(parse_run_filter(filter_string)) == expected


def test_absent_filter_is_no_filter() -> None:
    assert parse_run_filter(None) == ()
    assert parse_experiment_filter(None) == ()


# --- runs: rejected filters (MLflow's test_error_filter, test_bad_quotes, ...) ----------------

RUN_ERRORS = [
    ("metric.acc >= 0.94; metrics.rmse < 1", "Search filter contained multiple expression"),
    ("m.acc >= 0.94", "Invalid entity type 'm'"),
    ("acc >= 0.94", "Invalid attribute key 'acc'"),
    ("p.model >= 'LR'", "Invalid entity type"),
    ("attri.x != 1", "Invalid entity type"),
    ("a.x != 1", "Invalid entity type"),
    ("model >= 'LR'", "Invalid attribute key"),
    ("metrics.A > 0.1 OR params.B = 'LR'", "Invalid clause(s) in filter string"),
    ("metrics.A > 0.1 NAND params.B = 'LR'", "Invalid clause(s) in filter string"),
    ("metrics.A > 0.1 AND (params.B = 'LR')", "Invalid clause(s) in filter string"),
    ("`metrics.A > 0.1", "Invalid clause(s) in filter string"),
    ("param`.A > 0.1", "Invalid clause(s) in filter string"),
    ("`dummy.A > 0.1", "Invalid clause(s) in filter string"),
    ("dummy`.A > 0.1", "Invalid clause(s) in filter string"),
    ("attribute.start != 1", "Invalid attribute key"),
    ("attribute.experiment_id != 1", "Invalid attribute key 'experiment_id'"),
    ("attribute.lifecycle_stage = 'ACTIVE'", "Invalid attribute key 'lifecycle_stage'"),
    ("attribute.name != 1", "Invalid attribute key"),
    ("attribute.time != 1", "Invalid attribute key"),
    ("attribute._status != 'RUNNING'", "Invalid attribute key"),
    ("attribute.status = true", "Invalid clause(s) in filter string"),
    ("dataset.status = 'true'", "Invalid dataset key"),
    ("dataset.profile = 'num_rows: 10'", "Invalid dataset key"),
    ("metrics.acc IS NULL", "IS NULL / IS NOT NULL is only supported for tags and params"),
    ("attribute.status IS NULL", "IS NULL / IS NOT NULL is only supported for tags and params"),
    ("metric.model = 'LR'", "Expected numeric value type for metric. Found 'LR'"),
    ("metric.model = '5'", "Expected numeric value type for metric"),
    ("params.acc = 5", "Expected a quoted string value for parameter"),
    ("tags.acc = 5", "Expected a quoted string value for tag"),
    ("metrics.acc != metrics.acc", "Expected numeric value type for metric. Found metrics.acc"),
    ("1.0 > metrics.acc", "Invalid comparison clause. Expected 'Identifier' found '1.0'"),
    ("attribute.status = 1", "Expected a quoted string value for attributes"),
    ("params.acc = LR", "value is either not quoted or unidentified quote types"),
    ("tags.acc = LR", "value is either not quoted or unidentified quote types"),
    ("params.acc = `LR`", "value is either not quoted or unidentified quote types"),
    ("params.'acc = LR", "Invalid clause(s) in filter string"),
    ("params.acc = 'LR", "Invalid clause(s) in filter string"),
    ("params.acc = LR'", "Invalid clause(s) in filter string"),
    ("params.acc = \"LR'", "Invalid clause(s) in filter string"),
    ("tags.acc = \"LR'", "Invalid clause(s) in filter string"),
    ("tags.acc = = 'LR'", "Invalid clause(s) in filter string"),
    ("attribute.status IS 'RUNNING'", "Invalid clause(s) in filter string"),
    ("params.acc LR !=", "Invalid clause(s) in filter string"),
    ("params.acc LR", "Invalid clause(s) in filter string"),
    ("metric.acc !=", "Invalid clause(s) in filter string"),
    ("acc != 1.0", "Invalid attribute key"),
    ("foo is null", "Invalid attribute key"),
    ("1=1", "Expected 'Identifier' found"),
    ("1==2", "Expected 'Identifier' found"),
    # MLflow's parser lets this through and its store rejects it; we reject while parsing
    ("`params`.model >= 'LR'", "Invalid comparator '>='"),
    # OR, NOT, parentheses, comments and statements
    ("NOT metrics.a = 1", "Invalid clause(s) in filter string"),
    ("(metrics.a = 1)", "Invalid clause(s) in filter string"),
    ("metrics.a = 1 -- comment", "Invalid clause(s) in filter string"),
    ("metrics.a = 1 /* comment */", "Invalid clause(s) in filter string"),
    ("metrics.a = 1;", "Invalid clause(s) in filter string"),
    ("metrics.a = 1; DROP TABLE runs", "Search filter contained multiple expression"),
    ("metrics.a = 1 metrics.b = 2", "Invalid clause(s) in filter string"),
    ("params.a = NULL", "Invalid clause(s) in filter string"),
    ("metrics . a = 1", "Invalid clause(s) in filter string"),
    ("\"tags\".a = 'x'", "Invalid entity type '\"tags\"'"),
    ("TAGS.a = 'x'", "Invalid entity type 'TAGS'"),
    ("'Run name' = 'x'", "Expected 'Identifier' found ''Run name''"),
    # lists
    ("run_id IN ()", "expected a non-empty list of string values, but got empty list"),
    ("run_id IN (1, 2)", "expected string value, punctuation, or whitespace"),
    ("run_id IN ('a' 'b')", "got ill-formed list"),
    ("run_id IN ('a',, 'b')", "got ill-formed list"),
    ("run_id IN 'a'", "Invalid clause(s) in filter string"),
    ("run_id IN (('a'))", "Invalid clause(s) in filter string"),
    ("status IN ('a')", "Only ['run_id'] attributes support comparison with a list"),
    ("params.a IN ('a')", "Expected a quoted string value for parameter (e.g. 'my-value')"),
    ("metrics.a IN (1)", "Expected numeric value type for metric. Found (1)"),
    ("start_time IN (1)", "Expected numeric value type for numeric attribute: start_time"),
    ("run_id = ('a', 'b')", "IN and NOT IN take a list"),
    # comparators per type
    ("params.a NOT LIKE 'x'", "Invalid comparator 'NOT LIKE'"),
    ("params.a <> 'x'", "Invalid comparator '<>'"),
    ("params.a == 'x'", "Invalid comparator '=='"),
    ("params.a RLIKE 'x'", "Invalid comparator 'RLIKE'"),
    ("metrics.a LIKE 1", "Invalid comparator 'LIKE'"),
    ("end_time IS NULL", "IS NULL / IS NOT NULL is only supported for tags and params"),
    ("created = '1'", "Expected numeric value type for numeric attribute: created. Found '1'"),
    ("metrics.a > 0x1F", "Expected numeric value type for metric. Found 0x1F"),
    ("metrics.a = 'nan'", "Expected numeric value type for metric"),
    # text PostgreSQL could not bind
    ("params.a = 'x\x00y'", "NUL characters are not allowed"),
    ("params.a = '\ud800'", "not valid Unicode"),
]


@pytest.mark.parametrize(("filter_string", "message"), RUN_ERRORS)
def test_run_filter_rejects(filter_string: str, message: str) -> None:
    rejects(parse_run_filter, filter_string, message)


@pytest.mark.parametrize(
    ("entity", "bad_comparators", "key", "value"),
    [
        ("metrics", ["~", "~=", "LIKE", "<>"], "abc", "1.0"),
        ("params", [">", "<", ">=", "<=", "~", "NOT LIKE"], "abc", "'my-param-value'"),
        ("tags", [">", "<", ">=", "<=", "~"], "abc", "'my-tag-value'"),
        ("attributes", [">", "<", ">=", "<=", "~"], "status", "'my-tag-value'"),
        ("attributes", ["LIKE", "ILIKE"], "start_time", "1234"),
        ("datasets", [">", "<", ">=", "<=", "~"], "name", "'my-dataset-name'"),
    ],
)
def test_bad_comparators(entity: str, bad_comparators: list[str], key: str, value: str) -> None:
    for comparator in bad_comparators:
        with pytest.raises(MlflowError, match="Invalid comparator"):
            parse_run_filter(f"{entity}.{key} {comparator} {value}")


def test_too_many_comparisons_is_400() -> None:
    many = " AND ".join(f"metrics.m{i} > {i}" for i in range(MAX_PREDICATES + 1))
    rejects(parse_run_filter, many, "more than")
    assert (
        len(parse_run_filter(" AND ".join(many.split(" AND ")[:MAX_PREDICATES]))) == MAX_PREDICATES
    )


# --- experiments -----------------------------------------------------------------------------

EXPERIMENT_VALID: list[tuple[str, list[Predicate]]] = [
    ("name = 'x'", [text("attribute", "name", "=", "x")]),
    ("attribute.name LIKE 'exp-%'", [text("attribute", "name", "LIKE", "exp-%")]),
    ("`name` ILIKE '%X%'", [text("attribute", "name", "ILIKE", "%X%")]),
    (
        "name LIKE 'exp-%' AND tags.team = 'a'",
        [
            text("attribute", "name", "LIKE", "exp-%"),
            text("tag", "team", "=", "a"),
        ],
    ),
    ("tag.a != 'x'", [text("tag", "a", "!=", "x")]),
    ('tags."a b" IS NULL', [IsNull(entity="tag", key="a b", negated=False)]),
    ("tags.a IS NOT NULL", [IsNull(entity="tag", key="a", negated=True)]),
    ("experiment_id = '1'", [num("attribute", "experiment_id", "=", 1)]),
    ("experiment_id != '7'", [num("attribute", "experiment_id", "!=", 7)]),
    (
        "experiment_id IN ('1', '2')",
        [InList(entity="attribute", key="experiment_id", negated=False, values=(1, 2))],
    ),
    (
        "experiment_id NOT IN ('0')",
        [InList(entity="attribute", key="experiment_id", negated=True, values=(0,))],
    ),
    ("creation_time > 1", [num("attribute", "creation_time", ">", 1)]),
    ("last_update_time <= -5", [num("attribute", "last_update_time", "<=", -5)]),
]


@pytest.mark.parametrize(("filter_string", "expected"), EXPERIMENT_VALID)
def test_experiment_filter_parses(filter_string: str, expected: list[Predicate]) -> None:
    assert list(parse_experiment_filter(filter_string)) == expected


EXPERIMENT_ERRORS = [
    ("attributes.name = 'x'", "Invalid entity type 'attributes'. Valid entity types are"),
    ("`tag`.a = 'x'", "Invalid entity type '`tag`'"),
    ("params.a = 'x'", "Invalid entity type 'params'"),
    ("lifecycle_stage = 'active'", "Invalid attribute key 'lifecycle_stage'"),
    ("name IS NULL", "IS NULL / IS NOT NULL is only supported for tags, not for attribute 'name'"),
    ("experiment_id = 1", "Expected a quoted string value for attributes. Got value 1"),
    ("experiment_id = 'a'", "Invalid experiment ID 'a'. Experiment ID must be a valid integer."),
    ("experiment_id IN ('1', 'x')", "Invalid experiment ID 'x'"),
    ("experiment_id = '99999999999999999999'", "Invalid experiment ID"),
    ("experiment_id > '1'", "Invalid comparator for experiment_id: >"),
    ("experiment_id LIKE '1'", "Invalid comparator for experiment_id: LIKE"),
    ("experiment_id = ('1')", "IN and NOT IN take a list"),
    ("creation_time > 1.5", "Invalid value for numeric attribute 'creation_time': '1.5'"),
    ("creation_time > '1'", "Expected numeric value type for numeric attribute: creation_time"),
    ("creation_time LIKE 1", "Invalid comparator 'LIKE'"),
    ("name IN ('a')", "Only ['experiment_id'] attributes support comparison with a list"),
    ("name > 'a'", "Invalid comparator '>'"),
    ("tags.a > 'x'", "Invalid comparator for tag: >"),
    ("tags.a IN ('x')", "Expected a quoted string value for tag (e.g. 'my-value')"),
    ("tags.a = x", "value is either not quoted"),
    ("name = 'a' OR name = 'b'", "Invalid clause(s) in filter string"),
]


@pytest.mark.parametrize(("filter_string", "message"), EXPERIMENT_ERRORS)
def test_experiment_filter_rejects(filter_string: str, message: str) -> None:
    rejects(parse_experiment_filter, filter_string, message)


# --- hostile input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "filter_string",
    [
        "(" * 10_000 + "metrics.a = 1" + ")" * 10_000,
        "metrics.a = " + "(" * 50_000,
        "params.a = '" + "\\'" * 5_000,
        "params.a = '" + "''" * 5_000,
        "'" * 10_001,
        "`" * 10_001,
        "metrics." + "a." * 5_000 + " = 1",
        "1" * 10_000 + "a",
        "metrics.a = " + "9" * 10_000,
        "run_id IN (" + "'x'," * 5_000 + ")",
    ],
)
def test_hostile_input_is_400_or_parses(filter_string: str) -> None:
    for parse in (parse_run_filter, parse_experiment_filter):
        with contextlib.suppress(MlflowError):
            parse(filter_string)


def test_ten_thousand_character_values_parse() -> None:
    value = "v" * 10_000
    assert parse_run_filter(f"params.p = '{value}'") == (text("parameter", "p", "=", value),)


_VOCABULARY = [
    "metrics.a",
    "params.p",
    "tags.t",
    "attributes.status",
    "run_id",
    "created",
    "datasets.name",
    "`Run name`",
    '"k"',
    "experiment_id",
    "name",
    "tags.`x`",
    " AND ",
    " and ",
    " OR ",
    "NOT",
    " IN ",
    " NOT IN ",
    " IS NULL",
    " IS NOT NULL",
    " LIKE ",
    " ILIKE ",
    "=",
    "!=",
    "<",
    ">=",
    "'v'",
    '"v"',
    "1",
    "-2.5e3",
    "(",
    ")",
    ",",
    ";",
    ".",
    "`",
    "'",
    '"',
    " ",
    "--",
    "/*",
    "\\",
    "\x00",
    "é",
    "\u2028",
]


@settings(max_examples=400, deadline=None)
@given(st.text())
def test_random_text_raises_only_mlflow_errors(filter_string: str) -> None:
    for parse in (parse_run_filter, parse_experiment_filter):
        with contextlib.suppress(MlflowError):
            parse(filter_string)


@settings(max_examples=600, deadline=None)
@given(st.lists(st.sampled_from(_VOCABULARY), max_size=12).map("".join))
def test_token_soup_raises_only_mlflow_errors(filter_string: str) -> None:
    for parse in (parse_run_filter, parse_experiment_filter):
        with contextlib.suppress(MlflowError):
            parse(filter_string)


# --- order_by (MLflow's test_invalid_order_by_search_runs and friends) ---------------------

TAIL = (
    OrderKey(entity="attribute", key="start_time", ascending=False),
    OrderKey(entity="attribute", key="run_id", ascending=True),
)


@pytest.mark.parametrize(
    ("order_by", "expected"),
    [
        (None, TAIL),
        ([], TAIL),
        (
            ["metrics.`Mean Square Error`"],
            (OrderKey(entity="metric", key="Mean Square Error", ascending=True), *TAIL),
        ),
        (
            ["metrics.`Mean Square Error` ASC"],
            (OrderKey(entity="metric", key="Mean Square Error", ascending=True), *TAIL),
        ),
        (
            ["metrics.`Mean Square Error` DESC"],
            (OrderKey(entity="metric", key="Mean Square Error", ascending=False), *TAIL),
        ),
        (['metrics."key1"  desc'], (OrderKey(entity="metric", key="key1", ascending=False), *TAIL)),
        (
            ["params.my_param aSc", "attributes.status  ASC"],
            (
                OrderKey(entity="parameter", key="my_param", ascending=True),
                OrderKey(entity="attribute", key="status", ascending=True),
                *TAIL,
            ),
        ),
        (
            ["tags.mlflow.runName DESC"],
            (OrderKey(entity="tag", key="mlflow.runName", ascending=False), *TAIL),
        ),
        (["created"], (OrderKey(entity="attribute", key="start_time", ascending=True), TAIL[1])),
        (
            ["Created DESC", "run_name"],
            (
                OrderKey(entity="attribute", key="start_time", ascending=False),
                OrderKey(entity="attribute", key="run_name", ascending=True),
                TAIL[1],
            ),
        ),
        (
            ["attributes.run_id DESC"],
            (OrderKey(entity="attribute", key="run_id", ascending=False), TAIL[0]),
        ),
        (["end_time"], (OrderKey(entity="attribute", key="end_time", ascending=True), *TAIL)),
    ],
)
def test_run_order_by(order_by: list[str] | None, expected: tuple[OrderKey, ...]) -> None:
    assert parse_run_order_by(order_by) == expected


@pytest.mark.parametrize(
    ("order_by", "message"),
    [
        ("m.acc", "Invalid entity type"),
        ("acc", "Invalid attribute key"),
        ("attri.x", "Invalid entity type"),
        ("`metrics.A", "Invalid order_by clause"),
        ("`metrics.A`", "Invalid attribute key 'metrics.A'"),  # MLflow: "Invalid entity type"
        ("attribute.start", "Invalid attribute key"),
        ("attribute.experiment_id", "Invalid attribute key"),
        ("metrics.A != 1", "Invalid order_by clause"),
        ("params.my_param ", "Invalid order_by clause"),
        (" params.my_param", "Invalid order_by clause"),
        ("", "Invalid order_by clause"),
        ("metrics.a, metrics.b", "Invalid order_by clause"),
        ("metrics.a DESC NULLS FIRST", "Invalid order_by clause"),
        ("metrics.a DESC;", "Invalid order_by clause"),
        ("metrics.a; DROP TABLE runs", "Invalid order_by clause"),
        ("attribute.run_id ACS", "Invalid ordering key"),
        ("attribute.run_id decs", "Invalid ordering key"),
        ("`Run name`", "Invalid attribute key 'Run name'"),
        ("datasets.name", "Invalid identifier type 'dataset'"),
        ("params.a\x00", "NUL characters are not allowed"),
    ],
)
def test_run_order_by_rejects(order_by: str, message: str) -> None:
    rejects(lambda clause: parse_run_order_by([clause]), order_by, message)


@pytest.mark.parametrize(
    "order_by",
    [
        ["metrics.a", "metrics.a DESC"],
        ["metric.a", "metrics.a"],
        ["created", "start_time DESC"],
        ["params.x", "parameters.x ASC"],
    ],
)
def test_duplicate_run_order_by_is_400(order_by: list[str]) -> None:
    rejects(parse_run_order_by, order_by, "`order_by` contains duplicate fields")


def test_same_key_of_different_types_is_not_a_duplicate() -> None:
    keys = parse_run_order_by(["metrics.a", "params.a", "tags.a"])
    assert [k.entity for k in keys] == ["metric", "parameter", "tag", "attribute", "attribute"]


EXPERIMENT_ORDER = [
    (None, [("creation_time", False), ("experiment_id", True)]),
    ([], [("creation_time", False), ("experiment_id", True)]),
    (["name"], [("name", True), ("experiment_id", False)]),
    (["attribute.last_update_time DESC"], [("last_update_time", False), ("experiment_id", False)]),
    (["experiment_id"], [("experiment_id", True)]),
    (["name DESC", "experiment_id ASC"], [("name", False), ("experiment_id", True)]),
]


@pytest.mark.parametrize(("order_by", "expected"), EXPERIMENT_ORDER)
def test_experiment_order_by(order_by: list[str] | None, expected: list[tuple[str, bool]]) -> None:
    assert [(k.key, k.ascending) for k in parse_experiment_order_by(order_by)] == expected


@pytest.mark.parametrize(
    ("order_by", "message"),
    [
        ("tags.a", "Invalid order_by entity: tag"),
        ("metrics.a", "Invalid entity type 'metrics'"),
        ("attributes.name", "Invalid entity type 'attributes'"),
        ("created", "Invalid attribute key 'created'"),
        ("name aCs", "Invalid ordering key"),
        ("name ", "Invalid order_by clause"),
    ],
)
def test_experiment_order_by_rejects(order_by: str, message: str) -> None:
    rejects(lambda clause: parse_experiment_order_by([clause]), order_by, message)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.text(max_size=40) | st.sampled_from(_VOCABULARY), max_size=4))
def test_random_order_by_raises_only_mlflow_errors(order_by: list[str]) -> None:
    for parse in (parse_run_order_by, parse_experiment_order_by):
        with contextlib.suppress(MlflowError):
            parse(order_by)
