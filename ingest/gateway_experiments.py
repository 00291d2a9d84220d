"""MLflow's experiment write endpoints: create, rename, delete and restore, and tags.

The registry decides what must be decided now (a unique name, an experiment that exists and is
active), inside the transaction that holds its reservation, then the events are emitted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ingest.codec import new_event_id
from ingest.conventions import now_ms
from ingest.entries import TagEntry
from ingest.events import (
    Event,
    ExperimentCreated,
    ExperimentDeleted,
    ExperimentRenamed,
    ExperimentRestored,
    ExperimentTagDeleted,
    ExperimentTagSet,
    RunDeleted,
    RunRestored,
    Tag,
)
from ingest.producer import EventProducer
from ingest.registry import ACTIVE, DELETED, Registry
from ingest.request_types import (
    CreateExperiment,
    DeleteExperiment,
    DeleteExperimentTag,
    RestoreExperiment,
    SetExperimentTag,
    UpdateExperiment,
)

__all__ = ["ExperimentWrites", "event_tags"]


def event_tags(entries: Sequence[TagEntry]) -> tuple[Tag, ...]:
    """Return a request's tag entries as the events' tags."""
    return tuple(Tag(key=t.key, value=t.value) for t in entries)


class ExperimentWrites:
    """The experiment endpoints of the gateway, over the registry and the event producer."""

    def __init__(self, registry: Registry, producer: EventProducer, *, artifact_root: str) -> None:
        self._registry = registry
        self._emit = producer.emit
        self._artifact_root = artifact_root.rstrip("/")

    async def ensure_default_experiment(self) -> bool:
        """Create experiment "0" named Default once, whichever gateway starts first."""
        location = f"{self._artifact_root}/0"

        def events() -> list[Event]:
            return [
                ExperimentCreated(
                    event_id=new_event_id(),
                    at=now_ms(),
                    experiment_id="0",
                    name="Default",
                    artifact_location=location,
                )
            ]

        return await self._registry.ensure_default_experiment(location, self._emit, events)

    async def create_experiment(self, req: CreateExperiment) -> dict[str, Any]:
        """Create an experiment with a unique name."""
        at = now_ms()
        tags = event_tags(req.tags)

        def location(experiment_id: str) -> str:
            return req.artifact_location or f"{self._artifact_root}/{experiment_id}"

        def events(experiment_id: str, artifact_location: str) -> list[Event]:
            return [
                ExperimentCreated(
                    event_id=new_event_id(),
                    at=at,
                    experiment_id=experiment_id,
                    name=req.name,
                    artifact_location=artifact_location,
                    tags=tags,
                )
            ]

        experiment_id = await self._registry.create_experiment(
            req.name, location, [t.key for t in tags], events, self._emit
        )
        return {"experiment_id": experiment_id}

    async def update_experiment(self, req: UpdateExperiment) -> None:
        """Rename an experiment."""
        event = ExperimentRenamed(
            event_id=new_event_id(), at=now_ms(), experiment_id=req.experiment_id, name=req.new_name
        )
        await self._registry.rename_experiment(req.experiment_id, req.new_name, [event], self._emit)

    async def _set_experiment_stage(self, experiment_id: str, stage: str) -> None:
        at = now_ms()
        run_event = RunDeleted if stage == DELETED else RunRestored
        experiment_event = ExperimentDeleted if stage == DELETED else ExperimentRestored

        def events(run_ids: list[str]) -> list[Event]:
            # One event per run, on the run's own partition, so per-run order holds.
            out: list[Event] = [
                experiment_event(event_id=new_event_id(), at=at, experiment_id=experiment_id)
            ]
            out += [run_event(event_id=new_event_id(), at=at, run_id=r) for r in run_ids]
            return out

        await self._registry.set_experiment_stage(experiment_id, stage, events, self._emit)

    async def delete_experiment(self, req: DeleteExperiment) -> None:
        """Delete an active experiment and every run in it."""
        await self._set_experiment_stage(req.experiment_id, DELETED)

    async def restore_experiment(self, req: RestoreExperiment) -> None:
        """Restore a deleted experiment and every run in it."""
        await self._set_experiment_stage(req.experiment_id, ACTIVE)

    async def set_experiment_tag(self, req: SetExperimentTag) -> None:
        """Set (upsert) a tag on an active experiment."""
        event = ExperimentTagSet(
            event_id=new_event_id(),
            at=now_ms(),
            experiment_id=req.experiment_id,
            key=req.tag.key,
            value=req.tag.value,
        )
        await self._registry.set_experiment_tag(req.experiment_id, req.tag.key, [event], self._emit)

    async def delete_experiment_tag(self, req: DeleteExperimentTag) -> None:
        """Delete an existing tag of an active experiment."""
        event = ExperimentTagDeleted(
            event_id=new_event_id(), at=now_ms(), experiment_id=req.experiment_id, key=req.key
        )
        await self._registry.delete_experiment_tag(req.experiment_id, req.key, [event], self._emit)
