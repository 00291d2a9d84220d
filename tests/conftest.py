"""Fixtures shared by every suite: settings, and per-test topics and schemas on the real stack.

Integration tests never skip: when Kafka or PostgreSQL cannot be reached the session fails,
because `make test` starts both before pytest runs.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest

from ingest.errors import UnavailableError
from ingest.topics import delete_topics, ensure_topics
from services.config import Settings
from services.migrations import load, migrate, quote_schema


@pytest.fixture(scope="session")
def settings() -> Settings:
    """Return the settings `make test` runs with (the same environment as the CLI)."""
    return Settings.from_env()


@pytest.fixture(scope="session")
async def stack(settings: Settings) -> Settings:
    """Fail the session unless the real broker and database answer."""
    try:
        conn = await asyncpg.connect(settings.database_url, timeout=10)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        pytest.fail(
            f"PostgreSQL at {settings.database_url} is unreachable ({exc!r}); "
            "run `make test`, which starts the stack",
            pytrace=False,
        )
    await conn.close()
    try:
        await ensure_topics(
            settings.kafka_bootstrap,
            settings.topic,
            settings.partitions,
            settings.dead_letter_topic,
            timeout_s=30,
        )
    except UnavailableError as exc:
        pytest.fail(
            f"Kafka at {settings.kafka_bootstrap} is unreachable ({exc}); "
            "run `make test`, which starts the stack",
            pytrace=False,
        )
    return settings


def _unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def topic(stack: Settings) -> AsyncIterator[str]:
    """Create a fresh 6-partition events topic (and its dead-letter twin) for one test."""
    name = _unique("test.events")
    await ensure_topics(stack.kafka_bootstrap, name, 6, f"{name}.dead-letter")
    yield name
    await delete_topics(stack.kafka_bootstrap, [name, f"{name}.dead-letter"])


SchemaFactory = Callable[[str], Awaitable[str]]


@pytest.fixture
async def schema_factory(stack: Settings) -> AsyncIterator[SchemaFactory]:
    """Return a factory of fresh schemas migrated with a package's migrations; dropped after."""
    created: list[str] = []

    async def make(package: str) -> str:
        schema = _unique(f"t_{package}")
        created.append(schema)
        conn = await asyncpg.connect(stack.database_url)
        try:
            await migrate(conn, schema, load(package))
        finally:
            await conn.close()
        return schema

    yield make
    conn = await asyncpg.connect(stack.database_url)
    try:
        for schema in created:
            await conn.execute(f"DROP SCHEMA IF EXISTS {quote_schema(schema)} CASCADE")
    finally:
        await conn.close()


@pytest.fixture
async def read_db(
    stack: Settings, schema_factory: SchemaFactory
) -> AsyncIterator[asyncpg.Connection]:
    """Return a connection whose search_path is a fresh schema holding the read models."""
    schema = await schema_factory("projector")
    conn = await asyncpg.connect(stack.database_url, server_settings={"search_path": schema})
    yield conn
    await conn.close()


@pytest.fixture
async def registry_db(
    stack: Settings, schema_factory: SchemaFactory
) -> AsyncIterator[asyncpg.Connection]:
    """Return a connection whose search_path is a fresh schema holding the write registry."""
    schema = await schema_factory("ingest")
    conn = await asyncpg.connect(stack.database_url, server_settings={"search_path": schema})
    yield conn
    await conn.close()
