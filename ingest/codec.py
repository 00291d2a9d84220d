"""Turn events into Kafka record values and back; the only module that knows Runstream's bytes.

Wire format
-----------
A record value is one format-version byte followed by a payload. Version 1 (``0x01``): the
payload is one MessagePack array of tagged events (``msgspec.msgpack``), each a map keyed by
field name with the event's tag in ``"type"``. A record holds one or more events that all share
one partition key (``ingest.events.partition_key``), so a run's log-batch travels as one record
and stays in order on one partition. The record key is that partition key in UTF-8.

Evolving the contract (msgspec's schema-evolution rules, docs/schema-evolution.rst)
------------------------------------------------------------------------------------
The topic is the system of record and is never rewritten, so every byte ever written must keep
decoding to the same facts, and the golden files in tests/golden/ prove it.

* Add a field only with a default, at the end of its class. Old records lack it and decode with
  the default; old consumers skip it (unknown fields are ignored: never set
  ``forbid_unknown_fields``). Never change a field's type, a tag or an existing default (old
  records take the current default), and never remove or rename a field.
* A new event type is a new class with a new tag added to the union. Consumers that predate it
  reject records holding it (``DecodeError``), so deploy the projector before the producers.
* Anything else is a breaking change: bump ``FORMAT_VERSION``, keep a frozen private copy of the
  old schema next to an upcaster that turns an old payload into current events, register it in
  ``UPCASTERS`` under the old version byte, and keep that version's golden files decoding.

Encoding and decoding are single calls into msgspec with one reused ``Encoder`` and one typed
``Decoder``: no Python code runs per event, which is what keeps 100k metric events a second cheap.
The price: msgspec checks field types when decoding, never when a Struct is constructed or
encoded, so ``MetricLogged(value=True, ...)`` encodes fine and is rejected by every consumer. A
producer holding values it did not decode itself (the emitter, fed by user code) must check them
first, e.g. ``decode_record(encode_record(events))`` once before sending.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Annotated, TypeAlias

import msgspec

from ingest.errors import DecodeError
from ingest.events import Event, partition_key

__all__ = [
    "FORMAT_VERSION",
    "UPCASTERS",
    "Upcaster",
    "decode_record",
    "encode_record",
    "new_event_id",
    "record_key",
]

FORMAT_VERSION = 1

Upcaster: TypeAlias = Callable[[bytes], list[Event]]

# Old format version byte -> function turning that version's payload (the bytes after the version
# byte) into current events. Empty while v1 is the only version ever written.
UPCASTERS: dict[int, Upcaster] = {}

_HEADER = bytes([FORMAT_VERSION])
_ENCODER = msgspec.msgpack.Encoder()
# min_length=1: an empty record is never written, so one on the topic is corruption.
_DECODER: msgspec.msgpack.Decoder[list[Event]] = msgspec.msgpack.Decoder(
    Annotated[list[Event], msgspec.Meta(min_length=1)]
)


def encode_record(events: Sequence[Event]) -> bytes:
    """Return the record value holding ``events`` in the current wire format."""
    if not events:
        raise ValueError("a record needs at least one event")
    if not isinstance(events, list | tuple):
        # msgspec encodes lists and tuples natively; any other Sequence becomes one first.
        events = list(events)
    return _HEADER + _ENCODER.encode(events)


def decode_record(data: bytes) -> list[Event]:
    """Return the events in a record value; raise ``DecodeError`` for anything else."""
    try:
        # cast("B"): byte items whatever the buffer's format, so view[0] is the version number.
        view = memoryview(data).cast("B")
    except TypeError:
        raise DecodeError(f"record value must be bytes, got {type(data).__name__}") from None
    with view:
        if not view:
            raise DecodeError("empty record value: no format version byte")
        version = view[0]
        if version == FORMAT_VERSION:
            try:
                # A memoryview slice: the payload is not copied before msgspec reads it.
                return _DECODER.decode(view[1:])
            except ValueError as exc:
                # msgspec.DecodeError is a ValueError; so is the UnicodeDecodeError msgspec
                # before 0.23 let through for a string that is not valid UTF-8.
                raise DecodeError(f"malformed v{version} record: {exc}") from exc
            except RecursionError as exc:
                # msgspec recurses while skipping unknown nested values; garbage can nest deep.
                raise DecodeError(f"malformed v{version} record: nested too deeply") from exc
        upcaster = UPCASTERS.get(version)
        if upcaster is None:
            known = sorted({FORMAT_VERSION, *UPCASTERS})
            raise DecodeError(
                f"unknown record format version {version:#04x} (this build reads {known})"
            )
        payload = bytes(view[1:])
    try:
        return upcaster(payload)
    except DecodeError:
        raise
    except Exception as exc:
        # Upcasters are arbitrary code; callers are promised DecodeError and nothing else.
        raise DecodeError(f"upcasting a v{version} record failed: {exc!r}") from exc


def record_key(events: Sequence[Event]) -> bytes:
    """Return the UTF-8 partition key shared by ``events``; raise ``ValueError`` if not shared."""
    if not events:
        raise ValueError("a record needs at least one event")
    key = partition_key(events[0])
    for event in events:
        other = partition_key(event)
        if other != key:
            raise ValueError(
                f"events of one record must share one partition key, got {key!r} and {other!r}"
            )
    return key.encode()


def new_event_id() -> str:
    """Return a fresh random event id (32 lowercase hex characters, 128 bits)."""
    return os.urandom(16).hex()
