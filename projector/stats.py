"""What the projector has done: counters, per-partition offsets and lag, a Prometheus rendering."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

__all__ = ["PartitionStats", "ProjectorStats", "render_prometheus"]


@dataclass(slots=True)
class PartitionStats:
    """One assigned partition: the stored next offset and the broker's high watermark."""

    next_offset: int | None = None
    highwater: int | None = None

    @property
    def lag(self) -> int | None:
        """Return how many offsets are not folded yet (None until the high watermark is known)."""
        if self.highwater is None:
            return None
        return max(0, self.highwater - (self.next_offset or 0))


@dataclass(slots=True)
class ProjectorStats:
    """Counters of one projector process; updated only after a batch commits."""

    topic: str
    events: int = 0
    records: int = 0
    batches: int = 0
    dead_letters: int = 0
    fenced: int = 0
    store_retries: int = 0
    rebalances: int = 0
    partitions: dict[int, PartitionStats] = field(default_factory=dict)
    started_at: float = field(default_factory=time.monotonic)
    # When the first and the latest batch committed (monotonic), and the first one's events.
    first_commit_at: float | None = None
    first_commit_events: int = 0
    last_commit_at: float | None = None
    # (monotonic time, events) per committed batch over the last `window_s`, for a recent rate.
    _recent: deque[tuple[float, int]] = field(default_factory=deque)
    window_s: float = 10.0

    def committed(self, events: int, records: int, now: float | None = None) -> None:
        """Count a committed batch."""
        now = time.monotonic() if now is None else now
        if self.first_commit_at is None:
            self.first_commit_at, self.first_commit_events = now, events
        self.last_commit_at = now
        self.events += events
        self.records += records
        self.batches += 1
        self._recent.append((now, events))
        while self._recent and self._recent[0][0] < now - self.window_s:
            self._recent.popleft()

    def events_per_second(self, now: float | None = None) -> float:
        """Return the events folded per second over the recent window."""
        now = time.monotonic() if now is None else now
        recent = [(t, n) for t, n in self._recent if t >= now - self.window_s]
        if not recent:
            return 0.0
        span = max(now - recent[0][0], 1e-3) if len(recent) > 1 else self.window_s
        return sum(n for _, n in recent) / span

    def steady_events_per_second(self) -> float | None:
        """Return the rate from the first to the latest committed batch (None before two)."""
        if self.first_commit_at is None or self.last_commit_at is None:
            return None
        span = self.last_commit_at - self.first_commit_at
        return (self.events - self.first_commit_events) / span if span > 0 else None

    def lag(self) -> dict[int, int | None]:
        """Return partition -> lag for the partitions this process holds."""
        return {p: s.lag for p, s in sorted(self.partitions.items())}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render_prometheus(stats: ProjectorStats) -> str:
    """Return the stats in Prometheus' text exposition format."""
    topic = _escape(stats.topic)
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP runstream_projector_{name} {help_text}")
        lines.append(f"# TYPE runstream_projector_{name} {kind}")
        for labels, value in samples:
            lines.append(f"runstream_projector_{name}{{{labels}}} {value:g}")

    base = f'topic="{topic}"'
    counters = [
        ("events_total", stats.events, "Events folded into the read models."),
        ("records_total", stats.records, "Kafka records consumed and committed."),
        ("batches_total", stats.batches, "Batches committed."),
        ("dead_letters_total", stats.dead_letters, "Records sent to the dead-letter topic."),
        ("fenced_total", stats.fenced, "Batches rolled back because their offsets had moved."),
        ("store_retries_total", stats.store_retries, "Batches retried after a database error."),
        ("rebalances_total", stats.rebalances, "Partition assignments received."),
    ]
    for name, value, help_text in counters:
        metric(name, "counter", help_text, [(base, value)])
    metric(
        "events_per_second",
        "gauge",
        "Events folded per second, recent window.",
        [(base, stats.events_per_second())],
    )
    parts = sorted(stats.partitions.items())
    metric(
        "next_offset",
        "gauge",
        "Stored next offset per partition.",
        [(f'{base},partition="{p}"', s.next_offset or 0) for p, s in parts],
    )
    metric(
        "lag",
        "gauge",
        "Offsets not yet folded per partition.",
        [(f'{base},partition="{p}"', s.lag) for p, s in parts if s.lag is not None],
    )
    return "\n".join(lines) + "\n"
