"""The write-side registry: what must be decided when a request arrives, decided in PostgreSQL.

Every decision takes a reservation (a row, or a lock on one) in a transaction that stays open
until Kafka has acknowledged the events, so a failed emit reserves nothing and two gateway
processes racing for one name or one param key see each other. Only the rows of the run or
experiment at hand are touched: metric logging, the hot path, writes nothing here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

import asyncpg

from ingest.errors import MlflowError, does_not_exist, invalid_parameter
from ingest.events import Event

Emit = Callable[[Sequence[Event]], Awaitable[None]]

ACTIVE = "active"
DELETED = "deleted"

_NEXT_EXPERIMENT_ID = "SELECT nextval('experiment_ids')"
_INSERT_EXPERIMENT = """
INSERT INTO experiments (experiment_id, name, artifact_location) VALUES ($1, $2, $3)
ON CONFLICT DO NOTHING RETURNING experiment_id
"""
_LOCK_EXPERIMENT = """
SELECT experiment_id, name, lifecycle_stage, artifact_location FROM experiments
WHERE experiment_id = $1 FOR UPDATE
"""
_SHARE_EXPERIMENT = """
SELECT experiment_id, name, lifecycle_stage, artifact_location FROM experiments
WHERE experiment_id = $1 FOR SHARE
"""
_RENAME_EXPERIMENT = """
UPDATE experiments SET name = $2 WHERE experiment_id = $1
AND NOT EXISTS (SELECT 1 FROM experiments WHERE name = $2 AND experiment_id <> $1)
RETURNING experiment_id
"""
_SET_EXPERIMENT_STAGE = "UPDATE experiments SET lifecycle_stage = $2 WHERE experiment_id = $1"
_SET_RUNS_STAGE_OF_EXPERIMENT = """
UPDATE runs SET lifecycle_stage = $2 WHERE experiment_id = $1 RETURNING run_id
"""
_INSERT_EXPERIMENT_TAG = """
INSERT INTO experiment_tags (experiment_id, key) VALUES ($1, $2) ON CONFLICT DO NOTHING
"""
_RESERVE_EXPERIMENT_TAG_KEYS = """
INSERT INTO experiment_tags (experiment_id, key) SELECT $1, unnest($2::text[])
ON CONFLICT DO NOTHING
"""
_DELETE_EXPERIMENT_TAG = """
DELETE FROM experiment_tags WHERE experiment_id = $1 AND key = $2 RETURNING key
"""
_INSERT_RUN = """
INSERT INTO runs (run_id, experiment_id, run_name, user_id, status, start_time, artifact_uri)
VALUES ($1, $2, $3, $4, $5, $6, $7)
"""
_RUN_COLUMNS = """run_id, experiment_id, lifecycle_stage, run_name, user_id, status, start_time,
end_time, artifact_uri"""
_GET_RUN = f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = $1"
_LOCK_RUN = f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = $1 FOR UPDATE"
_RUN_STAGE = "SELECT lifecycle_stage FROM runs WHERE run_id = $1"
_UPDATE_RUN = f"""
UPDATE runs SET status = coalesce($2, status), end_time = coalesce($3, end_time),
                run_name = coalesce($4, run_name)
