"""`runstream verify`: compare the read models with the in-memory fold of the log, or two versions.

The oracle of fold-equivalence, for operators: the schema and the offsets it stands at are read
in one snapshot, the log is folded up to exactly those offsets by the reference store, and the
canonical state hashes are compared; when they differ, the rows only one side has are listed.
The data each schema derives from its own rows (`projector.derived`: the run documents, the
run columns params, tags and latest values copy, the metric blocks) is recomputed from those
rows and compared too, and what differs is listed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from ingest.topics import MAX_RECORD_BYTES
from projector import versions
from projector.derived import derived_mismatches
from projector.logread import fold_range
from projector.snapshot import Snapshot, read_snapshot_at, state_hash
from services.config import Settings
from services.progress import Progress

__all__ = ["VerifyError", "diff_snapshots", "verify"]


class VerifyError(RuntimeError):
    """The comparison cannot be made; the message says why."""


def diff_snapshots(
    left: Snapshot, right: Snapshot, lname: str, rname: str, limit: int = 20
) -> list[str]:
    """Return up to ``limit`` lines saying which rows one side has and the other lacks."""
    lines: list[str] = []
    for table in left:
        only_left = sorted(set(left[table]) - set(right.get(table, [])), key=repr)
        only_right = sorted(set(right.get(table, [])) - set(left[table]), key=repr)
        if not only_left and not only_right:
            continue
        lines.append(
            f"{table}: {len(only_left)} rows only in {lname}, {len(only_right)} only in {rname}"
        )
        lines += [f"  only in {lname}: {row!r}" for row in only_left[:limit]]
        lines += [f"  only in {rname}: {row!r}" for row in only_right[:limit]]
    return lines if len(lines) <= limit else [*lines[:limit], "  ..."]


async def verify(
    settings: Settings,
    schema: str,
    against: str | None = None,
    *,
    derived_of: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Compare a schema's state with the in-memory fold of the log up to its offsets (or with
    another schema at the same offsets), and the derived data of `derived_of` (default: both)
    with its rows; return the verdicts, hashes and differences."""
    conn = await asyncpg.connect(settings.database_url, timeout=30)
    try:
        for name in (schema, against):
            if name is not None and not await versions.exists(conn, name):
                raise VerifyError(f"schema {name} does not exist")
        left, offsets = await read_snapshot_at(conn, schema, settings.topic)
        if against is not None:
            right, other = await read_snapshot_at(conn, against, settings.topic)
            rname = against
            if other != offsets:
                raise VerifyError(
                    f"{schema} and {against} stand at different offsets ({offsets} and "
                    f"{other}): compare them while their projectors are still, e.g. right "
                    "after a swap, or verify each against the log"
                )
        # after both snapshots: taking them far apart would let a live version move between
        derived = {
            name: await derived_mismatches(conn, name)
            for name in (derived_of if derived_of is not None else (schema, against))
            if name is not None
        }
    finally:
        await conn.close()
    if against is None:
        progress = Progress("verify")
        memory = await fold_range(
            settings.kafka_bootstrap,
            settings.topic,
            offsets,
            max_record_bytes=MAX_RECORD_BYTES,
            on_progress=progress.update,
        )
        progress.finish()
        right, rname = memory.snapshot_now(), "the log"
    left_hash, right_hash = state_hash(left), state_hash(right)
    equal = left_hash == right_hash
    return {
        "equal": equal,
        "derived_agree": not any(derived.values()),
        "schema": schema,
        "against": rname,
        "offsets": offsets,
        "hash": left_hash,
        "against_hash": right_hash,
        "differences": [] if equal else diff_snapshots(left, right, schema, rname),
        "derived_differences": {name: found for name, found in derived.items() if found},
    }
