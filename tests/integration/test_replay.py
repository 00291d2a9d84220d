"""`runstream replay` against a real broker, database and `runstream serve` under write load.

A serve process (gateway, live projector, API) takes writes and reads from client tasks for the
whole test; the replay rebuilds the read models beside it and swaps them in. The oracle is
fold-equivalence: each version, at the offsets it stands at, equals the in-memory fold of the log.
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from processes import MLFLOW_API, isolated, ok, runstream_process
from query_harness import block_miscounts, document_mismatches
from structlog.testing import capture_logs

from ingest.errors import UnavailableError
from ingest.events import MetricLogged, RunStarted
from projector import bulk_load, versions
from projector.fold import fold
from projector.logread import end_offsets
from projector.ops import OffsetMove
from projector.snapshot import read_state_hash
from projector.store import PgStore, quote_schema
from services import verify as verify_module
from services.config import Settings
from services.replay import ReplayError, ReplayOptions, build_as_of, replay, rollback
from services.verify import verify

pytestmark = pytest.mark.integration

API = MLFLOW_API
WAIT_S = 60.0
# Small fetches, so a rebuild of a few thousand records takes many batches (and can be cut).
OPTIONS = ReplayOptions(max_records=50, verify=True)


async def until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """Wait until `await condition()` holds; fail after WAIT_S seconds."""
    try:
        async with asyncio.timeout(WAIT_S):
            while True:
                if await condition():
                    return
                await asyncio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"not within {WAIT_S} s: {what}")


@dataclass
class Served:
    """A running `runstream serve` on a test's own topic and schemas."""

    url: str
    settings: Settings
    env: dict[str, str]


@pytest.fixture
async def served(
    stack: Settings, topic: str, schema_factory: Any, tmp_path: Path
) -> AsyncIterator[Served]:
    env, settings = await isolated(stack, topic, schema_factory, tmp_path, "replay")
    live = settings.read_schema
    try:
        async with runstream_process("serve", env) as url:
            yield Served(url, settings, env)
    finally:
        conn = await asyncpg.connect(stack.database_url)
        try:
            for version in await versions.list_versions(conn, live, topic):
                if version.schema != live:
                    await conn.execute(f"DROP SCHEMA {quote_schema(version.schema)} CASCADE")
        finally:
            await conn.close()


@dataclass
class Load:
    """Writers and readers hitting the API; every answer that is not a 200 is kept."""

    url: str
    failures: list[str] = field(default_factory=list)
    writes: int = 0
    reads: int = 0
    run_ids: list[str] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def call(self, http: aiohttp.ClientSession, path: str, body: dict[str, Any]) -> Any:
        async with http.post(f"{self.url}{API}/{path}", json=body) as resp:
            if resp.status != 200:
                self.failures.append(f"{path}: {resp.status} {(await resp.text())[:200]}")
                return None
            return await resp.json()

    async def get(self, http: aiohttp.ClientSession, path: str, query: dict[str, str]) -> Any:
        async with http.get(f"{self.url}{API}/{path}", params=query) as resp:
            if resp.status != 200:
                self.failures.append(f"{path}: {resp.status} {(await resp.text())[:200]}")
                return None
            return await resp.json()

    async def writer(self, experiment_id: str, worker: int) -> None:
        async with aiohttp.ClientSession() as http:
            parent: str | None = None
            step = 0
            while not self.stop.is_set():
                tags = [{"key": "mlflow.parentRunId", "value": parent}] if parent else []
                created = await self.call(
                    http,
                    "runs/create",
                    {"experiment_id": experiment_id, "start_time": 1, "tags": tags},
                )
                if created is None:
                    continue
                run_id = created["run"]["info"]["run_id"]
                self.run_ids.append(run_id)
                parent = parent or run_id
                metrics = [
                    {"key": "loss", "value": 1.0 / (s + 1), "timestamp": 1000 + s, "step": s}
                    for s in range(step, step + 20)
                ]
                step += 20
                await self.call(
                    http,
                    "runs/log-batch",
                    {
                        "run_id": run_id,
                        "metrics": metrics,
                        "params": [{"key": "lr", "value": str(worker)}],
                        "tags": [{"key": "worker", "value": str(worker)}],
                    },
                )
                await self.call(
                    http, "runs/update", {"run_id": run_id, "status": "FINISHED", "end_time": 2}
                )
                self.writes += 3

    async def reader(self, experiment_id: str) -> None:
        async with aiohttp.ClientSession() as http:
            while not self.stop.is_set():
                await self.call(
                    http,
                    "runs/search",
                    {
                        "experiment_ids": [experiment_id],
                        "filter": "params.lr = '1' and metrics.loss < 2",
                        "order_by": ["metrics.loss"],
                        "max_results": 50,
                    },
                )
                if self.run_ids:
                    run_id = self.run_ids[-1]
                    await self.get(http, "runs/get", {"run_id": run_id})
                    await self.get(
                        http, "metrics/get-history", {"run_id": run_id, "metric_key": "loss"}
                    )
                self.reads += 1


