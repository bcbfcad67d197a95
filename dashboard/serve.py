"""Serve a built site read-only on loopback (the standard library's static file handler)."""

from __future__ import annotations

import functools
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class _Handler(SimpleHTTPRequestHandler):
    extensions_map = {  # noqa: RUF012 - the base class declares it as a plain class attribute
        **SimpleHTTPRequestHandler.extensions_map,
        ".parquet": "application/vnd.apache.parquet",
        ".csv": "text/csv; charset=utf-8",
        ".json": "application/json",
    }

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a static site's access log is noise on the console

    def end_headers(self) -> None:
        self.send_header(
            "Content-Security-Policy", "default-src 'self'; script-src 'none'; object-src 'none'"
        )
        self.send_header("X-Content-Type-Options", "nosniff")
        super().end_headers()


def server(directory: Path, host: str = "127.0.0.1", port: int = 8090) -> ThreadingHTTPServer:
    """A server for ``directory`` (not started: call ``serve_forever``); port 0 picks a free one."""
    if not (directory / "index.html").is_file():
        from ketenstroom.errors import StorageError

        raise StorageError(f"{directory}: no site here; build it with `ketenstroom site build`")
    handler = functools.partial(_Handler, directory=str(directory))
    return ThreadingHTTPServer((host, port), handler)
