"""docker-compose.yml cannot run here (no Docker engine); check it matches the local stack."""

from __future__ import annotations

from pathlib import Path

import yaml

from devstack import StackConfig
from devstack.config import APICURIO_VERSION, KAFKA_VERSION, S3PROXY_VERSION

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))


def _host_ports(service: str) -> set[int]:
    return {int(p.split(":")[-2]) for p in COMPOSE["services"][service].get("ports", [])}


def test_compose_names_every_local_service_and_ours() -> None:
    assert {"kafka", "apicurio", "s3proxy", "processor", "sink"} <= set(COMPOSE["services"])


def test_ports_match_the_local_stack() -> None:
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
