"""Which points of a metric's history GetMetricHistoryBulkInterval keeps (MLflow 3.x's rule),
and how they are found without numbering the whole series.

The rule: per run, the points ordered by (step, timestamp, value) are split into `max_results`
buckets the way SQL's NTILE splits rows (the first `total % max_results` buckets hold one row
more), the first point of each bucket is kept, and the overall last point always is: it is
appended, or it replaces the last sample when the sample already has `max_results` points. So a
run never yields more than `max_results` points, and `max_results == 1` yields only the last
point. (`SqlAlchemyStore._sample_rows_with_window_functions` in MLflow.)

Finding them: the kept points are given by their positions, and a position needs the number of
points before it. The projector keeps, per series, how many points fall in each block of 2^L
steps at six levels L (table `metric_blocks`, migration 0008). A sample reads one level's
blocks, finds the block and the offset within it of every kept position, and reads each point
with an index scan that skips that many entries. The level is the one that costs least: its
blocks, plus per kept position an index descent and half a block's points skipped; a series
for which reading every point costs less (a short one, or one keeping a large share of its
points) is read whole. A 1M-point series with a point per step samples 2,500 points by reading
15,625 block counts and skipping 32 entries per point, instead of numbering a million points.

Most series are one point per step, every step from the first to the last (migration 0011 keeps
each series' extent and whether its steps are known to be unique): there the point at position
p within a window is the point at the window's first step + p, read by step with no counts and
no skipping, about 5 µs a point instead of 21.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from typing import TypeVar

import asyncpg

from api.grammar import INT64_MAX, INT64_MIN
from api.schemas import MetricWithRunId, wire_double

__all__ = [
    "LEVELS",
    "Extent",
    "Probe",
    "choose_level",
    "consecutive_steps",
    "locate",
    "probing_pays",
    "sample",
    "sample_indices",
]

LEVELS = (6, 10, 14, 18, 22, 26)  # as migration 0008 counts them
T = TypeVar("T")


def sample_indices(total: int, max_results: int) -> list[int]:
    """Return the ascending positions kept out of `total` ordered points."""
    if total <= 0:
        return []
    if max_results < 1:
        raise ValueError("max_results must be at least 1")
    size, larger = divmod(total, max_results)
    kept: list[int] = []
    position = 0
    for bucket in range(min(max_results, total)):
        kept.append(position)
        position += size + 1 if bucket < larger else size
    # With fewer points than buckets every point starts a bucket, the last one included; else
    # the sample is full, so the last point replaces the last bucket's first
    kept[-1] = total - 1
    return kept


# What each way of reading costs, in microseconds, measured on a 2-core machine: a point read
# whole into Python; a block count read; a probe's own index descent; an entry it skips.
_ROW_US, _BLOCK_US, _PROBE_US, _SKIP_US = 0.6, 0.25, 7.0, 0.2


def choose_level(blocks: Mapping[int, int], points: int, max_results: int) -> int | None:
    """Return the level whose block counts find the kept points at the least cost, or None
    when reading the whole series costs less (a short series, or one keeping most points)."""
    kept = min(points, max_results)

    def cost(level: int) -> float:
        skipped = points / blocks[level] / 2
        return blocks[level] * _BLOCK_US + kept * (_PROBE_US + skipped * _SKIP_US)

    best = min(blocks, key=cost)
    return best if cost(best) < points * _ROW_US else None


def probing_pays(points: int, max_results: int) -> bool:
    """Return True if reading the kept points of a consecutive series one by one (by step)
    costs less than reading all of its points."""
    return min(points, max_results) * _PROBE_US < points * _ROW_US


@dataclass(frozen=True)
class Probe:
    """Read the point `skip` entries into the steps `first..last` (both in the block)."""

    first: int
    last: int
    skip: int


def locate(
    level: int,
    blocks: Sequence[int],
    points: Sequence[int],
    window: tuple[int, int],
    max_results: int,
) -> list[Probe]:
    """Return a probe per kept position, given the ascending blocks (at `level`) and their
    counts of points within `window`."""
    before = list(accumulate(points, initial=0))  # before[i]: points in blocks[:i]
    probes = []
    for position in sample_indices(before[-1], max_results):
        i = bisect_right(before, position) - 1  # never an empty block: it ends where it starts
        first = max(blocks[i] << level, window[0])
        last = min(((blocks[i] + 1) << level) - 1, window[1])
        probes.append(Probe(first, last, position - before[i]))
    return probes


@dataclass(frozen=True)
class Extent:
    """A series' first and last step, and whether its steps are known to be unique."""

    min_step: int
    max_step: int
    unique_steps: bool

    def consecutive(self, points: int) -> bool:
        """Return True if the series holds exactly one point at every step of its extent."""
        return self.unique_steps and points == self.max_step - self.min_step + 1


