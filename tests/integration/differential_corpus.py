"""The searches the differential test sends both servers, and the odd requests it compares.

A filter names a run's id as `{id:<run name>}` and an experiment's as `{exp:<name>}`: the ids
differ between servers, and the test fills them in per server.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from differential_dataset import T0
from mlflow.entities import ViewType


@dataclass(frozen=True)
class RunSearch:
    """A SearchRuns request; `{id:<run name>}` in the filter stands for that run's id."""

    filter: str = ""
    order_by: tuple[str, ...] = ()
    experiments: tuple[str, ...] = ("alpha",)
    view: int = ViewType.ACTIVE_ONLY

    def __str__(self) -> str:
        parts = [repr(self.filter)]
        if self.order_by:
            parts.append(f"order_by={list(self.order_by)}")
        if self.experiments != ("alpha",):
            parts.append(f"experiments={list(self.experiments)}")
        if self.view != ViewType.ACTIVE_ONLY:
            parts.append(f"view={ViewType.to_string(self.view)}")
        return " ".join(parts)


@dataclass(frozen=True)
class ExperimentSearch:
    """A SearchExperiments request."""

    filter: str = ""
    order_by: tuple[str, ...] = ()
    view: int = ViewType.ACTIVE_ONLY

    def __str__(self) -> str:
        parts = [f"experiments {self.filter!r}"]
        if self.order_by:
            parts.append(f"order_by={list(self.order_by)}")
        if self.view != ViewType.ACTIVE_ONLY:
            parts.append(f"view={ViewType.to_string(self.view)}")
        return " ".join(parts)


def q(
    filter_: str = "",
    *order_by: str,
    exps: tuple[str, ...] = ("alpha",),
    view: int = ViewType.ACTIVE_ONLY,
) -> RunSearch:
    """Return a run search; the order_by clauses follow the filter."""
    return RunSearch(filter_, order_by, exps, view)


def at(i: int) -> int:
    """Return the start time of the i-th run of the dataset."""
    return T0 + 1000 * i


AB = ("alpha", "beta")
DELETED, ALL = ViewType.DELETED_ONLY, ViewType.ALL

