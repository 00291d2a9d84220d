"""MLflow's conventions that both write paths (gateway and emitter) follow."""

from __future__ import annotations

import time

RUN_NAME_TAG = "mlflow.runName"
PARENT_TAG = "mlflow.parentRunId"
TERMINAL_STATUSES = frozenset({"FINISHED", "FAILED", "KILLED"})


def renames_to_nothing(key: str, value: str) -> bool:
    """Whether a run tag is an empty mlflow.runName, which MLflow's store drops: it renames a
    run only to a name, and then leaves the tag as it was too."""
    return key == RUN_NAME_TAG and not value


def now_ms() -> int:
    """Return the current UTC time in milliseconds."""
    return time.time_ns() // 1_000_000
