"""``ketenstroom serve``: the releases, read-only over HTTP, in the OData shapes analysts' clients read.

* OData v4 (what ``cbsodata4`` reads): ``/odata/v1/Datasets``, ``/odata/v1/KS/<id>`` (the service
  document), ``/odata/v1/KS/<id>/<Set>`` for ``Properties`` (an object), ``Dimensions``,
  ``MeasureCodes``, ``<Dim>Codes``, ``<Dim>Groups`` and ``Observations`` (``{"value": [...]}``).
* OData v3 (what ``cbsodata`` reads): ``/ODataFeed/odata/<id>/`` (the service document), ``TableInfos``,
  ``DataProperties``, ``CategoryGroups``, one set per dimension with ``Key``/``Title``, and
  ``UntypedDataSet``/``TypedDataSet`` (wide: one column per measure).

A table's observations are those of the latest release of every period, so ``Perioden`` runs over
all released periods. Only GET; nothing is written; bound to loopback unless told otherwise. Query
options (``$filter``, ``$select``, ``$format``) are accepted and ignored: every set is returned whole,
in one page (a release holds thousands of cells, not the 100,000 at which CBS pages).
"""

from __future__ import annotations

import json
import logging
import re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlparse

from ketenstroom.adapters.objectstore import ObjectStore
from ketenstroom.contract.releases import release_prefix
from ketenstroom.errors import StorageError
from releases.build import Releases

log = logging.getLogger("ketenstroom.serve")
CATALOG = "KS"
_TABLE = re.compile(r"KS\d{4}NED")
_SET = re.compile(r"[A-Za-z]+")


