"""The unmodified mlflow client stores and reads a run's artifacts under Runstream's root.

Runstream serves no artifact proxy: a run's `artifact_uri` lies under `RUNSTREAM_ARTIFACT_ROOT`
(here a `file://` folder), where the client writes and reads the files itself, as it does with
MLflow's server started with `--default-artifact-root`. So the URI must be the one the
experiment's location and the run's id make, and usable by the client as given.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow import MlflowClient
from processes import isolated, runstream_process

from services.config import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
async def tracking_uri(
    stack: Settings,
    topic: str,
    schema_factory: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[str]:
    """Run `runstream serve` on fresh state with its artifact root in `tmp_path/root`."""
    env, _ = await isolated(stack, topic, schema_factory, tmp_path / "root", "artifacts")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    async with runstream_process("serve", env) as url:
        yield url
    os.environ.pop("MLFLOW_EXPERIMENT_ID", None)  # set_experiment exports it


def artifacts(url: str, root: Path, scratch: Path) -> None:
    mlflow.set_tracking_uri(url)
    client = MlflowClient(url)
    experiment_id = mlflow.set_experiment("artifacts").experiment_id
    (scratch / "plots").mkdir()
    (scratch / "plots" / "curve.csv").write_text("step,loss\n0,1.0\n1,0.5\n")
    (scratch / "plots" / "roc.csv").write_text("fpr,tpr\n0,0\n1,1\n")
    with mlflow.start_run() as run:
        mlflow.log_text("lr=0.1", "notes/params.txt")
        mlflow.log_dict({"layers": [64, 32]}, "config.json")
        mlflow.log_artifacts(str(scratch / "plots"), artifact_path="plots")
    run_id = run.info.run_id

    stored = client.get_run(run_id).info.artifact_uri
    assert stored == f"{(root / experiment_id).as_uri()}/{run_id}/artifacts"
    on_disk = root / experiment_id / run_id / "artifacts"
    assert json.loads((on_disk / "config.json").read_text()) == {"layers": [64, 32]}
    assert sorted(a.path for a in client.list_artifacts(run_id)) == [
        "config.json",
        "notes",
        "plots",
    ]
    # Not `list_artifacts(run_id, "plots")`: under a path, the client also lists the artifacts
    # of the run's logged models (SearchLoggedModels), an API Runstream does not serve yet.
    assert mlflow.artifacts.load_text(f"runs:/{run_id}/notes/params.txt") == "lr=0.1"
    fetched = Path(client.download_artifacts(run_id, "plots", str(scratch / "back")))
    assert (fetched / "curve.csv").read_text() == "step,loss\n0,1.0\n1,0.5\n"


async def test_the_client_writes_and_reads_artifacts_under_the_root(
    tracking_uri: str, tmp_path: Path
) -> None:
    (tmp_path / "scratch").mkdir()
    await asyncio.to_thread(artifacts, tracking_uri, tmp_path / "root", tmp_path / "scratch")
