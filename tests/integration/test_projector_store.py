"""The PostgreSQL store: the shared store contract, and SQL lineage equal to the pure rule for
any graph, any arrival order, any batch split, and two consumers writing at once."""

from __future__ import annotations

import asyncio
import itertools
import time
import zlib
from collections.abc import AsyncIterator

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from query_harness import document_mismatches
from structlog.testing import capture_logs
from unit.test_fold_contract import Log, StoreContract

from ingest.events import Event
from projector import store_values
from projector.derived import derived_mismatches
from projector.errors import StoreUnavailableError
from projector.fold import fold
from projector.lineage import lineage
from projector.memory import MemoryStore
from projector.ops import OffsetMove
from projector.store import PgStore, quote_schema
from projector.synthetic import mixed_log
from services.config import Settings

pytestmark = pytest.mark.integration

_TABLES = (
    "experiments",
    "experiment_tags",
    "runs",
    "params",
    "tags",
    "latest_metrics",
    "metrics",
    "run_dataset_inputs",
    "run_model_inputs",
    "projector_rejections",
    "projector_offsets",
)


class TestPgStoreContract(StoreContract):
    """The contract against PostgreSQL; after each rule, every run's documents (migration 0010)
    still equal what its params, tags and inputs make, by the tests' own oracle and by the
    check `runstream verify` makes (which must then find nothing). Each rule runs twice: with
    metric points stored as a batch of a few is, and as a bigger batch is (COPY, its checks and
    its fallback; the rules' batches are small, so the threshold is lowered to none)."""

    @pytest.fixture(params=["few points", "many points"])
    async def store(
        self,
        stack: Settings,
        schema_factory: object,
        request: pytest.FixtureRequest,
        monkeypatch: pytest.MonkeyPatch,
    ) -> AsyncIterator[PgStore]:
        if request.param == "many points":
            monkeypatch.setattr(store_values, "FEW_METRICS", 0)
        schema = await schema_factory("projector")  # type: ignore[operator]
        async with await PgStore.open(stack.database_url, schema) as store:
            yield store
            async with store.pool.acquire() as conn:
                await conn.execute(f"SET search_path TO {quote_schema(schema)}")
                assert await document_mismatches(conn) == []
                await conn.execute("RESET search_path")
                assert await derived_mismatches(conn, schema) == {}


@pytest.fixture
async def pg_store(stack: Settings, schema_factory: object) -> AsyncIterator[PgStore]:
    schema = await schema_factory("projector")  # type: ignore[operator]
    async with await PgStore.open(stack.database_url, schema, max_size=4) as store:
        yield store


async def _reset(store: PgStore) -> None:
    tables = ", ".join(f'"{store.schema}".{name}' for name in _TABLES)
    async with store.pool.acquire() as conn:
        await conn.execute(f"TRUNCATE {tables}")


async def _lineage_rows(store: PgStore) -> dict[str, tuple[str | None, str, int]]:
    snap = await store.snapshot()
    return {r[0]: (r[9], r[10], r[11]) for r in snap["runs"]}


# A graph over a few runs: each run's parent link at start, and later re-links (None: unlink).
RUNS = [f"r{i}" for i in range(6)]
links = st.one_of(st.none(), st.sampled_from([*RUNS, "gone"]))
graphs = st.fixed_dictionaries({run: st.tuples(links, st.lists(links, max_size=2)) for run in RUNS})


def _per_run_events(
    log: Log, graph: dict[str, tuple[str | None, list[str | None]]], present: list[str]
) -> dict[str, list[Event]]:
    out: dict[str, list[Event]] = {}
    for run in present:
        first, relinks = graph[run]
        events: list[Event] = [log.start(run, parent=first)]
        for link in relinks:
            events.append(
                log.tag(run, "mlflow.parentRunId", link)
                if link
                else log.untag(run, "mlflow.parentRunId")
            )
        out[run] = events
    return out


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(graph=graphs, data=st.data())
async def test_sql_lineage_equals_the_pure_rule(
    pg_store: PgStore, graph: dict[str, tuple[str | None, list[str | None]]], data: st.DataObject
) -> None:
    await _reset(pg_store)
    present = data.draw(st.lists(st.sampled_from(RUNS), unique=True, min_size=1), "present")
    per_run = _per_run_events(Log(), graph, present)
    # Any interleaving that keeps each run's own order, cut into any batches.
    order: list[Event] = []
    queues = {run: list(events) for run, events in per_run.items()}
    while queues:
        run = data.draw(st.sampled_from(sorted(queues)))
        order.append(queues[run].pop(0))
        if not queues[run]:
            del queues[run]
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(order) - 1)), max_size=4)))
    for lo, hi in zip([0, *cuts], [*cuts, len(order)], strict=True):
        if lo < hi:
            await pg_store.apply(fold(order[lo:hi]))
    got = await _lineage_rows(pg_store)
    reference = MemoryStore().fold_log(order).lineage_of()
    assert got == dict(reference)
    expected = lineage({run: parent for run, (parent, _, _) in got.items()})
    assert {run: (root, depth) for run, (_, root, depth) in got.items()} == expected


