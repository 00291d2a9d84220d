"""Runstream's lineage views under /api/runstream: a run's ancestors, children and subtree,
and its best children by metric (`api.lineage` holds their SQL)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg
from aiohttp import web

from api import lineage
from api.reads import Reads, json_response
from api.requests import Fields
from api.schemas import BestChildrenResponse, LineageNode, LineageResponse
from api.search_fields import lifecycle_stages
from ingest.errors import does_not_exist, invalid_parameter

__all__ = ["LINEAGE_PREFIX", "LineageViews"]

LINEAGE_PREFIX = "/api/runstream"
DEFAULT_MAX_DEPTH = 100
MAX_DEPTH = 1_000
DEFAULT_LINEAGE_RESULTS = 1_000
MAX_LINEAGE_RESULTS = 50_000
MAX_BEST_METRICS = 100


async def _lineage_node(conn: asyncpg.Connection, run_id: str) -> LineageNode:
    found = await lineage.node(conn, run_id)
    if found is None:
        raise does_not_exist(f"Run with id={run_id} not found")
    return found


def _bounded(fields: Fields, name: str, default: int, maximum: int) -> int:
    value = fields.integer(name)
    if value is None:
        return default
    if not 1 <= value <= maximum:
        raise invalid_parameter(f"{name} must be between 1 and {maximum}, got {value}.")
    return value


class LineageViews:
    """The lineage views' handlers, reading as every read handler does (`api.reads`)."""

    def __init__(self, reads: Reads) -> None:
        self._reads = reads

    def add_routes(self, app: web.Application) -> None:
        """Register the views under /api/runstream/runs/{run_id}/."""
        runs = f"{LINEAGE_PREFIX}/runs/{{run_id}}"
        app.router.add_get(f"{runs}/ancestors", self.ancestors)
        app.router.add_get(f"{runs}/children", self.children)
        app.router.add_get(f"{runs}/subtree", self.subtree)
        app.router.add_get(f"{runs}/best-children", self.best_children)

    async def _lineage(
        self,
        request: web.Request,
        fields: Fields,
        view: Callable[[asyncpg.Connection, str], Awaitable[tuple[list[LineageNode], bool]]],
    ) -> web.Response:
        run_id = request.match_info["run_id"]
        as_of = await self._reads.settle(
            request, fields, None
        )  # lineage spans runs on every partition
        async with self._reads.snapshot(as_of) as conn:
            root = await _lineage_node(conn, run_id)
            found, truncated = await view(conn, run_id)
        return json_response(LineageResponse(root, found, truncated))

    async def ancestors(self, request: web.Request) -> web.Response:
        """The run's parent, its parent's parent, ... up to the root, nearest first."""
        fields = Fields.of_query(request.query)
        max_depth = _bounded(fields, "max_depth", DEFAULT_MAX_DEPTH, MAX_DEPTH)
        return await self._lineage(
            request, fields, lambda conn, run_id: lineage.ancestors(conn, run_id, max_depth)
        )

    async def children(self, request: web.Request) -> web.Response:
        """The run's direct children, by start time."""
        fields = Fields.of_query(request.query)
        limit = _bounded(fields, "max_results", DEFAULT_LINEAGE_RESULTS, MAX_LINEAGE_RESULTS)
        return await self._lineage(
            request, fields, lambda conn, run_id: lineage.children(conn, run_id, limit)
        )

    async def subtree(self, request: web.Request) -> web.Response:
        """All the run's descendants, level by level, each with its distance from the run."""
        fields = Fields.of_query(request.query)
        max_depth = _bounded(fields, "max_depth", DEFAULT_MAX_DEPTH, MAX_DEPTH)
        limit = _bounded(fields, "max_results", DEFAULT_LINEAGE_RESULTS, MAX_LINEAGE_RESULTS)
        return await self._lineage(
            request, fields, lambda conn, run_id: lineage.subtree(conn, run_id, max_depth, limit)
        )

    async def best_children(self, request: web.Request) -> web.Response:
        """Per metric, the child run with the best latest value (max, min or both)."""
        fields = Fields.of_query(request.query)
        metrics = list(dict.fromkeys(fields.texts("metric", required=True)))
        if len(metrics) > MAX_BEST_METRICS:
            raise invalid_parameter(f"At most {MAX_BEST_METRICS} metrics may be ranked at once.")
        mode = (fields.text("mode") or "both").lower()
        if mode not in {"max", "min", "both"}:
            raise invalid_parameter(f"Invalid mode {mode[:100]!r}: use 'max', 'min' or 'both'.")
        modes = lineage.MODES if mode == "both" else (mode,)
        stages = lifecycle_stages(fields.enum("run_view_type"), "run_view_type")
        run_id = request.match_info["run_id"]
        as_of = await self._reads.settle(request, fields, None)
        async with self._reads.snapshot(as_of) as conn:
            await _lineage_node(conn, run_id)
            count, best = await lineage.best_children(conn, run_id, metrics, modes, stages)
        return json_response(BestChildrenResponse(run_id, count, best))
