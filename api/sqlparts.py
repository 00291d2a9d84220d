"""The SQL fragments a search is built of: bound placeholders, the filter's predicates on runs
and experiments, and ORDER BY terms in MLflow's order.

Every user value and every user key travels as a `$n` parameter (`Binder`); column and table
names come only from the whitelists below.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from api.filters import InList, IsNull, NumberCompare, Predicate, TextCompare
from api.grammar import INT64_MAX, INT64_MIN
from api.ordering import OrderKey
from ingest.errors import invalid_parameter

__all__ = [
    "EXPERIMENT_COLUMNS",
    "KEYED_TABLES",
    "NAN",
    "PREFIX",
    "RUN",
    "RUN_COLUMNS",
    "RUN_NAME_TAG",
    "Binder",
    "Term",
    "experiment_predicate",
    "member_test",
    "number_conditions",
    "order_sql",
    "page_sql",
    "run_order",
    "run_predicate",
    "sort_terms",
]

RUN_NAME_TAG = "mlflow.runName"

# (SQL expression, is text, may be NULL): the only way an attribute name reaches the SQL text.
RUN_COLUMNS: dict[str, tuple[str, bool, bool]] = {
    "run_id": ("r.run_id", True, False),
    "run_name": ("r.run_name", True, False),
    "user_id": ("r.user_id", True, False),
    "status": ("r.status", True, False),
    "artifact_uri": ("r.artifact_uri", True, False),
    "start_time": ("r.start_time", False, False),
    "end_time": ("r.end_time", False, True),
}
EXPERIMENT_COLUMNS: dict[str, tuple[str, bool, bool]] = {
    "experiment_id": ("e.experiment_id", False, False),
    "name": ("e.name", True, False),
    "creation_time": ("e.creation_time", False, False),
    "last_update_time": ("e.last_update_time", False, False),
}
_DATASET_COLUMNS = {"name": "d.name", "digest": "d.digest", "context": "d.context"}
KEYED_TABLES = {"metric": "latest_metrics", "parameter": "params", "tag": "tags"}
NAN = "'NaN'::float8"
_PREFIX_INDEXED = frozenset({"params", "tags"})
# the tables whose rows carry their run's experiment
_RUN_COPIES = frozenset({"latest_metrics", "params", "tags"})
PREFIX = 200
RUN = "r.run_id"


class Binder:
    """Collect bound values and hand out their typed placeholders."""

    def __init__(self) -> None:
        self.args: list[object] = []

    def __call__(self, value: object, sql_type: str) -> str:
        self.args.append(value)
        return f"${len(self.args)}::{sql_type}"

    def number(self, value: int | float) -> str:
        """Bind a number as bigint when it fits, else as numeric or float8 so it never fails."""
        if isinstance(value, float):
            return self(value, "float8")
        if INT64_MIN <= value <= INT64_MAX:
            return self(value, "bigint")
        return self(Decimal(value), "numeric")


def _compare(column: str, op: str, placeholder: str) -> str:
    if op in {"LIKE", "ILIKE"}:
        # No escape character: `\` is literal as in MLflow on SQLite, and a pattern ending
        # in `\` cannot make PostgreSQL raise
        return f"{column} {op} {placeholder} ESCAPE ''"
    return f"{column} {'<>' if op == '!=' else op} {placeholder}"


def _exists(table: str, alias: str, link: str, conditions: list[str]) -> str:
    where = " AND ".join([f"{alias}.{link}", *conditions])
    return f"EXISTS (SELECT 1 FROM {table} AS {alias} WHERE {where})"


def _in_list(column: str, pred: InList, bind: Binder) -> str:
    array = bind(list(pred.values), "bigint[]" if pred.key == "experiment_id" else "text[]")
    test = f"{column} = ANY({array})"
    return f"NOT ({test})" if pred.negated else test


def member_test(table: str, conditions: list[str], run: str = RUN) -> str:
    """Test a run against the set of runs meeting `conditions` in `table`, built once.

    A search in a run order walks an experiment's runs in index order and stops at its page; an
    EXISTS would look each walked run up in `table` (an index descent each: 3,200 of them,
    ~12 ms, for `tags.team = 'nlp'` across four experiments), where the set of matching runs
    costs one index-only scan. PostgreSQL turns an IN at the top of WHERE into a join, which
    would lose the walk's order; `IS TRUE` keeps it a filter, evaluated on a hashed subplan."""
    where = " AND ".join(conditions)
    return f"({run} IN (SELECT k.run_id FROM {table} AS k WHERE {where})) IS TRUE"


