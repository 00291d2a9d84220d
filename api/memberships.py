"""Which param and tag equalities of a run search to test as memberships, from ANALYZE's numbers.

A membership test (`sqlparts.member_test`) puts every run matching an equality in a hashed set
once; the alternative looks each walked run up in the equality's index. Which costs less depends
on how many runs hold the value, which only PostgreSQL's statistics tell: the most common
(key, value prefix) pairs of params and tags (the MCV statistics of migration 0009) and the
most common experiments of `runs`. Those change only when ANALYZE runs, so a `StatisticsCache`
reads them once a minute for the live read models rather than on every search. They only
steer the choice: every choice finds the same runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import asyncpg

from api.sqlgen import Membership, SearchPlan

__all__ = [
    "Statistics",
    "StatisticsCache",
    "choose_memberships",
    "walk_pays",
    "wants_statistics",
]

# The most common (key, value prefix) pairs of params and tags, with the share of rows each holds,
# and how many rows there are. Visible to the tables' owner; to another role this reads nothing
# and no membership is chosen.
_COMMON_PAIRS = """
SELECT s.tablename, s.most_common_vals, s.most_common_freqs, c.reltuples AS rows,
       (SELECT reltuples FROM pg_class WHERE oid = 'runs'::regclass) AS runs
FROM pg_stats_ext AS s
JOIN pg_class AS c ON c.relname = s.tablename AND c.relnamespace = s.schemaname::regnamespace
WHERE s.schemaname = current_schema()
  AND s.statistics_name IN ('params_key_prefix', 'tags_key_prefix')
"""
# The most common experiments, with the share of runs each holds. An experiment too small to be
# among them is small enough that any set of its runs is cheap.
_COMMON_EXPERIMENTS = """
SELECT m.experiment_id, m.share
FROM pg_stats AS s,
     unnest(s.most_common_vals::text::bigint[], s.most_common_freqs) AS m(experiment_id, share)
WHERE s.schemaname = current_schema() AND s.tablename = 'runs' AND s.attname = 'experiment_id'
"""
# What a membership test saves and costs, in microseconds, measured on a 2-core machine: a
# walked run's index lookup it replaces; a matching row it puts in its set.
_LOOKUP_US, _MEMBER_US = 4.0, 0.25
_FEW_MATCHES = 1000  # the planner finds so few from the param or tag index
# A metric walk with several equalities must expect this many pages of runs meeting them all
_WALK_PAYS = 2


@dataclass(frozen=True)
class Statistics:
    """How many rows hold each common param or tag pair, how many runs there are, and the share
    of them each common experiment holds, as ANALYZE last saw them."""

    pairs: dict[tuple[str, str, str], float] = field(default_factory=dict)
    runs: float = 0.0
    experiments: dict[int, float] = field(default_factory=dict)
    # per table, the rows of its least common listed pair: at most what an unlisted one has
    least: dict[str, float] = field(init=False)

    def __post_init__(self) -> None:
        least: dict[str, float] = {}
        for (table, _, _), rows in self.pairs.items():
            least[table] = min(rows, least.get(table, rows))
        object.__setattr__(self, "least", least)

    @classmethod
    async def read(cls, conn: asyncpg.Connection) -> Statistics:
        """Read them in the connection's schema."""
        pairs: dict[tuple[str, str, str], float] = {}
        runs = 0.0
        for row in await conn.fetch(_COMMON_PAIRS):
            runs = row["runs"]
            for (key, prefix), share in zip(
                row["most_common_vals"], row["most_common_freqs"], strict=True
            ):
                pairs[(row["tablename"], key, prefix)] = share * row["rows"]
        experiments = dict(await conn.fetch(_COMMON_EXPERIMENTS))
        return cls(pairs, runs, experiments)

    def matching(self, member: Membership) -> float:
        """Return how many rows hold the equality's pair (0: not a common one)."""
        return self.pairs.get((member.table, member.key, member.value[:200]), 0.0)

    def at_most(self, member: Membership) -> float | None:
        """Return how many rows at most hold the equality's pair (None: nothing is known)."""
        return self.pairs.get(
            (member.table, member.key, member.value[:200]), self.least.get(member.table)
        )

    def experiment_runs(self, experiment: int) -> float:
        """Return how many runs the experiment has (0: not a common one)."""
        return self.experiments.get(experiment, 0.0) * self.runs


