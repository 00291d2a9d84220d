"""MLflow 3.x's bulk-interval sampling rule, as positions of the ordered points kept."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.sampling import bucket_shape, sample_indices


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


@given(total=st.integers(1, 3000), max_results=st.integers(1, 2500))
def test_bucket_shape_keeps_exactly_the_reference_positions(total: int, max_results: int) -> None:
    # The SQL keeps a position by this arithmetic; it must pick what sample_indices picks.
    q, boundary, last_start = bucket_shape(total, max_results)

    def kept(i: int) -> bool:
        if i == total - 1:
            return True
        if i == last_start:
            return False
        if i < boundary:
            return i % (q + 1) == 0
        return q > 0 and (i - boundary) % q == 0

    assert [i for i in range(total) if kept(i)] == sample_indices(total, max_results)