def consecutive_steps(extent: Extent, window: tuple[int, int], max_results: int) -> list[int]:
    """Return the steps of the kept points of a consecutive series (one point at each)."""
    first, last = max(extent.min_step, window[0]), min(extent.max_step, window[1])
    return [first + p for p in sample_indices(last - first + 1, max_results)]


# --- reading the sample -----------------------------------------------------------------------

_LEVEL_COUNTS = """
SELECT l.run_id, l.level, l.blocks, l.points, s.min_step, s.max_step, s.unique_steps
FROM metric_levels AS l
LEFT JOIN metric_series AS s ON s.run_id = l.run_id AND s.key = l.key
WHERE l.run_id = ANY($1::text[]) AND l.key = $2
"""
_WHOLE = """
SELECT run_id, step, ts, value FROM metrics
WHERE run_id = ANY($1::text[]) AND key = $2 AND step BETWEEN $3 AND $4
ORDER BY run_id, step, ts, value
"""
# Per run, an index-only scan (the counts are in the key); the ORDER BYs are what array_agg
# promises to keep, and the scan already delivers that order.
_BLOCKS = """
SELECT r.run_id, c.blocks, c.points
FROM unnest($1::text[], $3::smallint[], $4::bigint[], $5::bigint[]) AS r(run_id, level, lo, hi)
CROSS JOIN LATERAL (
    SELECT array_agg(o.block ORDER BY o.block) AS blocks,
           array_agg(o.points ORDER BY o.block) AS points
    FROM (
        SELECT b.block, b.points FROM metric_blocks AS b
        WHERE b.run_id = r.run_id AND b.key = $2 AND b.level = r.level
          AND b.block BETWEEN r.lo AND r.hi
    ) AS o
) AS c
WHERE c.blocks IS NOT NULL
"""
# A block the step window cuts: its points within the window, counted.
_COUNT_WITHIN = """
SELECT r.n, (
    SELECT count(*) FROM metrics AS m
    WHERE m.run_id = r.run_id AND m.key = $2 AND m.step BETWEEN r.first AND r.last
) AS points
FROM unnest($1::text[], $3::bigint[], $4::bigint[]) WITH ORDINALITY AS r(run_id, first, last, n)
"""
# The points at given steps of consecutive series (one point at each step), one index lookup each.
_BY_STEP = """
SELECT t.run_id, p.step, p.ts, p.value
FROM unnest($1::text[], $3::bigint[]) WITH ORDINALITY AS t(run_id, step, n)
CROSS JOIN LATERAL (
    SELECT m.step, m.ts, m.value FROM metrics AS m
    WHERE m.run_id = t.run_id AND m.key = $2 AND m.step = t.step
    LIMIT 1
) AS p
ORDER BY t.n
"""
_PROBE = """
SELECT t.run_id, p.step, p.ts, p.value
FROM unnest($1::text[], $3::bigint[], $4::bigint[], $5::bigint[])
    WITH ORDINALITY AS t(run_id, first, last, skip, n)
CROSS JOIN LATERAL (
    SELECT m.step, m.ts, m.value FROM metrics AS m
    WHERE m.run_id = t.run_id AND m.key = $2 AND m.step BETWEEN t.first AND t.last
    ORDER BY m.step, m.ts, m.value
    OFFSET t.skip LIMIT 1
) AS p
ORDER BY t.n
"""


@dataclass
class _Series:
    level: int
    blocks: list[int] = field(default_factory=list)
    points: list[int] = field(default_factory=list)


