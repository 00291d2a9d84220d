"""Rebalance and zombies (RELIABILITY.md scenario 3) with real processes: two projectors share a
consumer group; one is SIGSTOPped past its session timeout while more records are produced, the
group hands its partitions to the other, and it is resumed with a batch in hand. The zombie's
offsets compare-and-set matches no row and rolls back, stored offsets never move backwards, and
the drained read models hash like the in-memory fold of the whole log.

The zombie is stopped between PostgreSQL transactions, with a fetched or folded batch in hand.
Stopped inside one, its open transaction would keep the offset rows and the schema's lineage
advisory lock: the other member's commit then waits on them, its revocation callback waits on
that commit, and the rebalance cannot finish until the zombie resumes (found while writing this
test; the projector sets no lock or idle-in-transaction timeout)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from aiokafka.partitioner import murmur2
from eventlog import end_offsets, produce_log

from projector.memory import MemoryStore
from projector.snapshot import read_snapshot, state_hash
from projector.synthetic import Record, metric_log, mixed_log
from services.config import Settings

pytestmark = pytest.mark.integration

PARTITIONS = frozenset(range(6))  # the `topic` fixture's partition count
SESSION_TIMEOUT_MS = 6_000  # the broker's default group.min.session.timeout.ms
HEARTBEAT_INTERVAL_MS = 1_000
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


def _partition(record: Record) -> int:
    return (murmur2(record.key.encode()) & 0x7FFFFFFF) % len(PARTITIONS)


Explain = Callable[[], Awaitable[str]]


async def _until(
    condition: Callable[[], Awaitable[bool]], deadline_s: float, what: str, explain: Explain
) -> None:
    """Poll `condition` until it holds; fail with `what` when the deadline passes first."""
    deadline = time.monotonic() + deadline_s
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {deadline_s}s: {what}\n{await explain()}")
        await asyncio.sleep(0.02)  # polling a condition, with a deadline


class Member:
    """One `python -m projector` process; its JSON log is read as it comes."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name, self.proc = name, proc
        self.assigned: frozenset[int] = frozenset()
        self.events: list[dict[str, Any]] = []
        self.other: list[str] = []  # lines that are not structlog JSON (stdlib warnings)
        self._reader = asyncio.create_task(self._read(), name=f"log-{name}")

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            line = raw.decode(errors="replace").strip()
            try:
                entry = json.loads(line)
            except ValueError:
                self.other.append(line)
                continue
            self.events.append(entry)
            if entry.get("event") == "partitions_assigned":
                self.assigned = frozenset(entry["partitions"])
            elif entry.get("event") == "partitions_revoked":
                self.assigned -= frozenset(entry["partitions"])

    def logged(self, event: str) -> list[dict[str, Any]]:
        """Return this member's log entries named `event`."""
        return [e for e in self.events if e.get("event") == event]

    def tail(self) -> str:
        """Return the end of the log, for assertion messages."""
        lines = [json.dumps(e) for e in self.events[-20:]] + self.other[-10:]
        return f"{self.name} (rc={self.proc.returncode}):\n" + "\n".join(lines)

    async def finish(self, deadline_s: float = 60, *, terminate: bool = True) -> dict[str, Any]:
        """SIGTERM the member (unless it exits by itself), wait, return the stats it prints."""
        if terminate:
            self.proc.send_signal(signal.SIGTERM)
        assert self.proc.stdout is not None
        out = await asyncio.wait_for(self.proc.stdout.read(), deadline_s)
        await asyncio.wait_for(self.proc.wait(), deadline_s)
        await self._reader
        assert self.proc.returncode == 0, self.tail()
        summary: dict[str, Any] = json.loads(out)
        return summary

    async def close(self) -> None:
        """Kill the process if it still runs (resuming it first if stopped) and reap it."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGCONT)
                self.proc.kill()
        await self.proc.wait()
        await self._reader


class Group:
    """Projector members of one consumer group on one topic and schema; kills what is left."""

    def __init__(self, stack: Settings, topic: str, schema: str) -> None:
        self.stack, self.topic, self.schema = stack, topic, schema
        self.members: list[Member] = []

    async def start(self, name: str, group: str, *extra: str, max_records: int = 1) -> Member:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "projector",
            "--bootstrap",
            self.stack.kafka_bootstrap,
            "--topic",
            self.topic,
            "--group",
            group,
            "--dead-letter-topic",
            f"{self.topic}.dead-letter",
            "--dsn",
            self.stack.database_url,
            "--schema",
            self.schema,
            "--max-records",
            str(max_records),
            "--session-timeout-ms",
            str(SESSION_TIMEOUT_MS),
            "--heartbeat-interval-ms",
            str(HEARTBEAT_INTERVAL_MS),
            "--log-level",
            "info",
            *extra,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=ROOT,
        )
        member = Member(name, proc)
        self.members.append(member)
        return member

    async def close(self) -> None:
        for member in self.members:
            await member.close()


@pytest.fixture
async def group(stack: Settings, topic: str, schema_factory: Any) -> AsyncIterator[Group]:
    g = Group(stack, topic, await schema_factory("projector"))
    yield g
    await g.close()


class OffsetWatch:
    """Sample `projector_offsets` over and over; remember every backward move."""

    def __init__(self, db: asyncpg.Connection, schema: str, topic: str) -> None:
        self.db, self.topic = db, topic
        self.query = (
            f'SELECT partition, next_offset FROM "{schema}".projector_offsets WHERE topic = $1'
        )
        self.latest: dict[int, int] = {}
        self.backwards: list[tuple[int, int, int]] = []
        self.samples = 0
        self._lock = asyncio.Lock()  # one query at a time on the connection
        self._task = asyncio.create_task(self._watch(), name="offset-watch")

    async def sample(self) -> dict[int, int]:
        async with self._lock:
            rows = await self.db.fetch(self.query, self.topic)
        seen = {r["partition"]: r["next_offset"] for r in rows}
        for partition, offset in seen.items():
            before = self.latest.get(partition)
            if before is not None and offset < before:
                self.backwards.append((partition, before, offset))
        self.latest.update(seen)
        self.samples += 1
        return seen

    async def _watch(self) -> None:
        while True:
            await self.sample()
            await asyncio.sleep(0.01)  # sampling rate, not synchronisation

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def close(self) -> None:
        await self.stop()
        await self.db.close()


_ACTIVITY = """
SELECT pid, client_port, state, wait_event_type, wait_event, xact_start, left(query, 160) AS query
FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()
"""
# The sessions of given client ports that are inside a transaction (or running a statement).
_BUSY_SESSIONS = """
SELECT count(*) FROM pg_stat_activity
WHERE client_port = ANY($1::int[]) AND (xact_start IS NOT NULL OR state <> 'idle')
"""


def _local_ports(pid: int) -> list[int]:
    """Return the local TCP ports of a process's sockets (Linux /proc)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            for row in list(rows)[1:]:
                fields = row.split()
                if fields[9] in inodes:
                    ports.append(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


async def _stop_between_transactions(
    zombie: Member,
    db: asyncpg.Connection,
    watch: OffsetWatch,
    explain: Explain,
    *,
    ends: dict[int, int],
    since: dict[int, int],
) -> tuple[float, dict[int, int]] | None:
    """SIGSTOP the member between PostgreSQL transactions while its partitions' records (up to
    `ends`) are not all folded: it has a fetched or folded batch in hand.

    Stopped inside a transaction, it would hold row and advisory locks that stall the other
    member (see the module docstring); that is a different scenario. Each attempt waits until
    the member itself committed again, the first past the stored offsets `since` (taken before
    the records were produced). Return when it was stopped and the stored offsets then; None,
    with the member running, if it folded all its records first.
    """
    theirs = zombie.assigned

    def own(offsets: dict[int, int]) -> int:
        return sum(offsets.get(p, 0) for p in theirs)

    def drained() -> bool:
        return all(watch.latest.get(p, 0) >= ends[p] for p in theirs)

    progress = own(since)
    for _ in range(100):

        async def committed_again(progress: int = progress) -> bool:
            assert zombie.proc.returncode is None, zombie.tail()
            return own(watch.latest) > progress or drained()

        await _until(committed_again, 30, "the zombie commits batches", explain)
        if drained():
            return None
        progress = own(watch.latest)
        zombie.proc.send_signal(signal.SIGSTOP)
        stopped_at, ports = time.monotonic(), _local_ports(zombie.proc.pid)
        # Asked twice, a round trip apart: a BEGIN sent just before the stop shows by then.
        if not await db.fetchval(_BUSY_SESSIONS, ports):
            at_stop = await watch.sample()
            if not await db.fetchval(_BUSY_SESSIONS, ports):
                if any(at_stop.get(p, 0) < ends[p] for p in theirs):
                    return stopped_at, at_stop
                zombie.proc.send_signal(signal.SIGCONT)
                return None  # its last batch committed just before the stop
        zombie.proc.send_signal(signal.SIGCONT)
    raise AssertionError(f"never caught the zombie between transactions\n{await explain()}")


async def _drain_and_check(
    group: Group,
    db: asyncpg.Connection,
    watch: OffsetWatch,
    ends: dict[int, int],
    produced: list[Record],
) -> None:
    """Stop the members; burst-drain with a fresh one; check offsets and fold-equivalence."""
    zombie, survivor = group.members
    zombie_stats, survivor_stats = await zombie.finish(), await survivor.finish()
    # The batch in hand expected offsets the survivor had moved: its compare-and-set matched
    # no row and the transaction rolled back before writing anything.
    assert zombie_stats["fenced"] >= 1, zombie.tail()
    assert zombie.logged("batch_fenced"), zombie.tail()
    assert zombie_stats["dead_letters"] == survivor_stats["dead_letters"] == 0
    drain = await group.start("drain", f"drain.{group.topic}", "--burst", max_records=500)
    assert (await drain.finish(120, terminate=False))["events"] == 0  # nothing was left
    await watch.stop()
    final = await watch.sample()
    assert watch.backwards == [], f"offsets moved backwards: {watch.backwards}"
    assert watch.samples > 100
    assert final == ends == await end_offsets(group.stack.kafka_bootstrap, group.topic, PARTITIONS)
    reference = MemoryStore().fold_log(e for r in produced for e in r.events).snapshot_now()
    snapshot = await read_snapshot(db, group.schema)
    assert state_hash(snapshot) == state_hash(reference)
    assert snapshot == reference


ROUNDS = 3  # stop/resume rounds at most, until the zombie's batch in hand reaches the CAS
# Shares of every partition's records produced before a stop, during it, and to retry it.
BACKLOG, DURING_STOP, MORE = 0.2, 0.05, 0.1


class Feed:
    """Produce the log piece by piece, in per-key order; return the end offsets after each."""

    def __init__(self, bootstrap: str, topic: str, log: list[Record]) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.left: dict[int, deque[Record]] = {p: deque() for p in PARTITIONS}
        for record in log:
            self.left[_partition(record)].append(record)
        self.totals = {p: len(records) for p, records in self.left.items()}
        self.produced: list[Record] = []

    async def take(self, share: float) -> dict[int, int]:
        """Produce this share of every partition's records (at least one of each left)."""
        piece = [
            records.popleft()
            for p, records in self.left.items()
            for _ in range(min(len(records), max(1, round(share * self.totals[p]))))
        ]
        if not piece and share < 1:
            raise AssertionError("the log ran out before the zombie was fenced")
        await produce_log(self.bootstrap, self.topic, piece)
        self.produced.extend(piece)
        return await end_offsets(self.bootstrap, self.topic, PARTITIONS)


async def _caught_mid_backlog(
    zombie: Member, db: asyncpg.Connection, watch: OffsetWatch, explain: Explain, feed: Feed
) -> tuple[float, dict[int, int], dict[int, int]]:
    """Produce a backlog and SIGSTOP the zombie between transactions before it has folded its
    share: a fetched or folded batch is in hand. One that folded all its records before it was
    caught is given more. Return when it was stopped, the stored and the end offsets then."""
    since = await watch.sample()
    ends = await feed.take(BACKLOG)
    while True:
        caught = await _stop_between_transactions(
            zombie, db, watch, explain, ends=ends, since=since
        )
        if caught is not None:
            return (*caught, ends)
        since = dict(watch.latest)
        ends = await feed.take(MORE)


async def test_sigstopped_member_is_fenced_after_rebalance(stack: Settings, group: Group) -> None:
    log = mixed_log(5, runs=60) + metric_log(5, runs=6, records_per_run=80, events_per_record=50)
    feed = Feed(stack.kafka_bootstrap, group.topic, log)
    name = f"zombie.{group.topic}"
    zombie, survivor = await group.start("zombie", name), await group.start("survivor", name)
    db = await asyncpg.connect(stack.database_url)
    watch = OffsetWatch(await asyncpg.connect(stack.database_url), group.schema, group.topic)
    at_stop: dict[int, int] = {}

    async def explain() -> str:
        activity = "\n".join(str(dict(r)) for r in await db.fetch(_ACTIVITY))
        return f"{zombie.tail()}\n{survivor.tail()}\noffsets {watch.latest}\n{activity}"

    def alive() -> None:
        for m in (zombie, survivor):
            assert m.proc.returncode is None, m.tail()

    async def split_evenly() -> bool:
        alive()
        held = (zombie.assigned, survivor.assigned)
        return all(held) and not held[0] & held[1] and held[0] | held[1] == PARTITIONS

    async def survivor_holds_all() -> bool:
        alive()
        return survivor.assigned == PARTITIONS

    async def survivor_moved_past_zombie() -> bool:
        return all(watch.latest.get(p, 0) > at_stop.get(p, 0) for p in theirs)

    async def zombie_noticed() -> bool:
        alive()
        return len(zombie.logged("partitions_revoked")) > revoked

    async def caught_up() -> bool:
        alive()
        return {p: watch.latest.get(p, 0) for p in ends} == ends

    try:
        for _ in range(ROUNDS):
            await _until(split_evenly, 60, "both members hold partitions", explain)
            theirs = zombie.assigned
            stopped_at, at_stop, ends = await _caught_mid_backlog(zombie, db, watch, explain, feed)

            ends = await feed.take(DURING_STOP)
            await _until(survivor_holds_all, 60, "the survivor got every partition", explain)
            # Expelled by the session timeout, counted from its last heartbeat before the stop.
            assert (
                time.monotonic() - stopped_at
                >= (SESSION_TIMEOUT_MS - HEARTBEAT_INTERVAL_MS) / 1000 * 0.9
            )
            await _until(survivor_moved_past_zombie, 60, "the survivor moved offsets", explain)

            revoked = len(zombie.logged("partitions_revoked"))
            zombie.proc.send_signal(signal.SIGCONT)
            # The batch in hand is committed (or refused) before the revocation is handled.
            await _until(zombie_noticed, 60, "the zombie learnt it had left the group", explain)
            if zombie.logged("batch_fenced"):
                break
            # Its heartbeat's answer won the race against the batch in hand: try again.
        ends = await feed.take(1)  # all that is left
        assert len(feed.produced) == len(log)
        await _until(caught_up, 120, "the group folded the whole log", explain)
        await _drain_and_check(group, db, watch, ends, feed.produced)
    finally:
        await watch.close()
        await db.close()
