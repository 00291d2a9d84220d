"""Compose the query API: the read-your-writes barrier and the handlers over one pool."""

from __future__ import annotations

from contextlib import AsyncExitStack

import asyncpg

from api.barrier import ReadBarrier
from api.routes import QueryApi

__all__ = ["QueryApi", "start_query_api"]


async def start_query_api(
    pool: asyncpg.Pool,
    *,
    schema: str,
    bootstrap: str,
    topic: str,
    partitions: int,
    read_wait_s: float,
    stack: AsyncExitStack,
) -> QueryApi:
    """Start the barrier on `topic` (stopped by `stack`) and return the API; add its routes
    with `QueryApi.add_routes(app)`. `pool`'s search_path must be the live read-model schema,
    named `schema` (its as-of versions are named after it)."""
    barrier = ReadBarrier(pool, bootstrap, topic, partitions, deadline_s=read_wait_s)
    await stack.enter_async_context(barrier)
    return QueryApi(pool, barrier, schema=schema)
