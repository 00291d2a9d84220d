"""Detached child processes tracked by pid files, and waiting on TCP ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path


class StackError(RuntimeError):
    """A local dependency could not be installed, started or stopped."""


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Return whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for_port(port: int, deadline_s: float, alive: Path | None = None) -> None:
    """Wait until host:port accepts connections, failing early if the pid in `alive` died."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if port_open(port):
            return
        if alive is not None and read_pid(alive) is None:
            raise StackError(f"process of {alive.name} exited before port {port} opened")
        time.sleep(0.2)
    raise StackError(f"port {port} did not open within {deadline_s:.0f}s")


def read_pid(pid_file: Path) -> int | None:
    """Return the pid recorded in pid_file if that process is still alive."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, but another user's
    return pid


def spawn(argv: Sequence[str], log_file: Path, pid_file: Path, cwd: Path) -> int:
    """Start argv as a daemon (not our child, its own session), output appended to log_file.

    `setsid --fork` detaches it so it outlives this CLI and is never left as our zombie; the
    shell records its own pid, which `exec` hands on to the daemon.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.unlink(missing_ok=True)
    with log_file.open("ab") as out:
        subprocess.run(
            ["setsid", "--fork", "sh", "-c", 'echo $$ > "$0"; exec "$@"', str(pid_file), *argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            check=True,
        )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pid = read_pid(pid_file)
        if pid is not None:
            return pid
        time.sleep(0.05)
    raise StackError(f"{argv[0]} did not start (no pid in {pid_file})")


def terminate(pid_file: Path, deadline_s: float = 60.0) -> bool:
    """Stop the process in pid_file with SIGTERM, then SIGKILL after the deadline."""
    pid = read_pid(pid_file)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if read_pid(pid_file) is None:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
        while read_pid(pid_file) is not None:
            time.sleep(0.1)
    pid_file.unlink(missing_ok=True)
    return True


def run(argv: Sequence[str], *, what: str, cwd: Path | None = None, timeout: float = 600) -> str:
    """Run a command to completion and return its output; raise StackError on failure."""
    try:
        done = subprocess.run(
            list(argv), cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StackError(f"{what} failed: {exc}") from exc
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-20:]
        raise StackError(f"{what} failed (exit {done.returncode}):\n" + "\n".join(tail))
    return done.stdout
