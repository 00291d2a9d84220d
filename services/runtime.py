"""Process lifetimes: compose the roles, serve HTTP, stop on a signal with a deadline."""

from __future__ import annotations

import asyncio
import gc
import signal
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack

import asyncpg
import structlog
from aiohttp import web

from api.app import QueryApi, start_query_api
from ingest.gateway import Gateway
from ingest.lifecycle import ActiveRuns
from ingest.producer import EventProducer
from ingest.registry import Registry
from ingest.topics import MAX_RECORD_BYTES
from projector.consumer import Projector
from projector.stats import render_prometheus
from projector.store import NO_JIT
from services.config import Settings
from services.http import mlflow_errors

log = structlog.get_logger(__name__)


class RoleFailedError(RuntimeError):
    """A role stopped on its own; the process exits non-zero so a supervisor restarts it."""


ROLES = ("ingest", "projector", "api")
# Bodies beyond this get 413; a full log-batch (1000 metrics) is ~150 KB, a dataset profile
# may be up to 16 MiB (MLflow's limit), so the cap sits just above that.
MAX_BODY_BYTES = 17 * 1024 * 1024


async def _health(_: web.Request) -> web.Response:
    return web.Response(text="OK")


# Each request's statements run serially: with many clients sharing few cores, the parallel
# workers PostgreSQL starts for a search only add CPU to busy cores (figures in the README).
SERIAL_PLANS = {"max_parallel_workers_per_gather": "0"}


async def _keep_session(_: asyncpg.Connection) -> None:
    """Leave a released connection's session as it is.

    asyncpg ends an open transaction itself; by default it then sends a reset (unlock advisory
    locks, close cursors, UNLISTEN, RESET ALL), a round trip on every release. The API's and
    gateway's sessions keep none of those: their settings are LOCAL to a transaction, they take
    no session locks or cursors, and the read barrier unlistens before it releases.
    """


async def open_pool(
    dsn: str,
    schema: str,
    *,
    max_size: int = 20,
    init: Callable[[asyncpg.Connection], Awaitable[None]] | None = None,
) -> asyncpg.Pool:
    """Return a connection pool whose search_path is `schema`, without JIT or parallel plans;
    `init` runs on each new connection."""
    pool: asyncpg.Pool = await asyncpg.create_pool(
        dsn,
        min_size=1,
        max_size=max_size,
        server_settings={"search_path": schema, **NO_JIT, **SERIAL_PLANS},
        command_timeout=60,
        init=init,
        reset=_keep_session,
    )
    return pool


async def start_gateway(settings: Settings, stack: AsyncExitStack) -> Gateway:
    """Open what the ingest gateway needs (closed by `stack`) and return it."""
    pool = await open_pool(settings.database_url, settings.registry_schema)
    stack.push_async_callback(pool.close)
    producer = EventProducer(
        settings.kafka_bootstrap,
        settings.topic,
        delivery_timeout_s=settings.delivery_timeout_s,
        linger_ms=settings.linger_ms,
    )
    await stack.enter_async_context(producer)
    registry = Registry(pool)
    active = await stack.enter_async_context(ActiveRuns(registry, settings.database_url))
    gateway = Gateway(
        registry,
        producer,
        active,
        artifact_root=settings.artifact_root,
        truncate_long_values=settings.truncate_long_values,
    )
    if await gateway.experiments.ensure_default_experiment():
        log.info("default_experiment_created")
    return gateway


async def start_projector(
    settings: Settings, stack: AsyncExitStack, app: web.Application, failed: asyncio.Event
) -> None:
    """Start the projector in this process (stopped by `stack`) and serve its /metrics."""
    projector = Projector(
        bootstrap=settings.kafka_bootstrap,
        topic=settings.topic,
        group_id=settings.consumer_group,
        dead_letter_topic=settings.dead_letter_topic,
        dsn=settings.database_url,
        schema=settings.read_schema,
        max_record_bytes=MAX_RECORD_BYTES,
    )
    await stack.enter_async_context(projector)
    task = asyncio.create_task(projector.run(), name="projector")

    def done(finished: asyncio.Task[None]) -> None:
        # A projector that dies on its own must take the process down with it, not linger.
        if not finished.cancelled() and finished.exception() is not None:
            log.error("projector_failed", error=repr(finished.exception()))
            failed.set()

    task.add_done_callback(done)

    async def finish() -> None:
        await projector.stop(30.0)
        await asyncio.gather(task, return_exceptions=True)

    stack.push_async_callback(finish)

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(
            text=render_prometheus(projector.stats), content_type="text/plain", charset="utf-8"
        )

    app.router.add_get("/metrics", metrics)


async def start_api(settings: Settings, stack: AsyncExitStack) -> QueryApi:
    """Open what the query API needs (closed by `stack`) and return it."""
    pool = await open_pool(settings.database_url, settings.read_schema)
    stack.push_async_callback(pool.close)
    return await start_query_api(
        pool,
        schema=settings.read_schema,
        bootstrap=settings.kafka_bootstrap,
        topic=settings.topic,
        partitions=settings.partitions,
        read_wait_s=settings.read_wait_s,
        stack=stack,
    )


def freeze_startup_objects() -> None:
    """Move every object alive now out of the cyclic collector's reach.

    What exists once the roles are up (modules, pools, routes: ~55k objects) lives as long as
    the process, yet every full collection walked it: 50-80 ms pauses, a few times a minute
    under load, which were most of a search's p99 at 8 clients (figures in the README).
    """
    gc.collect()
    gc.freeze()


def new_app() -> web.Application:
    """Return an application with the health route and MLflow-shaped errors."""
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[mlflow_errors])
    app.router.add_get("/health", _health)
    return app


async def run_roles(settings: Settings, roles: frozenset[str], *, shutdown_s: float = 30.0) -> None:
    """Run the roles until SIGINT or SIGTERM, then drain within `shutdown_s` seconds."""
    unknown = roles - set(ROLES)
    if unknown:
        raise ValueError(f"unknown roles: {sorted(unknown)}")
    stop = asyncio.Event()
    failed = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with AsyncExitStack() as stack:
        app = new_app()
        if "ingest" in roles:
            (await start_gateway(settings, stack)).add_routes(app)
        if "projector" in roles:
            await start_projector(settings, stack, app, failed)
        if "api" in roles:
            (await start_api(settings, stack)).add_routes(app)
        runner = web.AppRunner(app, shutdown_timeout=shutdown_s, access_log=None)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(
            runner,
            settings.http_host,
            settings.http_port,
            reuse_address=True,
            reuse_port=settings.reuse_port,
        )
        await site.start()
        freeze_startup_objects()
        log.info("serving", roles=sorted(roles), url=settings.tracking_uri)
        waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(failed.wait())]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()
        log.info("stopping", roles=sorted(roles), deadline_s=shutdown_s)
    if failed.is_set():
        raise RoleFailedError("a role failed; see the log above")
    log.info("stopped")
