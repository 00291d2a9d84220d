"""Progress of a long operation: a bar on a terminal, structured log lines otherwise."""

from __future__ import annotations

import sys
import time
from collections import deque
from typing import TextIO

import structlog

log = structlog.get_logger(__name__)

_WIDTH = 30


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


class Progress:
    """Report `done` of `total` with a rate over the last few seconds and the time left.

    On a terminal the bar redraws in place (at most 5 times a second); elsewhere a
    ``<what>_progress`` log event is written every ``log_every_s`` seconds.
    """

    def __init__(
        self,
        what: str,
        *,
        stream: TextIO | None = None,
        log_every_s: float = 5.0,
        unit: str = "records",
    ) -> None:
        self.what = what
        self.unit = unit
        self._stream = stream if stream is not None else sys.stderr
        self._tty = self._stream.isatty()
        self._every = 0.2 if self._tty else log_every_s
        self._now = time.monotonic
        self._started = self._now()
        self._last_shown = float("-inf")
        self._window: deque[tuple[float, int]] = deque()
        self.done = 0
        self.total = 0
        self.first: int | None = None  # `done` when first seen: a resumed run starts there

    def update(self, done: int, total: int, *, force: bool = False) -> None:
        """Record the position; show it if it is time to."""
        now = self._now()
        if self.first is None:
            self.first = done
        self.done, self.total = done, max(total, done)
        self._window.append((now, done))
        while len(self._window) > 2 and now - self._window[0][0] > 10.0:
            self._window.popleft()
        if force or now - self._last_shown >= self._every:
            self._last_shown = now
            self._show()

    @property
    def rate(self) -> float:
        """Return units per second over the recent window (0 before two readings)."""
        if len(self._window) < 2:
            return 0.0
        (t0, d0), (t1, d1) = self._window[0], self._window[-1]
        return (d1 - d0) / (t1 - t0) if t1 > t0 else 0.0

    @property
    def overall_rate(self) -> float:
        """Return units per second since the start, resumed work excluded."""
        elapsed = self._now() - self._started
        return (self.done - (self.first or 0)) / elapsed if elapsed > 0 else 0.0

    def eta_s(self) -> float | None:
        """Return the seconds left at the recent rate, or None when it cannot be told."""
        rate = self.rate
        return (self.total - self.done) / rate if rate > 0 else None

    def finish(self) -> None:
        """Show the final position and end the bar's line."""
        self._show()
        if self._tty:
            self._stream.write("\n")
            self._stream.flush()

    def _show(self) -> None:
        eta = self.eta_s()
        if not self._tty:
            log.info(
                f"{self.what}_progress",
                done=self.done,
                total=self.total,
                per_s=round(self.rate),
                eta_s=round(eta) if eta is not None else None,
            )
            return
        share = self.done / self.total if self.total else 1.0
        filled = int(share * _WIDTH)
        bar = "#" * filled + "-" * (_WIDTH - filled)
        left = _clock(eta) if eta is not None else "?"
        self._stream.write(
            f"\r{self.what} [{bar}] {self.done:,}/{self.total:,} {self.unit} "
            f"{share:6.1%}  {self.rate:,.0f}/s  left {left}  elapsed "
            f"{_clock(self._now() - self._started)} "
        )
        self._stream.flush()
