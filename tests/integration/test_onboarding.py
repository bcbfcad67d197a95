"""An eighth partner joins the chain by configuration alone, on the real stack.

The Raad voor de Kinderbescherming (RvdK) — a chain partner ketenstroom has never seen — gets a catalogue
of its own in a temporary directory (the repository's catalogue plus the RvdK's schemas, declaration,
column mapping, chain steps and terminology table): two record types, its own column names, a
pipe-separated CSV with ISO dates, its own code systems. Then ``ketenstroom`` runs as an operator would,
from the command line with ``KETENSTROOM_CATALOGUE_DIR`` pointing there: topics, schemas, publish,
process, sink and seal. The RvdK's events land in the sealed snapshot with their chain steps and
concepts, its unknown code goes to its own DLQ, and the chain table links its events to the OM's case.
No Python file of the project names the partner, and none changes while the test runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition

from ketenstroom.contract import Topics
from ketenstroom.settings import REPO_ROOT
from tests.conftest import Services

KEY = "onboarding-test-key-0123456789abcdef0123"  # pragma: allowlist secret
PARTNER = "rvdk"

COMMON = "nl.ketenstroom.common"
SCHEMAS = {
    "InvestigationStarted": (
        "Raadsonderzoek gestart: the RvdK starts an investigation of a minor suspect for the OvJ.",
        [{"name": "investigation", "type": f"{COMMON}.CodedValue", "doc": "Soort raadsonderzoek."}],
    ),
    "AdviceIssued": (
        "Strafadvies uitgebracht: the RvdK's sentencing advice to the OvJ or the court.",
        [
            {"name": "advice", "type": f"{COMMON}.CodedValue", "doc": "Geadviseerde afdoening."},
            {"name": "advised_hours", "type": ["null", "int"], "default": None, "doc": "Uren taakstraf."},
        ],
    ),
}

DECLARATION = """\
# Raad voor de Kinderbescherming: written by the test as a partner's engineer would.
name = "rvdk"
display_name = "Raad voor de Kinderbescherming"
code = "RVDK"
mapping = "mapping.toml"
position = 45
delivery_every_days = 7

[topics]
partitions = 2
retention_days = 10
legal_basis = "Wjsg; Bjsg art. 30bis"

[record_defaults]
case = "case.parketnummer"
report = "case.pv_number"
identity = "suspect"

[records."nl.ketenstroom.rvdk.InvestigationStarted"]
step = "RVDK_INVESTIGATION_STARTED"
required_codes = ["investigation"]