RUN_SEARCHES: list[RunSearch] = [
    # no filter, default order (start_time DESC), per experiment and across both, per view
    q(),
    q(exps=("beta",)),
    q(exps=AB),
    q(view=DELETED),
    q(view=ALL, exps=AB),
    # metrics: every comparator, NaN (MLflow stores it as 0), infinities, the latest value only
    q("metrics.acc > 0.5"),
    q("metrics.acc >= 0.5"),
    q("metrics.acc < 0.25"),
    q("metrics.acc <= 0.25"),
    q("metrics.acc = 0.5"),
    q("metrics.acc != 0.5"),
    q("metrics.acc = 0"),
    q("metrics.acc != 0"),
    q("metrics.acc > 1e300"),
    q("metrics.acc < -1e300"),
    q("metrics.acc >= 5e-1"),
    q("metrics.acc > -1"),
    q("metric.acc > -0.5"),
    q("`metrics`.acc > 0.3"),
    q("metrics.loss < 0"),
    q("metrics.loss >= -2.5"),
    q("metrics.loss = -1"),
    q("metrics.loss > 1 AND metrics.acc < 0.9"),
    q('metrics."m.dot" > 0'),
    q("metrics.`m.dot` <= 4"),
    q("metrics.`spacey name` >= 10"),
    q("metrics.absent > 0"),
    q("metrics.acc > 0.5", exps=AB),
    # params: = != LIKE ILIKE IS [NOT] NULL, string values that look like numbers
    q("params.lr = '0.1'"),
    q("params.lr != '0.1'"),
    q('params.lr = "10"'),
    q("params.lr LIKE '1%'"),
    q("params.lr LIKE '%E-3'"),
    q("params.lr ILIKE '%E-3'"),
    q("params.lr = ''"),
    q("params.lr != ''"),
    q("params.model IS NULL"),
    q("params.model IS NOT NULL"),
    q("param.model = 'cnn'"),
    q("parameter.model = 'CNN'"),
    q("parameters.model ILIKE 'cnn'"),
    q("params.model LIKE 'm%'"),
    q("params.model LIKE '_lp'"),
    q("params.batch = '8'"),
    q("params.`lr` = '9'"),
    q("params.\"lr\" = '9'"),
    # tags, parent ids, the runName tag, empty values
    q("tags.stage = 'dev'"),
    q("tags.stage ILIKE 'dev'"),
    q("tag.stage != 'prod'"),
    q("tags.stage = ''"),
    q("tags.stage LIKE '%\\%'"),
    q("tags.stage LIKE '50%'"),
    q("tags.stage IS NULL"),
    q("tags.note IS NOT NULL"),
    q("tags.note IS NULL AND tags.stage IS NOT NULL"),
    q("tags.`key with space` = 'yes'"),
    q("tags.owner LIKE 'a%'"),
    q("tags.owner ILIKE 'b%'", exps=AB),
    q("tags.\"mlflow.parentRunId\" = '{id:sweep}'"),
    q("tags.mlflow.parentRunId = '{id:sweep/a}'", view=ALL),
    q("tags.mlflow.parentRunId IS NOT NULL"),
    q("tags.mlflow.parentRunId IS NULL AND attributes.run_name LIKE 'sweep%'"),
    q("tags.mlflow.runName LIKE 'sweep%'"),
    q("tags.`mlflow.runName` = 'final-draft'"),
    # string attributes and their aliases
    q("attributes.status = 'FINISHED'"),
    q("status = 'FAILED'"),
    q("attribute.status != 'RUNNING'"),
    q("attr.status LIKE 'F%'"),
    q("run.status ILIKE 'killed'"),
    q("attributes.status = 'running'"),
    q("attributes.run_name = 'TRAIN-05'"),
    q("attributes.run_name LIKE 'train-%'"),
    q("attributes.run_name ILIKE 'train-%'"),
    q("run_name LIKE 'eval_%'"),
    q("attributes.run_name = '50%_off'"),
    q("attributes.run_name LIKE '50%'"),
    q("attributes.run_name = 'draft'"),
    q("attributes.run_name = 'final-draft'"),
    q("attributes.`Run name` LIKE 'sweep%'"),
    q("attributes.`run name` = 'sweep'"),
    q("attributes.\"Run Name\" != 'sweep'"),
    q("attributes.run_id IN ('{id:sweep}', '{id:TRAIN-05}', '{id:beta-01}')"),
    q("attributes.run_id NOT IN ('{id:sweep}', '{id:train-00}')"),
    q("run_id = '{id:eval_1}'"),
    q("attributes.artifact_uri LIKE '%/artifacts'"),
    q("attributes.user_id != ''"),
    # numeric attributes: the known start and end times
    q(f"attributes.start_time > {at(20)}"),
    q(f"attributes.start_time >= {at(10)} AND attributes.start_time < {at(20)}"),
    q(f"created <= {at(5)}"),
    q(f"attributes.Created = {at(3)}"),
    q(f"attributes.start_time != {at(0)}"),
    q(f"attributes.end_time > {at(20)}"),
    q(f"attributes.end_time <= {at(12)}"),
    q(f"attributes.end_time > {at(20)}", view=ALL),
    # dataset inputs
    q("datasets.name = 'mnist'"),
    q("datasets.context = 'eval'"),
    q("datasets.digest IN ('d2', 'd9')"),
    q("dataset.name LIKE 'mn%' AND datasets.context = 'train'"),
    # combinations, a lower-case `and`, stray ANDs
    q("params.model = 'cnn' and tags.stage = 'prod'"),
    q("metrics.acc > 0 AND params.lr != '10' AND attributes.status != 'KILLED'"),
    q("attributes.status = 'FINISHED' AND metrics.loss < 0 AND tags.owner = 'alice'"),
    q("metrics.acc > 0.5 AND"),
    q("AND metrics.acc > 0.5"),
    # order_by: metrics with NaN and missing last, params and tags as strings, attributes
    q("", "metrics.acc DESC"),
    q("", "metrics.acc ASC"),
    q("", "metrics.acc"),
    q("", "`metrics`.acc desc"),
    q("", "metrics.loss DESC", "params.model ASC"),
    q("", "metrics.`spacey name` DESC"),
    q("", 'metrics."m.dot" ASC'),
    q("", "params.lr ASC"),
    q("", "params.lr DESC"),
    q("", "param.batch DESC", "tag.owner ASC"),
    q("", "tags.stage ASC"),
    q("", "tags.stage DESC"),
    q("", "tags.note DESC"),
    q("", "attributes.start_time ASC"),
    q("", "start_time"),
    q("", "created DESC"),
    q("", "attributes.end_time DESC"),
    q("", "end_time ASC"),
    q("", "attributes.run_name ASC"),
    q("", "run_name DESC"),
    q("", "attributes.status ASC", "metrics.acc DESC"),
    q("metrics.acc >= 0", "metrics.acc DESC"),
    q("params.lr LIKE '%'", "metrics.acc ASC", "params.lr DESC"),
    q("", "metrics.acc DESC", exps=AB),
    q("", "params.lr ASC", view=ALL),
    q("", "metrics.acc DESC", view=DELETED),
    # spellings: keyword case, no spaces, other whitespace, unquoted dotted keys, number forms
    q("metrics.acc>0.5"),
    q("params.lr='9'"),
    q("metrics.acc > 0.5\n\tAnD params.lr != '10'"),
    q("params.model like 'c%'"),
    q("params.model ilike 'C%' and tags.stage is not null"),
    q("params.model is null"),
    q("metrics.m.dot > 0"),
    q("metrics.acc > .5"),
    q("metrics.acc > 1."),
    q("metrics.acc > -.5"),
    # Left out: `metrics.acc >= 1e309` and `= 1.7976931348623157e308`. MLflow stores +inf as
    # the largest double, Runstream stores inf itself (MLFLOW_API.md section 10.6), so they
    # differ on purpose exactly at that boundary.
    q("metrics.acc < -1e309"),
    q("metrics.acc > inf"),
    q("metrics.acc > 10000000000000000000000000000"),
    q(f"attributes.start_time > {at(20)}.0"),
    q("attributes.start_time > 1.7e12"),
    q(f"attributes.start_time < {at(3)}.5"),
    q("attributes.end_time != 5"),
    q("attr.start_time <= -1"),
    q("run_id IN (\"{id:sweep}\", '{id:eval_1}')"),
    q("attributes.run_id not in ('{id:sweep}')"),
    # quotes inside values, long values past the index prefix, non-ASCII
    q('params.quote = "it\'s"'),
    q("params.quote = 'it''s'"),
    q("params.quote = 'say \"hi\"'"),
    q("params.quote LIKE '%\"%'"),
    q("params.path = 'C:\\dir'"),
    q("params.path LIKE 'C:\\%'"),
    q("params.long = '" + "v" * 300 + "1'"),
    q("params.long = '" + "v" * 200 + "'"),
    q("params.long LIKE '" + "v" * 250 + "%'"),
    q("params.long != '" + "v" * 300 + "1'"),
    q("params.word = '\u00e9t\u00e9'"),
    q("params.word LIKE '\u00e9%'"),
    q("", "params.word DESC"),
    q("", "params.long ASC"),
    q("tags.phrase = 'x AND y'"),
    q("tags.phrase LIKE '% AND %' AND params.word = 'ete'"),
    q("`params`.lr = '9'"),
    q("attributes.`status` = 'FAILED'"),
    q("tags.`mlflow.parentRunId` = '{id:sweep}'"),
    q("metrics.acc > 0.5 AND AND params.lr = '9'"),
    q("run_id IN ('{id:sweep}',)"),
    q("attributes.run_id LIKE '%'"),
    q("datasets.context IS NULL"),
    q("tags.stage = 'prod' AND tags.stage = 'dev'"),
    # datasets: lists and inequality over several inputs
    q("datasets.name IN ('mnist')"),
    q("datasets.name NOT IN ('mnist')"),
    q("datasets.name != 'mnist'"),
    q("datasets.context LIKE 'tr%' AND datasets.name = 'cifar'"),
    # the param and tag equalities a search walks in run order, in every view and experiment
    q("params.lr = '0.1'", "start_time ASC"),
    q("params.lr = '0.1'", "attributes.run_name ASC"),
    q("params.lr = '0.1'", exps=AB),
    q("params.lr = '1e-3'", view=DELETED),
    q("params.lr = '1e-3'", view=ALL),
    q("tags.owner = 'alice' AND params.lr = '10'", view=ALL, exps=AB),
    q("attributes.run_name = 'Train-22'", view=DELETED),
    q("params.lr = '0.1'", exps=("gone",)),
    q("params.lr = '0.1'", exps=("gone",), view=DELETED),
    q("params.lr = '0.1'", exps=("gone",), view=ALL),
    q("tags.owner = 'alice'", exps=("gone",), view=ALL),
    q("", exps=("Gamma",)),
    q("params.lr = '0.1'", exps=("Gamma",)),
    q("params.lr = '0.1'", exps=("Gamma",), view=DELETED),
    q("", "metrics.acc DESC", exps=("Gamma", "gone"), view=ALL),
    # order_by spellings
    q("", "metrics.acc  DESC"),
    q("", "metrics.acc DESC "),
    q("", " metrics.acc"),
    q("", "metrics.acc Desc"),
    q("", "tags.`key with space` DESC"),
    q("", 'tags."key with space"'),
    q("", "attributes.`Run name`"),
    q("", "metric.acc DESC", "param.lr ASC"),
    q("", "status DESC", "end_time ASC"),
    q("", "tags.mlflow.runName DESC"),
    q("", "attr.start_time ASC"),
    q("", "run.end_time DESC"),
    q("", "Created"),
]

