"""Kafka's own command-line tools against the local stack, with the stack's Java and classpath.

The distribution is assembled from Maven Central (``devstack.fetch``) and has no ``bin/*.sh``
scripts; ``kafka-tools`` is on its classpath, so each script is just its main class. ``KAFKA_TOOLS``
maps the usual script names to those classes (Kafka 4.x); ``ketenstroom infra kafka-tool NAME ARGS...``
runs one, adding ``--bootstrap-server`` for this stack unless the arguments name one.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from devstack.config import StackConfig
from devstack.fetch import Layout
from ketenstroom.errors import InfraError

#: Script name (as in Kafka's ``bin/``) -> main class in ``kafka-tools`` (Kafka 4.x).
KAFKA_TOOLS: dict[str, str] = {
    "kafka-acls": "org.apache.kafka.tools.AclCommand",
    "kafka-broker-api-versions": "org.apache.kafka.tools.BrokerApiVersionsCommand",
    "kafka-configs": "org.apache.kafka.tools.ConfigCommand",
    "kafka-console-consumer": "org.apache.kafka.tools.consumer.ConsoleConsumer",
    "kafka-console-producer": "org.apache.kafka.tools.ConsoleProducer",
    "kafka-consumer-groups": "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
    "kafka-delete-records": "org.apache.kafka.tools.DeleteRecordsCommand",
    "kafka-features": "org.apache.kafka.tools.FeatureCommand",
    "kafka-get-offsets": "org.apache.kafka.tools.GetOffsetShell",
    "kafka-groups": "org.apache.kafka.tools.GroupsCommand",
    "kafka-leader-election": "org.apache.kafka.tools.LeaderElectionCommand",
    "kafka-log-dirs": "org.apache.kafka.tools.LogDirsCommand",
    "kafka-metadata-quorum": "org.apache.kafka.tools.MetadataQuorumCommand",
    "kafka-topics": "org.apache.kafka.tools.TopicCommand",
    "kafka-transactions": "org.apache.kafka.tools.TransactionsCommand",
}
_BOOTSTRAP = "--bootstrap-server"
_HELP = {"--help", "-h", "--version"}


def main_class(name: str) -> str:
    """The main class of tool ``name`` (``kafka-topics`` or ``kafka-topics.sh``); InfraError if unknown."""
    found = KAFKA_TOOLS.get(name.removesuffix(".sh"))
    if found is None:
        raise InfraError(f"no Kafka tool {name!r}; known: {', '.join(sorted(KAFKA_TOOLS))}")
    return found


def kafka_tool_argv(config: StackConfig, java: Path, name: str, args: list[str]) -> list[str]:
    """The command line for tool ``name`` with ``args``; the stack's bootstrap unless ``args`` give one."""
    layout = Layout(config.dist_dir)
    if not layout.kafka_tools_jar.is_file():
        raise InfraError(f"{layout.kafka_tools_jar} is missing; run `ketenstroom infra fetch` first")
    logging = resources.files("devstack").joinpath("resources", "tools-log4j2.yaml")
    extra = []
    if not any(a == _BOOTSTRAP or a.startswith(_BOOTSTRAP + "=") for a in args) and not _HELP & set(args):
        extra = [_BOOTSTRAP, config.kafka_bootstrap]
    return [
        str(java),
        "-Xmx256m",
        f"-Dlog4j2.configurationFile={logging}",
        "-cp",
        f"{layout.kafka_lib}/*",
        main_class(name),
        *extra,
        *args,
    ]