async def sample(
    conn: asyncpg.Connection,
    run_ids: Sequence[str],
    key: str,
    max_results: int,
    steps: tuple[int, int] | None,
) -> list[MetricWithRunId]:
    """Return each run's sampled points, runs in request order (a run named twice, twice)."""
    window = steps if steps is not None else (INT64_MIN, INT64_MAX)
    distinct = list(dict.fromkeys(run_ids))
    counts: dict[str, dict[int, int]] = defaultdict(dict)
    totals: dict[str, int] = {}
    extents: dict[str, Extent] = {}
    for row in await conn.fetch(_LEVEL_COUNTS, distinct, key):
        counts[row["run_id"]][row["level"]] = row["blocks"]
        totals[row["run_id"]] = row["points"]
        if row["min_step"] is not None:
            extents[row["run_id"]] = Extent(row["min_step"], row["max_step"], row["unique_steps"])
    small: list[str] = []  # read whole
    counted: dict[str, _Series] = {}  # found through their block counts
    consecutive: dict[str, Extent] = {}  # found by step, without the block counts
    for run_id in (r for r in distinct if r in totals):
        extent = extents.get(run_id)
        if extent is not None and extent.consecutive(totals[run_id]):
            if probing_pays(totals[run_id], max_results):
                consecutive[run_id] = extent
            else:
                small.append(run_id)
        elif (level := choose_level(counts[run_id], totals[run_id], max_results)) is not None:
            counted[run_id] = _Series(level)
        else:
            small.append(run_id)
    by_run: dict[str, list[MetricWithRunId]] = {}
    if small:
        whole: dict[str, list[asyncpg.Record]] = defaultdict(list)
        for row in await conn.fetch(_WHOLE, small, key, *window):
            whole[row["run_id"]].append(row)
        for run_id, rows in whole.items():
            kept = sample_indices(len(rows), max_results)
            by_run[run_id] = [_point(key, run_id, rows[i]) for i in kept]
    if counted:
        await _read_blocks(conn, key, window, counted)
        by_run.update(await _probe(conn, key, window, counted, max_results))
    if consecutive:
        by_run.update(await _by_step(conn, key, window, consecutive, max_results))
    return [point for run_id in run_ids for point in by_run.get(run_id, ())]


async def _read_blocks(
    conn: asyncpg.Connection, key: str, window: tuple[int, int], series: dict[str, _Series]
) -> None:
    """Fill in each series' blocks within the window, the cut edge blocks counted exactly."""
    ids = list(series)
    levels = [series[r].level for r in ids]
    rows = await conn.fetch(
        _BLOCKS,
        ids,
        key,
        levels,
        [window[0] >> level for level in levels],
        [window[1] >> level for level in levels],
    )
    cut: list[tuple[str, int, int, int]] = []  # run, index of the block, first step, last step
    for row in rows:
        s = series[row["run_id"]]
        s.blocks, s.points = list(row["blocks"]), list(row["points"])
        for i in {0, len(s.blocks) - 1}:
            first, last = s.blocks[i] << s.level, ((s.blocks[i] + 1) << s.level) - 1
            if first < window[0] or last > window[1]:
                cut.append((row["run_id"], i, max(first, window[0]), min(last, window[1])))
    if cut:
        exact = await conn.fetch(
            _COUNT_WITHIN, [c[0] for c in cut], key, [c[2] for c in cut], [c[3] for c in cut]
        )
        for row in exact:
            run_id, i, _, _ = cut[row["n"] - 1]
            series[run_id].points[i] = row["points"]


async def _probe(
    conn: asyncpg.Connection,
    key: str,
    window: tuple[int, int],
    series: dict[str, _Series],
    max_results: int,
) -> dict[str, list[MetricWithRunId]]:
    owners, probes = _owned(
        (run_id, locate(s.level, s.blocks, s.points, window, max_results) if s.blocks else [])
        for run_id, s in series.items()
    )
    if not probes:
        return {}
    rows = await conn.fetch(
        _PROBE,
        owners,
        key,
        [p.first for p in probes],
        [p.last for p in probes],
        [p.skip for p in probes],
    )
    return _by_run(key, rows)


async def _by_step(
    conn: asyncpg.Connection,
    key: str,
    window: tuple[int, int],
    series: dict[str, Extent],
    max_results: int,
) -> dict[str, list[MetricWithRunId]]:
    owners, steps = _owned(
        (run_id, consecutive_steps(extent, window, max_results))
        for run_id, extent in series.items()
    )
    if not steps:
        return {}
    return _by_run(key, await conn.fetch(_BY_STEP, owners, key, steps))


def _owned(per_run: Iterable[tuple[str, list[T]]]) -> tuple[list[str], list[T]]:
    """Flatten each run's items into one list, beside a list of the run each item belongs to."""
    owners: list[str] = []
    items: list[T] = []
    for run_id, found in per_run:
        owners += [run_id] * len(found)
        items += found
    return owners, items


def _by_run(key: str, rows: Sequence[asyncpg.Record]) -> dict[str, list[MetricWithRunId]]:
    """Group the points read, in order, by their run."""
    grouped: dict[str, list[MetricWithRunId]] = defaultdict(list)
    for row in rows:
        grouped[row["run_id"]].append(_point(key, row["run_id"], row))
    return grouped


def _point(key: str, run_id: str, row: asyncpg.Record) -> MetricWithRunId:
    return MetricWithRunId(key, wire_double(row["value"]), row["ts"], row["step"], run_id)
