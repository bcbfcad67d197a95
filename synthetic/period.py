"""One period's curated events as Arrow, vectorised (numpy), for release tests and the release benchmark.

Cases flow police (crime and suspect registration) -> OM (registration, decision) -> court -> CJIB,
DJI and reclassering, all within the period, with SCM2010, decision, outcome, sanction and detention
concepts, so that every published table has cells. Pseudonyms are random 64-hex strings shaped like the
processor's HMACs; no identifier is ever generated. A million events take a few seconds. The caller
passes the snapshot's Arrow schema (``sinks.parquet.SCHEMA``), which the result is cast to.
"""

from __future__ import annotations

import uuid

import numpy as np
import pyarrow as pa

from ketenstroom.calendar import period_bounds

EVENTS_PER_CASE = 8
MUNICIPALITIES = [f"GM{n:04d}" for n in (363, 518, 599, 344, 14, 34, 200, 202, 268, 772, 855, 153, 1680, 106)]
SCM = [("1", "11"), ("1", "12"), ("2", "21"), ("3", "31"), ("3", "32"), ("5", "52"), ("6", "61"), ("7", "7")]
DECISIONS = [
    "DAGVAARDING",
    "STRAFBESCHIKKING",
    "ONVOORWAARDELIJK_SEPOT",
    "TRANSACTIE",
    "VOORWAARDELIJK_BELEIDSSEPOT",
    "OVERIG",
]
OUTCOMES = ["SCHULDIG_MET_STRAF", "SCHULDIG_ZONDER_STRAF", "VRIJSPRAAK_ONTSLAG"]
SANCTIONS = ["GEVANGENISSTRAF", "TAAKSTRAF", "GELDBOETE"]


def _hex(rng: np.random.Generator, n: int) -> pa.Array:
    text = rng.integers(0, 256, size=(n, 32), dtype=np.uint8).tobytes().hex()
    return pa.array([text[i * 64 : (i + 1) * 64] for i in range(n)], pa.string())


def _concepts(n: int, slots: list[tuple[str, np.ndarray]], concept: pa.DataType) -> pa.Array:
    """A list<concept> column with ``len(slots)`` concepts a row: (vocabulary, codes per row)."""
    k = len(slots)
    if k == 0:
        return pa.ListArray.from_arrays(pa.array(np.zeros(n + 1, np.int32)), pa.array([], concept))
    codes = np.stack([c for _, c in slots], axis=1).ravel()
    vocab = np.tile(np.array([v for v, _ in slots], dtype=object), n)
    empty = pa.array(np.full(n * k, "x", dtype=object), pa.string())
    struct = pa.StructArray.from_arrays(
        [pa.array(vocab, pa.string()), pa.array(codes, pa.string()), empty, empty, empty, empty],
        fields=list(concept),
    )
    return pa.ListArray.from_arrays(pa.array(np.arange(0, n * k + 1, k, dtype=np.int32)), struct)


