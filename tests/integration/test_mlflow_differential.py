"""Search compatibility, proven differentially: MLflow's own tracking server and `runstream serve`
load the same dataset through the unmodified mlflow client, then must answer every search alike.

Each server starts once for the module. A run search is compared by the ordered run names it
returns, walked page by page with a small page size, and by the size of each page; an error by
its HTTP status and MLflow error code (messages may differ). The dataset is in
`differential_dataset.py`, the searches in `differential_corpus.py`.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from differential_corpus import (
    BAD_REQUESTS,
    EXPERIMENT_SEARCHES,
    EXPERIMENT_VIEWS,
    MALFORMED,
    MALFORMED_EXPERIMENT_SEARCHES,
    RUN_SEARCHES,
    ExperimentSearch,
    RunSearch,
)
from differential_dataset import DATASET, EXPERIMENTS, Loaded, final_name, load_dataset
from mlflow import MlflowClient
from mlflow.entities import ViewType
from mlflow.exceptions import MlflowException
from mlflow.utils.rest_utils import MlflowHostCreds, http_request
from processes import free_port, runstream_process, wait_healthy

from ingest.topics import delete_topics, ensure_topics
from services.config import Settings
from services.migrations import load, migrate, quote_schema

pytestmark = pytest.mark.integration

PAGE = 7  # runs per page: most answers take several pages
EXPERIMENT_PAGE = 2

# --- running a search on one server -----------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """What a server answered: the run (or experiment) names page by page, or an error."""

    pages: tuple[tuple[str, ...], ...] = ()
    error: tuple[int, str] | None = None

    def __str__(self) -> str:
        if self.error is not None:
            return f"error {self.error[0]} {self.error[1]}"
        names = [name for page in self.pages for name in page]
        return f"{names} in pages of {[len(page) for page in self.pages]}"


_PLACEHOLDER = re.compile(r"\{(id|exp):([^}]+)\}")


def fill(server: Loaded, text: str) -> str:
    """Replace `{id:<run name>}` and `{exp:<experiment>}` with the server's ids."""
    ids = {"id": server.runs, "exp": server.experiments}
    return _PLACEHOLDER.sub(lambda m: ids[m.group(1)][m.group(2)], text)


def _raw(server: Loaded, endpoint: str, body: dict[str, Any]) -> Answer:
    """Send a first page's request without raising; return its error status and code, or
    (on a 200) the names on that page."""
    response = http_request(
        MlflowHostCreds(server.url),
        f"/api/2.0/mlflow/{endpoint}",
        "POST",
        json=body,
        max_retries=0,
        raise_on_status=False,
    )
    try:
        answer = response.json()
    except ValueError:
        return Answer(error=(response.status_code, f"<not JSON: {response.text[:80]!r}>"))
    if response.status_code != 200:
        return Answer(error=(response.status_code, str(answer.get("error_code"))))
    if "experiments" in answer:
        return Answer(pages=(tuple(item["name"] for item in answer["experiments"]),))
    return Answer(pages=(tuple(run["info"]["run_name"] for run in answer.get("runs", [])),))


def search_runs(server: Loaded, search: RunSearch) -> Answer:
    """Walk every page of a run search on one server."""
    client = MlflowClient(server.url)
    filter_string = fill(server, search.filter)
    experiment_ids = [server.experiments[name] for name in search.experiments]
    pages: list[tuple[str, ...]] = []
    token = None
    try:
        while True:
            found = client.search_runs(
                experiment_ids,
                filter_string,
                search.view,
                PAGE,
                list(search.order_by),
                token,
            )
            pages.append(tuple(run.info.run_name for run in found))
            token = found.token
            if not token:
                return Answer(pages=tuple(pages))
    except MlflowException:
        body = {
            "experiment_ids": experiment_ids,
            "filter": filter_string,
            "run_view_type": ViewType.to_string(search.view),
            "max_results": PAGE,
            "order_by": list(search.order_by),
        }
        return _raw(server, "runs/search", body)


