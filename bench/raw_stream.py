"""The processor's input without Kafka: generated exports of every partner, encoded as ``publish`` does.

For profiles and the processor's fast-path tests: each accepted row becomes the framed Avro bytes the
reference path of ``publish`` writes (rows ``publish`` rejects never reach a raw topic, so they are left
out here too), as a ``RawRecord`` of ``raw.<partner>``. Schema ids are made up per record type;
``writer_schema`` maps them back.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from ketenstroom.catalogue import catalogue_at
from ketenstroom.contract import load_schemas
from ketenstroom.contract.codec import encode
from ketenstroom.contract.wire import frame
from ketenstroom.errors import DecodeError, InputRowError
from ketenstroom.settings import CatalogueSettings
from processors.transform import RawRecord
from producers.config import load_mapping
from producers.publish import build_reference
from producers.reader import read_rows
from synthetic import generate_chain
from synthetic.identity import IdentityNoise


@dataclass(frozen=True)
class RawStream:
    records: list[RawRecord]
    schemas: dict[int, Any]  # schema id -> parsed writer schema

    def writer_schema(self, schema_id: int) -> Any:
        found = self.schemas.get(schema_id)
        if found is None:  # what the registry adapter raises for an id it does not know
            raise DecodeError(f"schema id {schema_id} is unknown", reason="unknown-schema-id")
        return found


def raw_stream(
    *,
    cases: int,
    seed: int = 42,
    noise: float = 0.01,
    start: date | None = None,
    identity: IdentityNoise | None = None,
    partners: list[str] | None = None,
    as_of: date | None = None,
) -> RawStream:
    """Every row of a generated chain that ``publish`` accepts, as the raw records it would produce."""
    paths = CatalogueSettings()
    names = partners or catalogue_at(paths.dir).names
    schemas = load_schemas(paths.schema_dir)
    delivery = datetime.now(UTC)
    ids: dict[str, int] = {}
    parsed: dict[int, Any] = {}
    records: list[RawRecord] = []
    with tempfile.TemporaryDirectory() as tmp:
        report = generate_chain(
            Path(tmp),
            cases=cases,
            seed=seed,
            noise=noise,
            start=start or date(date.today().year - 2, 1, 1),
            identity=identity,
            as_of=as_of,
        )
        for partner in names:
            mapping = load_mapping(partner, schemas)
            topic = f"raw.{partner}"
            for line, row in read_rows(Path(report.partners[partner].path)):
                if not isinstance(row, dict):
                    continue
                try:
                    record = mapping.for_row(row, line)
                    avro, key, _eid = build_reference(
                        mapping,
                        record,
                        row,
                        line,
                        missing=record.missing_columns(list(row)),
                        delivery_time=delivery,
                    )
                except InputRowError:
                    continue
                name = record.schema.fullname
                schema_id = ids.setdefault(name, 100 + len(ids))
                parsed[schema_id] = record.schema.parsed
                value = frame(schema_id, encode(record.schema.parsed, avro))
                records.append(RawRecord(topic, 0, len(records), key, value, (), 1_700_000_000_000))
    return RawStream(records, parsed)


def transformer_for(
    stream: RawStream, *, key: bytes = b"k" * 32, clock: Callable[[], datetime] | None = None
) -> Any:
    """A ``Transformer`` over the shipped catalogue reading ``stream``'s schema ids (no registry)."""
    from ketenstroom.catalogue.terminology import load_terminology
    from processors.pseudonym import Pseudonymiser
    from processors.transform import Transformer, load_municipalities, plans

    paths = CatalogueSettings()
    catalogue = catalogue_at(paths.dir)
    chain = catalogue.schemas["nl.ketenstroom.curated.ChainEvent"]
    extra = {} if clock is None else {"clock": clock}
    return Transformer(
        pseudonymiser=Pseudonymiser(key, "k1"),
        terminology=load_terminology(paths.terminology_dir),
        municipalities=load_municipalities(paths.terminology_dir / "pc4-gemeente.csv"),
        plans=plans(catalogue),
        writer_schema=stream.writer_schema,
        curated_schema_id=1,
        curated_schema=chain.parsed,
        **extra,
    )
