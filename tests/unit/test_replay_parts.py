"""The pure parts of replay: version names, moments, progress, and snapshot differences."""

from __future__ import annotations

import argparse
import io
import json

import pytest
from structlog.testing import capture_logs

from api.asof import moment_ms
from ingest.errors import MlflowError
from projector import versions
from services.cli import parse_moment
from services.progress import Progress
from services.verify import diff_snapshots


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_versions_are_named_after_the_live_schema() -> None:
    assert versions.next_schema("runstream_read") == "runstream_read__next"
    assert versions.prev_schema("runstream_read") == "runstream_read__prev"
    assert versions.as_of_schema("runstream_read", 1700000000123) == (
        "runstream_read__asof_1700000000123"
    )


@pytest.mark.parametrize("live", ['x"; DROP SCHEMA y; --', "a" * 60, "Runstream-Read"])
def test_a_live_name_that_is_no_plain_identifier_is_refused(live: str) -> None:
    with pytest.raises(ValueError, match="invalid schema name"):
        versions.next_schema(live)


def test_a_moment_before_1970_is_refused() -> None:
    with pytest.raises(ValueError, match="before 1970"):
        versions.as_of_schema("runstream_read", -1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1700000000123", 1700000000123),
        ("2023-11-14T22:13:20Z", 1700000000000),
        ("2023-11-14T22:13:20", 1700000000000),  # no zone: UTC
        ("2023-11-14T23:13:20+01:00", 1700000000000),
        ("2023-11-14T22:13:20.5Z", 1700000000500),
    ],
)
def test_the_cli_and_the_api_read_a_moment_alike(text: str, expected: int) -> None:
    assert parse_moment(text) == expected
    assert moment_ms(text) == expected


@pytest.mark.parametrize("text", ["1700000000", "20260101", "²", "9" * 5000, "10000-01-01"])
def test_a_number_that_is_no_epoch_millisecond_or_an_impossible_date_is_a_400(text: str) -> None:
    with pytest.raises(MlflowError) as caught:
        moment_ms(text)
    assert caught.value.error_code == "INVALID_PARAMETER_VALUE"
    with pytest.raises(argparse.ArgumentTypeError):
        parse_moment(text)


def test_a_moment_before_1970_is_refused_by_the_cli() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="before 1970"):
        parse_moment("1969-12-31T00:00:00Z")


def test_a_moment_that_is_neither_iso_nor_a_number_is_refused() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=r"Invalid as_of .*ISO 8601"):
        parse_moment("last tuesday")
    with pytest.raises(MlflowError) as caught:
        moment_ms("last tuesday")
    assert caught.value.error_code == "INVALID_PARAMETER_VALUE"


def test_progress_draws_a_bar_with_rate_and_time_left_on_a_terminal() -> None:
    out = _Tty()
    progress = Progress("replay", stream=out)
    progress.update(0, 1000, force=True)
    progress._window[0] = (progress._window[0][0] - 2.0, 0)  # two seconds ago
    progress.update(500, 1000, force=True)
    progress.finish()
    last = out.getvalue().rstrip("\n").split("\r")[-1]
    assert "replay [###############---------------] 500/1,000 records" in last
    assert " 50.0% " in last
    assert "left 0:00:02" in last or "left 0:00:01" in last
    assert out.getvalue().endswith("\n")


def test_progress_logs_json_events_when_not_on_a_terminal() -> None:
    out = io.StringIO()
    with capture_logs() as logs:
        progress = Progress("verify", stream=out, log_every_s=3600)
        progress.update(10, 100)  # shown: the first reading
        progress.update(20, 100)  # not shown: within the interval
        progress.finish()
    assert out.getvalue() == ""
    shown = [entry for entry in logs if entry["event"] == "verify_progress"]
    assert [(e["done"], e["total"]) for e in shown] == [(10, 100), (20, 100)]


def test_progress_counts_a_resumed_run_from_where_it_resumed() -> None:
    progress = Progress("replay", stream=io.StringIO())
    progress.update(700, 1000)
    assert progress.first == 700
    assert progress.total == 1000


def test_differences_name_the_rows_each_side_lacks() -> None:
    left = {"params": [("r1", "lr", "0.1"), ("r2", "lr", "0.2")], "tags": [("r1", "a", "b")]}
    right = {"params": [("r1", "lr", "tampered"), ("r2", "lr", "0.2")], "tags": [("r1", "a", "b")]}
    lines = diff_snapshots(left, right, "live", "the log")
    assert lines == [
        "params: 1 rows only in live, 1 only in the log",
        "  only in live: ('r1', 'lr', '0.1')",
        "  only in the log: ('r1', 'lr', 'tampered')",
    ]


def test_differences_are_cut_at_the_limit() -> None:
    left = {"params": [("r", str(i), "v") for i in range(50)]}
    lines = diff_snapshots(left, {"params": []}, "a", "b", limit=5)
    assert len(lines) == 6
    assert lines[-1] == "  ..."
    assert json.dumps(lines)  # plain strings, printable as JSON by the CLI
