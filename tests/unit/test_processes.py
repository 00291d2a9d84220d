"""The test-support port picker: ports a server can bind that no outgoing connection takes."""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator

import processes
import pytest
from processes import FIRST_TEST_PORT, ephemeral_ports_start, free_port


def test_free_port_lies_below_the_kernels_ephemeral_range_and_can_be_bound() -> None:
    for _ in range(20):
        port = free_port()
        assert FIRST_TEST_PORT <= port < ephemeral_ports_start()
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


@pytest.fixture
def handed_out(monkeypatch: pytest.MonkeyPatch) -> set[int]:
    """Start the test with no port handed out yet; return the set free_port keeps."""
    ports: set[int] = set()
    monkeypatch.setattr(processes, "_HANDED_OUT", ports)
    return ports


def test_free_port_passes_over_a_port_in_use(
    monkeypatch: pytest.MonkeyPatch, handed_out: set[int]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        other = free_port()
        handed_out.clear()
        picks: Iterator[int] = iter([busy, other])
        monkeypatch.setattr(random, "randrange", lambda start, end: next(picks))
        assert free_port() == other


def test_free_port_never_hands_out_a_port_twice(
    monkeypatch: pytest.MonkeyPatch, handed_out: set[int]
) -> None:
    first, later = free_port(), free_port()
    handed_out.discard(later)
    picks: Iterator[int] = iter([first, later])
    monkeypatch.setattr(random, "randrange", lambda start, end: next(picks))
    assert free_port() == later  # first was handed out, though nothing listens on it
