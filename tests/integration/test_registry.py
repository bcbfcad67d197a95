"""Apicurio's Confluent-compatible API with confluent-kafka's own client, serializer and deserializer."""

from __future__ import annotations

import copy
import io

import fastavro
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient, topic_record_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from fastavro.utils import generate_one

from ketenstroom.adapters.registry import Registry
from ketenstroom.contract import Topics, frame, load_schemas
from ketenstroom.contract.codec import decode, encode
from ketenstroom.contract.schemas import EventSchema
from ketenstroom.contract.wire import unframe
from ketenstroom.errors import ConfigurationError
from ketenstroom.settings import CatalogueSettings
from tests.conftest import Services

SCHEMAS = load_schemas(CatalogueSettings().schema_dir)


def _topic(schema: EventSchema, names: Topics) -> str:
    return names.curated if schema.group == "curated" else names.raw(schema.group)


def _normalised_sample(schema: EventSchema) -> dict[str, object]:
    """A random record as fastavro reads it back (dates as date, timestamps as aware datetimes)."""
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema.parsed, generate_one(schema.parsed))
    buf.seek(0)
    return fastavro.schemaless_reader(buf, schema.parsed)  # type: ignore[return-value]


def test_global_compatibility_is_set_explicitly(services: Services) -> None:
    if not services.started_here and services.registry.url != "http://127.0.0.1:8080/apis/ccompat/v7":
        pytest.skip("an external registry's global level is its operator's choice")  # pragma: no cover
    with Registry(services.registry) as registry:
        assert registry.compatibility() == "BACKWARD_TRANSITIVE"


@pytest.mark.parametrize("fullname", sorted(SCHEMAS.events))
def test_every_event_type_round_trips_through_confluents_serializers(
    services: Services, names: Topics, fullname: str, request: pytest.FixtureRequest
) -> None:
    schema = SCHEMAS[fullname]
    topic = _topic(schema, names)
    client = SchemaRegistryClient(services.registry.client_conf())
    request.addfinalizer(client.close)
    # TopicRecordNameStrategy, as the project registers; the client's default ASSOCIATED strategy asks
    # /associations, which Apicurio does not implement (404)
    strategy = {"subject.name.strategy": topic_record_subject_name_strategy}
    serializer = AvroSerializer(client, schema.text, conf={"auto.register.schemas": True, **strategy})
    deserializer = AvroDeserializer(client, conf=strategy)
    ctx = SerializationContext(topic, MessageField.VALUE)
    record = _normalised_sample(schema)
    data = serializer(record, ctx)
    assert data is not None
    assert deserializer(data, ctx) == record

    # our own fast path is wire-compatible in both directions
    ours = Registry(services.registry)
    request.addfinalizer(ours.close)
    schema_id = ours.register(schema.subject(topic), schema)
    assert unframe(data)[0] == schema_id
    assert deserializer(frame(schema_id, encode(schema.parsed, record)), ctx) == record
    sid, payload = unframe(data)
    assert decode(ours.writer_schema(sid), payload) == record


def test_registry_refuses_an_incompatible_change(
    services: Services, names: Topics, request: pytest.FixtureRequest
) -> None:
    current = SCHEMAS["nl.ketenstroom.om.CaseDecision"]
    subject = current.subject(names.raw("om"))
    registry = Registry(services.registry)
    request.addfinalizer(registry.close)
    registry.set_compatibility("BACKWARD_TRANSITIVE", subject)
    registry.register(subject, current)

    broken_json = copy.deepcopy(current.schema)
    broken_json["fields"].append({"name": "verplicht", "type": "string"})  # no default: old data unreadable
    broken = EventSchema(
        current.fullname,
        current.group,
        current.path,
        broken_json,
        fastavro.parse_schema(broken_json, _force=True),
    )
    assert registry.compatible(subject, broken) is False
    with pytest.raises(ConfigurationError, match="incompatible"), Registry(services.registry) as fresh:
        fresh.register(subject, broken)

    compatible_json = copy.deepcopy(current.schema)
    compatible_json["fields"].append({"name": "toelichting", "type": ["null", "string"], "default": None})
    evolved = EventSchema(
        current.fullname,
        current.group,
        current.path,
        compatible_json,
        fastavro.parse_schema(compatible_json, _force=True),
    )
    assert registry.compatible(subject, evolved) is True
    with Registry(services.registry) as fresh:
        assert fresh.register(subject, evolved) != registry.register(subject, current)