def _keyed(
    pred: Predicate,
    table: str,
    link: str,
    bind: Binder,
    *,
    member: bool = False,
    run: str = RUN,
    experiment: str | None = None,
) -> str:
    """Compile a predicate on a key-value table (metrics, params, tags, experiment tags);
    `member` compiles a param or tag equality as a membership test (`member_test`) of `run`.

    `experiment` (a bound placeholder) is the one experiment of every run tested. The rows of
    runs' tables carry their run's experiment (migrations 0012, 0013), so a row found must be
    in it, and the index then reads that experiment's rows only: for a value common across four
    experiments, a quarter of what matching it everywhere reads. Not for IS NULL, whose NOT
    EXISTS must see every row of the run, whatever experiment it carries."""
    if isinstance(pred, InList):
        raise invalid_parameter(f"Unsupported list comparison on key '{pred.key}'")
    conditions = [f"k.key = {bind(pred.key, 'text')}"]
    if isinstance(pred, IsNull):
        test = _exists(table, "k", link, conditions)
        return test if pred.negated else f"NOT {test}"
    if experiment is not None and table in _RUN_COPIES:
        conditions.append(f"k.experiment_id = {experiment}")
    if isinstance(pred, NumberCompare):
        conditions += number_conditions(pred, bind)
    else:
        value = bind(pred.value, "text")
        if pred.op == "=" and table in _PREFIX_INDEXED:
            # the (key, value_prefix) index of migration 0009 serves this spelling; the column
            # is the value's first 200 characters
            conditions.append(f"k.value_prefix = left({value}, {PREFIX})")
            if len(pred.value) < PREFIX:
                # A value of fewer than 200 characters equals its own prefix, and a longer
                # stored value has a 200-character prefix, so the prefix test alone decides.
                # A second test on the whole value would make the planner count the same
                # condition twice and underestimate the rows a hundredfold (nested loops).
                return (
                    member_test(table, conditions, run)
                    if member
                    else _exists(table, "k", link, conditions)
                )
        conditions.append(_compare("k.value", pred.op, value))
        if member:
            return member_test(table, conditions, run)
    return _exists(table, "k", link, conditions)


def number_conditions(pred: NumberCompare, bind: Binder) -> list[str]:
    """Return the conditions on `k.value` of a numeric comparison."""
    conditions = [_compare("k.value", pred.op, bind(float(pred.value), "float8"))]
    # PostgreSQL orders NaN above every number and says NaN = NaN; MLflow lets a NaN metric
    # satisfy only `!=`, which `<>` already does for a non-NaN literal
    if pred.op != "!=":
        conditions.append(f"k.value <> {NAN}")
    return conditions


def run_predicate(
    pred: Predicate,
    bind: Binder,
    *,
    member: bool = False,
    run: str = RUN,
    experiment: str | None = None,
) -> str:
    """Compile a run predicate on the run whose id is the column `run`; `experiment`, when
    given, is the bound placeholder of the one experiment that run is in (see `_keyed`)."""
    link = f"run_id = {run}"
    if pred.entity in KEYED_TABLES:
        table = KEYED_TABLES[pred.entity]
        return _keyed(pred, table, link, bind, member=member, run=run, experiment=experiment)
    if pred.entity == "dataset":
        column = _DATASET_COLUMNS[pred.key]
        if isinstance(pred, InList):
            return _exists("run_dataset_inputs", "d", link, [_in_list(column, pred, bind)])
        if isinstance(pred, TextCompare):
            test = _compare(column, pred.op, bind(pred.value, "text"))
            return _exists("run_dataset_inputs", "d", link, [test])
    if pred.key == "run_name" and isinstance(pred, TextCompare):
        # MLflow matches `attributes.run_name` against the mlflow.runName tag, not the column
        renamed = TextCompare(entity="tag", key=RUN_NAME_TAG, op=pred.op, value=pred.value)
        return _keyed(renamed, "tags", link, bind, member=member, run=run, experiment=experiment)
    return _attribute(pred, RUN_COLUMNS, bind)


