"""A release built from a sealed revision on a local store (no services): formats, manifest, create-only,
verification, determinism of the cell keys across runs, and the secret never written."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ketenstroom.adapters.objectstore import ObjectStore
from ketenstroom.contract.snapshots import staging_name
from releases.build import Releases
from releases.spec import load_specs
from sinks.parquet import SCHEMA, write_table
from sinks.seal import Sealer, SealPolicy
from sinks.tables import build_missing_tables
from synthetic.period import period_events

PERIOD = "2026MM03"
SECRET = b"unit-test-cell-key-0123456789abcdef-release"


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("release")
    store = ObjectStore(f"file://{root}")
    table = period_events(8_000, SCHEMA, PERIOD, seed=3)
    for first in range(0, len(table), 3_000):
        store.put(staging_name(PERIOD, 0, first), write_table(table.slice(first, 3_000)))
    policy = SealPolicy(final_after=timedelta(days=3650), clock=lambda: datetime(2027, 1, 1, tzinfo=UTC))
    assert [m.period for m in Sealer(store, policy).seal_due()] == [PERIOD]
    assert build_missing_tables(store, {PERIOD})
    return root


def _copy(sealed: Path, tmp_path: Path, name: str) -> ObjectStore:
    shutil.copytree(sealed, tmp_path / name)
    return ObjectStore(f"file://{tmp_path / name}")


def test_release_files_manifest_and_verify(sealed: Path, tmp_path: Path) -> None:
    store = _copy(sealed, tmp_path, "a")
    releases = Releases(store, SECRET)
    manifest = releases.build(PERIOD)
    assert manifest.revision == 0 and manifest.perioden_status == "Voorlopig"
    assert set(manifest.tables) == {s.id for s in load_specs()}
    assert releases.verify(manifest) == []
    for entry in manifest.files:
        data = store.get(entry.path)
        assert hashlib.sha256(data).hexdigest() == entry.sha256
        assert SECRET not in data
    snap = store.get(manifest.snapshot_manifest)
    assert hashlib.sha256(snap).hexdigest() == manifest.snapshot_manifest_sha256

    # long Parquet, ';' CSV with Dutch headers, and OData Observations hold the same cells
    prefix = f"releases/{PERIOD}/r0/KS0003NED/"
    cube = pq.read_table(io.BytesIO(store.get(prefix + "KS0003NED.parquet")))
    assert cube.column_names == [
        "Id",
        "Measure",
        "Beslissing",
        "Delicthoofdgroep",
        "Perioden",
        "Value",
        "ValueAttribute",
    ]
    rows = list(csv.reader(io.StringIO(store.get(prefix + "KS0003NED.csv").decode()), delimiter=";"))
    assert rows[0] == ["Onderwerp", "Soort beslissing", "Delicthoofdgroep", "Perioden", "Waarde", "Status"]
    assert len(rows) - 1 == cube.num_rows
    observations = json.loads(store.get(prefix + "odata/Observations.json"))
    assert observations == cube.to_pylist()
    periods = json.loads(store.get(prefix + "odata/PeriodenCodes.json"))
    assert periods[0]["Status"] == "Voorlopig" and periods[0]["Title"] == "2026 maart*"
    for row, obs in zip(rows[1:], observations, strict=True):  # suppressed: empty value and '.', never 0
        assert (row[-2], row[-1]) == (("", ".") if obs["Value"] is None else (row[-2], ""))
    meta = json.loads(store.get(prefix + "metadata.json"))
    assert meta["dct:license"] == "https://creativecommons.org/licenses/by/4.0/" and meta["dct:source"]
    audit = json.loads(store.get(f"releases/{PERIOD}/r0/audit.json"))
    assert audit["rules"]["rounding"]["base"] == 5 and audit["rules"]["threshold"]["KS0006NED"] == 10

    # tampering is found
    csv_key = prefix + "KS0003NED.csv"
    store.put(csv_key, store.get(csv_key) + b"x")
    assert releases.verify(manifest) == [f"{csv_key}: sha256 differs from the manifest"]


def test_a_release_is_never_rebuilt(sealed: Path, tmp_path: Path) -> None:
    store = _copy(sealed, tmp_path, "b")
    first = Releases(store, SECRET).build(PERIOD)
    before = {k: store.get(k) for k in store.list(f"releases/{PERIOD}/r0/")}
    again = Releases(store, b"another-secret-0123456789abcdef-0123456789").build(PERIOD)
    assert again == first
    assert {k: store.get(k) for k in store.list(f"releases/{PERIOD}/r0/")} == before


def test_same_revision_and_secret_give_the_same_tables_another_secret_other_rounding(
    sealed: Path, tmp_path: Path
) -> None:
    def observations(store: ObjectStore) -> bytes:
        return store.get(f"releases/{PERIOD}/r0/KS0001NED/odata/Observations.json")

    one, two, other = (_copy(sealed, tmp_path, n) for n in ("c", "d", "e"))
    Releases(one, SECRET).build(PERIOD)
    Releases(two, SECRET).build(PERIOD)
    Releases(other, b"another-secret-0123456789abcdef-0123456789").build(PERIOD)
    assert observations(one) == observations(two)
    assert observations(one) != observations(other)  # the draw depends on the secret


def test_build_without_a_secret_says_how_to_set_one(sealed: Path, tmp_path: Path) -> None:
    from ketenstroom.errors import StorageError

    with pytest.raises(StorageError, match="KETENSTROOM_CELLKEY_KEY_FILE"):
        Releases(_copy(sealed, tmp_path, "f")).build(PERIOD)


def test_serve_gives_v3_and_v4_shapes(sealed: Path, tmp_path: Path) -> None:
    import threading

    import httpx

    from releases.serve import server

    store = _copy(sealed, tmp_path, "g")
    Releases(store, SECRET).build(PERIOD)
    srv = server(store, "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        cube = pq.read_table(io.BytesIO(store.get(f"releases/{PERIOD}/r0/KS0006NED/KS0006NED.parquet")))
        v4 = httpx.get(f"{base}/odata/v1/KS/KS0006NED/Observations").json()["value"]
        assert len(v4) == cube.num_rows
        props = httpx.get(f"{base}/odata/v1/KS/KS0006NED/Properties").json()
        assert props["Identifier"] == "KS0006NED" and props["License"].endswith("/by/4.0/")
        sets = {s["name"] for s in httpx.get(f"{base}/odata/v1/KS/KS0006NED").json()["value"]}
        assert {
            "Properties",
            "Dimensions",
            "MeasureCodes",
            "TrajectCodes",
            "PeriodenCodes",
            "Observations",
        } <= sets
        wide = httpx.get(f"{base}/ODataFeed/odata/KS0006NED/UntypedDataSet").json()["value"]
        suppressed = [c for c in cube.to_pylist() if c["ValueAttribute"] == "Confidential"]
        assert suppressed, "the small test period has cells under the threshold"
        cell = suppressed[0]
        row = next(
            r
            for r in wide
            if (r["Traject"], r["Leeftijdsgroep"]) == (cell["Traject"], cell["Leeftijdsgroep"])
        )
        assert row[cell["Measure"]] == "."  # v3 untyped: the CBS symbol, never 0
        assert httpx.post(f"{base}/odata/v1/Datasets").status_code == 501  # read-only
        assert httpx.get(f"{base}/odata/v1/KS/KS9999NED/Observations").status_code == 404
        assert httpx.get(f"{base}/odata/v1/KS/..%2F..%2Fsnapshots/Properties").status_code == 404
    finally:
        srv.shutdown()
        srv.server_close()


def test_period_titles_and_statuses_follow_statline() -> None:
    from releases.build import STATUS_NL, period_title

    assert [STATUS_NL[s] for s in ("provisional", "revised", "final")] == [
        "Voorlopig",
        "Nader voorlopig",
        "Definitief",
    ]
    assert period_title("2026MM03", "provisional") == "2026 maart*"
    assert period_title("2026KW02", "revised") == "2026 2e kwartaal**"
    assert period_title("2026JJ00", "final") == "2026"