WHERE run_id = $1 RETURNING {_RUN_COLUMNS}
"""
_SET_RUN_STAGE = "UPDATE runs SET lifecycle_stage = $2 WHERE run_id = $1"
_RESERVE_PARAMS = """
INSERT INTO params (run_id, key, value)
SELECT $1, k, v FROM unnest($2::text[], $3::text[]) AS p(k, v)
ON CONFLICT DO NOTHING RETURNING key
"""
_PARAM_VALUES = """
SELECT key, value FROM params WHERE run_id = $1 AND key = ANY($2::text[])
"""
_RESERVE_TAG_KEYS = """
INSERT INTO run_tags (run_id, key) SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING
"""
_DELETE_TAG_KEY = "DELETE FROM run_tags WHERE run_id = $1 AND key = $2 RETURNING key"
# Tells every gateway's ActiveRuns cache to forget a run ('*': every run); sent at commit.
LIFECYCLE_CHANNEL = "runstream_run_lifecycle"
EVERY_RUN = "*"
_NOTIFY_LIFECYCLE = "SELECT pg_notify($1, $2)"
_DEFAULT_EXPERIMENT = """
INSERT INTO experiments (experiment_id, name, artifact_location) VALUES (0, 'Default', $1)
ON CONFLICT DO NOTHING RETURNING experiment_id
"""


@dataclass(frozen=True, slots=True)
class RunInfo:
    """A run as the write API answers it."""

    run_id: str
    experiment_id: str
    lifecycle_stage: str
    run_name: str
    user_id: str
    status: str
    start_time: int
    end_time: int | None
    artifact_uri: str


def _run_info(row: asyncpg.Record) -> RunInfo:
    return RunInfo(
        run_id=row["run_id"],
        experiment_id=str(row["experiment_id"]),
        lifecycle_stage=row["lifecycle_stage"],
        run_name=row["run_name"],
        user_id=row["user_id"],
        status=row["status"],
        start_time=row["start_time"],
        end_time=row["end_time"],
        artifact_uri=row["artifact_uri"],
    )


def experiment_id_int(experiment_id: str) -> int:
    """Return the SQL id of a wire experiment id; a non-integer is MLflow's 400."""
    try:
        return int(experiment_id)
    except ValueError:
        raise invalid_parameter(
            f"Invalid value {experiment_id!r} for parameter 'experiment_id' supplied: "
            "experiment ids are integers."
        ) from None


def _no_experiment(experiment_id: str) -> MlflowError:
    return does_not_exist(f"No Experiment with id={experiment_id} exists")


def _no_run(run_id: str) -> MlflowError:
    return does_not_exist(f"Run with id={run_id} not found")


def run_not_active(run_id: str) -> MlflowError:
    """Return MLflow's error for a write to a deleted run."""
    return invalid_parameter(
        f"The run {run_id} must be in the 'active' state. Current state is deleted."
    )


def _experiment_not_active(experiment_id: str) -> MlflowError:
    return invalid_parameter(
        f"The experiment {experiment_id} must be in the 'active' state. Current state is deleted."
    )


