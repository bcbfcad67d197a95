"""The processor on the real stack: exactly once under SIGKILL, two workers, DLQ replay, key rotation."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from pydantic import SecretStr

from ketenstroom.adapters.kafka import all_partitions, end_offsets, ensure_topics, read_to_end
from ketenstroom.adapters.registry import Registry
from ketenstroom.catalogue import catalogue_at
from ketenstroom.contract import Topics
from ketenstroom.contract.codec import decode
from ketenstroom.contract.scanner import scan_all
from ketenstroom.contract.wire import unframe
from ketenstroom.settings import CatalogueSettings, ProcessorSettings, PseudonymSettings
from processors.build import build_transformer
from processors.runner import TransactionalProcessor
from producers.publish import Publisher
from synthetic import OM_COLUMNS, GenerationReport, generate_chain, om_decision_rows, write_csv
from tests.conftest import Services

PARTNERS = catalogue_at(CatalogueSettings().dir).names  # the partners the catalogue declares

KEY = "processor-test-key-0123456789abcdef0123"
DEADLINE_S = 240


def _env(services: Services, names: Topics, key: str = KEY, key_id: str = "t1") -> dict[str, str]:
    return {
        **os.environ,
        "KETENSTROOM_KAFKA_BOOTSTRAP_SERVERS": services.kafka.bootstrap_servers,
        "KETENSTROOM_REGISTRY_URL": services.registry.url,
        "KETENSTROOM_TOPIC_PREFIX": names.prefix,
        "KETENSTROOM_PSEUDONYM_KEY": key,
        "KETENSTROOM_PSEUDONYM_KEY_ID": key_id,
    }


def _process(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "cli", "process", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _deliver(services: Services, names: Topics, exports: GenerationReport) -> int:
    ensure_topics(services.kafka, names.all(PARTNERS), partitions=3, replication_factor=1)
    published = 0
    for partner in PARTNERS:
        with Publisher(partner, kafka=services.kafka, registry=services.registry, topics=names) as publisher:
            published += publisher.publish([Path(exports.partners[partner].path)]).published
    return published


def _read_committed(services: Services, topic: str) -> list[dict[str, object]]:
    """Every committed record of ``topic``, decoded, read to the end as of now."""
    out: list[dict[str, object]] = []
    with Registry(services.registry) as registry:
        for msg in read_to_end(
            services.kafka, all_partitions(services.kafka, topic), group_id=f"{topic}.check"
        ):
            schema_id, payload = unframe(msg.value())
            out.append(decode(registry.writer_schema(schema_id), payload))
    return out


def _committed_everything(services: Services, names: Topics, group: str) -> bool:
    ends = end_offsets(services.kafka, [names.raw(p) for p in PARTNERS])
    consumer = Consumer(services.kafka.librdkafka(group_id=group, enable_auto_commit=False))
    try:
        committed = consumer.committed([TopicPartition(t, p) for t, p in ends], timeout=10)
    finally:
        consumer.close()
    return all(
        tp.offset >= ends[(tp.topic, tp.partition)] for tp in committed if ends[(tp.topic, tp.partition)]
    )


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> GenerationReport:
    return generate_chain(tmp_path_factory.mktemp("exports"), cases=1500, seed=4242, noise=0.05)


def test_sigkill_at_random_moments_loses_and_duplicates_nothing(
    services: Services, exports: GenerationReport, tmp_path: Path
) -> None:
    reference, crashed = (
        Topics(f"t{os.getpid()}ref{random.randrange(10**6)}."),
        Topics(f"t{os.getpid()}kill{random.randrange(10**6)}."),
    )
    published = _deliver(services, reference, exports)
    assert _deliver(services, crashed, exports) == published

    ok = subprocess.run(
        [sys.executable, "-m", "cli", "process", "--until-caught-up"],
        env=_env(services, reference),
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
    )
    assert ok.returncode == 0, ok.stderr[-2000:]
    stats = json.loads(ok.stdout.strip().splitlines()[-1])
    assert stats["reconciles"]
    expected = _read_committed(services, reference.curated)
    expected_ids = Counter(str(e["event_id"]) for e in expected)
    assert max(expected_ids.values()) == 1 and len(expected_ids) > 1000

    rng = random.Random(7)
    # Small transactions: the fast path finishes this stream in a few seconds at the default batch
    # size, so the kills (placed by output seen) would land after the end; at 100 events a
    # transaction every kill falls between many commits, and more transaction boundaries are tried.
    env = {**_env(services, crashed), "KETENSTROOM_PROCESSOR_BATCH_SIZE": "100"}
    kills = 0
    for _ in range(8):
        if kills >= 4:
            break
        worker = _process(env, "--until-caught-up", "--instance-id", "0")
        seen_before = sum(end_offsets(services.kafka, [crashed.curated]).values())
        target = seen_before + rng.randrange(200, 1500)  # kill once this much more output exists
        deadline = time.monotonic() + DEADLINE_S
        while worker.poll() is None and sum(end_offsets(services.kafka, [crashed.curated]).values()) < target:
            assert time.monotonic() < deadline, "the processor made no progress"
        if worker.poll() is None:
            worker.send_signal(signal.SIGKILL)
            kills += 1
        worker.communicate(timeout=60)
    assert kills >= 2, "the stream was too short to kill the worker mid-way"
    final = _process(env, "--until-caught-up", "--instance-id", "0")
    _stdout, stderr = final.communicate(timeout=DEADLINE_S)
    assert final.returncode == 0, stderr[-2000:]

    got = Counter(str(e["event_id"]) for e in _read_committed(services, crashed.curated))
    assert max(got.values()) == 1, (
        f"duplicates after {kills} kills: {[k for k, v in got.items() if v > 1][:3]}"
    )
    assert set(got) == set(expected_ids), (len(got), len(expected_ids))
    dead = _dlq_count(services, crashed)
    assert dead == _dlq_count(services, reference)
    assert len(got) + dead + stats_duplicates(stats) == published


def stats_duplicates(stats: dict[str, dict[str, int]]) -> int:
    return sum(stats["duplicates"].values())


def _dlq_count(services: Services, names: Topics, partners: Sequence[str] = PARTNERS) -> int:
    return sum(
        1
        for p in partners
        for _ in read_to_end(
            services.kafka, all_partitions(services.kafka, names.dlq(p)), group_id=f"{names.prefix}dlq.check"
        )
    )


def _members_with_partitions(services: Services, group: str) -> int:
    admin = AdminClient(services.kafka.librdkafka())
    try:
        found = admin.describe_consumer_groups([group])[group].result(timeout=10)
    except KafkaException:
        return 0  # the group does not exist yet
    return sum(1 for m in found.members if m.assignment and m.assignment.topic_partitions)


def test_two_workers_share_the_partitions(services: Services, exports: GenerationReport) -> None:
    names = Topics(f"t{os.getpid()}two{random.randrange(10**6)}.")
    ensure_topics(services.kafka, names.all(PARTNERS), partitions=3, replication_factor=1)
    env = _env(services, names)
    workers = [_process(env, "--instance-id", str(i), "--app-id", f"{names.prefix}proc") for i in range(2)]
    try:
        deadline = time.monotonic() + DEADLINE_S
        # both must hold partitions before the input arrives, or a fast first worker does it all alone
        while _members_with_partitions(services, f"{names.prefix}proc") < 2:
            assert all(w.poll() is None for w in workers), "a worker died"
            assert time.monotonic() < deadline, "the two workers did not both get partitions"
        published = _deliver(services, names, exports)
        while not _committed_everything(services, names, f"{names.prefix}proc"):
            assert all(w.poll() is None for w in workers), "a worker died"
            assert time.monotonic() < deadline, "two workers did not finish the input"
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
    outputs = [w.communicate(timeout=60) for w in workers]
    results = [json.loads(o.strip().splitlines()[-1]) for o, _ in outputs]
    assert all(sum(r["records_in"].values()) > 0 for r in results), "both workers got partitions"
    assert sum(sum(r["records_in"].values()) for r in results) == published
    curated = _read_committed(services, names.curated)
    assert len({e["event_id"] for e in curated}) == len(curated)
    count, findings = scan_all(curated)
    assert count == len(curated) and not findings, [str(f) for f in findings[:5]]


def test_a_killed_processor_restarted_resumes_within_15_s(services: Services, tmp_path: Path) -> None:
    """Static group membership: the restarted instance takes its partitions back at once instead of
    waiting for the killed member's session to expire (45 s), and says how long it waited."""
    names = Topics(f"t{os.getpid()}restart{random.randrange(10**6)}.")
    ensure_topics(services.kafka, names.all(["om"]), partitions=3, replication_factor=1)
    exports = []
    for seed in (11, 12):
        exports.append(tmp_path / f"om-{seed}.csv")
        write_csv(exports[-1], list(om_decision_rows(200, seed=seed)), OM_COLUMNS)

    def deliver(export: Path) -> int:
        with Publisher("om", kafka=services.kafka, registry=services.registry, topics=names) as publisher:
            return publisher.publish([export]).published

    published = deliver(exports[0])
    env = _env(services, names)
    args = ("--partner", "om", "--app-id", f"{names.prefix}proc", "--instance-id", "a")
    worker = _process(env, *args)  # as a service: runs until stopped
    deadline = time.monotonic() + DEADLINE_S
    while sum(end_offsets(services.kafka, [names.curated]).values()) == 0:
        assert worker.poll() is None, worker.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "the processor produced nothing"
    worker.send_signal(signal.SIGKILL)  # holding its partitions, no goodbye to the group
    worker.communicate(timeout=60)
    published += deliver(exports[1])

    started = time.monotonic()
    again = subprocess.run(
        [sys.executable, "-m", "cli", "process", *args, "--until-caught-up"],
        env=env,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
    )
    took = time.monotonic() - started
    assert again.returncode == 0, again.stderr[-2000:]
    assert took < 15, f"the restarted processor took {took:.1f} s:\n{again.stderr[-2000:]}"
    assert re.search(r"assigned 3 partitions to \S+ after \d+\.\d s", again.stderr), again.stderr[-2000:]
    assert json.loads(again.stdout.strip().splitlines()[-1])["reconciles"]
    assert not re.search(r"^%\d\|", again.stderr, re.MULTILINE), "raw librdkafka lines on stderr"
    curated = _read_committed(services, names.curated)
    dead = _dlq_count(services, names, ["om"])
    assert len({e["event_id"] for e in curated}) == len(curated) and len(curated) + dead == published


