"""Compile a SearchRuns or SearchExperiments request into one parameterised asyncpg query
(a run search sorted by a metric, into two: `_metric_walk`).

The fragments come from `sqlparts`, which binds every user value and key as a `$n` parameter.
The query selects ids in order and fetches one row more than a page, so `SearchPlan.page` can
tell whether a next page exists.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TypeVar

from api.filters import (
    NumberCompare,
    Predicate,
    TextCompare,
    parse_experiment_filter,
    parse_run_filter,
)
from api.ordering import OrderKey, parse_experiment_order_by, parse_run_order_by
from api.search_fields import (
    RUNS_DEFAULT_MAX_RESULTS,
    check_max_results,
    mlflow_view_stages,
    parse_experiment_ids,
)
from api.sqlparts import (
    EXPERIMENT_COLUMNS,
    KEYED_TABLES,
    NAN,
    PREFIX,
    RUN,
    RUN_COLUMNS,
    RUN_NAME_TAG,
    Binder,
    Term,
    experiment_predicate,
    member_test,
    number_conditions,
    order_sql,
    page_sql,
    run_order,
    run_predicate,
    sort_terms,
)
from api.tokens import decode_page_token, encode_page_token

T = TypeVar("T")

# A metric walk needs each metric comparison of its filter met by this many runs of the
# experiment per run of the page (see `_metric_walk`).
_WALK_SHARE = 20


@dataclass(frozen=True, slots=True)
class Membership:
    """A param or tag equality of a search that walks runs in order (see `member_test`): whether
    to test it against a set of the matching runs built once depends on how many runs match."""

    index: int  # the predicate's place in the filter
    table: str  # params or tags
    key: str
    value: str


@dataclass(frozen=True, slots=True)
class SearchPlan:
    """One query that returns up to `limit + 1` ids of a page, and how to cut the page."""

    sql: str
    args: list[object]
    limit: int
    offset: int
    # what a caller may look up to recompile the search with some equalities as memberships
    # (of a metric walk: the equalities it may test as one, `_metric_walk`)
    memberships: tuple[Membership, ...] = ()
    # the equality whose runs the search walks in the run order (`_driver`), if any
    driver: Membership | None = None
    # the same page among the runs with a number for the leading metric, walked in its order
    # (`_metric_walk`); where it finds fewer than `limit + 1` runs, `sql` answers
    walk: SearchPlan | None = None
    experiment: int | None = None  # the one experiment a metric walk reads

    def page(self, rows: Sequence[T]) -> tuple[list[T], str | None]:
        """Return the page's rows and the next page's token (None on the last page)."""
        if len(rows) > self.limit:
            return list(rows[: self.limit]), encode_page_token(self.offset + self.limit)
        return list(rows), None


@dataclass(frozen=True, slots=True)
class _Selection:
    """The run ids a search selects, before its page is cut: the column, where the rows come
    from, the conditions and the order."""

    run: str
    source: list[str]
    where: list[str]
    terms: list[Term]

    def lines(self) -> list[str]:
        return [*self.source, "WHERE " + "\n  AND ".join(self.where), order_sql(self.terms)]


def _one_experiment(selection: _Selection, bind: Binder, *, page: tuple[int, int]) -> str:
    return "\n".join([f"SELECT {selection.run}", *selection.lines(), page_sql(bind, *page)])


def _merged_experiments(
    experiments: str, selection: _Selection, bind: Binder, *, page: tuple[int, int]
) -> str:
    # `experiment_id = ANY(...)` has no index order, so PostgreSQL would collect and sort every
    # match of every experiment (12k runs for a tag that an eighth of 100k runs carry). Instead
    # each experiment's first rows are read as for one experiment, in index order where the
    # order allows, and only those are merged: a page starting at `offset` needs at most
    # offset + limit + 1 rows of each experiment.
    limit, offset = page
    terms = selection.terms
    picked = ", ".join(f"{term.expr} AS s{i}" for i, term in enumerate(terms))
    merged = ", ".join(term.sql(f"s.s{i}") for i, term in enumerate(terms))
    return "\n".join(
        [
            "SELECT s.run_id",
            f"FROM unnest({experiments}) AS x(experiment_id)",
            f"CROSS JOIN LATERAL (SELECT {selection.run} AS run_id, {picked}",
            *selection.lines(),
            f"LIMIT {bind(offset + limit + 1, 'bigint')}) AS s",
            f"ORDER BY {merged}",
            page_sql(bind, limit, offset),
        ]
    )


def _metric_walk(  # noqa: PLR0917 - the parts of a compiled request
    experiment: int,
    stages: list[str],
    predicates: Sequence[Predicate],
    ordering: Sequence[OrderKey],
    limit: int,
    offset: int,
    members: Collection[int] = (),
) -> SearchPlan:
    """Compile a page of one experiment's runs sorted by a metric first, among the runs whose
    value of it is a number: those come first in MLflow's order (then NaN, then no value).

    The query walks the experiment's values of the metric in index order (migration 0012) and
    stops at the page; the general query would find every run passing the filter, look its
    value up and sort them all. A metric comparison in the filter is tested against the set of
    the experiment's runs meeting it, built once from the same index, on the walked row itself,
    before the run is read. Two or more param or tag equalities are each tested the same way,
    against the set of the experiment's runs with the value: PostgreSQL misjudges how many runs
    meet several at once, and then joins their whole sets and sorts the experiment rather than
    walk it (21 ms a request against 9 for two params a fifteenth of the runs hold together).
    `members`, when given, names the equalities tested so (`memberships.choose_memberships` may
    leave the most common one out: the walk reaches it only with the runs that passed the
    others, which may be fewer lookups than its set has runs). A lone equality, and every
    other test, stays as PostgreSQL plans it: it starts from a rare value's own index, and for
    a common one a lookup per walked run costs less than the whole set.

    A metric comparison that few of the experiment's runs meet would make the walk read every
    value of the experiment, where the general query starts from that comparison's index. So
    the walk runs only if each is met by `_WALK_SHARE` runs per run the page needs, counted up
    to that many first (an index range of the experiment); else it finds nothing at once and
    the general query answers."""
    bind = Binder()
    first = ordering[0]
    walked = "o1.run_id"
    scope = bind(experiment, "bigint")
    key = bind(first.key, "text")
    needed = None
    gates: list[str] = []
    tests: dict[int, str] = {}  # each metric comparison's membership test, by predicate
    equalities = _equalities(predicates)
    if len(equalities) < 2:
        equalities = []
    tested = {m.index for m in equalities if not members or m.index in members}
    for i, pred in enumerate(predicates):
        if pred.entity == "metric" and isinstance(pred, NumberCompare):
            needed = needed or bind(_WALK_SHARE * (offset + limit + 1), "bigint")
            meeting = [
                f"k.experiment_id = {scope}",
                f"k.key = {bind(pred.key, 'text')}",
                *number_conditions(pred, bind),
            ]
            gates.append(
                "(SELECT count(*) FROM (SELECT FROM latest_metrics AS k WHERE "
                f"{' AND '.join(meeting)} LIMIT {needed}) AS c) >= {needed}"
            )
            tests[i] = member_test("latest_metrics", meeting, walked)
    where = [
        *gates,
        f"o1.experiment_id = {scope}",
        f"o1.key = {key}",
        f"o1.value <> {NAN}",
        # Not `r.experiment_id` too: a value carries its run's experiment (migration 0012,
        # checked by `runstream verify`), and the planner, taking the two tests as independent,
        # expected a quarter of the runs there are and sorted the whole experiment instead of
        # walking it (45 ms a request where the walk took 12, for two param equalities).
        f"r.lifecycle_stage = ANY({bind(stages, 'text[]')})",
        *(
            tests.get(i) or _walk_test(p, bind, walked, scope if i in tested else None)
            for i, p in enumerate(predicates)
        ),
    ]
    joins, terms = run_order(ordering[1:], bind, start=2)
    sql = "\n".join(
        [
            "SELECT r.run_id",
            "FROM latest_metrics AS o1",
            "JOIN runs AS r ON r.run_id = o1.run_id",
            *joins,
            "WHERE " + "\n  AND ".join(where),
            order_sql([Term("o1.value", False, first.ascending), *terms]),
            page_sql(bind, limit, offset),
        ]
    )
    return SearchPlan(
        sql=sql,
        args=bind.args,
        limit=limit,
        offset=offset,
        memberships=tuple(equalities),
        experiment=experiment,
    )


def _walk_test(pred: Predicate, bind: Binder, walked: str, members_of: str | None) -> str:
    """Compile a predicate of a metric walk on the walked run: as a membership test of the
    experiment `members_of` names, or, without it, as PostgreSQL plans it. A lone equality
    tested only in its experiment was worse: the planner, multiplying that test with the
    value's own share, expected too few runs again and sorted the experiment (14 ms against 9
    for `params.lr = '0.001'` with a metric comparison)."""
    member = members_of is not None
    return run_predicate(pred, bind, member=member, run=walked, experiment=members_of)


def _memberships(predicates: Sequence[Predicate], ordering: Sequence[OrderKey]) -> list[Membership]:
    """Return the param and tag equalities that may be membership tests: all of them when the
    search walks runs in an attribute order, none when it sorts by a metric, param or tag (a
    metric walk chooses its own, `_metric_walk`)."""
    if any(key.entity != "attribute" for key in ordering):
        return []
    return _equalities(predicates)


def _equalities(predicates: Sequence[Predicate]) -> list[Membership]:
    """Return the filter's param and tag equalities (a run name is its mlflow.runName tag)."""
    found = []
    for index, pred in enumerate(predicates):
        if isinstance(pred, TextCompare) and pred.op == "=":
            if pred.entity in {"parameter", "tag"}:
                found.append(Membership(index, KEYED_TABLES[pred.entity], pred.key, pred.value))
            elif pred.entity == "attribute" and pred.key == "run_name":
                found.append(Membership(index, "tags", RUN_NAME_TAG, pred.value))
    return found


