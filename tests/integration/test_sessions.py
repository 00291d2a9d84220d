"""Session settings every service connection carries."""

from __future__ import annotations

from typing import Any

import pytest

from projector.store import PgStore
from services.config import Settings
from services.runtime import open_pool

pytestmark = pytest.mark.integration


async def test_sessions_run_without_jit_and_the_pools_without_parallel_workers(
    stack: Settings, schema_factory: Any
) -> None:
    # A JIT-compiled lineage step or search costs tens of milliseconds of compiling for a
    # statement that runs in one; every read after a write waited for it.
    schema = await schema_factory("projector")
    pool = await open_pool(stack.database_url, schema, max_size=1)
    try:
        assert await pool.fetchval("SHOW jit") == "off"
        # parallel workers only add CPU when many requests already share the cores
        assert await pool.fetchval("SHOW max_parallel_workers_per_gather") == "0"
    finally:
        await pool.close()
    async with await PgStore.open(stack.database_url, schema) as store:
        assert await store.pool.fetchval("SHOW jit") == "off"
