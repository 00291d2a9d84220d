"""Test the event contract and the record codec: tags, round-trips, keys, errors, upcasting."""

from __future__ import annotations

import json
import math
import re
import types
import typing
from collections import UserList
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest import codec
from ingest.codec import (
    FORMAT_VERSION,
    decode_record,
    encode_record,
    new_event_id,
    record_key,
)
from ingest.errors import DecodeError
from ingest.events import (
    DatasetInput,
    Event,
    ExperimentCreated,
    ExperimentDeleted,
    ExperimentEvent,
    ExperimentRenamed,
    ExperimentRestored,
    ExperimentTagDeleted,
    ExperimentTagSet,
    InputsLogged,
    MetricLogged,
    ParamLogged,
    RunDeleted,
    RunEnded,
    RunEvent,
    RunRestored,
    RunStarted,
    RunUpdated,
    Tag,
    TagDeleted,
    TagSet,
    partition_key,
)

RUN = "5f1c0ab2e0c94d5f9d3b6c8a7e2f1d04"
EXP = "12"
AT = 1_717_000_000_000
ALL_CLASSES: tuple[type[Any], ...] = typing.get_args(Event)
RUN_CLASSES: tuple[type[Any], ...] = typing.get_args(RunEvent)
EXPERIMENT_CLASSES: tuple[type[Any], ...] = typing.get_args(ExperimentEvent)

# The wire names of every event. A change here changes bytes on a topic that is never rewritten:
# a new event adds a line; nothing is ever renamed or removed.
PINNED_TAGS = {
    "ExperimentCreated": "experiment_created",
    "ExperimentRenamed": "experiment_renamed",
    "ExperimentDeleted": "experiment_deleted",
    "ExperimentRestored": "experiment_restored",
    "ExperimentTagSet": "experiment_tag_set",
    "ExperimentTagDeleted": "experiment_tag_deleted",
    "RunStarted": "run_started",
    "ParamLogged": "param_logged",
    "MetricLogged": "metric_logged",
    "TagSet": "tag_set",
    "TagDeleted": "tag_deleted",
    "RunUpdated": "run_updated",
    "RunEnded": "run_ended",
    "RunDeleted": "run_deleted",
    "RunRestored": "run_restored",
    "InputsLogged": "inputs_logged",
}


def _ids() -> typing.Iterator[str]:
    n = 0
    while True:
        n += 1
        yield f"{n:032x}"


def sample_events() -> list[Event]:
    """Return one event of every type, with every field set away from its default."""
    ids = _ids()
    dataset = DatasetInput(
        name="mnist",
        digest="abc123",
        source_type="s3",
        source='{"uri": "s3://b/mnist"}',
        schema='{"cols": []}',
        profile='{"rows": 70000}',
        tags=(Tag("mlflow.data.context", "eval"),),
    )
    common: dict[str, Any] = {"at": AT}
    run: dict[str, Any] = {**common, "run_id": RUN}
    exp: dict[str, Any] = {**common, "experiment_id": EXP}
    return [
        ExperimentCreated(
            event_id=next(ids),
            **exp,
            name="e",
            artifact_location="s3://a/12",
            tags=(Tag("a", "b"),),
        ),
        ExperimentRenamed(event_id=next(ids), **exp, name="e2"),
        ExperimentDeleted(event_id=next(ids), **exp),
        ExperimentRestored(event_id=next(ids), **exp),
        ExperimentTagSet(event_id=next(ids), **exp, key="k", value="v"),
        ExperimentTagDeleted(event_id=next(ids), **exp, key="k"),
        RunStarted(
            event_id=next(ids),
            **run,
            experiment_id=EXP,
            run_name="bright-owl-42",
            user_id="bob",
            start_time=AT,
            artifact_uri=f"s3://a/12/{RUN}/artifacts",
            status="SCHEDULED",
            tags=(Tag("mlflow.parentRunId", "p" * 32),),
            parent_run_id="p" * 32,
        ),
        ParamLogged(event_id=next(ids), **run, key="lr", value="0.1"),
        MetricLogged(
            event_id=next(ids),
            **run,
            key="loss",
            value=1.5,
            timestamp=AT,
            step=-7,
            model_id="m-1",
            dataset_name="mnist",
            dataset_digest="abc123",
        ),
        TagSet(event_id=next(ids), **run, key="k", value=""),
        TagDeleted(event_id=next(ids), **run, key="k"),
        RunUpdated(event_id=next(ids), **run, status="FAILED", end_time=AT + 1, run_name="n"),
        RunEnded(event_id=next(ids), **run, status="KILLED", end_time=AT + 2),
        RunDeleted(event_id=next(ids), **run),
        RunRestored(event_id=next(ids), **run),
        InputsLogged(event_id=next(ids), **run, datasets=(dataset,), model_ids=("m-1", "m-2")),
    ]