# The run order as a param or tag equality's index lists it (migration 0013)
_DRIVEN_COLUMNS = {
    **RUN_COLUMNS,
    "start_time": ("eq.start_time", False, False),
    "run_id": ("eq.run_id", True, False),
}


def _driver(memberships: list[Membership], ordering: Sequence[OrderKey]) -> Membership | None:
    """Take out and return the equality a search newest first (or oldest first) walks its runs
    along: the first param or tag equality of its filter, if it has one.

    Each param and tag row carries its run's experiment, start time and lifecycle stage
    (migration 0013), so the equality's index lists its runs of each experiment in the run
    order: a page is the first `offset + limit + 1` of them that pass the rest of the filter,
    however common the value is, read from the index alone when nothing else is asked of the
    run. Without it the search walked all the experiment's runs and tested each against the set
    of runs with the value (`member_test`), built whole first: 5.5 ms of SQL against 0.3 for a
    tag an eighth of 100k runs carry. The rows are a join, so the planner may still start from a
    rarer condition of the filter."""
    first = ordering[0]
    if not memberships or first.entity != "attribute" or first.key != "start_time":
        return None
    return memberships.pop(0)


def _driven(
    driver: Membership, experiment: str, stages: str, bind: Binder
) -> tuple[list[str], list[str]]:
    """Return the FROM lines and the conditions that walk the driver's rows of an experiment.

    The run is a LEFT JOIN on its key: where no condition or order term names it, PostgreSQL
    leaves it out (join removal), and where one does, that condition makes it an inner join. A
    row carries its run's experiment only once the run exists (migration 0013)."""
    value = bind(driver.value, "text")
    conditions = [
        f"eq.key = {bind(driver.key, 'text')}",
        f"eq.value_prefix = left({value}, {PREFIX})",
        f"eq.experiment_id = {experiment}",
        f"eq.lifecycle_stage = ANY({stages})",
    ]
    if len(driver.value) >= PREFIX:  # else the prefix is the whole value (see `_keyed`)
        conditions.append(f"eq.value = {value}")
    return [f"FROM {driver.table} AS eq", "LEFT JOIN runs AS r ON r.run_id = eq.run_id"], conditions