# Each must be an error on MLflow's server (checked), and the same error on Runstream's.
# --- generated: random combinations of the grammar's parts, the same every run -----------------

_METRIC_KEYS = ("acc", "loss", "`m.dot`", "`spacey name`")
_NUMBERS = ("-1", "-0.5", "0", "0.1", "0.25", "0.5", "0.75", "1", "2.5", "10", "1e300")
_NUMBER_OPS = ("<", "<=", ">", ">=", "=", "!=")
_STRING_OPS = ("=", "!=", "LIKE", "ILIKE")
_STRINGS = {
    "params": {
        "lr": ("0.1", "1e-3", "1E-3", "10", "9", "", "%", "1%", "%e%", "_"),
        "batch": ("1", "8", "16", "128", "1%", "_"),
        "model": ("cnn", "CNN", "rnn", "Mlp", "%n%", "m%", "_nn"),
    },
    "tags": {
        "owner": ("alice", "Bob", "bob", "a%", "%o%"),
        "stage": ("prod", "dev", "Dev", "", "50%", "%", "d%"),
        "note": ("", "%"),
    },
}
_ORDER_KEYS = (
    *(f"metrics.{key}" for key in _METRIC_KEYS),
    *(f"params.{key}" for key in _STRINGS["params"]),
    *(f"tags.{key}" for key in _STRINGS["tags"]),
    *("attributes.start_time", "attributes.end_time", "attributes.run_name", "attributes.status"),
)
_EXPERIMENT_CHOICES = (("alpha",), ("beta",), AB)
_VIEWS = (ViewType.ACTIVE_ONLY, ViewType.ACTIVE_ONLY, DELETED, ALL)


