"""Prometheus metrics and a health endpoint for long-running components, on one small HTTP server.

``GET /metrics`` is the Prometheus text format; ``GET /health`` answers 200 with a JSON body when the
component says it is healthy, 503 otherwise. The server runs in a daemon thread and binds to loopback
unless told otherwise.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

HealthCheck = Callable[[], tuple[bool, dict[str, Any]]]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds would flood the log; access logging is the proxy's job."""


class ObservabilityServer:
    def __init__(
        self, registry: CollectorRegistry, health: HealthCheck, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        metrics_app = make_wsgi_app(registry)

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            if environ.get("PATH_INFO") == "/health":
                ok, detail = health()
                body = json.dumps({"status": "ok" if ok else "unhealthy", **detail}, default=str).encode()
                start_response(
                    "200 OK" if ok else "503 Service Unavailable", [("Content-Type", "application/json")]
                )
                return [body]
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
