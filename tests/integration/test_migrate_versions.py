"""`runstream migrate` brings the versions the API or a rollback may read up to date."""

from __future__ import annotations

import uuid
from dataclasses import replace

import asyncpg
import pytest

from projector import versions
from services.cli import apply_migrations
from services.config import Settings
from services.migrations import load, migrate, quote_schema

pytestmark = pytest.mark.integration


async def test_kept_and_as_of_versions_get_the_new_migrations_and_a_rebuild_does_not(
    stack: Settings,
) -> None:
    live = f"t_versions_{uuid.uuid4().hex[:8]}"
    settings = replace(stack, read_schema=live, registry_schema=f"{live}_registry")
    older = load("projector")[:-1]  # as a version kept from before the last migration
    kept = {
        "prev": versions.prev_schema(live),
        "as_of": versions.as_of_schema(live, 1_700_000_000_000),
        "next": versions.next_schema(live),
    }
    conn = await asyncpg.connect(stack.database_url)
    try:
        for schema in kept.values():
            await migrate(conn, schema, older)
        applied = await apply_migrations(settings)
        last = load("projector")[-1].name
        assert f"{kept['prev']}.{last}" in applied
        assert f"{kept['as_of']}.{last}" in applied
        assert not any(name.startswith(f"{kept['next']}.") for name in applied)
    finally:
        for schema in [*kept.values(), live, settings.registry_schema]:
            await conn.execute(f"DROP SCHEMA IF EXISTS {quote_schema(schema)} CASCADE")
        await conn.close()