async def test_three_level_chain_in_every_order(pg_store: PgStore) -> None:
    for order in itertools.permutations(["a", "b", "c"]):
        await _reset(pg_store)
        log = Log()
        parents = {"a": None, "b": "a", "c": "b"}
        for run in order:
            await pg_store.apply(fold([log.start(run, parent=parents[run])]))
        assert await _lineage_rows(pg_store) == {
            "a": (None, "a", 0),
            "b": ("a", "a", 1),
            "c": ("b", "a", 2),
        }, order


async def test_deep_chain_arriving_in_reverse(pg_store: PgStore) -> None:
    log = Log()
    chain = [f"n{i:04d}" for i in range(300)]
    for i in reversed(range(len(chain))):
        await pg_store.apply(fold([log.start(chain[i], parent=chain[i - 1] if i else None)]))
    got = await _lineage_rows(pg_store)
    assert {run: (root, depth) for run, (_, root, depth) in got.items()} == {
        run: ("n0000", i) for i, run in enumerate(chain)
    }


async def test_two_writers_at_once_agree_with_the_reference(pg_store: PgStore) -> None:
    """Two consumers (partitions) write runs whose parents live on the other one, concurrently:
    the lineage lock makes the later writer see the earlier one's runs."""
    for seed in range(3):
        await _reset(pg_store)
        log = mixed_log(seed, runs=40, metric_records=1, metrics_per_record=3, duplicate_share=0.0)
        halves: list[list[list[Event]]] = [[], []]
        for record in log:
            halves[zlib.crc32(record.key.encode()) % 2].append(list(record.events))

        async def consume(records: list[list[Event]], partition: int) -> None:
            offset: int | None = None
            for i in range(0, len(records), 3):
                batch = [e for r in records[i : i + 3] for e in r]
                await pg_store.apply(fold(batch), [OffsetMove("t", partition, offset, i + 3)])
                offset = i + 3

        await asyncio.gather(consume(halves[0], 0), consume(halves[1], 1))
        reference = MemoryStore().fold_log([e for r in log for e in r.events])
        assert await pg_store.snapshot() == reference.snapshot_now()


async def test_parent_and_child_committed_at_once(pg_store: PgStore) -> None:
    """A parent and its child inserted by two consumers in overlapping transactions: without
    serialising the lineage step, each would miss the other's uncommitted run."""
    log = Log()
    for i in range(30):
        parent, child = f"p{i:02d}", f"c{i:02d}"
        await asyncio.gather(
            pg_store.apply(fold([log.start(parent, parent=f"p{i - 1:02d}" if i else None)])),
            pg_store.apply(fold([log.start(child, parent=parent)])),
        )
    got = await _lineage_rows(pg_store)
    assert {run: (root, depth) for run, (_, root, depth) in got.items()} == lineage(
        {run: parent for run, (parent, _, _) in got.items()}
    )


