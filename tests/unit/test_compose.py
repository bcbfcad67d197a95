"""docker-compose.yml cannot run here (no Docker engine); check it matches the local stack."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack import StackConfig
from devstack.config import APICURIO_VERSION, KAFKA_VERSION, S3PROXY_VERSION

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))


def _host_ports(service: str) -> set[int]:
    return {int(p.split(":")[-2]) for p in COMPOSE["services"][service].get("ports", [])}


def test_compose_names_every_local_service_and_ours() -> None:
    assert {"kafka", "apicurio", "s3proxy", "processor", "sink"} <= set(COMPOSE["services"])


def test_ports_match_the_local_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    # The defaults are what compose publishes; a helper's or CI's port overrides must not change that.
    for name in [n for n in os.environ if n.startswith("KETENSTROOM_INFRA_")]:
        monkeypatch.delenv(name)
    cfg = StackConfig.from_env(nodes=1)
    assert cfg.kafka_port in _host_ports("kafka")
    assert {cfg.registry_port, cfg.registry_management_port} <= _host_ports("apicurio")
    assert cfg.s3_port in _host_ports("s3proxy")


def test_versions_match_what_the_local_stack_fetches() -> None:
    images = {name: svc.get("image", "") for name, svc in COMPOSE["services"].items()}
    assert images["kafka"].endswith(f":{KAFKA_VERSION}")
    assert images["apicurio"].endswith(f":{APICURIO_VERSION}")
    assert images["s3proxy"].endswith(f":{S3PROXY_VERSION}")


def test_our_services_get_their_endpoints_and_no_inline_secrets() -> None:
    for name in ("processor", "sink"):
        env = COMPOSE["services"][name]["environment"]
        assert env["KETENSTROOM_KAFKA_BOOTSTRAP_SERVERS"].startswith("kafka:")
        assert env["KETENSTROOM_REGISTRY_URL"].startswith("http://apicurio:8080/apis/ccompat/")
        assert env["KETENSTROOM_S3_SECRET_ACCESS_KEY"].startswith("${")
        assert "KETENSTROOM_PSEUDONYM_KEY" not in env  # the key comes as a secret file


# -- the commands: what production runs, parsed by the CLI itself (issue 10, item 10) --------------------
def _parsed(service: str) -> tuple[str, dict[str, object]]:
    """``(subcommand, parameters)`` of a compose service's command, as the ketenstroom CLI reads it."""
    program, *args = COMPOSE["services"][service]["command"]
    assert program == "ketenstroom"
    name, *rest = args
    command = _commands()[name]
    with command.make_context(name, list(rest)) as ctx:  # unknown options fail here
        return name, dict(ctx.params)


def _commands() -> dict[str, Any]:
    import typer

    from cli import app

    commands: dict[str, Any] = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    return commands


def _defaults(name: str) -> dict[str, object]:
    with _commands()[name].make_context(name, []) as ctx:
        return dict(ctx.params)


def test_the_processor_consumes_every_partner_as_the_cli_does_by_default() -> None:
    name, params = _parsed("processor")
    assert name == "process"
    assert params["partner"] in ([], None) and not _defaults("process")["partner"]  # none: every partner
    assert params["until_caught_up"] is False  # a service runs on; a batch run stops
    overridden = {k for k, v in params.items() if v != _defaults("process")[k]}
    assert overridden == set(), f"compose overrides the CLI's defaults for {overridden}"


def test_the_sink_runs_as_the_cli_does_by_default_apart_from_its_store() -> None:
    name, params = _parsed("sink")
    assert name == "sink"
    overridden = {k for k, v in params.items() if v != _defaults("sink")[k]}
    assert overridden == {"storage"}, f"compose overrides the CLI's defaults for {overridden}"
    assert params["until_caught_up"] is False and params["seal"] is True and params["tables"] is True
    assert str(params["storage"]).startswith("s3://ketenstroom/")


def test_every_ketenstroom_service_runs_a_real_command() -> None:
    ours = [n for n, s in COMPOSE["services"].items() if (s.get("command") or [""])[0] == "ketenstroom"]
    assert set(ours) >= {"processor", "sink"}
    for service in ours:
        _parsed(service)
