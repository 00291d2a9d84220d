"""`runstream restore-registry`: rebuild the write-side registry from the read models.

The registry (``ingest/migrations``) holds what the gateway decides at write time: experiment
names and ids, run lifecycles, first param values, which tag keys exist. It is not a fold of the
log, but everything in it is in the read models, which are: after a lost database, rebuild the
read models from the log (the projector from offset 0, or ``runstream replay``), then restore the
registry from them, with the gateways stopped so nothing reserves meanwhile.

It refuses when the projector has not folded the whole log (the registry would miss what the
gateway accepted last) or when the registry already holds experiments (unless told to replace).
"""

from __future__ import annotations

from typing import Any

import asyncpg

from projector import versions
from projector.logread import end_offsets
from projector.ops import DERIVED_ROOT_TAG
from projector.store import quote_schema
from services.config import Settings
from services.migrations import load, migrate

__all__ = ["RestoreError", "restore_registry"]


class RestoreError(RuntimeError):
    """The registry cannot be restored now; the message says why."""


_COUNT_EXPERIMENTS = "SELECT count(*) FROM {reg}.experiments"
_EMPTY = """
TRUNCATE {reg}.experiments, {reg}.experiment_tags, {reg}.runs, {reg}.params, {reg}.run_tags
"""
_EXPERIMENTS = """
INSERT INTO {reg}.experiments (experiment_id, name, lifecycle_stage, artifact_location)
SELECT experiment_id, name, lifecycle_stage, artifact_location FROM {read}.experiments
"""
_EXPERIMENT_TAGS = """
INSERT INTO {reg}.experiment_tags (experiment_id, key)
SELECT experiment_id, key FROM {read}.experiment_tags
"""
_RUNS = """
INSERT INTO {reg}.runs (run_id, experiment_id, lifecycle_stage, run_name, user_id, status,
                        start_time, end_time, artifact_uri)
SELECT run_id, experiment_id, lifecycle_stage, run_name, user_id, status,
       start_time, end_time, artifact_uri
FROM {read}.runs
"""
_PARAMS = """
INSERT INTO {reg}.params (run_id, key, value) SELECT run_id, key, value FROM {read}.params
"""
# The projector derives the root tag from the lineage; no client reserved that key.
_RUN_TAGS = """
INSERT INTO {reg}.run_tags (run_id, key) SELECT run_id, key FROM {read}.tags WHERE key <> $1
"""
# New experiments continue after the largest id (the sequence's next value).
_SEQUENCE = """
SELECT setval($1::regclass, GREATEST(max(experiment_id), 0) + 1, false) FROM {reg}.experiments
"""


async def restore_registry(settings: Settings, *, replace: bool = False) -> dict[str, Any]:
    """Fill the registry schema from the live read models; return what was restored."""
    registry, read = settings.registry_schema, settings.read_schema
    reg, rd = quote_schema(registry), quote_schema(read)
    ends = await end_offsets(settings.kafka_bootstrap, settings.topic)
    conn = await asyncpg.connect(settings.database_url, timeout=30)
    try:
        folded = await versions.stored_offsets(conn, read, settings.topic)
        behind = sum(max(0, end - folded.get(p, 0)) for p, end in ends.items())
        if behind:
            raise RestoreError(
                f"the projector is {behind} records behind the log: let it catch up first "
                "(`runstream status` shows the lag)"
            )
        await migrate(conn, registry, load("ingest"))
        async with conn.transaction():
            held = await conn.fetchval(_COUNT_EXPERIMENTS.format(reg=reg))
            if held and not replace:
                raise RestoreError(
                    f"{registry} already holds {held} experiments; --replace discards them"
                )
            await conn.execute(_EMPTY.format(reg=reg))
            counts = {}
            for table, sql in (
                ("experiments", _EXPERIMENTS),
                ("experiment_tags", _EXPERIMENT_TAGS),
                ("runs", _RUNS),
                ("params", _PARAMS),
            ):
                status = await conn.execute(sql.format(reg=reg, read=rd))
                counts[table] = int(status.split()[-1])
            status = await conn.execute(_RUN_TAGS.format(reg=reg, read=rd), DERIVED_ROOT_TAG)
            counts["run_tags"] = int(status.split()[-1])
            await conn.execute(_SEQUENCE.format(reg=reg), f"{reg}.experiment_ids")
    finally:
        await conn.close()
    return {"registry": registry, "from": read, "offsets": folded, "restored": counts}