[records."nl.ketenstroom.rvdk.AdviceIssued"]
step = "RVDK_ADVICE_ISSUED"
required_codes = ["advice"]
sanction_hours = "advised_hours"
"""

COLUMNS = {
    "metadata.source_record_id": "registratie_id",
    "metadata.record_version": "mutatieversie",
    "metadata.source_system": "systeem",
    "metadata.event_time": "datum_gebeurtenis",
    "metadata.registration_time": "datum_vastlegging",
    "case.parketnummer": "parketnr",
    "case.pv_number": "pv",
    "suspect.skn": "strafrechtketennummer",
    "suspect.bsn": "burgerservicenummer",
    "suspect.birth_date": "geb_datum",
    "suspect.sex": "sekse",
    "suspect.postcode": "pc",
}


def _mapping() -> str:
    lines = ['type_column = "gebeurtenis"']
    for value, record, extra, codes in (
        (
            "ONDERZOEK",
            "InvestigationStarted",
            {"investigation": "onderzoekssoort"},
            {"investigation": "RVDK.ONDERZOEK"},
        ),
        (
            "ADVIES",
            "AdviceIssued",
            {"advice": "advies", "advised_hours": "uren"},
            {"advice": "RVDK.ADVIES"},
        ),
    ):
        lines += [
            "",
            f"[records.{value}]",
            f'record = "nl.ketenstroom.rvdk.{record}"',
            'key = "case.parketnummer"',
        ]
        lines += ["", f"[records.{value}.columns]"]
        lines += [f'"{path}" = "{column}"' for path, column in {**COLUMNS, **extra}.items()]
        lines += ["", f"[records.{value}.codes]"]
        lines += [f'{field} = {{ system = "{system}", version = "2026" }}' for field, system in codes.items()]
    return "\n".join(lines) + "\n"


HEADER = ["gebeurtenis", *COLUMNS.values(), "onderzoekssoort", "advies", "uren"]
PARKET = "13-246712-26"
PV = "PL13A1 2026031234-1"
SKN, BSN = "87654321", "123456782"


def _rvdk_export(path: Path) -> None:
    """Pipe-separated, quoted, ISO dates: the RvdK's own dialect."""
    person = [SKN, BSN, "2010-04-03", "V", "1011 AB"]
    rows = [
        [
            "ONDERZOEK",
            "R-1",
            "1",
            "KWAPP",
            "2026-03-09 10:00",
            "2026-03-09 11:00",
            PARKET,
            PV,
            *person,
            "STRAF",
            "",
            "",
        ],
        [
            "ADVIES",
            "R-2",
            "1",
            "KWAPP",
            "2026-03-20 14:00",
            "2026-03-20 15:00",
            PARKET,
            PV,
            *person,
            "",
            "TAAK",
            "40",
        ],
        # an advice code the terminology does not know: dead-lettered to dlq.rvdk, never guessed
        [
            "ADVIES",
            "R-3",
            "1",
            "KWAPP",
            "2026-03-21 09:00",
            "2026-03-21 09:30",
            "13-246713-26",
            "",
            *person,
            "",
            "XYZ",
            "",
        ],
    ]
    text = "|".join(f'"{h}"' for h in HEADER) + "\n"
    text += "".join("|".join(f'"{v}"' for v in row) + "\n" for row in rows)
    path.write_text(text, encoding="utf-8")


def _om_export(path: Path) -> None:
    header = "soort;recordnummer;versie;bronsysteem;beslisdatum;parketnummer;pv_nummer;skn;bsn;geboortedatum;geslacht;postcode;beslissing;sepotgrond;wetsartikel;inschrijfdatum"
    person = f"{SKN};{BSN};03-04-2010;V;1011 AB"
    rows = [
        f"INSCHRIJVING;OM-I-1;1;COMPAS;;{PARKET};{PV};{person};;;310 Sr;02-03-2026",
        f"BESLISSING;OM-B-1;1;COMPAS;01-04-2026 10:00;{PARKET};{PV};{person};DAGV;;310 Sr;",
    ]
    path.write_text(header + "\n" + "\n".join(rows) + "\n", encoding="utf-8")


def build_catalogue(root: Path) -> None:
    """The repository's catalogue, plus everything the RvdK brings: data files only."""
    for part in ("schemas", "partners", "terminology"):
        shutil.copytree(REPO_ROOT / part, root / part)
    (root / "schemas" / PARTNER).mkdir()
    for name, (doc, fields) in SCHEMAS.items():
        schema = {
            "type": "record",
            "name": name,
            "namespace": "nl.ketenstroom.rvdk",
            "doc": doc,
            "fields": [
                {"name": "metadata", "type": f"{COMMON}.DeliveryMetadata"},
                {"name": "suspect", "type": f"{COMMON}.Identity"},
                {"name": "case", "type": f"{COMMON}.CaseReference"},
                *fields,
            ],
        }
        (root / "schemas" / PARTNER / f"nl.ketenstroom.rvdk.{name}.avsc").write_text(
            json.dumps(schema, indent=2)
        )
    terms = root / "terminology"
    with (terms / "chain-steps.csv").open("a", encoding="utf-8") as fh:
        fh.write("RVDK_INVESTIGATION_STARTED,,Raadsonderzoek gestart (RvdK)\n")
        fh.write("RVDK_ADVICE_ISSUED,,Strafadvies uitgebracht (RvdK)\n")
    with (terms / "concepts.csv").open("a", encoding="utf-8") as fh:
        fh.write("rvdk-onderzoek,STRAFONDERZOEK,Raadsonderzoek in een strafzaak,\n")
        fh.write("rvdk-advies,TAAKSTRAF,Advies taakstraf,\n")
        fh.write("rvdk-advies,JEUGDDETENTIE,Advies jeugddetentie,\n")
    (terms / "rvdk.csv").write_text(
        "source_code_system,source_code,vocabulary,target_code,target_label,counting_unit,valid_from,valid_to\n"
        "RVDK.ONDERZOEK,STRAF,rvdk-onderzoek,STRAFONDERZOEK,Raadsonderzoek in een strafzaak,onderzoek,2020-01-01,\n"
        "RVDK.ADVIES,TAAK,rvdk-advies,TAAKSTRAF,Advies taakstraf,advies,2020-01-01,\n"
        "RVDK.ADVIES,JDET,rvdk-advies,JEUGDDETENTIE,Advies jeugddetentie,advies,2020-01-01,\n",
        encoding="utf-8",
    )
    manifest = (terms / "manifest.toml").read_text(encoding="utf-8")
    manifest = manifest.replace('version = "', 'version = "rvdk-', 1)
    manifest += '\n[[tables]]\nfile = "rvdk.csv"\ndescription = "RvdK investigations and advice"\n'
    (terms / "manifest.toml").write_text(manifest, encoding="utf-8")