def test_key_rotation_gives_new_pseudonyms_and_leaves_old_output(services: Services, tmp_path: Path) -> None:
    names = Topics(f"t{os.getpid()}rot{random.randrange(10**6)}.")
    ensure_topics(services.kafka, names.all(["om"]), partitions=1, replication_factor=1)
    batches = []
    for seed, key, key_id in ((98, KEY, "k1"), (99, KEY[::-1] + "x", "k2")):
        exports = generate_chain(tmp_path / str(seed), cases=40, seed=seed, partners=("om",))
        with Publisher("om", kafka=services.kafka, registry=services.registry, topics=names) as publisher:
            publisher.publish([Path(exports.partners["om"].path)])
        run = subprocess.run(
            [sys.executable, "-m", "cli", "process", "--partner", "om", "--until-caught-up"],
            env=_env(services, names, key, key_id),
            capture_output=True,
            text=True,
            timeout=DEADLINE_S,
        )
        assert run.returncode == 0, run.stderr[-2000:]
        batches.append(_read_committed(services, names.curated))
    before, after = batches
    assert before and len(after) > len(before)
    assert after[: len(before)] == before, "events curated under the old key are untouched"
    rotated = after[len(before) :]
    assert {e["pseudonym_key_id"] for e in before} == {"k1"}
    assert {e["pseudonym_key_id"] for e in rotated} == {"k2"}
    assert not {e["case_pseudonym"] for e in before} & {e["case_pseudonym"] for e in rotated}