def period_events(total: int, schema: pa.Schema, period: str = "2026MM03", seed: int = 1) -> pa.Table:
    """``total`` events of one month: cases flowing police -> OM -> court -> execution, vectorised."""
    rng = np.random.default_rng(seed)
    concept = schema.field("concepts").type.value_type
    n = total // EVENTS_PER_CASE
    start, _end = period_bounds(period)
    base = np.datetime64(start.replace(tzinfo=None), "ms")
    report, case, execution = _hex(rng, n), _hex(rng, n), _hex(rng, n)
    people = _hex(rng, max(n * 2 // 3, 1))
    person = people.take(pa.array(rng.integers(0, len(people), n)))
    age = rng.integers(12, 80, n).astype(np.int16)
    sex = rng.choice(np.array(["M", "V", "O"], dtype=object), n, p=[0.78, 0.2, 0.02])
    scm = np.array(SCM, dtype=object)[rng.integers(0, len(SCM), n)]
    t = base + (rng.random(n) * 10 * 86_400_000).astype("timedelta64[ms]")
    steps = [
        (
            "politie",
            "POLICE_CRIME_REGISTERED",
            dict(report=report),
            [("scm2010", scm[:, 0]), ("scm2010", scm[:, 1])],
        ),
        ("politie", "POLICE_SUSPECT_REGISTERED", dict(report=report, person=person), []),
        (
            "om",
            "OM_REGISTRATION",
            dict(report=report, case=case, person=person),
            [("scm2010", scm[:, 0]), ("scm2010", scm[:, 1])],
        ),
        (
            "om",
            "OM_DECISION",
            dict(report=report, case=case, person=person),
            [
                ("om-beslissing", rng.choice(np.array(DECISIONS, dtype=object), n)),
                ("sepot-soort", rng.choice(np.array(["TECHNISCH", "BELEID"], dtype=object), n)),
                ("scm2010", scm[:, 0]),
            ],
        ),
        (
            "rechtspraak",
            "COURT_JUDGMENT",
            dict(case=case, person=person),
            [
                ("rechtspraak-eindbeslissing", rng.choice(np.array(OUTCOMES, dtype=object), n)),
                ("sanctie", rng.choice(np.array(SANCTIONS, dtype=object), n)),
            ],
        ),
        ("cjib", "EXECUTION_COLLECTION_STARTED", dict(case=case, execution=execution, person=person), []),
        (
            "dji",
            "DETENTION_INFLOW",
            dict(case=case, person=person),
            [
                (
                    "detentie-titel",
                    rng.choice(np.array(["VRIJHEIDSSTRAF", "VOORLOPIGE_HECHTENIS"], dtype=object), n),
                )
            ],
        ),
        ("reclassering", "SUPERVISION_STARTED", dict(case=case, person=person), []),
    ]
    tables = []
    for partner, step, keys, slots in steps:
        t = t + (rng.random(n) * 2.5 * 86_400_000).astype("timedelta64[ms]")
        cols = {
            "period": pa.array(np.full(n, period, dtype=object), pa.string()),
            "event_id": pa.array([str(uuid.UUID(int=int(x))) for x in rng.integers(0, 2**62, n)]),
            "source_partner": pa.array(np.full(n, partner, dtype=object), pa.string()),
            "source_event_type": pa.array(np.full(n, step, dtype=object), pa.string()),
            "event_time": pa.array(t, pa.timestamp("ms")).cast(pa.timestamp("ms", tz="UTC")),
            "chain_step": pa.array(np.full(n, step, dtype=object), pa.string()),
            "case_pseudonym": keys.get("case", pa.nulls(n, pa.string())),
            "report_pseudonym": keys.get("report", pa.nulls(n, pa.string())),
            "execution_pseudonym": keys.get("execution", pa.nulls(n, pa.string())),
            "person_pseudonym": keys.get("person", pa.nulls(n, pa.string())),
            "age_at_event": pa.array(age) if "person" in keys else pa.nulls(n, pa.int16()),
            "sex": pa.array(sex, pa.string()) if "person" in keys else pa.nulls(n, pa.string()),
            "crime_municipality_code": pa.array(
                rng.choice(np.array(MUNICIPALITIES, dtype=object), n), pa.string()
            )
            if step == "POLICE_CRIME_REGISTERED"
            else pa.nulls(n, pa.string()),
            "concepts": _concepts(n, slots, concept),
        }
        cols["event_date"] = cols["event_time"].cast(pa.date32())
        full = {
            f.name: cols.get(
                f.name, pa.nulls(n, f.type.value_type if pa.types.is_dictionary(f.type) else f.type)
            )
            for f in schema
        }
        tables.append(pa.table(full))
    table = pa.concat_tables(tables)
    table = table.set_column(
        schema.get_field_index("kafka_partition"), "kafka_partition", pa.array(np.zeros(len(table), np.int32))
    )
    table = table.set_column(
        schema.get_field_index("kafka_offset"),
        "kafka_offset",
        pa.array(np.arange(len(table), dtype=np.int64)),
    )
    return table.cast(schema)
