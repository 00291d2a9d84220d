"""The metric hot path's run check: a cache of active runs, invalidated across gateways.

A run that is active stays cached for `ttl_s`; deleting or restoring a run (or an experiment)
anywhere sends a PostgreSQL NOTIFY that every gateway's listener turns into an eviction, so a
write to a just-deleted run is refused within the notification's delivery time, and within
`ttl_s` even if a notification were lost with a dropped listener connection.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from types import TracebackType

import asyncpg
import structlog

from ingest.errors import does_not_exist
from ingest.registry import ACTIVE, EVERY_RUN, LIFECYCLE_CHANNEL, Registry, run_not_active

log = structlog.get_logger(__name__)


class ActiveRuns:
    """Answer "may this run be written to?" mostly from memory."""

    def __init__(
        self, registry: Registry, dsn: str, *, ttl_s: float = 5.0, max_entries: int = 200_000
    ) -> None:
        self._registry = registry
        self._dsn = dsn
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._active: OrderedDict[str, float] = OrderedDict()
        self._listener: asyncpg.Connection | None = None

    async def start(self) -> None:
        """Listen for lifecycle changes made by any gateway."""
        if self._listener is not None:
            return
        self._listener = await asyncpg.connect(self._dsn)
        await self._listener.add_listener(LIFECYCLE_CHANNEL, self._on_notify)
        self._listener.add_termination_listener(self._on_lost)

    async def stop(self) -> None:
        """Stop listening; safe to call twice."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.remove_termination_listener(self._on_lost)
            await listener.close()

    async def __aenter__(self) -> ActiveRuns:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        if payload == EVERY_RUN:
            self._active.clear()
        else:
            self._active.pop(payload, None)

    def _on_lost(self, _conn: object) -> None:
        # Without the listener, evictions from other gateways would be missed: trust nothing.
        log.warning("lifecycle_listener_lost")
        self._active.clear()
        self._listener = None

    def forget(self, run_id: str) -> None:
        """Drop a run from the cache (this process changed its lifecycle)."""
        self._active.pop(run_id, None)

    async def require_active(self, run_id: str) -> None:
        """Return if the run exists and is active; else raise MLflow's 404 or 400."""
        now = time.monotonic()
        expires = self._active.get(run_id)
        if expires is not None and expires > now:
            return
        stage = await self._registry.run_stage(run_id)
        if stage is None:
            raise does_not_exist(f"Run with id={run_id} not found")
        if stage != ACTIVE:
            raise run_not_active(run_id)
        self._active[run_id] = now + self._ttl_s
        self._active.move_to_end(run_id)
        if len(self._active) > self._max_entries:
            self._active.popitem(last=False)
