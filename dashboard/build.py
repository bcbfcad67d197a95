"""Write the site: every page and download, from the releases alone, deterministically.

No clock, no random, no absolute path enters a page, so the same releases build byte-identical files
(``tests/unit/test_site.py``). Downloads are the release's own files, copied byte for byte after their
sha256 was checked against the release manifest. ``site.json`` lists every file with its sha256 and the
release manifests the site was built from. Files the previous build wrote and this one did not are
removed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from dashboard.read import Release, ReleaseSet, read_releases
from dashboard.views import TableViews, changes, headlines
from ketenstroom.adapters.objectstore import ObjectStore
from ketenstroom.contract.releases import ATTRIBUTION, LICENSE, LICENSE_NAME, period_title, release_prefix
from ketenstroom.contract.snapshots import sha256

SITE_FORMAT = "ketenstroom.site/1"


@dataclass(frozen=True)
class Used:
    title: str
    release: Release


def _env() -> Environment:
    return Environment(
        loader=PackageLoader("dashboard", "templates"),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )


def _title(r: Release) -> str:
    return period_title(r.manifest.period, r.manifest.status)


def _size(n: int) -> str:
    return f"{n / 1024:.1f} kB".replace(".", ",") if n >= 1024 else f"{n} B"


def render(releases: ReleaseSet) -> dict[str, bytes]:
    """Every file of the site, by path: pages, stylesheet, downloads and ``site.json``."""
    env = _env()
    newest = releases.newest()
    latest = releases.latest()
    table_ids = sorted({t for r in latest for t in r.tables})
    views = {t: TableViews(releases, t) for t in table_ids}
    nav = [{"id": t, "title": views[t].table.properties["ShortTitle"]} for t in table_ids]
    common: dict[str, Any] = {
        "nav_tables": nav,
        "newest": newest,
        "newest_title": _title(newest),
        "license": LICENSE,
        "license_name": LICENSE_NAME,
        "attribution": ATTRIBUTION,
    }
    files: dict[str, bytes] = {}

    def page(path: str, template: str, used: list[Release], **context: Any) -> None:
        root = "../" * path.count("/")
        html = env.get_template(template).render(
            **common, **context, root=root, used=[Used(_title(r), r) for r in used]
        )
        files[path] = html.encode("utf-8")

    revisions = []
    for r in latest:
        previous = releases.previous(r)
        if previous is not None:
            revisions.append({"title": _title(r), "c": changes(r, previous)})
    periods = [
        {
            "title": _title(rs[-1]),
            "revisions": " ".join(f"r{r.manifest.revision}" for r in rs),
            "status": rs[-1].manifest.perioden_status,
        }
        for rs in releases.periods.values()
    ]
    page(
        "index.html",
        "index.html",
        latest,
        title="Overzicht",
        headlines=headlines(newest),
        revisions=revisions,
        periods=periods,
    )
    for table_id, view in views.items():
        downloads = []
        for r in view.releases:
            table = r.tables[table_id]
            links = []
            for name, data in table.files.items():
                href = f"data/{release_prefix(r.manifest.period, r.manifest.revision)}{table_id}/{name}"
                files[href] = data
                links.append({"href": href, "name": name.rsplit("/", 1)[-1], "size": _size(len(data))})
            downloads.append({"title": table.period["Title"], "files": links})
        charts = (
            [view.funnel()] if view.table.properties.get("GraphTypes") == "funnel" else []
        ) + view.charts()
        page(
            f"tabellen/{table_id}.html",
            "table.html",
            view.releases,
            title=view.table.properties["Title"],
            table=view.table,
            charts=charts,
            downloads=downloads,
        )
    funnels, lead_times = [], []
    for view in views.values():
        props = view.table.properties
        if props.get("GraphTypes") == "funnel":
            funnels.append(
                {"heading": props["ShortTitle"], "description": props["Description"], "chart": view.funnel()}
            )
        elif props.get("GraphTypes") == "lead_times":
            lead_times.append(
                {
                    "heading": props["ShortTitle"],
                    "description": props["Description"],
                    "charts": view.lead_time_charts(),
                }
            )
    page("keten.html", "chain.html", latest, title="De keten", funnels=funnels, lead_times=lead_times)
    audit = []
    for table_id, a in newest.audit.get("tables", {}).items():
        audit.append(
            {
                "id": table_id,
                "cells": a["cells"],
                "suppressed": len(a["suppressed"]),
                "rounded": a["rounding"]["cells"],
                "error": f"{a['rounding']['mean_error']:.3f}".replace(".", ","),
            }
        )
    page(
        "methode.html",
        "method.html",
        [r for rs in releases.periods.values() for r in rs],
        title="Hoe deze cijfers worden gemaakt",
        tables=[views[t].table for t in table_ids],
        spec_sha={t: views[t].releases[-1].manifest.specs_sha256.get(t, "") for t in table_ids},
        all_releases=[Used(_title(r), r) for rs in releases.periods.values() for r in rs],
        rules=newest.manifest.rules,
        audit=audit,
        sources=[(p, f"{n:,}".replace(",", ".")) for p, n in newest.manifest.sources.items()],
    )
    for asset in ("site.css", "favicon.svg"):
        files[f"assets/{asset}"] = resources.files("dashboard").joinpath(f"assets/{asset}").read_bytes()
    listing = {
        "format": SITE_FORMAT,
        "releases": [
            {
                "period": r.manifest.period,
                "revision": r.manifest.revision,
                "manifest_sha256": r.manifest_sha256,
            }
            for rs in releases.periods.values()
            for r in rs
        ],
        "files": {path: sha256(data) for path, data in sorted(files.items())},
    }
    files["site.json"] = (json.dumps(listing, indent=1) + "\n").encode()
    return files


def build_site(releases_store: ObjectStore, site: ObjectStore) -> dict[str, bytes]:
    """Render the site from the releases in ``releases_store`` and write it to ``site``; stale files go."""
    files = render(read_releases(releases_store))
    for path, data in sorted(files.items()):
        if not site.exists(path) or site.get(path) != data:
            site.put(path, data)
    for key in list(site.list()):
        if key not in files:
            site.delete(key)
    return files
