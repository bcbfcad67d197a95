"""Crash safety: SIGKILL the sink at named moments and at random ones, restart, repeat. The sealed
snapshots must hold exactly the rows of a run without crashes, and no partial revision is ever visible."""

from __future__ import annotations

import io
import json
import random
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ketenstroom.adapters.kafka import end_offsets, ensure_topics
from ketenstroom.adapters.objectstore import ObjectStore
from ketenstroom.adapters.registry import Registry
from ketenstroom.adapters.snapshots import Snapshots
from ketenstroom.contract import Topics
from ketenstroom.settings import SinkSettings
from sinks.runner import Sink
from sinks.seal import Sealer, SealPolicy
from synthetic.curated import chain_events, publish_curated
from tests.conftest import Services

AS_OF = datetime(2027, 6, 1, tzinfo=UTC)
GRACE, FINAL = 14, 3650
BUFFER = 150
# where to die: mid-stream after a staged file, halfway through moving files into a revision, with
# everything moved but no manifest, right after a manifest (offsets not committed), before a commit;
# before the tables' manifest; then three kills at random moments
PLAN = [
    "sink.staged:3",
    "seal.moved:4",
    "seal.before-manifest:1",
    "seal.after-manifest:1",
    "tables.before-manifest:1",
    "sink.before-commit:1",
    None,
    None,
    None,
]


def _rows(store: ObjectStore) -> dict[str, list[dict[str, object]]]:
    """Per period, the rows of its latest sealed revision, sorted by event id."""
    snapshots = Snapshots(store)
    out = {}
    for period in snapshots.periods():
        manifest = snapshots.manifest(period)
        if manifest is None:
            continue
        rows = []
        for entry in manifest.files:
            rows += pq.read_table(io.BytesIO(store.get(entry.path))).to_pylist()
        out[period] = sorted(rows, key=lambda r: str(r["event_id"]))
    return out


def _nothing_partial_is_visible(store: ObjectStore, reference: dict[str, list[dict[str, object]]]) -> None:
    snapshots = Snapshots(store)
    for period in snapshots.periods():
        for manifest in snapshots.manifests(period):
            assert snapshots.verify(manifest) == [], f"{period} r{manifest.revision} is damaged"
            assert manifest.revision == 0, f"{period}: a re-read after a crash made a new revision"
    for period, rows in _rows(store).items():
        assert rows == reference[period], f"{period} is visible but differs from the run without crashes"


@pytest.mark.parametrize("backend", ["file", "s3"])
def test_sink_killed_at_any_moment_seals_exactly_the_rows_of_a_clean_run(
    services: Services, names: Topics, tmp_path: Path, backend: str
) -> None:
    ensure_topics(services.kafka, [names.curated], partitions=3, replication_factor=1)
    events = list(
        chain_events(500, seed=5, start=datetime(2026, 1, 1, tzinfo=UTC), days=120, repeat_share=0.05)
    )
    with Registry(services.registry) as registry:
        publish_curated(services.kafka, registry, names, events)
    distinct = len({e["event_id"] for e in events})
    assert distinct < len(events), "the stream must hold re-deliveries to deduplicate"

    # the run without crashes
    clean = ObjectStore(f"file://{tmp_path / 'clean'}")
    policy = SealPolicy(grace=timedelta(days=GRACE), final_after=timedelta(days=FINAL), clock=lambda: AS_OF)
    Sink(
        kafka=services.kafka,
        registry=services.registry,
        store=clean,
        settings=SinkSettings(group_id=f"{names.prefix}clean", max_buffered=BUFFER),
        topics=names,
        sealer=Sealer(clean, policy),
    ).run(stop_at=end_offsets(services.kafka, [names.curated]))
    reference = _rows(clean)
    assert sum(len(rows) for rows in reference.values()) == distinct and len(reference) >= 4

    url = (
        f"file://{tmp_path / 'crashed'}"
        if backend == "file"
        else f"s3://{services.s3.bucket}/{names.prefix.rstrip('.')}"
    )
    crashed = ObjectStore(url, services.s3)
    env = services.env(names)
    # a killed member's session must expire before its partitions are handed on: keep that short
    env["KETENSTROOM_KAFKA_EXTRA"] = json.dumps(
        {"session.timeout.ms": "6000", "heartbeat.interval.ms": "1000"}
    )
    command = [
        *(sys.executable, "-m", "cli", "sink", "--until-caught-up"),
        *("--group", f"{names.prefix}crashed", "--storage", url, "--as-of", AS_OF.isoformat()),
        *("--grace-days", str(GRACE), "--final-after-days", str(FINAL), "--max-buffered", str(BUFFER)),
    ]
    rng = random.Random(11)
    for point in PLAN:
        child_env = {**env, "KETENSTROOM_CRASH_AT": point} if point else env
        sink = subprocess.Popen(
            command, env=child_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        if point is None:
            try:  # a random moment: kill whatever it is doing then
                sink.wait(timeout=rng.uniform(0.5, 4.0))
            except subprocess.TimeoutExpired:
                sink.send_signal(signal.SIGKILL)
        _out, err = sink.communicate(timeout=300)
        assert sink.returncode in (0, -signal.SIGKILL), err[-2000:]
        if point is not None:  # every named point is on the path of this run: it must have died there
            assert sink.returncode == -signal.SIGKILL, f"crash point {point} was not reached"
        _nothing_partial_is_visible(crashed, reference)

    final = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert final.returncode == 0, final.stderr[-2000:]
    _nothing_partial_is_visible(crashed, reference)
    assert _rows(crashed) == reference
    assert list(crashed.list("staging/")) == []
    # the chain and person tables are derived deterministically: byte-identical to the clean run's
    for period in reference:
        ours, theirs = (Snapshots(s).tables(Snapshots(s).manifest(period)) for s in (crashed, clean))  # type: ignore[arg-type]
        assert ours is not None and theirs is not None
        assert {k: v.sha256 for k, v in ours.files.items()} == {k: v.sha256 for k, v in theirs.files.items()}