def _attribute(pred: Predicate, columns: dict[str, tuple[str, bool, bool]], bind: Binder) -> str:
    column = columns[pred.key][0]
    if isinstance(pred, InList):
        return _in_list(column, pred, bind)
    if isinstance(pred, NumberCompare):
        return _compare(column, pred.op, bind.number(pred.value))
    if isinstance(pred, TextCompare):
        return _compare(column, pred.op, bind(pred.value, "text"))
    raise invalid_parameter(f"Unsupported comparison on attribute '{pred.key}'")


def experiment_predicate(pred: Predicate, bind: Binder) -> str:
    if pred.entity == "tag":
        return _keyed(pred, "experiment_tags", "experiment_id = e.experiment_id", bind)
    return _attribute(pred, EXPERIMENT_COLUMNS, bind)


@dataclass(frozen=True, slots=True)
class Term:
    """One ORDER BY term: an expression, whether it sorts in byte order, and its direction."""

    expr: str
    text: bool
    ascending: bool | None  # None: ascending, the default, left unsaid

    def sql(self, expr: str | None = None) -> str:
        # Byte order, so the same strings sort alike whatever the database's collation is
        value = expr or self.expr
        value = f'{value} COLLATE "C"' if self.text else value
        if self.ascending is None:
            return value
        return f"{value} {'ASC' if self.ascending else 'DESC'}"


def sort_terms(expr: str, text: bool, nullable: bool, ascending: bool) -> list[Term]:
    """Return ORDER BY terms that put rows lacking the key last in both directions."""
    terms = [Term(f"({expr} IS NULL)", False, None)] if nullable else []
    return [*terms, Term(expr, text, ascending)]


def run_order(
    keys: Sequence[OrderKey],
    bind: Binder,
    *,
    start: int = 1,
    columns: dict[str, tuple[str, bool, bool]] = RUN_COLUMNS,
) -> tuple[list[str], list[Term]]:
    """Return the LEFT JOINs and ORDER BY terms for a run ordering (aliases from o`start`)."""
    joins: list[str] = []
    terms: list[Term] = []
    for i, key in enumerate(keys, start=start):
        if key.entity == "attribute":
            expr, text, nullable = columns[key.key]
            terms += sort_terms(expr, text, nullable, key.ascending)
            continue
        alias = f"o{i}"
        joins.append(
            f"LEFT JOIN {KEYED_TABLES[key.entity]} AS {alias} ON {alias}.run_id = r.run_id "
            f"AND {alias}.key = {bind(key.key, 'text')}"
        )
        if key.entity == "metric":
            # numbers, then NaN, then runs without the metric, whichever the direction
            missing_then_nan = (
                f"CASE WHEN {alias}.value IS NULL THEN 2 "
                f"WHEN {alias}.value = {NAN} THEN 1 ELSE 0 END"
            )
            terms.append(Term(missing_then_nan, False, None))
            terms.append(Term(f"{alias}.value", False, key.ascending))
        else:
            terms += sort_terms(f"{alias}.value", True, True, key.ascending)
    return joins, terms


def order_sql(terms: Sequence[Term]) -> str:
    return "ORDER BY " + ", ".join(term.sql() for term in terms)


def page_sql(bind: Binder, limit: int, offset: int) -> str:
    return f"LIMIT {bind(limit + 1, 'bigint')} OFFSET {bind(offset, 'bigint')}"