@pytest.fixture
async def load(served: Served) -> AsyncIterator[Load]:
    """Run 3 writers and 2 readers until the test ends; they must never see an error."""
    load = Load(served.url)
    async with aiohttp.ClientSession() as http:
        made = await load.call(http, "experiments/create", {"name": f"replay-{uuid.uuid4()}"})
    experiment_id = made["experiment_id"]
    tasks = [asyncio.create_task(load.writer(experiment_id, w)) for w in range(3)]
    tasks += [asyncio.create_task(load.reader(experiment_id)) for _ in range(2)]
    try:
        yield load
    finally:
        load.stop.set()
        await asyncio.gather(*tasks)


async def logged(settings: Settings) -> int:
    return sum((await end_offsets(settings.kafka_bootstrap, settings.topic)).values())


async def stored(settings: Settings, schema: str) -> dict[int, int]:
    conn = await asyncpg.connect(settings.database_url)
    try:
        return await versions.stored_offsets(conn, schema, settings.topic)
    finally:
        await conn.close()


async def drained(settings: Settings) -> None:
    """Wait until the live projector has folded the whole log."""

    async def caught_up() -> bool:
        ends = await end_offsets(settings.kafka_bootstrap, settings.topic)
        mine = await stored(settings, settings.read_schema)
        return all(mine.get(p, 0) >= end for p, end in ends.items())

    await until(caught_up, "the live projector folds the whole log")


