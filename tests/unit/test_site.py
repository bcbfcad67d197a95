"""The dashboard is a pure function of the releases: the same releases give byte-identical files, any
change of a release file is refused, and the identifier scanner finds nothing in the built site."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dashboard.build import build_site, render
from dashboard.read import read_releases
from ketenstroom.adapters.objectstore import ObjectStore
from ketenstroom.errors import StorageError
from tests.site.releases import build_release_store


@pytest.fixture(scope="module")
def releases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("releases")
    build_release_store(root)
    yield root


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_same_releases_build_byte_identical_sites(releases: Path, tmp_path: Path) -> None:
    copy = tmp_path / "elsewhere" / "releases-copy"
    shutil.copytree(releases, copy)  # another place on disk: no path may leak into a page
    first = build_site(ObjectStore(f"file://{releases}"), ObjectStore(f"file://{tmp_path / 'a'}"))
    second = build_site(ObjectStore(f"file://{copy}"), ObjectStore(f"file://{tmp_path / 'b'}"))
    assert first == second
    assert _files(tmp_path / "a") == _files(tmp_path / "b") == first
    pages = [p for p in first if p.endswith(".html")]
    assert {"index.html", "keten.html", "methode.html", "tabellen/KS0001NED.html"} <= set(pages)
    assert str(releases) not in b"".join(first.values()).decode("utf-8", "replace")


def test_a_new_revision_changes_the_site_and_stale_files_go(releases: Path, tmp_path: Path) -> None:
    fewer = tmp_path / "fewer"
    shutil.copytree(releases, fewer)
    shutil.rmtree(fewer / "releases" / "2026MM02" / "r1")  # as it was before the late events
    site = ObjectStore(f"file://{tmp_path / 'site'}")
    before = build_site(ObjectStore(f"file://{fewer}"), site)
    after = build_site(ObjectStore(f"file://{releases}"), site)
    assert before["index.html"] != after["index.html"]
    assert (
        "2026 februari*<" in before["index.html"].decode()
        and "2026 februari**<" in after["index.html"].decode()
    )
    assert _files(tmp_path / "site") == after  # what r0's build wrote and r1's did not is gone
    assert not any("2026MM02/r0" in p for p in after)  # downloads are each period's latest revision


def test_a_release_file_that_differs_from_its_manifest_is_refused(releases: Path, tmp_path: Path) -> None:
    copy = tmp_path / "tampered"
    shutil.copytree(releases, copy)
    csv = copy / "releases" / "2026MM03" / "r0" / "KS0001NED" / "KS0001NED.csv"
    csv.write_bytes(csv.read_bytes().replace(b";", b",", 1))
    with pytest.raises(StorageError, match="sha256 differs"):
        render(read_releases(ObjectStore(f"file://{copy}")))


def test_the_identifier_scanner_finds_nothing_in_the_site_and_would_find_a_date(
    releases: Path, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    build_site(ObjectStore(f"file://{releases}"), ObjectStore(f"file://{site}"))

    def scan() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cli", "scan", "--site", str(site)],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )

    clean = scan()
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert '"findings": 0' in clean.stdout
    page = site / "tabellen" / "KS0002NED.html"
    page.write_text(page.read_text().replace("</main>", "<p>geboren 1990-04-17</p></main>"))
    planted = scan()
    assert planted.returncode == 1 and "full-date" in planted.stdout + planted.stderr


def test_numbers_are_written_the_dutch_way_and_a_secret_is_a_dot() -> None:
    from dashboard.charts import number

    assert [number(1234567), number(12.25, 1), number(0.0, 1), number(None)] == [
        "1.234.567",
        "12,2",
        "0,0",
        ".",
    ]


def test_a_line_has_a_gap_and_no_point_where_a_value_is_secret() -> None:
    from dashboard.charts import Norm, Series, line_chart

    svg = line_chart(
        "c", "t", ["a", "b", "c", "d"], [Series("s", [10.0, None, 30.0, 40.0])], norms=[Norm("norm", 35.0)]
    )
    assert svg.count('class="mark"') == 3  # three published values, three points
    assert svg.count("<polyline") == 1  # a lone point before the gap draws no line; c-d is one
    assert svg.count('class="norm"') == 1
