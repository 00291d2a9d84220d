"""The read requests the differential read test sends both servers.

A field value names a run's id as `{run:<name>}` and an experiment's as `{exp:<name>}`: the ids
differ between servers, and the test fills them in per server.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

API, AJAX = "/api/2.0/mlflow", "/ajax-api/2.0/mlflow"
UNKNOWN_RUN = "0123456789abcdef0123456789abcdef"


@dataclass(frozen=True)
class Read:
    """One request: GET fields go in the query string (lists repeat the key), POST in JSON.

    `walk` follows `next_page_token` to the last page (at most 50 pages)."""

    method: str
    path: str
    fields: dict[str, Any] = field(default_factory=dict)
    prefix: str = API
    walk: bool = False

    def __str__(self) -> str:
        where = "ajax " if self.prefix == AJAX else ""
        shown = {
            k: v if not isinstance(v, list) or len(v) < 4 else f"{len(v)} items"
            for k, v in self.fields.items()
        }
        return f"{where}{self.method} {self.path} {shown}{' walked' if self.walk else ''}"


def get(path: str, prefix: str = API, walk: bool = False, **fields: Any) -> Read:
    return Read("GET", path, fields, prefix, walk)


def post(path: str, prefix: str = API, walk: bool = False, **fields: Any) -> Read:
    return Read("POST", path, fields, prefix, walk)


RUN_NAMES = [
    "empty", "no-start", "odd", "long", "long-2", "datasets", "parent", "child", "grandchild",
    "deleted", "final", "finished", "restored", "bare-run", "gone-run",
]  # fmt: skip
ODD_KEYS = ["m", "dup", "special", "nan_last", "int"]
ALL_EXPERIMENTS = ["{exp:main}", "{exp:bare}", "{exp:gone}"]
LONG = ["{run:long}", "{run:long-2}"]
BULK = "metrics/get-history-bulk-interval"

EXPERIMENT_READS: list[Read] = [
    *(get("experiments/get", experiment_id=f"{{exp:{e}}}") for e in ("main", "bare", "gone")),
    get("experiments/get", experiment_id="0"),
    get("experiments/get", AJAX, experiment_id="{exp:main}"),
    *(get("experiments/get-by-name", experiment_name=f"reads-{e}") for e in ("main", "gone")),
    get("experiments/get-by-name", experiment_name="Default"),
    get("experiments/get-by-name", AJAX, experiment_name="reads-bare"),
    *(
        method("experiments/search", max_results=1000, **view)
        for method in (get, post)
        for view in ({}, {"view_type": "ALL"}, {"view_type": "DELETED_ONLY"})
    ),
    get("experiments/search", walk=True, max_results=1, view_type="ALL"),
    post("experiments/search", walk=True, max_results=2, view_type="ALL"),
    post("experiments/search", AJAX, max_results=10, filter="tags.team = 'vision'"),
    get("experiments/search", max_results=10, filter="name LIKE 'reads-%'", order_by="name"),
    post("experiments/search", max_results=10, filter="name = 'nothing'"),
]

RUN_READS: list[Read] = [
    *(get("runs/get", run_id=f"{{run:{name}}}") for name in RUN_NAMES),
    get("runs/get", run_uuid="{run:odd}"),
    get("runs/get", AJAX, run_id="{run:child}"),
    post("runs/search", experiment_ids=["{exp:main}"]),
    post("runs/search", experiment_ids=ALL_EXPERIMENTS, run_view_type="ALL"),
    post("runs/search", experiment_ids=ALL_EXPERIMENTS, run_view_type="DELETED_ONLY"),
    post("runs/search", walk=True, experiment_ids=["{exp:main}"], max_results=4),
    post("runs/search", AJAX, experiment_ids=["{exp:main}"], filter="params.lr = '0.1'"),
    post("runs/search", experiment_ids=["{exp:main}"], order_by=["metrics.acc DESC"]),
    post("runs/search", experiment_ids=["{exp:main}"], filter="tags.mlflow.parentRunId IS NULL"),
    post("runs/search", experiment_ids=["{exp:main}"], filter="attributes.run_name = 'final'"),
    post("runs/search", experiment_ids=["{exp:bare}"], filter="params.lr = 'nothing'"),
    post("runs/search", experiment_ids=[]),
    post("experiments/search-datasets", AJAX, experiment_ids=["{exp:main}"]),
]

HISTORY_READS: list[Read] = [
    *(get("metrics/get-history", run_id="{run:odd}", metric_key=key) for key in ODD_KEYS),
    *(
        get("metrics/get-history", walk=True, run_id="{run:odd}", metric_key=key, max_results=2)
        for key in ("m", "dup")
    ),
    get("metrics/get-history", run_id="{run:odd}", metric_key="m", max_results=5),
    get("metrics/get-history", run_id="{run:odd}", metric_key="m", max_results=1000),
    get("metrics/get-history", run_uuid="{run:odd}", metric_key="special"),
    get("metrics/get-history", AJAX, run_id="{run:child}", metric_key="acc"),
    get(
        "metrics/get-history", walk=True, run_id="{run:long}", metric_key="sparse", max_results=997
    ),
    get("metrics/get-history", run_id="{run:deleted}", metric_key="acc"),
    get("metrics/get-history", run_id="{run:odd}", metric_key="nothing"),
    get("metrics/get-history", run_id=UNKNOWN_RUN, metric_key="m"),
    get("metrics/get-history-bulk", AJAX, run_id=["{run:odd}", "{run:child}"], metric_key="m"),
    # a cut across runs would depend on which run's id sorts first, so only one run is cut
    get("metrics/get-history-bulk", AJAX, run_id=LONG, metric_key="sparse", max_results=3000),
    get(
        "metrics/get-history-bulk", AJAX, run_id=["{run:long}"], metric_key="curve", max_results=50
    ),
    get("metrics/get-history-bulk", AJAX, run_id=["{run:odd}"], metric_key="nothing"),
]

SAMPLED_READS: list[Read] = [
    get(BULK, run_ids=LONG, metric_key="curve"),
    get(BULK, AJAX, run_ids=LONG, metric_key="curve", max_results=10),
    get(BULK, run_ids=LONG, metric_key="curve", max_results=1),
    get(BULK, run_ids=LONG, metric_key="curve", max_results=2500),
    get(BULK, run_ids=LONG, metric_key="curve", max_results=7, start_step=100, end_step=2600),
    get(BULK, run_ids=LONG, metric_key="curve", max_results=5, start_step=2500, end_step=2500),
    get(BULK, run_ids=LONG, metric_key="curve", max_results=5, start_step=-9, end_step=-1),
    get(BULK, run_ids=LONG, metric_key="sparse"),
    get(BULK, run_ids=LONG, metric_key="sparse", max_results=10),
    get(BULK, run_ids=LONG, metric_key="sparse", max_results=13, start_step=25, end_step=5000),
    get(BULK, run_ids=LONG, metric_key="sparse", max_results=3, start_step=-30, end_step=0),
    get(
        BULK,
        run_ids=["{run:long-2}", "{run:long}", "{run:long-2}"],
        metric_key="curve",
        max_results=4,
    ),
    get(BULK, run_ids=["{run:odd}", "{run:empty}", UNKNOWN_RUN], metric_key="m", max_results=3),
    *(get(BULK, run_ids=["{run:odd}"], metric_key=key, max_results=2) for key in ODD_KEYS),
    get(BULK, run_ids=["{run:odd}"], metric_key="nothing"),
]

# Compared by status and error code only; messages may differ.
ERRORS: list[Read] = [
    get("runs/get", run_id=UNKNOWN_RUN),
    get("runs/get"),
    get("experiments/get", experiment_id="987654"),
    get("experiments/get", experiment_id="abc"),
    get("experiments/get"),
    get("experiments/get-by-name", experiment_name="no-such-experiment"),
    get("experiments/get-by-name"),
    get("experiments/search"),
    post("experiments/search", max_results=0),
    post("experiments/search", max_results=50001),
    post("runs/search", experiment_ids=["{exp:main}"], max_results=50001),
    post("runs/search", experiment_ids=["abc"]),
    get("metrics/get-history", run_id="{run:odd}"),
    get("metrics/get-history", metric_key="m"),
    get("metrics/get-history", run_id="{run:odd}", metric_key="m", max_results=0),
    get(BULK, run_ids=[f"{i:032x}" for i in range(101)], metric_key="m"),
    get(BULK, run_ids=["{run:odd}"], metric_key="m", max_results=0),
    get(BULK, run_ids=["{run:odd}"], metric_key="m", max_results=2501),
    get(BULK, run_ids=["{run:odd}"]),
    get(BULK, metric_key="m"),
    get(BULK, run_ids=["{run:odd}"], metric_key="m", start_step=3),
    get(BULK, run_ids=["{run:odd}"], metric_key="m", start_step=5, end_step=1),
    get("metrics/get-history-bulk", AJAX, metric_key="m"),
    get("metrics/get-history-bulk", AJAX, run_id=[f"{i:032x}" for i in range(101)],
        metric_key="m"),
]  # fmt: skip

# Tokens no server issued: garbage, not JSON, no offset. Left out: a negative offset, which
# MLflow on SQLite reads as the first page; any token no server issued is a 400 here.
BAD_TOKENS = ["garbage!", "bm90IGpzb24=", "eyJmb28iOiAxfQ=="]
TOKEN_READS: list[Read] = [
    read
    for token in BAD_TOKENS
    for read in (
        post("experiments/search", max_results=1, page_token=token),
        post("runs/search", experiment_ids=["{exp:main}"], max_results=1, page_token=token),
        get("metrics/get-history", run_id="{run:odd}", metric_key="m", page_token=token),
        get("metrics/get-history", run_id="{run:odd}", metric_key="m", max_results=1,
            page_token=token),
    )
]  # fmt: skip
