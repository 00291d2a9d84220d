"""The query API's routes, and its handlers of MLflow's read endpoints.

Each handler reads as `api.reads` describes; Runstream's lineage views are `api.lineage_routes`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace

import asyncpg
from aiohttp import web

from api import queries, sampling
from api.asof import AS_OF_HEADER
from api.grammar import INT64_MAX, INT64_MIN, shown
from api.lineage_routes import LINEAGE_PREFIX, LineageViews
from api.memberships import StatisticsCache, choose_memberships, walk_pays, wants_statistics
from api.reads import (
    CONSISTENCY_HEADER,
    Barrier,
    Reads,
    json_response,
    request_fields,
    tell_consistency,
)
from api.requests import Fields, invalid_type
from api.schemas import (
    BulkHistoryResponse,
    ExperimentResponse,
    MetricHistoryResponse,
    MetricsWithRunIdResponse,
    RunResponse,
    SearchDatasetsResponse,
    SearchExperimentsResponse,
    SearchRunsResponse,
)
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
MAX_BULK_RUN_IDS = 100
MAX_BULK_HISTORY_RESULTS = 25_000
MAX_SAMPLED_RESULTS = 2_500
MAX_DATASET_EXPERIMENTS = 20  # MLflow's cap on SearchDatasets' experiment_ids

Handler = Callable[[web.Request], Awaitable[web.Response]]


def _experiment_id(raw: str) -> int:
    """Return an experiment id as MLflow's SQL store parses it (Python's int())."""
    try:
        return int(raw)
    except ValueError:
        raise invalid_parameter(
            f"Invalid experiment ID '{shown(raw)}'. Experiment ID must be a valid integer."
        ) from None


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


class QueryApi:
    """MLflow's read endpoints and Runstream's lineage views over the read models."""

    def __init__(self, pool: asyncpg.Pool, barrier: Barrier, *, schema: str) -> None:
        self._reads = Reads(pool, barrier, schema=schema)
        self._statistics = StatisticsCache()
        self._lineage = LineageViews(self._reads)

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
        self._lineage.add_routes(app)
        app.on_response_prepare.append(tell_consistency)

    # --- experiments ----------------------------------------------------------------------

    async def get_experiment(self, request: web.Request) -> web.Response:
        """GetExperiment: one experiment by id, deleted or not."""
        fields = await request_fields(request)
        raw = fields.text("experiment_id", required=True) or ""
        number = _experiment_id(raw)
        as_of = await self._reads.settle(request, fields, [f"experiment:{number}"])
        found = []
        if INT64_MIN <= number <= INT64_MAX:  # beyond bigint no row can match
            async with self._reads.snapshot(as_of) as conn:
                found = await queries.experiments(conn, [number])
        if not found:
            raise does_not_exist(f"No Experiment with id={shown(str(number))} exists")
        return json_response(ExperimentResponse(found[0]))

    async def get_experiment_by_name(self, request: web.Request) -> web.Response:
        """GetExperimentByName: deleted experiments too; 404 is how the client learns 'none'."""
        fields = await request_fields(request)
        name = fields.text("experiment_name", required=True) or ""
        as_of = await self._reads.settle(request, fields, None)
        async with self._reads.snapshot(as_of) as conn:
            experiment = await queries.experiment_by_name(conn, name)
        if experiment is None:
            raise does_not_exist(f"Could not find experiment with name '{name}'")
        return json_response(ExperimentResponse(experiment))

    async def search_experiments(self, request: web.Request) -> web.Response:
        """SearchExperiments (GET or POST): one page in the requested order."""
        fields = await request_fields(request)
        plan = compile_experiment_search(
            fields.text("filter"),
            fields.raw("view_type"),
            fields.integer("max_results"),
            fields.texts("order_by"),
            fields.text("page_token"),
        )
        as_of = await self._reads.settle(request, fields, None)
        async with self._reads.snapshot(as_of, search=True) as conn:
            ids, token = await queries.search_ids(conn, plan)
            found = await queries.experiments(conn, ids)
        return json_response(SearchExperimentsResponse(found, token))

    async def search_datasets(self, request: web.Request) -> web.Response:
        """SearchDatasets (UI): the datasets the experiments' runs used, per context."""
        fields = await request_fields(request)
        raw_ids = _some(fields, "experiment_ids", "SearchDatasets", MAX_DATASET_EXPERIMENTS)
        numbers = [_experiment_id(raw) for raw in raw_ids]
        ids = [n for n in numbers if INT64_MIN <= n <= INT64_MAX]  # no row matches the rest
        as_of = await self._reads.settle(request, fields, None)
        async with self._reads.snapshot(as_of, search=True) as conn:
            found = await queries.dataset_summaries(conn, ids)
        return json_response(SearchDatasetsResponse(found))

    # --- runs -----------------------------------------------------------------------------

    async def get_run(self, request: web.Request) -> web.Response:
        """GetRun: one run with its latest metrics, params, tags and inputs, deleted or not."""
        fields = await request_fields(request)
        run_id = fields.text("run_id", required=True, fallback="run_uuid") or ""
        as_of = await self._reads.settle(request, fields, [run_id])
        async with self._reads.snapshot(as_of) as conn:
            found = await queries.runs(conn, [run_id])
        if not found:
            raise does_not_exist(f"Run with id={run_id} not found")
        return json_response(RunResponse(found[0]))

    async def search_runs(self, request: web.Request) -> web.Response:
        """SearchRuns: one page of runs matching MLflow's filter grammar, in order."""
        fields = await request_fields(request)
        experiment_ids = fields.raw("experiment_ids")
        if experiment_ids is None:
            experiment_ids = []
        elif type(experiment_ids) is not list:
            raise invalid_type("experiment_ids", experiment_ids)
        asked = (
            experiment_ids,
            fields.text("filter"),
            fields.raw("run_view_type"),
            fields.integer("max_results"),
            fields.texts("order_by"),
            fields.text("page_token"),
        )
        plan = compile_run_search(*asked)  # checked before waiting
        as_of = await self._reads.settle(request, fields, None)
        async with self._reads.snapshot(as_of, search=True) as conn:
            if wants_statistics(plan):
                stats = await self._statistics.get(conn, as_of)
                members = choose_memberships(stats, plan, len(set(map(str, experiment_ids))))
                if members:
                    plan = compile_run_search(*asked, members)
                if plan.walk is not None and not walk_pays(stats, plan.walk):
                    plan = replace(plan, walk=None)
            ids, token = await queries.search_ids(conn, plan)
            found = await queries.runs(conn, ids)
        return json_response(SearchRunsResponse(found, token))

    # --- metric history -------------------------------------------------------------------

    async def get_metric_history(self, request: web.Request) -> web.Response:
        """GetMetricHistory: a run's points of one metric, paged if max_results is given."""
        fields = await request_fields(request)
        run_id = fields.text("run_id", required=True, fallback="run_uuid") or ""
        key = fields.text("metric_key", required=True) or ""
        max_results = fields.integer("max_results")
        if max_results is not None and max_results < 1:
            raise invalid_parameter(
                f"Invalid value {max_results} for parameter 'max_results' supplied. "
                "It must be a positive integer."
            )
        page = decode_history_token(fields.text("page_token"))
        as_of = await self._reads.settle(request, fields, [run_id])
        async with self._reads.snapshot(as_of) as conn:
            points, token = await queries.metric_history(conn, run_id, key, max_results, page)
        return json_response(MetricHistoryResponse(points, token))

    async def get_metric_history_bulk(self, request: web.Request) -> web.Response:
        """GetMetricHistoryBulk (legacy UI): several runs' points, by run id then time."""
        fields = await request_fields(request)
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
        as_of = await self._reads.settle(request, fields, run_ids)
        async with self._reads.snapshot(as_of) as conn:
            points = await queries.metric_history_bulk(conn, run_ids, key, limit)
        return json_response(BulkHistoryResponse(points))

    async def get_metric_history_bulk_interval(self, request: web.Request) -> web.Response:
        """GetMetricHistoryBulkInterval: each run's points sampled to at most max_results."""
        fields = await request_fields(request)
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
        as_of = await self._reads.settle(request, fields, run_ids)
        async with self._reads.snapshot(as_of) as conn:
            points = await sampling.sample(conn, run_ids, key, max_results, steps)
        return json_response(MetricsWithRunIdResponse(points))
