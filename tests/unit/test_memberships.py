"""Choosing a search's membership tests from ANALYZE's numbers (`api.memberships`)."""

from __future__ import annotations

import pytest

from api.memberships import (
    Statistics,
    StatisticsCache,
    choose_memberships,
    walk_pays,
    wants_statistics,
)
from api.sqlgen import compile_run_search
from api.tokens import encode_page_token

# W5's shape: 100k runs, four experiments of 25k; a third of the runs per optimizer, a fifth per
# learning rate, an eighth per team
W5 = Statistics(
    pairs={
        ("params", "optimizer", "adam"): 33_333.0,
        ("params", "lr", "0.001"): 20_000.0,
        ("params", "batch_size", "16"): 25_000.0,
        ("tags", "team", "nlp"): 12_500.0,
    },
    runs=100_000.0,
    experiments={1001: 0.25, 1002: 0.25, 1003: 0.25, 1004: 0.25},
)


def by_loss(filter_string: str, experiment: str = "1002") -> set[int]:
    plan = compile_run_search([experiment], filter_string, None, 100, ["metrics.loss"], None)
    assert wants_statistics(plan)
    return choose_memberships(W5, plan, 1)


def test_a_metric_walk_looks_the_most_common_value_up_when_its_set_costs_more() -> None:
    # adam's set (8,300 runs of the experiment) against ~300 lookups: looked up; lr is a set
    assert by_loss("params.optimizer = 'adam' AND params.lr = '0.001'") == {1}
    assert by_loss("params.lr = '0.001' AND params.optimizer = 'adam'") == {0}
    # and with a third, rarer equality, both rarer ones are sets
    three = "params.optimizer = 'adam' AND tags.team = 'nlp' AND params.lr = '0.001'"
    assert by_loss(three) == {1, 2}


def test_a_metric_walk_keeps_every_set_when_the_sets_cost_less() -> None:
    # lr's set (5,000 runs) against ~500 lookups: both sets, the walk's default
    assert by_loss("tags.team = 'nlp' AND params.lr = '0.001'") == set()
    # a deep page needs more runs walked, so more lookups: adam's set pays too
    deep = compile_run_search(
        ["1002"],
        "params.optimizer = 'adam' AND params.lr = '0.001'",
        None,
        1000,
        ["metrics.loss"],
        encode_page_token(2000),
    )
    assert choose_memberships(W5, deep, 1) == set()


@pytest.mark.parametrize(
    ("filter_string", "experiment"),
    [
        # neither value is common enough for the statistics to list it
        ("params.optimizer = 'lion' AND params.lr = '0.5'", "1002"),
        # an experiment too small to be listed: every set of it is small
        ("params.optimizer = 'adam' AND params.lr = '0.001'", "17"),
    ],
)
def test_without_numbers_a_metric_walk_keeps_every_set(filter_string: str, experiment: str) -> None:
    assert by_loss(filter_string, experiment) == set()


def test_a_search_with_nothing_to_choose_wants_no_statistics() -> None:
    lone = compile_run_search(["1"], "params.p = 'a'", None, 10, ["metrics.m"], None)
    assert not wants_statistics(lone)
    assert not wants_statistics(compile_run_search(["1"], None, None, 10, None, None))


class _Reads:
    """A connection whose statistics reads are counted."""

    def __init__(self) -> None:
        self.reads = 0

    async def fetch(self, query: str) -> list[tuple[object, ...]]:
        self.reads += 1
        return []


async def test_the_live_statistics_are_read_again_only_once_they_are_old() -> None:
    now = [0.0]
    cache = StatisticsCache(ttl_s=60.0, clock=lambda: now[0])
    conn = _Reads()
    first = await cache.get(conn)  # type: ignore[arg-type]
    assert conn.reads == 2  # the pairs and the experiments
    now[0] = 59.0
    assert await cache.get(conn) is first  # type: ignore[arg-type]
    assert conn.reads == 2
    now[0] = 60.0
    assert await cache.get(conn) is not first  # type: ignore[arg-type]
    assert conn.reads == 4
    # an as-of version's are its own, read each time
    await cache.get(conn, "asof_1")  # type: ignore[arg-type]
    await cache.get(conn, "asof_1")  # type: ignore[arg-type]
    assert conn.reads == 8


def walk_of(filter_string: str, experiment: str = "1002", page_token: str | None = None) -> bool:
    plan = compile_run_search([experiment], filter_string, None, 100, ["metrics.loss"], page_token)
    assert plan.walk is not None
    return walk_pays(W5, plan.walk)


def test_a_metric_walk_gives_way_when_too_few_runs_can_meet_its_equalities() -> None:
    adam_lr_16 = "params.optimizer = 'adam' AND params.lr = '0.001' AND params.batch_size = '16'"
    # 25k * 1/3 * 1/5 * 1/4 = 417 runs expected, 4 pages: walked
    assert walk_of(adam_lr_16)
    # and a team an eighth hold: 52 runs, half a page: the general query answers at once
    assert not walk_of(f"{adam_lr_16} AND tags.team = 'nlp'")
    # deep enough, even the three need more runs than they can expect
    assert not walk_of(adam_lr_16, page_token=encode_page_token(800))
    # a value the statistics do not list holds at most as many runs as the least listed one
    # of its table (here the lr's 5,000 of the experiment): not known to be rare, so walked
    assert walk_of("params.optimizer = 'lion' AND params.lr = '0.001'")


def test_a_metric_walk_is_kept_where_the_statistics_say_nothing() -> None:
    adam_lr_16_nlp = (
        "params.optimizer = 'adam' AND params.lr = '0.001' AND params.batch_size = '16'"
        " AND tags.team = 'nlp'"
    )
    assert walk_of(adam_lr_16_nlp, experiment="17")  # an experiment too small to be listed
    no_tags = Statistics(
        pairs={("params", "lr", "0.001"): 20_000.0}, runs=100_000.0, experiments={1: 1.0}
    )
    plan = compile_run_search(
        ["1"], "params.lr = '0.001' AND tags.t = 'x'", None, 100, ["metrics.m"], None
    )
    assert plan.walk is not None
    assert walk_pays(no_tags, plan.walk)  # nothing is known of the tags
    lone = compile_run_search(["1002"], "params.optimizer = 'x'", None, 100, ["metrics.m"], None)
    assert lone.walk is not None
    assert walk_pays(W5, lone.walk)  # a lone equality is PostgreSQL's to plan
