"""The local stack's Kafka cluster id (`deploy.local.kafka.new_cluster_id`)."""

from __future__ import annotations

import base64
import uuid
from unittest import mock

from deploy.local.kafka import new_cluster_id


def test_a_cluster_id_never_starts_with_a_dash() -> None:
    # 0xF8 as the first byte is "-" as the first URL-safe base64 character
    dashed = uuid.UUID(bytes=bytes([0xF8]) + bytes(15))
    plain = uuid.UUID(bytes=bytes([0x10]) + bytes(15))
    assert base64.urlsafe_b64encode(dashed.bytes).decode().startswith("-")
    with mock.patch("deploy.local.kafka.uuid.uuid4", side_effect=[dashed, dashed, plain]) as made:
        cluster_id = new_cluster_id()
    assert made.call_count == 3
    assert cluster_id == base64.urlsafe_b64encode(plain.bytes).decode().rstrip("=")
    assert len(cluster_id) == 22  # Kafka's form: 16 bytes, unpadded


def test_cluster_ids_are_random() -> None:
    ids = {new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    assert not any(i.startswith("-") for i in ids)
