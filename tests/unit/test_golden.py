"""Decode every golden wire sample forever and compare it with the facts it must still mean."""

from __future__ import annotations

import json
import math
import typing
from pathlib import Path
from typing import Any

import msgspec
import pytest

from ingest.codec import FORMAT_VERSION, decode_record
from ingest.events import Event

GOLDEN_DIR = Path(__file__).resolve().parents[1] / "golden"
CURRENT_DIR = GOLDEN_DIR / f"v{FORMAT_VERSION}"
CLASS_BY_TAG: dict[str, type[msgspec.Struct]] = {
    str(cls.__struct_config__.tag): cls for cls in typing.get_args(Event)
}
# Collected at import so each file is its own test; an empty glob is caught by the tests below.
GOLDEN_BINS = sorted(GOLDEN_DIR.glob("v*/*.bin"))


def _plain(value: Any) -> Any:
    """Return ``value`` as JSON-shaped builtins, with NaN made comparable."""
    if isinstance(value, msgspec.Struct):
        value = msgspec.to_builtins(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return "<NaN>"
    return value


def _default(field: msgspec.structs.FieldInfo) -> Any:
    if field.default is not msgspec.NODEFAULT:
        return field.default
    if field.default_factory is not msgspec.NODEFAULT:
        return field.default_factory()
    return msgspec.NODEFAULT


def _check_event(decoded: Event, expected: dict[str, Any]) -> None:
    """Compare one decoded event with its golden description, field by field."""
    tag = expected["type"]
    assert tag in CLASS_BY_TAG, f"golden tag {tag!r} is no longer in the event union"
    assert type(decoded) is CLASS_BY_TAG[tag]
    fields = {f.name: f for f in msgspec.structs.fields(type(decoded))}
    gone = set(expected) - {"type"} - fields.keys()
    assert not gone, f"{tag}: fields {sorted(gone)} were removed or renamed (never allowed)"
    for name, field in fields.items():
        actual = _plain(getattr(decoded, name))
        if name in expected:
            assert actual == _plain(expected[name]), f"{tag}.{name}"
        else:
            # A field added after this sample was written: old bytes must decode to its default.
            default = _default(field)
            assert default is not msgspec.NODEFAULT, f"{tag}.{name}: a new field needs a default"
            assert actual == _plain(default), f"{tag}.{name} should decode to its default"


def test_current_version_has_a_sample_of_every_event_tag() -> None:
    missing = [
        f"{CURRENT_DIR.name}/{tag}.{ext}"
        for tag in CLASS_BY_TAG
        for ext in ("bin", "json")
        if not (CURRENT_DIR / f"{tag}.{ext}").is_file()
    ]
    assert not missing, f"missing golden files (see tests/golden/generate.py): {missing}"


def test_every_golden_bin_has_its_json_and_the_reverse() -> None:
    bins = {p.with_suffix("") for p in GOLDEN_DIR.glob("v*/*.bin")}
    jsons = {p.with_suffix("") for p in GOLDEN_DIR.glob("v*/*.json")}
    assert bins, "no golden files found"
    assert bins == jsons


def test_golden_samples_cover_non_finite_floats_and_multi_event_records() -> None:
    # Guards the extras against deletion: they pin what per-tag samples do not.
    for name in ("metric_logged_non_finite", "log_batch", "run_started_defaults"):
        assert (CURRENT_DIR / f"{name}.bin").is_file(), name


@pytest.mark.parametrize("path", GOLDEN_BINS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_golden_record_decodes_to_its_facts(path: Path) -> None:
    data = path.read_bytes()
    # The directory names the version byte, so old versions are decoded through their upcaster.
    assert f"v{data[0]}" == path.parent.name
    expected = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    decoded = decode_record(data)
    assert len(decoded) == len(expected)
    for event, description in zip(decoded, expected, strict=True):
        _check_event(event, description)


def test_check_event_catches_a_changed_value() -> None:
    # The comparison itself must be able to fail, or the golden tests prove nothing.
    path = CURRENT_DIR / "metric_logged.bin"
    (event,) = decode_record(path.read_bytes())
    (expected,) = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    with pytest.raises(AssertionError, match=r"metric_logged\.value"):
        _check_event(event, {**expected, "value": 0.5})
    with pytest.raises(AssertionError, match="removed or renamed"):
        _check_event(event, {**expected, "old_name": 1})


def test_check_event_accepts_a_field_added_later_with_its_default() -> None:
    path = CURRENT_DIR / "metric_logged_non_finite.bin"
    decoded = decode_record(path.read_bytes())
    expected = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    # As if model_id had been added after these bytes were written.
    for event, description in zip(decoded, expected, strict=True):
        del description["model_id"]
        _check_event(event, description)
