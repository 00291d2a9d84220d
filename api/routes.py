"""The query API's HTTP handlers: MLflow's read endpoints and Runstream's lineage views.

Every handler parses and checks its request first (a bad request never waits), then passes the
read-your-writes barrier unless the caller asked for eventual consistency, then reads in one
read-only snapshot and encodes a response Struct.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Protocol

import asyncpg
import msgspec
from aiohttp import web

from api import lineage, queries, sampling
from api.asof import AS_OF_HEADER, AsOfViews
from api.grammar import INT64_MAX, INT64_MIN, shown
from api.requests import Fields, invalid_type, read_body
from api.schemas import (
    BestChildrenResponse,
    BulkHistoryResponse,
    ExperimentResponse,
    LineageNode,
    LineageResponse,
    MetricHistoryResponse,
    MetricsWithRunIdResponse,
    RunResponse,
    SearchDatasetsResponse,
    SearchExperimentsResponse,
    SearchRunsResponse,
    encode,
)
from api.search_fields import lifecycle_stages
from api.sqlgen import (
    compile_experiment_search,
    compile_run_search,
)
from api.tokens import decode_history_token
from ingest.errors import does_not_exist, invalid_parameter

__all__ = [
    "AS_OF_HEADER",
    "CONSISTENCY_HEADER",
    "LINEAGE_PREFIX",
    "MLFLOW_PREFIXES",
    "Barrier",
    "QueryApi",
]

AJAX_PREFIX = "/ajax-api/2.0/mlflow"
MLFLOW_PREFIXES = ("/api/2.0/mlflow", AJAX_PREFIX)
LINEAGE_PREFIX = "/api/runstream"
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

MAX_BULK_RUN_IDS = 100
MAX_BULK_HISTORY_RESULTS = 25_000
MAX_SAMPLED_RESULTS = 2_500
DEFAULT_MAX_DEPTH = 100
MAX_DEPTH = 1_000
DEFAULT_LINEAGE_RESULTS = 1_000
MAX_LINEAGE_RESULTS = 50_000
MAX_BEST_METRICS = 100
MAX_DATASET_EXPERIMENTS = 20  # MLflow's cap on SearchDatasets' experiment_ids

Handler = Callable[[web.Request], Awaitable[web.Response]]


class Barrier(Protocol):
    """What a handler needs of the read-your-writes barrier (`api.barrier.ReadBarrier`)."""

    async def wait(self, keys: Iterable[str] | None = None) -> bool:
        """Wait until the read models hold the writes on these record keys (None: all)."""
        ...


def _json(message: msgspec.Struct) -> web.Response:
    return web.Response(body=encode(message), content_type="application/json")


async def _fields(request: web.Request) -> Fields:
    if request.method == "GET":
        return Fields.of_query(request.query)
    return Fields.of_body(await read_body(request))


def _experiment_id(raw: str) -> int:
    """Return an experiment id as MLflow's SQL store parses it (Python's int())."""
    try:
        return int(raw)
    except ValueError:
        raise invalid_parameter(
            f"Invalid experiment ID '{shown(raw)}'. Experiment ID must be a valid integer."
        ) from None


async def _lineage_node(conn: asyncpg.Connection, run_id: str) -> LineageNode:
    found = await lineage.node(conn, run_id)
    if found is None:
        raise does_not_exist(f"Run with id={run_id} not found")
    return found


def _some(fields: Fields, name: str, rpc: str, maximum: int) -> list[str]:
    """Return a repeated id field that must hold 1 to `maximum` values, as MLflow words it."""
    values = fields.texts(name)
    noun = name.removesuffix("s")
    if not values:
        raise invalid_parameter(f"{rpc} request must specify at least one {noun}.")
    if len(values) > maximum:
        raise invalid_parameter(
            f"{rpc} request cannot specify more than {maximum} {noun}s. "
            f"Received {len(values)} {noun}s."
        )
    return values


def _bounded(fields: Fields, name: str, default: int, maximum: int) -> int:
    value = fields.integer(name)
    if value is None:
        return default
    if not 1 <= value <= maximum:
        raise invalid_parameter(f"{name} must be between 1 and {maximum}, got {value}.")
    return value


async def _tell_consistency(request: web.Request, response: web.StreamResponse) -> None:
    mode = request.get(_CONSISTENCY)
    if mode is not None:
        response.headers[CONSISTENCY_HEADER] = mode


class QueryApi:
    """MLflow's read endpoints and Runstream's lineage views over the read models."""

    def __init__(self, pool: asyncpg.Pool, barrier: Barrier, *, schema: str) -> None:
        self._pool = pool
        self._barrier = barrier
        self._as_of = AsOfViews(schema)

    def add_routes(self, app: web.Application) -> None:
        """Register every read endpoint under MLflow's prefixes and the lineage views."""
        gets: dict[str, Handler] = {
            "experiments/get": self.get_experiment,
            "experiments/get-by-name": self.get_experiment_by_name,
            "experiments/search": self.search_experiments,
            "runs/get": self.get_run,
            "metrics/get-history": self.get_metric_history,
            "metrics/get-history-bulk": self.get_metric_history_bulk,
            "metrics/get-history-bulk-interval": self.get_metric_history_bulk_interval,
        }
        posts: dict[str, Handler] = {
            "experiments/search": self.search_experiments,
            "runs/search": self.search_runs,
        }
        for prefix in MLFLOW_PREFIXES:
            for path, handler in gets.items():
                app.router.add_get(f"{prefix}/{path}", handler)
            for path, handler in posts.items():
                app.router.add_post(f"{prefix}/{path}", handler)
        # MLflow serves SearchDatasets to its UI only, under the ajax prefix, by POST
        app.router.add_post(f"{AJAX_PREFIX}/experiments/search-datasets", self.search_datasets)
        runs = f"{LINEAGE_PREFIX}/runs/{{run_id}}"
        app.router.add_get(f"{runs}/ancestors", self.ancestors)
        app.router.add_get(f"{runs}/children", self.children)
        app.router.add_get(f"{runs}/subtree", self.subtree)
        app.router.add_get(f"{runs}/best-children", self.best_children)
        app.on_response_prepare.append(_tell_consistency)

    # --- plumbing -------------------------------------------------------------------------

    async def _settle(
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
    async def _snapshot(
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

    # --- experiments ----------------------------------------------------------------------

    async def get_experiment(self, request: web.Request) -> web.Response:
        """GetExperiment: one experiment by id, deleted or not."""
        fields = await _fields(request)
        raw = fields.text("experiment_id", required=True) or ""
        number = _experiment_id(raw)
        as_of = await self._settle(request, fields, [f"experiment:{number}"])
        found = []
        if INT64_MIN <= number <= INT64_MAX:  # beyond bigint no row can match
            async with self._snapshot(as_of) as conn:
                found = await queries.experiments(conn, [number])
        if not found:
            raise does_not_exist(f"No Experiment with id={shown(str(number))} exists")
        return _json(ExperimentResponse(found[0]))

    async def get_experiment_by_name(self, request: web.Request) -> web.Response:
        """GetExperimentByName: deleted experiments too; 404 is how the client learns 'none'."""
        fields = await _fields(request)
        name = fields.text("experiment_name", required=True) or ""
        as_of = await self._settle(request, fields, None)
        async with self._snapshot(as_of) as conn:
            experiment = await queries.experiment_by_name(conn, name)
        if experiment is None:
            raise does_not_exist(f"Could not find experiment with name '{name}'")
        return _json(ExperimentResponse(experiment))

    async def search_experiments(self, request: web.Request) -> web.Response:
        """SearchExperiments (GET or POST): one page in the requested order."""
        fields = await _fields(request)
        plan = compile_experiment_search(
            fields.text("filter"),
            fields.raw("view_type"),
            fields.integer("max_results"),
            fields.texts("order_by"),
            fields.text("page_token"),
        )
        as_of = await self._settle(request, fields, None)
        async with self._snapshot(as_of, search=True) as conn:
            ids, token = await queries.search_ids(conn, plan)
            found = await queries.experiments(conn, ids)
        return _json(SearchExperimentsResponse(found, token))

    async def search_datasets(self, request: web.Request) -> web.Response:
        """SearchDatasets (UI): the datasets the experiments' runs used, per context."""
        fields = await _fields(request)
        raw_ids = _some(fields, "experiment_ids", "SearchDatasets", MAX_DATASET_EXPERIMENTS)
        numbers = [_experiment_id(raw) for raw in raw_ids]
        ids = [n for n in numbers if INT64_MIN <= n <= INT64_MAX]  # no row matches the rest
        as_of = await self._settle(request, fields, None)
        async with self._snapshot(as_of, search=True) as conn:
            found = await queries.dataset_summaries(conn, ids)
        return _json(SearchDatasetsResponse(found))

    # --- runs -----------------------------------------------------------------------------

    async def get_run(self, request: web.Request) -> web.Response:
        """GetRun: one run with its latest metrics, params, tags and inputs, deleted or not."""
        fields = await _fields(request)
        run_id = fields.text("run_id", required=True, fallback="run_uuid") or ""
        as_of = await self._settle(request, fields, [run_id])
        async with self._snapshot(as_of) as conn:
            found = await queries.runs(conn, [run_id])
        if not found:
            raise does_not_exist(f"Run with id={run_id} not found")
        return _json(RunResponse(found[0]))

    async def search_runs(self, request: web.Request) -> web.Response:
        """SearchRuns: one page of runs matching MLflow's filter grammar, in order."""
        fields = await _fields(request)
        experiment_ids = fields.raw("experiment_ids")
        if experiment_ids is None:
            experiment_ids = []
        elif type(experiment_ids) is not list:
            raise invalid_type("experiment_ids", experiment_ids)
        request_fields = (
            experiment_ids,
            fields.text("filter"),
            fields.raw("run_view_type"),
            fields.integer("max_results"),
            fields.texts("order_by"),
            fields.text("page_token"),
        )
        plan = compile_run_search(*request_fields)  # checked before waiting
        as_of = await self._settle(request, fields, None)
        async with self._snapshot(as_of, search=True) as conn:
            experiments = len(set(map(str, experiment_ids)))
            members = await queries.memberships(conn, plan, experiments)
            if members:
                plan = compile_run_search(*request_fields, members)
            ids, token = await queries.search_ids(conn, plan)
            found = await queries.runs(conn, ids)
        return _json(SearchRunsResponse(found, token))

    # --- metric history -------------------------------------------------------------------

    async def get_metric_history(self, request: web.Request) -> web.Response:
        """GetMetricHistory: a run's points of one metric, paged if max_results is given."""
        fields = await _fields(request)
        run_id = fields.text("run_id", required=True, fallback="run_uuid") or ""
        key = fields.text("metric_key", required=True) or ""
        max_results = fields.integer("max_results")
        if max_results is not None and max_results < 1:
            raise invalid_parameter(
                f"Invalid value {max_results} for parameter 'max_results' supplied. "
                "It must be a positive integer."
            )
        page = decode_history_token(fields.text("page_token"))
        as_of = await self._settle(request, fields, [run_id])
        async with self._snapshot(as_of) as conn:
            points, token = await queries.metric_history(conn, run_id, key, max_results, page)
        return _json(MetricHistoryResponse(points, token))

    async def get_metric_history_bulk(self, request: web.Request) -> web.Response:
        """GetMetricHistoryBulk (legacy UI): several runs' points, by run id then time."""
        fields = await _fields(request)
        run_ids = _some(fields, "run_id", "GetMetricHistoryBulk", MAX_BULK_RUN_IDS)
        key = fields.text("metric_key")
        if key is None:
            raise invalid_parameter("GetMetricHistoryBulk request must specify a metric_key.")
        max_results = fields.integer("max_results")
        if max_results is not None and max_results < 1:
            raise invalid_parameter(
                f"Invalid value {max_results} for parameter 'max_results' supplied. "
                "It must be a positive integer."
            )
        # MLflow caps the page silently
        limit = min(max_results or MAX_BULK_HISTORY_RESULTS, MAX_BULK_HISTORY_RESULTS)
        as_of = await self._settle(request, fields, run_ids)
        async with self._snapshot(as_of) as conn:
            points = await queries.metric_history_bulk(conn, run_ids, key, limit)
        return _json(BulkHistoryResponse(points))

    async def get_metric_history_bulk_interval(self, request: web.Request) -> web.Response:
        """GetMetricHistoryBulkInterval: each run's points sampled to at most max_results."""
        fields = await _fields(request)
        run_ids = fields.texts("run_ids", required=True)
        if len(run_ids) > MAX_BULK_RUN_IDS:
            raise invalid_parameter(
                f"GetMetricHistoryBulkInterval request must specify at most {MAX_BULK_RUN_IDS} "
                f"run_ids. Received {len(run_ids)} run_ids. See the API docs for more "
                "information about request parameters."
            )
        key = fields.text("metric_key", required=True) or ""
        start, end = fields.integer("start_step"), fields.integer("end_step")
        max_results = fields.integer("max_results")
        if max_results is None:
            max_results = MAX_SAMPLED_RESULTS
        elif not 1 <= max_results <= MAX_SAMPLED_RESULTS:
            raise invalid_parameter(
                f"max_results must be between 1 and {MAX_SAMPLED_RESULTS}. See the API docs for "
                "more information about request parameters."
            )
        steps: tuple[int, int] | None = None
        if start is not None and end is not None:
            if start > end:
                raise invalid_parameter(
                    "end_step must be greater than start_step. "
                    f"Found start_step={start} and end_step={end}."
                )
            steps = (start, end)
        elif start is not None or end is not None:
            raise invalid_parameter(
                "If either start step or end step are specified, both must be specified."
            )
        as_of = await self._settle(request, fields, run_ids)
        async with self._snapshot(as_of) as conn:
            points = await sampling.sample(conn, run_ids, key, max_results, steps)
        return _json(MetricsWithRunIdResponse(points))

    # --- lineage views --------------------------------------------------------------------

    async def _lineage(
        self,
        request: web.Request,
        fields: Fields,
        view: Callable[[asyncpg.Connection, str], Awaitable[tuple[list[LineageNode], bool]]],
    ) -> web.Response:
        run_id = request.match_info["run_id"]
        as_of = await self._settle(request, fields, None)  # lineage spans runs on every partition
        async with self._snapshot(as_of) as conn:
            root = await _lineage_node(conn, run_id)
            found, truncated = await view(conn, run_id)
        return _json(LineageResponse(root, found, truncated))

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
        as_of = await self._settle(request, fields, None)
        async with self._snapshot(as_of) as conn:
            await _lineage_node(conn, run_id)
            count, best = await lineage.best_children(conn, run_id, metrics, modes, stages)
        return _json(BestChildrenResponse(run_id, count, best))