async def state_hash_of(settings: Settings, schema: str) -> tuple[str, int]:
    """Return a schema's state hash and its oid (the same oid means the same schema)."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        oid = await conn.fetchval("SELECT to_regnamespace($1)::oid", quote_schema(schema))
        return await read_state_hash(conn, schema), oid
    finally:
        await conn.close()


async def test_replay_swaps_under_write_load_without_a_failed_request(
    served: Served, load: Load
) -> None:
    settings = served.settings
    await until(lambda: _at_least(settings, 300), "300 records in the log before the replay")
    reads_before = load.reads

    outcome = await replay(settings, OPTIONS)  # verify=True: hashes equal inside the swap

    reads_during = load.reads - reads_before
    after_swap = await logged(settings)
    await until(lambda: _at_least(settings, after_swap + 100), "writes go on after the swap")
    load.stop.set()
    assert load.failures == []
    assert reads_during > 0, "no read overlapped the replay"
    assert outcome["records_folded"] >= 300
    assert sum(outcome["offsets"].values()) >= 300

    # The promoted version keeps being projected, and equals the fold of the whole log.
    await drained(settings)
    live = await verify(settings, settings.read_schema)
    assert live["equal"], live["differences"]
    assert sum(live["offsets"].values()) > sum(outcome["offsets"].values())
    # The replaced version was frozen at the swap's offsets, equal to the log's fold there.
    prev = versions.prev_schema(settings.read_schema)
    kept = await verify(settings, prev)
    assert kept["equal"], kept["differences"]
    assert kept["offsets"] == outcome["offsets"]
    # The indexes the rebuild deferred were built again before it went live.
    assert await index_names(settings, settings.read_schema) == await index_names(settings, prev)
    # Both versions' run documents are what their rows make (the rebuild kept them as it went).
    for schema in (settings.read_schema, prev):
        assert await documents_of(settings, schema) == []


async def documents_of(settings: Settings, schema: str) -> list[Any]:
    """Return the runs of a version whose documents differ from their rows."""
    conn = await asyncpg.connect(settings.database_url, server_settings={"search_path": schema})
    try:
        return await document_mismatches(conn)
    finally:
        await conn.close()


async def index_names(settings: Settings, schema: str) -> set[str]:
    conn = await asyncpg.connect(settings.database_url)
    try:
        rows = await conn.fetch("SELECT indexname FROM pg_indexes WHERE schemaname = $1", schema)
        return {row["indexname"] for row in rows}
    finally:
        await conn.close()


async def _at_least(settings: Settings, records: int) -> bool:
    return await logged(settings) >= records


async def test_rollback_brings_back_the_replaced_version_intact(served: Served, load: Load) -> None:
    settings = served.settings
    live, prev = settings.read_schema, versions.prev_schema(settings.read_schema)
    await until(lambda: _at_least(settings, 200), "200 records in the log")
    load.stop.set()
    await drained(settings)
    before_hash, before_oid = await state_hash_of(settings, live)

    await replay(settings, OPTIONS)
    kept_hash, kept_oid = await state_hash_of(settings, prev)
    assert (kept_hash, kept_oid) == (before_hash, before_oid)  # kept untouched, as it was

    await rollback(settings, OPTIONS)
    back_hash, back_oid = await state_hash_of(settings, live)
    assert (back_hash, back_oid) == (before_hash, before_oid)
    assert (await verify(settings, live))["equal"]
    # The rebuilt version is kept in turn: a second rollback would bring it back.
    assert (await verify(settings, prev, against=live))["equal"]


async def test_rollback_without_a_previous_version_is_refused(served: Served) -> None:
    with pytest.raises(ReplayError, match=r"no .*__prev to roll back to"):
        await rollback(served.settings, OPTIONS)


async def test_replay_verify_refuses_a_version_whose_derived_data_disagree(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = served.settings
    async with aiohttp.ClientSession() as http:
        await ok(http, served.url, "experiments/create", {"name": f"derived-{uuid.uuid4()}"})
    await drained(settings)
    live_before = await state_hash_of(settings, settings.read_schema)
    checked: list[str] = []
    real = verify_module.derived_mismatches

    async def stale_in_the_rebuild(conn: asyncpg.Connection, schema: str) -> dict[str, list[str]]:
        checked.append(schema)
        if schema == settings.read_schema:
            return await real(conn, schema)
        return {"run documents": ["('a-run', 'stale')"]}  # as if the rebuild left one stale

    monkeypatch.setattr(verify_module, "derived_mismatches", stale_in_the_rebuild)
    with pytest.raises(ReplayError, match="derived data differ from its rows; not swapped"):
        await replay(settings, OPTIONS)
    # Only the rebuilt version was checked, and the live one was left in place.
    assert len(checked) == 1
    assert checked[0] != settings.read_schema
    assert await state_hash_of(settings, settings.read_schema) == live_before


async def test_an_interrupted_replay_resumes_where_it_stopped(served: Served, load: Load) -> None:
    settings = served.settings
    await until(lambda: _at_least(settings, 1500), "1500 records in the log")
    load.stop.set()
    await drained(settings)
    total = await logged(settings)
    nxt = versions.next_schema(settings.read_schema)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        "replay",
        "--max-records",
        "5",
        env={**os.environ, **served.env},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:

        async def part_folded() -> bool:
            return sum((await stored(settings, nxt)).values()) > 0

        await until(part_folded, "the replay folds its first batches")
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
    cut = sum((await stored(settings, nxt)).values())
    assert 0 < cut < total, "the replay was not cut mid-way"

    outcome = await replay(settings, OPTIONS)

    assert outcome["resumed_at"] >= cut
    assert outcome["records_folded"] == total - outcome["resumed_at"]
    assert (await verify(settings, settings.read_schema))["equal"]


async def test_as_of_builds_the_state_of_a_moment_and_the_api_reads_it(served: Served) -> None:
    settings = served.settings
    async with aiohttp.ClientSession() as http:
        post = functools.partial(ok, http, served.url)
        exp = (await post("experiments/create", {"name": f"asof-{uuid.uuid4()}"}))["experiment_id"]
        early = (await post("runs/create", {"experiment_id": exp}))["run"]["info"]["run_id"]
        await post("runs/set-tag", {"run_id": early, "key": "phase", "value": "early"})
        moment = int(time.time() * 1000)
        await until(lambda: _later_than(moment), "the clock passes the moment")
        late = (await post("runs/create", {"experiment_id": exp}))["run"]["info"]["run_id"]
        await post("runs/set-tag", {"run_id": early, "key": "phase", "value": "late"})

        built = await build_as_of(settings, moment, OPTIONS)
        assert built["schema"] == versions.as_of_schema(settings.read_schema, moment)

        async def search(headers: dict[str, str]) -> dict[str, str]:
            async with http.post(
                f"{served.url}{API}/runs/search",
                json={"experiment_ids": [exp]},
                headers=headers,
            ) as resp:
                assert resp.status == 200, await resp.text()
                runs = (await resp.json())["runs"]
            phases = {}
            for run in runs:
                tags = {t["key"]: t["value"] for t in run["data"].get("tags", [])}
                phases[run["info"]["run_id"]] = tags.get("phase", "")
            return phases

        assert await search({"X-Runstream-As-Of": str(moment)}) == {early: "early"}
        assert await search({}) == {early: "late", late: ""}
        async with http.get(
            f"{served.url}{API}/runs/get", params={"run_id": late, "as_of": str(moment)}
        ) as resp:
            assert resp.status == 404
            assert (await resp.json())["error_code"] == "RESOURCE_DOES_NOT_EXIST"
        async with http.post(
            f"{served.url}{API}/runs/search",
            json={"experiment_ids": [exp]},
            headers={"X-Runstream-As-Of": str(moment - 1)},
        ) as resp:
            assert resp.status == 404
            body = await resp.json()
            assert body["error_code"] == "RESOURCE_DOES_NOT_EXIST"
            assert "runstream replay --as-of" in body["message"]
    as_of = await verify(settings, built["schema"])
    assert as_of["equal"], as_of["differences"]
    assert as_of["offsets"] == {p: o for p, o in built["offsets"].items() if o > 0}


async def _later_than(moment_ms: int) -> bool:
    return time.time() * 1000 > moment_ms + 1


async def test_verify_names_the_rows_that_differ(served: Served) -> None:
    settings = served.settings
    async with aiohttp.ClientSession() as http:
        exp_body = {"name": f"verify-{uuid.uuid4()}"}
        async with http.post(f"{served.url}{API}/experiments/create", json=exp_body) as resp:
            exp = (await resp.json())["experiment_id"]
        async with http.post(f"{served.url}{API}/runs/create", json={"experiment_id": exp}) as r:
            run_id = (await r.json())["run"]["info"]["run_id"]
        body = {"run_id": run_id, "key": "lr", "value": "0.1"}
        async with http.post(f"{served.url}{API}/runs/log-parameter", json=body) as resp:
            assert resp.status == 200
        body = {"run_id": run_id, "key": "loss", "value": 0.5, "timestamp": 1, "step": 3}
        async with http.post(f"{served.url}{API}/runs/log-metric", json=body) as resp:
            assert resp.status == 200
    await drained(settings)
    before = await verify(settings, settings.read_schema)
    assert (before["equal"], before["derived_agree"], before["derived_differences"]) == (
        True,
        True,
        {},
    )

    conn = await asyncpg.connect(
        settings.database_url, server_settings={"search_path": settings.read_schema}
    )
    try:
        await conn.execute("UPDATE params SET value = 'tampered' WHERE run_id = $1", run_id)
        # derived data changed behind its triggers' back (the documents last: a write to tags
        # rebuilds them), one document no longer even JSON
        await conn.execute("UPDATE tags SET lifecycle_stage = 'deleted' WHERE run_id = $1", run_id)
        await conn.execute("UPDATE runs SET data_doc = '\"tags\":[' WHERE run_id = $1", run_id)
        await conn.execute("UPDATE metric_blocks SET points = 2 WHERE run_id = $1", run_id)
    finally:
        await conn.close()
    after = await verify(settings, settings.read_schema)
    assert not after["derived_agree"]
    differing = after["derived_differences"][settings.read_schema]
    assert set(differing) == {
        "run documents",
        "tags copies of their run",
        "metric blocks and extents",
    }
    assert all(run_id in line for lines in differing.values() for line in lines)
    # Through the command line, as an operator runs it: exit 1 and the differing rows.
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        "verify",
        env={**os.environ, **served.env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), WAIT_S)
    assert proc.returncode == 1
    text = out.decode()
    assert '"equal": false' in text
    assert '"derived_agree": false' in text
    assert "params: 1 rows only in" in text
    assert "tampered" in text
    assert "0.1" in text


async def test_a_replay_of_retried_and_out_of_order_points_keeps_each_point_once(
    served: Served,
) -> None:
    settings = served.settings
    async with aiohttp.ClientSession() as http:
        post = functools.partial(ok, http, served.url)
        exp = (await post("experiments/create", {"name": f"dups-{uuid.uuid4()}"}))["experiment_id"]
        run_id = (await post("runs/create", {"experiment_id": exp}))["run"]["info"]["run_id"]
        point = {"key": "loss", "value": 0.5, "timestamp": 10, "step": 3}
        earlier = {"key": "loss", "value": 0.7, "timestamp": 5, "step": 1}
        # A retried request, then a point below the latest: folded in a later batch than their
        # first copy, each must find it stored and not count it again.
        for metrics in ([point], [point], [earlier], [point, earlier]):
            await post("runs/log-batch", {"run_id": run_id, "metrics": metrics})
    await drained(settings)
    conn = await asyncpg.connect(
        settings.database_url, server_settings={"search_path": settings.read_schema}
    )
    try:  # the live projector's copies and retried inserts were each counted once
        assert await block_miscounts(conn) == []
    finally:
        await conn.close()

    await replay(settings, ReplayOptions(max_records=1, verify=True))

    conn = await asyncpg.connect(
        settings.database_url, server_settings={"search_path": settings.read_schema}
    )
    try:
        points = await conn.fetch("SELECT step, value FROM metrics WHERE run_id = $1", run_id)
        key = await conn.fetchval(
            "SELECT count(*) FROM pg_constraint WHERE conrelid = 'metrics'::regclass "
            "AND contype = 'p'"
        )
        miscounted = await block_miscounts(conn)
    finally:
        await conn.close()
    assert sorted((p["step"], p["value"]) for p in points) == [(1, 0.7), (3, 0.5)]
    assert key == 1
    # The sampled history's block counts were counted again from the deduplicated points
    assert miscounted == []


async def test_duplicates_let_in_without_the_points_key_go_when_it_is_added_back(
    stack: Settings, schema_factory: Any
) -> None:
    schema = await schema_factory("projector")
    conn = await asyncpg.connect(stack.database_url)
    store = await PgStore.open(stack.database_url, schema)
    try:
        before = await index_names(stack, schema)
        described = await bulk_load.defer_indexes(conn, schema, {"role": "next"})
        assert await index_names(stack, schema) < before
        # Recorded with the drops, in their transaction: a crash cannot forget them.
        assert await versions.description(conn, schema) == described
        deferred = described["deferred"]
        assert deferred["metrics_key"] == {
            "name": "metrics_pkey",
            "columns": "(run_id, key, step, ts, value)",
        }
        await _fold_a_point_twice(store)
        count = f"SELECT count(*) FROM {quote_schema(schema)}.metrics"
        assert await conn.fetchval(count) == 2

        builders = await asyncpg.create_pool(stack.database_url, min_size=2, max_size=2)
        try:
            with capture_logs() as logs:
                await bulk_load.build_indexes(builders, schema, deferred)
        finally:
            await builders.close()

        assert await conn.fetchval(count) == 1
        assert [e["status"] for e in logs if e["event"] == "duplicate_points_deleted"] == [
            "DELETE 1"
        ]
        assert await index_names(stack, schema) == before
        assert await bulk_load.has_metrics_key(conn, schema)
        # Counted once, from the points left; the counting trigger is on again.
        assert deferred["metric_blocks"] is True
        assert await bulk_load.counts_metric_blocks(conn, schema)
        await conn.execute(f"SET search_path TO {quote_schema(schema)}")
        assert await block_miscounts(conn) == []
        assert await conn.fetchval("SELECT points FROM metric_levels WHERE level = 6") == 1

        # Interrupted after (part of) the build, a resumed replay builds again: nothing fails.
        await conn.execute(f"DROP INDEX {quote_schema(schema)}.metrics_history_order")
        builders = await asyncpg.create_pool(stack.database_url, min_size=2, max_size=2)
        try:
            await bulk_load.build_indexes(builders, schema, deferred)
        finally:
            await builders.close()
        assert await index_names(stack, schema) == before
    finally:
        await store.close()
        await conn.close()


async def _fold_a_point_twice(store: PgStore) -> None:
    """Fold a run and the same point twice, in two batches: the second copy is not above the
    stored latest, so without the points' key it is let in as a duplicate."""
    run_id = "r" * 32
    started = RunStarted(
        event_id="e0",
        at=1,
        run_id=run_id,
        experiment_id="0",
        run_name="r",
        user_id="u",
        start_time=1,
        artifact_uri="file:///a",
    )

    def point(n: int) -> MetricLogged:
        return MetricLogged(
            event_id=f"e{n}", at=1, run_id=run_id, key="loss", value=0.5, timestamp=10, step=3
        )

    await store.apply(fold([started, point(1)], set()), [OffsetMove("t", 0, None, 2)])
    await store.apply(fold([point(2)], set()), [OffsetMove("t", 0, 2, 3)])


