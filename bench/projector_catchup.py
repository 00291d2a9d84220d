"""Measure the projector's catch-up rate on a metric-heavy log (prints figures; asserts nothing).

    .venv/bin/python -m bench.projector_catchup --runs 20 --records-per-run 100 --events 500

Produces the log to a fresh topic, folds it in burst mode into a fresh schema, and prints
events/s end to end (group join included) and steady state (first to last committed batch).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid

import asyncpg

from bench.dataset import produce
from ingest.topics import delete_topics, ensure_topics
from projector.consumer import Projector
from projector.synthetic import metric_log
from services.config import Settings
from services.migrations import load, migrate, quote_schema


async def main(args: argparse.Namespace) -> None:
    settings = Settings.from_env()
    topic = f"bench.events.{uuid.uuid4().hex[:8]}"
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    await ensure_topics(settings.kafka_bootstrap, topic, args.partitions, f"{topic}.dead-letter")
    conn = await asyncpg.connect(settings.database_url)
    try:
        await migrate(conn, schema, load("projector"))
        log = metric_log(
            1, runs=args.runs, records_per_run=args.records_per_run, events_per_record=args.events
        )
        total = sum(len(r.events) for r in log)
        started = time.monotonic()
        await produce(settings.kafka_bootstrap, topic, (list(r.events) for r in log))
        produced_s = time.monotonic() - started
        del log
        projector = Projector(
            bootstrap=settings.kafka_bootstrap,
            topic=topic,
            group_id=f"bench.{topic}",
            dead_letter_topic=f"{topic}.dead-letter",
            dsn=settings.database_url,
            schema=schema,
            max_records=args.max_records,
            synchronous_commit=args.sync_commit,
        )
        async with projector:
            began = time.monotonic()
            await projector.run(burst=True)
            wall = time.monotonic() - began
        steady = projector.stats.steady_events_per_second()
        print(
            json.dumps(
                {
                    "events": total,
                    "records": args.runs * (args.records_per_run + 1),
                    "produce_s": round(produced_s, 2),
                    "catchup_wall_s": round(wall, 2),
                    "events_per_s_wall": round(total / wall),
                    "batches": projector.stats.batches,
                    "events_per_s_steady": round(steady) if steady else None,
                }
            )
        )
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {quote_schema(schema)} CASCADE")
        await conn.close()
        await delete_topics(settings.kafka_bootstrap, [topic, f"{topic}.dead-letter"])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--records-per-run", type=int, default=100)
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--max-records", type=int, default=500)
    parser.add_argument("--sync-commit", action="store_true")
    asyncio.run(main(parser.parse_args()))
