"""Run one projector as a process: ``python -m projector --topic ... --schema ...``.

A small runner for fault tests (a real process to SIGKILL) and ad-hoc replays; the service
composition (``runstream projector``) lives in ``services`` and calls ``run_projector`` itself.
Every setting is an argument: nothing is read from the environment. SIGTERM or SIGINT finishes
the batch in hand, then exits 0; ``--burst`` exits once caught up with the start-time end offsets.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Sequence

import structlog

from projector.service import run_projector


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m projector", description=__doc__)
    parser.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True, help="consumer group id")
    parser.add_argument("--dead-letter-topic", required=True)
    parser.add_argument("--dsn", required=True, help="PostgreSQL DSN")
    parser.add_argument("--schema", required=True, help="the migrated read-model schema")
    parser.add_argument("--burst", action="store_true", help="exit once caught up")
    parser.add_argument("--max-records", type=int, default=500)
    parser.add_argument("--shutdown-s", type=float, default=30.0)
    # Short group timeouts let fault tests see a stopped member expire within seconds.
    parser.add_argument("--session-timeout-ms", type=int, default=10_000)
    parser.add_argument("--heartbeat-interval-ms", type=int, default=3_000)
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    return parser


def _configure_logging(level: str) -> None:
    numeric = getattr(logging, level.upper())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr)


async def _main(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    stats = await run_projector(
        bootstrap=args.bootstrap,
        topic=args.topic,
        group_id=args.group,
        dead_letter_topic=args.dead_letter_topic,
        dsn=args.dsn,
        schema=args.schema,
        stop=stop,
        burst=args.burst,
        shutdown_s=args.shutdown_s,
        max_records=args.max_records,
        session_timeout_ms=args.session_timeout_ms,
        heartbeat_interval_ms=args.heartbeat_interval_ms,
    )
    summary = {
        "events": stats.events,
        "records": stats.records,
        "batches": stats.batches,
        "dead_letters": stats.dead_letters,
        "fenced": stats.fenced,
    }
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments and run the projector until stopped or caught up."""
    args = _parser().parse_args(argv)
    _configure_logging(args.log_level)
    return asyncio.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())
