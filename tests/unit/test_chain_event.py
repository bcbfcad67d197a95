"""ChainEvent has one definition, the .avsc: the transform, the generator and the snapshot follow it."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pytest

from ketenstroom.contract.chain_event import chain_event_avsc, chain_event_fields
from ketenstroom.contract.codec import decode
from sinks.parquet import SCHEMA, arrow_type, snapshot_schema
from synthetic.curated import chain_event
from tests.unit.test_processor_core import SCHEMAS, _raw, _transformer

SINK_COLUMNS = {"period", "event_date", "kafka_partition", "kafka_offset"}


def _plain(typ: pa.DataType) -> pa.DataType:
    return typ.value_type if pa.types.is_dictionary(typ) else typ


def test_every_chain_event_field_is_a_snapshot_column_of_its_type() -> None:
    for field in chain_event_avsc()["fields"]:
        column = SCHEMA.field(field["name"])  # KeyError: a field the snapshot does not carry
        expected = arrow_type(field["type"])
        if pa.types.is_integer(expected):
            assert pa.types.is_integer(column.type), field["name"]
        else:
            assert _plain(column.type) == expected, field["name"]
    assert set(SCHEMA.names) == set(chain_event_fields()) | SINK_COLUMNS


def test_a_field_added_to_the_avsc_becomes_a_column_and_an_unknown_type_is_refused() -> None:
    grown = copy.deepcopy(chain_event_avsc())
    grown["fields"].append({"name": "victim_count", "type": ["null", "int"], "default": None})
    assert snapshot_schema(grown).field("victim_count").type == pa.int32()
    grown["fields"].append({"name": "blob", "type": {"type": "fixed", "name": "B", "size": 4}})
    with pytest.raises(TypeError, match="fixed"):
        snapshot_schema(grown)


def test_the_transform_fills_exactly_the_avsc_fields() -> None:
    transformer = _transformer()
    raw = decode(SCHEMAS["nl.ketenstroom.om.CaseDecision"].parsed, _raw("SEPO").value[5:])
    event = transformer.to_chain_event(raw, {"name": "nl.ketenstroom.om.CaseDecision"})
    assert tuple(event) == chain_event_fields()


def test_the_generators_curated_events_have_exactly_the_avsc_fields() -> None:
    event: dict[str, Any] = chain_event(event_id="e", event_time=datetime(2026, 3, 1, tzinfo=UTC))
    assert tuple(event) == chain_event_fields()
