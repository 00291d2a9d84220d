"""A single-node Apache Kafka (KRaft, combined broker and controller) on the machine's Java.

The broker's jars are resolved from Maven Central with the machine's Maven into a cache outside
the repository, so nothing binary is committed and a second start costs no download.
"""

from __future__ import annotations

import base64
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import structlog

from deploy.local.process import (
    StackError,
    port_open,
    read_pid,
    run,
    spawn,
    terminate,
    wait_for_port,
)

log = structlog.get_logger(__name__)

# log4j 2 binding for the broker's slf4j 1.x API, so the broker's own log is readable.
_LOG4J_VERSION = "2.25.5"

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.runstream.local</groupId>
  <artifactId>kafka-broker</artifactId>
  <version>{version}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{version}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
</project>
"""

_LOG4J2 = """status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = OUT
logger.state.name = state.change.logger
logger.state.level = warn
logger.request.name = kafka.request.logger
logger.request.level = warn
"""


def new_cluster_id() -> str:
    """Return a random cluster id as Kafka writes one: a UUID in URL-safe base64, unpadded.

    Never one starting with "-", as Kafka's own `Uuid.randomUuid` does not: the storage tool
    reads such an id after `-t` as an option and refuses to format (1 start in 64 otherwise)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def resolve_jars(version: str, cache_dir: Path) -> Path:
    """Return a folder holding kafka_2.13:<version> and its runtime dependencies."""
    home = cache_dir / f"kafka-{version}"
    libs = home / "libs"
    marker = home / ".resolved"
    if marker.exists() and any(libs.glob("kafka_2.13-*.jar")):
        return libs
    if shutil.which("mvn") is None:
        raise StackError("Maven (mvn) is needed to fetch Apache Kafka from Maven Central")
    home.mkdir(parents=True, exist_ok=True)
    (home / "pom.xml").write_text(_POM.format(version=version, log4j=_LOG4J_VERSION))
    if libs.exists():
        shutil.rmtree(libs)
    log.info("kafka_resolving", version=version, into=str(libs))
    run(
        [
            "mvn",
            "-B",
            "-q",
            "dependency:copy-dependencies",
            f"-DoutputDirectory={libs}",
            "-DincludeScope=runtime",
        ],
        what=f"resolving org.apache.kafka:kafka_2.13:{version} with Maven",
        cwd=home,
    )
    marker.write_text(version + "\n")
    return libs


@dataclass(frozen=True)
class KafkaNode:
    """One KRaft node whose data, config and log live under `home`."""

    home: Path
    port: int
    controller_port: int
    heap: str = "768m"
    libs: Path | None = None  # needed to start, not to stop or inspect

    @property
    def pid_file(self) -> Path:
        """Return the file that records the broker's pid."""
        return self.home / "kafka.pid"

    @property
    def log_file(self) -> Path:
        """Return the broker's own log."""
        return self.home / "kafka.log"

    @property
    def bootstrap(self) -> str:
        """Return the address clients bootstrap from."""
        return f"127.0.0.1:{self.port}"

    def running(self) -> bool:
        """Return whether this node's process is alive."""
        return read_pid(self.pid_file) is not None

    def _write_config(self) -> Path:
        data = self.home / "data"
        props = self.home / "server.properties"
        props.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
                    f"listeners=PLAINTEXT://127.0.0.1:{self.port},"
                    f"CONTROLLER://127.0.0.1:{self.controller_port}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                    "controller.listener.names=CONTROLLER",
                    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                    "inter.broker.listener.name=PLAINTEXT",
                    f"log.dirs={data}",
                    "num.partitions=6",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=6",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    # A single developer's broker: rebalances should not wait for more members.
                    "group.initial.rebalance.delay.ms=0",
                    # The topic is the system of record: nothing ages out by default.
                    "log.retention.ms=-1",
                    "log.retention.bytes=-1",
                    "auto.create.topics.enable=false",
                    "delete.topic.enable=true",
                    "",
                ]
            )
        )
        (self.home / "log4j2.properties").write_text(_LOG4J2)
        return props

    def _format_once(self, props: Path, libs: Path) -> None:
        data = self.home / "data"
        if (data / "meta.properties").exists():
            return
        data.mkdir(parents=True, exist_ok=True)
        cluster_id = new_cluster_id()
        log.info("kafka_formatting", data=str(data), cluster_id=cluster_id)
        run(
            [
                "java",
                "-cp",
                f"{libs}/*",
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(props),
            ],
            what="formatting Kafka storage",
            timeout=120,
        )

    def start(self, deadline_s: float = 90.0) -> bool:
        """Start the node unless it runs already; return whether it was started now."""
        if self.running():
            return False
        if port_open(self.port):
            raise StackError(f"port {self.port} is taken by a process that is not this stack")
        if self.libs is None:
            raise StackError("the broker's jars were not resolved")
        if shutil.which("java") is None:
            raise StackError("Java (17 or newer) is needed to run Apache Kafka")
        self.home.mkdir(parents=True, exist_ok=True)
        props = self._write_config()
        self._format_once(props, self.libs)
        argv = [
            "java",
            f"-Xmx{self.heap}",
            f"-Xms{self.heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
            "-cp",
            f"{self.libs}/*",
            "kafka.Kafka",
            str(props),
        ]
        spawn(argv, self.log_file, self.pid_file, cwd=self.home)
        log.info("kafka_starting", port=self.port)
        try:
            wait_for_port(self.port, deadline_s, alive=self.pid_file)
        except StackError as exc:
            tail = self.log_file.read_text(errors="replace").splitlines()[-15:]
            raise StackError(f"{exc}; last broker log lines:\n" + "\n".join(tail)) from exc
        return True

    def stop(self) -> bool:
        """Stop the node cleanly (controlled shutdown); return whether it was running."""
        return terminate(self.pid_file, deadline_s=90.0)