async def test_metric_fast_path_and_its_fallbacks(
    pg_store: PgStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """New points are copied straight in; groups that may hold stored points go through
    ON CONFLICT; a conflict on the fast path (latest_metrics edited by hand) falls back.
    (Paths of batches of more than a few points: the threshold is lowered to none.)"""
    monkeypatch.setattr(store_values, "FEW_METRICS", 0)
    log = Log()
    first = [log.metric("r", "a", float(i), step=i) for i in range(10)]
    first += [log.metric("r", "b", float(i), step=i) for i in range(10)]
    reference = MemoryStore()
    for batch in (
        first,
        [*first[5:], log.metric("r", "a", 99.0, step=99)],
        [log.metric("r", "b", -1.0, step=-1), log.metric("r", "c", 0.0)],
    ):
        await pg_store.apply(fold(batch))
        reference.fold_log(batch)
        assert await pg_store.snapshot() == reference.snapshot_now()
    async with pg_store.pool.acquire() as conn:
        await conn.execute(f'DELETE FROM "{pg_store.schema}".latest_metrics')
    again = [log.metric("r", "a", 1.0, step=1), log.metric("r", "a", 100.0, step=100)]
    with capture_logs() as logged:
        await pg_store.apply(fold(again))
    assert [e["event"] for e in logged] == ["metrics_fast_path_conflict"]
    snap = await pg_store.snapshot()
    assert len(snap["metrics"]) == len(reference.snapshot_now()["metrics"]) + 1
    assert snap["latest_metrics"] == [("r", "a", "100.0", 0, 100)]


async def test_fenced_batch_leaves_no_trace_under_concurrency(pg_store: PgStore) -> None:
    """A zombie and the live owner race on one partition: exactly one commits."""
    log = Log()
    await pg_store.apply(fold([log.start("r")]), [OffsetMove("t", 0, None, 1)])
    live = fold([log.metric("r", "m", 1.0, step=1)])
    zombie = fold([log.metric("r", "m", 2.0, step=2)])
    results = await asyncio.gather(
        pg_store.apply(live, [OffsetMove("t", 0, 1, 2)]),
        pg_store.apply(zombie, [OffsetMove("t", 0, 1, 2)]),
        return_exceptions=True,
    )
    assert sorted(type(r).__name__ for r in results) == ["FencedError", "NoneType"]
    snap = await pg_store.snapshot()
    assert len(snap["metrics"]) == 1
    assert await pg_store.load_offsets("t", [0]) == {0: 2}


async def test_lost_connection_is_retriable(pg_store: PgStore, stack: Settings) -> None:
    """A batch whose connection dies mid-transaction is retriable; the next batch works."""
    log = Log()
    await pg_store.apply(fold([log.start("r")]), [OffsetMove("t", 0, None, 1)])
    blocker = await asyncpg.connect(stack.database_url)
    try:
        blocker_tx = blocker.transaction()
        await blocker_tx.start()
        # Hold the offset row: the batch below waits on it inside its transaction.
        await blocker.execute(
            f'UPDATE "{pg_store.schema}".projector_offsets SET next_offset = next_offset'
        )
        batch = asyncio.create_task(
            pg_store.apply(fold([log.metric("r", "m", 1.0)]), [OffsetMove("t", 0, 1, 2)])
        )
        waiting = "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND pid <> $1"
        mine = await blocker.fetchval("SELECT pg_backend_pid()")
        deadline = time.monotonic() + 10
        while (pid := await blocker.fetchval(waiting, mine)) is None:
            assert time.monotonic() < deadline, "the batch never waited on the offset row"
            await asyncio.sleep(0.02)  # polling a condition, with a deadline
        await blocker.execute("SELECT pg_terminate_backend($1)", pid)
        with pytest.raises(StoreUnavailableError):
            await batch
        await blocker_tx.rollback()
    finally:
        await blocker.close()
    await pg_store.apply(fold([log.metric("r", "m", 1.0)]), [OffsetMove("t", 0, 1, 2)])
    assert await pg_store.load_offsets("t", [0]) == {0: 2}


async def test_a_session_frozen_in_a_transaction_is_ended_by_the_server(
    pg_store: PgStore, stack: Settings
) -> None:
    # A SIGSTOPped member must not hold its offset rows and the lineage lock for ever: the
    # store's sessions are ended by PostgreSQL once idle in a transaction for a few seconds.
    observer = await asyncpg.connect(stack.database_url)
    try:
        async with pg_store.pool.acquire() as conn:
            tx = conn.transaction()
            await tx.start()
            pid = await conn.fetchval("SELECT pg_backend_pid()")
            deadline = time.monotonic() + 20
            while await observer.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid
            ):
                assert time.monotonic() < deadline, "the idle transaction was never ended"
                await asyncio.sleep(0.2)  # polling the server's state, with a deadline
            with pytest.raises(
                (
                    asyncpg.exceptions.IdleInTransactionSessionTimeoutError,
                    asyncpg.exceptions.ConnectionDoesNotExistError,
                    asyncpg.exceptions.InterfaceError,
                )
            ):
                await conn.execute("SELECT 1")
    finally:
        await observer.close()