def test_run_until_end_stops_at_partition_eof_past_an_aborted_transaction(
    services: Services, tmp_path: Path
) -> None:
    names = Topics(f"t{os.getpid()}eof{random.randrange(10**6)}.")
    ensure_topics(services.kafka, names.all(["om"]), partitions=1, replication_factor=1)
    exports = generate_chain(tmp_path, cases=40, seed=97, partners=("om",))
    with Publisher("om", kafka=services.kafka, registry=services.registry, topics=names) as publisher:
        published = publisher.publish([Path(exports.partners["om"].path)]).published
    # an aborted record and its marker lie past the last committed record: a reader that waits for
    # its position to reach the high watermark would wait forever
    aborter = Producer(services.kafka.librdkafka(transactional_id=f"{names.prefix}aborter"))
    aborter.init_transactions(30)
    aborter.begin_transaction()
    aborter.produce(names.raw("om"), value=b"never committed")
    aborter.flush(30)
    aborter.abort_transaction(30)
    deadline = time.monotonic() + DEADLINE_S
    with Registry(services.registry) as registry:
        transformer = build_transformer(
            registry=registry,
            paths=CatalogueSettings(),
            pseudonym=PseudonymSettings(key=SecretStr(KEY), key_id="t1"),
            topics=names,
        )
        stats = TransactionalProcessor(
            kafka=services.kafka,
            topics=names,
            partners=["om"],
            transformer=transformer,
            settings=ProcessorSettings(app_id=f"{names.prefix}proc"),
        ).run(until_end=True, should_stop=lambda: time.monotonic() > deadline)
    assert time.monotonic() < deadline, "run(until_end=True) did not stop at the end"
    assert stats.records_in == {"om": published} and stats.reconciles()
    assert len(_read_committed(services, names.curated)) == stats.curated["om"]


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in re.split(r"[┃│|]", line)[1:-1]]


