"""Read compatibility, proven differentially: MLflow's own tracking server and `runstream serve`
get the same writes over raw REST, then must answer every read with the same JSON.

Each server starts once for the module. An answer is compared whole, after a normalization that
only maps what each server assigns itself: run and experiment ids to `{run:<name>}` and
`{exp:<name>}`, the artifact root to `<root>`, server clocks to `<time>`, page tokens (opaque) to
`<token>`; plus three deliberate differences (commented below): +-inf, `mlflow.rootRunId`, and
the order of a run's params, tags, latest metrics and inputs, an experiment's tags and dataset
summaries, which Runstream lists by key and MLflow in its database's row order. Every other
key's presence, list order, value types and enum names are compared as sent.
An error is compared by its HTTP status and MLflow error code (messages may differ). The dataset
is in `differential_reads_data.py`, the requests in `differential_reads_cases.py`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from differential_reads_cases import (
    ERRORS,
    EXPERIMENT_READS,
    HISTORY_READS,
    RUN_READS,
    SAMPLED_READS,
    TOKEN_READS,
    Read,
)
from differential_reads_data import LONG_METRICS, SERVER_STARTED, Ids, load
from differential_servers import side_by_side
from differential_state import DBL_MAX, DERIVED_TAGS

from services.config import Settings

pytestmark = pytest.mark.integration

MAX_PAGES = 50
_SERVER_TIMES = frozenset({"creation_time", "last_update_time"})


@dataclass(frozen=True)
class Server:
    """A loaded server: its ids, its artifact root, and whether it is MLflow."""

    ids: Ids
    artifact_root: str
    is_mlflow: bool


@dataclass(frozen=True)
class Answer:
    """A normalized answer: the status and the JSON body, or each page of a walk."""

    status: int
    body: Any

    def error(self) -> tuple[int, Any]:
        code = self.body.get("error_code") if isinstance(self.body, dict) else self.body
        return self.status, code


# --- normalization ----------------------------------------------------------------------------


def normalize(server: Server, value: Any) -> Any:
    """Map the values `server` assigned itself to placeholders, and put the lists MLflow keeps
    in no set order in key order; keep everything else as is."""
    runs = {run_id: f"{{run:{name}}}" for name, run_id in server.ids.runs.items()}
    experiments = {e: f"{{exp:{name}}}" for name, e in server.ids.experiments.items()}
    return _Normalizer(server, runs, experiments).walk(value, "", "")


@dataclass(frozen=True)
class _Normalizer:
    server: Server
    runs: dict[str, str]
    experiments: dict[str, str]

    def walk(self, value: Any, key: str, parent: str) -> Any:
        if isinstance(value, dict):
            if value.get("run_name") in SERVER_STARTED and "start_time" in value:
                value = {**value, "start_time": "<time>"}
            return {k: self.walk(v, k, key) for k, v in value.items()}
        if isinstance(value, list):
            return self.walk_list(value, key, parent)
        return self.scalar(value, key)

    def walk_list(self, value: list[Any], key: str, parent: str) -> list[Any]:
        if key == "tags" and not self.server.is_mlflow:
            value = [t for t in value if t.get("key") not in DERIVED_TAGS]
        items = [self.walk(v, key, parent) for v in value]
        if key in {"tags", "params"} or (key, parent) == ("metrics", "data"):
            items.sort(key=lambda item: item["key"])
        if key == "dataset_summaries":  # MLflow's come in no set order
            items.sort(key=lambda i: (i["experiment_id"], i["name"], i["digest"], i.get("context")))
        if key == "dataset_inputs":
            items.sort(key=lambda item: (item["dataset"]["name"], item["dataset"]["digest"]))
        return items

    def scalar(self, value: Any, key: str) -> Any:
        if key in _SERVER_TIMES and type(value) is int:
            return "<time>"
        if key == "next_page_token" and isinstance(value, str):
            return "<token>"
        if key == "experiment_id" and isinstance(value, str):
            return self.experiments.get(value, value)
        if key in {"artifact_uri", "artifact_location"} and isinstance(value, str):
            root = self.server.artifact_root
            if value.startswith(root):
                value = "<root>" + value[len(root) :]
            ids = {**self.experiments, **self.runs}
            return "/".join(ids.get(part, part) for part in value.split("/"))
        if key == "value" and self.server.is_mlflow and value in {DBL_MAX, -DBL_MAX}:
            return "Infinity" if value > 0 else "-Infinity"
        if isinstance(value, str):
            return self.runs.get(value, value)
        return value


def by_run(server: Server, body: Any) -> Any:
    """Regroup a GetMetricHistoryBulk answer, which MLflow orders by run id (ids differ between
    servers): the points in the order of the runs' names, and whether the server had them in
    the order of its own run ids."""
    if not isinstance(body, dict) or not isinstance(body.get("metrics"), list):
        return body
    names = {run_id: name for name, run_id in server.ids.runs.items()}
    ids = [point["run_id"] for point in body["metrics"]]
    ordered = sorted(body["metrics"], key=lambda point: names.get(point["run_id"], ""))
    return {**body, "metrics": ordered, "in run id order": ids == sorted(ids)}


# --- sending a read ---------------------------------------------------------------------------


def fill(server: Server, value: Any) -> Any:
    """Replace `{run:<name>}` and `{exp:<name>}` in a request field with the server's ids."""
    if isinstance(value, list):
        return [fill(server, v) for v in value]
    if not isinstance(value, str):
        return value
    for name, run_id in server.ids.runs.items():
        value = value.replace(f"{{run:{name}}}", run_id)
    for name, experiment_id in server.ids.experiments.items():
        value = value.replace(f"{{exp:{name}}}", experiment_id)
    return value