def search_experiments(server: Loaded, search: ExperimentSearch) -> Answer:
    """Walk every page of an experiment search on one server."""
    client = MlflowClient(server.url)
    filter_string = fill(server, search.filter)
    pages: list[tuple[str, ...]] = []
    token = None
    try:
        while True:
            found = client.search_experiments(
                search.view, EXPERIMENT_PAGE, filter_string, list(search.order_by), token
            )
            pages.append(tuple(experiment.name for experiment in found))
            token = found.token
            if not token:
                return Answer(pages=tuple(pages))
    except MlflowException:
        body = {
            "filter": filter_string,
            "view_type": ViewType.to_string(search.view),
            "max_results": EXPERIMENT_PAGE,
            "order_by": list(search.order_by),
        }
        return _raw(server, "experiments/search", body)


def mismatch(search: object, mlflow_answer: Answer, runstream_answer: Answer) -> str:
    """Describe a difference so the report names the query and both answers."""
    lines = [
        f"query: {search}",
        f"  MLflow:    {mlflow_answer}",
        f"  Runstream: {runstream_answer}",
    ]
    if mlflow_answer.error is None and runstream_answer.error is None:
        ours = [n for page in runstream_answer.pages for n in page]
        theirs = [n for page in mlflow_answer.pages for n in page]
        if sorted(ours) != sorted(theirs):
            lines.append(f"  only MLflow:    {sorted(set(theirs) - set(ours))}")
            lines.append(f"  only Runstream: {sorted(set(ours) - set(theirs))}")
        else:
            lines.append("  same runs, different order or paging")
    return "\n".join(lines)


# --- the two servers, once for the module -----------------------------------------------------


@pytest.fixture(scope="module")
def no_client_retries() -> Iterator[None]:
    """Make a failing request fail the test now, not after the client's minutes of retries."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        patch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
        yield


@asynccontextmanager
async def mlflow_server(root: Path) -> AsyncIterator[str]:
    """Run MLflow's tracking server on SQLite under `root`; yield its URL; stop its group."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--default-artifact-root",
        (root / "artifacts").as_uri(),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,  # its workers share its process group
    )
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_healthy(url, proc, 120)
        yield url
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()


@asynccontextmanager
async def runstream_server(stack: Settings, root: Path) -> AsyncIterator[str]:
    """Run `runstream serve` on its own topic and schemas; yield its URL; drop them after."""
    topic = f"test.events_{uuid.uuid4().hex[:12]}"
    schemas = {
        "RUNSTREAM_REGISTRY_SCHEMA": ("ingest", f"t_ingest_{uuid.uuid4().hex[:12]}"),
        "RUNSTREAM_READ_SCHEMA": ("projector", f"t_projector_{uuid.uuid4().hex[:12]}"),
    }
    await ensure_topics(stack.kafka_bootstrap, topic, 6, f"{topic}.dead-letter")
    conn = await asyncpg.connect(stack.database_url)
    try:
        for package, schema in schemas.values():
            await migrate(conn, schema, load(package))
        env = {
            "RUNSTREAM_TOPIC": topic,
            "RUNSTREAM_DEAD_LETTER_TOPIC": f"{topic}.dead-letter",
            "RUNSTREAM_CONSUMER_GROUP": f"test-differential-{uuid.uuid4().hex[:12]}",
            "RUNSTREAM_ARTIFACT_ROOT": root.as_uri(),
            **{variable: schema for variable, (_, schema) in schemas.items()},
        }
        async with runstream_process("serve", env) as url:
            yield url
    finally:
        for _, schema in schemas.values():
            await conn.execute(f"DROP SCHEMA IF EXISTS {quote_schema(schema)} CASCADE")
        await conn.close()
        await delete_topics(stack.kafka_bootstrap, [topic, f"{topic}.dead-letter"])