def _python_sources() -> dict[str, str]:
    """sha256 of every tracked Python file outside tests: the code that must not change."""
    files = subprocess.run(
        ["git", "ls-files", "*.py"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    return {
        f: hashlib.sha256((REPO_ROOT / f).read_bytes()).hexdigest()
        for f in files
        if not f.startswith("tests/")
    }


def _read(services: Services, topic: str) -> list[tuple[dict[str, str], bytes]]:
    """Every committed record of a topic (read to each partition's end, transaction markers included)."""
    consumer = Consumer(
        {
            "bootstrap.servers": services.kafka.bootstrap_servers,
            "group.id": f"{topic}.reader",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        consumer.assign([TopicPartition(topic, p, 0) for p in meta.partitions])
        out: list[tuple[dict[str, str], bytes]] = []
        left = set(meta.partitions)
        while left:
            msg = consumer.poll(10)
            assert msg is not None, f"{topic}: no end of partitions {left} within 10 s"
            if msg.error() is not None:
                assert msg.error().code() == KafkaError._PARTITION_EOF, msg.error()
                left.discard(msg.partition())
                continue
            out.append(({k: v.decode() for k, v in (msg.headers() or [])}, msg.value() or b""))
        return out
    finally:
        consumer.close()


@pytest.mark.timeout(600)
def test_an_eighth_partner_joins_by_configuration_alone(
    services: Services, names: Topics, tmp_path: Path
) -> None:
    before = _python_sources()
    assert not [f for f in before if PARTNER in (REPO_ROOT / f).read_text(encoding="utf-8").lower()], (
        "a Python file names the new partner: onboarding must need no code"
    )
    catalogue = tmp_path / "catalogue"
    build_catalogue(catalogue)
    env = {
        **services.env(names),
        "KETENSTROOM_CATALOGUE_DIR": str(catalogue),
        "KETENSTROOM_PSEUDONYM_KEY": KEY,
        "KETENSTROOM_PSEUDONYM_KEY_ID": "onboarding-k1",
    }

    def ks(*args: str, ok: tuple[int, ...] = (0,)) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        assert done.returncode in ok, (
            f"ketenstroom {' '.join(args)}: {done.returncode}\n{done.stderr[-3000:]}"
        )
        return done.stdout

    # 1. the scaffold: `partners add` derives a declaration and a mapping template from the schemas;
    #    `catalogue check` names what is still to be filled in, with file and line
    shutil.copytree(catalogue, tmp_path / "scaffold")
    env["KETENSTROOM_CATALOGUE_DIR"] = str(tmp_path / "scaffold")
    ks("partners", "add", PARTNER, "--display-name", "Raad voor de Kinderbescherming", "--code", "RVDK")
    template = (tmp_path / "scaffold" / "partners" / PARTNER / "mapping.toml").read_text(encoding="utf-8")
    assert '"suspect.bsn" = "bsn"' in template and 'record = "nl.ketenstroom.rvdk.AdviceIssued"' in template
    done = subprocess.run(
        [sys.executable, "-m", "cli", "catalogue", "check"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "partners/rvdk/partner.toml:" in done.stderr and "unknown chain step 'TODO'" in done.stderr

    # 2. the filled-in declaration and mapping
    env["KETENSTROOM_CATALOGUE_DIR"] = str(catalogue)
    (catalogue / "partners" / PARTNER).mkdir()
    (catalogue / "partners" / PARTNER / "partner.toml").write_text(DECLARATION, encoding="utf-8")
    (catalogue / "partners" / PARTNER / "mapping.toml").write_text(_mapping(), encoding="utf-8")
    assert "8 partners" in ks("catalogue", "check")
    shown = ks("catalogue", "show", PARTNER)
    assert "RVDK_ADVICE_ISSUED" in shown and "advies" in shown

    # 3. the pipeline, as an operator runs it
    ks(
        "partners",
        "add",
        PARTNER,
        "--display-name",
        "Raad voor de Kinderbescherming",
        "--code",
        "RVDK",
        "--apply",
    )
    om, rvdk = tmp_path / "om.csv", tmp_path / "rvdk-export.txt"
    _om_export(om)
    _rvdk_export(rvdk)
    ks("publish", "--partner", "om", "--receipt", str(tmp_path / "om.receipt.json"), str(om))
    ks("publish", "--partner", PARTNER, "--receipt", str(tmp_path / "rvdk.receipt.json"), str(rvdk))
    receipt = json.loads((tmp_path / "rvdk.receipt.json").read_text(encoding="utf-8"))
    assert receipt["published"] == 3 and receipt["rows_read"] == 3, receipt
    counts = json.loads(
        ks("process", "--until-caught-up", "--app-id", f"{names.prefix}proc").strip().splitlines()[-1]
    )
    assert counts["curated"][PARTNER] == 2 and counts["curated"]["om"] == 2
    assert counts["dead_lettered"][PARTNER] == {"unknown-code": 1}

    store = tmp_path / "store"
    ks("sink", "--until-caught-up", "--storage", f"file://{store}", "--group", f"{names.prefix}sink")

    # the RvdK's events in the sealed March snapshot, with their chain steps and concepts
    data = f"{store}/snapshots/*/r0/data/*.parquet"
    rows = duckdb.sql(
        f"select chain_step, source_event_type, concepts[1].code code, sanction_hours, case_pseudonym "
        f"from '{data}' where source_partner = 'rvdk' order by chain_step"
    ).fetchall()
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        ("RVDK_ADVICE_ISSUED", "nl.ketenstroom.rvdk.AdviceIssued", "TAAKSTRAF", 40),
        ("RVDK_INVESTIGATION_STARTED", "nl.ketenstroom.rvdk.InvestigationStarted", "STRAFONDERZOEK", None),
    ]
    (om_case,) = {
        r[0] for r in duckdb.sql(f"select case_pseudonym from '{data}' where source_partner='om'").fetchall()
    }
    assert {r[4] for r in rows} == {om_case}, "the RvdK's events carry the OM case's pseudonym"

    # its unknown code in its own DLQ, with the code and code system in the reason
    dead = _read(services, names.dlq(PARTNER))
    assert len(dead) == 1 and dead[0][0]["ketenstroom.reason"] == "unknown-code"
    assert "RVDK.ADVIES" in dead[0][0]["ketenstroom.error"] and "XYZ" in dead[0][0]["ketenstroom.error"]

    # the chain table links the RvdK's events to the OM's case
    chain = duckdb.sql(
        f"select chain_steps, om_registration_time is not null, om_decision_time is not null "
        f"from '{store}/snapshots/2026MM03/r0/tables/chain.parquet' where case_pseudonym = '{om_case}'"
    ).fetchall()
    assert chain == [(["OM_REGISTRATION", "RVDK_ADVICE_ISSUED", "RVDK_INVESTIGATION_STARTED"], True, False)]

    # no Python file changed: the catalogue is data
    assert _python_sources() == before
    assert os.path.commonpath([catalogue, REPO_ROOT]) != str(REPO_ROOT)