async def test_a_rebuild_deferred_before_block_counts_existed_counts_them_once_resumed(
    stack: Settings, schema_factory: Any
) -> None:
    schema = await schema_factory("projector")
    quoted = quote_schema(schema)
    conn = await asyncpg.connect(stack.database_url)
    store = await PgStore.open(stack.database_url, schema)
    try:
        described = await bulk_load.defer_indexes(conn, schema, {"role": "next"})
        # As a release without block counts deferred it, then migration 0008 ran on resume:
        # nothing recorded about the counts, and their trigger on, counting duplicates too.
        older = {k: v for k, v in described["deferred"].items() if k != "metric_blocks"}
        await versions.describe(conn, schema, {**described, "deferred": older})
        await conn.execute(f"ALTER TABLE {quoted}.metrics ENABLE TRIGGER metric_blocks_count")
        await _fold_a_point_twice(store)

        info = await bulk_load.defer_block_counts(conn, schema)
        assert info["deferred"]["metric_blocks"] is True
        assert not await bulk_load.counts_metric_blocks(conn, schema)
        builders = await asyncpg.create_pool(stack.database_url, min_size=2, max_size=2)
        try:
            await bulk_load.build_indexes(builders, schema, info["deferred"])
        finally:
            await builders.close()

        assert await bulk_load.counts_metric_blocks(conn, schema)
        await conn.execute(f"SET search_path TO {quoted}")
        assert await block_miscounts(conn) == []
        assert await conn.fetchval("SELECT points FROM metric_levels WHERE level = 6") == 1
    finally:
        await store.close()
        await conn.close()


