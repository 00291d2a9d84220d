"""MLflow's conventions that both write paths (gateway and emitter) follow."""

from __future__ import annotations

import time

RUN_NAME_TAG = "mlflow.runName"
PARENT_TAG = "mlflow.parentRunId"
TERMINAL_STATUSES = frozenset({"FINISHED", "FAILED", "KILLED"})


def now_ms() -> int:
    """Return the current UTC time in milliseconds."""
    return time.time_ns() // 1_000_000