def plain(value: Any) -> Any:
    """Return ``value`` as builtins with NaN made equal to NaN, for comparing events."""
    if isinstance(value, msgspec.Struct):
        return {"__class__": type(value).__name__, **plain(msgspec.to_builtins(value))}
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return "<NaN>"
    return value


def round_trip(events: list[Event]) -> list[Event]:
    return decode_record(encode_record(events))


def metric(value: float = 1.0, *, key: str = "m", step: int = 0, run_id: str = RUN) -> MetricLogged:
    return MetricLogged(
        event_id=new_event_id(), at=AT, run_id=run_id, key=key, value=value, timestamp=AT, step=step
    )


def v1(payload: Any) -> bytes:
    """Return a v1 record of ``payload`` encoded untyped, as a foreign writer would."""
    return b"\x01" + msgspec.msgpack.encode(payload)


def raw(event: Event, **changes: Any) -> dict[str, Any]:
    """Return an event as the untyped map the wire holds, with ``changes`` applied (None drops)."""
    out: dict[str, Any] = msgspec.to_builtins(event)
    for name, value in changes.items():
        if value is None:
            out.pop(name, None)
        else:
            out[name] = value
    return out


# --- the contract ------------------------------------------------------------------------------


def test_tags_are_pinned() -> None:
    assert {cls.__name__: cls.__struct_config__.tag for cls in ALL_CLASSES} == PINNED_TAGS


def test_every_event_is_a_frozen_keyword_only_struct_tagged_in_type() -> None:
    for cls in ALL_CLASSES:
        config = cls.__struct_config__
        assert config.frozen, cls
        assert config.tag_field == "type", cls
        assert not config.forbid_unknown_fields, cls  # old consumers must skip new fields
        names = [f.name for f in msgspec.structs.fields(cls)]
        assert names[:2] == ["event_id", "at"], cls
    with pytest.raises(TypeError, match="positional"):
        ParamLogged("e", AT, RUN, "k", "v")  # type: ignore[call-arg]


def test_unions_partition_all_events() -> None:
    assert set(RUN_CLASSES).isdisjoint(EXPERIMENT_CLASSES)
    assert set(RUN_CLASSES) | set(EXPERIMENT_CLASSES) == set(ALL_CLASSES)
    assert all("run_id" in cls.__struct_fields__ for cls in RUN_CLASSES)
    assert all("experiment_id" in cls.__struct_fields__ for cls in EXPERIMENT_CLASSES)


def test_samples_cover_every_event_type() -> None:
    assert {type(e) for e in sample_events()} == set(ALL_CLASSES)


def test_events_are_immutable_and_hashable() -> None:
    event = metric()
    with pytest.raises(AttributeError):
        event.value = 2.0  # type: ignore[misc]
    assert hash(event) == hash(msgspec.structs.replace(event))


def test_run_started_defaults() -> None:
    started = RunStarted(
        event_id="e",
        at=AT,
        run_id=RUN,
        experiment_id="0",
        run_name="",
        user_id="",
        start_time=0,
        artifact_uri="",
    )
    assert (started.status, started.tags, started.parent_run_id) == ("RUNNING", (), None)


@pytest.mark.parametrize("event", sample_events(), ids=lambda e: type(e).__name__)
def test_partition_key(event: Event) -> None:
    if isinstance(event, RUN_CLASSES):
        assert partition_key(event) == RUN  # RunStarted too: its experiment_id is not its key
    else:
        assert partition_key(event) == f"experiment:{EXP}"


# --- round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize("event", sample_events(), ids=lambda e: type(e).__name__)
def test_every_event_type_round_trips(event: Event) -> None:
    (decoded,) = round_trip([event])
    assert type(decoded) is type(event)
    assert decoded == event