async def test_a_read_in_flight_finishes_on_the_old_version_and_the_swap_waits_for_it(
    stack: Settings, schema_factory: Any
) -> None:
    live, candidate = await schema_factory("projector"), await schema_factory("projector")
    kept = versions.prev_schema(live)
    admin = await asyncpg.connect(stack.database_url)
    reader = await asyncpg.connect(stack.database_url, server_settings={"search_path": live})
    swapper = await asyncpg.connect(stack.database_url)
    try:
        for schema, name in ((live, "old"), (candidate, "new")):
            await admin.execute(
                f"INSERT INTO {quote_schema(schema)}.experiments (experiment_id, name, "
                "artifact_location, lifecycle_stage, creation_time, last_update_time) "
                "VALUES (1, $1, 'a', 'active', 0, 0)",
                name,
            )
        read = reader.transaction(isolation="repeatable_read", readonly=True)
        await read.start()
        await reader.execute("LOCK TABLE runs IN ACCESS SHARE MODE")  # what the API does first
        assert await reader.fetchval("SELECT name FROM experiments") == "old"

        async def swap() -> None:
            async with versions.frozen_live(swapper, live, "t", lock_timeout_s=30):
                await versions.promote(swapper, live, candidate, kept)

        swapping = asyncio.create_task(swap())

        async def swap_waits() -> bool:
            return bool(
                await admin.fetchval(
                    "SELECT count(*) FROM pg_locks WHERE pid = $1 AND NOT granted",
                    swapper.get_server_pid(),
                )
            )

        await until(swap_waits, "the swap waits for the read in flight")
        # Tables the read had not touched yet still resolve to the version it started on.
        assert await reader.fetchval("SELECT count(*) FROM params") == 0
        assert await reader.fetchval("SELECT name FROM experiments") == "old"
        assert not swapping.done()
        await read.commit()
        await asyncio.wait_for(swapping, WAIT_S)
        assert await reader.fetchval("SELECT name FROM experiments") == "new"
    finally:
        await admin.execute(f"DROP SCHEMA IF EXISTS {quote_schema(kept)} CASCADE")
        for conn in (admin, reader, swapper):
            await conn.close()


async def test_a_log_whose_first_records_were_deleted_is_not_rebuilt_or_verified(
    served: Served,
) -> None:
    settings = served.settings
    async with aiohttp.ClientSession() as http:
        await ok(http, served.url, "experiments/create", {"name": f"cut-{uuid.uuid4()}"})
    await drained(settings)
    ends = await end_offsets(settings.kafka_bootstrap, settings.topic)
    partition = next(p for p, end in ends.items() if end > 0)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.delete_records(
            {TopicPartition(settings.topic, partition): RecordsToDelete(before_offset=1)}
        )
    finally:
        await admin.close()

    with pytest.raises(ReplayError, match="no longer starts at offset 0"):
        await replay(settings, OPTIONS)
    with pytest.raises(ReplayError, match="no longer starts at offset 0"):
        await build_as_of(settings, int(time.time() * 1000) - 1, OPTIONS)
    with pytest.raises(UnavailableError, match="no longer starts at offset 0"):
        await verify(settings, settings.read_schema)
