"""``ketenstroom status --alertmanager``: firing alerts from Alertmanager's v2 API become report
entries and needs-action lines; an Alertmanager that does not answer is itself one; none is asked
unless named. A stub transport, no server."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from cli import status

ALERTS = [
    {
        "labels": {"alertname": "KetenstroomPartnerSilent", "partner": "om", "severity": "warn"},
        "annotations": {"summary": "no delivery from om within its declared schedule", "runbook": "..."},
        "startsAt": "2026-11-29T12:00:00Z",
    },
    {
        "labels": {"alertname": "KafkaOfflinePartitions", "severity": "page"},
        "annotations": {"summary": "partitions without a leader"},
        "startsAt": "2026-11-29T12:01:00Z",
    },
]


def _serve(monkeypatch: pytest.MonkeyPatch, handler: Any) -> list[httpx.Request]:
    seen: list[httpx.Request] = []

    def get(url: str, **kwargs: Any) -> httpx.Response:
        request = httpx.Request("GET", url, params=kwargs.get("params"))
        seen.append(request)
        response: httpx.Response = handler(request)
        response.request = request
        return response

    monkeypatch.setattr(httpx, "get", get)
    return seen


def test_firing_alerts_become_report_entries_and_needs_action(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _serve(monkeypatch, lambda _r: httpx.Response(200, json=ALERTS))
    alerts, needs = status._alerts_report("http://127.0.0.1:9691/")
    assert str(seen[0].url) == (
        "http://127.0.0.1:9691/api/v2/alerts?active=true&silenced=false&inhibited=false"
    )
    assert alerts is not None and alerts["up"] is True
    assert [(a["alertname"], a["partner"], a["severity"]) for a in alerts["firing"]] == [
        ("KafkaOfflinePartitions", None, "page"),
        ("KetenstroomPartnerSilent", "om", "warn"),
    ]
    assert needs == [
        "alert KafkaOfflinePartitions: partitions without a leader",
        "alert KetenstroomPartnerSilent (om): no delivery from om within its declared schedule",
    ]


def test_an_alertmanager_that_does_not_answer_needs_action(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    _serve(monkeypatch, refuse)
    alerts, needs = status._alerts_report("http://127.0.0.1:9")
    assert alerts == {"url": "http://127.0.0.1:9", "up": False, "firing": []}
    assert needs == [
        "alertmanager at http://127.0.0.1:9 does not answer (is `infra up --with-monitoring` running?)"
    ]
    _serve(monkeypatch, lambda _r: httpx.Response(500, text="boom"))
    assert status._alerts_report("http://127.0.0.1:9")[0]["up"] is False  # type: ignore[index]


def test_no_alertmanager_is_asked_unless_named(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _serve(monkeypatch, lambda _r: httpx.Response(200, json=ALERTS))
    assert status._alerts_report(None) == (None, [])
    assert status._alerts_report("") == (None, [])
    assert seen == []