async def test_block_counts_land_in_the_points_schema_whatever_the_writers_path(
    stack: Settings, schema_factory: object
) -> None:
    """The block-count trigger (migration 0014) counts into the schema of the table written,
    not the writer's search_path: not another read-model schema first on it, not a temporary
    table of the same name, not a schema's old name after a rename (a replay's swap). It puts
    the writer's search_path back as it was."""
    ours = await schema_factory("projector")  # type: ignore[operator]
    other = await schema_factory("projector")  # type: ignore[operator]
    renamed = f"{ours}_renamed"
    insert = (
        "INSERT INTO {}.metrics (run_id, key, step, ts, value) "
        "SELECT 'r', 'loss', s, 0, s FROM generate_series($1::bigint, $2::bigint) AS s"
    )
    conn = await asyncpg.connect(stack.database_url, server_settings={"search_path": other})
    try:
        await conn.execute("CREATE TEMP TABLE metric_blocks (LIKE metric_blocks)")
        async with conn.transaction():  # what the trigger sets for itself lasts until its end
            await conn.execute(insert.format(quote_schema(ours)), 0, 99)
            assert await conn.fetchval("SHOW search_path") == other
        assert await conn.fetchval("SELECT count(*) FROM pg_temp.metric_blocks") == 0
        await conn.execute("DROP TABLE pg_temp.metric_blocks")  # it would shadow the check's
        await conn.execute(f"ALTER SCHEMA {quote_schema(ours)} RENAME TO {quote_schema(renamed)}")
        try:
            async with conn.transaction():  # planned above under the old name: it must follow
                await conn.execute(insert.format(quote_schema(renamed)), 100, 299)
                assert await conn.fetchval("SHOW search_path") == other
            assert await derived_mismatches(conn, renamed) == {}
            levels = await conn.fetch(
                f"SELECT level, points FROM {quote_schema(renamed)}.metric_levels ORDER BY level"
            )
        finally:
            await conn.execute(
                f"ALTER SCHEMA {quote_schema(renamed)} RENAME TO {quote_schema(ours)}"
            )
        assert [tuple(r) for r in levels] == [(level, 300) for level in (6, 10, 14, 18, 22, 26)]
        assert await conn.fetchval(f"SELECT count(*) FROM {quote_schema(other)}.metric_blocks") == 0
        assert await conn.fetchval(f"SELECT count(*) FROM {quote_schema(other)}.metric_series") == 0
    finally:
        await conn.close()


async def test_block_count_plan_made_for_a_big_batch_still_probes_for_one_point(
    stack: Settings, schema_factory: object
) -> None:
    """The trigger's statement is planned once per session (migration 0014), by whichever batch
    comes first. A projector that starts on a backlog plans it for thousands of points; the
    one-point batches after it must still find their blocks by index, not by reading
    `metric_blocks` whole (a scan that would grow with the table). Counted in the session's
    own pending table statistics, which need no wait for a flush."""
    schema = await schema_factory("projector")  # type: ignore[operator]
    batch = (
        "INSERT INTO metrics (run_id, key, step, ts, value) SELECT $1 || r, k, 0, 0, 0 "
        "FROM generate_series(1, 1000) AS r, unnest(ARRAY['loss', 'acc', 'f1']) AS k"
    )
    one_point = (
        "INSERT INTO metrics (run_id, key, step, ts, value) VALUES ('old1', 'loss', $1, 0, 0)"
    )
    scans = (
        "SELECT seq_scan, idx_scan FROM pg_stat_xact_user_tables "
        "WHERE schemaname = $1 AND relname = 'metric_blocks'"
    )
    conn = await asyncpg.connect(stack.database_url, server_settings={"search_path": schema})
    try:
        # No ANALYZE by autovacuum in the middle: a plan made anew would hide the kept one's
        await conn.execute("ALTER TABLE metric_blocks SET (autovacuum_enabled = off)")
        await conn.execute(batch, "old")
        await conn.execute("ANALYZE metric_blocks")  # as autovacuum would by now
    finally:
        await conn.close()
    conn = await asyncpg.connect(stack.database_url, server_settings={"search_path": schema})
    try:
        await conn.execute(batch, "new")  # this session's first batch: 3,000 series
        async with conn.transaction():
            before = await conn.fetchrow(scans, schema)
            for block in range(1, 21):  # a new block each time, so each must be looked for
                await conn.execute(one_point, block * 64)
            after = await conn.fetchrow(scans, schema)
        assert before is not None
        assert after is not None
        assert after["idx_scan"] - before["idx_scan"] >= 20  # the counters do count
        assert after["seq_scan"] - before["seq_scan"] == 0
        assert await derived_mismatches(conn, schema) == {}
    finally:
        await conn.close()