def _clause(pick: random.Random) -> str:
    kind = pick.choice(("metric", "metric", "params", "tags", "null", "status", "name", "time"))
    if kind == "metric":
        key, op = pick.choice(_METRIC_KEYS), pick.choice(_NUMBER_OPS)
        return f"metrics.{key} {op} {pick.choice(_NUMBERS)}"
    if kind in {"params", "tags"}:
        key = pick.choice(tuple(_STRINGS[kind]))
        value = pick.choice(_STRINGS[kind][key]).replace("'", "''")
        return f"{kind}.{key} {pick.choice(_STRING_OPS)} '{value}'"
    if kind == "null":
        kind = pick.choice(("params", "tags"))
        key = pick.choice(tuple(_STRINGS[kind]))
        return f"{kind}.{key} IS {pick.choice(('', 'NOT '))}NULL"
    if kind == "status":
        value = pick.choice(("RUNNING", "FINISHED", "FAILED", "KILLED", "F%", "%ING"))
        return f"attributes.status {pick.choice(_STRING_OPS)} '{value}'"
    if kind == "name":
        value = pick.choice(("train-%", "TRAIN-%", "%-0_", "sweep%", "beta-03", "%a%"))
        return f"attributes.run_name {pick.choice(_STRING_OPS)} '{value}'"
    column = pick.choice(("start_time", "end_time"))
    return f"attributes.{column} {pick.choice(_NUMBER_OPS)} {at(pick.randrange(-1, 50))}"


