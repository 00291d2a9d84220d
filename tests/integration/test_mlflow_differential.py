"""Search compatibility, proven differentially: MLflow's own tracking server and `runstream serve`
load the same dataset through the unmodified mlflow client, then must answer every search alike.

Each server starts once for the module. A run search is compared by the ordered run names it
returns, walked page by page with a small page size, and by the size of each page; an error by
its HTTP status and MLflow error code (messages may differ). The dataset is in
`differential_dataset.py`, the searches in `differential_corpus.py`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from differential_corpus import (
    BAD_REQUESTS,
    EXPERIMENT_SEARCHES,
    EXPERIMENT_VIEWS,
    GENERATED,
    MALFORMED,
    MALFORMED_EXPERIMENT_SEARCHES,
    RUN_SEARCHES,
    ExperimentSearch,
    RunSearch,
)
from differential_dataset import DATASET, EXPERIMENTS, Loaded, final_name, load_dataset
from differential_servers import side_by_side
from mlflow import MlflowClient
from mlflow.entities import ViewType
from mlflow.exceptions import MlflowException
from mlflow.utils.rest_utils import MlflowHostCreds, http_request

from services.config import Settings

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


def _pages(fetch: Callable[[str | None], Any], name: Callable[[Any], str]) -> Answer:
    """Walk a client search page by page (`fetch` takes the page token): each page's names."""
    pages: list[tuple[str, ...]] = []
    token = None
    while True:
        found = fetch(token)
        pages.append(tuple(name(item) for item in found))
        token = found.token
        if not token:
            return Answer(pages=tuple(pages))


def search_runs(server: Loaded, search: RunSearch) -> Answer:
    """Walk every page of a run search on one server."""
    client = MlflowClient(server.url)
    filter_string = fill(server, search.filter)
    experiment_ids = [server.experiments[name] for name in search.experiments]
    order_by = list(search.order_by)
    try:
        return _pages(
            lambda token: client.search_runs(
                experiment_ids, filter_string, search.view, PAGE, order_by, token
            ),
            lambda run: str(run.info.run_name),
        )
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
    order_by = list(search.order_by)
    try:
        return _pages(
            lambda token: client.search_experiments(
                search.view, EXPERIMENT_PAGE, filter_string, order_by, token
            ),
            lambda experiment: str(experiment.name),
        )
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
async def servers(
    stack: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Loaded, Loaded]]:
    """Start both servers, load the dataset into each, and yield (MLflow, Runstream)."""
    async with side_by_side(stack, tmp_path_factory.mktemp("differential")) as (theirs, ours):
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


@pytest.mark.parametrize("search", RUN_SEARCHES + GENERATED + EXPERIMENT_SEARCHES, ids=str)
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
