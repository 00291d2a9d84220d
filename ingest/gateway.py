"""MLflow's write endpoints: validate, decide what must be decided now, emit, then answer.

A request is answered 200 only after Kafka acknowledged every event it produced; a rejected
request emits nothing (parsing validates the whole body first, the registry decides before the
emit, inside the transaction that holds its reservation). Every endpoint is routed here; the
runs' are served here, the experiments' by `ingest.gateway_experiments`.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web

from ingest.codec import new_event_id
from ingest.conventions import (
    PARENT_TAG,
    RUN_NAME_TAG,
    TERMINAL_STATUSES,
    now_ms,
    renames_to_nothing,
)
from ingest.entries import MetricEntry
from ingest.errors import MlflowError
from ingest.events import (
    DatasetInput,
    Event,
    InputsLogged,
    MetricLogged,
    ParamLogged,
    RunDeleted,
    RunEnded,
    RunRestored,
    RunStarted,
    RunUpdated,
    Tag,
    TagDeleted,
    TagSet,
)
from ingest.gateway_experiments import ExperimentWrites, event_tags
from ingest.lifecycle import ActiveRuns
from ingest.names import random_run_name
from ingest.producer import EventProducer
from ingest.registry import ACTIVE, DELETED, Registry, RunInfo
from ingest.request_types import (
    CreateRun,
    DeleteRun,
    DeleteTag,
    LogBatch,
    LogInputs,
    LogMetric,
    LogParam,
    RestoreRun,
    SetTag,
    UpdateRun,
)
from ingest.requests import PARSERS

PREFIXES = ("/api/2.0/mlflow", "/ajax-api/2.0/mlflow")

_json_decode = msgspec.json.Decoder().decode
_json_encode = msgspec.json.Encoder().encode
_EMPTY = b"{}"


def _metric(run_id: str, m: MetricEntry, at: int) -> MetricLogged:
    return MetricLogged(
        event_id=new_event_id(),
        at=at,
        run_id=run_id,
        key=m.key,
        value=m.value,
        timestamp=m.timestamp,
        step=m.step,
        model_id=m.model_id,
        dataset_name=m.dataset_name,
        dataset_digest=m.dataset_digest,
    )


def run_info_json(info: RunInfo) -> dict[str, Any]:
    """Return MLflow's RunInfo JSON (unset end_time omitted, both run id spellings)."""
    out: dict[str, Any] = {
        "run_id": info.run_id,
        "run_uuid": info.run_id,
        "run_name": info.run_name,
        "experiment_id": info.experiment_id,
        "user_id": info.user_id,
        "status": info.status,
        "start_time": info.start_time,
        "artifact_uri": info.artifact_uri,
        "lifecycle_stage": info.lifecycle_stage,
    }
    if info.end_time is not None:
        out["end_time"] = info.end_time
    return out


async def _read_json(request: web.Request) -> dict[str, Any]:
    content_type = request.headers.get("Content-Type")
    if content_type is None:
        raise MlflowError("INVALID_PARAMETER_VALUE", "Bad Request. Content-Type header is missing.")
    if request.content_type != "application/json":
        raise MlflowError(
            "INVALID_PARAMETER_VALUE",
            "Bad Request. Content-Type must be one of ['application/json'].",
        )
    raw = await request.read()
    try:
        body = _json_decode(raw) if raw else {}
    except msgspec.DecodeError as exc:
        raise MlflowError("BAD_REQUEST", f"Malformed JSON body: {exc}") from None
    if not isinstance(body, dict):
        raise MlflowError("BAD_REQUEST", "The request body must be a JSON object.")
    # PostgreSQL text cannot hold NUL: refuse it here rather than poison the log with it.
    if b"\\u0000" in raw and _holds_nul(body):
        raise MlflowError(
            "INVALID_PARAMETER_VALUE",
            "Invalid value: strings may not contain the NUL character (\\u0000).",
        )
    return body


def _holds_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(v) for v in value)
    return False