class Registry:
    """Write-time checks and reservations over a connection pool whose search_path is the
    registry schema."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    # --- experiments -----------------------------------------------------------------------

    async def ensure_default_experiment(
        self, artifact_location: str, emit: Emit, events: Callable[[], Sequence[Event]]
    ) -> bool:
        """Reserve experiment 0 ("Default") and emit its creation once; True if done now."""
        async with self._pool.acquire() as conn, conn.transaction():
            if await conn.fetchval(_DEFAULT_EXPERIMENT, artifact_location) is None:
                return False
            await emit(events())
            return True

    async def create_experiment(
        self,
        name: str,
        artifact_location: Callable[[str], str],
        tag_keys: list[str],
        events: Callable[[str, str], Sequence[Event]],
        emit: Emit,
    ) -> str:
        """Reserve a unique name and a new id; emit events(id, location); return the id."""
        async with self._pool.acquire() as conn, conn.transaction():
            new_id = str(await conn.fetchval(_NEXT_EXPERIMENT_ID))
            location = artifact_location(new_id)
            if await conn.fetchval(_INSERT_EXPERIMENT, int(new_id), name, location) is None:
                raise MlflowError(
                    "RESOURCE_ALREADY_EXISTS", f"Experiment(name={name}) already exists."
                )
            if tag_keys:
                await conn.execute(_RESERVE_EXPERIMENT_TAG_KEYS, int(new_id), tag_keys)
            await emit(events(new_id, location))
            return new_id

    async def _lock_experiment(
        self, conn: asyncpg.Connection, experiment_id: str, *, share: bool = False
    ) -> asyncpg.Record:
        row = await conn.fetchrow(
            _SHARE_EXPERIMENT if share else _LOCK_EXPERIMENT, experiment_id_int(experiment_id)
        )
        if row is None:
            raise _no_experiment(experiment_id)
        return row

    async def rename_experiment(
        self, experiment_id: str, new_name: str, events: Sequence[Event], emit: Emit
    ) -> None:
        """Rename an active experiment to a name nobody holds."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await self._lock_experiment(conn, experiment_id)
            if row["lifecycle_stage"] != ACTIVE:
                # MLflow answers 500 INVALID_STATE; bad input deserves a 400 (MLFLOW_API.md §10).
                raise invalid_parameter("Cannot rename a non-active experiment.")
            renamed = row["name"] == new_name or await conn.fetchval(
                _RENAME_EXPERIMENT, row["experiment_id"], new_name
            )
            if not renamed:
                raise MlflowError("BAD_REQUEST", f"Experiment(name={new_name}) already exists.")
            await emit(events)

    async def set_experiment_stage(
        self,
        experiment_id: str,
        stage: str,
        events: Callable[[list[str]], Sequence[Event]],
        emit: Emit,
    ) -> None:
        """Delete or restore an experiment and all its runs; events(run_ids) says it."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await self._lock_experiment(conn, experiment_id)
            if row["lifecycle_stage"] == stage:
                # Only an active experiment can be deleted, only a deleted one restored.
                raise _no_experiment(experiment_id)
            await conn.execute(_SET_EXPERIMENT_STAGE, row["experiment_id"], stage)
            rows = await conn.fetch(_SET_RUNS_STAGE_OF_EXPERIMENT, row["experiment_id"], stage)
            await emit(events([r["run_id"] for r in rows]))
            await conn.execute(_NOTIFY_LIFECYCLE, LIFECYCLE_CHANNEL, EVERY_RUN)

    async def set_experiment_tag(
        self, experiment_id: str, key: str, events: Sequence[Event], emit: Emit
    ) -> None:
        """Record an experiment tag key of an active experiment."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await self._lock_experiment(conn, experiment_id, share=True)
            if row["lifecycle_stage"] != ACTIVE:
                raise _experiment_not_active(experiment_id)
            await conn.execute(_INSERT_EXPERIMENT_TAG, row["experiment_id"], key)
            await emit(events)

    async def delete_experiment_tag(
        self, experiment_id: str, key: str, events: Sequence[Event], emit: Emit
    ) -> None:
        """Remove an existing experiment tag of an active experiment."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await self._lock_experiment(conn, experiment_id, share=True)
            if row["lifecycle_stage"] != ACTIVE:
                raise _experiment_not_active(experiment_id)
            if await conn.fetchval(_DELETE_EXPERIMENT_TAG, row["experiment_id"], key) is None:
                raise does_not_exist(
                    f"No tag with name: {key} in experiment with id {experiment_id}"
                )
            await emit(events)

    # --- runs ------------------------------------------------------------------------------

    async def create_run(
        self,
        info: RunInfo,
        tag_keys: list[str],
        events: Callable[[str], Sequence[Event]],
        emit: Emit,
    ) -> RunInfo:
        """Register a run in an active experiment; events(artifact_location) describe it."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await self._lock_experiment(conn, info.experiment_id, share=True)
            if row["lifecycle_stage"] != ACTIVE:
                raise _experiment_not_active(info.experiment_id)
            location = row["artifact_location"]
            artifact_uri = f"{location.rstrip('/')}/{info.run_id}/artifacts"
            await conn.execute(
                _INSERT_RUN,
                info.run_id,
                row["experiment_id"],
                info.run_name,
                info.user_id,
                info.status,
                info.start_time,
                artifact_uri,
            )
            await conn.execute(_RESERVE_TAG_KEYS, info.run_id, tag_keys)
            await emit(events(artifact_uri))
        return replace(info, artifact_uri=artifact_uri)

    async def run_stage(self, run_id: str) -> str | None:
        """Return the run's lifecycle stage, or None for an unknown run."""
        async with self._pool.acquire() as conn:
            stage: str | None = await conn.fetchval(_RUN_STAGE, run_id)
            return stage

    async def get_run(self, run_id: str) -> RunInfo:
        """Return the run's info; 404 for an unknown run."""
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(_GET_RUN, run_id)
        if row is None:
            raise _no_run(run_id)
        return _run_info(row)

    async def update_run(
        self,
        run_id: str,
        *,
        status: str | None,
        end_time: int | None,
        run_name: str | None,
        events: Sequence[Event],
        emit: Emit,
    ) -> RunInfo:
        """Change an active run's status, end time or name; return its new info."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(_LOCK_RUN, run_id)
            if row is None:
                raise _no_run(run_id)
            if row["lifecycle_stage"] != ACTIVE:
                raise run_not_active(run_id)
            updated = await conn.fetchrow(_UPDATE_RUN, run_id, status, end_time, run_name)
            await emit(events)
            return _run_info(updated)

    async def set_run_stage(
        self, run_id: str, stage: str, events: Sequence[Event], emit: Emit
    ) -> None:
        """Delete or restore a run (idempotent, as MLflow's)."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(_LOCK_RUN, run_id)
            if row is None:
                raise _no_run(run_id)
            await conn.execute(_SET_RUN_STAGE, run_id, stage)
            await emit(events)
            await conn.execute(_NOTIFY_LIFECYCLE, LIFECYCLE_CHANNEL, run_id)

    async def log(
        self,
        run_id: str,
        *,
        params: Sequence[tuple[str, str]],
        tag_keys: Sequence[str],
        run_name: str | None,
        events: Sequence[Event],
        emit: Emit,
    ) -> None:
        """Reserve params (first value wins) and tag keys of an active run, then emit."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(_LOCK_RUN if run_name else _GET_RUN, run_id)
            if row is None:
                raise _no_run(run_id)
            if row["lifecycle_stage"] != ACTIVE:
                raise run_not_active(run_id)
            if params:
                await self._reserve_params(conn, run_id, params)
            if tag_keys:
                await conn.execute(_RESERVE_TAG_KEYS, run_id, list(tag_keys))
            if run_name is not None:
                await conn.execute(_UPDATE_RUN, run_id, None, None, run_name)
            await emit(events)

    async def _reserve_params(
        self, conn: asyncpg.Connection, run_id: str, params: Sequence[tuple[str, str]]
    ) -> None:
        keys = [k for k, _ in params]
        inserted = {
            r["key"]
            for r in await conn.fetch(_RESERVE_PARAMS, run_id, keys, [v for _, v in params])
        }
        clashing = [(k, v) for k, v in params if k not in inserted]
        if not clashing:
            return
        existing = dict(await conn.fetch(_PARAM_VALUES, run_id, [k for k, _ in clashing]))
        for key, value in clashing:
            old = existing.get(key)
            if old is not None and old != value:
                raise invalid_parameter(
                    f"Changing param values is not allowed. Param with key='{key}' was already "
                    f"logged with value='{old}' for run ID='{run_id}'. Attempted logging new "
                    f"value '{value}'."
                )

    async def delete_tag(self, run_id: str, key: str, events: Sequence[Event], emit: Emit) -> None:
        """Remove an existing tag of an active run."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(_GET_RUN, run_id)
            if row is None:
                raise _no_run(run_id)
            if row["lifecycle_stage"] != ACTIVE:
                raise run_not_active(run_id)
            if await conn.fetchval(_DELETE_TAG_KEY, run_id, key) is None:
                raise does_not_exist(f"No tag with name: {key} in run with id {run_id}")
            await emit(events)
