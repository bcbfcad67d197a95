"""Prometheus metrics and a health endpoint for long-running components, on one small HTTP server.

``GET /metrics`` is the Prometheus text format; ``GET /health`` answers 200 with a JSON body when the
component says it is healthy, 503 otherwise; a component may add JSON views on paths of its own. The
server runs in a daemon thread and binds to loopback unless told otherwise. ``configure_logging``
makes the log one JSON object a line when stderr is not a terminal.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

HealthCheck = Callable[[], tuple[bool, dict[str, Any]]]
#: path -> a function returning a JSON-able document (the monitor's ``/views/*``)
Views = Mapping[str, Callable[[], Any]]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds would flood the log; access logging is the proxy's job."""


class ObservabilityServer:
    def __init__(
        self,
        registry: CollectorRegistry,
        health: HealthCheck,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        views: Views | None = None,
    ) -> None:
        metrics_app = make_wsgi_app(registry)
        views = dict(views or {})

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            if environ.get("PATH_INFO") == "/health":
                ok, detail = health()
                body = json.dumps({"status": "ok" if ok else "unhealthy", **detail}, default=str).encode()
                start_response(
                    "200 OK" if ok else "503 Service Unavailable", [("Content-Type", "application/json")]
                )
                return [body]
            view = views.get(environ.get("PATH_INFO", ""))
            if view is not None:
                start_response("200 OK", [("Content-Type", "application/json")])
                return [json.dumps(view(), default=str).encode()]
            # prometheus_client's WSGI app is typed as returning Any
            return metrics_app(environ, start_response)  # type: ignore[no-any-return]

        self._server: WSGIServer = make_server(host, port, app, handler_class=_QuietHandler)
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, name="observability", daemon=True)

    def start(self) -> ObservabilityServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class JsonLogFormatter(logging.Formatter):
    """One JSON object a line: time (UTC, ISO), level, logger, message, and the exception if any.

    Only what the code put in its message: our log lines name topics, partitions, offsets, counts and
    reasons, never a record's values, so no personal data reaches the log.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(stream: TextIO | None = None) -> None:
    """Log to stderr: readable lines on a terminal, one JSON object a line otherwise (a log shipper's
    input). ``KETENSTROOM_LOG_FORMAT=text`` or ``json`` overrides the choice."""
    stream = stream or sys.stderr
    chosen = os.environ.get("KETENSTROOM_LOG_FORMAT", "").lower()
    as_json = chosen == "json" or (chosen != "text" and not stream.isatty())
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        JsonLogFormatter() if as_json else logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
