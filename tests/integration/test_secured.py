"""The secured stack (``ketenstroom infra up --secure``): each partner and component its own principal.

The stack is started here (TLS + SASL/SCRAM Kafka with the StandardAuthorizer and ACLs derived from
the catalogue, Apicurio with basic-auth users and roles, s3proxy requiring signed requests) on every
configured port + 40000, beside the plain stack the rest of the suite uses, and stopped again if this
module started it. Each refusal is asserted with its message; then the whole pipeline runs green with
every component as its own principal.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import fastavro
import httpx
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from pydantic import SecretStr

from cli.infra import provision
from devstack import Stack, StackConfig
from ketenstroom.adapters.preflight import require_topic
from ketenstroom.errors import DeliveryError
from ketenstroom.settings import KafkaSettings

KEY = "c2VjdXJlZC1zdGFjay10ZXN0LWtleS0zMi1ieXRlcy1sb25n"  # pragma: allowlist secret (test-only key)
SCHEMA_JSON = "application/vnd.schemaregistry.v1+json"
STACK_DEADLINE_S = 240.0


@pytest.fixture(scope="module")
def secured() -> Iterator[Stack]:
    """The secured stack, started fresh (wiped) unless it already runs; bounded by STACK_DEADLINE_S."""
    config = StackConfig.from_env(secure=True)
    config = StackConfig(**{**config.__dict__, "start_timeout": min(config.start_timeout, STACK_DEADLINE_S)})
    stack = Stack(config)
    was_running = all(s.healthy for s in stack.status())
    if not was_running:
        stack.wipe()
    stack.up()
    provision(stack)  # what `ketenstroom infra up --secure` does after up(): topics and ACLs, as admin
    yield stack
    if not was_running:
        stack.down()


def kafka_as(stack: Stack, principal: str, **changes: object) -> KafkaSettings:
    env = stack.client_env(principal)
    fields = {k.removeprefix("KETENSTROOM_KAFKA_").lower(): v for k, v in env.items() if "_KAFKA_" in k}
    return KafkaSettings.model_validate(fields).model_copy(update=changes)


def env_as(stack: Stack, principal: str, **extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KETENSTROOM_") or "INFRA" in k}
    return {
        **clean,
        "KETENSTROOM_CACHE_DIR": str(stack.config.cache_dir),
        **stack.client_env(principal),
        **extra,
    }


def ks(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def high_watermark(stack: Stack, topic: str) -> int:
    admin = kafka_as(stack, "admin")
    consumer = Consumer(admin.librdkafka(group_id="admin.watermarks"))
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in meta.partitions
        )
    finally:
        consumer.close()


def read_error(stack: Stack, principal: str, topic: str, group: str) -> KafkaError | None:
    """What ``principal`` gets when it reads ``topic`` from the start: an error, or None (EOF reached)."""
    consumer = Consumer(
        kafka_as(stack, principal).librdkafka(
            group_id=group, auto_offset_reset="earliest", enable_partition_eof=True
        )
    )
    try:
        consumer.assign([TopicPartition(topic, 0)])
        for _ in range(30):
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            err = msg.error()
            if err is None:
                continue
            if err.code() == KafkaError._PARTITION_EOF:
                return None
            return err
        raise AssertionError(f"{principal} reading {topic}: neither an error nor end of partition in 30 s")
    finally:
        consumer.close()


# -- Kafka: who may write and read what -------------------------------------------------------------


def test_partner_may_not_publish_to_another_partners_raw_topic(secured: Stack, tmp_path: Path) -> None:
    export = tmp_path / "politie.csv"
    env = env_as(secured, "om", KETENSTROOM_PSEUDONYM_KEY=KEY)
    assert ks(env, "generate", "--out", str(tmp_path), "--cases", "3").returncode == 0
    export = next(tmp_path.glob("politie*"))
    before = high_watermark(secured, "raw.politie")
    done = ks(env, "publish", "--partner", "politie", "--receipt", str(tmp_path / "r.json"), str(export))
    assert done.returncode == 3, done.stderr
    assert "partner om may not write raw.politie" in done.stderr
    receipt = json.loads((tmp_path / "r.json").read_text())  # every run writes one (issue 10)
    assert receipt["published"] == 0 and "partner om may not write raw.politie" in receipt["failure"]
    assert high_watermark(secured, "raw.politie") == before


@pytest.mark.parametrize("topic", ["raw.politie", "curated.chain-events", "dlq.politie"])
def test_partner_may_not_read_what_is_not_its_own(secured: Stack, topic: str) -> None:
    err = read_error(secured, "om", topic, group="partner.om.reader")
    assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, err


def test_partner_reads_its_own_dlq_only_with_its_own_group_prefix(secured: Stack) -> None:
    assert read_error(secured, "om", "dlq.om", group="partner.om.reader") is None
    err = read_error(secured, "om", "dlq.om", group="someone-else")
    assert err is not None and err.code() == KafkaError.GROUP_AUTHORIZATION_FAILED, err


def test_wrong_password_is_named(secured: Stack) -> None:
    wrong = kafka_as(secured, "om", sasl_password=SecretStr("not-the-password"), sasl_password_file=None)
    with pytest.raises(DeliveryError, match=r"User:om could not authenticate .* wrong or missing password"):
        require_topic(wrong, "raw.om", "unused", timeout=20)


def test_client_without_the_ca_is_refused(secured: Stack) -> None:
    no_ca = kafka_as(secured, "om", ssl_ca_location=None)
    with pytest.raises(DeliveryError, match=r"could not set up TLS .* certificate is not trusted"):
        require_topic(no_ca, "raw.om", "unused", timeout=20)


def test_processor_without_its_transactional_id_grant(secured: Stack) -> None:
    producer = Producer(kafka_as(secured, "processor").librdkafka(transactional_id="not-the-processor-0"))
    with pytest.raises(KafkaException) as refused:
        producer.init_transactions(30)
    assert refused.value.args[0].code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    granted = Producer(kafka_as(secured, "processor").librdkafka(transactional_id="ketenstroom-processor-t"))
    granted.init_transactions(30)  # the granted prefix works for the same principal


def test_access_apply_is_idempotent_and_show_lists_each_principal(secured: Stack) -> None:
    env = env_as(secured, "admin")
    done = ks(env, "access", "apply")
    assert done.returncode == 0, done.stderr
    assert "0 ACL(s) created" in done.stdout  # up() applied them already
    shown = ks(env, "access", "show").stdout
    for principal in ("om", "politie", "processor", "sink", "monitor", "release"):
        assert f"│ {principal}" in shown
    refused = ks(env_as(secured, "om"), "access", "apply")
    assert refused.returncode == 2 and "principal User:om may not create ACL" in refused.stderr


# -- registry and object storage ----------------------------------------------------------------------


def test_registry_refuses_anonymous_and_wrong_role_writes(secured: Stack) -> None:
    url = secured.endpoints().registry_url
    pki = Path(secured.client_env("admin")["KETENSTROOM_KAFKA_SSL_CA_LOCATION"]).parent
    password = {p: (pki / "principals" / f"{p}.password").read_text() for p in ("sink", "om", "politie")}
    subject = f"raw.om-probe{uuid.uuid4().hex[:8]}"
    body = {"schema": json.dumps({"type": "record", "name": "Probe", "fields": []})}
    post = f"{url}/subjects/{subject}/versions"
    headers = {"Content-Type": SCHEMA_JSON}
    assert httpx.post(post, json=body, headers=headers).status_code == 401
    assert httpx.get(f"{url}/subjects").status_code == 401
    sink = httpx.post(post, json=body, headers=headers, auth=("sink", password["sink"]))
    assert sink.status_code == 403 and "not authorized" in sink.text
    owner = httpx.post(post, json=body, headers=headers, auth=("om", password["om"]))
    assert owner.status_code == 200, owner.text
    evolved = {"schema": json.dumps({"type": "record", "name": "Probe", "fields": [
        {"name": "x", "type": "int", "default": 0}]})}  # fmt: skip
    other = httpx.post(post, json=evolved, headers=headers, auth=("politie", password["politie"]))
    assert other.status_code == 403, "a partner may not change another partner's subject"


def test_operator_registered_subjects_are_looked_up_not_rewritten(secured: Stack) -> None:
    """Onboarding registers a partner's subjects as admin; the partner's publish then only looks the
    schema up, and may not add a version of its own to a subject it does not own."""
    from ketenstroom.adapters.registry import Registry
    from ketenstroom.contract.schemas import EventSchema
    from ketenstroom.settings import RegistrySettings

    def as_(principal: str) -> Registry:
        env = secured.client_env(principal)
        return Registry(
            RegistrySettings(
                url=env["KETENSTROOM_REGISTRY_URL"],
                username=principal,
                password_file=Path(env["KETENSTROOM_REGISTRY_PASSWORD_FILE"]),
            )
        )

    name = f"Probe{uuid.uuid4().hex[:8]}"
    v1 = {"type": "record", "name": name, "namespace": "nl.ketenstroom.om", "fields": []}
    v2 = {**v1, "fields": [{"name": "x", "type": "int", "default": 0}]}
    subject = f"raw.om-nl.ketenstroom.om.{name}"

    def schema(body: dict[str, object]) -> EventSchema:
        return EventSchema(
            f"nl.ketenstroom.om.{name}", "om", Path("probe.avsc"), body, fastavro.parse_schema(body)
        )

    with as_("admin") as admin, as_("om") as om:
        schema_id = admin.register(subject, schema(v1))
        assert om.register(subject, schema(v1)) == schema_id  # looked up: om may not write this subject
    with (
        as_("om") as om,
        pytest.raises(DeliveryError, match=rf"as om may not register .* subject '{subject}'"),
    ):
        om.register(subject, schema(v2))  # a fresh client: ids are cached per subject


def test_unsigned_s3_request_is_refused(secured: Stack) -> None:
    eps = secured.endpoints()
    unsigned = httpx.put(f"{eps.s3_endpoint}/{eps.s3_bucket}/probe.txt", content=b"x")
    assert unsigned.status_code == 403
    s3 = boto3.client(
        "s3",
        endpoint_url=eps.s3_endpoint,
        aws_access_key_id=eps.s3_access_key,
        aws_secret_access_key="wrong-secret",  # noqa: S106  # pragma: allowlist secret
        region_name=eps.s3_region,
    )
    with pytest.raises(Exception, match=r"SignatureDoesNotMatch|AccessDenied|403"):
        s3.put_object(Bucket=eps.s3_bucket, Key="probe.txt", Body=b"x")


# -- the whole pipeline, each component its own principal ------------------------------------------


def test_publish_process_sink_seal_on_the_secured_stack(secured: Stack, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    exports = tmp_path / "exports"
    key_file = tmp_path / "pseudonym.key"
    key_file.write_text(KEY)
    key_file.chmod(0o600)
    pseudonym = {"KETENSTROOM_PSEUDONYM_KEY_FILE": str(key_file), "KETENSTROOM_PSEUDONYM_KEY_ID": "sec-k1"}
    assert ks(env_as(secured, "admin"), "generate", "--out", str(exports), "--cases", "30").returncode == 0
    published = 0
    for export in sorted(p for p in exports.iterdir() if p.name != "generation.json"):
        partner = export.name.split(".")[0].split("-")[0]
        receipt = tmp_path / f"{partner}.receipt.json"
        done = ks(
            env_as(secured, partner), "publish", "--partner", partner, "--receipt", str(receipt), str(export)
        )
        assert done.returncode in (0, 1), f"{partner}: {done.stderr}"
        published += json.loads(receipt.read_text())["published"]
    assert published > 0

    key_file.chmod(0o640)  # a key others may read: the processor refuses to start
    loose = ks(env_as(secured, "processor", **pseudonym), "process", "--until-caught-up")
    assert loose.returncode != 0 and "readable by group or others" in loose.stderr
    assert KEY not in loose.stderr + loose.stdout
    key_file.chmod(0o600)

    proc = ks(env_as(secured, "processor", **pseudonym), "process", "--until-caught-up",
              "--app-id", f"ketenstroom-processor-{run}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    counts = json.loads(proc.stdout.strip().splitlines()[-1])
    assert counts["curated"].get("om", 0) > 0 and counts["curated"].get("politie", 0) > 0, counts

    sink_env = env_as(secured, "sink")
    sink = ks(sink_env, "sink", "--until-caught-up", "--storage", f"s3://{secured.endpoints().s3_bucket}/{run}",
              "--group", f"ketenstroom-sink-{run}")  # fmt: skip
    assert sink.returncode == 0, sink.stderr
    eps = secured.endpoints()
    s3 = boto3.client(
        "s3",
        endpoint_url=eps.s3_endpoint,
        aws_access_key_id=eps.s3_access_key,
        aws_secret_access_key=eps.s3_secret_key,
        region_name=eps.s3_region,
    )
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=eps.s3_bucket, Prefix=f"{run}/").get("Contents", [])]
    assert any(k.endswith("manifest.json") for k in keys), keys
    assert any(k.endswith(".parquet") for k in keys), keys

    # the sink may not write where the processor writes, nor read what partners deliver
    err = read_error(secured, "sink", "raw.om", group=f"ketenstroom-sink-{run}-raw")
    assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