async def _send(
    http: aiohttp.ClientSession, server: Server, read: Read, fields: dict[str, Any]
) -> tuple[int, Any]:
    url = f"{server.ids.url}{read.prefix}/{read.path}"
    if read.method == "GET":
        query = [
            (k, str(v))
            for k, values in fields.items()
            for v in (values if isinstance(values, list) else [values])
        ]
        request = http.get(url, params=query)
    else:
        request = http.post(url, json=fields)
    async with request as response:
        text = await response.text()
        try:
            return response.status, await response.json(content_type=None)
        except ValueError:
            return response.status, f"<not JSON: {text[:60]!r}>"


async def ask(http: aiohttp.ClientSession, server: Server, read: Read) -> Answer:
    """Send `read` to `server` (every page of it when it walks); return the normalized answer."""
    fields = {k: fill(server, v) for k, v in read.fields.items()}
    status, body = await _send(http, server, read, fields)
    if read.path == "metrics/get-history-bulk":
        body = by_run(server, body)
    if not read.walk:
        return Answer(status, normalize(server, body))
    pages = [normalize(server, body)]
    while status == 200 and "next_page_token" in body and len(pages) < MAX_PAGES:
        fields["page_token"] = body["next_page_token"]
        status, body = await _send(http, server, read, fields)
        pages.append(normalize(server, body))
    return Answer(status, pages)


def differences(theirs: Any, ours: Any, path: str = "$") -> list[str]:
    """Return where two JSON values differ, by path, types included (1 is not 1.0)."""
    if type(theirs) is not type(ours):
        return [f"{path}: MLflow {theirs!r:.300} | Runstream {ours!r:.300}"]
    if isinstance(theirs, dict):
        found = []
        for key in [*theirs, *(k for k in ours if k not in theirs)]:
            if key not in ours or key not in theirs:
                side = "MLflow only" if key in theirs else "Runstream only"
                shown = theirs.get(key, ours.get(key))
                found.append(f"{path}.{key}: {side} ({shown!r:.300})")
            else:
                found += differences(theirs[key], ours[key], f"{path}.{key}")
        return found
    if isinstance(theirs, list):
        if len(theirs) != len(ours):
            head = f"{path}: {len(theirs)} items in MLflow, {len(ours)} in Runstream"
            return [head, *differences(theirs[: len(ours)], ours[: len(theirs)], path)[:5]]
        return [d for i, (a, b) in enumerate(zip(theirs, ours, strict=True))
                for d in differences(a, b, f"{path}[{i}]")]  # fmt: skip
    if theirs != ours:
        return [f"{path}: MLflow {theirs!r:.300} | Runstream {ours!r:.300}"]
    return []