@pytest.mark.parametrize(
    "value", [math.nan, math.inf, -math.inf, -0.0, 5e-324, 1.7976931348623157e308]
)
def test_metric_values_round_trip_bit_for_bit(value: float) -> None:
    (decoded,) = round_trip([metric(value)])
    assert isinstance(decoded, MetricLogged)
    assert msgspec.msgpack.encode(decoded.value) == msgspec.msgpack.encode(value)
    assert math.isnan(decoded.value) == math.isnan(value)
    assert math.copysign(1.0, decoded.value) == math.copysign(1.0, value)


def test_integer_metric_value_decodes_as_float() -> None:
    # A foreign producer may write 3 for 3.0; msgspec widens int to float for a float field.
    (decoded,) = decode_record(v1([raw(metric(), value=3)]))
    assert isinstance(decoded, MetricLogged)
    assert type(decoded.value) is float
    assert decoded.value == 3.0


def test_unicode_keys_and_values_round_trip() -> None:
    texts = ["größe", "模型/损失", "loss 📉", "e\u0301", "\x00nul", "\u200b", "a" * 10_000]
    events: list[Event] = [
        TagSet(event_id=new_event_id(), at=AT, run_id="rün-ü", key=t, value=t[::-1]) for t in texts
    ]
    assert plain(round_trip(events)) == plain(events)
    assert record_key(events) == "rün-ü".encode()


def test_many_events_in_one_record_keep_their_order() -> None:
    events: list[Event] = [metric(float(i), key=f"k{i % 7}", step=i) for i in range(5000)]
    events += [ParamLogged(event_id=new_event_id(), at=AT, run_id=RUN, key="p", value="1")]
    events += [TagSet(event_id=new_event_id(), at=AT, run_id=RUN, key="t", value="2")]
    assert round_trip(events) == events


def test_encode_record_accepts_any_sequence() -> None:
    events = [metric(1.0), metric(2.0)]
    expected = encode_record(events)
    assert encode_record(tuple(events)) == expected
    assert encode_record(UserList(events)) == expected


def test_encode_record_writes_the_version_byte_then_one_msgpack_array() -> None:
    data = encode_record([metric()])
    assert data[0] == FORMAT_VERSION == 1
    payload = msgspec.msgpack.decode(data[1:])
    assert isinstance(payload, list)
    assert payload[0]["type"] == "metric_logged"


def test_encode_record_rejects_an_empty_record() -> None:
    with pytest.raises(ValueError, match="at least one event"):
        encode_record([])


# --- schema evolution ----------------------------------------------------------------------------


def test_unknown_fields_are_skipped() -> None:
    # What an older consumer does with a record from a newer producer.
    event = metric()
    (decoded,) = decode_record(v1([raw(event, added_later={"deep": [1, 2, {"x": None}]})]))
    assert decoded == event


@pytest.mark.parametrize("event", sample_events(), ids=lambda e: type(e).__name__)
def test_missing_defaulted_fields_take_their_defaults(event: Event) -> None:
    # What a newer consumer does with a record from an older producer that lacked those fields.
    fields = msgspec.structs.fields(type(event))
    required = {f.name: getattr(event, f.name) for f in fields if f.required}
    wire = raw(event, **{f.name: None for f in fields if not f.required})
    assert set(wire) == {"type", *required}
    assert decode_record(v1([wire])) == [type(event)(**required)]


def test_defaults_are_pinned() -> None:
    # A default is what every record written before its field existed decodes to, forever:
    # a new defaulted field adds a line here; an existing line never changes.
    defaults = {
        f"{cls.__struct_config__.tag}.{f.name}": f.default
        for cls in ALL_CLASSES
        for f in msgspec.structs.fields(cls)
        if not f.required
    }
    assert defaults == {
        "run_started.status": "RUNNING",
        "run_started.tags": (),
        "run_started.parent_run_id": None,
        "metric_logged.step": 0,
        "metric_logged.model_id": None,
        "metric_logged.dataset_name": None,
        "metric_logged.dataset_digest": None,
        "run_updated.status": None,
        "run_updated.end_time": None,
        "run_updated.run_name": None,
        "inputs_logged.datasets": (),
        "inputs_logged.model_ids": (),
        "experiment_created.tags": (),
    }


