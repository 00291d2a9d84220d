"""A read of the read models: the read-your-writes barrier first, then one read-only snapshot.

Every handler of the query API (`api.routes`, `api.lineage_routes`) parses and checks its
request first (a bad request never waits), then passes the barrier unless the caller asked for
eventual consistency (`settle`), then reads in one snapshot (`snapshot`) and encodes a response
Struct (`json_response`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Protocol

import asyncpg
import msgspec
from aiohttp import web

from api.asof import AS_OF_HEADER, AsOfViews
from api.requests import Fields, read_body
from api.schemas import encode
from ingest.errors import invalid_parameter

__all__ = [
    "CONSISTENCY_HEADER",
    "Barrier",
    "Reads",
    "json_response",
    "request_fields",
    "tell_consistency",
]

CONSISTENCY_HEADER = "X-Runstream-Consistency"
# What a read's answer is, in that response header: "strong" when the barrier was passed,
# "eventual" when the caller opted out, its deadline passed or the broker did not answer.
_CONSISTENCY = web.RequestKey("consistency", str)
# A read of an as-of version resolves the same table names in that schema, for one transaction.
_READ_SCHEMA = "SELECT set_config('search_path', $1, true)"
_BEGIN = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
# A replay's swap renames schemas after locking every live table (projector/versions.py): a read
# that holds one of them first, before its snapshot, reads one version from start to end, the
# old or the promoted one, never its snapshot of one mixed with tables of the other. LOCK takes
# no snapshot, so the transaction's snapshot is the first query's, after the lock is granted.
_PIN_SCHEMA = "LOCK TABLE runs IN ACCESS SHARE MODE"
# A search's best plan depends on its values: `tags.team = 'nlp'` matches an eighth of the runs,
# `tags.mlflow.parentRunId = '...'` five. asyncpg caches each query text as a prepared statement,
# and after five executions PostgreSQL may switch it to a generic plan made for no value in
# particular; that plan expected 5 runs for every tag value and took 300 ms where the value's
# own plan took 15. Planning each search for its values costs about a millisecond.
# A membership test (`sqlparts.member_test`) is a hashed set only while PostgreSQL expects the
# set to fit in work_mem (times hash_mem_multiplier); past that it rescans the matching runs for
# every walked run. 32 MB keeps sets of ~700k runs hashed (~90 bytes a run by its estimate); a
# search takes only what it uses.
_CUSTOM_PLANS = "SET LOCAL plan_cache_mode = force_custom_plan; SET LOCAL work_mem = '32MB'"
_PIN_SEARCH = f"{_PIN_SCHEMA}; {_CUSTOM_PLANS}"
# A read opens in one round trip (the simple protocol runs the statements in turn).
_OPEN_READ = f"{_BEGIN}; {_PIN_SCHEMA}"
_OPEN_SEARCH = f"{_BEGIN}; {_PIN_SEARCH}"
# Read-only: ending it either way is the same, and ROLLBACK also ends one a failed query aborted.
_END_READ = "ROLLBACK"


class Barrier(Protocol):
    """What a handler needs of the read-your-writes barrier (`api.barrier.ReadBarrier`)."""

    async def wait(self, keys: Iterable[str] | None = None) -> bool:
        """Wait until the read models hold the writes on these record keys (None: all)."""
        ...


def json_response(message: msgspec.Struct) -> web.Response:
    """Return a response Struct as MLflow's JSON."""
    return web.Response(body=encode(message), content_type="application/json")


async def request_fields(request: web.Request) -> Fields:
    """Return a request's fields: its query string for a GET, else its JSON body."""
    if request.method == "GET":
        return Fields.of_query(request.query)
    return Fields.of_body(await read_body(request))


async def tell_consistency(request: web.Request, response: web.StreamResponse) -> None:
    """Say in a response's header which consistency its read had (an on_response_prepare)."""
    mode = request.get(_CONSISTENCY)
    if mode is not None:
        response.headers[CONSISTENCY_HEADER] = mode


class Reads:
    """The barrier and the snapshots every read handler shares, over one pool and schema."""

    def __init__(self, pool: asyncpg.Pool, barrier: Barrier, *, schema: str) -> None:
        self._pool = pool
        self._barrier = barrier
        self._as_of = AsOfViews(schema)

    async def settle(
        self, request: web.Request, fields: Fields, keys: Iterable[str] | None
    ) -> str | None:
        """Pass the barrier for these record keys (None: the whole topic) unless opted out.

        Return the as-of schema to read instead of the live one, if the request names a moment.
        """
        as_of = request.headers.get(AS_OF_HEADER) or fields.text("as_of")
        if as_of:
            return await self._as_of.resolve(self._pool, as_of)
        header = request.headers.get(CONSISTENCY_HEADER)
        choice = (header if header is not None else fields.text("consistency")) or "strong"
        mode = choice.strip().lower()
        if mode not in {"strong", "eventual"}:
            raise invalid_parameter(
                f"Invalid consistency {choice[:100]!r}: use 'strong' (default) or 'eventual'."
            )
        if mode == "strong" and not await self._barrier.wait(keys):
            mode = "eventual"
        request[_CONSISTENCY] = mode
        return None

    @asynccontextmanager
    async def snapshot(
        self, as_of: str | None, *, search: bool = False
    ) -> AsyncIterator[asyncpg.Connection]:
        """Yield a connection in a read-only snapshot of the live schema (or an as-of one);
        a `search` plans its statements for their values."""
        async with self._pool.acquire() as conn:
            try:
                if as_of is None:
                    await conn.execute(_OPEN_SEARCH if search else _OPEN_READ)
                else:
                    await conn.execute(_BEGIN)
                    await conn.execute(_READ_SCHEMA, f'"{as_of}"')
                    await conn.execute(_PIN_SEARCH if search else _PIN_SCHEMA)
                yield conn
            finally:
                if not conn.is_closed():
                    await conn.execute(_END_READ)
