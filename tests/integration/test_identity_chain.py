"""One person across the chain on the real stack: hand-built partner exports -> publish -> process -> sink
-> seal -> chain and person tables. BSN only at the police in January, SKN + BSN at the OM in March, SKN
only at DJI in June is one person; an OM record pairing one suspect's SKN with another's BSN is
flagged, not merged."""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from pydantic import SecretStr

from ketenstroom.adapters.kafka import end_offsets, ensure_topics
from ketenstroom.adapters.objectstore import ObjectStore
from ketenstroom.adapters.registry import Registry
from ketenstroom.adapters.snapshots import Snapshots
from ketenstroom.contract import Topics
from ketenstroom.contract.identifiers import complete_bsn
from ketenstroom.settings import CatalogueSettings, ProcessorSettings, PseudonymSettings, SinkSettings
from processors.build import build_transformer
from processors.pseudonym import Pseudonymiser
from processors.runner import TransactionalProcessor
from producers.publish import Publisher
from sinks.runner import Sink
from sinks.seal import Sealer, SealPolicy
from synthetic.chain import DAY
from synthetic.exports import PartnerExport
from tests.conftest import Services

KEY = "identity-test-key-0123456789abcdef012345"
PARTNERS = ("politie", "om", "dji")
DEADLINE_S = 120


def _bsn(first_eight: str) -> str:
    found = complete_bsn(first_eight)
    assert found is not None
    return found


X_SKN, X_BSN = "31415926", _bsn("27182818")
Y_SKN, Y_BSN = "16180339", _bsn("14142135")
Z_SKN, Z_BSN = "17320508", _bsn("22360679")


def _t(day: date, hour: int = 10) -> int:
    return day.toordinal() * DAY + hour * 60  # the generator's minutes since day 1, local time


def _suspect(skn: str | None, bsn: str | None) -> dict[str, Any]:
    return {
        "suspect.skn": skn,
        "suspect.bsn": bsn,
        "suspect.birth_date": date(1990, 5, 17),
        "suspect.sex": "M",
        "suspect.postcode": "1011 AB",
    }


def _meta(rid: str, when: int, system: str, registered: int | None = None) -> dict[str, Any]:
    return {
        "metadata.source_record_id": rid,
        "metadata.record_version": 1,
        "metadata.event_time": when,
        "metadata.registration_time": when + 60 if registered is None else registered,
        "metadata.source_system": system,
    }


def _om(rtype: str, rid: str, when: int, who: dict[str, Any], parket: str, pv: str) -> Any:
    values = {
        **_meta(rid, when, "COMPAS", when),  # OM's export has one date per record: registered when made
        "suspect": who,
        "case.parketnummer": parket,
        "case.pv_number": pv,
        "offence": "310 Sr",
    }
    if rtype == "BESLISSING":
        values.update(decision="DAGV", sepot_ground=None)
    return ("om", rtype, values)


def _records() -> list[tuple[str, str, dict[str, Any]]]:
    jan12, jan20 = _t(date(2026, 1, 12)), _t(date(2026, 1, 20))
    mar3, mar20, jun15 = _t(date(2026, 3, 3)), _t(date(2026, 3, 20)), _t(date(2026, 6, 15))
    feb2, feb5, feb20 = _t(date(2026, 2, 2)), _t(date(2026, 2, 5)), _t(date(2026, 2, 20))
    pv_x, pv_y, pv_z = "PL13A1 2026000101-1", "PL13A1 2026000102-1", "PL13A1 2026000103-1"
    police_x = _suspect(None, X_BSN)  # identity not yet established in the SKDB: no SKN
    return [
        (
            "politie",
            "VERDACHTE",
            {
                **_meta("POL-V-1", jan12, "BVH"),
                "suspect": police_x,
                "case.pv_number": pv_x,
                "first_interrogation_time": jan12 + 120,
            },
        ),
        (
            "politie",
            "PV_INZENDING",
            {**_meta("POL-P-1", jan20, "BVH"), "suspect": police_x, "case.pv_number": pv_x},
        ),
        _om("INSCHRIJVING", "OM-I-1", mar3, _suspect(X_SKN, X_BSN), "13-000101-26", pv_x),
        _om("BESLISSING", "OM-B-1", mar20, _suspect(X_SKN, X_BSN), "13-000101-26", pv_x),
        (
            "dji",
            "INSTROOM",
            {
                **_meta("DJI-I-1", jun15, "TULP"),
                "suspect": _suspect(X_SKN, None),  # DJI has no BSN on file for this person
                "case.parketnummer": "13-000101-26",
                "title": "VRIJHEIDSSTRAF",
                "institution": "GEVANGENIS",
            },
        ),
        # Y's own records, and Z's OM registration carrying Y's BSN by mistake
        _om("INSCHRIJVING", "OM-I-2", feb2, _suspect(Y_SKN, Y_BSN), "13-000102-26", pv_y),
        _om("BESLISSING", "OM-B-2", feb20, _suspect(Y_SKN, Y_BSN), "13-000102-26", pv_y),
        _om("INSCHRIJVING", "OM-I-3", feb5, _suspect(Z_SKN, Y_BSN), "13-000103-26", pv_z),
    ]


