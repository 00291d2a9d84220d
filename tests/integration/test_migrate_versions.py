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


async def test_params_and_tags_stored_before_0013_get_their_runs_columns(stack: Settings) -> None:
    schema = f"t_backfill_{uuid.uuid4().hex[:8]}"
    migrations = load("projector")
    before = [m for m in migrations if m.version < 13]
    conn = await asyncpg.connect(stack.database_url)
    try:
        await migrate(conn, schema, before)
        await conn.execute(f"SET search_path TO {quote_schema(schema)}")
        await conn.executemany(
            "INSERT INTO runs (run_id, experiment_id, run_name, user_id, status, start_time, "
            "artifact_uri, lifecycle_stage, root_run_id) "
            "VALUES ($1, $2, $1, 'u', 'FINISHED', $3, 'file:///a', $4, $1)",
            [("live", 7, 100, "active"), ("gone", 8, 200, "deleted")],
        )
        rows = [("live", "p", "1"), ("gone", "p", "2"), ("orphan", "p", "3")]
        await conn.executemany("INSERT INTO params (run_id, key, value) VALUES ($1, $2, $3)", rows)
        await conn.executemany("INSERT INTO tags (run_id, key, value) VALUES ($1, $2, $3)", rows)
        documents = await conn.fetch("SELECT run_id, data_doc FROM runs ORDER BY run_id")
        assert all(doc["data_doc"] for doc in documents)
        await migrate(conn, schema, migrations)
        for table in ("params", "tags"):
            copies = await conn.fetch(
                f"SELECT run_id, experiment_id, start_time, lifecycle_stage FROM {table} "
                "ORDER BY run_id"
            )
            assert [tuple(row) for row in copies] == [
                ("gone", 8, 200, "deleted"),
                ("live", 7, 100, "active"),
                ("orphan", None, None, None),
            ]
        # the run documents are left as they were, and the orphan is adopted by its run
        assert await conn.fetch("SELECT run_id, data_doc FROM runs ORDER BY run_id") == documents
        await conn.execute(
            "INSERT INTO runs (run_id, experiment_id, run_name, user_id, status, start_time, "
            "artifact_uri, lifecycle_stage, root_run_id) "
            "VALUES ('orphan', 9, 'o', 'u', 'RUNNING', 300, 'file:///a', 'active', 'orphan')"
        )
        adopted = await conn.fetchval(
            "SELECT count(*) FROM tags WHERE run_id = 'orphan' AND experiment_id = 9"
        )
        assert adopted == 1
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {quote_schema(schema)} CASCADE")
        await conn.close()
