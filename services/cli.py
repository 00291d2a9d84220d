"""The `runstream` command: local stack, migrations and the service processes."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence

import asyncpg
import uvloop
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from api.asof import moment_ms
from deploy.local.process import StackError
from deploy.local.stack import LocalStack
from ingest.errors import MlflowError, UnavailableError
from ingest.topics import ensure_topics
from projector import versions
from projector.versions import stored_offsets
from services import logging as rs_logging
from services.config import ConfigError, Settings
from services.migrations import load, migrate
from services.registry_restore import RestoreError, restore_registry
from services.replay import (
    ReplayError,
    ReplayOptions,
    build_as_of,
    drop_version,
    list_versions,
    replay,
    rollback,
)
from services.runtime import ROLES, RoleFailedError, run_roles
from services.verify import VerifyError, verify

# Each schema and the package whose migrations build it.
SCHEMA_PACKAGES = (("registry_schema", "ingest"), ("read_schema", "projector"))


def local_stack(settings: Settings) -> LocalStack:
    """Return the local stack, leaving out what is configured to run elsewhere."""
    return LocalStack(
        state_dir=settings.state_dir,
        cache_dir=settings.cache_dir,
        kafka_version=settings.kafka_version,
        kafka_port=settings.kafka_port,
        kafka_controller_port=settings.kafka_controller_port,
        kafka_heap=settings.kafka_heap,
        postgres_port=settings.postgres_port,
        with_kafka=settings.external_kafka is None,
        with_postgres=settings.external_database is None,
    )


async def apply_migrations(settings: Settings) -> list[str]:
    """Apply every package's migrations to its schema; return what was applied now."""
    conn = await asyncpg.connect(settings.database_url, timeout=30)
    try:
        applied: list[str] = []
        for attr, package in SCHEMA_PACKAGES:
            schema = getattr(settings, attr)
            applied += [f"{schema}.{name}" for name in await migrate(conn, schema, load(package))]
        # The versions the API can read (as-of) or a rollback can bring back (prev) keep the
        # live one's tables; a rebuild in progress (next) migrates itself when it resumes.
        for version in await versions.list_versions(conn, settings.read_schema, settings.topic):
            if version.role in ("prev", "as_of"):
                names = await migrate(conn, version.schema, load("projector"))
                applied += [f"{version.schema}.{name}" for name in names]
        return applied
    finally:
        await conn.close()