class Gateway:
    """The write side of MLflow's REST API over the registry and the event producer."""

    def __init__(
        self,
        registry: Registry,
        producer: EventProducer,
        active_runs: ActiveRuns,
        *,
        artifact_root: str,
        truncate_long_values: bool = True,
    ) -> None:
        self._registry = registry
        self._producer = producer
        self._active = active_runs
        self._truncate = truncate_long_values
        self._emit = producer.emit
        self.experiments = ExperimentWrites(registry, producer, artifact_root=artifact_root)
        self._ops: dict[str, Callable[[Any], Awaitable[dict[str, Any] | None]]] = {
            "experiments/create": self.experiments.create_experiment,
            "experiments/update": self.experiments.update_experiment,
            "experiments/delete": self.experiments.delete_experiment,
            "experiments/restore": self.experiments.restore_experiment,
            "experiments/set-experiment-tag": self.experiments.set_experiment_tag,
            "experiments/delete-experiment-tag": self.experiments.delete_experiment_tag,
            "runs/create": self.create_run,
            "runs/update": self.update_run,
            "runs/delete": self.delete_run,
            "runs/restore": self.restore_run,
            "runs/log-metric": self.log_metric,
            "runs/log-parameter": self.log_param,
            "runs/set-tag": self.set_tag,
            "runs/delete-tag": self.delete_tag,
            "runs/log-batch": self.log_batch,
            "runs/log-inputs": self.log_inputs,
        }
        missing = set(PARSERS) ^ set(self._ops)
        if missing:
            raise RuntimeError(f"parsers and operations disagree on {sorted(missing)}")

    def add_routes(self, app: web.Application) -> None:
        """Register every write endpoint under MLflow's REST and UI prefixes."""
        for path in self._ops:
            handler = self._handler(path)
            for prefix in PREFIXES:
                app.router.add_post(f"{prefix}/{path}", handler)

    def _handler(self, path: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        parse = PARSERS[path]
        op = self._ops[path]
        truncate = self._truncate

        async def handle(request: web.Request) -> web.Response:
            parsed = parse(await _read_json(request), truncate_long_values=truncate)
            result = await op(parsed)
            body = _EMPTY if result is None else _json_encode(result)
            return web.Response(body=body, content_type="application/json")

        return handle

    # --- runs ------------------------------------------------------------------------------

    async def create_run(self, req: CreateRun) -> dict[str, Any]:
        """Start a run; its name comes from run_name, the mlflow.runName tag, or is made up."""
        tags = list(event_tags(req.tags))
        by_key = {t.key: t.value for t in tags}
        run_name = req.run_name or by_key.get(RUN_NAME_TAG) or random_run_name()
        if RUN_NAME_TAG not in by_key:
            tags.append(Tag(key=RUN_NAME_TAG, value=run_name))
        info = RunInfo(
            run_id=uuid.uuid4().hex,
            experiment_id=req.experiment_id,
            lifecycle_stage=ACTIVE,
            run_name=run_name,
            user_id=req.user_id,
            status="RUNNING",
            start_time=req.start_time,
            end_time=None,
            artifact_uri="",
        )
        at = now_ms()

        def events(artifact_uri: str) -> list[Event]:
            return [
                RunStarted(
                    event_id=new_event_id(),
                    at=at,
                    run_id=info.run_id,
                    experiment_id=info.experiment_id,
                    run_name=run_name,
                    user_id=info.user_id,
                    start_time=info.start_time,
                    artifact_uri=artifact_uri,
                    status=info.status,
                    tags=tuple(tags),
                    parent_run_id=by_key.get(PARENT_TAG) or None,
                )
            ]

        created = await self._registry.create_run(info, [t.key for t in tags], events, self._emit)
        return {
            "run": {
                "info": run_info_json(created),
                "data": {"tags": [{"key": t.key, "value": t.value} for t in tags]},
                "inputs": {},
            }
        }

    async def update_run(self, req: UpdateRun) -> dict[str, Any]:
        """Change a run's status, end time or name."""
        at = now_ms()
        events: list[Event] = []
        if req.status in TERMINAL_STATUSES and req.end_time is not None:
            events.append(
                RunEnded(
                    event_id=new_event_id(),
                    at=at,
                    run_id=req.run_id,
                    status=req.status,
                    end_time=req.end_time,
                )
            )
            if req.run_name:
                events.append(
                    RunUpdated(
                        event_id=new_event_id(), at=at, run_id=req.run_id, run_name=req.run_name
                    )
                )
        elif req.status is not None or req.end_time is not None or req.run_name:
            events.append(
                RunUpdated(
                    event_id=new_event_id(),
                    at=at,
                    run_id=req.run_id,
                    status=req.status,
                    end_time=req.end_time,
                    run_name=req.run_name or None,
                )
            )
        info = await self._registry.update_run(
            req.run_id,
            status=req.status,
            end_time=req.end_time,
            run_name=req.run_name or None,
            events=events,
            emit=self._emit,
        )
        return {"run_info": run_info_json(info)}

    async def _set_run_stage(self, run_id: str, stage: str) -> None:
        kind = RunDeleted if stage == DELETED else RunRestored
        event = kind(event_id=new_event_id(), at=now_ms(), run_id=run_id)
        await self._registry.set_run_stage(run_id, stage, [event], self._emit)
        self._active.forget(run_id)

    async def delete_run(self, req: DeleteRun) -> None:
        """Mark a run deleted (idempotent)."""
        await self._set_run_stage(req.run_id, DELETED)

    async def restore_run(self, req: RestoreRun) -> None:
        """Mark a run active again (idempotent)."""
        await self._set_run_stage(req.run_id, ACTIVE)

    async def log_metric(self, req: LogMetric) -> None:
        """Log one metric point: the hot path, no database write."""
        await self._active.require_active(req.run_id)
        await self._emit([_metric(req.run_id, req.metric, now_ms())])

    async def log_param(self, req: LogParam) -> None:
        """Log a param; its first value is final."""
        event = ParamLogged(
            event_id=new_event_id(),
            at=now_ms(),
            run_id=req.run_id,
            key=req.param.key,
            value=req.param.value,
        )
        await self._registry.log(
            req.run_id,
            params=[(req.param.key, req.param.value)],
            tag_keys=[],
            run_name=None,
            events=[event],
            emit=self._emit,
        )

    async def set_tag(self, req: SetTag) -> None:
        """Set (upsert) a run tag; mlflow.runName also renames the run."""
        if renames_to_nothing(req.tag.key, req.tag.value):
            await self._active.require_active(req.run_id)
            return
        event = TagSet(
            event_id=new_event_id(),
            at=now_ms(),
            run_id=req.run_id,
            key=req.tag.key,
            value=req.tag.value,
        )
        run_name = req.tag.value if req.tag.key == RUN_NAME_TAG else None
        await self._registry.log(
            req.run_id,
            params=[],
            tag_keys=[req.tag.key],
            run_name=run_name,
            events=[event],
            emit=self._emit,
        )

    async def delete_tag(self, req: DeleteTag) -> None:
        """Delete an existing run tag."""
        event = TagDeleted(event_id=new_event_id(), at=now_ms(), run_id=req.run_id, key=req.key)
        await self._registry.delete_tag(req.run_id, req.key, [event], self._emit)

    async def log_batch(self, req: LogBatch) -> None:
        """Log params, metrics and tags of one run as one record, all or nothing."""
        at = now_ms()
        run_id = req.run_id
        events: list[Event] = [
            ParamLogged(event_id=new_event_id(), at=at, run_id=run_id, key=p.key, value=p.value)
            for p in req.params
        ]
        events += [_metric(run_id, m, at) for m in req.metrics]
        events += [
            TagSet(event_id=new_event_id(), at=at, run_id=run_id, key=t.key, value=t.value)
            for t in req.tags
        ]
        if not req.params and not req.tags:
            await self._active.require_active(run_id)
            await self._emit(events)
            return
        run_name = next((t.value for t in req.tags if t.key == RUN_NAME_TAG), None)
        await self._registry.log(
            run_id,
            params=[(p.key, p.value) for p in req.params],
            tag_keys=[t.key for t in req.tags],
            run_name=run_name,
            events=events,
            emit=self._emit,
        )

    async def log_inputs(self, req: LogInputs) -> None:
        """Record the datasets and models a run consumed."""
        await self._active.require_active(req.run_id)
        datasets = tuple(
            DatasetInput(
                name=d.name,
                digest=d.digest,
                source_type=d.source_type,
                source=d.source,
                schema=d.schema,
                profile=d.profile,
                tags=event_tags(d.tags),
            )
            for d in req.datasets
        )
        if not datasets and not req.models:
            return
        await self._emit(
            [
                InputsLogged(
                    event_id=new_event_id(),
                    at=now_ms(),
                    run_id=req.run_id,
                    datasets=datasets,
                    model_ids=tuple(m.model_id for m in req.models),
                )
            ]
        )