def compile_run_search(  # noqa: PLR0917 - the argument order is the agreed interface
    experiment_ids: Sequence[str | int],
    filter_string: str | None,
    run_view_type: object,
    max_results: int | None,
    order_by: Sequence[str] | None,
    page_token: str | None,
    members: Collection[int] = (),
) -> SearchPlan:
    """Compile a SearchRuns request into a query selecting one page of run ids, plus one;
    the predicates at the `members` indexes of `memberships` become membership tests."""
    limit = check_max_results(max_results, default=RUNS_DEFAULT_MAX_RESULTS)
    ids = list(dict.fromkeys(parse_experiment_ids(experiment_ids)))
    stages = mlflow_view_stages(run_view_type)
    predicates = parse_run_filter(filter_string)
    ordering = parse_run_order_by(order_by)
    offset = decode_page_token(page_token)
    bind = Binder()
    # One experiment (the usual case) is an equality, so the planner can walk
    # runs_experiment_order in the run order instead of sorting the experiment's runs.
    experiments = bind(ids[0], "bigint") if len(ids) == 1 else bind(ids, "bigint[]")
    experiment = experiments if len(ids) == 1 else "x.experiment_id"
    stage_list = bind(stages, "text[]")
    memberships = _memberships(predicates, ordering)
    driver = _driver(memberships, ordering)
    run, columns = RUN, RUN_COLUMNS
    source = ["FROM runs AS r"]
    where = [f"r.experiment_id = {experiment}", f"r.lifecycle_stage = ANY({stage_list})"]
    if driver is not None:
        source, where = _driven(driver, experiment, stage_list, bind)
        run, columns = "eq.run_id", _DRIVEN_COLUMNS
    eligible = {m.index for m in memberships}
    where += [
        run_predicate(
            p,
            bind,
            member=i in members and i in eligible,
            run=run,
            # not an experiment of the merged lateral (x.experiment_id): a membership test must
            # stay one set for the whole search, not one rebuilt for each run walked
            experiment=experiments if len(ids) == 1 else None,
        )
        for i, p in enumerate(predicates)
        if driver is None or i != driver.index
    ]
    joins, terms = run_order(ordering, bind, columns=columns)
    selection = _Selection(run, [*source, *joins], where, terms)
    sql = (
        _one_experiment(selection, bind, page=(limit, offset))
        if len(ids) == 1
        else _merged_experiments(experiments, selection, bind, page=(limit, offset))
    )
    walk = None
    if len(ids) == 1 and ordering[0].entity == "metric":
        walk = _metric_walk(ids[0], stages, predicates, ordering, limit, offset, members)
    return SearchPlan(
        sql=sql,
        args=bind.args,
        limit=limit,
        offset=offset,
        memberships=tuple(memberships),
        driver=driver,
        walk=walk,
    )


def compile_experiment_search(
    filter_string: str | None,
    view_type: object,
    max_results: int | None,
    order_by: Sequence[str] | None,
    page_token: str | None,
) -> SearchPlan:
    """Compile a SearchExperiments request into a query selecting one page of ids, plus one."""
    limit = check_max_results(max_results, default=None)
    stages = mlflow_view_stages(view_type)
    predicates = parse_experiment_filter(filter_string)
    ordering = parse_experiment_order_by(order_by)
    offset = decode_page_token(page_token)
    bind = Binder()
    where = [
        f"e.lifecycle_stage = ANY({bind(stages, 'text[]')})",
        *(experiment_predicate(p, bind) for p in predicates),
    ]
    terms: list[Term] = []
    for key in ordering:
        expr, text, nullable = EXPERIMENT_COLUMNS[key.key]
        terms += sort_terms(expr, text, nullable, key.ascending)
    sql = "\n".join(
        [
            "SELECT e.experiment_id",
            "FROM experiments AS e",
            "WHERE " + "\n  AND ".join(where),
            order_sql(terms),
            page_sql(bind, limit, offset),
        ]
    )
    return SearchPlan(sql=sql, args=bind.args, limit=limit, offset=offset)
