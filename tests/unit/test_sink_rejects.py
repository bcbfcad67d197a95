from __future__ import annotations

import base64
import json
from pathlib import Path

from ketenstroom.adapters.objectstore import ObjectStore
from ketenstroom.settings import KafkaSettings, RegistrySettings
from sinks.runner import Sink, reject_name


def test_an_undecodable_record_is_kept_with_its_reason_not_dropped(tmp_path: Path) -> None:
    store = ObjectStore(f"file://{tmp_path}")
    # nothing here connects: the consumer is never polled, the registry never asked (bad magic byte)
    sink = Sink(
        kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1"), registry=RegistrySettings(), store=store
    )
    try:
        sink._add(2, 41, b"\x07not avro")
    finally:
        sink.loop.close()
        sink.registry.close()
    kept = json.loads(store.get(reject_name(2, 41)))
    assert (kept["partition"], kept["offset"], kept["reason"]) == (2, 41, "undecodable")
    assert base64.b64decode(kept["value_base64"]) == b"\x07not avro"
    assert sink.report.undecodable == 1 and sink.report.written == 0
