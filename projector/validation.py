"""Refuse what the read models cannot hold, before folding: such records go to the dead-letter
topic instead of failing a batch forever.

The codec guarantees the types; this checks what the tables add: text without NUL characters,
integers within bigint, experiment ids that are canonical decimal bigints (two spellings of one
number would otherwise be one experiment).
"""

from __future__ import annotations

from collections.abc import Sequence

from ingest.events import (
    Event,
    ExperimentCreated,
    ExperimentDeleted,
    ExperimentRenamed,
    ExperimentRestored,
    ExperimentTagDeleted,
    ExperimentTagSet,
    InputsLogged,
    MetricLogged,
    ParamLogged,
    RunDeleted,
    RunEnded,
    RunRestored,
    RunStarted,
    RunUpdated,
    TagDeleted,
    TagSet,
)

__all__ = ["validate_events"]

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1


def validate_events(events: Sequence[Event]) -> str | None:
    """Return why these events cannot be folded into PostgreSQL, or None if they can."""
    for event in events:
        if type(event) is MetricLogged:
            # The hot path: no match, only the fields a metric row stores.
            if (
                "\x00" in event.run_id
                or "\x00" in event.key
                or not (_INT64_MIN <= event.step <= _INT64_MAX)
                or not (_INT64_MIN <= event.timestamp <= _INT64_MAX)
                or (event.model_id is not None and "\x00" in event.model_id)
                or (event.dataset_name is not None and "\x00" in event.dataset_name)
                or (event.dataset_digest is not None and "\x00" in event.dataset_digest)
            ):
                return f"event {event.event_id!r}: a metric field is out of range or has NUL"
            continue
        problem = _problem(event)
        if problem is not None:
            return f"event {_printable(event.event_id)!r} ({type(event).__name__}): {problem}"
    return None


def _problem(event: Event) -> str | None:
    texts: list[str | None] = [event.event_id]
    ints: list[int | None] = [event.at]
    experiment_id: str | None = None
    match event:
        case RunStarted():
            experiment_id = event.experiment_id
            texts += [event.run_id, event.run_name, event.user_id, event.artifact_uri]
            texts += [event.status, event.parent_run_id]
            texts += [s for t in event.tags for s in (t.key, t.value)]
            ints.append(event.start_time)
        case ParamLogged() | TagSet():
            texts += [event.run_id, event.key, event.value]
        case TagDeleted():
            texts += [event.run_id, event.key]
        case RunUpdated():
            texts += [event.run_id, event.status, event.run_name]
            ints.append(event.end_time)
        case RunEnded():
            texts += [event.run_id, event.status]
            ints.append(event.end_time)
        case RunDeleted() | RunRestored():
            texts.append(event.run_id)
        case InputsLogged():
            texts.append(event.run_id)
            texts += list(event.model_ids)
            for ds in event.datasets:
                texts += [ds.name, ds.digest, ds.source_type, ds.source, ds.schema, ds.profile]
                texts += [s for t in ds.tags for s in (t.key, t.value)]
        case ExperimentCreated():
            experiment_id = event.experiment_id
            texts += [event.name, event.artifact_location]
            texts += [s for t in event.tags for s in (t.key, t.value)]
        case ExperimentRenamed():
            experiment_id = event.experiment_id
            texts.append(event.name)
        case ExperimentTagSet():
            experiment_id = event.experiment_id
            texts += [event.key, event.value]
        case ExperimentTagDeleted():
            experiment_id = event.experiment_id
            texts.append(event.key)
        case ExperimentDeleted() | ExperimentRestored():
            experiment_id = event.experiment_id
        case MetricLogged():  # pragma: no cover - validated on the hot path
            pass
    if experiment_id is not None and not _is_bigint_id(experiment_id):
        return f"experiment id {_printable(experiment_id)!r} is not a canonical bigint"
    for text in texts:
        if text is not None and "\x00" in text:
            return "text contains a NUL character"
    for number in ints:
        if number is not None and not (_INT64_MIN <= number <= _INT64_MAX):
            return f"integer {number} is outside bigint"
    return None


def _is_bigint_id(raw: str) -> bool:
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19:
        return False
    return str(int(raw)) == raw and int(raw) <= _INT64_MAX


def _printable(text: str) -> str:
    return text[:80].replace("\x00", "\\x00")