def _dlq_listing(run: Callable[..., str], *args: str, table_too: bool = False) -> dict[str, Any]:
    """``dlq list`` as JSON; ``table_too``: check the table shows the same columns and values."""
    listing: dict[str, Any] = json.loads(run("dlq", "list", "--partner", "om", "--json", *args))
    if not table_too:
        return listing
    table = run("dlq", "list", "--partner", "om", *args, extra={"COLUMNS": "400"}).splitlines()
    headers = next(_cells(line) for line in table if line.startswith(("┃", "|")))
    rows = [_cells(line) for line in table if line.startswith("│")]
    for row in listing["rows"]:
        assert headers == [name.replace("_", " ") for name in row], (headers, row)
    assert rows == [[str(value) for value in row.values()] for row in listing["rows"]], (rows, listing)
    assert f"{listing['open']} open of {listing['events']} events" in table[0]
    return listing


def test_dead_letters_are_listed_per_event_and_replayed_after_the_table_is_fixed(
    services: Services, tmp_path: Path
) -> None:
    names = Topics(f"t{os.getpid()}dlq{random.randrange(10**6)}.")
    ensure_topics(services.kafka, names.all(["om"]), partitions=2, replication_factor=1)
    export = tmp_path / "om.csv"
    rows = list(om_decision_rows(300, seed=5))
    for row in rows[::10]:
        row["beslissing"] = "ZZZZ"  # a code OM started using before the table knew it
    write_csv(export, rows, OM_COLUMNS)

    def deliver() -> None:
        with Publisher("om", kafka=services.kafka, registry=services.registry, topics=names) as publisher:
            assert publisher.publish([export]).published == 300

    deliver()
    env = _env(services, names)

    def run(*args: str, extra: dict[str, str] | None = None) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "cli", *args],
            env={**env, **(extra or {})},
            capture_output=True,
            text=True,
            timeout=DEADLINE_S,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    def process(extra: dict[str, str] | None = None) -> dict[str, Any]:
        out = run("process", "--partner", "om", "--until-caught-up", extra=extra)
        return dict(json.loads(out.strip().splitlines()[-1]))

    first = process()
    assert first["dead_lettered"] == {"om": {"unknown-code": 30}} and first["curated"]["om"] == 270
    listing = _dlq_listing(run, table_too=True)
    assert (listing["open"], listing["events"], listing["letters"]) == (30, 30, 30)
    (row,) = listing["rows"]
    assert (row["partner"], row["reason"], row["stage"], row["state"]) == (
        "om",
        "unknown-code",
        "transform",
        "dead",
    )
    assert (row["events"], row["letters"]) == (30, 30) and "ZZZZ" in row["example_error"]
    assert row["first_seen"] <= row["last_seen"] and row["first_seen"].startswith("20")

    deliver()  # the partner re-delivers the same export: the same 30 events dead-lettered again
    assert process()["dead_lettered"] == {"om": {"unknown-code": 30}}
    listing = _dlq_listing(run)
    assert (listing["open"], listing["events"], listing["letters"]) == (30, 30, 60)
    assert [(r["events"], r["letters"]) for r in listing["rows"]] == [(30, 60)]

    fixed = tmp_path / "catalogue"  # a deployment's own catalogue: the repository's plus the new code
    for part in ("schemas", "partners", "terminology"):
        shutil.copytree(CatalogueSettings().dir / part, fixed / part)
    with (fixed / "terminology" / "om-afdoening.csv").open("a", encoding="utf-8") as fh:
        fh.write("OM.AFDOENING,ZZZZ,om-beslissing,OVERIG,Overig (nieuwe code),beslissing,2026-01-01,\n")
    replayed = json.loads(run("dlq", "replay", "--partner", "om", "--reason", "unknown-code"))
    assert replayed == {"read": 60, "replayed": 30, "skipped": 0, "repeats": 30}
    listing = _dlq_listing(run)  # replayed, not yet processed: still open
    assert listing["open"] == 30 and [r["state"] for r in listing["rows"]] == ["replayed"]
    second = process(extra={"KETENSTROOM_CATALOGUE_DIR": str(fixed)})
    assert second["curated"] == {"om": 30} and second.get("duplicates", {}).get("om", 0) == 0
    listing = _dlq_listing(run)  # replay then process: nothing open
    assert (listing["open"], listing["events"], listing["rows"]) == (0, 30, [])
    history = _dlq_listing(run, "--all", table_too=True)
    assert [(r["state"], r["events"], r["letters"]) for r in history["rows"]] == [("curated", 30, 60)]

    again = json.loads(run("dlq", "replay", "--partner", "om").strip())
    assert again["replayed"] == 30  # another group: replaying twice is harmless
    third = process(extra={"KETENSTROOM_CATALOGUE_DIR": str(fixed)})
    assert third["curated"] == {} and third["duplicates"] == {"om": 30}
    curated = _read_committed(services, names.curated)
    assert len(curated) == len({e["event_id"] for e in curated}) == 300
    history = _dlq_listing(run, "--all")
    assert history["open"] == 0 and [(r["state"], r["events"]) for r in history["rows"]] == [
        ("duplicate", 30)
    ]


def test_metrics_and_health_endpoints(services: Services) -> None:
    names = Topics(f"t{os.getpid()}obs{random.randrange(10**6)}.")
    ensure_topics(services.kafka, names.all(PARTNERS), partitions=1, replication_factor=1)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    worker = _process(_env(services, names), "--metrics-port", str(port), "--app-id", f"{names.prefix}p")
    try:
        deadline = time.monotonic() + DEADLINE_S
        health = None
        while health is None:
            assert worker.poll() is None and time.monotonic() < deadline, "no health endpoint"
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
            except httpx.TransportError:
                continue
            if health.status_code != 200:
                health = None
        assert health.json()["status"] == "ok"
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
        assert "ketenstroom_processor_records_in_total" in metrics
        assert "ketenstroom_processor_latency_seconds" in metrics
        assert 'ketenstroom_processor_transactions_total{outcome="aborted"} 0.0' in metrics  # from zero
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=60)
    assert worker.returncode == 0
