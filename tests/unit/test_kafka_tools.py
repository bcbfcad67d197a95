"""The Kafka tools: fetched with the broker (old caches topped up), mapped to main classes, pointed at
the stack. The real run is in tests/integration/test_kafka_tools.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack.config import KAFKA_VERSION, StackConfig
from devstack.fetch import MARKER, Layout, render_kafka_pom
from devstack.tools import KAFKA_TOOLS, kafka_tool_argv, main_class
from ketenstroom.errors import InfraError


def test_the_pom_fetches_kafka_tools_without_connect_runtime() -> None:
    pom = render_kafka_pom()
    assert "<artifactId>kafka-tools</artifactId>" in pom
    assert "<exclusion><groupId>org.apache.kafka</groupId><artifactId>connect-runtime</artifactId>" in pom


def test_a_broker_only_cache_is_not_complete_until_the_tools_are_in(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    layout.kafka_lib.mkdir(parents=True)
    (layout.kafka_dir / MARKER).write_text("done\n")
    assert not layout.is_complete("kafka")
    (layout.kafka_lib / f"kafka-tools-{KAFKA_VERSION}.jar").write_bytes(b"")
    assert layout.is_complete("kafka")


def test_tools_get_the_stacks_bootstrap_unless_they_name_one(tmp_path: Path) -> None:
    config = StackConfig(cache_dir=tmp_path, kafka_port=9192)
    with pytest.raises(InfraError, match="infra fetch"):
        kafka_tool_argv(config, Path("/usr/bin/java"), "kafka-topics", ["--list"])
    layout = Layout(config.dist_dir)
    layout.kafka_lib.mkdir(parents=True)
    layout.kafka_tools_jar.write_bytes(b"")
    argv = kafka_tool_argv(config, Path("/usr/bin/java"), "kafka-topics.sh", ["--list"])
    assert argv[argv.index("-cp") + 1] == f"{layout.kafka_lib}/*"
    assert argv[-4:] == [
        "org.apache.kafka.tools.TopicCommand",
        "--bootstrap-server",
        "127.0.0.1:9192",
        "--list",
    ]
    given = kafka_tool_argv(
        config, Path("/usr/bin/java"), "kafka-topics", ["--bootstrap-server=h:1", "--list"]
    )
    assert given.count("127.0.0.1:9192") == 0
    assert "--bootstrap-server" not in kafka_tool_argv(
        config, Path("/usr/bin/java"), "kafka-topics", ["--help"]
    )


def test_the_operators_tools_are_known_and_a_typo_is_refused() -> None:
    assert {"kafka-console-consumer", "kafka-consumer-groups", "kafka-topics"} <= set(KAFKA_TOOLS)
    assert main_class("kafka-consumer-groups").endswith("ConsumerGroupCommand")
    with pytest.raises(InfraError, match="known: kafka-acls"):
        main_class("kafka-consumer-group")
