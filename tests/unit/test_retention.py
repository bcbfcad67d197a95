"""The topic-kind declarations and the drift comparison (pure; the broker side is in integration)."""

from __future__ import annotations

from ketenstroom.contract.retention import DAY_MS, RetentionPolicy, TopicSpec, drift
from ketenstroom.settings import TopicSettings


def test_each_kind_has_a_declared_retention_and_clusters_a_min_isr() -> None:
    policy = RetentionPolicy(min_insync_replicas=2)
    assert policy.dlq()["retention.ms"] == "-1"
    assert policy.raw(14)["retention.ms"] == str(14 * DAY_MS)
    assert int(policy.curated()["retention.ms"]) > 7 * DAY_MS
    assert policy.state()["cleanup.policy"] == "compact"
    assert {
        c["min.insync.replicas"] for c in (policy.dlq(), policy.raw(1), policy.curated(), policy.state())
    } == {"2"}
    assert policy.raw(1)["unclean.leader.election.enable"] == "false"  # a cluster: no unclean leader
    assert "min.insync.replicas" not in RetentionPolicy().dlq()
    assert "unclean.leader.election.enable" not in RetentionPolicy().dlq()
    bounded = TopicSettings(dlq_retention_days=30).retention()
    assert bounded.dlq()["retention.ms"] == str(30 * DAY_MS)


def test_drift_names_missing_topics_and_each_differing_key() -> None:
    specs = [
        TopicSpec("dlq.om", "dlq", 3, {"retention.ms": "-1", "cleanup.policy": "delete"}),
        TopicSpec("raw.om", "raw", 3, {"retention.ms": "1"}),
    ]
    live: dict[str, dict[str, str] | None] = {
        "dlq.om": {"retention.ms": "604800000", "cleanup.policy": "delete", "segment.ms": "9"},
        "raw.om": None,
    }
    assert [str(d) for d in drift(specs, live)] == [
        "dlq.om: retention.ms=604800000 but declared -1",
        "raw.om: missing (create it with `ketenstroom topics`)",
    ]
    live["dlq.om"] = {"retention.ms": "-1", "cleanup.policy": "delete"}
    live["raw.om"] = {"retention.ms": "1"}
    assert drift(specs, live) == []


def test_drift_names_a_topic_with_fewer_replicas_than_declared() -> None:
    specs = [TopicSpec("raw.om", "raw", 3, {}), TopicSpec("dlq.om", "dlq", 3, {})]
    live: dict[str, dict[str, str] | None] = {"raw.om": {}, "dlq.om": {}}
    replicas = {"raw.om": 1, "dlq.om": 3}
    assert [str(d) for d in drift(specs, live, replicas=replicas, replication_factor=3)] == [
        "raw.om: replicas=1 but declared 3"
    ]
    assert drift(specs, live, replicas=replicas) == []  # nothing declared: the broker's default
    assert drift(specs, live, replicas={"raw.om": 3, "dlq.om": 3}, replication_factor=3) == []
