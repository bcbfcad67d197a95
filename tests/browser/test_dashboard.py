"""The dashboard in a real headless Chromium (Debian's ``chromium`` driven by ``chromium-driver`` through
Selenium): every page loads with no console error and no request off loopback, every chart has marks
that render, the table beneath a chart holds the release file's numbers, a suppressed cell shows '.',
provisional periods carry their marks. Screenshots go to ``var/browser/`` for a person to look at."""

from __future__ import annotations

import csv
import io
import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

from dashboard.build import build_site
from dashboard.serve import server
from ketenstroom.adapters.objectstore import ObjectStore
from ketenstroom.settings import REPO_ROOT
from tests.site.releases import build_release_store

pytestmark = pytest.mark.browser
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
SHOTS = REPO_ROOT / "var" / "browser"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("dashboard")
    build_release_store(root / "store")
    build_site(ObjectStore(f"file://{root / 'store'}"), ObjectStore(f"file://{root / 'site'}"))
    srv = server(root / "site", "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/", root
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    assert CHROMIUM and DRIVER, "install Debian's chromium and chromium-driver (make browser)"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1600",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-default-apps",
        "--disable-sync",
        "--no-first-run",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(DRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _open(driver: webdriver.Chrome, url: str) -> None:
    driver.get(url)
    assert driver.execute_script("return document.readyState") == "complete"


def _requests(driver: webdriver.Chrome) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def _table(element: WebElement) -> tuple[list[str], list[tuple[str, list[str]]]]:
    head = [th.text for th in element.find_elements(By.CSS_SELECTOR, "thead th")][1:]
    rows = []
    for tr in element.find_elements(By.CSS_SELECTOR, "tbody tr"):
        rows.append(
            (
                tr.find_element(By.CSS_SELECTOR, "th").text,
                [td.text for td in tr.find_elements(By.CSS_SELECTOR, "td")],
            )
        )
    return head, rows


def _release_csv(root: Path, period: str, revision: int, table: str) -> list[dict[str, str]]:
    path = root / "store" / "releases" / period / f"r{revision}" / table / f"{table}.csv"
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8")), delimiter=";"))


def _shot(driver: webdriver.Chrome, name: str) -> Path:
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(int(height), 6000))
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / name
    assert driver.save_screenshot(str(path))
    driver.set_window_size(1280, 1600)
    return path


def test_every_page_loads_cleanly_and_every_chart_renders(
    site: tuple[str, Path], browser: webdriver.Chrome
) -> None:
    base, root = site
    listing = json.loads((root / "site" / "site.json").read_text())
    pages = sorted(p for p in listing["files"] if p.endswith(".html"))
    assert len(pages) >= 10
    charts_seen = 0
    browser.get_log("performance")  # drop what came before
    for page in pages:
        _open(browser, base + page)
        errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
        assert not errors, f"{page}: {errors}"
        off = [u for u in _requests(browser) if urlsplit(u).hostname not in ("127.0.0.1", None)]
        assert not off, f"{page} asked for {off}"
        wide = browser.execute_script(
            "return document.documentElement.scrollWidth > document.documentElement.clientWidth"
        )
        assert not wide, f"{page} scrolls sideways at 1280 px"
        assert browser.find_element(By.CSS_SELECTOR, "footer .release code").text  # names its manifest
        assert "CC BY 4.0" in browser.find_element(By.TAG_NAME, "footer").text
        for svg in browser.find_elements(By.CSS_SELECTOR, "svg.chart"):
            marks = svg.find_elements(By.CSS_SELECTOR, ".mark")
            assert marks, f"{page}: chart {svg.get_attribute('id')} has no marks"
            drawn = browser.execute_script(
                "return arguments[0].filter(m => { const b = m.getBBox(); return b.width > 0 && b.height > 0; })"
                ".length",
                marks,
            )
            assert drawn == len(marks), f"{page}: {svg.get_attribute('id')}: {drawn} of {len(marks)} drawn"
            table = browser.find_element(By.ID, f"{svg.get_attribute('id')}-table")  # the numbers beneath
            assert table.find_elements(By.CSS_SELECTOR, "tbody td")
            charts_seen += 1
    assert charts_seen >= 15


def test_the_table_under_a_chart_holds_the_release_numbers(
    site: tuple[str, Path], browser: webdriver.Chrome
) -> None:
    base, root = site
    _open(browser, base + "tabellen/KS0006NED.html")
    head, rows = _table(browser.find_element(By.ID, "KS0006NED-MediaanDoorlooptijd_2-table"))
    latest = {
        "2026 januari": ("2026MM01", 0),
        "2026 februari**": ("2026MM02", 1),
        "2026 maart*": ("2026MM03", 0),
    }
    assert [label for label, _ in rows] == list(latest)  # oldest first, each with its status mark
    compared = 0
    for label, cells in rows:
        release = _release_csv(root, *latest[label], "KS0006NED")
        for column, shown in zip(head, cells, strict=True):
            (row,) = [
                r
                for r in release
                if r["Onderwerp"] == "Mediane doorlooptijd"
                and r["Ketentraject"] == column
                and r["Leeftijdsgroep bij de eerste stap"] == "Totaal"
                and r["Perioden"] == label
            ]
            assert shown == ("." if row["Status"] == "." else row["Waarde"]), (label, column)
            compared += 1
    assert compared == 15
    # the crimes' table: counts with thousands separators, against the CSV, for the newest period
    _open(browser, base + "tabellen/KS0001NED.html")
    head, rows = _table(browser.find_element(By.ID, "KS0001NED-GeregistreerdeMisdrijven_1-table"))
    release = {
        r["Soort misdrijf"]: r["Waarde"]
        for r in _release_csv(root, "2026MM03", 0, "KS0001NED")
        if r["Regio's"] == "Nederland"
    }
    label, cells = rows[-1]
    assert label == "2026 maart*"
    assert [c.replace(".", "") for c in cells] == [release[h] for h in head]


def test_a_suppressed_cell_shows_a_dot_with_its_reason(
    site: tuple[str, Path], browser: webdriver.Chrome
) -> None:
    base, root = site
    _open(browser, base + "tabellen/KS0006NED.html")
    table = browser.find_element(By.ID, "KS0006NED-MediaanDoorlooptijd_2-Leeftijdsgroep-table")
    secret = table.find_elements(By.CSS_SELECTOR, "td.secret")
    assert secret and all(td.text == "." for td in secret)
    reason = secret[0].find_element(By.TAG_NAME, "abbr").get_attribute("title")
    assert reason and reason.startswith("geheim: minder eenheden dan de drempel")
    notes = browser.find_element(By.ID, "KS0006NED-MediaanDoorlooptijd_2-Leeftijdsgroep-notes")
    assert "geheim" in notes.text
    head, rows = _table(table)
    csv_rows = _release_csv(root, "2026MM03", 0, "KS0006NED")
    for label, cells in rows:
        for column, shown in zip(head, cells, strict=True):
            (row,) = [
                r
                for r in csv_rows
                if r["Onderwerp"] == "Mediane doorlooptijd"
                and r["Ketentraject"] == column
                and r["Leeftijdsgroep bij de eerste stap"] == label
            ]
            assert (shown == ".") == (row["Status"] == "."), (label, column)
    assert any("." in cells for _, cells in rows) and any(c != "." for _, cells in rows for c in cells)
    figure = table.find_element(By.XPATH, "./ancestor::figure")
    SHOTS.mkdir(parents=True, exist_ok=True)
    assert figure.screenshot(str(SHOTS / "chart-KS0006NED-secret.png"))  # the chart and its table, close up
    _shot(browser, "table-KS0006NED.png")


def test_statuses_are_marked_and_the_home_page_names_its_release(
    site: tuple[str, Path], browser: webdriver.Chrome
) -> None:
    base, root = site
    _open(browser, base + "index.html")
    assert browser.find_element(By.CSS_SELECTOR, ".period-title").text == "2026 maart*"
    periods = _table(browser.find_element(By.CSS_SELECTOR, "table.periods"))[1]
    assert [(label, cells[-1]) for label, cells in periods] == [
        ("2026 januari", "Definitief"),
        ("2026 februari**", "Nader voorlopig"),
        ("2026 maart*", "Voorlopig"),
    ]
    manifest = (root / "store" / "releases" / "2026MM03" / "r0" / "manifest.json").read_bytes()
    import hashlib

    assert (
        browser.find_element(By.CSS_SELECTOR, "footer .release code").text
        == hashlib.sha256(manifest).hexdigest()
    )
    changes = browser.find_element(By.CSS_SELECTOR, "table.changes").text
    assert "Geregistreerde misdrijven" in changes  # r1 of February changed the totals
    cards = browser.find_elements(By.CSS_SELECTOR, ".card")
    assert len(cards) >= 5
    _shot(browser, "home.png")