def test_upcaster_turns_an_older_version_into_current_events(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A made-up v0: JSON [[run_id, key, value], ...] of params, with ms times in "at".
    def upcast_v0(payload: bytes) -> list[Event]:
        doc = json.loads(payload)
        return [
            ParamLogged(event_id=f"v0-{i}", at=doc["at"], run_id=r, key=k, value=v)
            for i, (r, k, v) in enumerate(doc["params"])
        ]

    monkeypatch.setitem(codec.UPCASTERS, 0, upcast_v0)
    old = (
        b"\x00" + json.dumps({"at": AT, "params": [[RUN, "lr", "0.1"], [RUN, "bs", "32"]]}).encode()
    )
    assert decode_record(old) == [
        ParamLogged(event_id="v0-0", at=AT, run_id=RUN, key="lr", value="0.1"),
        ParamLogged(event_id="v0-1", at=AT, run_id=RUN, key="bs", value="32"),
    ]
    # A failing upcaster still answers DecodeError, never its own exception.
    with pytest.raises(DecodeError, match="upcasting a v0 record failed"):
        decode_record(b"\x00not json")
    with pytest.raises(DecodeError, match=re.escape("this build reads [0, 1]")):
        decode_record(b"\x07")


def test_no_upcaster_shadows_the_current_version() -> None:
    assert FORMAT_VERSION not in codec.UPCASTERS


# --- decode failures -----------------------------------------------------------------------------

_GOOD = metric()
_DECODE_FAILURES: dict[str, tuple[Any, str]] = {
    "empty bytes": (b"", "empty record value"),
    "version 0 without upcaster": (b"\x00" + encode_record([_GOOD])[1:], "unknown record format"),
    "version 2": (b"\x02" + encode_record([_GOOD])[1:], r"unknown record format version 0x02"),
    "version 0xff": (b"\xff", "unknown record format version 0xff"),
    "version byte only": (b"\x01", "truncated"),
    "msgpack garbage": (b"\x01\xc1\xc1", "malformed"),
    "truncated record": (encode_record([_GOOD])[:-5], "truncated"),
    "trailing bytes": (encode_record([_GOOD]) + b"\x00", "trailing"),
    "empty array": (v1([]), "length >= 1"),
    "not an array": (v1({"type": "metric_logged"}), "Expected `array`"),
    "event not a map": (v1([1]), r"Expected `object`, got `int` - at `\$\[0\]`"),
    "unknown tag": (v1([raw(_GOOD, type="metric_deleted")]), r"Invalid value 'metric_deleted'"),
    "missing tag": (v1([raw(_GOOD, type=None)]), "missing required field `type`"),
    "tag of wrong type": (v1([raw(_GOOD, type=3)]), r"at `\$\[0\]\.type`"),
    "string for int": (v1([raw(_GOOD, at="1")]), r"Expected `int`, got `str` - at `\$\[0\]\.at`"),
    "string for float": (v1([raw(_GOOD, value="NaN")]), r"Expected `float`, got `str`"),
    "bool for int": (v1([raw(_GOOD, step=True)]), r"Expected `int`, got `bool`"),
    "float for int": (v1([raw(_GOOD, timestamp=1.5)]), r"Expected `int`, got `float`"),
    "missing required field": (v1([raw(_GOOD, key=None)]), "missing required field `key`"),
    "bad nested value": (
        v1([{**raw(sample_events()[0]), "tags": ["a=b"]}]),
        r"Expected `object`, got `str` - at `\$\[0\]\.tags\[0\]`",
    ),
    "one bad event among good ones": (
        v1([raw(_GOOD), raw(_GOOD, run_id=None)]),
        r"missing required field `run_id` - at `\$\[1\]`",
    ),
    "deep nesting in an unknown field": (
        b"\x01\x91\x81\xa1x" + b"\x91" * 200_000 + b"\xc0",
        "malformed",
    ),
    "invalid utf-8 in a string": (
        encode_record([_GOOD]).replace(b"\xa3key\xa1m", b"\xa3key\xa1\x80"),
        # msgspec before 0.23 let Python's UnicodeDecodeError through; 0.23 raises its own
        r"malformed v1 record: (?i:.*utf-8)",
    ),
    "not bytes": ("\x01", "must be bytes, got str"),
    "tombstone": (None, "must be bytes, got NoneType"),
}


@pytest.mark.parametrize(
    ("data", "message"), list(_DECODE_FAILURES.values()), ids=list(_DECODE_FAILURES)
)
def test_decode_failures_raise_decode_error(data: Any, message: str) -> None:
    with pytest.raises(DecodeError, match=message) as caught:
        decode_record(data)
    assert type(caught.value) is DecodeError


def test_decode_accepts_bytearray_and_memoryview() -> None:
    data = encode_record([_GOOD])
    assert decode_record(bytearray(data)) == decode_record(memoryview(data)) == [_GOOD]  # type: ignore[arg-type]


# --- record keys and ids -------------------------------------------------------------------------


def test_record_key_of_run_and_experiment_records() -> None:
    samples = sample_events()
    run_events = [e for e in samples if isinstance(e, RUN_CLASSES)]
    experiment_events = [e for e in samples if isinstance(e, EXPERIMENT_CLASSES)]
    assert record_key(run_events) == RUN.encode()
    assert record_key(experiment_events) == b"experiment:12"


@pytest.mark.parametrize(
    "events",
    [
        [metric(run_id="a"), metric(run_id="b")],
        [metric(run_id="a"), metric(run_id="a"), metric(run_id="b")],
        [metric(run_id="12"), ExperimentDeleted(event_id="e", at=AT, experiment_id="12")],
        [
            ExperimentDeleted(event_id="e", at=AT, experiment_id="1"),
            ExperimentDeleted(event_id="f", at=AT, experiment_id="2"),
        ],
    ],
    ids=["two runs", "third differs", "run and experiment", "two experiments"],
)
def test_record_key_rejects_mixed_keys(events: list[Event]) -> None:
    with pytest.raises(ValueError, match="share one partition key"):
        record_key(events)


def test_record_key_rejects_an_empty_record() -> None:
    with pytest.raises(ValueError, match="at least one event"):
        record_key([])


def test_new_event_id_is_32_hex_and_unique() -> None:
    ids = [new_event_id() for _ in range(10_000)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert len(set(ids)) == len(ids)


# --- properties ----------------------------------------------------------------------------------


def _strategy(tp: Any) -> st.SearchStrategy[Any]:
    """Return a strategy for any value of the field type ``tp`` (derived, so new fields count)."""
    if tp is str:
        return st.text(max_size=12)
    if tp is int:
        return st.integers(min_value=-(2**63), max_value=2**64 - 1)  # msgpack's whole range
    if tp is float:
        return st.floats(allow_nan=True, allow_infinity=True)
    if tp is type(None):
        return st.none()
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*(_strategy(a) for a in args))
    if origin is tuple:
        return st.lists(_strategy(args[0]), max_size=3).map(tuple)
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return _struct_strategy(tp)
    raise TypeError(f"no strategy for {tp!r}: extend _strategy")


def _struct_strategy(cls: type[Any], **fixed: Any) -> st.SearchStrategy[Any]:
    kwargs = {f.name: _strategy(f.type) for f in msgspec.structs.fields(cls)}
    kwargs.update({name: st.just(value) for name, value in fixed.items()})
    return st.builds(cls, **kwargs)


@st.composite
def one_key_records(draw: st.DrawFn) -> tuple[list[Event], str]:
    """Draw a non-empty list of events that share one partition key, and that key."""
    key_id = draw(st.text(min_size=1, max_size=40))
    if draw(st.booleans()):
        classes, key_field, key = RUN_CLASSES, "run_id", key_id
    else:
        classes, key_field, key = EXPERIMENT_CLASSES, "experiment_id", f"experiment:{key_id}"
    one = st.sampled_from(classes).flatmap(lambda c: _struct_strategy(c, **{key_field: key_id}))
    return draw(st.lists(one, min_size=1, max_size=25)), key


@given(one_key_records())
def test_any_one_key_record_round_trips(record: tuple[list[Event], str]) -> None:
    events, key = record
    assert record_key(events) == key.encode()
    assert plain(round_trip(events)) == plain(events)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_decode_or_raise_decode_error(data: bytes) -> None:
    for candidate in (data, b"\x01" + data):
        try:
            decoded = decode_record(candidate)
        except DecodeError:
            continue
        assert decoded
        assert all(isinstance(e, ALL_CLASSES) for e in decoded)


@given(st.data())
def test_corrupted_records_decode_or_raise_decode_error(data: st.DataObject) -> None:
    record = bytearray(encode_record(sample_events()[6:]))
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        at = data.draw(st.integers(min_value=1, max_value=len(record) - 1))
        record[at] = data.draw(st.integers(min_value=0, max_value=255))
    try:
        decoded = decode_record(bytes(record))
    except DecodeError:
        return
    assert all(isinstance(e, ALL_CLASSES) for e in decoded)
