"""A private PostgreSQL cluster from Debian's packages, on its own port, trust auth on loopback."""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
from dataclasses import dataclass
from pathlib import Path

import structlog

from deploy.local.process import StackError, port_open, run

log = structlog.get_logger(__name__)

_PG_ROOT = Path("/usr/lib/postgresql")


def find_bin_dir(install: bool = True) -> Path:
    """Return the newest installed PostgreSQL server's bin folder, installing it when missing."""
    candidates = sorted(
        (p / "bin" for p in _PG_ROOT.glob("*") if (p / "bin" / "pg_ctl").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if candidates:
        return candidates[-1]
    if not install or os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise StackError(
            "PostgreSQL server binaries not found; install Debian's 'postgresql' package "
            "or set RUNSTREAM_DATABASE_URL to an existing server"
        )
    log.info("postgres_installing", package="postgresql")
    env_prefix = ["env", "DEBIAN_FRONTEND=noninteractive"]
    run([*env_prefix, "apt-get", "update", "-q"], what="apt-get update")
    run(
        [*env_prefix, "apt-get", "install", "-y", "-q", "--no-install-recommends", "postgresql"],
        what="apt-get install postgresql",
    )
    return find_bin_dir(install=False)


def _server_user() -> str | None:
    """Return the OS user the server must run as: 'postgres' when we are root, else ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise StackError(
            "running as root needs the 'postgres' OS user (Debian's package)"
        ) from None
    return "postgres"


@dataclass(frozen=True)
class PostgresCluster:
    """A cluster whose data lives in `home` (or a reachable stand-in when run as root)."""

    home: Path
    port: int
    database: str = "runstream"
    user: str = "runstream"

    @property
    def data_dir(self) -> Path:
        """Return the cluster's data folder."""
        pointer = self.home / "postgres.datadir"
        if pointer.exists():
            return Path(pointer.read_text().strip())
        return self.home / "postgres"

    @property
    def dsn(self) -> str:
        """Return the DSN of the Runstream database."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def _as_server(self, argv: list[str]) -> list[str]:
        user = _server_user()
        return ["runuser", "-u", user, "--", *argv] if user else argv

    def _choose_data_dir(self) -> Path:
        wanted = self.home / "postgres"
        user = _server_user()
        if user is None:
            return wanted
        # The server may not run as root; its user must reach the folder. A clone in a private
        # temporary folder is not reachable, so the data then lives under /var/lib instead.
        probe = self.home
        reachable = all(os.stat(p).st_mode & 0o001 for p in [probe, *probe.parents])
        if reachable:
            return wanted
        digest = hashlib.sha256(str(self.home).encode()).hexdigest()[:12]
        elsewhere = Path("/var/lib/runstream") / digest / "postgres"
        (self.home / "postgres.datadir").write_text(f"{elsewhere}\n")
        return elsewhere

    def _init_once(self, bin_dir: Path) -> Path:
        data = self.data_dir
        if (data / "PG_VERSION").exists():
            return data
        data = self._choose_data_dir()
        data.mkdir(parents=True, exist_ok=True)
        user = _server_user()
        if user:
            shutil.chown(data, user, user)
            data.chmod(0o700)
        log.info("postgres_initdb", data=str(data))
        run(
            self._as_server(
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    self.user,
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                ]
            ),
            what="initdb",
        )
        with (data / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# Runstream's local stack\n"
                f"port = {self.port}\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{data}'\n"
                "max_connections = 300\n"
                "shared_buffers = 512MB\n"
                "work_mem = 32MB\n"
                "maintenance_work_mem = 256MB\n"
                "max_wal_size = 4GB\n"
                "checkpoint_timeout = 15min\n"
                "logging_collector = off\n"
            )
        return data

    def running(self) -> bool:
        """Return whether this cluster's server is up."""
        data = self.data_dir
        return (data / "postmaster.pid").exists() and port_open(self.port)

    def start(self) -> bool:
        """Initialise on first use and start the server unless it runs; True if started now."""
        bin_dir = find_bin_dir()
        data = self._init_once(bin_dir)
        if self.running():
            return False
        if port_open(self.port):
            raise StackError(f"port {self.port} is taken by a process that is not this stack")
        logfile = self.home / "postgres.log"
        logfile.touch()
        user = _server_user()
        if user:
            shutil.chown(logfile, user, user)
        run(
            self._as_server(
                [
                    str(bin_dir / "pg_ctl"),
                    "-D",
                    str(data),
                    "-l",
                    str(logfile),
                    "-w",
                    "-t",
                    "60",
                    "start",
                ]
            ),
            what="starting PostgreSQL",
        )
        self._create_database(bin_dir)
        return True

    def _create_database(self, bin_dir: Path) -> None:
        psql = [
            str(bin_dir / "psql"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            self.user,
            "-d",
            "postgres",
            "-tAc",
        ]
        exists = run(
            [*psql, f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'"],
            what="looking up the database",
        )
        if exists.strip() != "1":
            run([*psql, f'CREATE DATABASE "{self.database}"'], what="creating the database")

    def stop(self) -> bool:
        """Stop the server (fast shutdown: sessions end, committed data stays); True if it ran."""
        if not (self.data_dir / "postmaster.pid").exists():
            return False
        bin_dir = find_bin_dir(install=False)
        run(
            self._as_server(
                [
                    str(bin_dir / "pg_ctl"),
                    "-D",
                    str(self.data_dir),
                    "-m",
                    "fast",
                    "-w",
                    "-t",
                    "60",
                    "stop",
                ]
            ),
            what="stopping PostgreSQL",
        )
        return True
