"""Time travel: resolve a request's as-of moment to the frozen schema `runstream replay` built.

`runstream replay --as-of TIME` folds the log up to a moment into ``<live>__asof_<epoch ms>``
and marks it complete in the schema's comment (``projector/versions.py`` owns that naming). A
read that names the same moment (header ``X-Runstream-As-Of`` or field ``as_of``: ISO 8601, UTC
unless it says otherwise, or epoch milliseconds) runs against that schema, read-only, without
waiting on the barrier: a frozen version has nothing to wait for.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import asyncpg

from ingest.errors import MlflowError, does_not_exist, invalid_parameter

__all__ = ["AS_OF_HEADER", "AsOfViews"]

AS_OF_HEADER = "X-Runstream-As-Of"
_INFIX = "__asof_"

_DESCRIBED = "SELECT obj_description(to_regnamespace($1), 'pg_namespace')"


def moment_ms(text: str) -> int:
    """Return epoch milliseconds from ISO 8601 or a number; 400 for anything else."""
    text = text.strip()
    if text.isascii() and text.isdecimal():
        # Ten digits or fewer is epoch seconds (or a date) misread as milliseconds: 1970.
        if 11 <= len(text) <= 15:
            return int(text)
        raise _invalid(text)
    try:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return int(moment.timestamp() * 1000)
    except (ValueError, OverflowError):
        raise _invalid(text) from None


def _invalid(text: str) -> MlflowError:
    return invalid_parameter(
        f"Invalid as_of {text[:100]!r}: use ISO 8601 (e.g. 2026-11-17T12:00:00Z) or epoch "
        "milliseconds (13 digits)."
    )


class AsOfViews:
    """The as-of versions of one live schema."""

    def __init__(self, live: str) -> None:
        self._live = live

    async def resolve(self, pool: asyncpg.Pool, text: str) -> str:
        """Return the schema holding the state as of ``text``; 404 if it was not built.

        Asked each time (one catalog read): a version can be dropped or rebuilt meanwhile.
        """
        ms = moment_ms(text)
        schema = f"{self._live}{_INFIX}{ms}"
        if len(schema.encode()) <= 63:
            comment = await pool.fetchval(_DESCRIBED, f'"{schema}"')
            if comment and _complete(comment):
                return schema
        raise _not_built(text, ms)


def _complete(comment: str) -> bool:
    try:
        info = json.loads(comment)
    except json.JSONDecodeError:
        return False
    return isinstance(info, dict) and info.get("role") == "as_of" and info.get("complete") is True


def _not_built(text: str, ms: int) -> MlflowError:
    return does_not_exist(
        f"No state as of {text[:100]!r} ({ms} ms) has been built: run "
        f"`runstream replay --as-of {ms}` first."
    )