async def _stored_offsets(settings: Settings) -> dict[int, int] | None:
    """Return the projector's stored next offsets, or None if the database does not answer."""
    try:
        conn = await asyncpg.connect(settings.database_url, timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return None
    try:
        # Empty when not migrated yet: nothing folded.
        return await stored_offsets(conn, settings.read_schema, settings.topic)
    finally:
        await conn.close()


async def _end_offsets(settings: Settings) -> dict[int, int] | None:
    """Return the topic's end offsets, or None if the broker does not answer."""
    # Subscribed without a group: start() waits for the topic's metadata, nothing is consumed.
    consumer = AIOKafkaConsumer(
        settings.topic,
        bootstrap_servers=settings.kafka_bootstrap,
        request_timeout_ms=5000,
        enable_auto_commit=False,
    )
    try:
        async with asyncio.timeout(10):
            await consumer.start()
            partitions = consumer.partitions_for_topic(settings.topic)
            parts = [TopicPartition(settings.topic, p) for p in sorted(partitions or ())]
            ends = await consumer.end_offsets(parts) if parts else {}
    except (KafkaError, TimeoutError, OSError):
        return None
    finally:
        await consumer.stop()
    return {tp.partition: offset for tp, offset in ends.items()}


def _print(record: dict[str, object]) -> None:
    print(json.dumps(record, sort_keys=True))


def cmd_up(settings: Settings) -> int:
    """Start Kafka and PostgreSQL, create the topics and migrate."""
    states = local_stack(settings).up()
    created = asyncio.run(
        ensure_topics(
            settings.kafka_bootstrap,
            settings.topic,
            settings.partitions,
            settings.dead_letter_topic,
        )
    )
    applied = asyncio.run(apply_migrations(settings))
    _print(
        {
            "stack": states,
            "topics_created": created,
            "migrations_applied": applied,
            "kafka": settings.kafka_bootstrap,
            "database": settings.database_url,
            "tracking_uri": settings.tracking_uri,
        }
    )
    return 0


def cmd_down(settings: Settings) -> int:
    """Stop the local Kafka and PostgreSQL; their data stays for the next `up`."""
    _print({"stack": local_stack(settings).down()})
    return 0


def cmd_status(settings: Settings) -> int:
    """Report the broker, the database and the projector's lag; non-zero if a part is down."""
    local = local_stack(settings).status()
    ends = asyncio.run(_end_offsets(settings))
    stored = asyncio.run(_stored_offsets(settings))
    lag = None
    if ends is not None and stored is not None:
        lag = {str(p): end - stored.get(p, 0) for p, end in sorted(ends.items())}
    _print(
        {
            "kafka": {
                "bootstrap": settings.kafka_bootstrap,
                "up": ends is not None,
                "local_process": local.get("kafka"),
                "topic": settings.topic,
                "end_offsets": ends,
            },
            "postgres": {
                "dsn": settings.database_url,
                "up": stored is not None,
                "local_process": local.get("postgres"),
            },
            "projector": {
                "schema": settings.read_schema,
                "lag": lag,
                "total_lag": sum(lag.values()) if lag is not None else None,
            },
        }
    )
    return 0 if ends is not None and stored is not None else 1


def cmd_migrate(settings: Settings) -> int:
    """Apply pending migrations."""
    _print({"migrations_applied": asyncio.run(apply_migrations(settings))})
    return 0


def parse_moment(text: str) -> int:
    """Return epoch milliseconds from ISO 8601 (UTC unless it says otherwise) or a number."""
    try:
        moment = moment_ms(text)  # the API reads the same moments the same way
    except MlflowError as exc:
        raise argparse.ArgumentTypeError(exc.message) from exc
    if moment < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is before 1970: the log holds nothing then")
    return moment


def cmd_replay(settings: Settings, args: argparse.Namespace) -> int:
    """Rebuild, roll back, time-travel, list or drop read-model versions."""
    options = ReplayOptions(max_records=args.max_records, verify=args.verify)
    if args.list:
        for version in asyncio.run(list_versions(settings)):
            _print(version)
        return 0
    if args.drop:
        asyncio.run(drop_version(settings, args.drop))
        _print({"dropped": args.drop})
        return 0
    if args.rollback:
        _print(asyncio.run(rollback(settings, options)))
    elif args.as_of is not None:
        _print(asyncio.run(build_as_of(settings, args.as_of, options)))
    else:
        _print(asyncio.run(replay(settings, options, restart=args.restart)))
    return 0


def cmd_restore_registry(settings: Settings, args: argparse.Namespace) -> int:
    """Rebuild the write-side registry from the read models (gateways stopped)."""
    _print(asyncio.run(restore_registry(settings, replace=args.replace)))
    return 0


def cmd_verify(settings: Settings, args: argparse.Namespace) -> int:
    """Compare a schema with the fold of the log (or another schema), and its derived data with
    its rows; exit 1 if anything differs."""
    outcome = asyncio.run(verify(settings, args.schema or settings.read_schema, args.against))
    _print(outcome)
    return 0 if outcome["equal"] and outcome["derived_agree"] else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="runstream", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start the local Kafka and PostgreSQL, create topics, migrate")
    sub.add_parser("down", help="stop the local Kafka and PostgreSQL (data is kept)")
    sub.add_parser("status", help="report the broker's and the database's health")
    sub.add_parser("migrate", help="apply pending SQL migrations")
    sub.add_parser("serve", help="run ingest gateway, projector and query API in one process")
    for role in ROLES:
        sub.add_parser(role, help=f"run the {role} role alone")
    rep = sub.add_parser(
        "replay",
        help="rebuild the read models from offset 0 into a new version and swap it in, live",
    )
    what = rep.add_mutually_exclusive_group()
    what.add_argument("--rollback", action="store_true", help="swap the previous version back")
    what.add_argument(
        "--as-of",
        type=parse_moment,
        metavar="TIME",
        help="build a read-only version as of TIME (ISO 8601, UTC by default, or epoch ms)",
    )
    what.add_argument("--list", action="store_true", help="list the versions and their offsets")
    what.add_argument("--drop", metavar="SCHEMA", help="drop a version that is not live")
    rep.add_argument(
        "--restart", action="store_true", help="discard an interrupted rebuild, start at 0"
    )
    rep.add_argument(
        "--verify",
        action="store_true",
        help="inside the swap, compare both versions' state hashes and the new one's derived "
        "data with its rows; do not swap if anything differs",
    )
    rep.add_argument("--max-records", type=int, default=5000, help="records per fetch")
    res = sub.add_parser(
        "restore-registry",
        help="rebuild the write-side registry from the read models, after a lost database",
    )
    res.add_argument("--replace", action="store_true", help="discard what the registry holds now")
    ver = sub.add_parser(
        "verify", help="compare the read models with the in-memory fold of the log"
    )
    ver.add_argument("--schema", help="the schema to check (default: the live one)")
    ver.add_argument("--against", metavar="SCHEMA", help="compare with this schema instead")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `runstream` command line."""
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"runstream: {exc}", file=sys.stderr)
        return 2
    rs_logging.configure(settings.log_level, settings.log_format)
    commands = {"up": cmd_up, "down": cmd_down, "status": cmd_status, "migrate": cmd_migrate}
    with_args = {
        "replay": cmd_replay,
        "verify": cmd_verify,
        "restore-registry": cmd_restore_registry,
    }
    try:
        if args.command in commands:
            return commands[args.command](settings)
        if args.command in with_args:
            return with_args[args.command](settings, args)
        roles = frozenset(ROLES) if args.command == "serve" else frozenset({args.command})
        uvloop.run(run_roles(settings, roles))
    except (
        StackError,
        UnavailableError,
        RoleFailedError,
        ReplayError,
        VerifyError,
        RestoreError,
        asyncpg.PostgresError,
        OSError,
        TimeoutError,
    ) as exc:
        print(f"runstream {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