def report(read: Read, theirs: Answer, ours: Answer) -> str:
    found = differences([theirs.status, theirs.body], [ours.status, ours.body])
    return "\n".join([f"request: {read}", *found[:20]])


# --- the two servers, once for the module -----------------------------------------------------


@pytest.fixture(scope="module")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


@pytest.fixture(scope="module")
async def servers(
    stack: Settings, tmp_path_factory: pytest.TempPathFactory, http: aiohttp.ClientSession
) -> AsyncIterator[tuple[Server, Server]]:
    """Start both servers, write the dataset to each, and yield (MLflow, Runstream)."""
    root: Path = tmp_path_factory.mktemp("differential-reads")
    async with side_by_side(stack, root) as (theirs, ours):
        loaded = await asyncio.gather(load(http, theirs), load(http, ours))
        yield (
            Server(loaded[0], (root / "mlflow" / "artifacts").as_uri(), True),
            Server(loaded[1], (root / "runstream").as_uri(), False),
        )


async def ask_both(
    http: aiohttp.ClientSession, servers: tuple[Server, Server], read: Read
) -> tuple[Answer, Answer]:
    theirs, ours = await asyncio.gather(*(ask(http, s, read) for s in servers))
    return theirs, ours


# --- the tests --------------------------------------------------------------------------------


async def test_both_servers_hold_the_dataset(
    http: aiohttp.ClientSession, servers: tuple[Server, Server]
) -> None:
    theirs, ours = servers
    assert theirs.ids.runs.keys() == ours.ids.runs.keys()
    assert theirs.ids.experiments.keys() == ours.ids.experiments.keys()
    curve = Read("GET", "metrics/get-history", {"run_id": "{run:long}", "metric_key": "curve"})
    answers = await ask_both(http, servers, curve)
    for answer in answers:
        assert answer.status == 200
        assert len(answer.body["metrics"]) == len(LONG_METRICS["curve"]), "a server lost points"


@pytest.mark.parametrize(
    "read", EXPERIMENT_READS + RUN_READS + HISTORY_READS + SAMPLED_READS, ids=str
)
async def test_read_answers_like_mlflow(
    http: aiohttp.ClientSession, servers: tuple[Server, Server], read: Read
) -> None:
    theirs, ours = await ask_both(http, servers, read)
    assert theirs.status == 200, f"MLflow fails {read}: {theirs.body}"
    assert not differences([theirs.status, theirs.body], [ours.status, ours.body]), report(
        read, theirs, ours
    )


@pytest.mark.parametrize("read", ERRORS, ids=str)
async def test_bad_read_fails_like_mlflow(
    http: aiohttp.ClientSession, servers: tuple[Server, Server], read: Read
) -> None:
    theirs, ours = await ask_both(http, servers, read)
    assert theirs.status != 200, f"MLflow accepts {read}: {theirs.body}"
    assert ours.error() == theirs.error(), report(read, theirs, ours)


@pytest.mark.parametrize("read", TOKEN_READS, ids=str)
async def test_page_token_no_server_issued_answers_like_mlflow(
    http: aiohttp.ClientSession, servers: tuple[Server, Server], read: Read
) -> None:
    theirs, ours = await ask_both(http, servers, read)
    assert ours.error() == theirs.error(), report(read, theirs, ours)
