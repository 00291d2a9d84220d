"""The JSON the query API answers with: MLflow's protobuf-JSON shapes as msgspec Structs.

Field names are the proto's snake_case names; a field holding its default (None, an empty list)
is omitted, as protobuf's JSON printer omits unset fields; int64 values are JSON numbers, enums
are their names, and doubles that JSON cannot hold travel as "NaN", "Infinity", "-Infinity".
These Structs are the API's own and never event types.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import msgspec

__all__ = [
    "BestChild",
    "BestChildrenResponse",
    "BulkHistoryResponse",
    "Experiment",
    "ExperimentResponse",
    "KeyValue",
    "LineageNode",
    "LineageResponse",
    "Metric",
    "MetricHistoryResponse",
    "MetricWithRunId",
    "MetricsWithRunIdResponse",
    "Run",
    "RunInfo",
    "RunOutputs",
    "RunResponse",
    "SearchExperimentsResponse",
    "SearchRunsResponse",
    "encode",
    "run_data",
    "run_inputs",
    "wire_double",
]

Double = float | str


def wire_double(value: float) -> Double:
    """Return a double as protobuf JSON carries it: a number, or "NaN"/"Infinity"/"-Infinity"."""
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


class KeyValue(msgspec.Struct, frozen=True, gc=False):
    """A tag or a param: `{key, value}`, both always present."""

    key: str
    value: str


class Experiment(msgspec.Struct, frozen=True, omit_defaults=True):
    """MLflow's Experiment; MLflow leaves zero times unset, so None means omitted. MLflow 3.x
    names the workspace of each; Runstream has one, MLflow's default."""

    experiment_id: str
    name: str
    artifact_location: str
    lifecycle_stage: str
    workspace: str
    last_update_time: int | None = None
    creation_time: int | None = None
    tags: list[KeyValue] = msgspec.field(default_factory=list)


class RunInfo(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """MLflow's RunInfo: both id spellings; an unset end_time or artifact_uri is omitted."""

    run_id: str
    run_uuid: str
    run_name: str
    experiment_id: str
    user_id: str
    status: str
    start_time: int
    end_time: int | None = None
    artifact_uri: str | None = None
    lifecycle_stage: str


class Metric(msgspec.Struct, frozen=True, omit_defaults=True, gc=False):
    """One metric point; the optional fields appear only when the point carried them."""

    key: str
    value: Double
    timestamp: int
    step: int
    dataset_name: str | None = None
    dataset_digest: str | None = None
    model_id: str | None = None


class MetricWithRunId(msgspec.Struct, frozen=True, gc=False):
    """A metric point of the bulk history endpoints, with the run it belongs to."""

    key: str
    value: Double
    timestamp: int
    step: int
    run_id: str


class RunOutputs(msgspec.Struct, frozen=True, omit_defaults=True):
    """A run's outputs; the read models hold none yet, so always `{}`."""


class Run(msgspec.Struct, frozen=True):
    """MLflow's Run: data, inputs and outputs are always present, `{}` when empty.

    `data` and `inputs` are JSON made by PostgreSQL, the run's documents (migration 0010: its
    params, tags and inputs in the shapes of MLflow's RunData and RunInputs), with the latest
    metrics spliced into `data` by `run_data`."""

    info: RunInfo
    data: msgspec.Raw
    inputs: msgspec.Raw
    outputs: RunOutputs


class DatasetSummary(msgspec.Struct, frozen=True, omit_defaults=True):
    """A dataset some run of the experiment used, in one context (None: the input had none)."""

    experiment_id: str
    name: str
    digest: str
    context: str | None = None


class SearchDatasetsResponse(msgspec.Struct, frozen=True, omit_defaults=True):
    """SearchDatasets (UI): the experiments' distinct datasets."""

    dataset_summaries: list[DatasetSummary] = msgspec.field(default_factory=list)


class ExperimentResponse(msgspec.Struct, frozen=True):
    """GetExperiment and GetExperimentByName."""

    experiment: Experiment


class SearchExperimentsResponse(msgspec.Struct, frozen=True, omit_defaults=True):
    """SearchExperiments: one page, and a token when another page exists."""

    experiments: list[Experiment] = msgspec.field(default_factory=list)
    next_page_token: str | None = None


class RunResponse(msgspec.Struct, frozen=True):
    """GetRun."""

    run: Run


class SearchRunsResponse(msgspec.Struct, frozen=True, omit_defaults=True):
    """SearchRuns: one page, and a token when another page exists."""

    runs: list[Run] = msgspec.field(default_factory=list)
    next_page_token: str | None = None


class MetricHistoryResponse(msgspec.Struct, frozen=True, omit_defaults=True):
    """GetMetricHistory: `{}` for an unknown run or key."""

    metrics: list[Metric] = msgspec.field(default_factory=list)
    next_page_token: str | None = None


class MetricsWithRunIdResponse(msgspec.Struct, frozen=True, omit_defaults=True):
    """GetMetricHistoryBulkInterval (protobuf JSON: `{}` when empty)."""

    metrics: list[MetricWithRunId] = msgspec.field(default_factory=list)


class BulkHistoryResponse(msgspec.Struct, frozen=True):
    """GetMetricHistoryBulk (a plain JSON dict in MLflow: `metrics` even when empty)."""

    metrics: list[MetricWithRunId]


# --- Runstream's lineage views (/api/runstream/...) -------------------------------------------


class LineageNode(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """One run in a lineage view.

    `depth` is the run's depth in its tree (0 for a root, as `mlflow.rootRunId` counts it);
    `distance` is how many links separate it from the run the view is about.
    """

    run_id: str
    run_name: str
    experiment_id: str
    status: str
    lifecycle_stage: str
    start_time: int
    end_time: int | None = None
    parent_run_id: str | None = None
    root_run_id: str
    depth: int
    distance: int


class LineageResponse(msgspec.Struct, frozen=True):
    """A lineage view: the run asked about, the runs found, and whether a bound cut them."""

    run: LineageNode
    runs: list[LineageNode]
    truncated: bool


class BestChild(msgspec.Struct, frozen=True, omit_defaults=True):
    """The best child for one metric and direction; `run_id` absent when no child qualifies."""

    metric: str
    mode: str
    run_id: str | None = None
    run_name: str | None = None
    value: Double | None = None
    step: int | None = None
    timestamp: int | None = None
    params: list[KeyValue] = msgspec.field(default_factory=list)


class BestChildrenResponse(msgspec.Struct, frozen=True):
    """For a parent run: per requested metric and mode, the child with the best latest value."""

    run_id: str
    children: int
    best: list[BestChild]


_encoder = msgspec.json.Encoder()
_EMPTY = msgspec.Raw(b"{}")


def run_data(metrics: Sequence[Metric], document: str | None) -> msgspec.Raw:
    """Return a run's `data` object: its latest metrics, then its params and tags document."""
    if not metrics:
        return msgspec.Raw(b"{%s}" % document.encode()) if document else _EMPTY
    listed = b'"metrics":' + _encoder.encode(metrics)
    if document:
        listed += b"," + document.encode()
    return msgspec.Raw(b"{%s}" % listed)


def run_inputs(document: str | None) -> msgspec.Raw:
    """Return a run's `inputs` object from its inputs document."""
    return msgspec.Raw(document.encode()) if document else _EMPTY


def encode(message: msgspec.Struct) -> bytes:
    """Return the JSON bytes of a response Struct."""
    return _encoder.encode(message)