def _exports(out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    exports = {p: PartnerExport(p, out, seed=1, noise=0.0) for p in PARTNERS}
    for partner, rtype, values in _records():
        exports[partner].emit(rtype, values)
    return {p: Path(e.close().path) for p, e in exports.items()}


def _pseudonyms(skn: str, bsn: str) -> tuple[str, str]:
    """The processor's own SKN and BSN pseudonyms of a person (same key), to check the tables by."""
    person = Pseudonymiser(KEY.encode(), "t1").person(skn, bsn)
    assert person.skn is not None and person.bsn is not None
    return person.skn, person.bsn


def test_one_person_across_police_om_and_dji_and_a_conflict_flagged(
    services: Services, tmp_path: Path
) -> None:
    names = Topics(f"t{os.getpid()}id{random.randrange(10**6)}.")
    ensure_topics(services.kafka, names.all(list(PARTNERS)), partitions=2, replication_factor=1)
    published = 0
    for partner, path in _exports(tmp_path / "exports").items():
        with Publisher(partner, kafka=services.kafka, registry=services.registry, topics=names) as publisher:
            receipt = publisher.publish([path])
        assert receipt.reconciles and receipt.rejected_total == 0, receipt.summary()
        published += receipt.published
    assert published == 8

    deadline = time.monotonic() + DEADLINE_S
    with Registry(services.registry) as registry:
        transformer = build_transformer(
            registry=registry,
            paths=CatalogueSettings(),
            pseudonym=PseudonymSettings(key=SecretStr(KEY), key_id="t1"),
            topics=names,
        )
        stats = TransactionalProcessor(
            kafka=services.kafka,
            topics=names,
            partners=list(PARTNERS),
            transformer=transformer,
            settings=ProcessorSettings(app_id=f"{names.prefix}proc"),
        ).run(until_end=True, should_stop=lambda: time.monotonic() > deadline)
    assert sum(stats.curated.values()) == published and stats.reconciles(), stats.dead

    store = ObjectStore(f"file://{tmp_path / 'store'}")
    as_of = datetime(2027, 3, 1, tzinfo=UTC)
    sealer = Sealer(
        store, SealPolicy(grace=timedelta(days=14), final_after=timedelta(days=3650), clock=lambda: as_of)
    )
    sink = Sink(
        kafka=services.kafka,
        registry=services.registry,
        store=store,
        settings=SinkSettings(group_id=f"{names.prefix}sink"),
        topics=names,
        period="year",
        sealer=sealer,
    )
    report = sink.run(stop_at=end_offsets(services.kafka, [names.curated]))
    assert report.written == published
    manifest = Snapshots(store).manifest("2026JJ00")
    assert manifest is not None and Snapshots(store).verify(manifest) == []
    tables = Snapshots(store).tables(manifest)
    assert tables is not None and tables.identity is not None

    x_skn, x_bsn = _pseudonyms(X_SKN, X_BSN)
    y_skn, _ = _pseudonyms(Y_SKN, Y_BSN)
    z_skn, _ = _pseudonyms(Z_SKN, Z_BSN)
    rows = [r for e in manifest.files for r in pq.read_table(io.BytesIO(store.get(e.path))).to_pylist()]
    police = [r for r in rows if r["source_partner"] == "politie"]
    assert {(r["skn_pseudonym"], r["bsn_pseudonym"], r["person_pseudonym"]) for r in police} == {
        (None, x_bsn, x_bsn)
    }, "the processor alone cannot know the police's BSN-only suspect is X"

    persons = {
        r["person_pseudonym"]: r
        for r in pq.read_table(io.BytesIO(store.get(tables.files["person"].path))).to_pylist()
    }
    assert sorted(persons) == sorted([x_skn, y_skn, z_skn]), "X once; Y and Z not merged"
    x = persons[x_skn]
    assert (x["events_in_period"], x["cases_in_period"], x["person_id_source"]) == (5, 1, "SKN")
    assert x["reached_police_registration"] and x["reached_execution_start"] and not x["identity_conflict"]
    assert persons[y_skn]["identity_conflict"] and persons[z_skn]["identity_conflict"]

    chain = {
        r["person_pseudonym"]: r
        for r in pq.read_table(io.BytesIO(store.get(tables.files["chain"].path))).to_pylist()
    }
    case = chain[x_skn]
    assert case["police_registration_time"] == datetime(2026, 1, 12, 9, tzinfo=UTC)  # 10:00 CET
    assert case["days_police_registration_to_om_registration"] == 50
    assert case["days_police_registration_to_om_decision"] == 67
    assert case["days_police_registration_to_execution_start"] == 154
    assert case["anomalies"] == []

    counts = tables.identity
    assert (counts.links, counts.conflicts, counts.persons, counts.persons_in_conflict) == (3, 1, 3, 2)
    assert counts.persons_merged_by_new_links == 1  # X, against the processor's own pseudonyms
    assert counts.link_inputs == {"2026JJ00": 0}
    shown = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli",
            "snapshot",
            "show",
            "2026JJ00",
            "--storage",
            f"file://{tmp_path / 'store'}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "persons: 3 (1 merged by new links, 2 flagged in 1 SKN conflicts; 3 SKN-BSN links" in " ".join(
        shown.stdout.split()
    )

    # nothing identifying anywhere in the store: `ketenstroom scan` over every Parquet file (rows and
    # tables), and no raw SKN or BSN in any byte stored (manifests and their link counts included)
    scanned = subprocess.run(
        [sys.executable, "-m", "cli", "scan", "--storage", f"file://{tmp_path / 'store'}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert scanned.returncode == 0, scanned.stdout[-2000:]
    result = json.loads(scanned.stdout.strip().splitlines()[-1])
    assert result == {"records": published + len(chain) + len(persons), "findings": 0}
    everything = b"".join(p.read_bytes() for p in (tmp_path / "store").rglob("*") if p.is_file())
    for raw in (X_SKN, X_BSN, Y_SKN, Y_BSN, Z_SKN, Z_BSN):
        assert raw.encode() not in everything