@pytest.fixture(scope="module")
async def servers(
    stack: Settings, tmp_path_factory: pytest.TempPathFactory, no_client_retries: None
) -> AsyncIterator[tuple[Loaded, Loaded]]:
    """Start both servers, load the dataset into each, and yield (MLflow, Runstream)."""
    root = tmp_path_factory.mktemp("differential")
    (root / "mlflow").mkdir()
    (root / "runstream").mkdir()
    async with (
        mlflow_server(root / "mlflow") as theirs,
        runstream_server(stack, root / "runstream") as ours,
    ):
        loaded = await asyncio.gather(
            asyncio.to_thread(load_dataset, theirs), asyncio.to_thread(load_dataset, ours)
        )
        yield loaded[0], loaded[1]


# --- the tests --------------------------------------------------------------------------------


async def ask_both(servers: tuple[Loaded, Loaded], search: Any) -> tuple[Answer, Answer]:
    """Send a run or experiment search to both servers at once; return (MLflow's, ours)."""
    walk = search_runs if isinstance(search, RunSearch) else search_experiments
    theirs, ours = await asyncio.gather(*(asyncio.to_thread(walk, s, search) for s in servers))
    return theirs, ours


async def test_both_servers_hold_the_same_dataset(servers: tuple[Loaded, Loaded]) -> None:
    theirs, ours = servers
    assert theirs.runs.keys() == ours.runs.keys()
    assert len(ours.runs) == len(DATASET) + 1  # the renamed run under both its names
    every = RunSearch("", ("attributes.start_time ASC",), tuple(EXPERIMENTS), ViewType.ALL)
    answers = await ask_both(servers, every)
    names = [final_name(run) for run in DATASET]
    assert [n for page in answers[0].pages for n in page] == names, "MLflow lost runs"
    assert answers[1] == answers[0], mismatch(every, *answers)


@pytest.mark.parametrize("search", RUN_SEARCHES + EXPERIMENT_SEARCHES, ids=str)
async def test_search_matches_mlflow(
    servers: tuple[Loaded, Loaded], search: RunSearch | ExperimentSearch
) -> None:
    mlflow_answer, runstream_answer = await ask_both(servers, search)
    assert runstream_answer == mlflow_answer, mismatch(search, mlflow_answer, runstream_answer)


@pytest.mark.parametrize("search", MALFORMED + MALFORMED_EXPERIMENT_SEARCHES, ids=str)
async def test_malformed_search_fails_like_mlflow(
    servers: tuple[Loaded, Loaded], search: RunSearch | ExperimentSearch
) -> None:
    mlflow_answer, runstream_answer = await ask_both(servers, search)
    assert mlflow_answer.error is not None, f"MLflow accepts {search}: {mlflow_answer}"
    assert runstream_answer == mlflow_answer, mismatch(search, mlflow_answer, runstream_answer)


@pytest.mark.parametrize("fields", BAD_REQUESTS, ids=str)
async def test_odd_search_request_answers_like_mlflow(
    servers: tuple[Loaded, Loaded], fields: dict[str, Any]
) -> None:
    answers = []
    for server in servers:
        body = {"experiment_ids": [server.experiments["alpha"]], "max_results": PAGE, **fields}
        answers.append(await asyncio.to_thread(_raw, server, "runs/search", body))
    mlflow_answer, runstream_answer = answers
    assert runstream_answer == mlflow_answer, mismatch(fields, mlflow_answer, runstream_answer)


@pytest.mark.parametrize("view", EXPERIMENT_VIEWS, ids=repr)
async def test_odd_experiment_view_answers_like_mlflow(
    servers: tuple[Loaded, Loaded], view: Any
) -> None:
    body = {"max_results": 50, "view_type": view}
    answers = [await asyncio.to_thread(_raw, s, "experiments/search", body) for s in servers]
    assert answers[1] == answers[0], mismatch(view, *answers)