def generated_searches(seed: int, count: int) -> list[RunSearch]:
    """Return `count` run searches of one to three clauses and up to two order keys, drawn
    from the dataset's keys and values with a fixed seed, so every run sends the same."""
    pick = random.Random(seed)
    searches = []
    for _ in range(count):
        clauses = [_clause(pick) for _ in range(pick.choice((1, 1, 2, 3)))]  # few empty answers
        keys = pick.sample(_ORDER_KEYS, pick.randint(0, 2))
        order_by = tuple(f"{key} {pick.choice(('ASC', 'DESC', ''))}".strip() for key in keys)
        experiments, view = pick.choice(_EXPERIMENT_CHOICES), pick.choice(_VIEWS)
        searches.append(RunSearch(" AND ".join(clauses), order_by, experiments, view))
    return searches


GENERATED = generated_searches(seed=20261204, count=200)


MALFORMED: list[RunSearch] = [
    q("metrics.acc > 'x'"),
    q("metrics.acc ~ 1"),
    q("metrics.acc == 1"),
    q("metrics.acc LIKE '1'"),
    q("metrics.acc IS NULL"),
    q("metrics.acc >"),
    q("metrics.acc"),
    q("params.lr > '1'"),
    q("params.lr = 0.1"),
    q("params.lr = abc"),
    q("foo.bar = '1'"),
    q("attributes.experiment_id = '1'"),
    q("attributes.lifecycle_stage = 'active'"),
    q("attributes.foo = 'x'"),
    q("attributes.status IS NULL"),
    q("attributes.status IN ('FINISHED')"),
    q("attributes.start_time > '5'"),
    q("attributes.run_id IN ()"),
    q("datasets.foo = 'x'"),
    q("metrics.acc > 1 OR metrics.acc < 0"),
    q("metrics.acc > 1; params.lr = '1'"),
    q("(metrics.acc > 1)"),
    q("NOT params.lr = '1'"),
    q("", "metrics.acc SIDEWAYS"),
    q("", "foo.acc"),
    q("", "attributes.experiment_id"),
    q("", "datasets.name"),
    q("", "metrics.acc DESC extra"),
    q("attributes.run_name IN ('sweep')"),
    q("params.lr IN ('9')"),
    q("attributes.end_time IS NOT NULL"),
]

