"""The dataset of the differential search test: what both servers get, through the mlflow client.

Every run starts at its own time (T0 + 1000 * its index), so the `start_time DESC` tie-breaker
decides every tie and the `run_id` one, which differs between servers, never matters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from differential_servers import past_this_millisecond
from mlflow import MlflowClient
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag

T0 = 1_700_000_000_000  # the first run's start time; run i starts at T0 + 1000 * i
PARENT = "mlflow.parentRunId"
NAN, INF = math.nan, math.inf


@dataclass(frozen=True)
class RunSpec:
    """One run as both servers get it; metric values are logged at steps 0, 1, ... in order."""

    name: str
    experiment: str = "alpha"
    parent: str | None = None
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, tuple[float, ...]] = field(default_factory=dict)
    status: str = "RUNNING"
    deleted: bool = False
    restored: bool = False
    renamed: str | None = None
    datasets: tuple[tuple[str, str, str], ...] = ()  # (name, digest, context)


# The latest acc of train-NN: NaN, infinities, zero, negatives, ties, and None for no acc at all.
_ACC: list[float | None] = [
    *(0.5, 0.25, NAN, 0.75, INF, -INF, 0.0, -0.5, 0.5, None, 0.9, 0.1),
    *(0.25, NAN, 0.3, 1.0, 0.6, None, 0.45, 0.8, 0.15, 0.05, 0.95, 0.0),
]
_LRS = ["0.1", "1e-3", "10", "9", "0.01", "1E-3", ""]
_MODELS = ["cnn", "CNN", "rnn", "mlp", "Mlp"]
_STAGES = ["prod", "dev", "Dev", "", "staging"]
_STATUSES = ["RUNNING", "FINISHED", "FAILED", "KILLED", "FINISHED"]


def _generated(i: int, name: str, experiment: str) -> RunSpec:
    params = {"lr": _LRS[i % 7], "batch": str(2 ** (i % 8))}
    if i % 4:
        params["model"] = _MODELS[i % 5]
    tags = {"owner": "alice" if i % 2 else "Bob"}
    if i % 3 != 2:
        tags["stage"] = _STAGES[i % 5]
    if i % 6 == 0:
        tags["note"] = ""
    if i % 7 == 3:
        tags["key with space"] = "yes"
    metrics: dict[str, tuple[float, ...]] = {}
    acc = _ACC[i % len(_ACC)]
    if acc is not None:
        # the earlier value would pass the opposite filters: only the latest one may count
        earlier = 1.0 - acc if math.isfinite(acc) else 0.33
        metrics["acc"] = (earlier, acc)
    if i % 4 != 3:
        metrics["loss"] = (100.0, (i - 10) * 0.5)
    if i % 5 == 0:
        metrics["spacey name"] = (i * 2.5,)
    if i % 6 == 0:
        metrics["m.dot"] = (-1.0, 10.0 - i)
    return RunSpec(
        name=name,
        experiment=experiment,
        params=params,
        tags=tags,
        metrics=metrics,
        status=_STATUSES[i % 5],
        deleted=i in {7, 15, 22},
        restored=i == 10,
    )


def _dataset() -> list[RunSpec]:
    cases = ("train-{:02d}", "Train-{:02d}", "TRAIN-{:02d}")
    runs = [_generated(i, cases[i % 3].format(i), "alpha") for i in range(24)]
    runs += [
        RunSpec(
            "eval_1",
            params={"lr": "0.1"},
            metrics={"acc": (0.61,)},
            datasets=(("mnist", "d1", "train"), ("cifar", "d2", "eval")),
        ),
        RunSpec("eval-2", params={"lr": "10"}, datasets=(("mnist", "d1", "eval"),)),
        RunSpec("evalX3", tags={"stage": "prod"}, status="FINISHED"),
        RunSpec("50%_off", tags={"stage": "50%"}, metrics={"loss": (-7.0,)}),
        RunSpec("draft", renamed="final-draft", params={"lr": "9"}, status="FAILED"),
        RunSpec("sweep", params={"search": "grid"}, metrics={"acc": (0.2, 0.7)}),
        RunSpec("sweep/a", parent="sweep", params={"lr": "0.1"}, metrics={"acc": (0.66,)}),
        RunSpec("sweep/b", parent="sweep", params={"lr": "1e-3"}, status="FINISHED"),
        RunSpec("sweep/a/0", parent="sweep/a", metrics={"acc": (0.64,)}, status="KILLED"),
        RunSpec("sweep/a/1", parent="sweep/a", metrics={"acc": (NAN,)}, deleted=True),
    ]
    runs += [_generated(i + 3, f"beta-{i:02d}", "beta") for i in range(8)]
    long_value = "v" * 300
    runs += [
        RunSpec("quoted", params={"quote": "it's", "path": "C:\\dir", "long": long_value + "1"}),
        RunSpec("unicode", params={"word": "\u00e9t\u00e9", "long": long_value + "2"}),
        RunSpec(
            "plain",
            params={"word": "ete", "quote": 'say "hi"'},
            tags={"stage": "prod", "phrase": "x AND y"},
        ),
        # Gamma is deleted and restored after gamma-0 was deleted on its own; gone stays deleted
        RunSpec("gamma-0", "Gamma", params={"lr": "0.1"}, deleted=True),
        RunSpec("gamma-1", "Gamma", params={"lr": "0.1"}, metrics={"acc": (0.5,)}),
        RunSpec("gone-0", "gone", params={"lr": "0.1"}, tags={"owner": "alice"}),
        RunSpec("gone-1", "gone", params={"lr": "0.1"}, deleted=True),
    ]
    return runs


DATASET = _dataset()
START = {run.name: T0 + 1000 * i for i, run in enumerate(DATASET)}
END = {run.name: START[run.name] + 500 + 37 * i for i, run in enumerate(DATASET)}
EXPERIMENTS: dict[str, dict[str, str]] = {
    "alpha": {"team": "vision", "tier": ""},
    "beta": {"team": "NLP"},
    "Gamma": {"team": "vision2"},
    "gone": {"team": "old"},
}


def final_name(run: RunSpec) -> str:
    return run.renamed or run.name


@dataclass(frozen=True)
class Loaded:
    """A server's base URL and the ids it gave the dataset's experiments and runs."""

    url: str
    experiments: dict[str, str]
    runs: dict[str, str]  # by the run's final name


def load_dataset(url: str) -> Loaded:
    """Create the dataset on the server at `url` through the mlflow client; return its ids."""
    client = MlflowClient(url)
    experiments = {}
    for name, tags in EXPERIMENTS.items():
        experiments[name] = client.create_experiment(f"diff-{name}", tags=tags)
        past_this_millisecond()
    runs: dict[str, str] = {}
    for run in DATASET:
        tags = {PARENT: runs[run.parent]} if run.parent else None
        created = client.create_run(
            experiments[run.experiment], start_time=START[run.name], tags=tags, run_name=run.name
        )
        run_id = created.info.run_id
        runs[run.name] = run_id
        metrics = [
            Metric(key, value, START[run.name] + step, step)
            for key, values in run.metrics.items()
            for step, value in enumerate(values)
        ]
        client.log_batch(
            run_id,
            metrics=metrics,
            params=[Param(k, v) for k, v in run.params.items()],
            tags=[RunTag(k, v) for k, v in run.tags.items()],
        )
        if run.datasets:
            client.log_inputs(
                run_id,
                [
                    DatasetInput(
                        Dataset(name, digest, "local", f"file:///{name}"),
                        [InputTag("mlflow.data.context", context)],
                    )
                    for name, digest, context in run.datasets
                ],
            )
        if run.renamed:
            client.update_run(run_id, name=run.renamed)
            runs[run.renamed] = run_id
        if run.status != "RUNNING":
            client.set_terminated(run_id, run.status, end_time=END[run.name])
        if run.deleted or run.restored:
            client.delete_run(run_id)
        if run.restored:
            client.restore_run(run_id)
    client.delete_experiment(experiments["gone"])
    client.delete_experiment(experiments["Gamma"])
    client.restore_experiment(experiments["Gamma"])
    return Loaded(url, experiments, runs)
