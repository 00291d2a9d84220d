"""A canonical snapshot of the read models, and its hash: the oracle of fold-equivalence.

``Snapshot`` maps each read-model table to its rows, normalised (NaN, +-inf and -0.0 spelled
out, jsonb re-serialised canonically) and sorted, so that the in-memory reference
(``MemoryStore.snapshot``) and PostgreSQL (``read_snapshot``) give equal values after folding
the same log. ``projector_offsets`` and ``schema_migrations`` are bookkeeping, not state, and are
left out.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import asyncpg

from projector.ops import DatasetRow

__all__ = [
    "TABLES",
    "Snapshot",
    "canonical_json_tags",
    "dataset_input_row",
    "make_snapshot",
    "read_snapshot",
    "read_snapshot_at",
    "read_state_hash",
    "state_hash",
]

Row = tuple[Any, ...]

_OFFSETS = "SELECT partition, next_offset FROM projector_offsets WHERE topic = $1"
Snapshot = dict[str, list[Row]]

# Table -> the columns the hash covers, in order. Names here are constants, never input.
TABLES: dict[str, tuple[str, ...]] = {
    "experiments": (
        "experiment_id",
        "name",
        "artifact_location",
        "lifecycle_stage",
        "creation_time",
        "last_update_time",
    ),
    "experiment_tags": ("experiment_id", "key", "value"),
    "runs": (
        "run_id",
        "experiment_id",
        "run_name",
        "user_id",
        "status",
        "start_time",
        "end_time",
        "artifact_uri",
        "lifecycle_stage",
        "parent_run_id",
        "root_run_id",
        "depth",
    ),
    "params": ("run_id", "key", "value"),
    "tags": ("run_id", "key", "value"),
    "latest_metrics": ("run_id", "key", "value", "ts", "step"),
    "metrics": (
        "run_id",
        "key",
        "step",
        "ts",
        "value",
        "model_id",
        "dataset_name",
        "dataset_digest",
    ),
    "run_dataset_inputs": (
        "run_id",
        "name",
        "digest",
        "source_type",
        "source",
        "schema",
        "profile",
        "context",
        "tags",
    ),
    "run_model_inputs": ("run_id", "model_id"),
    "projector_rejections": ("reason", "run_id", "key", "value", "event_id", "at"),
}

_JSON_COLUMNS = {("run_dataset_inputs", "tags")}


def _normal(value: Any) -> Any:
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        if value == 0.0:
            return "0.0"  # -0.0 and 0.0 are one value to PostgreSQL's unique indexes
        return repr(value)
    return value


def canonical_json_tags(tags: Iterable[tuple[str, str]]) -> str:
    """Return dataset-input tags as the canonical JSON text the snapshot compares."""
    return json.dumps(
        [{"key": k, "value": v} for k, v in tags], sort_keys=True, separators=(",", ":")
    )


def dataset_input_row(d: DatasetRow) -> Row:
    """Return a dataset input as a ``run_dataset_inputs`` row (the columns of ``TABLES``)."""
    return (
        d.run_id,
        d.name,
        d.digest,
        d.source_type,
        d.source,
        d.schema,
        d.profile,
        d.context,
        canonical_json_tags(d.tags),
    )


def _rows(table: str, rows: Iterable[Sequence[Any]]) -> list[Row]:
    normal = [tuple(_normal(v) for v in row) for row in rows]
    keyed = sorted((json.dumps(row, ensure_ascii=False), row) for row in normal)
    return [row for _, row in keyed]


def make_snapshot(tables: Mapping[str, Iterable[Sequence[Any]]]) -> Snapshot:
    """Return the canonical snapshot of raw rows given per table (columns as in ``TABLES``)."""
    missing = set(TABLES) - set(tables)
    if missing:
        raise ValueError(f"snapshot lacks tables {sorted(missing)}")
    return {name: _rows(name, tables[name]) for name in TABLES}


def state_hash(snapshot: Snapshot) -> str:
    """Return the SHA-256 of a canonical snapshot."""
    digest = hashlib.sha256()
    for name in TABLES:
        digest.update(f"{name}\n".encode())
        for row in snapshot[name]:
            digest.update(json.dumps(row, ensure_ascii=False).encode())
            digest.update(b"\n")
    return digest.hexdigest()


async def read_snapshot(conn: asyncpg.Connection, schema: str | None = None) -> Snapshot:
    """Read the canonical snapshot from PostgreSQL, in one repeatable-read transaction.

    Tables are resolved through the connection's search_path unless ``schema`` is given.
    """
    snapshot, _ = await _read(conn, schema, None)
    return snapshot


async def read_snapshot_at(
    conn: asyncpg.Connection, schema: str, topic: str
) -> tuple[Snapshot, dict[int, int]]:
    """Read the snapshot and the offsets it stands at (partition -> next), consistently."""
    return await _read(conn, schema, topic)


async def _read(
    conn: asyncpg.Connection, schema: str | None, topic: str | None
) -> tuple[Snapshot, dict[int, int]]:
    raw: dict[str, list[Row]] = {}
    offsets: dict[int, int] = {}
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        if schema is not None:
            await conn.execute("SELECT set_config('search_path', $1, true)", _quoted(schema))
        if topic is not None:
            rows = await conn.fetch(_OFFSETS, topic)
            offsets = {row["partition"]: row["next_offset"] for row in rows}
        for name, columns in TABLES.items():
            select = ", ".join(columns)
            records = await conn.fetch(f"SELECT {select} FROM {name}")
            rows = [tuple(r) for r in records]
            if name == "run_dataset_inputs":
                rows = [(*r[:-1], _json_tags(r[-1])) for r in rows]
            raw[name] = rows
    return make_snapshot(raw), offsets


async def read_state_hash(conn: asyncpg.Connection, schema: str | None = None) -> str:
    """Return the state hash of the read models in PostgreSQL."""
    return state_hash(await read_snapshot(conn, schema))


def _json_tags(text: str) -> str:
    return canonical_json_tags((t["key"], t["value"]) for t in json.loads(text))


def _quoted(schema: str) -> str:
    if not schema.replace("_", "").isalnum() or not schema.isascii():
        raise ValueError(f"invalid schema name {schema!r}")
    return f'"{schema}"'