EXPERIMENT_SEARCHES: list[ExperimentSearch] = [
    ExperimentSearch(),
    ExperimentSearch("name LIKE 'diff-%'"),
    ExperimentSearch("name ILIKE 'DIFF-%'"),
    ExperimentSearch("attribute.name != 'Default'"),
    ExperimentSearch("tags.team = 'vision'"),
    ExperimentSearch("tag.team ILIKE 'vision%'"),
    ExperimentSearch("tags.tier = ''"),
    ExperimentSearch("tags.tier IS NULL"),
    ExperimentSearch("tags.team IS NOT NULL AND name != 'diff-beta'"),
    ExperimentSearch("", ("name ASC",)),
    ExperimentSearch("", ("name DESC",)),
    ExperimentSearch("", ("creation_time ASC",)),
    ExperimentSearch("", view=ViewType.DELETED_ONLY),
    ExperimentSearch("", ("name ASC",), view=ViewType.ALL),
    ExperimentSearch("name = 'diff-gamma'"),
    ExperimentSearch("name LIKE 'diff-g%'"),
    ExperimentSearch("name LIKE 'DIFF%'"),
    ExperimentSearch("attributes.name = 'diff-alpha'"),
    ExperimentSearch("experiment_id = '{exp:beta}'"),
    ExperimentSearch("experiment_id != '{exp:beta}'"),
    ExperimentSearch("experiment_id IN ('{exp:alpha}', '{exp:gone}')", view=ViewType.ALL),
    ExperimentSearch("experiment_id NOT IN ('{exp:alpha}')"),
    ExperimentSearch("creation_time > 0"),
    ExperimentSearch("last_update_time >= 0"),
    ExperimentSearch("tags.team != 'vision'"),
    ExperimentSearch("tags.team LIKE 'vision%'"),
    ExperimentSearch("tags.`team` = 'NLP'"),
    ExperimentSearch("", ("experiment_id DESC",)),
    ExperimentSearch("", ("attribute.name DESC",)),
    ExperimentSearch("", ("creation_time DESC", "name ASC")),
    ExperimentSearch("", ("last_update_time DESC",), view=ViewType.ALL),
    ExperimentSearch("tags.team IS NOT NULL", ("name ASC",), view=ViewType.DELETED_ONLY),
    ExperimentSearch("name IN ('diff-alpha')"),
    ExperimentSearch("tags.team IN ('NLP')"),
    ExperimentSearch("creation_time > 1.5"),
    ExperimentSearch("experiment_id = 'abc'"),
]

MALFORMED_EXPERIMENT_SEARCHES: list[ExperimentSearch] = [
    ExperimentSearch("name > 'a'"),
    ExperimentSearch("metrics.x = 1"),
    ExperimentSearch("name = diff"),
    ExperimentSearch("", ("tags.team ASC",)),
]

# SearchRuns requests with odd page tokens, page sizes and views: compared by status and code
BAD_REQUESTS: list[dict[str, Any]] = [
    {"page_token": "not-a-token"},
    # Left out: {"offset": -1}, which MLflow on SQLite reads as the first page (a negative
    # OFFSET fails on PostgreSQL); a token no server issued is garbage, 400 by the contract.
    {"page_token": "eyJvZmZzZXQiOiAwfQ=="},  # {"offset": 0}
    {"max_results": 0},
    {"max_results": 50001},
    {"run_view_type": "SOMETIMES"},
    {"run_view_type": 7},
    {"run_view_type": 0},
    {"run_view_type": -1},
    {"run_view_type": "all"},
    {"run_view_type": "deleted_only"},
    {"run_view_type": "ALL "},
    {"run_view_type": ""},
    {"run_view_type": "3"},
    {"run_view_type": "2.0"},
    {"run_view_type": True},
    {"run_view_type": 2.0},
    {"run_view_type": 2.5},
    {"run_view_type": None},
    {"run_view_type": ["ALL"]},
    {"run_view_type": 3},
    {"run_view_type": "DELETED_ONLY"},
    {"order_by": ["metrics.acc DESC", "metrics.acc ASC"], "filter": "metrics.acc >"},
]


# SearchExperiments view types, odd and not: MLflow ignores a value it does not know
EXPERIMENT_VIEWS: list[Any] = [
    "SOMETIMES",
    7,
    0,
    "all",
    "deleted_only",
    "",
    "2",
    True,
    2.5,
    2,
    "ALL",
]
