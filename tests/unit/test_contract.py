from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

import fastavro
import pytest

from ketenstroom.contract import event_id, frame, load_schemas, unframe
from ketenstroom.contract.codec import decode, encode
from ketenstroom.errors import ConfigurationError, DecodeError
from ketenstroom.settings import CatalogueSettings

SCHEMAS = load_schemas(CatalogueSettings().schema_dir)


def test_event_id_is_deterministic_and_version_sensitive() -> None:
    a = event_id("om", "OM0070001", 1)
    assert a == event_id("om", "OM0070001", 1)
    assert a != event_id("om", "OM0070001", 2)
    assert a != event_id("politie", "OM0070001", 1)
    assert uuid.UUID(a).version == 5


def test_wire_format_round_trip_and_errors() -> None:
    framed = frame(258, b"payload")
    assert framed[:5] == b"\x00\x00\x00\x01\x02"
    schema_id, payload = unframe(framed)
    assert schema_id == 258 and bytes(payload) == b"payload"
    with pytest.raises(DecodeError, match="magic byte"):
        unframe(b"\x01\x00\x00\x00\x01x")
    with pytest.raises(DecodeError, match="shorter"):
        unframe(b"\x00\x00")
    with pytest.raises(DecodeError, match="tombstone"):
        unframe(None)


def test_shared_types_are_inlined_once_and_schema_is_standalone() -> None:
    decision = SCHEMAS["nl.ketenstroom.om.CaseDecision"]
    text = decision.text
    assert text.count('"name":"CodedValue"') == 1  # defined at first use, referenced afterwards
    assert '"nl.ketenstroom.common.CodedValue"' in text
    fastavro.parse_schema(decision.schema)  # standalone: parses without the shared files


def test_case_decision_round_trips() -> None:
    decision = SCHEMAS["nl.ketenstroom.om.CaseDecision"]
    now = datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    record = {
        "metadata": {
            "event_id": str(uuid.uuid4()),
            "partner": "OM",
            "source_system": "COMPAS",
            "source_record_id": "x",
            "record_version": 1,
            "event_time": now,
            "registration_time": now,
            "delivery_time": now,
        },
        "suspect": {
            "skn": "12345678",
            "bsn": None,
            "birth_date": date(1990, 5, 17),
            "sex": "M",
            "postcode": "1011 AB",
        },
        "case": {"parketnummer": "13-246712-15", "pv_number": None},
        "decision": {"code_system": "OM.AFDOENING", "code": "DAGV", "code_system_version": "2024"},
        "sepot_ground": None,
        "offence": None,
    }
    back = decode(decision.parsed, encode(decision.parsed, record))
    assert back["suspect"]["birth_date"] == date(1990, 5, 17)
    assert back["metadata"]["event_time"] == now
    assert back["decision"]["code"] == "DAGV"


def test_corrupt_payload_is_a_decode_error() -> None:
    decision = SCHEMAS["nl.ketenstroom.om.CaseDecision"]
    with pytest.raises(DecodeError):
        decode(decision.parsed, b"\x02")


def test_unknown_schema_name_lists_what_exists() -> None:
    with pytest.raises(ConfigurationError, match="CaseDecision"):
        SCHEMAS["nl.ketenstroom.nope"]


def test_chain_event_has_no_field_for_direct_identifiers() -> None:
    chain = SCHEMAS["nl.ketenstroom.curated.ChainEvent"]
    names = {f["name"] for f in chain.schema["fields"]}
    for forbidden in ("bsn", "skn", "parketnummer", "pv_number", "birth_date", "postcode", "name", "address"):
        assert forbidden not in names


def test_a_schema_without_logical_types_reads_the_same_bytes_as_plain_values() -> None:
    import uuid
    from datetime import UTC, datetime

    from ketenstroom.contract import load_schemas
    from ketenstroom.contract.codec import decode, encode, without_logical_types
    from ketenstroom.settings import CatalogueSettings
    from synthetic.curated import CHAIN_EVENT, chain_event

    schema = load_schemas(CatalogueSettings().schema_dir)[CHAIN_EVENT].parsed
    moment = datetime(2026, 3, 29, 0, 59, 59, 123000, tzinfo=UTC)
    event_id = uuid.uuid4()
    payload = encode(schema, chain_event(event_id=str(event_id), event_time=moment, case="c" * 64))
    typed, plain = decode(schema, payload), decode(without_logical_types(schema), payload)
    assert (
        plain["event_time"] == int(moment.timestamp() * 1000) == int(typed["event_time"].timestamp() * 1000)
    )
    assert plain["event_id"] == str(event_id) == str(typed["event_id"])
    assert {k: v for k, v in plain.items() if not k.endswith(("_time", "_id"))} == {
        k: v for k, v in typed.items() if not k.endswith(("_time", "_id"))
    }


def test_a_decode_error_names_no_memory_address_so_one_record_always_reads_the_same() -> None:
    # fastavro says "cannot read boolean from <_io.BytesIO object at 0x7f...>" for a record cut short
    schema = fastavro.parse_schema(
        {"type": "record", "name": "Cut", "fields": [{"name": "flag", "type": "boolean"}]}
    )
    errors = []
    for _ in range(2):
        with pytest.raises(DecodeError) as raised:
            decode(schema, b"")
        errors.append(str(raised.value))
    assert "cannot read boolean" in errors[0]
    assert " at 0x" not in errors[0]
    assert errors[0] == errors[1]


def test_a_string_that_is_not_utf8_is_refused_without_its_bytes_in_the_error() -> None:
    schema = fastavro.parse_schema(
        {"type": "record", "name": "Named", "fields": [{"name": "s", "type": "string"}]}
    )
    with pytest.raises(DecodeError) as raised:
        decode(schema, b"\x0eJans\x80en")  # "Jans?en", 7 bytes, one not UTF-8
    text = str(raised.value)
    assert "invalid start byte at byte 4 of 7" in text
    assert "Jans" not in text and "\\x80" not in text