class Catalogue:
    """The latest release of every period, read from the store on each request (releases are small)."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.releases = Releases(store)

    def _prefixes(self) -> list[str]:
        found = []
        for period in self.releases.periods():
            manifest = self.releases.manifest(period)
            if manifest is not None:
                found.append(release_prefix(period, manifest.revision))
        return found

    def table_ids(self) -> list[str]:
        ids: set[str] = set()
        for prefix in self._prefixes():
            ids |= {name for name in self.store.list_dirs(prefix) if name.startswith("KS")}
        return sorted(ids)

    def odata4(self, table: str, name: str) -> Any:
        """One v4 set of a table, merged over periods (codes and observations), newest period last."""
        if not _TABLE.fullmatch(table) or not _SET.fullmatch(name):  # names only, never a path
            raise StorageError(f"{table}/{name} is not released")
        parts = []
        for prefix in self._prefixes():
            key = f"{prefix}{table}/odata/{name}.json"
            if self.store.exists(key):
                parts.append(json.loads(self.store.get(key)))
        if not parts:
            raise StorageError(f"{table}/{name} is not released")
        if isinstance(parts[-1], dict):
            return parts[-1]
        merged: list[Any] = []
        seen: set[Any] = set()
        for part in parts:
            for row in part:
                ident = row.get("Identifier", id(row)) if name != "Observations" else id(row)
                if ident not in seen:
                    seen.add(ident)
                    merged.append(row)
        if name == "Observations":
            for i, row in enumerate(merged):
                row["Id"] = i
        return merged

    def sets(self, table: str) -> list[str]:
        prefix = self._prefixes()[-1]
        names = [k.rsplit("/", 1)[-1][: -len(".json")] for k in self.store.list(f"{prefix}{table}/odata/")]
        return sorted(names)

    # -- v3 --------------------------------------------------------------------------------------------

    def odata3(self, table: str, name: str) -> list[dict[str, Any]]:
        props = self.odata4(table, "Properties")
        dims = self.odata4(table, "Dimensions")
        measures = self.odata4(table, "MeasureCodes")
        if name == "TableInfos":
            return [
                {
                    "ID": 0,
                    "Title": props["Title"],
                    "ShortTitle": props["ShortTitle"],
                    "Identifier": table,
                    "Summary": props["Summary"],
                    "Modified": props["Modified"],
                    "Frequency": props["Frequency"],
                    "Period": props["Perioden"]["Identifier"],
                    "ShortDescription": props["Description"],
                    "Description": props["Description"],
                    "Language": "nl",
                    "Catalog": CATALOG,
                    "OutputStatus": "Regulier",
                    "Source": props["Source"],
                    "MetaDataModified": props["Modified"],
                    "ReasonDelivery": "Actualisering",
                    "DefaultPresentation": "",
                    "DefaultSelection": "",
                    "GraphTypes": "",
                }
            ]
        if name == "DataProperties":
            rows: list[dict[str, Any]] = []
            for d in dims:
                rows.append(
                    {
                        "ID": len(rows),
                        "Position": len(rows),
                        "ParentID": None,
                        "Type": d["Kind"],
                        "Key": d["Identifier"],
                        "Title": d["Title"],
                        "Description": d["Description"],
                    }
                )
            for m in measures:
                rows.append(
                    {
                        "ID": len(rows),
                        "Position": len(rows),
                        "ParentID": None,
                        "Type": "Topic",
                        "Key": m["Identifier"],
                        "Title": m["Title"],
                        "Description": m["Description"],
                        "Decimals": m["Decimals"],
                        "Unit": m["Unit"],
                        "Datatype": m["DataType"],
                    }
                )
            return rows
        if name == "CategoryGroups":
            return []
        if name in ("UntypedDataSet", "TypedDataSet"):
            return self._wide(table, [d["Identifier"] for d in dims], typed=name == "TypedDataSet")
        if name in {d["Identifier"] for d in dims}:
            return [
                {
                    "Key": c["Identifier"],
                    "Title": c["Title"],
                    "Description": c.get("Description", ""),
                    **({"Status": c["Status"]} if "Status" in c else {}),
                }
                for c in self.odata4(table, f"{name}Codes")
            ]
        raise StorageError(f"{table}/{name} is not a v3 set")

    def _wide(self, table: str, dims: list[str], *, typed: bool) -> list[dict[str, Any]]:
        decimals = {m["Identifier"]: m["Decimals"] for m in self.odata4(table, "MeasureCodes")}
        rows: dict[tuple[Any, ...], dict[str, Any]] = {}
        for obs in self.odata4(table, "Observations"):
            key = tuple(obs[d] for d in dims)
            row = rows.setdefault(key, {"ID": len(rows), **{d: obs[d] for d in dims}})
            value = obs["Value"]
            if typed:
                row[obs["Measure"]] = value
            else:
                row[obs["Measure"]] = "." if value is None else f"{value:.{decimals[obs['Measure']]}f}"
        return list(rows.values())


def make_handler(catalogue: Catalogue) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "ketenstroom-serve"

        def log_message(self, format: str, *args: Any) -> None:
            log.info("%s %s", self.address_string(), format % args)

        def do_GET(self) -> None:
            path = [p for p in urlparse(self.path).path.split("/") if p]
            base = f"http://{self.headers.get('Host', 'localhost')}"
            try:
                body = self._route(path, base)
            except (StorageError, IndexError, KeyError) as exc:
                self._send(404, {"error": {"message": str(exc)}})
                return
            self._send(200, body)

        def _route(self, path: list[str], base: str) -> Any:
            if path[:2] == ["odata", "v1"]:
                rest = path[2:]
                if rest in (["Datasets"], [CATALOG, "Datasets"]):
                    return {
                        "value": [
                            {"Identifier": t, "Catalog": CATALOG, **_short(catalogue.odata4(t, "Properties"))}
                            for t in catalogue.table_ids()
                        ]
                    }
                if len(rest) == 2 and rest[0] == CATALOG:
                    return {
                        "@odata.context": f"{base}/odata/v1/{CATALOG}/{rest[1]}/$metadata",
                        "value": [
                            {"name": n, "kind": "Singleton" if n == "Properties" else "EntitySet", "url": n}
                            for n in catalogue.sets(rest[1])
                        ],
                    }
                if len(rest) == 3 and rest[0] == CATALOG:
                    data = catalogue.odata4(rest[1], rest[2])
                    return data if isinstance(data, dict) else {"value": data}
            if path[:2] == ["ODataFeed", "odata"] and len(path) >= 3:
                table = path[2]
                if len(path) == 3:
                    dims = [d["Identifier"] for d in catalogue.odata4(table, "Dimensions")]
                    names = [
                        "TableInfos",
                        "UntypedDataSet",
                        "TypedDataSet",
                        "DataProperties",
                        "CategoryGroups",
                        *dims,
                    ]
                    return {
                        "odata.metadata": f"{base}/ODataFeed/odata/{table}/$metadata",
                        "value": [{"name": n, "url": f"{base}/ODataFeed/odata/{table}/{n}"} for n in names],
                    }
                return {"odata.metadata": "", "value": catalogue.odata3(table, path[3])}
            raise KeyError(f"no such resource: /{'/'.join(path)}")

        def _send(self, status: int, body: Any) -> None:
            data = json.dumps(body, ensure_ascii=False).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


def _short(props: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "Title",
        "Modified",
        "ObservationsModified",
        "ObservationCount",
        "Frequency",
        "Status",
        "Language",
    )
    return {k: props[k] for k in keys if k in props}


def server(store: ObjectStore, host: str = "127.0.0.1", port: int = 8088) -> ThreadingHTTPServer:
    """A server bound to ``host:port`` (port 0: any free port); call ``serve_forever`` to run it."""
    return ThreadingHTTPServer((host, port), make_handler(Catalogue(store)))
