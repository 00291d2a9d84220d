"""W4 replay: rebuild the read models of a multi-million-event log from offset 0 and swap them in.

    .venv/bin/python -m bench.replay                       # 5,000,100 events (100 runs x 100 x 500)
    .venv/bin/python -m bench.replay --runs 10 --records-per-run 20   # a quick look

Produces a metric-heavy log to a fresh topic, folds it into a live schema with the projector
(its catch-up rate is printed too), then runs `runstream replay` (services.replay.replay) into a
new version and swaps it in. Prints one JSON line of figures; asserts nothing. MLflow has no
equivalent, so there is no peer ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from dataclasses import replace

import asyncpg

from bench.dataset import produce
from ingest.topics import MAX_RECORD_BYTES, delete_topics, ensure_topics
from projector import versions
from projector.consumer import Projector
from projector.store import quote_schema
from projector.synthetic import metric_log
from services.config import Settings
from services.migrations import load, migrate
from services.replay import ReplayOptions, replay


async def main(args: argparse.Namespace) -> None:
    base = Settings.from_env()
    topic = f"bench.replay.{uuid.uuid4().hex[:8]}"
    live = f"bench_replay_{uuid.uuid4().hex[:8]}"
    settings = replace(
        base,
        topic=topic,
        dead_letter_topic=f"{topic}.dead-letter",
        read_schema=live,
        consumer_group=f"bench.{topic}",
    )
    await ensure_topics(
        settings.kafka_bootstrap, topic, args.partitions, settings.dead_letter_topic
    )
    conn = await asyncpg.connect(settings.database_url)
    try:
        await migrate(conn, live, load("projector"))
        log = metric_log(
            1, runs=args.runs, records_per_run=args.records_per_run, events_per_record=args.events
        )
        events = sum(len(r.events) for r in log)
        records = len(log)
        began = time.monotonic()
        await produce(settings.kafka_bootstrap, topic, (list(r.events) for r in log))
        produce_s = time.monotonic() - began
        del log
        projector = Projector(
            bootstrap=settings.kafka_bootstrap,
            topic=topic,
            group_id=settings.consumer_group,
            dead_letter_topic=settings.dead_letter_topic,
            dsn=settings.database_url,
            schema=live,
            max_records=500,
            max_record_bytes=MAX_RECORD_BYTES,
        )
        async with projector:
            began = time.monotonic()
            await projector.run(burst=True)
            live_s = time.monotonic() - began
        options = ReplayOptions(max_records=args.max_records, verify=args.verify)
        began = time.monotonic()
        outcome = await replay(settings, options)
        replay_s = time.monotonic() - began
        print(
            json.dumps(
                {
                    "workload": "W4",
                    "events": events,
                    "records": records,
                    "produce_s": round(produce_s, 1),
                    "live_projector_s": round(live_s, 1),
                    "live_projector_events_per_s": round(events / live_s),
                    "replay_s": round(replay_s, 1),
                    "replay_events_per_s": round(outcome["events_folded"] / replay_s),
                    "replay_records_per_s": round(outcome["records_folded"] / replay_s),
                    "replay_index_build_s": outcome["index_build_s"],
                    "replay_fold_events_per_s": round(
                        outcome["events_folded"] / (replay_s - outcome["index_build_s"])
                    ),
                    "live_held_s": outcome["live_held_s"],
                    "verified_in_swap": args.verify,
                }
            ),
            flush=True,
        )
    finally:
        for schema in (live, versions.prev_schema(live), versions.next_schema(live)):
            await conn.execute(f"DROP SCHEMA IF EXISTS {quote_schema(schema)} CASCADE")
        await conn.close()
        await delete_topics(settings.kafka_bootstrap, [topic, settings.dead_letter_topic])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--records-per-run", type=int, default=100)
    parser.add_argument("--events", type=int, default=500, help="metric points per record")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--max-records", type=int, default=5000)
    parser.add_argument("--verify", action="store_true", help="compare hashes inside the swap")
    asyncio.run(main(parser.parse_args()))
