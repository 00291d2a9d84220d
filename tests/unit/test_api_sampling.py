"""MLflow 3.x's bulk-interval sampling rule, as positions of the ordered points kept."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.sampling import (
    LEVELS,
    Extent,
    choose_level,
    consecutive_steps,
    locate,
    probing_pays,
    sample_indices,
)


def ntile(total: int, buckets: int) -> list[int]:
    """SQL's NTILE(buckets) over `total` rows, row by row (the standard's definition)."""
    size, larger = divmod(total, buckets)
    out: list[int] = []
    for bucket in range(1, buckets + 1):
        out += [bucket] * (size + 1 if bucket <= larger else size)
    return out[:total]


def reference(total: int, cap: int) -> list[int]:
    """First row of each NTILE bucket, then the last row kept, replacing at the cap."""
    tiles = ntile(total, cap)
    kept = [i for i in range(total) if i == 0 or tiles[i] != tiles[i - 1]]
    last = total - 1
    if kept and kept[-1] != last:
        if len(kept) >= cap:
            kept[-1] = last
        else:
            kept.append(last)
    return kept


def test_ten_points_five_samples_is_mlflows_observed_answer() -> None:
    assert sample_indices(10, 5) == [0, 2, 4, 6, 9]


@pytest.mark.parametrize(
    ("total", "cap", "kept"),
    [
        (0, 5, []),
        (1, 5, [0]),
        (3, 5, [0, 1, 2]),
        (5, 5, [0, 1, 2, 3, 4]),
        (6, 5, [0, 2, 3, 4, 5]),
        (11, 5, [0, 3, 5, 7, 10]),
        (10, 1, [9]),
        (2, 1, [1]),
        (10, 2, [0, 9]),
    ],
)
def test_known_samples(total: int, cap: int, kept: list[int]) -> None:
    assert sample_indices(total, cap) == kept


@given(st.integers(min_value=0, max_value=3000), st.integers(min_value=1, max_value=2500))
def test_equals_the_ntile_reference(total: int, cap: int) -> None:
    kept = sample_indices(total, cap)
    assert kept == reference(total, cap)
    assert len(kept) <= cap
    assert kept == sorted(set(kept))
    if total:
        assert kept[-1] == total - 1
        assert kept[0] == (0 if cap > 1 or total == 1 else total - 1)


def test_rejects_a_zero_cap() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        sample_indices(3, 0)


@given(
    steps=st.lists(st.integers(-5000, 5000), min_size=1, max_size=400),
    level=st.sampled_from(LEVELS[:3]),
    max_results=st.integers(1, 60),
    window=st.tuples(st.integers(-6000, 6000), st.integers(-6000, 6000)).map(sorted),
)
def test_probes_find_exactly_the_points_the_rule_keeps(
    steps: list[int], level: int, max_results: int, window: list[int]
) -> None:
    # Steps repeat (points at one step differ in timestamp); an index scan is a sorted list.
    points = sorted(steps)
    lo, hi = window
    inside = [s for s in points if lo <= s <= hi]
    blocks = sorted({s >> level for s in inside})
    counts = [sum(1 for s in inside if s >> level == b) for b in blocks]
    # An edge block the window cuts to nothing is still listed, counted 0
    edge = (lo >> level) - 1
    if blocks and edge < blocks[0] and not any(lo <= s <= hi for s in points if s >> level == edge):
        blocks, counts = [edge, *blocks], [0, *counts]
    if not blocks:
        return
    probes = locate(level, blocks, counts, (lo, hi), max_results)
    found = []
    for probe in probes:
        assert probe.first >> level == probe.last >> level
        assert lo <= probe.first <= probe.last <= hi
        found.append([s for s in points if probe.first <= s <= probe.last][probe.skip])
    assert found == [inside[i] for i in sample_indices(len(inside), max_results)]


def test_choose_level_weighs_blocks_read_against_probes_and_reading_everything() -> None:
    # A point per step: 1M points are cheapest sampled from 64-step blocks; for 100M points,
    # 320 kept points come from 1024-step blocks. Steps 1000 apart make the finer levels a
    # block per point.
    dense = {level: max(1, 1_000_000 >> level) for level in LEVELS}
    assert choose_level(dense, 1_000_000, 2500) == 6
    assert choose_level(dense, 1_000_000, 320) == 6
    huge = {level: max(1, 100_000_000 >> level) for level in LEVELS}
    assert choose_level(huge, 100_000_000, 320) == 10
    sparse = {level: min(1_000_000, 1_000_000_000 >> level) for level in LEVELS}
    assert choose_level(sparse, 1_000_000, 2500) == 14
    # Keeping a quarter of 10k points, or any share of a short series: read it whole
    ten_k = {level: max(1, 10_000 >> level) for level in LEVELS}
    assert choose_level(ten_k, 10_000, 2500) is None
    assert choose_level(ten_k, 10_000, 320) is not None
    assert choose_level(dict.fromkeys(LEVELS, 1), 3, 2500) is None


@given(
    first=st.integers(-10_000, 10_000),
    length=st.integers(1, 3000),
    max_results=st.integers(1, 400),
    window=st.tuples(st.integers(-15_000, 15_000), st.integers(-15_000, 15_000)).map(sorted),
)
def test_a_consecutive_series_is_read_at_the_steps_the_rule_keeps(
    first: int, length: int, max_results: int, window: list[int]
) -> None:
    steps = list(range(first, first + length))  # one point at every step of its extent
    lo, hi = window
    inside = [s for s in steps if lo <= s <= hi]
    extent = Extent(steps[0], steps[-1], unique_steps=True)
    assert extent.consecutive(length)
    kept = consecutive_steps(extent, (lo, hi), max_results)
    assert kept == [inside[i] for i in sample_indices(len(inside), max_results)]


def test_only_a_series_known_unique_and_without_gaps_is_consecutive() -> None:
    assert Extent(0, 9, unique_steps=True).consecutive(10)
    assert not Extent(0, 9, unique_steps=True).consecutive(9)  # a step missing
    assert not Extent(0, 9, unique_steps=False).consecutive(10)  # unknown: maybe 2 at a step


def test_probing_a_consecutive_series_pays_unless_it_keeps_a_large_share() -> None:
    assert probing_pays(1_000_000, 2500)
    assert probing_pays(10_000, 320)
    assert not probing_pays(10_000, 2500)
    assert not probing_pays(50, 2500)
