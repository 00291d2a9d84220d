"""The bad (and borderline) write requests the differential write test sends both servers.

Every case runs against fresh state of its own: an experiment named `{name}` holding one run
`{run}` seeded with param `p=v1`, tag `t=v1` and metric `m=1.0` (see `SEED`). In a body,
`{run}`, `{exp}`, `{name}`, `{other}` and `{other_id}` stand for that run's id, the experiment's
id and name, and a second experiment's name and id; the test fills them in per server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

T0 = 1_700_000_000_000  # timestamps and start times the requests carry
UNKNOWN_RUN = "0123456789abcdef0123456789abcdef"
UNKNOWN_EXPERIMENT = "987654321"
_DROP = object()  # a field value meaning "leave the field out"

SEED: dict[str, Any] = {
    "params": [{"key": "p", "value": "v1"}],
    "tags": [{"key": "t", "value": "v1"}],
    "metrics": [{"key": "m", "value": 1.0, "timestamp": T0, "step": 0}],
}


@dataclass(frozen=True)
class WriteCase:
    """One write request and the state it meets; `raw` replaces the JSON body with bytes."""

    name: str
    endpoint: str
    body: Any = None
    deleted_run: bool = False
    deleted_experiment: bool = False
    other: str | None = None  # "active" or "deleted": the state of a second experiment
    raw: bytes | None = None
    content_type: str | None = "application/json"

    def __str__(self) -> str:
        return self.name


def _fields(**fields: Any) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if value is not _DROP}


def metric(key: Any = "k", value: Any = 2.5, timestamp: Any = T0, step: Any = 3) -> dict[str, Any]:
    """Return a metric entry; `_DROP` leaves a field out."""
    return _fields(key=key, value=value, timestamp=timestamp, step=step)


def entry(key: Any = "k", value: Any = "x") -> dict[str, Any]:
    """Return a param or tag entry; `_DROP` leaves a field out."""
    return _fields(key=key, value=value)


def batch(run_id: Any = "{run}", **lists: Any) -> dict[str, Any]:
    """Return a log-batch body for `run_id` with the given metrics, params and tags."""
    return _fields(run_id=run_id, **lists)


def _case(name: str, endpoint: str, body: Any = None, **state: Any) -> WriteCase:
    return WriteCase(f"{endpoint}: {name}", endpoint, body, **state)


def _log_batch(name: str, body: Any = None, **state: Any) -> WriteCase:
    return _case(name, "runs/log-batch", body, **state)


_DATASET = {"name": "d", "digest": "x1", "source_type": "local", "source": "file:///d"}
LONG_KEY = "k" * 251
LONGEST_KEY = "k" * 250
BAD_KEYS = {
    "empty": "",
    "dot-dot": "..",
    "dot-dot segment": "a/../b",
    "slash-leading": "/a",
    "slash-trailing": "a/",
    "double slash": "a//b",
    "dollar": "a$b",
    "backslash": "a\\b",
    # Left out: "a\n". MLflow's key pattern ends in `$`, which Python's `re.match` lets match
    # before a final newline, so MLflow stores the key "a\n"; Runstream matches the whole key.
    "too long": LONG_KEY,
}


def _full_batch(metrics: int) -> dict[str, Any]:
    """Return a batch of `metrics` metrics beside the most params and tags one may hold."""
    return batch(
        metrics=[metric(f"m{i}", 1.0) for i in range(metrics)],
        params=[entry(f"p{i}") for i in range(100)],
        tags=[entry(f"t{i}") for i in range(100)],
    )


LOG_BATCH: list[WriteCase] = [
    # limits on the number of entries
    _log_batch(
        "1001 metrics",
        batch(metrics=[metric(f"k{i}", float(i), T0, 0) for i in range(1001)]),
    ),
    _log_batch("101 params", batch(params=[entry(f"k{i}", "x") for i in range(101)])),
    _log_batch("101 tags", batch(tags=[entry(f"k{i}", "x") for i in range(101)])),
    _log_batch("1001 entities, each kind within its limit", _full_batch(801)),
    _log_batch("exactly the limits (1000 entities)", _full_batch(800)),
    # keys
    *(
        _log_batch(f"metric key {label}", batch(metrics=[metric(key)]))
        for label, key in BAD_KEYS.items()
    ),
    _log_batch("param key too long", batch(params=[entry(LONG_KEY)])),
    _log_batch("param key empty", batch(params=[entry("")])),
    _log_batch("param key dot-dot", batch(params=[entry("..")])),
    _log_batch("param key dollar", batch(params=[entry("a$b")])),
    _log_batch("tag key too long", batch(tags=[entry(LONG_KEY)])),
    _log_batch("tag key slash-leading", batch(tags=[entry("/a")])),
    _log_batch("tag key double slash", batch(tags=[entry("a//b")])),
    _log_batch("tag key missing", batch(tags=[entry(_DROP, "x")])),
    _log_batch(
        "keys of 250 characters (valid)",
        batch(
            metrics=[metric(LONGEST_KEY)], params=[entry(LONGEST_KEY)], tags=[entry(LONGEST_KEY)]
        ),
    ),
    # values
    _log_batch("param value of 6001 characters", batch(params=[entry("long", "v" * 6001)])),
    _log_batch("tag value of 8001 characters", batch(tags=[entry("long", "v" * 8001)])),
    _log_batch("param value missing", batch(params=[entry("k", _DROP)])),
    _log_batch("tag value null", batch(tags=[entry("k", None)])),
    _log_batch("metric value a numeric string", batch(metrics=[metric(value="1.5")])),
    _log_batch("metric value null", batch(metrics=[metric(value=None)])),
    _log_batch("metric value missing", batch(metrics=[metric(value=_DROP)])),
    _log_batch("metric value NaN", batch(metrics=[metric(value="NaN")])),
    _log_batch(
        "metric values Infinity and -Infinity",
        batch(metrics=[metric("a", "Infinity"), metric("b", "-Infinity")]),
    ),
    # Left out: "nan" in lower case. Protobuf's parser refuses exactly that spelling, and
    # MLflow then stores the half-read entry (0.0 at timestamp 0, step 0) with a 200; Runstream
    # reads it as NaN, as every other spelling Python's float() takes.
    _log_batch("metric value inf (lower case)", batch(metrics=[metric(value="inf")])),
    _log_batch("metric timestamp missing", batch(metrics=[metric(timestamp=_DROP)])),
    _log_batch("metric timestamp negative", batch(metrics=[metric(timestamp=-1)])),
    _log_batch("metric timestamp a numeric string", batch(metrics=[metric(timestamp=str(T0))])),
    _log_batch("metric step negative", batch(metrics=[metric(step=-5)])),
    _log_batch("metric step integral float", batch(metrics=[metric(step=2.0)])),
    _log_batch("metric step a numeric string", batch(metrics=[metric(step="2")])),
    _log_batch("metric logged twice alike", batch(metrics=[metric(), metric()])),
    # the run
    _log_batch("run_id missing", batch(run_id=_DROP, metrics=[metric()])),
    _log_batch("run_id empty", batch(run_id="", metrics=[metric()])),
    _log_batch("run_id unknown", batch(run_id=UNKNOWN_RUN, metrics=[metric()])),
    _log_batch("run_id not id-shaped", batch(run_id="../etc", metrics=[metric()])),
    _log_batch("run_id a number", batch(run_id=12345, metrics=[metric()])),
    _log_batch("run deleted", batch(metrics=[metric()], params=[entry()]), deleted_run=True),
    _log_batch("run_uuid instead of run_id", {"run_uuid": "{run}", "metrics": [metric()]}),
    # params are immutable
    _log_batch("param re-logged with another value", batch(params=[entry("p", "v2")])),
    _log_batch("param re-logged with its value", batch(params=[entry("p", "v1")])),
    _log_batch("param key twice, two values", batch(params=[entry("d", "1"), entry("d", "2")])),
    _log_batch("param key twice, one value", batch(params=[entry("d", "1"), entry("d", "1")])),
    _log_batch("tag key twice (last wins?)", batch(tags=[entry("d", "1"), entry("d", "2")])),
    _log_batch("mlflow.runName tag renames the run", batch(tags=[entry("mlflow.runName", "b")])),
    _log_batch("mlflow.runName tag empty", batch(tags=[entry("mlflow.runName", "")])),
    _log_batch(
        "mlflow.runName tag, then an empty one",
        batch(tags=[entry("mlflow.runName", "b"), entry("mlflow.runName", "")]),
    ),
    # what a rejected batch leaves behind
    _log_batch(
        "valid metric and tag beside a param conflict",
        batch(
            metrics=[metric("fresh", 5.0)],
            params=[entry("new", "1"), entry("p", "v2")],
            tags=[entry("fresh", "1")],
        ),
    ),
    _log_batch(
        "valid entries beside a bad metric key",
        batch(
            metrics=[metric("fresh", 5.0), metric("a//b")],
            params=[entry("new", "1")],
            tags=[entry("fresh", "1")],
        ),
    ),
    # shapes
    # Left out, deliberately different: a field of the wrong JSON type inside an entry (metric
    # value "abc" or true, fractional timestamp, step 1.5, "two" or 2**63, param value 7).
    # MLflow's protobuf parse fails, it keeps the half-parsed message and stores defaults
    # (value 0.0, timestamp 0, step 0, param ""), answering 200; Runstream answers 400, as
    # MLFLOW_API.md §2 (wrong JSON type -> 400) and §5 (numeric value, int64 timestamp and step)
    # require.
    _log_batch("metrics an object", batch(metrics={"key": "k", "value": 1.0, "timestamp": T0})),
    _log_batch("params a string", batch(params="p=1")),
    _log_batch("empty batch", batch()),
    # Left out, deliberately different: MLflow answers 500 with an HTML page for a body that is
    # not a JSON object (a list, a string, null, truncated JSON), for a metrics entry that is not
    # an object, and for `"tags": null` (Runstream: 400, or 200 for the null list, which protobuf
    # JSON reads as absent); MLFLOW_API.md §10.7 prefers 400 to MLflow's 500s.
    # Left out: a body over 17 MiB (one 18 MiB tag value): MLflow truncates it and answers 200,
    # Runstream answers 413 RESOURCE_EXHAUSTED, its own cap as MLFLOW_API.md §5 allows.
    _log_batch("no content type", raw=b'{"run_id": "{run}"}', content_type=None),
    _log_batch("text/plain content type", raw=b'{"run_id": "{run}"}', content_type="text/plain"),
]


def _single(endpoint: str, name: str, *, deleted_run: bool = False, **fields: Any) -> WriteCase:
    body = _fields(**{"run_id": "{run}", **fields})
    return _case(name, endpoint, body, deleted_run=deleted_run)


def _log_metric(name: str, **fields: Any) -> WriteCase:
    return _single("runs/log-metric", name, **{**metric(), **fields})


def _log_param(name: str, **fields: Any) -> WriteCase:
    return _single("runs/log-parameter", name, **{**entry(), **fields})


def _set_tag(name: str, **fields: Any) -> WriteCase:
    return _single("runs/set-tag", name, **{**entry(), **fields})


SINGLE_WRITES: list[WriteCase] = [
    _log_metric("key too long", key=LONG_KEY),
    _log_metric("key empty", key=""),
    _log_metric("key missing", key=_DROP),
    _log_metric("key double slash", key="a//b"),
    _log_metric("key dollar", key="a$b"),
    _log_metric("value a word", value="abc"),
    _log_metric("value null", value=None),
    _log_metric("value missing", value=_DROP),
    _log_metric("value NaN", value="NaN"),
    _log_metric("value Infinity", value="Infinity"),
    _log_metric("timestamp missing", timestamp=_DROP),
    _log_metric("timestamp negative", timestamp=-1),
    _log_metric("step negative", step=-1),
    _log_metric("step integral float", step=4.0),
    # Left out: step 0.5 (MLflow stores step 0; see the log-batch note above, §5).
    _log_metric("step a word", step="x"),
    _log_metric("run_id missing", run_id=_DROP),
    _log_metric("run_id unknown", run_id=UNKNOWN_RUN),
    _log_metric("run_id a number", run_id=7),
    _log_metric("run_uuid instead of run_id", run_id=_DROP, run_uuid="{run}"),
    _log_metric("run deleted", deleted_run=True),
    _log_param("re-logged with another value", key="p", value="v2"),
    _log_param("re-logged with its value", key="p", value="v1"),
    _log_param("value of 6001 characters", key="long", value="v" * 6001),
    _log_param("value missing", value=_DROP),
    _log_param("value null", value=None),
    _log_param("value a number", value=1.5),
    _log_param("key too long", key=LONG_KEY),
    _log_param("key empty", key=""),
    _log_param("key slash-leading", key="/a"),
    _log_param("key dollar", key="a$b"),
    _log_param("run_id unknown", run_id=UNKNOWN_RUN),
    _log_param("run deleted", deleted_run=True),
    _set_tag("value of 8001 characters", key="long", value="v" * 8001),
    _set_tag("value missing", value=_DROP),
    _set_tag("value null", value=None),
    _set_tag("value a number", value=3),
    _set_tag("key dot-dot", key=".."),
    _set_tag("key too long", key=LONG_KEY),
    _set_tag("key empty", key=""),
    _set_tag("key a list", key=["k"]),
    _set_tag("mlflow.runName renames the run", key="mlflow.runName", value="renamed"),
    _set_tag("mlflow.runName empty", key="mlflow.runName", value=""),
    _set_tag("run_id unknown", run_id=UNKNOWN_RUN),
    _set_tag("run_uuid instead of run_id", run_id=_DROP, run_uuid="{run}"),
    _set_tag("run deleted", deleted_run=True),
    _single("runs/delete-tag", "key never set", key="nope"),
    _single("runs/delete-tag", "key set (valid)", key="t"),
    _single("runs/delete-tag", "key empty", key=""),
    _single("runs/delete-tag", "run_id unknown", key="t", run_id=UNKNOWN_RUN),
    _single(
        "runs/delete-tag", "run_uuid instead of run_id", key="t", run_id=_DROP, run_uuid="{run}"
    ),
    _single("runs/delete-tag", "run deleted", key="t", deleted_run=True),
]

RUN_LIFECYCLE: list[WriteCase] = [
    _single("runs/update", "status unknown", status="DONE", end_time=T0 + 5),
    _single("runs/update", "status a number (3 = FINISHED)", status=3, end_time=T0 + 5),
    _single("runs/update", "status a number out of range", status=9),
    _single("runs/update", "status lower case", status="finished"),
    _single("runs/update", "end_time a word", status="FINISHED", end_time="later"),
    _single("runs/update", "end_time negative", status="FINISHED", end_time=-1),
    _single("runs/update", "status without end_time", status="KILLED"),
    _single("runs/update", "run_name empty", run_name=""),
    _single("runs/update", "run_id unknown", run_id=UNKNOWN_RUN, status="FINISHED"),
    _single("runs/update", "run_id missing", run_id=_DROP, status="FINISHED"),
    _single("runs/update", "run deleted", status="FAILED", deleted_run=True),
    _single("runs/delete", "run_id unknown", run_id=UNKNOWN_RUN),
    _single("runs/delete", "run_id missing", run_id=_DROP),
    _single("runs/delete", "run_uuid instead of run_id", run_id=_DROP, run_uuid="{run}"),
    _single("runs/delete", "run deleted already", deleted_run=True),
    _single("runs/delete", "run_id malformed", run_id="abc"),
    _single("runs/delete", "run_id empty", run_id=""),
    _single("runs/restore", "run_id unknown", run_id=UNKNOWN_RUN),
    _single("runs/restore", "run_id malformed", run_id="abc"),
    _single("runs/restore", "run_uuid instead of run_id", run_id=_DROP, run_uuid="{run}"),
    _case(
        "run_uuid instead of run_id",
        "runs/log-inputs",
        {"run_uuid": "{run}", "datasets": [{"dataset": _DATASET}]},
    ),
    _case(
        "one dataset (valid)",
        "runs/log-inputs",
        {"run_id": "{run}", "datasets": [{"dataset": _DATASET}]},
    ),
    _single("runs/restore", "run active already"),
]


def _create_run(name: str, **fields: Any) -> WriteCase:
    body = _fields(**{"experiment_id": "{exp}", "run_name": "new", "start_time": T0, **fields})
    return _case(name, "runs/create", body)


RUN_CREATION: list[WriteCase] = [
    _create_run("experiment unknown", experiment_id=UNKNOWN_EXPERIMENT),
    _create_run("experiment id not numeric", experiment_id="abc"),
    _create_run("experiment id a number", experiment_id=1),
    _create_run("experiment id missing", experiment_id=_DROP),
    _case("experiment deleted", "runs/create", {"experiment_id": "{exp}"}, deleted_experiment=True),
    _create_run("start_time a word", start_time="now"),
    _create_run("start_time negative", start_time=-5),
    _create_run("start_time missing", start_time=_DROP),
    _create_run("parent run that does not exist", tags=[entry("mlflow.parentRunId", UNKNOWN_RUN)]),
    _create_run("run_name and mlflow.runName differ", tags=[entry("mlflow.runName", "other")]),
    _create_run("mlflow.runName tag alone", run_name=_DROP, tags=[entry("mlflow.runName", "tag")]),
    _create_run("tag key not checked", tags=[entry("a$b", "v" * 9000)]),
    # Left out: tags given as an object, user_id a number. MLflow ignores the field whose
    # protobuf parse fails (no tags, user_id ""), Runstream answers 400 (MLFLOW_API.md §2).
]


def _experiment(endpoint: str, label: str, **fields: Any) -> WriteCase:
    """Return a case on experiments/<endpoint>; `deleted_experiment` and `other` set the state."""
    state = {k: fields.pop(k) for k in ("deleted_experiment", "other") if k in fields}
    return _case(label, f"experiments/{endpoint}", _fields(**fields), **state)


def _create_experiment(label: str, **fields: Any) -> WriteCase:
    return _experiment("create", label, **{"name": "{name}-x", **fields})


def _on_experiment(endpoint: str, label: str, **fields: Any) -> WriteCase:
    return _experiment(endpoint, label, **{"experiment_id": "{exp}", **fields})


TAG = {"key": "k", "value": "v"}
EXPERIMENTS: list[WriteCase] = [
    _create_experiment("name taken", name="{other}", other="active"),
    _create_experiment("name of a deleted experiment", name="{other}", other="deleted"),
    _create_experiment("name empty", name=""),
    _create_experiment("name missing", name=_DROP),
    # Left out: a blank name ("   "): MLflow creates it, Runstream refuses it as MLFLOW_API.md
    # §2.1 says ("not blank").
    _create_experiment("name of 501 characters", name="e" * 501),
    _create_experiment("name a number", name=42),
    _create_experiment("name with odd characters", name="{name}/a b$%^&*'\"üñí"),
    # Left out: a relative artifact_location. MLflow resolves it against its server's working
    # directory, which means nothing to a remote client; Runstream keeps it as given.
    _create_experiment("artifact_location empty", artifact_location=""),
    _create_experiment("artifact_location with fragment", artifact_location="s3://b/x#f"),
    _create_experiment("artifact_location a runs:/ URI", artifact_location="runs:/abc"),
    _create_experiment("artifact_location with .. in query", artifact_location="s3://b/x?p=../y"),
    _create_experiment("tag key bad", tags=[entry("a//b", "1")]),
    _create_experiment("tag value of 20001 characters", tags=[entry("k", "v" * 20001)]),
    _on_experiment("update", "to a name taken", new_name="{other}", other="active"),
    _on_experiment("update", "to a deleted one's name", new_name="{other}", other="deleted"),
    _on_experiment("update", "to its own name", new_name="{name}"),
    _on_experiment("update", "to an empty name", new_name=""),
    _on_experiment("update", "experiment unknown", experiment_id=UNKNOWN_EXPERIMENT, new_name="x"),
    # Left out: a rename of a deleted experiment. MLflow answers 500 INVALID_STATE, and
    # MLFLOW_API.md §10.7 chooses 400 for Runstream.
    _on_experiment("delete", "experiment unknown", experiment_id=UNKNOWN_EXPERIMENT),
    _on_experiment("delete", "experiment id not numeric", experiment_id="abc"),
    _on_experiment("delete", "experiment deleted already", deleted_experiment=True),
    _on_experiment("restore", "experiment active"),
    _on_experiment("set-experiment-tag", "experiment deleted", **TAG, deleted_experiment=True),
    _on_experiment(
        "set-experiment-tag", "experiment unknown", **TAG, experiment_id=UNKNOWN_EXPERIMENT
    ),
    _on_experiment("set-experiment-tag", "value of 20001 characters", key="k", value="v" * 20001),
    _on_experiment("set-experiment-tag", "key bad", key="a$b", value="v"),
    _on_experiment("set-experiment-tag", "key missing", value="v"),
    _on_experiment("delete-experiment-tag", "tag never set", key="nope"),
]

CASES: list[WriteCase] = LOG_BATCH + SINGLE_WRITES + RUN_LIFECYCLE + RUN_CREATION + EXPERIMENTS
