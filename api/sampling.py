"""Which points of a metric's history GetMetricHistoryBulkInterval keeps (MLflow 3.x's rule).

Per run, the points ordered by (step, timestamp, value) are split into `max_results` buckets the
way SQL's NTILE splits rows (the first `total % max_results` buckets hold one row more), the
first point of each bucket is kept, and the overall last point always is: it is appended, or it
replaces the last sample when the sample already has `max_results` points. So a run never yields
more than `max_results` points, and `max_results == 1` yields only the last point.
(`SqlAlchemyStore._sample_rows_with_window_functions` in MLflow.)
"""

from __future__ import annotations

__all__ = ["bucket_shape", "sample_indices"]


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


def bucket_shape(total: int, max_results: int) -> tuple[int, int, int]:
    """Return (q, boundary, last_start) so SQL can test positions without listing them.

    Buckets before position `boundary` hold q+1 points, the rest q; `last_start` is where the
    last bucket starts (the position the overall last point replaces).
    """
    if total <= 0 or max_results < 1:
        raise ValueError("need at least one point and one bucket")
    q, larger = divmod(total, max_results)
    boundary = larger * (q + 1)
    last = min(max_results, total) - 1
    last_start = last * (q + 1) if last < larger else boundary + (last - larger) * q
    return q, boundary, last_start
