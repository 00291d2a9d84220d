"""Write the missing golden wire samples of the current format version; never overwrite one.

Run from the repository root::

    .venv/bin/python tests/golden/generate.py          # fills tests/golden/v<FORMAT_VERSION>/
    .venv/bin/python tests/golden/generate.py v2       # the same, naming the version explicitly

Each sample is a pair: ``<name>.bin``, the exact record value ``encode_record`` wrote, and
``<name>.json``, the events it must decode to (a list of objects keyed by field name plus
``"type"``; non-finite floats are written as Python's json writes them: NaN, Infinity).
tests/unit/test_golden.py decodes every pair forever. Existing files are facts about bytes already
on the topic: this script only ever adds the files that are missing (a new event type, or a new
format version after ``FORMAT_VERSION`` was bumped) and refuses to touch the rest. Check the new
files in with the change that needed them.
"""

from __future__ import annotations

import json
import math
import sys
import typing
from pathlib import Path

import msgspec

from ingest.codec import FORMAT_VERSION, encode_record
from ingest.events import (
    DatasetInput,
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
    Tag,
    TagDeleted,
    TagSet,
)

GOLDEN_DIR = Path(__file__).resolve().parent

# Fixed ids and times so the bytes are reproducible; the values are arbitrary but never change.
RUN = "0123456789abcdef0123456789abcdef"
EXP = "7"
AT = 1_700_000_000_000


def _id(n: int) -> str:
    return f"{n:032x}"


def samples() -> dict[str, list[Event]]:
    """Return the records to write: one per event tag (every field set) plus a few extras."""
    run_tags = (Tag("mlflow.runName", "golden-run"), Tag("mlflow.parentRunId", "f" * 32))
    dataset = DatasetInput(
        name="iris",
        digest="d41d8cd9",
        source_type="local",
        source='{"uri": "file:///data/iris.csv"}',
        schema='{"mlflow_colspec": []}',
        profile='{"num_rows": 150}',
        tags=(Tag("mlflow.data.context", "training"),),
    )
    per_tag: list[Event] = [
        ExperimentCreated(
            event_id=_id(1),
            at=AT,
            experiment_id=EXP,
            name="golden experiment",
            artifact_location="file:///artifacts/7",
            tags=(Tag("team", "runstream"),),
        ),
        ExperimentRenamed(event_id=_id(2), at=AT + 1, experiment_id=EXP, name="renamed"),
        ExperimentDeleted(event_id=_id(3), at=AT + 2, experiment_id=EXP),
        ExperimentRestored(event_id=_id(4), at=AT + 3, experiment_id=EXP),
        ExperimentTagSet(event_id=_id(5), at=AT + 4, experiment_id=EXP, key="k", value="v"),
        ExperimentTagDeleted(event_id=_id(6), at=AT + 5, experiment_id=EXP, key="k"),
        RunStarted(
            event_id=_id(7),
            at=AT + 6,
            run_id=RUN,
            experiment_id=EXP,
            run_name="golden-run",
            user_id="alice",
            start_time=AT + 6,
            artifact_uri=f"file:///artifacts/7/{RUN}/artifacts",
            status="RUNNING",
            tags=run_tags,
            parent_run_id="f" * 32,
        ),
        ParamLogged(event_id=_id(8), at=AT + 7, run_id=RUN, key="lr", value="0.01"),
        MetricLogged(
            event_id=_id(9),
            at=AT + 8,
            run_id=RUN,
            key="loss",
            value=0.25,
            timestamp=AT + 8,
            step=3,
            model_id="m-" + "a" * 32,
            dataset_name="iris",
            dataset_digest="d41d8cd9",
        ),
        TagSet(event_id=_id(10), at=AT + 9, run_id=RUN, key="note", value="größe ✓ 模型"),
        TagDeleted(event_id=_id(11), at=AT + 10, run_id=RUN, key="note"),
        RunUpdated(
            event_id=_id(12),
            at=AT + 11,
            run_id=RUN,
            status="KILLED",
            end_time=AT + 11,
            run_name="x",
        ),
        RunEnded(event_id=_id(13), at=AT + 12, run_id=RUN, status="FINISHED", end_time=AT + 12),
        RunDeleted(event_id=_id(14), at=AT + 13, run_id=RUN),
        RunRestored(event_id=_id(15), at=AT + 14, run_id=RUN),
        InputsLogged(
            event_id=_id(16), at=AT + 15, run_id=RUN, datasets=(dataset,), model_ids=("m-1",)
        ),
    ]
    out: dict[str, list[Event]] = {_tag(type(event)): [event] for event in per_tag}
    out["run_started_defaults"] = [
        RunStarted(
            event_id=_id(17),
            at=AT,
            run_id=RUN,
            experiment_id="0",
            run_name="",
            user_id="",
            start_time=0,
            artifact_uri="",
        )
    ]
    out["metric_logged_non_finite"] = [
        MetricLogged(event_id=_id(18 + i), at=AT, run_id=RUN, key="m", value=v, timestamp=AT)
        for i, v in enumerate((math.nan, math.inf, -math.inf, -0.0))
    ]
    # A log-batch of one run: the shape most records on the topic have.
    out["log_batch"] = [
        ParamLogged(event_id=_id(30), at=AT, run_id=RUN, key="epochs", value="10"),
        MetricLogged(event_id=_id(31), at=AT, run_id=RUN, key="acc", value=0.5, timestamp=AT),
        MetricLogged(
            event_id=_id(32), at=AT, run_id=RUN, key="acc", value=0.75, timestamp=AT + 1, step=-1
        ),
        TagSet(event_id=_id(33), at=AT, run_id=RUN, key="mlflow.user", value="alice"),
    ]
    return out


def _tag(cls: type[msgspec.Struct]) -> str:
    return str(cls.__struct_config__.tag)


def write_missing(version: str) -> int:
    """Write the sample files missing under ``version``; return how many pairs were written."""
    if version != f"v{FORMAT_VERSION}":
        raise SystemExit(f"this build writes v{FORMAT_VERSION} records only, not {version}")
    records = samples()
    uncovered = {_tag(cls) for cls in typing.get_args(Event)} - records.keys()
    if uncovered:
        raise SystemExit(f"add a sample for every event tag first; missing: {sorted(uncovered)}")
    target = GOLDEN_DIR / version
    target.mkdir(exist_ok=True)
    written = 0
    for name, events in records.items():
        bin_path, json_path = target / f"{name}.bin", target / f"{name}.json"
        if bin_path.exists() or json_path.exists():
            print(f"kept {name}: golden files are never overwritten")
            continue
        expected = json.dumps(msgspec.to_builtins(events), indent=2, ensure_ascii=False)
        bin_path.write_bytes(encode_record(events))
        json_path.write_text(expected + "\n", encoding="utf-8")
        print(f"wrote {bin_path.relative_to(GOLDEN_DIR)} and .json")
        written += 1
    return written


if __name__ == "__main__":
    write_missing(sys.argv[1] if len(sys.argv) > 1 else f"v{FORMAT_VERSION}")
