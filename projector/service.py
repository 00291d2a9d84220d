"""The projector's entry point for the service layer: run one member until told to stop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from projector.consumer import Projector
from projector.stats import ProjectorStats

__all__ = ["run_projector"]


async def run_projector(
    *,
    bootstrap: str,
    topic: str,
    group_id: str,
    dead_letter_topic: str,
    dsn: str,
    schema: str,
    stop: asyncio.Event | None = None,
    burst: bool = False,
    shutdown_s: float = 30.0,
    on_started: Callable[[Projector], object] | None = None,
    **options: Any,
) -> ProjectorStats:
    """Run one projector until ``stop`` is set (or, with ``burst``, until caught up); return stats.

    ``schema`` must already be migrated (``projector/migrations``). ``options`` go to
    ``Projector`` (fetch sizes, timeouts, client_id). ``on_started`` receives the running
    projector, e.g. to expose ``render_prometheus(projector.stats)``. When ``stop`` is set the
    batch in hand is finished within ``shutdown_s`` seconds, then the loop is cancelled.
    """
    projector = Projector(
        bootstrap=bootstrap,
        topic=topic,
        group_id=group_id,
        dead_letter_topic=dead_letter_topic,
        dsn=dsn,
        schema=schema,
        **options,
    )
    async with projector:
        if on_started is not None:
            on_started(projector)
        runner = asyncio.create_task(projector.run(burst=burst), name="projector-run")
        stopper = asyncio.ensure_future(stop.wait()) if stop is not None else None
        try:
            await asyncio.wait(
                {runner} | ({stopper} if stopper else set()), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            if stopper is not None:
                stopper.cancel()
            await projector.stop(shutdown_s)
            (outcome,) = await asyncio.gather(runner, return_exceptions=True)
        if isinstance(outcome, Exception):
            raise outcome
    return projector.stats
