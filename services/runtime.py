"""Process lifetimes: compose the roles, serve HTTP, stop on a signal with a deadline."""

from __future__ import annotations

import asyncio
import signal
from contextlib import AsyncExitStack

import structlog
from aiohttp import web

from services.config import Settings

log = structlog.get_logger(__name__)

ROLES = ("ingest", "projector", "api")


async def _health(_: web.Request) -> web.Response:
    return web.Response(text="OK")


def build_app(settings: Settings, roles: frozenset[str]) -> web.Application:
    """Return the HTTP application serving the given roles' routes."""
    app = web.Application(client_max_size=32 * 1024 * 1024)
    app.router.add_get("/health", _health)
    return app


async def run_roles(settings: Settings, roles: frozenset[str], *, shutdown_s: float = 30.0) -> None:
    """Run the roles until SIGINT or SIGTERM, then drain within `shutdown_s` seconds."""
    unknown = roles - set(ROLES)
    if unknown:
        raise ValueError(f"unknown roles: {sorted(unknown)}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with AsyncExitStack() as stack:
        app = build_app(settings, roles)
        runner = web.AppRunner(app, shutdown_timeout=shutdown_s, access_log=None)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, settings.http_host, settings.http_port, reuse_address=True)
        await site.start()
        log.info("serving", roles=sorted(roles), url=settings.tracking_uri)
        await stop.wait()
        log.info("stopping", roles=sorted(roles), deadline_s=shutdown_s)
    log.info("stopped")