class StatisticsCache:
    """The live read models' `Statistics`, read again once `ttl_s` has passed; an as-of version's
    are read on each search (`schema` names it)."""

    def __init__(self, ttl_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._clock = clock
        self._live: Statistics | None = None
        self._read_at = 0.0

    async def get(self, conn: asyncpg.Connection, schema: str | None = None) -> Statistics:
        """Return the statistics of the schema the connection reads (None: the live one)."""
        if schema is not None:
            return await Statistics.read(conn)
        now = self._clock()
        if self._live is None or now - self._read_at >= self._ttl_s:
            self._live = await Statistics.read(conn)
            self._read_at = now
        return self._live


def wants_statistics(plan: SearchPlan) -> bool:
    """Return whether the search has equalities to choose memberships among."""
    return bool(plan.memberships or (plan.walk is not None and plan.walk.memberships))


def choose_memberships(stats: Statistics, plan: SearchPlan, experiments: int) -> set[int]:
    """Return the equalities of a run search worth testing as memberships.

    A walk in run order finds a page of `offset + limit` runs after about that many over the
    share of runs matching, in each experiment, and looks each walked run up; a membership test
    puts every matching run in a set once instead. So it pays for a middling share: not for a
    value so rare the planner starts from its index, nor one so common a page is found at once.
    A search that walks an equality's own runs (`sqlgen._driver`) walks no more of them than
    that equality has. A metric walk chooses by `_walk_memberships`."""
    walk = plan.walk
    if walk is not None and walk.memberships:
        return _walk_memberships(stats, walk)
    runs = stats.runs
    walked = plan.offset + plan.limit + 1
    walkable = runs if plan.driver is None else stats.matching(plan.driver)
    chosen = set()
    for member in plan.memberships:
        found = stats.matching(member)
        if runs <= 0 or found < _FEW_MATCHES:
            continue
        # runs walked over all experiments: at most the walked equality's own
        walk_length = min(experiments * walked * runs / found, walkable)
        if found * _MEMBER_US < walk_length * (_LOOKUP_US - _MEMBER_US):
            chosen.add(member.index)
    return chosen


def _walk_memberships(stats: Statistics, walk: SearchPlan) -> set[int]:
    """Return the equalities a metric walk tests as memberships: all (the walk's default, the
    empty set), or all but the most common one.

    The walk meets its tests in turn: the sets on the walked value itself, then the lookups,
    only for the runs that passed the sets. So the most common value, whose set costs the most
    to build, may be looked up instead, for the runs the rarer ones let through: about a page
    over its share of the runs. `optimizer = 'adam' AND lr = '0.001'` by loss (a third and a
    fifth of an experiment's 25k runs) built sets of 8,400 and 5,000 runs to walk 1,700
    values; the rarer's set alone lets 330 of them through to a lookup (5.1 → 4.2 ms of SQL).
    With a tag an eighth of the runs hold and that lr, both sets cost less (the lr's 5,000
    against 500 lookups). Only the most common may be looked up: with two lookups PostgreSQL
    misjudges how many runs pass them together and sorts the experiment instead of walking it.
    """
    equalities = walk.memberships
    counts = [stats.matching(m) for m in equalities]
    runs = stats.experiment_runs(walk.experiment) if walk.experiment is not None else 0.0
    most = max(counts)
    if most <= 0 or runs <= 0 or stats.runs <= 0:
        return set()  # a rare value, or a small experiment: every set is small
    share = most / stats.runs
    walked = walk.offset + walk.limit + 1
    if share * runs * _MEMBER_US < walked / share * (_LOOKUP_US - _MEMBER_US):
        return set()
    commonest = equalities[counts.index(most)]
    return {m.index for m in equalities if m is not commonest}


def walk_pays(stats: Statistics, walk: SearchPlan) -> bool:
    """Return whether a metric walk with several equalities can expect to fill its page.

    Taking the equalities as independent, the experiment's runs times their shares is how many
    runs meet them all. Where that is under `_WALK_PAYS` pages, the walk would read most of the
    experiment's values, or all of them, and find too few, before the general query answers
    from the rarest value's index: four equalities 0.2% of the runs meet together walked 11 ms
    of SQL to no end, where the general query alone took 5. A value the statistics do not list
    counts as common as the least common one they do, which is at most what it is; a table
    they say nothing of, or an experiment too small to be listed, keeps the walk."""
    runs = stats.experiment_runs(walk.experiment) if walk.experiment is not None else 0.0
    if not walk.memberships or runs <= 0 or stats.runs <= 0:
        return True
    expected = runs
    for member in walk.memberships:
        found = stats.at_most(member)
        if found is None:
            return True
        expected *= found / stats.runs
    return expected >= _WALK_PAYS * (walk.offset + walk.limit + 1)
